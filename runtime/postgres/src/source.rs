//! The source: prepare once, then stream decoded transactions downstream
//! while reporting the acknowledged position back to Postgres.
//!
//! Two tasks share the replication socket. The *reader* (the `run` future
//! itself) reads frames, decodes them and hands batches to the pipeline;
//! when the pipeline applies backpressure it simply stops reading, and
//! TCP pushes back on the walsender. The *status writer* (a spawned task
//! owning the write half) sends standby status updates on its own
//! schedule, so the walsender keeps hearing from us — and does not hit
//! `wal_sender_timeout` — however long the pipeline is blocked.
//!
//! The flush position reported is the acknowledged LSN from the ack
//! tracker, never more, with one exception: when the stream is idle (no
//! transaction open in the decoder, and every transaction decoded so far
//! acknowledged), a keepalive's WAL end may be reported, so that an idle
//! slot (or one whose tables see no writes) does not pin WAL forever. That
//! is safe because any transaction decoded later commits at or after that
//! position, and Postgres only skips transactions that commit *before* the
//! confirmed position. The reported flush never moves backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use weir_core::{Lsn, SourceItem};

use crate::config::PostgresConfig;
use crate::conn::{Frame, FrameReader, FrameWriter, ReplConn, log_notice, parse_error_fields};
use crate::error::PgError;
use crate::pgoutput::Decoder;
use crate::setup::{self, connect_sql};
use crate::snapshot::watermark::{self, Engine};
use crate::snapshot::{InitialSnapshot, SnapshotProgress};
use crate::streamed::Streamed;
use crate::types::{self, Catalog};
use crate::watch::SlotHealth;

/// Acknowledgement changes within this window share one status update.
const ACK_COALESCE: Duration = Duration::from_millis(100);
/// How long a clean shutdown waits for the server to end the stream.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// How long a clean shutdown waits for the pipeline to acknowledge what
/// was already handed downstream, so the final status includes it.
const ACK_DRAIN: Duration = Duration::from_secs(10);
/// How often START_REPLICATION is retried while the slot is still held.
const SLOT_RETRY: Duration = Duration::from_millis(200);
/// The shortest silence after which the server is presumed gone.
const MIN_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A prepared Postgres source, ready to stream.
///
/// ```no_run
/// # async fn demo(config: weir_postgres::PostgresConfig) -> Result<(), weir_postgres::PgError> {
/// use tokio::sync::{mpsc, watch};
/// use weir_postgres::{CancellationToken, PostgresSource};
///
/// let source = PostgresSource::prepare(config).await?;
/// let (tx, mut rx) = mpsc::channel(16);
/// let (ack_tx, ack_rx) = watch::channel(source.start_lsn());
/// let shutdown = CancellationToken::new();
/// let task = tokio::spawn(source.run(tx, ack_rx, shutdown.clone()));
/// while let Some(batch) = rx.recv().await {
///     // ... deliver, then for each durable transaction in order:
///     // ack_tx.send_replace(commit.end_lsn);
/// #   let _ = (&batch, &ack_tx);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresSource {
    config: PostgresConfig,
    start_lsn: Lsn,
    db_key: Arc<str>,
    initial: Option<InitialSnapshot>,
    resuming: bool,
    /// In binary mode: `server_version_num` and the published types' forms.
    binary: Option<(u32, Catalog)>,
    progress: Arc<SnapshotProgress>,
    health: Arc<SlotHealth>,
}

impl PostgresSource {
    /// Checks the server and the role, makes sure the tables exist, creates
    /// the publication and the slot when missing (and allowed), and waits up
    /// to `slot_wait` for a slot held by another process.
    ///
    /// Never reads from the slot or moves its position. Errors name what is
    /// wrong; see [`PgError::is_retryable`].
    pub async fn prepare(config: PostgresConfig) -> Result<PostgresSource, PgError> {
        let prepared = setup::prepare(&config).await?;
        Ok(PostgresSource {
            config,
            start_lsn: prepared.start_lsn,
            db_key: prepared.db_key,
            initial: prepared.initial,
            resuming: prepared.resuming,
            binary: prepared.binary,
            progress: Arc::default(),
            health: Arc::default(),
        })
    }

    /// Reports snapshot progress into `progress` (kept across reconnects by
    /// the caller) and takes its wake-ups for new snapshot requests.
    pub fn share_progress(&mut self, progress: Arc<SnapshotProgress>) {
        if let Some(initial) = &mut self.initial {
            initial.share_progress(progress.clone());
        }
        self.progress = progress;
    }

    /// Reports the slot's lag, retained WAL and alarms into `health` (kept
    /// across reconnects by the caller) while streaming.
    pub fn share_health(&mut self, health: Arc<SlotHealth>) {
        self.health = health;
    }

    /// Whether an interrupted initial snapshot continues while this source
    /// streams (by watermark chunks); its progress is then delivered when
    /// [`SnapshotProgress::is_delivered`].
    pub fn resumes_initial_snapshot(&self) -> bool {
        self.resuming
    }

    /// The initial snapshot to take before [`run`](Self::run), when
    /// `prepare` created the slot with `snapshot` on (or made it again
    /// after a snapshot interrupted before its plan was recorded). Run it,
    /// wait until its last transaction is durable everywhere, then
    /// [`snapshot::record_finished`]; only then stream.
    ///
    /// [`snapshot::record_finished`]: crate::snapshot::record_finished
    pub fn take_initial_snapshot(&mut self) -> Option<InitialSnapshot> {
        self.initial.take()
    }

    /// The slot's `confirmed_flush_lsn`: streaming resumes here, and every
    /// transaction committed at or after it is delivered (again).
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The configuration this source was prepared with.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// Streams from [`start_lsn`](Self::start_lsn) until `shutdown` is
    /// cancelled, `out` is closed, or the connection fails.
    ///
    /// * `out` receives batches of items in commit order: each transaction
    ///   as `Begin`, its changes, `Commit`. A batch holds whatever complete
    ///   messages had already arrived, or arrived within `max_batch_delay`
    ///   of its first, at most `max_batch` items; it may end
    ///   mid-transaction. Transaction ids ([`weir_core::TxnId`]) come
    ///   from a process-wide counter: strictly increasing, never reused
    ///   across reconnects, not necessarily contiguous.
    /// * `acked` carries the end LSN of the newest transaction such that it
    ///   and every earlier one are durable. Changes are reported to the
    ///   server within ~100 ms, and at least every `status_interval`.
    /// * On `shutdown` the source stops reading, waits (up to 10 s, while
    ///   status updates go on) for `acked` to cover every transaction it
    ///   handed downstream, then sends a final status update and ends the
    ///   stream cleanly; the return is then `Ok(())`. When `out` is closed
    ///   it does the same without waiting: nobody downstream can acknowledge.
    ///
    /// After an error, call [`prepare`](Self::prepare) again to reconnect
    /// if [`PgError::is_retryable`]; the new source resumes from the slot's
    /// confirmed position, so unacknowledged transactions are redelivered.
    pub async fn run(
        self,
        out: mpsc::Sender<Vec<SourceItem>>,
        acked: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
    ) -> Result<(), PgError> {
        let cfg = &self.config;
        let Some(conn) = open_stream(cfg, self.start_lsn, &shutdown).await? else {
            return Ok(());
        };
        tracing::info!(
            addr = %conn.addr, slot = %cfg.slot, start = %self.start_lsn,
            binary = cfg.binary, streaming = cfg.streaming, "streaming from replication slot"
        );
        let ReplConn {
            mut reader, writer, ..
        } = conn;

        let received = Arc::new(AtomicU64::new(self.start_lsn.0));
        let (ka_tx, ka_rx) = watch::channel(KeepaliveState::default());
        let (finish_tx, finish_rx) = oneshot::channel();
        let mut writer_task = AbortOnDrop(tokio::spawn(status_writer(
            writer,
            StatusInputs {
                acked: acked.clone(),
                keepalives: ka_rx,
                received: received.clone(),
                finish: finish_rx,
                interval: cfg.status_interval,
                floor: self.start_lsn,
            },
        )));

        // Snapshot chunks read while streaming: the reader beside the
        // stream, the engine inside it.
        let (notes_tx, notes_rx) = mpsc::channel(4);
        let token = watermark::token(&cfg.slot);
        let engine = Engine::new(token.clone(), notes_rx);
        let reader_stop = shutdown.child_token();
        let _reader_stop = reader_stop.clone().drop_guard();
        let _reader = AbortOnDrop(tokio::spawn(watermark::read_chunks(
            cfg.clone(),
            self.db_key.clone(),
            token,
            notes_tx,
            acked.clone(),
            self.progress.clone(),
            reader_stop,
        )));

        let _watch = AbortOnDrop(tokio::spawn(crate::watch::watch_slot(
            cfg.clone(),
            self.health.clone(),
            shutdown.child_token(),
        )));

        let mut decoder = Decoder::new(self.db_key.clone());
        let mut server_version = 0;
        if let Some((version, catalog)) = self.binary {
            server_version = version;
            decoder = decoder.with_binary(version, catalog);
        }
        if cfg.streaming {
            let streamed = Streamed::for_slot(&cfg.spill_dir, &cfg.slot, cfg.streaming_memory)
                .map_err(|e| PgError::Config(format!("source.spill_dir: {e}")))?;
            decoder = decoder.with_streaming(streamed);
        }
        let mut stream = Stream {
            addr: cfg.address(),
            decoder,
            engine: Some(engine),
            out,
            acked,
            keepalives: ka_tx,
            received,
            slot: &cfg.slot,
            max_batch: cfg.max_batch,
            max_batch_delay: cfg.max_batch_delay,
            batch: Vec::new(),
            batch_due: None,
            read_timeout: (cfg.status_interval * 6).max(MIN_READ_TIMEOUT),
            cfg,
            server_version,
            catalog_client: None,
        };
        stream
            .run(&mut reader, &mut writer_task.0, &shutdown)
            .await?;

        // The pipeline still holds what was handed to it: let it finish, so
        // the final status covers it and a restart does not redeliver it.
        if !stream.out.is_closed() {
            let target = stream.decoder.last_commit_end();
            let mut acked = stream.acked.clone();
            let drained = timeout(ACK_DRAIN, acked.wait_for(|a| *a >= target)).await;
            if drained.is_err() {
                tracing::info!(
                    slot = %cfg.slot, %target,
                    "the pipeline did not acknowledge everything within {ACK_DRAIN:?}; the rest will be redelivered"
                );
            }
        }

        // Clean stop: final status and CopyDone from the writer while the
        // reader keeps reading (a walsender blocked on a full socket must
        // not wait on us), until the server has ended the stream: then it
        // has processed both.
        let _ = finish_tx.send(());
        let addr = stream.addr.clone();
        let ending =
            async { tokio::join!(join_writer(&addr, &mut writer_task.0), drain(&mut reader)) };
        match timeout(SHUTDOWN_DRAIN, ending).await {
            Ok((Ok(writer), ())) => writer.terminate().await,
            Ok((Err(e), ())) => return Err(e),
            Err(_) => tracing::warn!(
                slot = %cfg.slot,
                "the server did not end the replication stream within {SHUTDOWN_DRAIN:?}; closing"
            ),
        }
        tracing::info!(slot = %cfg.slot, "replication stream closed");
        Ok(())
    }
}

/// Connects and starts replication, retrying while the slot is still held
/// by a walsender that has not noticed its client is gone. `None` when
/// shutdown was requested meanwhile.
async fn open_stream(
    cfg: &PostgresConfig,
    start: Lsn,
    shutdown: &CancellationToken,
) -> Result<Option<ReplConn>, PgError> {
    let started = std::time::Instant::now();
    loop {
        let mut conn = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            c = ReplConn::connect(cfg) => c?,
        };
        match conn
            .start_replication(
                &cfg.slot,
                start,
                &cfg.publication,
                cfg.binary,
                cfg.streaming,
            )
            .await
        {
            Ok(()) => return Ok(Some(conn)),
            Err(PgError::Server { error, .. }) if error.code == "55006" => {
                conn.close().await;
                let waited = started.elapsed();
                if waited >= cfg.slot_wait {
                    return Err(PgError::SlotInUse {
                        addr: cfg.address(),
                        slot: cfg.slot.clone(),
                        pid: pid_from_message(&error.message),
                        waited,
                    });
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(SLOT_RETRY) => {}
                }
            }
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        }
    }
}

/// The PID in "replication slot \"x\" is active for PID 1234".
fn pid_from_message(msg: &str) -> Option<i32> {
    msg.rsplit(' ').next()?.parse().ok()
}

/// What the reader tells the status writer about keepalives.
#[derive(Copy, Clone, Debug, Default)]
struct KeepaliveState {
    /// Highest keepalive WAL end seen while the stream was idle.
    idle_flush: Lsn,
    /// Incremented for each keepalive that asked for an immediate reply.
    reply_seq: u64,
}

/// The flush position a keepalive allows when idle: its WAL end, if no
/// transaction is open and every decoded transaction is acknowledged.
fn idle_flush(in_txn: bool, last_commit_end: Lsn, acked: Lsn, wal_end: Lsn) -> Option<Lsn> {
    (!in_txn && acked >= last_commit_end).then_some(wal_end)
}

/// The position reported as flushed: what is acknowledged or idle-safe,
/// never lower than before, and never past what this stream received (a
/// defence against an acknowledgement for data that never arrived).
#[derive(Debug)]
struct FlushPolicy {
    reported: Lsn,
}

impl FlushPolicy {
    fn next(&mut self, acked: Lsn, idle_flush: Lsn, received: Lsn) -> Lsn {
        let allowed = acked.max(idle_flush).min(received);
        self.reported = self.reported.max(allowed);
        self.reported
    }
}

/// Aborts the status writer if `run` is dropped or returns early.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type WriterHandle = JoinHandle<Result<FrameWriter, PgError>>;

async fn join_writer(addr: &str, h: &mut WriterHandle) -> Result<FrameWriter, PgError> {
    match h.await {
        Ok(r) => r,
        Err(e) => Err(writer_stopped(addr, Err(e))),
    }
}

struct StatusInputs {
    acked: watch::Receiver<Lsn>,
    keepalives: watch::Receiver<KeepaliveState>,
    received: Arc<AtomicU64>,
    finish: oneshot::Receiver<()>,
    interval: Duration,
    floor: Lsn,
}

async fn send_status(
    w: &mut FrameWriter,
    i: &mut StatusInputs,
    policy: &mut FlushPolicy,
    reply: bool,
) -> Result<(), PgError> {
    let acked = *i.acked.borrow_and_update();
    let idle = i.keepalives.borrow_and_update().idle_flush;
    let received = Lsn(i.received.load(Ordering::Relaxed));
    let flush = policy.next(acked, idle, received);
    let write = received.max(flush);
    w.status_update(write, flush, flush, reply).await
}

/// Sends standby status updates: right away when a keepalive asks, soon
/// after `acked` moves, and every `interval` regardless. Periodic updates
/// ask the server for a reply, which the reader's read timeout relies on
/// to notice a dead connection. Returns the write half when told to
/// finish, after a final update and CopyDone.
async fn status_writer(mut w: FrameWriter, mut i: StatusInputs) -> Result<FrameWriter, PgError> {
    let mut policy = FlushPolicy { reported: i.floor };
    // Tell the server where we stand as soon as streaming starts.
    send_status(&mut w, &mut i, &mut policy, false).await?;
    let mut last_sent = Instant::now();
    let mut pending = false;
    let mut acked_open = true;
    let mut ka_open = true;
    let mut seen_reply = 0u64;
    loop {
        let reply;
        tokio::select! {
            biased;
            _ = &mut i.finish => {
                send_status(&mut w, &mut i, &mut policy, false).await?;
                w.copy_done().await?;
                return Ok(w);
            }
            r = i.keepalives.changed(), if ka_open => {
                if r.is_err() {
                    ka_open = false;
                    continue;
                }
                let seq = i.keepalives.borrow().reply_seq;
                if seq == seen_reply {
                    pending = true;
                    continue;
                }
                seen_reply = seq;
                reply = false;
            }
            // Timers before acks: a tracker acknowledging faster than this
            // loop turns must not starve the updates themselves.
            _ = sleep_until(last_sent + ACK_COALESCE), if pending => reply = false,
            _ = sleep_until(last_sent + i.interval) => reply = true,
            r = i.acked.changed(), if acked_open => {
                // A closed ack channel keeps its last value: still report it.
                acked_open = r.is_ok();
                pending = true;
                continue;
            }
        }
        send_status(&mut w, &mut i, &mut policy, reply).await?;
        last_sent = Instant::now();
        pending = false;
    }
}

/// The reader's state while streaming.
struct Stream<'a> {
    addr: String,
    decoder: Decoder,
    /// Places snapshot chunks read while streaming; `None` in a replay.
    engine: Option<Engine>,
    out: mpsc::Sender<Vec<SourceItem>>,
    acked: watch::Receiver<Lsn>,
    keepalives: watch::Sender<KeepaliveState>,
    received: Arc<AtomicU64>,
    slot: &'a str,
    max_batch: usize,
    max_batch_delay: Duration,
    batch: Vec<SourceItem>,
    /// When the batch being filled must be handed on, not full or not
    /// (`max_batch_delay` after its first item).
    batch_due: Option<Instant>,
    read_timeout: Duration,
    cfg: &'a PostgresConfig,
    /// `server_version_num`, for types looked up while streaming.
    server_version: u32,
    /// The SQL connection those lookups use, once one was needed.
    catalog_client: Option<tokio_postgres::Client>,
}

impl Stream<'_> {
    /// Streams until shutdown or `out` closes (`Ok`) or a failure (`Err`).
    async fn run(
        &mut self,
        reader: &mut FrameReader,
        writer: &mut WriterHandle,
        shutdown: &CancellationToken,
    ) -> Result<(), PgError> {
        // One timer for the batch being filled, set when its first item
        // arrives: not one per read while it waits.
        let batch_timer = sleep_until(Instant::now());
        tokio::pin!(batch_timer);
        loop {
            // Decode everything already buffered; never wait for more data
            // just to fill a batch.
            while let Some(frame) = reader.try_frame()? {
                self.learn_types(&frame).await?;
                self.frame(frame)?;
                // A committed streamed transaction goes downstream in
                // batches, before anything after it is decoded.
                while self.decoder.replaying() {
                    let from = self.batch.len();
                    let room = self.max_batch.saturating_sub(from);
                    self.decoder.replay(room, &mut self.batch)?;
                    if let Some(engine) = &mut self.engine {
                        engine.process(&mut self.batch, from);
                    }
                    if self.batch.len() >= self.max_batch && !self.send(writer, shutdown).await? {
                        return Ok(());
                    }
                }
                if self.batch.len() >= self.max_batch && !self.send(writer, shutdown).await? {
                    return Ok(());
                }
            }
            if !self.batch.is_empty() {
                let waits = !self.max_batch_delay.is_zero();
                if self.batch_due.is_none() {
                    let due = Instant::now() + self.max_batch_delay;
                    self.batch_due = Some(due);
                    if waits {
                        batch_timer.as_mut().reset(due);
                    }
                }
                if waits && !batch_timer.is_elapsed() {
                    // Room for more: wait for it, but no longer than due.
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => {
                            // What arrived goes on, as it would have without
                            // the wait, so a clean stop still delivers and
                            // acknowledges it (if there is room: a stop
                            // never waits for the pipeline to take more).
                            let _ = self.out.try_send(std::mem::take(&mut self.batch));
                            return Ok(());
                        }
                        r = &mut *writer => return Err(writer_stopped(&self.addr, r)),
                        _ = &mut batch_timer => {}
                        r = reader.fill() => r?,
                    }
                    continue;
                }
                if !self.send(writer, shutdown).await? {
                    return Ok(());
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                r = &mut *writer => return Err(writer_stopped(&self.addr, r)),
                r = timeout(self.read_timeout, reader.fill()) => match r {
                    Ok(r) => r?,
                    Err(_) => return Err(PgError::Connection {
                        addr: self.addr.clone(),
                        context: format!("streaming from slot {:?}", self.slot),
                        message: format!(
                            "nothing received for {:?} although status updates asked for replies; \
                             presuming the connection dead",
                            self.read_timeout
                        ),
                    }),
                },
            }
        }
    }

    /// Looks up the types a Relation message in `frame` names that the
    /// decoder does not know yet (binary mode only), on a SQL connection
    /// opened at the first need and kept.
    async fn learn_types(&mut self, frame: &Frame) -> Result<(), PgError> {
        let missing = match frame.body.split_first() {
            Some((b'w', rest)) if frame.tag == b'd' && rest.len() > 24 => {
                self.decoder.missing_types(&rest[24..])
            }
            _ => return Ok(()),
        };
        if missing.is_empty() {
            return Ok(());
        }
        if self.catalog_client.is_none() {
            self.catalog_client = Some(connect_sql(self.cfg, &self.addr).await?);
        }
        let client = self.catalog_client.as_ref().expect("connected above");
        let found = types::lookup(client, &self.addr, self.server_version, &missing).await?;
        self.decoder.learn(found);
        Ok(())
    }

    /// Hands the batch downstream. `Ok(false)` means stop: shutdown was
    /// requested or the receiver is gone.
    async fn send(
        &mut self,
        writer: &mut WriterHandle,
        shutdown: &CancellationToken,
    ) -> Result<bool, PgError> {
        // Size the next batch like this one: bursts stay bursty, and a
        // trickle of small transactions does not allocate big vectors.
        let cap = self.batch.len();
        let items = std::mem::replace(&mut self.batch, Vec::with_capacity(cap));
        self.batch_due = None;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Ok(false),
            r = &mut *writer => Err(writer_stopped(&self.addr, r)),
            r = self.out.send(items) => {
                if r.is_err() {
                    tracing::info!(slot = %self.slot, "downstream closed; stopping the source");
                }
                Ok(r.is_ok())
            }
        }
    }

    fn frame(&mut self, f: Frame) -> Result<(), PgError> {
        match f.tag {
            b'd' => self.copy_data(&f.body),
            b'E' => Err(PgError::Server {
                addr: self.addr.clone(),
                context: format!("streaming from slot {:?}", self.slot),
                error: Box::new(parse_error_fields(&f.body)),
            }),
            b'c' => Err(PgError::Connection {
                addr: self.addr.clone(),
                context: format!("streaming from slot {:?}", self.slot),
                message: "the server ended the replication stream".into(),
            }),
            b'N' | b'S' => {
                log_notice(&f);
                Ok(())
            }
            t => Err(PgError::Protocol {
                addr: self.addr.clone(),
                message: format!("unexpected message {:?} while streaming", t as char),
            }),
        }
    }

    fn copy_data(&mut self, body: &[u8]) -> Result<(), PgError> {
        let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
        match body.first() {
            // XLogData: start, server WAL end, send time, then the message.
            Some(b'w') if body.len() >= 25 => {
                let start = be64(&body[1..9]);
                self.received.fetch_max(start, Ordering::Relaxed);
                let from = self.batch.len();
                self.decoder
                    .decode(Lsn(start), &body[25..], &mut self.batch)?;
                if let Some(engine) = &mut self.engine {
                    engine.process(&mut self.batch, from);
                }
                Ok(())
            }
            // Primary keepalive: WAL end, send time, reply requested.
            Some(b'k') if body.len() >= 18 => {
                let wal_end = Lsn(be64(&body[1..9]));
                let reply = body[17] != 0;
                self.received.fetch_max(wal_end.0, Ordering::Relaxed);
                let idle = idle_flush(
                    self.decoder.in_txn(),
                    self.decoder.last_commit_end(),
                    *self.acked.borrow(),
                    wal_end,
                );
                self.keepalives.send_if_modified(|s| {
                    let mut changed = false;
                    if let Some(l) = idle.filter(|l| *l > s.idle_flush) {
                        s.idle_flush = l;
                        changed = true;
                    }
                    if reply {
                        s.reply_seq += 1;
                        changed = true;
                    }
                    changed
                });
                Ok(())
            }
            other => Err(PgError::Protocol {
                addr: self.addr.clone(),
                message: format!(
                    "malformed CopyData message (kind {:?}, {} bytes) in the replication stream",
                    other.map(|c| *c as char),
                    body.len()
                ),
            }),
        }
    }
}

fn writer_stopped(
    addr: &str,
    r: Result<Result<FrameWriter, PgError>, tokio::task::JoinError>,
) -> PgError {
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => PgError::Protocol {
            addr: addr.to_owned(),
            message: "status writer stopped unexpectedly".into(),
        },
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => PgError::Connection {
            addr: addr.to_owned(),
            context: "sending status updates".into(),
            message: e.to_string(),
        },
    }
}

/// Feeds `data`, as a server sends it after CopyBothResponse, through the
/// streaming reader's own framing, CopyData and keepalive handling and
/// decoder, without a connection: what a fuzzer or a replayed capture
/// needs. Returns the items decoded, or the first error; an incomplete
/// frame at the end is left unread, as the reader would wait for the rest.
pub(crate) fn replay_stream(data: &[u8], db_key: Arc<str>) -> Result<Vec<SourceItem>, PgError> {
    let mut reader = FrameReader::from_bytes(data, "replay");
    let (_, acked) = watch::channel(Lsn::ZERO);
    let cfg = PostgresConfig::default();
    let mut stream = Stream {
        addr: "replay".into(),
        decoder: Decoder::new(db_key),
        engine: None,
        out: mpsc::channel(1).0,
        acked,
        keepalives: watch::channel(KeepaliveState::default()).0,
        received: Arc::new(AtomicU64::new(0)),
        slot: "replay",
        max_batch: usize::MAX,
        max_batch_delay: Duration::ZERO,
        batch: Vec::new(),
        batch_due: None,
        read_timeout: MIN_READ_TIMEOUT,
        cfg: &cfg,
        server_version: 0,
        catalog_client: None,
    };
    while let Some(frame) = reader.try_frame()? {
        stream.frame(frame)?;
    }
    Ok(stream.batch)
}

/// Reads and discards until the server has answered CopyDone and is ready.
async fn drain(reader: &mut FrameReader) {
    while let Ok(f) = reader.next_frame().await {
        match f.tag {
            b'Z' => return,
            b'E' => {
                let e = parse_error_fields(&f.body);
                tracing::debug!("postgres while ending the stream: {e}");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_flush_only_when_nothing_is_in_flight() {
        // Open transaction: never.
        assert_eq!(idle_flush(true, Lsn(10), Lsn(10), Lsn(50)), None);
        // Decoded but unacknowledged transaction: never.
        assert_eq!(idle_flush(false, Lsn(10), Lsn(9), Lsn(50)), None);
        // Everything acknowledged: the keepalive's WAL end.
        assert_eq!(idle_flush(false, Lsn(10), Lsn(10), Lsn(50)), Some(Lsn(50)));
        // Nothing decoded yet in this run.
        assert_eq!(idle_flush(false, Lsn(0), Lsn(0), Lsn(50)), Some(Lsn(50)));
    }

    #[test]
    fn flush_never_goes_backwards_nor_beyond_what_is_allowed() {
        let mut p = FlushPolicy { reported: Lsn(100) };
        let rx = Lsn(1000);
        // An ack below the slot's start is not reported as a regression.
        assert_eq!(p.next(Lsn(0), Lsn(0), rx), Lsn(100));
        assert_eq!(p.next(Lsn(150), Lsn(0), rx), Lsn(150));
        assert_eq!(p.next(Lsn(150), Lsn(300), rx), Lsn(300));
        // A later, lower ack keeps the idle position already reported.
        assert_eq!(p.next(Lsn(200), Lsn(300), rx), Lsn(300));
        assert_eq!(p.next(Lsn(400), Lsn(300), rx), Lsn(400));
        // Never past what was received.
        assert_eq!(p.next(Lsn(5000), Lsn(0), rx), rx);
        assert_eq!(p.next(Lsn(5000), Lsn(0), Lsn(10)), rx);
    }

    /// A frame as the server sends it: tag, length, body.
    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn xlog_data(start: u64, message: &[u8]) -> Vec<u8> {
        let mut body = vec![b'w'];
        body.extend_from_slice(&start.to_be_bytes());
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(message);
        frame(b'd', &body)
    }

    #[test]
    fn replayed_stream_decodes_frames_and_skips_keepalives() {
        use crate::pgoutput::tests::wire;
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&[0; 16]);
        keepalive.push(1);
        let mut data = frame(b'd', &keepalive);
        data.extend(xlog_data(90, &wire::begin(100, 0, 7)));
        data.extend(frame(b'N', b"SNOTICE\0Mhello\0\0"));
        data.extend(xlog_data(100, &wire::commit(100, 110, 0)));
        // A frame cut short is left for a later read, as on a socket.
        let cut = xlog_data(120, &wire::begin(200, 0, 8));
        data.extend(&cut[..cut.len() - 1]);
        let items = replay_stream(&data, "replay-test".into()).unwrap();
        assert!(matches!(
            items.as_slice(),
            [SourceItem::Begin(b), SourceItem::Commit(c)] if b.xid == 7 && c.end_lsn == Lsn(110)
        ));

        // CopyData that is neither XLogData nor a keepalive is refused.
        let err = replay_stream(&frame(b'd', b"w short"), "replay-test".into()).unwrap_err();
        assert!(err.to_string().contains("malformed CopyData"), "{err}");
    }

    #[test]
    fn pid_in_slot_message() {
        assert_eq!(
            pid_from_message("replication slot \"s\" is active for PID 4242"),
            Some(4242)
        );
        assert_eq!(pid_from_message("something else"), None);
    }
}
