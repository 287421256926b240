//! Writing batches to ClickHouse over its HTTP interface.
//!
//! A batch is cut at every truncate (tombstones for every older row);
//! within a piece, the changes of each
//! destination table are reduced to the last one per key (the one with the
//! greatest version, which is what `ReplacingMergeTree` keeps anyway), the
//! unchanged TOAST values among them are looked up, and the rows go in one
//! `INSERT … FORMAT JSONEachRow` per table. Tables are checked (and made,
//! when allowed) the first time the sink meets them, and again when the
//! source announces a new shape.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use weir_codec::NameTemplate;
use weir_core::{ChangeEvent, Op, Rejected, Sink, SinkError, SinkPayload, SinkRecord, Value};

use crate::owners::Owners;

use super::ClickHouseSinkConfig;
use super::encode::{
    ChType, DELETED_COLUMN, ServerError, VERSION_COLUMN, classify, create_table_sql, ident,
    key_literal, key_text, parse_lookup, saturated, string_literal, version, write_value,
};

/// Most keys in one lookup of unchanged TOAST values, to keep the query
/// text well below the server's `max_query_size` (256 KiB).
const LOOKUP_CHUNK: usize = 500;

/// Most times one insert is sent again without a row the server refused,
/// before the batch fails as a whole.
const MAX_REFUSED_ROWS: usize = 100;

/// A sink that keeps one ClickHouse table per source table up to date.
///
/// Connect with [`ClickHouseSink::connect`]; [`ClickHouseSinkConfig`]
/// says how tables are named and made.
pub struct ClickHouseSink {
    name: String,
    config: ClickHouseSinkConfig,
    server: Server,
    tables: Tables,
    owners: Owners,
}

/// A destination table: database and table name.
pub(super) type Dest = (String, String);

/// The server's HTTP interface, with the sink's credentials.
pub(super) struct Server {
    url: String,
    user: String,
    password: Option<String>,
    client: reqwest::Client,
    endpoint: reqwest::Url,
}

/// The tables rows go to: how they are named (the configured templates,
/// and those routes gave, parsed once each), and those already checked
/// against a source shape. The sink and its readback each keep their own.
pub(super) struct Tables {
    database: NameTemplate,
    table: NameTemplate,
    routed: HashMap<String, NameTemplate>,
    checked: HashMap<Dest, Checked>,
}

struct Checked {
    schema: Arc<weir_core::TableSchema>,
    layout: Arc<Layout>,
}

/// How a source table's columns are written.
pub(super) struct Layout {
    pub(super) names: Vec<String>,
    pub(super) types: Vec<ChType>,
    pub(super) keys: Vec<usize>,
}

impl ClickHouseSink {
    /// Checks the configuration and that the server answers and takes the
    /// credentials (`GET /ping`, then `SELECT 1`).
    ///
    /// Fails with [`SinkError::Config`] for an invalid configuration (every
    /// problem, as `sinks.NAME.field: message`), [`SinkError::Transient`]
    /// when the server does not answer, naming its URL, and
    /// [`SinkError::Auth`] when it refuses the user.
    pub async fn connect(
        name: &str,
        config: ClickHouseSinkConfig,
    ) -> Result<ClickHouseSink, SinkError> {
        Ok(ClickHouseSink {
            name: name.to_owned(),
            server: Server::connect(name, &config).await?,
            tables: Tables::new(&config)?,
            config,
            owners: Owners::default(),
        })
    }

    /// The table `record` goes to.
    fn destination(&mut self, record: &SinkRecord, event: &ChangeEvent) -> Result<Dest, SinkError> {
        let (database, table) = self.tables.destination(record.topic.as_deref(), event)?;
        if let Some(source) = &event.table {
            let name = format!("{}.{}", ident(&database), ident(&table));
            self.owners.claim("table", &name, source)?;
        }
        Ok((database, table))
    }

    async fn query(&self, sql: &str, what: &str) -> Result<String, ServerError> {
        self.server.query(sql, what).await
    }

    /// Checks (and makes, when allowed) the table `dest` for rows of `schema`.
    async fn ensure_table(
        &mut self,
        dest: &Dest,
        schema: &Arc<weir_core::TableSchema>,
    ) -> Result<Arc<Layout>, SinkError> {
        let (database, table) = dest;
        let create = self.config.create_tables;
        let layout = self
            .tables
            .layout(&self.server, dest, schema, create)
            .await?;
        layout.ok_or_else(|| {
            SinkError::Config(format!(
                "table {database}.{table} does not exist (create it, or set create_tables = true)"
            ))
        })
    }

    /// Writes every pending table's rows.
    async fn flush(
        &mut self,
        pending: &mut Vec<TableBatch>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        for mut table in pending.drain(..) {
            self.fill_unchanged(&mut table).await?;
            self.insert(&table, rejected).await?;
        }
        Ok(())
    }

    /// Replaces unchanged TOAST values that the batch itself did not hold
    /// with the table's current ones: the row before the change (the old
    /// key's, for a key change), or, when the key already holds this
    /// change's version (a replay), that row's; a write the table holds a
    /// newer version of is dropped.
    async fn fill_unchanged(&self, table: &mut TableBatch) -> Result<(), SinkError> {
        let layout = Arc::clone(&table.layout);
        let mut wanted: Vec<(String, Vec<Value>)> = Vec::new();
        let mut columns = BTreeSet::new();
        for (text, entry) in &table.entries {
            if let (Some(lookup), Row::Upsert(values)) = (&entry.lookup, &entry.row) {
                wanted.push((layout.key_text(lookup), lookup.clone()));
                if *text != wanted[wanted.len() - 1].0 {
                    // A key change: the new key's version tells a replay.
                    let own = layout.key_of(values).map_err(SinkError::Config)?;
                    wanted.push((text.clone(), own));
                }
                columns.extend(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| matches!(v, Value::Unchanged))
                        .map(|(i, _)| i),
                );
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        wanted.dedup_by(|a, b| a.0 == b.0);
        let (database, name) = &table.dest;
        let what = format!("looking up unchanged TOAST values in {database}.{name}");
        let mut found: HashMap<String, Stored> = HashMap::new();
        for chunk in wanted.chunks(LOOKUP_CHUNK) {
            let mut select = layout.key_select();
            select.push(format!(
                "toString({}) AS _weir_lookup_version, {} AS _weir_lookup_deleted",
                ident(VERSION_COLUMN),
                ident(DELETED_COLUMN)
            ));
            select.extend(columns.iter().map(|&i| layout.column_select(i)));
            let tuples: Vec<String> = chunk
                .iter()
                .map(|(_, key)| layout.key_literals(key))
                .collect();
            let sql = format!(
                "SELECT {} FROM {}.{} FINAL WHERE ({}) IN ({}) FORMAT JSONEachRow",
                select.join(", "),
                ident(database),
                ident(name),
                layout.key_columns().join(", "),
                tuples.join(", ")
            );
            let answer = self.query(&sql, &what).await.map_err(into_sink_error)?;
            for line in answer.lines().filter(|l| !l.trim().is_empty()) {
                let row = answer_row(line, &what)?;
                let version = row
                    .get("_weir_lookup_version")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        SinkError::Transient(format!(
                            "{what}: unexpected answer {line:?}: no _weir_version"
                        ))
                    })?;
                let deleted = row
                    .get("_weir_lookup_deleted")
                    .and_then(|d| d.as_u64())
                    .unwrap_or(0)
                    != 0;
                let mut values = HashMap::new();
                for &i in &columns {
                    let text = answer_column(&row, i);
                    let value = parse_lookup(layout.types[i], text).map_err(|e| {
                        SinkError::Transient(format!("{what}: column {}: {e}", layout.names[i]))
                    })?;
                    values.insert(i, value);
                }
                found.insert(
                    layout.answer_key(&row),
                    Stored {
                        version,
                        values: (!deleted).then_some(values),
                    },
                );
            }
        }
        let mut replayed = Vec::new();
        for (text, entry) in table.entries.iter_mut() {
            let (Some(lookup), Row::Upsert(values)) = (&entry.lookup, &mut entry.row) else {
                continue;
            };
            let own = found.get(text);
            if own.is_some_and(|s| s.version > entry.version) {
                // A newer version is there: this one would never be read.
                replayed.push(text.clone());
                continue;
            }
            // The key already holds this very version (a replay, or a
            // change fanned out at one position): its values are those of
            // this place in the stream, even when the old key of a key
            // change has been deleted since.
            let current = match own {
                Some(s) if s.version == entry.version && s.values.is_some() => s.values.as_ref(),
                _ => found
                    .get(&layout.key_text(lookup))
                    .and_then(|s| s.values.as_ref()),
            };
            if current.is_none() {
                // The row is gone (deleted or truncated later in the
                // stream, so this write is older and will not be read), or
                // never reached the table: there is no value to keep.
                tracing::warn!(
                    sink = %self.name,
                    table = %format!("{database}.{name}"),
                    "an update kept unchanged TOAST values of a row the table does not hold; they are written as NULL"
                );
            }
            for (i, value) in values.iter_mut().enumerate() {
                if matches!(value, Value::Unchanged) {
                    *value = current
                        .and_then(|c| c.get(&i).cloned())
                        .unwrap_or(Value::Null);
                }
            }
            entry.lookup = None;
        }
        for text in replayed {
            table.entries.remove(&text);
        }
        Ok(())
    }

    /// Sends one table's rows as one insert; a row the server cannot read
    /// is reported as rejected and the rest sent again without it.
    async fn insert(
        &self,
        table: &TableBatch,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        let layout = &table.layout;
        let mut entries: Vec<&Entry> = table.entries.values().collect();
        entries.sort_by_key(|e| (e.record, e.row.is_upsert()));
        let mut rows: Vec<(usize, Vec<u8>)> = Vec::with_capacity(entries.len());
        let mut line = Vec::new();
        for entry in entries {
            line.clear();
            match encode_row(&mut line, layout, entry) {
                Ok(()) => rows.push((entry.record, line.clone())),
                Err(reason) => rejected.push(Rejected {
                    index: entry.record,
                    reason,
                }),
            }
        }
        let (database, name) = &table.dest;
        let statement = format!(
            "INSERT INTO {}.{} FORMAT JSONEachRow",
            ident(database),
            ident(name)
        );
        let what = format!("inserting into {database}.{name}");
        for _ in 0..=MAX_REFUSED_ROWS {
            if rows.is_empty() {
                return Ok(());
            }
            let body: Vec<u8> = rows.iter().flat_map(|(_, l)| l.iter().copied()).collect();
            match self.server.request(Some(&statement), body, &what).await {
                Ok(_) => return Ok(()),
                Err(ServerError::Other(e)) => return Err(e),
                Err(ServerError::Record {
                    row,
                    column,
                    message,
                }) => {
                    let column = column.map_or(String::new(), |c| format!("column {c}: "));
                    let reason =
                        format!("{what}: {column}ClickHouse could not read the value: {message}");
                    match row.filter(|r| *r < rows.len()) {
                        Some(r) => {
                            let (record, _) = rows.remove(r);
                            rejected.push(Rejected {
                                index: record,
                                reason,
                            });
                        }
                        None => return Err(SinkError::Encode(reason)),
                    }
                }
            }
        }
        Err(SinkError::Encode(format!(
            "{what}: ClickHouse refused more than {MAX_REFUSED_ROWS} rows of one batch"
        )))
    }

    /// Truncates a table by writing a tombstone, at the truncate's version,
    /// for every row older than it. `TRUNCATE TABLE` would be cheaper, but
    /// ClickHouse 18.16 removes the parts from disk only later, and a server
    /// restart in between brings them all back; tombstones are an ordinary
    /// insert, and being versioned, a replayed truncate leaves newer rows be.
    async fn truncate(&self, dest: &Dest, layout: &Layout, version: u64) -> Result<(), SinkError> {
        let (database, name) = dest;
        let keys: Vec<String> = layout
            .keys
            .iter()
            .map(|&i| ident(&layout.names[i]))
            .collect();
        let keys = keys.join(", ");
        let table = format!("{}.{}", ident(database), ident(name));
        let (deleted, versioned) = (ident(DELETED_COLUMN), ident(VERSION_COLUMN));
        self.query(
            &format!(
                "INSERT INTO {table} ({keys}, {deleted}, {versioned}) \
                 SELECT {keys}, 1, {version} FROM {table} FINAL \
                 WHERE {deleted} = 0 AND {versioned} < {version}"
            ),
            &format!("truncating {database}.{name}"),
        )
        .await
        .map(|_| ())
        .map_err(into_sink_error)
    }
}

impl Server {
    /// Checks the configuration, then that the server answers and takes
    /// the credentials (`GET /ping`, then `SELECT 1`).
    pub(super) async fn connect(
        name: &str,
        config: &ClickHouseSinkConfig,
    ) -> Result<Server, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let endpoint = reqwest::Url::parse(&config.url)
            .map_err(|e| SinkError::Config(format!("sinks.{name}.url: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| SinkError::Config(format!("cannot make an HTTP client: {e}")))?;
        let server = Server {
            url: config.url.clone(),
            user: config.user.clone(),
            password: config.password.clone(),
            client,
            endpoint,
        };
        let ping = server.endpoint.join("ping").expect("a fixed path joins");
        let answer = server
            .client
            .get(ping)
            .send()
            .await
            .map_err(|e| server.unreachable("ping", &e))?;
        if !answer.status().is_success() {
            return Err(SinkError::Transient(format!(
                "ping: ClickHouse at {} answered {}",
                server.url,
                answer.status()
            )));
        }
        server
            .query("SELECT 1", "checking the credentials")
            .await
            .map_err(into_sink_error)?;
        Ok(server)
    }

    fn unreachable(&self, what: &str, error: &reqwest::Error) -> SinkError {
        let mut reason = if error.is_timeout() {
            "timed out".to_owned()
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the request failed".to_owned()
        };
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            reason = format!("{reason}: {inner}");
            source = inner.source();
        }
        SinkError::Transient(format!(
            "{what}: ClickHouse at {} did not answer: {reason}",
            self.url
        ))
    }

    /// Sends one request; the answer's body when the server took it.
    pub(super) async fn request(
        &self,
        url_query: Option<&str>,
        body: Vec<u8>,
        what: &str,
    ) -> Result<String, ServerError> {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .basic_auth(&self.user, self.password.as_deref());
        if let Some(q) = url_query {
            request = request.query(&[("query", q)]);
        }
        let answer = request
            .body(body)
            .send()
            .await
            .map_err(|e| ServerError::Other(self.unreachable(what, &e)))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| ServerError::Other(self.unreachable(what, &e)))?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(classify(status.as_u16(), &text, what))
        }
    }

    /// Runs one statement given in the body.
    pub(super) async fn query(&self, sql: &str, what: &str) -> Result<String, ServerError> {
        self.request(None, sql.as_bytes().to_vec(), what).await
    }
}

impl Tables {
    /// The configuration's tables, none checked yet.
    pub(super) fn new(config: &ClickHouseSinkConfig) -> Result<Tables, SinkError> {
        Ok(Tables {
            database: NameTemplate::parse(&config.database).map_err(SinkError::Config)?,
            table: NameTemplate::parse(&config.table).map_err(SinkError::Config)?,
            routed: HashMap::new(),
            checked: HashMap::new(),
        })
    }

    /// The table a change of `event` goes to: `topic` (a route's) or the
    /// `table` template, in the `database` template's database.
    pub(super) fn destination(
        &mut self,
        topic: Option<&str>,
        event: &ChangeEvent,
    ) -> Result<Dest, SinkError> {
        let template = match topic {
            None => &self.table,
            Some(topic) => {
                if !self.routed.contains_key(topic) {
                    ClickHouseSinkConfig::check_name_template(topic)
                        .and_then(|()| NameTemplate::parse(topic))
                        .map(|t| self.routed.insert(topic.to_owned(), t))
                        .map_err(|e| SinkError::Config(format!("table {topic:?}: {e}")))?;
                }
                &self.routed[topic]
            }
        };
        let (mut db, mut name) = (String::new(), String::new());
        self.database
            .expand_event(event, &mut db)
            .and_then(|()| template.expand_event(event, &mut name))
            .map_err(|e| SinkError::Config(e.to_string()))?;
        Ok((db, name))
    }

    /// How rows of `schema` are written to `dest`: checked (and made when
    /// `create`) the first time, and again for another shape; `None` when
    /// the table does not exist and is not made.
    pub(super) async fn layout(
        &mut self,
        server: &Server,
        dest: &Dest,
        schema: &Arc<weir_core::TableSchema>,
        create: bool,
    ) -> Result<Option<Arc<Layout>>, SinkError> {
        if let Some(checked) = self.checked.get(dest)
            && (Arc::ptr_eq(&checked.schema, schema) || checked.schema.columns == schema.columns)
        {
            return Ok(Some(Arc::clone(&checked.layout)));
        }
        let Some(layout) = check_table(server, dest, schema, create).await? else {
            return Ok(None);
        };
        let layout = Arc::new(layout);
        self.checked.insert(
            dest.clone(),
            Checked {
                schema: Arc::clone(schema),
                layout: Arc::clone(&layout),
            },
        );
        Ok(Some(layout))
    }
}

/// Checks that table `dest` can hold rows of `schema` (engine, sort key,
/// every column with its type) and how they are written; `None` when it
/// does not exist and `create` is off (else it is made).
async fn check_table(
    server: &Server,
    dest: &Dest,
    schema: &weir_core::TableSchema,
    create: bool,
) -> Result<Option<Layout>, SinkError> {
    let (database, table) = dest;
    let full = format!("{database}.{table}");
    for column in &schema.columns {
        if column.name == VERSION_COLUMN || column.name == DELETED_COLUMN {
            return Err(SinkError::Config(format!(
                "table {}: source column {} has a name the sink keeps for itself",
                schema.qualified_name(),
                column.name
            )));
        }
    }
    if !schema.columns.iter().any(|c| c.key) {
        return Err(SinkError::Config(format!(
            "table {}: has no key columns to order table {full} by",
            schema.qualified_name()
        )));
    }
    let describe = format!(
        "SELECT engine, engine_full, sorting_key FROM system.tables WHERE database = {} AND name = {} FORMAT JSONEachRow",
        string_literal(database.as_bytes()),
        string_literal(table.as_bytes())
    );
    let what = format!("checking table {full}");
    let mut found = server
        .query(&describe, &what)
        .await
        .map_err(into_sink_error)?;
    if found.trim().is_empty() {
        if !create {
            return Ok(None);
        }
        let what = format!("creating table {full}");
        server
            .query(
                &format!("CREATE DATABASE IF NOT EXISTS {}", ident(database)),
                &what,
            )
            .await
            .map_err(into_sink_error)?;
        server
            .query(&create_table_sql(database, table, schema), &what)
            .await
            .map_err(into_sink_error)?;
        found = server
            .query(&describe, &what)
            .await
            .map_err(into_sink_error)?;
    }
    let info: serde_json::Value = serde_json::from_str(found.trim())
        .map_err(|e| SinkError::Transient(format!("{what}: unexpected answer {found:?}: {e}")))?;
    let text = |k: &str| info[k].as_str().unwrap_or_default().to_owned();
    let (engine, engine_full, sorting_key) =
        (text("engine"), text("engine_full"), text("sorting_key"));
    if !matches!(
        engine.as_str(),
        "ReplacingMergeTree" | "ReplicatedReplacingMergeTree"
    ) || !engine_full.contains(VERSION_COLUMN)
    {
        return Err(SinkError::Config(format!(
            "table {full} has engine {engine_full:?}; the sink needs ReplacingMergeTree({VERSION_COLUMN})"
        )));
    }
    let keys: Vec<&str> = schema
        .columns
        .iter()
        .filter(|c| c.key)
        .map(|c| c.name.as_str())
        .collect();
    let normalized: String = sorting_key
        .chars()
        .filter(|c| *c != '`' && !c.is_whitespace())
        .collect();
    if normalized != keys.join(",") {
        return Err(SinkError::Config(format!(
            "table {full} is ordered by ({sorting_key}), but the key of {} is ({})",
            schema.qualified_name(),
            keys.join(", ")
        )));
    }
    let columns = server
        .query(
            &format!(
                "SELECT name, type FROM system.columns WHERE database = {} AND table = {} FORMAT JSONEachRow",
                string_literal(database.as_bytes()),
                string_literal(table.as_bytes())
            ),
            &what,
        )
        .await
        .map_err(into_sink_error)?;
    let mut existing = HashMap::new();
    for line in columns.lines().filter(|l| !l.trim().is_empty()) {
        let c: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            SinkError::Transient(format!("{what}: unexpected answer {line:?}: {e}"))
        })?;
        existing.insert(
            c["name"].as_str().unwrap_or_default().to_owned(),
            c["type"].as_str().unwrap_or_default().to_owned(),
        );
    }
    let mut wanted: Vec<(String, String, String)> = schema
        .columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                ChType::of(c).column_type(c.key),
                c.type_name.clone(),
            )
        })
        .collect();
    wanted.push((DELETED_COLUMN.into(), "UInt8".into(), "weir".into()));
    wanted.push((VERSION_COLUMN.into(), "UInt64".into(), "weir".into()));
    for (name, want, source_type) in &wanted {
        match existing.get(name) {
            Some(have) if have == want => {}
            Some(have) => {
                return Err(SinkError::Config(format!(
                    "table {full}: column {name} is {have}, but source column {name} ({source_type}) needs {want}"
                )));
            }
            None => {
                return Err(SinkError::Config(format!(
                    "table {full} has no column {name} (source column {name}, {source_type}): \
                     add it with ALTER TABLE {} ADD COLUMN {} {want}",
                    format_args!("{}.{}", ident(database), ident(table)),
                    ident(name)
                )));
            }
        }
    }
    Ok(Some(Layout {
        names: schema.columns.iter().map(|c| c.name.clone()).collect(),
        types: schema.columns.iter().map(ChType::of).collect(),
        keys: schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect(),
    }))
}

pub(super) fn into_sink_error(error: ServerError) -> SinkError {
    match error {
        ServerError::Other(e) => e,
        ServerError::Record { message, .. } => SinkError::Config(message),
    }
}

fn encode_row(out: &mut Vec<u8>, layout: &Layout, entry: &Entry) -> Result<(), String> {
    out.push(b'{');
    let field = |out: &mut Vec<u8>, i: usize, value: &Value| {
        weir_codec::write_str(out, &layout.names[i]);
        out.push(b':');
        write_value(out, layout.types[i], value)
            .map_err(|e| format!("column {}: {e}", layout.names[i]))?;
        out.push(b',');
        Ok::<(), String>(())
    };
    let deleted = match &entry.row {
        Row::Upsert(values) => {
            for (i, value) in values.iter().enumerate() {
                field(out, i, value)?;
            }
            b'0'
        }
        Row::Delete(key) => {
            for (&i, value) in layout.keys.iter().zip(key) {
                field(out, i, value)?;
            }
            b'1'
        }
    };
    out.extend_from_slice(b"\"");
    out.extend_from_slice(DELETED_COLUMN.as_bytes());
    out.extend_from_slice(b"\":");
    out.push(deleted);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(VERSION_COLUMN.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(itoa::Buffer::new().format(entry.version).as_bytes());
    out.extend_from_slice(b"}\n");
    Ok(())
}

impl Layout {
    /// The key values of `row`, in key order.
    pub(super) fn key_of(&self, row: &[Value]) -> Result<Vec<Value>, String> {
        self.keys
            .iter()
            .map(|&i| match row.get(i) {
                Some(Value::Null | Value::Unchanged) | None => {
                    Err(format!("key column {} has no value", self.names[i]))
                }
                Some(v) => Ok(v.clone()),
            })
            .collect()
    }

    /// Text that identifies a key, as the lookup's answer gives it back.
    pub(super) fn key_text(&self, key: &[Value]) -> String {
        self.keys
            .iter()
            .zip(key)
            .map(|(&i, v)| key_text(self.types[i], v))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The key columns, quoted.
    pub(super) fn key_columns(&self) -> Vec<String> {
        self.keys.iter().map(|&i| ident(&self.names[i])).collect()
    }

    /// `key`'s values as a tuple of literals of the key columns' types.
    pub(super) fn key_literals(&self, key: &[Value]) -> String {
        let literals: Vec<String> = self
            .keys
            .iter()
            .zip(key)
            .map(|(&i, v)| key_literal(self.types[i], v))
            .collect();
        format!("({})", literals.join(", "))
    }

    /// The key columns as a lookup selects them, `_weir_k0`, ….
    pub(super) fn key_select(&self) -> Vec<String> {
        self.keys
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                format!(
                    "{} AS _weir_k{n}",
                    self.types[i].lookup_expr(&ident(&self.names[i]))
                )
            })
            .collect()
    }

    /// Column `i` as a lookup selects it; [`answer_column`] reads it.
    pub(super) fn column_select(&self, i: usize) -> String {
        format!(
            "{} AS _weir_c{i}",
            self.types[i].lookup_expr(&ident(&self.names[i]))
        )
    }

    /// A looked-up row's key (as [`Layout::key_select`] selects it), as
    /// [`Layout::key_text`] writes a record's.
    pub(super) fn answer_key(&self, row: &AnswerRow) -> String {
        (0..self.keys.len())
            .map(|n| {
                row.get(&format!("_weir_k{n}"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A line of a lookup's `JSONEachRow` answer.
pub(super) type AnswerRow = serde_json::Map<String, serde_json::Value>;

/// Line `line` of the answer to `what`.
pub(super) fn answer_row(line: &str, what: &str) -> Result<AnswerRow, SinkError> {
    serde_json::from_str(line)
        .map_err(|e| SinkError::Transient(format!("{what}: unexpected answer {line:?}: {e}")))
}

/// The text of column `i` (as [`Layout::column_select`] selects it) in a
/// looked-up row; `None` for NULL.
pub(super) fn answer_column(row: &AnswerRow, i: usize) -> Option<&str> {
    row.get(&format!("_weir_c{i}")).and_then(|v| v.as_str())
}

/// A key's newest row in the table, as a lookup found it.
struct Stored {
    version: u64,
    /// The looked-up columns; `None` for a tombstone.
    values: Option<HashMap<usize, Value>>,
}

/// What the batch last did to one key.
enum Row {
    /// The row's values (some maybe still [`Value::Unchanged`]).
    Upsert(Vec<Value>),
    /// The row was removed; its key values.
    Delete(Vec<Value>),
}

impl Row {
    fn is_upsert(&self) -> bool {
        matches!(self, Row::Upsert(_))
    }
}

struct Entry {
    /// The record's index in the batch.
    record: usize,
    version: u64,
    row: Row,
    /// The key whose stored values fill the row's unchanged TOAST values.
    lookup: Option<Vec<Value>>,
}

/// One destination table's share of a piece of a batch: the last change
/// of each key.
struct TableBatch {
    dest: Dest,
    layout: Arc<Layout>,
    entries: HashMap<String, Entry>,
}

impl TableBatch {
    fn new(dest: Dest, layout: Arc<Layout>) -> Self {
        TableBatch {
            dest,
            layout,
            entries: HashMap::new(),
        }
    }

    /// Takes the change `event` (record `record` of the batch); an error
    /// says why the record cannot be written.
    fn add(&mut self, record: usize, version: u64, event: &ChangeEvent) -> Result<(), String> {
        let layout = Arc::clone(&self.layout);
        if event.op == Op::Delete {
            let old = event
                .before
                .as_ref()
                .or(event.after.as_ref())
                .ok_or("a delete without the old row's key")?;
            let key = layout.key_of(old)?;
            self.entries.insert(
                layout.key_text(&key),
                Entry {
                    record,
                    version,
                    row: Row::Delete(key),
                    lookup: None,
                },
            );
            return Ok(());
        }
        let after = event.after.as_ref().ok_or("a change without its new row")?;
        if after.len() != layout.names.len() {
            return Err(format!(
                "the row has {} values for {} columns",
                after.len(),
                layout.names.len()
            ));
        }
        let key = layout.key_of(after)?;
        let text = layout.key_text(&key);
        // A primary-key change: the old key is deleted in the same change.
        let mut old_key = None;
        if let Some(before) = &event.before
            && let Ok(before_key) = layout.key_of(before)
        {
            let before_text = layout.key_text(&before_key);
            if before_text != text {
                old_key = Some((before_text, before_key));
            }
        }
        let mut values = after.clone();
        let mut lookup = None;
        if values.iter().any(|v| matches!(v, Value::Unchanged)) {
            let (source_text, source_key) = match &old_key {
                Some((t, k)) => (t.clone(), k.clone()),
                None => (text.clone(), key.clone()),
            };
            match self.entries.get(&source_text) {
                Some(Entry {
                    row: Row::Upsert(previous),
                    lookup: previous_lookup,
                    ..
                }) => {
                    for (value, old) in values.iter_mut().zip(previous) {
                        if matches!(value, Value::Unchanged) {
                            *value = old.clone();
                        }
                    }
                    if values.iter().any(|v| matches!(v, Value::Unchanged)) {
                        lookup = previous_lookup.clone();
                    }
                }
                _ => lookup = Some(source_key),
            }
        }
        if let Some((old_text, old_key)) = old_key {
            self.entries.insert(
                old_text,
                Entry {
                    record,
                    version,
                    row: Row::Delete(old_key),
                    lookup: None,
                },
            );
        }
        self.entries.insert(
            text,
            Entry {
                record,
                version,
                row: Row::Upsert(values),
                lookup,
            },
        );
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut rejected = Vec::new();
        let mut pending: Vec<TableBatch> = Vec::new();
        for (i, record) in batch.iter().enumerate() {
            let SinkPayload::Change(event) = &record.payload else {
                rejected.push(Rejected {
                    index: i,
                    reason: "a raw record has no columns to write to a table".to_owned(),
                });
                continue;
            };
            let Some(schema) = &event.table else {
                // Logical messages have no row to keep.
                continue;
            };
            match event.op {
                Op::Message => {}
                Op::Truncate => {
                    if !schema.columns.iter().any(|c| c.key) {
                        // None of its rows can have been written.
                        continue;
                    }
                    self.flush(&mut pending, &mut rejected).await?;
                    let dest = self.destination(record, event)?;
                    let layout = self.ensure_table(&dest, schema).await?;
                    let position = event.source.position();
                    if saturated(position) {
                        // Rows written earlier in this transaction may share
                        // the truncate's version and would survive it.
                        return Err(SinkError::Config(format!(
                            "a TRUNCATE of {} is change {} of its transaction, beyond the \
                             65,536 that _weir_version tells apart, so rows written before it \
                             in the same transaction would survive it; split the transaction",
                            schema.qualified_name(),
                            position.seq + 1
                        )));
                    }
                    let version = version(position)?;
                    self.truncate(&dest, &layout, version).await?;
                }
                Op::Insert | Op::Update | Op::Delete | Op::Read => {
                    let dest = self.destination(record, event)?;
                    let layout = match self.ensure_table(&dest, schema).await {
                        Ok(layout) => layout,
                        Err(e) => return Err(e),
                    };
                    let at = match pending.iter().position(|t| t.dest == dest) {
                        Some(at) if Arc::ptr_eq(&pending[at].layout, &layout) => at,
                        Some(_) => {
                            // The table's shape changed within the batch:
                            // rows of the old shape go first.
                            self.flush(&mut pending, &mut rejected).await?;
                            pending.push(TableBatch::new(dest, layout));
                            pending.len() - 1
                        }
                        None => {
                            pending.push(TableBatch::new(dest, layout));
                            pending.len() - 1
                        }
                    };
                    let version = version(event.source.position())?;
                    if let Err(reason) = pending[at].add(i, version, event) {
                        rejected.push(Rejected {
                            index: i,
                            reason: format!("table {}: {reason}", schema.qualified_name()),
                        });
                    }
                }
            }
        }
        self.flush(&mut pending, &mut rejected).await?;
        if rejected.is_empty() {
            Ok(())
        } else {
            rejected.sort_by_key(|r| r.index);
            rejected.dedup_by_key(|r| r.index);
            Err(SinkError::Rejected(rejected))
        }
    }
}
