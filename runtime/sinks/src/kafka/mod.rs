//! The `kafka` sink: one Kafka message per record, produced idempotently
//! with `acks=all`; a batch is acknowledged once every message in it is.
//!
//! ```toml
//! [sinks.events]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"
//! create_topics = true
//! ```
//!
//! Topics are chosen per record: the topic the router gave it, else the
//! sink's `topic` template (`message_topic` for logical messages,
//! `raw_topic` for raw records), with placeholders filled from the event.
//! The first time a topic is used the sink checks that it exists and
//! creates it when `create_topics` is set.
//!
//! With `encoding = "debezium"` keys and values are Debezium's PostgreSQL
//! connector events (see [`weir_codec::DebeziumEncoder`]), topics default
//! to Debezium's `PREFIX.SCHEMA.TABLE` and `PREFIX.message`, and each
//! delete is followed by a tombstone (same key, no value) unless
//! `[sinks.NAME.debezium] tombstones_on_delete = false`; a delete and its
//! tombstone are one record for acknowledgement and rejection.
//!
//! A record the brokers refuse for good (too large, an illegal topic name)
//! is reported as [`weir_core::SinkError::Rejected`] while the rest of its
//! batch is written, so that the pipeline can dead-letter it.

mod config;
mod encode;
mod sink;

#[cfg(test)]
mod tests;

pub use config::{KafkaSinkConfig, SecurityProtocol};
pub use sink::KafkaSink;

use crate::registry::{SinkType, parse_as};

/// The `kafka` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "kafka",
    parse: parse_as::<KafkaSinkConfig>,
};
