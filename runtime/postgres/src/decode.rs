//! Column values from pgoutput's text and binary forms into [`Value`]s.
//!
//! The text forms assume the session settings the replication connection
//! forces (`DateStyle=ISO`, `TimeZone=UTC`, `extra_float_digits=3`,
//! `bytea_output=hex`), so each type has exactly one shape to parse. The
//! type of each column is resolved once per Relation message into a
//! [`PgType`], so per-value work is one `match` and the parse itself.
//!
//! Dates are parsed here by hand, on the calendar arithmetic of
//! [`weir_codec::calendar`]: Postgres uses the proleptic Gregorian calendar
//! for every date, with astronomical year numbering behind its `BC` suffix
//! (`0001-01-01 BC` is year 0), and its binary forms count from 2000-01-01.

use weir_codec::calendar::{civil_from_days, days_from_civil, days_in_month};
use weir_codec::{PgType, hex_digit};
use weir_core::Value;

use crate::conn::PG_EPOCH_OFFSET_MICROS;
use crate::types::Form;

/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Above the last year of Postgres's `date` (5874897), far below overflow.
const MAX_YEAR: i64 = 10_000_000;

/// Why a value could not be decoded.
pub(crate) type DecodeResult = Result<Value, &'static str>;

fn utf8(b: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(b).map_err(|_| "value is not valid UTF-8")
}

fn string(b: &[u8]) -> Result<String, &'static str> {
    utf8(b).map(str::to_owned)
}

/// Decodes the text output form of a value.
pub(crate) fn decode_text(kind: PgType, b: &[u8]) -> DecodeResult {
    Ok(match kind {
        PgType::Bool => match b {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => return Err("invalid boolean"),
        },
        PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => {
            Value::Int(utf8(b)?.parse().map_err(|_| "invalid integer")?)
        }
        PgType::Float4 => Value::Float(parse_float4(b)?),
        PgType::Float8 => Value::Float(parse_float8(b)?),
        PgType::Numeric => Value::Numeric(string(b)?),
        PgType::Text => Value::Text(string(b)?),
        PgType::Bytea => Value::Bytes(parse_bytea_text(b)?),
        PgType::Date => Value::Date(parse_date(b)?),
        PgType::Time => Value::Time(parse_time(b)?),
        PgType::Timestamp => match parse_timestamp(b, false)? {
            Some(t) => Value::Timestamp(t),
            None => Value::Other(string(b)?),
        },
        PgType::TimestampTz => match parse_timestamp(b, true)? {
            Some(t) => Value::TimestampTz(t),
            None => Value::Other(string(b)?),
        },
        PgType::Uuid => Value::Uuid(weir_codec::parse_uuid(b).ok_or("invalid uuid")?),
        PgType::Json | PgType::Jsonb => Value::Json(string(b)?),
        PgType::Other => Value::Other(string(b)?),
    })
}

/// Decodes a value of a column of `form`, sent in its binary form or as
/// text: the same [`Value`] either way.
pub(crate) fn decode_value(form: &Form, binary: bool, b: &[u8]) -> DecodeResult {
    match form {
        Form::Typed(t) if binary => decode_binary(*t, b),
        Form::Typed(t) => decode_text(*t, b),
        _ if !binary => Ok(Value::Other(string(b)?)),
        _ => {
            let mut s = String::new();
            crate::printed::print(form, b, &mut s)?;
            Ok(Value::Other(s))
        }
    }
}

/// Decodes the binary send form of a value of a type with a [`Value`] of
/// its own. `PgType::Other` is taken as text (a binary COPY of a column
/// selected as its text).
pub(crate) fn decode_binary(kind: PgType, b: &[u8]) -> DecodeResult {
    fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], &'static str> {
        b.try_into()
            .map_err(|_| "binary value has the wrong length")
    }
    Ok(match kind {
        PgType::Bool => Value::Bool(fixed::<1>(b)?[0] != 0),
        PgType::Int2 => Value::Int(i16::from_be_bytes(fixed(b)?).into()),
        PgType::Int4 => Value::Int(i32::from_be_bytes(fixed(b)?).into()),
        PgType::Int8 => Value::Int(i64::from_be_bytes(fixed(b)?)),
        PgType::Oid => Value::Int(u32::from_be_bytes(fixed(b)?).into()),
        PgType::Float4 => Value::Float(f32::from_be_bytes(fixed(b)?).into()),
        PgType::Float8 => Value::Float(f64::from_be_bytes(fixed(b)?)),
        PgType::Numeric => Value::Numeric(numeric_binary_to_text(b)?),
        PgType::Text => Value::Text(string(b)?),
        PgType::Bytea => Value::Bytes(b.to_vec()),
        PgType::Date => {
            let d = i32::from_be_bytes(fixed(b)?);
            Value::Date(match d {
                i32::MAX | i32::MIN => d,
                _ => d
                    .checked_add(PG_EPOCH_OFFSET_DAYS)
                    .ok_or("date out of range")?,
            })
        }
        PgType::Time => Value::Time(i64::from_be_bytes(fixed(b)?)),
        PgType::Timestamp | PgType::TimestampTz => {
            let tz = kind == PgType::TimestampTz;
            let t = i64::from_be_bytes(fixed(b)?);
            let unix = match t {
                i64::MAX | i64::MIN => Some(t),
                _ => t
                    .checked_add(PG_EPOCH_OFFSET_MICROS)
                    .filter(|u| *u != i64::MAX),
            };
            match (unix, tz) {
                (Some(u), false) => Value::Timestamp(u),
                (Some(u), true) => Value::TimestampTz(u),
                // Within about 30 years of Postgres's maximum (294276 AD)
                // Unix-epoch microseconds overflow i64: keep the text.
                (None, _) => Value::Other(format_pg_timestamp(t, tz)),
            }
        }
        PgType::Uuid => Value::Uuid(fixed(b)?),
        PgType::Json => Value::Json(string(b)?),
        PgType::Jsonb => match b.split_first() {
            Some((1, text)) => Value::Json(string(text)?),
            _ => return Err("unknown jsonb binary version"),
        },
        PgType::Other => Value::Other(string(b)?),
    })
}

fn parse_bytea_text(b: &[u8]) -> Result<Vec<u8>, &'static str> {
    if let Some(hex) = b.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return Err("odd number of hex digits in bytea");
        }
        hex.chunks_exact(2)
            .map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or("invalid hex digit in bytea")
    } else {
        // The "escape" output format, in case a server overrides the
        // forced bytea_output: `\\` is a backslash, `\ooo` an octal byte.
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                out.push(b[i]);
                i += 1;
            } else if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else {
                let oct = b.get(i + 1..i + 4).ok_or("truncated bytea escape")?;
                let mut v: u16 = 0;
                for &c in oct {
                    if !(b'0'..=b'7').contains(&c) {
                        return Err("invalid bytea escape");
                    }
                    v = v * 8 + u16::from(c - b'0');
                }
                out.push(u8::try_from(v).map_err(|_| "invalid bytea escape")?);
                i += 4;
            }
        }
        Ok(out)
    }
}

fn parse_float8(b: &[u8]) -> Result<f64, &'static str> {
    match b {
        b"NaN" => Ok(f64::NAN),
        b"Infinity" => Ok(f64::INFINITY),
        b"-Infinity" => Ok(f64::NEG_INFINITY),
        _ => utf8(b)?.parse().map_err(|_| "invalid float"),
    }
}

fn parse_float4(b: &[u8]) -> Result<f64, &'static str> {
    // Parse as f32 so text mode yields exactly the value binary mode does
    // (float4 1.1 is 1.100000023841858 as an f64).
    match b {
        b"NaN" => Ok(f64::NAN),
        b"Infinity" => Ok(f64::INFINITY),
        b"-Infinity" => Ok(f64::NEG_INFINITY),
        _ => utf8(b)?
            .parse::<f32>()
            .map(f64::from)
            .map_err(|_| "invalid float"),
    }
}

/// A small cursor over ASCII digits and separators.
struct Ascii<'a> {
    b: &'a [u8],
    i: usize,
}

impl Ascii<'_> {
    /// One or more digits, as a number.
    fn number(&mut self) -> Result<i64, &'static str> {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(c - b'0')))
                .ok_or("number too large")?;
            self.i += 1;
        }
        if self.i == start {
            return Err("expected a digit");
        }
        Ok(v)
    }

    /// Exactly two digits.
    fn two(&mut self) -> Result<u32, &'static str> {
        match self.b.get(self.i..self.i + 2) {
            Some([a, b]) if a.is_ascii_digit() && b.is_ascii_digit() => {
                self.i += 2;
                Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            }
            _ => Err("expected two digits"),
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), &'static str> {
        if self.eat(c) {
            Ok(())
        } else {
            Err("unexpected character")
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// `YYYY-MM-DD` (year may be longer), as days since 1970-01-01 given
/// whether the value carried ` BC`.
fn parse_ymd(a: &mut Ascii<'_>, bc: bool) -> Result<i64, &'static str> {
    let y = a.number()?;
    a.expect(b'-')?;
    let m = a.two()?;
    a.expect(b'-')?;
    let d = a.two()?;
    // Postgres's dates end in 5874897 AD; a larger year cannot come from
    // it, and one near i64::MAX would overflow the day count.
    if y > MAX_YEAR {
        return Err("year out of range");
    }
    let y = if bc { 1 - y } else { y };
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err("invalid date");
    }
    Ok(days_from_civil(y, m, d))
}

/// `HH:MM:SS[.ffffff]` as microseconds since midnight.
fn parse_hms(a: &mut Ascii<'_>) -> Result<i64, &'static str> {
    let h = i64::from(a.two()?);
    a.expect(b':')?;
    let m = i64::from(a.two()?);
    a.expect(b':')?;
    let s = i64::from(a.two()?);
    let mut frac = 0i64;
    if a.eat(b'.') {
        let mut digits = 0;
        while let Some(c) = a.peek().filter(u8::is_ascii_digit) {
            if digits == 6 {
                return Err("more than 6 fractional digits");
            }
            frac = frac * 10 + i64::from(c - b'0');
            digits += 1;
            a.i += 1;
        }
        if digits == 0 {
            return Err("expected fractional digits");
        }
        frac *= 10i64.pow(6 - digits);
    }
    if h > 24 || m > 59 || s > 60 {
        return Err("invalid time of day");
    }
    Ok(((h * 60 + m) * 60 + s) * 1_000_000 + frac)
}

fn split_bc(b: &[u8]) -> (&[u8], bool) {
    match b.strip_suffix(b" BC") {
        Some(rest) => (rest, true),
        None => (b, false),
    }
}

pub(crate) fn parse_date(b: &[u8]) -> Result<i32, &'static str> {
    match b {
        b"infinity" => return Ok(i32::MAX),
        b"-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (b, bc) = split_bc(b);
    let mut a = Ascii { b, i: 0 };
    let days = parse_ymd(&mut a, bc)?;
    if !a.done() {
        return Err("trailing characters after date");
    }
    i32::try_from(days)
        .ok()
        .filter(|d| *d != i32::MAX && *d != i32::MIN)
        .ok_or("date out of range")
}

pub(crate) fn parse_time(b: &[u8]) -> Result<i64, &'static str> {
    let mut a = Ascii { b, i: 0 };
    let t = parse_hms(&mut a)?;
    if !a.done() {
        return Err("trailing characters after time");
    }
    Ok(t)
}

/// A `timestamp` or `timestamptz` as microseconds since the Unix epoch
/// (UTC for timestamptz). `Ok(None)` when the value is valid but does not
/// fit the i64 range (years beyond about 294246).
pub(crate) fn parse_timestamp(b: &[u8], tz: bool) -> Result<Option<i64>, &'static str> {
    match b {
        b"infinity" => return Ok(Some(i64::MAX)),
        b"-infinity" => return Ok(Some(i64::MIN)),
        _ => {}
    }
    let (b, bc) = split_bc(b);
    let mut a = Ascii { b, i: 0 };
    let days = parse_ymd(&mut a, bc)?;
    a.expect(b' ')?;
    let time = parse_hms(&mut a)?;
    let mut offset_secs = 0i64;
    if tz {
        let sign = match a.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err("expected a time zone offset"),
        };
        a.i += 1;
        let mut secs = i64::from(a.two()?) * 3600;
        if a.eat(b':') {
            secs += i64::from(a.two()?) * 60;
            if a.eat(b':') {
                secs += i64::from(a.two()?);
            }
        }
        offset_secs = sign * secs;
    }
    if !a.done() {
        return Err("trailing characters after timestamp");
    }
    // Local time = UTC + offset, so UTC = local - offset.
    let micros = i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(time)
        - i128::from(offset_secs) * 1_000_000;
    Ok(i64::try_from(micros)
        .ok()
        .filter(|m| *m != i64::MAX && *m != i64::MIN))
}

/// Formats microseconds since 2000-01-01 the way Postgres prints a
/// timestamp with `DateStyle=ISO` and `TimeZone=UTC`.
pub(crate) fn format_pg_timestamp(pg_micros: i64, tz: bool) -> String {
    let micros = i128::from(pg_micros) + i128::from(PG_EPOCH_OFFSET_MICROS);
    let day_micros = i128::from(MICROS_PER_DAY);
    let days = micros.div_euclid(day_micros) as i64;
    let rem = micros.rem_euclid(day_micros) as i64;
    let (y, mo, d) = civil_from_days(days);
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    let secs = rem / 1_000_000;
    let frac = rem % 1_000_000;
    let mut s = format!(
        "{year:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    if tz {
        s.push_str("+00");
    }
    if bc {
        s.push_str(" BC");
    }
    s
}

/// Converts the binary `numeric` form to the text Postgres prints.
pub(crate) fn numeric_binary_to_text(b: &[u8]) -> Result<String, &'static str> {
    const NEG: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const PINF: u16 = 0xD000;
    const NINF: u16 = 0xF000;
    if b.len() < 8 {
        return Err("numeric too short");
    }
    let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let ndigits = usize::from(be16(0));
    let weight = i64::from(be16(2) as i16);
    let sign = be16(4);
    let dscale = i64::from(be16(6));
    match sign {
        NAN => return Ok("NaN".to_owned()),
        PINF => return Ok("Infinity".to_owned()),
        NINF => return Ok("-Infinity".to_owned()),
        0 | NEG => {}
        _ => return Err("invalid numeric sign"),
    }
    if b.len() != 8 + 2 * ndigits {
        return Err("numeric length does not match its digit count");
    }
    // Base-10000 digits; position d has weight `weight - d`.
    let digit = |d: i64| -> u16 {
        if d >= 0 && (d as usize) < ndigits {
            be16(8 + 2 * d as usize)
        } else {
            0
        }
    };
    let mut s = String::with_capacity(4 * (weight.max(0) as usize + 1) + dscale as usize + 2);
    if sign == NEG {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for d in 0..=weight {
            let dig = digit(d);
            if dig > 9999 {
                return Err("invalid numeric digit");
            }
            if d == 0 {
                push_u16(&mut s, dig);
            } else {
                push_4(&mut s, dig);
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let end = s.len() + dscale as usize;
        let mut d = weight + 1;
        while s.len() < end {
            let dig = digit(d);
            if dig > 9999 {
                return Err("invalid numeric digit");
            }
            push_4(&mut s, dig);
            d += 1;
        }
        s.truncate(end);
    }
    Ok(s)
}

fn push_u16(s: &mut String, v: u16) {
    use std::fmt::Write;
    let _ = write!(s, "{v}");
}

fn push_4(s: &mut String, v: u16) {
    s.push(char::from(b'0' + (v / 1000) as u8));
    s.push(char::from(b'0' + (v / 100 % 10) as u8));
    s.push(char::from(b'0' + (v / 10 % 10) as u8));
    s.push(char::from(b'0' + (v % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date(b"1970-01-01"), Ok(0));
        assert_eq!(parse_date(b"2024-02-29"), Ok(19_782));
        assert_eq!(parse_date(b"infinity"), Ok(i32::MAX));
        assert_eq!(parse_date(b"-infinity"), Ok(i32::MIN));
        assert_eq!(parse_date(b"0044-03-15 BC"), Ok(-735_160));
        // 1 BC is year 0, a leap year.
        assert!(parse_date(b"0001-02-29 BC").is_ok());
        assert!(parse_date(b"0002-02-29 BC").is_err());
        assert!(parse_date(b"2023-02-29").is_err());
        assert!(parse_date(b"2023-13-01").is_err());
        assert_eq!(
            parse_date(b"10000-01-01"),
            Ok(days_from_civil(10_000, 1, 1) as i32)
        );
        assert_eq!(
            decode_binary(PgType::Date, &0i32.to_be_bytes()),
            Ok(Value::Date(10_957))
        );
        assert_eq!(
            decode_binary(PgType::Date, &i32::MAX.to_be_bytes()),
            Ok(Value::Date(i32::MAX))
        );
    }

    #[test]
    fn years_past_postgres_range_are_errors_not_overflows() {
        // A year near i64::MAX overflowed the day count (a panic in debug
        // builds, a wrapped, wrong date in release ones).
        assert_eq!(
            parse_date(b"99999999999999999-01-01"),
            Err("year out of range")
        );
        assert_eq!(
            parse_timestamp(b"9223372036854775807-12-31 00:00:00", false),
            Err("year out of range")
        );
        assert_eq!(
            parse_date(b"9223372036854775807-01-01 BC"),
            Err("year out of range")
        );
        // Postgres's own extremes still parse.
        assert!(parse_date(b"5874897-12-31").is_ok());
        assert!(parse_date(b"4714-11-24 BC").is_ok());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"00:00:00"), Ok(0));
        assert_eq!(parse_time(b"23:59:59.999999"), Ok(86_399_999_999));
        assert_eq!(parse_time(b"12:00:00.5"), Ok(43_200_500_000));
        assert_eq!(parse_time(b"24:00:00"), Ok(86_400_000_000));
        assert!(parse_time(b"12:00").is_err());
        assert!(parse_time(b"12:00:00.1234567").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(b"1970-01-01 00:00:00", false), Ok(Some(0)));
        assert_eq!(
            parse_timestamp(b"1969-12-31 23:59:59.999999", false),
            Ok(Some(-1))
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29 12:34:56.789012", false),
            Ok(Some(1_709_210_096_789_012))
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29 12:34:56.789012+00", true),
            Ok(Some(1_709_210_096_789_012))
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29 14:34:56.789012+02", true),
            Ok(Some(1_709_210_096_789_012))
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29 07:04:56.789012-05:30", true),
            Ok(Some(1_709_210_096_789_012))
        );
        // Postgres: extract(epoch from timestamp '0044-03-15 12:00:00 BC')
        // = -63_517_780_800 (days -735_160 at noon).
        assert_eq!(
            parse_timestamp(b"0044-03-15 12:00:00 BC", false),
            Ok(Some(-63_517_780_800_000_000))
        );
        assert_eq!(
            parse_timestamp(b"0044-03-15 12:00:00+00 BC", true),
            Ok(Some(-63_517_780_800_000_000))
        );
        assert_eq!(parse_timestamp(b"infinity", false), Ok(Some(i64::MAX)));
        assert_eq!(parse_timestamp(b"-infinity", true), Ok(Some(i64::MIN)));
        // Postgres's largest timestamp does not fit Unix-epoch micros.
        assert_eq!(
            parse_timestamp(b"294276-12-31 23:59:59.999999", false),
            Ok(None)
        );
        assert!(parse_timestamp(b"2024-02-29 12:34:56", true).is_err());
        assert!(parse_timestamp(b"2024-02-29T12:34:56", false).is_err());
    }

    #[test]
    fn binary_timestamps_and_overflow() {
        let pg = |unix: i64| (unix - PG_EPOCH_OFFSET_MICROS).to_be_bytes();
        assert_eq!(
            decode_binary(PgType::Timestamp, &pg(1_709_210_096_789_012)),
            Ok(Value::Timestamp(1_709_210_096_789_012))
        );
        assert_eq!(
            decode_binary(PgType::TimestampTz, &i64::MIN.to_be_bytes()),
            Ok(Value::TimestampTz(i64::MIN))
        );
        // 294276-12-31 23:59:59.999999, Postgres's END_TIMESTAMP - 1.
        let max = 9_223_371_331_199_999_999i64;
        assert_eq!(
            decode_binary(PgType::Timestamp, &max.to_be_bytes()),
            Ok(Value::Other("294276-12-31 23:59:59.999999".into()))
        );
        assert_eq!(
            decode_binary(PgType::TimestampTz, &max.to_be_bytes()),
            Ok(Value::Other("294276-12-31 23:59:59.999999+00".into()))
        );
        assert_eq!(
            format_pg_timestamp(
                -63_517_780_800_000_000 - PG_EPOCH_OFFSET_MICROS + 500_000,
                false
            ),
            "0044-03-15 12:00:00.5 BC"
        );
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [ndigits, weight as u16, sign, dscale] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_binary() {
        let t = |b: Vec<u8>| numeric_binary_to_text(&b).unwrap();
        assert_eq!(t(numeric(0, 0, 0, 0, &[])), "0");
        assert_eq!(t(numeric(0, 0, 0, 2, &[])), "0.00");
        assert_eq!(t(numeric(1, 0, 0, 2, &[5])), "5.00");
        assert_eq!(t(numeric(1, 1, 0, 0, &[1])), "10000");
        assert_eq!(t(numeric(2, 1, 0x4000, 1, &[12, 3456])), "-123456.0");
        // 0.0001 is one digit of weight -1.
        assert_eq!(t(numeric(1, -1, 0, 4, &[1])), "0.0001");
        // 1e-20: digit 1 at weight -5, dscale 20.
        assert_eq!(t(numeric(1, -5, 0, 20, &[1])), "0.00000000000000000001");
        // -123456789012345678901234567890.123456789
        assert_eq!(
            t(numeric(
                11,
                7,
                0x4000,
                9,
                &[
                    12, 3456, 7890, 1234, 5678, 9012, 3456, 7890, 1234, 5678, 9000
                ]
            )),
            "-123456789012345678901234567890.123456789"
        );
        assert_eq!(t(numeric(0, 0, 0xC000, 0, &[])), "NaN");
        assert_eq!(t(numeric(0, 0, 0xD000, 0, &[])), "Infinity");
        assert_eq!(t(numeric(0, 0, 0xF000, 0, &[])), "-Infinity");
        assert!(numeric_binary_to_text(&numeric(2, 0, 0, 0, &[1])).is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(decode_text(PgType::Bool, b"t"), Ok(Value::Bool(true)));
        assert_eq!(
            decode_text(PgType::Int8, b"-9223372036854775808"),
            Ok(Value::Int(i64::MIN))
        );
        assert_eq!(
            decode_text(PgType::Float4, b"1.1"),
            decode_binary(PgType::Float4, &1.1f32.to_be_bytes())
        );
        match decode_text(PgType::Float8, b"NaN") {
            Ok(Value::Float(f)) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode_text(PgType::Float8, b"-Infinity"),
            Ok(Value::Float(f64::NEG_INFINITY))
        );
        assert_eq!(
            decode_text(PgType::Bytea, b"\\x00ff10"),
            Ok(Value::Bytes(vec![0, 255, 16]))
        );
        assert_eq!(
            decode_text(PgType::Bytea, b"a\\000\\\\b"),
            Ok(Value::Bytes(vec![b'a', 0, b'\\', b'b']))
        );
        assert!(decode_text(PgType::Bytea, b"\\x0").is_err());
        let u = decode_text(PgType::Uuid, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(
            u,
            Value::Uuid([
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11
            ])
        );
        assert!(decode_text(PgType::Uuid, b"a0eebc99").is_err());
        assert_eq!(
            decode_binary(PgType::Jsonb, b"\x01{\"a\": 1}"),
            Ok(Value::Json("{\"a\": 1}".into()))
        );
        assert_eq!(
            decode_binary(PgType::Other, b"{1,2}"),
            Ok(Value::Other("{1,2}".into()))
        );
        let array = Form::Array {
            elem: Box::new(Form::Typed(PgType::Int4)),
            delim: b',',
        };
        assert_eq!(
            decode_value(&array, false, b"{1}"),
            Ok(Value::Other("{1}".into()))
        );
        assert!(decode_value(&array, true, b"{1}").is_err());
        assert_eq!(
            decode_value(&Form::Typed(PgType::Int4), true, &7i32.to_be_bytes()),
            Ok(Value::Int(7))
        );
        assert_eq!(
            decode_binary(PgType::Oid, &u32::MAX.to_be_bytes()),
            Ok(Value::Int(4_294_967_295))
        );
        assert!(decode_binary(PgType::Int4, &[0, 0]).is_err());
    }
}
