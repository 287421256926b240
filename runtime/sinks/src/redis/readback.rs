//! Reading back what the cache holds, for `weir verify`: one pipeline of
//! `GET`s (or `HGETALL`s) per batch of records, and `SCAN` for a table's
//! keys. Keys, hash fields and JSON members come from the very helpers the
//! sink writes with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde_json::value::RawValue;
use weir_codec::Escaping;
use weir_core::{
    ChangeEvent, ColumnDiff, Held, HeldKey, KeyPage, Op, Readback, SinkError, SinkPayload,
    SinkRecord, TableSchema, Value,
};

use crate::compare::json_equal;

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
        let mut part = String::new();
        template
            .table
            .expand_event(&ChangeEvent::read_of(table), &mut part)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        let pattern = table_pattern(&part);
        let reader = template.row.key_reader(table, Escaping::NONE);
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
                let key = reader.read(&name);
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
        Ok(Held::from_diffs(diffs))
    }
}
