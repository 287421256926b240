//! A test transform for the host's tests of the `commit` hook.
//!
//! It asks for the hook, keeps every change, and counts the changes of the
//! current transaction. On commit it emits one raw message whose value is
//! `{"xid":<xid>,"commit_lsn":<lsn>,"changes":<n>}`, without a
//! destination (the pipeline's routing places it), and adds 1 to the
//! counter `transactions`. It takes no configuration.

use weir_plugin_sdk::{Config, Emit, Event, Outcome, RawMessage, Transaction, Transform, count};

/// Summarises each transaction on commit.
pub struct CommitHook {
    /// Changes seen since the last commit.
    changes: u64,
}

impl Transform for CommitHook {
    const COMMIT_HOOK: bool = true;

    fn init(_config: &Config) -> Result<Self, String> {
        Ok(CommitHook { changes: 0 })
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        self.changes += 1;
        Outcome::Keep
    }

    fn commit(&mut self, txn: &Transaction) -> Vec<Emit> {
        let changes = std::mem::take(&mut self.changes);
        count("transactions", 1);
        let summary = format!(
            r#"{{"xid":{},"commit_lsn":{},"changes":{changes}}}"#,
            txn.xid, txn.commit_lsn
        );
        vec![Emit::raw(RawMessage::new(None, Some(summary.into_bytes())))]
    }
}

weir_plugin_sdk::export_transform!(CommitHook);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn summarises_each_transaction() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<CommitHook>::new(&[]).unwrap();
        assert!(h.wants_commit());
        h.announce(&t);
        let first = Transaction {
            xid: 901,
            commit_lsn: 0x16_B374_D848,
            commit_time_micros: 0,
        };
        let batch = testing::in_transaction(
            &first,
            vec![
                testing::insert(&t, &[("id", 1.into())]),
                testing::update(&t, &[("id", 1.into())], &[("id", 2.into())]),
                testing::message("m", b""),
            ],
        );
        let (outcomes, committed) = h.process_transaction(batch);
        assert_eq!(outcomes, vec![wit::Outcome::Keep; 3]);
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].destination, None);
        let raw = testing::emitted_raw(&committed);
        assert_eq!(raw[0].key, None);
        assert!(raw[0].headers.is_empty());
        assert_eq!(
            raw[0].value.as_deref(),
            Some(&br#"{"xid":901,"commit_lsn":97500059720,"changes":3}"#[..])
        );

        let (_, committed) = h.process_transaction(vec![testing::truncate(&t)]);
        assert_eq!(
            testing::emitted_raw(&committed)[0].value.as_deref(),
            Some(&br#"{"xid":700,"commit_lsn":256,"changes":1}"#[..])
        );
        assert_eq!(h.counter("transactions"), 2);
    }
}
