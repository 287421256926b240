//! Weir's Postgres source: the first stage of the data path.
//!
//! ```text
//! Postgres WAL ──pgoutput──▶ [weir-postgres] ──Vec<SourceItem>──▶ transforms ──▶ sinks
//!        ▲                          │                                            │
//!        └── standby status: flush ◀┴──────────── acked LSN (watch) ◀───────────┘
//! ```
//!
//! [`PostgresSource::prepare`] checks the server (`wal_level`, the role's
//! REPLICATION attribute, the tables), creates the publication and the
//! logical slot when allowed, and reads where the slot stands.
//! [`PostgresSource::run`] opens a replication connection, streams pgoutput
//! from that position, decodes it into [`weir_core::SourceItem`]s (each
//! transaction as `Begin`, changes, `Commit`) and reports the position the
//! pipeline has acknowledged back to Postgres, so the slot only advances
//! past transactions every sink has made durable.
//!
//! # Values
//!
//! Text mode (the default) decodes the types listed on [`weir_core::Value`]
//! into typed variants and keeps Postgres's text output for every other
//! type in `Value::Other`, so nothing is lost. Binary mode (`binary: true`,
//! PostgreSQL 14+) decodes the same values from the binary forms: the
//! listed types directly, every other built-in type (and arrays, ranges,
//! composites, enums and domains of them, looked up in `pg_type`) printed
//! as the server prints its text (`printed`). A column of a type whose
//! binary form Weir cannot print (an extension's own) is refused in binary
//! mode, naming it (`types`). Timestamps beyond about 294246 AD do
//! not fit `i64` Unix microseconds and arrive as `Value::Other` with
//! Postgres's text in either mode. pgoutput announces a domain under its
//! base type's name, so a domain over a listed type decodes like that type.
//!
//! # TLS and authentication
//!
//! Both connections negotiate TLS as [`PostgresConfig::ssl_mode`] says,
//! with libpq's `sslmode` meanings (see [`SslMode`]), over rustls with the
//! ring provider. A cleartext password request over an unencrypted
//! TCP connection is refused unless
//! [`PostgresConfig::allow_cleartext_password`] (TLS and Unix sockets keep
//! it off the network). A server that starts SCRAM and reports success
//! before its signature was checked is refused always; that stops a relay
//! skipping the proof, not an impostor, which can report success at once as
//! a trust server does. [`PostgresConfig::require_auth`] (libpq's
//! `require_auth`) refuses that too, on both connections; only
//! `verify-full` keeps Weir from talking to an impostor at all. A
//! refused certificate or a server without TLS under `require` is
//! [`PgError::Tls`], which is not retryable.
//!
//! # Reconnects
//!
//! After a retryable error, `prepare` a new source: it resumes from the
//! slot's confirmed position, so unacknowledged transactions come again.
//! [`weir_core::TxnId`]s come from a process-wide counter and table schema
//! versions from a process-wide registry, so neither repeats across
//! reconnects: one `(table id, version)` always means one shape.
//!
//! # Positions and acknowledgement
//!
//! Each event's [`weir_core::SourceInfo`] carries the commit LSN of its
//! transaction, the LSN of its own message (several may share one), the
//! xid, the commit time and its position in the transaction. The flush LSN
//! reported to Postgres never exceeds the acknowledged LSN, except that an
//! idle stream (no transaction open, everything decoded acknowledged) may
//! confirm a keepalive's WAL end; see [`PostgresSource::run`].
//!
//! # Snapshots
//!
//! With [`SnapshotMode::Initial`], a slot `prepare` creates exports its
//! snapshot, and [`PostgresSource::take_initial_snapshot`] hands over the
//! [`snapshot::InitialSnapshot`] that reads every published table at the
//! slot's consistent point, before [`PostgresSource::run`] streams from it.
//! While streaming, `run` also reads the snapshot chunks still to take
//! (ad-hoc requests, [`snapshot::request`]; tables added to the capture;
//! the rest of an interrupted initial snapshot) by the watermark method,
//! placing their rows in the stream. Progress is kept in the source
//! database (`weir.snapshots`, `weir.snapshot_tables`); see [`snapshot`].
//!
//! Logical messages become [`weir_core::Op::Message`] events: a
//! transactional one inside its transaction, a non-transactional one as a
//! transaction of its own (xid 0) at its place in the stream.

mod auth;
#[cfg(all(test, unix))]
mod auth_tests;
mod config;
mod conn;
mod decode;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lease;
mod pgoutput;
mod printed;
mod setup;
pub mod snapshot;
mod source;
mod streamed;
mod tls;
#[cfg(all(test, unix))]
mod tls_tests;
mod types;
pub mod verify;
mod watch;

pub use config::{
    AuthMethod, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_STREAMING_MEMORY, OnSlotLost, PostgresConfig,
    RequireAuth, SnapshotMode, SslMode,
};
pub use error::{PgError, ServerError};
pub use setup::connect;
pub use source::PostgresSource;
/// The shutdown signal [`PostgresSource::run`] takes, re-exported so callers
/// need not depend on `tokio-util` themselves.
pub use tokio_util::sync::CancellationToken;
pub use watch::{SlotHealth, SlotReading};
