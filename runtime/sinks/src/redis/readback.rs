//! Reading back what the cache holds, for `weir verify`: one pipeline of
//! `GET`s (or `HGETALL`s) per batch of records, and `SCAN` for a table's
//! keys. Keys, hash fields and JSON members come from the very helpers the
//! sink writes with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde_json::value::RawValue;
use weir_core::{
    ChangeEvent, ColumnDiff, Held, HeldKey, KeyPage, Op, Readback, SinkError, SinkPayload,
    SinkRecord, SourceInfo, TableSchema, TxnId, Value,
};

use super::config::{Format, KeyTemplate, KeyTemplates, RedisSinkConfig};
use super::sink::{classify, hash_fields, json_row, open_connection, scan, table_pattern};

/// The field of a row's hash that holds its version (hash format).
const VERSION_FIELD: &str = "_weir_version";

/// Most `SCAN` steps one page of keys takes: a table's keys can be sparse
/// in a large database, and a page should come back in bounded time even
/// when it found fewer keys than asked.
const MAX_SCAN_STEPS: usize = 32;

/// Reads back a `redis` sink in cache mode, over a connection of its own.
pub(super) struct RedisReadback {
    format: Format,
    version_prefix: String,
    conn: ConnectionManager,
    secrets: Vec<String>,
    keys: KeyTemplates,
}

/// What one record asks of the cache.
enum Ask {
    /// Nothing to look up: the record is no row.
    Nothing,
    /// The row the key should hold.
    Row { key: String, want: Want },
    /// The key should hold nothing.
    Absent { key: String },
}

/// The row writing a record would leave, column by column.
enum Want {
    /// Each compared column and its JSON text (`format = "json"`) or its
    /// hash field (`format = "hash"`, `None` for a NULL: no field).
    Columns {
        columns: Vec<(String, Option<String>)>,
        /// Every column of the table: a stored field or member outside it
        /// is a difference.
        table: Arc<TableSchema>,
    },
    /// The sink would refuse the row (a value it cannot encode).
    Refused(String),
}

impl RedisReadback {
    /// Connects as the sink does; cache mode only.
    pub(super) async fn open(name: &str, config: &RedisSinkConfig) -> Result<Self, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let (conn, secrets) = open_connection(config).await?;
        Ok(RedisReadback {
            format: config.format,
            version_prefix: config.version_prefix.clone(),
            conn,
            secrets,
            keys: KeyTemplates::new(&config.key).map_err(SinkError::Config)?,
        })
    }

    fn template(&mut self, topic: Option<&str>) -> Result<Arc<KeyTemplate>, SinkError> {
        self.keys
            .get(topic)
            .map_err(|e| SinkError::Config(format!("the route's {e}")))
    }

    fn ask(&mut self, record: &SinkRecord) -> Result<Ask, SinkError> {
        let SinkPayload::Change(event) = &record.payload else {
            return Ok(Ask::Nothing);
        };
        let (Some(table), Op::Read | Op::Delete) = (&event.table, event.op) else {
            return Ok(Ask::Nothing);
        };
        let template = self.template(record.topic.as_deref())?;
        let mut key = String::new();
        template
            .row
            .expand_event(event, &mut key)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        if event.op == Op::Delete {
            return Ok(Ask::Absent { key });
        }
        let Some(row) = event.after.as_deref() else {
            return Ok(Ask::Nothing);
        };
        let want = self.want(table, row);
        Ok(Ask::Row { key, want })
    }

    /// What writing `row` would store, through the sink's own encoding.
    fn want(&self, table: &Arc<TableSchema>, row: &[Value]) -> Want {
        // A value Postgres did not send cannot be compared (a `read`
        // event always has them all).
        let compared = |name: &str| {
            table
                .columns
                .iter()
                .zip(row)
                .any(|(c, v)| c.name == name && !matches!(v, Value::Unchanged))
        };
        let columns = match self.format {
            Format::Hash => {
                let fields: HashMap<&str, String> = hash_fields(table, row).into_iter().collect();
                table
                    .columns
                    .iter()
                    .filter(|c| compared(&c.name))
                    .map(|c| (c.name.clone(), fields.get(c.name.as_str()).cloned()))
                    .collect()
            }
            Format::Json => {
                let mut text = Vec::new();
                if let Err(e) = json_row(table, row, &mut text) {
                    return Want::Refused(e);
                }
                let Ok(members) = serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(&text)
                else {
                    return Want::Refused("the row's JSON does not read back".to_owned());
                };
                table
                    .columns
                    .iter()
                    .filter(|c| compared(&c.name))
                    .map(|c| {
                        let value = members.get(&c.name).map(|v| v.get().to_owned());
                        (c.name.clone(), value)
                    })
                    .collect()
            }
        };
        Want::Columns {
            columns,
            table: Arc::clone(table),
        }
    }

    /// Whether `name` is one of the sink's version keys for a table whose
    /// keys start with `part`: a row's version or tombstone, or the
    /// table's truncate marker.
    fn is_bookkeeping(&self, name: &str, part: &str) -> bool {
        name.strip_prefix(&self.version_prefix)
            .is_some_and(|rest| rest.starts_with(part))
    }

    fn failed(&self, e: &redis::RedisError, what: &str) -> SinkError {
        classify(e, &self.secrets, what)
    }
}

#[async_trait::async_trait]
impl Readback for RedisReadback {
    fn compares(&self) -> String {
        match self.format {
            Format::Json => "each row key's JSON object, member by member as JSON values \
                             (the version keys are not compared)"
                .to_owned(),
            Format::Hash => "each row key's hash fields as text, without `_weir_version` \
                             (a NULL column is an absent field)"
                .to_owned(),
        }
    }

    async fn compare(&mut self, records: &[SinkRecord]) -> Result<Vec<Held>, SinkError> {
        let mut asks = Vec::with_capacity(records.len());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for record in records {
            let ask = self.ask(record)?;
            match (&ask, self.format) {
                (Ask::Nothing, _) => {}
                (Ask::Absent { key }, _) => {
                    pipe.cmd("EXISTS").arg(key);
                }
                (Ask::Row { key, .. }, Format::Json) => {
                    pipe.cmd("GET").arg(key);
                }
                (Ask::Row { key, .. }, Format::Hash) => {
                    pipe.cmd("HGETALL").arg(key);
                }
            }
            asks.push(ask);
        }
        let replies: Vec<redis::RedisResult<redis::Value>> =
            if asks.iter().all(|a| matches!(a, Ask::Nothing)) {
                Vec::new()
            } else {
                pipe.query_async(&mut self.conn)
                    .await
                    .map_err(|e| self.failed(&e, "reading rows back"))?
            };
        let mut replies = replies.into_iter();
        let mut held = Vec::with_capacity(asks.len());
        for ask in asks {
            if matches!(ask, Ask::Nothing) {
                held.push(Held::Same);
                continue;
            }
            let reply = replies.next().ok_or_else(|| {
                SinkError::Transient("Redis answered fewer commands than were sent".to_owned())
            })?;
            held.push(match ask {
                Ask::Nothing => unreachable!("handled above"),
                Ask::Absent { .. } => {
                    let reply = reply.map_err(|e| self.failed(&e, "reading rows back"))?;
                    let exists: i64 = redis::from_redis_value(reply).map_err(|e| {
                        SinkError::Transient(format!("an EXISTS reply that is no number: {e}"))
                    })?;
                    if exists > 0 { Held::Extra } else { Held::Same }
                }
                Ask::Row { key, want } => match reply {
                    Err(e) if e.code() == Some("WRONGTYPE") => Held::Differs(vec![ColumnDiff {
                        column: "(value)".to_owned(),
                        source: self.shape().to_owned(),
                        sink: format!("{key} holds another type"),
                    }]),
                    Err(e) => return Err(self.failed(&e, "reading rows back")),
                    Ok(value) => self.judge(&key, &want, value)?,
                },
            });
        }
        Ok(held)
    }

    async fn keys(
        &mut self,
        table: &TableSchema,
        topic: Option<&str>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, SinkError> {
        let template = self.template(topic)?;
        let probe = probe(table);
        let mut part = String::new();
        template
            .table
            .expand_event(&probe, &mut part)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        let pattern = table_pattern(&part);
        let reader = KeyReader::new(&template.rest, table);
        let mut at: u64 = match &cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                SinkError::Config(format!("{c:?} is not a cursor of this sink's key listing"))
            })?,
        };
        let mut keys = Vec::new();
        for _ in 0..MAX_SCAN_STEPS {
            let (next, found) =
                scan(&mut self.conn, &self.secrets, &pattern, at, limit.max(1)).await?;
            for name in found {
                if self.is_bookkeeping(&name, &part) {
                    continue;
                }
                let key = name.strip_prefix(&part).and_then(|rest| reader.read(rest));
                keys.push(HeldKey { name, key });
            }
            at = next;
            if at == 0 || keys.len() >= limit {
                break;
            }
        }
        Ok(KeyPage {
            keys,
            cursor: (at != 0).then(|| at.to_string()),
        })
    }
}

impl RedisReadback {
    fn shape(&self) -> &'static str {
        match self.format {
            Format::Json => "a string holding a JSON object",
            Format::Hash => "a hash",
        }
    }

    /// Compares what a row key holds (a `GET` or `HGETALL` reply) with
    /// what writing the record would leave.
    fn judge(&self, key: &str, want: &Want, value: redis::Value) -> Result<Held, SinkError> {
        let unreadable =
            |e: redis::ParsingError| SinkError::Transient(format!("reading {key} back: {e}"));
        let stored: BTreeMap<String, String> = match self.format {
            Format::Json => {
                let Some(bytes): Option<Vec<u8>> =
                    redis::from_redis_value(value).map_err(unreadable)?
                else {
                    return Ok(Held::Missing);
                };
                match serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(&bytes) {
                    Ok(members) => members
                        .into_iter()
                        .map(|(name, v)| (name, v.get().to_owned()))
                        .collect(),
                    Err(_) => {
                        return Ok(Held::Differs(vec![ColumnDiff {
                            column: "(value)".to_owned(),
                            source: self.shape().to_owned(),
                            sink: String::from_utf8_lossy(&bytes).into_owned(),
                        }]));
                    }
                }
            }
            Format::Hash => {
                let fields: Vec<(String, Vec<u8>)> =
                    redis::from_redis_value(value).map_err(unreadable)?;
                if fields.is_empty() {
                    return Ok(Held::Missing);
                }
                fields
                    .into_iter()
                    .filter(|(name, _)| name != VERSION_FIELD)
                    .map(|(name, v)| (name, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            }
        };
        let (columns, table) = match want {
            Want::Columns { columns, table } => (columns, table),
            Want::Refused(reason) => {
                let held: Vec<String> = stored.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Ok(Held::Differs(vec![ColumnDiff {
                    column: "(row)".to_owned(),
                    source: format!("(the sink refuses the row: {reason})"),
                    sink: held.join(" "),
                }]));
            }
        };
        let none = || "(none)".to_owned();
        let mut diffs = Vec::new();
        for (column, source) in columns {
            let sink = stored.get(column);
            let same = match (source, sink) {
                (None, None) => true,
                (Some(a), Some(b)) => match self.format {
                    Format::Json => json_equal(a, b),
                    Format::Hash => a == b,
                },
                _ => false,
            };
            if !same {
                diffs.push(ColumnDiff {
                    column: column.clone(),
                    source: source.clone().unwrap_or_else(none),
                    sink: sink.cloned().unwrap_or_else(none),
                });
            }
        }
        for (name, value) in &stored {
            if !table.columns.iter().any(|c| c.name == *name) {
                diffs.push(ColumnDiff {
                    column: name.clone(),
                    source: none(),
                    sink: value.clone(),
                });
            }
        }
        Ok(if diffs.is_empty() {
            Held::Same
        } else {
            Held::Differs(diffs)
        })
    }
}

/// An event of `table` with no row: what the part of a key template
/// before the row's key is filled in from.
fn probe(table: &TableSchema) -> ChangeEvent {
    ChangeEvent {
        op: Op::Read,
        table: Some(Arc::new(table.clone())),
        before: None,
        after: None,
        message: None,
        source: SourceInfo::default(),
        txn: TxnId(0),
    }
}

/// Whether two JSON texts hold the same value: objects member by member
/// whatever their order, numbers by value; integers are compared exactly
/// (an `int8` past 2^53 is not rounded), other numbers as doubles.
fn json_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(b'{'), Some(b'{')) => {
            let parse = |t| serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(t);
            match (parse(a), parse(b)) {
                (Ok(x), Ok(y)) => {
                    x.len() == y.len()
                        && x.iter()
                            .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v.get(), w.get())))
                }
                _ => false,
            }
        }
        (Some(b'['), Some(b'[')) => {
            let parse = |t| serde_json::from_str::<Vec<Box<RawValue>>>(t);
            match (parse(a), parse(b)) {
                (Ok(x), Ok(y)) => {
                    x.len() == y.len()
                        && x.iter().zip(&y).all(|(v, w)| json_equal(v.get(), w.get()))
                }
                _ => false,
            }
        }
        (Some(x), Some(y)) if is_number_start(*x) && is_number_start(*y) => number_equal(a, b),
        _ => match (
            serde_json::from_str::<serde_json::Value>(a),
            serde_json::from_str::<serde_json::Value>(b),
        ) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
    }
}

fn is_number_start(c: u8) -> bool {
    c == b'-' || c.is_ascii_digit()
}

fn number_equal(a: &str, b: &str) -> bool {
    let integer = |t: &str| !t.contains(['.', 'e', 'E']);
    if integer(a) && integer(b) {
        // JSON integers have no leading zeros: equal values are equal texts,
        // but for the sign of zero.
        let zero = |t: &str| t == "0" || t == "-0";
        return a == b || (zero(a) && zero(b));
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// One piece of a key template after its table part, `{schema}` and
/// `{table}` already filled in.
#[derive(Debug)]
enum Piece {
    Text(String),
    Key,
    Column(String),
}

/// Reads a row key's name (after the table part) back into the texts of
/// the table's key columns, inverting the template: `{key}` is split at its
/// unescaped `:`s and unescaped, `{key.COLUMN}` is the column's text.
struct KeyReader {
    pieces: Vec<Piece>,
    columns: Vec<String>,
}

/// Most ways of cutting one name looked at: enough to tell one reading
/// from several.
const MAX_READINGS: usize = 8;

impl KeyReader {
    fn new(rest: &str, table: &TableSchema) -> KeyReader {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut tail = rest;
        while let Some(open) = tail.find('{') {
            text.push_str(&tail[..open]);
            // Checked with the configuration: every `{` is closed.
            let Some(close) = tail[open..].find('}').map(|c| open + c) else {
                text.push_str(&tail[open..]);
                tail = "";
                break;
            };
            let name = &tail[open + 1..close];
            match name {
                "schema" => text.push_str(&table.schema),
                "table" => text.push_str(&table.name),
                _ => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(match name.strip_prefix("key.") {
                        Some(column) => Piece::Column(column.to_owned()),
                        None => Piece::Key,
                    });
                }
            }
            tail = &tail[close + 1..];
        }
        text.push_str(tail);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        KeyReader {
            pieces,
            columns: table
                .columns
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.clone())
                .collect(),
        }
    }

    /// The key columns' texts, in table order; `None` when `name` is not
    /// one of this table's keys, or could be several.
    fn read(&self, name: &str) -> Option<Vec<String>> {
        let mut readings = Vec::new();
        self.walk(&self.pieces, name, &mut Vec::new(), &mut readings);
        let mut keys: Vec<Vec<String>> = readings
            .into_iter()
            .filter_map(|found| {
                self.columns
                    .iter()
                    .map(|c| found.iter().find(|(n, _)| n == c).map(|(_, v)| v.clone()))
                    .collect::<Option<Vec<String>>>()
            })
            .collect();
        keys.dedup();
        match keys.len() {
            1 => keys.pop(),
            _ => None,
        }
    }

    fn walk(
        &self,
        pieces: &[Piece],
        text: &str,
        found: &mut Vec<(String, String)>,
        readings: &mut Vec<Vec<(String, String)>>,
    ) {
        if readings.len() >= MAX_READINGS {
            return;
        }
        let Some(piece) = pieces.first() else {
            if text.is_empty() {
                readings.push(found.clone());
            }
            return;
        };
        if let Piece::Text(t) = piece {
            if let Some(rest) = text.strip_prefix(t.as_str()) {
                self.walk(&pieces[1..], rest, found, readings);
            }
            return;
        }
        let ends: Vec<usize> = match pieces.get(1) {
            None => vec![text.len()],
            Some(Piece::Text(t)) => text.match_indices(t.as_str()).map(|(i, _)| i).collect(),
            Some(_) => text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect(),
        };
        for end in ends {
            let Some(values) = self.capture(piece, &text[..end]) else {
                continue;
            };
            let mark = found.len();
            let mut consistent = true;
            for (column, value) in values {
                match found.iter().find(|(c, _)| *c == column) {
                    Some((_, seen)) if *seen != value => consistent = false,
                    Some(_) => {}
                    None => found.push((column, value)),
                }
            }
            if consistent {
                self.walk(&pieces[1..], &text[end..], found, readings);
            }
            found.truncate(mark);
        }
    }

    fn capture(&self, piece: &Piece, text: &str) -> Option<Vec<(String, String)>> {
        match piece {
            Piece::Text(_) => None,
            Piece::Column(column) => self
                .columns
                .contains(column)
                .then(|| vec![(column.clone(), text.to_owned())]),
            Piece::Key => {
                let values = split_key(text)?;
                (values.len() == self.columns.len())
                    .then(|| self.columns.iter().cloned().zip(values).collect())
            }
        }
    }
}

/// Splits `{key}`'s text at its unescaped `:`s, undoing `\\` and `\:`.
fn split_key(text: &str) -> Option<Vec<String>> {
    let mut values = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                e @ ('\\' | ':') => values.last_mut()?.push(e),
                _ => return None,
            },
            ':' => values.push(String::new()),
            c => values.last_mut()?.push(c),
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use weir_core::Column;

    use super::*;

    fn table(keys: &[&str]) -> TableSchema {
        let mut columns: Vec<Column> = keys
            .iter()
            .map(|k| Column {
                name: (*k).to_owned(),
                type_oid: 25,
                type_name: "text".to_owned(),
                type_modifier: -1,
                key: true,
            })
            .collect();
        columns.push(Column {
            name: "note".to_owned(),
            type_oid: 25,
            type_name: "text".to_owned(),
            type_modifier: -1,
            key: false,
        });
        TableSchema {
            id: 1,
            version: 1,
            schema: "s".to_owned(),
            name: "t".to_owned(),
            columns,
            replica_identity: weir_core::ReplicaIdentity::Default,
        }
    }

    fn read(rest: &str, keys: &[&str], name: &str) -> Option<Vec<String>> {
        KeyReader::new(rest, &table(keys)).read(name)
    }

    #[test]
    fn key_names_read_back_as_key_texts() {
        assert_eq!(read("{key}", &["id"], "42"), Some(vec!["42".to_owned()]));
        assert_eq!(
            read("{key}", &["id"], "a\\:b"),
            Some(vec!["a:b".to_owned()])
        );
        assert_eq!(read("{key}", &["id"], "a:b"), None);
        assert_eq!(
            read("{key}", &["a", "b"], "x\\\\:\\:z"),
            Some(vec!["x\\".to_owned(), ":z".to_owned()])
        );
        assert_eq!(
            read("{key.b}/{key.a}@{table}", &["a", "b"], "2/1@t"),
            Some(vec!["1".to_owned(), "2".to_owned()])
        );
        assert_eq!(read("{key.b}/{key.a}", &["a", "b"], "2/1/0"), None);
        assert_eq!(read("{key.a}", &["a", "b"], "1"), None);
        assert_eq!(read("{key.a}{key.b}", &["a", "b"], "12"), None);
    }

    #[test]
    fn json_values_compare_by_value() {
        assert!(json_equal(
            r#"{"a":1,"b":[1.0,"x"]}"#,
            r#"{ "b": [1, "x"], "a": 1 }"#
        ));
        assert!(json_equal("9007199254740993", "9007199254740993"));
        assert!(!json_equal("9007199254740993", "9007199254740992"));
        assert!(json_equal("\"\\u0041\"", "\"A\""));
        assert!(!json_equal("1", "\"1\""));
        assert!(!json_equal(r#"{"a":1}"#, r#"{"a":1,"b":2}"#));
    }
}
