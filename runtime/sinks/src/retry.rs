//! Waiting between tries of a failed write: exponential backoff with
//! jitter, so that many pipelines restarting against one destination do
//! not retry in lockstep.

use std::time::Duration;

use rand::Rng as _;
use weir_core::{RetryPolicy, SinkError};

/// The wait before each next try of one failing batch.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// How long to wait after `error` before trying again, by its kind's
    /// [`RetryPolicy`]: "full jitter" (uniform between half the nominal wait
    /// and all of it) for backoffs, the destination's `retry_after` when it
    /// gave one (never more than `max`), and `max` for refused credentials.
    /// `None` when the error is not retried.
    pub fn after(&mut self, error: &SinkError) -> Option<Duration> {
        let nominal = match error.kind().policy() {
            RetryPolicy::Backoff => self.step(),
            RetryPolicy::AfterRetryAfter => match error.retry_after() {
                Some(wait) => return Some(wait.min(self.max)),
                None => self.step(),
            },
            RetryPolicy::Slowly => return Some(self.max),
            RetryPolicy::DeadLetterOrHalt | RetryPolicy::Halt => return None,
        };
        let low = nominal / 2;
        Some(low + rand::rng().random_range(Duration::ZERO..=nominal - low))
    }

    fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_follow_the_policy_table() {
        let max = Duration::from_secs(8);
        let mut b = Backoff::new(Duration::from_millis(100), max);
        let transient = SinkError::Transient("down".into());
        let mut nominal = Duration::from_millis(100);
        for _ in 0..10 {
            let wait = b.after(&transient).unwrap();
            assert!(
                wait >= nominal / 2 && wait <= nominal,
                "{wait:?} vs {nominal:?}"
            );
            nominal = (nominal * 2).min(max);
        }
        let throttled = SinkError::Throttled {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(b.after(&throttled), Some(Duration::from_secs(3)));
        let too_long = SinkError::Throttled {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(b.after(&too_long), Some(max));
        assert_eq!(b.after(&SinkError::Auth("no".into())), Some(max));
        assert_eq!(b.after(&SinkError::Config("bad".into())), None);
        assert_eq!(b.after(&SinkError::Rejected(vec![])), None);
        b.reset();
        assert!(b.after(&transient).unwrap() <= Duration::from_millis(100));
    }
}
