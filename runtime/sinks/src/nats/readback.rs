//! Reading back what the KV bucket holds, for `weir verify`: the latest
//! entry of each record's key, read concurrently, and a table's keys from
//! the headers-only listing a truncate uses. Keys and rows come from the
//! sink's own key templates and row encoding.

use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::stream::{FuturesUnordered, StreamExt as _};
use serde_json::value::RawValue;
use weir_core::{
    ChangeEvent, ColumnDiff, Held, HeldKey, KeyPage, Op, Readback, SinkError, SinkPayload,
    SinkRecord, SourceInfo, TableSchema, TxnId, Value,
};

use super::config::NatsSinkConfig;
use super::row::Row;
use super::sink::{NatsSink, READS, Stored};

/// Reads back a `nats` sink in kv mode, over a connection of its own.
pub(super) struct NatsReadback {
    sink: NatsSink,
}

/// What one record asks of the bucket.
enum Ask {
    /// Nothing to look up: the record is no row.
    Nothing,
    /// The row the key should hold.
    Row {
        key: String,
        want: Result<Row, String>,
        /// The columns Postgres sent no value for: not compared.
        unchanged: Vec<String>,
        table: Arc<TableSchema>,
    },
    /// The key should hold nothing.
    Absent { key: String },
}

impl Ask {
    fn key(&self) -> Option<&str> {
        match self {
            Ask::Nothing => None,
            Ask::Row { key, .. } | Ask::Absent { key } => Some(key),
        }
    }
}

impl NatsReadback {
    /// Connects as the sink does and opens its bucket; kv mode only.
    pub(super) async fn open(name: &str, config: &NatsSinkConfig) -> Result<Self, SinkError> {
        let mut config = config.clone();
        // Reading back must not make the bucket it is to read.
        config.create_bucket = false;
        Ok(NatsReadback {
            sink: NatsSink::connect(name, config).await?,
        })
    }

    fn ask(&mut self, record: &SinkRecord) -> Result<Ask, SinkError> {
        let SinkPayload::Change(event) = &record.payload else {
            return Ok(Ask::Nothing);
        };
        let (Some(table), Op::Read | Op::Delete) = (&event.table, event.op) else {
            return Ok(Ask::Nothing);
        };
        let mut key = String::new();
        self.sink
            .key_template(record.topic.as_deref())
            .and_then(|t| t.expand(event, &mut key))
            .map_err(SinkError::Config)?;
        if event.op == Op::Delete {
            return Ok(Ask::Absent { key });
        }
        let Some(after) = &event.after else {
            return Ok(Ask::Nothing);
        };
        let unchanged = table
            .columns
            .iter()
            .zip(after)
            .filter(|(_, v)| matches!(v, Value::Unchanged))
            .map(|(c, _)| c.name.clone())
            .collect();
        let want = Row::from_event(event, self.sink.row_encoder()).map_err(|e| e.to_string());
        Ok(Ask::Row {
            key,
            want,
            unchanged,
            table: Arc::clone(table),
        })
    }
}

#[async_trait::async_trait]
impl Readback for NatsReadback {
    fn compares(&self) -> String {
        "each key's latest entry: the row's JSON object, member by member as JSON values \
         (the Weir-Position header is not compared; a delete marker holds no row)"
            .to_owned()
    }

    async fn compare(&mut self, records: &[SinkRecord]) -> Result<Vec<Held>, SinkError> {
        let mut asks = Vec::with_capacity(records.len());
        for record in records {
            asks.push(self.ask(record)?);
        }
        let mut stored: Vec<Option<Stored>> = vec![None; asks.len()];
        let mut keys = asks
            .iter()
            .enumerate()
            .filter_map(|(i, ask)| ask.key().map(|key| (i, key)));
        let mut reads = FuturesUnordered::new();
        let sink = &self.sink;
        loop {
            while reads.len() < READS
                && let Some((i, key)) = keys.next()
            {
                reads.push(async move { (i, sink.read(key).await) });
            }
            let Some((i, entry)) = reads.next().await else {
                break;
            };
            stored[i] = Some(entry?);
        }
        drop(reads);
        Ok(asks
            .iter()
            .zip(stored)
            .map(|(ask, entry)| judge(ask, entry.unwrap_or_default()))
            .collect())
    }

    async fn keys(
        &mut self,
        table: &TableSchema,
        topic: Option<&str>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, SinkError> {
        let template = self
            .sink
            .key_template(topic)
            .map_err(SinkError::Config)?
            .clone();
        let mut prefix = String::new();
        template
            .prefix(&probe(table), &mut prefix)
            .map_err(SinkError::Config)?;
        let after: u64 = match &cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                SinkError::Config(format!("{c:?} is not a cursor of this sink's key listing"))
            })?,
        };
        // With one entry per key (what the sink makes, and the KV
        // default) every entry in the stream is a key's latest, so a page
        // starts right after the last one listed. A bucket with history
        // has older entries too: only the latest per key is listed, and a
        // page skips what earlier pages listed.
        let latest_only = self.sink.history() == 1;
        let deliver = match (latest_only, after) {
            (true, 1..) => DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            _ => DeliverPolicy::LastPerSubject,
        };
        let failed = |e: String| {
            SinkError::Transient(format!(
                "listing the keys {prefix}… of KV bucket {} at {}: {e}",
                self.sink.bucket(),
                self.sink.url()
            ))
        };
        let Some(mut messages) = self.sink.listing(&prefix, deliver).await.map_err(failed)? else {
            return Ok(KeyPage::default());
        };
        let mut keys = Vec::new();
        loop {
            let Some(listed) = self
                .sink
                .next_listed(&mut messages, &prefix)
                .await
                .map_err(failed)?
            else {
                return Ok(KeyPage { keys, cursor: None });
            };
            if listed.revision > after
                && !listed.deleted
                && let Some(name) = listed.key
            {
                let key = template.read_key(table, &name);
                keys.push(HeldKey { name, key });
            }
            if listed.pending == 0 {
                return Ok(KeyPage { keys, cursor: None });
            }
            if keys.len() >= limit.max(1) {
                return Ok(KeyPage {
                    keys,
                    cursor: Some(listed.revision.to_string()),
                });
            }
        }
    }
}

/// What a record's key holds (its latest entry) against what writing the
/// record would leave.
fn judge(ask: &Ask, stored: Stored) -> Held {
    let held = stored.revision > 0 && !stored.deleted;
    match ask {
        Ask::Nothing => Held::Same,
        Ask::Absent { .. } if held => Held::Extra,
        Ask::Absent { .. } => Held::Same,
        Ask::Row { .. } if !held => Held::Missing,
        Ask::Row {
            want,
            unchanged,
            table,
            ..
        } => {
            let Some(row) = &stored.state.row else {
                return Held::Differs(vec![ColumnDiff {
                    column: "(value)".to_owned(),
                    source: "a JSON object".to_owned(),
                    sink: String::from_utf8_lossy(&stored.payload).into_owned(),
                }]);
            };
            let want = match want {
                Ok(want) => want,
                Err(reason) => {
                    return Held::Differs(vec![ColumnDiff {
                        column: "(row)".to_owned(),
                        source: format!("(the sink refuses the row: {reason})"),
                        sink: String::from_utf8_lossy(&stored.payload).into_owned(),
                    }]);
                }
            };
            let none = || "(none)".to_owned();
            let find = |row: &Row, name: &str| {
                row.columns()
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.get().to_owned())
            };
            let mut diffs = Vec::new();
            for (column, source) in want.columns() {
                if unchanged.contains(column) {
                    continue;
                }
                match find(row, column) {
                    Some(sink) if json_equal(source.get(), &sink) => {}
                    sink => diffs.push(ColumnDiff {
                        column: column.clone(),
                        source: source.get().to_owned(),
                        sink: sink.unwrap_or_else(none),
                    }),
                }
            }
            for (column, value) in row.columns() {
                if !table.columns.iter().any(|c| c.name == *column) {
                    diffs.push(ColumnDiff {
                        column: column.clone(),
                        source: none(),
                        sink: value.get().to_owned(),
                    });
                }
            }
            if diffs.is_empty() {
                Held::Same
            } else {
                Held::Differs(diffs)
            }
        }
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
            type Members = std::collections::BTreeMap<String, Box<RawValue>>;
            match (
                serde_json::from_str::<Members>(a),
                serde_json::from_str::<Members>(b),
            ) {
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

#[cfg(test)]
mod tests {
    use weir_core::Column;

    use super::super::names::KeyTemplate;
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
            schema: "public".to_owned(),
            name: "my table".to_owned(),
            columns,
            replica_identity: weir_core::ReplicaIdentity::Default,
        }
    }

    fn read(template: &str, keys: &[&str], key: &str) -> Option<Vec<String>> {
        KeyTemplate::parse(template)
            .unwrap()
            .read_key(&table(keys), key)
    }

    fn texts(values: &[&str]) -> Option<Vec<String>> {
        Some(values.iter().map(|v| (*v).to_owned()).collect())
    }

    #[test]
    fn keys_read_back_as_key_texts() {
        let t = "{schema}.{table}.{key}";
        assert_eq!(read(t, &["id"], "public.my=20table.42"), texts(&["42"]));
        assert_eq!(
            read(t, &["id"], "public.my=20table.a=2Eb=20c"),
            texts(&["a.b c"])
        );
        assert_eq!(read(t, &["id"], "public.my=20table.=00"), texts(&[""]));
        assert_eq!(read(t, &["id"], "public.my=20table.a=3Ab"), None);
        assert_eq!(read(t, &["id"], "public.other.42"), None);
        assert_eq!(read(t, &["id"], "public.my=20table.4=32"), None);
        assert_eq!(
            read(t, &["a", "b"], "public.my=20table.x=5C=3Ay=3Az"),
            texts(&["x:y", "z"])
        );
        let t = "{table}.{key.b}.{key.a}";
        assert_eq!(read(t, &["a", "b"], "my=20table.2.1"), texts(&["1", "2"]));
        assert_eq!(read("{table}.{key.a}", &["a", "b"], "my=20table.1"), None);
        assert_eq!(
            read("{table}.{key.a}-{key.b}", &["a", "b"], "my=20table.1-2-3"),
            None
        );
        assert_eq!(
            read("{table}.{key.a}-{key.b}", &["a", "b"], "my=20table.1-2"),
            texts(&["1", "2"])
        );
    }

    #[test]
    fn json_values_compare_by_value() {
        assert!(json_equal(
            r#"{"a":1,"b":[1.0,"x"]}"#,
            r#"{ "b": [1, "x"], "a": 1 }"#
        ));
        assert!(!json_equal("9007199254740993", "9007199254740992"));
        assert!(json_equal("\"\\u0041\"", "\"A\""));
        assert!(!json_equal("null", "\"null\""));
    }
}
