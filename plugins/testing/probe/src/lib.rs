//! A test transform for the host's tests, written against the raw WIT
//! bindings rather than the SDK's traits so it can break the contract.
//!
//! For each event it emits a raw message describing what it knows of the
//! event's table: `schema.table v<version> columns=<n> announced=<count>`,
//! where `count` is how many `on-table` calls the instance has received
//! (`message` for logical messages, `unknown <id>` for unannounced tables).
//!
//! Configuration:
//!
//! * `fail_init`: `init` fails with this message.
//! * `misbehave`: `short-row` (emit the change with its new row one value
//!   short), `unknown-table` (emit the change with a table id never
//!   announced), `extra-outcome` (answer one outcome too many).

use std::cell::RefCell;
use std::collections::HashMap;

use weir_plugin_sdk::wit::{Change, Emit, Outcome, Payload, RawMessage, Table};

/// The instance's state; the exports call into it.
#[derive(Default)]
pub struct Probe {
    misbehave: String,
    announced: u32,
    tables: HashMap<u32, Table>,
}

thread_local! {
    static PROBE: RefCell<Probe> = RefCell::default();
}

impl Probe {
    /// The `init` export, given what the host's `config` import returned.
    pub fn init(&mut self, config: Vec<(String, String)>) -> Result<(), String> {
        for (key, value) in config {
            match key.as_str() {
                "fail_init" => return Err(value),
                "misbehave" => self.misbehave = value,
                _ => return Err(format!("unknown config key `{key}`")),
            }
        }
        Ok(())
    }

    /// The `on-table` export.
    pub fn on_table(&mut self, table: Table) {
        self.announced += 1;
        self.tables.insert(table.id, table);
    }

    /// The `process` export.
    pub fn process(&mut self, batch: Vec<Change>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = batch.into_iter().map(|c| self.answer(c)).collect();
        if self.misbehave == "extra-outcome" {
            outcomes.push(Outcome::Keep);
        }
        outcomes
    }

    fn answer(&self, mut change: Change) -> Outcome {
        match self.misbehave.as_str() {
            "short-row" => {
                if let Some(after) = &mut change.after {
                    after.pop();
                }
                return Outcome::Replace(vec![change_emit(change)]);
            }
            "unknown-table" => {
                change.table = 999_999;
                return Outcome::Replace(vec![change_emit(change)]);
            }
            _ => {}
        }
        let description = match (change.message.is_some(), self.tables.get(&change.table)) {
            (true, _) => "message".to_owned(),
            (false, Some(t)) => format!(
                "{}.{} v{} columns={} announced={}",
                t.schema,
                t.name,
                t.version,
                t.columns.len(),
                self.announced
            ),
            (false, None) => format!("unknown {}", change.table),
        };
        Outcome::Replace(vec![Emit::raw(RawMessage::new(
            None,
            Some(description.into_bytes()),
        ))])
    }
}

fn change_emit(change: Change) -> Emit {
    Emit {
        destination: None,
        payload: Payload::Change(change),
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use weir_plugin_sdk::bindings::transform::weir::cdc::host;
    use weir_plugin_sdk::bindings::transform::{
        Change, Emit, Guest, Hooks, Outcome, Table, Transaction,
    };

    use super::PROBE;

    struct Export;

    impl Guest for Export {
        fn init() -> Result<Hooks, String> {
            PROBE.with_borrow_mut(|p| p.init(host::config()))?;
            Ok(Hooks::empty())
        }

        fn on_table(table: Table) {
            PROBE.with_borrow_mut(|p| p.on_table(table))
        }

        fn process(batch: Vec<Change>) -> Vec<Outcome> {
            PROBE.with_borrow_mut(|p| p.process(batch))
        }

        /// Never called: `init` asks for no hooks.
        fn commit(_txn: Transaction) -> Vec<Emit> {
            Vec::new()
        }
    }

    weir_plugin_sdk::bindings::transform::__weir_export_transform_world!(Export);
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing;

    #[test]
    fn describes_tables_and_misbehaves_on_request() {
        let t = weir_plugin_sdk::Table::new(3, "public", "t").with_key("id", "int8");
        let mut probe = Probe::default();
        probe.init(vec![]).unwrap();
        probe.on_table(t.as_wit().clone());
        let out = probe.process(vec![testing::insert(&t, &[]), testing::message("m", b"")]);
        let text = |o: &Outcome| match o {
            Outcome::Replace(e) => match &e[0].payload {
                Payload::Raw(r) => String::from_utf8(r.value.clone().unwrap()).unwrap(),
                Payload::Change(_) => panic!("a change"),
            },
            _ => panic!("not a replace"),
        };
        assert_eq!(text(&out[0]), "public.t v1 columns=1 announced=1");
        assert_eq!(text(&out[1]), "message");

        let mut bad = Probe::default();
        bad.init(vec![("misbehave".into(), "extra-outcome".into())])
            .unwrap();
        assert_eq!(bad.process(vec![testing::truncate(&t)]).len(), 2);
        assert_eq!(
            Probe::default().init(vec![("fail_init".into(), "no".into())]),
            Err("no".into())
        );
    }
}
