//! What every sequence of items the Postgres source decodes must satisfy.

use weir_core::{SourceItem, TxnId};

/// Panics unless `items` nest as the pipeline expects: changes only
/// between a Begin and its Commit, numbered from 0 in order, each row as
/// long as its table has columns.
pub fn check(items: &[SourceItem]) {
    let mut open: Option<(TxnId, u32)> = None;
    for item in items {
        match item {
            SourceItem::Begin(b) => {
                assert!(open.is_none(), "BEGIN inside a transaction");
                open = Some((b.txn, 0));
            }
            SourceItem::Change(c) => {
                let (txn, seq) = open.as_mut().expect("a change outside a transaction");
                assert_eq!(c.txn, *txn);
                assert_eq!(c.source.seq, *seq);
                *seq += 1;
                if let Some(table) = &c.table {
                    for row in [&c.before, &c.after].into_iter().flatten() {
                        assert_eq!(row.len(), table.columns.len());
                    }
                }
            }
            SourceItem::Commit(c) => {
                let (txn, _) = open.take().expect("COMMIT outside a transaction");
                assert_eq!(c.txn, txn);
            }
            SourceItem::Restart => panic!("a decoder never restarts"),
        }
    }
}
