//! The source's half of `weir verify`: rows of a table in key order, each
//! page with the WAL position it reflects, and how far the pipeline has
//! acknowledged, so that a sink is compared only once it has had every
//! change the page saw.
//!
//! ```text
//! page (one statement) ──then──▶ pg_current_wal_insert_lsn() = at
//! slot.confirmed_flush_lsn ≥ at  ⇒  every transaction the page saw is durable in every sink
//! ```
//!
//! Why `at` is read after the page: a transaction the page's statement saw
//! was committed before the statement began, so its commit record lies
//! before any WAL position read later. A transaction committed meanwhile
//! may be in the sink and not in the page; the verifier looks at such
//! keys again, so it is never reported.
//!
//! Reads are plain statements on an ordinary connection: no long
//! transaction holds back vacuum, no slot, nothing written but the
//! heartbeat that moves an idle slot (a non-transactional logical message
//! no sink sees).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use weir_core::{Lsn, Value};

use crate::pgoutput::HEARTBEAT_PREFIX;
use crate::setup::connect_sql;
use crate::snapshot::state::initial_done;
use crate::snapshot::{Chunk, SnapshotTable, describe, request_state, session_settings};
use crate::{PgError, PostgresConfig};

/// How long the pipeline may take to acknowledge a position before the
/// verifier writes a heartbeat (an idle slot otherwise waits for the
/// walsender's next keepalive).
const NUDGE_AFTER: Duration = Duration::from_millis(300);

/// How often the slot is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A connection to the source for verifying.
pub struct VerifySource {
    client: Client,
    addr: String,
    db_key: Arc<str>,
    cfg: PostgresConfig,
    version: i32,
}

/// A published table, ready to read for verifying.
#[derive(Debug, Clone)]
pub struct VerifyTable {
    /// Its shape and reader.
    pub shape: SnapshotTable,
    /// The publication's row filter (PostgreSQL 15+): rows outside it are
    /// not captured, so no sink should hold them.
    pub row_filter: Option<String>,
}

/// Rows read together, and the position they reflect.
#[derive(Debug)]
pub struct Page {
    /// The rows, in key order, one value per column of the table's shape.
    pub rows: Vec<Vec<Value>>,
    /// Each row's key texts.
    pub keys: Vec<Vec<String>>,
    /// Every transaction whose changes the rows reflect ends at or before
    /// this position.
    pub at: Lsn,
}

impl VerifySource {
    /// Connects with the stream's session settings.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Self, PgError> {
        cfg.validate_tls()?;
        // Told apart from the pipeline's own connections in
        // pg_stat_activity (`weir-verify` by default).
        let mut cfg = cfg.clone();
        cfg.application_name.push_str("-verify");
        let addr = cfg.address();
        let client = connect_sql(&cfg, &addr).await?;
        client
            .batch_execute(&session_settings())
            .await
            .map_err(|e| PgError::sql(&addr, "setting the session for verifying", e))?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| PgError::sql(&addr, "reading the server's version", e))?
            .get(0);
        Ok(VerifySource {
            db_key: Arc::from(format!("{addr}/{}", cfg.dbname)),
            client,
            addr,
            cfg,
            version,
        })
    }

    /// The tables of the publication, as `(schema, table)`, in name order.
    pub async fn published(&self) -> Result<Vec<(String, String)>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
                 WHERE pubname = $1 ORDER BY 1, 2",
                &[&self.cfg.publication],
            )
            .await
            .map_err(|e| PgError::sql(&self.addr, "listing the publication's tables", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .filter(|(s, t): &(String, String)| !crate::snapshot::is_state_table(s, t))
            .collect())
    }

    /// `schema.name` as the stream delivers it: the publication's columns
    /// and row filter. Fails when it is not published.
    pub async fn table(&self, schema: &str, name: &str) -> Result<VerifyTable, PgError> {
        let sql = if self.version >= 150_000 {
            "SELECT attnames::text[], rowfilter FROM pg_publication_tables \
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3"
        } else {
            "SELECT NULL::text[], NULL::text FROM pg_publication_tables \
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3"
        };
        let published = self
            .client
            .query_opt(sql, &[&self.cfg.publication, &schema, &name])
            .await
            .map_err(|e| PgError::sql(&self.addr, "reading a table's publication", e))?
            .ok_or_else(|| {
                PgError::Config(format!(
                    "cannot verify {schema}.{name}: it is not in publication {:?}, so no sink \
                     gets its changes",
                    self.cfg.publication
                ))
            })?;
        let columns: Option<Vec<String>> = published.get(0);
        let shape = describe(
            &self.client,
            &self.addr,
            &self.db_key,
            schema,
            name,
            columns.as_deref(),
        )
        .await?;
        Ok(VerifyTable {
            shape,
            row_filter: published.get(1),
        })
    }

    /// At most `limit` rows after `after` in key order (from the start
    /// when `None`).
    pub async fn page(
        &self,
        table: &VerifyTable,
        after: Option<Vec<String>>,
        limit: u64,
    ) -> Result<Page, PgError> {
        self.read(table, &Chunk::After { key: after, limit }).await
    }

    /// The rows of these keys that exist (a key without a row is not
    /// there), in key order.
    pub async fn lookup(
        &self,
        table: &VerifyTable,
        keys: Vec<Vec<String>>,
    ) -> Result<Page, PgError> {
        self.read(table, &Chunk::Keys(keys)).await
    }

    async fn read(&self, table: &VerifyTable, chunk: &Chunk) -> Result<Page, PgError> {
        let rows = table
            .shape
            .read(&self.client, &self.addr, chunk, table.row_filter.as_deref())
            .await?;
        let at = self.position().await?;
        Ok(Page {
            rows: rows.rows,
            keys: rows.keys,
            at,
        })
    }

    /// The server's WAL position now (on a standby, what it replayed).
    pub async fn position(&self) -> Result<Lsn, PgError> {
        let text: Option<String> = self
            .client
            .query_one(
                "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_insert_lsn() END)::text",
                &[],
            )
            .await
            .map_err(|e| PgError::sql(&self.addr, "reading the WAL position", e))?
            .get(0);
        // Zero would compare the sinks without waiting for anything.
        text.as_deref()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| PgError::Protocol {
                addr: self.addr.clone(),
                message: format!("the server gave no WAL position ({text:?})"),
            })
    }

    /// How far the pipeline has acknowledged: the slot's confirmed flush
    /// position. Fails when the slot does not exist.
    pub async fn acknowledged(&self) -> Result<Lsn, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.cfg.slot],
            )
            .await
            .map_err(|e| PgError::sql(&self.addr, "reading the slot", e))?
            .ok_or_else(|| {
                PgError::Config(format!(
                    "slot {:?} does not exist: is Weir running with this configuration?",
                    self.cfg.slot
                ))
            })?;
        let text: Option<String> = row.get(0);
        text.as_deref().and_then(|t| t.parse().ok()).ok_or_else(|| {
            PgError::Config(format!(
                "slot {:?} has no confirmed position ({text:?}): it is not a logical slot \
                     a Weir streams from",
                self.cfg.slot
            ))
        })
    }

    /// Waits until the pipeline has acknowledged `at`, nudging an idle
    /// slot with a heartbeat; fails after `timeout` naming how far it got.
    pub async fn wait_acknowledged(&self, at: Lsn, timeout: Duration) -> Result<Lsn, PgError> {
        let started = Instant::now();
        let mut nudged = false;
        loop {
            let acked = self.acknowledged().await?;
            if acked >= at {
                return Ok(acked);
            }
            if started.elapsed() >= timeout {
                return Err(PgError::Config(format!(
                    "the pipeline has not acknowledged {at} within {timeout:?} (slot {:?} is at \
                     {acked}): is Weir running and keeping up?",
                    self.cfg.slot
                )));
            }
            if !nudged && started.elapsed() >= NUDGE_AFTER {
                nudged = true;
                // Gives an idle stream a position past `at` to acknowledge.
                // Best effort: a standby cannot write one, and the walsender's
                // next keepalive does the same, later.
                if let Err(e) = self
                    .client
                    .execute(
                        "SELECT pg_logical_emit_message(false, $1, '')",
                        &[&HEARTBEAT_PREFIX],
                    )
                    .await
                {
                    tracing::debug!(error = %e, "verify: could not write a heartbeat; waiting for the walsender's keepalive");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Each key (its columns' texts, as a sink gave them) as the source
    /// prints it: cast to the key columns' types and printed back, so
    /// `true` becomes `t` and `2024-01-01T00:00:00Z` the server's
    /// timestamp text. `None` for a key the types refuse (`abc` for an
    /// integer key): no row of the table can have it.
    pub async fn canonical(
        &self,
        table: &VerifyTable,
        keys: &[Vec<String>],
    ) -> Result<Vec<Option<Vec<String>>>, PgError> {
        let types = table.shape.key_types();
        let width = types.len();
        let sql = format!(
            "SELECT {} FROM unnest({}) AS u({})",
            (0..width)
                .map(|i| format!("pg_catalog.format('%s', u.k{i}::{})", types[i]))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=width)
                .map(|i| format!("${i}::text[]"))
                .collect::<Vec<_>>()
                .join(", "),
            (0..width)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let well_formed = |k: &Vec<String>| k.len() == width;
        if keys.iter().all(well_formed)
            && let Ok(printed) = self.print(&sql, width, keys).await
        {
            return Ok(printed.into_iter().map(Some).collect());
        }
        // Some key is refused: find which, one at a time.
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if !well_formed(key) {
                out.push(None);
                continue;
            }
            match self.print(&sql, width, std::slice::from_ref(key)).await {
                Ok(printed) => out.push(printed.into_iter().next()),
                Err(e) if e.as_db_error().is_some() => out.push(None),
                Err(e) => {
                    return Err(PgError::sql(&self.addr, "reading keys a sink listed", e));
                }
            }
        }
        Ok(out)
    }

    /// Runs [`Self::canonical`]'s statement over `keys`.
    async fn print(
        &self,
        sql: &str,
        width: usize,
        keys: &[Vec<String>],
    ) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
        let columns: Vec<Vec<&str>> = (0..width)
            .map(|c| keys.iter().map(|k| k[c].as_str()).collect())
            .collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = self.client.query(sql, &params).await?;
        Ok(rows
            .iter()
            .map(|r| (0..width).map(|i| r.get::<_, String>(i)).collect())
            .collect())
    }

    /// Whether the slot's initial snapshot is still being copied (its rows
    /// are not all in the sinks yet, and the slot is not acknowledged
    /// past it until they are).
    pub async fn initial_snapshot_running(&self) -> Result<bool, PgError> {
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass('weir.snapshots') IS NOT NULL", &[])
            .await
            .map_err(|e| PgError::sql(&self.addr, "looking for weir.snapshots", e))?
            .get(0);
        Ok(exists && !initial_done(&self.client, &self.addr, &self.cfg.slot).await?)
    }

    /// Where repair (or snapshot) request `id` stands, per table: `done`,
    /// `failed` with its error, or not read yet.
    pub async fn request_state(
        &self,
        id: i64,
    ) -> Result<Vec<(String, String, Option<String>)>, PgError> {
        request_state(&self.client, &self.addr, &self.cfg.slot, id).await
    }
}
