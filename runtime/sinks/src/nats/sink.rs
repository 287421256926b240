//! Talking to NATS: connecting, publishing a batch to a stream and
//! awaiting every acknowledgement, and applying rows to a KV bucket with
//! revision compare-and-set.

use std::collections::HashMap;
use std::str::FromStr as _;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, ReplayPolicy, push},
    context::{PublishError, PublishErrorKind},
    message::PublishMessage,
    stream::{Config as StreamConfig, LastRawMessageErrorKind, StorageType},
};
use async_nats::{HeaderMap, HeaderName, HeaderValue, ServerAddr};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt as _};
use weir_codec::{Encoder, JsonEncoder, NameTemplate, write_lsn};
use weir_core::{ChangeEvent, Op, Position, Rejected, Sink, SinkError, SinkPayload, SinkRecord};

use crate::owners::Owners;

use super::config::{NatsMode, NatsSinkConfig};
use super::names::{KeyTemplate, check_subject, covers, stream_subjects};
use super::row::{Row, row_json};

/// The header that carries a KV entry's position, as 24 hex digits
/// ([`Position::to_hex`]).
pub const POSITION_HEADER: &str = "Weir-Position";

/// Publishes in flight at once: more only queue in the client.
const WINDOW: usize = 1024;

/// KV reads in flight at once.
pub(super) const READS: usize = 64;

/// Most router-chosen templates remembered; past that they are parsed again.
const MAX_ROUTED: usize = 10_000;

/// A sink that writes to a JetStream stream or a KV bucket; see
/// [`NatsSinkConfig`].
pub struct NatsSink {
    name: String,
    url: String,
    request_timeout: std::time::Duration,
    js: jetstream::Context,
    encoder: JsonEncoder,
    /// What jetstream messages carry: `encoding`'s value of each change.
    body_encoder: Encoder,
    target: Target,
}

enum Target {
    Stream(StreamTarget),
    Kv(Box<KvTarget>),
}

struct StreamTarget {
    stream: String,
    subject: NameTemplate,
    message_subject: NameTemplate,
    raw_subject: NameTemplate,
    routed: HashMap<String, NameTemplate>,
    /// The position of the last record given an id, and its index among
    /// the records sharing that position.
    last_id: Option<(Position, u32)>,
}

struct KvTarget {
    store: jetstream::kv::Store,
    key: KeyTemplate,
    routed: HashMap<String, KeyTemplate>,
    owners: Owners,
}

impl NatsSink {
    /// Checks the configuration, connects, and checks (or creates) the
    /// stream or bucket.
    ///
    /// Fails with [`SinkError::Config`] for an invalid configuration, a
    /// server without JetStream or a missing stream or bucket that may not
    /// be created, and with [`SinkError::Transient`] when no server answers.
    pub async fn connect(name: &str, config: NatsSinkConfig) -> Result<NatsSink, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let url = config.url.clone();
        let mut servers = Vec::new();
        for server in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            servers.push(ServerAddr::from_str(server).map_err(|e| {
                SinkError::Config(format!(
                    "sinks.{name}.url: {server:?} is not a server address: {e}"
                ))
            })?);
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("weir-{name}"))
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            // The pipeline retries failed batches; the client keeps
            // reconnecting underneath, however long the server is away.
            .max_reconnects(None);
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        let client = options.connect(servers).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            match e.kind() {
                K::Authentication | K::AuthorizationViolation => SinkError::Auth(format!(
                    "the NATS server at {url} refused the credentials: {e}"
                )),
                K::ServerParse | K::Tls => {
                    SinkError::Config(format!("connecting to NATS at {url}: {e}"))
                }
                _ => SinkError::Transient(format!("no NATS server at {url} answered: {e}")),
            }
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .ack_timeout(config.request_timeout)
            .build(client);
        // A plain request rather than the client's account query, whose
        // answer type a 2.9 server's reply does not fit.
        match js.client().request("$JS.API.INFO", Bytes::new()).await {
            Ok(reply) => {
                let info: serde_json::Value =
                    serde_json::from_slice(&reply.payload).unwrap_or_default();
                if let Some(error) = info.get("error") {
                    return Err(SinkError::Config(format!(
                        "the NATS server at {url} refuses JetStream for this account: {error}"
                    )));
                }
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(SinkError::Config(format!(
                    "the NATS server at {url} has no JetStream (start it with -js, or enable \
                     JetStream for the account)"
                )));
            }
            Err(e) => {
                return Err(SinkError::Transient(format!(
                    "asking the NATS server at {url} about JetStream: {e}"
                )));
            }
        }
        let target = match config.mode {
            NatsMode::Jetstream => Target::Stream(open_stream(name, &config, &js).await?),
            NatsMode::Kv => Target::Kv(Box::new(open_bucket(name, &config, &js).await?)),
        };
        tracing::info!(sink = name, %url, mode = ?config.mode, "connected to NATS");
        Ok(NatsSink {
            name: name.to_owned(),
            url,
            request_timeout: config.request_timeout,
            js,
            encoder: JsonEncoder::new(),
            body_encoder: Encoder::new(config.encoding, config.debezium.as_ref()),
            target,
        })
    }
}

fn template_error(field: &str, e: String) -> SinkError {
    SinkError::Config(format!("{field}: {e}"))
}

async fn open_stream(
    name: &str,
    config: &NatsSinkConfig,
    js: &jetstream::Context,
) -> Result<StreamTarget, SinkError> {
    let stream = config.stream.clone().expect("validated");
    let url = &config.url;
    match js.get_stream(&stream).await {
        Ok(mut found) => {
            let info = found.info().await.map_err(|e| {
                SinkError::Transient(format!("reading stream {stream} at {url}: {e}"))
            })?;
            let window = info.config.duplicate_window;
            if window.is_zero() {
                tracing::warn!(sink = name, %stream, "the stream has no duplicate window: replays are stored twice");
            }
            tracing::info!(sink = name, %stream, duplicate_window = ?window, subjects = ?info.config.subjects, "stream found");
        }
        Err(e) if is_not_found(&e) => {
            if !config.create_stream {
                return Err(SinkError::Config(format!(
                    "stream {stream} does not exist at {url}; create it, or set \
                     sinks.{name}.create_stream = true"
                )));
            }
            let subjects =
                stream_subjects(&config.stream_templates()).map_err(SinkError::Config)?;
            js.create_stream(StreamConfig {
                name: stream.clone(),
                subjects: subjects.clone(),
                duplicate_window: config.duplicate_window,
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| SinkError::Config(format!("creating stream {stream} at {url}: {e}")))?;
            tracing::info!(sink = name, %stream, ?subjects, duplicate_window = ?config.duplicate_window, "created stream");
        }
        Err(e) => {
            return Err(SinkError::Transient(format!(
                "looking up stream {stream} at {url}: {e}"
            )));
        }
    }
    Ok(StreamTarget {
        stream,
        subject: NameTemplate::parse(&config.subject).map_err(|e| template_error("subject", e))?,
        message_subject: NameTemplate::parse(&config.message_subject)
            .map_err(|e| template_error("message_subject", e))?,
        raw_subject: NameTemplate::parse(&config.raw_subject)
            .map_err(|e| template_error("raw_subject", e))?,
        routed: HashMap::new(),
        last_id: None,
    })
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(err)
            if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

async fn open_bucket(
    name: &str,
    config: &NatsSinkConfig,
    js: &jetstream::Context,
) -> Result<KvTarget, SinkError> {
    let bucket = config.bucket.clone().expect("validated");
    let url = &config.url;
    let key = KeyTemplate::parse(&config.key).map_err(|e| template_error("key", e))?;
    match js.get_stream(format!("KV_{bucket}")).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            if !config.create_bucket {
                return Err(SinkError::Config(format!(
                    "KV bucket {bucket} does not exist at {url}; create it, or set \
                     sinks.{name}.create_bucket = true"
                )));
            }
            // The bucket's stream as KV clients make it (history 1), made
            // directly: the client's create_key_value first asks for
            // account details in a form a 2.9 server does not send.
            js.create_stream(StreamConfig {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| SinkError::Config(format!("creating KV bucket {bucket} at {url}: {e}")))?;
            tracing::info!(sink = name, %bucket, "created KV bucket");
        }
        Err(e) => {
            return Err(SinkError::Transient(format!(
                "looking up KV bucket {bucket} at {url}: {e}"
            )));
        }
    }
    let store = js
        .get_key_value(&bucket)
        .await
        .map_err(|e| SinkError::Transient(format!("opening KV bucket {bucket} at {url}: {e}")))?;
    Ok(KvTarget {
        store,
        key,
        routed: HashMap::new(),
        owners: Owners::default(),
    })
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let rejected = match self.target {
            Target::Stream(_) => self.write_stream(batch).await?,
            Target::Kv(_) => self.write_kv(batch).await?,
        };
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Rejected(rejected))
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Every write awaited its acknowledgements; this only sends what
        // the client still buffers (nothing that counts as written).
        self.js
            .client()
            .flush()
            .await
            .map_err(|e| SinkError::Transient(format!("flushing the NATS connection: {e}")))
    }
}

/// What became of one publish.
enum Outcome {
    Stored,
    /// No stream listens on the subject.
    NoStream(String),
    /// The stream refused this message for good.
    Refused(String),
    /// The stream may take it later.
    Failed(String),
}

fn classify(error: &PublishError) -> Outcome {
    use std::error::Error as _;
    match error.kind() {
        PublishErrorKind::StreamNotFound => Outcome::NoStream(error.to_string()),
        PublishErrorKind::MaxPayloadExceeded => Outcome::Refused(error.to_string()),
        PublishErrorKind::Other => {
            let code = error
                .source()
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .map(|e| e.error_code());
            match code {
                Some(
                    jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                    | jetstream::ErrorCode::STREAM_NOT_MATCH,
                ) => Outcome::Refused(describe(error)),
                _ => Outcome::Failed(describe(error)),
            }
        }
        _ => Outcome::Failed(describe(error)),
    }
}

/// The error with the server's own message, which the kind alone hides.
fn describe(error: &PublishError) -> String {
    use std::error::Error as _;
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

impl NatsSink {
    async fn write_stream(&mut self, batch: &[SinkRecord]) -> Result<Vec<Rejected>, SinkError> {
        let Target::Stream(target) = &mut self.target else {
            unreachable!("called for streams only")
        };
        let saved_id = target.last_id;
        let mut rejected = Vec::new();
        let mut failure: Option<String> = None;
        let mut no_stream: Vec<(usize, String, String)> = Vec::new();
        let mut pending = FuturesUnordered::new();
        let mut subject = String::new();
        let mut settle = |index: usize,
                          subject: String,
                          outcome: Outcome,
                          rejected: &mut Vec<Rejected>,
                          failure: &mut Option<String>| match outcome {
            Outcome::Stored => {}
            Outcome::Refused(reason) => rejected.push(Rejected {
                index,
                reason: format!("the stream refused the message on {subject}: {reason}"),
            }),
            Outcome::NoStream(reason) => no_stream.push((index, subject, reason)),
            Outcome::Failed(reason) => {
                failure.get_or_insert(format!("publishing on {subject}: {reason}"));
            }
        };
        for (index, record) in batch.iter().enumerate() {
            if let Err(reason) = target.subject_for(record, &mut subject) {
                rejected.push(Rejected { index, reason });
                continue;
            }
            let position = record.source().position();
            let n = match target.last_id {
                Some((p, n)) if p == position => n + 1,
                _ => 0,
            };
            target.last_id = Some((position, n));
            let id = format!(
                "{}:{}:{}:{n}",
                self.name,
                record.source().commit_lsn,
                position.seq
            );
            let (headers, payload) =
                match stream_message(record, &id, &target.stream, &mut self.body_encoder) {
                    Ok(message) => message,
                    Err(MessageError::Refuse(reason)) => {
                        rejected.push(Rejected { index, reason });
                        continue;
                    }
                    Err(MessageError::Encode(e)) => {
                        target.last_id = saved_id;
                        return Err(e);
                    }
                };
            let message = PublishMessage::build().payload(payload).headers(headers);
            match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => {
                    let subject = subject.clone();
                    pending.push(async move { (index, subject, ack.await) });
                }
                Err(e) => match classify(&e) {
                    Outcome::Refused(reason) => rejected.push(Rejected {
                        index,
                        reason: format!("the message on {subject} cannot be sent: {reason}"),
                    }),
                    _ => {
                        failure = Some(format!("publishing on {subject}: {}", describe(&e)));
                        break;
                    }
                },
            }
            while pending.len() >= WINDOW {
                let (index, subject, result) = pending.next().await.expect("not empty");
                let outcome = result.map_or_else(|e| classify(&e), |_| Outcome::Stored);
                settle(index, subject, outcome, &mut rejected, &mut failure);
            }
        }
        // Every publish is settled before returning, so a retry of the
        // batch never races one of this attempt's messages.
        while let Some((index, subject, result)) = pending.next().await {
            let outcome = result.map_or_else(|e| classify(&e), |_| Outcome::Stored);
            settle(index, subject, outcome, &mut rejected, &mut failure);
        }
        if failure.is_none() && !no_stream.is_empty() {
            match self.explain_no_stream(&no_stream[0].1).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    for (index, subject, _) in no_stream.drain(..) {
                        rejected.push(Rejected {
                            index,
                            reason: format!("no stream takes subject {subject}: {reason}"),
                        });
                    }
                }
                Err(e) => {
                    let Target::Stream(target) = &mut self.target else {
                        unreachable!()
                    };
                    target.last_id = saved_id;
                    return Err(e);
                }
            }
            if let Some((_, subject, reason)) = no_stream.first() {
                failure = Some(format!("publishing on {subject}: {reason}"));
            }
        }
        if let Some(failure) = failure {
            let Target::Stream(target) = &mut self.target else {
                unreachable!()
            };
            target.last_id = saved_id;
            return Err(SinkError::Transient(format!(
                "the batch was not acknowledged by the stream at {}; {failure}",
                self.url
            )));
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }

    /// Why nothing answered a publish on `subject`: `Err` (a Config
    /// error) when the stream is gone, `Some` when the stream does not
    /// listen on the subject, `None` when it does (the server is starting
    /// or moving the stream: worth a retry).
    async fn explain_no_stream(&self, subject: &str) -> Result<Option<String>, SinkError> {
        let Target::Stream(target) = &self.target else {
            unreachable!()
        };
        let stream = &target.stream;
        match self.js.get_stream(stream).await {
            Ok(mut found) => match found.info().await {
                Ok(info) => {
                    if info.config.subjects.iter().any(|s| covers(s, subject)) {
                        Ok(None)
                    } else {
                        Ok(Some(format!(
                            "stream {stream} listens on {:?} only",
                            info.config.subjects
                        )))
                    }
                }
                Err(_) => Ok(None),
            },
            Err(e) if is_not_found(&e) => Err(SinkError::Config(format!(
                "stream {stream} no longer exists at {}",
                self.url
            ))),
            Err(_) => Ok(None),
        }
    }
}

impl StreamTarget {
    /// Writes the record's subject into `out`; an error is why the record
    /// cannot be published.
    fn subject_for(&mut self, record: &SinkRecord, out: &mut String) -> Result<(), String> {
        let template = match &record.topic {
            Some(routed) => {
                if !self.routed.contains_key(routed) {
                    if self.routed.len() >= MAX_ROUTED {
                        self.routed.clear();
                    }
                    let parsed = NameTemplate::parse(routed)?;
                    self.routed.insert(routed.clone(), parsed);
                }
                &self.routed[routed]
            }
            None => match &record.payload {
                SinkPayload::Change(event) if event.op != Op::Message => &self.subject,
                SinkPayload::Change(_) => &self.message_subject,
                SinkPayload::Raw(_) => &self.raw_subject,
            },
        };
        template.expand(record, out).map_err(|e| e.to_string())?;
        check_subject(out).map_err(|e| {
            format!(
                "{e} (for a record at LSN {}; the subject comes from {})",
                record.source().lsn,
                record
                    .topic
                    .as_deref()
                    .map_or("the sink's templates", |_| "the router")
            )
        })
    }
}

enum MessageError {
    /// This record cannot be a NATS message (a header value with a line break).
    Refuse(String),
    /// The event cannot be encoded at all.
    Encode(SinkError),
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, MessageError> {
    HeaderValue::from_str(value)
        .map_err(|e| MessageError::Refuse(format!("header {name} cannot hold {value:?}: {e}")))
}

/// The headers and body of a record in jetstream mode.
fn stream_message(
    record: &SinkRecord,
    id: &str,
    stream: &str,
    encoder: &mut Encoder,
) -> Result<(HeaderMap, Bytes), MessageError> {
    let source = record.source();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", header_value("Nats-Msg-Id", id)?);
    headers.insert(
        "Nats-Expected-Stream",
        header_value("Nats-Expected-Stream", stream)?,
    );
    let mut lsn = Vec::new();
    write_lsn(&mut lsn, source.commit_lsn);
    headers.insert("weir.commit_lsn", String::from_utf8_lossy(&lsn).as_ref());
    lsn.clear();
    write_lsn(&mut lsn, source.lsn);
    headers.insert("weir.lsn", String::from_utf8_lossy(&lsn).as_ref());
    headers.insert("weir.xid", itoa::Buffer::new().format(source.xid));
    match &record.payload {
        SinkPayload::Change(event) => {
            headers.insert("weir.op", event.op.as_str());
            if let Some(table) = &event.table {
                headers.insert("weir.schema", header_value("weir.schema", &table.schema)?);
                headers.insert("weir.table", header_value("weir.table", &table.name)?);
            }
            if let Some(message) = &event.message {
                headers.insert("weir.prefix", header_value("weir.prefix", &message.prefix)?);
            }
            let (mut key, mut body) = (Vec::new(), Vec::new());
            encoder
                .encode(event, &mut key, &mut body)
                .map_err(|e| MessageError::Encode(e.into()))?;
            Ok((headers, Bytes::from(body)))
        }
        SinkPayload::Raw(message) => {
            for (name, value) in &message.headers {
                let header = HeaderName::from_str(name).map_err(|e| {
                    MessageError::Refuse(format!("{name:?} cannot be a NATS header name: {e}"))
                })?;
                let text = std::str::from_utf8(value).map_err(|_| {
                    MessageError::Refuse(format!(
                        "header {name}: a NATS header value must be UTF-8"
                    ))
                })?;
                headers.append(header, header_value(name, text)?);
            }
            let body = message.value.clone().map(Bytes::from).unwrap_or_default();
            Ok((headers, body))
        }
    }
}

/// A KV entry as read from the bucket.
#[derive(Clone, Debug, Default)]
pub(super) struct Stored {
    /// The entry's revision (stream sequence); 0 when the key never existed.
    pub(super) revision: u64,
    pub(super) state: State,
    /// The bytes stored, to skip writing the same again.
    pub(super) payload: Bytes,
    /// Whether the entry is a delete or purge marker.
    pub(super) deleted: bool,
}

/// A key's state: what is there, at which position.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct State {
    /// `None` when the key never had a position (absent, or written by
    /// something other than Weir): any write wins.
    pub(super) position: Option<Position>,
    /// The row; `None` when absent or deleted (or not a JSON object).
    pub(super) row: Option<Row>,
}

/// One entry of a listing ([`NatsSink::listing`]), from its headers.
pub(super) struct Listed {
    /// The key, `None` when it does not start with the listing's prefix
    /// (a listing of the whole bucket).
    pub(super) key: Option<String>,
    /// The entry's revision (stream sequence).
    pub(super) revision: u64,
    /// The position in its `Weir-Position` header.
    pub(super) position: Option<Position>,
    /// Whether it is a delete or purge marker.
    pub(super) deleted: bool,
    /// How many entries the listing has left after this one.
    pub(super) pending: u64,
}

/// One thing a batch does to the bucket, in batch order.
enum Action<'a> {
    Put {
        index: usize,
        key: String,
        position: Position,
        event: &'a ChangeEvent,
        /// On a key change, the old key, whose unchanged TOAST values the
        /// new row keeps.
        toast_from: Option<String>,
    },
    Delete {
        index: usize,
        key: String,
        position: Position,
    },
    Truncate {
        prefix: String,
        position: Position,
    },
}

/// A key's state while a batch is applied.
struct Slot {
    stored: Stored,
    current: State,
    /// The last record that changed it, to name when the write is refused.
    last_index: Option<usize>,
}

impl NatsSink {
    async fn write_kv(&mut self, batch: &[SinkRecord]) -> Result<Vec<Rejected>, SinkError> {
        let mut rejected = Vec::new();
        let mut actions = Vec::new();
        {
            let Target::Kv(target) = &mut self.target else {
                unreachable!("called for buckets only")
            };
            for (index, record) in batch.iter().enumerate() {
                match target.actions(index, record, &mut actions) {
                    Ok(()) => {}
                    Err(KvRefusal::Record(reason)) => rejected.push(Rejected { index, reason }),
                    Err(KvRefusal::Sink(e)) => return Err(e),
                }
            }
        }
        let mut start = 0;
        while start < actions.len() {
            let end = actions[start..]
                .iter()
                .position(|a| matches!(a, Action::Truncate { .. }))
                .map_or(actions.len(), |i| start + i);
            if end > start {
                self.apply(&actions[start..end], &mut rejected).await?;
            }
            if let Some(Action::Truncate { prefix, position }) = actions.get(end) {
                self.truncate(prefix, *position).await?;
            }
            start = end + 1;
        }
        rejected.sort_by_key(|r| r.index);
        Ok(rejected)
    }

    fn kv(&self) -> &KvTarget {
        match &self.target {
            Target::Kv(kv) => kv,
            Target::Stream(_) => unreachable!("called for buckets only"),
        }
    }

    /// The latest entry of `key`.
    pub(super) async fn read(&self, key: &str) -> Result<Stored, SinkError> {
        let store = &self.kv().store;
        let subject = format!("{}{key}", store.prefix);
        match store.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let position = message
                    .headers
                    .get(POSITION_HEADER)
                    .and_then(|v| Position::from_hex(v.as_str()));
                let deleted = is_marker(&message.headers);
                let row = if deleted {
                    None
                } else {
                    Row::parse(&message.payload)
                };
                Ok(Stored {
                    revision: message.sequence,
                    state: State { position, row },
                    payload: message.payload,
                    deleted,
                })
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Stored::default()),
            Err(e) => Err(SinkError::Transient(format!(
                "reading key {key} of KV bucket {} at {}: {e}",
                store.name, self.url
            ))),
        }
    }

    /// Applies actions without truncates: reads every key they touch,
    /// works out each key's final state, and writes the keys that changed,
    /// each guarded by the revision it read.
    async fn apply(
        &mut self,
        actions: &[Action<'_>],
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        let mut keys: Vec<&str> = Vec::new();
        for action in actions {
            match action {
                Action::Put {
                    key, toast_from, ..
                } => {
                    keys.push(key);
                    keys.extend(toast_from.as_deref());
                }
                Action::Delete { key, .. } => keys.push(key),
                Action::Truncate { .. } => unreachable!("split off"),
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut slots: HashMap<String, Slot> = HashMap::new();
        let mut reads = FuturesUnordered::new();
        let mut keys = keys.into_iter();
        let this = &*self;
        loop {
            while reads.len() < READS
                && let Some(key) = keys.next()
            {
                reads.push(async move { (key, this.read(key).await) });
            }
            let Some((key, stored)) = reads.next().await else {
                break;
            };
            let stored = stored?;
            slots.insert(
                key.to_owned(),
                Slot {
                    current: stored.state.clone(),
                    stored,
                    last_index: None,
                },
            );
        }
        drop(reads);
        for action in actions {
            match action {
                Action::Put {
                    index,
                    key,
                    position,
                    event,
                    toast_from,
                } => {
                    if slots[key].current.position > Some(*position) {
                        continue;
                    }
                    let mut row = Row::from_event(event, &mut self.encoder)?;
                    let fallback = toast_from
                        .as_deref()
                        .and_then(|old| slots[old].current.row.clone());
                    row.keep_unchanged(event, slots[key].current.row.as_ref(), fallback.as_ref());
                    let slot = slots.get_mut(key).expect("read above");
                    slot.current = State {
                        position: Some(*position),
                        row: Some(row),
                    };
                    slot.last_index = Some(*index);
                }
                Action::Delete {
                    index,
                    key,
                    position,
                } => {
                    let slot = slots.get_mut(key).expect("read above");
                    if slot.current.position > Some(*position) {
                        continue;
                    }
                    slot.current = State {
                        position: Some(*position),
                        row: None,
                    };
                    slot.last_index = Some(*index);
                }
                Action::Truncate { .. } => unreachable!("split off"),
            }
        }
        let mut writes = FuturesUnordered::new();
        for (key, slot) in &slots {
            let Some(index) = slot.last_index else {
                continue;
            };
            let position = slot.current.position.expect("set when changed");
            let payload = slot.current.row.as_ref().map(row_json);
            let unchanged = slot.stored.state.position == Some(position)
                && match &payload {
                    Some(p) => slot.stored.state.row.is_some() && slot.stored.payload == p[..],
                    None => slot.stored.state.row.is_none(),
                };
            if unchanged {
                continue;
            }
            let this = &*self;
            writes.push(async move {
                let result = this
                    .put(
                        key,
                        slot.stored.revision,
                        position,
                        payload.map(Bytes::from),
                    )
                    .await;
                (key, slot, index, position, result)
            });
        }
        let mut failure = None;
        let mut too_large = Vec::new();
        while let Some((key, slot, index, position, result)) = writes.next().await {
            match result {
                Ok(()) => {}
                Err(Outcome::Refused(reason)) => {
                    too_large.push((key, slot.stored.revision, index, position, reason))
                }
                Err(Outcome::NoStream(reason) | Outcome::Failed(reason)) => {
                    failure.get_or_insert(format!("writing key {key}: {reason}"));
                }
                Err(Outcome::Stored) => {}
            }
        }
        drop(writes);
        if let Some(failure) = failure {
            return Err(SinkError::Transient(format!(
                "the batch was not applied to KV bucket {} at {}: {failure}",
                self.kv().store.name,
                self.url
            )));
        }
        // A row too large for the server is deleted rather than left at an
        // older version, so the cache never serves a stale row as current.
        for (key, revision, index, position, reason) in too_large {
            if let Err(Outcome::Failed(e) | Outcome::Refused(e) | Outcome::NoStream(e)) =
                self.put(key, revision, position, None).await
            {
                return Err(SinkError::Transient(format!("deleting key {key}: {e}")));
            }
            rejected.push(Rejected {
                index,
                reason: format!(
                    "the row for key {key} cannot be stored (the key is deleted instead): {reason}"
                ),
            });
        }
        Ok(())
    }

    /// Writes `key` at `position` (a row, or a delete marker for `None`),
    /// if its revision is still `revision`.
    async fn put(
        &self,
        key: &str,
        revision: u64,
        position: Position,
        payload: Option<Bytes>,
    ) -> Result<(), Outcome> {
        let store = &self.kv().store;
        let mut message = PublishMessage::build()
            .expected_last_subject_sequence(revision)
            .header(POSITION_HEADER, position.to_hex());
        message = match payload {
            Some(p) => message.payload(p),
            None => message.header("KV-Operation", "DEL"),
        };
        let subject = format!("{}{key}", store.prefix);
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| classify_kv(&e))?;
        ack.await.map(|_| ()).map_err(|e| classify_kv(&e))
    }

    /// Removes every key of a table written before `position`, leaving a
    /// delete marker at `position` that older writes respect.
    async fn truncate(&mut self, prefix: &str, position: Position) -> Result<(), SinkError> {
        let store = &self.kv().store;
        let failed = |e: String| {
            SinkError::Transient(format!(
                "listing the keys {prefix}… of KV bucket {} for a truncate: {e}",
                store.name
            ))
        };
        let mut doomed = Vec::new();
        let listing = self
            .listing(prefix, DeliverPolicy::LastPerSubject)
            .await
            .map_err(failed)?;
        if let Some(mut messages) = listing {
            loop {
                let Some(listed) = self
                    .next_listed(&mut messages, prefix)
                    .await
                    .map_err(failed)?
                else {
                    break;
                };
                if let Some(key) = listed.key
                    && listed.position < Some(position)
                {
                    doomed.push((key, listed.revision));
                }
                if listed.pending == 0 {
                    break;
                }
            }
        }
        let this = &*self;
        let mut writes: FuturesUnordered<_> =
            doomed
                .iter()
                .map(|(key, revision)| async move {
                    (key, this.put(key, *revision, position, None).await)
                })
                .collect();
        while let Some((key, result)) = writes.next().await {
            if let Err(Outcome::Failed(e) | Outcome::Refused(e) | Outcome::NoStream(e)) = result {
                return Err(SinkError::Transient(format!(
                    "deleting key {key} for a truncate: {e}"
                )));
            }
        }
        tracing::debug!(sink = %self.name, prefix, keys = doomed.len(), "truncated");
        Ok(())
    }

    fn request_timeout(&self) -> std::time::Duration {
        self.request_timeout
    }

    /// Opens an ordered, headers-only consumer of the entries of the keys
    /// starting with `prefix` (only those subjects when it ends with `.`,
    /// else every key of the bucket), delivering as `deliver` says
    /// (`LastPerSubject`: each key's latest); `None` when it has nothing
    /// to deliver.
    pub(super) async fn listing(
        &self,
        prefix: &str,
        deliver: DeliverPolicy,
    ) -> Result<Option<push::Ordered>, String> {
        let store = &self.kv().store;
        let filter = if prefix.ends_with('.') {
            format!("{}{prefix}>", store.prefix)
        } else {
            format!("{}>", store.prefix)
        };
        let consumer = store
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: filter,
                headers_only: true,
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: deliver,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(None);
        }
        consumer
            .messages()
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The next entry of a [`NatsSink::listing`] for `prefix`; `None`
    /// when the consumer ended.
    pub(super) async fn next_listed(
        &self,
        messages: &mut push::Ordered,
        prefix: &str,
    ) -> Result<Option<Listed>, String> {
        let store = &self.kv().store;
        let next = tokio::time::timeout(self.request_timeout(), messages.next())
            .await
            .map_err(|_| "timed out".to_owned())?;
        let Some(message) = next else {
            return Ok(None);
        };
        let message = message.map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        let (revision, pending) = (info.stream_sequence, info.pending);
        let key = message
            .subject
            .strip_prefix(store.prefix.as_str())
            .filter(|key| key.starts_with(prefix))
            .map(str::to_owned);
        let headers = message.headers.as_ref();
        let position = headers
            .and_then(|h| h.get(POSITION_HEADER))
            .and_then(|v| Position::from_hex(v.as_str()));
        let deleted = headers.is_some_and(is_marker);
        Ok(Some(Listed {
            key,
            revision,
            position,
            deleted,
            pending,
        }))
    }

    /// The bucket's history: how many entries per key it keeps.
    pub(super) fn history(&self) -> i64 {
        self.kv()
            .store
            .stream
            .cached_info()
            .config
            .max_messages_per_subject
    }

    /// The bucket's name, for messages.
    pub(super) fn bucket(&self) -> &str {
        &self.kv().store.name
    }

    /// The server's address, for messages.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The key template for records routed with `topic` (the sink's own
    /// for `None`).
    pub(super) fn key_template(&mut self, topic: Option<&str>) -> Result<&KeyTemplate, String> {
        match &mut self.target {
            Target::Kv(kv) => KvTarget::template(&kv.key, &mut kv.routed, topic),
            Target::Stream(_) => Err("the sink is not in kv mode".to_owned()),
        }
    }

    /// The encoder rows are made with ([`Row::from_event`]).
    pub(super) fn row_encoder(&mut self) -> &mut JsonEncoder {
        &mut self.encoder
    }
}

/// Whether an entry's headers make it a marker rather than a value: a KV
/// delete or purge, or a marker the server left (a key's `max_age`, on
/// servers that have them).
fn is_marker(headers: &HeaderMap) -> bool {
    headers
        .get("KV-Operation")
        .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE")
        || headers.get("Nats-Marker-Reason").is_some()
}

fn classify_kv(error: &PublishError) -> Outcome {
    if error.kind() == PublishErrorKind::WrongLastSequence {
        return Outcome::Failed(
            "another writer changed the key since it was read; the batch is applied again"
                .to_owned(),
        );
    }
    classify(error)
}

/// Why a record cannot go to the bucket: its own fault (refused,
/// dead-lettered), or the configuration's (the pipeline halts).
enum KvRefusal {
    Record(String),
    Sink(SinkError),
}

impl From<String> for KvRefusal {
    fn from(reason: String) -> Self {
        KvRefusal::Record(reason)
    }
}

impl KvTarget {
    /// The key template for records routed with `topic`; the error says
    /// why a route's does not parse.
    // An associated function, so that `owners` stays free to borrow.
    fn template<'a>(
        key: &'a KeyTemplate,
        routed: &'a mut HashMap<String, KeyTemplate>,
        topic: Option<&str>,
    ) -> Result<&'a KeyTemplate, String> {
        let Some(topic) = topic else {
            return Ok(key);
        };
        if !routed.contains_key(topic) {
            if routed.len() >= MAX_ROUTED {
                routed.clear();
            }
            let parsed = KeyTemplate::parse(topic)
                .map_err(|e| format!("the router's key template {topic:?} {e}"))?;
            routed.insert(topic.to_owned(), parsed);
        }
        Ok(&routed[topic])
    }

    /// Adds what `record` does to the bucket to `actions`; an error is why
    /// the record cannot be applied.
    fn actions<'a>(
        &mut self,
        index: usize,
        record: &'a SinkRecord,
        actions: &mut Vec<Action<'a>>,
    ) -> Result<(), KvRefusal> {
        let event = match &record.payload {
            SinkPayload::Change(event) => event,
            SinkPayload::Raw(_) => {
                return Err("a KV bucket holds rows; a raw record has no row to store"
                    .to_owned()
                    .into());
            }
        };
        let template = KvTarget::template(&self.key, &mut self.routed, record.topic.as_deref())?;
        if let Some(source) = &event.table
            && event.op != Op::Message
        {
            let mut prefix = String::new();
            template.prefix(event, &mut prefix)?;
            self.owners
                .claim("key space", &prefix, source)
                .map_err(KvRefusal::Sink)?;
        }
        let position = record.source().position();
        let mut key = String::new();
        match event.op {
            // Logical messages are not rows.
            Op::Message => {}
            Op::Truncate => {
                template.prefix(event, &mut key)?;
                actions.push(Action::Truncate {
                    prefix: key,
                    position,
                });
            }
            Op::Delete => {
                template.expand(event, &mut key)?;
                actions.push(Action::Delete {
                    index,
                    key,
                    position,
                });
            }
            Op::Insert | Op::Update | Op::Read => {
                template.expand(event, &mut key)?;
                let mut old_key = None;
                if event.op == Op::Update && event.before.is_some() {
                    let mut old = ChangeEvent::clone(event);
                    old.after = None;
                    let mut before = String::new();
                    template.expand(&old, &mut before)?;
                    if before != key {
                        old_key = Some(before);
                    }
                }
                actions.push(Action::Put {
                    index,
                    key,
                    position,
                    event,
                    toast_from: old_key.clone(),
                });
                if let Some(old) = old_key {
                    actions.push(Action::Delete {
                        index,
                        key: old,
                        position,
                    });
                }
            }
        }
        Ok(())
    }
}
