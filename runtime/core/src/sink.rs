//! The contract every sink implements.

use crate::SinkRecord;

/// Why a sink could not make a batch durable.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink's configuration cannot work (for example a topic that does
    /// not exist and may not be created). Retrying will not help.
    #[error("{0}")]
    Config(String),
    /// The destination failed or is unreachable; the batch may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// A record could not be encoded for this sink.
    #[error("{0}")]
    Encode(String),
    /// Local I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The destination refused some records for good (too large, a topic
    /// name it does not accept...); every other record of the batch is
    /// durable. Writing the refused ones again would fail the same way.
    #[error("{}", describe_rejected(.0))]
    Rejected(Vec<Rejected>),
}

/// One record of a batch that the destination refused for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the batch given to [`Sink::write`].
    pub index: usize,
    /// Why, naming the sink.
    pub reason: String,
}

fn describe_rejected(rejected: &[Rejected]) -> String {
    match rejected {
        [] => "no record was rejected".to_owned(),
        [one] => one.reason.clone(),
        [first, rest @ ..] => format!("{} (and {} more records)", first.reason, rest.len()),
    }
}

/// What can be done about a [`SinkError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// Writing the same batch again may succeed.
    Retryable,
    /// Some records were refused for good, the rest is durable: the refused
    /// ones can go to a dead-letter sink.
    Rejected,
    /// The sink cannot work until an operator changes something.
    Fatal,
}

impl SinkError {
    /// What can be done about this error.
    pub fn kind(&self) -> SinkErrorKind {
        match self {
            SinkError::Unavailable(_) | SinkError::Io(_) => SinkErrorKind::Retryable,
            SinkError::Rejected(_) => SinkErrorKind::Rejected,
            SinkError::Config(_) | SinkError::Encode(_) => SinkErrorKind::Fatal,
        }
    }

    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind() == SinkErrorKind::Retryable
    }
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
/// for any one key.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// The sink's name in the configuration, for messages.
    fn name(&self) -> &str;

    /// Write a batch and return once all of it is durable.
    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError>;

    /// Flush and release resources before shutdown.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
