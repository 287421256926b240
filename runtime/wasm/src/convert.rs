//! Between Weir's event model (`weir-core`) and the contract's WIT types.
//!
//! Lowering borrows: a batch becomes `ChangeParam`s pointing into the
//! events, and wasmtime copies each value straight into guest memory. The
//! only host-side copies are UUIDs, which Weir keeps as 16 bytes and the
//! contract as text. Lifting takes ownership of what the guest returned, so
//! strings move rather than copy.

use std::collections::HashMap;
use std::sync::Arc;

use weir_core::{
    ChangeEvent, Destination, LogicalMessage, Lsn, Op, RawMessage, SourceInfo, TableSchema, TxnId,
    Value,
};

use weir_codec::{UUID_TEXT_LEN, parse_uuid, push_uuid_text};

use crate::bindings::wit;

/// The WIT `op` of a Weir op.
fn lower_op(op: Op) -> wit::Op {
    match op {
        Op::Insert => wit::Op::Insert,
        Op::Update => wit::Op::Update,
        Op::Delete => wit::Op::Delete,
        Op::Truncate => wit::Op::Truncate,
        Op::Message => wit::Op::Message,
        Op::Read => wit::Op::Read,
    }
}

fn lift_op(op: wit::Op) -> Op {
    match op {
        wit::Op::Insert => Op::Insert,
        wit::Op::Update => Op::Update,
        wit::Op::Delete => Op::Delete,
        wit::Op::Truncate => Op::Truncate,
        wit::Op::Message => Op::Message,
        wit::Op::Read => Op::Read,
    }
}

fn lower_source(s: &SourceInfo) -> wit::Source {
    wit::Source {
        commit_lsn: s.commit_lsn.0,
        lsn: s.lsn.0,
        xid: s.xid,
        commit_time_micros: s.commit_time_micros,
        seq: s.seq,
    }
}

fn lift_source(s: wit::Source) -> SourceInfo {
    SourceInfo {
        commit_lsn: Lsn(s.commit_lsn),
        lsn: Lsn(s.lsn),
        xid: s.xid,
        commit_time_micros: s.commit_time_micros,
        seq: s.seq,
        snapshot: Default::default(),
    }
}

/// The columns of `table`, as `on-table` announces them. The announcement
/// borrows the returned vector.
pub(crate) fn lower_columns(table: &TableSchema) -> Vec<wit::ColumnParam<'_>> {
    table
        .columns
        .iter()
        .map(|c| wit::ColumnParam {
            name: &c.name,
            type_name: &c.type_name,
            key: c.key,
        })
        .collect()
}

/// The announcement of `table`, borrowing `columns` from [`lower_columns`].
pub(crate) fn lower_table<'a>(
    table: &'a TableSchema,
    columns: &'a [wit::ColumnParam<'a>],
) -> wit::Table<'a> {
    wit::Table {
        id: table.id,
        version: table.version,
        schema: &table.schema,
        name: &table.name,
        columns,
    }
}

/// Storage that a lowered batch borrows from: built in two steps because
/// the changes point into the value list, which must be complete first.
#[derive(Default)]
pub(crate) struct Lowering {
    /// Text of every UUID in the batch, 36 bytes each, in row order.
    uuids: String,
}

impl Lowering {
    /// Lowers `batch`. `values` receives every row value of the batch; the
    /// returned changes borrow slices of it.
    pub(crate) fn lower<'a>(
        &'a mut self,
        batch: &'a [ChangeEvent],
        values: &'a mut Vec<wit::ValueParam<'a>>,
    ) -> Vec<wit::ChangeParam<'a>> {
        self.uuids.clear();
        for row in rows(batch) {
            for value in row {
                if let Value::Uuid(bytes) = value {
                    push_uuid_text(&mut self.uuids, bytes);
                }
            }
        }
        let uuids: &'a str = &self.uuids;

        values.clear();
        values.reserve(rows(batch).map(<[Value]>::len).sum());
        let mut next_uuid = 0;
        for row in rows(batch) {
            values.extend(row.iter().map(|v| lower_value(v, uuids, &mut next_uuid)));
        }

        let values: &'a [wit::ValueParam<'a>] = values;
        let mut at = 0;
        let mut take = |row: Option<&Vec<Value>>| {
            row.map(|row| {
                let slice = &values[at..at + row.len()];
                at += row.len();
                slice
            })
        };
        batch
            .iter()
            .map(|event| wit::ChangeParam {
                op: lower_op(event.op),
                table: event.table.as_ref().map_or(0, |t| t.id),
                before: take(event.before.as_ref()),
                after: take(event.after.as_ref()),
                message: event.message.as_ref().map(|m| wit::LogicalMessageParam {
                    prefix: &m.prefix,
                    content: &m.content,
                }),
                source: lower_source(&event.source),
            })
            .collect()
    }
}

/// Every row of `batch`, old before new, in batch order: the order both
/// lowering passes rely on.
fn rows(batch: &[ChangeEvent]) -> impl Iterator<Item = &[Value]> {
    batch
        .iter()
        .flat_map(|e| [e.before.as_deref(), e.after.as_deref()])
        .flatten()
}

fn lower_value<'a>(value: &'a Value, uuids: &'a str, next_uuid: &mut usize) -> wit::ValueParam<'a> {
    use wit::ValueParam as W;
    match value {
        Value::Null => W::Null,
        Value::Unchanged => W::Unchanged,
        Value::Bool(b) => W::Boolean(*b),
        Value::Int(i) => W::Int(*i),
        Value::Float(f) => W::Float(*f),
        Value::Numeric(s) => W::Numeric(s),
        Value::Text(s) => W::Text(s),
        Value::Bytes(b) => W::Bytes(b),
        Value::Date(d) => W::Date(*d),
        Value::Time(t) => W::Time(*t),
        Value::Timestamp(t) => W::Timestamp(*t),
        Value::TimestampTz(t) => W::Timestamptz(*t),
        Value::Uuid(_) => {
            let start = *next_uuid;
            *next_uuid += UUID_TEXT_LEN;
            W::Uuid(&uuids[start..*next_uuid])
        }
        Value::Json(s) => W::Json(s),
        Value::Other(s) => W::Other(s),
    }
}

fn lift_value(value: wit::ValueResult) -> Result<Value, String> {
    use wit::ValueResult as W;
    Ok(match value {
        W::Null => Value::Null,
        W::Unchanged => Value::Unchanged,
        W::Boolean(b) => Value::Bool(b),
        W::Int(i) => Value::Int(i),
        W::Float(f) => Value::Float(f),
        W::Numeric(s) => Value::Numeric(s),
        W::Text(s) => Value::Text(s),
        W::Bytes(b) => Value::Bytes(b),
        W::Date(d) => Value::Date(d),
        W::Time(t) => Value::Time(t),
        W::Timestamp(t) => Value::Timestamp(t),
        W::Timestamptz(t) => Value::TimestampTz(t),
        W::Uuid(s) => {
            Value::Uuid(parse_uuid(s.as_bytes()).ok_or_else(|| format!("invalid uuid {s:?}"))?)
        }
        W::Json(s) => Value::Json(s),
        W::Other(s) => Value::Other(s),
    })
}

/// The tables an instance has announced, by id: what `table` ids in the
/// plugin's answers refer to.
pub(crate) type Announced = HashMap<u32, Arc<TableSchema>>;

/// The tables a plugin's answer may refer to: those announced to the
/// instance and those it declared itself.
pub(crate) struct Tables<'a> {
    pub(crate) announced: &'a Announced,
    pub(crate) declared: &'a Announced,
}

impl Tables<'_> {
    fn get(&self, id: u32) -> Result<Arc<TableSchema>, String> {
        if let Some(t) = self.announced.get(&id).or_else(|| self.declared.get(&id)) {
            return Ok(t.clone());
        }
        Err(if id == 0 {
            "emitted a change of table id 0, which names no table (declare-table returns 0 \
             when no more tables may be declared)"
                .to_owned()
        } else {
            format!("emitted a change of table id {id}, which was never announced or declared")
        })
    }
}

/// Lifts a change a plugin emitted. It belongs to `txn`, the transaction
/// of the event it was made from.
pub(crate) fn lift_change(
    change: wit::ChangeResult,
    tables: &Tables<'_>,
    txn: TxnId,
) -> Result<ChangeEvent, String> {
    let op = lift_op(change.op);
    let table = match (op, change.table) {
        (Op::Message, 0) => None,
        (_, id) => Some(tables.get(id)?),
    };
    let row = |row: Option<Vec<wit::ValueResult>>,
               which: &str|
     -> Result<Option<Vec<Value>>, String> {
        let Some(row) = row else { return Ok(None) };
        let Some(table) = &table else {
            return Err(format!("emitted a message with a {which} row"));
        };
        if row.len() != table.columns.len() {
            return Err(format!(
                "emitted a {which} row of {} values for table {} (version {}), which has {} columns",
                row.len(),
                table.qualified_name(),
                table.version,
                table.columns.len()
            ));
        }
        row.into_iter()
            .map(lift_value)
            .collect::<Result<_, _>>()
            .map(Some)
    };
    let before = row(change.before, "old")?;
    let after = row(change.after, "new")?;
    Ok(ChangeEvent {
        op,
        before,
        after,
        message: change.message.map(|m| LogicalMessage {
            prefix: m.prefix,
            content: m.content,
        }),
        source: lift_source(change.source),
        txn,
        table,
    })
}

/// Lifts raw bytes a plugin emitted for the event whose position is `source`.
pub(crate) fn lift_raw(raw: wit::RawMessage, source: SourceInfo) -> RawMessage {
    RawMessage {
        key: raw.key,
        value: raw.value,
        headers: raw.headers,
        source,
    }
}

pub(crate) fn lift_destination(d: wit::Destination) -> Destination {
    Destination {
        sink: d.sink,
        topic: d.topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::{Column, ReplicaIdentity};

    fn table() -> Arc<TableSchema> {
        let column = |name: &str, key| Column {
            name: name.into(),
            type_oid: 25,
            type_name: "text".into(),
            type_modifier: -1,
            key,
        };
        Arc::new(TableSchema {
            id: 42,
            version: 3,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![column("id", true), column("u", false)],
            replica_identity: ReplicaIdentity::Default,
        })
    }

    fn event(before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
        ChangeEvent {
            op: Op::Update,
            table: Some(table()),
            before,
            after,
            message: None,
            source: SourceInfo::default(),
            txn: TxnId(1),
        }
    }

    const UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];

    #[test]
    fn rows_are_lowered_in_place() {
        let batch = vec![
            event(
                Some(vec![Value::Int(1), Value::Uuid(UUID)]),
                Some(vec![Value::Int(1), Value::Uuid([0; 16])]),
            ),
            event(None, Some(vec![Value::Text("x".into()), Value::Null])),
        ];
        let mut lowering = Lowering::default();
        let mut values = Vec::new();
        let changes = lowering.lower(&batch, &mut values);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].table, 42);
        assert!(matches!(
            changes[0].before.unwrap()[1],
            wit::ValueParam::Uuid("12345678-9abc-def0-0123-456789abcdef")
        ));
        assert!(matches!(
            changes[0].after.unwrap()[1],
            wit::ValueParam::Uuid("00000000-0000-0000-0000-000000000000")
        ));
        assert!(changes[1].before.is_none());
        assert!(matches!(
            changes[1].after.unwrap()[0],
            wit::ValueParam::Text("x")
        ));
    }

    #[test]
    fn emitted_rows_must_fit_their_table() {
        let announced: Announced = [(42, table())].into_iter().collect();
        let declared: Announced = [(u32::MAX, table())].into_iter().collect();
        let tables = Tables {
            announced: &announced,
            declared: &declared,
        };
        let change = |table, after: Vec<wit::ValueResult>| wit::ChangeResult {
            op: wit::Op::Insert,
            table,
            before: None,
            after: Some(after),
            message: None,
            source: wit::Source {
                commit_lsn: 9,
                lsn: 8,
                xid: 7,
                commit_time_micros: 6,
                seq: 5,
            },
        };
        let ok = lift_change(
            change(
                42,
                vec![
                    wit::ValueResult::Int(1),
                    wit::ValueResult::Uuid("12345678-9abc-def0-0123-456789abcdef".into()),
                ],
            ),
            &tables,
            TxnId(77),
        )
        .unwrap();
        assert_eq!(ok.txn, TxnId(77));
        assert_eq!(ok.source.seq, 5);
        assert!(Arc::ptr_eq(ok.table.as_ref().unwrap(), &announced[&42]));
        let own = lift_change(
            change(
                u32::MAX,
                vec![wit::ValueResult::Null, wit::ValueResult::Null],
            ),
            &tables,
            TxnId(1),
        );
        assert!(Arc::ptr_eq(
            own.unwrap().table.as_ref().unwrap(),
            &declared[&u32::MAX]
        ));
        assert_eq!(ok.after.unwrap()[1], Value::Uuid(UUID));

        let short = lift_change(change(42, vec![wit::ValueResult::Null]), &tables, TxnId(1));
        assert!(
            short
                .unwrap_err()
                .contains("1 values for table public.t (version 3), which has 2 columns")
        );
        let unknown = lift_change(change(5, vec![]), &tables, TxnId(1));
        assert!(unknown.unwrap_err().contains("table id 5"));
        let refused = lift_change(change(0, vec![]), &tables, TxnId(1));
        assert!(
            refused
                .unwrap_err()
                .contains("no more tables may be declared")
        );
        let bad_uuid = lift_change(
            change(
                42,
                vec![
                    wit::ValueResult::Null,
                    wit::ValueResult::Uuid("nope".into()),
                ],
            ),
            &tables,
            TxnId(1),
        );
        assert!(bad_uuid.unwrap_err().contains("invalid uuid"));
    }
}
