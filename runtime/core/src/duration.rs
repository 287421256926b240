//! The one duration grammar of the configuration: humantime's (`500ms`,
//! `10s`, `2m`, `1h 30m`), with an error that says what a duration looks
//! like. A bare number would leave the reader guessing the unit, so one is
//! required.

use std::time::Duration;

/// Parses a duration as the configuration writes it.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "invalid duration {text:?}: {e} (write a number and a unit, like 500ms, 10s, 2m or 1h)"
        )
    })
}

/// `#[serde(deserialize_with = "weir_core::duration::deserialize")]` for a
/// [`Duration`] field.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required_and_explained() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 2m "), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        let err = parse("30").unwrap_err();
        assert!(
            err.contains("\"30\"") && err.contains("like 500ms"),
            "{err}"
        );
        assert!(parse("ten seconds").is_err());
    }
}
