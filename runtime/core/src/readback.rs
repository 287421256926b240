//! Reading back what a sink that applies state holds, so that `weir verify`
//! can prove it equals the source, or say which keys differ.
//!
//! ```text
//! source rows (key order) ──routes──▶ SinkRecords ──▶ Readback::compare ──▶ Held per record
//! sink's keys (pages)     ◀──────────────────────── Readback::keys ──▶ looked up in the source
//! ```
//!
//! The records given to [`Readback::compare`] are what the pipeline would
//! hand the sink's `write` for the same rows (`read` events with the
//! route's topic), so a readback compares through the very mapping the
//! sink writes with: the same target name, the same encoding of each
//! value. A `delete` record asks the opposite: the sink should hold
//! nothing under its key.

use std::sync::Arc;

use crate::{ChangeEvent, Op, SinkError, SinkRecord, SourceInfo, TableSchema, TxnId, Value};

/// What a sink holds under one record's key, compared with what writing
/// the record would leave there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// What writing the record would leave (for a `delete`: nothing).
    Same,
    /// Nothing, where the record's row should be.
    Missing,
    /// A row, where a `delete` record says the source has none.
    Extra,
    /// A row with other values; at least one difference.
    Differs(Vec<ColumnDiff>),
}

impl Held {
    /// [`Held::Same`] when `diffs` is empty, else [`Held::Differs`].
    pub fn from_diffs(diffs: Vec<ColumnDiff>) -> Held {
        if diffs.is_empty() {
            Held::Same
        } else {
            Held::Differs(diffs)
        }
    }
}

/// One column whose value differs, both sides as text for a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDiff {
    /// The column's name at the destination (usually the source's).
    pub column: String,
    /// What writing the source row would store, in the sink's encoding.
    pub source: String,
    /// What the sink holds, in the same encoding (`(none)` when the column
    /// or field is absent).
    pub sink: String,
}

/// One key a sink holds for a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldKey {
    /// How the sink names it (a Redis key, a document id, a key tuple), for
    /// the report.
    pub name: String,
    /// The source key it stands for: the text of each key column, in the
    /// table's key-column order, as Postgres prints it (what
    /// `'…'::type` reads back). `None` when the sink's name cannot be
    /// mapped back to a key of this table (then it cannot be repaired by
    /// a change through the pipeline, only reported).
    pub key: Option<Vec<String>>,
}

/// A page of [`Readback::keys`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys held, in no particular order; a key may come twice across
    /// pages (a Redis `SCAN`), never a key the sink did not hold at some
    /// point during the listing.
    pub keys: Vec<HeldKey>,
    /// Where the next page starts, `None` after the last.
    pub cursor: Option<String>,
}

/// What a record asks of a readback: the change, its table, the row
/// whose key (and, for a `read`, values) to look up, and whether the sink
/// should hold nothing under that key. `None` for anything else (a
/// message, a raw record, another kind of change), which is
/// [`Held::Same`].
pub fn expected(record: &SinkRecord) -> Option<(&ChangeEvent, &Arc<TableSchema>, &[Value], bool)> {
    let crate::SinkPayload::Change(event) = &record.payload else {
        return None;
    };
    let table = event.table.as_ref()?;
    let (row, delete) = match event.op {
        Op::Read => (event.after.as_ref(), false),
        // As a sink's delete: the old row's key, else the new's.
        Op::Delete => (event.before.as_ref().or(event.after.as_ref()), true),
        _ => return None,
    };
    Some((event, table, row?.as_slice(), delete))
}

impl ChangeEvent {
    /// A `read` of `table` with no row: what a readback names the table's
    /// destination with (for [`Readback::keys`]), since the records it
    /// compares are `read`s and go where this one goes.
    pub fn read_of(table: &TableSchema) -> ChangeEvent {
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
}

/// Reads back a sink's rows, over a connection of its own (never the one
/// the pipeline writes with).
#[async_trait::async_trait]
pub trait Readback: Send {
    /// What is compared, in a sentence for the report ("the row's hash
    /// fields, without `_weir_version`").
    fn compares(&self) -> String;

    /// One [`Held`] per record, in order. Records are row changes of one
    /// or more tables: `read` (the row the sink should hold, in `after`)
    /// or `delete` (the key, in `before`, that it should not hold). A
    /// record of a kind the sink does not keep (a logical message) is
    /// [`Held::Same`].
    async fn compare(&mut self, records: &[SinkRecord]) -> Result<Vec<Held>, SinkError>;

    /// A page of the keys the sink holds for `table`, as written under
    /// `topic` (a route's topic; the sink's default when `None`), starting
    /// at `cursor` (`None` for the first page), about `limit` keys long.
    /// Deleted keys the sink remembers (tombstones, versions) are not
    /// held keys.
    async fn keys(
        &mut self,
        table: &TableSchema,
        topic: Option<&str>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, SinkError>;
}
