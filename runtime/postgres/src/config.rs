//! Connection and capture settings for the Postgres source.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::PgError;

/// The default cap on one message from the replication stream: 1 GiB,
/// Postgres's own limit on a single field value.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Messages smaller than this are routine (startup, keepalives, small
/// rows), so a lower cap could only break a healthy stream.
const MIN_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Whether and how the connections to Postgres use TLS; libpq's `sslmode`.
///
/// Deserializes from libpq's names (`verify-ca`, `verify-full`); any
/// other value is an error listing them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never encrypt.
    Disable,
    /// Encrypt when the server accepts TLS, else go on unencrypted. The
    /// certificate is checked only against `sslrootcert`, when set.
    #[default]
    Prefer,
    /// Always encrypt; fail when the server does not accept TLS. The
    /// certificate is checked only against `sslrootcert`, when set (then
    /// this is `verify-ca`, as in libpq).
    Require,
    /// Encrypt and check the certificate was issued by a CA in `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and check the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode's name, for messages.
    pub const NAMES: &'static str = "disable, prefer, require, verify-ca, verify-full";

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether this mode needs a root certificate to mean anything.
    pub(crate) fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The one rule tying `sslmode` to `sslrootcert`: the `verify-*` modes
    /// have nothing to verify against without it. `Err` says so, without
    /// naming where the settings came from.
    pub fn check_root_cert(self, root: Option<&Path>) -> Result<(), String> {
        if self.verifies() && root.is_none() {
            return Err(format!(
                "sslmode = {self} needs sslrootcert, the CA certificate(s) to check the \
                 server's certificate against"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(format!(
                    "unknown sslmode {s:?}: use one of {}",
                    SslMode::NAMES
                ));
            }
        })
    }
}

/// An authentication method `require_auth` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// No authentication at all: the server reports success at once (trust).
    None,
    /// The password in cleartext.
    Password,
    /// The MD5 hash of the password.
    Md5,
    /// SCRAM-SHA-256, which also proves the server knows the password.
    ScramSha256,
}

impl AuthMethod {
    const ALL: [AuthMethod; 4] = [
        AuthMethod::Password,
        AuthMethod::Md5,
        AuthMethod::ScramSha256,
        AuthMethod::None,
    ];

    /// libpq's name for the method.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Password => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Which authentication methods the server may use; libpq 16's
/// `require_auth`. The default allows any.
///
/// Parsed from a comma-separated list of `password`, `md5`,
/// `scram-sha-256` and `none` (the server may skip authentication), or of
/// the same names each prefixed with `!`, meaning any method but those. An
/// empty list, as in libpq, sets no requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequireAuth {
    /// Methods refused, one bit per [`AuthMethod`]; a refusal list rather
    /// than an allow list so that the default allows everything.
    refused: u8,
    /// As written, for messages.
    text: String,
}

impl RequireAuth {
    /// Whether the server may authenticate Weir with `method`.
    pub fn allows(&self, method: AuthMethod) -> bool {
        self.refused & method.bit() == 0
    }
}

impl fmt::Display for RequireAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for RequireAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(RequireAuth::default());
        }
        let mut listed = 0u8;
        let mut negated = None;
        for item in s.split(',').map(str::trim) {
            let (neg, name) = match item.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, item),
            };
            if *negated.get_or_insert(neg) != neg {
                return Err(format!(
                    "require_auth {s:?} mixes methods with and without '!': use one kind"
                ));
            }
            let method = AuthMethod::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .ok_or_else(|| {
                    format!(
                        "require_auth {s:?}: unknown method {name:?}; use password, md5, \
                         scram-sha-256 or none, separated by commas (or each with '!' for \
                         all but those)"
                    )
                })?;
            if listed & method.bit() != 0 {
                return Err(format!("require_auth {s:?} lists {name} twice"));
            }
            listed |= method.bit();
        }
        let refused = match negated {
            None => 0,
            Some(true) => listed,
            Some(false) => !listed & AuthMethod::ALL.iter().fold(0, |a, m| a | m.bit()),
        };
        Ok(RequireAuth {
            refused,
            text: s.to_owned(),
        })
    }
}

impl<'de> Deserialize<'de> for RequireAuth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Everything the source needs to know: where Postgres is, who to log in
/// as, and what to capture through which slot and publication.
///
/// One config feeds both connections the source opens: the ordinary SQL
/// connection used by [`PostgresSource::prepare`](crate::PostgresSource::prepare)
/// and the replication connection used by
/// [`PostgresSource::run`](crate::PostgresSource::run).
///
/// `Debug` never prints the password.
#[derive(Clone)]
pub struct PostgresConfig {
    /// Host name or IP address. A value starting with `/` is a directory
    /// holding the server's Unix socket (`<dir>/.s.PGSQL.<port>`).
    pub host: String,
    /// TCP port (also names the Unix socket file).
    pub port: u16,
    /// Role to log in as. It needs the REPLICATION attribute (or superuser).
    pub user: String,
    /// Password for MD5, SCRAM-SHA-256 or cleartext authentication; `None` for trust.
    pub password: Option<String>,
    /// Database to capture from. Logical slots belong to one database.
    pub dbname: String,
    /// Shown in `pg_stat_activity` and `pg_stat_replication`.
    pub application_name: String,
    /// Logical replication slot name (lower-case letters, digits and `_`).
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Tables to capture, as `(schema, table)`.
    pub tables: Vec<(String, String)>,
    /// Patterns with wildcards (`sales.*`, `public.order_*`), expanded at
    /// start to the tables that match then, which join `tables`. A table
    /// created later is captured from the next start on.
    pub table_patterns: Vec<weir_core::TablePattern>,
    /// Capture every table: the publication is (or is created) `FOR ALL TABLES`.
    pub all_tables: bool,
    /// Create the slot when it does not exist (otherwise that is an error).
    pub create_slot: bool,
    /// Create the publication when it does not exist, and add listed tables
    /// it lacks (otherwise either is an error).
    pub create_publication: bool,
    /// Ask pgoutput for the binary form of column values. They decode to
    /// the same values as in text mode; a published column of a type with
    /// no binary decoder (an extension's own binary form) is refused when
    /// the source is prepared. Text mode is the default.
    pub binary: bool,
    /// How often a standby status update is sent even when nothing changed.
    /// Keep it well below the server's `wal_sender_timeout` (60 s by default).
    pub status_interval: Duration,
    /// How long to wait for a slot held by another process (for example
    /// the walsender of a killed predecessor) to be released.
    pub slot_wait: Duration,
    /// Most items handed downstream in one batch.
    pub max_batch: usize,
    /// How long a batch that is not full may wait for more items before
    /// it is handed downstream; zero hands on what has arrived at once.
    pub max_batch_delay: Duration,
    /// Whether and how both connections use TLS (libpq's `sslmode`).
    pub ssl_mode: SslMode,
    /// PEM file of the CA certificate(s) the server's certificate must
    /// chain to (libpq's `sslrootcert`). Needed by `verify-ca` and
    /// `verify-full`; with `prefer` or `require` it turns on the CA check.
    pub ssl_root_cert: Option<PathBuf>,
    /// Send the password when the server asks for it in cleartext over an
    /// unencrypted TCP connection. Off: such a request is an authentication
    /// error. TLS and Unix sockets keep the password off the network, so
    /// there it is always sent.
    pub allow_cleartext_password: bool,
    /// Largest message accepted from the replication stream, in bytes; a
    /// server announcing more is a protocol error rather than an allocation.
    pub max_message_bytes: usize,
    /// The authentication methods the server may use (libpq's
    /// `require_auth`). A server asking for another, or reporting success
    /// without any listed method completing, is an authentication error.
    pub require_auth: RequireAuth,
    /// Whether a new slot starts with a snapshot of the rows that exist.
    pub snapshot: SnapshotMode,
    /// Connections that copy the initial snapshot's tables at once.
    pub snapshot_workers: usize,
    /// Heap pages per snapshot chunk: the unit read at once, held in
    /// memory at once, and recorded delivered at once.
    pub snapshot_chunk_pages: u32,
    /// Ask for large transactions before their commit (pgoutput protocol
    /// 2, PostgreSQL 14 and later), so the walsender does not spill them
    /// and stall every transaction behind them. Weir still hands on only
    /// committed changes, in commit order.
    pub streaming: bool,
    /// Bytes of streamed, not yet committed transactions held in memory;
    /// past it the largest is written to a file in `spill_dir`.
    pub streaming_memory: usize,
    /// Where streamed transactions go past `streaming_memory`: a
    /// directory per stream inside it, removed when the stream ends.
    pub spill_dir: PathBuf,
    /// How often Weir writes a heartbeat (a non-transactional logical
    /// message, which nothing downstream sees) so that the slot moves on
    /// while the published tables are idle and others write. `None`: never.
    pub heartbeat_interval: Option<Duration>,
    /// WAL the slot may hold back before Weir warns (bytes).
    pub retained_wal_alarm: u64,
    /// What to do when the server has invalidated the slot.
    pub on_slot_lost: OnSlotLost,
    /// Report a partitioned table's changes under the partitioned table
    /// itself rather than the partition that holds the row (the
    /// publication's `publish_via_partition_root`, PostgreSQL 13+).
    pub publish_via_partition_root: bool,
}

/// What to do with a slot the server invalidated (`source.on_slot_lost`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSlotLost {
    /// Stop with [`PgError::SlotLost`](crate::PgError::SlotLost).
    #[default]
    Fail,
    /// Drop it, make a new one and take the initial snapshot again.
    Resnapshot,
}

/// Default of [`PostgresConfig::streaming_memory`]: 64 MiB.
pub const DEFAULT_STREAMING_MEMORY: usize = 64 << 20;

/// When the rows a table already holds are read (`source.snapshot`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// For a new slot: every published table's rows as `read` events, then
    /// the stream from the slot's consistent point.
    Initial,
    /// Never: only changes made after the slot was created.
    #[default]
    Never,
    /// The initial snapshot, then stop (no streaming).
    InitialOnly,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            dbname: "postgres".to_owned(),
            application_name: "weir".to_owned(),
            slot: "weir".to_owned(),
            publication: "weir".to_owned(),
            tables: Vec::new(),
            table_patterns: Vec::new(),
            all_tables: false,
            create_slot: true,
            create_publication: true,
            binary: false,
            status_interval: Duration::from_secs(10),
            slot_wait: Duration::from_secs(10),
            max_batch: 4096,
            max_batch_delay: Duration::ZERO,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            allow_cleartext_password: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            require_auth: RequireAuth::default(),
            snapshot: SnapshotMode::Never,
            snapshot_workers: 2,
            snapshot_chunk_pages: crate::snapshot::DEFAULT_CHUNK_PAGES,
            streaming: false,
            streaming_memory: DEFAULT_STREAMING_MEMORY,
            spill_dir: std::env::temp_dir().join("weir-spill"),
            heartbeat_interval: None,
            retained_wal_alarm: 1 << 30,
            on_slot_lost: OnSlotLost::Fail,
            publish_via_partition_root: false,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("tables", &self.tables)
            .field("table_patterns", &self.table_patterns)
            .field("all_tables", &self.all_tables)
            .field("create_slot", &self.create_slot)
            .field("create_publication", &self.create_publication)
            .field("binary", &self.binary)
            .field("status_interval", &self.status_interval)
            .field("slot_wait", &self.slot_wait)
            .field("max_batch", &self.max_batch)
            .field("max_batch_delay", &self.max_batch_delay)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("require_auth", &self.require_auth.text)
            .finish()
    }
}

impl PostgresConfig {
    /// `host:port` (or the socket path), for messages.
    pub fn address(&self) -> String {
        if self.is_unix_socket() {
            format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(crate) fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// Rejects settings that cannot work before anything is opened.
    pub fn validate(&self) -> Result<(), PgError> {
        let bad = |msg: String| Err(PgError::Config(msg));
        if self.host.is_empty() {
            return bad("postgres: host is empty".into());
        }
        if self.user.is_empty() {
            return bad("postgres: user is empty".into());
        }
        if self.dbname.is_empty() {
            return bad("postgres: dbname is empty".into());
        }
        // Postgres itself only allows these characters in slot names; checking
        // here lets the name go into replication commands without quoting.
        if self.slot.is_empty()
            || self.slot.len() > 63
            || !self
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return bad(format!(
                "postgres: slot name {:?} is invalid: use 1 to 63 lower-case letters, digits and '_'",
                self.slot
            ));
        }
        if self.publication.is_empty() || self.publication.contains('\0') {
            return bad(format!(
                "postgres: publication name {:?} is invalid",
                self.publication
            ));
        }
        if !self.all_tables && self.tables.is_empty() && self.table_patterns.is_empty() {
            return bad(format!(
                "postgres: no tables to capture for publication {:?}: list tables or set all_tables",
                self.publication
            ));
        }
        if self.max_batch == 0 {
            return bad("postgres: max_batch must be at least 1".into());
        }
        if self.status_interval.is_zero() {
            return bad("postgres: status_interval must be positive".into());
        }
        self.validate_tls()?;
        if self.max_message_bytes < MIN_MAX_MESSAGE_BYTES {
            return bad(format!(
                "postgres: max_message_bytes {} is below the minimum of {MIN_MAX_MESSAGE_BYTES}",
                self.max_message_bytes
            ));
        }
        Ok(())
    }

    /// Checks `ssl_mode` against `ssl_root_cert`; part of [`validate`](Self::validate).
    pub fn validate_tls(&self) -> Result<(), PgError> {
        self.ssl_mode
            .check_root_cert(self.ssl_root_cert.as_deref())
            .map_err(|m| PgError::Config(format!("postgres: {m}")))
    }

    /// The ordinary (non-replication) connection settings. TLS is
    /// negotiated before tokio-postgres gets the stream, so it must not
    /// ask again.
    pub(crate) fn sql_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.ssl_mode(tokio_postgres::config::SslMode::Disable)
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name);
        if let Some(p) = &self.password {
            c.password(p);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password() {
        let c = PostgresConfig {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }

    #[test]
    fn validates_names() {
        let ok = PostgresConfig {
            tables: vec![("public".into(), "t".into())],
            ..Default::default()
        };
        ok.validate().unwrap();
        let bad_slot = PostgresConfig {
            slot: "Bad-Slot".into(),
            ..ok.clone()
        };
        assert!(
            bad_slot
                .validate()
                .unwrap_err()
                .to_string()
                .contains("Bad-Slot")
        );
        let no_tables = PostgresConfig {
            tables: vec![],
            ..ok.clone()
        };
        assert!(no_tables.validate().is_err());
        let all = PostgresConfig {
            all_tables: true,
            ..no_tables
        };
        all.validate().unwrap();
    }

    #[test]
    fn modes_parse_with_libpq_names() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(m.parse::<SslMode>().unwrap().to_string(), m);
        }
        let e = "verify_full".parse::<SslMode>().unwrap_err();
        assert!(
            e.contains("verify_full") && e.contains("verify-full"),
            "{e}"
        );
    }

    #[test]
    fn require_auth_lists() {
        use AuthMethod::*;
        let allowed = |s: &str| {
            let r: RequireAuth = s.parse().unwrap();
            AuthMethod::ALL
                .into_iter()
                .filter(|m| r.allows(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(""), [Password, Md5, ScramSha256, None]);
        assert_eq!(allowed("scram-sha-256"), [ScramSha256]);
        assert_eq!(allowed("md5, scram-sha-256"), [Md5, ScramSha256]);
        assert_eq!(allowed("!password,!none"), [Md5, ScramSha256]);
        for (bad, needle) in [
            ("scram", "unknown method \"scram\""),
            ("md5,!none", "mixes"),
            ("md5,md5", "twice"),
            ("md5,", "unknown method \"\""),
        ] {
            let e = bad.parse::<RequireAuth>().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let c = PostgresConfig {
            tables: vec![("public".into(), "t".into())],
            ssl_mode: SslMode::VerifyCa,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("verify-ca needs sslrootcert"), "{e}");
        PostgresConfig {
            ssl_root_cert: Some("ca.pem".into()),
            ..c
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn address_forms() {
        let mut c = PostgresConfig::default();
        assert_eq!(c.address(), "127.0.0.1:5432");
        c.host = "::1".into();
        assert_eq!(c.address(), "[::1]:5432");
        c.host = "/var/run/postgresql/".into();
        assert_eq!(c.address(), "/var/run/postgresql/.s.PGSQL.5432");
    }
}
