//! Configuration of the `redis` sink, as written under `[sinks.NAME]`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use weir_codec::{NameTemplate, TemplateUse};
use weir_core::{Capabilities, Readback, Sink, SinkError};

use crate::Encoding;
use crate::registry::{OpenReadback, SinkSpec};

/// Settings of a `redis` sink.
///
/// ```toml
/// [sinks.cache]
/// type = "redis"
/// url = "redis://cache-1:6379/0"
/// password = "${REDIS_PASSWORD}"
/// mode = "cache"
/// format = "hash"
/// key = "{schema}:{table}:{key}"
/// ttl = "7d"
/// ```
///
/// In `cache` mode every row is one Redis key that holds the row's current
/// value (a JSON object or a hash), written only if no later change of the
/// row was written before it. In `stream` mode every record is appended to
/// a Redis stream with `XADD`, under an entry id made from its position, so
/// that a replay after a crash adds no duplicate.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// The server: `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`, or
    /// `rediss://…` for TLS (checked against the system's trust store).
    pub url: String,
    /// The password, when it is not in `url`; write `"${ENV_VAR}"` rather
    /// than the password. Neither it nor the URL's password appears in logs
    /// or error messages.
    pub password: Option<String>,
    /// `"cache"` (the default): one key per row, holding its current value.
    /// `"stream"`: one stream entry per record, a log.
    #[serde(default)]
    pub mode: Mode,
    /// Cache mode: how a row is stored. `"json"` (the default): a string
    /// holding the row as a JSON object `{"column": value}`, values as in
    /// the native JSON envelope. `"hash"`: a hash with one field per
    /// column, values as plain text; a NULL column has no field.
    #[serde(default)]
    pub format: Format,
    /// Cache mode: the key of a row. `{schema}`, `{table}`, `{key}` (every
    /// key column, joined with `:`) and `{key.COLUMN}` are filled in. It
    /// must hold a key placeholder, and before it `{table}` and fixed text
    /// (a separator), so that a truncate can find a table's keys with one
    /// `SCAN` pattern. Default: `"{schema}:{table}:{key}"`.
    #[serde(default = "default_key")]
    pub key: String,
    /// Cache mode: how long a row's key lives after its last write
    /// (`"1h"`, `"7d"`). Default: forever.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ttl: Option<Duration>,
    /// Cache mode: how long a deleted row's tombstone (its key's last
    /// version) is kept. While it is, a replayed older write of the row is
    /// refused; after it expires, such a replay could bring the row back.
    /// Replays only cover changes not yet acknowledged to Postgres, normally
    /// seconds old, so the default of `"1d"` is generous. `"0s"` keeps
    /// tombstones forever (one small key per deleted row).
    #[serde(
        default = "default_tombstone_ttl",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub tombstone_ttl: Duration,
    /// Cache mode: prefix of the keys Weir keeps its versions in: the
    /// version of each row in `"json"` format, the tombstones of deleted
    /// rows, and the position of each table's last truncate.
    /// Default: `"weir:v:"`.
    #[serde(default = "default_version_prefix")]
    pub version_prefix: String,
    /// Stream mode: the stream of a change event that the router did not
    /// give one; `{schema}`, `{table}` and `{op}` are filled in.
    /// Default: `"weir:{schema}:{table}"`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Stream mode: the stream of a logical decoding message; `{prefix}` is
    /// filled in. Default: `"weir:messages"`.
    #[serde(default = "default_message_stream")]
    pub message_stream: String,
    /// Stream mode: the stream of a raw record (bytes a plugin emitted, a
    /// dead letter). Default: `"weir:raw"`.
    #[serde(default = "default_raw_stream")]
    pub raw_stream: String,
    /// Stream mode: keep each stream to about this many entries
    /// (`XADD … MAXLEN ~ N`; Redis trims whole nodes, so a stream may hold
    /// a few more). Default: no limit.
    pub maxlen: Option<u64>,
    /// How change events are encoded in stream mode's `value` (and `key`)
    /// field: `"json"`, the native JSON envelope (the default), or
    /// `"debezium"`, Debezium's PostgreSQL connector value and key.
    #[serde(default)]
    pub encoding: Encoding,
    /// Settings of `encoding = "debezium"`, as a `[sinks.NAME.debezium]` table.
    pub debezium: Option<weir_codec::DebeziumConfig>,
    /// How long connecting may take. Default: `"10s"`.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// How long a batch's replies may take before the batch fails (and is
    /// written again). Default: `"30s"`.
    #[serde(
        default = "default_response_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub response_timeout: Duration,
    /// Most records sent in one pipeline (one round trip). Default: 1000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

/// What a `redis` sink writes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One key per row, holding its current value.
    #[default]
    Cache,
    /// One stream entry per record.
    Stream,
}

/// How cache mode stores a row.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A string: the row as a JSON object.
    #[default]
    Json,
    /// A hash: a field per column, values as text.
    Hash,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    weir_core::duration::deserialize(d).map(Some)
}

fn default_key() -> String {
    "{schema}:{table}:{key}".to_owned()
}

fn default_tombstone_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_version_prefix() -> String {
    "weir:v:".to_owned()
}

fn default_stream() -> String {
    "weir:{schema}:{table}".to_owned()
}

fn default_message_stream() -> String {
    "weir:messages".to_owned()
}

fn default_raw_stream() -> String {
    "weir:raw".to_owned()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_batch_size() -> usize {
    1000
}

/// A cache key template split where its first key placeholder starts: the
/// table part names a table's keys (`SCAN` finds them by its expansion),
/// the whole names a row.
#[derive(Clone, Debug)]
pub(crate) struct KeyTemplate {
    /// The whole template.
    pub(crate) row: NameTemplate,
    /// Everything before the first `{key…}` placeholder.
    pub(crate) table: NameTemplate,
}

impl KeyTemplate {
    /// Parses and checks a cache key template; the error says what is wrong.
    pub(crate) fn parse(template: &str) -> Result<KeyTemplate, String> {
        let row = NameTemplate::parse(template)?;
        if !row.uses_key() {
            return Err(
                "must hold {key} or {key.COLUMN}, or every row of a table would share one key"
                    .to_owned(),
            );
        }
        for banned in ["{op}", "{prefix}"] {
            if template.contains(banned) {
                return Err(format!(
                    "must not hold {banned}: a row keeps one key whatever changes it"
                ));
            }
        }
        let at = template
            .find("{key}")
            .into_iter()
            .chain(template.find("{key."))
            .min()
            .expect("uses_key");
        let table_part = &template[..at];
        if !table_part.contains("{table}") {
            return Err(
                "must hold {table} before the first key placeholder, so that a truncate \
                 finds one table's keys with one SCAN pattern"
                    .to_owned(),
            );
        }
        if table_part.ends_with('}') {
            return Err(
                "needs fixed text (a separator such as ':') right before the first key \
                 placeholder, so that one table's keys are not a prefix of another's"
                    .to_owned(),
            );
        }
        let table = NameTemplate::parse(table_part)?;
        Ok(KeyTemplate { row, table })
    }
}

/// The sink's key template and the routes' ones, each parsed once.
#[derive(Clone, Debug)]
pub(crate) struct KeyTemplates {
    default: Arc<KeyTemplate>,
    routed: HashMap<String, Result<Arc<KeyTemplate>, String>>,
}

impl KeyTemplates {
    /// Starts with the sink's own `key` template.
    pub(crate) fn new(default: &str) -> Result<KeyTemplates, String> {
        Ok(KeyTemplates {
            default: Arc::new(KeyTemplate::parse(default)?),
            routed: HashMap::new(),
        })
    }

    /// The template for records routed with `topic`: the sink's own for
    /// `None`; the error says why a route's does not parse.
    pub(crate) fn get(&mut self, topic: Option<&str>) -> Result<Arc<KeyTemplate>, String> {
        match topic {
            None => Ok(Arc::clone(&self.default)),
            Some(t) => {
                // Looked up before an entry is made: the common case, a
                // template seen before, allocates nothing.
                if !self.routed.contains_key(t) {
                    let parsed = KeyTemplate::parse(t)
                        .map(Arc::new)
                        .map_err(|e| format!("key {t:?} {e}"));
                    self.routed.insert(t.to_owned(), parsed);
                }
                self.routed[t].clone()
            }
        }
    }
}

impl RedisSinkConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSinkConfig {
            url: url.into(),
            password: None,
            mode: Mode::default(),
            format: Format::default(),
            key: default_key(),
            ttl: None,
            tombstone_ttl: default_tombstone_ttl(),
            version_prefix: default_version_prefix(),
            stream: default_stream(),
            message_stream: default_message_stream(),
            raw_stream: default_raw_stream(),
            maxlen: None,
            encoding: Encoding::default(),
            debezium: None,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            batch_size: default_batch_size(),
        }
    }

    /// Checks a name template given outside the section (a route's topic)
    /// as this sink would use it for records of kind `used_for`.
    pub fn check_template(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        match self.mode {
            Mode::Cache if used_for == TemplateUse::Change => {
                KeyTemplate::parse(template).map(|_| ())
            }
            // Cache mode ignores logical messages and refuses raw records.
            Mode::Cache => NameTemplate::parse(template).map(|_| ()),
            Mode::Stream => {
                let parsed = NameTemplate::parse(template)?;
                if parsed.shortest(used_for).is_empty() {
                    return Err("can expand to an empty stream name; add fixed text".to_owned());
                }
                Ok(())
            }
        }
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.encoding.validate(self.debezium.as_ref());
        match url_scheme(&self.url) {
            Some("redis" | "rediss") => {}
            _ => problems.push(format!(
                "url: {:?} is not a redis:// or rediss:// URL",
                redact_url(&self.url)
            )),
        }
        match self.mode {
            Mode::Cache => {
                if let Err(e) = KeyTemplate::parse(&self.key) {
                    problems.push(format!("key: {:?} {e}", self.key));
                }
                if self.version_prefix.is_empty() {
                    problems.push(
                        "version_prefix: must not be empty (versions would mix with rows)"
                            .to_owned(),
                    );
                }
                if self.ttl.is_some_and(|t| t.as_millis() == 0) {
                    problems.push("ttl: must be at least 1ms (leave it out for no expiry)".into());
                }
                if self.maxlen.is_some() {
                    problems.push("maxlen: only for mode = \"stream\"".to_owned());
                }
            }
            Mode::Stream => {
                for (field, template, used_for) in [
                    ("stream", &self.stream, TemplateUse::Change),
                    ("message_stream", &self.message_stream, TemplateUse::Message),
                    ("raw_stream", &self.raw_stream, TemplateUse::Raw),
                ] {
                    if let Err(e) = self.check_template(template, used_for) {
                        problems.push(format!("{field}: {template:?} {e}"));
                    }
                }
                if self.format != Format::Json {
                    problems.push("format: only for mode = \"cache\"".to_owned());
                }
                if self.ttl.is_some() {
                    problems.push(
                        "ttl: only for mode = \"cache\" (bound a stream with maxlen)".to_owned(),
                    );
                }
                if self.maxlen == Some(0) {
                    problems.push("maxlen: must be at least 1".to_owned());
                }
            }
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if timeout.is_zero() {
                problems.push(format!("{field}: must be at least 1ms"));
            }
        }
        if self.batch_size == 0 {
            problems.push("batch_size: must be at least 1".to_owned());
        }
        problems
    }

    /// The URL with any password in it replaced by `<redacted>`, for messages.
    pub(crate) fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

fn url_scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

/// `url` with the password of its user-info part replaced.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: it might be a bare password pasted in the wrong field.
        return "<not a URL>".to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:<redacted>{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for RedisSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("mode", &self.mode)
            .field("format", &self.format)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("tombstone_ttl", &self.tombstone_ttl)
            .field("version_prefix", &self.version_prefix)
            .field("stream", &self.stream)
            .field("message_stream", &self.message_stream)
            .field("raw_stream", &self.raw_stream)
            .field("maxlen", &self.maxlen)
            .field("encoding", &self.encoding)
            .field("debezium", &self.debezium)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl SinkSpec for RedisSinkConfig {
    fn validate(&self) -> Vec<String> {
        RedisSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        match self.mode {
            Mode::Cache => Capabilities {
                max_batch_records: self.batch_size,
                max_batch_bytes: 64 << 20,
                needs_key: true,
                applies_state: true,
                accepts_raw: false,
            },
            Mode::Stream => Capabilities {
                max_batch_records: self.batch_size,
                max_batch_bytes: 64 << 20,
                ..Capabilities::LOG
            },
        }
    }

    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        self.check_template(template, used_for)
    }

    fn takes_dead_letters(&self) -> Result<(), String> {
        match self.mode {
            Mode::Cache => Err("a cache holds rows, not dead letters; use a log sink \
                 (file, Kafka, HTTP)"
                .to_owned()),
            // Entry ids come from the source position, and dead letters from
            // two sinks can share one: the second would be refused as a
            // replay and lost.
            Mode::Stream => Err("stream entry ids come from the source position, which \
                 dead letters from several sinks share, so some would be dropped as \
                 replays; use a file, Kafka or HTTP sink"
                .to_owned()),
        }
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::RedisSink::connect(name, self.clone())
                .await
                .map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn readback<'a>(&'a self, name: &'a str) -> Result<OpenReadback<'a>, String> {
        match self.mode {
            Mode::Cache => Ok(Box::pin(async move {
                super::readback::RedisReadback::open(name, self)
                    .await
                    .map(|r| Box::new(r) as Box<dyn Readback>)
            })),
            Mode::Stream => Err("in stream mode it appends every change to a stream, a log \
                 rather than rows, so there is no state to compare with the source's"
                .to_owned()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
