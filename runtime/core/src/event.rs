//! Change events, transaction boundaries and the records handed to sinks.

use std::sync::Arc;

use crate::{Lsn, TableSchema, Value};

/// Weir's own sequence number for a transaction, assigned by the source in
/// stream order. It never repeats within one process, even across
/// reconnections, and it is what the ack tracker counts deliveries against.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub u64);

/// What happened to a row.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new row; `after` is set.
    Insert,
    /// A changed row; `after` is set, `before` depends on REPLICA IDENTITY.
    Update,
    /// A removed row; `before` holds the key (or the whole row with REPLICA IDENTITY FULL).
    Delete,
    /// The table was truncated; neither `before` nor `after` is set.
    Truncate,
    /// A transactional logical decoding message (`pg_logical_emit_message`).
    Message,
    /// A row as a snapshot read it; `after` is set, and
    /// [`SourceInfo::snapshot`] says which snapshot.
    Read,
}

impl Op {
    /// Lower-case name used in envelopes and routing templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Read => "read",
            Op::Message => "message",
        }
    }
}

/// Where in the WAL an event came from.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// LSN of the transaction's commit record; identifies the transaction.
    pub commit_lsn: Lsn,
    /// LSN of this change's own WAL record. Several changes may share one.
    pub lsn: Lsn,
    /// Postgres transaction id.
    pub xid: u32,
    /// Commit time, microseconds since 1970-01-01 UTC.
    pub commit_time_micros: i64,
    /// Position of the event within its transaction, from 0.
    pub seq: u32,
    /// For a `read`, which snapshot it belongs to.
    pub snapshot: SnapshotKind,
}

/// Which snapshot a [`Op::Read`] event belongs to (Debezium's
/// `source.snapshot`): a consumer that rebuilds state from the initial
/// snapshot learns from [`SnapshotKind::Last`] that it has every row.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Not from a snapshot: a change from the stream, or a `read` a
    /// plugin made.
    #[default]
    None,
    /// A row of the initial snapshot.
    Initial,
    /// The last row of the initial snapshot: every other row of it comes
    /// before this one.
    Last,
    /// A row read while streaming, between watermarks: an ad-hoc snapshot,
    /// a backfill, or the rest of an initial snapshot that was interrupted
    /// (which therefore has no [`SnapshotKind::Last`]).
    Incremental,
}

/// A logical decoding message written with `pg_logical_emit_message`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogicalMessage {
    /// The prefix the writer chose.
    pub prefix: String,
    /// The message body.
    pub content: Vec<u8>,
}

/// One committed change to one row (or one TRUNCATE of one table, or one
/// logical message).
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub op: Op,
    /// The table, with the schema the row was written under. `None` only for [`Op::Message`].
    pub table: Option<Arc<TableSchema>>,
    /// The old row (key columns or the full row, depending on REPLICA IDENTITY).
    /// Values the old row does not carry are [`Value::Null`] for key-only identities.
    pub before: Option<Vec<Value>>,
    /// The new row.
    pub after: Option<Vec<Value>>,
    /// The message body, for [`Op::Message`].
    pub message: Option<LogicalMessage>,
    /// Position in the WAL.
    pub source: SourceInfo,
    /// The transaction this event belongs to, for acknowledgement.
    pub txn: TxnId,
}

impl ChangeEvent {
    /// The row values that identify the row: key columns of `after`, or of
    /// `before` when there is no `after`. Empty for truncates and messages.
    pub fn key_values(&self) -> Vec<(&str, &Value)> {
        let (Some(table), Some(row)) = (&self.table, self.after.as_ref().or(self.before.as_ref()))
        else {
            return Vec::new();
        };
        table
            .columns
            .iter()
            .zip(row)
            .filter(|(c, _)| c.key)
            .map(|(c, v)| (c.name.as_str(), v))
            .collect()
    }
}

/// The start of a transaction, with what is known of its commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnBegin {
    /// Weir's sequence number for the transaction.
    pub txn: TxnId,
    /// Postgres transaction id.
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// Commit time, microseconds since 1970-01-01 UTC.
    pub commit_time_micros: i64,
}

/// The end of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnCommit {
    /// Weir's sequence number for the transaction.
    pub txn: TxnId,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: the position to acknowledge once
    /// this transaction and every earlier one are durable.
    pub end_lsn: Lsn,
}

/// What the source hands to the pipeline, in WAL commit order.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceItem {
    /// A transaction starts; its changes follow.
    Begin(TxnBegin),
    /// A change within the current transaction.
    Change(ChangeEvent),
    /// The current transaction is complete.
    Commit(TxnCommit),
    /// The stream broke off and starts again from the last acknowledged
    /// position. Transactions begun but not committed before this point
    /// will be delivered again from their start, under new ids: nothing
    /// should wait for their commit any more.
    Restart,
}

/// A message a plugin emitted as raw bytes, delivered to sinks unencoded.
#[derive(Clone, Debug, PartialEq)]
pub struct RawMessage {
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message body.
    pub value: Option<Vec<u8>>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The source position of the change the message was made from.
    pub source: SourceInfo,
}

/// Where an event goes: a named sink and, optionally, a topic (or subject,
/// key prefix, ...) within it. A topic may hold `{schema}`, `{table}` and
/// `{op}` placeholders that the sink fills in per event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Name of a sink in the configuration.
    pub sink: String,
    /// Topic within the sink; the sink's default when `None`.
    pub topic: Option<String>,
}

/// What a sink writes.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkPayload {
    /// A change event, encoded by the sink's encoder.
    Change(Arc<ChangeEvent>),
    /// Bytes a plugin made, written as they are.
    Raw(Arc<RawMessage>),
}

/// One record addressed to one sink.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkRecord {
    /// Topic within the sink; the sink's default when `None`.
    pub topic: Option<String>,
    /// What to write.
    pub payload: SinkPayload,
    /// The transaction the record came from, acknowledged once it is durable.
    pub txn: TxnId,
}

impl SinkRecord {
    /// Roughly how many bytes the record takes once encoded: its values'
    /// sizes plus a little per column. For splitting batches by
    /// [`Capabilities::max_batch_bytes`](crate::Capabilities), not for
    /// anything exact.
    pub fn estimated_size(&self) -> usize {
        match &self.payload {
            SinkPayload::Raw(m) => {
                m.key.as_ref().map_or(0, Vec::len)
                    + m.value.as_ref().map_or(0, Vec::len)
                    + m.headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            }
            SinkPayload::Change(e) => {
                let row = |r: &Option<Vec<Value>>| {
                    r.as_ref().map_or(0, |r| {
                        r.iter().map(|v| v.estimated_size() + 8).sum::<usize>()
                    })
                };
                64 + row(&e.before)
                    + row(&e.after)
                    + e.message
                        .as_ref()
                        .map_or(0, |m| m.prefix.len() + m.content.len())
            }
        }
    }

    /// The source position of the record.
    pub fn source(&self) -> &SourceInfo {
        match &self.payload {
            SinkPayload::Change(e) => &e.source,
            SinkPayload::Raw(m) => &m.source,
        }
    }
}
