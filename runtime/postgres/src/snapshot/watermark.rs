//! Snapshot chunks read while the slot streams, by the watermark method
//! of DBLog (Andreas Andreadis and Ioannis Papapanagiotou, 2020).
//!
//! For each chunk the *reader* (a task beside the stream, with its own SQL
//! connection) writes a low mark, selects the chunk, and writes a high
//! mark: transactional logical messages (`pg_logical_emit_message`,
//! prefix [`PREFIX`]), each its own transaction, so they sit in commit
//! order among the changes. The [`Engine`], inside the stream, watches the
//! decoded transactions: between the two marks it notes the key of every
//! change to the chunk's table; at the high mark's commit it places the
//! chunk's rows, less those keys, as `read` events of that transaction.
//!
//! Why that is exact: a row the stream changed between the marks may have
//! been selected before or after the change, so its selected version is
//! dropped and the change stands. Any other selected row is the version
//! current at the high mark: changes before the low mark come earlier in
//! the stream, changes after the high mark later. The slot never pauses,
//! and memory holds one chunk (the reader waits until its chunk is placed
//! before reading the next).
//!
//! One more condition makes it exact: every transaction before the low
//! mark must be visible to the chunk's read. A commit record is written
//! before its transaction becomes visible, so a transaction can precede
//! the mark in the stream and still be invisible to a read right after
//! it: for the whole wait of synchronous replication, or while its
//! backend is between flushing and marking the commit. The reader waits
//! out the first kind ([`Reader::settle`]); for the rest the engine
//! remembers the xids of the last [`RECENT`] transactions, and at the
//! high mark checks them against the read's snapshot: a chunk that missed
//! one is not placed but read again with new marks.
//!
//! A chunk is recorded delivered once the pipeline acknowledges the high
//! mark's transaction; a chunk cut off by a crash is read again later
//! with new marks, and marks without a chunk (from before a restart, or
//! from another pipeline's slot) are dropped from the stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use weir_core::{ChangeEvent, Lsn, Op, SnapshotKind, SourceInfo, SourceItem, TableSchema, Value};

use super::read::{Chunk, measure};
use super::state::{
    PendingTable, Planned, extend_plan, next_pending, record_chunks, record_failed, record_plan,
};
use super::{
    SnapshotProgress, TableProgress, chunk_count, chunk_pages, describe, session_settings,
};
use crate::PgError;
use crate::config::PostgresConfig;
use crate::setup::connect_sql;

/// The logical message prefix of the marks.
pub(crate) const PREFIX: &str = "weir.watermark";

/// How often the reader looks for requests when nobody wakes it.
const POLL: Duration = Duration::from_secs(5);

/// How many of the latest transactions' xids the engine keeps, to check
/// that a chunk's read saw every one before its low mark. A transaction
/// visible only after this many later ones committed would be missed.
const RECENT: usize = 4096;

/// What the reader tells the engine, always before the mark it concerns
/// is written, so the engine has it when the mark arrives.
pub(crate) enum Note {
    /// Chunk `id` of `table` is about to be read.
    Begin { id: u64, table: Arc<TableSchema> },
    /// Chunk `id` was given up before its high mark: close its window.
    Abort { id: u64 },
    /// Its rows, the snapshot they were read in, and where to say in
    /// which transaction they were placed (`None`: read it again).
    Rows {
        id: u64,
        rows: Vec<Vec<Value>>,
        /// Keys a repair asked for that have no row (each a row with only
        /// the key set): deletes, unless the stream changed them.
        absent: Vec<Vec<Value>>,
        seen: ReadSnapshot,
        placed: oneshot::Sender<Option<Lsn>>,
    },
}

/// Which transactions a chunk's read saw: Postgres's `pg_snapshot`
/// (`xmin:xmax:xip,…`, 64-bit xids).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadSnapshot {
    xmin: u64,
    xmax: u64,
    /// In progress when the snapshot was taken, sorted.
    xip: Vec<u64>,
}

impl ReadSnapshot {
    /// Parses `pg_current_snapshot()::text`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let mut xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        if parts.next().is_some() {
            return None;
        }
        xip.sort_unstable();
        Some(ReadSnapshot { xmin, xmax, xip })
    }

    /// Whether the committed transaction `xid` (32 bits, as the stream
    /// gives it) is visible. A recent xid is within 2³¹ of `xmax`, which
    /// gives it its epoch.
    fn sees_committed(&self, xid: u32) -> bool {
        let distance = i64::from(xid.wrapping_sub(self.xmax as u32) as i32);
        let Some(full) = self.xmax.checked_add_signed(distance) else {
            return true;
        };
        full < self.xmin || (full < self.xmax && self.xip.binary_search(&full).is_err())
    }
}

/// The stream's half: strips marks, keeps the window, places chunks.
pub(crate) struct Engine {
    /// `slot nonce`: marks with another token are not this process's.
    token: String,
    notes: mpsc::Receiver<Note>,
    announced: Option<(u64, Arc<TableSchema>)>,
    window: Option<Window>,
    /// Rows received for the open window's chunk.
    rows: Option<Received>,
    /// A high mark was seen in the current transaction: its rows go in
    /// before its commit.
    placing: Option<Placing>,
    /// The xids of the latest [`RECENT`] transactions, oldest first.
    recent: std::collections::VecDeque<u32>,
}

/// A chunk to place at the commit of its high mark's transaction, with
/// that transaction's xid and commit time (from the mark).
struct Placing {
    table: Arc<TableSchema>,
    chunk: Received,
    xid: u32,
    commit_time: i64,
}

/// A chunk's rows, as the reader sent them.
struct Received {
    id: u64,
    rows: Vec<Vec<Value>>,
    absent: Vec<Vec<Value>>,
    seen: ReadSnapshot,
    placed: oneshot::Sender<Option<Lsn>>,
}

/// The changes seen between a chunk's marks.
struct Window {
    id: u64,
    table: Arc<TableSchema>,
    /// The identity's column names: the key, or every column when the
    /// table has none.
    identity: Vec<String>,
    changed: HashSet<String>,
    truncated: bool,
    /// The xids of the transactions just before the low mark, which the
    /// read must have seen.
    before: Vec<u32>,
}

impl Window {
    fn new(id: u64, table: Arc<TableSchema>, before: Vec<u32>) -> Self {
        let mut identity: Vec<String> = table
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect();
        if identity.is_empty() {
            identity = table.columns.iter().map(|c| c.name.clone()).collect();
        }
        Window {
            id,
            table,
            identity,
            changed: HashSet::new(),
            truncated: false,
            before,
        }
    }

    /// The identity of `row` (laid out as `schema`'s columns), as text;
    /// `None` when `schema` lacks an identity column.
    fn identity_of(&self, schema: &TableSchema, row: &[Value]) -> Option<String> {
        let mut key = String::new();
        for name in &self.identity {
            let i = schema.columns.iter().position(|c| &c.name == name)?;
            key.push_str(&format!("{:?}\u{1f}", row.get(i)?));
        }
        Some(key)
    }

    fn observe(&mut self, c: &ChangeEvent) {
        let Some(schema) = &c.table else { return };
        if schema.id != self.table.id {
            return;
        }
        if c.op == Op::Truncate {
            self.truncated = true;
            return;
        }
        for row in [&c.before, &c.after].into_iter().flatten() {
            if let Some(key) = self.identity_of(schema, row) {
                self.changed.insert(key);
            }
        }
    }
}

impl Engine {
    /// An engine for the marks carrying `token` (see [`token`]).
    pub(crate) fn new(token: String, notes: mpsc::Receiver<Note>) -> Self {
        Engine {
            token,
            notes,
            announced: None,
            window: None,
            rows: None,
            placing: None,
            recent: std::collections::VecDeque::with_capacity(RECENT),
        }
    }

    /// Looks at the items decoded into `batch` from `from` on: marks are
    /// removed, changes inside a window noted, and a chunk's rows placed
    /// before the commit of its high mark's transaction.
    pub(crate) fn process(&mut self, batch: &mut Vec<SourceItem>, from: usize) {
        for item in batch.get(from..).unwrap_or_default() {
            // xid 0: a message outside any transaction, visible to all.
            if let SourceItem::Begin(b) = item
                && b.xid != 0
            {
                if self.recent.len() == RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(b.xid);
            }
        }
        let idle = self.window.is_none() && self.placing.is_none();
        let is_message = |i: &SourceItem| matches!(i, SourceItem::Change(c) if c.op == Op::Message);
        if from >= batch.len() || (idle && !batch[from..].iter().any(is_message)) {
            return;
        }
        let tail = batch.split_off(from);
        for item in tail {
            match &item {
                SourceItem::Change(c) => {
                    if let Some(mark) = c.message.as_ref().filter(|m| m.prefix == PREFIX) {
                        self.mark(&mark.content, &c.source);
                        continue;
                    }
                    if let Some(w) = &mut self.window {
                        w.observe(c);
                    }
                }
                SourceItem::Commit(commit) => {
                    if self.window.is_some() {
                        self.drain_notes();
                    }
                    // The high mark's transaction holds nothing else (the
                    // reader writes it alone): its positions are the rows'.
                    if let Some(p) = self.placing.take() {
                        batch.reserve(p.chunk.rows.len() + p.chunk.absent.len() + 1);
                        let reads = p
                            .chunk
                            .rows
                            .into_iter()
                            .map(|row| (Op::Read, None, Some(row)));
                        let deletes = p
                            .chunk
                            .absent
                            .into_iter()
                            .map(|key| (Op::Delete, Some(key), None));
                        for (seq, (op, before, after)) in reads.chain(deletes).enumerate() {
                            batch.push(SourceItem::Change(ChangeEvent {
                                op,
                                table: Some(p.table.clone()),
                                before,
                                after,
                                message: None,
                                source: SourceInfo {
                                    commit_lsn: commit.commit_lsn,
                                    lsn: commit.commit_lsn,
                                    xid: p.xid,
                                    commit_time_micros: p.commit_time,
                                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                                    snapshot: SnapshotKind::Incremental,
                                },
                                txn: commit.txn,
                            }));
                        }
                        let _ = p.chunk.placed.send(Some(commit.end_lsn));
                    }
                }
                SourceItem::Begin(_) | SourceItem::Restart => {}
            }
            batch.push(item);
        }
    }

    fn drain_notes(&mut self) {
        while let Ok(note) = self.notes.try_recv() {
            match note {
                Note::Begin { id, table } => {
                    self.announced = Some((id, table));
                    self.rows = None;
                }
                Note::Rows {
                    id,
                    rows,
                    absent,
                    seen,
                    placed,
                } => {
                    self.rows = Some(Received {
                        id,
                        rows,
                        absent,
                        seen,
                        placed,
                    })
                }
                Note::Abort { id } => {
                    if self.window.as_ref().is_some_and(|w| w.id == id) {
                        self.window = None;
                    }
                    if self.announced.as_ref().is_some_and(|a| a.0 == id) {
                        self.announced = None;
                    }
                    self.rows = None;
                }
            }
        }
    }

    fn mark(&mut self, content: &[u8], at: &SourceInfo) {
        let text = String::from_utf8_lossy(content);
        let Some(rest) = text
            .strip_prefix(self.token.as_str())
            .and_then(|r| r.strip_prefix(' '))
        else {
            return;
        };
        let mut parts = rest.split_whitespace();
        let (Some(kind), Some(id)) = (parts.next(), parts.next().and_then(|i| i.parse().ok()))
        else {
            return;
        };
        self.drain_notes();
        match kind {
            "low" => {
                self.window = match &self.announced {
                    Some((a, table)) if *a == id => Some(Window::new(
                        id,
                        table.clone(),
                        self.recent.iter().copied().collect(),
                    )),
                    _ => None,
                };
            }
            "high" => {
                if self.window.as_ref().is_none_or(|w| w.id != id) {
                    // Not the open chunk's (a stale mark): its rows, if
                    // any, are dropped and the reader hears of it.
                    if self.rows.as_ref().is_some_and(|r| r.id == id) {
                        self.rows = None;
                    }
                    return;
                }
                let Some(window) = self.window.take() else {
                    return;
                };
                let Some(mut chunk) = self.rows.take().filter(|r| r.id == id) else {
                    return;
                };
                if let Some(missed) = window
                    .before
                    .iter()
                    .find(|x| !chunk.seen.sees_committed(**x))
                {
                    tracing::debug!(
                        chunk = id,
                        xid = missed,
                        "a chunk's read missed a transaction before its low mark; reading it again"
                    );
                    let _ = chunk.placed.send(None);
                    return;
                }
                if window.truncated {
                    // The truncate deleted every key already.
                    chunk.rows.clear();
                    chunk.absent.clear();
                } else if !window.changed.is_empty() {
                    let schema = window.table.clone();
                    let unchanged = |r: &Vec<Value>| {
                        window
                            .identity_of(&schema, r)
                            .is_none_or(|k| !window.changed.contains(&k))
                    };
                    chunk.rows.retain(unchanged);
                    chunk.absent.retain(unchanged);
                }
                self.placing = Some(Placing {
                    table: window.table,
                    chunk,
                    xid: at.xid,
                    commit_time: at.commit_time_micros,
                });
            }
            _ => {}
        }
    }
}

/// What the marks of one stream of `slot` carry: the slot and a number
/// unique to this stream, so that marks left by an earlier stream, or
/// written for another slot, are told apart.
pub(crate) fn token(slot: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{slot} {:x}", nanos ^ (u64::from(std::process::id()) << 40))
}

/// A chunk placed, to record once acknowledged.
struct Placed {
    end_lsn: Lsn,
    table: PendingTable,
    chunk: u32,
    rows: u64,
    /// The heap of the cut the chunk belongs to: a record for an older
    /// cut must not land in a newer one.
    heap: i64,
    progress: Arc<TableProgress>,
    /// Told once the chunk is recorded (dropped if it could not be).
    recorded: oneshot::Sender<()>,
}

/// The reader's half: takes the tables still to read from
/// `weir.snapshot_tables`, one chunk at a time, until `shutdown`.
/// Connection failures are retried; a table that cannot be read (dropped,
/// a bad filter) is recorded failed and the next one taken.
pub(crate) async fn read_chunks(
    cfg: PostgresConfig,
    db_key: Arc<str>,
    token: String,
    notes: mpsc::Sender<Note>,
    acked: watch::Receiver<Lsn>,
    progress: Arc<SnapshotProgress>,
    shutdown: CancellationToken,
) {
    let addr = cfg.address();
    let (placed_tx, placed_rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record_acknowledged(
        cfg.clone(),
        placed_rx,
        acked,
        progress.clone(),
        shutdown.clone(),
    ));
    let ids = AtomicU64::new(1);
    let reader = Reader {
        cfg: &cfg,
        addr: &addr,
        db_key: &db_key,
        token: &token,
        notes: &notes,
        placed: &placed_tx,
        progress: &progress,
        ids: &ids,
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            o = reader.serve(&shutdown) => o,
        };
        match outcome {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "snapshot reader lost its connection");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    drop(placed_tx);
    let _ = recorder.await;
}

struct Reader<'a> {
    cfg: &'a PostgresConfig,
    addr: &'a str,
    db_key: &'a Arc<str>,
    token: &'a str,
    notes: &'a mpsc::Sender<Note>,
    placed: &'a mpsc::UnboundedSender<Placed>,
    progress: &'a Arc<SnapshotProgress>,
    ids: &'a AtomicU64,
}

/// Why a table's reading stopped.
enum Stop {
    /// The connection failed: retry with a new one.
    Connection(PgError),
    /// The table cannot be read: record it failed.
    Table(String),
    /// Its heap was rewritten (VACUUM FULL, CLUSTER, a rewriting ALTER):
    /// cut it again.
    Rewritten,
}

impl Reader<'_> {
    async fn serve(&self, shutdown: &CancellationToken) -> Result<(), PgError> {
        let client = connect_sql(self.cfg, self.addr).await?;
        client
            .batch_execute(&format!(
                "{} SET row_security = off; SET statement_timeout = 0;",
                session_settings()
            ))
            .await
            .map_err(|e| PgError::sql(self.addr, "setting up the snapshot reader", e))?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| PgError::sql(self.addr, "reading the server version", e))?
            .get(0);
        loop {
            let Some(table) = next_pending(&client, self.addr, &self.cfg.slot).await? else {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = self.progress.woken() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            };
            let failure = if version < 140_000 {
                Some(Stop::Table(
                    "snapshots while streaming need PostgreSQL 14 or later (logical messages in pgoutput)"
                        .into(),
                ))
            } else {
                self.table(&client, table.clone(), version).await.err()
            };
            match failure {
                None | Some(Stop::Rewritten) => {}
                Some(Stop::Connection(e)) => return Err(e),
                Some(Stop::Table(error)) => {
                    tracing::error!(
                        table = %format!("{}.{}", table.schema, table.name), request = table.request,
                        %error, "snapshot of a table failed"
                    );
                    record_failed(&client, self.addr, &self.cfg.slot, &table, &error).await?;
                    self.progress.fail(
                        &format!("{}.{}", table.schema, table.name),
                        table.request,
                        &error,
                    );
                    if table.request == 0
                        && super::state::finish_initial(&client, self.addr, &self.cfg.slot).await?
                    {
                        self.progress.set_delivered();
                    }
                }
            }
        }
    }

    /// Reads every chunk of `table` not yet delivered, each placed in the
    /// stream before the next is read.
    async fn table(&self, client: &Client, table: PendingTable, version: i32) -> Result<(), Stop> {
        let (schema, name) = (table.schema.as_str(), table.name.as_str());
        let qualified = format!("{schema}.{name}");
        let published = client
            .query_opt(
                if version >= 150_000 {
                    "SELECT attnames::text[], rowfilter FROM pg_publication_tables \
                     WHERE pubname = $1 AND schemaname = $2 AND tablename = $3"
                } else {
                    "SELECT NULL::text[], NULL::text FROM pg_publication_tables \
                     WHERE pubname = $1 AND schemaname = $2 AND tablename = $3"
                },
                &[&self.cfg.publication, &schema, &name],
            )
            .await
            .map_err(|e| stop(PgError::sql(self.addr, "reading a table's publication", e)))?;
        let Some(published) = published else {
            return Err(Stop::Table(format!(
                "{qualified} is no longer in publication {:?}",
                self.cfg.publication
            )));
        };
        let columns: Option<Vec<String>> = published.get(0);
        let row_filter: Option<String> = published.get(1);
        let shape = describe(
            client,
            self.addr,
            self.db_key,
            schema,
            name,
            columns.as_deref(),
        )
        .await
        .map_err(|e| match e {
            PgError::MissingTables { .. } => Stop::Table(format!("{qualified} no longer exists")),
            e => stop(e),
        })?;
        let filter = match (&row_filter, &table.filter) {
            (Some(a), Some(b)) => Some(format!("({a}) AND ({b})")),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        let (pages, heap) = measure(client, self.addr, shape.schema.id)
            .await
            .map_err(stop)?;
        // A repair's keys are one chunk, read by key wherever they lie.
        let needed = if table.keys.is_some() {
            1
        } else {
            chunk_count(pages, table.chunk_pages, true)
        };
        let (mut plan, mut done) = match table.plan.clone() {
            Some(plan) if plan.heap == heap => (plan, table.done.clone()),
            previous => {
                if previous.is_some() {
                    tracing::info!(table = %qualified, "the table was rewritten since it was cut into chunks; reading it whole again");
                }
                let plan = Planned {
                    schema: schema.to_owned(),
                    name: name.to_owned(),
                    heap,
                    chunk_pages: table.chunk_pages,
                    chunks: needed,
                };
                record_plan(
                    client,
                    self.addr,
                    &self.cfg.slot,
                    table.request,
                    std::slice::from_ref(&plan),
                )
                .await
                .map_err(stop)?;
                (plan, Vec::new())
            }
        };
        // Grown past its cut: more chunks, so that the last, open-ended
        // one does not read all the growth at once.
        let needed = if table.keys.is_some() {
            1
        } else {
            chunk_count(pages, plan.chunk_pages, true)
        };
        if needed > plan.chunks {
            extend_plan(client, self.addr, &self.cfg.slot, &table, needed)
                .await
                .map_err(stop)?;
            // The old last chunk, if delivered, read to the end then.
            plan.chunks = needed;
        }
        done.sort_unstable();
        let progress = self.progress.add(TableProgress::new(
            shape.schema.qualified_name(),
            table.request,
            shape.estimated_rows,
            u64::from(plan.chunks),
        ));
        progress
            .chunks_done
            .store(done.len() as u64, Ordering::Relaxed);
        tracing::info!(
            table = %qualified, request = table.request, chunks = plan.chunks,
            delivered = done.len(), "snapshot of a table while streaming"
        );
        let mut recording = Vec::new();
        let mut outcome = Ok(());
        for k in 0..plan.chunks {
            if done.binary_search(&(k as i32)).is_ok() {
                continue;
            }
            match self
                .chunk(
                    client,
                    &table,
                    &plan,
                    filter.as_deref(),
                    columns.as_deref(),
                    k,
                    &progress,
                )
                .await
            {
                Ok(recorded) => recording.push(recorded),
                Err(stop) => {
                    outcome = Err(stop);
                    break;
                }
            }
        }
        // Until its chunks are recorded the table still looks pending, and
        // taking it again would read them twice; a new cut (after a
        // rewrite) must not have them recorded into it either.
        for r in recording {
            let _ = r.await;
        }
        outcome
    }

    /// Reads chunk `k` between two marks and waits until the stream placed
    /// it; the receiver hears when it is recorded delivered.
    #[allow(clippy::too_many_arguments)]
    async fn chunk(
        &self,
        client: &Client,
        table: &PendingTable,
        plan: &Planned,
        filter: Option<&str>,
        columns: Option<&[String]>,
        k: u32,
        progress: &Arc<TableProgress>,
    ) -> Result<oneshot::Receiver<()>, Stop> {
        let qualified = format!("{}.{}", table.schema, table.name);
        let lost = || Stop::Connection(PgError::Io(std::io::Error::other("the stream stopped")));
        // Described per chunk: a column added or dropped since the last one
        // is read in the shape the stream now announces.
        let shape = describe(
            client,
            self.addr,
            self.db_key,
            &table.schema,
            &table.name,
            columns,
        )
        .await
        .map_err(|e| match e {
            PgError::MissingTables { .. } => Stop::Table(format!("{qualified} no longer exists")),
            e => stop(e),
        })?;
        // Read again, with new marks, when the engine finds the read
        // missed a transaction before the low mark (rare: see the module).
        let mut tries = 0u32;
        let (end_lsn, n) = loop {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            self.notes
                .send(Note::Begin {
                    id,
                    table: shape.schema.clone(),
                })
                .await
                .map_err(|_| lost())?;
            // Whatever ends this chunk early closes its window in the engine.
            let mut abort = AbortOnExit {
                notes: self.notes,
                id: Some(id),
            };
            self.emit(client, "low", id).await.map_err(stop)?;
            self.settle(client).await.map_err(stop)?;
            // The lock keeps the heap from being rewritten during the read;
            // the check after it, from having been rewritten since the cut.
            // Repeatable read: the snapshot reported is the read's.
            client
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ; LOCK TABLE {} IN ACCESS SHARE MODE",
                    shape.sql_name()
                ))
                .await
                .map_err(|e| stop(PgError::sql(self.addr, "locking a table to snapshot", e)))?;
            let read = async {
                if measure(client, self.addr, shape.schema.id).await?.1 != plan.heap {
                    return Ok(None);
                }
                let (rows, absent) = match &table.keys {
                    None => {
                        let chunk = chunk_pages(k, plan.chunks, plan.chunk_pages);
                        let rows = shape.read(client, self.addr, &chunk, filter).await?.rows;
                        (rows, Vec::new())
                    }
                    Some(keys) => {
                        let read = shape
                            .read(client, self.addr, &Chunk::Keys(keys.clone()), filter)
                            .await?;
                        let found: HashSet<&Vec<String>> = read.keys.iter().collect();
                        let absent = keys
                            .iter()
                            .filter(|k| !found.contains(k))
                            .map(|k| shape.key_row(k))
                            .collect::<Result<Vec<_>, String>>()
                            .map_err(PgError::Config)?;
                        (read.rows, absent)
                    }
                };
                let seen: String = client
                    .query_one("SELECT pg_current_snapshot()::text", &[])
                    .await
                    .map_err(|e| PgError::sql(self.addr, "reading a chunk's snapshot", e))?
                    .get(0);
                let seen = ReadSnapshot::parse(&seen).ok_or_else(|| PgError::Protocol {
                    addr: self.addr.to_owned(),
                    message: format!("pg_current_snapshot() gave {seen:?}"),
                })?;
                Ok(Some((rows, absent, seen)))
            }
            .await;
            let _ = client.batch_execute("COMMIT").await;
            // A rewrite: the next pass sees the new heap and cuts the table
            // again, once the chunks in flight are recorded under the old cut.
            let (rows, absent, seen) = read.map_err(stop)?.ok_or(Stop::Rewritten)?;
            let n = rows.len() + absent.len();
            let (placed_tx, placed_rx) = oneshot::channel();
            self.notes
                .send(Note::Rows {
                    id,
                    rows,
                    absent,
                    seen,
                    placed: placed_tx,
                })
                .await
                .map_err(|_| lost())?;
            self.emit(client, "high", id).await.map_err(stop)?;
            let placed = placed_rx.await.map_err(|_| lost())?;
            abort.id = None;
            if let Some(end_lsn) = placed {
                break (end_lsn, n);
            }
            tries += 1;
            if tries.is_multiple_of(10) {
                tracing::warn!(table = %qualified, chunk = k, tries, "a snapshot chunk keeps missing transactions committed before its low mark; reading it again");
            } else {
                tracing::info!(table = %qualified, chunk = k, "a snapshot chunk is read again: its read missed a transaction committed before its low mark");
            }
        };
        progress.read(n);
        let (recorded, recorded_rx) = oneshot::channel();
        let _ = self.placed.send(Placed {
            end_lsn,
            table: table.clone(),
            heap: plan.heap,
            chunk: k,
            rows: n as u64,
            progress: progress.clone(),
            recorded,
        });
        Ok(recorded_rx)
    }

    /// Waits until every transaction whose commit is already written (so
    /// before the low mark in the stream) is also visible, so that the
    /// chunk's read sees it. Commit records precede visibility, by the
    /// whole wait of synchronous replication; a transaction still in
    /// progress commits after the mark, inside the window, and is not
    /// waited for.
    async fn settle(&self, client: &Client) -> Result<(), PgError> {
        let sql = |e| PgError::sql(self.addr, "waiting for commits before a watermark", e);
        let snapshot: String = client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(sql)?
            .get(0);
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_snapshot_xip($1::text::pg_snapshot) x \
                     WHERE pg_xact_status(x::text::xid8) <> 'in progress' \
                       AND NOT pg_visible_in_snapshot(x, pg_current_snapshot())",
                    &[&snapshot],
                )
                .await
                .map_err(sql)?
                .get(0);
            if waiting == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn emit(&self, client: &Client, kind: &str, id: u64) -> Result<(), PgError> {
        client
            .execute(
                "SELECT pg_logical_emit_message(true, $1, $2)",
                &[&PREFIX, &format!("{} {kind} {id}", self.token)],
            )
            .await
            .map_err(|e| PgError::sql(self.addr, "writing a snapshot watermark", e))?;
        Ok(())
    }
}

/// A failure of the reader: a lost connection is retried with a new one;
/// anything else is the table's and fails it.
fn stop(e: PgError) -> Stop {
    if e.is_retryable() {
        Stop::Connection(e)
    } else {
        Stop::Table(e.to_string())
    }
}

/// Tells the engine a chunk was given up (closing its window), unless
/// disarmed by setting `id` to `None`.
struct AbortOnExit<'a> {
    notes: &'a mpsc::Sender<Note>,
    id: Option<u64>,
}

impl Drop for AbortOnExit<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.notes.try_send(Note::Abort { id });
        }
    }
}

/// Records each placed chunk once the pipeline acknowledged its
/// transaction. Failing to record costs re-reading the chunk after a
/// crash, so it is retried, then logged.
async fn record_acknowledged(
    cfg: PostgresConfig,
    mut placed: mpsc::UnboundedReceiver<Placed>,
    mut acked: watch::Receiver<Lsn>,
    progress: Arc<SnapshotProgress>,
    shutdown: CancellationToken,
) {
    let addr = cfg.address();
    let mut client: Option<Client> = None;
    while let Some(p) = tokio::select! {
        _ = shutdown.cancelled() => None,
        p = placed.recv() => p,
    } {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = acked.wait_for(|a| *a >= p.end_lsn) => if r.is_err() { return },
        }
        let table = (p.table.schema.as_str(), p.table.name.as_str());
        let mut recorded = None;
        for _ in 0..3 {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = connect_sql(&cfg, &addr).await.ok();
            }
            let Some(c) = &client else { continue };
            match record_chunks(
                c,
                &addr,
                &cfg.slot,
                p.table.request,
                table,
                p.heap,
                &[p.chunk as i32],
                p.rows as i64,
            )
            .await
            {
                Ok(complete) => {
                    recorded = Some(complete);
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "recording a snapshot chunk"),
            }
        }
        if recorded.is_some() {
            let _ = p.recorded.send(());
        }
        match recorded {
            Some(true) => {
                p.progress.finish();
                tracing::info!(table = %p.progress.table, request = p.table.request, "snapshot of a table delivered");
                if p.table.request == 0
                    && let Some(c) = &client
                    && super::state::initial_done(c, &addr, &cfg.slot)
                        .await
                        .unwrap_or(false)
                {
                    progress.set_delivered();
                    tracing::info!(slot = %cfg.slot, "initial snapshot delivered");
                }
            }
            Some(false) => {}
            None => tracing::warn!(
                table = %p.progress.table, chunk = p.chunk,
                "could not record a delivered snapshot chunk; a restart would read it again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::{Column, LogicalMessage, ReplicaIdentity, TxnBegin, TxnCommit, TxnId};

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: 7,
            version: 0,
            schema: "public".into(),
            name: "t".into(),
            columns: ["id", "v"]
                .iter()
                .map(|n| Column {
                    name: (*n).into(),
                    type_oid: 23,
                    type_name: "int4".into(),
                    type_modifier: -1,
                    key: *n == "id",
                })
                .collect(),
            replica_identity: ReplicaIdentity::Default,
        })
    }

    fn row(id: i64, v: i64) -> Vec<Value> {
        vec![Value::Int(id), Value::Int(v)]
    }

    fn txn(n: u64, lsn: u64, changes: Vec<ChangeEvent>) -> Vec<SourceItem> {
        let txn = TxnId(n);
        let mut items = vec![SourceItem::Begin(TxnBegin {
            txn,
            xid: n as u32,
            commit_lsn: Lsn(lsn),
            commit_time_micros: 0,
        })];
        for (seq, mut c) in changes.into_iter().enumerate() {
            c.txn = txn;
            c.source.seq = seq as u32;
            items.push(SourceItem::Change(c));
        }
        items.push(SourceItem::Commit(TxnCommit {
            txn,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 1),
        }));
        items
    }

    fn change(
        op: Op,
        table: &Arc<TableSchema>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> ChangeEvent {
        ChangeEvent {
            op,
            table: Some(table.clone()),
            before,
            after,
            message: None,
            source: SourceInfo {
                commit_lsn: Lsn(0),
                lsn: Lsn(0),
                xid: 0,
                commit_time_micros: 0,
                seq: 0,
                snapshot: Default::default(),
            },
            txn: TxnId(0),
        }
    }

    fn mark(token: &str, kind: &str, id: u64) -> ChangeEvent {
        ChangeEvent {
            op: Op::Message,
            message: Some(LogicalMessage {
                prefix: PREFIX.into(),
                content: format!("{token} {kind} {id}").into_bytes(),
            }),
            table: None,
            ..change(Op::Message, &table(), None, None)
        }
    }

    fn reads(items: &[SourceItem]) -> Vec<(u64, Vec<Value>)> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Change(c) if c.op == Op::Read => {
                    Some((c.txn.0, c.after.clone().unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    /// A read that saw every transaction of the tests (xids below 100).
    fn saw_all() -> ReadSnapshot {
        ReadSnapshot::parse("100:100:").unwrap()
    }

    fn feed(engine: &mut Engine, out: &mut Vec<SourceItem>, items: Vec<SourceItem>) {
        for item in items {
            let from = out.len();
            out.push(item);
            engine.process(out, from);
        }
    }

    #[tokio::test]
    async fn rows_changed_between_the_marks_are_left_to_the_stream() {
        let (tx, rx) = mpsc::channel(4);
        let mut engine = Engine::new("s 1".into(), rx);
        let token = "s 1";
        let t = table();
        let mut out = Vec::new();
        tx.send(Note::Begin {
            id: 5,
            table: t.clone(),
        })
        .await
        .unwrap();
        // Before the low mark: not in the window.
        feed(
            &mut engine,
            &mut out,
            txn(1, 10, vec![change(Op::Update, &t, None, Some(row(1, 10)))]),
        );
        feed(
            &mut engine,
            &mut out,
            txn(2, 20, vec![mark(token, "low", 5)]),
        );
        // Inside: an update of 2, a key change 3 → 30, a delete of 4, and
        // a change to another table with the same key values.
        let other = Arc::new(TableSchema {
            id: 8,
            ..(*t).clone()
        });
        feed(
            &mut engine,
            &mut out,
            txn(
                3,
                30,
                vec![
                    change(Op::Update, &t, None, Some(row(2, 20))),
                    change(Op::Update, &t, Some(row(3, 0)), Some(row(30, 0))),
                    change(Op::Delete, &t, Some(vec![Value::Int(4), Value::Null]), None),
                    change(Op::Update, &other, None, Some(row(5, 50))),
                ],
            ),
        );
        let (placed, placed_rx) = oneshot::channel();
        tx.send(Note::Rows {
            id: 5,
            rows: (1..=5).map(|i| row(i, 0)).collect(),
            absent: Vec::new(),
            seen: saw_all(),
            placed,
        })
        .await
        .unwrap();
        feed(
            &mut engine,
            &mut out,
            txn(4, 40, vec![mark(token, "high", 5)]),
        );
        assert_eq!(reads(&out), vec![(4, row(1, 0)), (4, row(5, 0))]);
        assert_eq!(placed_rx.await.unwrap(), Some(Lsn(41)));
        assert!(
            out.iter()
                .all(|i| !matches!(i, SourceItem::Change(c) if c.op == Op::Message)),
            "the marks are not delivered"
        );
        // Placed before its transaction's commit, with positions after its own.
        let at = out
            .iter()
            .position(|i| matches!(i, SourceItem::Change(c) if c.op == Op::Read))
            .unwrap();
        assert!(matches!(&out[at - 1], SourceItem::Begin(b) if b.txn == TxnId(4)));
        assert!(matches!(out.last(), Some(SourceItem::Commit(c)) if c.txn == TxnId(4)));
    }

    #[tokio::test]
    async fn a_repairs_keys_without_rows_become_deletes_unless_the_stream_changed_them() {
        let (tx, rx) = mpsc::channel(4);
        let mut engine = Engine::new("s 3".into(), rx);
        let token = "s 3";
        let t = table();
        let mut out = Vec::new();
        tx.send(Note::Begin {
            id: 1,
            table: t.clone(),
        })
        .await
        .unwrap();
        feed(
            &mut engine,
            &mut out,
            txn(1, 10, vec![mark(token, "low", 1)]),
        );
        // Key 8 is inserted between the marks: the stream's insert stands.
        feed(
            &mut engine,
            &mut out,
            txn(2, 20, vec![change(Op::Insert, &t, None, Some(row(8, 80)))]),
        );
        let key = |id| vec![Value::Int(id), Value::Null];
        let (placed, placed_rx) = oneshot::channel();
        tx.send(Note::Rows {
            id: 1,
            rows: vec![row(5, 50)],
            absent: vec![key(7), key(8), key(9)],
            seen: saw_all(),
            placed,
        })
        .await
        .unwrap();
        feed(
            &mut engine,
            &mut out,
            txn(3, 30, vec![mark(token, "high", 1)]),
        );
        assert_eq!(placed_rx.await.unwrap(), Some(Lsn(31)));
        type Placed = (Op, Option<Vec<Value>>, Option<Vec<Value>>, u32);
        let placed: Vec<Placed> = out
            .iter()
            .filter_map(|i| match i {
                SourceItem::Change(c) if c.txn == TxnId(3) => {
                    Some((c.op, c.before.clone(), c.after.clone(), c.source.seq))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            placed,
            vec![
                (Op::Read, None, Some(row(5, 50)), 0),
                (Op::Delete, Some(key(7)), None, 1),
                (Op::Delete, Some(key(9)), None, 2),
            ]
        );
    }

    #[tokio::test]
    async fn marks_of_other_runs_are_dropped_and_a_truncate_empties_the_chunk() {
        let (tx, rx) = mpsc::channel(4);
        let mut engine = Engine::new("s 2".into(), rx);
        let t = table();
        let mut out = Vec::new();
        // Marks written by an earlier process (another nonce): dropped.
        feed(
            &mut engine,
            &mut out,
            txn(1, 10, vec![mark("s 1", "low", 1), mark("s 1", "high", 1)]),
        );
        assert_eq!(out.len(), 2, "an empty transaction remains: {out:?}");
        tx.send(Note::Begin {
            id: 1,
            table: t.clone(),
        })
        .await
        .unwrap();
        feed(
            &mut engine,
            &mut out,
            txn(2, 20, vec![mark("s 2", "low", 1)]),
        );
        feed(
            &mut engine,
            &mut out,
            txn(3, 30, vec![change(Op::Truncate, &t, None, None)]),
        );
        let (placed, placed_rx) = oneshot::channel();
        tx.send(Note::Rows {
            id: 1,
            rows: vec![row(1, 1)],
            absent: Vec::new(),
            seen: saw_all(),
            placed,
        })
        .await
        .unwrap();
        feed(
            &mut engine,
            &mut out,
            txn(4, 40, vec![mark("s 2", "high", 1)]),
        );
        assert!(reads(&out).is_empty());
        assert_eq!(placed_rx.await.unwrap(), Some(Lsn(41)));
    }

    #[tokio::test]
    async fn a_chunk_whose_read_missed_a_transaction_before_its_low_mark_is_not_placed() {
        let (tx, rx) = mpsc::channel(4);
        let mut engine = Engine::new("s 3".into(), rx);
        let t = table();
        let mut out = Vec::new();
        // Transaction 7 deletes row 1 and precedes the low mark, but was
        // still in progress for the read (its backend had not yet marked
        // the commit): the read still has row 1.
        feed(
            &mut engine,
            &mut out,
            txn(
                7,
                10,
                vec![change(
                    Op::Delete,
                    &t,
                    Some(vec![Value::Int(1), Value::Null]),
                    None,
                )],
            ),
        );
        // Each try's marks are transactions n and n + 1.
        for (id, n, seen, read) in [(1, 8, "5:10:7", vec![1, 2]), (2, 10, "8:12:", vec![2])] {
            tx.send(Note::Begin {
                id,
                table: t.clone(),
            })
            .await
            .unwrap();
            feed(
                &mut engine,
                &mut out,
                txn(n, n * 10, vec![mark("s 3", "low", id)]),
            );
            let (placed, placed_rx) = oneshot::channel();
            tx.send(Note::Rows {
                id,
                rows: read.into_iter().map(|k| row(k, 0)).collect(),
                absent: Vec::new(),
                seen: ReadSnapshot::parse(seen).unwrap(),
                placed,
            })
            .await
            .unwrap();
            feed(
                &mut engine,
                &mut out,
                txn(n + 1, n * 10 + 10, vec![mark("s 3", "high", id)]),
            );
            let placed = placed_rx.await.unwrap();
            if id == 1 {
                assert_eq!(placed, None, "read again");
                assert!(reads(&out).is_empty(), "nothing placed: {out:?}");
            } else {
                assert_eq!(placed, Some(Lsn(111)));
            }
        }
        // The second read saw the delete (7 < xmin 8).
        assert_eq!(reads(&out), vec![(11, row(2, 0))]);
    }

    #[test]
    fn read_snapshots_tell_committed_xids_apart_across_epochs() {
        let s = ReadSnapshot::parse("4294967300:4294967310:4294967305,4294967301").unwrap();
        assert_eq!(s.xip, vec![4294967301, 4294967305], "sorted");
        // 32-bit xids: 4294967300 is 4 in epoch 1.
        assert!(s.sees_committed(3), "below xmin");
        assert!(s.sees_committed(1), "below xmin");
        assert!(s.sees_committed(u32::MAX), "the previous epoch's last");
        assert!(s.sees_committed(6));
        assert!(!s.sees_committed(5), "in progress");
        assert!(!s.sees_committed(9), "in progress");
        assert!(!s.sees_committed(14), "at or past xmax");
        assert!(!s.sees_committed(20));
        assert_eq!(ReadSnapshot::parse("1:2"), None);
        assert_eq!(ReadSnapshot::parse("1:2:x"), None);
        assert_eq!(ReadSnapshot::parse("1:2:3:4"), None);
    }
}
