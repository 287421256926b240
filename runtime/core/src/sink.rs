//! The contract every sink implements: the [`Sink`] trait, what a sink can
//! take ([`Capabilities`]), and its errors, whose [kind](SinkErrorKind)
//! decides in one table ([`SinkErrorKind::policy`]) what the pipeline does.

use std::time::Duration;

use crate::SinkRecord;

/// Why a sink could not make a batch durable.
///
/// Messages do not name the sink: the pipeline prefixes the sink's name
/// once, wherever the error is reported.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination failed or is unreachable (a connection refused or
    /// broken, a timeout, a server error); the batch may be written again.
    #[error("{0}")]
    Transient(String),
    /// The destination asked Weir to slow down (HTTP 429, a rate limit),
    /// possibly saying when to come back.
    #[error("{reason}")]
    Throttled {
        /// What the destination said.
        reason: String,
        /// How long it asked Weir to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The destination refused the credentials or the permission. An
    /// operator can fix that at the destination without restarting Weir, so
    /// the pipeline keeps trying, slowly.
    #[error("{0}")]
    Auth(String),
    /// The sink's configuration cannot work (a topic that does not exist
    /// and may not be created, a table of the wrong shape). Retrying will not help.
    #[error("{0}")]
    Config(String),
    /// A change event could not be encoded for this sink at all.
    #[error("{0}")]
    Encode(String),
    /// Local I/O failed; the batch may be written again.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The destination refused some records for good (too large, a name it
    /// does not accept, a value it cannot store...); every other record of
    /// the batch is durable. Writing the refused ones again would fail the
    /// same way.
    #[error("{}", describe_rejected(.0))]
    Rejected(Vec<Rejected>),
}

/// One record of a batch that the destination refused for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the batch given to [`Sink::write`].
    pub index: usize,
    /// Why.
    pub reason: String,
}

fn describe_rejected(rejected: &[Rejected]) -> String {
    match rejected {
        [] => "no record was rejected".to_owned(),
        [one] => one.reason.clone(),
        [first, rest @ ..] => format!("{} (and {} more records)", first.reason, rest.len()),
    }
}

/// The kind of a [`SinkError`]: what can be done about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// A failure that may pass: write the batch again after a backoff.
    Transient,
    /// The destination asked to slow down.
    Throttled,
    /// Credentials or permissions refused.
    Auth,
    /// The configuration cannot work; nothing the sink can do.
    Config,
    /// Some records were refused for good, the rest is durable.
    Rejected,
}

/// What the pipeline does about a failed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Write the batch again after an exponential backoff with jitter.
    Backoff,
    /// Write the batch again after the destination's `retry_after`, or the
    /// backoff when it gave none.
    AfterRetryAfter,
    /// Write the batch again at the longest backoff, reporting the sink as
    /// failing: it recovers by itself once an operator fixes the credentials.
    Slowly,
    /// Send the refused records to the dead-letter sink (which counts as
    /// delivering them), or halt naming the first one when there is none.
    DeadLetterOrHalt,
    /// Halt the pipeline: nothing from the batch on is acknowledged.
    Halt,
}

impl SinkErrorKind {
    /// The one table that decides retries.
    pub const fn policy(self) -> RetryPolicy {
        match self {
            SinkErrorKind::Transient => RetryPolicy::Backoff,
            SinkErrorKind::Throttled => RetryPolicy::AfterRetryAfter,
            SinkErrorKind::Auth => RetryPolicy::Slowly,
            SinkErrorKind::Rejected => RetryPolicy::DeadLetterOrHalt,
            SinkErrorKind::Config => RetryPolicy::Halt,
        }
    }
}

impl SinkError {
    /// What kind of error this is.
    pub fn kind(&self) -> SinkErrorKind {
        match self {
            SinkError::Transient(_) | SinkError::Io(_) => SinkErrorKind::Transient,
            SinkError::Throttled { .. } => SinkErrorKind::Throttled,
            SinkError::Auth(_) => SinkErrorKind::Auth,
            SinkError::Rejected(_) => SinkErrorKind::Rejected,
            SinkError::Config(_) | SinkError::Encode(_) => SinkErrorKind::Config,
        }
    }

    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind().policy(),
            RetryPolicy::Backoff | RetryPolicy::AfterRetryAfter | RetryPolicy::Slowly
        )
    }

    /// How long the destination asked Weir to wait before the next try.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a sink can take, which the pipeline respects before calling
/// [`Sink::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Most records in one batch; the pipeline splits larger ones.
    pub max_batch_records: usize,
    /// Most bytes in one batch, as [`SinkRecord::estimated_size`] counts
    /// them; the pipeline splits larger batches (a single larger record
    /// still goes alone).
    pub max_batch_bytes: usize,
    /// Every row change must have a key (key columns, from the primary key
    /// or the replica identity). The pipeline refuses a keyless change as a
    /// rejected record before it reaches the sink, so a keyless table can
    /// never be written under a made-up or empty key.
    pub needs_key: bool,
    /// The sink applies state (upserts, deletes, truncates) rather than
    /// appending a log, so it guards every write with the record's
    /// [`Position`](crate::Position): an older change never overwrites a
    /// newer one, and a replay leaves the same final state.
    pub applies_state: bool,
    /// The sink can write raw records (a plugin's own bytes). When it
    /// cannot, the pipeline refuses them as rejected records.
    pub accepts_raw: bool,
}

impl Capabilities {
    /// An append-only log that takes anything, in batches of any size.
    pub const LOG: Capabilities = Capabilities {
        max_batch_records: usize::MAX,
        max_batch_bytes: usize::MAX,
        needs_key: false,
        applies_state: false,
        accepts_raw: true,
    };
}

/// A destination for records.
///
/// Delivery is at-least-once: after a crash, records since the last
/// acknowledged transaction are written again. `write` must return `Ok`
/// only when every record in the batch is durable at the destination (for
/// a file: written and fsynced; for Kafka: acknowledged by all in-sync
/// replicas), or [`SinkError::Rejected`] when every record but the refused
/// ones is. The return of `write`, not the call, is what lets the source
/// position advance, so a sink must never report a batch it merely queued.
/// Records of one batch are in commit order and must stay in that order
/// for any one key. A sink that [applies state](Capabilities::applies_state)
/// must also leave the same final state when any suffix of what it was
/// given is written again, in any number of later batches.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// The sink's name in the configuration, for logs.
    fn name(&self) -> &str;

    /// Write a batch and return once all of it is durable.
    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError>;

    /// Flush and release resources before shutdown.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_policy() {
        let cases = [
            (
                SinkError::Transient("down".into()),
                RetryPolicy::Backoff,
                true,
            ),
            (
                SinkError::Throttled {
                    reason: "429".into(),
                    retry_after: Some(Duration::from_secs(3)),
                },
                RetryPolicy::AfterRetryAfter,
                true,
            ),
            (SinkError::Auth("no".into()), RetryPolicy::Slowly, true),
            (SinkError::Config("bad".into()), RetryPolicy::Halt, false),
            (SinkError::Encode("bad".into()), RetryPolicy::Halt, false),
            (
                SinkError::Io(std::io::Error::other("disk")),
                RetryPolicy::Backoff,
                true,
            ),
            (
                SinkError::Rejected(vec![]),
                RetryPolicy::DeadLetterOrHalt,
                false,
            ),
        ];
        for (error, policy, retryable) in cases {
            assert_eq!(error.kind().policy(), policy, "{error:?}");
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
    }
}
