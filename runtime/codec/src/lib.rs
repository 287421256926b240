//! Weir's codecs: how change events become bytes and names, with no I/O.
//!
//! ```text
//! source ──▶ transforms ──▶ router ──▶ sinks ──▶ (this crate: encode, name) ──▶ Kafka, Redis, ...
//! ```
//!
//! Every sink encodes with what lives here, and tools that only read Weir's
//! output (`weir replay`, plugin tests) decode with it without linking any
//! sink's client library:
//!
//! * the native JSON envelope ([`encode_native_json`], [`JsonEncoder`]) and
//!   its decoder ([`decode_native_json`]);
//! * column values as plain text ([`write_text`]);
//! * name templates ([`NameTemplate`]): `{schema}`, `{table}`, `{op}`,
//!   `{prefix}`, `{key}`, `{key.COLUMN}`, the one grammar for Kafka topics,
//!   Redis keys, NATS subjects, index and table names.
//!
//! A record whose payload is [`SinkPayload::Raw`](weir_core::SinkPayload::Raw)
//! is never encoded: its bytes go out as the plugin made them.
//!
//! The encoders write straight into a caller-owned `Vec<u8>` that the sink
//! reuses from record to record, without building a `serde_json::Value`
//! per event: this runs once per event on the hot path.

mod calendar;
mod decode;
mod json;
mod template;
mod text;

#[cfg(test)]
mod tests;

pub use decode::{DecodeContext, DecodeError, decode_native_json};
pub use json::{
    JsonEncoder, encode_key_json, encode_native_json, write_json_value, write_lsn, write_str,
};
pub use template::{ExpandError, NameTemplate, TemplateUse, write_key};
pub use text::{to_text, write_text};

/// Appends an instant (microseconds since 1970-01-01 UTC) as the envelope
/// writes `timestamptz` values: ISO 8601 with a `Z`.
pub fn write_utc_timestamp(out: &mut Vec<u8>, micros: i64) {
    calendar::write_timestamp(out, micros, true);
}

use weir_core::SinkError;

/// How a sink turns change events into bytes.
///
/// In the configuration: `encoding = "json"`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The native JSON envelope, one JSON object per event; see
    /// [`encode_native_json`] for its format.
    #[default]
    Json,
}

/// A change event could not be encoded (for example, a `json` column whose
/// text is not valid JSON). Retrying will not help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(String);

impl EncodeError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EncodeError(message.into())
    }
}

impl From<EncodeError> for SinkError {
    fn from(e: EncodeError) -> Self {
        SinkError::Encode(e.0)
    }
}
