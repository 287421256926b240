//! `weir.toml`: parsing, `${ENV}` interpolation and validation.
//!
//! Loading is pure (no network): it turns text into a [`Config`] or a list
//! of every problem found, each with the path of the offending field
//! (`sinks.orders_kafka.brokers: ...`). `weir check` is exactly this step.
//! Field doc comments here are the user documentation of the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use weir_codec::TemplateUse;
use weir_core::TablePattern;
use weir_postgres::PostgresConfig;
use weir_sinks::SinkSpec;
use weir_wasm::{NetworkGrant, NetworkRule};

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Postgres database to capture.
    pub source: SourceConfig,
    /// Transform plugins, applied in order to every change.
    #[serde(default)]
    pub transforms: Vec<PluginConfig>,
    /// A router plugin deciding each change's sinks. Exclusive with `routes`.
    pub router: Option<PluginConfig>,
    /// Routing rules, used when there is no router plugin. Every rule that
    /// matches a change sends it to the rule's sinks. Without rules (and
    /// without a router) every change goes to every sink.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named sinks, as written: `[sinks.NAME]` with a `type` (see
    /// `weir_sinks::SINK_TYPES`). Read into [`sinks`](Self::sinks) and
    /// emptied, so that no secret in them stays behind.
    #[serde(rename = "sinks")]
    sink_sections: BTreeMap<String, toml::Table>,
    /// The configured sink names, whether or not their sections are valid.
    #[serde(skip)]
    sink_names: Vec<String>,
    /// Named sinks, each validated by its own type.
    #[serde(skip)]
    pub sinks: BTreeMap<String, Box<dyn SinkSpec>>,
    /// Tuning of the pipeline between source and sinks.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The HTTP admin endpoint (health, status, metrics, plugin deploys).
    pub admin: Option<AdminConfig>,
    /// Where changes go that a plugin with `on_failure = "dead-letter"`
    /// failed on.
    pub dead_letter: Option<DeadLetterConfig>,
    /// How plugins are kept: hot reload and the compiled-code cache.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// High availability: several processes with this configuration, one
    /// streaming and the others standing by.
    pub ha: Option<HaConfig>,
    /// Continuous verification: every `interval`, compare the sinks that
    /// hold state with the source (what `weir verify` does once).
    pub verify: Option<VerifyConfig>,
}

/// `[verify]`: continuous verification of the sinks that hold state.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Time from the start of one pass to the start of the next.
    #[serde(deserialize_with = "weir_core::duration::deserialize")]
    pub interval: Duration,
    /// Most source rows read per second, so that verifying never loads
    /// the source more than this. Unset: as fast as it answers.
    pub rows_per_second: Option<u64>,
    /// Send what differs through the pipeline again, then compare it again.
    #[serde(default)]
    pub repair: bool,
    /// Only these tables (patterns as in `source.tables`); every published
    /// table when empty.
    #[serde(default)]
    pub tables: Vec<weir_core::TablePattern>,
    /// Only these sinks; every sink that holds state when empty.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Rows per chunk read from the source.
    #[serde(default = "default_verify_chunk_rows")]
    pub chunk_rows: u64,
}

fn default_verify_chunk_rows() -> u64 {
    5000
}

/// `[ha]`: leadership by an advisory lock on the source database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// How soon a standby streams after the leader died or was cut off.
    #[serde(
        default = "default_takeover",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub takeover: Duration,
    /// The advisory lock's key; by default one derived from the slot name.
    pub lock_key: Option<i64>,
}

fn default_takeover() -> Duration {
    Duration::from_secs(10)
}

/// The dead-letter queue: a sink (and topic) of its own. It receives no
/// other changes unless a route names it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The sink that receives dead letters.
    pub sink: String,
    /// Topic within that sink; the sink's default when absent.
    pub topic: Option<String>,
}

/// How plugins are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Watch each plugin's file and deploy a new version when it changes
    /// (write the new build next to it and rename it over the old one).
    #[serde(default = "yes")]
    pub watch: bool,
    /// How often plugin files are checked for changes.
    #[serde(
        default = "default_poll_interval",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub poll_interval: Duration,
    /// Where compiled plugin code is kept across restarts and reloads.
    /// Defaults to `$XDG_CACHE_HOME/weir/compiled` (or
    /// `~/.cache/weir/compiled`); set to `""` to keep it in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The most compiled code the cache keeps, in MiB; the least recently
    /// used files are deleted past it.
    #[serde(default = "default_cache_max_mib")]
    pub cache_max_mib: u64,
}

fn default_cache_max_mib() -> u64 {
    1024
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            watch: true,
            poll_interval: default_poll_interval(),
            cache_dir: None,
            cache_max_mib: default_cache_max_mib(),
        }
    }
}

impl PluginsConfig {
    /// The size cap of the compiled-code cache, in bytes.
    pub fn cache_max_bytes(&self) -> u64 {
        self.cache_max_mib.saturating_mul(1 << 20)
    }

    /// The directory compiled plugin code is kept in, if any.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|d| d.join("weir").join("compiled")),
        }
    }
}

/// Where and what to capture.
///
/// Deliberately not `Serialize`: it holds a password and must not be logged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Postgres host name or IP address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Postgres port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Role to connect as; it needs the REPLICATION attribute.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password, if the server asks for one (use `${ENV_VAR}`).
    pub password: Option<String>,
    /// Database to capture.
    pub database: String,
    /// Replication slot name.
    #[serde(default = "default_weir")]
    pub slot: String,
    /// Publication name.
    #[serde(default = "default_weir")]
    pub publication: String,
    /// Tables to capture, as table patterns: `schema.table` (or `table`
    /// for `public`), with `*` wildcards (`sales.*`) expanded at start to
    /// the tables that exist then (a table created later is captured from
    /// the next start on), and double quotes for names with capitals or dots.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Capture every table (`FOR ALL TABLES` publication) instead of `tables`.
    #[serde(default)]
    pub all_tables: bool,
    /// Create the slot when it does not exist.
    #[serde(default = "yes")]
    pub create_slot: bool,
    /// Create the publication (or add missing tables to it) when needed.
    #[serde(default = "yes")]
    pub create_publication: bool,
    /// Ask pgoutput for binary values: the same output as text mode; a
    /// column of a type Weir cannot decode from binary is refused at start.
    #[serde(default)]
    pub binary: bool,
    /// How often to report progress to Postgres even when nothing changes.
    #[serde(
        default = "default_status_interval",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub status_interval: Duration,
    /// How long to wait for a slot still held by a previous process.
    #[serde(
        default = "default_slot_wait",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub slot_wait: Duration,
    /// TLS for both connections, with libpq's meanings: `disable`,
    /// `prefer` (the default), `require`, `verify-ca` or `verify-full`.
    #[serde(default)]
    pub sslmode: weir_postgres::SslMode,
    /// PEM file of the CA certificate(s) the server's certificate must
    /// chain to, relative to the config file.
    pub sslrootcert: Option<PathBuf>,
    /// Send the password when the server asks for it in cleartext over an
    /// unencrypted connection.
    #[serde(default)]
    pub allow_cleartext_password: bool,
    /// Largest replication message accepted, in MiB.
    #[serde(default = "default_max_message_mib")]
    pub max_message_mib: usize,
    /// Authentication methods the server may use, as libpq's
    /// `require_auth`: a comma-separated list of `password`, `md5`,
    /// `scram-sha-256` and `none` (or each with `!`: all but those). Unset:
    /// any.
    #[serde(default)]
    pub require_auth: weir_postgres::RequireAuth,
    /// `"initial"` (the default): a slot Weir creates starts with every
    /// published table's existing rows as `read` events, then the stream
    /// from the slot's consistent point; `"never"`: only later changes;
    /// `"initial_only"`: the snapshot, then stop.
    #[serde(default = "default_snapshot")]
    pub snapshot: weir_postgres::SnapshotMode,
    /// Connections that copy the initial snapshot at once.
    #[serde(default = "default_snapshot_workers")]
    pub snapshot_workers: usize,
    /// Heap pages per snapshot chunk (8 KiB each by default): what one
    /// read holds in memory, and what a crash costs to read again.
    #[serde(default = "default_snapshot_chunk_pages")]
    pub snapshot_chunk_pages: u32,
    /// Receive large transactions while they run (pgoutput protocol 2,
    /// PostgreSQL 14+), held by Weir until their commit.
    #[serde(default)]
    pub streaming: bool,
    /// MiB of streamed, uncommitted transactions held in memory before
    /// the largest is written to `spill_dir`.
    #[serde(default = "default_streaming_memory_mib")]
    pub streaming_memory_mib: usize,
    /// Where streamed transactions past `streaming_memory_mib` are kept
    /// (relative to the config file); the system's temporary directory
    /// when unset.
    pub spill_dir: Option<PathBuf>,
    /// How often a heartbeat is written so the slot moves on while the
    /// captured tables are idle; `"0s"` turns heartbeats off.
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub heartbeat_interval: Duration,
    /// MiB of WAL the slot may hold back before Weir raises an alarm.
    #[serde(default = "default_retained_wal_alarm_mib")]
    pub retained_wal_alarm_mib: u64,
    /// `"fail"` (the default) or `"resnapshot"`: when the server has
    /// invalidated the slot, make a new one and take a fresh snapshot.
    #[serde(default)]
    pub on_slot_lost: weir_postgres::OnSlotLost,
    /// Report changes of a partitioned table's partitions under the
    /// partitioned table (the publication's `publish_via_partition_root`).
    #[serde(default)]
    pub publish_via_partition_root: bool,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("tables", &self.tables)
            .field("all_tables", &self.all_tables)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("require_auth", &self.require_auth.to_string())
            .field("snapshot", &self.snapshot)
            .field("snapshot_workers", &self.snapshot_workers)
            .field("snapshot_chunk_pages", &self.snapshot_chunk_pages)
            .field("streaming", &self.streaming)
            .field("streaming_memory_mib", &self.streaming_memory_mib)
            .field("spill_dir", &self.spill_dir)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("retained_wal_alarm_mib", &self.retained_wal_alarm_mib)
            .field("on_slot_lost", &self.on_slot_lost)
            .field(
                "publish_via_partition_root",
                &self.publish_via_partition_root,
            )
            .finish_non_exhaustive()
    }
}

/// One WASM plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name used in logs, errors and metrics. Defaults to the file stem.
    pub name: Option<String>,
    /// Path to the `.wasm` component, relative to the config file.
    pub path: PathBuf,
    /// Settings passed to the plugin's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Memory cap per instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_limit_mib: usize,
    /// Wall-clock deadline for one call into the plugin.
    #[serde(
        default = "default_call_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Fuel per call: a deterministic bound on the work of one call
    /// (roughly one unit per instruction). Unset: no metering, which is
    /// faster; the deadline still applies.
    pub fuel: Option<u64>,
    /// What happens to a change the plugin fails on (traps, times out,
    /// runs out of memory or fuel, rejects, breaks the contract): `halt`
    /// the pipeline, `skip` it (logged and counted), or `dead-letter` it
    /// (to the `[dead_letter]` sink, with the plugin, its version and the
    /// error). Failures of the `commit` hook always halt.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Halts the pipeline when the plugin fails this often, whatever
    /// `on_failure` says: a plugin failing on every change must not
    /// dead-letter the whole stream.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// What the plugin may reach beyond its own memory. Nothing by default.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Table patterns (as in `[[routes]]`, see [`TablePattern`]) of the
    /// changes the plugin gets, such as `["public.*"]`. Changes of other
    /// tables, and raw messages, pass it untouched: on to the next
    /// transform, or, past a router, to the `[[routes]]` rules (every
    /// sink without rules). Unset: every change.
    pub tables: Option<Vec<TablePattern>>,
}

/// What happens to a change a plugin fails on.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Stop the pipeline; nothing from the failing change on is
    /// acknowledged.
    #[default]
    Halt,
    /// Leave the change out, log it and count it.
    Skip,
    /// Send the change, with the error, to the dead-letter sink.
    DeadLetter,
}

impl FailurePolicy {
    /// The name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Halt => "halt",
            FailurePolicy::Skip => "skip",
            FailurePolicy::DeadLetter => "dead-letter",
        }
    }
}

/// The circuit breaker of one plugin.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Most failures tolerated within `window`; one more halts.
    #[serde(default = "default_breaker_failures")]
    pub max_failures: u32,
    /// The sliding window failures are counted in.
    #[serde(
        default = "default_breaker_window",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub window: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            max_failures: default_breaker_failures(),
            window: default_breaker_window(),
        }
    }
}

/// What a plugin may reach. A component importing an interface it is not
/// granted is refused at load, naming the import.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Environment variables the plugin sees (use `${NAME}` to pass on
    /// Weir's own).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directories the plugin may open (grants `wasi:filesystem`).
    #[serde(default)]
    pub dirs: Vec<DirConfig>,
    /// Outgoing connections and name lookups (grants `wasi:sockets`):
    /// `true` for any address but loopback, link-local (169.254.0.0/16,
    /// fe80::/10) and unspecified ones, or a list of the addresses,
    /// networks and host names the plugin may reach (`["10.0.0.0/8",
    /// "db.internal:5432", "[fd00::1]:443"]`; a loopback or link-local
    /// address is reached only when listed itself).
    #[serde(default)]
    pub network: NetworkConfig,
}

/// `sandbox.network`: a switch, or an allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkConfig {
    /// `false` (no network) or `true` (any but local addresses).
    Enabled(bool),
    /// Only these addresses, networks (CIDR) and host names, each with an
    /// optional port.
    Only(Vec<String>),
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig::Enabled(false)
    }
}

impl NetworkConfig {
    /// The grant, leaving out rules that do not parse (`check_plugin`
    /// reports those before anything loads).
    pub fn grant(&self) -> NetworkGrant {
        match self {
            NetworkConfig::Enabled(false) => NetworkGrant::None,
            NetworkConfig::Enabled(true) => NetworkGrant::Public,
            NetworkConfig::Only(rules) if rules.is_empty() => NetworkGrant::None,
            NetworkConfig::Only(rules) => {
                NetworkGrant::Only(rules.iter().filter_map(|r| r.parse().ok()).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for NetworkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NetworkConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a list of addresses and host names such as [\"10.0.0.0/8\", \"api.example.com:443\"]")
            }
            fn visit_bool<E>(self, v: bool) -> Result<NetworkConfig, E> {
                Ok(NetworkConfig::Enabled(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NetworkConfig, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<String>()? {
                    rules.push(rule);
                }
                Ok(NetworkConfig::Only(rules))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A directory granted to a plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// The directory on this machine, relative to the config file.
    pub host: PathBuf,
    /// Where the plugin sees it, such as `/data`.
    pub guest: String,
    /// Whether the plugin may change files in it; read-only by default.
    #[serde(default)]
    pub writable: bool,
}

/// A routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Table patterns (see [`TablePattern`]): `schema.table`, or `table`
    /// for one in `public`, where `*` matches any run of characters
    /// (`public.*`, `*.orders`) and double quotes keep capitals and dots
    /// (`"Sales".*`). Empty matches every table.
    #[serde(default)]
    pub tables: Vec<TablePattern>,
    /// Sinks that receive matching changes.
    pub sinks: Vec<String>,
    /// Topic within those sinks, with `{schema}`, `{table}`, `{op}`
    /// placeholders. The sink's own default when absent.
    pub topic: Option<String>,
}

/// Pipeline tuning.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Batches buffered between stages; bounds memory together with the
    /// source's batch size.
    #[serde(default = "default_channel_batches")]
    pub channel_batches: usize,
    /// Most changes the source puts in one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the source may hold a batch that is not full, waiting for
    /// more changes, before handing it on. Longer makes fewer, larger
    /// batches when changes trickle in (a busy OLTP load that Weir keeps
    /// up with): fewer wake-ups, plugin calls and fsyncs per change, for
    /// up to that much more latency. Zero, the default, hands on whatever
    /// has arrived at once. Under 3 400 single-row transactions a second,
    /// 1 ms took the p99 from commit to the file sink from 51 ms to 8 ms
    /// and Weir's CPU down by a quarter; but it made draining a backlog
    /// 15-25% slower in the same tests, not yet understood, so it is not
    /// the default (BENCHMARKS.md).
    #[serde(default, deserialize_with = "weir_core::duration::deserialize")]
    pub max_batch_delay: Duration,
    /// Longest wait between retries of a sink that is down.
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub max_retry_backoff: Duration,
    /// How long a sink may keep failing before `/health` reports the
    /// pipeline as degraded (503) and `weir_sink_degraded` turns 1.
    #[serde(
        default = "default_degraded_after",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub degraded_after: Duration,
}

fn default_degraded_after() -> Duration {
    Duration::from_secs(60)
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            channel_batches: default_channel_batches(),
            max_batch: default_max_batch(),
            max_batch_delay: Duration::ZERO,
            max_retry_backoff: default_max_backoff(),
            degraded_after: default_degraded_after(),
        }
    }
}

/// The admin HTTP endpoint.
///
/// Deliberately not `Serialize`, and `Debug` hides the token: it must not
/// be logged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, such as `127.0.0.1:9187`. An address off
    /// loopback needs `token`.
    pub listen: SocketAddr,
    /// Bearer token (use `${WEIR_ADMIN_TOKEN}`). When set, deploys,
    /// `/status`, `/plugins` and the reason part of `/health` need
    /// `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Host names (without port) the endpoint answers to besides the
    /// listen address, `localhost`, `127.0.0.1` and `::1`: a request naming
    /// another host (a DNS rebinding page) is refused.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Largest component `PUT /plugins/NAME` takes, in MiB.
    #[serde(default = "default_max_body_mib")]
    pub max_body_mib: usize,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_body_mib", &self.max_body_mib)
            .finish()
    }
}

/// The largest body limit taken: a component is held in memory whole while
/// it compiles.
const MAX_BODY_MIB: usize = 4096;

/// The shortest admin token taken: shorter ones can be guessed over HTTP.
const MIN_ADMIN_TOKEN: usize = 16;

impl AdminConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        match &self.token {
            Some(t) if t.chars().count() < MIN_ADMIN_TOKEN => problems.push(format!(
                "admin.token: must be at least {MIN_ADMIN_TOKEN} characters (is {}); generate one with `openssl rand -hex 32`",
                t.chars().count()
            )),
            // Visible ASCII only: anything else cannot be read back from an
            // HTTP header, and every request would be refused.
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => problems.push(
                "admin.token: must be visible ASCII characters only, no spaces (it travels in an HTTP header)".into(),
            ),
            Some(_) => {}
            None if !self.listen.ip().is_loopback() => problems.push(format!(
                "admin.listen: {} is not a loopback address, so admin.token must be set: without it anyone who reaches the port could deploy plugins and read row values (set `token = \"${{WEIR_ADMIN_TOKEN}}\"`, or listen on 127.0.0.1)",
                self.listen
            )),
            None => {}
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
                problems.push(format!(
                    "admin.allowed_hosts[{i}]: {h:?} is not a host name; write it as it appears in the Host header, without scheme, path or port"
                ));
            }
        }
        if !(1..=MAX_BODY_MIB).contains(&self.max_body_mib) {
            problems.push(format!(
                "admin.max_body_mib: must be between 1 and {MAX_BODY_MIB} (is {})",
                self.max_body_mib
            ));
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "postgres".into()
}
fn default_weir() -> String {
    "weir".into()
}
fn yes() -> bool {
    true
}
fn default_status_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_slot_wait() -> Duration {
    Duration::from_secs(15)
}
fn default_snapshot() -> weir_postgres::SnapshotMode {
    weir_postgres::SnapshotMode::Initial
}
fn default_snapshot_chunk_pages() -> u32 {
    weir_postgres::snapshot::DEFAULT_CHUNK_PAGES
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_retained_wal_alarm_mib() -> u64 {
    1024
}
fn default_streaming_memory_mib() -> usize {
    weir_postgres::DEFAULT_STREAMING_MEMORY >> 20
}

fn default_snapshot_workers() -> usize {
    2
}
fn default_max_message_mib() -> usize {
    weir_postgres::DEFAULT_MAX_MESSAGE_BYTES >> 20
}
fn default_memory_mib() -> usize {
    64
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_breaker_failures() -> u32 {
    10
}
fn default_breaker_window() -> Duration {
    Duration::from_secs(60)
}
fn default_channel_batches() -> usize {
    8
}
fn default_max_batch() -> usize {
    4096
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_body_mib() -> usize {
    64
}

/// Everything wrong with a configuration file, one problem per line.
#[derive(Debug)]
pub struct ConfigErrors {
    file: String,
    problems: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration {}:", self.file)?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses, interpolates and validates a configuration file.
    /// Relative plugin paths are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, &|name| std::env::var(name).ok())
            .map_err(|problems| ConfigErrors { file, problems })
    }

    /// Parses configuration text. `env` looks up the `${NAME}` references
    /// in string values; `base` is the directory relative plugin paths
    /// start from.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<String>> {
        let mut root = toml::de::DeTable::parse(text).map_err(|e| vec![toml_error(text, &e)])?;
        let mut problems = Vec::new();
        interpolate_table(root.get_mut(), "", text, env, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let de = toml::de::Deserializer::from(root);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = toml_error(text, &inner);
            vec![if path.is_empty() || path == "." {
                msg
            } else {
                format!("{path}: {msg}")
            }]
        })?;
        for plugin in config.transforms.iter_mut().chain(config.router.as_mut()) {
            if plugin.path.is_relative() {
                plugin.path = base.join(&plugin.path);
            }
            for dir in &mut plugin.sandbox.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        }
        for p in [&mut config.source.sslrootcert, &mut config.source.spill_dir]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(dir) = &mut config.plugins.cache_dir
            && !dir.as_os_str().is_empty()
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        let mut problems = Vec::new();
        for (name, section) in std::mem::take(&mut config.sink_sections) {
            config.sink_names.push(name.clone());
            match weir_sinks::parse_sink(section) {
                Ok(spec) => {
                    problems.extend(
                        spec.validate()
                            .into_iter()
                            .map(|p| format!("sinks.{name}.{p}")),
                    );
                    config.sinks.insert(name.clone(), spec);
                }
                Err(errors) => {
                    problems.extend(errors.into_iter().map(|p| format!("sinks.{name}.{p}")));
                }
            }
        }
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Topics given outside a sink's own section (a dead-letter topic, a
    /// route's topic) must make names that sink can use.
    fn validate_topics(&self, problems: &mut Vec<String>) {
        if let Some(dl) = &self.dead_letter
            && let Some(topic) = &dl.topic
            && let Some(spec) = self.sinks.get(&dl.sink)
            && let Err(e) = spec.check_topic(topic, TemplateUse::Raw)
        {
            problems.push(format!("dead_letter.topic: {topic:?} {e}"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            let Some(topic) = &r.topic else { continue };
            for spec in r.sinks.iter().filter_map(|s| self.sinks.get(s)) {
                if let Err(e) = spec.check_topic(topic, TemplateUse::Change) {
                    problems.push(format!("routes[{i}].topic: {topic:?} {e}"));
                    break;
                }
            }
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(ha) = &self.ha
            && ha.takeover < Duration::from_secs(1)
        {
            problems.push(format!(
                "ha.takeover: {:?} is too short: the leader proves its lease every tenth of it; \
                 give at least 1s",
                ha.takeover
            ));
        }
        let s = &self.source;
        if s.all_tables && !s.tables.is_empty() {
            problems
                .push("source.tables: set either `tables` or `all_tables = true`, not both".into());
        }
        if !s.all_tables && s.tables.is_empty() {
            problems.push("source.tables: list the tables to capture (schema.table), or set `all_tables = true`".into());
        }
        for (i, t) in s.tables.iter().enumerate() {
            if let Err(e) = weir_core::TablePattern::parse(t) {
                problems.push(format!("source.tables[{i}]: {e}"));
            }
        }
        for (field, name) in [
            ("source.slot", &s.slot),
            ("source.publication", &s.publication),
        ] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                problems.push(format!(
                    "{field}: {name:?} must be lower-case letters, digits and underscores"
                ));
            }
        }
        if s.status_interval.is_zero() {
            problems.push("source.status_interval: must be more than zero (and well below the server's wal_sender_timeout)".into());
        }
        if s.database.is_empty() {
            problems.push("source.database: must not be empty".into());
        }
        if let Err(e) = s.sslmode.check_root_cert(s.sslrootcert.as_deref()) {
            problems.push(format!("source.sslrootcert: {e}"));
        }
        if s.max_message_mib == 0 {
            problems.push("source.max_message_mib: must be at least 1".into());
        }
        if s.on_slot_lost == weir_postgres::OnSlotLost::Resnapshot
            && s.snapshot != weir_postgres::SnapshotMode::Initial
        {
            problems.push(
                "source.on_slot_lost: \"resnapshot\" takes a fresh initial snapshot, so it needs snapshot = \"initial\"".into(),
            );
        }
        if s.streaming_memory_mib == 0 {
            problems.push("source.streaming_memory_mib: must be at least 1".into());
        }
        if !(1..=64).contains(&s.snapshot_workers) {
            problems.push("source.snapshot_workers: must be between 1 and 64".into());
        }
        if !(1..=1 << 20).contains(&s.snapshot_chunk_pages) {
            problems.push(
                "source.snapshot_chunk_pages: must be between 1 and 1048576 (8 GiB of heap)".into(),
            );
        }
        if self.sink_names.is_empty() {
            problems.push("sinks: configure at least one sink ([sinks.NAME] with a type)".into());
        }
        if let Some(v) = &self.verify {
            if v.interval < Duration::from_secs(1) {
                problems.push(format!(
                    "verify.interval: {:?} is too short; give at least 1s",
                    v.interval
                ));
            }
            if v.rows_per_second == Some(0) {
                problems.push("verify.rows_per_second: must be at least 1 (or left out)".into());
            }
            if v.chunk_rows == 0 {
                problems.push("verify.chunk_rows: must be at least 1".into());
            }
            for (i, sink) in v.sinks.iter().enumerate() {
                if !self.sink_names.contains(sink) {
                    problems.push(format!(
                        "verify.sinks[{i}]: no sink {sink:?} (configured: {})",
                        self.sink_names.join(", ")
                    ));
                }
            }
        }
        for (i, p) in self.transforms.iter().enumerate() {
            self.check_plugin(&format!("transforms[{i}]"), p, &mut problems);
        }
        let mut names = BTreeMap::new();
        for (field, p) in self
            .transforms
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("transforms[{i}]"), p))
            .chain(self.router.iter().map(|p| ("router".to_owned(), p)))
        {
            if let Some(earlier) = names.insert(p.display_name(), field.clone()) {
                problems.push(format!(
                    "{field}.name: {:?} is also the name of {earlier}; plugin names must be unique (set `name`)",
                    p.display_name()
                ));
            }
        }
        if let Some(dl) = &self.dead_letter
            && !self.sink_names.contains(&dl.sink)
        {
            problems.push(format!(
                "dead_letter.sink: no sink named {:?} (configured: {})",
                dl.sink,
                self.sink_names()
            ));
        }
        if let Some(dl) = &self.dead_letter
            && let Some(spec) = self.sinks.get(&dl.sink)
            && let Err(why) = spec.takes_dead_letters()
        {
            problems.push(format!(
                "dead_letter.sink: sink {:?} cannot be the dead-letter sink: {why}",
                dl.sink
            ));
        }
        self.validate_topics(&mut problems);
        if self.plugins.cache_max_mib == 0 {
            problems.push("plugins.cache_max_mib: must be at least 1 (set cache_dir = \"\" to keep compiled code in memory only)".into());
        }
        if self.plugins.poll_interval.is_zero() {
            problems.push("plugins.poll_interval: must be more than zero".into());
        }
        if let Some(r) = &self.router {
            self.check_plugin("router", r, &mut problems);
            // With `tables`, the routes take the changes the router does not.
            if !self.routes.is_empty() && r.tables.is_none() {
                problems.push(
                    "routes: a router plugin is configured for every table; remove `routes` or `router`, or give the router `tables` so the routes take the other tables".into(),
                );
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.sinks.is_empty() {
                problems.push(format!("routes[{i}].sinks: name at least one sink"));
            }
            for sink in &r.sinks {
                if !self.sink_names.contains(sink) {
                    problems.push(format!(
                        "routes[{i}].sinks: no sink named {sink:?} (configured: {})",
                        self.sink_names()
                    ));
                }
            }
        }
        if let Some(admin) = &self.admin {
            admin.validate(&mut problems);
        }
        if self.pipeline.channel_batches == 0 {
            problems.push("pipeline.channel_batches: must be at least 1".into());
        }
        if self.pipeline.max_batch == 0 {
            problems.push("pipeline.max_batch: must be at least 1".into());
        }
        // Every change could wait this long; more than a second is a typo
        // ("1s" for "1ms") rather than a trade anyone wants.
        if self.pipeline.max_batch_delay > Duration::from_secs(1) {
            problems.push(format!(
                "pipeline.max_batch_delay: {:?} is more than 1s, which every change could wait; a few milliseconds trade latency for CPU",
                self.pipeline.max_batch_delay
            ));
        }
        problems
    }

    /// Sink names, comma-separated, for messages.
    pub fn sink_names(&self) -> String {
        self.sink_names.join(", ")
    }
}

impl PluginConfig {
    /// The plugin's display name.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.path.display().to_string())
        })
    }

    /// The `config` table flattened to string pairs, as plugins receive
    /// them. Nested tables become dotted keys, so an unquoted
    /// `route.public.orders = "x"` means what it looks like; arrays become
    /// comma-separated lists.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        flatten(&format!("{prefix}.{k}"), v, out);
                    }
                }
                toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
                toml::Value::Array(items) => out.push((
                    prefix.to_owned(),
                    items
                        .iter()
                        .map(|i| match i {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                other => out.push((prefix.to_owned(), other.to_string())),
            }
        }
        let mut out = Vec::new();
        for (k, v) in &self.config {
            flatten(k, v, &mut out);
        }
        out
    }
}

impl Config {
    fn check_plugin(&self, field: &str, p: &PluginConfig, problems: &mut Vec<String>) {
        if p.tables.as_ref().is_some_and(Vec::is_empty) {
            problems.push(format!(
                "{field}.tables: an empty list gives the plugin no change; list table patterns, or remove `tables` for every change"
            ));
        }
        if !p.path.is_file() {
            problems.push(format!(
                "{field}.path: {} does not exist or is not a file",
                p.path.display()
            ));
        }
        if p.memory_limit_mib == 0 {
            problems.push(format!("{field}.memory_limit_mib: must be at least 1"));
        }
        if p.timeout.is_zero() {
            problems.push(format!("{field}.timeout: must be more than zero"));
        }
        if p.fuel == Some(0) {
            problems.push(format!(
                "{field}.fuel: must be more than zero (leave it out for no metering)"
            ));
        }
        if p.on_failure == FailurePolicy::DeadLetter && self.dead_letter.is_none() {
            problems.push(format!(
                "{field}.on_failure: \"dead-letter\" needs a [dead_letter] section naming the sink"
            ));
        }
        if p.breaker.max_failures == 0 {
            problems.push(format!(
                "{field}.breaker.max_failures: must be at least 1 (use on_failure = \"halt\" to halt at the first failure)"
            ));
        }
        if p.breaker.window.is_zero() {
            problems.push(format!("{field}.breaker.window: must be more than zero"));
        }
        if let NetworkConfig::Only(rules) = &p.sandbox.network {
            for (i, rule) in rules.iter().enumerate() {
                if let Err(e) = rule.parse::<NetworkRule>() {
                    problems.push(format!("{field}.sandbox.network[{i}]: {e}"));
                }
            }
        }
        for (i, dir) in p.sandbox.dirs.iter().enumerate() {
            if !dir.host.is_dir() {
                problems.push(format!(
                    "{field}.sandbox.dirs[{i}].host: {} is not a directory",
                    dir.host.display()
                ));
            }
            if !dir.guest.starts_with('/') {
                problems.push(format!(
                    "{field}.sandbox.dirs[{i}].guest: {:?} must be an absolute path, such as \"/data\"",
                    dir.guest
                ));
            }
            // The cache holds native code and the key that vouches for it:
            // a plugin that could read the key could plant code Weir runs.
            if let Some(cache) = self.plugins.cache_dir() {
                let (host, cache) = (resolved(&dir.host), resolved(&cache));
                if cache.starts_with(&host) || host.starts_with(&cache) {
                    problems.push(format!(
                        "{field}.sandbox.dirs[{i}].host: {} holds or lies in the compiled-code cache {}; grant a directory outside it, or move plugins.cache_dir",
                        dir.host.display(),
                        cache.display()
                    ));
                }
            }
        }
    }
}

/// `path` with links resolved as far as it exists, so two spellings of one
/// directory compare equal.
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut base = path;
    loop {
        if let Ok(real) = base.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Replaces `${NAME}` (and `${NAME:-default}`) with environment values in
/// every string value of `table`, after parsing: a value is never TOML
/// text, so quotes and backslashes in it stay as they are and it cannot add
/// keys; comments and keys are left alone. Unset variables without a
/// default are reported with the key's path and line.
fn interpolate_table(
    table: &mut toml::de::DeTable<'_>,
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    for (key, value) in table.iter_mut() {
        let path = if path.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{path}.{}", key.get_ref())
        };
        interpolate_value(value, &path, text, env, problems);
    }
}

fn interpolate_value(
    value: &mut toml::Spanned<toml::de::DeValue<'_>>,
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    let span = value.span();
    match value.get_mut() {
        toml::de::DeValue::String(s) if s.contains('$') => match interpolate(s, env) {
            Ok(expanded) => *s = expanded.into(),
            Err(errors) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                problems.extend(
                    errors
                        .into_iter()
                        .map(|e| format!("{path}: {e} (line {line})")),
                );
            }
        },
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), text, env, problems);
            }
        }
        toml::de::DeValue::Table(t) => interpolate_table(t, path, text, env, problems),
        _ => {}
    }
}

/// Expands the `${...}` references of one string value; `$${` stands for
/// a literal `${`.
fn interpolate(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(value.len());
    let mut problems = Vec::new();
    let mut rest = value;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            problems.push("`${` without a closing `}` (write `$${` for a literal `${`)".to_owned());
            rest = after;
            continue;
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => problems.push(format!(
                "environment variable {name} is not set (referenced as ${{{expr}}})"
            )),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A TOML error as `message (line L, column C)`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before
                .rfind('\n')
                .map_or(before.len(), |p| before.len() - p - 1)
                + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            // Before variables were expanded inside strings, `port = ${PORT}`
            // worked; say why it no longer parses.
            let hint = if line_text.contains("${") {
                "; ${VAR} is only expanded inside quoted strings: write numbers and booleans literally"
            } else {
                ""
            };
            format!("{msg} (line {line}, column {col}){hint}")
        }
        None => msg,
    }
}

/// Translates the `[source]` section for the Postgres crate.
pub fn postgres_config(s: &SourceConfig, pipeline: &PipelineConfig) -> PostgresConfig {
    // Checked when the configuration was read.
    let patterns: Vec<weir_core::TablePattern> = s
        .tables
        .iter()
        .filter_map(|t| weir_core::TablePattern::parse(t).ok())
        .collect();
    PostgresConfig {
        host: s.host.clone(),
        port: s.port,
        user: s.user.clone(),
        password: s.password.clone(),
        dbname: s.database.clone(),
        application_name: "weir".into(),
        slot: s.slot.clone(),
        publication: s.publication.clone(),
        tables: patterns
            .iter()
            .filter_map(|p| p.exact())
            .map(|(schema, table)| (schema.to_owned(), table.to_owned()))
            .collect(),
        table_patterns: patterns
            .iter()
            .filter(|p| p.exact().is_none())
            .cloned()
            .collect(),
        all_tables: s.all_tables,
        create_slot: s.create_slot,
        create_publication: s.create_publication,
        binary: s.binary,
        status_interval: s.status_interval,
        slot_wait: s.slot_wait,
        max_batch: pipeline.max_batch,
        max_batch_delay: pipeline.max_batch_delay,
        ssl_mode: s.sslmode,
        ssl_root_cert: s.sslrootcert.clone(),
        allow_cleartext_password: s.allow_cleartext_password,
        max_message_bytes: s.max_message_mib.saturating_mul(1 << 20),
        require_auth: s.require_auth.clone(),
        snapshot: s.snapshot,
        snapshot_workers: s.snapshot_workers,
        snapshot_chunk_pages: s.snapshot_chunk_pages,
        streaming: s.streaming,
        streaming_memory: s.streaming_memory_mib.saturating_mul(1 << 20),
        spill_dir: s
            .spill_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("weir-spill")),
        heartbeat_interval: Some(s.heartbeat_interval).filter(|d| !d.is_zero()),
        retained_wal_alarm: s.retained_wal_alarm_mib.saturating_mul(1 << 20),
        on_slot_lost: s.on_slot_lost,
        publish_via_partition_root: s.publish_via_partition_root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[source]
database = "app"
tables = ["public.orders", "customers"]

[sinks.out]
type = "file"
path = "-"
"#;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text, Path::new("."), &|name| match name {
            "PGPASS" => Some("s3cret".into()),
            _ => None,
        })
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.source.slot, "weir");
        assert_eq!(c.source.port, 5432);
        assert!(c.source.create_slot);
        assert_eq!(c.source.status_interval, Duration::from_secs(10));
        assert!(c.sinks["out"].as_any().is::<weir_sinks::FileSinkConfig>());
    }

    #[test]
    fn batch_delay_defaults_to_none_and_refuses_more_than_a_second() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.pipeline.max_batch_delay, Duration::ZERO);
        let with = |delay: &str| format!("{MINIMAL}\n[pipeline]\nmax_batch_delay = {delay:?}\n");
        let c = parse(&with("5ms")).unwrap();
        let pg = postgres_config(&c.source, &c.pipeline);
        assert_eq!(pg.max_batch_delay, Duration::from_millis(5));
        let errs = parse(&with("2s")).unwrap_err();
        assert!(
            errs[0].starts_with("pipeline.max_batch_delay:") && errs[0].contains("2s"),
            "{errs:?}"
        );
    }

    #[test]
    fn source_tls_settings() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.source.sslmode, weir_postgres::SslMode::Prefer);
        assert_eq!(c.source.max_message_mib, 1024);
        assert!(!c.source.allow_cleartext_password);
        let text = MINIMAL.replace(
            "[source]",
            "[source]\nsslmode = \"verify-full\"\nsslrootcert = \"certs/ca.pem\"",
        );
        let c = Config::parse(&text, Path::new("/etc/weir"), &|_| None).unwrap();
        assert_eq!(
            c.source.sslrootcert.as_deref(),
            Some(Path::new("/etc/weir/certs/ca.pem"))
        );
        assert_eq!(c.source.sslmode, weir_postgres::SslMode::VerifyFull);
        for bad in ["verify", "verify_full", "Require", ""] {
            let text = MINIMAL.replace("[source]", &format!("[source]\nsslmode = {bad:?}"));
            let errs = parse(&text).unwrap_err();
            assert!(
                errs[0].starts_with("source.sslmode:")
                    && errs[0].contains(&format!("`{bad}`"))
                    && errs[0].contains("`verify-ca`, `verify-full`"),
                "{errs:?}"
            );
        }
        let errs =
            parse(&MINIMAL.replace("[source]", "[source]\nsslmode = \"verify-ca\"")).unwrap_err();
        assert!(errs[0].starts_with("source.sslrootcert:"), "{errs:?}");
        let errs =
            parse(&MINIMAL.replace("[source]", "[source]\nmax_message_mib = 0")).unwrap_err();
        assert!(errs[0].starts_with("source.max_message_mib:"), "{errs:?}");
        let text = MINIMAL.replace("[source]", "[source]\nrequire_auth = \"scram-sha-256\"");
        let auth = parse(&text).unwrap().source.require_auth;
        assert!(auth.allows(weir_postgres::AuthMethod::ScramSha256));
        assert!(!auth.allows(weir_postgres::AuthMethod::None));
        let text = MINIMAL.replace("[source]", "[source]\nrequire_auth = \"scram\"");
        let errs = parse(&text).unwrap_err();
        assert!(
            errs[0].starts_with("source.require_auth:") && errs[0].contains("scram-sha-256"),
            "{errs:?}"
        );
    }

    #[test]
    fn interpolates_environment_and_defaults() {
        let text = format!("{MINIMAL}\n[admin]\nlisten = \"${{ADMIN:-127.0.0.1:9999}}\"\n")
            .replace(
                "database = \"app\"",
                "database = \"app\"\npassword = \"${PGPASS}\"",
            );
        let c = parse(&text).unwrap();
        assert_eq!(c.source.password.as_deref(), Some("s3cret"));
        assert_eq!(c.admin.unwrap().listen.port(), 9999);
        assert!(
            !format!("{:?}", c.source).contains("s3cret"),
            "password must not be logged"
        );
    }

    #[test]
    fn unset_variable_names_variable_and_line() {
        let text = MINIMAL.replace("\"app\"", "\"${DB_NAME}\"");
        let errs = parse(&text).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("DB_NAME") && errs[0].contains("line 3"),
            "{errs:?}"
        );
    }

    #[test]
    fn escaped_dollar_brace_is_literal() {
        assert_eq!(interpolate("a $${b} c", &|_| None).unwrap(), "a ${b} c");
    }

    /// `env` answering from `vars`.
    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(text, Path::new("."), &move |name| vars.get(name).cloned())
    }

    #[test]
    fn quotes_and_backslashes_in_a_value_arrive_unchanged() {
        let password = r#"p"a\ss\"w'o\nrd\"#;
        let text = MINIMAL.replace(
            "database = \"app\"",
            "database = \"app\"\npassword = \"${PGPASS}\"",
        );
        let c = parse_with(&text, &[("PGPASS", password)]).unwrap();
        assert_eq!(c.source.password.as_deref(), Some(password));
        // In a literal string too, and next to other text.
        let text = MINIMAL.replace("database = \"app\"", "database = 'db-${DB}-x'");
        let c = parse_with(&text, &[("DB", "a\"b\\c")]).unwrap();
        assert_eq!(c.source.database, "db-a\"b\\c-x");
    }

    #[test]
    fn a_value_cannot_inject_keys() {
        let text = MINIMAL.replace(
            "database = \"app\"",
            "database = \"app\"\npassword = \"${PGPASS}\"",
        );
        let injected = "x\"\nslot = \"stolen\"\nall_tables = true\n#";
        let c = parse_with(&text, &[("PGPASS", injected)]).unwrap();
        assert_eq!(c.source.password.as_deref(), Some(injected));
        assert_eq!(c.source.slot, "weir");
        assert!(!c.source.all_tables);
        // A value naming a variable is not expanded again.
        let c = parse_with(&text, &[("PGPASS", "${HOME}")]).unwrap();
        assert_eq!(c.source.password.as_deref(), Some("${HOME}"));
    }

    #[test]
    fn comments_and_keys_are_not_interpolated() {
        let text = MINIMAL.replace(
            "database = \"app\"",
            "# ${UNSET_IN_COMMENT} and ${ALSO_UNSET:-x}\ndatabase = \"app\"  # from ${UNSET_TOO}",
        );
        let c = parse_with(&text, &[]).unwrap();
        assert_eq!(c.source.database, "app");
        let text = format!(
            "{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\nsandbox = {{ env = {{ \"${{KEY}}\" = \"${{VALUE}}\" }} }}\n"
        );
        let c = Config::parse(&text, Path::new(env!("CARGO_MANIFEST_DIR")), &|name| {
            (name == "VALUE").then(|| "v".to_owned())
        })
        .unwrap();
        assert_eq!(c.transforms[0].sandbox.env["${KEY}"], "v");
    }

    #[test]
    fn unset_variables_are_reported_with_key_path_and_line() {
        let text = format!(
            "{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\nconfig = {{ list = [\"ok\", \"${{NOPE}}\"] }}\n"
        );
        let errs = parse_with(&text, &[]).unwrap_err();
        assert_eq!(
            errs,
            [
                "transforms[0].config.list[1]: environment variable NOPE is not set (referenced as ${NOPE}) (line 12)"
            ]
        );
        let errs = parse_with(&MINIMAL.replace("\"app\"", "\"${OPEN\""), &[]).unwrap_err();
        assert!(
            errs[0].starts_with("source.database: `${` without a closing `}`"),
            "{errs:?}"
        );
    }

    /// The first `toml` block of README.md's configuration section.
    fn readme_config() -> String {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme
            .find("### Configuration")
            .expect("README.md has a configuration section")..];
        let start = section.find("```toml\n").expect("with a toml block") + "```toml\n".len();
        let len = section[start..].find("```").expect("that ends");
        section[start..start + len].to_owned()
    }

    #[test]
    fn the_readme_example_config_parses() {
        let text = readme_config();
        // Its plugins need only exist: nothing is loaded here.
        let dir = tempfile::tempdir().unwrap();
        let raw: toml::Table = toml::from_str(&text).unwrap();
        let plugins = raw
            .get("transforms")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .chain(raw.get("router"));
        for plugin in plugins {
            let path = dir.path().join(plugin["path"].as_str().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        // Whatever it references is set (tokens need some length).
        let c = Config::parse(&text, dir.path(), &|name| {
            Some(match name {
                "PGPASSWORD" => "pw\"\\".to_owned(),
                other => format!("value-of-{other}-0123456789"),
            })
        })
        .unwrap_or_else(|e| panic!("README.md's example does not parse: {e:#?}\n{text}"));
        assert_eq!(c.source.password.as_deref(), Some("pw\"\\"));
        assert_eq!(
            c.admin.and_then(|a| a.token).as_deref(),
            Some("value-of-WEIR_ADMIN_TOKEN-0123456789")
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let text = MINIMAL.replace("path = \"-\"", "path = \"-\"\nfsync = true");
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].starts_with("sinks.out"), "{errs:?}");
        assert!(errs[0].contains("fsync"), "{errs:?}");
        let text = MINIMAL.replace("[source]", "[source]\nslots = 1");
        let errs = parse(&text).unwrap_err();
        assert!(
            errs[0].contains("slots") && errs[0].contains("line 3"),
            "{errs:?}"
        );
    }

    #[test]
    fn wrong_type_is_reported_with_its_path() {
        let text = MINIMAL.replace("database = \"app\"", "database = \"app\"\nport = \"x\"");
        let errs = parse(&text).unwrap_err();
        assert!(errs[0].starts_with("source.port:"), "{errs:?}");
    }

    #[test]
    fn unknown_sink_type_is_reported() {
        let text = MINIMAL.replace("type = \"file\"", "type = \"fiel\"");
        let errs = parse(&text).unwrap_err();
        assert!(
            errs[0].contains("sinks.out") && errs[0].contains("fiel"),
            "{errs:?}"
        );
    }

    #[test]
    fn collects_every_semantic_problem_at_once() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nsinks = [\"nope\"]\n[[transforms]]\npath = \"missing.wasm\"\n"
        )
        .replace("\"customers\"", "\"a.b.c\"");
        let errs = parse(&text).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with("source.tables[1]")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("routes[0].sinks") && e.contains("nope")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("transforms[0].path")),
            "{errs:?}"
        );
    }

    #[test]
    fn route_and_plugin_tables_are_table_patterns() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = format!(
            "{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\ntables = [\"public.*\", '\"Sales\".orders']\n[[routes]]\ntables = [\"*.orders\"]\nsinks = [\"out\"]\n"
        );
        let c = Config::parse(&text, dir, &|_| None).unwrap();
        let tables = c.transforms[0].tables.as_ref().unwrap();
        assert!(tables[0].matches("public", "x"));
        assert!(tables[1].matches("Sales", "orders"));
        assert!(c.routes[0].tables[0].matches("s", "orders"));

        let bad_route = text.replace("\"*.orders\"", "\"a.b.c\"");
        let errs = Config::parse(&bad_route, dir, &|_| None).unwrap_err();
        assert!(
            errs[0].starts_with("routes[0].tables[0]: ") && errs[0].contains("second dot"),
            "{errs:?}"
        );
        let bad_plugin = text.replace("\"public.*\"", "\"public.Orders\"");
        let errs = Config::parse(&bad_plugin, dir, &|_| None).unwrap_err();
        assert!(
            errs[0].starts_with("transforms[0].tables[0]: ") && errs[0].contains("capital"),
            "{errs:?}"
        );
        let empty = text.replace("tables = [\"public.*\", '\"Sales\".orders']", "tables = []");
        let errs = Config::parse(&empty, dir, &|_| None).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("transforms[0].tables: an empty list")),
            "{errs:?}"
        );
    }

    #[test]
    fn routes_take_what_a_router_with_tables_leaves() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let routes = "[[routes]]\ntables = [\"*\"]\nsinks = [\"out\"]\n";
        let every = format!("{MINIMAL}\n[router]\npath = \"Cargo.toml\"\n{routes}");
        let errs = Config::parse(&every, dir, &|_| None).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("routes: a router plugin")),
            "{errs:?}"
        );
        let some = every.replace("[router]\n", "[router]\ntables = [\"audit.*\"]\n");
        Config::parse(&some, dir, &|_| None).unwrap();
    }

    #[test]
    fn plugin_config_flattens_to_strings() {
        let text = format!(
            "{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\nconfig = {{ columns = [\"a\", \"b\"], n = 3, route.public.orders = \"k\" }}\n"
        );
        let c = Config::parse(&text, Path::new(env!("CARGO_MANIFEST_DIR")), &|_| None).unwrap();
        let mut pairs = c.transforms[0].config_pairs();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("columns".to_string(), "a,b".to_string()),
                ("n".to_string(), "3".to_string()),
                ("route.public.orders".to_string(), "k".to_string()),
            ]
        );
        assert_eq!(c.transforms[0].display_name(), "Cargo");
    }

    #[test]
    fn plugin_policies_grants_and_deploys_are_read_and_checked() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let good = format!(
            "{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\nfuel = 1000\non_failure = \"dead-letter\"\nbreaker = {{ max_failures = 3, window = \"30s\" }}\nsandbox = {{ env = {{ TZ = \"UTC\" }}, network = true, dirs = [{{ host = \"src\", guest = \"/src\" }}] }}\n\n[[transforms]]\nname = \"listed\"\npath = \"Cargo.toml\"\nsandbox = {{ network = [\"10.0.0.0/8\", \"api.example.com:443\"] }}\n\n[dead_letter]\nsink = \"out\"\ntopic = \"dlq\"\n\n[plugins]\nwatch = false\ncache_dir = \"compiled\"\ncache_max_mib = 64\n"
        );
        let c = Config::parse(&good, base, &|_| None).unwrap();
        // A grant holding the cache (here: the crate dir, which holds
        // `compiled`) would hand a plugin the key that vouches for native
        // code.
        let cache_granted = good.replace("host = \"src\"", "host = \".\"");
        let errs = Config::parse(&cache_granted, base, &|_| None).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("transforms[0].sandbox.dirs[0].host:")
                    && e.contains("compiled-code cache")),
            "{errs:?}"
        );
        let t = &c.transforms[0];
        assert_eq!(t.fuel, Some(1000));
        assert_eq!(t.on_failure, FailurePolicy::DeadLetter);
        assert_eq!(t.breaker.max_failures, 3);
        assert_eq!(t.breaker.window, Duration::from_secs(30));
        assert_eq!(t.sandbox.env["TZ"], "UTC");
        assert_eq!(t.sandbox.network.grant(), weir_wasm::NetworkGrant::Public);
        assert_eq!(t.sandbox.dirs[0].host, base.join("src"));
        assert!(!t.sandbox.dirs[0].writable);
        assert_eq!(
            c.dead_letter.as_ref().unwrap().topic.as_deref(),
            Some("dlq")
        );
        let NetworkGrant::Only(rules) = c.transforms[1].sandbox.network.grant() else {
            panic!("{:?}", c.transforms[1].sandbox.network);
        };
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["10.0.0.0/8", "api.example.com:443"]);
        assert_eq!(
            c.transforms[0].sandbox.network,
            NetworkConfig::Enabled(true)
        );
        assert!(!c.plugins.watch);
        assert_eq!(c.plugins.cache_dir(), Some(base.join("compiled")));
        assert_eq!(c.plugins.cache_max_bytes(), 64 << 20);

        let bad = format!(
            "{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\nfuel = 0\non_failure = \"dead-letter\"\nbreaker = {{ max_failures = 0 }}\nsandbox = {{ dirs = [{{ host = \"nope\", guest = \"rel\" }}], network = [\"10.0.0.0/8\", \"10.0.0.1/8\", \"http://x\"] }}\n\n[[transforms]]\npath = \"Cargo.toml\"\n\n[plugins]\ncache_dir = \"\"\ncache_max_mib = 0\n"
        );
        let errs = Config::parse(&bad, base, &|_| None).unwrap_err();
        for expected in [
            "transforms[0].fuel: must be more than zero",
            "transforms[0].on_failure: \"dead-letter\" needs a [dead_letter] section",
            "transforms[0].breaker.max_failures: must be at least 1",
            "transforms[0].sandbox.dirs[0].host:",
            "transforms[0].sandbox.dirs[0].guest: \"rel\" must be an absolute path",
            "transforms[0].sandbox.network[1]: \"10.0.0.1/8\": the address has bits set past the prefix; did you mean 10.0.0.0/8?",
            "transforms[0].sandbox.network[2]: \"http://x\" is not an address",
            "plugins.cache_max_mib: must be at least 1",
            "transforms[1].name: \"Cargo\" is also the name of transforms[0]",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "{expected}: {errs:#?}"
            );
        }
        let unknown_policy =
            format!("{MINIMAL}\n[[transforms]]\npath = \"Cargo.toml\"\non_failure = \"retry\"\n");
        let errs = Config::parse(&unknown_policy, base, &|_| None).unwrap_err();
        assert!(
            errs[0].starts_with("transforms[0].on_failure: unknown variant `retry`"),
            "{errs:?}"
        );
        let cache = format!(
            "{MINIMAL}\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n\n[dead_letter]\nsink = \"cache\"\n"
        );
        let errs = Config::parse(&cache, base, &|_| None).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with(
                "dead_letter.sink: sink \"cache\" cannot be the dead-letter sink: a cache holds rows"
            )),
            "{errs:?}"
        );
        let no_sink = format!("{MINIMAL}\n[dead_letter]\nsink = \"dlq\"\n");
        let errs = Config::parse(&no_sink, base, &|_| None).unwrap_err();
        assert!(
            errs[0].starts_with("dead_letter.sink: no sink named \"dlq\""),
            "{errs:?}"
        );
    }

    #[test]
    fn a_variable_outside_a_string_is_explained() {
        let errs = parse(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9187\"\nmax_body_mib = ${{MIB}}\n"
        ))
        .unwrap_err();
        assert!(
            errs[0].contains("${VAR} is only expanded inside quoted strings"),
            "{errs:?}"
        );
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let admin = |extra: &str| format!("{MINIMAL}\n[admin]\n{extra}\n");
        let errs = parse(&admin("listen = \"0.0.0.0:9187\"")).unwrap_err();
        assert!(
            errs[0].starts_with(
                "admin.listen: 0.0.0.0:9187 is not a loopback address, so admin.token must be set"
            ),
            "{errs:?}"
        );
        let c = parse_with(
            &admin(
                "listen = \"0.0.0.0:9187\"\ntoken = \"${T}\"\nallowed_hosts = [\"weir.internal\"]",
            ),
            &[("T", "0123456789abcdef0123")],
        )
        .unwrap();
        let a = c.admin.unwrap();
        assert_eq!(a.token.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(a.max_body_mib, 64);
        assert!(
            !format!("{a:?}").contains("0123456789"),
            "token must not be logged"
        );
        let errs = parse(&admin(
            "listen = \"127.0.0.1:9187\"\ntoken = \"\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\"",
        ))
        .unwrap_err();
        assert!(
            errs[0].starts_with("admin.token: must be visible ASCII"),
            "{errs:?}"
        );
        let c = parse(&admin("listen = \"[::1]:9187\"")).unwrap();
        assert!(c.admin.unwrap().token.is_none());

        let errs = parse(&admin(
            "listen = \"127.0.0.1:9187\"\ntoken = \"short\"\nallowed_hosts = [\"http://x/\"]\nmax_body_mib = 0",
        ))
        .unwrap_err();
        for expected in [
            "admin.token: must be at least 16 characters (is 5)",
            "admin.allowed_hosts[0]: \"http://x/\" is not a host name",
            "admin.max_body_mib: must be between 1 and 4096 (is 0)",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "{expected}: {errs:#?}"
            );
        }
    }

    #[test]
    fn kafka_topics_outside_the_sink_section_are_checked() {
        let text = format!(
            "{MINIMAL}\n[sinks.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"weir\"\nsasl_password = \"${{PGPASS}}\"\nmessage_topic = \"{{prefix}}\"\n\n[dead_letter]\nsink = \"k\"\ntopic = \"{{table}}\"\n\n[[routes]]\nsinks = [\"k\"]\ntopic = \"cdc/{{table}}\"\n"
        );
        let errs = parse(&text).unwrap_err();
        let joined = errs.join("\n");
        assert_eq!(errs.len(), 3, "{joined}");
        assert!(
            errs.iter().any(|e| e.starts_with(
                "sinks.k.message_topic: \"{prefix}\" can expand to an empty topic name"
            )),
            "{joined}"
        );
        assert!(
            errs.iter().any(|e| e
                .starts_with("dead_letter.topic: \"{table}\" can expand to an empty topic name")),
            "{joined}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("routes[0].topic: \"cdc/{table}\"") && e.contains("'/'")),
            "{joined}"
        );
        assert!(!joined.contains("s3cret"), "{joined}");

        let fixed = text
            .replace("message_topic = \"{prefix}\"", "")
            .replace("topic = \"{table}\"", "topic = \"dlq\"")
            .replace("cdc/{table}", "cdc.{table}");
        let c = parse(&fixed).unwrap();
        let k = c.sinks["k"]
            .as_any()
            .downcast_ref::<weir_sinks::KafkaSinkConfig>()
            .expect("a kafka sink");
        assert_eq!(k.sasl_password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.pipeline.degraded_after, Duration::from_secs(60));
    }
}
