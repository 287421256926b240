//! Weir's sinks: where change events leave the pipeline.
//!
//! ```text
//! Postgres WAL ──▶ source ──▶ transforms ──▶ router ──▶ sinks (this crate) ──▶ file, Kafka, ...
//!                    ▲                                      │
//!                    └──── flush LSN = acked watermark ◀────┘
//! ```
//!
//! The server hands each sink batches of [`SinkRecord`](weir_core::SinkRecord)s
//! in commit order. A record's payload is either a change event, which the
//! sink encodes with its encoder (see [`encode`]), or raw bytes a plugin
//! made, which are written exactly as they are.
//!
//! # The delivery contract
//!
//! Every sink here implements [`weir_core::Sink`], and `write` returns `Ok`
//! only once the whole batch is durable at the destination:
//!
//! * [`FileSink`] writes the batch, then `fsync`s the file
//!   (`File::sync_data`).
//! * [`KafkaSink`] produces with an idempotent producer and `acks=all`, and
//!   waits for the delivery report of every record.
//!
//! Only then may the server count the batch's transactions as delivered and
//! let the replication slot advance. Anything not acknowledged is written
//! again after a restart, so delivery is at-least-once: consumers should
//! treat a repeated `source.commit_lsn`/`source.seq` pair as a duplicate.
//! A sink keeps the order of its batch for any one key (the Kafka sink
//! sends a key to one partition, and the idempotent producer keeps order
//! within a partition even across retries).
//!
//! # Layout
//!
//! One folder per sink, the same files in each: `config.rs` (the
//! configuration as the user writes it under `[sinks.NAME]`; its doc
//! comments are the user documentation), `sink.rs` (the I/O), `tests.rs`
//! (unit tests), and `encode.rs` where a sink has its own encoding work
//! (Kafka topics and headers). Encoders shared by all sinks live in
//! [`encode`]. Integration tests against real services live in `tests/`.

mod duration;
pub mod encode;
pub mod file;
pub mod kafka;

pub use encode::{
    DecodeContext, DecodeError, EncodeError, Encoding, JsonEncoder, decode_native_json,
    encode_key_json, encode_native_json, write_utc_timestamp,
};
pub use file::{FileSink, FileSinkConfig};
pub use kafka::{KafkaSink, KafkaSinkConfig};
