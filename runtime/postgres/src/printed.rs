//! Binary send forms printed as PostgreSQL's output functions print the
//! values, for the types without a [`weir_core::Value`] of their own: what
//! pgoutput's text mode would have sent, under the session settings the
//! connection forces (`DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=postgres`, `extra_float_digits=3`, `lc_monetary=C`,
//! `bytea_output=hex`).
//!
//! Each printer follows its type's output function in the server's
//! source (`interval_out`, `network_out`, `array_out`, `range_out`,
//! `record_out`, …), including the quoting rules of the containers; the
//! integration test `binary_mode_prints_every_type_as_text_mode_does`
//! holds them against a live server, value by value.

use std::fmt::Write as _;

use weir_codec::PgType;
use weir_codec::calendar::civil_from_days;

use crate::decode::{format_pg_timestamp, numeric_binary_to_text};
use crate::types::Form;

type Printed = Result<(), &'static str>;

/// A bounds-checked big-endian reader over one binary value.
struct Bin<'a> {
    b: &'a [u8],
}

impl<'a> Bin<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.b.len() < n {
            return Err("binary value is truncated");
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        Ok(self.take(N)?.try_into().unwrap_or([0; N]))
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, &'static str> {
        Ok(f64::from_be_bytes(self.array()?))
    }
    /// A count, refused when negative or larger than the bytes left
    /// could hold at `min_size` bytes per item.
    fn count(&mut self, min_size: usize) -> Result<usize, &'static str> {
        let n = usize::try_from(self.i32()?).map_err(|_| "negative count")?;
        if n.saturating_mul(min_size) > self.b.len() {
            return Err("count larger than the value");
        }
        Ok(n)
    }
    /// A length-prefixed part; `None` for a length of -1 (NULL).
    fn part(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.i32()? {
            -1 => Ok(None),
            n => Ok(Some(
                self.take(usize::try_from(n).map_err(|_| "negative length")?)?,
            )),
        }
    }
    fn end(&self) -> Printed {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after the binary value")
        }
    }
}

fn utf8(b: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(b).map_err(|_| "value is not valid UTF-8")
}

/// Appends the text Postgres prints for the binary value `b` of `form`.
pub(crate) fn print(form: &Form, b: &[u8], out: &mut String) -> Printed {
    let mut r = Bin { b };
    match form {
        Form::Typed(t) => return typed(*t, b, out),
        Form::Label => {
            out.push_str(utf8(b)?);
            return Ok(());
        }
        Form::JsonPath => {
            return match b.split_first() {
                Some((1, text)) => {
                    out.push_str(utf8(text)?);
                    Ok(())
                }
                _ => Err("unknown jsonpath binary version"),
            };
        }
        Form::Interval => {
            let time = r.i64()?;
            let day = r.i32()?;
            let month = r.i32()?;
            interval(out, time, day, month);
        }
        Form::TimeTz => {
            let time = r.i64()?;
            let zone = r.i32()?;
            push_time(out, time);
            push_zone(out, zone);
        }
        Form::Inet => inet(&mut r, out)?,
        Form::MacAddr | Form::MacAddr8 => {
            let n = if *form == Form::MacAddr { 6 } else { 8 };
            for (i, byte) in r.take(n)?.iter().enumerate() {
                if i > 0 {
                    out.push(':');
                }
                let _ = write!(out, "{byte:02x}");
            }
        }
        Form::Money => money(out, r.i64()?),
        Form::Bits => {
            let bits = usize::try_from(r.i32()?).map_err(|_| "negative bit length")?;
            let bytes = r.take(bits.div_ceil(8))?;
            for i in 0..bits {
                out.push(if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                    '1'
                } else {
                    '0'
                });
            }
        }
        Form::Char => match r.u8()? {
            0 => {}
            c if c.is_ascii() => out.push(char::from(c)),
            // PostgreSQL 15 on: a byte outside ASCII as `\ooo`.
            c => {
                let _ = write!(out, "\\{c:03o}");
            }
        },
        Form::Lsn { padded } => {
            let lsn = r.i64()? as u64;
            let (hi, lo) = (lsn >> 32, lsn & 0xffff_ffff);
            let _ = if *padded {
                write!(out, "{hi:X}/{lo:08X}")
            } else {
                write!(out, "{hi:X}/{lo:X}")
            };
        }
        Form::Xid => {
            let _ = write!(out, "{}", r.u32()?);
        }
        Form::Xid8 => {
            let _ = write!(out, "{}", r.i64()? as u64);
        }
        Form::Tid => {
            let block = r.u32()?;
            let offset = r.u16()?;
            let _ = write!(out, "({block},{offset})");
        }
        Form::Point => point(&mut r, out)?,
        Form::Line => {
            out.push('{');
            for i in 0..3 {
                if i > 0 {
                    out.push(',');
                }
                push_float8(out, r.f64()?);
            }
            out.push('}');
        }
        Form::Lseg => {
            out.push('[');
            point(&mut r, out)?;
            out.push(',');
            point(&mut r, out)?;
            out.push(']');
        }
        Form::Box => {
            point(&mut r, out)?;
            out.push(',');
            point(&mut r, out)?;
        }
        Form::Path => {
            let closed = r.u8()? != 0;
            let n = r.count(16)?;
            points(&mut r, out, n, if closed { ('(', ')') } else { ('[', ']') })?;
        }
        Form::Polygon => {
            let n = r.count(16)?;
            points(&mut r, out, n, ('(', ')'))?;
        }
        Form::Circle => {
            out.push('<');
            point(&mut r, out)?;
            out.push(',');
            push_float8(out, r.f64()?);
            out.push('>');
        }
        Form::Snapshot => {
            let n = r.count(8)?;
            let xmin = r.i64()? as u64;
            let xmax = r.i64()? as u64;
            let _ = write!(out, "{xmin}:{xmax}:");
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}", r.i64()? as u64);
            }
        }
        Form::TsVector => tsvector(&mut r, out)?,
        Form::TsQuery => tsquery(&mut r, out)?,
        Form::Array { elem, delim } => array(&mut r, out, elem, *delim)?,
        Form::Vector(elem) => {
            let mut first = true;
            array_elements(&mut r, elem, |v, text| {
                if !std::mem::take(&mut first) {
                    out.push(' ');
                }
                match v {
                    Some(_) => out.push_str(text),
                    None => out.push_str("NULL"),
                }
            })?;
        }
        Form::Range(sub) => range(&mut r, out, sub)?,
        Form::Multirange(sub) => {
            let n = r.count(5)?;
            out.push('{');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let part = r.part()?.ok_or("NULL range in a multirange")?;
                range(&mut Bin { b: part }, out, sub)?;
            }
            out.push('}');
        }
        Form::Record(fields) => record(&mut r, out, fields)?,
        Form::TextOnly | Form::Unknown | Form::Unsupported { .. } => {
            return Err("binary value of a type Weir has no binary decoder for");
        }
    }
    r.end()
}

/// The text of a value of a type with a [`weir_core::Value`] of its own,
/// as Postgres prints it inside an array, range or composite.
fn typed(t: PgType, b: &[u8], out: &mut String) -> Printed {
    let mut r = Bin { b };
    match t {
        PgType::Bool => out.push(if r.u8()? != 0 { 't' } else { 'f' }),
        PgType::Int2 => {
            let _ = write!(out, "{}", i16::from_be_bytes(r.array()?));
        }
        PgType::Int4 => {
            let _ = write!(out, "{}", r.i32()?);
        }
        PgType::Int8 => {
            let _ = write!(out, "{}", r.i64()?);
        }
        PgType::Oid => {
            let _ = write!(out, "{}", r.u32()?);
        }
        PgType::Float4 => push_float(out, f64::from(f32::from_be_bytes(r.array()?)), true),
        PgType::Float8 => push_float8(out, r.f64()?),
        PgType::Numeric => return numeric_binary_to_text(b).map(|s| out.push_str(&s)),
        PgType::Text | PgType::Json | PgType::Other => {
            out.push_str(utf8(b)?);
            return Ok(());
        }
        PgType::Jsonb => match b.split_first() {
            Some((1, text)) => {
                out.push_str(utf8(text)?);
                return Ok(());
            }
            _ => return Err("unknown jsonb binary version"),
        },
        PgType::Bytea => {
            weir_codec::push_bytea_hex(out, b);
            return Ok(());
        }
        PgType::Uuid => {
            weir_codec::push_uuid_text(out, &r.array()?);
        }
        PgType::Date => push_date(out, r.i32()?),
        PgType::Time => push_time(out, r.i64()?),
        PgType::Timestamp | PgType::TimestampTz => match r.i64()? {
            i64::MAX => out.push_str("infinity"),
            i64::MIN => out.push_str("-infinity"),
            micros => out.push_str(&format_pg_timestamp(micros, t == PgType::TimestampTz)),
        },
    }
    r.end()
}

/// `float8out` with `extra_float_digits > 0`: the shortest text that reads
/// back as the same number, in fixed notation for decimal exponents from
/// -4 to 14 (float4: to 5), else as `1.5e+20`.
pub(crate) fn push_float(out: &mut String, v: f64, single: bool) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let (neg, digits, exp) = shortest(v, single);
    if neg {
        out.push('-');
    }
    let limit = if single { 6 } else { 15 };
    if (-4..limit).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
}

/// The shortest decimal that reads back as `v` (an `f32` when `single`),
/// as PostgreSQL's copy of Ryu finds it: its sign, its significant digits
/// and the decimal exponent of the first one.
///
/// Ryu proper (the `ryu` crate) also accepts a decimal lying exactly
/// halfway to a neighbouring float, which reads back as `v` only by
/// ties-to-even; Postgres's build does not (it prints
/// `3.1722300588172752e+16` where 16 digits would do). So Ryu's answer is
/// kept when it lies strictly inside `v`'s rounding interval, which is
/// nearly always; otherwise the shortest correctly rounded decimal that
/// does is searched for.
fn shortest(v: f64, single: bool) -> (bool, String, i32) {
    let neg = v.is_sign_negative();
    let a = v.abs();
    if a == 0.0 {
        return (neg, "0".to_owned(), 0);
    }
    let mut buf = ryu::Buffer::new();
    let text = if single {
        buf.format_finite(a as f32)
    } else {
        buf.format_finite(a)
    };
    let (digits, exp) = decimal_parts(text);
    if strictly_inside(&digits, exp, a, single) {
        return (neg, digits, exp);
    }
    let max = if single { 9 } else { 17 };
    for n in digits.len()..=max {
        // Correctly rounded to n significant digits, then its neighbours
        // (the interval is lopsided at a power of two).
        let (d, e) = decimal_parts(&format!("{:.*e}", n - 1, a));
        let Ok(base) = format!("{d:0<n$}").parse::<u64>() else {
            continue;
        };
        for cand in [base, base + 1, base.saturating_sub(1)] {
            let (cd, ce) = decimal_parts(&format!("{cand}e{}", e - (n as i32 - 1)));
            if cand > 0 && strictly_inside(&cd, ce, a, single) {
                return (neg, cd, ce);
            }
        }
    }
    (neg, digits, exp)
}

/// Whether the decimal `digits` (first digit at 10^`exp`) lies strictly
/// inside the interval of reals that round to `a`: nudged up or down by
/// less than any gap between it and an end of that interval, it still
/// reads as `a`.
fn strictly_inside(digits: &str, exp: i32, a: f64, single: bool) -> bool {
    let Ok(d) = digits.parse::<u64>() else {
        return false;
    };
    // The decimal is d × 10^k. An interval end is an odd multiple of half
    // an ulp, 2^(u - 1): its last decimal place is 10^(u - 1) below 1, and
    // an integer above. Two different decimals differ at the coarser of
    // their last places at least, so a nudge one place finer than both
    // cannot cross an end.
    let k = exp - (digits.len() as i32 - 1);
    let u = if single {
        let e = ((a as f32).to_bits() >> 23 & 0xff) as i32;
        if e == 0 { -149 } else { e - 150 }
    } else {
        let e = (a.to_bits() >> 52 & 0x7ff) as i32;
        if e == 0 { -1074 } else { e - 1075 }
    };
    let finest = k.min(if u < 1 { u - 1 } else { 0 });
    let past = (k - finest) as usize + 1;
    let up = format!("{d}{}1e{}", "0".repeat(past), k - past as i32 - 1);
    let down = format!("{}{}e{}", d - 1, "9".repeat(past + 1), k - past as i32 - 1);
    let reads = |s: &str| {
        if single {
            s.parse::<f32>().is_ok_and(|x| f64::from(x) == a)
        } else {
            s.parse::<f64>().is_ok_and(|x| x == a)
        }
    };
    reads(&up) && reads(&down)
}

/// A float's text (`1.25e-7`, `123.0`, `1e20`, `0.001`) as its
/// significant digits and the decimal exponent of the first one.
fn decimal_parts(text: &str) -> (String, i32) {
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let lead = all.bytes().take_while(|c| *c == b'0').count();
    let digits = all[lead..].trim_end_matches('0');
    if digits.is_empty() {
        return ("0".to_owned(), 0);
    }
    // The first significant digit's place: int.len() - 1 for a digit in
    // the integer part, one less per leading zero.
    let exp10 = int.len() as i32 - 1 - lead as i32 + exp;
    (digits.to_owned(), exp10)
}

fn push_float8(out: &mut String, v: f64) {
    push_float(out, v, false);
}

/// Days since 2000-01-01 as `date_out` prints them.
fn push_date(out: &mut String, pg_days: i32) {
    match pg_days {
        i32::MAX => out.push_str("infinity"),
        i32::MIN => out.push_str("-infinity"),
        d => {
            let (y, m, day) = civil_from_days(i64::from(d) + 10_957);
            let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
            let _ = write!(out, "{year:04}-{m:02}-{day:02}");
            if bc {
                out.push_str(" BC");
            }
        }
    }
}

/// Microseconds since midnight as `time_out` prints them.
fn push_time(out: &mut String, micros: i64) {
    let secs = micros / 1_000_000;
    let _ = write!(out, "{:02}:{:02}:", secs / 3600, secs / 60 % 60);
    push_seconds(out, secs % 60, micros % 1_000_000);
}

/// `SS[.ffffff]`, the fraction without trailing zeros (`AppendSeconds`).
fn push_seconds(out: &mut String, secs: i64, frac: i64) {
    let _ = write!(out, "{:02}", secs.unsigned_abs());
    if frac != 0 {
        let f = format!("{:06}", frac.unsigned_abs());
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
}

/// A time zone in seconds west of UTC, as `EncodeTimezone` prints it.
fn push_zone(out: &mut String, west: i32) {
    let secs = west.unsigned_abs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    out.push(if west <= 0 { '+' } else { '-' });
    let _ = if s != 0 {
        write!(out, "{h:02}:{m:02}:{s:02}")
    } else if m != 0 {
        write!(out, "{h:02}:{m:02}")
    } else {
        write!(out, "{h:02}")
    };
}

/// `interval_out` with `IntervalStyle=postgres`.
fn interval(out: &mut String, time: i64, day: i32, month: i32) {
    if time == i64::MAX && day == i32::MAX && month == i32::MAX {
        out.push_str("infinity");
        return;
    }
    if time == i64::MIN && day == i32::MIN && month == i32::MIN {
        out.push_str("-infinity");
        return;
    }
    let start = out.len();
    // Each nonzero part marks whether the next one needs an explicit '+'.
    let mut before_negative = false;
    let mut part = |out: &mut String, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let first = out.len() == start;
        let _ = write!(
            out,
            "{}{}{value} {unit}{}",
            if first { "" } else { " " },
            if before_negative && value > 0 {
                "+"
            } else {
                ""
            },
            if value != 1 { "s" } else { "" }
        );
        before_negative = value < 0;
    };
    part(out, i64::from(month / 12), "year");
    part(out, i64::from(month % 12), "mon");
    part(out, i64::from(day), "day");
    let zero = out.len() == start;
    let hours = time / 3_600_000_000;
    let rest = time % 3_600_000_000;
    let minutes = rest / 60_000_000;
    let rest = rest % 60_000_000;
    let (secs, frac) = (rest / 1_000_000, rest % 1_000_000);
    if zero || time != 0 {
        let minus = hours < 0 || minutes < 0 || secs < 0 || frac < 0;
        let _ = write!(
            out,
            "{}{}{:02}:{:02}:",
            if zero { "" } else { " " },
            if minus {
                "-"
            } else if before_negative {
                "+"
            } else {
                ""
            },
            hours.unsigned_abs(),
            minutes.unsigned_abs()
        );
        push_seconds(out, secs, frac);
    }
}

/// `network_out`: `inet` without a `/32` (`/128`) mask, `cidr` always
/// with its mask.
fn inet(r: &mut Bin<'_>, out: &mut String) -> Printed {
    let family = r.u8()?;
    let bits = r.u8()?;
    let is_cidr = r.u8()? != 0;
    let len = usize::from(r.u8()?);
    let addr = r.take(len)?;
    let max = match (family, len) {
        (2, 4) => {
            let _ = write!(out, "{}.{}.{}.{}", addr[0], addr[1], addr[2], addr[3]);
            32
        }
        (3, 16) => {
            ipv6(addr, out);
            128
        }
        _ => return Err("unknown inet address family"),
    };
    if is_cidr || bits != max {
        let _ = write!(out, "/{bits}");
    }
    Ok(())
}

/// An IPv6 address as Postgres's `inet_net_ntop` prints it: the longest
/// run of two or more zero groups (the first of equals) as `::`, and an
/// IPv4 tail for the mapped and compatible forms.
fn ipv6(a: &[u8], out: &mut String) {
    let words: Vec<u16> = a
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    // Runs of zero groups, as (first group, length).
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            cur = Some(match cur {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else if let Some(c) = cur.take()
            && best.is_none_or(|b| c.1 > b.1)
        {
            best = Some(c);
        }
    }
    if let Some(c) = cur
        && best.is_none_or(|b| c.1 > b.1)
    {
        best = Some(c);
    }
    let best = best.filter(|b| b.1 >= 2);
    let mut i = 0;
    while i < 8 {
        if let Some((base, len)) = best
            && i >= base
            && i < base + len
        {
            if i == base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && let Some((0, len)) = best
            && (len == 6 || (len == 7 && words[7] != 1) || (len == 5 && words[5] == 0xffff))
        {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    if let Some((base, len)) = best
        && base + len == 8
    {
        out.push(':');
    }
}

/// `cash_out` under `lc_monetary = C`: `$1,234.56`, `-$1,234.56`.
fn money(out: &mut String, cents: i64) {
    let u = cents.unsigned_abs();
    let (units, frac) = (u / 100, u % 100);
    if cents < 0 {
        out.push('-');
    }
    out.push('$');
    let digits = units.to_string();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    let _ = write!(out, ".{frac:02}");
}

fn point(r: &mut Bin<'_>, out: &mut String) -> Printed {
    out.push('(');
    push_float8(out, r.f64()?);
    out.push(',');
    push_float8(out, r.f64()?);
    out.push(')');
    Ok(())
}

fn points(r: &mut Bin<'_>, out: &mut String, n: usize, (open, close): (char, char)) -> Printed {
    out.push(open);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        point(r, out)?;
    }
    out.push(close);
    Ok(())
}

/// `tsvectorout`: `'lexeme':1A,2 'other'`.
fn tsvector(r: &mut Bin<'_>, out: &mut String) -> Printed {
    let n = r.count(3)?;
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        let end =
            r.b.iter()
                .position(|&c| c == 0)
                .ok_or("unterminated tsvector lexeme")?;
        let lexeme = utf8(r.take(end)?)?;
        r.take(1)?;
        push_ts_operand(out, lexeme);
        let npos = r.u16()?;
        for j in 0..npos {
            out.push(if j == 0 { ':' } else { ',' });
            let p = r.u16()?;
            let _ = write!(out, "{}", p & 0x3fff);
            match p >> 14 {
                3 => out.push('A'),
                2 => out.push('B'),
                1 => out.push('C'),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A lexeme in single quotes, `'` and `\` doubled.
fn push_ts_operand(out: &mut String, s: &str) {
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
}

/// One item of a tsquery, in the prefix order `tsquerysend` writes.
enum TsItem {
    Operand {
        weight: u8,
        prefix: bool,
        text: String,
    },
    Not,
    And,
    Or,
    Phrase(i16),
}

/// `tsqueryout`: the query's items (prefix order) printed infix, with
/// parentheses where an operand binds looser than its operator.
fn tsquery(r: &mut Bin<'_>, out: &mut String) -> Printed {
    let n = r.count(2)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(match r.u8()? {
            1 => {
                let weight = r.u8()?;
                let prefix = r.u8()? != 0;
                let end =
                    r.b.iter()
                        .position(|&c| c == 0)
                        .ok_or("unterminated tsquery operand")?;
                let text = utf8(r.take(end)?)?.to_owned();
                r.take(1)?;
                TsItem::Operand {
                    weight,
                    prefix,
                    text,
                }
            }
            2 => match r.u8()? {
                1 => TsItem::Not,
                2 => TsItem::And,
                3 => TsItem::Or,
                4 => TsItem::Phrase(i16::from_be_bytes(r.array()?)),
                _ => return Err("unknown tsquery operator"),
            },
            _ => return Err("unknown tsquery item"),
        });
    }
    if items.is_empty() {
        return Ok(());
    }
    let mut at = 0;
    ts_infix(&items, &mut at, out, -1, false)?;
    if at != items.len() {
        return Err("trailing tsquery items");
    }
    Ok(())
}

/// Operator priorities as `tsearch_op_priority` ranks them: `!` 4,
/// `<->` 3, `&` 2, `|` 1.
fn ts_priority(item: &TsItem) -> i32 {
    match item {
        TsItem::Not => 4,
        TsItem::Phrase(_) => 3,
        TsItem::And => 2,
        TsItem::Or => 1,
        TsItem::Operand { .. } => 5,
    }
}

/// Prints the item at `*at` and its operands, moving `at` past them.
/// `parent` is the enclosing operator's priority (-1 at the top);
/// `right_of_phrase` whether this is a phrase operator's right operand,
/// where a phrase needs parentheses since its order matters.
fn ts_infix(
    items: &[TsItem],
    at: &mut usize,
    out: &mut String,
    parent: i32,
    right_of_phrase: bool,
) -> Printed {
    let item = items.get(*at).ok_or("tsquery operator without operands")?;
    *at += 1;
    let p = ts_priority(item);
    match item {
        TsItem::Operand {
            weight,
            prefix,
            text,
        } => {
            push_ts_operand(out, text);
            if *weight != 0 || *prefix {
                out.push(':');
                if *prefix {
                    out.push('*');
                }
                for (bit, c) in [(8, 'A'), (4, 'B'), (2, 'C'), (1, 'D')] {
                    if weight & bit != 0 {
                        out.push(c);
                    }
                }
            }
        }
        TsItem::Not => {
            let paren = p < parent;
            if paren {
                out.push_str("( ");
            }
            out.push('!');
            ts_infix(items, at, out, p, false)?;
            if paren {
                out.push_str(" )");
            }
        }
        op => {
            let phrase = matches!(op, TsItem::Phrase(_));
            let paren = p < parent || (phrase && right_of_phrase);
            if paren {
                out.push_str("( ");
            }
            // Prefix order puts the right operand first.
            let mut right = String::new();
            ts_infix(items, at, &mut right, p, phrase)?;
            ts_infix(items, at, out, p, false)?;
            match op {
                TsItem::And => out.push_str(" & "),
                TsItem::Or => out.push_str(" | "),
                TsItem::Phrase(1) => out.push_str(" <-> "),
                TsItem::Phrase(d) => {
                    let _ = write!(out, " <{d}> ");
                }
                _ => unreachable!("operands and NOT are handled above"),
            }
            out.push_str(&right);
            if paren {
                out.push_str(" )");
            }
        }
    }
    Ok(())
}

/// Whether `array_out` quotes an element's text.
fn array_needs_quotes(s: &str, delim: u8) -> bool {
    s.is_empty()
        || s.eq_ignore_ascii_case("NULL")
        || s.bytes()
            .any(|c| matches!(c, b'"' | b'\\' | b'{' | b'}') || c == delim || is_pg_space(c))
}

/// `array_isspace`, `scanner_isspace`: the characters Postgres's parsers
/// skip as white space.
fn is_pg_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Walks an array's elements in storage order, handing each one's text
/// (or `None` for NULL) to `each`.
fn array_elements(r: &mut Bin<'_>, elem: &Form, mut each: impl FnMut(Option<()>, &str)) -> Printed {
    let ndim = r.count(8)?;
    let _flags = r.i32()?;
    let _elem_oid = r.u32()?;
    let mut total = 1usize;
    for _ in 0..ndim {
        let len = r.count(0)?;
        let _lower = r.i32()?;
        total = total.checked_mul(len).ok_or("array too large")?;
    }
    if ndim == 0 {
        total = 0;
    }
    let mut text = String::new();
    for _ in 0..total {
        match r.part()? {
            None => each(None, ""),
            Some(b) => {
                text.clear();
                print(elem, b, &mut text)?;
                each(Some(()), &text);
            }
        }
    }
    Ok(())
}

/// `array_out`: `{1,2}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`, elements quoted
/// where needed.
fn array(r: &mut Bin<'_>, out: &mut String, elem: &Form, delim: u8) -> Printed {
    let ndim = r.count(8)?;
    let _flags = r.i32()?;
    let _elem_oid = r.u32()?;
    if ndim == 0 {
        out.push_str("{}");
        return Ok(());
    }
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let len = r.count(0)?;
        let lower = r.i32()?;
        dims.push((len, lower));
    }
    if dims.iter().any(|&(_, lower)| lower != 1) {
        for &(len, lower) in &dims {
            let upper = i64::from(lower) + len as i64 - 1;
            let _ = write!(out, "[{lower}:{upper}]");
        }
        out.push('=');
    }
    if dims.iter().any(|&(len, _)| len == 0) {
        out.push_str("{}");
        return Ok(());
    }
    let delim_char = char::from(delim);
    let mut index = vec![0usize; ndim];
    let mut text = String::new();
    for _ in 0..ndim {
        out.push('{');
    }
    loop {
        match r.part()? {
            None => out.push_str("NULL"),
            Some(b) => {
                text.clear();
                print(elem, b, &mut text)?;
                if array_needs_quotes(&text, delim) {
                    out.push('"');
                    for c in text.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(&text);
                }
            }
        }
        // Advance the index, closing and opening braces at the edges.
        let mut d = ndim;
        loop {
            d -= 1;
            index[d] += 1;
            if index[d] < dims[d].0 {
                out.push(delim_char);
                for _ in d + 1..ndim {
                    out.push('{');
                }
                break;
            }
            index[d] = 0;
            out.push('}');
            if d == 0 {
                return Ok(());
            }
        }
    }
}

/// `range_out`: `[1,10)`, `(,5]`, `empty`.
fn range(r: &mut Bin<'_>, out: &mut String, sub: &Form) -> Printed {
    const EMPTY: u8 = 0x01;
    const LB_INC: u8 = 0x02;
    const UB_INC: u8 = 0x04;
    const LB_INF: u8 = 0x08;
    const UB_INF: u8 = 0x10;
    let flags = r.u8()?;
    if flags & EMPTY != 0 {
        out.push_str("empty");
        return Ok(());
    }
    out.push(if flags & LB_INC != 0 { '[' } else { '(' });
    let mut text = String::new();
    if flags & LB_INF == 0 {
        let b = r.part()?.ok_or("NULL range bound")?;
        print(sub, b, &mut text)?;
        push_quoted_if(out, &text, b"()[],");
    }
    out.push(',');
    if flags & UB_INF == 0 {
        let b = r.part()?.ok_or("NULL range bound")?;
        text.clear();
        print(sub, b, &mut text)?;
        push_quoted_if(out, &text, b"()[],");
    }
    out.push(if flags & UB_INC != 0 { ']' } else { ')' });
    Ok(())
}

/// A range bound or composite field: quoted when empty or when it holds
/// a quote, backslash, white space or one of `special`, with quotes and
/// backslashes doubled (`range_bound_escape`, `record_out`).
fn push_quoted_if(out: &mut String, s: &str, special: &[u8]) {
    let quote = s.is_empty()
        || s.bytes()
            .any(|c| c == b'"' || c == b'\\' || is_pg_space(c) || special.contains(&c));
    if !quote {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('"');
}

/// `record_out`: `(1,"a b",,"")`, a NULL field as nothing. Each field
/// carries its type's OID, so a field is decoded by the form of that OID
/// among the fields the catalog listed, which survives attributes added
/// or dropped since.
fn record(r: &mut Bin<'_>, out: &mut String, fields: &[(u32, Form)]) -> Printed {
    let n = r.count(8)?;
    out.push('(');
    let mut text = String::new();
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let oid = r.u32()?;
        let Some(b) = r.part()? else {
            continue;
        };
        let form = match fields.get(i) {
            Some((o, f)) if *o == oid => f,
            _ => {
                &fields
                    .iter()
                    .find(|(o, _)| *o == oid)
                    .ok_or("composite field of a type the catalog did not list")?
                    .1
            }
        };
        text.clear();
        print(form, b, &mut text)?;
        push_quoted_if(out, &text, b"(),");
    }
    out.push(')');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(form: &Form, b: &[u8]) -> String {
        let mut s = String::new();
        print(form, b, &mut s).unwrap();
        s
    }

    fn float8(v: f64) -> String {
        let mut s = String::new();
        push_float(&mut s, v, false);
        s
    }

    fn float4(v: f32) -> String {
        let mut s = String::new();
        push_float(&mut s, f64::from(v), true);
        s
    }

    #[test]
    fn floats_print_as_postgres_does() {
        assert_eq!(float8(1e20), "1e+20");
        assert_eq!(float8(1.5e-7), "1.5e-07");
        assert_eq!(float8(123_456_789_012_345.0), "123456789012345");
        assert_eq!(float8(1_234_567_890_123_456.0), "1.234567890123456e+15");
        assert_eq!(float8(0.0001), "0.0001");
        assert_eq!(float8(0.00001), "1e-05");
        assert_eq!(float8(-0.0), "-0");
        assert_eq!(float8(0.0), "0");
        assert_eq!(float8(1.1), "1.1");
        assert_eq!(float8(1e100), "1e+100");
        assert_eq!(float8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float4(1e6), "1e+06");
        assert_eq!(float4(123_456.0), "123456");
        assert_eq!(float4(1.1), "1.1");
        // Ryu's 16 digits lie exactly halfway to the next float: Postgres
        // prints 17.
        assert_eq!(
            float8(f64::from_bits(0x435c_2cd0_ea81_0974)),
            "3.1722300588172752e+16"
        );
        // Two shortest candidates equally near: the even one.
        assert_eq!(float4(2_503_881.0 / 8.0), "312985.12");
    }

    #[test]
    fn intervals() {
        let i = |time: i64, day, month| {
            let mut s = String::new();
            interval(&mut s, time, day, month);
            s
        };
        assert_eq!(
            i(4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000, -3, 14),
            "1 year 2 mons -3 days +04:05:06.5"
        );
        assert_eq!(i(0, -1, 0), "-1 days");
        assert_eq!(
            i(-(4 * 3_600_000_000 + 5 * 60_000_000 + 6_000_000), 0, 0),
            "-04:05:06"
        );
        assert_eq!(i(-1_000_000, 0, 1), "1 mon -00:00:01");
        assert_eq!(i(0, 0, 0), "00:00:00");
        assert_eq!(i(0, 1, 0), "1 day");
    }

    #[test]
    fn addresses() {
        let v6 = |s: &str| {
            let a: std::net::Ipv6Addr = s.parse().unwrap();
            let mut b = vec![3, 128, 0, 16];
            b.extend_from_slice(&a.octets());
            p(&Form::Inet, &b)
        };
        assert_eq!(v6("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(v6("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(v6("::2"), "::2");
        assert_eq!(v6("1::"), "1::");
        assert_eq!(v6("1:0:0:1::1"), "1:0:0:1::1");
        assert_eq!(v6("1:0:1:0:1:0:1:0"), "1:0:1:0:1:0:1:0");
        assert_eq!(p(&Form::Inet, &[2, 16, 1, 4, 10, 1, 0, 0]), "10.1.0.0/16");
        assert_eq!(p(&Form::Inet, &[2, 32, 0, 4, 10, 1, 2, 3]), "10.1.2.3");
        assert_eq!(p(&Form::Inet, &[2, 32, 1, 4, 10, 1, 2, 3]), "10.1.2.3/32");
    }

    #[test]
    fn money_in_the_c_locale() {
        let m = |c| {
            let mut s = String::new();
            money(&mut s, c);
            s
        };
        assert_eq!(m(-123_456), "-$1,234.56");
        assert_eq!(m(0), "$0.00");
        assert_eq!(m(i64::MAX), "$92,233,720,368,547,758.07");
        assert_eq!(m(i64::MIN), "-$92,233,720,368,547,758.08");
    }

    /// An array's binary form: one dimension of `elems` (None = NULL).
    fn array_bin(lower: i32, elems: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(1i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        b.extend(25u32.to_be_bytes());
        b.extend((elems.len() as i32).to_be_bytes());
        b.extend(lower.to_be_bytes());
        for e in elems {
            match e {
                None => b.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    #[test]
    fn arrays_quote_as_array_out_does() {
        let text = Form::Array {
            elem: Box::new(Form::Typed(PgType::Text)),
            delim: b',',
        };
        let elems: [Option<&[u8]>; 6] = [
            Some(b"a b"),
            Some(b""),
            Some(b"NULL"),
            None,
            Some(b"x\"y"),
            Some(b"a\\b"),
        ];
        assert_eq!(
            p(&text, &array_bin(1, &elems)),
            r#"{"a b","","NULL",NULL,"x\"y","a\\b"}"#
        );
        let int4 = Form::Array {
            elem: Box::new(Form::Typed(PgType::Int4)),
            delim: b',',
        };
        assert_eq!(
            p(
                &int4,
                &array_bin(0, &[Some(&1i32.to_be_bytes()), Some(&2i32.to_be_bytes())])
            ),
            "[0:1]={1,2}"
        );
        // Two dimensions, 2×2.
        let mut b = Vec::new();
        for v in [2i32, 0, 23, 2, 1, 2, 1] {
            b.extend(v.to_be_bytes());
        }
        for v in 1i32..=4 {
            b.extend(4i32.to_be_bytes());
            b.extend(v.to_be_bytes());
        }
        assert_eq!(p(&int4, &b), "{{1,2},{3,4}}");
        let mut empty = Vec::new();
        for v in [0i32, 0, 23] {
            empty.extend(v.to_be_bytes());
        }
        assert_eq!(p(&int4, &empty), "{}");
    }

    #[test]
    fn ranges_and_records() {
        let int4range = Form::Range(Box::new(Form::Typed(PgType::Int4)));
        let mut b = vec![0x02];
        b.extend(4i32.to_be_bytes());
        b.extend(1i32.to_be_bytes());
        b.extend(4i32.to_be_bytes());
        b.extend(10i32.to_be_bytes());
        assert_eq!(p(&int4range, &b), "[1,10)");
        assert_eq!(p(&int4range, &[0x01]), "empty");
        let mut lower_only = vec![0x02 | 0x10];
        lower_only.extend(4i32.to_be_bytes());
        lower_only.extend(5i32.to_be_bytes());
        assert_eq!(p(&int4range, &lower_only), "[5,)");

        let rec = Form::Record(
            vec![
                (23, Form::Typed(PgType::Int4)),
                (25, Form::Typed(PgType::Text)),
                (25, Form::Typed(PgType::Text)),
                (25, Form::Typed(PgType::Text)),
            ]
            .into(),
        );
        let mut b = Vec::new();
        b.extend(4i32.to_be_bytes());
        let field = |b: &mut Vec<u8>, oid: u32, v: Option<&[u8]>| {
            b.extend(oid.to_be_bytes());
            match v {
                None => b.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        };
        field(&mut b, 23, Some(&1i32.to_be_bytes()));
        field(&mut b, 25, Some(b"a b"));
        field(&mut b, 25, None);
        field(&mut b, 25, Some(b"x\"y"));
        assert_eq!(p(&rec, &b), r#"(1,"a b",,"x""y")"#);
    }

    #[test]
    fn small_types() {
        assert_eq!(p(&Form::Char, b"a"), "a");
        assert_eq!(p(&Form::Char, &[0xc3]), "\\303");
        assert_eq!(p(&Form::Char, &[0]), "");
        assert_eq!(p(&Form::Bits, &[0, 0, 0, 4, 0b0101_0000]), "0101");
        assert_eq!(
            p(
                &Form::Lsn { padded: false },
                &0x1_0000_00ABu64.to_be_bytes()
            ),
            "1/AB"
        );
        assert_eq!(
            p(&Form::Lsn { padded: true }, &0x1_0000_00ABu64.to_be_bytes()),
            "1/000000AB"
        );
        let mut timetz = (4 * 3_600_000_000i64 + 5 * 60_000_000 + 6_789_000)
            .to_be_bytes()
            .to_vec();
        timetz.extend((-(5 * 3600 + 30 * 60i32)).to_be_bytes());
        assert_eq!(p(&Form::TimeTz, &timetz), "04:05:06.789+05:30");
        let mut b = Vec::new();
        for v in [3.0f64, 4.0, 1.0, 2.0] {
            b.extend(v.to_be_bytes());
        }
        assert_eq!(p(&Form::Box, &b), "(3,4),(1,2)");
        assert_eq!(p(&Form::Lseg, &b), "[(3,4),(1,2)]");
    }

    #[test]
    fn tsvectors_and_tsqueries() {
        let mut v = Vec::new();
        v.extend(2i32.to_be_bytes());
        v.extend(b"a\0");
        v.extend(2u16.to_be_bytes());
        v.extend((1u16 | 3 << 14).to_be_bytes());
        v.extend(2u16.to_be_bytes());
        v.extend(b"b'c\0");
        v.extend(0u16.to_be_bytes());
        assert_eq!(p(&Form::TsVector, &v), "'a':1A,2 'b''c'");

        // 'a':A & !( 'b' | 'c' ) <-> 'd':*A, in prefix order with the
        // right operand first: & (<-> d (! (| c b))) a.
        let mut q = Vec::new();
        let operand = |q: &mut Vec<u8>, weight: u8, prefix: u8, text: &[u8]| {
            q.extend([1, weight, prefix]);
            q.extend_from_slice(text);
            q.push(0);
        };
        q.extend(8i32.to_be_bytes());
        q.extend([2, 2]); // &
        q.extend([2, 4]); // <->
        q.extend(1i16.to_be_bytes());
        operand(&mut q, 8, 1, b"d");
        q.extend([2, 1]); // !
        q.extend([2, 3]); // |
        operand(&mut q, 0, 0, b"c");
        operand(&mut q, 0, 0, b"b");
        operand(&mut q, 8, 0, b"a");
        assert_eq!(p(&Form::TsQuery, &q), "'a':A & !( 'b' | 'c' ) <-> 'd':*A");
    }

    #[test]
    fn malformed_values_are_errors() {
        let mut s = String::new();
        assert!(print(&Form::Interval, &[0; 15], &mut s).is_err());
        assert!(print(&Form::Point, &[0; 17], &mut s).is_err());
        assert!(print(&Form::Inet, &[9, 0, 0, 0], &mut s).is_err());
        let huge = [
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1,
        ];
        let int4 = Form::Array {
            elem: Box::new(Form::Typed(PgType::Int4)),
            delim: b',',
        };
        assert!(print(&int4, &huge, &mut s).is_err());
        assert!(print(&Form::Unknown, b"x", &mut s).is_err());
    }
}
