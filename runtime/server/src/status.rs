//! What the running pipeline reports about itself: its state, the last
//! error, and counters. Read by the admin API and by `weir run`'s exit code.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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
    last_error: Mutex<Option<String>>,
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
    /// The acknowledged LSN, as a number.
    pub acked_lsn: AtomicU64,
    /// Per-sink counters, fixed at startup.
    pub sinks: BTreeMap<String, SinkCounters>,
}

impl Status {
    /// A status for a pipeline with these sinks.
    pub fn new(sink_names: impl IntoIterator<Item = String>) -> Self {
        Status {
            state: Mutex::new(State::Starting),
            changes_in: AtomicU64::new(0),
            transactions_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            acked_lsn: AtomicU64::new(0),
            sinks: sink_names
                .into_iter()
                .map(|n| (n, SinkCounters::default()))
                .collect(),
        }
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

    /// A JSON snapshot for `/status`.
    pub fn snapshot(&self) -> serde_json::Value {
        let sinks: serde_json::Map<String, serde_json::Value> = self
            .sinks
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "records": c.records.load(Ordering::Relaxed),
                        "batches": c.batches.load(Ordering::Relaxed),
                        "errors": c.errors.load(Ordering::Relaxed),
                        "last_error": c.error(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "status": self.state(),
            "acked_lsn": weir_core::Lsn(self.acked_lsn.load(Ordering::Relaxed)).to_string(),
            "changes_in": self.changes_in.load(Ordering::Relaxed),
            "transactions_in": self.transactions_in.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "unrouted": self.unrouted.load(Ordering::Relaxed),
            "sinks": sinks,
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
        gauge(
            "weir_acked_lsn",
            "Acknowledged source position.",
            self.acked_lsn.load(Ordering::Relaxed),
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
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (name, c) in &self.sinks {
                let v = if metric.ends_with("records_total") {
                    &c.records
                } else {
                    &c.errors
                };
                let _ = writeln!(
                    out,
                    "{metric}{{sink=\"{name}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}
