//! Checks and creates what logical replication needs, over ordinary SQL
//! (tokio-postgres) plus one short replication connection.
//!
//! Order matters for the messages an operator sees: server settings and
//! role first (nothing else can work without them), then tables, then the
//! publication, then the slot. Nothing here reads changes from the slot
//! or moves its position: preparing must never acknowledge anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use weir_core::Lsn;

use crate::auth::{AuthGuard, AuthPolicy};
use crate::config::{OnSlotLost, PostgresConfig, SnapshotMode};
use crate::conn::{CONNECT_TIMEOUT, ReplConn, quote_ident};
use crate::error::PgError;
use crate::snapshot::{self, InitialSnapshot};
use crate::tls;
use crate::types::{self, Catalog};

/// What preparation learned.
pub(crate) struct Prepared {
    /// The slot's `confirmed_flush_lsn`.
    pub(crate) start_lsn: Lsn,
    /// Identifies the database across connections: system id and name.
    pub(crate) db_key: Arc<str>,
    /// The initial snapshot to take before streaming, for a new slot.
    pub(crate) initial: Option<InitialSnapshot>,
    /// An interrupted initial snapshot continues while streaming.
    pub(crate) resuming: bool,
    /// In binary mode, the server's `server_version_num` and the forms of
    /// the published columns' non-built-in types.
    pub(crate) binary: Option<(u32, Catalog)>,
}

/// How often the slot is polled while another process holds it.
const SLOT_POLL: Duration = Duration::from_millis(200);

pub(crate) async fn prepare(cfg: &PostgresConfig) -> Result<Prepared, PgError> {
    cfg.validate()?;
    let addr = cfg.address();
    let client = connect_sql(cfg, &addr).await?;
    let result = prepare_with(cfg, &addr, &client).await;
    drop(client);
    result
}

/// Opens an ordinary SQL connection (not a replication one) to the server
/// `cfg` names, with the same TLS (`sslmode`, `sslrootcert`) and
/// authentication rules (`require_auth`, cleartext passwords) as the
/// source's own connections, for components that write to Postgres (the
/// `postgres` sink). Only the connection settings of `cfg` are used; its
/// capture settings (slot, publication, tables) are ignored. The
/// connection's task runs on the current Tokio runtime and ends when the
/// client is dropped.
pub async fn connect(cfg: &PostgresConfig) -> Result<Client, PgError> {
    cfg.validate_tls()?;
    connect_sql(cfg, &cfg.address()).await
}

pub(crate) async fn connect_sql(cfg: &PostgresConfig, addr: &str) -> Result<Client, PgError> {
    let context = "connecting";
    let opened = async {
        let stream = tls::open(cfg, addr, context).await?;
        // tokio-postgres would answer a cleartext request on any stream,
        // and takes AuthenticationOk whenever it comes.
        let policy = AuthPolicy::new(cfg, stream.is_private());
        cfg.sql_config()
            .connect_raw(AuthGuard::new(stream, policy), NoTls)
            .await
            .map_err(|e| auth_or_sql(cfg, addr, context, e))
    };
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, opened)
        .await
        .map_err(|_| PgError::Connection {
            addr: addr.to_owned(),
            context: context.into(),
            message: format!("no answer within {CONNECT_TIMEOUT:?}"),
        })??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres setup connection ended: {e}");
        }
    });
    Ok(client)
}

/// Login failures (SQLSTATE class 28) become [`PgError::Auth`].
fn auth_or_sql(cfg: &PostgresConfig, addr: &str, ctx: &str, e: tokio_postgres::Error) -> PgError {
    if let Some(message) = AuthGuard::<()>::refusal(&e) {
        return PgError::Auth {
            addr: addr.to_owned(),
            user: cfg.user.clone(),
            message,
        };
    }
    match PgError::sql(addr, ctx, e) {
        PgError::Server { error, .. } if error.code.starts_with("28") => PgError::Auth {
            addr: addr.to_owned(),
            user: cfg.user.clone(),
            message: error.to_string(),
        },
        other => other,
    }
}

async fn prepare_with(
    cfg: &PostgresConfig,
    addr: &str,
    client: &Client,
) -> Result<Prepared, PgError> {
    let sql = |ctx: &'static str| move |e| PgError::sql(addr, ctx, e);

    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(sql("reading wal_level"))?
        .get(0);
    if wal_level != "logical" {
        return Err(PgError::WalLevel {
            addr: addr.to_owned(),
            actual: wal_level,
        });
    }

    let row = client
        .query_one(
            "SELECT current_user::text, rolreplication, rolsuper, current_database()::text \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(sql("reading the role's attributes"))?;
    let role: String = row.get(0);
    let (replication, superuser): (bool, bool) = (row.get(1), row.get(2));
    let dbname: String = row.get(3);
    if !replication && !superuser {
        return Err(PgError::NotReplicationRole {
            addr: addr.to_owned(),
            role,
        });
    }

    let mut tables = cfg.tables.clone();
    if !cfg.table_patterns.is_empty() {
        let all = client
            .query(
                "SELECT ns.nspname, c.relname FROM pg_class c \
                 JOIN pg_namespace ns ON ns.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                   AND ns.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND ns.nspname NOT LIKE 'pg\\_%' \
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(sql("listing the tables that patterns may match"))?;
        for pattern in &cfg.table_patterns {
            let matched: Vec<(String, String)> = all
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .filter(|(s, t)| pattern.matches(s, t))
                .collect();
            if matched.is_empty() {
                return Err(PgError::NoTableMatches {
                    addr: addr.to_owned(),
                    dbname: dbname.clone(),
                    pattern: pattern.as_str().to_owned(),
                });
            }
            tracing::info!(pattern = %pattern.as_str(), tables = matched.len(), "a table pattern matched");
            for t in matched {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
    }
    let (schemas, names): (Vec<&str>, Vec<&str>) =
        tables.iter().map(|(s, t)| (s.as_str(), t.as_str())).unzip();
    let missing = client
        .query(
            "SELECT x.s, x.t FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(s, t, n) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_class c \
               JOIN pg_namespace ns ON ns.oid = c.relnamespace \
               WHERE ns.nspname = x.s AND c.relname = x.t AND c.relkind IN ('r', 'p')) \
             ORDER BY x.n",
            &[&schemas, &names],
        )
        .await
        .map_err(sql("checking the tables to capture"))?;
    if !missing.is_empty() {
        return Err(PgError::MissingTables {
            addr: addr.to_owned(),
            dbname,
            tables: missing
                .iter()
                .map(|r| qualified(r.get(0), r.get(1)))
                .collect(),
        });
    }

    ensure_publication(cfg, addr, &dbname, client, &schemas, &names).await?;

    // Binary mode decodes every published column's type, or refuses to
    // start, naming the first it cannot.
    let binary = if cfg.binary {
        let server: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(sql("reading the server version"))?
            .get(0);
        let server = u32::try_from(server).unwrap_or(0);
        Some((
            server,
            types::published_catalog(client, addr, server, &cfg.publication).await?,
        ))
    } else {
        None
    };

    // An initial snapshot interrupted before it was delivered resumes when
    // its chunks were planned (and the server can stream watermarks): the
    // slot has not been acknowledged past its consistent point, so the
    // stream from there plus watermark chunks for the rest give what the
    // exported snapshot would have. Otherwise the slot is made again and
    // the snapshot starts over.
    let wants_snapshot = cfg.snapshot != SnapshotMode::Never && cfg.create_slot;
    let row = slot_row(client, addr, &cfg.slot).await?;
    let mut slot_exists = row.is_some();
    // Invalidated: never resumed from, which would silently skip
    // everything the server removed; made again only when asked to.
    if row.is_some_and(|r| r.wal_status.as_deref() == Some("lost")) {
        if cfg.on_slot_lost != OnSlotLost::Resnapshot || !wants_snapshot {
            return Err(PgError::SlotLost {
                addr: addr.to_owned(),
                slot: cfg.slot.clone(),
            });
        }
        tracing::warn!(slot = %cfg.slot, "the server invalidated the slot (wal_status = lost); on_slot_lost = \"resnapshot\": making it again and taking a fresh snapshot");
        snapshot::drop_slot_and_state(client, addr, &cfg.slot).await?;
        slot_exists = false;
    }
    let mut resuming = false;
    if wants_snapshot && slot_exists {
        let server: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(sql("reading the server version"))?
            .get(0);
        match snapshot::initial_state(client, addr, &cfg.slot).await? {
            snapshot::InitialState::Interrupted { resumable: true } if server >= 140_000 => {
                tracing::warn!(slot = %cfg.slot, "the initial snapshot was interrupted; resuming with the chunks not yet delivered");
                resuming = true;
            }
            snapshot::InitialState::Interrupted { .. } => {
                tracing::warn!(slot = %cfg.slot, "the initial snapshot was interrupted before its chunks were planned; dropping the slot and starting it over");
                snapshot::drop_slot_and_state(client, addr, &cfg.slot).await?;
                slot_exists = false;
            }
            snapshot::InitialState::Settled => {}
        }
    }
    let captured: Vec<(String, String)> = tables
        .iter()
        .filter(|(s, t)| !snapshot::is_state_table(s, t))
        .cloned()
        .collect();
    if wants_snapshot && !slot_exists {
        // Recorded before the slot exists: a crash right after creating it
        // leaves a slot marked unfinished, never one that looks done.
        snapshot::ensure_state_table(client, addr).await?;
        snapshot::record_started(
            client,
            addr,
            &cfg.slot,
            None,
            &snapshot::quoted_names(&captured),
        )
        .await?;
    } else if cfg.snapshot != SnapshotMode::Never && slot_exists && !cfg.all_tables {
        // A table added to the capture since the slot last ran: its rows
        // are copied while the slot streams. A role that may not create
        // the state tables (a slot made by someone else) streams without.
        match snapshot::ensure_state_table(client, addr).await {
            Err(e) if e.sqlstate() == Some("42501") => {
                tracing::warn!(slot = %cfg.slot, error = %e, "tables added to the capture will not be backfilled");
            }
            Err(e) => return Err(e),
            Ok(()) => {
                let added = snapshot::backfill_new_tables(
                    client,
                    addr,
                    &cfg.slot,
                    &captured,
                    cfg.snapshot_chunk_pages,
                )
                .await?;
                if !added.is_empty() {
                    tracing::info!(slot = %cfg.slot, tables = %added.join(", "), "tables added to the capture; backfilling their rows while streaming");
                }
            }
        }
    }

    // The replication connection proves the role can open one (pg_hba,
    // max_wal_senders) before run() needs it, and creates the slot.
    let mut repl = ReplConn::connect(cfg).await?;
    let outcome = async {
        let system = repl.identify_system().await?;
        let db_key: Arc<str> = format!(
            "{}/{}",
            system.system_id,
            system.dbname.as_deref().unwrap_or(&dbname)
        )
        .into();
        let mut exported = None;
        if !slot_exists {
            if !cfg.create_slot {
                return Err(PgError::SlotMissing {
                    addr: addr.to_owned(),
                    slot: cfg.slot.clone(),
                });
            }
            let created = if wants_snapshot {
                repl.create_logical_slot_exporting(&cfg.slot)
                    .await
                    .map(|(lsn, name)| (lsn, Some(name)))
            } else {
                repl.create_logical_slot(&cfg.slot)
                    .await
                    .map(|lsn| (lsn, None))
            };
            match created {
                Ok((lsn, name)) => {
                    tracing::info!(slot = %cfg.slot, %lsn, "created replication slot");
                    exported = name.map(|n| (lsn, n));
                }
                // Someone created it between the check and now: use theirs.
                Err(e) if e.sqlstate() == Some("42710") => {}
                Err(e) => return Err(e),
            }
        }
        Ok((db_key, exported))
    }
    .await;
    let (db_key, exported) = match outcome {
        Ok(v) => v,
        Err(e) => {
            repl.close().await;
            return Err(e);
        }
    };
    let initial = match exported {
        // The connection that exported the snapshot stays open, idle,
        // until the snapshot's workers have imported it.
        Some((consistent_point, name)) => {
            snapshot::record_started(
                client,
                addr,
                &cfg.slot,
                Some(consistent_point),
                &snapshot::quoted_names(&captured),
            )
            .await?;
            Some(InitialSnapshot::new(
                cfg.clone(),
                repl,
                name,
                consistent_point,
                db_key.clone(),
            ))
        }
        None => {
            repl.close().await;
            None
        }
    };

    let start_lsn = wait_for_slot(cfg, addr, &dbname, client).await?;
    Ok(Prepared {
        start_lsn,
        db_key,
        initial,
        resuming,
        binary,
    })
}

fn qualified(s: &str, t: &str) -> String {
    format!("{s}.{t}")
}

async fn ensure_publication(
    cfg: &PostgresConfig,
    addr: &str,
    dbname: &str,
    client: &Client,
    schemas: &[&str],
    names: &[&str],
) -> Result<(), PgError> {
    let sql = |ctx: &'static str| move |e| PgError::sql(addr, ctx, e);
    let pub_ident = quote_ident(&cfg.publication);
    let table_list = |tables: &mut dyn Iterator<Item = (&str, &str)>| {
        tables
            .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let row = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, \
               coalesce((to_jsonb(p) ->> 'pubviaroot')::bool, false) \
             FROM pg_publication p WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(sql("reading the publication"))?;
    let Some(row) = row else {
        if !cfg.create_publication {
            return Err(PgError::PublicationMissing {
                addr: addr.to_owned(),
                dbname: dbname.to_owned(),
                publication: cfg.publication.clone(),
            });
        }
        let mut stmt = if cfg.all_tables {
            format!("CREATE PUBLICATION {pub_ident} FOR ALL TABLES")
        } else {
            let list = table_list(&mut schemas.iter().copied().zip(names.iter().copied()));
            format!("CREATE PUBLICATION {pub_ident} FOR TABLE {list}")
        };
        if cfg.publish_via_partition_root {
            stmt.push_str(" WITH (publish_via_partition_root = true)");
        }
        match client.batch_execute(&stmt).await {
            Ok(()) => {
                tracing::info!(publication = %cfg.publication, "created publication");
                return Ok(());
            }
            // Created concurrently by someone else: check theirs below.
            Err(e) if e.code().map(|c| c.code()) == Some("42710") => {}
            Err(e) => return Err(PgError::sql(addr, "creating the publication", e)),
        }
        return Box::pin(ensure_publication(
            cfg, addr, dbname, client, schemas, names,
        ))
        .await;
    };
    let all: bool = row.get(0);
    let ops: [(&str, bool); 4] = [
        ("insert", row.get(1)),
        ("update", row.get(2)),
        ("delete", row.get(3)),
        ("truncate", row.get(4)),
    ];
    let via_root: bool = row.get(5);
    if via_root != cfg.publish_via_partition_root {
        if !cfg.create_publication {
            return Err(PgError::Config(format!(
                "postgres at {addr}: publication {:?} has publish_via_partition_root = {via_root}, \
                 but source.publish_via_partition_root is {}; change one of them \
                 (or set create_publication = true to let Weir change the publication)",
                cfg.publication, cfg.publish_via_partition_root
            )));
        }
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {pub_ident} SET (publish_via_partition_root = {})",
                cfg.publish_via_partition_root
            ))
            .await
            .map_err(sql("setting the publication's publish_via_partition_root"))?;
        tracing::info!(publication = %cfg.publication, via_root = cfg.publish_via_partition_root, "changed publish_via_partition_root");
    }
    for (op, on) in ops {
        if !on {
            tracing::warn!(
                publication = %cfg.publication,
                "publication does not publish {op}; those changes will not be captured"
            );
        }
    }
    if all {
        return Ok(());
    }
    if cfg.all_tables {
        return Err(PgError::PublicationNotAllTables {
            addr: addr.to_owned(),
            dbname: dbname.to_owned(),
            publication: cfg.publication.clone(),
        });
    }
    // pg_publication_tables covers FOR TABLES IN SCHEMA and lists leaf
    // partitions; pg_publication_rel covers a partitioned parent itself.
    let lacking = client
        .query(
            "SELECT x.s, x.t FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(s, t, n) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_publication_tables pt \
               WHERE pt.pubname = $1 AND pt.schemaname = x.s AND pt.tablename = x.t) \
             AND NOT EXISTS (SELECT 1 FROM pg_publication p \
               JOIN pg_publication_rel pr ON pr.prpubid = p.oid \
               JOIN pg_class c ON c.oid = pr.prrelid \
               JOIN pg_namespace ns ON ns.oid = c.relnamespace \
               WHERE p.pubname = $1 AND ns.nspname = x.s AND c.relname = x.t) \
             ORDER BY x.n",
            &[&cfg.publication, &schemas, &names],
        )
        .await
        .map_err(sql("reading the publication's tables"))?;
    if lacking.is_empty() {
        return Ok(());
    }
    let lacking: Vec<(String, String)> = lacking.iter().map(|r| (r.get(0), r.get(1))).collect();
    if !cfg.create_publication {
        return Err(PgError::PublicationLacksTables {
            addr: addr.to_owned(),
            dbname: dbname.to_owned(),
            publication: cfg.publication.clone(),
            tables: lacking.iter().map(|(s, t)| qualified(s, t)).collect(),
        });
    }
    let list = table_list(&mut lacking.iter().map(|(s, t)| (s.as_str(), t.as_str())));
    client
        .batch_execute(&format!("ALTER PUBLICATION {pub_ident} ADD TABLE {list}"))
        .await
        .map_err(|e| PgError::sql(addr, format!("adding {list} to the publication"), e))?;
    tracing::info!(publication = %cfg.publication, tables = %list, "added tables to publication");
    Ok(())
}

struct SlotRow {
    slot_type: String,
    plugin: Option<String>,
    database: Option<String>,
    active_pid: Option<i32>,
    confirmed_flush: Option<String>,
    /// `wal_status` (PostgreSQL 13+).
    wal_status: Option<String>,
}

async fn slot_row(client: &Client, addr: &str, slot: &str) -> Result<Option<SlotRow>, PgError> {
    let row = client
        .query_opt(
            "SELECT slot_type::text, plugin::text, database::text, \
               CASE WHEN active THEN coalesce(active_pid, 0) END, confirmed_flush_lsn::text, \
               to_jsonb(s) ->> 'wal_status' \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| PgError::sql(addr, format!("reading replication slot {slot:?}"), e))?;
    Ok(row.map(|r| SlotRow {
        slot_type: r.get(0),
        plugin: r.get(1),
        database: r.get(2),
        active_pid: r.get(3),
        confirmed_flush: r.get(4),
        wal_status: r.get(5),
    }))
}

/// Checks the slot fits and waits (up to `slot_wait`) for it to be free;
/// returns its confirmed flush position.
async fn wait_for_slot(
    cfg: &PostgresConfig,
    addr: &str,
    dbname: &str,
    client: &Client,
) -> Result<Lsn, PgError> {
    let started = Instant::now();
    let mismatch = |reason: String| PgError::SlotMismatch {
        addr: addr.to_owned(),
        slot: cfg.slot.clone(),
        reason,
    };
    loop {
        let Some(row) = slot_row(client, addr, &cfg.slot).await? else {
            return Err(PgError::SlotMissing {
                addr: addr.to_owned(),
                slot: cfg.slot.clone(),
            });
        };
        if row.slot_type != "logical" {
            return Err(mismatch(format!(
                "it is a {} slot, not a logical one",
                row.slot_type
            )));
        }
        if row.plugin.as_deref() != Some("pgoutput") {
            return Err(mismatch(format!(
                "it uses output plugin {:?}, not pgoutput; drop it or choose another slot name",
                row.plugin.unwrap_or_default()
            )));
        }
        if row.database.as_deref() != Some(dbname) {
            return Err(mismatch(format!(
                "it belongs to database {:?}, not {dbname:?}",
                row.database.unwrap_or_default()
            )));
        }
        match row.active_pid {
            None => {
                let text = row.confirmed_flush.ok_or_else(|| {
                    mismatch("it has no confirmed_flush_lsn (it was never consistent)".into())
                })?;
                return text
                    .parse()
                    .map_err(|e| mismatch(format!("unreadable confirmed_flush_lsn: {e}")));
            }
            Some(pid) => {
                let waited = started.elapsed();
                if waited >= cfg.slot_wait {
                    return Err(PgError::SlotInUse {
                        addr: addr.to_owned(),
                        slot: cfg.slot.clone(),
                        pid: (pid != 0).then_some(pid),
                        waited,
                    });
                }
                tracing::info!(slot = %cfg.slot, pid, "replication slot is in use; waiting");
                tokio::time::sleep(SLOT_POLL.min(cfg.slot_wait - waited)).await;
            }
        }
    }
}
