//! The `weir` command line: `weir run` streams changes, `weir check`
//! validates a configuration without connecting to anything, and
//! `weir plugin …` writes, tests and deploys plugins (see [`weir::cli`]).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use weir::admin::AdminState;
use weir::config::Config;
use weir::pipeline::Pipeline;
use weir::status::{Role, Status};
use weir_postgres::lease::{self, Lease};

/// Weir keeps caches, search indexes, analytics stores and message logs in
/// step with a PostgreSQL database.
///
/// It reads every committed change from the database's log, in commit
/// order, passes it through your plugins (WebAssembly, written in Rust,
/// Python or JavaScript) and applies the result to each sink, acknowledging
/// a change only once every sink holds it.
// No `about` attribute: it would put the crate's description, written for
// its developers, above this.
#[derive(Parser)]
#[command(
    version,
    after_help = "Start here:\n  \
        weir check --config weir.toml      validate a configuration and its plugins\n  \
        weir run --config weir.toml        stream changes to the sinks\n  \
        weir plugin new --lang rust NAME   write a plugin (also python, js)\n\n\
        The README's first command runs a whole pipeline on this machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream committed changes from Postgres through the plugins to the
    /// sinks, until stopped. Needs weir.toml: a [source] database with
    /// wal_level = logical and a user allowed to replicate, the sinks, and
    /// the plugin files.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// Exit (with status 2) when the pipeline halts, instead of staying
        /// up to report the failure on the admin endpoint.
        #[arg(long)]
        exit_on_halt: bool,
    },
    /// Validate a configuration and its plugins. Needs weir.toml and the
    /// plugin files; connects to nothing.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Write, test and deploy plugins: `new`, `inspect` and `test` need
    /// nothing but files; `deploy`, `status`, `shadow`, `promote` and
    /// `discard` need a running Weir's admin endpoint.
    Plugin {
        #[command(subcommand)]
        command: weir::cli::PluginCommand,
    },
    /// Snapshot tables of a running Weir while it streams
    /// (`weir snapshot TABLE…`), or follow snapshots (`weir snapshot
    /// status`). Needs the weir.toml of that Weir, with [admin].
    #[command(args_conflicts_with_subcommands = true)]
    Snapshot {
        #[command(subcommand)]
        command: Option<SnapshotCommand>,
        /// Tables to snapshot, as `schema.table` (or `table`, in public).
        tables: Vec<String>,
        /// Only the rows matching this SQL condition.
        #[arg(long = "where")]
        filter: Option<String>,
        /// Configuration file (its [admin] section names the endpoint).
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Prove that the sinks which hold state (Postgres, ClickHouse, Redis
    /// cache, NATS KV, Sphinx) hold what the source holds: compare every
    /// row, list what differs, and with --repair send it through the
    /// pipeline again. Needs the weir.toml of a running Weir. Exit status 0
    /// when nothing differs, 1 when something does, 2 on an error.
    Verify(weir::cli::verify::VerifyArgs),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// The snapshot's progress per table, from the admin endpoint of the
    /// Weir this configuration runs: live bars in a terminal until it is
    /// delivered, else (or with --once) one line per table.
    Status {
        /// Configuration file (its [admin] section names the endpoint).
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// Print the current progress once and exit.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person; not in files and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        // Plugin calls block, and need no async runtime.
        Command::Plugin { command } => weir::cli::run(command),
        Command::Check { config } => with_runtime(check(config)),
        Command::Verify(args) => with_runtime(weir::cli::verify::run(args)),
        Command::Run {
            config,
            exit_on_halt,
        } => with_runtime(run(config, exit_on_halt)),
        Command::Snapshot {
            command: Some(SnapshotCommand::Status { config, once }),
            ..
        } => with_runtime(weir::cli::snapshot::status(&config, once)),
        Command::Snapshot {
            command: None,
            tables,
            filter,
            config,
        } => {
            if tables.is_empty() {
                eprintln!(
                    "error: name the tables to snapshot (weir snapshot TABLE…), or use `weir snapshot status`"
                );
                return ExitCode::FAILURE;
            }
            with_runtime(weir::cli::snapshot::request(
                &config,
                &tables,
                filter.as_deref(),
            ))
        }
    }
}

/// Runs `task` to completion on a multi-threaded async runtime.
fn with_runtime(task: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(task),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check(config: PathBuf) -> ExitCode {
    match weir::pipeline::check(&config).await {
        Ok(c) => {
            println!(
                "{}: ok ({} transform(s), {} sink(s): {})",
                config.display(),
                c.transforms.len(),
                c.sinks.len(),
                c.sink_names()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf, exit_on_halt: bool) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let status = Arc::new(Status::new(config.sinks.keys().cloned()));
    let deployer = Arc::new(OnceLock::new());
    let admin_stop = CancellationToken::new();
    if let Some(admin) = &config.admin {
        let serves = AdminState {
            status: status.clone(),
            deployer: deployer.clone(),
            source: Some(weir::config::postgres_config(
                &config.source,
                &config.pipeline,
            )),
        };
        match weir::admin::serve(admin, serves, admin_stop.clone()).await {
            Ok(addr) => {
                // A plugin granted the network must not deploy plugins.
                weir_wasm::forbid_address(addr);
                tracing::info!(%addr, "admin endpoint listening");
            }
            Err(e) => {
                eprintln!(
                    "error: admin.listen: cannot listen on {}: {e}",
                    admin.listen
                );
                return ExitCode::FAILURE;
            }
        }
    }
    // Under [ha], only the holder of the leadership lock goes on.
    let lease = match lead(&config, &status, &shutdown).await {
        Ok(Some(lease)) => Some(lease),
        Ok(None) if config.ha.is_some() => {
            admin_stop.cancel();
            return ExitCode::SUCCESS;
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut lease = lease.map(Lease::keep);
    if let Some(held) = &lease {
        status.follow_lease(held.clock());
    }
    let starting = Pipeline::start(config, status.clone(), &deployer);
    let started = match &mut lease {
        None => starting.await,
        Some(held) => tokio::select! {
            started = starting => started,
            reason = held.lost() => {
                tracing::error!(%reason, "lost the leadership lock while starting; exiting");
                admin_stop.cancel();
                return ExitCode::from(3);
            }
        },
    };
    let pipeline = match started {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fence = pipeline.fence_handle();
    let stop = shutdown.child_token();
    let waited = pipeline.wait(stop.clone());
    tokio::pin!(waited);
    let result = match lease {
        None => waited.await,
        Some(mut held) => tokio::select! {
            r = &mut waited => {
                held.release().await;
                r
            }
            reason = held.lost() => {
                // Fencing: a standby may start streaming soon; nothing more
                // may reach a sink from here. Exiting leaves no state behind
                // for a later turn as leader; a supervisor restarts the
                // process as a standby.
                tracing::error!(%reason, "lost the leadership lock: stopping delivery at once and exiting");
                fence.cancel();
                stop.cancel();
                let _ = waited.await;
                admin_stop.cancel();
                return ExitCode::from(3);
            }
        },
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: pipeline halted: {e}");
            if !exit_on_halt {
                // Stay up so the failure can be read from the admin
                // endpoint; nothing past the failing change is acknowledged.
                tracing::error!("halted; waiting for a signal to exit");
                shutdown.cancelled().await;
            }
            ExitCode::from(2)
        }
    };
    admin_stop.cancel();
    code
}

/// Under `[ha]`: stands by until this process holds the leadership lock,
/// then ends any walsender a previous leader left on the slot. `None`
/// without `[ha]`, or when shutdown came first.
async fn lead(
    config: &Config,
    status: &Status,
    shutdown: &CancellationToken,
) -> Result<Option<Lease>, weir_postgres::PgError> {
    let Some(ha) = &config.ha else {
        return Ok(None);
    };
    status.set_role(Role::Standby);
    let pg = weir::config::postgres_config(&config.source, &config.pipeline);
    let key = ha.lock_key.unwrap_or_else(|| lease::lock_key(&pg.slot));
    tracing::info!(key, takeover = ?ha.takeover, "high availability: waiting for the leadership lock");
    let Some(lease) = Lease::acquire(&pg, key, ha.takeover, shutdown).await? else {
        return Ok(None);
    };
    lease.evict_slot_holder(&pg.slot).await?;
    status.set_role(Role::Leader);
    tracing::info!(key, "high availability: leading; this process streams");
    Ok(Some(lease))
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
