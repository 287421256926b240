//! Driving a sink's readback as `weir verify` does, for the tests of each
//! sink's readback; the records to hand it are in [`crate::records`].

use std::future::Future;

use weir_core::{ColumnDiff, Held, HeldKey, Readback, SinkError, TableSchema};

/// The readback a sink configuration's `readback(name)` opens; panics when
/// it has none or it does not open.
pub async fn open<F>(readback: Result<F, String>) -> Box<dyn Readback>
where
    F: Future<Output = Result<Box<dyn Readback>, SinkError>>,
{
    readback
        .unwrap_or_else(|e| panic!("no readback: {e}"))
        .await
        .unwrap_or_else(|e| panic!("opening the readback: {e}"))
}

/// Every page `keys()` gives for `table` under `topic`, asked for `limit`
/// keys a page, in the order given.
pub async fn key_pages(
    readback: &mut dyn Readback,
    table: &TableSchema,
    topic: Option<&str>,
    limit: usize,
) -> Vec<Vec<HeldKey>> {
    let (mut pages, mut cursor) = (Vec::new(), None);
    loop {
        let page = readback
            .keys(table, topic, cursor, limit)
            .await
            .unwrap_or_else(|e| panic!("listing keys: {e}"));
        pages.push(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
        assert!(pages.len() < 10_000, "the listing does not end");
    }
}

/// Every key of [`key_pages`], in the order listed, and how many pages it
/// took; no page may hold more than `limit` keys (a listing by `SCAN`
/// may, so it uses [`key_pages`]).
pub async fn all_keys(
    readback: &mut dyn Readback,
    table: &TableSchema,
    topic: Option<&str>,
    limit: usize,
) -> (Vec<HeldKey>, usize) {
    let pages = key_pages(readback, table, topic, limit).await;
    for page in &pages {
        assert!(page.len() <= limit, "{page:?}");
    }
    (pages.concat(), pages.len())
}

/// The source key of each of `keys`; panics at one that maps to none.
pub fn key_values(keys: &[HeldKey]) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| k.key.clone().unwrap_or_else(|| panic!("no key: {k:?}")))
        .collect()
}

/// The differences `held` reports; panics when it is no difference.
pub fn diffs(held: &Held) -> &[ColumnDiff] {
    match held {
        Held::Differs(diffs) => diffs,
        other => panic!("not a difference: {other:?}"),
    }
}

/// A [`ColumnDiff`] of `column`, the texts as the readback shows them.
pub fn column_diff(column: &str, source: &str, sink: &str) -> ColumnDiff {
    ColumnDiff {
        column: column.to_owned(),
        source: source.to_owned(),
        sink: sink.to_owned(),
    }
}

/// Asserts that `keys` stand for the source keys `want` (the texts of
/// each key's columns), in any order, as a listing has none.
#[track_caller]
pub fn assert_keys<const N: usize>(keys: &[HeldKey], want: &[[&str; N]]) {
    let mut listed = key_values(keys);
    listed.sort();
    let mut want: Vec<Vec<String>> = want
        .iter()
        .map(|k| k.iter().map(|t| (*t).to_owned()).collect())
        .collect();
    want.sort();
    assert_eq!(listed, want, "{keys:?}");
}

/// The keys `prefix` + id a key-value sink holds for each of `ids` (a
/// one-column key), and `unmapped` (names that map back to no key),
/// sorted by name.
pub fn held_ids(prefix: &str, ids: &[i64], unmapped: &[&str]) -> Vec<HeldKey> {
    let mut keys: Vec<HeldKey> = ids
        .iter()
        .map(|id| HeldKey {
            name: format!("{prefix}{id}"),
            key: Some(vec![id.to_string()]),
        })
        .chain(unmapped.iter().map(|name| HeldKey {
            name: (*name).to_owned(),
            key: None,
        }))
        .collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys
}
