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
}

impl SinkError {
    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Unavailable(_) | SinkError::Io(_))
    }
}

/// A destination for records.
///
/// Delivery is at-least-once: after a crash, records since the last
/// acknowledged transaction are written again. `write` must return `Ok`
/// only when every record in the batch is durable at the destination (for
/// a file: written and fsynced; for Kafka: acknowledged by all in-sync
/// replicas). The return of `write`, not the call, is what lets the source
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
