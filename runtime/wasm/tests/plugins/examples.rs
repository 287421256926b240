//! The example plugins on real events.

use std::sync::Arc;

use weir_core::{ChangeEvent, Destination, Op, TxnId, Value};
use weir_wasm::{EmitPayload, Outcome, RouterPlugin, TransformPlugin};

use crate::common::*;

fn transform(name: &str, file: &str, config: &[(&str, &str)]) -> TransformPlugin {
    TransformPlugin::load(engine(), spec(name, file, config)).expect("load")
}

fn every_kind_of_event() -> Vec<ChangeEvent> {
    let t = orders(1);
    vec![
        insert_order(1, "new", "5"),
        event(
            Op::Update,
            &t,
            Some(order_row(1, "new", "5")),
            Some(order_row(1, "shipped", "5")),
            2,
        ),
        event(Op::Delete, &t, Some(order_row(1, "shipped", "5")), None, 3),
        event(Op::Truncate, &t, None, None, 4),
        message(5),
        event(
            Op::Insert,
            &users(),
            None,
            Some(vec![Value::Int(1), Value::Null]),
            6,
        ),
    ]
}

#[test]
fn passthrough_keeps_everything() {
    let plugin = transform("passthrough", "passthrough.wasm", &[]);
    let mut instance = plugin.instantiate().unwrap();
    let batch = every_kind_of_event();
    assert_eq!(
        instance.process(&batch).unwrap(),
        vec![Outcome::Keep; batch.len()]
    );
    // The store is reused: a second batch on the same instance.
    assert_eq!(
        instance.process(&batch).unwrap(),
        vec![Outcome::Keep; batch.len()]
    );
    assert_eq!(instance.process(&[]).unwrap(), vec![]);
}

#[test]
fn filter_keeps_matching_events_of_listed_tables() {
    let plugin = transform(
        "only-shipped",
        "filter.wasm",
        &[("tables", "public.orders"), ("where", "status = shipped")],
    );
    let mut instance = plugin.instantiate().unwrap();
    let outcomes = instance.process(&every_kind_of_event()).unwrap();
    use Outcome::{Drop, Keep};
    // insert `new`: dropped; update to `shipped`: kept; delete (old row
    // `shipped`): kept; truncate (no column): kept; message: kept;
    // crm.users: not listed, dropped.
    assert_eq!(outcomes, [Drop, Keep, Keep, Keep, Keep, Drop]);

    let big = transform("big-orders", "filter.wasm", &[("where", "amount > 100")]);
    let mut instance = big.instantiate().unwrap();
    let outcomes = instance
        .process(&[insert_order(1, "x", "99.99"), insert_order(2, "x", "100.5")])
        .unwrap();
    assert_eq!(outcomes, [Drop, Keep]);
}

#[test]
fn filter_refuses_a_bad_predicate() {
    let plugin = transform("bad-filter", "filter.wasm", &[("where", "status")]);
    let err = plugin.instantiate().err().expect("init must fail");
    let text = err.to_string();
    assert!(
        matches!(err, weir_wasm::PluginError::Init { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("bad-filter") && text.contains("`where`"),
        "{text}"
    );
}

/// The one change a `replace` outcome emits.
fn replaced(outcome: &Outcome) -> &ChangeEvent {
    let Outcome::Replace(emits) = outcome else {
        panic!("expected a replace, got {outcome:?}");
    };
    assert_eq!(emits.len(), 1);
    assert_eq!(emits[0].destination, None);
    let EmitPayload::Change(change) = &emits[0].payload else {
        panic!("expected a change");
    };
    change
}

#[test]
fn mask_hashes_before_and_after_and_keeps_the_rest() {
    let plugin = transform("mask-email", "mask.wasm", &[("columns", "email")]);
    let mut instance = plugin.instantiate().unwrap();
    let t = orders(1);
    let mut input = event(
        Op::Update,
        &t,
        Some(order_row(1, "new", "5")),
        Some(order_row(1, "paid", "5")),
        3,
    );
    input.txn = TxnId(99);
    let outcomes = instance
        .process(&[input.clone(), event(Op::Truncate, &t, None, None, 4)])
        .unwrap();
    assert_eq!(outcomes[1], Outcome::Keep);

    let masked = replaced(&outcomes[0]);
    // Emitted events belong to the input's transaction and refer to the
    // host's own schema.
    assert_eq!(masked.txn, TxnId(99));
    assert!(Arc::ptr_eq(masked.table.as_ref().unwrap(), &t));
    assert_eq!(masked.source, input.source);
    let after = masked.after.as_ref().unwrap();
    let before = masked.before.as_ref().unwrap();
    // sha256("buyer1@example.com"), as `sha256sum` prints it.
    let hash =
        Value::Text("a21e87765fa9375c2c6588b7dfb64959c1b0b30a30f0761ce40cfbdc37a99811".into());
    assert_eq!(after[3], hash);
    assert_eq!(before[3], hash);
    // Everything else, including the UUID, round-trips unchanged.
    let input_after = input.after.as_ref().unwrap();
    for i in [0, 1, 2, 4] {
        assert_eq!(after[i], input_after[i], "column {i}");
    }
    assert_eq!(after[4], Value::Uuid(CUSTOMER));
}

#[test]
fn mask_redacts() {
    let plugin = transform(
        "redact",
        "mask.wasm",
        &[("columns", "email,amount"), ("mode", "redact")],
    );
    let mut instance = plugin.instantiate().unwrap();
    let t = orders(1);
    let outcomes = instance
        .process(&[event(
            Op::Delete,
            &t,
            Some(order_row(4, "x", "12.5")),
            None,
            1,
        )])
        .unwrap();
    let before = replaced(&outcomes[0]).before.as_ref().unwrap();
    assert_eq!(before[3], Value::Text("***".into()));
    assert_eq!(before[2], Value::Null);
    assert_eq!(before[1], Value::Text("x".into()));
}

#[test]
fn route_by_table_routes() {
    let plugin = RouterPlugin::load(
        engine(),
        spec(
            "routes",
            "route_by_table.wasm",
            &[
                ("route.public.orders", "kafka_main"),
                ("default", "file_out"),
                ("topic", "{schema}.{table}"),
            ],
        ),
    )
    .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    let routes = instance.route(&every_kind_of_event()).unwrap();
    let to = |sink: &str, topic: Option<&str>| Destination {
        sink: sink.into(),
        topic: topic.map(Into::into),
    };
    let orders_route = vec![to("kafka_main", Some("public.orders"))];
    assert_eq!(
        routes,
        vec![
            orders_route.clone(),
            orders_route.clone(),
            orders_route.clone(),
            orders_route,
            vec![to("file_out", None)],
            vec![to("file_out", Some("crm.users"))],
        ]
    );
}
