//! Names and values as the `postgres` sink sends them: quoted identifiers,
//! and each value as the text Postgres's input functions read back.

use weir_core::Value;

/// `name` as a quoted SQL identifier: in double quotes, a `"` doubled, so
/// any name (upper case, spaces, dots) means itself.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`, or `"table"` without a schema.
pub(crate) fn quote_name(schema: Option<&str>, table: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(table)),
        None => quote_ident(table),
    }
}

/// The parameter text of a column value: `None` for NULL, else the text
/// [`weir_codec::write_text`] writes, except that dates and timestamps
/// before year 1 get Postgres's `BC` form, which is the only one its input
/// accepts (the envelope writes 44 BC as the ISO year `-0043`).
pub(crate) fn column_text(value: &Value) -> Option<String> {
    match value {
        Value::Null | Value::Unchanged => None,
        Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => {
            Some(bc_form(weir_codec::to_text(value)))
        }
        other => Some(weir_codec::to_text(other)),
    }
}

/// ISO text with a year of 0 or below (`0000-…`, `-0043-…`) as the same
/// instant with Postgres's `BC` suffix; other text unchanged.
pub(crate) fn bc_form(text: String) -> String {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let Some(end) = digits.find('-') else {
        return text;
    };
    if end < 4 || !digits[..end].bytes().all(|b| b.is_ascii_digit()) {
        return text;
    }
    let Ok(year) = digits[..end].parse::<i64>() else {
        return text;
    };
    let astronomical = if negative { -year } else { year };
    if astronomical > 0 {
        return text;
    }
    format!("{:04}{} BC", 1 - astronomical, &digits[end..])
}
