//! Conveniences on the contract's [`Value`] type.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::wit::{Change, Destination, Emit, Payload, RawMessage, Value};

impl Value {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this is a TOASTed value the UPDATE did not send. Its real
    /// value is unknown to the plugin (and it is not NULL).
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Value::Unchanged)
    }

    /// The text of text-like values: `text`, `numeric`, `uuid`, `json` and
    /// other types kept in Postgres's text form.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Uuid(s)
            | Value::Json(s)
            | Value::Other(s) => Some(s),
            _ => None,
        }
    }

    /// The integer of an `int` value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A number from an `int`, `float` or `numeric` value (numerics are
    /// rounded to the nearest `f64`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Numeric(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The boolean of a `boolean` value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The bytes of a `bytes` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A text form of the value, `None` for NULL and unchanged values.
    ///
    /// Text-like values are returned as they are, booleans as `true` /
    /// `false`, bytes as Postgres's hex form (`\x0aff`), and dates, times
    /// and timestamps as their raw numbers (days or microseconds).
    pub fn to_text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Value::Null | Value::Unchanged => return None,
            Value::Boolean(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Int(i) | Value::Time(i) | Value::Timestamp(i) | Value::Timestamptz(i) => {
                Cow::Owned(i.to_string())
            }
            Value::Date(d) => Cow::Owned(d.to_string()),
            Value::Float(f) => Cow::Owned(f.to_string()),
            Value::Bytes(b) => {
                let mut s = String::with_capacity(2 + 2 * b.len());
                s.push_str("\\x");
                for byte in b {
                    let _ = write!(s, "{byte:02x}");
                }
                Cow::Owned(s)
            }
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Uuid(s)
            | Value::Json(s)
            | Value::Other(s) => Cow::Borrowed(s.as_str()),
        })
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i.into())
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Destination {
    /// The sink named `sink`, at its default topic.
    pub fn sink(sink: impl Into<String>) -> Self {
        Destination {
            sink: sink.into(),
            topic: None,
        }
    }

    /// The same sink, at `topic` (which may hold `{schema}`, `{table}` and
    /// `{op}` placeholders the sink fills in).
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }
}

impl From<&str> for Destination {
    /// The sink named so, at its default topic.
    fn from(sink: &str) -> Self {
        Destination::sink(sink)
    }
}

impl From<String> for Destination {
    /// The sink named so, at its default topic.
    fn from(sink: String) -> Self {
        Destination::sink(sink)
    }
}

impl RawMessage {
    /// A message with this key and body and no headers.
    pub fn new(key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Self {
        RawMessage {
            key,
            value,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The message, to deliver to `destination` (a sink name or a
    /// [`Destination`] with a topic).
    pub fn to(self, destination: impl Into<Destination>) -> Emit {
        Emit::raw(self).to(destination)
    }
}

impl From<RawMessage> for Emit {
    fn from(message: RawMessage) -> Self {
        Emit::raw(message)
    }
}

impl Emit {
    /// Raw bytes for the router to place.
    pub fn raw(message: RawMessage) -> Self {
        Emit {
            destination: None,
            payload: Payload::Raw(message),
        }
    }

    /// A change for the router to place.
    pub fn change(change: Change) -> Self {
        Emit {
            destination: None,
            payload: Payload::Change(change),
        }
    }

    /// The same payload, sent to `destination` (a sink name or a
    /// [`Destination`] with a topic) rather than where the router would
    /// send it.
    pub fn to(mut self, destination: impl Into<Destination>) -> Self {
        self.destination = Some(destination.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        assert_eq!(Value::Null.to_text(), None);
        assert_eq!(Value::Unchanged.to_text(), None);
        assert_eq!(Value::Int(-4).to_text().unwrap(), "-4");
        assert_eq!(Value::Boolean(true).to_text().unwrap(), "true");
        assert_eq!(Value::Bytes(vec![0x0a, 0xff]).to_text().unwrap(), "\\x0aff");
        assert_eq!(Value::Numeric("1.50".into()).as_f64(), Some(1.5));
        assert_eq!(Value::from(Some(3_i64)), Value::Int(3));
        assert_eq!(Value::from(None::<&str>), Value::Null);
    }
}
