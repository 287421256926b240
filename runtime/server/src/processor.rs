//! The processor thread: runs each batch from the source through the
//! transform chain and the router, applies plugins' failure policies, and
//! hands records to the sink tasks after counting them for the
//! checkpointer.
//!
//! It is also where a new plugin version takes over: swaps wait for the
//! end of the transaction in progress, so every change of a transaction is
//! seen by one version of each plugin.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_core::{
    ChangeEvent, Destination, RawMessage, SinkPayload, SinkRecord, SourceItem, TablePattern, TxnId,
};
use weir_wasm::{Emit, EmitPayload, Outcome, RouterPlugin, Transaction, TransformPlugin};

use crate::checkpoint::{Checkpointer, txn_runs};
use crate::config::FailurePolicy;
use crate::halt::{HaltError, describe};
use crate::plugins::Swap;
use crate::routing::{RouteRules, in_tables};
use crate::shadow::Shadow;
use crate::stages::{Stage, StagePlugin};
use crate::status::Status;

/// One item travelling through the transform chain.
enum Work {
    Change(ChangeEvent, Option<Destination>),
    Raw(RawMessage, TxnId, Option<Destination>),
    /// The end of a transaction's changes: commit hooks run here.
    Commit(Transaction),
}

/// Runs transforms and routing on the processor thread.
pub(crate) struct Processor {
    pub(crate) transforms: Vec<Stage<TransformPlugin>>,
    pub(crate) router: Option<Stage<RouterPlugin>>,
    /// The `tables` filter of each transform, in chain order.
    pub(crate) transform_tables: Vec<Option<Vec<TablePattern>>>,
    /// The router's `tables` filter.
    pub(crate) router_tables: Option<Vec<TablePattern>>,
    /// The shadow version beside each transform, in chain order.
    pub(crate) transform_shadows: Vec<Option<Shadow<TransformPlugin>>>,
    /// The shadow version beside the router.
    pub(crate) router_shadow: Option<Shadow<RouterPlugin>>,
    pub(crate) rules: RouteRules,
    /// Where dead letters go.
    pub(crate) dead_letter: Option<Destination>,
    pub(crate) sink_names: String,
    pub(crate) sink_index: HashMap<String, usize>,
    pub(crate) sink_txs: Vec<mpsc::Sender<Vec<SinkRecord>>>,
    pub(crate) checkpointer: Arc<Checkpointer>,
    pub(crate) status: Arc<Status>,
    pub(crate) abort: CancellationToken,
    /// New versions, waiting for a transaction boundary; left in their
    /// bounded channel until one is in sight.
    pub(crate) swaps: tokio::sync::mpsc::Receiver<Swap>,
    /// Swaps taken from the channel, applied at the boundary in sight.
    pub(crate) pending: Vec<Swap>,
    /// The transaction whose changes are being received, from its begin to
    /// its commit (which may arrive in a later batch).
    pub(crate) open: Option<Transaction>,
}

impl Processor {
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Vec<SourceItem>>) -> Result<(), HaltError> {
        // Batches are taken as the source made them: joining those that
        // queued up made the backlog drain slower in A/B runs (larger
        // batches falling out of the cache, it seems; BENCHMARKS.md).
        while let Some(mut items) = rx.blocking_recv() {
            // A restart marker splits the batch: what came before it belongs
            // to the old stream, what follows to the new one.
            while let Some(i) = items.iter().position(|i| matches!(i, SourceItem::Restart)) {
                let rest = items.split_off(i + 1);
                items.pop();
                self.handle_swapping(items)?;
                if let Some(cut) = self.open.take() {
                    self.reset_stages(&cut);
                }
                self.checkpointer.update(|t| {
                    t.abandon_uncommitted();
                    Ok(())
                })?;
                items = rest;
            }
            self.handle_swapping(items)?;
        }
        Ok(())
    }

    /// Handles `items`, applying waiting swaps at the first transaction
    /// boundary.
    fn handle_swapping(&mut self, mut items: Vec<SourceItem>) -> Result<(), HaltError> {
        // Inside a transaction with no end in this batch, swaps stay in
        // their bounded channel rather than piling up here unbounded.
        if self.open.is_some() && !items.iter().any(|i| matches!(i, SourceItem::Commit(_))) {
            return self.handle(items);
        }
        self.pending
            .extend(std::iter::from_fn(|| self.swaps.try_recv().ok()));
        if self.pending.is_empty() {
            return self.handle(items);
        }
        if self.open.is_none() {
            self.apply_swaps();
            return self.handle(items);
        }
        match items
            .iter()
            .position(|i| matches!(i, SourceItem::Commit(_)))
        {
            Some(end) => {
                let rest = items.split_off(end + 1);
                self.handle(items)?;
                self.apply_swaps();
                self.handle(rest)
            }
            None => self.handle(items),
        }
    }

    /// Drops every plugin instance after the stream was cut inside `cut`:
    /// they saw part of it, and the new stream delivers it again from its
    /// start. A commit hook would otherwise count the cut-off part twice;
    /// any plugin may keep per-transaction state the same way.
    fn reset_stages(&mut self, cut: &Transaction) {
        tracing::warn!(
            xid = cut.xid,
            commit_lsn = %cut.commit_lsn,
            "the replication stream was cut inside a transaction; plugin instances that saw part of it start afresh, and it is delivered again from its start"
        );
        for stage in &mut self.transforms {
            stage.reset();
        }
        if let Some(router) = &mut self.router {
            router.reset();
        }
        for shadow in self.transform_shadows.iter_mut().flatten() {
            shadow.reset();
        }
        if let Some(shadow) = &mut self.router_shadow {
            shadow.reset();
        }
    }

    fn apply_swaps(&mut self) {
        for swap in std::mem::take(&mut self.pending) {
            match swap {
                Swap::Transform(i, plugin) => {
                    let stage = &mut self.transforms[i];
                    let old = stage.plugin().version().to_owned();
                    stage.swap(plugin);
                    let shadow = &mut self.transform_shadows[i];
                    let new = stage.plugin().version();
                    let promoted = ended_by_promotion(shadow, new);
                    swapped(&self.status, stage.plugin().name(), &old, new, promoted);
                }
                Swap::Router(plugin) => {
                    let Some(stage) = &mut self.router else {
                        continue;
                    };
                    let old = stage.plugin().version().to_owned();
                    stage.swap(plugin);
                    let new = stage.plugin().version();
                    let promoted = ended_by_promotion(&mut self.router_shadow, new);
                    swapped(&self.status, stage.plugin().name(), &old, new, promoted);
                }
                Swap::ShadowTransform(i, plugin, report) => {
                    self.transform_shadows[i] = start_shadow(plugin, report);
                }
                Swap::ShadowRouter(plugin, report) => {
                    self.router_shadow = start_shadow(plugin, report);
                }
                Swap::EndShadowTransform(i) => self.transform_shadows[i] = None,
                Swap::EndShadowRouter => self.router_shadow = None,
            }
        }
    }

    fn handle(&mut self, items: Vec<SourceItem>) -> Result<(), HaltError> {
        let mut begins = Vec::new();
        let mut commits = Vec::new();
        let mut changes = 0;
        let mut work = Vec::with_capacity(items.len());
        for item in items {
            match item {
                SourceItem::Begin(b) => {
                    begins.push(b.txn);
                    self.open = Some(Transaction {
                        txn: b.txn,
                        xid: b.xid,
                        commit_lsn: b.commit_lsn,
                        commit_time_micros: b.commit_time_micros,
                    });
                }
                SourceItem::Change(e) => {
                    changes += 1;
                    work.push(Work::Change(e, None));
                }
                SourceItem::Commit(c) => {
                    commits.push((c.txn, c.end_lsn));
                    match self.open.take() {
                        Some(t) if t.txn == c.txn => work.push(Work::Commit(t)),
                        _ => {
                            return Err(HaltError::Internal(format!(
                                "a commit of transaction {:?} without its begin",
                                c.txn
                            )));
                        }
                    }
                }
                SourceItem::Restart => unreachable!("split off by Processor::run"),
            }
        }
        self.status.changes_in.fetch_add(changes, Ordering::Relaxed);
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
    /// items with a destination skip the rest of the chain. A transform
    /// with the `commit` hook gets one transaction per call, and its
    /// hook's output lands just before the commit.
    fn transform(&mut self, i: usize, work: Vec<Work>) -> Result<Vec<Work>, HaltError> {
        let out = self.transform_stage(i, work)?;
        // What the batch gave the running version goes to its shadow as
        // one job; a shadow whose thread ended is let go.
        if let Some(shadow) = &mut self.transform_shadows[i]
            && !shadow.flush()
        {
            self.transform_shadows[i] = None;
        }
        Ok(out)
    }

    /// [`Processor::transform`], but for the shadow's hand-over.
    fn transform_stage(&mut self, i: usize, work: Vec<Work>) -> Result<Vec<Work>, HaltError> {
        let failures = Failures {
            status: &self.status,
            dead_letter: self.dead_letter.as_ref(),
        };
        let stage = &mut self.transforms[i];
        let mut shadow = self.transform_shadows[i].as_mut();
        let tables = self.transform_tables[i].as_deref();
        let changes = work.iter().any(|w| takes(tables, w));
        // A transaction's commit may come in a batch of its own.
        let commits = work.iter().any(|w| matches!(w, Work::Commit(_)));
        let hooked_commit = commits && (stage.wants_commit()? || shadow.is_some());
        if !changes && !hooked_commit {
            return Ok(work);
        }
        let mut out = Vec::with_capacity(work.len());
        if !stage.wants_commit()? {
            transform_run(
                stage,
                shadow.as_deref_mut(),
                tables,
                &failures,
                work,
                &mut out,
            )?;
            if let Some(shadow) = shadow {
                for w in &out {
                    if let Work::Commit(txn) = w {
                        shadow.commit(txn, None);
                    }
                }
            }
            return Ok(out);
        }
        let mut run = Vec::new();
        for w in work {
            let Work::Commit(txn) = w else {
                run.push(w);
                continue;
            };
            transform_run(
                stage,
                shadow.as_deref_mut(),
                tables,
                &failures,
                std::mem::take(&mut run),
                &mut out,
            )?;
            // A swap never lands inside a transaction, but the plugin may
            // have been re-instantiated after a failure; ask again.
            let emits = if stage.wants_commit()? {
                Some(stage.commit(&txn)?)
            } else {
                None
            };
            if let Some(shadow) = shadow.as_deref_mut() {
                shadow.commit(&txn, emits.as_deref());
            }
            out.extend(emits.into_iter().flatten().map(|e| emit_work(e, txn.txn)));
            out.push(Work::Commit(txn));
        }
        transform_run(stage, shadow, tables, &failures, run, &mut out)?;
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
                Work::Commit(_) => {}
                Work::Change(e, None)
                    if self.router.is_some()
                        && (self.router_tables.as_deref()).is_none_or(|t| in_tables(t, &e)) =>
                {
                    to_route.push(e);
                    slots.push(None);
                }
                other => slots.push(Some(other)),
            }
        }
        let chosen = match &mut self.router {
            Some(router) if !to_route.is_empty() => {
                let chosen = router.run(&to_route)?;
                (self.status.plugins).set_per_call(router.plugin().name(), router.per_call());
                if let Some(shadow) = &mut self.router_shadow {
                    shadow.offer(&to_route, &chosen, router.plugin().version());
                    if !shadow.flush() {
                        self.router_shadow = None;
                    }
                }
                chosen
            }
            _ => Vec::new(),
        };
        let mut routed = to_route.into_iter().zip(chosen);

        let mut per_sink: Vec<Vec<SinkRecord>> = vec![Vec::new(); self.sink_txs.len()];
        for slot in slots {
            let (payload, txn, dests, by) = match slot {
                None => match routed.next().expect("one answer per change") {
                    (e, Ok(d)) => {
                        let txn = e.txn;
                        (
                            SinkPayload::Change(Arc::new(e)),
                            txn,
                            Cow::Owned(d),
                            ChosenBy::Router,
                        )
                    }
                    (e, Err(error)) => {
                        let failures = Failures {
                            status: &self.status,
                            dead_letter: self.dead_letter.as_ref(),
                        };
                        let router = self.router.as_mut().expect("routed by the router");
                        match failures.handle(router, e, error)? {
                            Some(Work::Raw(m, txn, Some(d))) => (
                                SinkPayload::Raw(Arc::new(m)),
                                txn,
                                Cow::Owned(vec![d]),
                                ChosenBy::DeadLetter,
                            ),
                            _ => continue,
                        }
                    }
                },
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
                Some(Work::Commit(_)) => unreachable!("left out above"),
            };
            self.dispatch(&mut per_sink, payload, txn, &dests, by)?;
        }
        Ok(per_sink)
    }

    /// Adds a record to the list of each of its sinks.
    fn dispatch(
        &self,
        per_sink: &mut [Vec<SinkRecord>],
        payload: SinkPayload,
        txn: TxnId,
        dests: &[Destination],
        by: ChosenBy,
    ) -> Result<(), HaltError> {
        if dests.is_empty() {
            self.status.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        for d in dests {
            let Some(&i) = self.sink_index.get(&d.sink) else {
                return Err(HaltError::UnknownSink {
                    by: match by {
                        ChosenBy::Transform => "a transform".to_owned(),
                        ChosenBy::Routes => "the routes".to_owned(),
                        ChosenBy::DeadLetter => "the dead_letter section".to_owned(),
                        ChosenBy::Router => self
                            .router
                            .as_ref()
                            .map(|r| format!("router {}", r.plugin().name()))
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
        Ok(())
    }
}

/// Ends a stage's shadow when the version that took over is the shadow's
/// own (it was promoted); returns whether it did.
fn ended_by_promotion<P: crate::shadow::Shadowed>(
    shadow: &mut Option<Shadow<P>>,
    running: &str,
) -> bool {
    if shadow.as_ref().is_some_and(|s| s.version() == running) {
        *shadow = None;
        return true;
    }
    false
}

/// Reports a new version that took over.
fn swapped(status: &Status, plugin: &str, old: &str, new: &str, promoted: bool) {
    tracing::info!(%plugin, from = %old, to = %new, promoted, "new plugin version took over at a transaction boundary");
    status.plugins.swapped(plugin, new);
    // Also when the shadow never ran (its thread could not start): the
    // version it was is the running one now.
    status.plugins.end_shadow(plugin, new);
}

/// Starts a shadow version; a shadow that cannot start is reported, and
/// the running version goes on alone.
fn start_shadow<P: crate::shadow::Shadowed>(
    plugin: P,
    report: Arc<crate::answers::ShadowReport>,
) -> Option<Shadow<P>> {
    let (name, version) = (plugin.name().to_owned(), report.version().to_owned());
    match Shadow::start(plugin, report.clone()) {
        Ok(shadow) => {
            tracing::info!(plugin = %name, %version, "a shadow version runs beside the running one from this transaction boundary; only the running one's output is delivered");
            Some(shadow)
        }
        Err(e) => {
            tracing::error!(plugin = %name, %version, error = %e, "cannot start the shadow version's thread");
            report
                .tally()
                .failure(format!("cannot start its thread: {e}"));
            None
        }
    }
}

/// Who chose a record's destination, named only if that destination is bad.
#[derive(Clone, Copy)]
enum ChosenBy {
    Transform,
    Router,
    Routes,
    DeadLetter,
}

/// Whether a plugin with the `tables` filter gets `work`: a change that has
/// no destination yet, of a table the filter matches.
fn takes(tables: Option<&[TablePattern]>, work: &Work) -> bool {
    match work {
        Work::Change(e, None) => tables.is_none_or(|t| in_tables(t, e)),
        _ => false,
    }
}

/// Runs one transform over what it takes of `work` (no commit markers
/// inside but maybe at the end) and appends the result to `out`, with
/// what it does not take where it was.
fn transform_run(
    stage: &mut Stage<TransformPlugin>,
    shadow: Option<&mut Shadow<TransformPlugin>>,
    tables: Option<&[TablePattern]>,
    failures: &Failures<'_>,
    work: Vec<Work>,
    out: &mut Vec<Work>,
) -> Result<(), HaltError> {
    // Per item of `work`: `None` where it went into the batch, or the
    // work the stage does not take, kept in place.
    let mut batch = Vec::with_capacity(work.len());
    let mut slots = Vec::with_capacity(work.len());
    for w in work {
        match w {
            Work::Change(e, None) if tables.is_none_or(|t| in_tables(t, &e)) => {
                batch.push(e);
                slots.push(None);
            }
            other => slots.push(Some(other)),
        }
    }
    let answers = if batch.is_empty() {
        Vec::new()
    } else {
        let answers = stage.run(&batch)?;
        (failures.status.plugins).set_per_call(stage.plugin().name(), stage.per_call());
        if let Some(shadow) = shadow {
            shadow.offer(&batch, &answers, stage.plugin().version());
        }
        answers
    };
    let mut results = batch.into_iter().zip(answers);
    for slot in slots {
        let (event, answer) = match slot {
            Some(w) => {
                out.push(w);
                continue;
            }
            None => results.next().expect("one answer per change"),
        };
        match answer {
            Ok(Outcome::Keep) => out.push(Work::Change(event, None)),
            Ok(Outcome::Drop) => {
                failures.status.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Replace(emits)) => {
                let txn = event.txn;
                out.extend(emits.into_iter().map(|e| emit_work(e, txn)));
            }
            // Set apart by the stage.
            Ok(Outcome::Fail { .. }) => unreachable!("declared failures are errors"),
            Err(error) => out.extend(failures.handle(stage, event, error)?),
        }
    }
    Ok(())
}

/// What a transform emitted, as work of transaction `txn`.
fn emit_work(emit: Emit, txn: TxnId) -> Work {
    match emit.payload {
        EmitPayload::Change(e) => Work::Change(e, emit.destination),
        EmitPayload::Raw(m) => Work::Raw(m, txn, emit.destination),
    }
}

/// Applies plugins' failure policies.
struct Failures<'a> {
    status: &'a Status,
    dead_letter: Option<&'a Destination>,
}

impl Failures<'_> {
    /// Deals with a change `stage` failed on, as its policy says; returns
    /// the dead letter to deliver, if any.
    fn handle<P: StagePlugin>(
        &self,
        stage: &mut Stage<P>,
        event: ChangeEvent,
        error: String,
    ) -> Result<Option<Work>, HaltError> {
        let described = describe(&event);
        let plugin = stage.plugin().name().to_owned();
        if stage.policy == FailurePolicy::Halt {
            return Err(HaltError::PluginFailed {
                plugin,
                event: described,
                error,
            });
        }
        stage.record_failure(&described, &error)?;
        self.status.plugins.failed(&plugin, stage.policy);
        match (stage.policy, self.dead_letter) {
            (FailurePolicy::DeadLetter, Some(dest)) => {
                tracing::warn!(%plugin, event = %described, %error, sink = %dest.sink, "sent a change the plugin failed on to the dead-letter sink");
                let letter =
                    dead_letter(P::KIND, &plugin, stage.plugin().version(), &error, &event)?;
                Ok(Some(Work::Raw(letter, event.txn, Some(dest.clone()))))
            }
            _ => {
                tracing::warn!(%plugin, event = %described, %error, "skipped a change the plugin failed on");
                Ok(None)
            }
        }
    }
}

/// The dead letter of a change: a JSON document naming the plugin, its
/// version and the error, with the change in the native envelope; keyed
/// like the change, so a compacted topic keeps the last failure per row.
fn dead_letter(
    kind: &str,
    plugin: &str,
    version: &str,
    error: &str,
    event: &ChangeEvent,
) -> Result<RawMessage, HaltError> {
    crate::dead_letter::letter(
        &[
            ("plugin", plugin),
            ("plugin_kind", kind),
            ("plugin_version", version),
            ("error", error),
        ],
        vec![
            ("weir.plugin".to_owned(), plugin.as_bytes().to_vec()),
            (
                "weir.plugin_version".to_owned(),
                version.as_bytes().to_vec(),
            ),
            ("weir.error".to_owned(), error.as_bytes().to_vec()),
        ],
        event,
    )
    .map_err(|e| HaltError::Internal(format!("cannot encode a dead letter: {e}")))
}
