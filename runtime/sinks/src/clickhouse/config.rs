//! Configuration of the `clickhouse` sink, as written under `[sinks.NAME]`.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use weir_codec::{NameTemplate, TemplateUse};
use weir_core::{Capabilities, Sink, SinkError};

use crate::registry::{OpenReadback, SinkSpec};

/// ClickHouse splits an HTTP insert into blocks of `max_insert_block_size`
/// rows (1,048,576 by default), and only a block is atomic: a batch stays
/// within one block so that it is written whole or not at all.
pub(crate) const MAX_BATCH_RECORDS: usize = 1_000_000;

/// Settings of a `clickhouse` sink.
///
/// ```toml
/// [sinks.analytics]
/// type = "clickhouse"
/// url = "http://clickhouse:8123"
/// user = "weir"
/// password = "${CLICKHOUSE_PASSWORD}"
/// database = "cdc"
/// table = "{schema}_{table}"
/// ```
///
/// Each captured table becomes one `ReplacingMergeTree(_weir_version)`
/// table ordered by the source's key columns, with two more columns:
/// `_weir_version` (the change's position in the stream) and
/// `_weir_deleted` (1 for a deleted row). Read the current rows with
/// `SELECT … FROM t FINAL WHERE _weir_deleted = 0`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// The server's HTTP interface, `http://host:port` or `https://host:port`.
    /// Default: `"http://127.0.0.1:8123"`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The ClickHouse user. Default: `"default"`.
    #[serde(default = "default_user")]
    pub user: String,
    /// The user's password; write `"${ENV_VAR}"` rather than the password.
    /// It never appears in logs or error messages. Default: none.
    pub password: Option<String>,
    /// The database of a table, a name template: `{schema}` and `{table}`
    /// are replaced by the source table's schema and name. Default:
    /// `"default"`.
    #[serde(default = "default_database")]
    pub database: String,
    /// The table a source table is written to, a name template with
    /// `{schema}` and `{table}`. A route's `topic` overrides it. Each table
    /// holds one source table: a template giving two source tables one
    /// table stops the sink. Default: `"{schema}_{table}"`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Whether to create a missing database and table from the source
    /// table's columns the first time a change of it arrives. An existing
    /// table is always checked: one of another shape stops the sink with an
    /// error naming the column. Default: `true`.
    #[serde(default = "default_true")]
    pub create_tables: bool,
    /// Most records in one batch, at most 1,000,000 (one ClickHouse insert
    /// block, so a batch is written whole or not at all). Default: 100,000.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// Most bytes in one batch, roughly as encoded. Default: 32 MiB.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// How long one request (an insert, a lookup, a DDL statement) may take
    /// before its batch fails and is retried. Default: `"60s"`.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// How long connecting to the server may take. Default: `"10s"`.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
}

fn default_url() -> String {
    "http://127.0.0.1:8123".to_owned()
}

fn default_user() -> String {
    "default".to_owned()
}

fn default_database() -> String {
    "default".to_owned()
}

fn default_table() -> String {
    "{schema}_{table}".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_max_batch_records() -> usize {
    100_000
}

fn default_max_batch_bytes() -> usize {
    32 << 20
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ClickHouseSinkConfig {
    /// A configuration for the server at `url` with every other field at
    /// its default.
    pub fn new(url: impl Into<String>) -> Self {
        ClickHouseSinkConfig {
            url: url.into(),
            user: default_user(),
            password: None,
            database: default_database(),
            table: default_table(),
            create_tables: true,
            max_batch_records: default_max_batch_records(),
            max_batch_bytes: default_max_batch_bytes(),
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
        }
    }

    /// Checks a database or table name template: a table must be the same
    /// for every change of a row (so no `{op}` or `{key}`), and never empty.
    pub fn check_name_template(template: &str) -> Result<(), String> {
        let parsed = NameTemplate::parse(template)?;
        if parsed.uses_key() {
            return Err(
                "must not use {key} or {key.COLUMN}: every change of a row must reach one table"
                    .to_owned(),
            );
        }
        for placeholder in ["{op}", "{prefix}"] {
            if template.contains(placeholder) {
                return Err(format!(
                    "must not use {placeholder}: every change of a row must reach one table \
                     (use {{schema}} and {{table}})"
                ));
            }
        }
        if parsed.shortest(TemplateUse::Change).is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(())
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.trim_matches('/').is_empty() => {
                if reqwest::Url::parse(&self.url).is_err() {
                    problems.push(format!("url: {:?} is not a valid URL", self.url));
                } else if rest.contains('@') {
                    problems
                        .push("url: must not hold credentials; use user and password".to_owned());
                }
            }
            _ => problems.push(format!(
                "url: {:?} must be http://host:port or https://host:port",
                self.url
            )),
        }
        if self.user.is_empty() {
            problems.push("user: must not be empty".to_owned());
        }
        for (field, template) in [("database", &self.database), ("table", &self.table)] {
            if let Err(e) = Self::check_name_template(template) {
                problems.push(format!("{field}: {template:?} {e}"));
            }
        }
        if !(1..=MAX_BATCH_RECORDS).contains(&self.max_batch_records) {
            problems.push(format!(
                "max_batch_records: must be between 1 and {MAX_BATCH_RECORDS}, not {}",
                self.max_batch_records
            ));
        }
        if self.max_batch_bytes < 1024 {
            problems.push(format!(
                "max_batch_bytes: must be at least 1024, not {}",
                self.max_batch_bytes
            ));
        }
        for (field, timeout) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() {
                problems.push(format!("{field}: must be longer than zero"));
            }
        }
        problems
    }
}

impl fmt::Debug for ClickHouseSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSinkConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("table", &self.table)
            .field("create_tables", &self.create_tables)
            .field("max_batch_records", &self.max_batch_records)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl SinkSpec for ClickHouseSinkConfig {
    fn validate(&self) -> Vec<String> {
        ClickHouseSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_records: self.max_batch_records,
            max_batch_bytes: self.max_batch_bytes,
            needs_key: true,
            applies_state: true,
            accepts_raw: false,
        }
    }

    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        match used_for {
            TemplateUse::Change => Self::check_name_template(template),
            TemplateUse::Message | TemplateUse::Raw => {
                // Messages are ignored and raw records refused before the
                // sink: no name is ever made from the template for them.
                NameTemplate::parse(template).map(|_| ())
            }
        }
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::ClickHouseSink::connect(name, self.clone())
                .await
                .map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn readback<'a>(&'a self, name: &'a str) -> Result<OpenReadback<'a>, String> {
        Ok(Box::pin(async move {
            super::ClickHouseReadback::connect(name, self.clone())
                .await
                .map(|r| Box::new(r) as Box<dyn weir_core::Readback>)
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
