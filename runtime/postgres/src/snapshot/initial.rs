//! The initial snapshot of a new slot: several connections import the
//! snapshot the slot exported and copy every published table in page
//! chunks, each chunk handed on as its own transaction of `read` events
//! just below the slot's consistent point, and recorded delivered once
//! every sink holds it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use weir_core::{
    ChangeEvent, Lsn, Op, SnapshotKind, SourceInfo, SourceItem, TxnBegin, TxnCommit, TxnId, Value,
};

use super::read::measure;
use super::state::{Planned, record_chunks, record_plan};
use super::{
    ITEMS_PER_BATCH, SnapshotProgress, TableProgress, chunk_count, chunk_pages, describe, literal,
    session_settings,
};
use crate::PgError;
use crate::config::PostgresConfig;
use crate::conn::ReplConn;
use crate::pgoutput::next_txn_id;
use crate::setup::connect_sql;

/// The initial snapshot of a new slot: the rows every published table held
/// at the slot's consistent point, read through the snapshot the slot
/// exported, one transaction of `read` events per chunk, positioned just
/// below that point (before every change the slot will stream, even one
/// that commits exactly at it).
pub struct InitialSnapshot {
    config: PostgresConfig,
    repl: Option<ReplConn>,
    name: String,
    consistent_point: Lsn,
    db_key: Arc<str>,
    progress: Arc<SnapshotProgress>,
}

impl std::fmt::Debug for InitialSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialSnapshot")
            .field("slot", &self.config.slot)
            .field("snapshot", &self.name)
            .field("consistent_point", &self.consistent_point)
            .finish()
    }
}

/// What an initial snapshot handed on.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSummary {
    /// Its last transaction (each chunk with rows is one): once the
    /// pipeline retired it, every row is durable. `None` when no table had
    /// rows.
    pub last_txn: Option<TxnId>,
    /// Rows read.
    pub rows: u64,
    /// Tables read.
    pub tables: usize,
    /// Whether every row was read and handed on (not cut short by a
    /// shutdown or a closed channel).
    pub complete: bool,
}

/// A chunk handed on, to record once its transaction is retired.
struct Handed {
    /// `None`: the chunk had no rows, so nothing waits on a sink.
    txn: Option<TxnId>,
    table: usize,
    chunk: u32,
    rows: u64,
}

impl InitialSnapshot {
    pub(crate) fn new(
        config: PostgresConfig,
        repl: ReplConn,
        name: String,
        consistent_point: Lsn,
        db_key: Arc<str>,
    ) -> Self {
        InitialSnapshot {
            config,
            repl: Some(repl),
            name,
            consistent_point,
            db_key,
            progress: Arc::default(),
        }
    }

    /// Its progress, updated while [`run`](Self::run) copies.
    pub fn progress(&self) -> Arc<SnapshotProgress> {
        Arc::clone(&self.progress)
    }

    pub(crate) fn share_progress(&mut self, progress: Arc<SnapshotProgress>) {
        self.progress = progress;
    }

    /// The slot's consistent point: the snapshot shows every transaction
    /// committed before it, the stream every one after.
    pub fn consistent_point(&self) -> Lsn {
        self.consistent_point
    }

    /// Reads every published table with `config.snapshot_workers`
    /// connections and sends the rows to `out`, one transaction per chunk
    /// (`Begin`, a `read` change per row, `Commit` ending at the consistent
    /// point, so acknowledging it moves nothing). `retired` tells which
    /// transactions every sink holds (the pipeline's newest retired one):
    /// their chunks are recorded in `weir.snapshot_tables`, so that a
    /// restart reads only the others.
    ///
    /// A publication's column lists and row filters apply, as in the
    /// stream; row security is refused rather than let hide rows; the
    /// tables are locked against rewrites (`ACCESS SHARE`) until the copy
    /// ends. Stops early, with `Ok`, when `shutdown` is cancelled or `out`
    /// closes.
    pub async fn run(
        mut self,
        out: &mpsc::Sender<Vec<SourceItem>>,
        retired: watch::Receiver<Option<TxnId>>,
        shutdown: &CancellationToken,
    ) -> Result<SnapshotSummary, PgError> {
        let cfg = self.config.clone();
        let addr = cfg.address();
        let workers = cfg.snapshot_workers.max(1);
        // Every worker imports the exported snapshot before the connection
        // that holds it does anything else; then it may go.
        // Row security would hide rows the stream sends: refuse instead
        // (as pg_dump does). Timeouts a server sets would kill a worker
        // that waits on a slow sink, or a long COPY.
        let import = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; {} \
             SET row_security = off; SET statement_timeout = 0; \
             SET idle_in_transaction_session_timeout = 0;",
            literal(&self.name),
            session_settings()
        );
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = connect_sql(&cfg, &addr).await?;
            client
                .batch_execute(&import)
                .await
                .map_err(|e| PgError::sql(&addr, "importing the slot's exported snapshot", e))?;
            clients.push(Arc::new(client));
        }
        if let Some(repl) = self.repl.take() {
            repl.close().await;
        }
        let version: i32 = clients[0]
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| PgError::sql(&addr, "reading the server version", e))?
            .get(0);
        // PostgreSQL 15 publications may list columns and filter rows; the
        // snapshot shows what the stream would.
        let list = if version >= 150_000 {
            "SELECT schemaname::text, tablename::text, attnames::text[], rowfilter \
             FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
        } else {
            "SELECT schemaname::text, tablename::text, NULL::text[], NULL::text \
             FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
        };
        let published = clients[0]
            .query(list, &[&cfg.publication])
            .await
            .map_err(|e| PgError::sql(&addr, "listing the published tables", e))?;
        let mut tables = Vec::with_capacity(published.len());
        let mut filters: Vec<Option<String>> = Vec::with_capacity(published.len());
        let mut plans = Vec::with_capacity(published.len());
        let mut chunks = std::collections::VecDeque::new();
        let mut names = Vec::new();
        for row in &published {
            let (schema, name): (String, String) = (row.get(0), row.get(1));
            if super::is_state_table(&schema, &name) {
                continue;
            }
            let columns: Option<Vec<String>> = row.get(2);
            let filter: Option<String> = row.get(3);
            let table = describe(
                &clients[0],
                &addr,
                &self.db_key,
                &schema,
                &name,
                columns.as_deref(),
            )
            .await?;
            names.push(table.sql_name().to_owned());
            let (pages, heap) = measure(&clients[0], &addr, table.schema.id).await?;
            let count = chunk_count(pages, cfg.snapshot_chunk_pages, version >= 140_000);
            for k in 0..count {
                chunks.push_back((tables.len(), k));
            }
            plans.push(Planned {
                schema,
                name,
                heap,
                chunk_pages: cfg.snapshot_chunk_pages,
                chunks: count,
            });
            tables.push(Arc::new(table));
            filters.push(filter);
        }
        // Held until the workers' transactions end: a table rewritten
        // meanwhile (ALTER TABLE … TYPE) would look empty to the snapshot.
        if !names.is_empty() {
            clients[0]
                .batch_execute(&format!(
                    "LOCK TABLE {} IN ACCESS SHARE MODE",
                    names.join(", ")
                ))
                .await
                .map_err(|e| PgError::sql(&addr, "locking the tables to snapshot", e))?;
        }
        // The plan is recorded before any chunk is read, so that a crash
        // from here on resumes instead of starting over.
        let recorder = connect_sql(&cfg, &addr).await?;
        record_plan(&recorder, &addr, &cfg.slot, 0, &plans).await?;
        let progress: Arc<Vec<Arc<TableProgress>>> = Arc::new(
            tables
                .iter()
                .zip(&plans)
                .map(|(t, p)| {
                    self.progress.add(TableProgress::new(
                        t.schema.qualified_name(),
                        0,
                        t.estimated_rows,
                        u64::from(p.chunks),
                    ))
                })
                .collect(),
        );
        let filters = Arc::new(filters);
        tracing::info!(
            slot = %cfg.slot, tables = tables.len(), chunks = chunks.len(), workers,
            consistent_point = %self.consistent_point, "initial snapshot started"
        );
        let (handed_tx, handed_rx) = mpsc::unbounded_channel();
        tokio::spawn(record_delivered(
            recorder,
            addr.clone(),
            cfg.slot.clone(),
            plans,
            handed_rx,
            retired,
            shutdown.clone(),
        ));
        let queue = Arc::new(std::sync::Mutex::new(chunks));
        // Workers send rows, or the error that stopped them: the first
        // error ends the snapshot at once rather than after every chunk.
        type Read = Result<(usize, u32, Vec<Vec<Value>>, OwnedSemaphorePermit), PgError>;
        let (rows_tx, mut rows_rx) = mpsc::channel::<Read>(workers + 1);
        // Decoded chunks held at once, read or being read, until their
        // rows are handed on: one per worker and one more, so that memory
        // is bounded by the workers, not by how far they run ahead.
        let budget = Arc::new(Semaphore::new(workers + 1));
        let mut tasks = tokio::task::JoinSet::new();
        let per_chunk = cfg.snapshot_chunk_pages;
        for client in clients {
            let (budget, queue, tables, filters, progress, rows_tx, addr) = (
                budget.clone(),
                queue.clone(),
                tables.clone(),
                filters.clone(),
                progress.clone(),
                rows_tx.clone(),
                addr.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let Ok(permit) = budget.clone().acquire_owned().await else {
                        return;
                    };
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some((index, k)) = next else {
                        return;
                    };
                    let count = progress[index]
                        .chunks
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let chunk = chunk_pages(k, count as u32, per_chunk);
                    let read = tables[index]
                        .read(&client, &addr, &chunk, filters[index].as_deref())
                        .await
                        .map(|rows| (index, k, rows.rows, permit));
                    if let Ok((_, _, rows, _)) = &read {
                        progress[index].read(rows.len());
                    }
                    let failed = read.is_err();
                    if rows_tx.send(read).await.is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(rows_tx);

        let cp = self.consistent_point;
        // The first streamed transaction may commit exactly at the
        // consistent point, with changes at (cp, 0…): the reads sit just
        // below it, so every streamed change is newer than every read.
        let at = Lsn(cp.0.saturating_sub(1));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        // Positions run on across the chunks' transactions: all share one
        // LSN, and (LSN, seq) must still name one row.
        let mut seq: u32 = 0;
        let mut rows_read: u64 = 0;
        let mut last_txn = None;
        // Sized for a full batch: growing one by doubling copies its
        // items over and over (they are large).
        let new_batch = || Vec::with_capacity(ITEMS_PER_BATCH + 2);
        let mut batch = new_batch();
        let cut_short = |rows_read, last_txn| SnapshotSummary {
            last_txn,
            rows: rows_read,
            tables: tables.len(),
            complete: false,
        };
        loop {
            let next = tokio::select! {
                next = rows_rx.recv() => next,
                _ = shutdown.cancelled() => return Ok(cut_short(rows_read, last_txn)),
            };
            let Some(read) = next else { break };
            let (index, chunk, rows, permit) = read?;
            let n = rows.len() as u64;
            if rows.is_empty() {
                let _ = handed_tx.send(Handed {
                    txn: None,
                    table: index,
                    chunk,
                    rows: 0,
                });
                continue;
            }
            let txn = next_txn_id();
            batch.push(SourceItem::Begin(TxnBegin {
                txn,
                xid: 0,
                commit_lsn: at,
                commit_time_micros: now,
            }));
            for row in rows {
                // Sent before a row is added, not after: the last row is
                // then still here when the loop ends, to be marked last.
                if batch.len() >= ITEMS_PER_BATCH
                    && out
                        .send(std::mem::replace(&mut batch, new_batch()))
                        .await
                        .is_err()
                {
                    return Ok(cut_short(rows_read, last_txn));
                }
                batch.push(SourceItem::Change(ChangeEvent {
                    op: Op::Read,
                    table: Some(tables[index].schema.clone()),
                    before: None,
                    after: Some(row),
                    message: None,
                    source: SourceInfo {
                        commit_lsn: at,
                        lsn: at,
                        xid: 0,
                        commit_time_micros: now,
                        seq,
                        snapshot: SnapshotKind::Initial,
                    },
                    txn,
                }));
                seq = seq.checked_add(1).ok_or_else(|| {
                    PgError::Config("an initial snapshot of more than 4 294 967 295 rows".into())
                })?;
            }
            batch.push(SourceItem::Commit(TxnCommit {
                txn,
                commit_lsn: at,
                end_lsn: cp,
            }));
            // Its rows are in batches now, which the pipeline's bounded
            // channels hold back: another chunk may be read.
            drop(permit);
            rows_read += n;
            last_txn = Some(txn);
            let _ = handed_tx.send(Handed {
                txn: Some(txn),
                table: index,
                chunk,
                rows: n,
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| PgError::Io(std::io::Error::other(e.to_string())))?;
        }
        if let Some(last) = batch.iter_mut().rev().find_map(|item| match item {
            SourceItem::Change(change) => Some(change),
            _ => None,
        }) {
            last.source.snapshot = SnapshotKind::Last;
        }
        let complete = batch.is_empty() || out.send(batch).await.is_ok();
        tracing::info!(slot = %cfg.slot, rows = rows_read, tables = tables.len(), "initial snapshot read");
        Ok(SnapshotSummary {
            last_txn,
            rows: rows_read,
            tables: tables.len(),
            complete,
        })
    }
}

/// Records each chunk handed on once the pipeline has retired its
/// transaction (every sink holds it). A failure to record is only logged:
/// it costs re-reading those chunks after a crash, nothing more.
async fn record_delivered(
    client: tokio_postgres::Client,
    addr: String,
    slot: String,
    plans: Vec<Planned>,
    mut handed: mpsc::UnboundedReceiver<Handed>,
    mut retired: watch::Receiver<Option<TxnId>>,
    shutdown: CancellationToken,
) {
    let mut waiting: Vec<Handed> = Vec::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            h = handed.recv(), if open => match h {
                Some(h) => waiting.push(h),
                None => open = false,
            },
            r = retired.changed(), if !waiting.is_empty() => if r.is_err() { return },
        }
        let last = *retired.borrow();
        let (ready, rest): (Vec<Handed>, Vec<Handed>) = waiting
            .drain(..)
            .partition(|h| h.txn.is_none_or(|t| last.is_some_and(|l| t <= l)));
        waiting = rest;
        let mut by_table: HashMap<usize, (Vec<i32>, i64)> = HashMap::new();
        for h in ready {
            let e = by_table.entry(h.table).or_default();
            e.0.push(h.chunk as i32);
            e.1 += h.rows as i64;
        }
        for (table, (chunks, rows)) in by_table {
            let plan = &plans[table];
            let table = (plan.schema.as_str(), plan.name.as_str());
            let recorded = record_chunks(&client, &addr, &slot, 0, table, plan.heap, &chunks, rows);
            if let Err(e) = recorded.await {
                tracing::warn!(error = %e, "could not record delivered snapshot chunks; a restart would read them again");
            }
        }
    }
}
