//! `[verify]`: verification inside the running Weir, one pass every
//! `interval`, paced by `rows_per_second`, with results on `/status` and
//! `/metrics` and, with `repair = true`, what differs sent through the
//! pipeline again.
//!
//! A pass opens its own connections (to the source and to each sink's
//! readback) and closes them at its end; a failed pass is reported and
//! the next one tried at its time. Verification never stops or slows the
//! pipeline other than by the reads it makes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use weir_postgres::snapshot::SnapshotProgress;

use super::{Options, Verifier};
use crate::config::{Config, VerifyConfig};

/// How long a pass waits for the pipeline to acknowledge a chunk, or to
/// deliver a repair, before it gives up (and reports the pass failed).
const PATIENCE: Duration = Duration::from_secs(600);

/// The latest results, shared with the admin endpoint.
#[derive(Debug, Default)]
pub struct VerifyStatus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    enabled: bool,
    /// The pass under way, since when.
    running_since: Option<SystemTime>,
    passes_clean: u64,
    passes_drift: u64,
    passes_failed: u64,
    /// When the last pass that compared every table ended.
    last_full_pass: Option<SystemTime>,
    last_error: Option<String>,
    repaired: u64,
    /// Per (table, sink): the last pass's result.
    targets: BTreeMap<(String, String), Summary>,
    /// What the last pass left out, and why.
    skipped: Vec<super::Skipped>,
}

/// The last result of one table against one sink.
#[derive(Clone, Debug)]
struct Summary {
    rows: u64,
    missing: u64,
    extra: u64,
    differing: u64,
    /// After a repair, what still differed.
    still_drifting: Option<u64>,
    /// Keys that changed every time they were read again.
    unsettled: u64,
    at: SystemTime,
    seconds: f64,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl VerifyStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `/status`'s `verify`: `null` unless `[verify]` is configured.
    pub fn json(&self) -> serde_json::Value {
        let inner = self.lock();
        if !inner.enabled {
            return serde_json::Value::Null;
        }
        let tables: Vec<serde_json::Value> = inner
            .targets
            .iter()
            .map(|((table, sink), s)| {
                serde_json::json!({
                    "table": table,
                    "sink": sink,
                    "rows": s.rows,
                    "missing": s.missing,
                    "extra": s.extra,
                    "differing": s.differing,
                    "still_drifting": s.still_drifting,
                    "unsettled": s.unsettled,
                    "checked_at": unix(s.at),
                    "seconds": s.seconds,
                })
            })
            .collect();
        serde_json::json!({
            "running_since": inner.running_since.map(unix),
            "last_full_pass": inner.last_full_pass.map(unix),
            "passes": {
                "clean": inner.passes_clean,
                "drift": inner.passes_drift,
                "failed": inner.passes_failed,
            },
            "last_error": inner.last_error,
            "repaired_rows": inner.repaired,
            "tables": tables,
            "skipped": inner.skipped,
        })
    }

    /// The Prometheus lines.
    pub fn metrics(&self, out: &mut String) {
        let inner = self.lock();
        if !inner.enabled {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP weir_verify_drifted_rows Keys that differ between the source and a sink at the last verification (after its repair, if any), by kind.\n# TYPE weir_verify_drifted_rows gauge"
        );
        for ((table, sink), s) in &inner.targets {
            let (missing, extra, differing) = match s.still_drifting {
                // After a repair only the total left is known: counted as
                // differing.
                Some(left) => (0, 0, left),
                None => (s.missing, s.extra, s.differing),
            };
            for (kind, n) in [
                ("missing", missing),
                ("extra", extra),
                ("differing", differing),
            ] {
                let _ = writeln!(
                    out,
                    "weir_verify_drifted_rows{{table=\"{}\",sink=\"{}\",kind=\"{kind}\"}} {n}",
                    escape(table),
                    escape(sink)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_verify_rows Source rows compared with a sink at the last verification.\n# TYPE weir_verify_rows gauge"
        );
        for ((table, sink), s) in &inner.targets {
            let _ = writeln!(
                out,
                "weir_verify_rows{{table=\"{}\",sink=\"{}\"}} {}",
                escape(table),
                escape(sink),
                s.rows
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_verify_unsettled_rows Keys the source changed every time verification read them again (in flight, not compared).\n# TYPE weir_verify_unsettled_rows gauge"
        );
        for ((table, sink), s) in &inner.targets {
            let _ = writeln!(
                out,
                "weir_verify_unsettled_rows{{table=\"{}\",sink=\"{}\"}} {}",
                escape(table),
                escape(sink),
                s.unsettled
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_verify_passes_total Verification passes, by result.\n# TYPE weir_verify_passes_total counter"
        );
        for (result, n) in [
            ("clean", inner.passes_clean),
            ("drift", inner.passes_drift),
            ("failed", inner.passes_failed),
        ] {
            let _ = writeln!(out, "weir_verify_passes_total{{result=\"{result}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP weir_verify_repaired_rows_total Keys sent through the pipeline again by repairs.\n# TYPE weir_verify_repaired_rows_total counter\nweir_verify_repaired_rows_total {}",
            inner.repaired
        );
        if let Some(t) = inner.last_full_pass {
            let _ = writeln!(
                out,
                "# HELP weir_verify_last_full_pass_timestamp_seconds When the last pass over every table ended.\n# TYPE weir_verify_last_full_pass_timestamp_seconds gauge\nweir_verify_last_full_pass_timestamp_seconds {:.3}",
                unix(t)
            );
        }
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Runs passes until `stop`. `progress`: the pipeline's snapshots, which
/// a pass waits out (their rows are not in the sinks yet) and wakes for a
/// repair.
pub async fn run(
    config: Arc<Config>,
    settings: VerifyConfig,
    status: Arc<VerifyStatus>,
    progress: Arc<SnapshotProgress>,
    stop: CancellationToken,
) {
    status.lock().enabled = true;
    loop {
        while progress.is_copying() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let started = Instant::now();
        status.lock().running_since = Some(SystemTime::now());
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = pass(&config, &settings, &status, &progress) => o,
        };
        {
            let mut inner = status.lock();
            inner.running_since = None;
            match outcome {
                Ok(true) => {
                    inner.passes_clean += 1;
                    inner.last_full_pass = Some(SystemTime::now());
                    inner.last_error = None;
                }
                Ok(false) => {
                    inner.passes_drift += 1;
                    inner.last_full_pass = Some(SystemTime::now());
                    inner.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a verification pass failed; the next is tried at its time");
                    inner.passes_failed += 1;
                    inner.last_error = Some(e);
                }
            }
        }
        let next = settings.interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// One pass over every table: whether nothing (still) differs.
async fn pass(
    config: &Arc<Config>,
    settings: &VerifyConfig,
    status: &VerifyStatus,
    progress: &Arc<SnapshotProgress>,
) -> Result<bool, String> {
    let options = Options {
        chunk_rows: settings.chunk_rows,
        rows_per_second: settings.rows_per_second,
        ack_timeout: PATIENCE,
        ..Options::default()
    };
    let (mut verifier, mut skipped) = Verifier::connect(config.clone(), &settings.sinks, options)
        .await
        .map_err(|e| e.to_string())?;
    verifier.wake_with(progress.clone());
    if let Some(why) = verifier.not_ready().await.map_err(|e| e.to_string())? {
        return Err(why);
    }
    let plan = verifier
        .plan(&settings.tables)
        .await
        .map_err(|e| e.to_string())?;
    skipped.extend(plan.skipped.iter().cloned());
    let mut clean = true;
    let mut results = BTreeMap::new();
    for ((schema, name), targets) in &plan.tables {
        let table = verifier
            .table(schema, name)
            .await
            .map_err(|e| e.to_string())?;
        let mut reports = verifier
            .verify_table(&table, targets, &|_| {})
            .await
            .map_err(|e| e.to_string())?;
        if settings.repair {
            let sent = verifier
                .repair_drift(&table, targets, &mut reports, PATIENCE)
                .await
                .map_err(|e| e.to_string())?;
            status.lock().repaired += sent as u64;
        }
        for r in reports {
            if let Some(why) = &r.refused {
                skipped.push(super::Skipped {
                    table: Some(r.table.clone()),
                    sink: Some(r.sink.clone()),
                    reason: why.clone(),
                });
                continue;
            }
            if !r.clean() {
                clean = false;
                tracing::warn!(
                    table = %r.table, sink = %r.sink, missing = r.missing, extra = r.extra,
                    differing = r.differing, still_drifting = ?r.still_drifting,
                    "verification found the sink differs from the source"
                );
            }
            results.insert(
                (r.table.clone(), r.sink.clone()),
                Summary {
                    rows: r.rows,
                    missing: r.missing,
                    extra: r.extra,
                    differing: r.differing,
                    still_drifting: r.still_drifting,
                    unsettled: r.unsettled,
                    at: SystemTime::now(),
                    seconds: r.seconds,
                },
            );
        }
    }
    // A table no longer verified leaves the status with the pass.
    let mut inner = status.lock();
    inner.targets = results;
    inner.skipped = skipped;
    Ok(clean)
}
