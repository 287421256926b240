//! A test transform for the host's tests of failure isolation, written
//! against the raw WIT bindings because what it does depends on the whole
//! batch of one call, which the SDK's per-change `process` does not see.
//!
//! Each call holds `kib_per_change` KiB of memory for every change of its
//! batch, so a large batch exceeds the instance's memory limit while every
//! change fits on its own: no change is to blame. The change whose new row
//! has `id` = `trap_on_id` allocates without bound, in any batch: that one
//! is to blame. Every other change is kept.
//!
//! Configuration: `kib_per_change` (an integer, default 64) and
//! `trap_on_id` (an integer, optional).

use std::cell::RefCell;

use weir_plugin_sdk::wit::{Change, Outcome, Value};

/// The instance's state; the exports call into it.
#[derive(Default)]
pub struct BatchHog {
    kib_per_change: usize,
    trap_on_id: Option<i64>,
}

thread_local! {
    static HOG: RefCell<BatchHog> = RefCell::default();
}

impl BatchHog {
    /// The `init` export, given what the host's `config` import returned.
    pub fn init(&mut self, config: Vec<(String, String)>) -> Result<(), String> {
        self.kib_per_change = 64;
        for (key, value) in config {
            let number = || {
                value
                    .parse::<i64>()
                    .map_err(|e| format!("`{key}` must be an integer, not {value:?}: {e}"))
            };
            match key.as_str() {
                "kib_per_change" => {
                    self.kib_per_change = usize::try_from(number()?)
                        .map_err(|_| format!("`{key}` must not be negative"))?;
                }
                "trap_on_id" => self.trap_on_id = Some(number()?),
                _ => return Err(format!("unknown config key `{key}`")),
            }
        }
        Ok(())
    }

    /// The `process` export.
    pub fn process(&mut self, batch: Vec<Change>) -> Vec<Outcome> {
        // One block for the whole call, written so it is really used.
        let mut held = vec![0u8; batch.len() * self.kib_per_change * 1024];
        held.iter_mut().step_by(4096).for_each(|b| *b = 0xA5);
        std::hint::black_box(&held);
        if batch.iter().any(|c| self.is_culprit(c)) {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
            }
        }
        batch.iter().map(|_| Outcome::Keep).collect()
    }

    fn is_culprit(&self, change: &Change) -> bool {
        let Some(id) = self.trap_on_id else {
            return false;
        };
        // Which column is `id` is in the table's schema, which this plugin
        // does not keep: the tests put it first.
        matches!(
            change.after.as_deref(),
            Some([Value::Int(v), ..]) if *v == id
        )
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use weir_plugin_sdk::bindings::transform::weir::cdc::host;
    use weir_plugin_sdk::bindings::transform::{
        Change, Emit, Guest, Hooks, Outcome, Table, Transaction,
    };

    use super::HOG;

    struct Export;

    impl Guest for Export {
        fn init() -> Result<Hooks, String> {
            HOG.with_borrow_mut(|h| h.init(host::config()))?;
            Ok(Hooks::empty())
        }

        fn on_table(_table: Table) {}

        fn process(batch: Vec<Change>) -> Vec<Outcome> {
            HOG.with_borrow_mut(|h| h.process(batch))
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
    fn keeps_every_change_and_checks_its_configuration() {
        let t = weir_plugin_sdk::Table::new(3, "public", "t").with_key("id", "int8");
        let mut hog = BatchHog::default();
        hog.init(vec![("kib_per_change".into(), "1".into())])
            .unwrap();
        let batch = vec![
            testing::insert(&t, &[("id", 1.into())]),
            testing::insert(&t, &[("id", 2.into())]),
        ];
        assert_eq!(hog.process(batch), vec![Outcome::Keep; 2]);
        assert!(
            BatchHog::default()
                .init(vec![("trap_on_id".into(), "x".into())])
                .unwrap_err()
                .contains("`trap_on_id` must be an integer")
        );
        assert!(
            BatchHog::default()
                .init(vec![("kib_per_change".into(), "-1".into())])
                .is_err()
        );
    }
}
