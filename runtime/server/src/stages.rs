//! The plugin stages of the processor: one transform of the chain, or the
//! router, with its current instance, its failure policy and its circuit
//! breaker.
//!
//! A batch the plugin fails on is narrowed down to the change it fails on
//! (re-running prefixes on fresh instances), so the policy applies to that
//! change alone and the rest of the batch goes on. A change is blamed only
//! when it fails in a call of its own: a batch that fails only because it
//! is large goes on in smaller calls, and so do the batches after it until
//! calls of that size have passed for a while.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use weir_core::{ChangeEvent, Destination};
use weir_wasm::{
    Emit, Outcome, PluginError, RouterInstance, RouterPlugin, Transaction, TransformInstance,
    TransformPlugin, find_failing_event, find_failing_route,
};

use crate::config::{BreakerConfig, FailurePolicy};
use crate::halt::{HaltError, describe};

/// How many times in a row a batch may fail and then pass when re-run on
/// a fresh instance before the stage gives up: a plugin that fails at
/// random cannot be narrowed down to a change.
const MAX_UNEXPLAINED: u32 = 3;

/// How many calls must pass at a reduced size before the stage tries
/// calls twice as large. Each time a larger size fails again this doubles,
/// up to [`MAX_PATIENCE`]: a size problem that persists (a deadline too
/// short for the batches) costs a failing call and its bisection less and
/// less often.
const GROW_AFTER: u32 = 16;
/// The most calls that must pass at a reduced size before a larger one is
/// tried.
const MAX_PATIENCE: u32 = 1024;

/// What the processor needs of a transform or router plugin.
pub(crate) trait StagePlugin {
    /// A live instance.
    type Instance;
    /// The plugin's answer for one change (copied for a shadow version
    /// to be compared with).
    type Answer: Clone + Send;
    /// `transform` or `router`, for reports.
    const KIND: &'static str;

    fn name(&self) -> &str;
    fn version(&self) -> &str;
    fn instantiate(&self) -> Result<Self::Instance, PluginError>;
    fn run(
        instance: &mut Self::Instance,
        batch: &[ChangeEvent],
    ) -> Result<Vec<Self::Answer>, PluginError>;
    fn find_failing(
        &self,
        batch: &[ChangeEvent],
    ) -> Result<Option<(usize, PluginError)>, PluginError>;
    /// A failure the plugin reported itself in its answer.
    fn declared_failure(_answer: &Self::Answer) -> Option<String> {
        None
    }
}

impl StagePlugin for TransformPlugin {
    type Instance = TransformInstance;
    type Answer = Outcome;
    const KIND: &'static str = "transform";

    fn name(&self) -> &str {
        TransformPlugin::name(self)
    }
    fn version(&self) -> &str {
        TransformPlugin::version(self)
    }
    fn instantiate(&self) -> Result<TransformInstance, PluginError> {
        TransformPlugin::instantiate(self)
    }
    fn run(
        instance: &mut TransformInstance,
        batch: &[ChangeEvent],
    ) -> Result<Vec<Outcome>, PluginError> {
        instance.process(batch)
    }
    fn find_failing(
        &self,
        batch: &[ChangeEvent],
    ) -> Result<Option<(usize, PluginError)>, PluginError> {
        find_failing_event(self, batch)
    }
    fn declared_failure(answer: &Outcome) -> Option<String> {
        match answer {
            Outcome::Fail { message, .. } => Some(format!("it rejected the change: {message}")),
            _ => None,
        }
    }
}

impl StagePlugin for RouterPlugin {
    type Instance = RouterInstance;
    type Answer = Vec<Destination>;
    const KIND: &'static str = "router";

    fn name(&self) -> &str {
        RouterPlugin::name(self)
    }
    fn version(&self) -> &str {
        RouterPlugin::version(self)
    }
    fn instantiate(&self) -> Result<RouterInstance, PluginError> {
        RouterPlugin::instantiate(self)
    }
    fn run(
        instance: &mut RouterInstance,
        batch: &[ChangeEvent],
    ) -> Result<Vec<Vec<Destination>>, PluginError> {
        instance.route(batch)
    }
    fn find_failing(
        &self,
        batch: &[ChangeEvent],
    ) -> Result<Option<(usize, PluginError)>, PluginError> {
        find_failing_route(self, batch)
    }
}

/// One plugin of the pipeline and its current instance. A failed instance
/// is dropped; the next call gets a fresh one (the plugin's own state is
/// lost then, which plugins must expect).
pub(crate) struct Stage<P: StagePlugin> {
    plugin: P,
    instance: Option<P::Instance>,
    /// What happens to a change the plugin fails on.
    pub(crate) policy: FailurePolicy,
    breaker: Breaker,
    sizing: Sizing,
}

impl<P: StagePlugin> Stage<P> {
    pub(crate) fn new(plugin: P, policy: FailurePolicy, breaker: &BreakerConfig) -> Self {
        Stage {
            plugin,
            instance: None,
            policy,
            breaker: Breaker::new(breaker),
            sizing: Sizing::default(),
        }
    }

    pub(crate) fn plugin(&self) -> &P {
        &self.plugin
    }

    /// Replaces the plugin by a new version; its first instance is made
    /// for the next batch.
    pub(crate) fn swap(&mut self, plugin: P) {
        self.plugin = plugin;
        self.instance = None;
        self.sizing = Sizing::default();
    }

    /// Drops the current instance; the next call gets a fresh one, as
    /// large as the batch.
    pub(crate) fn reset(&mut self) {
        self.instance = None;
        self.sizing = Sizing::default();
    }

    /// Most changes the stage puts in one call now, after calls failed for
    /// their size; `None` while it does not cut batches.
    pub(crate) fn per_call(&self) -> Option<usize> {
        self.sizing.limit
    }

    /// Makes the first instance now, so a plugin refusing its
    /// configuration is reported before any change.
    pub(crate) fn start(&mut self) -> Result<(), HaltError> {
        self.instance().map(|_| ())
    }

    fn instance(&mut self) -> Result<&mut P::Instance, HaltError> {
        if self.instance.is_none() {
            self.instance = Some(self.plugin.instantiate()?);
        }
        Ok(self.instance.as_mut().expect("just made"))
    }

    /// The plugin's answer for each change of `batch`, or why it failed on
    /// that change. `Err` only for what no change can be blamed for (the
    /// plugin's `init` failing, a failure that does not recur).
    ///
    /// A change is blamed only when it fails in a call of its own. A batch
    /// can also fail because it is large (the call deadline, the memory
    /// limit): then the last change of the shortest failing prefix passes
    /// alone, and calls are no larger than the longest prefix that passed,
    /// for this batch and the next ones, until enough of them pass (see
    /// [`GROW_AFTER`]). A change that runs out of time or memory alone on
    /// the instance that ran the changes before it is run again on a fresh
    /// instance, and blamed only if it fails there too: WebAssembly memory
    /// never shrinks, so a long-lived instance may be near its cap, and a
    /// deadline can be missed for a busy machine.
    pub(crate) fn run(
        &mut self,
        batch: &[ChangeEvent],
    ) -> Result<Vec<Result<P::Answer, String>>, HaltError> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut start = 0;
        let mut unexplained = 0;
        self.sizing.widest = self.sizing.widest.max(batch.len());
        // Set while the next call is a suspect alone: the most changes per
        // call if it passes.
        let mut suspect: Option<usize> = None;
        while start < batch.len() {
            let len = match suspect {
                Some(_) => 1,
                None => self.sizing.per_call(batch.len() - start),
            };
            let call = &batch[start..start + len];
            let error = match P::run(self.instance()?, call) {
                Ok(done) => {
                    answers.extend(judge::<P>(done));
                    start += len;
                    match suspect.take() {
                        Some(fits) => self.shrink(fits, batch.len()),
                        None => self.sizing.passed(len),
                    }
                    continue;
                }
                Err(error) => error,
            };
            self.instance = None;
            if let Some(fits) = suspect.take() {
                // Failed alone, after the changes before it: to blame,
                // unless the instance rather than the change ran short.
                let error = if runs_short(&error) {
                    match P::run(self.instance()?, call) {
                        Ok(done) => {
                            tracing::warn!(
                                plugin = %self.plugin.name(),
                                event = %describe(&call[0]),
                                %error,
                                "a change failed alone on the instance that had run the changes before it, and passed alone on a fresh instance; nothing is blamed, and the fresh instance goes on"
                            );
                            answers.extend(judge::<P>(done));
                            start += 1;
                            // The prefix one longer than `fits` failed on
                            // a fresh instance too, for its size.
                            self.shrink(fits, batch.len());
                            continue;
                        }
                        Err(again) => {
                            self.instance = None;
                            again
                        }
                    }
                } else {
                    error
                };
                answers.push(Err(error.to_string()));
                start += 1;
                continue;
            }
            let found = self
                .plugin
                .find_failing(call)
                .map_err(|e| HaltError::PluginFailed {
                    plugin: self.plugin.name().to_owned(),
                    event: format!("a batch of {len} changes"),
                    error: format!("{error}; isolating the failing change failed too: {e}"),
                })?;
            let Some((culprit, culprit_error)) = found else {
                unexplained += 1;
                if unexplained >= MAX_UNEXPLAINED {
                    return Err(HaltError::PluginFailed {
                        plugin: self.plugin.name().to_owned(),
                        event: format!("a batch of {len} changes"),
                        error: format!(
                            "{error} (the failure did not recur when the batch was re-run on a fresh instance, {MAX_UNEXPLAINED} times)"
                        ),
                    });
                }
                continue;
            };
            if culprit == 0 {
                // It failed alone, on a fresh instance.
                answers.push(Err(culprit_error.to_string()));
                start += 1;
                continue;
            }
            // The changes before the culprit pass on a fresh instance: run
            // them on the instance that goes on, for their answers.
            match P::run(self.instance()?, &call[..culprit]) {
                Ok(done) => answers.extend(judge::<P>(done)),
                Err(_) => {
                    // Passed during isolation, failed now: not
                    // deterministic. Start over from `start`.
                    self.instance = None;
                    unexplained += 1;
                    if unexplained >= MAX_UNEXPLAINED {
                        return Err(HaltError::PluginFailed {
                            plugin: self.plugin.name().to_owned(),
                            event: describe(&call[culprit]),
                            error: format!("{culprit_error} (and it fails unpredictably)"),
                        });
                    }
                    continue;
                }
            }
            start += culprit;
            // The culprit alone next, on the instance that saw the changes
            // before it: either it fails there and is to blame, or the
            // call failed for its size and `culprit` changes per call pass.
            suspect = Some(culprit);
        }
        Ok(answers)
    }

    /// Cuts calls to `fits` changes after a batch of `changes` failed for
    /// its size.
    fn shrink(&mut self, fits: usize, changes: usize) {
        self.sizing.shrink(fits);
        tracing::warn!(
            plugin = %self.plugin.name(),
            changes,
            per_call = fits,
            "a batch failed for its size, not for one of its changes; it goes on in smaller calls, and so do the next batches until calls of that size have passed {} times",
            self.sizing.patience
        );
    }

    /// Counts a failure of the plugin; an error when there were more in the
    /// breaker's window than it allows.
    pub(crate) fn record_failure(&mut self, event: &str, error: &str) -> Result<(), HaltError> {
        match self.breaker.trip(Instant::now()) {
            None => Ok(()),
            Some(failures) => Err(HaltError::CircuitOpen {
                plugin: self.plugin.name().to_owned(),
                failures,
                window: self.breaker.window,
                last: format!("{event}: {error}"),
            }),
        }
    }
}

/// Whether a call may have failed for what the instance had used up
/// before it (memory, which never shrinks) or for the machine (the
/// deadline) rather than for its changes.
fn runs_short(error: &PluginError) -> bool {
    matches!(
        error,
        PluginError::MemoryLimit { .. } | PluginError::Timeout { .. }
    )
}

/// How many changes a stage puts in one call: cut down when a call fails
/// for its size, grown back by doubling after calls of the reduced size
/// have passed.
#[derive(Debug)]
struct Sizing {
    /// Most changes per call; `None`: the whole batch.
    limit: Option<usize>,
    /// Calls of `limit` changes that passed since it was last set.
    passed: u32,
    /// How many such calls it takes to double `limit`.
    patience: u32,
    /// Whether `limit` was reached by growing, so that failing at it means
    /// growing was premature.
    grown: bool,
    /// The largest batch the stage was given: growing past it ends the
    /// limit.
    widest: usize,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            limit: None,
            passed: 0,
            patience: GROW_AFTER,
            grown: false,
            widest: 0,
        }
    }
}

impl Sizing {
    /// The size of the next call when `rest` changes are left.
    fn per_call(&self, rest: usize) -> usize {
        self.limit.map_or(rest, |limit| limit.min(rest))
    }

    /// A call of `len` changes passed.
    fn passed(&mut self, len: usize) {
        let Some(limit) = self.limit else {
            return;
        };
        // Smaller calls (the end of a batch) say nothing about the limit.
        if len < limit {
            return;
        }
        self.passed += 1;
        if self.passed >= self.patience {
            let next = limit.saturating_mul(2);
            self.limit = (next < self.widest).then_some(next);
            self.passed = 0;
            self.grown = true;
        }
    }

    /// A call larger than `fits` changes failed for its size.
    fn shrink(&mut self, fits: usize) {
        if self.grown {
            self.patience = self.patience.saturating_mul(2).min(MAX_PATIENCE);
        }
        self.limit = Some(fits);
        self.passed = 0;
        self.grown = false;
    }
}

/// Answers, with the failures the plugin declared in them set apart.
fn judge<P: StagePlugin>(
    answers: Vec<P::Answer>,
) -> impl Iterator<Item = Result<P::Answer, String>> {
    answers.into_iter().map(|a| match P::declared_failure(&a) {
        Some(why) => Err(why),
        None => Ok(a),
    })
}

impl Stage<TransformPlugin> {
    /// Whether the current version of the plugin asked for the `commit`
    /// hook.
    pub(crate) fn wants_commit(&mut self) -> Result<bool, HaltError> {
        Ok(self.instance()?.wants_commit())
    }

    /// Runs the `commit` hook. A failure there cannot be pinned on one
    /// change, so it halts whatever the policy.
    pub(crate) fn commit(&mut self, txn: &Transaction) -> Result<Vec<Emit>, HaltError> {
        self.instance()?.commit(txn).map_err(|error| {
            self.instance = None;
            HaltError::PluginFailed {
                plugin: self.plugin.name().to_owned(),
                event: format!(
                    "the commit of transaction xid {} (commit LSN {})",
                    txn.xid, txn.commit_lsn
                ),
                error: error.to_string(),
            }
        })
    }
}

/// Counts failures in a sliding window.
struct Breaker {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Breaker {
    fn new(config: &BreakerConfig) -> Self {
        Breaker {
            max: config.max_failures,
            window: config.window,
            recent: VecDeque::new(),
        }
    }

    /// Records a failure at `now`; the number of failures in the window
    /// when that is more than allowed.
    fn trip(&mut self, now: Instant) -> Option<usize> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        (self.recent.len() > self.max as usize).then_some(self.recent.len())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use weir_core::{Op, SourceInfo, TxnId};

    use super::*;

    /// A plugin whose calls fail with more than `per_call` changes (as a
    /// memory limit would), on the change `bad`, on the change `then` once
    /// the instance has seen `first`, for memory on the change `hog`, and
    /// for memory once the instance has taken `lifetime` changes (as
    /// memory that never shrinks would). Answers each change's `seq`.
    struct Fake {
        per_call: usize,
        bad: Option<u32>,
        after: Option<(u32, u32)>,
        hog: Option<u32>,
        lifetime: Option<usize>,
        /// The length of every call on an instance that goes on.
        calls: Rc<RefCell<Vec<usize>>>,
        /// Calls on probe instances, isolating a failing change.
        probes: Rc<Cell<usize>>,
    }

    struct FakeInstance {
        per_call: usize,
        bad: Option<u32>,
        after: Option<(u32, u32)>,
        hog: Option<u32>,
        lifetime: Option<usize>,
        seen: Vec<u32>,
        calls: Option<Rc<RefCell<Vec<usize>>>>,
    }

    impl Fake {
        fn new(per_call: usize) -> Fake {
            Fake {
                per_call,
                bad: None,
                after: None,
                hog: None,
                lifetime: None,
                calls: Rc::default(),
                probes: Rc::default(),
            }
        }

        fn make(&self, calls: Option<Rc<RefCell<Vec<usize>>>>) -> FakeInstance {
            FakeInstance {
                per_call: self.per_call,
                bad: self.bad,
                after: self.after,
                hog: self.hog,
                lifetime: self.lifetime,
                seen: Vec::new(),
                calls,
            }
        }
    }

    fn fail(message: &str) -> PluginError {
        PluginError::Trap {
            plugin: "fake".into(),
            message: message.into(),
        }
    }

    impl StagePlugin for Fake {
        type Instance = FakeInstance;
        type Answer = u32;
        const KIND: &'static str = "transform";

        fn name(&self) -> &str {
            "fake"
        }
        fn version(&self) -> &str {
            "0"
        }
        fn instantiate(&self) -> Result<FakeInstance, PluginError> {
            Ok(self.make(Some(self.calls.clone())))
        }
        fn run(i: &mut FakeInstance, batch: &[ChangeEvent]) -> Result<Vec<u32>, PluginError> {
            if let Some(calls) = &i.calls {
                calls.borrow_mut().push(batch.len());
            }
            let out_of_memory = || PluginError::MemoryLimit {
                plugin: "fake".into(),
                limit: 1,
            };
            if batch.len() > i.per_call {
                return Err(out_of_memory());
            }
            for e in batch {
                let seq = e.source.seq;
                if Some(seq) == i.hog || i.lifetime.is_some_and(|n| i.seen.len() >= n) {
                    return Err(out_of_memory());
                }
                if Some(seq) == i.bad {
                    return Err(fail(&format!("bad {seq}")));
                }
                if let Some((first, then)) = i.after
                    && seq == then
                    && i.seen.contains(&first)
                {
                    return Err(fail(&format!("{then} after {first}")));
                }
                i.seen.push(seq);
            }
            Ok(batch.iter().map(|e| e.source.seq).collect())
        }
        fn find_failing(
            &self,
            batch: &[ChangeEvent],
        ) -> Result<Option<(usize, PluginError)>, PluginError> {
            for n in 1..=batch.len() {
                self.probes.set(self.probes.get() + 1);
                if let Err(e) = Self::run(&mut self.make(None), &batch[..n]) {
                    return Ok(Some((n - 1, e)));
                }
            }
            Ok(None)
        }
    }

    fn changes(n: u32) -> Vec<ChangeEvent> {
        (0..n)
            .map(|seq| ChangeEvent {
                op: Op::Insert,
                table: None,
                before: None,
                after: None,
                message: None,
                source: SourceInfo {
                    seq,
                    ..SourceInfo::default()
                },
                txn: TxnId(1),
            })
            .collect()
    }

    fn stage(plugin: Fake) -> Stage<Fake> {
        Stage::new(
            plugin,
            FailurePolicy::DeadLetter,
            &BreakerConfig {
                max_failures: 100,
                window: Duration::from_secs(60),
            },
        )
    }

    /// The indexes of the changes blamed.
    fn blamed(answers: &[Result<u32, String>]) -> Vec<usize> {
        (0..answers.len())
            .filter(|i| answers[*i].is_err())
            .collect()
    }

    #[test]
    fn a_batch_too_large_for_one_call_blames_no_change() {
        let plugin = Fake::new(30);
        let calls = plugin.calls.clone();
        let mut s = stage(plugin);
        let answers = s.run(&changes(100)).unwrap();
        let passed: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(passed, (0..100).collect::<Vec<_>>());
        // One call too large, then calls that fit, each change once.
        let calls = calls.borrow();
        assert_eq!(calls.iter().filter(|n| **n > 30).count(), 1, "{calls:?}");
        assert_eq!(calls.iter().filter(|n| **n <= 30).sum::<usize>(), 100);
    }

    #[test]
    fn only_a_change_that_fails_alone_is_blamed() {
        // Failing alone, inside a batch that is also too large.
        for bad in [0, 17, 29, 30, 57, 99] {
            let mut plugin = Fake::new(30);
            plugin.bad = Some(bad);
            let answers = stage(plugin).run(&changes(100)).unwrap();
            assert_eq!(blamed(&answers), [bad as usize], "bad {bad}");
            assert_eq!(
                answers[bad as usize],
                Err(format!("plugin `fake` trapped: bad {bad}"))
            );
        }
        // Failing only after an earlier change of the same instance.
        let mut plugin = Fake::new(1000);
        plugin.after = Some((3, 8));
        let answers = stage(plugin).run(&changes(20)).unwrap();
        assert_eq!(blamed(&answers), [8]);
        assert_eq!(answers[8], Err("plugin `fake` trapped: 8 after 3".into()));
    }

    /// Runs `s` on a batch of `n` changes that must all pass; the lengths
    /// of its calls on instances that go on.
    fn calls_of(s: &mut Stage<Fake>, n: u32) -> Vec<usize> {
        s.plugin.calls.borrow_mut().clear();
        let passed: Vec<u32> = s
            .run(&changes(n))
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(passed, (0..n).collect::<Vec<_>>());
        s.plugin.calls.take()
    }

    #[test]
    fn a_reduced_call_size_holds_for_the_next_batches_and_grows_back() {
        let mut s = stage(Fake::new(30));
        let first = calls_of(&mut s, 100);
        assert_eq!(first.iter().filter(|n| **n > 30).count(), 1, "{first:?}");
        // The next batch is cut up front: no call fails, no change is probed.
        let probes = s.plugin.probes.replace(0);
        assert!(probes > 0);
        assert_eq!(calls_of(&mut s, 100), [30, 30, 30, 10]);
        assert_eq!(s.plugin.probes.get(), 0);
        // After enough calls of 30 pass (3 a batch), larger ones are tried,
        // at most twice as large, once; then it takes longer to try again.
        let tried_after = |s: &mut Stage<Fake>| {
            (1..=200)
                .find_map(|n| {
                    let calls = calls_of(s, 100);
                    let larger: Vec<usize> = calls.iter().copied().filter(|n| *n > 30).collect();
                    (!larger.is_empty()).then_some((n, larger))
                })
                .expect("calls never grew back")
        };
        let (batches, larger) = tried_after(&mut s);
        assert!(batches > 1, "tried larger calls after {batches} batches");
        assert_eq!(larger.len(), 1, "{larger:?}");
        assert!(larger[0] <= 60, "{larger:?}");
        assert_eq!(calls_of(&mut s, 100), [30, 30, 30, 10]);
        let (again, _) = tried_after(&mut s);
        assert!(again >= 2 * batches, "{batches} batches, then {again}");
        // When calls of any size pass again, whole batches do too.
        s.plugin.per_call = 1000;
        s.instance = None;
        assert!(
            (1..=500).any(|_| calls_of(&mut s, 100) == [100]),
            "calls never grew back to whole batches"
        );
        // A new version starts with whole batches.
        s.plugin.per_call = 30;
        s.instance = None;
        calls_of(&mut s, 100);
        assert_eq!(calls_of(&mut s, 100), [30, 30, 30, 10]);
        s.swap(Fake::new(1000));
        assert_eq!(calls_of(&mut s, 100), [100]);
    }

    #[test]
    fn a_change_failing_alone_on_a_worn_instance_is_retried_on_a_fresh_one() {
        // Memory an instance used never comes back: the 51st change of an
        // instance runs out of memory, alone too, yet passes alone on a
        // fresh instance.
        let mut plugin = Fake::new(1000);
        plugin.lifetime = Some(50);
        let answers = stage(plugin).run(&changes(100)).unwrap();
        let passed: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(passed, (0..100).collect::<Vec<_>>());
        // A change that runs out of memory alone on a fresh instance too is
        // to blame.
        let mut plugin = Fake::new(1000);
        plugin.hog = Some(57);
        let answers = stage(plugin).run(&changes(100)).unwrap();
        assert_eq!(blamed(&answers), [57]);
        assert_eq!(
            answers[57],
            Err("plugin `fake` was stopped for exceeding its memory limit of 1 bytes".into())
        );
    }

    #[test]
    fn the_breaker_trips_past_its_limit_within_the_window() {
        let mut b = Breaker::new(&BreakerConfig {
            max_failures: 2,
            window: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert_eq!(b.trip(t0), None);
        assert_eq!(b.trip(t0 + Duration::from_secs(1)), None);
        assert_eq!(b.trip(t0 + Duration::from_secs(2)), Some(3));
        // Old failures leave the window.
        let mut b = Breaker::new(&BreakerConfig {
            max_failures: 2,
            window: Duration::from_secs(10),
        });
        assert_eq!(b.trip(t0), None);
        assert_eq!(b.trip(t0 + Duration::from_secs(5)), None);
        assert_eq!(b.trip(t0 + Duration::from_secs(11)), None);
        assert_eq!(b.trip(t0 + Duration::from_secs(12)), Some(3));
    }
}
