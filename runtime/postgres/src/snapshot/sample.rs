//! Rows of a live table as `read` events, for a plugin author's test file
//! (`weir plugin record`): read in one read-only transaction over an
//! ordinary connection, so it needs no slot, writes nothing and leaves the
//! capture alone.
//!
//! The events are what the plugin would get for the same rows from a
//! snapshot: the same shape ([`describe`]), the publication's column list
//! and row filter when the table is published, and the same decoders.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use weir_core::{ChangeEvent, Lsn, Op, SnapshotKind, SourceInfo, TxnId};

use super::quote_ident;
use super::read::{Chunk, describe, session_settings};
use crate::setup::connect_sql;
use crate::{PgError, PostgresConfig};

/// Rows read per round trip from a table with a key.
const CHUNK_ROWS: u64 = 1000;

/// Reads at most `limit` rows of `table` (`schema.table`, or `table` in
/// `public`) matching `filter` (an SQL condition), in key order when it
/// has a key, and passes each to `each` as a `read` event. All rows come
/// from one snapshot of the database and share one source position (the
/// WAL position when it was taken), so `weir plugin test` sees them as one
/// transaction. Returns how many were read.
pub async fn sample(
    cfg: &PostgresConfig,
    table: &str,
    limit: u64,
    filter: Option<&str>,
    mut each: impl FnMut(ChangeEvent) -> Result<(), PgError>,
) -> Result<u64, PgError> {
    let pattern = weir_core::TablePattern::parse(table)
        .map_err(|e| PgError::Config(format!("cannot record {table:?}: {e}")))?;
    let Some((schema, name)) = pattern.exact() else {
        return Err(PgError::Config(format!(
            "cannot record {table:?}: a pattern, not one table (name the table)"
        )));
    };
    cfg.validate_tls()?;
    let addr = cfg.address();
    let client = connect_sql(cfg, &addr).await?;
    let sql = |context: &'static str| {
        let addr = addr.clone();
        move |e| PgError::sql(&addr, context, e)
    };
    client
        .batch_execute(&format!(
            "{} BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            session_settings()
        ))
        .await
        .map_err(sql("starting a read-only transaction"))?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, \
               (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                ELSE pg_current_wal_lsn() END)::text, \
               to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL",
            &[&schema, &name],
        )
        .await
        .map_err(sql("reading the server's version and WAL position"))?;
    let (version, at, exists): (i32, Option<String>, bool) = (row.get(0), row.get(1), row.get(2));
    if !exists {
        return Err(PgError::Config(format!(
            "cannot record {schema}.{name}: no such table in database {:?}",
            cfg.dbname
        )));
    }
    let at = at.and_then(|t| t.parse::<Lsn>().ok()).unwrap_or(Lsn::ZERO);
    // What the stream would carry: PostgreSQL 15 publications may list
    // columns and filter rows.
    let published = if version >= 150_000 {
        client
            .query_opt(
                "SELECT attnames::text[], rowfilter FROM pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&cfg.publication, &schema, &name],
            )
            .await
            .map_err(sql("reading the table's publication"))?
    } else {
        None
    };
    let columns: Option<Vec<String>> = published.as_ref().and_then(|r| r.get(0));
    let row_filter: Option<String> = published.as_ref().and_then(|r| r.get(1));
    let filter = match (row_filter, filter) {
        (Some(a), Some(b)) => Some(format!("({a}) AND ({b})")),
        (a, b) => a.or(b.map(str::to_owned)),
    };
    if let Some(filter) = &filter {
        // Parsed and planned, not run: one statement only.
        let check = format!(
            "SELECT 1 FROM {}.{} WHERE ({filter})",
            quote_ident(schema),
            quote_ident(name)
        );
        client.prepare(&check).await.map_err(|e| {
            PgError::Config(format!(
                "--where {filter:?} is not a valid condition on {schema}.{name}: {}",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            ))
        })?;
    }
    let db_key: Arc<str> = Arc::from(format!("{addr}/{}", cfg.dbname));
    let shape = describe(&client, &addr, &db_key, schema, name, columns.as_deref()).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let mut read = 0u64;
    let mut emit = |row, read: &mut u64| {
        let event = ChangeEvent {
            op: Op::Read,
            table: Some(shape.schema.clone()),
            before: None,
            after: Some(row),
            message: None,
            source: SourceInfo {
                commit_lsn: at,
                lsn: at,
                xid: 0,
                commit_time_micros: now,
                seq: u32::try_from(*read).unwrap_or(u32::MAX),
                snapshot: SnapshotKind::Initial,
            },
            txn: TxnId(0),
        };
        *read += 1;
        each(event)
    };
    if shape.has_key() {
        let mut after = None;
        while read < limit {
            let want = (limit - read).min(CHUNK_ROWS);
            let chunk = Chunk::After {
                key: after.take(),
                limit: want,
            };
            let rows = shape
                .read(&client, &addr, &chunk, filter.as_deref())
                .await?;
            let got = rows.rows.len() as u64;
            for row in rows.rows {
                emit(row, &mut read)?;
            }
            if got < want {
                break;
            }
            after = rows.last_key;
        }
    } else {
        // No key to page by: one read of at most `limit` rows.
        let rows = (shape.read(&client, &addr, &Chunk::Any { limit }, filter.as_deref())).await?;
        for row in rows.rows {
            emit(row, &mut read)?;
        }
    }
    // Nothing was written; ending the transaction ends its snapshot.
    let _ = client.batch_execute("COMMIT").await;
    Ok(read)
}
