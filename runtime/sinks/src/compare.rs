//! JSON values compared by value, for the readbacks (`weir verify`) of
//! the sinks that store rows as JSON: the Redis cache in its JSON format
//! and the NATS KV bucket. What such a sink holds is the source's row when
//! its members hold the same values, whatever their order, spacing or
//! spelling of numbers and strings. Each sink's `readback.rs` decides which
//! members to compare; this module, how two values are.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Whether two JSON texts hold the same value: objects member by member
/// whatever their order, numbers by value; integers are compared exactly
/// (an `int8` past 2^53 is not rounded), other numbers as doubles.
pub(crate) fn json_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(b'{'), Some(b'{')) => {
            let parse = |t| serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(t);
            match (parse(a), parse(b)) {
                (Ok(x), Ok(y)) => {
                    x.len() == y.len()
                        && x.iter()
                            .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v.get(), w.get())))
                }
                _ => false,
            }
        }
        (Some(b'['), Some(b'[')) => {
            let parse = |t| serde_json::from_str::<Vec<Box<RawValue>>>(t);
            match (parse(a), parse(b)) {
                (Ok(x), Ok(y)) => {
                    x.len() == y.len()
                        && x.iter().zip(&y).all(|(v, w)| json_equal(v.get(), w.get()))
                }
                _ => false,
            }
        }
        (Some(x), Some(y)) if is_number_start(*x) && is_number_start(*y) => number_equal(a, b),
        _ => match (
            serde_json::from_str::<serde_json::Value>(a),
            serde_json::from_str::<serde_json::Value>(b),
        ) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
    }
}

fn is_number_start(c: u8) -> bool {
    c == b'-' || c.is_ascii_digit()
}

fn number_equal(a: &str, b: &str) -> bool {
    let integer = |t: &str| !t.contains(['.', 'e', 'E']);
    if integer(a) && integer(b) {
        // JSON integers have no leading zeros: equal values are equal texts,
        // but for the sign of zero.
        let zero = |t: &str| t == "0" || t == "-0";
        return a == b || (zero(a) && zero(b));
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_compare_by_value() {
        assert!(json_equal(
            r#"{"a":1,"b":[1.0,"x"]}"#,
            r#"{ "b": [1, "x"], "a": 1 }"#
        ));
        assert!(json_equal("9007199254740993", "9007199254740993"));
        assert!(!json_equal("9007199254740993", "9007199254740992"));
        assert!(json_equal("0", "-0"));
        assert!(json_equal("1e2", "100.0"));
        assert!(json_equal("\"\\u0041\"", "\"A\""));
        assert!(!json_equal("null", "\"null\""));
        assert!(!json_equal("1", "\"1\""));
        assert!(!json_equal(r#"{"a":1}"#, r#"{"a":1,"b":2}"#));
        assert!(!json_equal("[1,2]", "[2,1]"));
    }
}
