//! Reading back the `clickhouse` sink's tables for `weir verify`: the
//! newest live row of each key (`FINAL`, `_weir_deleted = 0`), one query
//! per table of a batch, compared with what the sink's encoder would
//! insert for the record.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use weir_codec::to_text;
use weir_core::{
    ChangeEvent, Column, ColumnDiff, Held, HeldKey, KeyPage, Readback, SinkError, SinkRecord,
    TableSchema, Value,
};

use super::ClickHouseSinkConfig;
use super::encode::{ChType, DELETED_COLUMN, ident, key_literal, parse_lookup, write_value};
use super::sink::{Dest, Layout, Server, Tables, answer_column, answer_row, into_sink_error};

/// Most bytes of key literals in one query, well below the server's
/// `max_query_size` (256 KiB).
const MAX_KEYS_TEXT: usize = 128 << 10;

/// Most keys one listing query fetches: 18.16 cannot read a `FINAL` table
/// in key order, so every query reads the table from its cursor on, and
/// fewer, larger reads cost less than one per page.
const KEY_WINDOW: usize = 50_000;

/// Reads back what a `clickhouse` sink's tables hold.
pub struct ClickHouseReadback {
    server: Server,
    tables: Tables,
    /// Keys fetched ahead of the pages asked for.
    prefetched: Option<Prefetched>,
}

/// Keys of one table listed beyond the last page served.
struct Prefetched {
    dest: Dest,
    /// The cursor of the page these keys continue.
    next: Option<String>,
    /// Each key with the cursor that continues after it.
    keys: VecDeque<(HeldKey, String)>,
    /// Whether the table may hold keys after the last one fetched.
    more: bool,
}

/// What a record should find under its key.
enum Want {
    /// A row: per column (by index) the sink's JSON for its value, or why
    /// the sink could not write it; columns it would not write (an
    /// unchanged TOAST value) are left out.
    Row(Vec<(usize, Result<Vec<u8>, String>)>),
    /// Nothing.
    Nothing,
}

/// One record's share of a table's query.
struct Entry {
    record: usize,
    /// The key as the lookup's answer gives it back.
    key: String,
    literals: String,
    want: Want,
}

impl ClickHouseReadback {
    /// Checks the configuration and that the server answers and takes the
    /// credentials. It only reads, so a read-only user will do.
    pub async fn connect(
        name: &str,
        config: ClickHouseSinkConfig,
    ) -> Result<ClickHouseReadback, SinkError> {
        Ok(ClickHouseReadback {
            server: Server::connect(name, &config).await?,
            tables: Tables::new(&config)?,
            prefetched: None,
        })
    }

    /// The table `event` goes to under `topic`, checked as the sink checks
    /// it (but never made).
    async fn table(
        &mut self,
        event: &ChangeEvent,
        schema: &Arc<TableSchema>,
        topic: Option<&str>,
    ) -> Result<(Dest, Arc<Layout>), SinkError> {
        let dest = self.tables.destination(topic, event)?;
        let layout = self
            .tables
            .layout(&self.server, &dest, schema, false)
            .await?
            .ok_or_else(|| {
                SinkError::Config(format!(
                    "table {}.{} (for source table {}) does not exist",
                    dest.0,
                    dest.1,
                    schema.qualified_name()
                ))
            })?;
        Ok((dest, layout))
    }

    /// The held rows of `entries` (of table `dest`), compared into `held`.
    async fn compare_table(
        &self,
        dest: &Dest,
        layout: &Layout,
        entries: &[Entry],
        held: &mut [Held],
    ) -> Result<(), SinkError> {
        let (database, name) = dest;
        let rows = entries.iter().any(|e| matches!(e.want, Want::Row(_)));
        let mut select = layout.key_select();
        let columns: Vec<usize> = (0..layout.names.len())
            .filter(|i| rows && !layout.keys.contains(i))
            .collect();
        select.extend(columns.iter().map(|&i| layout.column_select(i)));
        let key_columns = layout.key_columns();
        let what = format!("reading back rows of {database}.{name}");
        let mut found: HashMap<String, HashMap<usize, Vec<u8>>> = HashMap::new();
        let mut start = 0;
        while start < entries.len() {
            let mut end = start;
            let mut size = 0;
            while end < entries.len() && (end == start || size < MAX_KEYS_TEXT) {
                size += entries[end].literals.len() + 4;
                end += 1;
            }
            let tuples: Vec<&str> = entries[start..end]
                .iter()
                .map(|e| e.literals.as_str())
                .collect();
            // `FINAL` keeps the newest version of each key; 18.16 filters
            // `_weir_deleted` after it (never as a PREWHERE, which would
            // bring back the row a tombstone hides).
            let sql = format!(
                "SELECT {} FROM {}.{} FINAL WHERE {} = 0 AND ({}) IN ({}) FORMAT JSONEachRow",
                select.join(", "),
                ident(database),
                ident(name),
                ident(DELETED_COLUMN),
                key_columns.join(", "),
                tuples.join(", ")
            );
            let answer = self
                .server
                .query(&sql, &what)
                .await
                .map_err(into_sink_error)?;
            for line in answer.lines().filter(|l| !l.trim().is_empty()) {
                let row = answer_row(line, &what)?;
                let mut values = HashMap::new();
                for &i in &columns {
                    values.insert(i, held_json(layout.types[i], answer_column(&row, i)));
                }
                found.insert(layout.answer_key(&row), values);
            }
            start = end;
        }
        for entry in entries {
            let row = found.get(&entry.key);
            held[entry.record] = match (&entry.want, row) {
                (Want::Nothing, None) => Held::Same,
                (Want::Nothing, Some(_)) => Held::Extra,
                (Want::Row(_), None) => Held::Missing,
                (Want::Row(want), Some(row)) => judge(layout, want, row),
            };
        }
        Ok(())
    }

    /// Lists keys of `dest` after `cursor` (lookup texts), up to `window`.
    async fn fetch_keys(
        &self,
        dest: &Dest,
        schema: &TableSchema,
        layout: &Layout,
        cursor: Option<&str>,
        window: usize,
    ) -> Result<Vec<(HeldKey, String)>, SinkError> {
        let (database, name) = dest;
        let key_columns = layout.key_columns();
        let mut sql = format!(
            "SELECT {} FROM {}.{} FINAL WHERE {} = 0",
            layout.key_select().join(", "),
            ident(database),
            ident(name),
            ident(DELETED_COLUMN),
        );
        if let Some(cursor) = cursor {
            let literals = cursor_literals(cursor, layout).ok_or_else(|| {
                SinkError::Config(format!(
                    "cursor {cursor:?} is not one of this readback's for table {database}.{name}"
                ))
            })?;
            sql.push_str(&format!(
                " AND ({}) > ({})",
                key_columns.join(", "),
                literals.join(", ")
            ));
        }
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {window} FORMAT JSONEachRow",
            key_columns.join(", ")
        ));
        let what = format!("listing the keys of {database}.{name}");
        let answer = self
            .server
            .query(&sql, &what)
            .await
            .map_err(into_sink_error)?;
        let mut keys = Vec::new();
        for line in answer.lines().filter(|l| !l.trim().is_empty()) {
            let row = answer_row(line, &what)?;
            let texts: Vec<String> = (0..layout.keys.len())
                .map(|n| {
                    row.get(&format!("_weir_k{n}"))
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            let key: Option<Vec<String>> = layout
                .keys
                .iter()
                .zip(&texts)
                .map(|(&i, text)| postgres_text(&schema.columns[i], layout.types[i], text))
                .collect();
            let name = layout
                .keys
                .iter()
                .zip(&texts)
                .enumerate()
                .map(|(n, (&i, text))| {
                    let shown = key.as_ref().map_or(text.as_str(), |k| k[n].as_str());
                    format!("{}={shown}", layout.names[i])
                })
                .collect::<Vec<_>>()
                .join(",");
            let cursor = serde_json::to_string(&texts).expect("strings serialize");
            keys.push((HeldKey { name, key }, cursor));
        }
        Ok(keys)
    }
}

/// A held value (as [`ChType::lookup_expr`] reads it) in the sink's JSON,
/// so that both sides of a comparison are in one encoding; a value the
/// encoder would not write (a `Date` after 2105) as its lookup text.
fn held_json(ty: ChType, text: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    match parse_lookup(ty, text) {
        Ok(value) if write_value(&mut out, ty, &value).is_ok() => out,
        _ => text.unwrap_or("null").as_bytes().to_vec(),
    }
}

/// A found row against what the record wants there.
fn judge(
    layout: &Layout,
    want: &[(usize, Result<Vec<u8>, String>)],
    row: &HashMap<usize, Vec<u8>>,
) -> Held {
    let mut diffs = Vec::new();
    for (i, wanted) in want {
        let held = row.get(i).map(Vec::as_slice).unwrap_or(b"null");
        let source = match wanted {
            Ok(json) if same(layout.types[*i], json, held) => continue,
            Ok(json) => String::from_utf8_lossy(json).into_owned(),
            Err(reason) => format!("(the sink cannot write it: {reason})"),
        };
        diffs.push(ColumnDiff {
            column: layout.names[*i].clone(),
            source,
            sink: String::from_utf8_lossy(held).into_owned(),
        });
    }
    if diffs.is_empty() {
        Held::Same
    } else {
        Held::Differs(diffs)
    }
}

/// Whether two JSON values of a `ty` column hold the same value once
/// ClickHouse has read them: a `String` is its bytes however escaped
/// (text and `bytea` are escaped differently), a float its number however
/// written (`3` or `3.0`; a `Float32` as ClickHouse rounds it), a UUID in
/// either case.
pub(super) fn same(ty: ChType, a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    match ty {
        ChType::String => json_bytes(a).is_some_and(|a| json_bytes(b) == Some(a)),
        ChType::Float32 => match (json_number::<f32>(a), json_number::<f32>(b)) {
            (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => false,
        },
        ChType::Float64 => match (json_number::<f64>(a), json_number::<f64>(b)) {
            (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => false,
        },
        ChType::Uuid => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// A JSON number, or a quoted `nan`, `inf` or `-inf`; `None` for `null`.
fn json_number<T: std::str::FromStr>(json: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(json).ok()?;
    text.trim_matches('"').parse().ok()
}

/// The bytes ClickHouse stores for a JSON string (a `\u` escape as UTF-8,
/// other bytes as they are); `None` when it is not a string.
pub(super) fn json_bytes(json: &[u8]) -> Option<Vec<u8>> {
    let inner = json.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    let hex4 = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(inner.get(at..at + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let escaped = *inner.get(i + 1)?;
        i += 2;
        let c = match escaped {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let mut code = hex4(i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&code) && inner.get(i..i + 2) == Some(b"\\u") {
                    let low = hex4(i + 2)?;
                    if (0xDC00..0xE000).contains(&low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        i += 6;
                    }
                }
                char::from_u32(code)?
            }
            _ => return None,
        };
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    Some(out)
}

/// A cursor's key (lookup texts) as SQL literals of the key columns.
fn cursor_literals(cursor: &str, layout: &Layout) -> Option<Vec<String>> {
    let texts: Vec<String> = serde_json::from_str(cursor).ok()?;
    if texts.len() != layout.keys.len() {
        return None;
    }
    layout
        .keys
        .iter()
        .zip(&texts)
        .map(|(&i, text)| {
            let value = parse_lookup(layout.types[i], Some(text)).ok()?;
            Some(key_literal(layout.types[i], &value))
        })
        .collect()
}

/// A held key value (a lookup text) as Postgres prints the source
/// column's value (its type's output, with `DateStyle = ISO` and
/// `TimeZone = UTC`); `None` when it cannot be one (bytes that are not
/// UTF-8 in a text column, a `bool` column holding 7).
fn postgres_text(column: &Column, ty: ChType, text: &str) -> Option<String> {
    let value = parse_lookup(ty, Some(text)).ok()?;
    Some(match (column.type_oid, value) {
        (16, Value::Int(0)) => "f".to_owned(),
        (16, Value::Int(1)) => "t".to_owned(),
        (16, _) => return None,
        (1083, Value::Timestamp(m)) => to_text(&Value::Time(m)),
        (1114, Value::Timestamp(m)) => postgres_timestamp(m, false),
        (1184, Value::Timestamp(m)) => postgres_timestamp(m, true),
        (17, bytes @ Value::Bytes(_)) => to_text(&bytes),
        (_, Value::Bytes(b)) => String::from_utf8(b).ok()?,
        (_, other) => to_text(&other),
    })
}

/// A timestamp as Postgres prints it: the ISO text with a space for the
/// `T`, `+00` for a `timestamptz`, and `BC` after a year before 1 (which
/// ISO writes as the year `0000`, `-0043`, …).
pub(super) fn postgres_timestamp(micros: i64, tz: bool) -> String {
    let iso = to_text(&Value::Timestamp(micros));
    let Some((date, time)) = iso.split_once('T') else {
        // `infinity`, `-infinity`.
        return iso;
    };
    let (negative, digits) = match date.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, date),
    };
    let (year, rest) = digits.split_at(digits.find('-').unwrap_or(digits.len()));
    let year: i64 = year.parse().unwrap_or(1);
    let year = if negative { -year } else { year };
    let zone = if tz { "+00" } else { "" };
    if year > 0 {
        format!("{date} {time}{zone}")
    } else {
        format!("{:04}{rest} {time}{zone} BC", 1 - year)
    }
}

#[async_trait::async_trait]
impl Readback for ClickHouseReadback {
    fn compares(&self) -> String {
        "each row's columns as the sink would insert them (its JSONEachRow values) with the \
         key's newest live row (FINAL, _weir_deleted = 0), read back losslessly and in the same \
         encoding; _weir_version and tombstones are bookkeeping"
            .to_owned()
    }

    async fn compare(&mut self, records: &[SinkRecord]) -> Result<Vec<Held>, SinkError> {
        let mut held = vec![Held::Same; records.len()];
        let mut tables: Vec<(Dest, Arc<Layout>, Vec<Entry>)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let Some((event, schema, row, delete)) = weir_core::expected(record) else {
                continue;
            };
            let (dest, layout) = self.table(event, schema, record.topic.as_deref()).await?;
            if row.len() != layout.names.len() {
                return Err(SinkError::Config(format!(
                    "a row of {} has {} values for {} columns",
                    schema.qualified_name(),
                    row.len(),
                    layout.names.len()
                )));
            }
            let Ok(key) = layout.key_of(row) else {
                // A key column without a value: the sink cannot write the
                // row, so nothing can be held under it.
                held[index] = if delete { Held::Same } else { Held::Missing };
                continue;
            };
            let want = if delete {
                Want::Nothing
            } else {
                let columns = (0..row.len())
                    .filter(|i| !layout.keys.contains(i) && !matches!(row[*i], Value::Unchanged))
                    .map(|i| {
                        let mut json = Vec::new();
                        let encoded =
                            write_value(&mut json, layout.types[i], &row[i]).map(|()| json);
                        (i, encoded)
                    })
                    .collect();
                Want::Row(columns)
            };
            let entry = Entry {
                record: index,
                key: layout.key_text(&key),
                literals: layout.key_literals(&key),
                want,
            };
            match tables
                .iter_mut()
                .find(|(d, l, _)| *d == dest && Arc::ptr_eq(l, &layout))
            {
                Some((_, _, entries)) => entries.push(entry),
                None => tables.push((dest, layout, vec![entry])),
            }
        }
        for (dest, layout, entries) in &tables {
            self.compare_table(dest, layout, entries, &mut held).await?;
        }
        Ok(held)
    }

    async fn keys(
        &mut self,
        table: &TableSchema,
        topic: Option<&str>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, SinkError> {
        let limit = limit.max(1);
        let schema = Arc::new(table.clone());
        let (dest, layout) = self
            .table(&ChangeEvent::read_of(&schema), &schema, topic)
            .await?;
        let buffered = cursor.is_some()
            && self
                .prefetched
                .as_ref()
                .is_some_and(|p| p.dest == dest && p.next == cursor);
        if !buffered
            || self
                .prefetched
                .as_ref()
                .is_some_and(|p| p.keys.is_empty() && p.more)
        {
            let window = limit.max(KEY_WINDOW);
            let keys = self
                .fetch_keys(&dest, table, &layout, cursor.as_deref(), window)
                .await?;
            self.prefetched = Some(Prefetched {
                dest,
                next: cursor,
                more: keys.len() >= window,
                keys: keys.into(),
            });
        }
        let prefetched = self.prefetched.as_mut().expect("filled above");
        let mut page = KeyPage::default();
        let mut last = None;
        while page.keys.len() < limit {
            let Some((key, after)) = prefetched.keys.pop_front() else {
                break;
            };
            page.keys.push(key);
            last = Some(after);
        }
        page.cursor = if prefetched.keys.is_empty() && !prefetched.more {
            None
        } else {
            last.or_else(|| prefetched.next.clone())
        };
        prefetched.next = page.cursor.clone();
        Ok(page)
    }
}
