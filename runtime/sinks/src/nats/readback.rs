//! Reading back what the KV bucket holds, for `weir verify`: the latest
//! entry of each record's key, read concurrently, and a table's keys from
//! the headers-only listing a truncate uses. Keys and rows come from the
//! sink's own key templates and row encoding.

use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::stream::{FuturesUnordered, StreamExt as _};
use weir_core::{
    ChangeEvent, ColumnDiff, Held, HeldKey, KeyPage, Op, Readback, SinkError, SinkPayload,
    SinkRecord, TableSchema, Value,
};

use crate::compare::json_equal;

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
            .prefix(&ChangeEvent::read_of(table), &mut prefix)
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
            Held::from_diffs(diffs)
        }
    }
}
