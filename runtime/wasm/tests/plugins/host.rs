//! The host functions and optional hooks of the contract, through real
//! components: configuration, counters, declared tables and the `commit`
//! hook; and the contract version check.

use weir_core::{Lsn, TxnId, Value};
use weir_wasm::{EmitPayload, Outcome, PluginEngine, Transaction, TransformPlugin};

use crate::common::*;

fn txn() -> Transaction {
    Transaction {
        txn: TxnId(7),
        xid: 900,
        commit_lsn: Lsn(0x1_0000),
        commit_time_micros: 1_700_000_000_000_000,
    }
}

#[test]
fn the_commit_hook_runs_when_asked_for_and_counts_are_kept() {
    // An engine of its own, so the counters are this test's alone.
    let engine = PluginEngine::new().unwrap();
    let plugin = TransformPlugin::load(&engine, spec("hook", "commit_hook.wasm", &[])).unwrap();
    let mut instance = plugin.instantiate().unwrap();
    assert!(instance.wants_commit());
    assert_eq!(
        instance.process(&orders_batch(3)).unwrap(),
        vec![Outcome::Keep; 3]
    );
    let emits = instance.commit(&txn()).unwrap();
    assert_eq!(emits.len(), 1);
    let EmitPayload::Raw(raw) = &emits[0].payload else {
        panic!("{emits:?}");
    };
    assert_eq!(
        String::from_utf8(raw.value.clone().unwrap()).unwrap(),
        r#"{"xid":900,"commit_lsn":65536,"changes":3}"#
    );
    // Raw bytes made at commit carry the commit's position.
    assert_eq!(raw.source.commit_lsn, Lsn(0x1_0000));
    assert!(emits[0].destination.is_none());
    instance.commit(&txn()).unwrap();
    assert_eq!(
        engine.counter_totals(),
        [("hook".to_owned(), "transactions".to_owned(), 2)]
    );

    // A plugin that did not ask for the hook is not called.
    let passthrough = TransformPlugin::load(&engine, spec("pt", "passthrough.wasm", &[])).unwrap();
    assert!(!passthrough.instantiate().unwrap().wants_commit());
}

#[test]
fn counts_of_isolation_reruns_are_not_kept() {
    let engine = PluginEngine::new().unwrap();
    let plugin = TransformPlugin::load(&engine, spec("hook", "commit_hook.wasm", &[])).unwrap();
    // The probing instances of `find_failing_event` run `commit` never,
    // and what they count is thrown away; the batch passes, so nothing
    // is found.
    assert!(
        weir_wasm::find_failing_event(&plugin, &orders_batch(5))
            .unwrap()
            .is_none()
    );
    assert!(engine.counter_totals().is_empty());
}

#[test]
fn declared_tables_carry_added_columns() {
    let engine = PluginEngine::new().unwrap();
    let spec = spec(
        "enrich",
        "enrich.wasm",
        &[
            ("add.email_domain", "email_domain(email)"),
            ("add.status_upper", "upper(status)"),
        ],
    );
    let plugin = TransformPlugin::load(&engine, spec).unwrap();
    let mut instance = plugin.instantiate().unwrap();
    let outcomes = instance.process(&orders_batch(2)).unwrap();
    let mut tables = Vec::new();
    for (id, outcome) in outcomes.iter().enumerate() {
        let Outcome::Replace(emits) = outcome else {
            panic!("{outcome:?}");
        };
        let EmitPayload::Change(e) = &emits[0].payload else {
            panic!("{emits:?}");
        };
        let table = e.table.clone().unwrap();
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "status",
                "amount",
                "email",
                "customer",
                "email_domain",
                "status_upper"
            ]
        );
        assert_eq!(table.qualified_name(), "public.orders");
        assert!(table.columns[0].key);
        let after = e.after.as_ref().unwrap();
        assert_eq!(after[0], Value::Int(id as i64));
        assert_eq!(after[5], Value::Text("example.com".into()));
        assert_eq!(after[6], Value::Text("NEW".into()));
        tables.push(table);
    }
    // One declared table for both events, and the same after a re-instantiation.
    assert!(std::sync::Arc::ptr_eq(&tables[0], &tables[1]));
    let mut again = plugin.instantiate().unwrap();
    let outcomes = again.process(&orders_batch(1)).unwrap();
    let Outcome::Replace(emits) = &outcomes[0] else {
        panic!()
    };
    let EmitPayload::Change(e) = &emits[0].payload else {
        panic!()
    };
    assert_eq!(e.table.as_ref().unwrap().id, tables[0].id);
}

#[test]
fn the_contract_version_is_reported() {
    let plugin = TransformPlugin::load(engine(), spec("pt", "passthrough.wasm", &[])).unwrap();
    assert_eq!(
        plugin.contract().map(ToString::to_string).as_deref(),
        Some(weir_wasm::CONTRACT_VERSION)
    );
    assert_eq!(plugin.version().len(), 12);
}
