//! Unit-testing plugins natively, without a WebAssembly runtime.
//!
//! The harnesses drive a plugin through the same glue the component
//! exports use: announce tables, then process batches of changes built with
//! [`insert`], [`update`], [`delete`], [`truncate`] and [`message`].
//!
//! ```
//! use weir_plugin_sdk::testing::{self, TransformHarness};
//! use weir_plugin_sdk::{wit, Config, Event, Outcome, Table, Transform};
//!
//! struct KeepAll;
//! impl Transform for KeepAll {
//!     fn init(_: &Config) -> Result<Self, String> { Ok(KeepAll) }
//!     fn process(&mut self, _: &mut Event<'_>) -> Outcome { Outcome::Keep }
//! }
//!
//! let orders = Table::new(1, "public", "orders").with_key("id", "int8");
//! let mut harness = TransformHarness::<KeepAll>::new(&[]).unwrap();
//! harness.announce(&orders);
//! let outcome = harness.process_one(testing::insert(&orders, &[("id", 1.into())]));
//! assert_eq!(outcome, wit::Outcome::Keep);
//! ```

use crate::runtime::{RouterRuntime, TransformRuntime};
use crate::wit::{self, Change, Destination, Emit, LogicalMessage, Op, Payload, Source, Value};
use crate::{Router, Table, Transform};

/// Runs a [`Transform`] as the host would.
pub struct TransformHarness<T> {
    runtime: TransformRuntime<T>,
}

impl<T: Transform> TransformHarness<T> {
    /// Initialises the transform with `config`; the error is `init`'s.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut runtime = TransformRuntime::new();
        runtime.init(pairs(config))?;
        Ok(TransformHarness { runtime })
    }

    /// Announces `table` (`on-table`).
    pub fn announce(&mut self, table: &Table) {
        self.runtime.on_table(table.as_wit().clone());
    }

    /// Processes a batch: one outcome per change.
    pub fn process(&mut self, batch: Vec<Change>) -> Vec<wit::Outcome> {
        self.runtime.process(batch)
    }

    /// Processes a batch of one change.
    pub fn process_one(&mut self, change: Change) -> wit::Outcome {
        self.process(vec![change])
            .pop()
            .expect("one outcome per change")
    }
}

/// Runs a [`Router`] as the host would.
pub struct RouterHarness<R> {
    runtime: RouterRuntime<R>,
}

impl<R: Router> RouterHarness<R> {
    /// Initialises the router with `config`; the error is `init`'s.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut runtime = RouterRuntime::new();
        runtime.init(pairs(config))?;
        Ok(RouterHarness { runtime })
    }

    /// Announces `table` (`on-table`).
    pub fn announce(&mut self, table: &Table) {
        self.runtime.on_table(table.as_wit().clone());
    }

    /// Routes a batch: one list of destinations per change.
    pub fn route(&mut self, batch: Vec<Change>) -> Vec<Vec<Destination>> {
        self.runtime.route(batch)
    }

    /// Routes a batch of one change.
    pub fn route_one(&mut self, change: Change) -> Vec<Destination> {
        self.route(vec![change])
            .pop()
            .expect("one route per change")
    }
}

fn pairs(config: &[(&str, &str)]) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A row of `table` with the named values set and every other column NULL.
///
/// # Panics
///
/// If a name is not a column of `table` (a mistake in the test).
pub fn row(table: &Table, values: &[(&str, Value)]) -> Vec<Value> {
    let mut row = vec![Value::Null; table.columns().len()];
    for (name, value) in values {
        let index = table
            .column_index(name)
            .unwrap_or_else(|| panic!("table {} has no column `{name}`", table.qualified_name()));
        row[index] = value.clone();
    }
    row
}

fn change(op: Op, table: u32, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> Change {
    Change {
        op,
        table,
        before,
        after,
        message: None,
        source: Source {
            commit_lsn: 0x100,
            lsn: 0x80,
            xid: 700,
            commit_time_micros: 0,
            seq: 0,
        },
    }
}

/// An INSERT of a row with the named values.
pub fn insert(table: &Table, after: &[(&str, Value)]) -> Change {
    change(Op::Insert, table.id(), None, Some(row(table, after)))
}

/// An UPDATE from `before` (often just the key) to `after`.
pub fn update(table: &Table, before: &[(&str, Value)], after: &[(&str, Value)]) -> Change {
    change(
        Op::Update,
        table.id(),
        Some(row(table, before)),
        Some(row(table, after)),
    )
}

/// A DELETE of the row identified by `before`.
pub fn delete(table: &Table, before: &[(&str, Value)]) -> Change {
    change(Op::Delete, table.id(), Some(row(table, before)), None)
}

/// A TRUNCATE of `table`.
pub fn truncate(table: &Table) -> Change {
    change(Op::Truncate, table.id(), None, None)
}

/// A logical decoding message.
pub fn message(prefix: &str, content: &[u8]) -> Change {
    Change {
        message: Some(LogicalMessage {
            prefix: prefix.to_owned(),
            content: content.to_vec(),
        }),
        ..change(Op::Message, 0, None, None)
    }
}

/// What an outcome delivers instead of the event: the emits of a
/// `replace`, empty for any other outcome.
pub fn emits(outcome: &wit::Outcome) -> &[Emit] {
    match outcome {
        wit::Outcome::Replace(emits) => emits,
        _ => &[],
    }
}

/// The changes among `emits`.
pub fn emitted_changes(emits: &[Emit]) -> Vec<&Change> {
    emits
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Change(c) => Some(c),
            Payload::Raw(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Event, Outcome};

    /// Upper-cases `name`, routes `audit.*` to the audit sink, drops
    /// truncates and fails messages.
    struct Sample;

    impl Transform for Sample {
        fn init(config: &Config) -> Result<Self, String> {
            match config.get("bad") {
                Some(_) => Err("bad config".into()),
                None => Ok(Sample),
            }
        }

        fn process(&mut self, event: &mut Event<'_>) -> Outcome {
            match event.op() {
                Op::Truncate => return Outcome::Drop,
                Op::Message => return Outcome::fail("no messages"),
                _ => {}
            }
            if let Some(Value::Text(name)) = event.after_mut("name") {
                *name = name.to_uppercase();
            }
            if event.schema() == Some("audit") {
                Outcome::Route(vec![
                    Destination::sink("audit"),
                    Destination::sink("archive").with_topic("{table}"),
                ])
            } else {
                Outcome::Keep
            }
        }
    }

    impl Router for Sample {
        fn init(_: &Config) -> Result<Self, String> {
            Ok(Sample)
        }

        fn route(&mut self, event: &Event<'_>) -> Vec<Destination> {
            event
                .table_name()
                .map(|t| vec![Destination::sink(t)])
                .unwrap_or_default()
        }
    }

    #[test]
    fn transform_outcomes_carry_modifications() {
        let people = Table::new(1, "public", "people")
            .with_key("id", "int8")
            .with_column("name", "text");
        let log = Table::new(2, "audit", "log").with_column("name", "text");
        let mut h = TransformHarness::<Sample>::new(&[]).unwrap();
        h.announce(&people);
        h.announce(&log);

        let out = h.process(vec![
            insert(&people, &[("id", 1.into())]),
            insert(&people, &[("id", 2.into()), ("name", "ada".into())]),
            truncate(&people),
            message("p", b"x"),
            insert(&log, &[("name", "bob".into())]),
        ]);
        assert_eq!(out.len(), 5);
        // A NULL name is not touched by `after_mut`... but it was borrowed
        // mutably, so the SDK conservatively sends the row back.
        assert_eq!(emitted_changes(emits(&out[0])).len(), 1);
        let renamed = emitted_changes(emits(&out[1]));
        assert_eq!(
            people.value(renamed[0].after.as_ref().unwrap(), "name"),
            Some(&Value::Text("ADA".into()))
        );
        assert_eq!(out[2], wit::Outcome::Drop);
        assert!(matches!(&out[3], wit::Outcome::Fail(f) if f.message == "no messages"));
        let routed = emits(&out[4]);
        assert_eq!(routed.len(), 2);
        assert_eq!(routed[0].destination, Some(Destination::sink("audit")));
        assert_eq!(
            routed[1].destination,
            Some(Destination::sink("archive").with_topic("{table}"))
        );
        assert_eq!(emitted_changes(routed)[1].after, Some(vec!["BOB".into()]));
    }

    #[test]
    fn init_errors_and_routers() {
        assert_eq!(
            TransformHarness::<Sample>::new(&[("bad", "1")]).err(),
            Some("bad config".to_owned())
        );
        let t = Table::new(3, "public", "orders").with_key("id", "int8");
        let mut r = RouterHarness::<Sample>::new(&[]).unwrap();
        r.announce(&t);
        assert_eq!(
            r.route(vec![insert(&t, &[]), message("m", b"")]),
            vec![vec![Destination::sink("orders")], vec![]]
        );
    }

    #[test]
    fn a_newer_table_version_replaces_the_old_one() {
        // v1 has the `name` column the sample transform rewrites: reading
        // the row with v1 would modify it and answer `replace`.
        let v1 = Table::new(5, "public", "t").with_column("name", "text");
        let v2 = Table::new(5, "public", "t")
            .with_version(2)
            .with_column("z", "int4")
            .with_column("a", "text");
        let mut h = TransformHarness::<Sample>::new(&[]).unwrap();
        h.announce(&v1);
        h.announce(&v2);
        let out = h.process_one(insert(&v2, &[("a", "x".into()), ("z", 1.into())]));
        // `name` does not exist in v2, so nothing was borrowed: a plain keep.
        assert_eq!(out, wit::Outcome::Keep);
    }
}
