//! `weir plugin ...`: tools for plugin authors. `inspect`, `test` and
//! `new` need nothing but files; `record` reads the source database;
//! `deploy` and the rest talk to a running Weir.
//!
//! * `weir plugin inspect PLUGIN.wasm`: what a component is and whether
//!   this Weir runs it ([`inspect`]);
//! * `weir plugin test PLUGIN.wasm --events FILE.jsonl`: runs a plugin over
//!   events written as native JSON envelopes and prints what it made of
//!   each ([`replay`]);
//! * `weir plugin record --config weir.toml --table T`: rows of a live
//!   table as `read` events, to test a plugin on real data ([`record`]);
//! * `weir plugin new --lang rust|python|js NAME`: writes a new plugin
//!   project from the templates built into the binary ([`new`]);
//! * `weir plugin deploy|status|shadow|promote|discard`: deploys plugins
//!   into a running Weir, or tries them beside the running version first,
//!   through its admin endpoint ([`deploy`]).
//!
//! And for operators, `weir snapshot status`: the initial snapshot's
//! progress, from a running Weir's admin endpoint ([`snapshot`]); and
//! `weir verify`: whether the sinks hold what the source holds, and a
//! repair of what differs ([`verify`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use weir_wasm::{DirGrant, Grants, PluginEngine, PluginError};

use crate::config::PluginsConfig;

pub mod deploy;
pub mod inspect;
pub mod new;
pub mod record;
pub mod replay;
pub mod snapshot;
mod templates;
pub mod verify;

/// The `weir plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Describe a plugin component: version, world, contract, imports,
    /// exports and the sandbox grants it needs.
    Inspect {
        /// The component file (.wasm).
        plugin: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin over events from a file and print what it made of each,
    /// one JSON line per event (and per commit-hook call).
    Test {
        /// The component file (.wasm); transform or router is detected.
        plugin: PathBuf,
        /// Events as native JSON envelopes, one per line (what a file sink
        /// writes).
        #[arg(long, value_name = "FILE.jsonl")]
        events: PathBuf,
        /// A configuration pair passed to the plugin, as in the `config`
        /// table of weir.toml; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// The longest one call into the plugin may run.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The most memory one instance may use, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        memory_limit_mib: usize,
        /// Let the plugin open a host directory, read-only, at GUEST (an
        /// absolute path; the host path when omitted), as `sandbox.dirs`
        /// does in weir.toml; repeat for more.
        #[arg(long = "dir", value_name = "HOST[:GUEST]", value_parser = parse_dir)]
        dirs: Vec<DirGrant>,
        /// Let the plugin use the network, as `sandbox.network = true` does.
        #[arg(long)]
        allow_network: bool,
    },
    /// Write rows of a live table as `read` events, one native JSON
    /// envelope per line on stdout: real data for `weir plugin test`.
    /// Needs weir.toml's [source] connection; reads in one read-only
    /// transaction, with no slot.
    Record {
        /// Configuration file; its [source] says which database.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// The table, as `schema.table` (or `table`, in public).
        #[arg(long)]
        table: String,
        /// The most rows to write (in key order when the table has a key).
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Only the rows matching this SQL condition.
        #[arg(long = "where", value_name = "SQL")]
        filter: Option<String>,
    },
    /// Create a new plugin project from Weir's templates.
    New {
        /// The language to write the plugin in.
        #[arg(long, value_enum)]
        lang: Lang,
        /// The plugin's name: lowercase letters, digits and '-', starting
        /// with a letter. Also the name of the project directory.
        name: String,
        /// Where to create the project directory.
        #[arg(long, value_name = "PARENT", default_value = ".")]
        dir: PathBuf,
    },
    /// Deploy a new version of a plugin into a running Weir, and wait until
    /// it runs. Needs the admin endpoint (--admin URL, and
    /// WEIR_ADMIN_TOKEN when it has a token). Exit status 0: it runs;
    /// 1: refused (the endpoint's reason is printed); 2: accepted, not
    /// yet running after --wait.
    Deploy {
        /// The plugin's name in weir.toml (`name`, or the file's stem).
        name: String,
        /// The component file (.wasm).
        file: PathBuf,
        /// The admin endpoint.
        #[command(flatten)]
        admin: deploy::AdminArgs,
        /// Run it as a shadow beside the running version: it gets the
        /// same changes and delivers nothing; see `weir plugin shadow`.
        #[arg(long)]
        shadow: bool,
        /// How long to wait for the new version to take over.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// List the plugins of a running Weir: running version, a version
    /// waiting to take over, failures, deploys and any shadow. Needs the
    /// admin endpoint.
    Status {
        /// The admin endpoint.
        #[command(flatten)]
        admin: deploy::AdminArgs,
        /// Print the endpoint's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// How a plugin's shadow version compares with its running version:
    /// counts of same, changed, dropped and failed answers, and the first
    /// ones that differ. Needs the admin endpoint.
    Shadow {
        /// The plugin's name.
        name: String,
        /// The admin endpoint.
        #[command(flatten)]
        admin: deploy::AdminArgs,
        /// Print the endpoint's JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Make a plugin's shadow version its running version (at the next
    /// transaction boundary), and wait until it runs. Needs the admin
    /// endpoint.
    Promote {
        /// The plugin's name.
        name: String,
        /// The admin endpoint.
        #[command(flatten)]
        admin: deploy::AdminArgs,
        /// How long to wait for it to take over.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Stop and discard a plugin's shadow version. Needs the admin
    /// endpoint.
    Discard {
        /// The plugin's name.
        name: String,
        /// The admin endpoint.
        #[command(flatten)]
        admin: deploy::AdminArgs,
    },
}

/// A language `weir plugin new` has a template for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the Weir plugin SDK.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with ComponentizeJS.
    Js,
}

/// Runs a `weir plugin` subcommand. What it prints on success goes to
/// stdout; an error is printed to stderr, and the exit status says which.
pub fn run(command: PluginCommand) -> ExitCode {
    let result = match command {
        PluginCommand::Inspect { plugin, json } => inspect::run(&plugin, json),
        PluginCommand::Test {
            plugin,
            events,
            config,
            timeout,
            memory_limit_mib,
            dirs,
            allow_network,
        } => replay::run(&replay::Options {
            plugin,
            events,
            config,
            timeout,
            memory_limit_bytes: memory_limit_mib.saturating_mul(1 << 20),
            grants: Grants {
                dirs,
                network: if allow_network {
                    weir_wasm::NetworkGrant::Public
                } else {
                    weir_wasm::NetworkGrant::None
                },
                ..Grants::default()
            },
        }),
        PluginCommand::New { lang, name, dir } => new::run(lang, &name, &dir),
        PluginCommand::Record {
            config,
            table,
            limit,
            filter,
        } => record::run(&config, &table, limit, filter.as_deref()),
        PluginCommand::Deploy {
            name,
            file,
            admin,
            shadow,
            wait,
        } => return deploy::deploy(&admin, &name, &file, shadow, wait),
        PluginCommand::Status { admin, json } => return deploy::status(&admin, json),
        PluginCommand::Shadow { name, admin, json } => return deploy::shadow(&admin, &name, json),
        PluginCommand::Promote { name, admin, wait } => {
            return deploy::promote(&admin, &name, wait);
        }
        PluginCommand::Discard { name, admin } => return deploy::discard(&admin, &name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing left to tell anyone.
        Err(e) if is_broken_pipe(&e) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The plugin engine, keeping compiled code where `weir run` keeps it by
/// default, so that testing a large component again (or running it after
/// testing it) does not compile it again. Without a usable cache directory
/// it compiles in memory only.
fn engine() -> Result<PluginEngine, PluginError> {
    match PluginsConfig::default().cache_dir() {
        Some(dir) => PluginEngine::with_cache_dir(dir).or_else(|e| {
            tracing::debug!("compiling without a cache: {e}");
            PluginEngine::new()
        }),
        None => PluginEngine::new(),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `key=value`, split at the first `=` (values may contain more).
fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// `HOST[:GUEST]`: a host directory, seen read-only at GUEST (or at its
/// own absolute path).
fn parse_dir(text: &str) -> Result<DirGrant, String> {
    let (host, guest) = match text.split_once(':') {
        Some((host, guest)) => (PathBuf::from(host), guest.to_owned()),
        None => {
            let host = std::path::absolute(text).map_err(|e| format!("{text}: {e}"))?;
            let guest = host.to_string_lossy().into_owned();
            (host, guest)
        }
    };
    if !host.is_dir() {
        return Err(format!("{} is not a directory", host.display()));
    }
    if !guest.starts_with('/') {
        return Err(format!(
            "the guest path {guest:?} must be absolute, such as \"/data\""
        ));
    }
    Ok(DirGrant {
        host,
        guest,
        writable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_pair("where=a = b"),
            Ok(("where".to_owned(), "a = b".to_owned()))
        );
        assert_eq!(parse_pair("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_pair("novalue").is_err());
        assert!(parse_pair("=x").is_err());
    }

    #[test]
    fn directories_are_granted_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_str().unwrap();
        let grant = parse_dir(&format!("{host}:/data")).unwrap();
        assert_eq!(
            (grant.host.as_path(), grant.guest.as_str()),
            (dir.path(), "/data")
        );
        assert!(!grant.writable);
        assert_eq!(parse_dir(host).unwrap().guest, host);
        let relative = parse_dir(&format!("{host}:data")).unwrap_err();
        assert!(relative.contains("must be absolute"), "{relative}");
        let missing = parse_dir("/nonexistent/weir:/data").unwrap_err();
        assert!(missing.contains("is not a directory"), "{missing}");
    }
}
