//! Configuration of the `kafka` sink, as written under `[sinks.NAME]`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;

use std::any::Any;

use futures::future::BoxFuture;
use weir_codec::{DebeziumConfig, NameTemplate, TemplateUse};
use weir_core::{Capabilities, Sink, SinkError};

use crate::registry::SinkSpec;

use super::encode::check_topic_template;
use crate::Encoding;

/// Settings of a `kafka` sink.
///
/// ```toml
/// [sinks.events]
/// type = "kafka"
/// brokers = "kafka-1:9092,kafka-2:9092"
/// topic = "cdc.{schema}.{table}"
/// create_topics = true
/// partitions = 6
/// replication_factor = 3
/// properties = { "compression.type" = "lz4" }
/// ```
///
/// Each change event becomes one Kafka message: the key is the JSON object
/// of the row's key columns (`{"id":42}`, so every change to a row lands on
/// one partition, in commit order), the value is the native JSON envelope,
/// and the headers carry the event's position (`weir.commit_lsn`,
/// `weir.lsn`, `weir.xid`) and identity (`weir.op`, and `weir.schema` and
/// `weir.table`, or `weir.prefix` for a logical message). A raw record
/// keeps its own key, value and headers, after the three position headers.
/// With `encoding = "debezium"` the key and value are Debezium's instead,
/// and a delete is followed by a tombstone. The producer is idempotent
/// with `acks=all`: a batch counts as written only when every in-sync
/// replica has it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic of a change event that the router did not give one.
    /// `{schema}`, `{table}` and `{op}` are replaced by the event's schema,
    /// table and operation (`insert`, `update`, `delete`, `truncate`).
    /// A topic chosen by the router may use the same placeholders.
    /// Default: `"{schema}.{table}"`, or Debezium's
    /// `"PREFIX.{schema}.{table}"` (`PREFIX` is `debezium.topic_prefix`)
    /// with `encoding = "debezium"`.
    pub topic: Option<String>,
    /// The topic of a logical decoding message (`pg_logical_emit_message`)
    /// that the router did not give one; `{prefix}` is replaced by the
    /// message's prefix, which may be empty, so the template needs fixed
    /// text too. Default: `"weir.{prefix}"`, or Debezium's
    /// `"PREFIX.message"` with `encoding = "debezium"`.
    pub message_topic: Option<String>,
    /// The topic of a raw record (bytes a plugin emitted, a dead letter)
    /// that the router did not give one. A raw record fills in no
    /// placeholder. Default: `"weir.raw"`.
    #[serde(default = "default_raw_topic")]
    pub raw_topic: String,
    /// Whether to create a topic the first time a record goes to it and it
    /// does not exist yet. When `false` (the default), a missing topic stops
    /// the sink with an error, because a typo in a topic template should
    /// not quietly create topics.
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of a topic the sink creates. Default: 1.
    #[serde(default = "default_one")]
    pub partitions: i32,
    /// Replication factor of a topic the sink creates. Default: 1.
    #[serde(default = "default_one")]
    pub replication_factor: i32,
    /// How change events are encoded: `"json"`, the native JSON envelope
    /// (the default), or `"debezium"`, Debezium's PostgreSQL connector
    /// envelope (key and value as Kafka Connect JSON; each delete followed
    /// by a tombstone unless `debezium.tombstones_on_delete = false`).
    #[serde(default)]
    pub encoding: Encoding,
    /// Settings of `encoding = "debezium"`, as a `[sinks.NAME.debezium]`
    /// table: `schemas`, `topic_prefix`, `decimal_handling`,
    /// `tombstones_on_delete`, `database`. Default: Debezium's defaults.
    pub debezium: Option<DebeziumConfig>,
    /// Extra librdkafka settings (compression, batching, timeouts...), for
    /// example `{ "compression.type" = "lz4", "batch.size" = "1000000" }`.
    /// They override the sink's defaults (`linger.ms = 5`,
    /// `compression.type = none`, `max.in.flight.requests.per.connection = 5`,
    /// `partitioner = murmur2_random`, which places keys as the Java client
    /// does, `client.id = weir-NAME`). The settings the delivery
    /// guarantee rests on cannot be changed here: `enable.idempotence`,
    /// `acks`, and the brokers and timeouts, which have their own fields.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// How long a record may take to be acknowledged by the brokers,
    /// retries included, before its batch fails (and is retried as a
    /// whole). Written with a unit, like `"30s"` or `"2m"`. Default: `"30s"`.
    #[serde(
        default = "default_delivery_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub delivery_timeout: Duration,
    /// How long to wait for the brokers when connecting and when looking up
    /// or creating a topic. Default: `"10s"`.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// How to talk to the brokers: `"plaintext"` (the default), `"ssl"`
    /// (TLS), `"sasl_plaintext"` (SASL without TLS: the password crosses
    /// the network in clear with `PLAIN`) or `"sasl_ssl"`.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// PEM file of the certificate authorities that signed the brokers'
    /// certificates. Default: the system's trust store.
    pub tls_ca_file: Option<String>,
    /// PEM file of this client's certificate, for brokers that require
    /// client certificates (with `tls_key_file`).
    pub tls_cert_file: Option<String>,
    /// PEM file of this client's private key.
    pub tls_key_file: Option<String>,
    /// The SASL mechanism: `"PLAIN"`, `"SCRAM-SHA-256"`, `"SCRAM-SHA-512"`,
    /// `"GSSAPI"` (Kerberos) or `"OAUTHBEARER"`.
    pub sasl_mechanism: Option<String>,
    /// The SASL user name.
    pub sasl_username: Option<String>,
    /// The SASL password; write `"${ENV_VAR}"` rather than the password.
    /// It never appears in logs or error messages.
    pub sasl_password: Option<String>,
}

/// How a Kafka client talks to the brokers (`security.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// Neither TLS nor SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL authentication over a connection without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub(crate) fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The SASL mechanisms Weir's librdkafka is built with.
const SASL_MECHANISMS: &[&str] = &[
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "GSSAPI",
    "OAUTHBEARER",
];

/// librdkafka settings whose values are secrets: never shown, not even in
/// librdkafka's own error messages.
pub(crate) fn is_secret_property(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || matches!(
            key,
            "ssl.key.pem" | "ssl_key" | "sasl.oauthbearer.config" | "ssl.keystore.location"
        )
}

fn default_raw_topic() -> String {
    "weir.raw".to_owned()
}

fn default_one() -> i32 {
    1
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// librdkafka settings that the sink sets itself, with the field to use instead.
const FIXED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers"),
    ("metadata.broker.list", "brokers"),
    (
        "enable.idempotence",
        "(always true: it keeps order across retries)",
    ),
    (
        "acks",
        "(always all: a batch is durable only on every in-sync replica)",
    ),
    (
        "request.required.acks",
        "(always all: a batch is durable only on every in-sync replica)",
    ),
    ("message.timeout.ms", "delivery_timeout"),
    ("delivery.timeout.ms", "delivery_timeout"),
    ("security.protocol", "security_protocol"),
    ("ssl.ca.location", "tls_ca_file"),
    ("ssl.certificate.location", "tls_cert_file"),
    ("ssl.key.location", "tls_key_file"),
    ("sasl.mechanism", "sasl_mechanism"),
    ("sasl.mechanisms", "sasl_mechanism"),
    ("sasl.username", "sasl_username"),
    ("sasl.password", "sasl_password"),
];

impl KafkaSinkConfig {
    /// A configuration for `brokers` with every other field at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: None,
            message_topic: None,
            raw_topic: default_raw_topic(),
            create_topics: false,
            partitions: 1,
            replication_factor: 1,
            encoding: Encoding::default(),
            debezium: None,
            properties: BTreeMap::new(),
            delivery_timeout: default_delivery_timeout(),
            connect_timeout: default_connect_timeout(),
            security_protocol: SecurityProtocol::Plaintext,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
        }
    }

    /// The topic template of row changes: `topic`, or its default for the
    /// encoding.
    pub fn topic_template(&self) -> String {
        match (&self.topic, self.encoding) {
            (Some(topic), _) => topic.clone(),
            (None, Encoding::Debezium) => self.debezium_config().default_topic(),
            (None, Encoding::Json) => "{schema}.{table}".to_owned(),
        }
    }

    /// The topic template of logical messages: `message_topic`, or its
    /// default for the encoding.
    pub fn message_topic_template(&self) -> String {
        match (&self.message_topic, self.encoding) {
            (Some(topic), _) => topic.clone(),
            (None, Encoding::Debezium) => self.debezium_config().default_message_topic(),
            (None, Encoding::Json) => "weir.{prefix}".to_owned(),
        }
    }

    /// The Debezium settings, their defaults when the table is absent.
    pub(crate) fn debezium_config(&self) -> DebeziumConfig {
        self.debezium.clone().unwrap_or_default()
    }

    /// Checks a topic template (a route's or the dead-letter section's
    /// topic) for records of kind `used_for`, as [`validate`](Self::validate)
    /// checks the sink's own.
    pub fn check_topic_template(template: &str, used_for: TemplateUse) -> Result<(), String> {
        check_topic_template(&NameTemplate::parse(template)?, used_for)
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.brokers.trim().is_empty() {
            problems.push("brokers: must list at least one host:port".to_owned());
        }
        problems.extend(self.encoding.validate(self.debezium.as_ref()));
        for (field, template, used_for) in [
            ("topic", &self.topic_template(), TemplateUse::Change),
            (
                "message_topic",
                &self.message_topic_template(),
                TemplateUse::Message,
            ),
            ("raw_topic", &self.raw_topic, TemplateUse::Raw),
        ] {
            if let Err(e) = Self::check_topic_template(template, used_for) {
                problems.push(format!("{field}: {template:?} {e}"));
            }
        }
        if self.partitions < 1 {
            problems.push(format!(
                "partitions: must be at least 1, not {}",
                self.partitions
            ));
        }
        if self.replication_factor < 1 {
            problems.push(format!(
                "replication_factor: must be at least 1, not {}",
                self.replication_factor
            ));
        }
        for (key, instead) in FIXED_PROPERTIES {
            if self.properties.contains_key(*key) {
                problems.push(format!("properties.\"{key}\": set by weir; use {instead}"));
            }
        }
        for (field, timeout) in [
            ("delivery_timeout", self.delivery_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() || timeout.as_millis() > i32::MAX as u128 {
                problems.push(format!("{field}: must be between 1ms and 24 days"));
            }
        }
        self.validate_security(&mut problems);
        problems
    }

    fn validate_security(&self, problems: &mut Vec<String>) {
        let protocol = self.security_protocol;
        if !protocol.tls() {
            for (field, value) in [
                ("tls_ca_file", &self.tls_ca_file),
                ("tls_cert_file", &self.tls_cert_file),
                ("tls_key_file", &self.tls_key_file),
            ] {
                if value.is_some() {
                    problems.push(format!(
                        "{field}: needs security_protocol \"ssl\" or \"sasl_ssl\", not \"{}\"",
                        protocol.as_str()
                    ));
                }
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "tls_cert_file: a client certificate needs its key, and a key its certificate: \
                 set both tls_cert_file and tls_key_file"
                    .to_owned(),
            );
        }
        for (field, value) in [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
            ("sasl_mechanism", &self.sasl_mechanism),
            ("sasl_username", &self.sasl_username),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                problems.push(format!("{field}: must not be empty"));
            }
        }
        if !protocol.sasl() {
            for (field, set) in [
                ("sasl_mechanism", self.sasl_mechanism.is_some()),
                ("sasl_username", self.sasl_username.is_some()),
                ("sasl_password", self.sasl_password.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "{field}: needs security_protocol \"sasl_plaintext\" or \"sasl_ssl\", not \"{}\"",
                        protocol.as_str()
                    ));
                }
            }
            return;
        }
        match self.sasl_mechanism.as_deref() {
            None => problems.push(format!(
                "sasl_mechanism: security_protocol \"{}\" needs a mechanism (one of {})",
                protocol.as_str(),
                SASL_MECHANISMS.join(", ")
            )),
            Some(m) if !SASL_MECHANISMS.contains(&m) => problems.push(format!(
                "sasl_mechanism: {m:?} is not one of {}",
                SASL_MECHANISMS.join(", ")
            )),
            Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {
                if self.sasl_username.is_none() {
                    problems.push("sasl_username: the mechanism needs a user name".to_owned());
                }
                if self.sasl_password.is_none() {
                    problems.push(
                        "sasl_password: the mechanism needs a password (write \"${ENV_VAR}\")"
                            .to_owned(),
                    );
                }
            }
            Some(_) => {}
        }
    }

    /// The librdkafka settings of the sink's security: protocol, TLS files
    /// and SASL credentials.
    fn set_security(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.security_protocol.as_str());
        for (key, value) in [
            ("ssl.ca.location", &self.tls_ca_file),
            ("ssl.certificate.location", &self.tls_cert_file),
            ("ssl.key.location", &self.tls_key_file),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ] {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
    }

    /// The librdkafka settings of the sink's producer and admin client.
    pub(crate) fn client_config(&self, sink_name: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("weir-{sink_name}"))
            .set("linger.ms", "5")
            .set("compression.type", "none")
            .set("partitioner", "murmur2_random")
            // More would break ordering under idempotence (librdkafka refuses it).
            .set("max.in.flight.requests.per.connection", "5");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        self.set_security(&mut config);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        config
    }
}

impl KafkaSinkConfig {
    /// The settings of the admin client that creates topics: the brokers,
    /// and the user's properties (security settings apply to it too).
    pub(crate) fn admin_client_config(&self, sink_name: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("weir-{sink_name}-admin"));
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        self.set_security(&mut config);
        config
    }
}

/// Settings may hold passwords (`sasl.password`, `ssl.key.password`...), so
/// property values are not shown.
impl fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("message_topic", &self.message_topic)
            .field("raw_topic", &self.raw_topic)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("encoding", &self.encoding)
            .field("debezium", &self.debezium)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field("delivery_timeout", &self.delivery_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("security_protocol", &self.security_protocol)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl SinkSpec for KafkaSinkConfig {
    fn validate(&self) -> Vec<String> {
        KafkaSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        // The producer splits batches into requests itself; a record over
        // the brokers' size limit is refused alone.
        Capabilities::LOG
    }

    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        KafkaSinkConfig::check_topic_template(template, used_for)
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::KafkaSink::connect(name, self.clone())
                .await
                .map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
