//! Unit-testing plugins natively, without a WebAssembly runtime.
//!
//! The harnesses drive a plugin through the same glue the component
//! exports use, and stand in for the host's imports: the configuration a
//! harness is created with is what `config` returns, and what the plugin
//! counts, declares and logs is kept for the test to read. Announce
//! tables, then process batches of changes built with [`insert`],
//! [`update`], [`delete`], [`read`], [`truncate`] and [`message`].
//!
//! ```
//! use weir_plugin_sdk::testing::{self, TransformHarness};
//! use weir_plugin_sdk::{count, wit, Config, Event, Outcome, Table, Transform};
//!
//! struct KeepAll;
//! impl Transform for KeepAll {
//!     fn init(_: &Config) -> Result<Self, String> { Ok(KeepAll) }
//!     fn process(&mut self, _: &mut Event<'_>) -> Outcome {
//!         count("seen", 1);
//!         Outcome::Keep
//!     }
//! }
//!
//! let orders = Table::new(1, "public", "orders").with_key("id", "int8");
//! let mut harness = TransformHarness::<KeepAll>::new(&[]).unwrap();
//! harness.announce(&orders);
//! let outcome = harness.process_one(testing::insert(&orders, &[("id", 1.into())]));
//! assert_eq!(outcome, wit::Outcome::Keep);
//! assert_eq!(harness.counter("seen"), 1);
//! ```
//!
//! Like Weir, the harness refuses answers that break the contract: an
//! emitted change of a table that was neither announced nor declared, or a
//! row whose length is not its table's column count, panics with the
//! message Weir would report.
//!
//! The harness compiles for `wasm32-wasip2` too, so `cargo clippy
//! --all-targets` checks plugin tests there, but it only runs natively.

use std::collections::{BTreeMap, HashMap};

use crate::host::NativeHost;
use crate::log::Level;
use crate::runtime::{RouterRuntime, TransformRuntime};
use crate::wit::{
    self, Change, Destination, Emit, Hooks, LogicalMessage, Op, Payload, Source, Transaction, Value,
};
use crate::{Router, Table, Transform};

/// Runs a [`Transform`] as the host would.
pub struct TransformHarness<T> {
    runtime: TransformRuntime<T>,
    host: NativeHost,
    hooks: Hooks,
    announced: HashMap<u32, Table>,
}

impl<T: Transform> TransformHarness<T> {
    /// Initialises the transform with `config` (what the host's `config`
    /// import returns); the error is `init`'s.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut host = NativeHost::new(pairs(config));
        let mut runtime = TransformRuntime::new();
        let hooks = host.enter(|| runtime.init())?;
        Ok(TransformHarness {
            runtime,
            host,
            hooks,
            announced: HashMap::new(),
        })
    }

    /// The optional hooks `init` asked for.
    pub fn hooks(&self) -> Hooks {
        self.hooks
    }

    /// Whether `init` asked for the `commit` hook.
    pub fn wants_commit(&self) -> bool {
        self.hooks & Hooks::COMMIT == Hooks::COMMIT
    }

    /// Announces `table` (`on-table`).
    pub fn announce(&mut self, table: &Table) {
        let runtime = &mut self.runtime;
        self.host.enter(|| runtime.on_table(table.as_wit().clone()));
        self.announced.insert(table.id(), table.clone());
    }

    /// Processes a batch: one outcome per change.
    ///
    /// # Panics
    ///
    /// When an outcome breaks the contract (see the module docs).
    pub fn process(&mut self, batch: Vec<Change>) -> Vec<wit::Outcome> {
        let runtime = &mut self.runtime;
        let outcomes = self.host.enter(|| runtime.process(batch));
        for outcome in &outcomes {
            self.check(emits(outcome));
        }
        outcomes
    }

    /// Processes a batch of one change.
    pub fn process_one(&mut self, change: Change) -> wit::Outcome {
        self.process(vec![change])
            .pop()
            .expect("one outcome per change")
    }

    /// Ends transaction `txn` (`commit`): what the plugin delivers after
    /// the transaction's changes. Like Weir, calls the plugin only if it
    /// asked for the hook, and otherwise answers nothing.
    pub fn commit(&mut self, txn: &Transaction) -> Vec<Emit> {
        if !self.wants_commit() {
            return Vec::new();
        }
        let runtime = &mut self.runtime;
        let emits = self.host.enter(|| runtime.commit(*txn));
        self.check(&emits);
        emits
    }

    /// Processes `batch`, all the changes of one transaction, then ends the
    /// transaction as Weir does: the outcomes, and what `commit` delivered.
    ///
    /// # Panics
    ///
    /// When `batch` is empty or its changes belong to more than one
    /// transaction (see [`in_transaction`]).
    pub fn process_transaction(&mut self, batch: Vec<Change>) -> (Vec<wit::Outcome>, Vec<Emit>) {
        let txn = transaction_of(&batch);
        let outcomes = self.process(batch);
        let committed = self.commit(&txn);
        (outcomes, committed)
    }

    /// The total of counter `name`, 0 when never counted.
    pub fn counter(&self, name: &str) -> u64 {
        self.host.counters.get(name).copied().unwrap_or(0)
    }

    /// Every counter the plugin counted, by name.
    pub fn counters(&self) -> &BTreeMap<String, u64> {
        &self.host.counters
    }

    /// The tables the plugin declared, in the order it declared them.
    pub fn declared_tables(&self) -> Vec<Table> {
        self.host
            .declared
            .iter()
            .cloned()
            .map(Table::from_wit)
            .collect()
    }

    /// The table announced or declared with `id`, to read the rows of
    /// emitted changes by name.
    pub fn table(&self, id: u32) -> Option<Table> {
        table_by_id(&self.announced, &self.host, id)
    }

    /// What the plugin logged, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.host.logs
    }

    fn check(&self, emits: &[Emit]) {
        for change in emitted_changes(emits) {
            if let Err(e) = fits(change, |id| table_by_id(&self.announced, &self.host, id)) {
                panic!("Weir would refuse this answer: {e}");
            }
        }
    }
}

/// Runs a [`Router`] as the host would.
pub struct RouterHarness<R> {
    runtime: RouterRuntime<R>,
    host: NativeHost,
}

impl<R: Router> RouterHarness<R> {
    /// Initialises the router with `config` (what the host's `config`
    /// import returns); the error is `init`'s.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, String> {
        let mut host = NativeHost::new(pairs(config));
        let mut runtime = RouterRuntime::new();
        host.enter(|| runtime.init())?;
        Ok(RouterHarness { runtime, host })
    }

    /// Announces `table` (`on-table`).
    pub fn announce(&mut self, table: &Table) {
        let runtime = &mut self.runtime;
        self.host.enter(|| runtime.on_table(table.as_wit().clone()));
    }

    /// Routes a batch: one list of destinations per change.
    pub fn route(&mut self, batch: Vec<Change>) -> Vec<Vec<Destination>> {
        let runtime = &mut self.runtime;
        self.host.enter(|| runtime.route(batch))
    }

    /// Routes a batch of one change.
    pub fn route_one(&mut self, change: Change) -> Vec<Destination> {
        self.route(vec![change])
            .pop()
            .expect("one route per change")
    }

    /// The total of counter `name`, 0 when never counted.
    pub fn counter(&self, name: &str) -> u64 {
        self.host.counters.get(name).copied().unwrap_or(0)
    }

    /// What the router logged, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.host.logs
    }
}

fn pairs(config: &[(&str, &str)]) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn table_by_id(announced: &HashMap<u32, Table>, host: &NativeHost, id: u32) -> Option<Table> {
    announced.get(&id).cloned().or_else(|| {
        host.declared
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .map(Table::from_wit)
    })
}

/// Weir's checks of an emitted change: its table is known and its rows
/// have one value per column.
fn fits(change: &Change, table: impl Fn(u32) -> Option<Table>) -> Result<(), String> {
    let table = match (change.op, change.table) {
        (Op::Message, 0) => None,
        (_, id) => Some(table(id).ok_or_else(|| {
            format!("emitted a change of table id {id}, which was never announced")
        })?),
    };
    for (row, which) in [(&change.before, "old"), (&change.after, "new")] {
        let Some(row) = row else { continue };
        let Some(table) = &table else {
            return Err(format!("emitted a message with a {which} row"));
        };
        if row.len() != table.columns().len() {
            return Err(format!(
                "emitted a {which} row of {} values for table {} (version {}), which has {} columns",
                row.len(),
                table.qualified_name(),
                table.version(),
                table.columns().len()
            ));
        }
    }
    Ok(())
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

/// The transaction the change builders put their changes in: xid 700,
/// committed at LSN 0x100, at the epoch.
pub fn transaction() -> Transaction {
    Transaction {
        xid: 700,
        commit_lsn: 0x100,
        commit_time_micros: 0,
    }
}

/// `changes`, moved into transaction `txn` in the order given: their
/// sources carry its xid, commit LSN and time, and positions 0, 1, 2...
pub fn in_transaction(txn: &Transaction, changes: Vec<Change>) -> Vec<Change> {
    changes
        .into_iter()
        .zip(0..)
        .map(|(mut change, seq)| {
            change.source = Source {
                commit_lsn: txn.commit_lsn,
                lsn: txn.commit_lsn.saturating_sub(0x80),
                xid: txn.xid,
                commit_time_micros: txn.commit_time_micros,
                seq,
            };
            change
        })
        .collect()
}

fn transaction_of(batch: &[Change]) -> Transaction {
    let first = batch
        .first()
        .expect("a transaction has at least one change");
    let txn = Transaction {
        xid: first.source.xid,
        commit_lsn: first.source.commit_lsn,
        commit_time_micros: first.source.commit_time_micros,
    };
    assert!(
        batch
            .iter()
            .all(|c| c.source.xid == txn.xid && c.source.commit_lsn == txn.commit_lsn),
        "the changes belong to more than one transaction"
    );
    txn
}

fn change(op: Op, table: u32, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> Change {
    let txn = transaction();
    Change {
        op,
        table,
        before,
        after,
        message: None,
        source: Source {
            commit_lsn: txn.commit_lsn,
            lsn: 0x80,
            xid: txn.xid,
            commit_time_micros: txn.commit_time_micros,
            seq: 0,
        },
    }
}

/// An INSERT of a row with the named values.
pub fn insert(table: &Table, after: &[(&str, Value)]) -> Change {
    change(Op::Insert, table.id(), None, Some(row(table, after)))
}

/// A row with the named values read by an initial snapshot.
pub fn read(table: &Table, after: &[(&str, Value)]) -> Change {
    change(Op::Read, table.id(), None, Some(row(table, after)))
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

/// The raw messages among `emits`.
pub fn emitted_raw(emits: &[Emit]) -> Vec<&wit::RawMessage> {
    emits
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Raw(r) => Some(r),
            Payload::Change(_) => None,
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

    /// Adds `domain` (of `email`) through a declared table, counts what it
    /// sees, and on commit emits the number of changes of the transaction.
    struct Domains {
        derived: HashMap<u32, Table>,
        in_txn: u64,
    }

    impl Transform for Domains {
        const COMMIT_HOOK: bool = true;

        fn init(config: &Config) -> Result<Self, String> {
            config.require("sink")?;
            Ok(Domains {
                derived: HashMap::new(),
                in_txn: 0,
            })
        }

        fn on_table(&mut self, table: &Table) {
            let derived = table.clone().with_column("domain", "text").declare();
            self.derived.insert(table.id(), derived);
        }

        fn process(&mut self, event: &mut Event<'_>) -> Outcome {
            self.in_txn += 1;
            crate::count("changes", 1);
            let Some(derived) = event.table().and_then(|t| self.derived.get(&t.id())) else {
                crate::log::warn("no table");
                return Outcome::route_to(Destination::sink("side").with_topic("messages"));
            };
            let domain = event
                .value("email")
                .and_then(Value::as_str)
                .and_then(|e| e.split_once('@'))
                .map(|(_, d)| d.to_owned());
            let mut moved = event.to_table(derived);
            if moved.change().after.is_some() {
                moved.set("domain", domain).unwrap();
            }
            Outcome::Emit(vec![moved.into_emit()])
        }

        fn commit(&mut self, txn: &Transaction) -> Vec<Emit> {
            let n = std::mem::take(&mut self.in_txn);
            crate::count("transactions", 1);
            vec![
                wit::RawMessage::new(None, Some(format!("{} {n}", txn.xid).into_bytes()))
                    .to("audit"),
            ]
        }
    }

    fn users() -> Table {
        Table::new(16384, "public", "users")
            .with_key("id", "int8")
            .with_column("email", "text")
    }

    #[test]
    fn the_commit_hook_runs_after_each_transaction() {
        let mut h = TransformHarness::<Domains>::new(&[("sink", "k")]).unwrap();
        assert!(h.wants_commit());
        assert_eq!(h.hooks(), Hooks::COMMIT);
        h.announce(&users());
        let txn = Transaction {
            xid: 42,
            commit_lsn: 0x5000,
            commit_time_micros: 1,
        };
        let batch = in_transaction(
            &txn,
            vec![
                insert(&users(), &[("id", 1.into())]),
                delete(&users(), &[("id", 1.into())]),
            ],
        );
        assert_eq!(batch[1].source.seq, 1);
        assert_eq!(batch[1].source.xid, 42);
        let (outcomes, committed) = h.process_transaction(batch);
        assert_eq!(outcomes.len(), 2);
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].destination, Some(Destination::sink("audit")));
        assert_eq!(
            emitted_raw(&committed)[0].value.as_deref(),
            Some(&b"42 2"[..])
        );
        // The count restarted with the next transaction.
        let (_, committed) = h.process_transaction(vec![truncate(&users())]);
        assert_eq!(
            emitted_raw(&committed)[0].value.as_deref(),
            Some(&b"700 1"[..])
        );
        assert_eq!(h.counter("changes"), 3);
        assert_eq!(h.counter("transactions"), 2);
        assert_eq!(h.counter("never"), 0);

        // A plugin that did not ask is never called, as in Weir.
        let mut sample = TransformHarness::<Sample>::new(&[]).unwrap();
        assert!(!sample.wants_commit());
        assert!(sample.commit(&transaction()).is_empty());
    }

    #[test]
    fn declared_tables_carry_computed_columns() {
        let mut h = TransformHarness::<Domains>::new(&[("sink", "k")]).unwrap();
        h.announce(&users());
        let declared = h.declared_tables();
        assert_eq!(declared.len(), 1);
        let derived = &declared[0];
        assert_ne!(derived.id(), users().id());
        assert_eq!(derived.qualified_name(), "public.users");
        let names: Vec<_> = derived.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "email", "domain"]);
        assert!(derived.columns()[0].key);

        let out = h.process(vec![
            insert(
                &users(),
                &[("id", 1.into()), ("email", "a@example.com".into())],
            ),
            update(
                &users(),
                &[("id", 1.into())],
                &[("id", 1.into()), ("email", Value::Null)],
            ),
            delete(&users(), &[("id", 1.into()), ("email", "b@x.org".into())]),
        ]);
        let rows: Vec<_> = out
            .iter()
            .map(|o| emitted_changes(emits(o))[0].clone())
            .collect();
        let table = h.table(rows[0].table).expect("the declared table");
        assert_eq!(&table, derived);
        let after = rows[0].after.as_deref().unwrap();
        assert_eq!(table.value(after, "email"), Some(&"a@example.com".into()));
        assert_eq!(table.value(after, "domain"), Some(&"example.com".into()));
        assert_eq!(rows[0].op, Op::Insert);
        // NULL in, NULL out; the old row's new column stays NULL.
        let after = rows[1].after.as_deref().unwrap();
        assert_eq!(table.value(after, "domain"), Some(&Value::Null));
        assert_eq!(rows[1].before.as_deref().map(<[Value]>::len), Some(3));
        let before = rows[2].before.as_deref().unwrap();
        assert_eq!(table.value(before, "email"), Some(&"b@x.org".into()));
        assert_eq!(table.value(before, "domain"), Some(&Value::Null));
        assert_eq!(rows[2].after, None);

        // The same shape again is the same table; another shape is not.
        h.announce(&users());
        assert_eq!(h.declared_tables().len(), 1);
        h.announce(&users().with_version(2).with_column("age", "int4"));
        let declared = h.declared_tables();
        assert_eq!(declared.len(), 2);
        assert_ne!(declared[0].id(), declared[1].id());
    }

    #[test]
    fn each_harness_is_its_own_host() {
        let mut a = TransformHarness::<Domains>::new(&[("sink", "k")]).unwrap();
        let mut b = TransformHarness::<Domains>::new(&[("sink", "k")]).unwrap();
        a.announce(&users());
        a.process_one(truncate(&users()));
        let out = b.process_one(message("p", b""));
        assert_eq!(a.counter("changes"), 1);
        assert_eq!(b.counter("changes"), 1);
        assert!(b.declared_tables().is_empty());
        assert!(a.logs().is_empty());
        assert_eq!(b.logs(), [(Level::Warn, "no table".to_owned())]);
        assert_eq!(
            emits(&out)[0].destination,
            Some(Destination::sink("side").with_topic("messages"))
        );
        assert_eq!(
            TransformHarness::<Domains>::new(&[]).err().as_deref(),
            Some("missing required config key `sink`")
        );
    }

    /// Emits changes of a table it never declared.
    struct Careless;

    impl Transform for Careless {
        fn init(_: &Config) -> Result<Self, String> {
            Ok(Careless)
        }

        fn process(&mut self, event: &mut Event<'_>) -> Outcome {
            let elsewhere = Table::new(99, "public", "elsewhere").with_column("x", "text");
            Outcome::Emit(vec![event.to_table(&elsewhere).into_emit()])
        }
    }

    #[test]
    #[should_panic(expected = "table id 99, which was never announced")]
    fn changes_of_unknown_tables_are_refused_as_weir_would() {
        let mut h = TransformHarness::<Careless>::new(&[]).unwrap();
        h.announce(&users());
        h.process_one(insert(&users(), &[("id", 1.into())]));
    }

    #[test]
    fn rows_must_fit_their_table() {
        let t = users();
        let mut short = insert(&t, &[]);
        short.after.as_mut().unwrap().pop();
        let lookup = |id| (id == t.id()).then(|| t.clone());
        assert!(fits(&insert(&t, &[]), lookup).is_ok());
        assert!(fits(&message("m", b""), lookup).is_ok());
        let err = fits(&short, lookup).unwrap_err();
        assert!(
            err.contains("new row of 1 values for table public.users"),
            "{err}"
        );
    }
}
