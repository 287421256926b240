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
//! growing memory. The processor runs plugins on its own OS thread because
//! wasmtime calls are synchronous and may take up to their deadline.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_core::{
    ChangeEvent, Destination, RawMessage, Sink, SinkError, SinkPayload, SinkRecord, SourceItem,
    TxnId, Value,
};
use weir_postgres::{PgError, PostgresConfig, PostgresSource};
use weir_sinks::{FileSink, KafkaSink};
use weir_wasm::{
    EmitPayload, Outcome, PluginEngine, PluginError, PluginSpec, RouterInstance, RouterPlugin,
    TransformInstance, TransformPlugin, find_failing_event,
};

use crate::checkpoint::{AckError, Checkpointer, txn_runs};
use crate::config::{Config, PluginConfig, SinkConfig, SourceConfig, parse_table};
use crate::routing::RouteRules;
use crate::status::{State, Status};

/// Why the pipeline could not start. Nothing was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A sink could not be opened or reached. (Sink errors name the sink.)
    #[error("{error}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        error: SinkError,
    },
    /// A plugin could not be loaded or initialised.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Postgres is not ready for capture, or unreachable.
    #[error(transparent)]
    Source(#[from] PgError),
    /// The operating system refused a thread.
    #[error("cannot start the processor thread: {0}")]
    Thread(std::io::Error),
}

/// Why a running pipeline stopped without being asked to. Nothing past the
/// failing change was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum HaltError {
    /// A plugin trapped, timed out or ran out of memory on a change.
    #[error("plugin {plugin} failed on {event}: {error}")]
    PluginFailed {
        /// The plugin's name.
        plugin: String,
        /// The change it failed on.
        event: String,
        /// The failure.
        error: PluginError,
    },
    /// A plugin failed without it being tied to one change.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A transform returned `fail` for a change.
    #[error("plugin {plugin} rejected {event}: {message}")]
    PluginRejected {
        /// The plugin's name.
        plugin: String,
        /// The change it rejected.
        event: String,
        /// The plugin's message.
        message: String,
    },
    /// A plugin or rule sent a change to a sink that does not exist.
    #[error("{by} routed {event} to sink {sink:?}, which is not configured (configured: {known})")]
    UnknownSink {
        /// Who chose the destination.
        by: String,
        /// The change.
        event: String,
        /// The missing sink.
        sink: String,
        /// The configured sinks.
        known: String,
    },
    /// A sink failed in a way retrying cannot fix. (Sink errors name the sink.)
    #[error("{error}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        error: SinkError,
    },
    /// The source failed in a way reconnecting cannot fix.
    #[error(transparent)]
    Source(#[from] PgError),
    /// Acknowledgement bookkeeping failed: a bug.
    #[error(transparent)]
    Ack(#[from] AckError),
    /// A pipeline thread panicked: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Translates the `[source]` section for the Postgres crate.
pub fn postgres_config(s: &SourceConfig, max_batch: usize) -> PostgresConfig {
    PostgresConfig {
        host: s.host.clone(),
        port: s.port,
        user: s.user.clone(),
        password: s.password.clone(),
        dbname: s.database.clone(),
        application_name: "weir".into(),
        slot: s.slot.clone(),
        publication: s.publication.clone(),
        tables: s
            .tables
            .iter()
            .filter_map(|t| parse_table(t).ok())
            .collect(),
        all_tables: s.all_tables,
        create_slot: s.create_slot,
        create_publication: s.create_publication,
        binary: s.binary,
        status_interval: s.status_interval,
        slot_wait: s.slot_wait,
        max_batch,
    }
}

fn plugin_spec(p: &PluginConfig) -> PluginSpec {
    PluginSpec {
        name: p.display_name(),
        path: p.path.clone(),
        config: p.config_pairs(),
        memory_limit_bytes: p.memory_limit_mib * 1024 * 1024,
        call_timeout: p.timeout,
    }
}

/// Compiles and initialises every plugin of the configuration once, so a
/// bad plugin is reported before anything connects. Compilation is CPU
/// work; it runs off the async runtime.
pub async fn load_plugins(
    config: &Config,
) -> Result<(Vec<TransformPlugin>, Option<RouterPlugin>), PluginError> {
    let transforms: Vec<PluginSpec> = config.transforms.iter().map(plugin_spec).collect();
    let router = config.router.as_ref().map(plugin_spec);
    tokio::task::spawn_blocking(move || {
        let engine = PluginEngine::new()?;
        let mut loaded = Vec::new();
        for spec in transforms {
            let plugin = TransformPlugin::load(&engine, spec)?;
            plugin.instantiate()?;
            loaded.push(plugin);
        }
        let router = match router {
            Some(spec) => {
                let plugin = RouterPlugin::load(&engine, spec)?;
                plugin.instantiate()?;
                Some(plugin)
            }
            None => None,
        };
        Ok((loaded, router))
    })
    .await
    .expect("plugin loading panicked")
}

async fn open_sinks(config: &Config) -> Result<Vec<Box<dyn Sink>>, StartError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for (name, sink) in &config.sinks {
        let opened: Result<Box<dyn Sink>, SinkError> = match sink {
            SinkConfig::File(c) => FileSink::open(name, c).map(|s| Box::new(s) as _),
            SinkConfig::Kafka(c) => KafkaSink::connect(name, c.clone())
                .await
                .map(|s| Box::new(s) as _),
        };
        sinks.push(opened.map_err(|error| StartError::Sink {
            sink: name.clone(),
            error,
        })?);
    }
    Ok(sinks)
}

/// A started pipeline.
pub struct Pipeline {
    status: Arc<Status>,
    tasks: JoinSet<Result<(), HaltError>>,
    processor: Option<std::thread::JoinHandle<Result<(), HaltError>>>,
    processor_done: CancellationToken,
    source_stop: CancellationToken,
    abort: CancellationToken,
}

/// How long stopping waits for queued changes to drain before abandoning
/// them (they are redelivered after the next start).
const DRAIN_GRACE: Duration = Duration::from_secs(20);

impl Pipeline {
    /// Opens sinks, loads plugins, prepares the slot and starts streaming.
    /// Any failure here is reported before a single change is read.
    pub async fn start(config: Config, status: Arc<Status>) -> Result<Pipeline, StartError> {
        let sinks = open_sinks(&config).await?;
        let (transforms, router) = load_plugins(&config).await?;
        let pg_config = postgres_config(&config.source, config.pipeline.max_batch);
        let source = PostgresSource::prepare(pg_config.clone()).await?;
        let start = source.start_lsn();
        tracing::info!(slot = %config.source.slot, start_lsn = %start, "resuming from the slot's confirmed position");

        let checkpointer = Arc::new(Checkpointer::new(start, status.clone()));
        let capacity = config.pipeline.channel_batches;
        let mut tasks = JoinSet::new();

        let abort = CancellationToken::new();
        let mut sink_txs = Vec::new();
        let mut sink_index = HashMap::new();
        for sink in sinks {
            let (tx, rx) = mpsc::channel(capacity);
            sink_index.insert(sink.name().to_owned(), sink_txs.len());
            sink_txs.push(tx);
            tasks.spawn(sink_task(
                sink,
                rx,
                checkpointer.clone(),
                status.clone(),
                config.pipeline.max_retry_backoff,
                abort.clone(),
            ));
        }

        let (items_tx, items_rx) = mpsc::channel(capacity);
        let processor = Processor {
            transforms: transforms.into_iter().map(TransformStage::new).collect(),
            router: router.map(RouterStage::new),
            rules: RouteRules::new(&config.routes, config.sinks.keys().cloned()),
            sink_names: config.sink_names(),
            sink_index,
            sink_txs,
            checkpointer: checkpointer.clone(),
            status: status.clone(),
            abort: abort.clone(),
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
            source_stop.clone(),
        ));
        status.set_state(State::Running);
        Ok(Pipeline {
            status,
            tasks,
            processor: Some(processor),
            processor_done,
            source_stop,
            abort,
        })
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
    stop: CancellationToken,
) -> Result<(), HaltError> {
    let mut backoff = Duration::from_millis(200);
    // A slot or publication that vanished while Weir was connected must not
    // be silently re-created: a new slot starts at the current WAL position
    // and everything since the acknowledged one would be skipped.
    let reconnect = PostgresConfig {
        create_slot: false,
        create_publication: false,
        ..config
    };
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
                match PostgresSource::prepare(reconnect.clone()).await {
                    Ok(s) => {
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

/// Writes batches to one sink, retrying while it is unavailable, and
/// reports each durable batch to the checkpointer.
async fn sink_task(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Vec<SinkRecord>>,
    checkpointer: Arc<Checkpointer>,
    status: Arc<Status>,
    max_backoff: Duration,
    abort: CancellationToken,
) -> Result<(), HaltError> {
    let name = sink.name().to_owned();
    let counters = &status.sinks[&name];
    // Coalescing small batches that queued up while the sink was busy
    // amortises the per-write fsync or delivery round trip.
    const COALESCE_RECORDS: usize = 16_384;
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < COALESCE_RECORDS {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let written = tokio::select! {
                written = sink.write(&batch) => written,
                _ = abort.cancelled() => return Ok(()),
            };
            match written {
                Ok(()) => break,
                Err(error) if error.is_retryable() => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sink = %name, error = %error, retry_in = ?backoff, "sink write failed; retrying the batch");
                    counters.set_error(Some(error.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = abort.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(error) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(HaltError::Sink { sink: name, error });
                }
            }
        }
        counters.set_error(None);
        counters
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        checkpointer.delivered(&batch)?;
    }
    sink.close()
        .await
        .map_err(|error| HaltError::Sink { sink: name, error })
}

/// One transform of the chain, with its current instance. A trapped
/// instance is discarded and the next batch gets a fresh one.
struct TransformStage {
    plugin: TransformPlugin,
    instance: Option<TransformInstance>,
}

impl TransformStage {
    fn new(plugin: TransformPlugin) -> Self {
        TransformStage {
            plugin,
            instance: None,
        }
    }

    fn process(&mut self, batch: &[ChangeEvent]) -> Result<Vec<Outcome>, HaltError> {
        let instance = match &mut self.instance {
            Some(i) => i,
            None => self.instance.insert(self.plugin.instantiate()?),
        };
        match instance.process(batch) {
            Ok(outcomes) => Ok(outcomes),
            Err(error) => {
                self.instance = None;
                Err(isolate(self.plugin.name(), error, batch, |b| {
                    find_failing_event(&self.plugin, b)
                }))
            }
        }
    }
}

/// The router plugin and its current instance.
struct RouterStage {
    plugin: RouterPlugin,
    instance: Option<RouterInstance>,
}

impl RouterStage {
    fn new(plugin: RouterPlugin) -> Self {
        RouterStage {
            plugin,
            instance: None,
        }
    }

    fn route(&mut self, batch: &[ChangeEvent]) -> Result<Vec<Vec<Destination>>, HaltError> {
        let instance = match &mut self.instance {
            Some(i) => i,
            None => self.instance.insert(self.plugin.instantiate()?),
        };
        match instance.route(batch) {
            Ok(d) => Ok(d),
            Err(error) => {
                self.instance = None;
                let plugin = &self.plugin;
                Err(isolate(plugin.name(), error, batch, |b| {
                    weir_wasm::find_failing_route(plugin, b)
                }))
            }
        }
    }
}

/// Names the exact change a plugin failed on, re-running halves of the
/// batch on fresh instances.
fn isolate(
    plugin: &str,
    error: PluginError,
    batch: &[ChangeEvent],
    find: impl FnOnce(&[ChangeEvent]) -> Result<Option<usize>, PluginError>,
) -> HaltError {
    let event = match find(batch) {
        Ok(Some(i)) => describe(&batch[i]),
        Ok(None) => format!(
            "a batch of {} changes (the failure did not recur when the batch was re-run on a fresh instance)",
            batch.len()
        ),
        Err(e) => format!("a batch of {} changes (isolating failed: {e})", batch.len()),
    };
    HaltError::PluginFailed {
        plugin: plugin.to_owned(),
        event,
        error,
    }
}

/// A change, described for an operator.
pub fn describe(e: &ChangeEvent) -> String {
    let what = match &e.table {
        Some(t) => format!("{} on {}.{}", e.op.as_str(), t.schema, t.name),
        None => e.op.as_str().to_owned(),
    };
    let key: Vec<String> = e
        .key_values()
        .into_iter()
        .map(|(k, v)| format!("{k}={}", short_value(v)))
        .collect();
    let key = if key.is_empty() {
        String::new()
    } else {
        format!(" key {}", key.join(","))
    };
    format!(
        "{what}{key} (xid {}, commit LSN {}, change #{} of the transaction)",
        e.source.xid, e.source.commit_lsn, e.source.seq
    )
}

fn short_value(v: &Value) -> String {
    let s = match v {
        Value::Int(i) => i.to_string(),
        Value::Text(s) | Value::Numeric(s) | Value::Other(s) | Value::Json(s) => s.clone(),
        other => format!("{other:?}"),
    };
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(64).collect::<String>())
    } else {
        s
    }
}

/// Who chose a record's destination, named only if that destination is bad.
#[derive(Clone, Copy)]
enum ChosenBy {
    Transform,
    Router,
    Routes,
}

/// One item travelling through the transform chain.
enum Work {
    Change(ChangeEvent, Option<Destination>),
    Raw(RawMessage, TxnId, Option<Destination>),
}

/// Runs transforms and routing on the processor thread.
struct Processor {
    transforms: Vec<TransformStage>,
    router: Option<RouterStage>,
    rules: RouteRules,
    sink_names: String,
    sink_index: HashMap<String, usize>,
    sink_txs: Vec<mpsc::Sender<Vec<SinkRecord>>>,
    checkpointer: Arc<Checkpointer>,
    status: Arc<Status>,
    abort: CancellationToken,
}

impl Processor {
    fn run(mut self, mut rx: mpsc::Receiver<Vec<SourceItem>>) -> Result<(), HaltError> {
        while let Some(mut items) = rx.blocking_recv() {
            // A restart marker splits the batch: what came before it belongs
            // to the old stream, what follows to the new one.
            while let Some(i) = items.iter().position(|i| matches!(i, SourceItem::Restart)) {
                let rest = items.split_off(i + 1);
                items.pop();
                self.handle(items)?;
                self.checkpointer.update(|t| {
                    t.abandon_uncommitted();
                    Ok(())
                })?;
                items = rest;
            }
            self.handle(items)?;
        }
        Ok(())
    }

    fn handle(&mut self, items: Vec<SourceItem>) -> Result<(), HaltError> {
        let mut begins = Vec::new();
        let mut commits = Vec::new();
        let mut work = Vec::with_capacity(items.len());
        for item in items {
            match item {
                SourceItem::Begin(b) => begins.push(b.txn),
                SourceItem::Change(e) => work.push(Work::Change(e, None)),
                SourceItem::Commit(c) => commits.push((c.txn, c.end_lsn)),
                SourceItem::Restart => unreachable!("split off by Processor::run"),
            }
        }
        self.status
            .changes_in
            .fetch_add(work.len() as u64, Ordering::Relaxed);
        self.status
            .transactions_in
            .fetch_add(begins.len() as u64, Ordering::Relaxed);

        for i in 0..self.transforms.len() {
            work = self.transform(i, work)?;
        }
        let per_sink = self.route(work)?;

        // Count before sending: a sink may report delivery before this
        // thread runs again, and must never find the count missing.
        self.checkpointer.update(|t| {
            for txn in &begins {
                t.begin(*txn);
            }
            for records in &per_sink {
                for (txn, n) in txn_runs(records) {
                    t.dispatched(txn, n)?;
                }
            }
            for (txn, end) in &commits {
                t.commit(*txn, *end)?;
            }
            Ok(())
        })?;

        for (records, tx) in per_sink.into_iter().zip(&self.sink_txs) {
            if !records.is_empty() && tx.blocking_send(records).is_err() {
                if self.abort.is_cancelled() {
                    // Stopping: the rest is redelivered after the next start.
                    return Ok(());
                }
                return Err(HaltError::Internal(
                    "a sink task stopped while the pipeline was running".into(),
                ));
            }
        }
        Ok(())
    }

    /// Applies transform `i` to the changes that have no destination yet;
    /// items with a destination skip the rest of the chain.
    fn transform(&mut self, i: usize, work: Vec<Work>) -> Result<Vec<Work>, HaltError> {
        enum Slot {
            Batch,
            Fixed(Work),
        }
        let mut batch = Vec::with_capacity(work.len());
        let mut slots = Vec::with_capacity(work.len());
        for w in work {
            match w {
                Work::Change(e, None) => {
                    batch.push(e);
                    slots.push(Slot::Batch);
                }
                other => slots.push(Slot::Fixed(other)),
            }
        }
        if batch.is_empty() {
            return Ok(slots
                .into_iter()
                .filter_map(|s| match s {
                    Slot::Fixed(w) => Some(w),
                    Slot::Batch => None,
                })
                .collect());
        }
        let stage = &mut self.transforms[i];
        let outcomes = stage.process(&batch)?;
        let plugin = stage.plugin.name().to_owned();
        let mut results = batch.into_iter().zip(outcomes);
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let (event, outcome) = match slot {
                Slot::Fixed(w) => {
                    out.push(w);
                    continue;
                }
                Slot::Batch => results.next().expect("one outcome per change"),
            };
            match outcome {
                Outcome::Keep => out.push(Work::Change(event, None)),
                Outcome::Drop => {
                    self.status.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Replace(emits) => {
                    for emit in emits {
                        out.push(match emit.payload {
                            EmitPayload::Change(e) => Work::Change(e, emit.destination),
                            EmitPayload::Raw(m) => Work::Raw(m, event.txn, emit.destination),
                        });
                    }
                }
                Outcome::Fail { message, .. } => {
                    return Err(HaltError::PluginRejected {
                        plugin,
                        event: describe(&event),
                        message,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Splits work into one record list per sink, in order.
    fn route(&mut self, work: Vec<Work>) -> Result<Vec<Vec<SinkRecord>>, HaltError> {
        // Changes without a destination go to the router plugin as one
        // batch, moved out of `work` rather than copied; `None` marks the
        // place each one came from, so order is kept.
        let mut to_route = Vec::new();
        let mut slots = Vec::with_capacity(work.len());
        for w in work {
            match w {
                Work::Change(e, None) if self.router.is_some() => {
                    to_route.push(e);
                    slots.push(None);
                }
                other => slots.push(Some(other)),
            }
        }
        let chosen = match &mut self.router {
            Some(router) if !to_route.is_empty() => router.route(&to_route)?,
            _ => Vec::new(),
        };
        let mut routed = to_route.into_iter().zip(chosen);

        let mut per_sink: Vec<Vec<SinkRecord>> = vec![Vec::new(); self.sink_txs.len()];
        for slot in slots {
            let (payload, txn, dests, by) = match slot {
                None => {
                    let (e, d) = routed.next().expect("one destination list per change");
                    let txn = e.txn;
                    (
                        SinkPayload::Change(Arc::new(e)),
                        txn,
                        Cow::Owned(d),
                        ChosenBy::Router,
                    )
                }
                Some(Work::Change(e, Some(d))) => {
                    let txn = e.txn;
                    (
                        SinkPayload::Change(Arc::new(e)),
                        txn,
                        Cow::Owned(vec![d]),
                        ChosenBy::Transform,
                    )
                }
                Some(Work::Change(e, None)) => {
                    let d = self.rules.route(&e);
                    let txn = e.txn;
                    (SinkPayload::Change(Arc::new(e)), txn, d, ChosenBy::Routes)
                }
                Some(Work::Raw(m, txn, Some(d))) => (
                    SinkPayload::Raw(Arc::new(m)),
                    txn,
                    Cow::Owned(vec![d]),
                    ChosenBy::Transform,
                ),
                Some(Work::Raw(m, txn, None)) => (
                    SinkPayload::Raw(Arc::new(m)),
                    txn,
                    self.rules.route_untabled(),
                    ChosenBy::Routes,
                ),
            };
            if dests.is_empty() {
                self.status.unrouted.fetch_add(1, Ordering::Relaxed);
            }
            for d in dests.iter() {
                let Some(&i) = self.sink_index.get(&d.sink) else {
                    return Err(HaltError::UnknownSink {
                        by: match by {
                            ChosenBy::Transform => "a transform".to_owned(),
                            ChosenBy::Routes => "the routes".to_owned(),
                            ChosenBy::Router => self
                                .router
                                .as_ref()
                                .map(|r| format!("router {}", r.plugin.name()))
                                .unwrap_or_default(),
                        },
                        event: match &payload {
                            SinkPayload::Change(e) => describe(e),
                            SinkPayload::Raw(m) => {
                                format!("a raw message from commit LSN {}", m.source.commit_lsn)
                            }
                        },
                        sink: d.sink.clone(),
                        known: self.sink_names.clone(),
                    });
                };
                per_sink[i].push(SinkRecord {
                    topic: d.topic.clone(),
                    payload: payload.clone(),
                    txn,
                });
            }
        }
        Ok(per_sink)
    }
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
