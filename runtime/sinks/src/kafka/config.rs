//! Configuration of the `kafka` sink, as written under `[sinks.NAME]`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;

use super::encode::TopicTemplate;
use crate::encode::Encoding;

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
/// keeps its own key, value and headers, after the three position headers. The producer is idempotent with `acks=all`: a
/// batch counts as written only when every in-sync replica has it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic of a change event that the router did not give one.
    /// `{schema}`, `{table}` and `{op}` are replaced by the event's schema,
    /// table and operation (`insert`, `update`, `delete`, `truncate`).
    /// A topic chosen by the router may use the same placeholders.
    /// Default: `"{schema}.{table}"`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The topic of a logical decoding message (`pg_logical_emit_message`)
    /// that the router did not give one; `{prefix}` is replaced by the
    /// message's prefix. Raw records without a topic go here too (with
    /// every placeholder empty). Default: `"{prefix}"`.
    #[serde(default = "default_message_topic")]
    pub message_topic: String,
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
    /// (the default).
    #[serde(default)]
    pub encoding: Encoding,
    /// Extra librdkafka settings (compression, batching, timeouts...), for
    /// example `{ "compression.type" = "lz4", "batch.size" = "1000000" }`.
    /// (Weir's librdkafka is built without TLS and SASL for now, so
    /// `security.protocol` can only be `plaintext`.)
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
        deserialize_with = "crate::duration::deserialize"
    )]
    pub delivery_timeout: Duration,
    /// How long to wait for the brokers when connecting and when looking up
    /// or creating a topic. Default: `"10s"`.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub connect_timeout: Duration,
}

fn default_topic() -> String {
    "{schema}.{table}".to_owned()
}

fn default_message_topic() -> String {
    "{prefix}".to_owned()
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
];

impl KafkaSinkConfig {
    /// A configuration for `brokers` with every other field at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: default_topic(),
            message_topic: default_message_topic(),
            create_topics: false,
            partitions: 1,
            replication_factor: 1,
            encoding: Encoding::default(),
            properties: BTreeMap::new(),
            delivery_timeout: default_delivery_timeout(),
            connect_timeout: default_connect_timeout(),
        }
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.brokers.trim().is_empty() {
            problems.push("brokers: must list at least one host:port".to_owned());
        }
        if let Err(e) = TopicTemplate::parse(&self.topic) {
            problems.push(format!("topic: {e}"));
        }
        if let Err(e) = TopicTemplate::parse(&self.message_topic) {
            problems.push(format!("message_topic: {e}"));
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
        problems
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
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("encoding", &self.encoding)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field("delivery_timeout", &self.delivery_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}
