//! Hand-made tables and change records, for tests that write to a sink
//! directly, as the pipeline would.

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
        "int8" => 20,
        "int2" => 21,
        "int4" => 23,
        "text" => 25,
        "json" => 114,
        "float8" => 701,
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
