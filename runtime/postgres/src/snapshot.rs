//! Reading the rows a table already holds, for snapshots: the table's
//! shape from the catalog, as pgoutput would announce it, and its rows in
//! chunks through `COPY (SELECT …) TO STDOUT`, decoded by the same code as
//! the stream's values.
//!
//! The caller runs the reads in a transaction that fixes what they see (a
//! `REPEATABLE READ` transaction that imported the slot's exported
//! snapshot, or a watermark window). [`InitialSnapshot`] is such a caller:
//! the initial snapshot of a new slot, read by several connections that
//! imported the snapshot the slot exported, handed on as one transaction
//! of `read` events just below the slot's consistent point. Its progress is kept
//! in [`STATE_TABLE`].
//!
//! Two ways to cut a table into chunks:
//! * [`Chunk::Pages`]: a range of heap pages (`ctid` bounds, a TID range
//!   scan on PostgreSQL 14+). Every table has them, keyed or not, they
//!   split a table evenly among workers by its size, and a chunk is one
//!   sequential read. Under one snapshot the rows do not move.
//! * [`Chunk::After`]: the next rows in key order after a key (keyset
//!   pagination on the primary key). It stays right while rows are
//!   written, so it is the way for chunks read at different times, and the
//!   last key read is all there is to store to resume.
//!
//! Values are parsed from COPY's text format: fields split on tabs, `\N`
//! for NULL and backslash escapes undone, then [`decode_text`] as for the
//! stream (the session uses the stream's settings, `SESSION_OPTIONS`, so
//! each type has the one text form the decoder expects).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use weir_codec::PgType;
use weir_core::{
    ChangeEvent, Column, Lsn, Op, ReplicaIdentity, SourceInfo, SourceItem, TableSchema, TxnBegin,
    TxnCommit, TxnId, Value,
};

use crate::PgError;
use crate::config::PostgresConfig;
use crate::conn::{ReplConn, SESSION_OPTIONS};
use crate::decode::decode_text;
use crate::pgoutput::{next_txn_id, register};
use crate::setup::connect_sql;

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
    /// The quoted column list, in the order of the row values.
    select_list: String,
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
    /// start.
    After {
        /// Where the previous chunk of this table ended.
        key: Option<Vec<String>>,
        /// Most rows to read.
        limit: u64,
    },
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
    Ok(SnapshotTable {
        schema: register(db_key, candidate),
        pages: u32::try_from(pages).unwrap_or(u32::MAX),
        estimated_rows: (tuples >= 0.0).then_some(tuples as u64),
        kinds: kinds.into_boxed_slice(),
        sql_name: format!("{}.{}", quote_ident(schema), quote_ident(table)),
        select_list: select.join(", "),
        // Keyset chunks need a unique key: the primary key or the replica
        // identity index, not every column of REPLICA IDENTITY FULL.
        keys: if replica_identity == ReplicaIdentity::Full {
            Vec::new()
        } else {
            keys
        },
    })
}

impl SnapshotTable {
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
                if self.keys.is_empty() {
                    return Err(format!(
                        "table {} has no key to read it in key order",
                        self.schema.qualified_name()
                    ));
                }
                let names: Vec<&str> = self.keys.iter().map(|(_, n, _)| n.as_str()).collect();
                if let Some(key) = key {
                    if key.len() != self.keys.len() {
                        return Err(format!(
                            "a key bound of {} values for {} key columns",
                            key.len(),
                            self.keys.len()
                        ));
                    }
                    let bounds: Vec<String> = self
                        .keys
                        .iter()
                        .zip(key)
                        .map(|((_, _, cast), text)| format!("{}::{cast}", literal(text)))
                        .collect();
                    conditions.push(format!("({}) > ({})", names.join(", "), bounds.join(", ")));
                }
                tail = format!(" ORDER BY {} LIMIT {limit}", names.join(", "));
            }
        }
        if let Some(filter) = filter {
            conditions.push(format!("({filter})"));
        }
        let mut sql = format!("COPY (SELECT {} FROM {}", self.select_list, self.sql_name);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&tail);
        sql.push_str(") TO STDOUT");
        Ok(sql)
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
        let mut parser = CopyParser::default();
        let mut out = Rows::default();
        while let Some(data) = stream.next().await {
            let data: Bytes = data.map_err(|e| PgError::sql(addr, context(), e))?;
            parser
                .feed(&data, self, &mut out)
                .map_err(|message| PgError::Protocol {
                    addr: addr.to_owned(),
                    message: format!("{}: {message}", context()),
                })?;
        }
        if !parser.pending.is_empty() {
            return Err(PgError::Protocol {
                addr: addr.to_owned(),
                message: format!("{}: the last row has no line end", context()),
            });
        }
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
            out.last_key = Some(key_texts);
        }
        Ok(())
    }
}

/// Splits COPY data (which may cut rows anywhere) into lines.
#[derive(Default)]
struct CopyParser {
    pending: Vec<u8>,
}

impl CopyParser {
    fn feed(&mut self, data: &[u8], table: &SnapshotTable, out: &mut Rows) -> Result<(), String> {
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

/// The table recording each slot's initial snapshot, in the source
/// database: `running` from the slot's creation until every row was
/// delivered, then `done`.
pub const STATE_TABLE: &str = "weir.snapshots";

/// Whether `schema.name` is [`STATE_TABLE`], whose changes the stream
/// leaves out.
pub(crate) fn is_state_table(schema: &str, name: &str) -> bool {
    schema == "weir" && name == "snapshots"
}

pub(crate) async fn ensure_state_table(client: &Client, addr: &str) -> Result<(), PgError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS weir; \
             CREATE TABLE IF NOT EXISTS weir.snapshots (slot text PRIMARY KEY, \
               consistent_point pg_lsn, state text NOT NULL, \
               started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz)",
        )
        .await
        .map_err(|e| {
            PgError::sql(
                addr,
                format!(
                    "creating {STATE_TABLE}, where the initial snapshot's progress is kept \
                     (the role needs CREATE on the database, or set source.snapshot = \"never\")"
                ),
                e,
            )
        })
}

/// Whether `slot`'s initial snapshot began and was never delivered (no
/// state table: it never began; reading needs no CREATE privilege).
pub(crate) async fn unfinished(client: &Client, addr: &str, slot: &str) -> Result<bool, PgError> {
    let row = client
        .query_one("SELECT to_regclass('weir.snapshots') IS NOT NULL", &[])
        .await
        .map_err(|e| PgError::sql(addr, format!("looking for {STATE_TABLE}"), e))?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let row = client
        .query_opt("SELECT state FROM weir.snapshots WHERE slot = $1", &[&slot])
        .await
        .map_err(|e| PgError::sql(addr, format!("reading {STATE_TABLE}"), e))?;
    Ok(row.is_some_and(|r| r.get::<_, String>(0) == "running"))
}

pub(crate) async fn drop_slot_and_state(
    client: &Client,
    addr: &str,
    slot: &str,
) -> Result<(), PgError> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| {
            PgError::sql(
                addr,
                format!("dropping slot {slot:?} to restart its snapshot"),
                e,
            )
        })?;
    client
        .execute("DELETE FROM weir.snapshots WHERE slot = $1", &[&slot])
        .await
        .map_err(|e| PgError::sql(addr, format!("clearing {STATE_TABLE}"), e))?;
    Ok(())
}

/// Marks `slot`'s snapshot running: before the slot is created (no
/// consistent point yet), then again with the slot's consistent point.
pub(crate) async fn record_started(
    client: &Client,
    addr: &str,
    slot: &str,
    consistent_point: Option<Lsn>,
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO weir.snapshots (slot, consistent_point, state) \
             VALUES ($1, $2::text::pg_lsn, 'running') \
             ON CONFLICT (slot) DO UPDATE SET consistent_point = EXCLUDED.consistent_point, \
               state = 'running', started_at = now(), finished_at = NULL",
            &[&slot, &consistent_point.map(|l| l.to_string())],
        )
        .await
        .map_err(|e| PgError::sql(addr, format!("recording the snapshot in {STATE_TABLE}"), e))?;
    Ok(())
}

/// Marks `slot`'s initial snapshot delivered: call once every `read`
/// event of it is durable at every sink, and before the slot is read.
pub async fn record_finished(cfg: &PostgresConfig, slot: &str) -> Result<(), PgError> {
    let addr = cfg.address();
    let client = connect_sql(cfg, &addr).await?;
    client
        .execute(
            "UPDATE weir.snapshots SET state = 'done', finished_at = now() WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(|e| {
            PgError::sql(
                &addr,
                format!("marking the snapshot done in {STATE_TABLE}"),
                e,
            )
        })?;
    Ok(())
}

/// Pages per chunk of the initial snapshot: 8 MiB of heap at the default
/// block size, small enough to spread a table over the workers and keep
/// memory bounded, large enough that a chunk is a long sequential read.
const CHUNK_PAGES: u32 = 1024;

/// Rows per batch handed downstream.
const ITEMS_PER_BATCH: usize = 4096;

/// Live progress of an initial snapshot, for `/status` and metrics: per
/// table, the rows read, the planner's estimate, and chunks done.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    tables: std::sync::Mutex<Vec<Arc<TableProgress>>>,
    started: std::sync::OnceLock<std::time::Instant>,
    delivered: std::sync::atomic::AtomicBool,
}

/// One table's share of [`SnapshotProgress`].
#[derive(Debug)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// `pg_class.reltuples` when the table was analyzed.
    pub estimated_rows: Option<u64>,
    /// Chunks the table was cut into.
    pub chunks: u64,
    /// Chunks read so far.
    pub chunks_done: std::sync::atomic::AtomicU64,
    /// Rows read so far.
    pub rows: std::sync::atomic::AtomicU64,
}

impl SnapshotProgress {
    /// The tables, in the order they are read.
    pub fn tables(&self) -> Vec<Arc<TableProgress>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How long the copy has been running; `None` before it started.
    pub fn elapsed(&self) -> Option<std::time::Duration> {
        self.started.get().map(|t| t.elapsed())
    }

    /// Whether every row is durable at every sink.
    pub fn is_delivered(&self) -> bool {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that every row is durable at every sink.
    pub fn set_delivered(&self) {
        self.delivered
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The initial snapshot of a new slot: the rows every published table held
/// at the slot's consistent point, read through the snapshot the slot
/// exported, as one transaction of `read` events positioned just below
/// that point (before every change the slot will stream, even one that
/// commits exactly at it).
pub struct InitialSnapshot {
    config: PostgresConfig,
    repl: Option<ReplConn>,
    name: String,
    consistent_point: Lsn,
    db_key: Arc<str>,
    progress: Arc<SnapshotProgress>,
}

impl std::fmt::Debug for InitialSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialSnapshot")
            .field("slot", &self.config.slot)
            .field("snapshot", &self.name)
            .field("consistent_point", &self.consistent_point)
            .finish()
    }
}

/// What an initial snapshot delivered.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSummary {
    /// Its one transaction: retired by the pipeline once every row is
    /// durable. None was sent when there were no rows.
    pub txn: TxnId,
    /// Rows read.
    pub rows: u64,
    /// Tables read.
    pub tables: usize,
    /// Whether every row was read and handed on (not cut short by a
    /// shutdown or a closed channel).
    pub complete: bool,
}

impl InitialSnapshot {
    pub(crate) fn new(
        config: PostgresConfig,
        repl: ReplConn,
        name: String,
        consistent_point: Lsn,
        db_key: Arc<str>,
    ) -> Self {
        InitialSnapshot {
            config,
            repl: Some(repl),
            name,
            consistent_point,
            db_key,
            progress: Arc::default(),
        }
    }

    /// Its progress, updated while [`run`](Self::run) copies.
    pub fn progress(&self) -> Arc<SnapshotProgress> {
        Arc::clone(&self.progress)
    }

    /// The slot's consistent point: the snapshot shows every transaction
    /// committed before it, the stream every one after.
    pub fn consistent_point(&self) -> Lsn {
        self.consistent_point
    }

    /// Reads every published table with `config.snapshot_workers`
    /// connections and sends the rows to `out` as one transaction
    /// (`Begin`, a `read` change per row, `Commit` ending at the consistent
    /// point, so acknowledging it moves nothing). A publication's column
    /// lists and row filters apply, as in the stream; row security is
    /// refused rather than let hide rows; the tables are locked against
    /// rewrites (`ACCESS SHARE`) until the copy ends. Stops early, with `Ok`,
    /// when `shutdown` is cancelled or `out` closes.
    pub async fn run(
        mut self,
        out: &mpsc::Sender<Vec<SourceItem>>,
        shutdown: &CancellationToken,
    ) -> Result<SnapshotSummary, PgError> {
        let cfg = self.config.clone();
        let addr = cfg.address();
        let workers = cfg.snapshot_workers.max(1);
        // Every worker imports the exported snapshot before the connection
        // that holds it does anything else; then it may go.
        // Row security would hide rows the stream sends: refuse instead
        // (as pg_dump does). Timeouts a server sets would kill a worker
        // that waits on a slow sink, or a long COPY.
        let import = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; {} \
             SET row_security = off; SET statement_timeout = 0; \
             SET idle_in_transaction_session_timeout = 0;",
            literal(&self.name),
            session_settings()
        );
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = connect_sql(&cfg, &addr).await?;
            client
                .batch_execute(&import)
                .await
                .map_err(|e| PgError::sql(&addr, "importing the slot's exported snapshot", e))?;
            clients.push(Arc::new(client));
        }
        if let Some(repl) = self.repl.take() {
            repl.close().await;
        }
        let version: i32 = clients[0]
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| PgError::sql(&addr, "reading the server version", e))?
            .get(0);
        // PostgreSQL 15 publications may list columns and filter rows; the
        // snapshot shows what the stream would.
        let list = if version >= 150_000 {
            "SELECT schemaname::text, tablename::text, attnames::text[], rowfilter \
             FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
        } else {
            "SELECT schemaname::text, tablename::text, NULL::text[], NULL::text \
             FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2"
        };
        let published = clients[0]
            .query(list, &[&cfg.publication])
            .await
            .map_err(|e| PgError::sql(&addr, "listing the published tables", e))?;
        let mut tables = Vec::with_capacity(published.len());
        let mut filters: Vec<Option<String>> = Vec::with_capacity(published.len());
        let mut progress = Vec::with_capacity(published.len());
        let mut chunks = std::collections::VecDeque::new();
        let mut names = Vec::new();
        for row in &published {
            let (schema, name): (String, String) = (row.get(0), row.get(1));
            if is_state_table(&schema, &name) {
                continue;
            }
            let columns: Option<Vec<String>> = row.get(2);
            let filter: Option<String> = row.get(3);
            let table = describe(
                &clients[0],
                &addr,
                &self.db_key,
                &schema,
                &name,
                columns.as_deref(),
            )
            .await?;
            names.push(table.sql_name.clone());
            let pages = clients[0]
                .query_one(
                    "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int8)::int8",
                    &[&table.schema.id],
                )
                .await
                .map_err(|e| PgError::sql(&addr, "measuring a table", e))?
                .get::<_, i64>(0);
            let pages = u32::try_from(pages).unwrap_or(u32::MAX);
            let index = tables.len();
            let first_chunk = chunks.len();
            let mut start = 0;
            // Before PostgreSQL 14 a ctid range is a full scan: one chunk.
            while version >= 140_000 && start + CHUNK_PAGES < pages {
                chunks.push_back((
                    index,
                    Chunk::Pages {
                        start,
                        end: Some(start + CHUNK_PAGES),
                    },
                ));
                start += CHUNK_PAGES;
            }
            // The last chunk is open-ended: pages added since the size was
            // read hold no row the snapshot can see, but reading them is
            // what keeps that true without assuming it.
            chunks.push_back((index, Chunk::Pages { start, end: None }));
            progress.push(Arc::new(TableProgress {
                table: table.schema.qualified_name(),
                estimated_rows: table.estimated_rows,
                chunks: (chunks.len() - first_chunk) as u64,
                chunks_done: Default::default(),
                rows: Default::default(),
            }));
            tables.push(Arc::new(table));
            filters.push(filter);
        }
        // Held until the workers' transactions end: a table rewritten
        // meanwhile (ALTER TABLE … TYPE) would look empty to the snapshot.
        if !names.is_empty() {
            clients[0]
                .batch_execute(&format!(
                    "LOCK TABLE {} IN ACCESS SHARE MODE",
                    names.join(", ")
                ))
                .await
                .map_err(|e| PgError::sql(&addr, "locking the tables to snapshot", e))?;
        }
        let filters = Arc::new(filters);
        *self
            .progress
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = progress.clone();
        let _ = self.progress.started.set(std::time::Instant::now());
        let progress = Arc::new(progress);
        tracing::info!(
            slot = %cfg.slot, tables = tables.len(), chunks = chunks.len(), workers,
            consistent_point = %self.consistent_point, "initial snapshot started"
        );
        let queue = Arc::new(std::sync::Mutex::new(chunks));
        // Workers send rows, or the error that stopped them: the first
        // error ends the snapshot at once rather than after every chunk.
        let (rows_tx, mut rows_rx) =
            mpsc::channel::<Result<(usize, Vec<Vec<Value>>), PgError>>(workers * 2);
        let mut tasks = tokio::task::JoinSet::new();
        for client in clients {
            let (queue, tables, filters, progress, rows_tx, addr) = (
                queue.clone(),
                tables.clone(),
                filters.clone(),
                progress.clone(),
                rows_tx.clone(),
                addr.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some((index, chunk)) = next else {
                        return;
                    };
                    let read = tables[index]
                        .read(&client, &addr, &chunk, filters[index].as_deref())
                        .await
                        .map(|rows| (index, rows.rows));
                    if let Ok((_, rows)) = &read {
                        use std::sync::atomic::Ordering::Relaxed;
                        progress[index].rows.fetch_add(rows.len() as u64, Relaxed);
                        progress[index].chunks_done.fetch_add(1, Relaxed);
                    }
                    let failed = read.is_err();
                    if rows_tx.send(read).await.is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(rows_tx);

        let txn = next_txn_id();
        let cp = self.consistent_point;
        // The first streamed transaction may commit exactly at the
        // consistent point, with changes at (cp, 0…): the reads sit just
        // below it, so every streamed change is newer than every read.
        let at = Lsn(cp.0.saturating_sub(1));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let mut batch = vec![SourceItem::Begin(TxnBegin {
            txn,
            xid: 0,
            commit_lsn: at,
            commit_time_micros: now,
        })];
        let mut seq: u32 = 0;
        let mut rows_read: u64 = 0;
        loop {
            let next = tokio::select! {
                next = rows_rx.recv() => next,
                _ = shutdown.cancelled() => return Ok(SnapshotSummary { txn, rows: rows_read, tables: tables.len(), complete: false }),
            };
            let Some(read) = next else { break };
            let (index, rows) = read?;
            for row in rows {
                batch.push(SourceItem::Change(ChangeEvent {
                    op: Op::Read,
                    table: Some(tables[index].schema.clone()),
                    before: None,
                    after: Some(row),
                    message: None,
                    source: SourceInfo {
                        commit_lsn: at,
                        lsn: at,
                        xid: 0,
                        commit_time_micros: now,
                        seq,
                    },
                    txn,
                }));
                seq = seq.checked_add(1).ok_or_else(|| {
                    PgError::Config("an initial snapshot of more than 4 294 967 295 rows".into())
                })?;
                rows_read += 1;
                if batch.len() >= ITEMS_PER_BATCH
                    && out.send(std::mem::take(&mut batch)).await.is_err()
                {
                    return Ok(SnapshotSummary {
                        txn,
                        rows: rows_read,
                        tables: tables.len(),
                        complete: false,
                    });
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| PgError::Io(std::io::Error::other(e.to_string())))?;
        }
        // Tables without rows make no transaction at all: plugins' commit
        // hooks see no empty one.
        let complete = rows_read == 0 || {
            batch.push(SourceItem::Commit(TxnCommit {
                txn,
                commit_lsn: at,
                end_lsn: cp,
            }));
            out.send(batch).await.is_ok()
        };
        tracing::info!(slot = %cfg.slot, rows = rows_read, tables = tables.len(), "initial snapshot read");
        Ok(SnapshotSummary {
            txn,
            rows: rows_read,
            tables: tables.len(),
            complete,
        })
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that means `text` whatever `standard_conforming_strings`.
fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
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
