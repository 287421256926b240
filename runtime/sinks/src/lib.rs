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
//! sink encodes with its encoder (see [`weir_codec`]), or raw bytes a plugin
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
//! * [`HttpSink`] POSTs the batch and counts it written on a 2xx answer.
//!
//! Only then may the server count the batch's transactions as delivered and
//! let the replication slot advance. Anything not acknowledged is written
//! again after a restart, so delivery is at-least-once: consumers should
//! treat a repeated `source.commit_lsn`/`source.seq` pair as a duplicate.
//! A sink keeps the order of its batch for any one key (the Kafka sink
//! sends a key to one partition, and the idempotent producer keeps order
//! within a partition even across retries).
//!
//! # Sinks that apply state
//!
//! A cache, a search index, an analytics table or another database holds
//! *rows*, not a log. Such a sink declares
//! [`applies_state`](weir_core::Capabilities::applies_state) and guards
//! every write with the record's [`Position`](weir_core::Position) (commit
//! LSN, then place in the transaction), so that a replay after a crash, or
//! a late retry, never puts an older row over a newer one, and a delete is
//! remembered against older writes of the same key. It declares
//! [`needs_key`](weir_core::Capabilities::needs_key), and the pipeline
//! refuses keyless row changes (dead letter or halt) before they reach it.
//! The conformance kit (`tests/src/conformance.rs`) checks every such sink
//! for per-key order, replays, older versions, truncates, unchanged TOAST
//! values and key changes.
//!
//! # Errors
//!
//! A sink reports *what kind* of failure it met
//! ([`SinkError`](weir_core::SinkError): transient, throttled, auth, config,
//! rejected records); one table ([`SinkErrorKind::policy`](weir_core::SinkErrorKind::policy))
//! decides what the pipeline does, and [`retry::Backoff`] how long it
//! waits. Messages do not name the sink: the pipeline prefixes the name.
//!
//! # Layout
//!
//! [`registry`] lists every sink type; each is a cargo feature. One folder
//! per sink, the same files in each: `mod.rs` (what the sink does and
//! guarantees, and its registry entry), `config.rs` (the configuration as
//! the user writes it under `[sinks.NAME]`, validated without I/O; its doc
//! comments are the user documentation; it implements
//! [`SinkSpec`](registry::SinkSpec)), `sink.rs` (the I/O), `tests.rs` (unit
//! tests), `encode.rs` where a sink has its own encoding work, and
//! `readback.rs` where a state sink reads back what it holds
//! ([`weir_core::Readback`], for `weir verify`). Helpers several sinks
//! share sit at the crate root: [`batch`], [`owners`], [`retry`], and
//! `compare` (JSON values compared by value, for the readbacks of the
//! sinks that store JSON). Encoders and name templates shared by all
//! sinks, and the reading of a name back into a key, live in the
//! `weir-codec` crate. Integration tests against real services live in
//! `tests/`.

pub mod batch;
#[cfg(feature = "clickhouse")]
pub mod clickhouse;
#[cfg(any(feature = "nats", feature = "redis"))]
mod compare;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
pub mod owners;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
pub mod retry;
#[cfg(feature = "sphinx")]
pub mod sphinx;

#[cfg(feature = "clickhouse")]
pub use clickhouse::{ClickHouseSink, ClickHouseSinkConfig};
#[cfg(feature = "file")]
pub use file::{FileSink, FileSinkConfig};
#[cfg(feature = "http")]
pub use http::{HttpSink, HttpSinkConfig};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaSink, KafkaSinkConfig};
#[cfg(feature = "nats")]
pub use nats::{NatsMode, NatsSink, NatsSinkConfig};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresSink, PostgresSinkConfig};
#[cfg(feature = "redis")]
pub use redis::{RedisSink, RedisSinkConfig};
pub use registry::{SINK_TYPES, SinkSpec, SinkType, parse_sink};
#[cfg(feature = "sphinx")]
pub use sphinx::{SphinxSink, SphinxSinkConfig};
pub use weir_codec::Encoding;
