//! Column values as plain text: what a sink writes where it needs a string
//! rather than JSON (a Redis hash field, a key in a name template, a
//! full-text field).
//!
//! The forms are those of the native JSON envelope without the JSON
//! quoting, so a value reads the same in every sink: numbers as digits,
//! dates and times in ISO 8601 (`timestamptz` with a `Z`), UUIDs in their
//! canonical lower-case form, `json` as its text, and `bytea` as Postgres
//! prints it (`\x` and lower-case hex). SQL NULL and an unchanged TOAST
//! value have no text; they are written as nothing, and a sink that must
//! tell them apart looks at the [`Value`] itself.

use weir_core::Value;

use crate::calendar;

/// Appends the text form of `value` to `out`.
pub fn write_text(out: &mut String, value: &Value) {
    let mut bytes = Vec::new();
    match value {
        Value::Null | Value::Unchanged => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(itoa::Buffer::new().format(*n)),
        Value::Float(f) => write_float(out, *f),
        Value::Numeric(s) | Value::Text(s) | Value::Other(s) | Value::Json(s) => out.push_str(s),
        Value::Bytes(b) => crate::uuid::push_bytea_hex(out, b),
        Value::Date(days) => calendar::write_date(&mut bytes, *days),
        Value::Time(micros) => {
            if calendar::write_time(&mut bytes, *micros).is_err() {
                // Postgres never sends one; keep the number rather than lose it.
                out.push_str(itoa::Buffer::new().format(*micros));
            }
        }
        Value::Timestamp(micros) => calendar::write_timestamp(&mut bytes, *micros, false),
        Value::TimestampTz(micros) => calendar::write_timestamp(&mut bytes, *micros, true),
        Value::Uuid(u) => crate::uuid::push_uuid_text(out, u),
    }
    if !bytes.is_empty() {
        out.push_str(std::str::from_utf8(&bytes).expect("calendar and UUID text is ASCII"));
    }
}

/// The text form of `value`, as [`write_text`] writes it.
pub fn to_text(value: &Value) -> String {
    let mut out = String::new();
    write_text(&mut out, value);
    out
}

/// A float as the envelope writes it: the shortest text that reads back as
/// the same number, and `NaN`, `Infinity`, `-Infinity` as Postgres prints them.
fn write_float(out: &mut String, f: f64) {
    if f.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(f));
    } else if f.is_nan() {
        out.push_str("NaN");
    } else if f > 0.0 {
        out.push_str("Infinity");
    } else {
        out.push_str("-Infinity");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let cases = [
            (Value::Int(-7), "-7"),
            (Value::Float(0.1), "0.1"),
            (Value::Float(f64::NEG_INFINITY), "-Infinity"),
            (Value::Bool(true), "true"),
            (Value::Bytes(vec![0xde, 0xad, 0x01]), "\\xdead01"),
            (Value::Date(0), "1970-01-01"),
            (Value::TimestampTz(1_500_000), "1970-01-01T00:00:01.5Z"),
            (Value::Null, ""),
            (
                Value::Uuid([
                    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd,
                    0x38, 0x0a, 0x11,
                ]),
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ),
        ];
        for (value, text) in cases {
            assert_eq!(to_text(&value), text, "{value:?}");
        }
    }
}
