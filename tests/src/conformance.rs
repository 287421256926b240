//! The conformance kit: what every sink that applies state (a cache, a
//! search index, an analytics table, another database) must get right,
//! checked against the real service.
//!
//! A sink's test implements [`StateTarget`] (how to open the sink, and how
//! to read back what the destination holds) and calls [`run`]. The kit
//! writes hand-made change events straight to the sink, as the pipeline
//! would, and compares what the destination holds with a model of what the
//! source table holds after the same changes:
//!
//! * insert, update, delete and truncate;
//! * per-key order within a batch;
//! * a crash (the sink dropped without `close`) followed by a replay of
//!   the last batches leaves the same final state;
//! * a replayed *older* version never overwrites a newer one, and never
//!   brings a deleted row back;
//! * an unchanged TOAST value keeps the old value;
//! * a primary-key change removes the old key and writes the new one, with
//!   the old row's value of a TOAST column the update left unchanged;
//! * keyless rows are refused (the sink needs a key) or kept as the sink
//!   documents, never written under a made-up key.
//!
//! The kit's table is `(id int8 primary key, name text, qty int4, note
//! text)`, whose values every sink can store as JSON numbers and strings:
//! [`StateTarget::rows`] returns each row as a JSON object with those four
//! columns. Type mapping is tested end to end per sink, with the types table.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng as _;
use serde_json::json;
use weir_core::{
    Capabilities, ChangeEvent, Column, Lsn, Op, ReplicaIdentity, Sink, SinkError, SinkPayload,
    SinkRecord, SourceInfo, TableSchema, TxnId, Value,
};

use crate::Json;

/// A destination under test, as the kit sees it.
#[allow(async_fn_in_trait)]
pub trait StateTarget {
    /// What the sink declares (its spec's capabilities).
    fn capabilities(&self) -> Capabilities;

    /// Makes `table` at the destination when the sink needs it made
    /// beforehand; a sink that creates what it needs does nothing here.
    async fn prepare(&self, table: &TableSchema) {
        let _ = table;
    }

    /// Opens a new sink on the destination, configured the same way every
    /// time. Dropping one without `close` is the kit's crash.
    async fn open(&self) -> Box<dyn Sink>;

    /// What the destination holds for `table`: one JSON object per row
    /// with the columns `id` (number), `name` (string), `qty` (number) and
    /// `note` (string or null), in any order.
    async fn rows(&self, table: &TableSchema) -> Vec<Json>;
}

/// The scenarios' tables, `kit_<tag>_<scenario>` in schema `public`, for a
/// destination whose tables (or indexes) must be declared before it starts.
pub fn table_names(tag: &str) -> Vec<String> {
    SCENARIO_TABLES
        .iter()
        .map(|s| format!("kit_{tag}_{s}"))
        .collect()
}

const SCENARIO_TABLES: &[&str] = &[
    "basic",
    "order",
    "replay",
    "older",
    "trunc_a",
    "trunc_b",
    "toast",
    "rekey",
    "rekey_toast",
    "keyless",
];

/// A fresh tag for [`run_tagged`]: six hex digits.
pub fn new_tag() -> String {
    format!("{:06x}", rand::rng().random_range(0..0xff_ffffu32))
}

/// Runs every scenario against `target` under a fresh tag; panics naming
/// the first that fails.
pub async fn run(target: &impl StateTarget) {
    run_tagged(target, &new_tag()).await;
}

/// Runs every scenario, on the tables [`table_names`] gives for `tag`.
pub async fn run_tagged(target: &impl StateTarget, tag: &str) {
    let caps = target.capabilities();
    assert!(
        caps.applies_state,
        "the conformance kit is for sinks that apply state"
    );
    let run = Run {
        tag: tag.to_owned(),
    };
    run.basic(target).await;
    run.per_key_order(target).await;
    run.replay_after_crash(target).await;
    run.older_versions_never_win(target).await;
    run.truncate(target).await;
    run.unchanged_toast(target).await;
    run.key_change(target).await;
    run.key_change_with_unchanged_toast(target).await;
    run.keyless(target).await;
}

/// One run of the kit: its table names are unique, so runs never meet.
struct Run {
    tag: String,
}

/// One row of the kit's table, as the model holds it.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    name: String,
    qty: i64,
    note: Option<String>,
}

type Model = BTreeMap<i64, Row>;

/// Makes change records with growing positions, as a source would.
struct Stream {
    lsn: u64,
    seq: u32,
    txn: u64,
}

impl Stream {
    fn new() -> Self {
        Stream {
            lsn: 0x1_0000_0000,
            seq: 0,
            txn: 0,
        }
    }

    /// Starts a transaction: a later commit LSN, positions from 0.
    fn begin(&mut self) {
        self.lsn += 0x1000;
        self.seq = 0;
        self.txn += 1;
    }

    fn change(
        &mut self,
        table: &Arc<TableSchema>,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> SinkRecord {
        let seq = self.seq;
        self.seq += 1;
        SinkRecord {
            topic: None,
            payload: SinkPayload::Change(Arc::new(ChangeEvent {
                op,
                table: Some(Arc::clone(table)),
                before,
                after,
                message: None,
                source: SourceInfo {
                    commit_lsn: Lsn(self.lsn),
                    lsn: Lsn(self.lsn - 0x800 + u64::from(seq) * 8),
                    xid: 1000 + self.txn as u32,
                    commit_time_micros: 1_780_000_000_000_000 + self.txn as i64 * 1000,
                    seq,
                    snapshot: Default::default(),
                },
                txn: TxnId(self.txn),
            })),
            txn: TxnId(self.txn),
        }
    }

    fn insert(
        &mut self,
        table: &Arc<TableSchema>,
        model: &mut Model,
        id: i64,
        row: Row,
    ) -> SinkRecord {
        let record = self.change(table, Op::Insert, None, Some(values(id, &row)));
        model.insert(id, row);
        record
    }

    fn update(
        &mut self,
        table: &Arc<TableSchema>,
        model: &mut Model,
        id: i64,
        row: Row,
    ) -> SinkRecord {
        let record = self.change(table, Op::Update, None, Some(values(id, &row)));
        model.insert(id, row);
        record
    }

    fn delete(&mut self, table: &Arc<TableSchema>, model: &mut Model, id: i64) -> SinkRecord {
        let record = self.change(table, Op::Delete, Some(key_only(id)), None);
        model.remove(&id);
        record
    }
}

fn row(name: &str, qty: i64, note: Option<&str>) -> Row {
    Row {
        name: name.to_owned(),
        qty,
        note: note.map(str::to_owned),
    }
}

fn values(id: i64, row: &Row) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text(row.name.clone()),
        Value::Int(row.qty),
        row.note.clone().map_or(Value::Null, Value::Text),
    ]
}

/// The old row of a delete under the default replica identity: the key,
/// the other columns not sent.
fn key_only(id: i64) -> Vec<Value> {
    vec![Value::Int(id), Value::Null, Value::Null, Value::Null]
}

fn column(name: &str, type_name: &str, type_oid: u32, key: bool) -> Column {
    Column {
        name: name.to_owned(),
        type_oid,
        type_name: type_name.to_owned(),
        type_modifier: -1,
        key,
    }
}

impl Run {
    /// The kit's table for one scenario, named `kit_<run>_<scenario>` in `public`.
    fn table(&self, scenario: &str, keyed: bool) -> Arc<TableSchema> {
        debug_assert!(SCENARIO_TABLES.contains(&scenario));
        Arc::new(TableSchema {
            id: 90_000 + scenario.len() as u32,
            version: 1,
            schema: "public".to_owned(),
            name: format!("kit_{}_{scenario}", self.tag),
            columns: vec![
                column("id", "int8", 20, keyed),
                column("name", "text", 25, false),
                column("qty", "int4", 23, false),
                column("note", "text", 25, false),
            ],
            replica_identity: if keyed {
                ReplicaIdentity::Default
            } else {
                ReplicaIdentity::Nothing
            },
        })
    }

    async fn basic(&self, target: &impl StateTarget) {
        let t = self.table("basic", true);
        target.prepare(&t).await;
        let mut sink = target.open().await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        s.begin();
        let first: Vec<SinkRecord> = (1..=5)
            .map(|i| s.insert(&t, &mut m, i, row(&format!("n{i}"), i, Some("first"))))
            .collect();
        write(&mut *sink, &first, "basic: inserts").await;
        expect(target, &t, &m, "basic: after inserts").await;
        s.begin();
        let mut second = vec![
            s.update(&t, &mut m, 2, row("n2 renamed", 20, None)),
            s.delete(&t, &mut m, 3),
        ];
        s.begin();
        second.push(s.insert(
            &t,
            &mut m,
            6,
            row("n6 \"quoted\" 'single' \\ ünï", 6, Some("")),
        ));
        write(&mut *sink, &second, "basic: update, delete, insert").await;
        expect(target, &t, &m, "basic: after update, delete and insert").await;
        close(sink).await;
    }

    async fn per_key_order(&self, target: &impl StateTarget) {
        let t = self.table("order", true);
        target.prepare(&t).await;
        let mut sink = target.open().await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        s.begin();
        let mut batch = vec![
            s.insert(&t, &mut m, 1, row("a", 0, None)),
            s.insert(&t, &mut m, 2, row("b", 0, None)),
        ];
        for qty in 1..=40 {
            batch.push(s.update(&t, &mut m, 1 + qty % 2, row("x", qty, None)));
            if qty % 10 == 0 {
                s.begin();
            }
        }
        batch.push(s.delete(&t, &mut m, 2));
        batch.push(s.insert(&t, &mut m, 2, row("back", 99, Some("again"))));
        write(&mut *sink, &batch, "order: one batch").await;
        expect(target, &t, &m, "order: the last change of each key wins").await;
        close(sink).await;
    }

    async fn replay_after_crash(&self, target: &impl StateTarget) {
        let t = self.table("replay", true);
        target.prepare(&t).await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        let mut batches: Vec<Vec<SinkRecord>> = Vec::new();
        for b in 0..6i64 {
            let mut batch = Vec::new();
            for k in 0..4i64 {
                s.begin();
                let id = (b * 7 + k * 3) % 12 + 1;
                batch.push(match (b + k) % 3 {
                    0 if m.contains_key(&id) => s.delete(&t, &mut m, id),
                    _ if m.contains_key(&id) => {
                        s.update(&t, &mut m, id, row(&format!("u{b}{k}"), b * 10 + k, None))
                    }
                    _ => s.insert(&t, &mut m, id, row(&format!("i{b}{k}"), b, Some("n"))),
                });
            }
            batches.push(batch);
        }
        let mut sink = target.open().await;
        for (i, batch) in batches.iter().enumerate() {
            write(&mut *sink, batch, &format!("replay: batch {i}")).await;
        }
        // The crash: no close, nothing flushed beyond what write made durable.
        drop(sink);
        let mut sink = target.open().await;
        for (i, batch) in batches.iter().enumerate().skip(3) {
            write(&mut *sink, batch, &format!("replay: batch {i} again")).await;
        }
        expect(target, &t, &m, "replay: the last 3 batches written again").await;
        drop(sink);
        let mut sink = target.open().await;
        for (i, batch) in batches.iter().enumerate() {
            write(
                &mut *sink,
                batch,
                &format!("replay: batch {i} a third time"),
            )
            .await;
        }
        expect(target, &t, &m, "replay: every batch written again").await;
        close(sink).await;
    }

    async fn older_versions_never_win(&self, target: &impl StateTarget) {
        let t = self.table("older", true);
        target.prepare(&t).await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        s.begin();
        let old = vec![
            s.insert(&t, &mut m, 1, row("v1", 1, Some("old"))),
            s.insert(&t, &mut m, 2, row("doomed", 1, None)),
        ];
        s.begin();
        let new = vec![
            s.update(&t, &mut m, 1, row("v2", 2, Some("new"))),
            s.delete(&t, &mut m, 2),
        ];
        let mut sink = target.open().await;
        write(&mut *sink, &old, "older: first versions").await;
        write(&mut *sink, &new, "older: newer versions").await;
        expect(target, &t, &m, "older: before the late retry").await;
        // A late retry of the first batch, from this sink and from a new one.
        write(&mut *sink, &old, "older: the first batch again").await;
        expect(
            target,
            &t,
            &m,
            "older: an older version was written over a newer one, or a deleted row came back",
        )
        .await;
        drop(sink);
        let mut sink = target.open().await;
        write(&mut *sink, &old, "older: the first batch from a new sink").await;
        expect(
            target,
            &t,
            &m,
            "older: after a restart, an older version won",
        )
        .await;
        close(sink).await;
    }

    async fn truncate(&self, target: &impl StateTarget) {
        let a = self.table("trunc_a", true);
        let b = self.table("trunc_b", true);
        target.prepare(&a).await;
        target.prepare(&b).await;
        let (mut s, mut ma, mut mb) = (Stream::new(), Model::new(), Model::new());
        s.begin();
        let mut first: Vec<SinkRecord> = (1..=3)
            .map(|i| s.insert(&a, &mut ma, i, row("a", i, None)))
            .collect();
        first.extend((1..=2).map(|i| s.insert(&b, &mut mb, i, row("b", i, None))));
        s.begin();
        let mut second = vec![s.change(&a, Op::Truncate, None, None)];
        ma.clear();
        s.begin();
        second.push(s.insert(&a, &mut ma, 9, row("after", 9, None)));
        let mut sink = target.open().await;
        write(&mut *sink, &first, "truncate: inserts").await;
        write(&mut *sink, &second, "truncate: truncate and insert").await;
        expect(target, &a, &ma, "truncate: the truncated table").await;
        expect(target, &b, &mb, "truncate: another table was touched").await;
        drop(sink);
        let mut sink = target.open().await;
        write(&mut *sink, &first, "truncate: replay of the inserts").await;
        write(&mut *sink, &second, "truncate: replay of the truncate").await;
        expect(target, &a, &ma, "truncate: after a replay").await;
        expect(target, &b, &mb, "truncate: the other table after a replay").await;
        close(sink).await;
    }

    async fn unchanged_toast(&self, target: &impl StateTarget) {
        let t = self.table("toast", true);
        target.prepare(&t).await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        let long = "toasted ".repeat(1000);
        s.begin();
        let insert = s.insert(&t, &mut m, 1, row("t", 1, Some(&long)));
        s.begin();
        // Postgres did not send the unchanged TOASTed `note`.
        let update = s.change(
            &t,
            Op::Update,
            None,
            Some(vec![
                Value::Int(1),
                Value::Text("t2".into()),
                Value::Int(2),
                Value::Unchanged,
            ]),
        );
        m.insert(1, row("t2", 2, Some(&long)));
        let mut sink = target.open().await;
        write(&mut *sink, std::slice::from_ref(&insert), "toast: insert").await;
        write(
            &mut *sink,
            std::slice::from_ref(&update),
            "toast: update without the TOASTed value",
        )
        .await;
        expect(target, &t, &m, "toast: the unchanged value must be kept").await;
        write(&mut *sink, &[insert, update], "toast: both again").await;
        expect(target, &t, &m, "toast: after a replay").await;
        close(sink).await;
    }

    async fn key_change(&self, target: &impl StateTarget) {
        let t = self.table("rekey", true);
        target.prepare(&t).await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        s.begin();
        let insert = s.insert(&t, &mut m, 7, row("seven", 7, None));
        s.begin();
        // UPDATE … SET id = 70: the old key comes in `before`.
        let moved = row("seventy", 70, Some("moved"));
        let update = s.change(&t, Op::Update, Some(key_only(7)), Some(values(70, &moved)));
        m.remove(&7);
        m.insert(70, moved);
        let mut sink = target.open().await;
        write(
            &mut *sink,
            &[insert.clone(), update.clone()],
            "rekey: insert, key change",
        )
        .await;
        expect(
            target,
            &t,
            &m,
            "rekey: the old key must be gone, the new one there",
        )
        .await;
        write(&mut *sink, &[insert, update], "rekey: again").await;
        expect(target, &t, &m, "rekey: after a replay").await;
        close(sink).await;
    }

    async fn key_change_with_unchanged_toast(&self, target: &impl StateTarget) {
        let t = self.table("rekey_toast", true);
        target.prepare(&t).await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        let long = "toasted ".repeat(1000);
        s.begin();
        let insert = s.insert(&t, &mut m, 8, row("eight", 8, Some(&long)));
        s.begin();
        // UPDATE … SET id = 80, qty = 80: the old key in `before`, and the
        // TOASTed `note`, unchanged, not sent. The new row keeps it.
        let update = s.change(
            &t,
            Op::Update,
            Some(key_only(8)),
            Some(vec![
                Value::Int(80),
                Value::Text("eighty".into()),
                Value::Int(80),
                Value::Unchanged,
            ]),
        );
        m.remove(&8);
        m.insert(80, row("eighty", 80, Some(&long)));
        let mut sink = target.open().await;
        write(
            &mut *sink,
            std::slice::from_ref(&insert),
            "rekey_toast: insert",
        )
        .await;
        write(
            &mut *sink,
            std::slice::from_ref(&update),
            "rekey_toast: key change without the TOASTed value",
        )
        .await;
        expect(
            target,
            &t,
            &m,
            "rekey_toast: the new key must have the old row's unchanged value",
        )
        .await;
        // A crash, and a replay of the key change alone: the old key is
        // gone by now, and the new one must keep its value.
        drop(sink);
        let mut sink = target.open().await;
        write(
            &mut *sink,
            std::slice::from_ref(&update),
            "rekey_toast: the key change again",
        )
        .await;
        expect(
            target,
            &t,
            &m,
            "rekey_toast: after a replay of the key change",
        )
        .await;
        // And of both, in one batch.
        drop(sink);
        let mut sink = target.open().await;
        write(&mut *sink, &[insert, update], "rekey_toast: both again").await;
        expect(target, &t, &m, "rekey_toast: after a replay of both").await;
        close(sink).await;
    }

    async fn keyless(&self, target: &impl StateTarget) {
        if target.capabilities().needs_key {
            // The pipeline refuses keyless changes before they reach the
            // sink (dead letter or halt); its own tests check that.
            return;
        }
        let t = self.table("keyless", false);
        target.prepare(&t).await;
        let (mut s, mut m) = (Stream::new(), Model::new());
        s.begin();
        let insert = s.insert(&t, &mut m, 1, row("nokey", 1, None));
        let mut sink = target.open().await;
        match sink.write(std::slice::from_ref(&insert)).await {
            Err(SinkError::Rejected(list)) => {
                assert_eq!(list.len(), 1, "keyless: {list:?}");
                assert_eq!(list[0].index, 0, "keyless: {list:?}");
                expect(
                    target,
                    &t,
                    &Model::new(),
                    "keyless: a refused row was written",
                )
                .await;
            }
            Ok(()) => expect(target, &t, &m, "keyless: the row as written").await,
            Err(e) => panic!("keyless: a keyless row failed the batch: {e}"),
        }
        close(sink).await;
    }
}

async fn write(sink: &mut dyn Sink, batch: &[SinkRecord], what: &str) {
    if let Err(e) = sink.write(batch).await {
        panic!("{what}: the sink failed the batch: {e} ({e:?})");
    }
}

async fn close(mut sink: Box<dyn Sink>) {
    sink.close().await.expect("closing the sink");
}

/// Checks that the destination holds exactly `model` for `table`.
async fn expect(target: &impl StateTarget, table: &TableSchema, model: &Model, what: &str) {
    let mut got = target.rows(table).await;
    got.sort_by_key(|r| r["id"].as_i64());
    let want: Vec<Json> = model
        .iter()
        .map(|(id, r)| json!({"id": id, "name": r.name, "qty": r.qty, "note": r.note}))
        .collect();
    if got != want {
        panic!(
            "{what} (table {}.{}):\n  destination: {}\n  source:      {}",
            table.schema,
            table.name,
            serde_json::to_string(&got).unwrap_or_default(),
            serde_json::to_string(&want).unwrap_or_default()
        );
    }
}
