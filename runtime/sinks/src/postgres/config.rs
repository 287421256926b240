//! Configuration of the `postgres` sink, as written under `[sinks.NAME]`.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;

use futures::future::BoxFuture;
use weir_codec::{NameTemplate, TemplateUse};
use weir_core::{Capabilities, Sink, SinkError};
use weir_postgres::{PostgresConfig, RequireAuth, SslMode};

use crate::registry::{OpenReadback, SinkSpec};

/// Settings of a `postgres` sink.
///
/// ```toml
/// [sinks.replica]
/// type = "postgres"
/// host = "replica.internal"
/// database = "analytics"
/// user = "weir"
/// password = "${REPLICA_PASSWORD}"
/// table = "mirror.{table}"
/// create_tables = true
/// ```
///
/// Each batch is applied in one transaction of the target database, which
/// also records how far this sink got in `progress_table`; records at or
/// before that position are skipped, so a replay after a crash changes
/// nothing: every change takes effect exactly once.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Host name or IP address of the target server (a value starting with
    /// `/` is the directory of its Unix socket). Default: `"127.0.0.1"`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port of the target server. Default: 5432.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Role to connect as. It needs INSERT, UPDATE, DELETE and TRUNCATE on
    /// the target tables, and CREATE on the schema of `progress_table` the
    /// first time (and of the tables, with `create_tables`). Default: `"postgres"`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password, if the server asks for one; write `"${ENV_VAR}"` rather
    /// than the password. It never appears in logs or error messages.
    pub password: Option<String>,
    /// The target database.
    pub database: String,
    /// TLS, with libpq's meanings: `disable`, `prefer` (the default),
    /// `require`, `verify-ca` or `verify-full`, as for the source.
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the CA certificate(s) the server's certificate must
    /// chain to (needed by `verify-ca` and `verify-full`).
    pub sslrootcert: Option<PathBuf>,
    /// Send the password when the server asks for it in cleartext over an
    /// unencrypted connection. Default: off.
    #[serde(default)]
    pub allow_cleartext_password: bool,
    /// Authentication methods the server may use, as libpq's
    /// `require_auth` (see the source's option). Unset: any.
    #[serde(default)]
    pub require_auth: RequireAuth,
    /// The target table of a change the router did not give a name:
    /// `schema.table` or `table` (then the role's `search_path` decides),
    /// with `{schema}`, `{table}` and `{op}` replaced by the change's. Each
    /// part is quoted as an identifier, so names keep their case and any
    /// character. Default: `"{schema}.{table}"`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Create a target table that does not exist, from the source table's
    /// columns (the source's type names, the key as primary key). When
    /// `false` (the default) a missing table stops the sink with an error.
    /// Columns added to the source later are not added to the target.
    #[serde(default)]
    pub create_tables: bool,
    /// The table holding each sink's applied position (`schema.table` or
    /// `table`), created when missing. Default: `"weir_progress"`.
    #[serde(default = "default_progress_table")]
    pub progress_table: String,
    /// Most records applied in one target transaction. Larger batches
    /// amortise the commit when Weir is behind; smaller ones hold locks
    /// for less time. Default: 5000.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// Shown in the target's `pg_stat_activity`. Default: `"weir-NAME"`.
    pub application_name: Option<String>,
}

/// Why a table name with `{op}` cannot be verified.
pub(crate) const SPREAD_BY_OP: &str = "its table name uses {op}, which spreads each source table over a table per kind of \
     change, so no one table holds the rows to compare";

fn default_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_port() -> u16 {
    5432
}

fn default_user() -> String {
    "postgres".to_owned()
}

fn default_table() -> String {
    "{schema}.{table}".to_owned()
}

fn default_progress_table() -> String {
    "weir_progress".to_owned()
}

fn default_max_batch_records() -> usize {
    5000
}

/// A name template split at its one `.` outside placeholders: the schema
/// part (when there is one) and the table part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableTemplate {
    pub(crate) schema: Option<NameTemplate>,
    pub(crate) table: NameTemplate,
}

impl TableTemplate {
    /// Parses `schema.table` or `table`, each part a name template.
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let dots = split_outside_braces(template);
        let (schema, table) = match dots.as_slice() {
            [] => (None, template),
            [at] => (Some(&template[..*at]), &template[at + 1..]),
            _ => {
                return Err(
                    "has more than one '.' outside placeholders: write schema.table or table \
                     (a dot inside a name comes from a placeholder's value, which is quoted)"
                        .to_owned(),
                );
            }
        };
        let schema = schema.map(NameTemplate::parse).transpose()?;
        let table = NameTemplate::parse(table)?;
        let this = TableTemplate { schema, table };
        if this.table.uses_key() || this.schema.as_ref().is_some_and(NameTemplate::uses_key) {
            return Err(
                "uses {key}: a table per row cannot be what is meant; use {schema}, {table} \
                 and {op}"
                    .to_owned(),
            );
        }
        if this.table.shortest(TemplateUse::Change).is_empty() {
            return Err("has an empty table name".to_owned());
        }
        if this
            .schema
            .as_ref()
            .is_some_and(|s| s.shortest(TemplateUse::Change).is_empty())
        {
            return Err("has an empty schema name before the '.'".to_owned());
        }
        Ok(this)
    }
}

/// Byte offsets of the `.`s of `template` that are not inside `{…}`.
fn split_outside_braces(template: &str) -> Vec<usize> {
    let mut depth = 0usize;
    let mut dots = Vec::new();
    for (i, c) in template.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => dots.push(i),
            _ => {}
        }
    }
    dots
}

/// `schema.table` or `table` of a fixed name such as `progress_table`.
pub(crate) fn split_fixed_name(name: &str) -> Result<(Option<&str>, &str), String> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok((None, t)),
        [s, t] if !s.is_empty() && !t.is_empty() => Ok((Some(s), t)),
        _ => Err(format!("{name:?} is not schema.table or table")),
    }
}

impl PostgresSinkConfig {
    /// A configuration for `database` with every other field at its default.
    pub fn new(database: impl Into<String>) -> Self {
        PostgresSinkConfig {
            host: default_host(),
            port: default_port(),
            user: default_user(),
            password: None,
            database: database.into(),
            sslmode: SslMode::default(),
            sslrootcert: None,
            allow_cleartext_password: false,
            require_auth: RequireAuth::default(),
            table: default_table(),
            create_tables: false,
            progress_table: default_progress_table(),
            max_batch_records: default_max_batch_records(),
            application_name: None,
        }
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("host", &self.host),
            ("user", &self.user),
            ("database", &self.database),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{field}: must not be empty"));
            }
        }
        if let Err(e) = TableTemplate::parse(&self.table) {
            problems.push(format!("table: {:?} {e}", self.table));
        }
        if let Err(e) = split_fixed_name(&self.progress_table) {
            problems.push(format!("progress_table: {e}"));
        }
        if self.max_batch_records == 0 {
            problems.push("max_batch_records: must be at least 1".to_owned());
        }
        if let Err(e) = self.sslmode.check_root_cert(self.sslrootcert.as_deref()) {
            problems.push(format!("sslrootcert: {e}"));
        }
        problems
    }

    /// The connection settings for `weir-postgres`'s connector.
    pub(crate) fn connection(&self, sink_name: &str) -> PostgresConfig {
        PostgresConfig {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            dbname: self.database.clone(),
            application_name: self
                .application_name
                .clone()
                .unwrap_or_else(|| format!("weir-{sink_name}")),
            ssl_mode: self.sslmode,
            ssl_root_cert: self.sslrootcert.clone(),
            allow_cleartext_password: self.allow_cleartext_password,
            require_auth: self.require_auth.clone(),
            ..PostgresConfig::default()
        }
    }
}

impl fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .field("require_auth", &self.require_auth.to_string())
            .field("table", &self.table)
            .field("create_tables", &self.create_tables)
            .field("progress_table", &self.progress_table)
            .field("max_batch_records", &self.max_batch_records)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl SinkSpec for PostgresSinkConfig {
    fn validate(&self) -> Vec<String> {
        PostgresSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_records: self.max_batch_records,
            max_batch_bytes: usize::MAX,
            needs_key: true,
            applies_state: true,
            accepts_raw: false,
        }
    }

    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        if used_for == TemplateUse::Raw {
            return Err(
                "a postgres sink applies row changes and cannot take raw records".to_owned(),
            );
        }
        TableTemplate::parse(template).map(|_| ())
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::PostgresSink::connect(name, self.clone())
                .await
                .map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn readback<'a>(&'a self, name: &'a str) -> Result<OpenReadback<'a>, String> {
        if self.table.contains("{op}") {
            return Err(SPREAD_BY_OP.to_owned());
        }
        Ok(Box::pin(async move {
            super::PostgresReadback::connect(name, self.clone())
                .await
                .map(|r| Box::new(r) as Box<dyn weir_core::Readback>)
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
