//! Durations in configuration files, written with a unit: `500ms`, `10s`, `2m`.
//!
//! A bare number would leave the reader guessing the unit, so one is required.

use std::time::Duration;

use serde::Deserialize as _;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected a whole number and a unit, like 500ms, 10s, 2m or 1h"
        )
    };
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(invalid()),
    };
    millis.map(Duration::from_millis).ok_or_else(invalid)
}

/// `deserialize_with` for a [`Duration`] field.
pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse(" 3 s "), Ok(Duration::from_secs(3)));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 minutes",
            "99999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
