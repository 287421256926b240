//! The conformance kit checked against itself: an in-memory destination
//! that applies state correctly passes it, and destinations with the
//! classic mistakes (no version guard, no tombstones, a TOAST marker
//! written as a value, a key change that leaves the old key, a key change
//! that loses the unchanged TOAST values) fail it.
//! This is logic with no service behind it, so an in-process destination
//! is the right tool here.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use serde_json::json;
use weir_core::{
    Capabilities, Op, Position, Sink, SinkError, SinkPayload, SinkRecord, TableSchema, Value,
};
use weir_tests::Json;
use weir_tests::conformance::{StateTarget, run};

/// What the in-memory destination gets wrong, on purpose.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flaw {
    None,
    NoVersionGuard,
    NoTombstones,
    ToastMarker,
    KeepsOldKey,
    RekeyLosesToast,
}

/// Per table: key → (version, row or tombstone).
type Store = BTreeMap<String, BTreeMap<i64, (Position, Option<Vec<Json>>)>>;

#[derive(Clone)]
struct Memory {
    flaw: Flaw,
    store: Arc<Mutex<Store>>,
}

struct MemorySink {
    flaw: Flaw,
    store: Arc<Mutex<Store>>,
}

fn json_of(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Int(n) => json!(n),
        Value::Text(s) => json!(s),
        Value::Unchanged => json!({"$unchanged": true}),
        other => panic!("the kit does not use {other:?}"),
    }
}

#[async_trait::async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut store = self.store.lock().unwrap();
        for record in batch {
            let SinkPayload::Change(e) = &record.payload else {
                continue;
            };
            let t = e.table.as_ref().unwrap();
            let rows = store.entry(t.name.clone()).or_default();
            let at = e.source.position();
            let id = |row: &Option<Vec<Value>>| match row.as_ref().map(|r| &r[0]) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            let newer = |rows: &BTreeMap<i64, (Position, Option<Vec<Json>>)>, k: i64| {
                self.flaw == Flaw::NoVersionGuard || rows.get(&k).is_none_or(|(v, _)| *v <= at)
            };
            match e.op {
                Op::Truncate => rows.clear(),
                Op::Delete => {
                    let k = id(&e.before).unwrap();
                    if newer(rows, k) {
                        if self.flaw == Flaw::NoTombstones {
                            rows.remove(&k);
                        } else {
                            rows.insert(k, (at, None));
                        }
                    }
                }
                Op::Insert | Op::Update => {
                    let k = id(&e.after).unwrap();
                    // Unchanged values come from the row before the change:
                    // the old key's on a key change, while it is older.
                    let mut before = None;
                    if let Some(old) = id(&e.before)
                        && old != k
                    {
                        if self.flaw != Flaw::RekeyLosesToast {
                            before = rows
                                .get(&old)
                                .filter(|(v, _)| *v < at)
                                .and_then(|(_, r)| r.clone());
                        }
                        if self.flaw != Flaw::KeepsOldKey && newer(rows, old) {
                            rows.insert(old, (at, None));
                        }
                    }
                    if newer(rows, k) {
                        let stored = before.or_else(|| rows.get(&k).and_then(|(_, r)| r.clone()));
                        let row: Vec<Json> = e
                            .after
                            .as_ref()
                            .unwrap()
                            .iter()
                            .enumerate()
                            .map(|(i, v)| match (v, &stored) {
                                (Value::Unchanged, Some(s)) if self.flaw != Flaw::ToastMarker => {
                                    s[i].clone()
                                }
                                _ => json_of(v),
                            })
                            .collect();
                        rows.insert(k, (at, Some(row)));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl StateTarget for Memory {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            applies_state: true,
            needs_key: true,
            accepts_raw: false,
            ..Capabilities::LOG
        }
    }

    async fn open(&self) -> Box<dyn Sink> {
        Box::new(MemorySink {
            flaw: self.flaw,
            store: Arc::clone(&self.store),
        })
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        let store = self.store.lock().unwrap();
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        store
            .get(&table.name)
            .into_iter()
            .flatten()
            .filter_map(|(_, (_, row))| row.as_ref())
            .map(|row| {
                Json::Object(
                    names
                        .iter()
                        .zip(row)
                        .map(|(n, v)| ((*n).to_owned(), v.clone()))
                        .collect(),
                )
            })
            .collect()
    }
}

fn memory(flaw: Flaw) -> Memory {
    Memory {
        flaw,
        store: Arc::default(),
    }
}

#[tokio::test]
async fn a_correct_destination_passes() {
    run(&memory(Flaw::None)).await;
}

#[tokio::test]
async fn each_classic_mistake_fails_the_kit() {
    for (flaw, scenario) in [
        (Flaw::NoVersionGuard, "older:"),
        (Flaw::NoTombstones, "older:"),
        (Flaw::ToastMarker, "toast:"),
        (Flaw::KeepsOldKey, "rekey:"),
        (Flaw::RekeyLosesToast, "rekey_toast:"),
    ] {
        let target = memory(flaw);
        let failed = AssertUnwindSafe(run(&target)).catch_unwind().await;
        let Err(panic) = failed else {
            panic!("the kit passed a destination with {flaw:?}");
        };
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(
            message.starts_with(scenario),
            "{flaw:?} should fail the {scenario} scenario, failed with: {message}"
        );
    }
}
