//! A row as a KV value: the JSON object of its columns, in column order,
//! each value as the native JSON envelope writes it.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_codec::{JsonEncoder, write_str};
use weir_core::{ChangeEvent, SinkError, Value};

/// Columns and their JSON values, in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Row(Vec<(String, Box<RawValue>)>);

impl PartialEq for Row {
    fn eq(&self, other: &Row) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, x), (b, y))| a == b && x.get() == y.get())
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut columns = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    columns.push((name, value));
                }
                Ok(Row(columns))
            }
        }
        d.deserialize_map(RowVisitor)
    }
}

#[derive(serde::Deserialize)]
struct Envelope {
    after: Option<Row>,
}

impl Row {
    /// Reads a stored value; `None` when it is not a JSON object (a value
    /// something other than Weir wrote).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Row> {
        serde_json::from_slice(bytes).ok()
    }

    /// The new row of an insert or update, from its envelope (so values
    /// read as in every other sink).
    pub(crate) fn from_event(
        event: &ChangeEvent,
        encoder: &mut JsonEncoder,
    ) -> Result<Row, SinkError> {
        let mut envelope = Vec::new();
        encoder.encode(event, &mut envelope)?;
        let parsed: Envelope = serde_json::from_slice(&envelope)
            .map_err(|e| SinkError::Encode(format!("reading back the envelope: {e}")))?;
        Ok(parsed.after.unwrap_or_default())
    }

    /// Replaces each unchanged TOAST value (Postgres did not send it) with
    /// the column's value in `current` (the key's row), else in `fallback`
    /// (the old key's row, on a key change), else `null`.
    pub(crate) fn keep_unchanged(
        &mut self,
        event: &ChangeEvent,
        current: Option<&Row>,
        fallback: Option<&Row>,
    ) {
        let (Some(table), Some(after)) = (&event.table, &event.after) else {
            return;
        };
        for (column, value) in table.columns.iter().zip(after) {
            if !matches!(value, Value::Unchanged) {
                continue;
            }
            let kept = [current, fallback]
                .into_iter()
                .flatten()
                .find_map(|row| row.get(&column.name))
                .map(RawValue::to_owned)
                .unwrap_or_else(|| RawValue::from_string("null".to_owned()).expect("valid JSON"));
            if let Some(slot) = self.0.iter_mut().find(|(name, _)| *name == column.name) {
                slot.1 = kept;
            }
        }
    }

    /// The columns and their JSON texts, in order.
    pub(crate) fn columns(&self) -> &[(String, Box<RawValue>)] {
        &self.0
    }

    fn get(&self, name: &str) -> Option<&RawValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| &**v)
    }
}

/// The row's JSON object, as stored.
pub(crate) fn row_json(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (i, (name, value)) in row.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, name);
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    out
}
