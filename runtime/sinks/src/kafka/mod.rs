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
//! sink's `topic` template (`message_topic` for logical messages), with
//! placeholders filled from the event. The first time a topic is used the
//! sink checks that it exists and creates it when `create_topics` is set.

mod config;
mod encode;
mod sink;

#[cfg(test)]
mod tests;

pub use config::KafkaSinkConfig;
pub use sink::KafkaSink;
