//! Snapshot progress, kept in the source database beside the data it
//! describes (schema `weir`), so that it survives Weir's machine and is
//! written with the same connection rights as everything else:
//!
//! * [`STATE_TABLE`] (`weir.snapshots`): one row per slot, its initial
//!   snapshot `running` from before the slot exists until every row is
//!   delivered, then `done`; and the tables the slot captures, so that a
//!   table added later is recognised and backfilled.
//! * `weir.snapshot_tables`: one row per table and request (request 0 is
//!   the initial snapshot; ad-hoc requests and backfills number from the
//!   sequence `weir.snapshot_requests`): how it was cut (heap file, pages
//!   per chunk, chunks), the chunks delivered, and `pending`, `done` or
//!   `failed` (with the error).
//!
//! A chunk is recorded only after every sink holds its rows durably, so
//! the record never claims more than was delivered; after a crash the
//! chunks not recorded are read again.

use tokio_postgres::Client;
use weir_core::Lsn;

use super::quote_ident;
use crate::PgError;
use crate::config::PostgresConfig;
use crate::setup::connect_sql;

/// The table recording each slot's initial snapshot, in the source
/// database: `running` from the slot's creation until every row was
/// delivered, then `done`.
pub const STATE_TABLE: &str = "weir.snapshots";

/// Whether `schema.name` is one of the state tables, whose changes the
/// stream and the snapshots leave out.
pub(crate) fn is_state_table(schema: &str, name: &str) -> bool {
    schema == "weir" && matches!(name, "snapshots" | "snapshot_tables")
}

pub(crate) async fn ensure_state_table(client: &Client, addr: &str) -> Result<(), PgError> {
    // Present and current (the common case, on every start and request):
    // no DDL, no lock, no "already exists" notices.
    let current: bool = client
        .query_one(
            "SELECT to_regclass('weir.snapshot_tables') IS NOT NULL AND EXISTS (SELECT 1 \
               FROM pg_attribute WHERE attrelid = to_regclass('weir.snapshots') \
               AND attname = 'tables') AND EXISTS (SELECT 1 FROM pg_attribute \
               WHERE attrelid = to_regclass('weir.snapshot_tables') AND attname = 'keys')",
            &[],
        )
        .await
        .map_err(|e| PgError::sql(addr, format!("looking for {STATE_TABLE}"), e))?
        .get(0);
    if current {
        return Ok(());
    }
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS weir; \
             CREATE TABLE IF NOT EXISTS weir.snapshots (slot text PRIMARY KEY, \
               consistent_point pg_lsn, state text NOT NULL, \
               started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz); \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute \
               WHERE attrelid = 'weir.snapshots'::regclass AND attname = 'tables') THEN \
               ALTER TABLE weir.snapshots ADD COLUMN tables text[]; END IF; END $$; \
             CREATE SEQUENCE IF NOT EXISTS weir.snapshot_requests; \
             CREATE TABLE IF NOT EXISTS weir.snapshot_tables (slot text NOT NULL, \
               request int8 NOT NULL, schema_name text NOT NULL, table_name text NOT NULL, \
               filter text, heap int8, chunk_pages int4 NOT NULL, chunks int4, \
               done int4[] NOT NULL DEFAULT '{}', rows int8 NOT NULL DEFAULT 0, \
               state text NOT NULL DEFAULT 'pending', error text, \
               requested_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz, \
               PRIMARY KEY (slot, request, schema_name, table_name)); \
             ALTER TABLE weir.snapshot_tables ADD COLUMN IF NOT EXISTS keys text[]; \
             ALTER TABLE weir.snapshot_tables ADD COLUMN IF NOT EXISTS key_width int4",
        )
        .await
        .map_err(|e| {
            PgError::sql(
                addr,
                format!(
                    "creating {STATE_TABLE} and weir.snapshot_tables, where snapshot progress is \
                     kept (the role needs CREATE on the database, or set source.snapshot = \"never\")"
                ),
                e,
            )
        })
}

/// Where a slot's initial snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitialState {
    /// Never begun (no state table, or no row for the slot), or done.
    Settled,
    /// Begun and not delivered. `resumable`: the slot was made and every
    /// table's chunks were planned, so the chunks not yet delivered can be
    /// read with watermarks while the slot streams from its consistent
    /// point; otherwise the slot must be made again.
    Interrupted { resumable: bool },
}

/// Reads where `slot`'s initial snapshot stands (reading needs no CREATE
/// privilege).
pub(crate) async fn initial_state(
    client: &Client,
    addr: &str,
    slot: &str,
) -> Result<InitialState, PgError> {
    let sql = |e| PgError::sql(addr, format!("reading {STATE_TABLE}"), e);
    let row = client
        .query_one(
            "SELECT to_regclass('weir.snapshots') IS NOT NULL, \
               to_regclass('weir.snapshot_tables') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql)?;
    let (state_table, tables_table): (bool, bool) = (row.get(0), row.get(1));
    if !state_table {
        return Ok(InitialState::Settled);
    }
    let row = client
        .query_opt(
            "SELECT state, consistent_point IS NOT NULL FROM weir.snapshots WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(sql)?;
    let Some(row) = row.filter(|r| r.get::<_, String>(0) == "running") else {
        return Ok(InitialState::Settled);
    };
    let mut resumable = row.get::<_, bool>(1) && tables_table;
    // Every table recorded, the crash came before the snapshot was.
    if resumable && finish_initial(client, addr, slot).await? {
        return Ok(InitialState::Settled);
    }
    if resumable {
        resumable = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM weir.snapshot_tables WHERE slot = $1 AND request = 0)",
                &[&slot],
            )
            .await
            .map_err(sql)?
            .get(0);
    }
    Ok(InitialState::Interrupted { resumable })
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
/// `tables` are the tables the slot captures (quoted `schema.table`); the
/// plan of an earlier attempt is forgotten.
pub(crate) async fn record_started(
    client: &Client,
    addr: &str,
    slot: &str,
    consistent_point: Option<Lsn>,
    tables: &[String],
) -> Result<(), PgError> {
    client
        .execute(
            "WITH forget AS (DELETE FROM weir.snapshot_tables WHERE slot = $1 AND request = 0) \
             INSERT INTO weir.snapshots (slot, consistent_point, state, tables) \
             VALUES ($1, $2::text::pg_lsn, 'running', $3) \
             ON CONFLICT (slot) DO UPDATE SET consistent_point = EXCLUDED.consistent_point, \
               state = 'running', started_at = now(), finished_at = NULL, tables = EXCLUDED.tables",
            &[&slot, &consistent_point.map(|l| l.to_string()), &tables],
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
        .batch_execute(&format!(
            "UPDATE weir.snapshots SET state = 'done', finished_at = now() WHERE slot = {0}; \
             UPDATE weir.snapshot_tables SET state = 'done', finished_at = now() \
             WHERE slot = {0} AND request = 0 AND state = 'pending'",
            super::literal(slot)
        ))
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

/// One table of a snapshot as it was cut into chunks.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// The heap file read (`pg_class.relfilenode`): a rewrite since makes
    /// the page ranges meaningless, and the table is cut again.
    pub(crate) heap: i64,
    pub(crate) chunk_pages: u32,
    pub(crate) chunks: u32,
}

/// Records request `request`'s tables and how they are cut, before any
/// chunk is read.
pub(crate) async fn record_plan(
    client: &Client,
    addr: &str,
    slot: &str,
    request: i64,
    tables: &[Planned],
) -> Result<(), PgError> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let heaps: Vec<i64> = tables.iter().map(|t| t.heap).collect();
    let pages: Vec<i32> = tables.iter().map(|t| t.chunk_pages as i32).collect();
    let chunks: Vec<i32> = tables.iter().map(|t| t.chunks as i32).collect();
    client
        .execute(
            "INSERT INTO weir.snapshot_tables \
               (slot, request, schema_name, table_name, heap, chunk_pages, chunks) \
             SELECT $1, $2, s, t, h, p, c \
             FROM unnest($3::text[], $4::text[], $5::int8[], $6::int4[], $7::int4[]) AS x(s, t, h, p, c) \
             ON CONFLICT (slot, request, schema_name, table_name) DO UPDATE SET \
               heap = EXCLUDED.heap, chunk_pages = EXCLUDED.chunk_pages, chunks = EXCLUDED.chunks, \
               done = '{}', rows = 0, state = 'pending', error = NULL",
            &[&slot, &request, &schemas, &names, &heaps, &pages, &chunks],
        )
        .await
        .map_err(|e| PgError::sql(addr, "recording the snapshot's chunks", e))?;
    Ok(())
}

/// A table some request still has to read, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct PendingTable {
    pub(crate) request: i64,
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) filter: Option<String>,
    /// `None` until it was first cut into chunks.
    pub(crate) plan: Option<Planned>,
    /// Pages per chunk when it is cut (again).
    pub(crate) chunk_pages: u32,
    pub(crate) done: Vec<i32>,
    /// Only these keys (each the key columns' texts), for a repair: the
    /// rows are read by key, and a key without a row becomes a delete.
    pub(crate) keys: Option<Vec<Vec<String>>>,
}

/// The next table to read for `slot`: the oldest request first.
pub(crate) async fn next_pending(
    client: &Client,
    addr: &str,
    slot: &str,
) -> Result<Option<PendingTable>, PgError> {
    let sql = |e| PgError::sql(addr, "reading the snapshots still to take", e);
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('weir.snapshot_tables') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            // A repair is `repair`, not `pending`, so that a Weir from before
            // repairs leaves it alone rather than snapshot the whole table;
            // its keys are read through to_jsonb so that a state table a
            // role could not add the columns to still works for the rest.
            "SELECT request, schema_name, table_name, filter, heap, chunk_pages, chunks, done, \
               CASE WHEN jsonb_typeof(to_jsonb(t) -> 'keys') = 'array' THEN ARRAY( \
                 SELECT jsonb_array_elements_text(to_jsonb(t) -> 'keys')) END, \
               (to_jsonb(t) ->> 'key_width')::int4 \
             FROM weir.snapshot_tables t WHERE slot = $1 AND state IN ('pending', 'repair') \
             ORDER BY request, schema_name, table_name LIMIT 1",
            &[&slot],
        )
        .await
        .map_err(sql)?;
    Ok(row.map(|r| {
        let (schema, name): (String, String) = (r.get(1), r.get(2));
        let heap: Option<i64> = r.get(4);
        let chunk_pages: i32 = r.get(5);
        let chunks: Option<i32> = r.get(6);
        PendingTable {
            request: r.get(0),
            filter: r.get(3),
            plan: heap.zip(chunks).map(|(heap, chunks)| Planned {
                schema: schema.clone(),
                name: name.clone(),
                heap,
                chunk_pages: chunk_pages.max(1) as u32,
                chunks: chunks.max(1) as u32,
            }),
            chunk_pages: chunk_pages.max(1) as u32,
            schema,
            name,
            done: r.get(7),
            keys: r
                .get::<_, Option<Vec<String>>>(8)
                .map(|flat| unflatten(flat, r.get::<_, Option<i32>>(9))),
        }
    }))
}

/// Records chunks of a table delivered (durable at every sink), with the
/// rows they held, if the table is still cut as it was when they were
/// read (`heap`). Returns whether the table is now complete; completing
/// the last table of the initial snapshot marks it done as well.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_chunks(
    client: &Client,
    addr: &str,
    slot: &str,
    request: i64,
    table: (&str, &str),
    heap: i64,
    chunks: &[i32],
    rows: i64,
) -> Result<bool, PgError> {
    let sql = |e| PgError::sql(addr, "recording delivered snapshot chunks", e);
    let row = client
        .query_opt(
            "WITH n AS (SELECT ARRAY(SELECT DISTINCT x FROM unnest(t.done || $6::int4[]) x \
                 WHERE x < t.chunks ORDER BY x) AS done \
               FROM weir.snapshot_tables t WHERE slot = $1 AND request = $2 \
                 AND schema_name = $3 AND table_name = $4 AND heap = $5) \
             UPDATE weir.snapshot_tables t SET done = n.done, rows = t.rows + $7, \
               state = CASE WHEN cardinality(n.done) >= t.chunks THEN 'done' ELSE t.state END, \
               finished_at = CASE WHEN cardinality(n.done) >= t.chunks \
                 THEN coalesce(t.finished_at, now()) ELSE t.finished_at END \
             FROM n WHERE slot = $1 AND request = $2 AND schema_name = $3 AND table_name = $4 \
             RETURNING t.state = 'done'",
            &[&slot, &request, &table.0, &table.1, &heap, &chunks, &rows],
        )
        .await
        .map_err(sql)?;
    let complete = row.is_some_and(|r| r.get::<_, bool>(0));
    if complete && request == 0 {
        finish_initial(client, addr, slot).await?;
    }
    Ok(complete)
}

/// Marks the initial snapshot done once none of its tables is pending
/// (each delivered, or failed and reported). Run after each table's
/// record, and again at the next start in case a crash came between.
pub(crate) async fn finish_initial(
    client: &Client,
    addr: &str,
    slot: &str,
) -> Result<bool, PgError> {
    let n = client
        .execute(
            "UPDATE weir.snapshots SET state = 'done', finished_at = now() \
             WHERE slot = $1 AND state = 'running' AND consistent_point IS NOT NULL \
               AND EXISTS (SELECT 1 FROM weir.snapshot_tables WHERE slot = $1 AND request = 0) \
               AND NOT EXISTS (SELECT 1 FROM weir.snapshot_tables \
                 WHERE slot = $1 AND request = 0 AND state = 'pending')",
            &[&slot],
        )
        .await
        .map_err(|e| {
            PgError::sql(
                addr,
                format!("marking the snapshot done in {STATE_TABLE}"),
                e,
            )
        })?;
    Ok(n > 0)
}

/// Raises a table's chunk count when it grew past its cut (the last chunk
/// is open-ended, and would otherwise read all the growth at once).
pub(crate) async fn extend_plan(
    client: &Client,
    addr: &str,
    slot: &str,
    table: &PendingTable,
    chunks: u32,
) -> Result<(), PgError> {
    client
        .execute(
            "UPDATE weir.snapshot_tables SET chunks = $5 \
             WHERE slot = $1 AND request = $2 AND schema_name = $3 AND table_name = $4 \
               AND chunks < $5",
            &[
                &slot,
                &table.request,
                &table.schema,
                &table.name,
                &(chunks as i32),
            ],
        )
        .await
        .map_err(|e| PgError::sql(addr, "extending a snapshot's chunks", e))?;
    Ok(())
}

/// Whether the initial snapshot of `slot` is recorded done.
pub(crate) async fn initial_done(client: &Client, addr: &str, slot: &str) -> Result<bool, PgError> {
    let row = client
        .query_opt("SELECT state FROM weir.snapshots WHERE slot = $1", &[&slot])
        .await
        .map_err(|e| PgError::sql(addr, format!("reading {STATE_TABLE}"), e))?;
    Ok(row.is_none_or(|r| r.get::<_, String>(0) == "done"))
}

/// Gives up on a table: it stays `failed`, with `error`, until requested
/// again.
pub(crate) async fn record_failed(
    client: &Client,
    addr: &str,
    slot: &str,
    table: &PendingTable,
    error: &str,
) -> Result<(), PgError> {
    client
        .execute(
            "UPDATE weir.snapshot_tables SET state = 'failed', error = $5, finished_at = now() \
             WHERE slot = $1 AND request = $2 AND schema_name = $3 AND table_name = $4",
            &[&slot, &table.request, &table.schema, &table.name, &error],
        )
        .await
        .map_err(|e| PgError::sql(addr, "recording a failed snapshot", e))?;
    Ok(())
}

/// Queues an ad-hoc snapshot of `tables` (`schema.table`, or `table` in
/// `public`) for the source's slot, optionally only of the rows matching
/// `filter` (an SQL condition, checked by the server here). Every table
/// must be in the source's publication, as only a published table's
/// changes keep the copy right. Returns the request's number; the
/// running source takes it within a few seconds, or at once when woken
/// ([`super::SnapshotProgress::wake`]).
pub async fn request(
    cfg: &PostgresConfig,
    tables: &[String],
    filter: Option<&str>,
) -> Result<i64, PgError> {
    queue(cfg, tables, filter, None).await
}

/// [`request`], with the keys of a repair (flat, and their width).
async fn queue(
    cfg: &PostgresConfig,
    tables: &[String],
    filter: Option<&str>,
    keys: Option<(Vec<&String>, i32)>,
) -> Result<i64, PgError> {
    if tables.is_empty() {
        return Err(PgError::Config(
            "a snapshot request names no table (give \"tables\": [\"schema.table\", …])".into(),
        ));
    }
    let addr = cfg.address();
    let client = connect_sql(cfg, &addr).await?;
    ensure_state_table(&client, &addr).await?;
    let mut parsed = Vec::with_capacity(tables.len());
    for t in tables {
        // The grammar `source.tables` uses: `"My.Schema"."T"` names one
        // table with capitals and dots; a bare name is in `public`.
        let pattern = weir_core::TablePattern::parse(t)
            .map_err(|e| PgError::Config(format!("cannot snapshot: {e}")))?;
        let Some((schema, name)) = pattern.exact() else {
            return Err(PgError::Config(format!(
                "cannot snapshot {t:?}: a pattern, not one table (name each table to snapshot)"
            )));
        };
        let (schema, name) = (schema.to_owned(), name.to_owned());
        let row = client
            .query_one(
                "SELECT to_regclass(quote_ident($2) || '.' || quote_ident($3)) IS NOT NULL, \
                   EXISTS (SELECT 1 FROM pg_publication_tables \
                   WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
                &[&cfg.publication, &schema, &name],
            )
            .await
            .map_err(|e| PgError::sql(&addr, "checking a table to snapshot", e))?;
        let (exists, published): (bool, bool) = (row.get(0), row.get(1));
        if !exists {
            return Err(PgError::Config(format!(
                "cannot snapshot {schema}.{name}: no such table in database {:?}",
                cfg.dbname
            )));
        }
        if !published || is_state_table(&schema, &name) {
            return Err(PgError::Config(format!(
                "cannot snapshot {schema}.{name}: it is not in publication {:?}, so its later \
                 changes would not reach the sinks (add it to source.tables)",
                cfg.publication
            )));
        }
        if let Some(filter) = filter {
            // Parsed and planned, not run: one statement only, so the
            // condition cannot carry a second one.
            let check = format!(
                "SELECT 1 FROM {}.{} WHERE ({filter})",
                quote_ident(&schema),
                quote_ident(&name)
            );
            client.prepare(&check).await.map_err(|e| {
                PgError::Config(format!(
                    "the snapshot filter {filter:?} is not a valid condition on {schema}.{name}: {}",
                    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
                ))
            })?;
        }
        parsed.push((schema, name));
    }
    let (schemas, names): (Vec<String>, Vec<String>) = parsed.into_iter().unzip();
    let id: i64 = client
        .query_one(
            "WITH id AS (SELECT nextval('weir.snapshot_requests') AS n), \
               ins AS (INSERT INTO weir.snapshot_tables \
                 (slot, request, schema_name, table_name, filter, chunk_pages, keys, key_width, \
                   state) \
                 SELECT $1, id.n, s, t, $4, $5, $6, $7, \
                   CASE WHEN $6::text[] IS NULL THEN 'pending' ELSE 'repair' END \
                 FROM id, unnest($2::text[], $3::text[]) AS x(s, t) \
                 ON CONFLICT DO NOTHING) \
             SELECT n FROM id",
            &[
                &cfg.slot,
                &schemas,
                &names,
                &filter,
                &(cfg.snapshot_chunk_pages as i32),
                &keys.as_ref().map(|k| &k.0),
                &keys.as_ref().map(|k| k.1),
            ],
        )
        .await
        .map_err(|e| PgError::sql(&addr, "queueing the snapshot request", e))?
        .get(0);
    Ok(id)
}

/// Keys kept as one flat array, `width` texts per key.
fn unflatten(flat: Vec<String>, width: Option<i32>) -> Vec<Vec<String>> {
    let width = width.unwrap_or(1).max(1) as usize;
    flat.chunks(width).map(<[String]>::to_vec).collect()
}

/// Most keys in one repair request: they are read as one chunk, held in
/// memory between its marks.
pub const MAX_REPAIR_KEYS: usize = 1000;

/// Queues a repair of `keys` of table `schema.name` for the source's
/// slot: an ad-hoc snapshot of only those rows, read by key while the slot
/// streams. A key with a row goes out as a `read` event, one without as a
/// `delete` (unless the stream changed that key meanwhile), both at the
/// high mark's position, so the sinks' version guards keep newer changes.
/// Each key is the key columns' texts as the source prints them (under
/// the stream's session settings: the reader tells a key without a row
/// by that text); at most [`MAX_REPAIR_KEYS`]. The request's state is
/// `repair`, which a Weir from before repairs does not take (it would
/// snapshot the whole table). Returns the request's number.
pub async fn request_repair(
    cfg: &PostgresConfig,
    schema: &str,
    name: &str,
    keys: &[Vec<String>],
) -> Result<i64, PgError> {
    let table = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let width = keys.first().map_or(1, Vec::len);
    if keys.len() > MAX_REPAIR_KEYS || keys.iter().any(|k| k.len() != width || k.is_empty()) {
        return Err(PgError::Config(format!(
            "a repair of {table} takes 1 to {MAX_REPAIR_KEYS} keys, each of the same number of \
             columns (given {} keys)",
            keys.len()
        )));
    }
    let flat: Vec<&String> = keys.iter().flatten().collect();
    queue(cfg, &[table], None, Some((flat, width as i32))).await
}

/// Where request `id` stands: `done`, `failed` (with the error),
/// `pending` or `repair` (not read yet), one entry per table it names.
pub(crate) async fn request_state(
    client: &Client,
    addr: &str,
    slot: &str,
    id: i64,
) -> Result<Vec<(String, String, Option<String>)>, PgError> {
    let rows = client
        .query(
            "SELECT schema_name || '.' || table_name, state, error FROM weir.snapshot_tables \
             WHERE slot = $1 AND request = $2 ORDER BY 1",
            &[&slot, &id],
        )
        .await
        .map_err(|e| PgError::sql(addr, "reading a snapshot request", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// `schema.table` with both parts quoted: how the captured tables are
/// recorded.
pub(crate) fn quoted_names(tables: &[(String, String)]) -> Vec<String> {
    tables
        .iter()
        .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
        .collect()
}

/// Queues a backfill of every table in `tables` (quoted `schema.table`)
/// that `slot` did not capture before, and records `tables` as captured.
/// A slot without a record (made with snapshots off, or by an older Weir)
/// gets one, without a backfill: what it captured before is unknown.
/// Returns the tables queued.
pub(crate) async fn backfill_new_tables(
    client: &Client,
    addr: &str,
    slot: &str,
    tables: &[(String, String)],
    chunk_pages: u32,
) -> Result<Vec<String>, PgError> {
    let sql = |e| PgError::sql(addr, "recording the tables the slot captures", e);
    let quoted = quoted_names(tables);
    let known: Option<Option<Vec<String>>> = client
        .query_opt(
            "SELECT tables FROM weir.snapshots WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(sql)?
        .map(|r| r.get(0));
    let new: Vec<usize> = match &known {
        Some(Some(known)) => (0..tables.len())
            .filter(|&i| !known.contains(&quoted[i]))
            .collect(),
        _ => Vec::new(),
    };
    if !new.is_empty() {
        let schemas: Vec<&str> = new.iter().map(|&i| tables[i].0.as_str()).collect();
        let names: Vec<&str> = new.iter().map(|&i| tables[i].1.as_str()).collect();
        client
            .execute(
                "INSERT INTO weir.snapshot_tables \
                   (slot, request, schema_name, table_name, chunk_pages) \
                 SELECT $1, nextval('weir.snapshot_requests'), s, t, $4 \
                 FROM unnest($2::text[], $3::text[]) AS x(s, t)",
                &[&slot, &schemas, &names, &(chunk_pages as i32)],
            )
            .await
            .map_err(sql)?;
    }
    if known.as_ref().is_none_or(|k| k.as_ref() != Some(&quoted)) {
        client
            .execute(
                "INSERT INTO weir.snapshots (slot, state, tables, finished_at) \
                 VALUES ($1, 'done', $2, now()) \
                 ON CONFLICT (slot) DO UPDATE SET tables = EXCLUDED.tables",
                &[&slot, &quoted],
            )
            .await
            .map_err(sql)?;
    }
    Ok(new.into_iter().map(|i| quoted[i].clone()).collect())
}
