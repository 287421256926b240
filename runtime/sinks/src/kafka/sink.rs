//! Producing batches to Kafka and waiting for every delivery report.
//!
//! One idempotent librdkafka producer per sink. A batch is handed to
//! librdkafka record by record (librdkafka batches on the wire), each with
//! a reference to one [`BatchTracker`]; its polling thread reports every
//! delivery to the tracker, and `write` returns when the last one arrives.
//! That costs one small allocation per record rather than a future and
//! channel per record.
//!
//! Failures are sorted three ways: a broker or network problem fails the
//! batch for a retry; a record the brokers refuse for good (too large, an
//! illegal topic name) is reported as rejected while the rest of the batch
//! counts as written; an authorization or authentication failure stops the
//! sink.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message as _};
use tokio::sync::Notify;
use weir_core::{Op, Rejected, Sink, SinkError, SinkPayload, SinkRecord};

use super::KafkaSinkConfig;
use super::config::is_secret_property;
use super::encode::{check_topic_name, encode_key_value, headers};
use weir_codec::{Encoder, NameTemplate};

type Producer = ThreadedProducer<DeliveryContext>;

/// How long to wait before offering a record again when librdkafka's local
/// queue is full; deliveries free space within milliseconds.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Most topic names (and router-chosen templates) a sink remembers; past
/// that, the least recently used is forgotten and checked again (one
/// metadata request) when it comes back.
const MAX_CACHED_TOPICS: usize = 10_000;

/// A sink that produces each record as one Kafka message.
///
/// Connect with [`KafkaSink::connect`]; see [`KafkaSinkConfig`] for what a
/// message holds and how topics are chosen.
pub struct KafkaSink {
    name: String,
    config: KafkaSinkConfig,
    client_config: ClientConfig,
    producer: Arc<Producer>,
    /// Created on first need: only a sink that creates topics uses it.
    admin: Option<AdminClient<DefaultClientContext>>,
    topic_template: NameTemplate,
    message_template: NameTemplate,
    raw_template: NameTemplate,
    /// Topics the router chose, parsed once each.
    routed_templates: TopicCache<NameTemplate>,
    /// Topics checked to exist (or created) and known to be valid names.
    known_topics: TopicCache<()>,
    /// Values that must never appear in a message: the SASL password and
    /// secret properties.
    secrets: Arc<Vec<String>>,
    /// Set after a batch failed: the next write starts a fresh producer.
    renew_producer: bool,
    encoder: Encoder,
    // Buffers reused from record to record.
    topic_buf: String,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    header_buf: Vec<u8>,
}

impl KafkaSink {
    /// Checks the configuration, creates the producer and verifies that the
    /// brokers answer (a metadata request bounded by `connect_timeout`).
    ///
    /// Fails with [`SinkError::Config`] when the configuration is invalid
    /// (every problem listed, as `sinks.NAME.field: message`) and with
    /// [`SinkError::Transient`] when no broker answers in time, naming
    /// the brokers and librdkafka's last connection error.
    pub async fn connect(name: &str, config: KafkaSinkConfig) -> Result<KafkaSink, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let topic_template =
            NameTemplate::parse(&config.topic_template()).map_err(SinkError::Config)?;
        let message_template =
            NameTemplate::parse(&config.message_topic_template()).map_err(SinkError::Config)?;
        let raw_template = NameTemplate::parse(&config.raw_topic).map_err(SinkError::Config)?;
        for (field, file) in [
            ("tls_ca_file", &config.tls_ca_file),
            ("tls_cert_file", &config.tls_cert_file),
            ("tls_key_file", &config.tls_key_file),
        ] {
            if let Some(file) = file
                && !std::path::Path::new(file).is_file()
            {
                return Err(SinkError::Config(format!(
                    "sinks.{name}.{field}: {file} is not a readable file"
                )));
            }
        }
        let secrets: Arc<Vec<String>> = Arc::new(
            config
                .sasl_password
                .iter()
                .chain(
                    config
                        .properties
                        .iter()
                        .filter(|(k, _)| is_secret_property(k))
                        .map(|(_, v)| v),
                )
                .filter(|v| !v.is_empty())
                .cloned()
                .collect(),
        );
        let client_config = config.client_config(name);
        let producer = Arc::new(create_producer(name, &client_config, &secrets)?);

        let timeout = config.connect_timeout;
        let probe = Arc::clone(&producer);
        let metadata =
            tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
                .await
                .map_err(|e| SinkError::Transient(format!("metadata request panicked: {e}")))?;
        match metadata {
            Ok(metadata) => tracing::info!(
                sink = name,
                brokers = %config.brokers,
                live_brokers = metadata.brokers().len(),
                "connected to Kafka"
            ),
            Err(e) => {
                let brokers = &config.brokers;
                let last = producer.context().last_error();
                return Err(match last {
                    // The brokers answered, but will not talk to us as
                    // configured: retrying cannot help.
                    Some((RDKafkaErrorCode::Authentication, _, reason)) => {
                        SinkError::Config(format!(
                            "SASL authentication at the Kafka brokers {brokers} failed \
                             (check sinks.{name}.sasl_mechanism, sasl_username and sasl_password): {reason}"
                        ))
                    }
                    Some((code, _, reason))
                        if code == RDKafkaErrorCode::SSL
                            || reason.contains("SSL_HANDSHAKE")
                            || reason.contains("SSL handshake") =>
                    {
                        SinkError::Config(format!(
                            "the TLS handshake with the Kafka brokers {brokers} failed \
                         (check sinks.{name}.security_protocol and tls_ca_file): {reason}"
                        ))
                    }
                    Some((_, _, reason)) => SinkError::Transient(format!(
                        "no Kafka broker at {brokers} answered within {timeout:?}: {e} \
                         (last error: {reason})"
                    )),
                    None => {
                        let hint = if config.security_protocol.tls() {
                            " (with TLS on, a port that does not speak TLS leaves the handshake unanswered)"
                        } else {
                            ""
                        };
                        SinkError::Transient(format!(
                            "no Kafka broker at {brokers} answered within {timeout:?}: {e}{hint}"
                        ))
                    }
                });
            }
        }

        let encoder = Encoder::new(config.encoding, config.debezium.as_ref());
        Ok(KafkaSink {
            name: name.to_owned(),
            config,
            client_config,
            producer,
            admin: None,
            topic_template,
            message_template,
            raw_template,
            routed_templates: TopicCache::new(MAX_CACHED_TOPICS),
            known_topics: TopicCache::new(MAX_CACHED_TOPICS),
            secrets,
            renew_producer: false,
            encoder,
            topic_buf: String::new(),
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            header_buf: Vec::new(),
        })
    }

    /// Writes the record's topic into `topic_buf`, checking a name not seen
    /// before against Kafka's rules. An error is the reason the record
    /// cannot go anywhere.
    fn resolve_topic(&mut self, record: &SinkRecord) -> Result<(), String> {
        let template = match &record.topic {
            Some(routed) => {
                if self.routed_templates.get(routed).is_none() {
                    let parsed = NameTemplate::parse(routed)?;
                    self.routed_templates.insert(routed.clone(), parsed);
                }
                self.routed_templates.get(routed).expect("inserted above")
            }
            None => match &record.payload {
                SinkPayload::Change(event) if event.op != Op::Message => &self.topic_template,
                SinkPayload::Change(_) => &self.message_template,
                SinkPayload::Raw(_) => &self.raw_template,
            },
        };
        template
            .expand(record, &mut self.topic_buf)
            .map_err(|e| format!("{e}"))?;
        if self.known_topics.get(&self.topic_buf).is_none()
            && let Err(e) = check_topic_name(&self.topic_buf)
        {
            let (source, text) = match (&record.topic, &record.payload) {
                (Some(routed), _) => ("the router's topic", routed.clone()),
                (None, SinkPayload::Raw(_)) => ("raw_topic", self.config.raw_topic.clone()),
                (None, SinkPayload::Change(event)) if event.op == Op::Message => {
                    ("message_topic", self.config.message_topic_template())
                }
                (None, SinkPayload::Change(_)) => ("topic", self.config.topic_template()),
            };
            return Err(format!(
                "{e} (made from {source} {text:?} for a record at LSN {})",
                record.source().lsn
            ));
        }
        Ok(())
    }

    /// Makes sure `topic` exists, creating it when configured to.
    async fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        let name = &self.name;
        if !self.topic_exists(topic).await? {
            if !self.config.create_topics {
                return Err(SinkError::Config(format!(
                    "topic {topic} does not exist and sinks.{name}.create_topics is false"
                )));
            }
            self.create_topic(topic).await?;
        }
        self.known_topics.insert(topic.to_owned(), ());
        Ok(())
    }

    async fn topic_exists(&self, topic: &str) -> Result<bool, SinkError> {
        let name = &self.name;
        let producer = Arc::clone(&self.producer);
        let timeout = self.config.connect_timeout;
        let owned_topic = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&owned_topic), timeout)
        })
        .await
        .map_err(|e| SinkError::Transient(format!("metadata request panicked: {e}")))?
        .map_err(|e| {
            SinkError::Transient(format!(
                "looking up topic {topic} at {}: {e}",
                self.config.brokers
            ))
        })?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(false);
        };
        match found.error().map(RDKafkaErrorCode::from) {
            None => Ok(true),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                Ok(false)
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Err(SinkError::Auth(format!(
                "not authorized to use topic {topic}"
            ))),
            Some(RDKafkaErrorCode::InvalidTopic) => Err(SinkError::Rejected(vec![Rejected {
                index: 0,
                reason: format!("the brokers call {topic:?} an invalid topic name"),
            }])),
            // Anything else (a leader election, a topic being created) is
            // transient: the producer waits for the topic to become usable.
            Some(other) => {
                tracing::debug!(sink = %name, topic, error = %other, "topic metadata has an error");
                Ok(true)
            }
        }
    }

    async fn create_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        let name = self.name.clone();
        if self.admin.is_none() {
            let admin = self
                .config
                .admin_client_config(&name)
                .create::<AdminClient<DefaultClientContext>>()
                .map_err(|e| {
                    SinkError::Config(format!(
                        "creating admin client: {}",
                        describe_client_error(&e, &self.secrets)
                    ))
                })?;
            self.admin = Some(admin);
        }
        let admin = self.admin.as_ref().expect("created above");
        let timeout = self.config.connect_timeout;
        let new_topic = NewTopic::new(
            topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| SinkError::Transient(format!("creating topic {topic}: {e}")))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(
                    sink = %name,
                    topic,
                    partitions = self.config.partitions,
                    replication_factor = self.config.replication_factor,
                    "created topic"
                ),
                // Another writer won the race: the topic is there, which is all we need.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    let message = format!("creating topic {topic}: {code}");
                    return Err(match code {
                        // The name came from a record: only that record is at fault.
                        RDKafkaErrorCode::InvalidTopic => SinkError::Rejected(vec![Rejected {
                            index: 0,
                            reason: message,
                        }]),
                        code if is_config_error(code) => SinkError::Config(message),
                        _ => SinkError::Transient(message),
                    });
                }
            }
        }
        Ok(())
    }

    /// Encodes record `index` of the batch and hands it to librdkafka,
    /// waiting while its queue is full. `Ok(Some(reason))` when the record
    /// can never be produced; an error stops the batch.
    async fn send(
        &mut self,
        record: &SinkRecord,
        index: usize,
        tracker: &Arc<BatchTracker>,
    ) -> Result<Option<String>, SinkError> {
        if let Err(reason) = self.resolve_topic(record) {
            return Ok(Some(reason));
        }
        if self.known_topics.get(&self.topic_buf).is_none() {
            let topic = self.topic_buf.clone();
            match self.ensure_topic(&topic).await {
                Ok(()) => {}
                Err(SinkError::Rejected(mut rejected)) => {
                    return Ok(rejected.pop().map(|r| r.reason));
                }
                Err(e) => return Err(e),
            }
        }
        let encoded = match encode_key_value(
            record,
            &mut self.encoder,
            &mut self.key_buf,
            &mut self.value_buf,
        ) {
            Ok(encoded) => encoded,
            Err(e) => return Ok(Some(format!("{e}"))),
        };
        let delivery = || {
            Box::new(Delivery {
                tracker: Arc::clone(tracker),
                index,
            })
        };
        let mut message =
            BaseRecord::<[u8], [u8], Box<Delivery>>::with_opaque_to(&self.topic_buf, delivery())
                .headers(headers(record, &mut self.header_buf));
        message.key = encoded.key;
        message.payload = encoded.value;
        if let Some(reason) = produce(&self.producer, message, tracker).await? {
            return Ok(Some(reason));
        }
        if encoded.tombstone {
            // Same key, no value: log compaction may then drop the row.
            let mut tombstone = BaseRecord::<[u8], [u8], Box<Delivery>>::with_opaque_to(
                &self.topic_buf,
                delivery(),
            )
            .headers(headers(record, &mut self.header_buf));
            tombstone.key = encoded.key;
            return produce(&self.producer, tombstone, tracker).await;
        }
        Ok(None)
    }

    /// A producer hit by a fatal error (an idempotence violation the broker
    /// reported) refuses all further work; start a fresh one.
    fn replace_failed_producer(&mut self) -> Result<(), SinkError> {
        if self.renew_producer {
            tracing::info!(sink = %self.name, "starting a new Kafka producer after a failed batch");
            self.producer = Arc::new(create_producer(
                &self.name,
                &self.client_config,
                &self.secrets,
            )?);
            self.renew_producer = false;
        } else if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(
                sink = %self.name,
                error = %code,
                reason,
                "the Kafka producer failed fatally; creating a new one"
            );
            self.producer = Arc::new(create_producer(
                &self.name,
                &self.client_config,
                &self.secrets,
            )?);
        }
        Ok(())
    }
}

fn is_config_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidReplicaAssignment
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

/// What a failed delivery means for the record and the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// The brokers may take the record later.
    Retryable,
    /// This record will never be taken; others may.
    Record,
    /// Nothing will be taken until an operator changes something.
    Sink,
}

fn classify(code: RDKafkaErrorCode) -> Class {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidRecord
        | C::InvalidTopic
        | C::BadMessage => Class::Record,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::InvalidRequiredAcks
        | C::InvalidConfig => Class::Sink,
        // Everything else, UnknownTopicOrPartition included: the topics
        // are checked again before the retry, and a missing one stops the
        // sink then unless it may be created.
        _ => Class::Retryable,
    }
}

/// A librdkafka client error, without the value of any secret setting
/// (librdkafka's configuration errors repeat the value they refused).
fn describe_client_error(error: &KafkaError, secrets: &[String]) -> String {
    let text = match error {
        KafkaError::ClientConfig(_, description, key, value) => {
            if is_secret_property(key) || secrets.iter().any(|s| s == value) {
                format!("invalid setting {key} (value not shown): {description}")
            } else {
                format!("invalid setting {key} = {value:?}: {description}")
            }
        }
        other => other.to_string(),
    };
    scrub(text, secrets)
}

/// `text` with every secret replaced by `***`.
fn scrub(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

fn create_producer(
    name: &str,
    client_config: &ClientConfig,
    secrets: &Arc<Vec<String>>,
) -> Result<Producer, SinkError> {
    client_config
        .create_with_context(DeliveryContext {
            sink: name.to_owned(),
            last_error: Mutex::new(None),
            secrets: Arc::clone(secrets),
        })
        .map_err(|e| {
            SinkError::Config(format!(
                "creating Kafka producer: {}",
                describe_client_error(&e, secrets)
            ))
        })
}

/// Hands one message to librdkafka, waiting while its queue is full.
/// `Ok(Some(reason))` when the message can never be produced.
async fn produce(
    producer: &Producer,
    mut message: BaseRecord<'_, [u8], [u8], Box<Delivery>>,
    tracker: &BatchTracker,
) -> Result<Option<String>, SinkError> {
    tracker.add();
    loop {
        match producer.send(message) {
            Ok(()) => return Ok(None),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // Never drop a record: wait for deliveries to make room.
                message = back;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, back)) => {
                tracker.remove();
                let text = format!("producing to topic {}: {e}", back.topic);
                return match e.rdkafka_error_code().map(classify) {
                    Some(Class::Record) => Ok(Some(text)),
                    Some(Class::Sink) => Err(SinkError::Config(text)),
                    _ => Err(SinkError::Transient(text)),
                };
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.replace_failed_producer()?;
        let started = Instant::now();
        let tracker = Arc::new(BatchTracker::new());
        let mut stopped = None;
        let mut rejected = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            match self.send(record, index, &tracker).await {
                Ok(None) => {}
                Ok(Some(reason)) => rejected.push(Rejected { index, reason }),
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            }
        }
        // Wait even after a failed send: every record handed to librdkafka
        // must be settled before `write` returns, or a retried batch could
        // overtake it.
        tracker.all_sent();
        // librdkafka reports every record within delivery_timeout; the
        // margin only guards against a report that never comes.
        let bound = self.config.delivery_timeout + Duration::from_secs(10);
        if tokio::time::timeout(bound, tracker.done.notified())
            .await
            .is_err()
        {
            return Err(SinkError::Transient(format!(
                "{} records had no delivery report after {bound:?}",
                tracker.outstanding.load(Ordering::Acquire)
            )));
        }
        if let Some(e) = stopped {
            self.known_topics.clear();
            return Err(e);
        }
        let failures = tracker.take_failures();
        if let Some(fatal) = failures.iter().find(|f| f.class == Class::Sink) {
            return Err(SinkError::Config(format!(
                "the brokers refuse to take records: {}",
                fatal.reason
            )));
        }
        let retryable = failures
            .iter()
            .filter(|f| f.class == Class::Retryable)
            .count();
        if retryable > 0 {
            // Timed-out deliveries after an authentication failure will
            // time out forever: that needs an operator.
            if let Some((RDKafkaErrorCode::Authentication, at, reason)) =
                self.producer.context().last_error()
                && at >= started
            {
                return Err(SinkError::Auth(format!(
                    "SASL authentication at {} failed: {reason}",
                    self.config.brokers
                )));
            }
            let first = failures
                .iter()
                .find(|f| f.class == Class::Retryable)
                .map(|f| f.reason.as_str())
                .unwrap_or_default();
            // The broker may have lost topics it had (a restarted or
            // replaced cluster): check them again, and create them again
            // when allowed, before the retry. Every record of the batch is
            // settled by now, so a fresh producer cannot reorder anything;
            // it also clears idempotence state the broker no longer
            // accepts after timed-out requests (seen as ProducerFenced or
            // OutOfOrderSequenceNumber on every later attempt).
            self.known_topics.clear();
            self.renew_producer = true;
            return Err(SinkError::Transient(format!(
                "{retryable} of {} records were not delivered; first failure: {first}",
                batch.len()
            )));
        }
        rejected.extend(failures.into_iter().map(|f| Rejected {
            index: f.index,
            reason: format!("the brokers refused the record: {}", f.reason),
        }));
        if rejected.is_empty() {
            return Ok(());
        }
        rejected.sort_by_key(|r| r.index);
        // A delete and its tombstone are one record: refused once.
        rejected.dedup_by_key(|r| r.index);
        Err(SinkError::Rejected(rejected))
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Every write already waited for its deliveries; this only lets
        // librdkafka finish anything of its own before the producer goes.
        let producer = Arc::clone(&self.producer);
        let timeout = self.config.delivery_timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| SinkError::Transient(format!("flush panicked: {e}")))?
            .map_err(|e| SinkError::Transient(format!("flushing producer: {e}")))
    }
}

/// Counts the records of one batch still waiting for their delivery report.
///
/// `outstanding` starts at 1 for the sender itself, so it cannot reach zero
/// while records are still being handed over; whoever brings it to zero
/// (the last delivery or the sender's [`all_sent`](Self::all_sent)) wakes
/// the waiting `write`. `Notify` keeps that one wake-up even when it comes
/// before `write` starts waiting.
struct BatchTracker {
    outstanding: AtomicUsize,
    failures: Mutex<Vec<Failure>>,
    done: Notify,
}

/// A record librdkafka could not deliver.
struct Failure {
    index: usize,
    class: Class,
    reason: String,
}

/// What librdkafka carries with each message to its delivery report.
struct Delivery {
    tracker: Arc<BatchTracker>,
    /// The record's position in its batch.
    index: usize,
}

impl BatchTracker {
    fn new() -> Self {
        BatchTracker {
            outstanding: AtomicUsize::new(1),
            failures: Mutex::new(Vec::new()),
            done: Notify::new(),
        }
    }

    fn add(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// Undoes [`add`](Self::add) for a record librdkafka refused.
    fn remove(&self) {
        self.settle_one();
    }

    fn all_sent(&self) {
        self.settle_one();
    }

    fn settle_one(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    fn fail(&self, failure: Failure) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(failure);
    }

    fn take_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Names (topics, templates) mapped to values, at most `capacity` of them:
/// inserting one more forgets the least recently used.
struct TopicCache<V> {
    entries: HashMap<String, (V, u64)>,
    clock: u64,
    capacity: usize,
}

impl<V> TopicCache<V> {
    fn new(capacity: usize) -> Self {
        TopicCache {
            entries: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
        }
    }

    fn get(&mut self, name: &str) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(name).map(|(value, used)| {
            *used = clock;
            &*value
        })
    }

    fn insert(&mut self, name: String, value: V) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&name) {
            // A scan, but only when a new name arrives at a full cache, and
            // a new topic costs a metadata round trip anyway.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        self.entries.insert(name, (value, self.clock));
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The producer's librdkafka callbacks: delivery reports go to the batch's
/// tracker, logs and client errors to `tracing`.
struct DeliveryContext {
    sink: String,
    /// The latest client-level error, such as a refused connection, to
    /// explain a failed connect: its code, when, and librdkafka's reason.
    last_error: Mutex<Option<(RDKafkaErrorCode, Instant, String)>>,
    /// Never logged.
    secrets: Arc<Vec<String>>,
}

impl DeliveryContext {
    fn last_error(&self) -> Option<(RDKafkaErrorCode, Instant, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let sink = self.sink.as_str();
        let message = scrub(message.to_owned(), &self.secrets);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", sink, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", sink, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", sink, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", sink, facility, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka retries on its own; a batch that cannot be delivered
        // fails through its delivery reports.
        let reason = scrub(reason.to_owned(), &self.secrets);
        tracing::warn!(target: "librdkafka", sink = %self.sink, %error, "{reason}");
        // "n/n brokers are down" follows the error that says why; keep that one.
        if error != KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) {
            let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((code, Instant::now(), reason));
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        if let Err((error, message)) = result {
            delivery.tracker.fail(Failure {
                index: delivery.index,
                class: error
                    .rdkafka_error_code()
                    .map_or(Class::Retryable, classify),
                reason: format!(
                    "{error} (topic {}, partition {})",
                    message.topic(),
                    message.partition()
                ),
            });
        }
        delivery.tracker.settle_one();
    }
}

#[cfg(test)]
mod cache_tests {
    use super::TopicCache;

    #[test]
    fn the_topic_cache_forgets_the_least_recently_used_name() {
        let mut cache = TopicCache::new(3);
        for name in ["a", "b", "c"] {
            cache.insert(name.to_owned(), ());
        }
        // "a" is used again, so "b" is now the oldest.
        assert!(cache.get("a").is_some());
        cache.insert("d".to_owned(), ());
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b").is_none());
        for name in ["a", "c", "d"] {
            assert!(cache.get(name).is_some(), "{name}");
        }
        // Inserting a known name again does not evict anything.
        cache.insert("a".to_owned(), ());
        assert_eq!(cache.len(), 3);
        for i in 0..1000 {
            cache.insert(format!("t{i}"), ());
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("t999").is_some());
    }
}
