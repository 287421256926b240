//! Producing batches to Kafka and waiting for every delivery report.
//!
//! One idempotent librdkafka producer per sink. A batch is handed to
//! librdkafka record by record (librdkafka batches on the wire), each with
//! a reference to one [`BatchTracker`]; its polling thread reports every
//! delivery to the tracker, and `write` returns when the last one arrives.
//! That costs one reference-count increment per record rather than a
//! future and channel per record.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message as _};
use tokio::sync::Notify;
use weir_core::{Op, Sink, SinkError, SinkPayload, SinkRecord};

use super::KafkaSinkConfig;
use super::encode::{TopicFields, TopicTemplate, check_topic_name, encode_key_value, headers};
use crate::encode::JsonEncoder;

type Producer = ThreadedProducer<DeliveryContext>;

/// How long to wait before offering a record again when librdkafka's local
/// queue is full; deliveries free space within milliseconds.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

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
    topic_template: TopicTemplate,
    message_template: TopicTemplate,
    /// Topics the router chose, parsed once each.
    routed_templates: HashMap<String, TopicTemplate>,
    /// Topics checked to exist (or created) and known to be valid names.
    known_topics: HashSet<String>,
    /// Set after a batch failed: the next write starts a fresh producer.
    renew_producer: bool,
    encoder: JsonEncoder,
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
    /// [`SinkError::Unavailable`] when no broker answers in time, naming
    /// the brokers and librdkafka's last connection error.
    pub async fn connect(name: &str, config: KafkaSinkConfig) -> Result<KafkaSink, SinkError> {
        let problems = config.validate();
        if !problems.is_empty() {
            let listed: Vec<String> = problems
                .iter()
                .map(|p| format!("sinks.{name}.{p}"))
                .collect();
            return Err(SinkError::Config(format!(
                "sink {name}: invalid configuration: {}",
                listed.join("; ")
            )));
        }
        let topic_template = TopicTemplate::parse(&config.topic).map_err(SinkError::Config)?;
        let message_template =
            TopicTemplate::parse(&config.message_topic).map_err(SinkError::Config)?;
        let client_config = config.client_config(name);
        let producer = Arc::new(create_producer(name, &client_config)?);

        let timeout = config.connect_timeout;
        let probe = Arc::clone(&producer);
        let metadata =
            tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
                .await
                .map_err(|e| {
                    SinkError::Unavailable(format!("sink {name}: metadata request panicked: {e}"))
                })?;
        match metadata {
            Ok(metadata) => tracing::info!(
                sink = name,
                brokers = %config.brokers,
                live_brokers = metadata.brokers().len(),
                "connected to Kafka"
            ),
            Err(e) => {
                let detail = producer
                    .context()
                    .last_error()
                    .map(|last| format!(" (last error: {last})"))
                    .unwrap_or_default();
                return Err(SinkError::Unavailable(format!(
                    "sink {name}: no Kafka broker at {} answered within {timeout:?}: {e}{detail}",
                    config.brokers
                )));
            }
        }

        Ok(KafkaSink {
            name: name.to_owned(),
            config,
            client_config,
            producer,
            admin: None,
            topic_template,
            message_template,
            routed_templates: HashMap::new(),
            known_topics: HashSet::new(),
            renew_producer: false,
            encoder: JsonEncoder::new(),
            topic_buf: String::new(),
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            header_buf: Vec::new(),
        })
    }

    /// Writes the record's topic into `topic_buf`, checking a name not seen
    /// before against Kafka's rules.
    fn resolve_topic(&mut self, record: &SinkRecord) -> Result<(), SinkError> {
        let template = match &record.topic {
            Some(routed) => {
                if !self.routed_templates.contains_key(routed) {
                    let parsed = TopicTemplate::parse(routed)
                        .map_err(|e| SinkError::Encode(format!("sink {}: {e}", self.name)))?;
                    self.routed_templates.insert(routed.clone(), parsed);
                }
                &self.routed_templates[routed]
            }
            None => match &record.payload {
                SinkPayload::Change(event) if event.op != Op::Message => &self.topic_template,
                _ => &self.message_template,
            },
        };
        template.expand(&TopicFields::of(record), &mut self.topic_buf);
        if !self.known_topics.contains(&self.topic_buf)
            && let Err(e) = check_topic_name(&self.topic_buf)
        {
            let (source, text) = match &record.topic {
                Some(routed) => ("the router's topic", routed.as_str()),
                None if std::ptr::eq(template, &self.topic_template) => {
                    ("topic", self.config.topic.as_str())
                }
                None => ("message_topic", self.config.message_topic.as_str()),
            };
            return Err(SinkError::Encode(format!(
                "sink {}: {e} (made from {source} {text:?} for a record at LSN {})",
                self.name,
                record.source().lsn
            )));
        }
        Ok(())
    }

    /// Makes sure `topic` exists, creating it when configured to.
    async fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        let name = &self.name;
        if !self.topic_exists(topic).await? {
            if !self.config.create_topics {
                return Err(SinkError::Config(format!(
                    "sink {name}: topic {topic} does not exist and sinks.{name}.create_topics is false"
                )));
            }
            self.create_topic(topic).await?;
        }
        self.known_topics.insert(topic.to_owned());
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
        .map_err(|e| {
            SinkError::Unavailable(format!("sink {name}: metadata request panicked: {e}"))
        })?
        .map_err(|e| {
            SinkError::Unavailable(format!(
                "sink {name}: looking up topic {topic} at {}: {e}",
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
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Err(SinkError::Config(format!(
                "sink {name}: not authorized to use topic {topic}"
            ))),
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
                    SinkError::Config(format!("sink {name}: creating admin client: {e}"))
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
            .map_err(|e| {
                SinkError::Unavailable(format!("sink {name}: creating topic {topic}: {e}"))
            })?;
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
                    let message = format!("sink {name}: creating topic {topic}: {code}");
                    return Err(if is_config_error(code) {
                        SinkError::Config(message)
                    } else {
                        SinkError::Unavailable(message)
                    });
                }
            }
        }
        Ok(())
    }

    /// Encodes one record and hands it to librdkafka, waiting while its
    /// queue is full.
    async fn send(
        &mut self,
        record: &SinkRecord,
        tracker: &Arc<BatchTracker>,
    ) -> Result<(), SinkError> {
        self.resolve_topic(record)?;
        if !self.known_topics.contains(&self.topic_buf) {
            let topic = self.topic_buf.clone();
            self.ensure_topic(&topic).await?;
        }
        let name = &self.name;
        let encoded = encode_key_value(
            record,
            self.config.encoding,
            &mut self.encoder,
            &mut self.key_buf,
            &mut self.value_buf,
        )
        .map_err(|e| SinkError::Encode(format!("sink {name}: {e}")))?;
        let mut message = BaseRecord::<[u8], [u8], Arc<BatchTracker>>::with_opaque_to(
            &self.topic_buf,
            Arc::clone(tracker),
        )
        .headers(headers(record, &mut self.header_buf));
        message.key = encoded.key;
        message.payload = encoded.value;
        tracker.add();
        loop {
            match self.producer.send(message) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Never drop a record: wait for deliveries to make room.
                    message = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, back)) => {
                    tracker.remove();
                    let text = format!("sink {name}: producing to topic {}: {e}", back.topic);
                    return Err(match e {
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
                            SinkError::Encode(text)
                        }
                        _ => SinkError::Unavailable(text),
                    });
                }
            }
        }
    }

    /// A producer hit by a fatal error (an idempotence violation the broker
    /// reported) refuses all further work; start a fresh one.
    fn replace_failed_producer(&mut self) -> Result<(), SinkError> {
        if self.renew_producer {
            tracing::info!(sink = %self.name, "starting a new Kafka producer after a failed batch");
            self.producer = Arc::new(create_producer(&self.name, &self.client_config)?);
            self.renew_producer = false;
        } else if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(
                sink = %self.name,
                error = %code,
                reason,
                "the Kafka producer failed fatally; creating a new one"
            );
            self.producer = Arc::new(create_producer(&self.name, &self.client_config)?);
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

fn create_producer(name: &str, client_config: &ClientConfig) -> Result<Producer, SinkError> {
    client_config
        .create_with_context(DeliveryContext {
            sink: name.to_owned(),
            last_error: Mutex::new(None),
        })
        .map_err(|e| SinkError::Config(format!("sink {name}: creating Kafka producer: {e}")))
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
        let tracker = Arc::new(BatchTracker::new());
        let mut stopped = None;
        for record in batch {
            if let Err(e) = self.send(record, &tracker).await {
                stopped = Some(e);
                break;
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
            return Err(SinkError::Unavailable(format!(
                "sink {}: {} records had no delivery report after {bound:?}",
                self.name,
                tracker.outstanding.load(Ordering::Acquire)
            )));
        }
        if let Some(e) = stopped {
            self.known_topics.clear();
            return Err(e);
        }
        if let Some(first) = tracker.first_failure() {
            // The broker may have lost topics it had (a restarted or
            // replaced cluster): check them again, and create them again
            // when allowed, before the retry. Every record of the batch is
            // settled by now, so a fresh producer cannot reorder anything;
            // it also clears idempotence state the broker no longer
            // accepts after timed-out requests (seen as ProducerFenced or
            // OutOfOrderSequenceNumber on every later attempt).
            self.known_topics.clear();
            self.renew_producer = true;
            return Err(SinkError::Unavailable(format!(
                "sink {}: {} of {} records were not delivered; first failure: {first}",
                self.name,
                tracker.failed.load(Ordering::Acquire),
                batch.len()
            )));
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Every write already waited for its deliveries; this only lets
        // librdkafka finish anything of its own before the producer goes.
        let producer = Arc::clone(&self.producer);
        let timeout = self.config.delivery_timeout;
        let name = &self.name;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| SinkError::Unavailable(format!("sink {name}: flush panicked: {e}")))?
            .map_err(|e| SinkError::Unavailable(format!("sink {name}: flushing producer: {e}")))
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
    failed: AtomicUsize,
    first_failure: Mutex<Option<String>>,
    done: Notify,
}

impl BatchTracker {
    fn new() -> Self {
        BatchTracker {
            outstanding: AtomicUsize::new(1),
            failed: AtomicUsize::new(0),
            first_failure: Mutex::new(None),
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

    fn fail(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(reason);
    }

    fn first_failure(&self) -> Option<String> {
        self.first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The producer's librdkafka callbacks: delivery reports go to the batch's
/// tracker, logs and client errors to `tracing`.
struct DeliveryContext {
    sink: String,
    /// The latest client-level error, such as a refused connection, to
    /// explain a failed connect.
    last_error: Mutex<Option<String>>,
}

impl DeliveryContext {
    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let sink = self.sink.as_str();
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
        tracing::warn!(target: "librdkafka", sink = %self.sink, %error, "{reason}");
        // "n/n brokers are down" follows the error that says why; keep that one.
        if error != KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<BatchTracker>;

    fn delivery(&self, result: &DeliveryResult<'_>, tracker: Arc<BatchTracker>) {
        if let Err((error, message)) = result {
            tracker.fail(format!(
                "{error} (topic {}, partition {})",
                message.topic(),
                message.partition()
            ));
        }
        tracker.settle_one();
    }
}
