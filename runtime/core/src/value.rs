//! Column values, decoded from pgoutput into types a transform can use.

/// One column value of a row.
///
/// Common Postgres types decode into typed variants; every other type keeps
/// Postgres's own text form in [`Value::Other`] (its type name is on the
/// row's [`Column`](crate::Column)), so nothing is lost.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A TOASTed value that the UPDATE did not change, so Postgres did not
    /// send it. It is not NULL: the column keeps its previous value.
    Unchanged,
    /// `bool`.
    Bool(bool),
    /// `int2`, `int4`, `int8` (and `oid`).
    Int(i64),
    /// `float4`, `float8`.
    Float(f64),
    /// `numeric`, as Postgres prints it (exact; may be `NaN` or `Infinity`).
    Numeric(String),
    /// `text`, `varchar`, `bpchar`, `name`.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `date`: days since 1970-01-01. `i32::MAX`/`i32::MIN` are `infinity`/`-infinity`.
    Date(i32),
    /// `time`: microseconds since midnight.
    Time(i64),
    /// `timestamp`: microseconds since 1970-01-01 00:00:00, no time zone.
    /// `i64::MAX`/`i64::MIN` are `infinity`/`-infinity`.
    Timestamp(i64),
    /// `timestamptz`: microseconds since 1970-01-01 00:00:00 UTC.
    /// `i64::MAX`/`i64::MIN` are `infinity`/`-infinity`.
    TimestampTz(i64),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `json` or `jsonb`, as JSON text.
    Json(String),
    /// Any other type, in Postgres's text output form.
    Other(String),
}

impl Value {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Roughly how many bytes the value takes as text.
    pub fn estimated_size(&self) -> usize {
        match self {
            Value::Null | Value::Unchanged | Value::Bool(_) => 4,
            Value::Int(_) | Value::Float(_) | Value::Date(_) | Value::Time(_) => 12,
            Value::Timestamp(_) | Value::TimestampTz(_) | Value::Uuid(_) => 36,
            Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Other(s) => s.len(),
            // base64 in JSON, hex in text: between 4/3 and 2 bytes per byte.
            Value::Bytes(b) => b.len() * 2,
        }
    }
}
