//! The plugin stages of the processor: one transform of the chain, or the
//! router, with its current instance, its failure policy and its circuit
//! breaker.
//!
//! A batch the plugin fails on is narrowed down to the change it fails on
//! (re-running prefixes on fresh instances), so the policy applies to that
//! change alone and the rest of the batch goes on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use weir_core::{ChangeEvent, Destination};
use weir_wasm::{
    Emit, Outcome, PluginError, RouterInstance, RouterPlugin, Transaction, TransformInstance,
    TransformPlugin, find_failing_event, find_failing_route,
};

use crate::config::{BreakerConfig, FailurePolicy};
use crate::pipeline::{HaltError, describe};

/// How many times in a row a batch may fail and then pass when re-run on
/// a fresh instance before the stage gives up: a plugin that fails at
/// random cannot be narrowed down to a change.
const MAX_UNEXPLAINED: u32 = 3;

/// What the processor needs of a transform or router plugin.
pub(crate) trait StagePlugin {
    /// A live instance.
    type Instance;
    /// The plugin's answer for one change.
    type Answer;
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
}

impl<P: StagePlugin> Stage<P> {
    pub(crate) fn new(plugin: P, policy: FailurePolicy, breaker: &BreakerConfig) -> Self {
        Stage {
            plugin,
            instance: None,
            policy,
            breaker: Breaker::new(breaker),
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
    }

    /// Drops the current instance; the next call gets a fresh one.
    pub(crate) fn reset(&mut self) {
        self.instance = None;
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
    pub(crate) fn run(
        &mut self,
        batch: &[ChangeEvent],
    ) -> Result<Vec<Result<P::Answer, String>>, HaltError> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut start = 0;
        let mut unexplained = 0;
        while start < batch.len() {
            let rest = &batch[start..];
            let error = match P::run(self.instance()?, rest) {
                Ok(done) => {
                    answers.extend(judge::<P>(done));
                    break;
                }
                Err(error) => error,
            };
            self.instance = None;
            let found = self
                .plugin
                .find_failing(rest)
                .map_err(|e| HaltError::PluginFailed {
                    plugin: self.plugin.name().to_owned(),
                    event: format!("a batch of {} changes", rest.len()),
                    error: format!("{error}; isolating the failing change failed too: {e}"),
                })?;
            let Some((culprit, culprit_error)) = found else {
                unexplained += 1;
                if unexplained >= MAX_UNEXPLAINED {
                    return Err(HaltError::PluginFailed {
                        plugin: self.plugin.name().to_owned(),
                        event: format!("a batch of {} changes", rest.len()),
                        error: format!(
                            "{error} (the failure did not recur when the batch was re-run on a fresh instance, {MAX_UNEXPLAINED} times)"
                        ),
                    });
                }
                continue;
            };
            // The changes before the culprit pass on a fresh instance: run
            // them on the instance that goes on, for their answers.
            if culprit > 0 {
                match P::run(self.instance()?, &rest[..culprit]) {
                    Ok(done) => answers.extend(judge::<P>(done)),
                    Err(_) => {
                        // Passed during isolation, failed now: not
                        // deterministic. Start over from `start`.
                        self.instance = None;
                        unexplained += 1;
                        if unexplained >= MAX_UNEXPLAINED {
                            return Err(HaltError::PluginFailed {
                                plugin: self.plugin.name().to_owned(),
                                event: describe(&rest[culprit]),
                                error: format!("{culprit_error} (and it fails unpredictably)"),
                            });
                        }
                        continue;
                    }
                }
            }
            answers.push(Err(culprit_error.to_string()));
            start += culprit + 1;
        }
        Ok(answers)
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
    use super::*;

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
