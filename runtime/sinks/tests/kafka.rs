//! The Kafka sink against a real Kafka-protocol broker: tansu, run in memory
//! on a free loopback port for each test.
//!
//! tansu is found through `WEIR_TANSU`, then `~/.cache/weir/tools/bin/tansu`,
//! then `PATH`. Without it these tests fail: a green run must mean the sink
//! talked to a broker.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Headers as _;
use rdkafka::{ClientConfig, Message as _};
use weir_core::{
    ChangeEvent, Column, LogicalMessage, Lsn, Op, RawMessage, ReplicaIdentity, Sink as _,
    SinkError, SinkPayload, SinkRecord, SourceInfo, TableSchema, TxnId, Value,
};
use weir_sinks::{KafkaSink, KafkaSinkConfig};

/// A tansu broker running in memory; killed when dropped.
struct Broker {
    child: Child,
    address: String,
    log_file: tempfile::NamedTempFile,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[], None)
    }

    /// A broker started with `extra` arguments, telling clients to connect
    /// to `advertised` (a port in front of it) instead of its own port.
    fn start_with(extra: &[&str], advertised: Option<u16>) -> Broker {
        let tansu = tansu_path();
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let advertised_url = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tansu.display()));
        let mut broker = Broker {
            child,
            address,
            log_file: log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let socket: SocketAddr = broker.address.parse().unwrap();
        while TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_err() {
            if let Some(status) = broker.child.try_wait().unwrap() {
                panic!("tansu exited with {status}:\n{}", broker.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 30s:\n{}",
                broker.address,
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file.path()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_TANSU") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WEIR_TANSU={} is not a file: point it at the tansu binary, or unset it to use \
             the one the setup script installs into ~/.cache/weir/tools/bin",
            path.display()
        );
        return path;
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/weir/tools/bin/tansu");
        if cached.is_file() {
            return cached;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "tansu (the Kafka-compatible broker these tests run against) was not found: \
         run the project's setup script that installs it into ~/.cache/weir/tools \
         (cargo install tansu --locked --features dynostore --root ~/.cache/weir/tools), \
         or point WEIR_TANSU at the binary"
    );
}

/// A loopback port nothing listens on (right after this call).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn orders() -> Arc<TableSchema> {
    let column = |name: &str, type_name: &str, key: bool| Column {
        name: name.into(),
        type_oid: 0,
        type_name: type_name.into(),
        type_modifier: -1,
        key,
    };
    Arc::new(TableSchema {
        id: 16384,
        version: 1,
        schema: "public".into(),
        name: "orders".into(),
        columns: vec![column("id", "int8", true), column("status", "text", false)],
        replica_identity: ReplicaIdentity::Default,
    })
}

fn source(txn: u64, seq: u32) -> SourceInfo {
    SourceInfo {
        commit_lsn: Lsn(0x100_0000 + txn * 0x100),
        lsn: Lsn(0x100_0000 + txn * 0x100 + u64::from(seq)),
        xid: 700 + txn as u32,
        commit_time_micros: 1_795_899_600_000_000 + txn as i64,
        seq,
        snapshot: Default::default(),
    }
}

fn row_change(op: Op, txn: u64, seq: u32, id: i64, status: &str) -> SinkRecord {
    let row = Some(vec![Value::Int(id), Value::Text(status.into())]);
    let (before, after) = match op {
        Op::Delete => (row, None),
        _ => (None, row),
    };
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op,
            table: Some(orders()),
            before,
            after,
            message: None,
            source: source(txn, seq),
            txn: TxnId(txn),
        })),
        txn: TxnId(txn),
    }
}

/// Everything received on `topics`, as (topic, partition, key, value, headers).
type Received = (
    String,
    i32,
    Option<Vec<u8>>,
    Vec<u8>,
    BTreeMap<String, String>,
);

async fn consume(brokers: &str, topics: &[&str], count: usize) -> Vec<Received> {
    consume_with(brokers, &[], topics, count).await
}

/// [`consume`] with extra client settings (security).
async fn consume_with(
    brokers: &str,
    settings: &[(&str, &str)],
    topics: &[&str],
    count: usize,
) -> Vec<Received> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("weir-test-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(topics).unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("received {} of {count} messages within 60s", received.len())
            })
            .unwrap();
        let mut headers = BTreeMap::new();
        if let Some(all) = message.headers() {
            for h in all.iter() {
                headers.insert(
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                );
            }
        }
        received.push((
            message.topic().to_owned(),
            message.partition(),
            message.key().map(<[u8]>::to_vec),
            message.payload().unwrap_or_default().to_vec(),
            headers,
        ));
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_change_events_with_keys_headers_and_per_key_order() {
    let broker = Broker::start();
    let mut config = KafkaSinkConfig::new(&broker.address);
    config.create_topics = true;
    config.partitions = 3;
    let mut sink = KafkaSink::connect("events", config).await.unwrap();

    // Two batches of five transactions, each touching the same five rows,
    // so every key sees a sequence of changes that must arrive in order.
    let mut sent = 0;
    for batch_no in 0..2u64 {
        let mut batch = Vec::new();
        for t in 0..5u64 {
            let txn = batch_no * 5 + t;
            for id in 0..5i64 {
                let op = match (txn, id) {
                    (0, _) => Op::Insert,
                    (9, 4) => Op::Delete,
                    _ => Op::Update,
                };
                batch.push(row_change(op, txn, id as u32, id, &format!("v{txn}")));
            }
        }
        sent += batch.len();
        sink.write(&batch).await.unwrap();
    }

    // A logical message, a raw record and a routed topic with placeholders.
    let message = SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op: Op::Message,
            table: None,
            before: None,
            after: None,
            message: Some(LogicalMessage {
                prefix: "audit".into(),
                content: b"hello \x00 world".to_vec(),
            }),
            source: source(10, 0),
            txn: TxnId(10),
        })),
        txn: TxnId(10),
    };
    let raw = SinkRecord {
        topic: Some("raw-out".into()),
        payload: SinkPayload::Raw(Arc::new(RawMessage {
            key: Some(b"k1".to_vec()),
            value: Some(b"plugin bytes".to_vec()),
            headers: vec![("x-plugin".into(), b"demo".to_vec())],
            source: source(10, 1),
        })),
        txn: TxnId(10),
    };
    let mut routed = row_change(Op::Insert, 10, 2, 99, "routed");
    routed.topic = Some("cdc.{table}.{op}".into());
    sink.write(&[message, raw, routed]).await.unwrap();
    sink.close().await.unwrap();

    let received = consume(
        &broker.address,
        &[
            "public.orders",
            "weir.audit",
            "raw-out",
            "cdc.orders.insert",
        ],
        sent + 3,
    )
    .await;

    let mut by_topic: HashMap<&str, Vec<&Received>> = HashMap::new();
    for r in &received {
        by_topic.entry(r.0.as_str()).or_default().push(r);
    }
    assert_eq!(by_topic["public.orders"].len(), sent);

    let mut seen_txns: HashMap<i64, Vec<u64>> = HashMap::new();
    let mut partition_of: HashMap<i64, i32> = HashMap::new();
    for (_, partition, key, value, headers) in &by_topic["public.orders"] {
        let key: serde_json::Value = serde_json::from_slice(key.as_deref().unwrap()).unwrap();
        let id = key["id"].as_i64().unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(value).unwrap();
        assert_eq!(envelope["schema"], "public");
        assert_eq!(envelope["table"], "orders");
        assert_eq!(envelope["key"], key);
        let row = if envelope["op"] == "delete" {
            &envelope["before"]
        } else {
            &envelope["after"]
        };
        assert_eq!(row["id"].as_i64(), Some(id));
        let txn: u64 = row["status"].as_str().unwrap()[1..].parse().unwrap();
        let expected_source = source(txn, id as u32);
        assert_eq!(
            envelope["source"]["commit_lsn"],
            expected_source.commit_lsn.to_string()
        );
        assert_eq!(envelope["source"]["xid"], expected_source.xid);
        assert_eq!(envelope["source"]["seq"], id);
        let op = envelope["op"].as_str().unwrap();
        assert_eq!(headers["weir.op"], op);
        assert_eq!(headers["weir.schema"], "public");
        assert_eq!(headers["weir.table"], "orders");
        assert_eq!(headers["weir.xid"], expected_source.xid.to_string());
        assert_eq!(
            headers["weir.commit_lsn"],
            expected_source.commit_lsn.to_string()
        );
        assert_eq!(headers["weir.lsn"], expected_source.lsn.to_string());
        // One key, one partition: that is what keeps its changes in order.
        assert_eq!(*partition_of.entry(id).or_insert(*partition), *partition);
        seen_txns.entry(id).or_default().push(txn);
    }
    let partitions_used: std::collections::HashSet<i32> = partition_of.values().copied().collect();
    assert!(
        partitions_used.len() > 1,
        "all keys in one partition: {partition_of:?}"
    );
    for id in 0..5 {
        assert_eq!(
            seen_txns[&id],
            (0..10).collect::<Vec<u64>>(),
            "changes to id {id} out of order"
        );
    }

    let (_, _, key, value, headers) = by_topic["weir.audit"][0];
    assert_eq!(*key, None);
    let envelope: serde_json::Value = serde_json::from_slice(value).unwrap();
    assert_eq!(envelope["op"], "message");
    assert_eq!(envelope["message"]["prefix"], "audit");
    let content = base64::engine::general_purpose::STANDARD
        .decode(envelope["message"]["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(content, b"hello \x00 world");
    assert_eq!(headers["weir.op"], "message");
    assert_eq!(headers["weir.prefix"], "audit");
    assert!(!headers.contains_key("weir.table"));

    let (_, _, key, value, headers) = by_topic["raw-out"][0];
    assert_eq!(key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(value, b"plugin bytes");
    assert_eq!(headers["x-plugin"], "demo");
    assert_eq!(
        headers["weir.commit_lsn"],
        source(10, 1).commit_lsn.to_string()
    );

    let (_, _, key, value, _) = by_topic["cdc.orders.insert"][0];
    assert_eq!(key.as_deref(), Some(&br#"{"id":99}"#[..]));
    let envelope: serde_json::Value = serde_json::from_slice(value).unwrap();
    assert_eq!(envelope["after"]["status"], "routed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_without_create_topics_is_a_config_error() {
    let broker = Broker::start();
    let mut sink = KafkaSink::connect("events", KafkaSinkConfig::new(&broker.address))
        .await
        .unwrap();
    let err = sink
        .write(&[row_change(Op::Insert, 0, 0, 1, "new")])
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "topic public.orders does not exist and sinks.events.create_topics is false"
    );

    // Once the topic exists (here made by a sink allowed to), the same
    // configuration writes to it.
    let mut creating = KafkaSinkConfig::new(&broker.address);
    creating.create_topics = true;
    let mut creator = KafkaSink::connect("creator", creating).await.unwrap();
    creator
        .write(&[row_change(Op::Insert, 0, 0, 1, "new")])
        .await
        .unwrap();
    sink.write(&[row_change(Op::Insert, 1, 0, 2, "new")])
        .await
        .unwrap();
    let received = consume(&broker.address, &["public.orders"], 2).await;
    assert_eq!(received.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_fails_with_a_clear_error_in_bounded_time() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut config = KafkaSinkConfig::new(&address);
    config.connect_timeout = Duration::from_secs(2);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        KafkaSink::connect("events", config),
    )
    .await
    .expect("connect did not give up within 30s");
    let Err(err) = result else {
        panic!("connected to a closed port");
    };
    assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&address), "{text}");
    assert!(text.contains("no Kafka broker"), "{text}");
    // librdkafka's own reason is passed on, not just "transport failure".
    assert!(text.contains("Connection refused"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_delays_records_but_never_drops_them() {
    let broker = Broker::start();
    let mut config = KafkaSinkConfig::new(&broker.address);
    config.create_topics = true;
    config.topic = Some("small-queue".into());
    // A queue far smaller than the batch, so sending must wait for room.
    config
        .properties
        .insert("queue.buffering.max.messages".into(), "5".into());
    let mut sink = KafkaSink::connect("events", config).await.unwrap();
    let batch: Vec<SinkRecord> = (0..200)
        .map(|i| row_change(Op::Insert, 0, i, 1, &format!("v{i}")))
        .collect();
    sink.write(&batch).await.unwrap();

    let received = consume(&broker.address, &["small-queue"], batch.len()).await;
    let statuses: Vec<String> = received
        .iter()
        .map(|(_, _, _, value, _)| {
            let envelope: serde_json::Value = serde_json::from_slice(value).unwrap();
            envelope["after"]["status"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
    assert_eq!(statuses, expected, "one key: every record, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_batch_fails_as_unavailable_within_the_delivery_timeout() {
    let broker = Broker::start();
    let mut config = KafkaSinkConfig::new(&broker.address);
    config.create_topics = true;
    config.delivery_timeout = Duration::from_secs(3);
    let mut sink = KafkaSink::connect("events", config).await.unwrap();
    sink.write(&[row_change(Op::Insert, 0, 0, 1, "new")])
        .await
        .unwrap();

    drop(broker);
    let batch = [
        row_change(Op::Update, 1, 0, 1, "paid"),
        row_change(Op::Update, 1, 1, 2, "paid"),
    ];
    let result = tokio::time::timeout(Duration::from_secs(30), sink.write(&batch))
        .await
        .expect("write did not give up within 30s");
    let err = result.unwrap_err();
    assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("2 of 2 records were not delivered"), "{text}");
    assert!(text.contains("topic public.orders"), "{text}");
}

fn raw_record(txn: u64, value: &[u8]) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Raw(Arc::new(RawMessage {
            key: None,
            value: Some(value.to_vec()),
            headers: vec![],
            source: source(txn, 0),
        })),
        txn: TxnId(txn),
    }
}

/// A record whose topic cannot be made is refused on its own; the rest of
/// its batch is written. A raw record without a topic goes to `raw_topic`
/// (before, the default `message_topic` "{prefix}" made an empty name and
/// stopped the sink on the first one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_valid_topic_are_rejected_one_by_one() {
    let broker = Broker::start();
    let mut config = KafkaSinkConfig::new(&broker.address);
    config.create_topics = true;
    let mut sink = KafkaSink::connect("events", config).await.unwrap();
    let mut routed = row_change(Op::Insert, 0, 1, 1, "x");
    routed.topic = Some("bad topic/{table}".into());
    let batch = [
        raw_record(0, b"raw bytes"),
        routed,
        row_change(Op::Insert, 0, 2, 2, "y"),
    ];
    let err = sink.write(&batch).await.unwrap_err();
    let SinkError::Rejected(rejected) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].index, 1);
    assert!(
        rejected[0].reason.contains("bad topic/orders"),
        "{}",
        rejected[0].reason
    );
    assert!(!err.is_retryable());

    let raw = consume(&broker.address, &["weir.raw"], 1).await;
    assert_eq!(raw[0].3, b"raw bytes");
    let orders = consume(&broker.address, &["public.orders"], 1).await;
    let envelope: serde_json::Value = serde_json::from_slice(&orders[0].3).unwrap();
    assert_eq!(envelope["after"]["status"], "y");
}

/// A record larger than the producer's `message.max.bytes` is refused for
/// good (retrying would fail forever); the records around it are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_rejected_and_the_rest_of_the_batch_written() {
    let broker = Broker::start();
    let mut config = KafkaSinkConfig::new(&broker.address);
    config.create_topics = true;
    config.topic = Some("sized".into());
    config
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let mut sink = KafkaSink::connect("events", config).await.unwrap();
    let batch = [
        row_change(Op::Insert, 0, 0, 1, "small"),
        row_change(Op::Insert, 0, 1, 2, &"x".repeat(5000)),
        row_change(Op::Insert, 0, 2, 3, "small too"),
    ];
    let err = sink.write(&batch).await.unwrap_err();
    let SinkError::Rejected(rejected) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].index, 1);
    assert!(
        rejected[0].reason.contains("too large"),
        "{}",
        rejected[0].reason
    );
    let received = consume(&broker.address, &["sized"], 2).await;
    let ids: Vec<i64> = received
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.3).unwrap()["after"]["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 3]);
    // The sink goes on working.
    sink.write(&[row_change(Op::Insert, 1, 0, 4, "after")])
        .await
        .unwrap();
}

/// A certificate authority with a server certificate for 127.0.0.1 and a
/// client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    ca: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        // Distinct names: a certificate whose subject is its issuer's name
        // reads as self-signed, and OpenSSL refuses it.
        let params = |names: Vec<String>, common_name: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params
        };
        let mut ca_params = params(vec![], "weir test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = params(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            "127.0.0.1",
        )
        .signed_by(&server_key, &*ca)
        .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = params(vec!["weir".to_owned()], "weir")
            .signed_by(&client_key, &*ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        Pki {
            server_chain: vec![server.der().clone()],
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            ca: ca.der().clone(),
            dir,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

/// Terminates TLS (requiring a client certificate signed by `pki`'s CA)
/// in front of a broker: tansu 0.6 takes `--cert`/`--key` but never wraps
/// its connections in TLS, so the test supplies the TLS end itself.
fn tls_front(listener: std::net::TcpListener, backend: String, pki: &Pki) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_over_tls_with_a_client_certificate_and_checks_the_broker() {
    let pki = Pki::new();
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    let broker = Broker::start_with(&[], Some(front_port));
    tls_front(front, broker.address.clone(), &pki);
    let tls_address = format!("127.0.0.1:{front_port}");

    let mut config = KafkaSinkConfig::new(&tls_address);
    config.create_topics = true;
    config.topic = Some("secure".into());
    config.security_protocol = weir_sinks::kafka::SecurityProtocol::Ssl;
    config.tls_ca_file = Some(pki.file("ca.pem"));
    config.tls_cert_file = Some(pki.file("client.pem"));
    config.tls_key_file = Some(pki.file("client.key"));
    let mut sink = KafkaSink::connect("events", config.clone()).await.unwrap();
    sink.write(&[row_change(Op::Insert, 0, 0, 1, "over tls")])
        .await
        .unwrap();
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key"),
    );
    let received = consume_with(
        &tls_address,
        &[
            ("security.protocol", "ssl"),
            ("ssl.ca.location", &ca),
            ("ssl.certificate.location", &cert),
            ("ssl.key.location", &key),
        ],
        &["secure"],
        1,
    )
    .await;
    let envelope: serde_json::Value = serde_json::from_slice(&received[0].3).unwrap();
    assert_eq!(envelope["after"]["status"], "over tls");

    // Brokers whose certificate another authority signed are refused, at
    // startup, with an error that says so.
    let other = Pki::new();
    let mut distrusting = config.clone();
    distrusting.tls_ca_file = Some(other.file("ca.pem"));
    distrusting.connect_timeout = Duration::from_secs(3);
    let Err(err) = KafkaSink::connect("events", distrusting).await else {
        panic!("trusted a broker certificate from another authority");
    };
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("TLS handshake"), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");

    // tansu's plaintext port waits for the rest of what it takes for a
    // huge request: the handshake is never answered, and the error says
    // what that may mean.
    let mut plain = config.clone();
    plain.brokers = broker.address.clone();
    plain.connect_timeout = Duration::from_secs(3);
    let Err(err) = KafkaSink::connect("events", plain).await else {
        panic!("a TLS connection to a plaintext port succeeded");
    };
    assert!(err.to_string().contains("does not speak TLS"), "{err}");

    let mut missing = config;
    missing.tls_ca_file = Some(pki.file("nope.pem"));
    let Err(err) = KafkaSink::connect("events", missing).await else {
        panic!("connected with a CA file that does not exist");
    };
    assert!(
        err.to_string().contains("sinks.events.tls_ca_file"),
        "{err}"
    );
}

/// tansu 0.6 with `--authentication` serves SASL SCRAM-SHA-256/512 only,
/// and keeps users in its storage: in the memory storage no user can be
/// created (creating one needs an authenticated connection). So against
/// tansu only the failure is tested: a SCRAM exchange for a user it does
/// not know is refused, which must be a clear startup error that never
/// shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sasl_login_is_a_clear_startup_error_without_the_password() {
    let broker = Broker::start_with(&["--authentication"], None);
    let mut config = KafkaSinkConfig::new(&broker.address);
    config.security_protocol = weir_sinks::kafka::SecurityProtocol::SaslPlaintext;
    config.sasl_mechanism = Some("SCRAM-SHA-512".into());
    config.sasl_username = Some("nobody".into());
    config.sasl_password = Some("pw-5a8c1e".into());
    config.connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let Err(err) = KafkaSink::connect("events", config).await else {
        panic!("authenticated as a user that does not exist");
    };
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("SASL authentication"), "{text}");
    assert!(text.contains("SCRAM"), "{text}");
    assert!(text.contains("sinks.events.sasl_mechanism"), "{text}");
    assert!(!text.contains("pw-5a8c1e"), "{text}");
    // The broker took part: the refusal is its answer to the SCRAM exchange.
    assert!(text.contains("unknown-user"), "{text}");
}
