//! The `http` sink: a webhook. Every batch is POSTed to one URL, in
//! requests of a bounded size, as a JSON array or as NDJSON; a 2xx answer
//! makes a request's records durable.
//!
//! ```toml
//! [sinks.hook]
//! type = "http"
//! url = "https://hooks.internal/weir"
//! format = "json"              # or "ndjson"
//! secret = "${WEBHOOK_SECRET}" # optional: signs every request
//! ```
//!
//! # Requests
//!
//! Each record is one element: a change event in the native JSON envelope
//! (`encoding = "json"`), a raw record as its own bytes (which must be
//! JSON for `format = "json"`, and one line for `"ndjson"`; a raw record
//! without a value is `null`). A record that cannot be an element is
//! refused alone (dead letter or halt) and the others are sent.
//!
//! Headers: `Content-Type` (`application/json` or `application/x-ndjson`),
//! `Idempotency-Key`, the configured extra headers and, with a secret, the
//! signature and its timestamp.
//!
//! # Idempotency keys
//!
//! `Idempotency-Key: FIRST-LAST`, the positions of the request's first
//! and last record, each as 24 upper-case hex digits: 16 for the commit LSN
//! of its transaction, 8 for its place in the transaction
//! (`00000000016B374800000000-00000000016B374800000002` for the first
//! three changes of the transaction committed at `0/16B3748`). A request
//! the pipeline sends again after a failure carries the same key and the
//! same body: the sink cuts a batch into requests by the records alone, so
//! the same records make the same requests. After a restart, the records after the last acknowledged
//! transaction are sent again; a replayed request has the key it had
//! before when the pipeline hands the sink the same batch, which is not
//! guaranteed: batches gather whatever was waiting, so a replay may cut
//! elsewhere and carry records that were already delivered under another
//! key. A receiver that must see each change once should also drop
//! elements whose `source.commit_lsn` and `source.seq` it has seen; with
//! `max_batch_records = 1` every request is one record, and its key
//! identifies that record for good.
//!
//! # Signatures
//!
//! With `secret` set, each request carries `X-Weir-Timestamp: SECONDS`
//! (Unix time when it was sent) and `X-Weir-Signature: sha256=HEX`, HEX
//! being the lower-case hex HMAC-SHA256, keyed with the secret, of the
//! timestamp's digits, a `.`, and the exact body bytes. A receiver
//! recomputes it over the raw body (before parsing it), compares in
//! constant time, and refuses timestamps too far from its clock (say five
//! minutes) so a captured request cannot be played again later. A retry is
//! signed anew, with a new timestamp; its key and body are unchanged.
//!
//! # Answers
//!
//! | answer | what happens |
//! |---|---|
//! | 2xx | the request's records are durable |
//! | 408, 5xx, timeout, connection error | retried by the pipeline with backoff |
//! | 429, or 503 with `Retry-After` | retried after `Retry-After` (seconds or an HTTP date), else backoff |
//! | 401, 403 | refused credentials: retried slowly until an operator fixes them, the sink reported failing |
//! | 3xx | redirects are not followed: the request's records are refused (dead letter or halt) |
//! | other 4xx | the request's records are refused, the reason quoting the status and the start of the answer |
//!
//! When a batch needs several requests and a later one fails, the whole
//! batch is retried: the earlier requests are sent again with their keys.
//!
//! The sink appends; it applies no state (a log sink, as file and Kafka).

mod config;
mod encode;
mod sink;

#[cfg(test)]
mod tests;

pub use config::{Format, HttpSinkConfig};
pub use sink::HttpSink;

use crate::registry::{SinkType, parse_as};

/// The `http` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "http",
    parse: parse_as::<HttpSinkConfig>,
};
