//! Reading the rows a table already holds: the table's shape from the
//! catalog, as pgoutput would announce it, and its rows in chunks through
//! `COPY (SELECT …) TO STDOUT`, decoded by the same code as the stream's
//! values.
//!
//! The caller runs a read in a transaction that fixes what it sees: a
//! `REPEATABLE READ` transaction that imported the slot's exported
//! snapshot ([`super::InitialSnapshot`]), or one statement between two
//! watermarks (`super::watermark`).
//!
//! Two ways to cut a table into chunks:
//! * [`Chunk::Pages`]: a range of heap pages (`ctid` bounds, a TID range
//!   scan on PostgreSQL 14+). Every table has them, keyed or not, they
//!   split a table evenly by its size, and a chunk is one sequential read.
//!   Both snapshot kinds use them.
//! * [`Chunk::After`]: the next rows in key order after a key (keyset
//!   pagination on the primary key), for a caller that wants key order.
//!
//! Page chunks are read in COPY's binary format and decoded by
//! [`decode_binary`], as the stream's binary mode is: no escapes to undo,
//! no numbers to parse (a snapshot took 0.58× the instructions per row of
//! the text format; BENCHMARKS.md). The decoders yield the same [`Value`] for a type's text
//! and binary forms, so a row reads the same whichever mode the stream
//! uses. A column of a type without a [`Value`] of its own
//! (`PgType::Other`: arrays, enums, intervals, extension types) is selected
//! as its output function's text, which is what the stream delivers for
//! it in either mode (binary mode prints such values as their text,
//! [`crate::printed`]); in a binary COPY a text field is the text itself.
//!
//! Key chunks are read in COPY's text format (fields split on tabs, `\N`
//! for NULL and backslash escapes undone, then [`decode_text`]), since the
//! next chunk's bound is the last key's text. The session uses the
//! stream's settings (`SESSION_OPTIONS`), so each type has the one text
//! form the decoder expects.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio_postgres::Client;
use weir_codec::PgType;
use weir_core::{Column, ReplicaIdentity, TableSchema, Value};

use super::{literal, quote_ident};
use crate::PgError;
use crate::conn::SESSION_OPTIONS;
use crate::decode::{decode_binary, decode_text};
use crate::pgoutput::register;

/// A table ready to be read: its shape and how to select its columns.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    /// The table's shape, registered like a Relation message's, so that a
    /// `read` event and a later change of an unchanged table share it.
    pub schema: Arc<TableSchema>,
    /// `pg_class.relpages`: the table's size in pages when last analyzed
    /// (or vacuumed), for cutting it into page ranges.
    pub pages: u32,
    /// `pg_class.reltuples`, an estimate of its rows; `None` when never
    /// analyzed.
    pub estimated_rows: Option<u64>,
    kinds: Box<[PgType]>,
    /// Quoted `schema.table`.
    sql_name: String,
    /// The quoted column names, in the order of the row values.
    quoted: Box<[String]>,
    /// They, joined: the column list of a text COPY.
    select_list: String,
    /// The same for a binary COPY, with the columns of `as_text` as
    /// their text.
    binary_select_list: String,
    /// Per column: a binary COPY reads it as text (a type without a
    /// [`Value`] of its own).
    as_text: Box<[bool]>,
    /// Per key column: its index in the row, quoted name, and the
    /// qualified type its text is cast back to in a key bound.
    keys: Vec<(usize, String, String)>,
}

/// Which rows of a table one read takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// The rows in heap pages `start..end` (`end` = `None`: to the end).
    Pages {
        /// The first page.
        start: u32,
        /// The page after the last; `None` reads to the end of the table.
        end: Option<u32>,
    },
    /// At most `limit` rows in key order after `key` (the key columns'
    /// text forms, as [`Rows::last_key`] gives them); `None`: from the
    /// start. Read in COPY's text format, so a column of a type without a
    /// decoder is its text even for a binary stream.
    After {
        /// Where the previous chunk of this table ended.
        key: Option<Vec<String>>,
        /// Most rows to read.
        limit: u64,
    },
    /// At most `limit` rows, in no particular order: a sample of a table
    /// without a key (`weir plugin record`).
    Any {
        /// Most rows to read.
        limit: u64,
    },
    /// The rows whose key is one of these (each the key columns' text
    /// forms), in key order: a verifier's second look at keys that
    /// differed, and the rows a repair sends again. Read in COPY's text
    /// format, like [`Chunk::After`].
    Keys(Vec<Vec<String>>),
}

/// The rows one read returned.
#[derive(Debug, Default)]
pub struct Rows {
    /// The rows, each with one value per column of the table's schema.
    pub rows: Vec<Vec<Value>>,
    /// The key columns' text forms of the last row, for
    /// [`Chunk::After`]; `None` when the read returned nothing or the
    /// table has no key.
    pub last_key: Option<Vec<String>>,
    /// Every row's key texts, in row order, for reads in key order
    /// ([`Chunk::After`], [`Chunk::Keys`]) of a table with a key; empty
    /// otherwise.
    pub keys: Vec<Vec<String>>,
}

/// The session settings the decoder expects, for a connection that reads
/// snapshots (`SET` them once, before the first read).
pub fn session_settings() -> String {
    // SESSION_OPTIONS is "-c name=value -c …", as libpq's options take it.
    SESSION_OPTIONS
        .split("-c")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, value) = s.split_once('=').unwrap_or((s, ""));
            format!("SET {name} = '{value}';")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads `schema.table`'s shape from the catalog, as the Relation message
/// of a change to it would announce it (the same columns, types and key
/// flags), and registers it under `db_key`. `published`: the publication's
/// column list for the table, when it has one.
pub async fn describe(
    client: &Client,
    addr: &str,
    db_key: &Arc<str>,
    schema: &str,
    table: &str,
    published: Option<&[String]>,
) -> Result<SnapshotTable, PgError> {
    let qualified = format!("{schema}.{table}");
    let sql = |e| PgError::sql(addr, format!("describing table {qualified}"), e);
    let rel = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, greatest(c.relpages, 0)::int8, c.reltuples::float8 \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &table],
        )
        .await
        .map_err(sql)?
        .ok_or_else(|| PgError::MissingTables {
            addr: addr.to_owned(),
            dbname: String::new(),
            tables: vec![qualified.clone()],
        })?;
    let oid: u32 = rel.get(0);
    let identity: String = rel.get(1);
    let pages: i64 = rel.get(2);
    let tuples: f64 = rel.get(3);
    let replica_identity = match identity.as_str() {
        "d" => ReplicaIdentity::Default,
        "n" => ReplicaIdentity::Nothing,
        "f" => ReplicaIdentity::Full,
        _ => ReplicaIdentity::Index,
    };
    // Published columns (not dropped, not generated), their type as
    // pgoutput names it (a domain by its base type, a type outside
    // pg_catalog as "schema.name"), the qualified type for casts, and
    // whether the replica identity holds them.
    let columns = client
        .query(
            "WITH RECURSIVE base(attnum, oid, depth) AS ( \
               SELECT a.attnum, a.atttypid, 0 FROM pg_attribute a \
               WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
               UNION ALL \
               SELECT b.attnum, t.typbasetype, b.depth + 1 FROM base b \
               JOIN pg_type t ON t.oid = b.oid WHERE t.typtype = 'd' AND b.depth < 32 \
             ), resolved AS ( \
               SELECT DISTINCT ON (attnum) attnum, oid FROM base ORDER BY attnum, depth DESC \
             ) \
             SELECT a.attname::text, a.atttypid, a.atttypmod, bn.nspname::text, bt.typname::text, \
               quote_ident(tn.nspname) || '.' || quote_ident(t.typname), \
               CASE c.relreplident \
                 WHEN 'f' THEN true \
                 WHEN 'n' THEN false \
                 ELSE a.attnum = ANY (coalesce((SELECT i.indkey::int2[] FROM pg_index i \
                   WHERE i.indrelid = c.oid AND (CASE c.relreplident WHEN 'i' THEN i.indisreplident \
                     ELSE i.indisprimary END) LIMIT 1), '{}')) \
               END \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN resolved r ON r.attnum = a.attnum \
             JOIN pg_type bt ON bt.oid = r.oid \
             JOIN pg_namespace bn ON bn.oid = bt.typnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(sql)?;
    let mut cols = Vec::with_capacity(columns.len());
    let mut kinds = Vec::with_capacity(columns.len());
    let mut keys = Vec::new();
    let mut select = Vec::with_capacity(columns.len());
    for row in &columns {
        let name: String = row.get(0);
        // A publication's column list: the stream sends only those.
        if published.is_some_and(|p| !p.contains(&name)) {
            continue;
        }
        let i = cols.len();
        let type_oid: u32 = row.get(1);
        let type_modifier: i32 = row.get(2);
        let (base_ns, base_name): (String, String) = (row.get(3), row.get(4));
        let cast: String = row.get(5);
        let key: bool = row.get(6);
        // As the stream decoder resolves it: built-in OIDs by their own
        // name; other types by their Type message, which names a domain's
        // base type and leaves pg_catalog's namespace out.
        let type_name = match postgres_types::Type::from_oid(type_oid) {
            Some(t) => t.name().to_owned(),
            None if base_ns == "pg_catalog" => base_name,
            None => format!("{base_ns}.{base_name}"),
        };
        let kind = if type_name.contains('.') {
            PgType::Other
        } else {
            PgType::from_name(&type_name)
        };
        let quoted = quote_ident(&name);
        if key {
            keys.push((i, quoted.clone(), cast));
        }
        select.push(quoted);
        kinds.push(kind);
        cols.push(Column {
            name,
            type_oid,
            type_name,
            type_modifier,
            key,
        });
    }
    let candidate = TableSchema {
        id: oid,
        version: 0,
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns: cols,
        replica_identity,
    };
    let table = SnapshotTable {
        schema: register(db_key, candidate),
        pages: u32::try_from(pages).unwrap_or(u32::MAX),
        estimated_rows: (tuples >= 0.0).then_some(tuples as u64),
        kinds: kinds.into_boxed_slice(),
        sql_name: format!("{}.{}", quote_ident(schema), quote_ident(table)),
        select_list: select.join(", "),
        quoted: select.into_boxed_slice(),
        binary_select_list: String::new(),
        as_text: Box::default(),
        // Keyset chunks need a unique key: the primary key or the replica
        // identity index, not every column of REPLICA IDENTITY FULL.
        keys: if replica_identity == ReplicaIdentity::Full {
            Vec::new()
        } else {
            keys
        },
    };
    Ok(table.matching_stream())
}

/// A table's size in pages now, and its heap file (0 for a partitioned
/// root, which has none): how it is cut into chunks, and how a rewrite
/// since is noticed.
pub(crate) async fn measure(client: &Client, addr: &str, oid: u32) -> Result<(u32, i64), PgError> {
    let row = client
        .query_one(
            "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int8)::int8, \
               pg_relation_filenode($1::oid)::int8",
            &[&oid],
        )
        .await
        .map_err(|e| PgError::sql(addr, "measuring a table", e))?;
    let pages = u32::try_from(row.get::<_, i64>(0)).unwrap_or(u32::MAX);
    Ok((pages, row.get::<_, Option<i64>>(1).unwrap_or(0)))
}

impl SnapshotTable {
    /// The table's quoted `schema.table`, for SQL.
    pub(crate) fn sql_name(&self) -> &str {
        &self.sql_name
    }

    /// Makes page chunks read values as the stream delivers them: a type
    /// without a [`Value`] of its own as its output function's text, so a
    /// watermark window matches the stream's changes to a chunk's rows by
    /// equal values.
    fn matching_stream(mut self) -> Self {
        self.as_text = self
            .kinds
            .iter()
            .map(|&kind| kind == PgType::Other)
            .collect();
        self.binary_select_list = self
            .quoted
            .iter()
            .zip(self.as_text.iter())
            .map(|(quoted, &as_text)| {
                if as_text {
                    // A cast to text may differ from the output function
                    // (inet's keeps the mask, `::1/128`). format() turns
                    // NULL into '', so NULL is kept apart first (by
                    // num_nulls: `IS NULL` holds for a row of NULL fields).
                    format!(
                        "CASE WHEN pg_catalog.num_nulls({quoted}) = 0 \
                         THEN pg_catalog.format('%s', {quoted}) END"
                    )
                } else {
                    quoted.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        self
    }

    /// Whether [`Chunk::After`] can read this table (it has a key).
    pub fn has_key(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The `COPY` statement reading `chunk`, with an optional extra
    /// condition (`where`, SQL the user gave for a filtered snapshot).
    pub fn copy_sql(&self, chunk: &Chunk, filter: Option<&str>) -> Result<String, String> {
        let mut conditions = Vec::new();
        let mut tail = String::new();
        match chunk {
            Chunk::Pages { start, end } => {
                conditions.push(format!("ctid >= '({start},0)'::tid"));
                if let Some(end) = end {
                    conditions.push(format!("ctid < '({end},0)'::tid"));
                }
            }
            Chunk::After { key, limit } => {
                let names = self.key_names(chunk)?;
                if let Some(key) = key {
                    let bounds = self.key_literals(key)?;
                    conditions.push(format!("({}) > ({})", names.join(", "), bounds.join(", ")));
                }
                tail = format!(" ORDER BY {} LIMIT {limit}", names.join(", "));
            }
            Chunk::Any { limit } => tail = format!(" LIMIT {limit}"),
            Chunk::Keys(keys) => {
                let names = self.key_names(chunk)?;
                let mut tuples = Vec::with_capacity(keys.len());
                for key in keys {
                    tuples.push(format!("({})", self.key_literals(key)?.join(", ")));
                }
                if tuples.is_empty() {
                    // `IN ()` is not SQL; no key, no row.
                    conditions.push("false".to_owned());
                } else {
                    conditions.push(format!("({}) IN ({})", names.join(", "), tuples.join(", ")));
                }
                tail = format!(" ORDER BY {}", names.join(", "));
            }
        }
        if let Some(filter) = filter {
            conditions.push(format!("({filter})"));
        }
        let binary = Self::binary(chunk);
        let columns = if binary {
            &self.binary_select_list
        } else {
            &self.select_list
        };
        let mut sql = format!("COPY (SELECT {columns} FROM {}", self.sql_name);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&tail);
        sql.push_str(if binary {
            ") TO STDOUT (FORMAT binary)"
        } else {
            ") TO STDOUT"
        });
        Ok(sql)
    }

    /// The qualified type each key column's text is cast to, in key
    /// order.
    pub fn key_types(&self) -> Vec<&str> {
        self.keys.iter().map(|(_, _, cast)| cast.as_str()).collect()
    }

    /// The quoted key column names, for a read in key order.
    fn key_names(&self, chunk: &Chunk) -> Result<Vec<&str>, String> {
        if self.keys.is_empty() {
            let how = if matches!(chunk, Chunk::Keys(_)) {
                "by key"
            } else {
                "in key order"
            };
            return Err(format!(
                "table {} has no key to read it {how}",
                self.schema.qualified_name()
            ));
        }
        Ok(self.keys.iter().map(|(_, n, _)| n.as_str()).collect())
    }

    /// A key's texts as SQL literals cast to the key columns' types.
    fn key_literals(&self, key: &[String]) -> Result<Vec<String>, String> {
        if key.len() != self.keys.len() {
            return Err(format!(
                "a key of {} values for the {} key columns of {}",
                key.len(),
                self.keys.len(),
                self.schema.qualified_name()
            ));
        }
        Ok(self
            .keys
            .iter()
            .zip(key)
            .map(|((_, _, cast), text)| format!("{}::{cast}", literal(text)))
            .collect())
    }

    /// A row of the table's width holding only the key `texts` (each
    /// decoded as the stream's values are), NULL elsewhere: the `before`
    /// of a delete, as the stream sends it for the default replica
    /// identity.
    pub fn key_row(&self, texts: &[String]) -> Result<Vec<Value>, String> {
        if texts.len() != self.keys.len() {
            return Err(format!(
                "a key of {} values for the {} key columns of {}",
                texts.len(),
                self.keys.len(),
                self.schema.qualified_name()
            ));
        }
        let mut row = vec![Value::Null; self.kinds.len()];
        for ((i, _, _), text) in self.keys.iter().zip(texts) {
            row[*i] = decode_text(self.kinds[*i], text.as_bytes()).map_err(|e| {
                format!(
                    "key column {} of {}: {text:?}: {e}",
                    self.schema.columns[*i].name,
                    self.schema.qualified_name()
                )
            })?;
        }
        Ok(row)
    }

    /// Whether `chunk` is read in COPY's binary format: page chunks are;
    /// key chunks need the last key's text for the next bound.
    fn binary(chunk: &Chunk) -> bool {
        matches!(chunk, Chunk::Pages { .. })
    }

    /// Reads `chunk` (in the caller's transaction), decoding every row.
    pub async fn read(
        &self,
        client: &Client,
        addr: &str,
        chunk: &Chunk,
        filter: Option<&str>,
    ) -> Result<Rows, PgError> {
        let sql = self.copy_sql(chunk, filter).map_err(PgError::Config)?;
        let context = || {
            format!(
                "reading table {} for a snapshot",
                self.schema.qualified_name()
            )
        };
        let stream = client
            .copy_out(sql.as_str())
            .await
            .map_err(|e| PgError::sql(addr, context(), e))?;
        let mut stream = std::pin::pin!(stream);
        let mut parser = CopyParser {
            binary: Self::binary(chunk).then_some(BinaryState::Header),
            pending: Vec::new(),
        };
        let mut out = Rows::default();
        let protocol = |message: String| PgError::Protocol {
            addr: addr.to_owned(),
            message: format!("{}: {message}", context()),
        };
        while let Some(data) = stream.next().await {
            let data: Bytes = data.map_err(|e| PgError::sql(addr, context(), e))?;
            parser.feed(&data, self, &mut out).map_err(protocol)?;
        }
        parser.finish().map_err(protocol)?;
        Ok(out)
    }

    /// One COPY text line into a row of values (and its key texts).
    fn row(&self, line: &[u8], out: &mut Rows) -> Result<(), String> {
        let mut values = Vec::with_capacity(self.kinds.len());
        let mut field = Vec::new();
        let mut key_texts = Vec::with_capacity(self.keys.len());
        for (i, raw) in line.split(|&b| b == b'\t').enumerate() {
            let Some(&kind) = self.kinds.get(i) else {
                return Err(format!(
                    "a row has more than the {} columns of {}",
                    self.kinds.len(),
                    self.schema.qualified_name()
                ));
            };
            if raw == b"\\N" {
                values.push(Value::Null);
                continue;
            }
            field.clear();
            unescape(raw, &mut field)?;
            let value = decode_text(kind, &field)
                .map_err(|e| format!("column {}: {e}", self.schema.columns[i].name))?;
            if self.keys.iter().any(|(k, _, _)| *k == i) {
                key_texts.push(String::from_utf8_lossy(&field).into_owned());
            }
            values.push(value);
        }
        if values.len() != self.kinds.len() {
            return Err(format!(
                "a row has {} of the {} columns of {}",
                values.len(),
                self.kinds.len(),
                self.schema.qualified_name()
            ));
        }
        out.rows.push(values);
        if !self.keys.is_empty() {
            out.keys.push(key_texts.clone());
            out.last_key = Some(key_texts);
        }
        Ok(())
    }
}

/// The signature that starts COPY's binary format, before its flags and
/// header extension.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Where a binary COPY is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryState {
    Header,
    Rows,
    /// The trailer came: nothing may follow.
    Ended,
}

/// Splits COPY data (which may cut rows anywhere) into rows: lines of the
/// text format, or tuples of the binary one.
struct CopyParser {
    /// `None`: the text format.
    binary: Option<BinaryState>,
    /// The start of a row that the data so far cut off.
    pending: Vec<u8>,
}

impl CopyParser {
    fn feed(&mut self, data: &[u8], table: &SnapshotTable, out: &mut Rows) -> Result<(), String> {
        if let Some(state) = &mut self.binary {
            // The server sends one message per row, so a cut row is rare:
            // parse straight from the message unless one is pending.
            let joined;
            let buf = if self.pending.is_empty() {
                data
            } else {
                self.pending.extend_from_slice(data);
                joined = std::mem::take(&mut self.pending);
                &joined[..]
            };
            let mut at = 0;
            while let Some(used) = binary_step(&buf[at..], state, table, out)? {
                at += used;
            }
            self.pending.extend_from_slice(&buf[at..]);
            return Ok(());
        }
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                table.row(&rest[..end], out)?;
            } else {
                self.pending.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.pending);
                table.row(&line, out)?;
            }
            rest = &rest[end + 1..];
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// Checks that the data ended where a COPY may end.
    fn finish(&self) -> Result<(), String> {
        match self.binary {
            _ if !self.pending.is_empty() => Err("the data ends in the middle of a row".to_owned()),
            Some(BinaryState::Ended) | None => Ok(()),
            Some(_) => Err("the binary data ends without its trailer".to_owned()),
        }
    }
}

/// Takes the next piece of a binary COPY (the header, a tuple or the
/// trailer) off `buf`: `Ok(Some(bytes used))`, or `Ok(None)` when `buf`
/// holds less than the whole piece.
fn binary_step(
    buf: &[u8],
    state: &mut BinaryState,
    table: &SnapshotTable,
    out: &mut Rows,
) -> Result<Option<usize>, String> {
    let be_i16 = |at: usize| {
        buf.get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
    };
    let be_i32 = |at: usize| {
        buf.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match *state {
        BinaryState::Header => {
            let Some(ext) = be_i32(15) else {
                return Ok(None);
            };
            if &buf[..11] != BINARY_SIGNATURE {
                return Err("the binary data does not start with COPY's signature".to_owned());
            }
            // Bits 16-31 are critical: a reader that does not know one must
            // stop (bit 16, OIDs, is never asked for here).
            let flags = be_i32(11).unwrap_or(0);
            if flags as u32 & 0xFFFF_0000 != 0 {
                return Err(format!("the binary data has header flags {flags:#x}"));
            }
            let ext = usize::try_from(ext).map_err(|_| "a negative header extension length")?;
            if buf.len() < 19 + ext {
                return Ok(None);
            }
            *state = BinaryState::Rows;
            Ok(Some(19 + ext))
        }
        BinaryState::Ended if buf.is_empty() => Ok(None),
        BinaryState::Ended => Err("data after the binary trailer".to_owned()),
        BinaryState::Rows => {
            let Some(count) = be_i16(0) else {
                return Ok(None);
            };
            if count == -1 {
                *state = BinaryState::Ended;
                return Ok(Some(2));
            }
            if usize::try_from(count).ok() != Some(table.kinds.len()) {
                return Err(format!(
                    "a row has {count} of the {} columns of {}",
                    table.kinds.len(),
                    table.schema.qualified_name()
                ));
            }
            // Find the row's end before decoding any of it.
            let mut at = 2;
            for _ in 0..count {
                let Some(len) = be_i32(at) else {
                    return Ok(None);
                };
                if len < -1 {
                    return Err(format!("a field of length {len}"));
                }
                at += 4 + usize::try_from(len).unwrap_or(0);
            }
            if buf.len() < at {
                return Ok(None);
            }
            let mut values = Vec::with_capacity(table.kinds.len());
            let mut at = 2;
            for (i, &kind) in table.kinds.iter().enumerate() {
                let len = be_i32(at).unwrap_or(-1);
                at += 4;
                let Ok(len) = usize::try_from(len) else {
                    values.push(Value::Null);
                    continue;
                };
                let raw = &buf[at..at + len];
                at += len;
                let value = if table.as_text[i] {
                    decode_text(kind, raw)
                } else {
                    decode_binary(kind, raw)
                };
                values.push(
                    value.map_err(|e| format!("column {}: {e}", table.schema.columns[i].name))?,
                );
            }
            out.rows.push(values);
            Ok(Some(at))
        }
    }
}

/// Undoes COPY text escapes: `\b \f \n \r \t \v \\`, octal `\NNN`, hex
/// `\xHH`, and `\c` for any other character c.
pub(crate) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&c) = raw.get(i + 1) else {
            return Err("a field ends in a lone backslash".to_owned());
        };
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                }
            }
            other => out.push(other),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_escapes_are_undone() {
        let mut out = Vec::new();
        unescape(br"a\tb\nc\\d\101\x41\q\r", &mut out).unwrap();
        assert_eq!(out, b"a\tb\nc\\dAAq\r");
        out.clear();
        assert!(unescape(b"trailing\\", &mut out).is_err());
        out.clear();
        unescape(br"\x\7\08", &mut out).unwrap();
        assert_eq!(out, [b'x', 7, 0, b'8']);
    }

    /// A table of (int8 key, text, an enum selected as text).
    fn three_columns() -> SnapshotTable {
        let column = |name: &str, type_name: &str, key| Column {
            name: name.to_owned(),
            type_oid: 0,
            type_name: type_name.to_owned(),
            type_modifier: -1,
            key,
        };
        SnapshotTable {
            schema: Arc::new(TableSchema {
                id: 1,
                version: 0,
                schema: "public".to_owned(),
                name: "t".to_owned(),
                columns: vec![
                    column("id", "int8", true),
                    column("note", "text", false),
                    column("mood", "public.mood", false),
                ],
                replica_identity: ReplicaIdentity::Default,
            }),
            pages: 1,
            estimated_rows: None,
            kinds: vec![PgType::Int8, PgType::Text, PgType::Other].into_boxed_slice(),
            sql_name: "public.t".to_owned(),
            quoted: ["id", "note", "mood"].map(str::to_owned).into(),
            select_list: "id, note, mood".to_owned(),
            binary_select_list: String::new(),
            as_text: Box::default(),
            keys: vec![(0, "id".to_owned(), "pg_catalog.int8".to_owned())],
        }
        .matching_stream()
    }

    fn binary_copy(rows: &[[Option<&[u8]>; 3]]) -> Vec<u8> {
        let mut data = BINARY_SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        // A header extension, which a reader must skip.
        data.extend_from_slice(&3i32.to_be_bytes());
        data.extend_from_slice(b"ext");
        for row in rows {
            data.extend_from_slice(&3i16.to_be_bytes());
            for field in row {
                match field {
                    Some(b) => {
                        data.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        data.extend_from_slice(b);
                    }
                    None => data.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }

    fn parse_binary(table: &SnapshotTable, pieces: &[&[u8]]) -> Result<Vec<Vec<Value>>, String> {
        let mut parser = CopyParser {
            binary: Some(BinaryState::Header),
            pending: Vec::new(),
        };
        let mut out = Rows::default();
        for piece in pieces {
            parser.feed(piece, table, &mut out)?;
        }
        parser.finish()?;
        Ok(out.rows)
    }

    #[test]
    fn binary_copy_is_decoded_wherever_the_data_is_cut() {
        let table = three_columns();
        let seven = 7i64.to_be_bytes();
        let data = binary_copy(&[
            [Some(&seven), Some(b"tab\\there"), Some(b"happy")],
            [Some(&(-1i64).to_be_bytes()), None, Some(b"")],
        ]);
        let want = vec![
            vec![
                Value::Int(7),
                // No escapes in the binary format: a backslash is itself.
                Value::Text("tab\\there".to_owned()),
                Value::Other("happy".to_owned()),
            ],
            vec![Value::Int(-1), Value::Null, Value::Other(String::new())],
        ];
        assert_eq!(parse_binary(&table, &[&data]).unwrap(), want);
        for cut in 1..data.len() {
            let (a, b) = data.split_at(cut);
            assert_eq!(parse_binary(&table, &[a, b]).unwrap(), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(parse_binary(&table, &bytes).unwrap(), want);
    }

    #[test]
    fn bad_binary_copy_is_an_error_that_says_what() {
        let table = three_columns();
        let seven = 7i64.to_be_bytes();
        let good = binary_copy(&[[Some(&seven), None, None]]);
        let err = |data: &[u8]| parse_binary(&table, &[data]).unwrap_err();
        assert!(err(&good[..good.len() - 2]).contains("without its trailer"));
        assert!(err(&good[..good.len() - 3]).contains("middle of a row"));
        let mut after = good.clone();
        after.push(0);
        assert!(err(&after).contains("after the binary trailer"));
        let mut signature = good.clone();
        signature[0] = b'X';
        assert!(err(&signature).contains("signature"));
        let two = {
            let mut d = good[..22].to_vec();
            d.extend_from_slice(&2i16.to_be_bytes());
            d
        };
        assert!(
            err(&two).contains("2 of the 3 columns of public.t"),
            "{}",
            err(&two)
        );
        let short_int = binary_copy(&[[Some(b"1234"), None, None]]);
        assert!(err(&short_int).contains("column id"), "{}", err(&short_int));
    }

    #[test]
    fn page_chunks_copy_binary_and_key_chunks_text() {
        let table = three_columns();
        let pages = table
            .copy_sql(
                &Chunk::Pages {
                    start: 0,
                    end: Some(8),
                },
                None,
            )
            .unwrap();
        let as_text = "CASE WHEN pg_catalog.num_nulls(mood) = 0 \
                       THEN pg_catalog.format('%s', mood) END";
        assert!(
            pages.contains(&format!("SELECT id, note, {as_text} FROM")),
            "{pages}"
        );
        assert!(pages.ends_with("TO STDOUT (FORMAT binary)"), "{pages}");
        let keys = table
            .copy_sql(
                &Chunk::After {
                    key: None,
                    limit: 10,
                },
                None,
            )
            .unwrap();
        assert!(keys.contains("SELECT id, note, mood FROM"), "{keys}");
        assert!(keys.ends_with("LIMIT 10) TO STDOUT"), "{keys}");
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal(r"it's a \ test"), r"E'it''s a \\ test'");
    }

    #[test]
    fn settings_are_the_streams() {
        let s = session_settings();
        assert!(s.contains("SET DateStyle = 'ISO';"), "{s}");
        assert!(s.contains("SET bytea_output = 'hex';"), "{s}");
    }
}
