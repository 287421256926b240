//! Hand-made tables and change records, for tests that write to a sink
//! directly, as the pipeline would, or hand records to its readback, as
//! `weir verify` would.

use std::sync::Arc;

use weir_core::{
    ChangeEvent, Column, Lsn, Op, ReplicaIdentity, SinkPayload, SinkRecord, SourceInfo,
    TableSchema, TxnId, Value,
};

/// The OID of a built-in type the tests name, as a Relation message would
/// carry it (sinks that map types by OID need it); 0 for the others.
fn type_oid(name: &str) -> u32 {
    match name {
        "bool" => 16,
        "bytea" => 17,
        "int8" => 20,
        "int2" => 21,
        "int4" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" => 700,
        "float8" => 701,
        "date" => 1082,
        "time" => 1083,
        "timestamp" => 1114,
        "timestamptz" => 1184,
        "uuid" => 2950,
        _ => 0,
    }
}

/// Table `schema.name` with `columns` as (name, Postgres type name, key).
pub fn table(schema: &str, name: &str, columns: &[(&str, &str, bool)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 7,
        version: 1,
        schema: schema.into(),
        name: name.into(),
        columns: columns
            .iter()
            .map(|(n, t, key)| Column {
                name: (*n).into(),
                type_oid: type_oid(t),
                type_name: (*t).into(),
                type_modifier: -1,
                key: *key,
            })
            .collect(),
        replica_identity: ReplicaIdentity::Default,
    })
}

/// A change of `table` at position (`commit_lsn`, `seq`), in the
/// transaction numbered by its commit LSN.
pub fn change(
    table: &Arc<TableSchema>,
    op: Op,
    commit_lsn: u64,
    seq: u32,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op,
            table: Some(Arc::clone(table)),
            before,
            after,
            message: None,
            source: SourceInfo {
                commit_lsn: Lsn(commit_lsn),
                lsn: Lsn(commit_lsn - 8),
                xid: 9,
                commit_time_micros: 0,
                seq,
                snapshot: Default::default(),
            },
            txn: TxnId(commit_lsn),
        })),
        txn: TxnId(commit_lsn),
    }
}

/// An insert of each of `rows` into `table`, each its own transaction:
/// the first committed at `first_lsn`, each next one 8 later.
pub fn inserts(
    table: &Arc<TableSchema>,
    first_lsn: u64,
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> Vec<SinkRecord> {
    rows.into_iter()
        .zip(0..)
        .map(|(row, i)| change(table, Op::Insert, first_lsn + i * 8, 0, None, Some(row)))
        .collect()
}

/// An insert of each of `rows` into `table`, all in one transaction
/// committed at `commit_lsn`.
pub fn transaction(
    table: &Arc<TableSchema>,
    commit_lsn: u64,
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> Vec<SinkRecord> {
    rows.into_iter()
        .zip(0..)
        .map(|(row, seq)| change(table, Op::Insert, commit_lsn, seq, None, Some(row)))
        .collect()
}

/// What `weir verify` hands a readback for a source row.
pub fn read(table: &Arc<TableSchema>, row: Vec<Value>) -> SinkRecord {
    change(table, Op::Read, 0x9000, 0, None, Some(row))
}

/// What `weir verify` hands a readback for a key the source does not
/// have: a delete with `key` (the key columns' values, in order) in its
/// old row, the other columns NULL.
pub fn gone(table: &Arc<TableSchema>, key: &[Value]) -> SinkRecord {
    let mut key = key.iter();
    let before = table
        .columns
        .iter()
        .map(|c| {
            if c.key {
                key.next().expect("a value per key column").clone()
            } else {
                Value::Null
            }
        })
        .collect();
    change(table, Op::Delete, 0x9000, 0, Some(before), None)
}

/// `record`, as a route with topic `topic` hands it on.
pub fn routed(mut record: SinkRecord, topic: &str) -> SinkRecord {
    record.topic = Some(topic.to_owned());
    record
}

/// 2^53 + 1, an `int8` that a double would round.
pub const BIG: i64 = 9_007_199_254_740_993;

/// `public.items`, keyed by `id`: `id int8, name text, qty int4, note text`.
pub fn items() -> Arc<TableSchema> {
    table(
        "public",
        "items",
        &[
            ("id", "int8", true),
            ("name", "text", false),
            ("qty", "int4", false),
            ("note", "text", false),
        ],
    )
}

/// A row of [`items`]; a `note` of `None` is NULL.
pub fn item(id: i64, name: &str, qty: i64, note: Option<&str>) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text(name.into()),
        Value::Int(qty),
        note.map_or(Value::Null, |n| Value::Text(n.into())),
    ]
}

/// `schema.stock`, keyed by two columns, the first text: `region text,
/// code int8, n int4, note` (of type `note_type`).
pub fn stock(schema: &str, note_type: &str) -> Arc<TableSchema> {
    table(
        schema,
        "stock",
        &[
            ("region", "text", true),
            ("code", "int8", true),
            ("n", "int4", false),
            ("note", note_type, false),
        ],
    )
}

/// A row of [`stock`], noted `region/code`.
pub fn stock_row(region: &str, code: i64, n: i64) -> Vec<Value> {
    vec![
        Value::Text(region.to_owned()),
        Value::Int(code),
        Value::Int(n),
        Value::Text(format!("{region}/{code}")),
    ]
}

/// `public.tenanted`, keyed by two columns, the first text: `tenant
/// text, id int8, note text`.
pub fn tenanted() -> Arc<TableSchema> {
    table(
        "public",
        "tenanted",
        &[
            ("tenant", "text", true),
            ("id", "int8", true),
            ("note", "text", false),
        ],
    )
}
