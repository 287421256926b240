//! How a row becomes SphinxQL: document ids from keys, column values as
//! SphinxQL literals of the attribute's type, and the quoting of strings.

use sha2::{Digest, Sha256};
use weir_codec::{to_text, write_key};
use weir_core::{ChangeEvent, Value};

use super::config::AttributeType;

/// The state index's document holding a truncate's position. Document ids
/// of rows are never this (see [`document_id`]).
pub(crate) const WATERMARK_ID: u64 = u64::MAX;

/// A row's document id and the `{key}` text it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DocId {
    pub id: u64,
    pub key: String,
}

/// The document id of the row `values` of `event`'s table: a single integer
/// key column above zero is used as it is; any other key (text, uuid,
/// several columns, zero or negative integers) is hashed: the first 8 bytes
/// of the SHA-256 of its `{key}` text, big-endian, with 0 and `u64::MAX`
/// (reserved) moved to 1 and `u64::MAX - 1`.
pub(crate) fn document_id(event: &ChangeEvent, values: &[Value]) -> Option<DocId> {
    let table = event.table.as_ref()?;
    let keys: Vec<&Value> = table
        .columns
        .iter()
        .zip(values)
        .filter(|(c, _)| c.key)
        .map(|(_, v)| v)
        .collect();
    if keys.is_empty() {
        return None;
    }
    let view = ChangeEvent {
        op: event.op,
        table: event.table.clone(),
        before: None,
        after: Some(values.to_vec()),
        message: None,
        source: event.source,
        txn: event.txn,
    };
    let mut key = String::new();
    write_key(&view, &mut key);
    if let [Value::Int(n)] = keys.as_slice()
        && *n > 0
    {
        return Some(DocId { id: *n as u64, key });
    }
    Some(DocId {
        id: hash_id(&key),
        key,
    })
}

/// The hashed document id of a `{key}` text.
pub(crate) fn hash_id(key: &str) -> u64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    match u64::from_be_bytes(first) {
        0 => 1,
        WATERMARK_ID => WATERMARK_ID - 1,
        id => id,
    }
}

/// One column of a document, as written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Cell {
    /// SQL NULL, written as the type's zero (`''` or `0`).
    Null,
    /// A literal written as it is (a number).
    Number(String),
    /// A string, quoted when written.
    Text(String),
}

impl Cell {
    /// Appends the cell as a SphinxQL literal for a column of type `ty`
    /// (`None`: a full-text field only).
    pub(crate) fn write_sql(&self, ty: Option<AttributeType>, out: &mut String) {
        match self {
            Cell::Null => match ty {
                None | Some(AttributeType::String | AttributeType::Json) => out.push_str("''"),
                Some(_) => out.push('0'),
            },
            Cell::Number(n) => out.push_str(n),
            Cell::Text(s) => quote(s, out),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }
}

/// Appends `s` as a SphinxQL string literal. SphinxQL escapes with a
/// backslash (a doubled quote is a syntax error).
pub(crate) fn quote(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Turns `value` of column `column` into a cell for type `ty` (`None`: a
/// full-text field only); an error says why the value does not fit.
pub(crate) fn cell(column: &str, value: &Value, ty: Option<AttributeType>) -> Result<Cell, String> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let misfit = |what: &str| {
        Err(format!(
            "column {column}: {what} cannot be stored in a {} attribute",
            ty.map_or("field", AttributeType::as_str)
        ))
    };
    let Some(ty) = ty else {
        return Ok(Cell::Text(to_text(value)));
    };
    match ty {
        AttributeType::String | AttributeType::Json => Ok(Cell::Text(to_text(value))),
        AttributeType::Bigint => match value {
            Value::Int(n) => Ok(Cell::Number(n.to_string())),
            Value::Bool(b) => Ok(Cell::Number(u8::from(*b).to_string())),
            Value::Numeric(s) | Value::Text(s) => match s.trim().parse::<i64>() {
                Ok(n) => Ok(Cell::Number(n.to_string())),
                Err(_) => misfit(&format!("{s:?}, not a 64-bit integer,")),
            },
            other => misfit(&format!("a {} value", kind(other))),
        },
        AttributeType::Uint => match value {
            Value::Int(n) if (0..=i64::from(u32::MAX)).contains(n) => {
                Ok(Cell::Number(n.to_string()))
            }
            Value::Int(n) => misfit(&format!("{n}, outside 0..=4294967295,")),
            Value::Bool(b) => Ok(Cell::Number(u8::from(*b).to_string())),
            other => misfit(&format!("a {} value", kind(other))),
        },
        AttributeType::Bool => match value {
            Value::Bool(b) => Ok(Cell::Number(u8::from(*b).to_string())),
            Value::Int(n @ (0 | 1)) => Ok(Cell::Number(n.to_string())),
            other => misfit(&format!(
                "a {} value other than true/false/0/1",
                kind(other)
            )),
        },
        AttributeType::Float => {
            let f = match value {
                Value::Int(n) => *n as f64,
                Value::Float(f) => *f,
                Value::Numeric(s) => s.parse::<f64>().unwrap_or(f64::NAN),
                other => return misfit(&format!("a {} value", kind(other))),
            };
            if !f.is_finite() || f.abs() > f64::from(f32::MAX) {
                return misfit(&format!("{}, not a finite 32-bit float,", to_text(value)));
            }
            let mut text = (f as f32).to_string();
            // SphinxQL reads digits without a point as an integer, which
            // wraps past 2^63 (3e38 would be stored as -1).
            if !text.contains('.') {
                text.push_str(".0");
            }
            Ok(Cell::Number(text))
        }
        AttributeType::Timestamp => {
            let seconds = match value {
                Value::Timestamp(us) | Value::TimestampTz(us)
                    if *us != i64::MAX && *us != i64::MIN =>
                {
                    us.div_euclid(1_000_000)
                }
                Value::Date(days) if *days != i32::MAX && *days != i32::MIN => {
                    i64::from(*days) * 86_400
                }
                Value::Int(n) => *n,
                other => {
                    return misfit(&format!("{} ({})", to_text(other), kind(other)));
                }
            };
            if !(0..=i64::from(u32::MAX)).contains(&seconds) {
                return misfit(&format!(
                    "{}, outside 1970-01-01..2106-02-07,",
                    to_text(value)
                ));
            }
            Ok(Cell::Number(seconds.to_string()))
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Unchanged => "unchanged",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "float",
        Value::Numeric(_) => "numeric",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytea",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "timestamptz",
        Value::Uuid(_) => "uuid",
        Value::Json(_) => "json",
        Value::Other(_) => "text-form",
    }
}
