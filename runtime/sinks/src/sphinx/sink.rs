//! The `sphinx` sink's I/O: reads the stored versions of a batch's
//! documents from the state indexes, decides what each change does, and
//! writes the main and state indexes in multi-row statements.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, OptsBuilder, Row};
use weir_codec::NameTemplate;
use weir_core::{
    ChangeEvent, Lsn, Op, Position, Rejected, Sink, SinkError, SinkPayload, SinkRecord, Value,
};

use crate::owners::Owners;

use super::config::{AttributeType, STATE_COLUMNS, SphinxSinkConfig};
use super::encode::{Cell, DocId, WATERMARK_ID, cell, document_id, quote};

/// Ids per `IN (…)` list: searchd returns at most `max_matches` rows per
/// query, and this keeps each query well inside it.
pub(super) const IDS_PER_QUERY: usize = 1000;

/// Room left in a statement for its header (`REPLACE INTO … VALUES `).
const HEADER_ROOM: usize = 1024;

/// A sink writing row changes to Sphinx or Manticore real-time indexes.
pub struct SphinxSink {
    name: String,
    config: SphinxSinkConfig,
    columns: Vec<(String, Option<AttributeType>)>,
    index: NameTemplate,
    conn: Option<Conn>,
    /// Indexes whose schema has been checked on this connection's server.
    checked: HashSet<String>,
    owners: Owners,
}

/// A document as the state index holds it, or as this batch left it.
#[derive(Clone, Debug)]
struct Doc {
    key: String,
    pos: Position,
    /// The columns as last written; `None` once deleted (a tombstone).
    cells: Option<BTreeMap<String, Cell>>,
    /// The batch record that last changed it; `None` if untouched.
    record: Option<usize>,
}

/// One index's share of a batch.
#[derive(Debug, Default)]
struct IndexPlan {
    ids: BTreeSet<u64>,
    docs: HashMap<u64, Doc>,
    /// The position of the last truncate applied (stored, or in this batch).
    watermark: Position,
    /// This batch truncates the index at this position.
    truncate: Option<Position>,
}

/// What one record does.
pub(super) enum Action {
    Upsert {
        id: DocId,
        old: Option<DocId>,
        values: Vec<Value>,
    },
    Delete {
        id: DocId,
    },
    Truncate,
}

/// One record's change, planned: the index it goes to and what it does.
pub(super) struct Step<'a> {
    pub(super) record: usize,
    pub(super) index: String,
    pub(super) pos: Position,
    pub(super) event: &'a ChangeEvent,
    pub(super) action: Action,
}

impl SphinxSink {
    /// Connects to searchd and makes the sink.
    pub async fn connect(name: &str, config: SphinxSinkConfig) -> Result<Self, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let index = NameTemplate::parse(&config.index).map_err(SinkError::Config)?;
        let mut sink = SphinxSink {
            name: name.to_owned(),
            columns: config.columns(),
            config,
            index,
            conn: None,
            checked: HashSet::new(),
            owners: Owners::default(),
        };
        sink.connection().await?;
        Ok(sink)
    }

    async fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            let (host, port) =
                self.config.address.rsplit_once(':').ok_or_else(|| {
                    SinkError::Config(format!("bad address {}", self.config.address))
                })?;
            let port: u16 = port
                .parse()
                .map_err(|_| SinkError::Config(format!("bad port in {}", self.config.address)))?;
            // SphinxQL is not MySQL: settings given here keep the client
            // from asking for `@@max_allowed_packet`, `@@wait_timeout` and
            // `@@socket`, which searchd does not know; no statement cache,
            // as only the text protocol is used.
            let opts = OptsBuilder::default()
                .ip_or_hostname(host.trim_start_matches('[').trim_end_matches(']'))
                .tcp_port(port)
                .prefer_socket(false)
                .max_allowed_packet(Some(
                    (self.config.max_statement_bytes + HEADER_ROOM).max(1024),
                ))
                .wait_timeout(Some(28_800))
                .stmt_cache_size(0)
                .tcp_nodelay(true);
            let conn = timed(self.config.timeout, Conn::new(opts))
                .await
                .map_err(|e| {
                    SinkError::Transient(format!(
                        "cannot connect to searchd at {} (SphinxQL): {e}",
                        self.config.address
                    ))
                })?;
            self.checked.clear();
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The configured columns, in the order they are written.
    pub(super) fn columns(&self) -> &[(String, Option<AttributeType>)] {
        &self.columns
    }

    /// The sink's configuration.
    pub(super) fn config(&self) -> &SphinxSinkConfig {
        &self.config
    }

    /// Runs one statement; a failed connection is dropped so the next
    /// write reconnects.
    async fn exec(&mut self, sql: &str) -> Result<(), StatementError> {
        let timeout = self.config.timeout;
        let conn = self.connection().await.map_err(StatementError::Sink)?;
        let result = timed(timeout, conn.query_drop(sql)).await;
        self.settle(result)
    }

    pub(super) async fn select(&mut self, sql: &str) -> Result<Vec<Row>, StatementError> {
        let timeout = self.config.timeout;
        let conn = self.connection().await.map_err(StatementError::Sink)?;
        let result = timed(timeout, conn.query::<Row, _>(sql)).await;
        self.settle(result)
    }

    fn settle<T>(&mut self, result: Result<T, TimedError>) -> Result<T, StatementError> {
        match result {
            Ok(v) => Ok(v),
            Err(TimedError::Mysql(mysql_async::Error::Server(e))) => {
                Err(StatementError::Server(e.message))
            }
            Err(e) => {
                self.conn = None;
                Err(StatementError::Sink(SinkError::Transient(format!(
                    "searchd at {}: {e}",
                    self.config.address
                ))))
            }
        }
    }

    /// Checks, once per connection, that `index` and its state index have
    /// the columns the sink writes.
    pub(super) async fn check_index(&mut self, index: &str) -> Result<(), SinkError> {
        if self.checked.contains(index) {
            return Ok(());
        }
        let state = self.state_index(index);
        let mut wanted: Vec<String> = self.columns.iter().map(|(c, _)| c.clone()).collect();
        wanted.extend(self.config.nulls_attribute.clone());
        for (name, wanted) in [
            (index.to_owned(), wanted),
            (
                state.clone(),
                STATE_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
            ),
        ] {
            let rows = self
                .select(&format!("DESCRIBE {name}"))
                .await
                .map_err(|e| match e {
                    StatementError::Server(m) => SinkError::Config(format!(
                        "index {name}: {m} (declare it in sphinx.conf as a real-time index{})",
                        if name == state {
                            format!(", the state index of {index}")
                        } else {
                            String::new()
                        }
                    )),
                    StatementError::Sink(e) => e,
                })?;
            let have: HashSet<String> = rows.iter().map(|r| column_text(r, 0)).collect();
            let missing: Vec<&String> = wanted.iter().filter(|c| !have.contains(*c)).collect();
            if !missing.is_empty() {
                return Err(SinkError::Config(format!(
                    "index {name} has no column {} (declare {} in sphinx.conf)",
                    missing
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if name == state {
                        "rt_attr_string = weir_key, rt_attr_bigint = weir_lsn, rt_attr_uint = \
                         weir_seq, rt_attr_uint = weir_deleted, rt_attr_string = weir_doc"
                    } else {
                        "them as rt_field or rt_attr_TYPE"
                    }
                )));
            }
        }
        self.checked.insert(index.to_owned());
        Ok(())
    }

    pub(super) fn state_index(&self, index: &str) -> String {
        format!("{index}{}", self.config.state_suffix)
    }

    /// Writes the index name for `event` into `name`: from the route's
    /// `topic`, else the sink's template.
    pub(super) fn index_name(
        &self,
        topic: Option<&str>,
        event: &ChangeEvent,
        name: &mut String,
    ) -> Result<(), String> {
        let expanded = match topic {
            Some(topic) => NameTemplate::parse(topic)
                .map_err(|e| e.to_string())
                .and_then(|t| t.expand_event(event, name).map_err(|e| e.to_string())),
            None => self
                .index
                .expand_event(event, name)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = expanded {
            return Err(format!("index name: {e}"));
        }
        if !super::config::is_plain_name(name) {
            return Err(format!(
                "index name {name:?} is not a Sphinx index name (letters, digits, '_')"
            ));
        }
        Ok(())
    }

    /// The steps of a batch; refused records go to `rejected`.
    pub(super) fn plan<'a>(
        &self,
        batch: &'a [SinkRecord],
        rejected: &mut Vec<Rejected>,
    ) -> Vec<Step<'a>> {
        let mut steps = Vec::new();
        let mut name = String::new();
        for (i, record) in batch.iter().enumerate() {
            let mut refuse = |reason: String| rejected.push(Rejected { index: i, reason });
            let event = match &record.payload {
                SinkPayload::Change(event) => event,
                SinkPayload::Raw(_) => {
                    refuse("a raw record cannot be written to a Sphinx index".to_owned());
                    continue;
                }
            };
            if event.op == Op::Message || event.table.is_none() {
                // Logical messages carry no row: nothing to index.
                continue;
            }
            if let Err(reason) = self.index_name(record.topic.as_deref(), event, &mut name) {
                refuse(reason);
                continue;
            }
            let action = match event.op {
                Op::Truncate => Action::Truncate,
                Op::Insert | Op::Update | Op::Read => {
                    let Some(after) = &event.after else {
                        refuse("a change without its new row".to_owned());
                        continue;
                    };
                    let Some(id) = document_id(event, after) else {
                        refuse("a row without key columns".to_owned());
                        continue;
                    };
                    let old = event
                        .before
                        .as_ref()
                        .and_then(|b| document_id(event, b))
                        .filter(|old| old.key != id.key);
                    Action::Upsert {
                        id,
                        old,
                        values: after.clone(),
                    }
                }
                Op::Delete => {
                    let Some(id) = event
                        .before
                        .as_ref()
                        .or(event.after.as_ref())
                        .and_then(|row| document_id(event, row))
                    else {
                        refuse("a delete without key columns".to_owned());
                        continue;
                    };
                    Action::Delete { id }
                }
                Op::Message => continue,
            };
            steps.push(Step {
                record: i,
                index: name.clone(),
                pos: event.source.position(),
                event,
                action,
            });
        }
        steps
    }

    /// Reads the state of the documents the steps touch.
    async fn load(&mut self, plans: &mut BTreeMap<String, IndexPlan>) -> Result<(), SinkError> {
        for (index, plan) in plans.iter_mut() {
            let state = self.state_index(index);
            let mut ids: Vec<u64> = plan.ids.iter().copied().collect();
            ids.push(WATERMARK_ID);
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let list = join_ids(chunk);
                let sql = format!(
                    "SELECT id, weir_key, weir_lsn, weir_seq, weir_deleted, weir_doc FROM {state} \
                     WHERE id IN ({list}) LIMIT {n} OPTION max_matches={n}",
                    n = chunk.len()
                );
                let rows = self.select(&sql).await.map_err(|e| e.into_sink(&state))?;
                for row in rows {
                    let id: u64 = column_text(&row, 0).parse().map_err(|_| {
                        SinkError::Config(format!("index {state}: a document id is not a number"))
                    })?;
                    let lsn = column_text(&row, 2).parse::<i64>().unwrap_or(0) as u64;
                    let seq = column_text(&row, 3).parse::<u32>().unwrap_or(0);
                    let pos = Position {
                        commit_lsn: Lsn(lsn),
                        seq,
                    };
                    if id == WATERMARK_ID {
                        plan.watermark = pos;
                        continue;
                    }
                    let deleted = column_text(&row, 4) != "0";
                    let cells = if deleted {
                        None
                    } else {
                        let doc = column_text(&row, 5);
                        Some(serde_json::from_str(&doc).map_err(|e| {
                            SinkError::Config(format!(
                                "index {state}: document {id} has an unreadable weir_doc ({e}); \
                                 was the index written by something other than Weir?"
                            ))
                        })?)
                    };
                    plan.docs.insert(
                        id,
                        Doc {
                            key: column_text(&row, 1),
                            pos,
                            cells,
                            record: None,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Applies the steps, in order, to the loaded state.
    fn apply(
        &self,
        steps: &[Step<'_>],
        plans: &mut BTreeMap<String, IndexPlan>,
        rejected: &mut Vec<Rejected>,
    ) {
        for step in steps {
            let plan = plans.get_mut(&step.index).expect("planned index");
            if step.pos < plan.watermark {
                continue;
            }
            match &step.action {
                Action::Truncate => {
                    if plan.truncate.is_none() && step.pos == plan.watermark {
                        // Already applied before (a replay): the documents
                        // written since must stay.
                        continue;
                    }
                    plan.truncate = Some(step.pos);
                    plan.watermark = step.pos;
                    plan.docs.clear();
                }
                Action::Delete { id } => {
                    if let Err(reason) = tombstone(plan, id, step) {
                        rejected.push(Rejected {
                            index: step.record,
                            reason,
                        });
                    }
                }
                Action::Upsert { id, old, values } => {
                    if let Some(doc) = plan.docs.get(&id.id) {
                        if doc.key != id.key {
                            rejected.push(Rejected {
                                index: step.record,
                                reason: collision(id, &doc.key),
                            });
                            continue;
                        }
                        if doc.pos > step.pos {
                            continue;
                        }
                    }
                    // Values the update left unchanged come from the row
                    // before it: for a key change the old key's document,
                    // unless it is gone or newer (a replay), when the new
                    // document already holds them.
                    let before = old
                        .as_ref()
                        .and_then(|o| plan.docs.get(&o.id).filter(|d| d.key == o.key))
                        .filter(|d| d.pos < step.pos)
                        .and_then(|d| d.cells.as_ref());
                    let current =
                        before.or_else(|| plan.docs.get(&id.id).and_then(|d| d.cells.as_ref()));
                    let cells = match self.cells(step.event, values, current) {
                        Ok(cells) => cells,
                        Err(reason) => {
                            rejected.push(Rejected {
                                index: step.record,
                                reason,
                            });
                            continue;
                        }
                    };
                    let size = self.row_sql(id.id, &cells).len() + id.key.len();
                    if size * 2 + HEADER_ROOM > self.config.max_statement_bytes {
                        rejected.push(Rejected {
                            index: step.record,
                            reason: format!(
                                "the document is about {size} bytes of SphinxQL, which with its \
                                 state does not fit in max_statement_bytes ({})",
                                self.config.max_statement_bytes
                            ),
                        });
                        continue;
                    }
                    if let Some(old) = old
                        && let Err(reason) = tombstone(plan, old, step)
                    {
                        rejected.push(Rejected {
                            index: step.record,
                            reason,
                        });
                        continue;
                    }
                    plan.docs.insert(
                        id.id,
                        Doc {
                            key: id.key.clone(),
                            pos: step.pos,
                            cells: Some(cells),
                            record: Some(step.record),
                        },
                    );
                }
            }
        }
    }

    /// The columns of the new row; an unchanged TOAST value keeps what
    /// the document held.
    pub(super) fn cells(
        &self,
        event: &ChangeEvent,
        values: &[Value],
        current: Option<&BTreeMap<String, Cell>>,
    ) -> Result<BTreeMap<String, Cell>, String> {
        let mut out = BTreeMap::new();
        for (column, ty) in &self.columns {
            out.insert(
                column.clone(),
                self.cell_of(event, values, column, *ty, current)?,
            );
        }
        Ok(out)
    }

    /// One column of [`cells`](Self::cells): a column the table does not
    /// have is NULL.
    pub(super) fn cell_of(
        &self,
        event: &ChangeEvent,
        values: &[Value],
        column: &str,
        ty: Option<AttributeType>,
        current: Option<&BTreeMap<String, Cell>>,
    ) -> Result<Cell, String> {
        let table = event.table.as_ref().expect("row changes have a table");
        let value = table
            .columns
            .iter()
            .zip(values)
            .find(|(c, _)| c.name == column)
            .map(|(_, v)| v);
        Ok(match value {
            Some(Value::Unchanged) => current
                .and_then(|c| c.get(column))
                .cloned()
                .unwrap_or(Cell::Null),
            Some(value) => cell(column, value, ty)?,
            None => Cell::Null,
        })
    }

    /// `(id, columns…[, nulls])` for the main index.
    fn row_sql(&self, id: u64, cells: &BTreeMap<String, Cell>) -> String {
        let mut out = format!("({id}");
        for (column, ty) in &self.columns {
            out.push(',');
            cells
                .get(column)
                .unwrap_or(&Cell::Null)
                .write_sql(*ty, &mut out);
        }
        if self.config.nulls_attribute.is_some() {
            out.push(',');
            quote(&self.nulls(cells), &mut out);
        }
        out.push(')');
        out
    }

    /// What the nulls attribute holds for `cells`: the NULL columns'
    /// names, separated by spaces.
    pub(super) fn nulls(&self, cells: &BTreeMap<String, Cell>) -> String {
        let nulls: Vec<&str> = self
            .columns
            .iter()
            .filter(|(c, _)| cells.get(c).is_none_or(Cell::is_null))
            .map(|(c, _)| c.as_str())
            .collect();
        nulls.join(" ")
    }

    fn main_header(&self, index: &str) -> String {
        // Backquoted: a column may be named like a SphinxQL keyword (`by`).
        let mut header = format!("REPLACE INTO {index} (id");
        for column in self
            .columns
            .iter()
            .map(|(c, _)| c)
            .chain(&self.config.nulls_attribute)
        {
            header.push_str(",`");
            header.push_str(column);
            header.push('`');
        }
        header.push_str(") VALUES ");
        header
    }

    /// Writes one index's share of the batch: the truncate, the deletes and
    /// documents of the main index, then the state index.
    async fn flush(
        &mut self,
        index: &str,
        plan: IndexPlan,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        let state = self.state_index(index);
        if let Some(pos) = plan.truncate {
            for target in [index, state.as_str()] {
                self.exec(&format!("TRUNCATE RTINDEX {target}"))
                    .await
                    .map_err(|e| e.into_sink(target))?;
            }
            let mut row = format!("({WATERMARK_ID},'',");
            write_position(pos, &mut row);
            row.push_str(",1,'')");
            self.exec(&format!("{}{row}", state_header(&state)))
                .await
                .map_err(|e| e.into_sink(&state))?;
        }
        let mut touched: Vec<(u64, Doc)> = plan
            .docs
            .into_iter()
            .filter(|(_, d)| d.record.is_some())
            .collect();
        touched.sort_by_key(|(id, _)| *id);
        let deleted: Vec<u64> = touched
            .iter()
            .filter(|(_, d)| d.cells.is_none())
            .map(|(id, _)| *id)
            .collect();
        for chunk in deleted.chunks(IDS_PER_QUERY) {
            self.exec(&format!(
                "DELETE FROM {index} WHERE id IN ({})",
                join_ids(chunk)
            ))
            .await
            .map_err(|e| e.into_sink(index))?;
        }
        let rows: Vec<(usize, String)> = touched
            .iter()
            .filter_map(|(id, d)| Some((d.record?, self.row_sql(*id, d.cells.as_ref()?))))
            .collect();
        let header = self.main_header(index);
        let refused = self.replace_rows(index, &header, rows).await?;
        let mut state_rows = Vec::new();
        for (id, doc) in &touched {
            let record = doc.record.expect("touched");
            if refused.iter().any(|r| r.index == record) {
                continue;
            }
            let mut row = format!("({id},");
            quote(&doc.key, &mut row);
            row.push(',');
            write_position(doc.pos, &mut row);
            match &doc.cells {
                Some(cells) => {
                    row.push_str(",0,");
                    let text = serde_json::to_string(cells).expect("cells serialize");
                    quote(&text, &mut row);
                }
                None => row.push_str(",1,''"),
            }
            row.push(')');
            state_rows.push((record, row));
        }
        let state_refused = self
            .replace_rows(&state, &state_header(&state), state_rows)
            .await?;
        rejected.extend(refused);
        rejected.extend(state_refused);
        Ok(())
    }

    /// Writes rows in multi-row `REPLACE` statements of at most
    /// `max_statement_bytes`. When searchd refuses a statement, its rows are
    /// written one by one, and the ones it refuses alone are returned.
    async fn replace_rows(
        &mut self,
        index: &str,
        header: &str,
        rows: Vec<(usize, String)>,
    ) -> Result<Vec<Rejected>, SinkError> {
        let limit = self.config.max_statement_bytes;
        let mut refused = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let mut sql = header.to_owned();
            let mut end = start;
            while end < rows.len() {
                let row = &rows[end].1;
                if end > start && sql.len() + row.len() + 1 > limit {
                    break;
                }
                if end > start {
                    sql.push(',');
                }
                sql.push_str(row);
                end += 1;
            }
            match self.exec(&sql).await {
                Ok(()) => {}
                Err(StatementError::Server(message)) if is_config_error(&message) => {
                    return Err(SinkError::Config(format!("index {index}: {message}")));
                }
                Err(StatementError::Server(message)) if end - start == 1 => {
                    refused.push(Rejected {
                        index: rows[start].0,
                        reason: format!("searchd refused the document for {index}: {message}"),
                    });
                }
                Err(StatementError::Server(_)) => {
                    for (record, row) in &rows[start..end] {
                        match self.exec(&format!("{header}{row}")).await {
                            Ok(()) => {}
                            Err(StatementError::Server(message)) => refused.push(Rejected {
                                index: *record,
                                reason: format!(
                                    "searchd refused the document for {index}: {message}"
                                ),
                            }),
                            Err(e) => return Err(e.into_sink(index)),
                        }
                    }
                }
                Err(e) => return Err(e.into_sink(index)),
            }
            start = end;
        }
        Ok(refused)
    }

    async fn write_batch(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut rejected = Vec::new();
        let steps = self.plan(batch, &mut rejected);
        let mut plans: BTreeMap<String, IndexPlan> = BTreeMap::new();
        for step in &steps {
            if let Some(table) = &step.event.table {
                self.owners.claim("index", &step.index, table)?;
            }
            let plan = plans.entry(step.index.clone()).or_default();
            match &step.action {
                Action::Upsert { id, old, .. } => {
                    plan.ids.insert(id.id);
                    if let Some(old) = old {
                        plan.ids.insert(old.id);
                    }
                }
                Action::Delete { id } => {
                    plan.ids.insert(id.id);
                }
                Action::Truncate => {}
            }
        }
        let indexes: Vec<String> = plans.keys().cloned().collect();
        for index in &indexes {
            self.check_index(index).await?;
        }
        self.load(&mut plans).await?;
        self.apply(&steps, &mut plans, &mut rejected);
        for (index, plan) in plans {
            self.flush(&index, plan, &mut rejected).await?;
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            rejected.sort_by_key(|r| r.index);
            rejected.dedup_by_key(|r| r.index);
            Err(SinkError::Rejected(rejected))
        }
    }
}

#[async_trait::async_trait]
impl Sink for SphinxSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.write_batch(batch).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(conn) = self.conn.take() {
            // searchd makes each statement durable in its binlog before it
            // answers; closing only says goodbye.
            let _ = timed(self.config.timeout, conn.disconnect()).await;
        }
        Ok(())
    }
}

/// Leaves a tombstone for `id` at the step's position, unless a newer
/// version is known.
fn tombstone(plan: &mut IndexPlan, id: &DocId, step: &Step<'_>) -> Result<(), String> {
    if let Some(doc) = plan.docs.get(&id.id) {
        if doc.key != id.key {
            return Err(collision(id, &doc.key));
        }
        if doc.pos > step.pos {
            return Ok(());
        }
    }
    plan.docs.insert(
        id.id,
        Doc {
            key: id.key.clone(),
            pos: step.pos,
            cells: None,
            record: Some(step.record),
        },
    );
    Ok(())
}

fn collision(id: &DocId, other: &str) -> String {
    format!(
        "key {:?} and key {other:?} hash to the same document id {}; one of them cannot be indexed",
        id.key, id.id
    )
}

fn state_header(state: &str) -> String {
    format!("REPLACE INTO {state} (id,weir_key,weir_lsn,weir_seq,weir_deleted,weir_doc) VALUES ")
}

/// `weir_lsn,weir_seq`: the LSN goes into a signed bigint bit for bit.
fn write_position(pos: Position, out: &mut String) {
    out.push_str(&(pos.commit_lsn.0 as i64).to_string());
    out.push(',');
    out.push_str(&pos.seq.to_string());
}

pub(super) fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// A column of a text-protocol row as text (empty for NULL).
pub(super) fn column_text(row: &Row, i: usize) -> String {
    match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(mysql_async::Value::Int(n)) => n.to_string(),
        Some(mysql_async::Value::UInt(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// searchd's messages for a statement that no row can fix: the index or a
/// column is not declared as the sink's configuration says.
fn is_config_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("unknown column")
        || m.contains("no such index")
        || m.contains("unknown index")
        || m.contains("not a real-time index")
        || m.contains("does not support insert")
}

pub(super) enum StatementError {
    /// searchd answered with an error.
    Server(String),
    /// The connection failed or timed out.
    Sink(SinkError),
}

impl StatementError {
    pub(super) fn into_sink(self, index: &str) -> SinkError {
        match self {
            StatementError::Server(m) if is_config_error(&m) => {
                SinkError::Config(format!("index {index}: {m}"))
            }
            StatementError::Server(m) => SinkError::Transient(format!("index {index}: {m}")),
            StatementError::Sink(e) => e,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum TimedError {
    #[error("{0}")]
    Mysql(mysql_async::Error),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

async fn timed<T>(
    limit: std::time::Duration,
    f: impl Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, TimedError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TimedError::Mysql(e)),
        Err(_) => Err(TimedError::Timeout(limit)),
    }
}
