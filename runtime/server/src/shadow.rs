//! Shadow versions: a new version of a plugin tried on live traffic before
//! it is trusted (`PUT /plugins/NAME?mode=shadow`).
//!
//! The shadow runs on a thread of its own, on copies of the batches the
//! running version got, and only the running version's output is
//! delivered. The processor hands each batch over with the running
//! version's answers and goes on at once: a shadow that traps, loops until
//! its deadline or runs slowly never holds up delivery. A shadow that falls
//! behind has batches left out (counted as skipped) until the next
//! transaction boundary, and then starts on a fresh instance; a transform
//! with a `commit` hook is handed one transaction at a time, so its hook
//! never runs on part of one. Its failures are its own: counted in its
//! report, never the running plugin's failure policy or circuit breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use weir_codec::JsonEncoder;
use weir_core::{ChangeEvent, Destination};
use weir_wasm::{Emit, Outcome, RouterPlugin, Transaction, TransformPlugin};

use crate::answers::{Sample, ShadowReport, Verdict, outcome_fields, route_fields};
use crate::config::{BreakerConfig, FailurePolicy};
use crate::stages::{Stage, StagePlugin};

/// How many batches a shadow may be behind the running version before
/// batches are left out for it.
const BEHIND: usize = 16;

/// What the shadow needs to compare a kind of plugin.
pub(crate) trait Shadowed: StagePlugin + Sized + Send + 'static {
    /// How the shadow's answer for `event` compares with the running one's.
    fn verdict(
        event: &ChangeEvent,
        running: &Result<Self::Answer, String>,
        shadow: &Result<Self::Answer, String>,
    ) -> Verdict;

    /// An answer as JSON object fields.
    fn fields(answer: &Result<Self::Answer, String>, encoder: &mut JsonEncoder) -> String;

    /// The shadow's commit hook output for `txn`; `None` when it has no
    /// hook.
    fn commit(_stage: &mut Stage<Self>, _txn: &Transaction) -> Option<Result<Vec<Emit>, String>> {
        None
    }
}

impl Shadowed for TransformPlugin {
    fn verdict(
        event: &ChangeEvent,
        running: &Result<Outcome, String>,
        shadow: &Result<Outcome, String>,
    ) -> Verdict {
        Verdict::of_outcomes(event, running, shadow)
    }

    fn fields(answer: &Result<Outcome, String>, encoder: &mut JsonEncoder) -> String {
        outcome_fields(answer, encoder)
    }

    fn commit(stage: &mut Stage<Self>, txn: &Transaction) -> Option<Result<Vec<Emit>, String>> {
        match stage.wants_commit() {
            Ok(false) => None,
            Ok(true) => Some(stage.commit(txn).map_err(|e| e.to_string())),
            Err(e) => Some(Err(e.to_string())),
        }
    }
}

impl Shadowed for RouterPlugin {
    fn verdict(
        _event: &ChangeEvent,
        running: &Result<Vec<Destination>, String>,
        shadow: &Result<Vec<Destination>, String>,
    ) -> Verdict {
        Verdict::of_routes(running, shadow)
    }

    fn fields(answer: &Result<Vec<Destination>, String>, _encoder: &mut JsonEncoder) -> String {
        route_fields(answer)
    }
}

/// Work for the shadow's thread.
enum Job<A> {
    /// Changes, with the running version's answers for them.
    Batch {
        events: Vec<ChangeEvent>,
        running: Vec<Result<A, String>>,
        running_version: String,
    },
    /// The end of a transaction, with what the running version's commit
    /// hook emitted (`None` without the hook).
    Commit {
        txn: Transaction,
        running: Option<Vec<Emit>>,
        running_version: String,
    },
    /// Start again on a fresh instance: batches were left out.
    Reset,
}

/// The processor's handle on a running shadow. Dropping it stops the
/// shadow's thread once its current call returns.
pub(crate) struct Shadow<P: Shadowed> {
    jobs: SyncSender<Job<P::Answer>>,
    report: Arc<ShadowReport>,
    stop: Arc<AtomicBool>,
    /// Batches were left out since the last transaction boundary.
    behind: bool,
}

impl<P: Shadowed> Shadow<P> {
    /// Starts `plugin` as a shadow on a thread of its own, reporting to
    /// `report`.
    pub(crate) fn start(plugin: P, report: Arc<ShadowReport>) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::sync_channel(BEHIND);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_report = report.clone();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("weir-shadow-{}", plugin.name()))
            .spawn(move || work(plugin, &rx, &thread_report, &thread_stop))?;
        report.tally().started();
        Ok(Shadow {
            jobs,
            report,
            stop,
            behind: false,
        })
    }

    /// The shadow's version.
    pub(crate) fn version(&self) -> &str {
        self.report.version()
    }

    /// Hands the shadow a batch the running version (`running_version`)
    /// answered with `running`; never waits.
    pub(crate) fn offer(
        &mut self,
        events: &[ChangeEvent],
        running: &[Result<P::Answer, String>],
        running_version: &str,
    ) {
        if self.behind {
            self.report.tally().skipped(events.len() as u64);
            return;
        }
        let job = Job::Batch {
            events: events.to_vec(),
            running: running.to_vec(),
            running_version: running_version.to_owned(),
        };
        if let Err(TrySendError::Full(_)) = self.jobs.try_send(job) {
            self.behind = true;
            self.report.tally().skipped(events.len() as u64);
        }
    }

    /// Tells the shadow a transaction ended, with what the running
    /// version's commit hook emitted, if it has one. A shadow that was
    /// behind starts again from here.
    pub(crate) fn commit(
        &mut self,
        txn: &Transaction,
        running: Option<&[Emit]>,
        running_version: &str,
    ) {
        if self.behind {
            if self.jobs.try_send(Job::Reset).is_ok() {
                self.behind = false;
            }
            return;
        }
        let job = Job::Commit {
            txn: *txn,
            running: running.map(<[Emit]>::to_vec),
            running_version: running_version.to_owned(),
        };
        if let Err(TrySendError::Full(_)) = self.jobs.try_send(job) {
            self.behind = true;
        }
    }

    /// The stream was cut inside a transaction: the shadow starts again on
    /// a fresh instance, as the running version does.
    pub(crate) fn reset(&mut self) {
        self.behind = self.jobs.try_send(Job::Reset).is_err();
    }
}

impl<P: Shadowed> Drop for Shadow<P> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The shadow's thread: runs each job and counts how its answers compare.
fn work<P: Shadowed>(
    plugin: P,
    jobs: &Receiver<Job<P::Answer>>,
    report: &ShadowReport,
    stop: &AtomicBool,
) {
    // The policy and breaker are never consulted: every failure of a
    // shadow is a count in its report.
    let mut stage = Stage::new(plugin, FailurePolicy::Skip, &BreakerConfig::default());
    let mut encoder = JsonEncoder::new();
    while let Ok(job) = jobs.recv() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match job {
            Job::Reset => stage.reset(),
            Job::Batch {
                events,
                running,
                running_version,
            } => {
                let answers = match stage.run(&events) {
                    Ok(answers) => answers,
                    Err(e) => {
                        // Nothing to blame one change for (its `init`
                        // failed, say): every change of the batch failed.
                        stage.reset();
                        let error = e.to_string();
                        report.tally().failure(error.clone());
                        vec![Err(error); events.len()]
                    }
                };
                let mut tally = report.tally();
                for ((event, r), s) in events.iter().zip(&running).zip(&answers) {
                    let verdict = P::verdict(event, r, s);
                    tally.count(verdict, || {
                        let (r, s) = (P::fields(r, &mut encoder), P::fields(s, &mut encoder));
                        Sample::of_change(verdict, event, &running_version, &r, &s, &mut encoder)
                    });
                }
            }
            Job::Commit {
                txn,
                running,
                running_version,
            } => {
                let shadow = P::commit(&mut stage, &txn);
                if running.is_none() && shadow.is_none() {
                    continue;
                }
                let running = running.unwrap_or_default();
                let shadow = shadow.unwrap_or_else(|| Ok(Vec::new()));
                let verdict = Verdict::of_commits(&running, &shadow);
                report.tally().count(verdict, || {
                    Sample::of_commit(
                        verdict,
                        &txn,
                        &running_version,
                        &running,
                        &shadow,
                        &mut encoder,
                    )
                });
            }
        }
    }
}
