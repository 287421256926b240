//! Snapshots: the rows tables already hold, as `read` events, in step with
//! the stream so that nothing is missed or applied out of order.
//!
//! ```text
//!  new slot ──exported snapshot──▶ InitialSnapshot (N workers, page chunks) ──▶ read events ≤ consistent point
//!  stream   ──low mark · COPY chunk · high mark──▶ watermark engine ──▶ read events at the high mark
//! ```
//!
//! Two ways in, one reader ([`read`]: the catalog shape and COPY):
//! * **The initial snapshot** of a new slot ([`InitialSnapshot`]): several
//!   connections import the snapshot the slot exported and copy every
//!   published table in page chunks, each chunk one transaction of `read`
//!   events just below the slot's consistent point.
//! * **Watermark chunks** (`watermark`), read while the slot streams, as
//!   DBLog does: a low mark, the chunk's `SELECT`, a high mark (logical
//!   messages, `pg_logical_emit_message`), and at the high mark the chunk's
//!   rows minus those the stream changed between the marks. They serve
//!   ad-hoc snapshots ([`request`]), the backfill of a table added to the
//!   capture, and the rest of an initial snapshot that was interrupted:
//!   its exported snapshot died with its connection, but the stream from
//!   the consistent point plus watermark chunks give the same result.
//!
//! And for plugin authors, [`sample`]: rows of a table as `read` events,
//! read in a read-only transaction, outside any capture.
//!
//! Progress lives in the source database (`state`): [`STATE_TABLE`] holds
//! each slot's initial snapshot, `weir.snapshot_tables` every table to
//! snapshot and the chunks delivered so far. A chunk counts as delivered
//! only once every sink holds it durably, so after a crash only chunks in
//! flight are read again.

mod initial;
pub mod read;
mod sample;
pub(crate) mod state;
pub(crate) mod watermark;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

pub(crate) use crate::conn::quote_ident;

pub use initial::{InitialSnapshot, SnapshotSummary};
pub use read::{Chunk, Rows, SnapshotTable, describe, session_settings};
pub use sample::sample;
pub(crate) use state::{
    InitialState, backfill_new_tables, drop_slot_and_state, ensure_state_table, initial_state,
    is_state_table, quoted_names, record_started, request_state,
};
pub use state::{MAX_REPAIR_KEYS, STATE_TABLE, record_finished, request, request_repair};

/// Pages per chunk unless configured: 8 MiB of heap at the default block
/// size, small enough to spread a table over the workers and keep memory
/// bounded, large enough that a chunk is a long sequential read.
pub const DEFAULT_CHUNK_PAGES: u32 = 1024;

/// Rows per batch handed downstream.
const ITEMS_PER_BATCH: usize = 4096;

/// How many chunks cut a table of `pages` pages into `chunk_pages` each.
/// Before PostgreSQL 14 a `ctid` range is a full scan: then one chunk.
pub(crate) fn chunk_count(pages: u32, chunk_pages: u32, tid_ranges: bool) -> u32 {
    if !tid_ranges {
        return 1;
    }
    pages.div_ceil(chunk_pages.max(1)).max(1)
}

/// Chunk `k` of `count`: its pages. The last is open-ended, so pages added
/// after the table was measured are read too, without assuming they hold
/// nothing the snapshot should see.
pub(crate) fn chunk_pages(k: u32, count: u32, chunk_pages: u32) -> Chunk {
    let start = k.saturating_mul(chunk_pages);
    let end = (k + 1 < count).then(|| start.saturating_add(chunk_pages));
    Chunk::Pages { start, end }
}

/// Live progress of the snapshots of one pipeline, for `/status` and
/// metrics: per table, the rows read, the planner's estimate and chunks
/// done. Shared by the initial snapshot and the watermark engine, and
/// kept across reconnects.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    tables: std::sync::Mutex<Vec<Arc<TableProgress>>>,
    started: std::sync::OnceLock<Instant>,
    delivered: AtomicBool,
    wake: tokio::sync::Notify,
}

/// One table's share of [`SnapshotProgress`].
#[derive(Debug)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// The request it belongs to: 0 for the initial snapshot.
    pub request: i64,
    /// `pg_class.reltuples` when the table was analyzed.
    pub estimated_rows: Option<u64>,
    /// Chunks the table is cut into.
    pub chunks: AtomicU64,
    /// Chunks read so far (or delivered before a restart).
    pub chunks_done: AtomicU64,
    /// Rows read so far, by this process.
    pub rows: AtomicU64,
    /// Every chunk is durable at every sink.
    pub done: AtomicBool,
    started: Instant,
    /// How long it took, once done: its rate stops there.
    took: std::sync::OnceLock<std::time::Duration>,
    /// Why it was given up, if it was (shown so until the table is read
    /// again).
    failed: std::sync::OnceLock<String>,
}

impl TableProgress {
    /// A table about to be read.
    pub fn new(table: String, request: i64, estimated_rows: Option<u64>, chunks: u64) -> Self {
        TableProgress {
            table,
            request,
            estimated_rows,
            chunks: AtomicU64::new(chunks),
            chunks_done: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            done: AtomicBool::new(false),
            started: Instant::now(),
            took: std::sync::OnceLock::new(),
            failed: std::sync::OnceLock::new(),
        }
    }

    /// Why the table was given up, if it was.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// How long this process has been reading it, or took to.
    pub fn elapsed(&self) -> std::time::Duration {
        self.took
            .get()
            .copied()
            .unwrap_or_else(|| self.started.elapsed())
    }

    /// Records that every chunk is durable at every sink.
    pub fn finish(&self) {
        let _ = self.took.set(self.started.elapsed());
        self.done.store(true, Ordering::Relaxed);
    }

    fn read(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.chunks_done.fetch_add(1, Ordering::Relaxed);
    }
}

impl SnapshotProgress {
    /// The tables, in the order they were begun.
    pub fn tables(&self) -> Vec<Arc<TableProgress>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts showing `table`; the same table shown before for the same
    /// request (a previous attempt), or given up in any request, is
    /// replaced.
    pub fn add(&self, table: TableProgress) -> Arc<TableProgress> {
        let _ = self.started.set(Instant::now());
        let table = Arc::new(table);
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.retain(|t| {
            !(t.table == table.table && (t.request == table.request || t.failure().is_some()))
        });
        tables.push(Arc::clone(&table));
        table
    }

    /// How long since the first table was begun; `None` before.
    pub fn elapsed(&self) -> Option<std::time::Duration> {
        self.started.get().map(|t| t.elapsed())
    }

    /// Whether every row of the initial snapshot is durable at every sink.
    pub fn is_delivered(&self) -> bool {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Records that every row of the initial snapshot is durable at every
    /// sink.
    pub fn set_delivered(&self) {
        for t in self.tables() {
            if t.request == 0 && t.failure().is_none() {
                t.finish();
            }
        }
        self.delivered.store(true, Ordering::Relaxed);
    }

    /// Shows `tables` (as a request names them) as queued for `request`
    /// until the reader takes them, so that a request is visible at once.
    pub fn queue(&self, request: i64, tables: &[String]) {
        for t in tables {
            if let Ok(pattern) = weir_core::TablePattern::parse(t)
                && let Some((schema, name)) = pattern.exact()
            {
                self.add(TableProgress::new(
                    format!("{schema}.{name}"),
                    request,
                    None,
                    0,
                ));
            }
        }
    }

    /// Whether `t` waits for the reader: queued, no chunk planned yet.
    pub fn is_queued(t: &TableProgress) -> bool {
        t.chunks.load(Ordering::Relaxed) == 0 && t.failure().is_none()
    }

    /// Records that `table` of `request` was given up, with why; shown
    /// from now on as failed, not as being copied.
    pub fn fail(&self, table: &str, request: i64, error: &str) {
        let shown = self
            .tables()
            .into_iter()
            .find(|t| t.table == table && t.request == request);
        let shown =
            shown.unwrap_or_else(|| self.add(TableProgress::new(table.into(), request, None, 0)));
        let _ = shown.took.set(shown.started.elapsed());
        let _ = shown.failed.set(error.to_owned());
    }

    /// Whether some table is still being read or delivered.
    pub fn is_copying(&self) -> bool {
        self.tables()
            .iter()
            .any(|t| !t.done.load(Ordering::Relaxed) && t.failure().is_none())
    }

    /// Tells the source that snapshot requests were queued, so it looks
    /// now rather than at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// A string literal that means `text` whatever `standard_conforming_strings`.
pub(crate) fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_given_up_is_not_copying_nor_delivered_until_read_again() {
        let progress = SnapshotProgress::default();
        let initial = progress.add(TableProgress::new("public.a".into(), 0, None, 2));
        progress.add(TableProgress::new("public.b".into(), 0, None, 1));
        assert!(progress.is_copying());
        progress.fail("public.b", 0, "no such table");
        // a is still being read.
        assert!(progress.is_copying());
        initial.finish();
        assert!(!progress.is_copying(), "b is given up, not being copied");
        progress.set_delivered();
        let b = progress
            .tables()
            .into_iter()
            .find(|t| t.table == "public.b")
            .unwrap();
        assert_eq!(b.failure(), Some("no such table"));
        assert!(
            !b.done.load(Ordering::Relaxed),
            "a failed table is not delivered"
        );

        // A table never shown can fail too (before it was described).
        progress.fail("public.c", 3, "permission denied");
        assert_eq!(progress.tables().len(), 3);
        // A new request for a failed table replaces the failure.
        progress.add(TableProgress::new("public.b".into(), 4, None, 1));
        let shown: Vec<(String, i64, bool)> = progress
            .tables()
            .iter()
            .map(|t| (t.table.clone(), t.request, t.failure().is_some()))
            .collect();
        assert_eq!(
            shown,
            [
                ("public.a".to_owned(), 0, false),
                ("public.c".to_owned(), 3, true),
                ("public.b".to_owned(), 4, false),
            ]
        );
        assert!(progress.is_copying());
    }

    #[test]
    fn a_queued_request_shows_until_the_reader_takes_it() {
        let progress = SnapshotProgress::default();
        progress.queue(7, &["orders".to_owned(), r#""Sales"."Q1""#.to_owned()]);
        let shown: Vec<(String, i64)> = progress
            .tables()
            .iter()
            .inspect(|t| assert!(SnapshotProgress::is_queued(t)))
            .map(|t| (t.table.clone(), t.request))
            .collect();
        assert_eq!(
            shown,
            [("public.orders".to_owned(), 7), ("Sales.Q1".to_owned(), 7)]
        );
        assert!(progress.is_copying(), "queued counts as not delivered");
        let taken = progress.add(TableProgress::new("public.orders".into(), 7, None, 3));
        assert!(!SnapshotProgress::is_queued(&taken));
        assert_eq!(progress.tables().len(), 2);
    }
}
