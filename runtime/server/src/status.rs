//! What the running pipeline reports about itself: its state, the last
//! error, and counters. Read by the admin API and by `weir run`'s exit code.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use weir_core::Lsn;
use weir_postgres::SlotHealth;
use weir_postgres::lease::LeaseClock;
use weir_postgres::snapshot::SnapshotProgress;
use weir_wasm::PluginEngine;

use crate::answers::ShadowReport;
use crate::config::FailurePolicy;
use crate::dead_letter::{DeadLetterRing, utc};
use crate::history::{History, Reading};

/// Lifecycle of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum State {
    /// Connecting sinks, loading plugins, preparing the slot.
    Starting,
    /// Streaming changes.
    Running,
    /// Stopped by an error that needs an operator; nothing past the failing
    /// change was acknowledged.
    Halted(String),
    /// Stopped on request.
    Stopped,
}

/// Counters for one sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Records made durable.
    pub records: AtomicU64,
    /// Batches made durable.
    pub batches: AtomicU64,
    /// Failed write attempts (each retried or fatal).
    pub errors: AtomicU64,
    /// Records the sink refused for good (dead-lettered).
    pub rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// When the sink's current run of failed writes began (and the wall
    /// clock then, for people).
    failing_since: Mutex<Option<(Instant, SystemTime)>>,
}

impl SinkCounters {
    /// Remembers the sink's newest failure; `None` after a success.
    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// The sink's failure since its last success, if any.
    pub fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a failed write; the first of a run starts the clock.
    pub fn failing(&self) {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| (Instant::now(), SystemTime::now()));
    }

    /// Records a successful write: the sink is healthy again.
    pub fn recovered(&self) {
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// How long the sink has been failing, if it is.
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(since, _)| since.elapsed())
    }

    /// When the sink's current run of failures began, if it is failing.
    pub fn failing_since(&self) -> Option<SystemTime> {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, at)| at)
    }
}

/// Shared status of one pipeline.
#[derive(Debug)]
pub struct Status {
    state: Mutex<State>,
    /// Changes received from the source.
    pub changes_in: AtomicU64,
    /// Transactions received from the source.
    pub transactions_in: AtomicU64,
    /// Changes dropped by a transform.
    pub dropped: AtomicU64,
    /// Changes that no route sent anywhere.
    pub unrouted: AtomicU64,
    /// The checkpointer's watermark, once the pipeline has one.
    watermark: OnceLock<watch::Receiver<Lsn>>,
    /// Snapshot progress (the initial snapshot, ad-hoc ones, backfills),
    /// shared with every source the pipeline prepares.
    snapshot: Arc<SnapshotProgress>,
    /// The slot's lag, retained WAL and alarms, as last read.
    slot: Arc<SlotHealth>,
    /// Per-sink counters, fixed at startup.
    pub sinks: BTreeMap<String, SinkCounters>,
    /// The plugins, their versions, failures and deploys.
    pub plugins: PluginsStatus,
    /// After how many milliseconds of failing a sink counts as degraded.
    degraded_after_ms: AtomicU64,
    /// With `[ha]`: whether this process leads (streams) or stands by.
    role: Mutex<Option<Role>>,
    /// With `[ha]`, while leading: until when the lease is trusted.
    lease: OnceLock<LeaseClock>,
    /// With `[verify]`: the latest verification of the sinks.
    pub verify: Arc<crate::verify::VerifyStatus>,
    /// The last hour of counters, for the console and the rates here.
    pub history: History,
    /// The newest dead letters, for the console.
    pub(crate) dead_letters: DeadLetterRing,
}

/// A process's part under `[ha]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Waiting for the leadership lock; streams nothing.
    Standby,
    /// Holds the lock and streams.
    Leader,
}

impl Status {
    /// A status for a pipeline with these sinks.
    pub fn new(sink_names: impl IntoIterator<Item = String>) -> Self {
        let sinks: BTreeMap<String, SinkCounters> = sink_names
            .into_iter()
            .map(|n| (n, SinkCounters::default()))
            .collect();
        Status {
            state: Mutex::new(State::Starting),
            changes_in: AtomicU64::new(0),
            transactions_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            watermark: OnceLock::new(),
            snapshot: Arc::default(),
            slot: Arc::default(),
            history: History::new(sinks.keys().cloned().collect()),
            sinks,
            plugins: PluginsStatus::default(),
            degraded_after_ms: AtomicU64::new(60_000),
            role: Mutex::new(None),
            lease: OnceLock::new(),
            verify: Arc::default(),
            dead_letters: DeadLetterRing::default(),
        }
    }

    /// The counters now, for [`History::record`].
    pub fn reading(&self) -> Reading {
        let slot = self.slot.reading();
        Reading {
            at_ms: unix_ms(SystemTime::now()),
            changes_in: self.changes_in.load(Ordering::Relaxed),
            acked: self.acked_lsn(),
            lag_bytes: slot.as_ref().map(|r| r.lag_bytes),
            lag_seconds: slot.as_ref().map(|r| r.lag_seconds),
            sink_records: self
                .sinks
                .values()
                .map(|c| c.records.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// What the pipeline is doing, in one word, and why when it is not
    /// plainly streaming: the console's headline.
    pub fn phase(&self) -> (&'static str, Option<String>) {
        let state = self.state();
        match state {
            State::Halted(reason) => return ("halted", Some(reason)),
            State::Stopped => return ("stopped", None),
            State::Starting | State::Running => {}
        }
        // A standby waits for the lock before its pipeline starts.
        if self.role() == Some(Role::Standby) {
            return (
                "standby",
                Some("another process holds the leadership lock; this one streams nothing".into()),
            );
        }
        if let Some((sink, failing)) = self.degraded() {
            let error = self.sinks[sink].error().unwrap_or_default();
            return (
                "degraded",
                Some(format!(
                    "sink {sink} failing for {}s: {error}",
                    failing.as_secs()
                )),
            );
        }
        if let Some(alarm) = self.slot.reading().and_then(|r| r.alarm) {
            return ("degraded", Some(alarm));
        }
        if state == State::Starting {
            return ("starting", None);
        }
        if self.snapshot.is_copying() {
            let copying = self
                .snapshot
                .tables()
                .iter()
                .filter(|t| !t.done.load(Ordering::Relaxed) && t.failure().is_none())
                .count();
            return (
                "snapshotting",
                Some(format!(
                    "{copying} tables being read while the slot streams"
                )),
            );
        }
        ("streaming", None)
    }

    /// Reports the watermark `watermark` receives as the acknowledged
    /// position (the pipeline's checkpointer; the first one given stays).
    pub fn follow_watermark(&self, watermark: watch::Receiver<Lsn>) {
        let _ = self.watermark.set(watermark);
    }

    /// The snapshot progress the sources report into, shown in the status
    /// and the metrics.
    pub fn snapshot_progress(&self) -> &Arc<SnapshotProgress> {
        &self.snapshot
    }

    /// Where the sources report the slot's readings.
    pub fn slot_health(&self) -> &Arc<SlotHealth> {
        &self.slot
    }

    /// The slot as `/status` shows it; `null` before the first reading.
    fn slot_json(&self) -> serde_json::Value {
        let Some(r) = self.slot.reading() else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "server_lsn": r.server_lsn.map(|l| l.to_string()),
            "lag_bytes": r.lag_bytes,
            "lag_seconds": r.lag_seconds,
            "retained_wal_bytes": r.retained_bytes,
            "wal_status": r.wal_status,
            "safe_wal_bytes": r.safe_wal_bytes,
            "alarm": r.alarm,
            "heartbeats": r.heartbeats,
        })
    }

    /// Snapshot progress as `/status` shows it: per table, rows read, the
    /// estimate, chunks, rows/s and the time left at that rate; `null`
    /// when no snapshot was taken.
    fn snapshot_json(&self) -> serde_json::Value {
        let progress = &self.snapshot;
        let Some(elapsed) = progress.elapsed() else {
            return serde_json::Value::Null;
        };
        let elapsed = elapsed.as_secs_f64();
        let tables: Vec<serde_json::Value> = progress
            .tables()
            .iter()
            .map(|t| {
                let rows = t.rows.load(Ordering::Relaxed);
                let chunks_done = t.chunks_done.load(Ordering::Relaxed);
                let chunks = t.chunks.load(Ordering::Relaxed);
                let done = t.done.load(Ordering::Relaxed);
                let elapsed = t.elapsed().as_secs_f64();
                let rate = if elapsed > 0.0 {
                    rows as f64 / elapsed
                } else {
                    0.0
                };
                let left = t
                    .estimated_rows
                    .filter(|_| chunks_done < chunks && rate > 0.0)
                    .map(|e| (e.saturating_sub(rows) as f64 / rate).round() as u64);
                let state = match (t.failure(), done) {
                    (Some(_), _) => "failed",
                    (None, true) => "delivered",
                    (None, false) if SnapshotProgress::is_queued(t) => "queued",
                    (None, false) => "copying",
                };
                serde_json::json!({
                    "table": t.table,
                    "request": t.request,
                    "state": state,
                    "error": t.failure(),
                    "rows": rows,
                    "estimated_rows": t.estimated_rows,
                    "chunks": chunks,
                    "chunks_done": chunks_done,
                    "rows_per_second": rate.round() as u64,
                    "eta_seconds": left,
                })
            })
            .collect();
        let rows: u64 = progress
            .tables()
            .iter()
            .map(|t| t.rows.load(Ordering::Relaxed))
            .sum();
        serde_json::json!({
            "state": if progress.is_copying() {
                "copying"
            } else if progress.tables().iter().any(|t| t.failure().is_some()) {
                "failed"
            } else {
                "delivered"
            },
            "initial_delivered": progress.is_delivered(),
            "rows": rows,
            "elapsed_seconds": elapsed.round() as u64,
            "tables": tables,
        })
    }

    /// The acknowledged source position; zero before the pipeline started.
    pub fn acked_lsn(&self) -> Lsn {
        self.watermark.get().map_or(Lsn::ZERO, |w| *w.borrow())
    }

    /// Sets how long a sink may fail before it counts as degraded.
    pub fn set_degraded_after(&self, after: Duration) {
        self.degraded_after_ms
            .store(after.as_millis() as u64, Ordering::Relaxed);
    }

    fn is_degraded(&self, c: &SinkCounters) -> Option<Duration> {
        let after = Duration::from_millis(self.degraded_after_ms.load(Ordering::Relaxed));
        c.failing_for().filter(|failing| *failing >= after)
    }

    /// The first sink that has been failing for longer than allowed, and
    /// for how long.
    pub fn degraded(&self) -> Option<(&str, Duration)> {
        self.sinks
            .iter()
            .find_map(|(name, c)| self.is_degraded(c).map(|d| (name.as_str(), d)))
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves to `state`, unless already halted (the first failure is the
    /// one an operator needs to see).
    pub fn set_state(&self, state: State) {
        let mut cur = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*cur, State::Halted(_)) {
            *cur = state;
        }
    }

    /// Records this process's part under `[ha]`.
    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = Some(role);
    }

    /// This process's part under `[ha]`; `None` without it. A leader
    /// whose lease is no longer trusted counts as standing by.
    pub fn role(&self) -> Option<Role> {
        let role = *self.role.lock().unwrap_or_else(|e| e.into_inner());
        match role {
            Some(Role::Leader) if !self.may_deliver() => Some(Role::Standby),
            r => r,
        }
    }

    /// Makes every sink write depend on `lease` being trusted.
    pub fn follow_lease(&self, lease: LeaseClock) {
        let _ = self.lease.set(lease);
    }

    /// Whether a sink may write now: always without `[ha]`, else while
    /// the lease is trusted.
    pub fn may_deliver(&self) -> bool {
        self.lease.get().is_none_or(LeaseClock::valid)
    }

    /// A JSON snapshot for `/status`.
    pub fn snapshot(&self) -> serde_json::Value {
        let (changes_per_second, sink_rates) = self.history.rates(RATE_WINDOW_MS);
        let sinks: serde_json::Map<String, serde_json::Value> = self
            .sinks
            .iter()
            .zip(sink_rates)
            .map(|((name, c), rate)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "records": c.records.load(Ordering::Relaxed),
                        "records_per_second": rate,
                        "failing_since": c.failing_since().map(utc),
                        "batches": c.batches.load(Ordering::Relaxed),
                        "errors": c.errors.load(Ordering::Relaxed),
                        "rejected": c.rejected.load(Ordering::Relaxed),
                        "last_error": c.error(),
                        "degraded": self.is_degraded(c).is_some(),
                    }),
                )
            })
            .collect();
        let (phase, why) = self.phase();
        serde_json::json!({
            "status": self.state(),
            "pipeline": { "state": phase, "reason": why },
            "acked_lsn": self.acked_lsn().to_string(),
            "changes_in": self.changes_in.load(Ordering::Relaxed),
            "changes_per_second": changes_per_second,
            "transactions_in": self.transactions_in.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "unrouted": self.unrouted.load(Ordering::Relaxed),
            "sinks": sinks,
            "plugins": self.plugins.snapshot(),
            "snapshot": self.snapshot_json(),
            "verify": self.verify.json(),
            "slot": self.slot_json(),
            "ha": self.role().map(|role| serde_json::json!({ "role": role })),
            "dead_letters": {
                "total": self.dead_letters.total(),
                "kept": self.dead_letters.kept(),
            },
        })
    }

    /// Prometheus text exposition for `/metrics`.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let up = matches!(self.state(), State::Running | State::Starting);
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "weir_up",
            "1 while the pipeline runs, 0 when halted or stopped.",
            up as u64,
        );
        if let Some(role) = self.role() {
            gauge(
                "weir_ha_leader",
                "1 while this process holds the leadership lock and streams, 0 while it stands by.",
                (role == Role::Leader) as u64,
            );
        }
        gauge(
            "weir_acked_lsn",
            "Acknowledged source position.",
            self.acked_lsn().0,
        );
        gauge(
            "weir_changes_in_total",
            "Changes received from the source.",
            self.changes_in.load(Ordering::Relaxed),
        );
        gauge(
            "weir_transactions_in_total",
            "Transactions received from the source.",
            self.transactions_in.load(Ordering::Relaxed),
        );
        gauge(
            "weir_dropped_total",
            "Changes dropped by transforms.",
            self.dropped.load(Ordering::Relaxed),
        );
        gauge(
            "weir_unrouted_total",
            "Changes no route sent anywhere.",
            self.unrouted.load(Ordering::Relaxed),
        );
        for (metric, help) in [
            (
                "weir_sink_records_total",
                "Records made durable by the sink.",
            ),
            (
                "weir_sink_errors_total",
                "Failed write attempts of the sink.",
            ),
            (
                "weir_sink_rejected_total",
                "Records the sink refused for good, sent to the dead-letter sink.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (name, c) in &self.sinks {
                let v = match metric {
                    "weir_sink_records_total" => &c.records,
                    "weir_sink_errors_total" => &c.errors,
                    _ => &c.rejected,
                };
                let _ = writeln!(
                    out,
                    "{metric}{{sink=\"{name}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_sink_degraded 1 while the sink has been failing for longer than pipeline.degraded_after.\n# TYPE weir_sink_degraded gauge"
        );
        for (name, c) in &self.sinks {
            let _ = writeln!(
                out,
                "weir_sink_degraded{{sink=\"{name}\"}} {}",
                self.is_degraded(c).is_some() as u8
            );
        }
        if self.snapshot.elapsed().is_some() {
            let progress = &self.snapshot;
            let tables = progress.tables();
            for (metric, help) in [
                (
                    "weir_snapshot_rows",
                    "Rows of the table the initial snapshot has read.",
                ),
                (
                    "weir_snapshot_rows_estimated",
                    "The table's estimated rows (pg_class.reltuples; -1: never analyzed).",
                ),
                ("weir_snapshot_chunks", "Chunks the table is read in."),
                ("weir_snapshot_chunks_done", "Chunks of the table read."),
            ] {
                let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
                for t in &tables {
                    let v: i128 = match metric {
                        "weir_snapshot_rows" => t.rows.load(Ordering::Relaxed).into(),
                        "weir_snapshot_rows_estimated" => t.estimated_rows.map_or(-1, i128::from),
                        "weir_snapshot_chunks" => t.chunks.load(Ordering::Relaxed).into(),
                        _ => t.chunks_done.load(Ordering::Relaxed).into(),
                    };
                    let _ = writeln!(
                        out,
                        "{metric}{{table=\"{}\",request=\"{}\"}} {v}",
                        label(&t.table),
                        t.request
                    );
                }
            }
            let _ = writeln!(
                out,
                "# HELP weir_snapshot_delivered 1 once every row of the initial snapshot is durable at every sink.\n# TYPE weir_snapshot_delivered gauge\nweir_snapshot_delivered {}",
                progress.is_delivered() as u8
            );
        }
        if let Some(r) = self.slot.reading() {
            for (name, help, v) in [
                (
                    "weir_slot_lag_bytes",
                    "WAL written on the server and not yet acknowledged by every sink.",
                    r.lag_bytes as f64,
                ),
                (
                    "weir_slot_lag_seconds",
                    "How long the newest acknowledged WAL waited to be acknowledged (flush_lag).",
                    r.lag_seconds,
                ),
                (
                    "weir_slot_retained_wal_bytes",
                    "WAL the server keeps for the slot.",
                    r.retained_bytes as f64,
                ),
                (
                    "weir_slot_safe_wal_bytes",
                    "WAL that may still be written before the server invalidates the slot (-1: no limit).",
                    r.safe_wal_bytes.map_or(-1.0, |b| b as f64),
                ),
                (
                    "weir_slot_alarm",
                    "1 while the slot holds back too much WAL or is close to being invalidated.",
                    f64::from(u8::from(r.alarm.is_some())),
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            }
        }
        self.plugins.metrics(&mut out);
        self.verify.metrics(&mut out);
        out
    }
}

/// The window `/status` averages its rates over.
const RATE_WINDOW_MS: u64 = 10_000;

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A Prometheus label value: `\`, `"` and line ends escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What one plugin has been through.
#[derive(Clone, Debug, Serialize)]
pub struct PluginState {
    /// `transform` or `router`.
    pub kind: &'static str,
    /// The running version: the first 12 hex digits of its SHA-256.
    pub version: String,
    /// A validated new version waiting for a transaction boundary.
    pub pending_version: Option<String>,
    /// The `weir:cdc` contract version it was built for.
    pub contract: Option<String>,
    /// Its failure policy.
    pub on_failure: &'static str,
    /// Changes left out after it failed on them.
    pub skipped: u64,
    /// Changes sent to the dead-letter sink after it failed on them.
    pub dead_lettered: u64,
    /// New versions accepted.
    pub deploys: u64,
    /// New versions refused as invalid.
    pub refused: u64,
    /// Why the last refused version was refused.
    pub last_refusal: Option<String>,
    /// Most changes per call, after calls failed for their size; `None`
    /// while batches are not cut.
    pub per_call: Option<usize>,
    /// A shadow version beside it: its state and counts here, its samples
    /// at `GET /plugins/NAME/shadow`.
    #[serde(serialize_with = "shadow_summary")]
    pub shadow: Option<Arc<ShadowReport>>,
}

fn shadow_summary<S: serde::Serializer>(
    shadow: &Option<Arc<ShadowReport>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize as _;
    shadow.as_ref().map(|s| s.summary()).serialize(serializer)
}

/// The plugins of the pipeline, as reported by `/status` and `/metrics`.
#[derive(Default)]
pub struct PluginsStatus {
    states: Mutex<BTreeMap<String, PluginState>>,
    engine: OnceLock<PluginEngine>,
}

impl fmt::Debug for PluginsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginsStatus")
            .field("states", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl PluginsStatus {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PluginState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut PluginState)) {
        if let Some(state) = self.lock().get_mut(name) {
            f(state);
        }
    }

    /// Records a loaded plugin.
    pub fn register(
        &self,
        name: &str,
        kind: &'static str,
        version: &str,
        contract: Option<&semver::Version>,
        on_failure: FailurePolicy,
    ) {
        self.lock().insert(
            name.to_owned(),
            PluginState {
                kind,
                version: version.to_owned(),
                pending_version: None,
                contract: contract.map(ToString::to_string),
                on_failure: on_failure.as_str(),
                skipped: 0,
                dead_lettered: 0,
                deploys: 0,
                refused: 0,
                last_refusal: None,
                per_call: None,
                shadow: None,
            },
        );
    }

    /// The engine whose plugin counters `/metrics` reports.
    pub fn set_engine(&self, engine: PluginEngine) {
        let _ = self.engine.set(engine);
    }

    /// Counts a change the plugin failed on, by what was done with it.
    pub fn failed(&self, name: &str, policy: FailurePolicy) {
        self.update(name, |s| match policy {
            FailurePolicy::DeadLetter => s.dead_lettered += 1,
            _ => s.skipped += 1,
        });
    }

    /// A new version passed validation and waits to take over.
    pub fn accepted(&self, name: &str, version: &str) {
        self.update(name, |s| {
            s.deploys += 1;
            s.pending_version = Some(version.to_owned());
        });
    }

    /// A new version took over.
    pub fn swapped(&self, name: &str, version: &str) {
        self.update(name, |s| {
            s.version = version.to_owned();
            if s.pending_version.as_deref() == Some(version) {
                s.pending_version = None;
            }
        });
    }

    /// The most changes the plugin now gets per call.
    pub fn set_per_call(&self, name: &str, per_call: Option<usize>) {
        self.update(name, |s| s.per_call = per_call);
    }

    /// A new version was refused.
    pub fn refused(&self, name: &str, error: &str) {
        self.update(name, |s| {
            s.refused += 1;
            s.last_refusal = Some(error.to_owned());
        });
    }

    /// A shadow version was validated; it starts at the next transaction
    /// boundary and replaces any shadow the plugin has.
    pub fn start_shadow(&self, name: &str, report: Arc<ShadowReport>) {
        self.update(name, |s| s.shadow = Some(report));
    }

    /// The shadow `version` ended (discarded or promoted); a newer shadow
    /// stays.
    pub fn end_shadow(&self, name: &str, version: &str) {
        self.update(name, |s| {
            if s.shadow.as_ref().is_some_and(|r| r.version() == version) {
                s.shadow = None;
            }
        });
    }

    /// The plugin's shadow version, if it has one.
    pub fn shadow(&self, name: &str) -> Option<Arc<ShadowReport>> {
        self.lock().get(name).and_then(|s| s.shadow.clone())
    }

    /// Every plugin's state, by name.
    pub fn states(&self) -> BTreeMap<String, PluginState> {
        self.lock().clone()
    }

    /// A JSON snapshot for `/status`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self.states()).unwrap_or_default()
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let states = self.states();
        let _ = writeln!(
            out,
            "# HELP weir_plugin_info The running version of each plugin.\n# TYPE weir_plugin_info gauge"
        );
        for (name, s) in &states {
            let _ = writeln!(
                out,
                "weir_plugin_info{{plugin=\"{name}\",kind=\"{}\",version=\"{}\"}} 1",
                s.kind, s.version
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_plugin_failures_total Changes plugins failed on, by what was done with them.\n# TYPE weir_plugin_failures_total counter"
        );
        for (name, s) in &states {
            for (action, n) in [("skip", s.skipped), ("dead-letter", s.dead_lettered)] {
                let _ = writeln!(
                    out,
                    "weir_plugin_failures_total{{plugin=\"{name}\",action=\"{action}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_plugin_deploys_total New plugin versions, accepted or refused.\n# TYPE weir_plugin_deploys_total counter"
        );
        for (name, s) in &states {
            for (result, n) in [("accepted", s.deploys), ("refused", s.refused)] {
                let _ = writeln!(
                    out,
                    "weir_plugin_deploys_total{{plugin=\"{name}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_plugin_shadow_total A shadow version's answers, by how they compare with the running version's.\n# TYPE weir_plugin_shadow_total counter"
        );
        for (name, s) in &states {
            let Some(shadow) = &s.shadow else { continue };
            let c = shadow.counts();
            for (verdict, n) in [
                ("same", c.same),
                ("changed", c.changed),
                ("dropped", c.dropped),
                ("failed", c.failed),
                ("skipped", c.skipped),
            ] {
                let _ = writeln!(
                    out,
                    "weir_plugin_shadow_total{{plugin=\"{name}\",version=\"{}\",verdict=\"{verdict}\"}} {n}",
                    shadow.version()
                );
            }
        }
        if let Some(engine) = self.engine.get() {
            let _ = writeln!(
                out,
                "# HELP weir_plugin_counter_total What plugins counted with the contract's `count`.\n# TYPE weir_plugin_counter_total counter"
            );
            for (plugin, name, total) in engine.counter_totals() {
                let _ = writeln!(
                    out,
                    "weir_plugin_counter_total{{plugin=\"{plugin}\",name=\"{}\"}} {total}",
                    escape_label(&name)
                );
            }
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use weir_core::TxnId;

    use super::*;
    use crate::checkpoint::Checkpointer;

    #[test]
    fn the_phase_says_the_worst_first() {
        let status = Status::new(["out".to_owned()]);
        assert_eq!(status.phase(), ("starting", None));
        status.set_role(Role::Standby);
        assert_eq!(status.phase().0, "standby");
        status.set_role(Role::Leader);
        status.set_state(State::Running);
        assert_eq!(status.phase(), ("streaming", None));
        status.set_degraded_after(Duration::ZERO);
        let out = &status.sinks["out"];
        out.failing();
        out.set_error(Some("connection refused".into()));
        let (phase, why) = status.phase();
        assert_eq!(phase, "degraded");
        assert!(
            why.unwrap()
                .contains("sink out failing for 0s: connection refused")
        );
        assert!(out.failing_since().is_some());
        assert!(
            status.snapshot()["sinks"]["out"]["failing_since"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        out.recovered();
        status.set_state(State::Halted("a plugin failed".into()));
        assert_eq!(status.phase(), ("halted", Some("a plugin failed".into())));
        assert_eq!(status.snapshot()["pipeline"]["state"], "halted");
    }

    #[test]
    fn the_acked_position_follows_the_checkpointer() {
        let status = Status::new(["out".to_owned()]);
        assert_eq!(status.acked_lsn(), Lsn::ZERO);
        let checkpointer = Checkpointer::new(Lsn(16));
        status.follow_watermark(checkpointer.subscribe());
        assert_eq!(status.acked_lsn(), Lsn(16));
        checkpointer
            .update(|t| {
                t.begin(TxnId(1));
                t.commit(TxnId(1), Lsn(0x64))
            })
            .unwrap();
        assert_eq!(status.acked_lsn(), Lsn(0x64));
        assert_eq!(status.snapshot()["acked_lsn"], "0/64");
        assert!(status.metrics().contains("\nweir_acked_lsn 100\n"));
    }
}
