//! The native JSON envelope and the JSON key.
//!
//! JSON is written by hand into the output buffer: a string escaper that
//! scans 8 bytes at a time, `itoa`/`zmij` for numbers, and the calendar code
//! for dates.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use weir_core::{ChangeEvent, Column, Lsn, Op, SourceInfo, TableSchema, Value};

use crate::EncodeError;
use crate::calendar;

/// Appends the native JSON envelope of `event` to `out`: one JSON object on
/// one line, without a trailing newline.
///
/// ```json
/// {"op":"update","schema":"public","table":"orders",
///  "key":{"id":42},
///  "before":{"id":42,"status":"new"},
///  "after":{"id":42,"status":"paid"},
///  "source":{"commit_lsn":"0/16B3748","lsn":"0/16B3700","xid":123,
///            "commit_time":"2026-11-28T21:00:00.123456Z","seq":0}}
/// ```
///
/// (shown on several lines here; the encoder writes no whitespace).
///
/// * `op`: `insert`, `update`, `delete`, `truncate`, `message`, or `read`
///   for a row of a snapshot (its `source` then also has `"snapshot":true`).
/// * `schema`, `table`: the table; `null` for a logical message.
/// * `key`: the replica-identity (normally primary-key) columns of the row,
///   taken from `after`, or from `before` for a delete; `null` for
///   truncates, messages and tables without key columns. The same object is
///   what [`encode_key_json`] writes.
/// * `before`, `after`: the old and new row as `{"column": value}` in
///   column order, or `null` when the event has none (`before` of an insert,
///   `after` of a delete, both of a truncate or message; `before` of an
///   update unless REPLICA IDENTITY FULL or the key changed). With a
///   key-only replica identity, `before` holds the key columns with `null`
///   for the others.
/// * `message`: present only for `op = "message"`:
///   `{"prefix": "...", "content": "<base64>"}`.
/// * `source`: the WAL position: the transaction's `commit_lsn`, the
///   change's own `lsn` (both as Postgres prints LSNs), the Postgres `xid`,
///   the `commit_time` (UTC, microsecond precision) and `seq`, the event's
///   position within its transaction, and `"snapshot":true` for a `read`.
///   `(commit_lsn, seq)` identifies an event, so a consumer can drop the duplicates that at-least-once
///   delivery brings after a restart.
///
/// Column values:
///
/// | Postgres value | JSON |
/// |---|---|
/// | NULL | `null` |
/// | unchanged TOAST value (not sent by Postgres) | `{"$unchanged":true}` — an object no column value can produce, so it is told apart from `null` and from real text |
/// | `bool` | `true` / `false` |
/// | `int2`, `int4`, `int8`, `oid` | number |
/// | `float4`, `float8` | number; `NaN`, `Infinity`, `-Infinity` as those strings |
/// | `numeric` | string, exactly as Postgres prints it (`"12.50"`, `"NaN"`) |
/// | `text`, `varchar`, `bpchar`, `name` | string |
/// | `bytea` | string, base64 (standard alphabet, padded) |
/// | `date` | `"2026-11-28"`; years before 1 AD in ISO 8601 astronomical numbering (`"-0043-03-15"` is 44 BC), years past 9999 as `"+10000-01-01"`; `"infinity"`, `"-infinity"` |
/// | `time` | `"21:00:00"`, `"21:00:00.5"` (fraction without trailing zeros) |
/// | `timestamp` | `"2026-11-28T21:00:00.123456"` (no zone); `"infinity"`, `"-infinity"` |
/// | `timestamptz` | `"2026-11-28T21:00:00.123456Z"` (UTC); `"infinity"`, `"-infinity"` |
/// | `uuid` | `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"` (lower case) |
/// | `json`, `jsonb` | the JSON document itself, embedded (line breaks between its tokens become spaces, so the envelope stays on one line) |
/// | anything else | string, in Postgres's text form |
///
/// Fails (leaving `out` as it was) when a `json` value is not valid JSON, a
/// `time` is out of range, a row's length does not match its table, or a
/// message event has no message.
///
/// This escapes the table's names anew for every event; a sink encoding
/// many events uses a [`JsonEncoder`], which writes the same text faster.
pub fn encode_native_json(event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let names = event.table.as_deref().map(Names::Plain);
    undo_on_error(out, |out| write_envelope(event, names, out))
}

/// Appends the event's key, the JSON object of its key columns
/// (`{"id":42}`, the same object as the envelope's `key`), to `out` and
/// returns `true`; returns `false` and appends nothing when the event has no
/// key (truncates, messages, tables without key columns).
///
/// The Kafka sink sends it as the message key, so every change to one row
/// goes to one partition, in order.
pub fn encode_key_json(event: &ChangeEvent, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
    let names = event.table.as_deref().map(Names::Plain);
    undo_on_error(out, |out| write_key(event, names, out))
}

/// Encodes like [`encode_native_json`] and [`encode_key_json`], writing
/// each table's schema, table and column names from text it escaped once,
/// the first time it met the table (by its `Arc`, so every schema version
/// is its own entry). Keep one per sink and reuse it.
///
/// Measured on a typical 10-column row, this saves about an eighth of the
/// instructions per event.
#[derive(Default)]
pub struct JsonEncoder {
    /// Keyed by the `Arc`'s address; the entry holds a clone of the `Arc`,
    /// so the address cannot be reused by another table while cached.
    tables: HashMap<usize, EscapedTable>,
}

/// More tables than this (counting each schema version) and the cache
/// starts over, so that memory stays bounded under endless schema changes.
const MAX_CACHED_TABLES: usize = 4096;

impl JsonEncoder {
    /// An encoder with nothing cached yet.
    pub fn new() -> Self {
        JsonEncoder::default()
    }

    /// Appends the native JSON envelope of `event` to `out`; see
    /// [`encode_native_json`] for the format.
    pub fn encode(&mut self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let names = event.table.as_ref().map(|t| Names::Cached(self.escaped(t)));
        undo_on_error(out, |out| write_envelope(event, names, out))
    }

    /// Appends the event's key, if it has one; see [`encode_key_json`].
    pub fn encode_key(
        &mut self,
        event: &ChangeEvent,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let names = event.table.as_ref().map(|t| Names::Cached(self.escaped(t)));
        undo_on_error(out, |out| write_key(event, names, out))
    }

    fn escaped(&mut self, table: &Arc<TableSchema>) -> &EscapedTable {
        let address = Arc::as_ptr(table) as usize;
        if self.tables.len() >= MAX_CACHED_TABLES && !self.tables.contains_key(&address) {
            self.tables.clear();
        }
        self.tables
            .entry(address)
            .or_insert_with(|| EscapedTable::new(table))
    }
}

/// A table's names as JSON text: the schema and table as strings, and each
/// column as `"name":`, ready to be copied.
struct EscapedTable {
    table: Arc<TableSchema>,
    schema: Vec<u8>,
    name: Vec<u8>,
    columns: Vec<Vec<u8>>,
}

impl EscapedTable {
    fn new(table: &Arc<TableSchema>) -> Self {
        let text = |s: &str| {
            let mut out = Vec::with_capacity(s.len() + 2);
            write_str(&mut out, s);
            out
        };
        EscapedTable {
            table: Arc::clone(table),
            schema: text(&table.schema),
            name: text(&table.name),
            columns: table
                .columns
                .iter()
                .map(|c| {
                    let mut name = text(&c.name);
                    name.push(b':');
                    name
                })
                .collect(),
        }
    }
}

/// Where the JSON text of a table's names comes from.
#[derive(Copy, Clone)]
enum Names<'a> {
    /// Escaped as they are written.
    Plain(&'a TableSchema),
    /// Escaped once, by a [`JsonEncoder`].
    Cached(&'a EscapedTable),
}

impl<'a> Names<'a> {
    fn table(self) -> &'a TableSchema {
        match self {
            Names::Plain(table) => table,
            Names::Cached(escaped) => &escaped.table,
        }
    }

    fn write_schema(self, out: &mut Vec<u8>) {
        match self {
            Names::Plain(table) => write_str(out, &table.schema),
            Names::Cached(escaped) => out.extend_from_slice(&escaped.schema),
        }
    }

    fn write_table(self, out: &mut Vec<u8>) {
        match self {
            Names::Plain(table) => write_str(out, &table.name),
            Names::Cached(escaped) => out.extend_from_slice(&escaped.name),
        }
    }

    /// Writes `"name":` of column `i`.
    fn write_column(self, i: usize, out: &mut Vec<u8>) {
        match self {
            Names::Plain(table) => {
                write_str(out, &table.columns[i].name);
                out.push(b':');
            }
            Names::Cached(escaped) => out.extend_from_slice(&escaped.columns[i]),
        }
    }
}

/// Runs `write`, cutting `out` back to where it was if it fails.
pub(crate) fn undo_on_error<T>(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<T, EncodeError>,
) -> Result<T, EncodeError> {
    let start = out.len();
    let result = write(out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_envelope(
    event: &ChangeEvent,
    names: Option<Names<'_>>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(event.op.as_str().as_bytes());
    out.extend_from_slice(b"\",\"schema\":");
    match names {
        Some(names) => names.write_schema(out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"table\":");
    match names {
        Some(names) => names.write_table(out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"key\":");
    if !write_key(event, names, out)? {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"before\":");
    write_row(out, names, event.before.as_deref(), "before")?;
    out.extend_from_slice(b",\"after\":");
    write_row(out, names, event.after.as_deref(), "after")?;
    if event.op == Op::Message {
        let Some(message) = &event.message else {
            return Err(EncodeError::new(format!(
                "message event at {} has no message",
                event.source.lsn
            )));
        };
        out.extend_from_slice(b",\"message\":{\"prefix\":");
        write_str(out, &message.prefix);
        out.extend_from_slice(b",\"content\":");
        write_base64(out, &message.content);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"source\":");
    write_source(out, &event.source, event.op == Op::Read);
    out.push(b'}');
    Ok(())
}

fn write_source(out: &mut Vec<u8>, source: &SourceInfo, snapshot: bool) {
    out.extend_from_slice(b"{\"commit_lsn\":\"");
    write_lsn(out, source.commit_lsn);
    out.extend_from_slice(b"\",\"lsn\":\"");
    write_lsn(out, source.lsn);
    out.extend_from_slice(b"\",\"xid\":");
    out.extend_from_slice(itoa::Buffer::new().format(source.xid).as_bytes());
    out.extend_from_slice(b",\"commit_time\":\"");
    calendar::write_timestamp(out, source.commit_time_micros, true);
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(source.seq).as_bytes());
    if snapshot {
        out.extend_from_slice(b",\"snapshot\":true");
    }
    out.push(b'}');
}

/// Writes `{"k":v,...}` and returns `true`, or writes nothing and returns `false`.
fn write_key(
    event: &ChangeEvent,
    names: Option<Names<'_>>,
    out: &mut Vec<u8>,
) -> Result<bool, EncodeError> {
    let Some(names) = names else {
        return Ok(false);
    };
    let table = names.table();
    let after = event.after.as_deref();
    let before = event.before.as_deref();
    let Some(row) = after.or(before) else {
        return Ok(false);
    };
    check_row_len(table, row, if after.is_some() { "after" } else { "before" })?;
    let mut first = true;
    for (i, column) in table.columns.iter().enumerate() {
        if !column.key {
            continue;
        }
        // An UPDATE that leaves a TOASTed key column alone does not send it
        // in the new row; the old row has it when the identity sent one.
        let mut value = &row[i];
        if matches!(value, Value::Unchanged)
            && let Some(old) = before.and_then(|b| b.get(i))
        {
            value = old;
        }
        out.push(if first { b'{' } else { b',' });
        first = false;
        names.write_column(i, out);
        write_value(out, value).map_err(|e| column_error(table, column, e))?;
    }
    if first {
        return Ok(false);
    }
    out.push(b'}');
    Ok(true)
}

fn write_row(
    out: &mut Vec<u8>,
    names: Option<Names<'_>>,
    row: Option<&[Value]>,
    which: &str,
) -> Result<(), EncodeError> {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let Some(names) = names else {
        return Err(EncodeError::new(format!(
            "event has a {which} row but no table"
        )));
    };
    let table = names.table();
    check_row_len(table, row, which)?;
    out.push(b'{');
    for (i, (column, value)) in table.columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        names.write_column(i, out);
        write_value(out, value).map_err(|e| column_error(table, column, e))?;
    }
    out.push(b'}');
    Ok(())
}

pub(crate) fn check_row_len(
    table: &TableSchema,
    row: &[Value],
    which: &str,
) -> Result<(), EncodeError> {
    if row.len() == table.columns.len() {
        return Ok(());
    }
    Err(EncodeError::new(format!(
        "{which} row of {}.{} has {} values but the table has {} columns",
        table.schema,
        table.name,
        row.len(),
        table.columns.len()
    )))
}

pub(crate) fn column_error(table: &TableSchema, column: &Column, e: EncodeError) -> EncodeError {
    EncodeError::new(format!(
        "column {}.{}.{} ({}): {e}",
        table.schema, table.name, column.name, column.type_name
    ))
}

/// Appends one column value as the envelope writes it in `before` and
/// `after` (see the table at [`encode_native_json`]); for sinks that store
/// rows as JSON objects of their own making. Fails, leaving `out` as it
/// was, as the envelope does (a `json` value that is not valid JSON, a
/// `time` out of range).
pub fn write_json_value(out: &mut Vec<u8>, value: &Value) -> Result<(), EncodeError> {
    undo_on_error(out, |out| write_value(out, value))
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), EncodeError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Unchanged => out.extend_from_slice(b"{\"$unchanged\":true}"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Value::Float(f) => write_float(out, *f),
        Value::Numeric(s) | Value::Text(s) | Value::Other(s) => write_str(out, s),
        Value::Bytes(b) => write_base64(out, b),
        Value::Date(days) => {
            out.push(b'"');
            calendar::write_date(out, *days);
            out.push(b'"');
        }
        Value::Time(micros) => {
            out.push(b'"');
            calendar::write_time(out, *micros)?;
            out.push(b'"');
        }
        Value::Timestamp(micros) => {
            out.push(b'"');
            calendar::write_timestamp(out, *micros, false);
            out.push(b'"');
        }
        Value::TimestampTz(micros) => {
            out.push(b'"');
            calendar::write_timestamp(out, *micros, true);
            out.push(b'"');
        }
        Value::Uuid(bytes) => write_uuid(out, bytes),
        Value::Json(text) => write_embedded_json(out, text)?,
    }
    Ok(())
}

pub(crate) fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes());
    } else if f.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if f > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

/// Embeds a JSON document after checking that it parses.
///
/// Raw line breaks can only be whitespace between tokens in valid JSON
/// (inside strings they must be escaped), so turning them into spaces keeps
/// the document's meaning and the envelope on one line. Postgres keeps a
/// `json` value's text exactly as it was inserted, line breaks included.
fn write_embedded_json(out: &mut Vec<u8>, text: &str) -> Result<(), EncodeError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| EncodeError::new(format!("value is not valid JSON: {e}")))?;
    let start = out.len();
    out.extend_from_slice(text.as_bytes());
    for b in &mut out[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    Ok(())
}

pub(crate) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    // 4 output bytes per 3 input bytes, padded: cannot overflow for any
    // slice that fits in memory.
    let len = bytes.len().div_ceil(3) * 4;
    out.reserve(len + 2);
    out.push(b'"');
    out.resize(start + 1 + len, 0);
    let written = BASE64
        .encode_slice(bytes, &mut out[start + 1..])
        .expect("buffer sized for padded base64");
    debug_assert_eq!(written, len);
    out.push(b'"');
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn write_uuid(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    out.push(b'"');
    crate::uuid::write_uuid_text(out, bytes);
    out.push(b'"');
}

/// Appends an LSN as Postgres prints it (`16/B374D848`): two upper-case hex
/// numbers without leading zeros.
pub fn write_lsn(out: &mut Vec<u8>, lsn: Lsn) {
    let mut text = [0u8; 17];
    let mut len = hex_u32(&mut text, 0, (lsn.0 >> 32) as u32);
    text[len] = b'/';
    len = hex_u32(&mut text, len + 1, lsn.0 as u32);
    // One fixed-size copy, then cut: cheaper than a variable-length copy.
    out.extend_from_slice(&text);
    out.truncate(out.len() - (text.len() - len));
}

/// Writes `n` in upper-case hex at `text[at..]`; returns the end position.
fn hex_u32(text: &mut [u8; 17], at: usize, n: u32) -> usize {
    let digits = ((32 - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..digits {
        let nibble = (n >> ((digits - 1 - i) * 4)) & 0xf;
        text[at + i] = HEX_UPPER[nibble as usize];
    }
    at + digits
}

/// What each byte becomes inside a JSON string: 0 for itself, `u` for a
/// `\u00XX` escape, or the letter of a short escape (`\n`, `\"`, ...).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of the 8 bytes in `word` is `"`, `\\` or a control character.
///
/// Bitwise tests on a whole word ("SWAR"): `(x - 0x01..) & !x & 0x80..` has
/// a byte's top bit set when that byte of `x` is zero (or, past the first
/// zero, possibly set by the borrow, which only makes this slow path run
/// for a word that needs it anyway). Bytes >= 0x80 never match.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) != 0
}

/// Appends `s` as a JSON string. Only `"`, `\\` and control characters need
/// escaping; everything else, including all non-ASCII text, is copied as
/// UTF-8.
///
/// The string is read 8 bytes at a time, and a word without anything to
/// escape is appended as one fixed-size copy (the short tail is padded and
/// the padding cut off again): column names and most values are short, and
/// a call to `memcpy` per piece would cost more than the copying.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 10);
    out.push(b'"');
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word: [u8; 8] = chunk.try_into().expect("chunks of 8");
        if needs_escape(u64::from_le_bytes(word)) {
            write_escaped(out, &word);
        } else {
            out.extend_from_slice(&word);
        }
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Padded with a byte that needs no escape; assembled by shifts,
        // which the compiler does not turn back into a `memcpy` call.
        let mut word = u64::from_le_bytes([b'a'; 8]);
        for (k, &b) in tail.iter().enumerate() {
            let shift = 8 * k;
            word = (word & !(0xff << shift)) | (u64::from(b) << shift);
        }
        if needs_escape(word) {
            write_escaped(out, tail);
        } else {
            out.extend_from_slice(&word.to_le_bytes());
            out.truncate(out.len() - (8 - tail.len()));
        }
    }
    out.push(b'"');
}

fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match ESCAPE[usize::from(b)] {
            0 => out.push(b),
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX_LOWER[usize::from(b >> 4)],
                HEX_LOWER[usize::from(b & 0xf)],
            ]),
            short => out.extend_from_slice(&[b'\\', short]),
        }
    }
}
