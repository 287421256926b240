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
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use weir_codec::JsonEncoder;
use weir_core::{ChangeEvent, Destination};
use weir_wasm::{Emit, Outcome, RouterPlugin, Transaction, TransformPlugin};

use crate::answers::{Sample, ShadowReport, Verdict, outcome_fields, route_fields};
use crate::config::{BreakerConfig, FailurePolicy};
use crate::stages::{Stage, StagePlugin};

/// How many processor batches a shadow may be behind the running version
/// before batches are left out for it.
const BEHIND: usize = 16;

/// What the shadow needs to compare a kind of plugin.
pub(crate) trait Shadowed: StagePlugin + Sized + Send + 'static {
    /// Whether this kind has a `commit` hook (transforms do, routers not).
    const HOOKS: bool;

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
    const HOOKS: bool = true;

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
    const HOOKS: bool = false;

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

/// Part of what one processor batch gave a stage.
enum Piece<A> {
    /// Changes of one transaction, with the running version's answers.
    Changes {
        events: Vec<ChangeEvent>,
        running: Vec<Result<A, String>>,
    },
    /// The end of a transaction, with what the running version's commit
    /// hook emitted (`None` without the hook).
    Commit {
        txn: Transaction,
        running: Option<Vec<Emit>>,
    },
}

/// Work for the shadow's thread.
enum Job<A> {
    /// What one processor batch gave the stage, in order, as the running
    /// version (`running_version`) answered it.
    Batch {
        pieces: Vec<Piece<A>>,
        running_version: String,
    },
    /// Start again on a fresh instance: batches were left out.
    Reset,
}

/// The processor's handle on a running shadow: it gathers what one batch
/// gave the stage and hands it over as one job. Dropping it stops the
/// shadow's thread once its current call returns.
pub(crate) struct Shadow<P: Shadowed> {
    jobs: SyncSender<Job<P::Answer>>,
    report: Arc<ShadowReport>,
    /// This batch's pieces, not yet handed over.
    pieces: Vec<Piece<P::Answer>>,
    running_version: String,
    /// Batches were left out since the shadow last started afresh.
    behind: bool,
}

impl<P: Shadowed> Shadow<P> {
    /// Starts `plugin` as a shadow on a thread of its own, reporting to
    /// `report`.
    pub(crate) fn start(plugin: P, report: Arc<ShadowReport>) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::sync_channel(BEHIND);
        let thread_report = report.clone();
        std::thread::Builder::new()
            .name("weir-shadow".to_owned())
            .spawn(move || work(plugin, &rx, &thread_report))?;
        report.tally().started();
        Ok(Shadow {
            jobs,
            report,
            pieces: Vec::new(),
            running_version: String::new(),
            behind: false,
        })
    }

    /// The shadow's version.
    pub(crate) fn version(&self) -> &str {
        self.report.version()
    }

    /// Adds changes the running version (`running_version`) answered with
    /// `running` to this batch's job.
    pub(crate) fn offer(
        &mut self,
        events: &[ChangeEvent],
        running: &[Result<P::Answer, String>],
        running_version: &str,
    ) {
        running_version.clone_into(&mut self.running_version);
        // One piece per transaction, so a commit hook's turn can be put
        // right after its transaction's changes.
        let mut at = 0;
        for run in events.chunk_by(|a, b| a.txn == b.txn) {
            self.pieces.push(Piece::Changes {
                events: run.to_vec(),
                running: running[at..at + run.len()].to_vec(),
            });
            at += run.len();
        }
    }

    /// Adds the end of transaction `txn` to this batch's job, with what
    /// the running version's commit hook emitted, if it has one. Right
    /// after that transaction's changes, so the shadow's own hook never
    /// runs on part of one.
    pub(crate) fn commit(&mut self, txn: &Transaction, running: Option<&[Emit]>) {
        if !P::HOOKS {
            return;
        }
        let after = self
            .pieces
            .iter()
            .rposition(|p| matches!(p, Piece::Changes { events, .. } if events[0].txn == txn.txn))
            .map_or(self.pieces.len(), |i| i + 1);
        self.pieces.insert(
            after,
            Piece::Commit {
                txn: *txn,
                running: running.map(<[Emit]>::to_vec),
            },
        );
    }

    /// Hands this batch's job over, never waiting: a shadow that is behind
    /// gets nothing until a transaction boundary (and then starts on a
    /// fresh instance). Returns `false` once the shadow's thread has ended
    /// (it was discarded, or failed): the handle can go.
    pub(crate) fn flush(&mut self) -> bool {
        let mut pieces = std::mem::take(&mut self.pieces);
        if pieces.is_empty() {
            return !self.report.stopped();
        }
        if self.behind {
            if P::HOOKS {
                // What comes after this batch's last transaction end is
                // the start of a transaction; what comes before, the rest
                // of one the shadow saw part of.
                let Some(end) = pieces
                    .iter()
                    .rposition(|p| matches!(p, Piece::Commit { .. }))
                else {
                    self.skip(&pieces);
                    return true;
                };
                let rest = pieces.split_off(end + 1);
                self.skip(&pieces);
                pieces = rest;
            }
            match self.jobs.try_send(Job::Reset) {
                Ok(()) => self.behind = false,
                Err(TrySendError::Full(_)) => {
                    self.skip(&pieces);
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
            if pieces.is_empty() {
                return true;
            }
        }
        let job = Job::Batch {
            pieces,
            running_version: self.running_version.clone(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(Job::Batch { pieces, .. })) => {
                self.behind = true;
                self.skip(&pieces);
                true
            }
            Err(TrySendError::Full(Job::Reset)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Counts the changes of `pieces` as never seen by the shadow.
    fn skip(&self, pieces: &[Piece<P::Answer>]) {
        let changes: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::Changes { events, .. } => events.len(),
                Piece::Commit { .. } => 0,
            })
            .sum();
        self.report.skipped(changes as u64);
    }

    /// The stream was cut inside a transaction: the shadow starts again on
    /// a fresh instance, as the running version does.
    pub(crate) fn reset(&mut self) {
        self.pieces.clear();
        self.behind = self.jobs.try_send(Job::Reset).is_err();
    }
}

impl<P: Shadowed> Drop for Shadow<P> {
    fn drop(&mut self) {
        self.report.stop();
    }
}

/// The shadow's thread: runs each job and counts how its answers compare.
/// A panic ends it, reported as the shadow's failure.
fn work<P: Shadowed>(plugin: P, jobs: &Receiver<Job<P::Answer>>, report: &ShadowReport) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_jobs(plugin, jobs, report);
    }));
    if let Err(panic) = ran {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        tracing::error!(plugin = %report.plugin(), version = %report.version(), %message, "the shadow version's thread panicked; it no longer runs");
        report.ended(format!("its thread panicked: {message}"));
    }
}

fn run_jobs<P: Shadowed>(plugin: P, jobs: &Receiver<Job<P::Answer>>, report: &ShadowReport) {
    // The policy and breaker are never consulted: every failure of a
    // shadow is a count in its report.
    let mut stage = Stage::new(plugin, FailurePolicy::Skip, &BreakerConfig::default());
    let mut encoder = JsonEncoder::new();
    while let Ok(job) = jobs.recv() {
        let (pieces, running_version) = match job {
            Job::Reset => {
                stage.reset();
                continue;
            }
            Job::Batch {
                pieces,
                running_version,
            } => (pieces, running_version),
        };
        for piece in pieces {
            if report.stopped() {
                return;
            }
            match piece {
                Piece::Changes { events, running } => {
                    changes(
                        &mut stage,
                        &events,
                        &running,
                        &running_version,
                        report,
                        &mut encoder,
                    );
                }
                Piece::Commit { txn, running } => {
                    commit(
                        &mut stage,
                        &txn,
                        running,
                        &running_version,
                        report,
                        &mut encoder,
                    );
                }
            }
        }
    }
}

/// Runs the shadow on one transaction's changes and counts its verdicts.
fn changes<P: Shadowed>(
    stage: &mut Stage<P>,
    events: &[ChangeEvent],
    running: &[Result<P::Answer, String>],
    running_version: &str,
    report: &ShadowReport,
    encoder: &mut JsonEncoder,
) {
    let answers = match stage.run(events) {
        Ok(answers) => answers,
        Err(e) => {
            // Nothing to blame one change for (its `init` failed, say):
            // every change of the batch failed.
            stage.reset();
            let error = e.to_string();
            report.tally().failure(error.clone());
            vec![Err(error); events.len()]
        }
    };
    let verdicts: Vec<Verdict> = events
        .iter()
        .zip(running)
        .zip(&answers)
        .map(|((event, r), s)| P::verdict(event, r, s))
        .collect();
    // Samples are made before the report is locked: the lock is shared with
    // the admin endpoint.
    let mut room = report.tally().room_for_samples();
    let mut samples = Vec::new();
    for (((event, r), s), verdict) in events.iter().zip(running).zip(&answers).zip(&verdicts) {
        if room == 0 {
            break;
        }
        if *verdict != Verdict::Same {
            let (r, s) = (P::fields(r, encoder), P::fields(s, encoder));
            samples.push(Sample::of_change(
                *verdict,
                event,
                running_version,
                &r,
                &s,
                encoder,
            ));
            room -= 1;
        }
    }
    report.tally().count(&verdicts, samples);
}

/// Runs the shadow's commit hook for `txn` and counts how its output
/// compares with the running version's.
fn commit<P: Shadowed>(
    stage: &mut Stage<P>,
    txn: &Transaction,
    running: Option<Vec<Emit>>,
    running_version: &str,
    report: &ShadowReport,
    encoder: &mut JsonEncoder,
) {
    let shadow = P::commit(stage, txn);
    if running.is_none() && shadow.is_none() {
        return;
    }
    let running = running.unwrap_or_default();
    let shadow = shadow.unwrap_or_else(|| Ok(Vec::new()));
    let verdict = Verdict::of_commits(&running, &shadow);
    let samples = if verdict != Verdict::Same && report.tally().room_for_samples() > 0 {
        vec![Sample::of_commit(
            verdict,
            txn,
            running_version,
            &running,
            &shadow,
            encoder,
        )]
    } else {
        Vec::new()
    };
    report.tally().count(&[verdict], samples);
}
