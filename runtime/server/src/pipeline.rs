//! Wiring one pipeline: source task → processor thread (transforms and
//! routing) → one task per sink, with the [`Checkpointer`] closing the loop
//! back to the source.
//!
//! ```text
//!  source task ──batches──▶ processor thread ──records──▶ sink task (one per sink)
//!      ▲                     transforms, router                │ write() durable
//!      └──── watermark ◀──── Checkpointer ◀──── delivered ─────┘
//! ```
//!
//! Every channel is bounded, so a slow sink slows the source instead of
//! growing memory. The processor (`processor.rs`) runs plugins on its own
//! OS thread because wasmtime calls are synchronous and may take up to
//! their deadline; new plugin versions reach it from the [`Deployer`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_core::{Destination, SourceItem};
use weir_postgres::{PgError, PostgresConfig, PostgresSource};

use crate::checkpoint::Checkpointer;
use crate::config::{Config, postgres_config};
use crate::delivery::{DeadLetters, open_sinks, sink_task};
use crate::halt::{HaltError, StartError};
use crate::plugins::load_plugins;
use crate::processor::Processor;
use crate::reload::Deployer;
use crate::routing::RouteRules;
use crate::stages::Stage;
use crate::status::{State, Status};

/// A started pipeline.
pub struct Pipeline {
    status: Arc<Status>,
    tasks: JoinSet<Result<(), HaltError>>,
    processor: Option<std::thread::JoinHandle<Result<(), HaltError>>>,
    processor_done: CancellationToken,
    source_stop: CancellationToken,
    watcher_stop: CancellationToken,
    abort: CancellationToken,
}

/// How long stopping waits for queued changes to drain before abandoning
/// them (they are redelivered after the next start).
const DRAIN_GRACE: Duration = Duration::from_secs(20);

impl Pipeline {
    /// Opens sinks, loads plugins, prepares the slot and starts streaming.
    /// Any failure here is reported before a single change is read. The
    /// plugins' deployer is published in `deployers` (the admin endpoint
    /// is up before the pipeline and finds it there) before the state
    /// turns to running.
    pub async fn start(
        config: Config,
        status: Arc<Status>,
        deployers: &OnceLock<Arc<Deployer>>,
    ) -> Result<Pipeline, StartError> {
        let sinks = open_sinks(&config).await?;
        let plugins = load_plugins(&config).await?;
        let pg_config = postgres_config(&config.source, &config.pipeline);
        let mut source = PostgresSource::prepare(pg_config.clone()).await?;
        source.share_progress(status.snapshot_progress().clone());
        source.share_health(status.slot_health().clone());
        let start = source.start_lsn();
        tracing::info!(slot = %config.source.slot, start_lsn = %start, "resuming from the slot's confirmed position");

        let checkpointer = Arc::new(Checkpointer::new(start));
        status.follow_watermark(checkpointer.subscribe());
        let capacity = config.pipeline.channel_batches;
        let mut tasks = JoinSet::new();

        let abort = CancellationToken::new();
        status.set_degraded_after(config.pipeline.degraded_after);
        // The dead-letter sink gets dead letters, not every change.
        let dead_letter = config.dead_letter.as_ref().map(|d| Destination {
            sink: d.sink.clone(),
            topic: d.topic.clone(),
        });
        if let Some(d) = &dead_letter {
            status.dead_letters.kept_from(&d.sink);
        }
        let mut sink_txs = Vec::new();
        let mut sink_index = HashMap::new();
        let mut sink_rxs = Vec::new();
        for sink in sinks {
            let (tx, rx) = mpsc::channel(capacity);
            sink_index.insert(sink.name().to_owned(), sink_txs.len());
            sink_txs.push(tx);
            sink_rxs.push((sink, rx));
        }
        for (sink, rx) in sink_rxs {
            // Records the dead-letter sink itself refuses have nowhere to go.
            let letters = dead_letter
                .as_ref()
                .filter(|d| d.sink != sink.name())
                .and_then(|d| {
                    sink_index.get(&d.sink).map(|&i| DeadLetters {
                        destination: d.clone(),
                        tx: sink_txs[i].clone(),
                    })
                });
            let caps = config.sinks[sink.name()].capabilities();
            tasks.spawn(sink_task(
                sink,
                caps,
                rx,
                letters,
                checkpointer.clone(),
                status.clone(),
                config.pipeline.max_retry_backoff,
                abort.clone(),
            ));
        }

        for (plugin, c) in plugins.transforms.iter().zip(&config.transforms) {
            status.plugins.register(
                plugin.name(),
                "transform",
                plugin.version(),
                plugin.contract(),
                c.on_failure,
            );
        }
        if let (Some(plugin), Some(c)) = (&plugins.router, &config.router) {
            status.plugins.register(
                plugin.name(),
                "router",
                plugin.version(),
                plugin.contract(),
                c.on_failure,
            );
        }
        status.plugins.set_engine(plugins.engine.clone());
        let (swap_tx, swaps) = crate::reload::swap_channel();
        let deployer = Arc::new(Deployer::new(&config, &plugins, swap_tx, status.clone()));
        let _ = deployers.set(deployer.clone());
        let watcher_stop = CancellationToken::new();
        if config.plugins.watch && deployer.has_plugins() {
            tasks.spawn(
                deployer
                    .clone()
                    .watch(config.plugins.poll_interval, watcher_stop.clone()),
            );
        }

        let routed_sinks = config
            .sinks
            .keys()
            .filter(|name| dead_letter.as_ref().is_none_or(|d| &d.sink != *name))
            .cloned();
        let (items_tx, items_rx) = mpsc::channel(capacity);
        // A version waiting while the source is idle takes over at once.
        deployer.wake_with(items_tx.downgrade());
        let processor = Processor {
            transforms: plugins
                .transforms
                .into_iter()
                .zip(&config.transforms)
                .map(|(p, c)| Stage::new(p, c.on_failure, &c.breaker))
                .collect(),
            router: plugins
                .router
                .zip(config.router.as_ref())
                .map(|(p, c)| Stage::new(p, c.on_failure, &c.breaker)),
            transform_tables: config.transforms.iter().map(|c| c.tables.clone()).collect(),
            router_tables: config.router.as_ref().and_then(|c| c.tables.clone()),
            transform_shadows: config.transforms.iter().map(|_| None).collect(),
            router_shadow: None,
            rules: RouteRules::new(&config.routes, routed_sinks),
            dead_letter,
            sink_names: config.sink_names(),
            sink_index,
            sink_txs,
            checkpointer: checkpointer.clone(),
            status: status.clone(),
            abort: abort.clone(),
            swaps,
            pending: Vec::new(),
            open: None,
        };
        let processor_done = CancellationToken::new();
        let done = processor_done.clone();
        let processor = std::thread::Builder::new()
            .name("weir-processor".into())
            .spawn(move || {
                let _done = done.drop_guard();
                processor.run(items_rx)
            })
            .map_err(StartError::Thread)?;

        let source_stop = CancellationToken::new();
        tasks.spawn(source_task(
            source,
            pg_config,
            items_tx,
            checkpointer,
            status.clone(),
            source_stop.clone(),
        ));
        if let Some(settings) = config.verify.clone() {
            // Beside the pipeline, not in its task set: a failed pass is
            // reported, it never halts the stream.
            tokio::spawn(crate::verify::continuous::run(
                Arc::new(config),
                settings,
                status.verify.clone(),
                status.snapshot_progress().clone(),
                watcher_stop.clone(),
            ));
        }
        status.set_state(State::Running);
        Ok(Pipeline {
            status,
            tasks,
            processor: Some(processor),
            processor_done,
            source_stop,
            watcher_stop,
            abort,
        })
    }

    /// A token that, cancelled, makes the pipeline stop delivering at once:
    /// sink writes in flight are abandoned and queued changes dropped
    /// (they were never acknowledged, so they are redelivered), as a
    /// leader that lost its lease must.
    pub fn fence_handle(&self) -> CancellationToken {
        self.abort.clone()
    }

    /// Runs until `shutdown` or a halt. On a halt, changes queued before
    /// the failure are still delivered; nothing from the failing change on.
    /// On shutdown the source stops reading and waits a while for what is
    /// queued to become durable, so the final acknowledgement covers it;
    /// whatever misses that window is delivered again after the next start.
    pub async fn wait(mut self, shutdown: CancellationToken) -> Result<(), HaltError> {
        let mut first_error = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.processor_done.cancelled() => {}
            Some(done) = self.tasks.join_next() => {
                if let Err(e) = flatten(done) {
                    first_error = Some(e);
                }
            }
        }
        if let Some(e) = &first_error {
            self.status.set_state(State::Halted(e.to_string()));
            tracing::error!(error = %e, "pipeline halted");
        }
        // Stop reading: the source closes its channel, the processor drains
        // and exits, the sink tasks drain and exit. A sink that is down
        // would keep that from ever finishing; after a grace period, queued
        // changes are abandoned (they were never acknowledged).
        self.source_stop.cancel();
        self.watcher_stop.cancel();
        let watchdog = {
            let abort = self.abort.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN_GRACE).await;
                tracing::warn!(grace = ?DRAIN_GRACE, "sinks did not drain in time; abandoning queued changes, which will be redelivered");
                abort.cancel();
            })
        };
        let processor = self.processor.take();
        let processor_result = tokio::task::spawn_blocking(move || match processor {
            Some(p) => p
                .join()
                .unwrap_or_else(|_| Err(HaltError::Internal("processor thread panicked".into()))),
            None => Ok(()),
        })
        .await
        .unwrap_or_else(|e| Err(HaltError::Internal(e.to_string())));
        if let Err(e) = processor_result {
            record(&self.status, &mut first_error, e);
        }
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = flatten(done) {
                record(&self.status, &mut first_error, e);
            }
        }
        watchdog.abort();
        match first_error {
            Some(e) => Err(e),
            None => {
                self.status.set_state(State::Stopped);
                Ok(())
            }
        }
    }
}

fn record(status: &Status, first: &mut Option<HaltError>, e: HaltError) {
    if first.is_none() {
        status.set_state(State::Halted(e.to_string()));
        tracing::error!(error = %e, "pipeline halted");
        *first = Some(e);
    } else {
        tracing::debug!(error = %e, "further error while halting");
    }
}

fn flatten(done: Result<Result<(), HaltError>, tokio::task::JoinError>) -> Result<(), HaltError> {
    done.unwrap_or_else(|e| Err(HaltError::Internal(format!("pipeline task failed: {e}"))))
}

/// Streams from Postgres, reconnecting after connection loss. The slot
/// resumes from the acknowledged position, so a reconnect redelivers
/// whatever was not yet durable.
async fn source_task(
    source: PostgresSource,
    config: PostgresConfig,
    out: mpsc::Sender<Vec<SourceItem>>,
    checkpointer: Arc<Checkpointer>,
    status: Arc<Status>,
    stop: CancellationToken,
) -> Result<(), HaltError> {
    let mut backoff = Duration::from_millis(200);
    // A slot or publication that vanished while Weir was connected must not
    // be silently re-created: a new slot starts at the current WAL position
    // and everything since the acknowledged one would be skipped.
    // (A slot the server invalidated is made again only if allowed to.)
    let may_create_slot = config.create_slot;
    let reconnect = PostgresConfig {
        create_slot: false,
        create_publication: false,
        ..config
    };
    let mut source = source;
    let progress = status.snapshot_progress().clone();
    let health = status.slot_health().clone();
    // initial_only with an interrupted snapshot: stream until the rest is
    // read by watermark chunks and delivered, then stop.
    let mut stream_stop = stop.clone();
    if let Some(snapshot) = source.take_initial_snapshot() {
        if !initial_snapshot(snapshot, &out, &checkpointer, &stop, &reconnect, &progress).await? {
            return Ok(());
        }
    } else if reconnect.snapshot == weir_postgres::SnapshotMode::InitialOnly {
        if !source.resumes_initial_snapshot() {
            tracing::info!(slot = %reconnect.slot, "snapshot = \"initial_only\": no initial snapshot is due (the slot already existed); nothing to do");
            return Ok(());
        }
        stream_stop = stop.child_token();
        let (cancel, progress) = (stream_stop.clone(), progress.clone());
        tokio::spawn(async move {
            while !progress.is_delivered() && !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if progress.is_delivered() {
                tracing::info!(
                    "snapshot = \"initial_only\": the resumed snapshot is delivered; stopping"
                );
            }
            cancel.cancel();
        });
    }
    let stop = stream_stop;
    let mut next = Some(source);
    loop {
        let source = match next.take() {
            Some(s) => s,
            None => {
                tokio::select! {
                    _ = stop.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                let prepared = match PostgresSource::prepare(reconnect.clone()).await {
                    Err(PgError::SlotLost { .. })
                        if may_create_slot
                            && reconnect.on_slot_lost == weir_postgres::OnSlotLost::Resnapshot =>
                    {
                        // A new slot, and every row again from its snapshot.
                        let fresh = PostgresConfig {
                            create_slot: true,
                            ..reconnect.clone()
                        };
                        match PostgresSource::prepare(fresh).await {
                            Ok(mut s) => {
                                s.share_progress(progress.clone());
                                s.share_health(health.clone());
                                if let Some(snapshot) = s.take_initial_snapshot()
                                    && !initial_snapshot(
                                        snapshot,
                                        &out,
                                        &checkpointer,
                                        &stop,
                                        &reconnect,
                                        &progress,
                                    )
                                    .await?
                                {
                                    break Ok(());
                                }
                                Ok(s)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                };
                match prepared {
                    Ok(mut s) => {
                        s.share_progress(progress.clone());
                        s.share_health(health.clone());
                        tracing::info!(start_lsn = %s.start_lsn(), "reconnected to Postgres");
                        backoff = Duration::from_millis(200);
                        s
                    }
                    // The old walsender may hold the slot until it notices
                    // the broken connection (up to wal_sender_timeout).
                    Err(e) if e.is_retryable() || matches!(e, PgError::SlotInUse { .. }) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "Postgres still unavailable");
                        continue;
                    }
                    Err(e) => break Err(e.into()),
                }
            }
        };
        match source
            .run(out.clone(), checkpointer.subscribe(), stop.clone())
            .await
        {
            Ok(()) => break Ok(()),
            Err(e) if stop.is_cancelled() => {
                tracing::debug!(error = %e, "source stopped with an error during shutdown");
                break Ok(());
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "lost the replication connection; reconnecting");
                // Queued behind everything the old stream produced, so the
                // processor abandons exactly the transactions it cut off.
                if out.send(vec![SourceItem::Restart]).await.is_err() {
                    break Ok(());
                }
            }
            Err(e) => break Err(e.into()),
        }
    }
}

/// Runs a new slot's initial snapshot and records it done once its last
/// transaction is durable at every sink. `Ok(false)`: stop here (stopped
/// part-way, shut down, or `initial_only`); else stream from the slot.
async fn initial_snapshot(
    snapshot: weir_postgres::snapshot::InitialSnapshot,
    out: &mpsc::Sender<Vec<SourceItem>>,
    checkpointer: &Checkpointer,
    stop: &CancellationToken,
    reconnect: &PostgresConfig,
    progress: &weir_postgres::snapshot::SnapshotProgress,
) -> Result<bool, HaltError> {
    let slot = reconnect.slot.clone();
    let summary = snapshot
        .run(out, checkpointer.subscribe_retired(), stop)
        .await?;
    if !summary.complete {
        // Stopped part-way: the next start resumes with the chunks not
        // yet delivered.
        return Ok(false);
    }
    // The slot is not read until the snapshot's last transaction is
    // durable at every sink (so nothing after the consistent point is
    // acknowledged before, not even by an idle keepalive).
    let mut retired = checkpointer.subscribe_retired();
    if let Some(last) = summary.last_txn {
        tokio::select! {
            biased;
            done = retired.wait_for(|r| r.is_some_and(|t| t >= last)) => {
                if done.is_err() {
                    return Ok(false);
                }
            }
            _ = stop.cancelled() => return Ok(false),
        }
    }
    // Delivered: a lost connection here must not make the next start
    // take the whole snapshot again.
    let mut tries = 0;
    while let Err(e) = weir_postgres::snapshot::record_finished(reconnect, &slot).await {
        tries += 1;
        if tries >= 10 || !e.is_retryable() {
            return Err(e.into());
        }
        tracing::warn!(error = %e, "could not record the snapshot done yet; retrying");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return Ok(false),
        }
    }
    progress.set_delivered();
    tracing::info!(slot = %slot, rows = summary.rows, tables = summary.tables, "initial snapshot delivered");
    if reconnect.snapshot == weir_postgres::SnapshotMode::InitialOnly {
        tracing::info!("snapshot = \"initial_only\": stopping after the snapshot");
        return Ok(false);
    }
    Ok(true)
}

/// Checks a configuration the way `weir check` does: parse and validate,
/// then compile and initialise every plugin. Connects to nothing.
pub async fn check(path: &Path) -> Result<Config, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    load_plugins(&config)
        .await
        .map_err(|e| format!("invalid configuration {}:\n  {e}", path.display()))?;
    Ok(config)
}
