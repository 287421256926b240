//! What the sink says to ClickHouse, without I/O: the column types a
//! Postgres table maps to, the `_weir_version` of a position, rows as
//! `JSONEachRow` lines, SQL names and literals, and what an error answer
//! means.

use std::fmt::Write as _;

use weir_codec::{to_text, write_str, write_text};
use weir_core::{Column, Position, SinkError, TableSchema, Value};

/// The column holding a row's version.
pub(crate) const VERSION_COLUMN: &str = "_weir_version";
/// The column that is 1 for a deleted row.
pub(crate) const DELETED_COLUMN: &str = "_weir_deleted";

/// Bits of `_weir_version` given to the change's place in its transaction.
const SEQ_BITS: u32 = 16;
/// The largest commit LSN the version encoding holds: `FFFF/FFFFFFFF`.
pub(crate) const MAX_VERSION_LSN: u64 = (1 << (64 - SEQ_BITS)) - 1;

/// The `_weir_version` of a change at `position`: the commit LSN in the
/// upper 48 bits, the place in the transaction in the lower 16.
///
/// A later change never gets a smaller version: commit LSNs grow with
/// commit order, and within a transaction the place grows too. From the
/// 65,536th change of one transaction on, the place saturates at 65,535,
/// so those changes share a version, and ClickHouse keeps the last one
/// inserted among equal versions: the sink sends the last change of each
/// key in a batch, and batches in order, so the final state is right (a
/// replay may show an earlier state of such a row until it catches up). A
/// commit LSN above `FFFF/FFFFFFFF` (256 TiB of WAL) cannot be encoded
/// without going backwards, so it stops the sink instead.
pub(crate) fn version(position: Position) -> Result<u64, SinkError> {
    let lsn = position.commit_lsn.0;
    if lsn > MAX_VERSION_LSN {
        return Err(SinkError::Config(format!(
            "commit LSN {} is beyond FFFF/FFFFFFFF, the last one _weir_version can order \
             (48 bits of LSN, 16 of position in the transaction)",
            position.commit_lsn
        )));
    }
    let seq = u64::from(position.seq.min((1 << SEQ_BITS) - 1));
    Ok((lsn << SEQ_BITS) | seq)
}

/// Whether `position` is past the places `_weir_version` can tell apart
/// within one transaction: it shares its version with the change before it.
pub(crate) fn saturated(position: Position) -> bool {
    position.seq > (1 << SEQ_BITS) - 1
}

/// The ClickHouse type a column is stored as (without `Nullable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChType {
    /// `bool`, as 0 or 1.
    UInt8,
    /// `int2`.
    Int16,
    /// `int4`.
    Int32,
    /// `int8`.
    Int64,
    /// `oid`.
    UInt32,
    /// `float4`.
    Float32,
    /// `float8`.
    Float64,
    /// `date`, within 1970-01-01 to 2105-12-31.
    Date,
    /// `timestamp` and `timestamptz` (microseconds since 1970-01-01 UTC),
    /// `time` (microseconds since midnight).
    Micros,
    /// `uuid`.
    Uuid,
    /// Everything else: text types, `numeric`, `bytea` (its bytes), `json`,
    /// `jsonb`, arrays and every other type in Postgres's text form.
    String,
}

impl ChType {
    /// The type of a Postgres column.
    pub(crate) fn of(column: &Column) -> ChType {
        match column.type_oid {
            16 => ChType::UInt8,
            21 => ChType::Int16,
            23 => ChType::Int32,
            20 => ChType::Int64,
            26 => ChType::UInt32,
            700 => ChType::Float32,
            701 => ChType::Float64,
            1082 => ChType::Date,
            1083 | 1114 | 1184 => ChType::Micros,
            2950 => ChType::Uuid,
            _ => ChType::String,
        }
    }

    /// The type's name in ClickHouse DDL.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChType::UInt8 => "UInt8",
            ChType::Int16 => "Int16",
            ChType::Int32 => "Int32",
            ChType::Int64 | ChType::Micros => "Int64",
            ChType::UInt32 => "UInt32",
            ChType::Float32 => "Float32",
            ChType::Float64 => "Float64",
            ChType::Date => "Date",
            ChType::Uuid => "UUID",
            ChType::String => "String",
        }
    }

    /// The full type of a column: key columns are never `Nullable` (they
    /// are the sort key), others always are, since the source schema does
    /// not say which may hold NULL.
    pub(crate) fn column_type(self, key: bool) -> String {
        if key {
            self.name().to_owned()
        } else {
            format!("Nullable({})", self.name())
        }
    }

    /// The SQL expression that reads a column back as text for
    /// [`parse_lookup`], so that no value is lost on the way (JSON output
    /// would turn NaN into null and bytes into mangled text).
    pub(crate) fn lookup_expr(self, quoted_column: &str) -> String {
        match self {
            ChType::String => format!("hex({quoted_column})"),
            ChType::Date => format!("toString(toUInt16({quoted_column}))"),
            _ => format!("toString({quoted_column})"),
        }
    }
}

/// Reads back a value [`ChType::lookup_expr`] wrote, as a value the row
/// writer takes for the same column.
pub(crate) fn parse_lookup(ty: ChType, text: Option<&str>) -> Result<Value, String> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    let bad = || format!("cannot read {text:?} back as {}", ty.name());
    Ok(match ty {
        ChType::String => Value::Bytes(decode_hex(text).ok_or_else(bad)?),
        ChType::Float32 | ChType::Float64 => Value::Float(text.parse().map_err(|_| bad())?),
        ChType::Date => Value::Date(text.parse().map_err(|_| bad())?),
        ChType::Uuid => Value::Text(text.to_owned()),
        ChType::UInt8 | ChType::Int16 | ChType::Int32 | ChType::Int64 | ChType::UInt32 => {
            Value::Int(text.parse().map_err(|_| bad())?)
        }
        ChType::Micros => Value::Timestamp(text.parse().map_err(|_| bad())?),
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The last day ClickHouse 18.16's `Date` holds safely (its calendar
/// tables end in 2105; day 0 is 1970-01-01).
pub(crate) const MAX_DATE_DAYS: i32 = 49_672;

/// Appends `value` as the JSON value of a column of type `ty`, or says why
/// it cannot be stored there.
pub(crate) fn write_value(out: &mut Vec<u8>, ty: ChType, value: &Value) -> Result<(), String> {
    let int_in = |n: i64, min: i64, max: i64, out: &mut Vec<u8>| {
        if (min..=max).contains(&n) {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            Ok(())
        } else {
            Err(format!("{n} does not fit in {}", ty.name()))
        }
    };
    match (ty, value) {
        (_, Value::Null | Value::Unchanged) => out.extend_from_slice(b"null"),
        (ChType::UInt8, Value::Bool(b)) => out.push(if *b { b'1' } else { b'0' }),
        (ChType::UInt8, Value::Int(n)) => int_in(*n, 0, 1, out)?,
        (ChType::Int16, Value::Int(n)) => int_in(*n, i16::MIN.into(), i16::MAX.into(), out)?,
        (ChType::Int32, Value::Int(n)) => int_in(*n, i32::MIN.into(), i32::MAX.into(), out)?,
        (ChType::UInt32, Value::Int(n)) => int_in(*n, 0, u32::MAX.into(), out)?,
        (ChType::Int64, Value::Int(n)) => int_in(*n, i64::MIN, i64::MAX, out)?,
        (ChType::Float32 | ChType::Float64, Value::Float(f)) => write_float(out, *f),
        (ChType::Float32 | ChType::Float64, Value::Int(n)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
        }
        (ChType::Date, Value::Date(days)) => {
            if !(0..=MAX_DATE_DAYS).contains(days) {
                return Err(format!(
                    "date {} is outside ClickHouse's Date range (1970-01-01 to 2105-12-31)",
                    to_text(value)
                ));
            }
            write_json_text(out, value);
        }
        (
            ChType::Micros,
            Value::Timestamp(m) | Value::TimestampTz(m) | Value::Time(m) | Value::Int(m),
        ) => out.extend_from_slice(itoa::Buffer::new().format(*m).as_bytes()),
        (ChType::Uuid, Value::Uuid(_) | Value::Text(_)) => write_json_text(out, value),
        (ChType::String, Value::Bytes(bytes)) => write_bytes(out, bytes),
        (ChType::String, _) => write_json_text(out, value),
        (_, other) => {
            return Err(format!(
                "a {} value cannot be stored in a {} column",
                value_kind(other),
                ty.name()
            ));
        }
    }
    Ok(())
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Unchanged => "unchanged",
        Value::Bool(_) => "bool",
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

fn write_json_text(out: &mut Vec<u8>, value: &Value) {
    let mut text = String::new();
    write_text(&mut text, value);
    write_str(out, &text);
}

/// ClickHouse reads `nan`, `inf` and `-inf` in quotes; bare, it reads
/// neither. Debug formatting is the shortest text that reads back exactly.
fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"\"nan\"");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"\"inf\"" } else { b"\"-inf\"" });
    } else {
        let _ = write!(ByteWriter(out), "{f:?}");
    }
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `bytea` as a JSON string of its own bytes: ClickHouse's `String` is
/// bytes, and its JSON reader copies unescaped bytes as they are, so only
/// the quote, the backslash and control bytes need escaping.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..0x20 | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// A ClickHouse identifier in backquotes.
pub(crate) fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('`');
    out
}

/// A ClickHouse string literal in single quotes.
pub(crate) fn string_literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('\'');
    for &b in bytes {
        match b {
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..0x7f => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
    out.push('\'');
    out
}

/// A key value as text that the server's [`ChType::lookup_expr`] of the
/// same column also gives, so that looked-up rows can be matched to keys.
pub(crate) fn key_text(ty: ChType, value: &Value) -> String {
    match (ty, value) {
        (ChType::String, Value::Bytes(b)) => hex_upper(b),
        (ChType::String, v) => hex_upper(to_text(v).as_bytes()),
        (ChType::UInt8, Value::Bool(b)) => u8::from(*b).to_string(),
        (ChType::Date, Value::Date(days)) => days.to_string(),
        (_, Value::Int(n) | Value::Timestamp(n) | Value::TimestampTz(n) | Value::Time(n)) => {
            n.to_string()
        }
        (_, v) => to_text(v),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// A key value as a SQL literal of the column's type.
pub(crate) fn key_literal(ty: ChType, value: &Value) -> String {
    match (ty, value) {
        (ChType::String, Value::Bytes(b)) => string_literal(b),
        (ChType::String, v) => string_literal(to_text(v).as_bytes()),
        (ChType::UInt8, Value::Bool(b)) => u8::from(*b).to_string(),
        (ChType::Date, Value::Date(days)) => format!("toDate({days})"),
        (ChType::Uuid, v) => format!("toUUID({})", string_literal(to_text(v).as_bytes())),
        (ChType::Float32 | ChType::Float64, Value::Float(f)) if !f.is_finite() => {
            let word = if f.is_nan() {
                "nan"
            } else if *f > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            format!("toFloat64({})", string_literal(word.as_bytes()))
        }
        (_, Value::Int(n) | Value::Timestamp(n) | Value::TimestampTz(n) | Value::Time(n)) => {
            n.to_string()
        }
        (_, v) => to_text(v),
    }
}

/// The `CREATE TABLE` statement for `table` in `database`.
pub(crate) fn create_table_sql(database: &str, table: &str, schema: &TableSchema) -> String {
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (",
        ident(database),
        ident(table)
    );
    for column in &schema.columns {
        let _ = write!(
            sql,
            "{} {}, ",
            ident(&column.name),
            ChType::of(column).column_type(column.key)
        );
    }
    let keys: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| c.key)
        .map(|c| ident(&c.name))
        .collect();
    let _ = write!(
        sql,
        "{} UInt8, {} UInt64) ENGINE = ReplacingMergeTree({}) ORDER BY ({})",
        ident(DELETED_COLUMN),
        ident(VERSION_COLUMN),
        ident(VERSION_COLUMN),
        keys.join(", ")
    );
    sql
}

/// What an error answer from ClickHouse means.
#[derive(Debug)]
pub(crate) enum ServerError {
    /// A value of one row could not be read: `row` counts from 0 within
    /// the insert when the server said which, `column` when it named it.
    Record {
        row: Option<usize>,
        column: Option<String>,
        message: String,
    },
    /// Anything else, as a sink error.
    Other(SinkError),
}

/// Error codes of a value the server could not read (parse, type and
/// range errors): the fault of a record, not of the server.
const RECORD_CODES: &[u32] = &[6, 26, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131];
/// Unknown user, wrong password, password required, address not allowed,
/// read-only user, authentication failed, access denied.
const AUTH_CODES: &[u32] = &[164, 192, 193, 194, 195, 497, 516];
/// Too many parts (inserts outrun merges), too many queries at once.
const THROTTLE_CODES: &[u32] = &[202, 252];
/// Unknown table, database or column, a syntax error: the configuration or
/// the table does not fit, and retrying will not change that.
const CONFIG_CODES: &[u32] = &[16, 44, 47, 57, 60, 62, 81];

/// Reads the server's answer to a failed request.
pub(crate) fn classify(status: u16, body: &str, what: &str) -> ServerError {
    let message = clean_message(body);
    let code = body
        .find("Code: ")
        .and_then(|at| {
            let digits: String = body[at + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u32>().ok()
        })
        .unwrap_or(0);
    let said = format!("{what}: ClickHouse answered {status}: {message}");
    if AUTH_CODES.contains(&code) || status == 401 || status == 403 {
        return ServerError::Other(SinkError::Auth(said));
    }
    if THROTTLE_CODES.contains(&code) {
        return ServerError::Other(SinkError::Throttled {
            reason: said,
            retry_after: None,
        });
    }
    if RECORD_CODES.contains(&code) {
        return ServerError::Record {
            row: between(body, "(at row ", ")")
                .and_then(|n| n.trim().parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1)),
            column: between(body, "value of key ", ")").map(str::to_owned),
            message,
        };
    }
    if CONFIG_CODES.contains(&code) || (400..500).contains(&status) {
        return ServerError::Other(SinkError::Config(said));
    }
    ServerError::Other(SinkError::Transient(said))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The server's message without its trailing `e.what()` noise, on one line.
fn clean_message(body: &str) -> String {
    let text = body.split(", e.what() = ").next().unwrap_or(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut text = text.trim().to_owned();
    if text.len() > 500 {
        let mut cut = 500;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "(no message)".to_owned()
    } else {
        text
    }
}
