//! Encoders shared by all sinks.
//!
//! Today there is one: the native JSON envelope ([`encode_native_json`]),
//! with its companion key encoding ([`encode_key_json`]); [`JsonEncoder`]
//! writes both, faster, for a sink that encodes many events. A record whose
//! payload is [`SinkPayload::Raw`](weir_core::SinkPayload::Raw) is never
//! encoded: its bytes go out as the plugin made them.
//!
//! The encoders write straight into a caller-owned `Vec<u8>` that the sink
//! reuses from record to record, without building a `serde_json::Value`
//! per event: this runs once per event on the hot path.

mod calendar;
mod decode;
pub(crate) mod json;

#[cfg(test)]
mod tests;

pub use decode::{DecodeContext, DecodeError, decode_native_json};
pub(crate) use json::write_lsn;
pub use json::{JsonEncoder, encode_key_json, encode_native_json};

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
