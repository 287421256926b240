//! The event model shared by every stage of Weir's data path.
//!
//! ```text
//! Postgres WAL ──▶ source ──▶ transform chain ──▶ router ──▶ sinks
//!                   │                                         │
//!                   └──────── acknowledged watermark ◀────────┘
//! ```
//!
//! The source (`weir-postgres`) produces [`SourceItem`]s: transaction
//! boundaries and [`ChangeEvent`]s. Transforms and routers (`weir-wasm`) turn
//! events into [`SinkRecord`]s addressed to named sinks ([`Destination`]).
//! Sinks (`weir-sinks`) implement [`Sink`] and report a batch only once it is
//! durable; the server's ack tracker turns those reports into the flush LSN
//! that is sent back to Postgres.
//!
//! This crate does no I/O and depends on nothing heavy, so every other crate
//! (and plugin tooling) can share it.

pub mod duration;
mod event;
mod lsn;
mod position;
mod readback;
mod schema;
mod sink;
mod table_pattern;
mod value;

pub use event::{
    ChangeEvent, Destination, LogicalMessage, Op, RawMessage, SinkPayload, SinkRecord,
    SnapshotKind, SourceInfo, SourceItem, TxnBegin, TxnCommit, TxnId,
};
pub use lsn::{Lsn, ParseLsnError};
pub use position::Position;
pub use readback::{ColumnDiff, Held, HeldKey, KeyPage, Readback, expected};
pub use schema::{Column, ReplicaIdentity, TableSchema};
pub use sink::{Capabilities, Rejected, RetryPolicy, Sink, SinkError, SinkErrorKind};
pub use table_pattern::{TablePattern, TablePatternError};
pub use value::Value;
