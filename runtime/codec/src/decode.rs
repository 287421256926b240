//! Reading the native JSON envelope back into change events: the inverse of
//! [`encode_native_json`](super::encode_native_json), for tools that replay
//! captured or hand-written events (`weir plugin test`).
//!
//! See [`decode_native_json`] for what is read and how.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use weir_core::{
    ChangeEvent, Column, LogicalMessage, Lsn, Op, ReplicaIdentity, SourceInfo, TableSchema, TxnId,
    Value,
};

use crate::calendar::{MICROS_PER_DAY, civil_from_days};

/// An envelope could not be read: the text says which field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    fn new(message: impl Into<String>) -> Self {
        DecodeError(message.into())
    }
}

/// What [`decode_native_json`] remembers from one envelope to the next:
/// the tables met so far and the transaction being read.
///
/// Events of one table shape share one `Arc<TableSchema>`, as they do when
/// they come from Postgres, so a plugin host announces each table once. A
/// table is named by its schema and name; its columns are those of the
/// envelope's rows, in order, its key columns those of `key`. The same
/// table with other columns or keys is a new version of it (same id), as
/// after an `ALTER TABLE`. Column types are not in the envelope: each is
/// guessed from the first value of the first event of that version
/// (`bool`, `int8`, `numeric`, `float8`, `text`, `jsonb`), and is
/// `unknown` when that event has no value for it.
///
/// Consecutive envelopes with the same `source.xid` and
/// `source.commit_lsn` belong to one transaction, with one [`TxnId`];
/// transactions are numbered from 1.
#[derive(Debug, Default)]
pub struct DecodeContext {
    tables: HashMap<(String, String), KnownTable>,
    /// Ids are handed out from Postgres's first user OID up, so they look
    /// like the table OIDs a real capture has.
    next_table_id: u32,
    /// The current transaction: its xid, commit LSN and id.
    txn: Option<(u32, Lsn, TxnId)>,
}

/// The versions of one table met so far, newest last.
#[derive(Debug)]
struct KnownTable {
    id: u32,
    versions: Vec<Arc<TableSchema>>,
}

impl DecodeContext {
    /// A context that has met no table and no transaction yet.
    pub fn new() -> Self {
        DecodeContext::default()
    }

    /// The transaction of an event at `source`: the current one when the
    /// event continues it, else a new one.
    fn txn(&mut self, source: &SourceInfo) -> TxnId {
        match self.txn {
            Some((xid, commit_lsn, txn))
                if xid == source.xid && commit_lsn == source.commit_lsn =>
            {
                txn
            }
            _ => {
                let next = TxnId(self.txn.map_or(1, |(_, _, t)| t.0 + 1));
                self.txn = Some((source.xid, source.commit_lsn, next));
                next
            }
        }
    }

    /// The table `schema.name` with `columns` (name and key flag, in row
    /// order); `None` columns stands for "whatever it had" (a truncate).
    fn table(
        &mut self,
        schema: &str,
        name: &str,
        columns: Option<&[(&str, bool)]>,
        rows: [Option<&[Value]>; 2],
    ) -> Arc<TableSchema> {
        const FIRST_USER_OID: u32 = 16384;
        let key = (schema.to_owned(), name.to_owned());
        let next_id = &mut self.next_table_id;
        let known = self.tables.entry(key).or_insert_with(|| {
            let id = FIRST_USER_OID + *next_id;
            *next_id += 1;
            KnownTable {
                id,
                versions: Vec::new(),
            }
        });
        let same_shape = |t: &TableSchema, columns: &[(&str, bool)]| {
            t.columns.len() == columns.len()
                && t.columns
                    .iter()
                    .zip(columns)
                    .all(|(c, (n, k))| c.name == *n && c.key == *k)
        };
        let found = match columns {
            None => known.versions.last(),
            Some(columns) => known.versions.iter().find(|t| same_shape(t, columns)),
        };
        if let Some(table) = found {
            return Arc::clone(table);
        }
        let columns = columns
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, (name, key))| {
                let value = rows
                    .iter()
                    .flatten()
                    .map(|row| &row[i])
                    .find(|v| !matches!(v, Value::Null | Value::Unchanged));
                let (type_oid, type_name) = guess_type(value);
                Column {
                    name: (*name).to_owned(),
                    type_oid,
                    type_name: type_name.to_owned(),
                    type_modifier: -1,
                    key: *key,
                }
            })
            .collect();
        let table = Arc::new(TableSchema {
            id: known.id,
            version: known.versions.len() as u32 + 1,
            schema: schema.to_owned(),
            name: name.to_owned(),
            columns,
            replica_identity: ReplicaIdentity::Default,
        });
        known.versions.push(Arc::clone(&table));
        table
    }
}

/// The Postgres type (OID and name) a JSON value most likely came from.
fn guess_type(value: Option<&Value>) -> (u32, &'static str) {
    match value {
        Some(Value::Bool(_)) => (16, "bool"),
        Some(Value::Int(_)) => (20, "int8"),
        Some(Value::Numeric(_)) => (1700, "numeric"),
        Some(Value::Float(_)) => (701, "float8"),
        Some(Value::Text(_)) => (25, "text"),
        Some(Value::Json(_)) => (3802, "jsonb"),
        _ => (705, "unknown"),
    }
}

/// Reads one native JSON envelope (one line of what
/// [`encode_native_json`](super::encode_native_json) writes) into a change
/// event, using and updating `context` for its table and transaction.
///
/// Every field the encoder writes is required (`message` only for
/// `op = "message"`), and fields it does not write are refused, so a typo
/// is not silently ignored:
///
/// * `op`: `insert`, `update`, `delete`, `truncate`, `message` or `read`;
/// * `schema`, `table`: strings, `null` for a message;
/// * `key`: the key columns and their values, or `null`;
/// * `before`, `after`: rows as objects of column values, or `null` as the
///   op requires (an insert or read has only `after`, a delete only
///   `before`, an update `after` and maybe `before`, a truncate or message
///   neither); both rows name the same columns in the same order;
/// * `message`: `{"prefix": "...", "content": "<base64>"}`;
/// * `source`: `commit_lsn` and `lsn` as Postgres prints LSNs (`0/16B3748`),
///   `xid`, `commit_time` (ISO 8601 in UTC, `2026-11-28T21:00:00.123456Z`)
///   and `seq`.
///
/// The envelope does not carry Postgres types, so column values come back
/// as the JSON says: `null` → [`Value::Null`], `true`/`false` →
/// [`Value::Bool`], an integer → [`Value::Int`] (one past the range of
/// `i64` → [`Value::Numeric`], exactly), any other number →
/// [`Value::Float`], a string → [`Value::Text`], `{"$unchanged":true}` →
/// [`Value::Unchanged`], and any other object or array → [`Value::Json`]
/// (compact text, keys in their order). A `date`, for one, comes back as
/// the text the encoder wrote.
pub fn decode_native_json(
    text: &str,
    context: &mut DecodeContext,
) -> Result<ChangeEvent, DecodeError> {
    let json: Json =
        serde_json::from_str(text).map_err(|e| DecodeError::new(format!("not JSON: {e}")))?;
    let Json::Object(fields) = json else {
        return Err(DecodeError::new(format!(
            "expected an envelope object, got {}",
            json.kind()
        )));
    };
    let envelope = Fields::new(&fields, "")?;
    envelope.only(&[
        "op", "schema", "table", "key", "before", "after", "message", "source",
    ])?;

    let op = parse_op(envelope.string("op")?)?;
    let source = parse_source(&envelope.object("source")?)?;
    let before = envelope.nullable_object("before")?;
    let after = envelope.nullable_object("after")?;
    let key = envelope.nullable_object("key")?;
    let schema = envelope.nullable_string("schema")?;
    let table_name = envelope.nullable_string("table")?;

    let (wants_before, wants_after) = match op {
        Op::Insert | Op::Read => (Some(false), true),
        Op::Update => (None, true),
        Op::Delete => (Some(true), false),
        Op::Truncate | Op::Message => (Some(false), false),
    };
    let op_name = op.as_str();
    if wants_before.is_some_and(|w| w != before.is_some()) {
        return Err(DecodeError::new(if before.is_some() {
            format!("`before`: an {op_name} has no old row; write null")
        } else {
            format!("`before`: a {op_name} needs the old row (at least its key)")
        }));
    }
    if wants_after != after.is_some() {
        return Err(DecodeError::new(if after.is_some() {
            format!("`after`: a {op_name} has no new row; write null")
        } else {
            format!("`after`: an {op_name} needs the new row")
        }));
    }

    let message = if op == Op::Message {
        for field in ["schema", "table", "key"] {
            if envelope
                .get(field)
                .is_some_and(|v| !matches!(v, Json::Null))
            {
                return Err(DecodeError::new(format!(
                    "`{field}`: a message belongs to no table; write null"
                )));
            }
        }
        Some(parse_message(&envelope.object("message")?)?)
    } else {
        if envelope.get("message").is_some() {
            return Err(DecodeError::new(format!(
                "`message`: only an event with op \"message\" has one, not an {op_name}"
            )));
        }
        None
    };

    let before_row = before.as_ref().map(parse_row).transpose()?;
    let after_row = after.as_ref().map(parse_row).transpose()?;
    let table = match op {
        Op::Message => None,
        _ => {
            let schema =
                schema.ok_or_else(|| DecodeError::new("`schema`: a string is required"))?;
            let name =
                table_name.ok_or_else(|| DecodeError::new("`table`: a string is required"))?;
            let columns = columns(op, before.as_ref(), after.as_ref(), key.as_ref())?;
            Some(context.table(
                schema,
                name,
                columns.as_deref(),
                [after_row.as_deref(), before_row.as_deref()],
            ))
        }
    };
    Ok(ChangeEvent {
        op,
        table,
        before: before_row,
        after: after_row,
        message,
        txn: context.txn(&source),
        source,
    })
}

/// The columns of the event's table (name and whether it is a key column,
/// in row order) as its rows and key name them; `None` when it has no row.
fn columns<'a>(
    op: Op,
    before: Option<&Fields<'a>>,
    after: Option<&Fields<'a>>,
    key: Option<&Fields<'a>>,
) -> Result<Option<Vec<(&'a str, bool)>>, DecodeError> {
    let names = match (before, after) {
        (Some(b), Some(a)) => {
            let (b, a) = (b.names(), a.names());
            if b != a {
                return Err(DecodeError::new(format!(
                    "`before` and `after` must name the same columns in the same order \
                     (before: {}; after: {})",
                    b.join(", "),
                    a.join(", ")
                )));
            }
            a
        }
        (Some(row), None) | (None, Some(row)) => row.names(),
        (None, None) if key.is_some() => {
            return Err(DecodeError::new(format!(
                "`key`: a {} has no row, so no key; write null",
                op.as_str()
            )));
        }
        (None, None) => return Ok(None),
    };
    let key_names = key.map(Fields::names).unwrap_or_default();
    if let Some(missing) = key_names.iter().find(|k| !names.contains(k)) {
        return Err(DecodeError::new(format!(
            "`key`: column `{missing}` is not in the row (its columns: {})",
            names.join(", ")
        )));
    }
    Ok(Some(
        names.iter().map(|n| (*n, key_names.contains(n))).collect(),
    ))
}

fn parse_op(op: &str) -> Result<Op, DecodeError> {
    Ok(match op {
        "insert" => Op::Insert,
        "update" => Op::Update,
        "delete" => Op::Delete,
        "truncate" => Op::Truncate,
        "message" => Op::Message,
        "read" => Op::Read,
        other => {
            return Err(DecodeError::new(format!(
                "`op`: expected insert, update, delete, truncate, message or read, got {other:?}"
            )));
        }
    })
}

fn parse_source(source: &Fields<'_>) -> Result<SourceInfo, DecodeError> {
    // `snapshot` marks a read, which `op` already says.
    source.only(&["commit_lsn", "lsn", "xid", "commit_time", "seq", "snapshot"])?;
    let lsn = |field: &str| -> Result<Lsn, DecodeError> {
        source
            .string(field)?
            .parse()
            .map_err(|e| DecodeError::new(format!("`source.{field}`: {e}")))
    };
    let time = source.string("commit_time")?;
    Ok(SourceInfo {
        commit_lsn: lsn("commit_lsn")?,
        lsn: lsn("lsn")?,
        xid: source.u32("xid")?,
        commit_time_micros: parse_utc_timestamp(time)
            .map_err(|e| DecodeError::new(format!("`source.commit_time`: {e}")))?,
        seq: source.u32("seq")?,
        snapshot: Default::default(),
    })
}

fn parse_message(message: &Fields<'_>) -> Result<LogicalMessage, DecodeError> {
    message.only(&["prefix", "content"])?;
    let content = BASE64
        .decode(message.string("content")?)
        .map_err(|e| DecodeError::new(format!("`message.content`: not base64: {e}")))?;
    Ok(LogicalMessage {
        prefix: message.string("prefix")?.to_owned(),
        content,
    })
}

fn parse_row(row: &Fields<'_>) -> Result<Vec<Value>, DecodeError> {
    row.fields
        .iter()
        .map(|(name, json)| {
            value(json).map_err(|e| DecodeError::new(format!("`{}{name}`: {e}", row.path)))
        })
        .collect()
}

/// A column value, as the envelope writes it.
fn value(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(n) => Value::Int(*n),
        Json::BigInt(n) => Value::Numeric(n.to_string()),
        Json::Float(f) => Value::Float(*f),
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(fields) if fields.iter().any(|(k, _)| k == "$unchanged") => {
            if !matches!(fields.as_slice(), [(_, Json::Bool(true))]) {
                return Err(
                    "an unchanged TOAST value is written exactly {\"$unchanged\":true}".into(),
                );
            }
            Value::Unchanged
        }
        Json::Object(_) | Json::Array(_) => Value::Json(
            serde_json::to_string(json).map_err(|e| format!("cannot write it as JSON: {e}"))?,
        ),
    })
}

/// Microseconds since 1970-01-01 UTC of `YYYY-MM-DDTHH:MM:SS[.ffffff]`
/// followed by `Z` or `+00:00`, as the envelope writes `commit_time`.
fn parse_utc_timestamp(text: &str) -> Result<i64, String> {
    let bad = || {
        format!("expected an ISO 8601 time in UTC like 2026-11-28T21:00:00.123456Z, got {text:?}")
    };
    let local = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .ok_or_else(bad)?;
    let (date, time) = local.split_once(['T', ' ']).ok_or_else(bad)?;
    let number = |s: &str, digits: usize| -> Result<u32, String> {
        if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let mut ymd = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (ymd.next(), ymd.next(), ymd.next(), ymd.next()) else {
        return Err(bad());
    };
    let (year, month, day) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) if (1..=6).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()) => {
            (hms, f)
        }
        Some(_) => return Err(bad()),
        None => (time, ""),
    };
    let mut parts = hms.split(':');
    let (Some(h), Some(mi), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (hour, minute, second) = (number(h, 2)?, number(mi, 2)?, number(s, 2)?);
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("{text:?} is not a time of day"));
    }
    let days = crate::calendar::days_from_civil(i64::from(year), month, day);
    // The calendar code is the reference: a date it does not give back
    // (February 30th, month 13) does not exist.
    if !(1..=12).contains(&month) || civil_from_days(days) != (i64::from(year), month, day) {
        return Err(format!("{text:?} is not a date"));
    }
    let micros_of_fraction = if fraction.is_empty() {
        0
    } else {
        let digits: i64 = fraction.parse().map_err(|_| bad())?;
        digits * 10_i64.pow(6 - fraction.len() as u32)
    };
    let seconds = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(days * MICROS_PER_DAY + seconds * 1_000_000 + micros_of_fraction)
}

/// A JSON document that keeps the order of object keys, which is the order
/// of a row's columns (`serde_json::Value` sorts them).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer past `i64::MAX`.
    BigInt(u64),
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::BigInt(_) | Json::Float(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;

        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }

            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }

            fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Int(n))
            }

            fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
                Ok(i64::try_from(n).map_or(Json::BigInt(n), Json::Int))
            }

            fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
                Ok(Json::Float(f))
            }

            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::String(s.to_owned()))
            }

            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::String(s))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Json::Object(fields))
            }
        }

        deserializer.deserialize_any(JsonVisitor)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Int(n) => serializer.serialize_i64(*n),
            Json::BigInt(n) => serializer.serialize_u64(*n),
            Json::Float(f) => serializer.serialize_f64(*f),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// The fields of one object of the envelope, and its path for messages
/// (`""` for the envelope itself, `"source."` for the source block).
struct Fields<'a> {
    fields: &'a [(String, Json)],
    path: String,
}

impl<'a> Fields<'a> {
    fn new(fields: &'a [(String, Json)], path: &str) -> Result<Self, DecodeError> {
        for (i, (name, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(n, _)| n == name) {
                return Err(DecodeError::new(format!("`{path}{name}` appears twice")));
            }
        }
        Ok(Fields {
            fields,
            path: path.to_owned(),
        })
    }

    fn get(&self, name: &str) -> Option<&'a Json> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn names(&self) -> Vec<&'a str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Refuses fields other than `allowed`.
    fn only(&self, allowed: &[&str]) -> Result<(), DecodeError> {
        match self
            .fields
            .iter()
            .find(|(n, _)| !allowed.contains(&n.as_str()))
        {
            None => Ok(()),
            Some((name, _)) => Err(DecodeError::new(format!(
                "unknown field `{}{name}` (expected {})",
                self.path,
                allowed.join(", ")
            ))),
        }
    }

    fn required(&self, name: &str) -> Result<&'a Json, DecodeError> {
        self.get(name)
            .ok_or_else(|| DecodeError::new(format!("`{}{name}` is missing", self.path)))
    }

    fn wrong(&self, name: &str, expected: &str, got: &Json) -> DecodeError {
        DecodeError::new(format!(
            "`{}{name}`: expected {expected}, got {}",
            self.path,
            got.kind()
        ))
    }

    fn string(&self, name: &str) -> Result<&'a str, DecodeError> {
        match self.required(name)? {
            Json::String(s) => Ok(s),
            other => Err(self.wrong(name, "a string", other)),
        }
    }

    fn nullable_string(&self, name: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.required(name)? {
            Json::String(s) => Ok(Some(s)),
            Json::Null => Ok(None),
            other => Err(self.wrong(name, "a string or null", other)),
        }
    }

    fn u32(&self, name: &str) -> Result<u32, DecodeError> {
        match self.required(name)? {
            Json::Int(n) => u32::try_from(*n).map_err(|_| {
                DecodeError::new(format!(
                    "`{}{name}`: {n} is out of range (0 to {})",
                    self.path,
                    u32::MAX
                ))
            }),
            other => Err(self.wrong(name, "an unsigned integer", other)),
        }
    }

    fn object(&self, name: &str) -> Result<Fields<'a>, DecodeError> {
        match self.required(name)? {
            Json::Object(fields) => Fields::new(fields, &format!("{}{name}.", self.path)),
            other => Err(self.wrong(name, "an object", other)),
        }
    }

    fn nullable_object(&self, name: &str) -> Result<Option<Fields<'a>>, DecodeError> {
        match self.required(name)? {
            Json::Null => Ok(None),
            Json::Object(fields) => Fields::new(fields, &format!("{}{name}.", self.path)).map(Some),
            other => Err(self.wrong(name, "an object or null", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_native_json;

    fn column(name: &str, type_name: &str, key: bool) -> Column {
        Column {
            name: name.to_owned(),
            type_oid: 0,
            type_name: type_name.to_owned(),
            type_modifier: -1,
            key,
        }
    }

    fn encode(event: &ChangeEvent) -> String {
        let mut out = Vec::new();
        encode_native_json(event, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn source(xid: u32, commit_lsn: &str, seq: u32) -> SourceInfo {
        SourceInfo {
            commit_lsn: commit_lsn.parse().unwrap(),
            lsn: "0/16B3700".parse().unwrap(),
            xid,
            // 2026-11-28T21:00:00.123456Z
            commit_time_micros: 1_795_899_600_123_456,
            seq,
            snapshot: Default::default(),
        }
    }

    fn orders() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: 1,
            version: 1,
            schema: "public".into(),
            name: "orders".into(),
            columns: vec![
                column("id", "int8", true),
                column("status", "text", false),
                column("total", "float8", false),
                column("doc", "jsonb", false),
                column("paid", "bool", false),
            ],
            replica_identity: ReplicaIdentity::Default,
        })
    }

    fn row(values: &[Value]) -> Option<Vec<Value>> {
        Some(values.to_vec())
    }

    #[test]
    fn reads_back_what_the_encoder_writes() {
        let table = orders();
        let after = row(&[
            Value::Int(42),
            Value::Text("paid \"in full\"\n".into()),
            Value::Float(12.5),
            Value::Json(r#"{"z":1,"a":[true,null]}"#.into()),
            Value::Bool(true),
        ]);
        let events = [
            (Op::Insert, None, after.clone()),
            (Op::Read, None, after.clone()),
            (
                Op::Update,
                row(&[
                    Value::Int(42),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ]),
                row(&[
                    Value::Int(42),
                    Value::Unchanged,
                    Value::Float(-0.25),
                    Value::Json("[]".into()),
                    Value::Bool(false),
                ]),
            ),
            (Op::Delete, after.clone(), None),
            (Op::Truncate, None, None),
        ];
        let mut context = DecodeContext::new();
        let mut first_table = None;
        for (seq, (op, before, after)) in events.into_iter().enumerate() {
            let event = ChangeEvent {
                op,
                table: Some(table.clone()),
                before,
                after,
                message: None,
                source: source(900, "0/16B3748", seq as u32),
                txn: TxnId(1),
            };
            let decoded = decode_native_json(&encode(&event), &mut context).unwrap();
            assert_eq!(decoded.op, event.op);
            assert_eq!(decoded.before, event.before, "{op:?}");
            assert_eq!(decoded.after, event.after, "{op:?}");
            assert_eq!(decoded.source, event.source);
            assert_eq!(decoded.txn, TxnId(1));
            let t = decoded.table.unwrap();
            // One Arc per table, truncates included.
            let first = first_table.get_or_insert_with(|| t.clone());
            assert!(Arc::ptr_eq(first, &t), "{op:?}");
        }
        let t = first_table.unwrap();
        assert_eq!((t.schema.as_str(), t.name.as_str()), ("public", "orders"));
        let shape: Vec<_> = t
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_name.as_str(), c.key))
            .collect();
        assert_eq!(
            shape,
            [
                ("id", "int8", true),
                ("status", "text", false),
                ("total", "float8", false),
                ("doc", "jsonb", false),
                ("paid", "bool", false),
            ]
        );
    }

    #[test]
    fn messages_carry_their_content() {
        let event = ChangeEvent {
            op: Op::Message,
            table: None,
            before: None,
            after: None,
            message: Some(LogicalMessage {
                prefix: "audit".into(),
                content: vec![0, 159, 146, 150],
            }),
            source: source(7, "1/0", 0),
            txn: TxnId(1),
        };
        let decoded = decode_native_json(&encode(&event), &mut DecodeContext::new()).unwrap();
        assert_eq!(decoded, event);
    }

    fn line(op: &str, xid: i64, commit_lsn: &str, rest: &str) -> String {
        format!(
            r#"{{"op":"{op}","schema":"public","table":"t",{rest},"source":{{"commit_lsn":"{commit_lsn}","lsn":"0/1","xid":{xid},"commit_time":"2026-01-01T00:00:00Z","seq":0}}}}"#
        )
    }

    #[test]
    fn transactions_and_table_versions() {
        let mut c = DecodeContext::new();
        let insert = |id: &str| {
            format!(r#""key":{{"id":{id}}},"before":null,"after":{{"id":{id},"v":null}}"#)
        };
        let a = decode_native_json(&line("insert", 5, "0/10", &insert("1")), &mut c).unwrap();
        let b = decode_native_json(&line("insert", 5, "0/10", &insert("2")), &mut c).unwrap();
        let other = decode_native_json(&line("insert", 6, "0/20", &insert("3")), &mut c).unwrap();
        // Same xid again later (wraparound) but another commit: a new one.
        let again = decode_native_json(&line("insert", 5, "0/30", &insert("4")), &mut c).unwrap();
        assert_eq!(
            [a.txn, b.txn, other.txn, again.txn],
            [TxnId(1), TxnId(1), TxnId(2), TxnId(3)]
        );
        let t = a.table.unwrap();
        assert_eq!((t.id, t.version), (16384, 1));
        assert_eq!(t.columns[1].type_name, "unknown");

        // A column more: the next version of the same table.
        let wider = r#""key":{"id":1},"before":null,"after":{"id":1,"v":null,"w":"x"}"#;
        let w = decode_native_json(&line("insert", 6, "0/20", wider), &mut c).unwrap();
        let w = w.table.unwrap();
        assert_eq!((w.id, w.version, w.columns.len()), (16384, 2, 3));
        // Back to the old shape: the old version's Arc.
        let old = decode_native_json(&line("insert", 6, "0/20", &insert("9")), &mut c).unwrap();
        assert!(Arc::ptr_eq(&old.table.unwrap(), &t));
        // Another table, another id.
        let other_table = line("insert", 6, "0/20", &insert("1")).replace(r#""t""#, r#""u""#);
        let u = decode_native_json(&other_table, &mut c).unwrap();
        assert_eq!(u.table.unwrap().id, 16385);
    }

    #[test]
    fn values_follow_the_json() {
        let after = r#""key":null,"before":null,"after":{"a":9223372036854775808,"b":-3,"c":1e3,"d":{"$unchanged":true},"e":{"y":1,"x":2}}"#;
        let event = decode_native_json(&line("insert", 1, "0/1", after), &mut DecodeContext::new())
            .unwrap();
        assert_eq!(
            event.after.unwrap(),
            [
                Value::Numeric("9223372036854775808".into()),
                Value::Int(-3),
                Value::Float(1000.0),
                Value::Unchanged,
                Value::Json(r#"{"y":1,"x":2}"#.into()),
            ]
        );
        assert!(event.table.unwrap().columns.iter().all(|c| !c.key));
    }

    #[test]
    fn floats_come_back_exactly() {
        // Found by the native_json fuzz target: serde_json's default float
        // parsing is off by a few ULPs for some numbers, so a float the
        // encoder wrote (shortest round-trip form) came back different.
        let after = |x: &str| {
            let rest = format!(r#""key":null,"before":null,"after":{{"x":{x}}}"#);
            let event =
                decode_native_json(&line("insert", 1, "0/1", &rest), &mut DecodeContext::new())
                    .unwrap();
            match event.after.unwrap()[0] {
                Value::Float(f) => f.to_bits(),
                ref other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            after("2.1474844444444442e+91"),
            2.1474844444444442e91_f64.to_bits()
        );
        // An integer past u64 is a float, rounded correctly too.
        let big = "21474844444444444444444444444444444444444444444444444444444444444444444444444444444444443647";
        assert_eq!(after(big), 2.1474844444444446e91_f64.to_bits());
        let event = ChangeEvent {
            op: Op::Insert,
            table: Some(orders()),
            before: None,
            after: row(&[
                Value::Int(1),
                Value::Null,
                Value::Float(2.1474844444444442e91),
                Value::Null,
                Value::Null,
            ]),
            message: None,
            source: source(1, "0/1", 0),
            txn: TxnId(1),
        };
        let decoded = decode_native_json(&encode(&event), &mut DecodeContext::new()).unwrap();
        assert_eq!(decoded.after, event.after);
    }

    #[test]
    fn commit_times_are_parsed_as_utc() {
        assert_eq!(parse_utc_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_utc_timestamp("2026-11-28T21:00:00.123456Z"),
            Ok(1_795_899_600_123_456)
        );
        assert_eq!(
            parse_utc_timestamp("2026-11-28T21:00:00.5+00:00"),
            Ok(1_795_899_600_500_000)
        );
        assert_eq!(parse_utc_timestamp("1969-12-31T23:59:59Z"), Ok(-1_000_000));
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01T00:00:00.1234567Z",
            "26-01-01T00:00:00Z",
        ] {
            assert!(parse_utc_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let decode = |text: &str| {
            decode_native_json(text, &mut DecodeContext::new())
                .unwrap_err()
                .to_string()
        };
        let row = r#""key":{"id":1},"before":null,"after":{"id":1}"#;
        let cases = [
            ("{", "not JSON: "),
            ("[1]", "expected an envelope object, got an array"),
            (
                &line("upsert", 1, "0/1", row),
                "`op`: expected insert, update",
            ),
            (
                &line("insert", 1, "0/1x", row),
                "`source.commit_lsn`: invalid LSN \"0/1x\"",
            ),
            (
                &line("insert", -1, "0/1", row),
                "`source.xid`: -1 is out of range",
            ),
            (
                &line("insert", 1, "0/1", row).replace("2026-01-01T00:00:00Z", "yesterday"),
                "`source.commit_time`: expected an ISO 8601 time",
            ),
            (
                &line(
                    "insert",
                    1,
                    "0/1",
                    r#""key":{"id":1},"before":null,"after":null"#,
                ),
                "`after`: an insert needs the new row",
            ),
            (
                &line("delete", 1, "0/1", row),
                "`before`: a delete needs the old row",
            ),
            (
                &line(
                    "insert",
                    1,
                    "0/1",
                    r#""key":{"nope":1},"before":null,"after":{"id":1}"#,
                ),
                "`key`: column `nope` is not in the row (its columns: id)",
            ),
            (
                &line(
                    "update",
                    1,
                    "0/1",
                    r#""key":null,"before":{"a":1},"after":{"b":1}"#,
                ),
                "must name the same columns in the same order (before: a; after: b)",
            ),
            (
                &line(
                    "insert",
                    1,
                    "0/1",
                    r#""key":null,"before":null,"after":{"a":{"$unchanged":false}}"#,
                ),
                "`after.a`: an unchanged TOAST value is written exactly",
            ),
            (
                &line("insert", 1, "0/1", &format!("{row},\"extra\":1")),
                "unknown field `extra` (expected op, schema",
            ),
            (
                &line("insert", 1, "0/1", &format!("{row},\"after\":null")),
                "`after` appears twice",
            ),
            (
                &line("insert", 1, "0/1", row).replace(r#""seq":0"#, r#""seq":0,"x":1"#),
                "unknown field `source.x`",
            ),
            (
                &line(
                    "message",
                    1,
                    "0/1",
                    r#""key":null,"before":null,"after":null,"message":{"prefix":"p","content":"!!"}"#,
                ),
                "`schema`: a message belongs to no table",
            ),
            (
                &line("insert", 1, "0/1", row).replace(r#""schema":"public""#, r#""schema":3"#),
                "`schema`: expected a string or null, got a number",
            ),
            (
                &line("insert", 1, "0/1", row).replace(r#","source":{"#, r#","s":{"#),
                "unknown field `s`",
            ),
        ];
        for (text, expected) in cases {
            let got = decode(text);
            assert!(
                got.contains(expected),
                "{text}\n  got: {got}\n  expected: {expected}"
            );
        }
        let no_source =
            r#"{"op":"truncate","schema":"s","table":"t","key":null,"before":null,"after":null}"#;
        assert_eq!(decode(no_source), "`source` is missing");
        let bad_base64 = r#"{"op":"message","schema":null,"table":null,"key":null,"before":null,"after":null,"message":{"prefix":"p","content":"!!"},"source":{"commit_lsn":"0/1","lsn":"0/1","xid":1,"commit_time":"2026-01-01T00:00:00Z","seq":0}}"#;
        assert!(decode(bad_base64).starts_with("`message.content`: not base64"));
    }
}
