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
//! * a Debezium-compatible envelope ([`DebeziumEncoder`]);
//! * [`Encoder`], which a sink builds once from its `encoding` and
//!   `debezium` settings and asks for each record's key and value;
//! * column values as plain text ([`write_text`]);
//! * name templates ([`NameTemplate`]): `{schema}`, `{table}`, `{op}`,
//!   `{prefix}`, `{key}`, `{key.COLUMN}`, the one grammar for Kafka topics,
//!   Redis keys, NATS subjects, index and table names, and names read back
//!   into keys ([`KeyReader`]);
//! * the shared pieces every crate that handles Postgres values needs: the
//!   calendar ([`calendar`]), UUID text ([`parse_uuid`], [`write_uuid_text`])
//!   and built-in type names ([`PgType`]).
//!
//! A record whose payload is [`SinkPayload::Raw`](weir_core::SinkPayload::Raw)
//! is never encoded: its bytes go out as the plugin made them.
//!
//! The encoders write straight into a caller-owned `Vec<u8>` that the sink
//! reuses from record to record, without building a `serde_json::Value`
//! per event: this runs once per event on the hot path.

pub mod calendar;
mod debezium;
mod decode;
mod json;
mod template;
mod text;
mod types;
mod uuid;

#[cfg(test)]
mod tests;

pub use debezium::{DebeziumConfig, DebeziumEncoder, DecimalHandling, UNAVAILABLE_VALUE};
pub use decode::{DecodeContext, DecodeError, decode_native_json};
pub use json::{
    JsonEncoder, encode_key_json, encode_native_json, write_json_value, write_lsn, write_str,
};
pub use template::{
    Escaping, ExpandError, KeyReader, NameTemplate, TemplateUse, split_key, write_key,
};
pub use text::{to_text, write_text};
pub use types::PgType;
pub use uuid::{
    UUID_TEXT_LEN, hex_digit, parse_uuid, push_bytea_hex, push_uuid_text, write_uuid_text,
};

/// Appends an instant (microseconds since 1970-01-01 UTC) as the envelope
/// writes `timestamptz` values: ISO 8601 with a `Z`.
pub fn write_utc_timestamp(out: &mut Vec<u8>, micros: i64) {
    calendar::write_timestamp(out, micros, true);
}

use weir_core::SinkError;

/// How a sink turns change events into bytes.
///
/// In the configuration: `encoding = "json"` (the default) or
/// `encoding = "debezium"`, whose settings go in an optional
/// [`DebeziumConfig`] table (`[sinks.NAME.debezium]`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The native JSON envelope, one JSON object per event; see
    /// [`encode_native_json`] for its format.
    #[default]
    Json,
    /// Debezium's PostgreSQL connector envelope as Kafka Connect's JSON
    /// converter writes it; see [`DebeziumEncoder`].
    Debezium,
}

impl Encoding {
    /// Every problem of a sink's `encoding` and `debezium` settings taken
    /// together, as `field: message` (the `debezium` table's fields as
    /// `debezium.FIELD`).
    pub fn validate(self, debezium: Option<&DebeziumConfig>) -> Vec<String> {
        match (self, debezium) {
            (Encoding::Json, Some(_)) => vec![
                "debezium: settings for encoding = \"debezium\", but encoding is \"json\""
                    .to_owned(),
            ],
            (_, Some(config)) => config
                .validate()
                .into_iter()
                .map(|p| format!("debezium.{p}"))
                .collect(),
            (_, None) => Vec::new(),
        }
    }
}

/// A record's encoder, built once per sink from its settings: one call
/// ([`Encoder::encode`]) gives a change event's key and value.
pub enum Encoder {
    /// `encoding = "json"`.
    Json(JsonEncoder),
    /// `encoding = "debezium"`.
    Debezium(DebeziumEncoder),
}

/// What [`Encoder::encode`] wrote.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Whether the key buffer holds a key (a truncate, and a row of a table
    /// without key columns, have none).
    pub has_key: bool,
    /// Whether a sink with keyed, compacted storage (Kafka) should follow
    /// the record with a tombstone: the same key and no value. Set only for
    /// deletes, with `encoding = "debezium"` and `tombstones_on_delete`.
    pub tombstone: bool,
}

impl Encoder {
    /// The encoder for `encoding`, with the `debezium` settings when given
    /// (their defaults otherwise).
    pub fn new(encoding: Encoding, debezium: Option<&DebeziumConfig>) -> Self {
        match encoding {
            Encoding::Json => Encoder::Json(JsonEncoder::new()),
            Encoding::Debezium => {
                Encoder::Debezium(DebeziumEncoder::new(debezium.cloned().unwrap_or_default()))
            }
        }
    }

    /// Appends the event's value alone to `out`, for sinks that write no
    /// key (a file line, a webhook element); `scratch` holds the key the
    /// Debezium encoder makes on the way.
    pub fn encode_value(
        &mut self,
        event: &weir_core::ChangeEvent,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        match self {
            // Straight into the output: no key, no copy.
            Encoder::Json(encoder) => encoder.encode(event, out),
            Encoder::Debezium(encoder) => {
                scratch.clear();
                encoder.encode(event, scratch, out).map(|_| ())
            }
        }
    }

    /// Replaces the content of `key` and `value` with the event's key and
    /// value.
    pub fn encode(
        &mut self,
        event: &weir_core::ChangeEvent,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<Encoded, EncodeError> {
        key.clear();
        value.clear();
        match self {
            Encoder::Json(encoder) => {
                let has_key = encoder.encode_key(event, key)?;
                encoder.encode(event, value)?;
                Ok(Encoded {
                    has_key,
                    tombstone: false,
                })
            }
            Encoder::Debezium(encoder) => {
                let has_key = encoder.encode(event, key, value)?;
                Ok(Encoded {
                    has_key,
                    tombstone: has_key
                        && event.op == weir_core::Op::Delete
                        && encoder.config().tombstones_on_delete,
                })
            }
        }
    }
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
