//! Why a pipeline cannot start or stops without being asked to, and how
//! the changes and records those errors name are described to an operator.
//!
//! It sits low in the module order (see the crate root) so that every
//! stage of the data path can fail with a [`HaltError`] without knowing
//! the pipeline that wires the stages together.

use std::time::Duration;

use weir_core::{ChangeEvent, SinkError, SinkPayload, SinkRecord, Value};
use weir_postgres::PgError;
use weir_wasm::PluginError;

use crate::checkpoint::AckError;

/// Why the pipeline could not start. Nothing was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A sink could not be opened or reached.
    #[error("sink {sink}: {error}")]
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
    /// A plugin whose policy is `halt` failed on a change: trapped, timed
    /// out, ran out of memory or fuel, broke the contract, or rejected it.
    #[error("plugin {plugin} failed on {event}: {error}")]
    PluginFailed {
        /// The plugin's name.
        plugin: String,
        /// The change it failed on.
        event: String,
        /// The failure.
        error: String,
    },
    /// A plugin failed without it being tied to one change.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A plugin failed more often than its circuit breaker allows.
    #[error(
        "plugin {plugin} failed {failures} times within {}; its circuit breaker halted the pipeline (raise breaker.max_failures or fix the plugin); last failure: {last}",
        humantime::format_duration(*window)
    )]
    CircuitOpen {
        /// The plugin's name.
        plugin: String,
        /// Failures within the window.
        failures: usize,
        /// The breaker's window.
        window: Duration,
        /// The last change it failed on, and the error.
        last: String,
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
    /// A sink failed in a way retrying cannot fix.
    #[error("sink {sink}: {error}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        error: SinkError,
    },
    /// A sink refused a record for good and no dead-letter sink takes it.
    #[error(
        "sink {sink} refused {record} for good: {reason}; nothing from it on was acknowledged (a [dead_letter] section would set such records aside)"
    )]
    RecordRejected {
        /// The sink's name.
        sink: String,
        /// The record: its table, key and commit LSN.
        record: String,
        /// Why the sink refused it.
        reason: String,
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

/// A record, described for an operator.
pub fn describe_record(record: &SinkRecord) -> String {
    match &record.payload {
        SinkPayload::Change(e) => describe(e),
        SinkPayload::Raw(m) => format!(
            "a raw message (xid {}, commit LSN {}, LSN {})",
            m.source.xid, m.source.commit_lsn, m.source.lsn
        ),
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
