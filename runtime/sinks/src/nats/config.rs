//! Configuration of the `nats` sink, as written under `[sinks.NAME]`.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use weir_codec::TemplateUse;
use weir_core::{Capabilities, Readback, Sink, SinkError};

use crate::Encoding;
use crate::registry::{OpenReadback, SinkSpec};

use super::names::{KeyTemplate, check_store_name, check_subject_template, stream_subjects};

/// Settings of a `nats` sink.
///
/// ```toml
/// [sinks.events]
/// type = "nats"
/// url = "nats://127.0.0.1:4222"
/// stream = "WEIR"
/// create_stream = true
///
/// [sinks.cache]
/// type = "nats"
/// url = "nats://127.0.0.1:4222"
/// mode = "kv"
/// bucket = "rows"
/// create_bucket = true
/// ```
///
/// In `jetstream` mode each record is one message on a subject, published
/// with a `Nats-Msg-Id` made of its position so the stream drops what a
/// replay sends again within its duplicate window. In `kv` mode each row
/// is one key of a KV bucket holding the row as JSON, guarded by the
/// change's position.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// The servers, `nats://host:port` (or `host:port`), separated by commas.
    pub url: String,
    /// `"jetstream"` (the default): every record is a message in a stream.
    /// `"kv"`: the rows' latest state in a KV bucket, as a cache.
    #[serde(default)]
    pub mode: NatsMode,
    /// jetstream: the subject of a change event the router gave none;
    /// `{schema}`, `{table}`, `{op}`, `{key}` and `{key.COLUMN}` are
    /// filled in. A filled-in subject with a space, a `*`/`>` or an empty
    /// token refuses its record (dead letter). Default: `"weir.{schema}.{table}"`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// jetstream: the subject of a logical decoding message; the prefix is
    /// in the `weir.prefix` header. Default: `"weir.message"`.
    #[serde(default = "default_message_subject")]
    pub message_subject: String,
    /// jetstream: the subject of a raw record (a plugin's own bytes, a dead
    /// letter). Default: `"weir.raw"`.
    #[serde(default = "default_raw_subject")]
    pub raw_subject: String,
    /// jetstream: the stream the subjects belong to (required). Publishes
    /// name it (`Nats-Expected-Stream`), so a subject that another stream
    /// captures is refused rather than written there.
    pub stream: Option<String>,
    /// jetstream: create `stream` when it does not exist, listening on the
    /// three subject templates' leading fixed tokens followed by `>`
    /// (`weir.>` for the defaults). Without it, a missing stream stops the
    /// sink at start. Default: `false`.
    #[serde(default)]
    pub create_stream: bool,
    /// jetstream: the duplicate window of a stream the sink creates: how
    /// long the stream remembers a `Nats-Msg-Id`. A replay older than this
    /// is stored again. Default: `"2m"` (the server's default).
    #[serde(
        default = "default_duplicate_window",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub duplicate_window: Duration,
    /// jetstream: how change events are encoded: `"json"`, the native JSON
    /// envelope (the default), or `"debezium"`, Debezium's PostgreSQL
    /// connector value.
    #[serde(default)]
    pub encoding: Encoding,
    /// Settings of `encoding = "debezium"`, as a `[sinks.NAME.debezium]` table.
    pub debezium: Option<weir_codec::DebeziumConfig>,
    /// kv: the bucket (required).
    pub bucket: Option<String>,
    /// kv: create `bucket` when it does not exist (history 1, file
    /// storage). Default: `false`.
    #[serde(default)]
    pub create_bucket: bool,
    /// kv: the key of a row: `{schema}`, `{table}`, `{key}` and
    /// `{key.COLUMN}`, each filled-in value escaped for KV keys (letters,
    /// digits, `-`, `_`, `/` kept; every other byte as `=XX`; an empty
    /// value as `=00`). `{table}` must come before the row's key.
    /// Default: `"{schema}.{table}.{key}"`.
    #[serde(default = "default_key")]
    pub key: String,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password; write `"${ENV_VAR}"`. Never shown in logs.
    pub password: Option<String>,
    /// Authentication token; write `"${ENV_VAR}"`. Never shown in logs.
    pub token: Option<String>,
    /// How long connecting to a server may take. Default: `"10s"`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// How long a publish may wait for the stream's acknowledgement, and a
    /// request (a lookup, a read) for its answer, before the batch fails
    /// and is written again. Default: `"10s"`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub request_timeout: Duration,
}

/// What a `nats` sink writes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsMode {
    /// A JetStream stream: one message per record, a log.
    #[default]
    Jetstream,
    /// A KV bucket: one key per row, its latest state.
    Kv,
}

fn default_subject() -> String {
    "weir.{schema}.{table}".to_owned()
}

fn default_message_subject() -> String {
    "weir.message".to_owned()
}

fn default_raw_subject() -> String {
    "weir.raw".to_owned()
}

fn default_key() -> String {
    "{schema}.{table}.{key}".to_owned()
}

fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl NatsSinkConfig {
    /// A configuration for `url` in `mode`, every other field at its
    /// default (`stream` or `bucket` still to set).
    pub fn new(url: impl Into<String>, mode: NatsMode) -> Self {
        NatsSinkConfig {
            url: url.into(),
            mode,
            subject: default_subject(),
            message_subject: default_message_subject(),
            raw_subject: default_raw_subject(),
            stream: None,
            create_stream: false,
            duplicate_window: default_duplicate_window(),
            encoding: Encoding::default(),
            debezium: None,
            bucket: None,
            create_bucket: false,
            key: default_key(),
            user: None,
            password: None,
            token: None,
            connect_timeout: default_timeout(),
            request_timeout: default_timeout(),
        }
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.encoding.validate(self.debezium.as_ref());
        if self.url.split(',').all(|u| u.trim().is_empty()) {
            problems.push("url: must list at least one server".to_owned());
        }
        // Messages name the servers, so the URL must not carry secrets.
        let has_user_info = |server: &str| {
            let rest = server.split_once("://").map_or(server, |(_, r)| r);
            rest[..rest.find('/').unwrap_or(rest.len())].contains('@')
        };
        if self.url.split(',').any(|u| has_user_info(u.trim())) {
            problems.push(
                "url: holds user info (user:password@); set user and password (or token) \
                 instead, so they never appear in logs or errors"
                    .to_owned(),
            );
        }
        match self.mode {
            NatsMode::Jetstream => self.validate_jetstream(&mut problems),
            NatsMode::Kv => self.validate_kv(&mut problems),
        }
        if self.password.is_some() != self.user.is_some() {
            problems.push("user: a user needs a password, and a password a user".to_owned());
        }
        if self.token.is_some() && self.user.is_some() {
            problems.push("token: use either a token or a user and password".to_owned());
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if timeout.is_zero() {
                problems.push(format!("{field}: must be longer than zero"));
            }
        }
        problems
    }

    fn validate_jetstream(&self, problems: &mut Vec<String>) {
        for (field, template, used_for) in [
            ("subject", &self.subject, TemplateUse::Change),
            (
                "message_subject",
                &self.message_subject,
                TemplateUse::Message,
            ),
            ("raw_subject", &self.raw_subject, TemplateUse::Raw),
        ] {
            if let Err(e) = check_subject_template(template, used_for) {
                problems.push(format!("{field}: {template:?} {e}"));
            }
        }
        match &self.stream {
            None => problems.push(
                "stream: mode \"jetstream\" needs the name of the stream the subjects belong to"
                    .to_owned(),
            ),
            Some(stream) => {
                if let Err(e) = check_store_name(stream) {
                    problems.push(format!("stream: {e}"));
                }
            }
        }
        if self.create_stream {
            if let Err(e) = stream_subjects(&self.stream_templates()) {
                problems.push(format!("create_stream: {e}"));
            }
            if self.duplicate_window.is_zero() {
                problems.push(
                    "duplicate_window: must be longer than zero, or replays are stored twice"
                        .to_owned(),
                );
            }
        }
        for (field, set) in [
            ("bucket", self.bucket.is_some()),
            ("create_bucket", self.create_bucket),
            ("key", self.key != default_key()),
        ] {
            if set {
                problems.push(format!("{field}: only for mode = \"kv\""));
            }
        }
    }

    fn validate_kv(&self, problems: &mut Vec<String>) {
        match &self.bucket {
            None => problems.push("bucket: mode \"kv\" needs a bucket".to_owned()),
            Some(bucket) => {
                if let Err(e) = check_store_name(bucket) {
                    problems.push(format!("bucket: {e}"));
                }
            }
        }
        if let Err(e) = KeyTemplate::parse(&self.key) {
            problems.push(format!("key: {:?} {e}", self.key));
        }
        for (field, set) in [
            ("stream", self.stream.is_some()),
            ("create_stream", self.create_stream),
            ("subject", self.subject != default_subject()),
            (
                "message_subject",
                self.message_subject != default_message_subject(),
            ),
            ("raw_subject", self.raw_subject != default_raw_subject()),
        ] {
            if set {
                problems.push(format!("{field}: only for mode = \"jetstream\""));
            }
        }
    }

    /// The templates a created stream must cover.
    pub(crate) fn stream_templates(&self) -> [&str; 3] {
        [&self.subject, &self.message_subject, &self.raw_subject]
    }

    /// Checks a name template given outside the section (a route's topic,
    /// the dead-letter topic): a subject in jetstream mode, a key in kv mode.
    pub fn check_topic_template(
        &self,
        template: &str,
        used_for: TemplateUse,
    ) -> Result<(), String> {
        match self.mode {
            NatsMode::Jetstream => check_subject_template(template, used_for),
            NatsMode::Kv => KeyTemplate::parse(template).map(|_| ()),
        }
    }
}

impl fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsSinkConfig")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .field("subject", &self.subject)
            .field("message_subject", &self.message_subject)
            .field("raw_subject", &self.raw_subject)
            .field("stream", &self.stream)
            .field("create_stream", &self.create_stream)
            .field("duplicate_window", &self.duplicate_window)
            .field("encoding", &self.encoding)
            .field("debezium", &self.debezium)
            .field("bucket", &self.bucket)
            .field("create_bucket", &self.create_bucket)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl SinkSpec for NatsSinkConfig {
    fn validate(&self) -> Vec<String> {
        NatsSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        match self.mode {
            NatsMode::Jetstream => Capabilities::LOG,
            NatsMode::Kv => Capabilities {
                // Every key of a batch is read, then written, concurrently;
                // this bounds the requests in flight and the memory.
                max_batch_records: 4096,
                max_batch_bytes: 64 << 20,
                needs_key: true,
                applies_state: true,
                accepts_raw: false,
            },
        }
    }

    fn takes_dead_letters(&self) -> Result<(), String> {
        match self.mode {
            // Nats-Msg-Id comes from the source position, and dead letters
            // from two sinks can share one: the stream would drop the second
            // as a duplicate.
            NatsMode::Jetstream => Err("Nats-Msg-Id comes from the source position, which \
                 dead letters from several sinks share, so the stream would drop some as \
                 duplicates; use a file, Kafka or HTTP sink"
                .to_owned()),
            NatsMode::Kv => Err("a KV bucket holds rows, not dead letters; use a log sink \
                 (file, Kafka, HTTP)"
                .to_owned()),
        }
    }

    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        self.check_topic_template(template, used_for)
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::NatsSink::connect(name, self.clone())
                .await
                .map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn readback<'a>(&'a self, name: &'a str) -> Result<OpenReadback<'a>, String> {
        match self.mode {
            NatsMode::Kv => Ok(Box::pin(async move {
                super::readback::NatsReadback::open(name, self)
                    .await
                    .map(|r| Box::new(r) as Box<dyn Readback>)
            })),
            NatsMode::Jetstream => Err("in jetstream mode it appends every record to a \
                 stream, a log rather than rows, so there is no state to compare with the \
                 source's"
                .to_owned()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
