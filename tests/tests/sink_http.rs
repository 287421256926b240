//! The `http` (webhook) sink against a real HTTP server written here
//! (`weir_tests::services::http`): first the sink alone (signatures,
//! idempotency keys across retries, every kind of answer, NDJSON and raw
//! records, an internal CA), then through the `weir` binary (changes in
//! order through outages, `Retry-After` honoured by the pipeline, replays
//! after SIGKILL carrying the keys they had, a 400 dead-lettered with its
//! reason, every column type as the file sink writes it).
//!
//! The conformance kit is for sinks that apply state; a webhook appends,
//! so it does not run here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use weir_core::{
    ChangeEvent, Column, Lsn, Op, RawMessage, ReplicaIdentity, Sink as _, SinkError, SinkPayload,
    SinkRecord, SourceInfo, TableSchema, TxnId, Value,
};
use weir_sinks::{HttpSink, HttpSinkConfig};
use weir_tests::services::http::{Received, Receiver, Reply};
use weir_tests::types::{TYPES_ROWS as ROWS, TYPES_TABLE as TABLE};
use weir_tests::*;

const SECRET: &str = "s3cret-for-tests";

/// Whether the signature headers of `request` verify with `secret`, as a
/// receiver checks them: HMAC-SHA256 of the timestamp, `.`, the raw body.
fn signature_verifies(request: &Received, secret: &str) -> bool {
    let timestamp = request
        .header("x-weir-timestamp")
        .unwrap_or_else(|| panic!("no timestamp header: {request:?}"));
    assert!(timestamp.bytes().all(|b| b.is_ascii_digit()), "{timestamp}");
    let signature = request
        .header("x-weir-signature")
        .unwrap_or_else(|| panic!("no signature header: {request:?}"));
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    mac.verify_slice(&hex::decode(hex).unwrap()).is_ok()
}

fn assert_signed(request: &Received, secret: &str) {
    assert!(
        signature_verifies(request, secret),
        "the signature does not verify: {request:?}"
    );
}

fn table() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: 16385,
        version: 1,
        schema: "public".to_owned(),
        name: "t".to_owned(),
        columns: vec![Column {
            name: "id".to_owned(),
            type_oid: 20,
            type_name: "int8".to_owned(),
            type_modifier: -1,
            key: true,
        }],
        replica_identity: ReplicaIdentity::Default,
    })
}

fn source(seq: u32) -> SourceInfo {
    SourceInfo {
        commit_lsn: "0/16B3748".parse().unwrap(),
        lsn: "0/16B3700".parse().unwrap(),
        xid: 123,
        commit_time_micros: 1_795_899_600_123_456,
        seq,
        snapshot: Default::default(),
    }
}

fn change(seq: u32, id: i64) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op: Op::Insert,
            table: Some(table()),
            before: None,
            after: Some(vec![Value::Int(id)]),
            message: None,
            source: source(seq),
            txn: TxnId(1),
        })),
        txn: TxnId(1),
    }
}

fn raw(seq: u32, value: &[u8]) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Raw(Arc::new(RawMessage {
            key: None,
            value: Some(value.to_vec()),
            headers: vec![],
            source: source(seq),
        })),
        txn: TxnId(1),
    }
}

fn config(receiver: &Receiver) -> HttpSinkConfig {
    let mut config = HttpSinkConfig::new(receiver.url());
    config.timeout = Duration::from_secs(10);
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_requests_verify_and_a_retry_carries_the_same_key_and_body() {
    let receiver = Receiver::start();
    let mut config = config(&receiver);
    config.secret = Some(SECRET.to_owned());
    config.max_batch_records = 2;
    let mut sink = HttpSink::new("hook", config).unwrap();

    sink.write(&[change(0, 1), change(1, 2), change(2, 3)])
        .await
        .unwrap();
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0].key(),
        "00000000016B374800000000-00000000016B374800000001"
    );
    assert_eq!(
        got[1].key(),
        "00000000016B374800000002-00000000016B374800000002"
    );
    let ids: Vec<i64> = got
        .iter()
        .flat_map(Received::records)
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    for request in &got {
        assert_signed(request, SECRET);
        assert_eq!(request.header("content-type"), Some("application/json"));
    }

    // A signature made with another secret does not verify.
    assert!(!signature_verifies(&got[0], "other"));

    // The endpoint fails the first try of the next batch; the retry the
    // pipeline would make carries the same key and body.
    receiver.script([Reply::new(500, "database is down")]);
    let batch = [change(3, 4), change(4, 5)];
    let err = sink.write(&batch).await.unwrap_err();
    assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&receiver.url()), "{text}");
    assert!(
        text.contains("500 Internal Server Error: database is down"),
        "{text}"
    );
    sink.write(&batch).await.unwrap();
    let got = receiver.received();
    let (failed, retried) = (&got[2], &got[3]);
    assert_eq!((failed.status, retried.status), (500, 200));
    assert_eq!(failed.key(), retried.key());
    assert_eq!(failed.body, retried.body);
    assert_signed(retried, SECRET);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_maps_to_its_error_kind() {
    let mut receiver = Receiver::start();
    let mut sink = HttpSink::new("hook", config(&receiver)).unwrap();
    let batch = [change(0, 1), change(1, 2)];

    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    receiver.script([
        Reply::new(429, "slow down").with_header("Retry-After", "3"),
        Reply::new(503, "").with_header("Retry-After", &later),
        Reply::new(429, ""),
        Reply::new(503, "maintenance"),
        Reply::new(408, ""),
        Reply::new(502, ""),
        Reply::new(401, "bad token"),
        Reply::new(403, ""),
    ]);
    match sink.write(&batch).await.unwrap_err() {
        SinkError::Throttled {
            reason,
            retry_after,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert!(
                reason.contains("429 Too Many Requests: slow down"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    match sink.write(&batch).await.unwrap_err() {
        SinkError::Throttled {
            retry_after: Some(wait),
            ..
        } => assert!(wait > Duration::from_secs(30) && wait <= Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sink.write(&batch).await.unwrap_err(),
        SinkError::Throttled {
            retry_after: None,
            ..
        }
    ));
    for status in ["503", "408", "502"] {
        let err = sink.write(&batch).await.unwrap_err();
        assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
        assert!(err.to_string().contains(status), "{err}");
    }
    for _ in 0..2 {
        let err = sink.write(&batch).await.unwrap_err();
        assert!(matches!(err, SinkError::Auth(_)), "{err:?}");
    }

    // Refused for good: every record of the request, the reason quoting
    // the status and the start of the answer.
    let long_reason = format!("field id: must be even {}", "x".repeat(400));
    receiver.script([Reply::new(400, &long_reason)]);
    let SinkError::Rejected(rejected) = sink.write(&batch).await.unwrap_err() else {
        panic!("a 400 did not refuse the records");
    };
    assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
    let reason = &rejected[0].reason;
    assert!(
        reason.contains("400 Bad Request: field id: must be even xxx"),
        "{reason}"
    );
    assert!(reason.len() < 400, "the whole answer was quoted: {reason}");

    // A redirect is not followed.
    let before = receiver.received().len();
    receiver.script([Reply::new(302, "").with_header("Location", "http://127.0.0.1:1/elsewhere")]);
    let SinkError::Rejected(rejected) = sink.write(&batch).await.unwrap_err() else {
        panic!("a 302 did not refuse the records");
    };
    assert!(
        rejected[0]
            .reason
            .contains("302 Found (to http://127.0.0.1:1/elsewhere) and redirects are not followed"),
        "{}",
        rejected[0].reason
    );
    assert_eq!(receiver.received().len(), before + 1);

    // The endpoint gone: a transient error naming it.
    receiver.stop();
    let err = sink.write(&batch).await.unwrap_err();
    assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to {}", receiver.url())),
        "{err}"
    );
    receiver.resume();
    sink.write(&batch).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_raw_records_and_extra_headers() {
    let receiver = Receiver::start();
    let mut config = config(&receiver);
    config
        .headers
        .insert("Authorization".into(), "Bearer t0k".into());
    let mut json_sink = HttpSink::new("hook", config.clone()).unwrap();
    config.format = weir_sinks::http::Format::Ndjson;
    let mut ndjson_sink = HttpSink::new("hook", config).unwrap();

    // The array format needs JSON: the other bytes are refused alone.
    let batch = [raw(0, b"{\"a\":1}"), raw(1, b"plain"), raw(2, b"[2]")];
    let SinkError::Rejected(rejected) = json_sink.write(&batch).await.unwrap_err() else {
        panic!("non-JSON bytes went into a JSON array");
    };
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 1);
    assert!(rejected[0].reason.contains("not JSON"), "{rejected:?}");
    let got = receiver.received();
    assert_eq!(got[0].body, b"[{\"a\":1},[2]]");
    assert_eq!(got[0].header("authorization"), Some("Bearer t0k"));
    assert_eq!(
        got[0].key(),
        "00000000016B374800000000-00000000016B374800000002"
    );

    ndjson_sink.write(&batch).await.unwrap();
    let got = receiver.received();
    assert_eq!(got[1].body, b"{\"a\":1}\nplain\n[2]\n");
    assert_eq!(got[1].header("content-type"), Some("application/x-ndjson"));
    assert_eq!(got[1].key(), got[0].key());
}

/// The records of the requests answered 2xx, in the order they arrived.
fn delivered(received: &[Received]) -> Vec<Json> {
    received
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .flat_map(Received::records)
        .collect()
}

fn position(record: &Json) -> (Lsn, u64) {
    (
        record["source"]["commit_lsn"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        record["source"]["seq"].as_u64().unwrap(),
    )
}

/// `op id` of each record, the id from the key (none for a truncate).
fn ops(records: &[Json]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r["key"]["id"].as_i64() {
            Some(id) => format!("{} {id}", r["op"].as_str().unwrap()),
            None => r["op"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn http_sink_toml(name: &str, receiver: &Receiver, extra: &str) -> String {
    format!(
        "[sinks.{name}]\ntype = \"http\"\nurl = {:?}\ntimeout = \"10s\"\n{extra}\n",
        receiver.url()
    )
}

/// Writes the configuration and starts Weir, waiting for its slot.
const FAST_RETRIES: &str = "max_retry_backoff = \"500ms\"";

/// `pipeline` is the `[pipeline]` section's lines; its `max_retry_backoff`
/// also caps a `Retry-After`.
fn start_weir(
    db: &TestDb,
    dir: &std::path::Path,
    pipeline: &str,
    body: &str,
) -> (WeirProcess, std::path::PathBuf) {
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[pipeline]\n{pipeline}\n\n{body}",
            db.source_toml(&["t"])
        ),
    )
    .unwrap();
    let weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(120), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    (weir, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_arrive_in_order_once_each_through_endpoint_outages() {
    let db = TestDb::new("http_order", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let mut receiver = Receiver::start();
    let url = receiver.url();
    // Down at start: Weir starts anyway and says what it cannot reach.
    receiver.stop();
    let dir = tempfile::tempdir().unwrap();
    let (mut weir, _) = start_weir(
        &db,
        dir.path(),
        FAST_RETRIES,
        &http_sink_toml(
            "hook",
            &receiver,
            "secret = \"${WEIR_TEST_UNSET_WEBHOOK_SECRET:-s3cret-for-tests}\"",
        ),
    );
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    let refused = format!("cannot connect to {url}");
    wait_for(Duration::from_secs(60), || {
        weir.log().contains(&refused).then_some(())
    })
    .unwrap_or_else(|| panic!("no error naming {url}:\n{}", weir.log()));
    receiver.resume();

    db.exec("UPDATE t SET v = 'b2' WHERE id = 2").await;
    db.exec("DELETE FROM t WHERE id = 1").await;
    db.exec("INSERT INTO t VALUES (3, 'c')").await;
    db.exec("TRUNCATE t").await;
    db.exec("INSERT INTO t VALUES (4, 'd')").await;
    receiver.wait_until(
        Duration::from_secs(90),
        |got| delivered(got).len() >= 7,
        || weir.log(),
    );

    // The endpoint goes away mid-run and comes back: nothing is lost.
    receiver.stop();
    let failures = weir.log().matches(&refused).count();
    db.exec("INSERT INTO t VALUES (5, 'e')").await;
    db.exec("UPDATE t SET v = 'd2' WHERE id = 4").await;
    wait_for(Duration::from_secs(60), || {
        (weir.log().matches(&refused).count() > failures).then_some(())
    })
    .unwrap_or_else(|| panic!("no failure while the endpoint was down:\n{}", weir.log()));
    receiver.resume();
    let got = receiver.wait_until(
        Duration::from_secs(90),
        |got| delivered(got).len() >= 9,
        || weir.log(),
    );

    let records = delivered(&got);
    assert_eq!(
        ops(&records),
        [
            "insert 1", "insert 2", "update 2", "delete 1", "insert 3", "truncate", "insert 4",
            "insert 5", "update 4"
        ],
        "{}",
        weir.log()
    );
    // Once each, in commit order.
    let positions: Vec<_> = records.iter().map(position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(records[2]["after"]["v"], "b2");
    for request in &got {
        assert_signed(request, SECRET);
    }
    let last = positions.last().unwrap().0;
    wait_for(Duration::from_secs(30), || {
        db.confirmed_flush().filter(|l| *l > last)
    })
    .unwrap_or_else(|| panic!("not acknowledged past {last}:\n{}", weir.log()));
    assert!(weir.is_running(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured_by_the_pipeline() {
    let db = TestDb::new(
        "http_throttle",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    )
    .await;
    let receiver = Receiver::start();
    receiver.script([
        Reply::new(429, "slow down").with_header("Retry-After", "1"),
        Reply::new(503, "busy").with_header("Retry-After", "1"),
        Reply::new(500, "oops"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (weir, _) = start_weir(
        &db,
        dir.path(),
        "max_retry_backoff = \"5s\"",
        &http_sink_toml("hook", &receiver, ""),
    );
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    let got = receiver.wait_until(
        Duration::from_secs(60),
        |got| delivered(got).len() >= 2,
        || weir.log(),
    );
    // The first request was tried four times, the same each time; the
    // source may have handed the second row over in a batch of its own.
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses[..4], [429, 503, 500, 200], "{}", weir.log());
    assert!(statuses[4..].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        got[..4]
            .iter()
            .all(|r| r.key() == got[0].key() && r.body == got[0].body)
    );
    assert_eq!(ops(&delivered(&got)), ["insert 1", "insert 2"]);
    // The waits the pipeline chose: the endpoint's second, twice (not a
    // jittered backoff), then a backoff for the 500.
    let log = weir.log();
    let throttled: Vec<&str> = log.lines().filter(|l| l.contains("Throttled")).collect();
    assert_eq!(throttled.len(), 2, "{log}");
    assert!(throttled.iter().all(|l| l.contains("retry_in=1s")), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("kind=Transient") && l.contains("500 Internal Server Error: oops")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_replayed_requests_carry_the_keys_they_had() {
    let db = TestDb::new("http_replay", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    // `hook` sends one record a request, so its keys name records;
    // `batched` cuts as it likes; `blocker` fails until the restart, so no
    // transaction is acknowledged and everything is replayed.
    let hook = Receiver::start();
    let batched = Receiver::start();
    let blocker = Receiver::start();
    blocker.set_default(Some(Reply::new(500, "not yet")));
    let body = format!(
        "{}{}{}",
        http_sink_toml("hook", &hook, "max_batch_records = 1\nformat = \"ndjson\""),
        http_sink_toml("batched", &batched, ""),
        http_sink_toml("blocker", &blocker, ""),
    );
    let dir = tempfile::tempdir().unwrap();
    // Room for every batch while the blocker holds them: a full channel
    // would stop the other sinks too.
    let pipeline = format!("{FAST_RETRIES}\nchannel_batches = 10000");
    let (mut weir, config) = start_weir(&db, dir.path(), &pipeline, &body);
    for txn in 0..5 {
        let rows: Vec<String> = (0..4).map(|i| format!("({}, 'v')", txn * 4 + i)).collect();
        db.exec(&format!("INSERT INTO t VALUES {}", rows.join(", ")))
            .await;
    }
    for receiver in [&hook, &batched] {
        receiver.wait_until(
            Duration::from_secs(90),
            |got| delivered(got).len() >= 20,
            || weir.log(),
        );
    }
    // Nothing was acknowledged: the blocker has not taken the first transaction.
    let first_commit = position(&delivered(&hook.received())[0]).0;
    let acked_before = db.confirmed_flush().unwrap();
    assert!(acked_before < first_commit, "{acked_before} {first_commit}");
    weir.kill9();
    let first_run = (hook.received().len(), batched.received().len());
    blocker.set_default(None);
    weir = WeirProcess::start(&config, &[]);
    let hook_got = hook.wait_until(
        Duration::from_secs(90),
        |got| delivered(&got[first_run.0..]).len() >= 20,
        || weir.log(),
    );
    let batched_got = batched.wait_until(
        Duration::from_secs(90),
        |got| delivered(&got[first_run.1..]).len() >= 20,
        || {
            let got = batched.received();
            let summary: Vec<(u16, &str, Vec<Json>)> = got
                .iter()
                .map(|r| {
                    let ids = r
                        .records()
                        .iter()
                        .map(|x| x["after"]["id"].clone())
                        .collect();
                    (r.status, r.key(), ids)
                })
                .collect();
            format!("first run {}: {summary:?}\n{}", first_run.1, weir.log())
        },
    );
    blocker.wait_until(
        Duration::from_secs(90),
        |got| delivered(got).len() >= 20,
        || weir.log(),
    );

    // Every record was replayed, in order, and each one's requests carry
    // one key and one body.
    let replayed = delivered(&hook_got[first_run.0..]);
    let ids: Vec<i64> = replayed
        .iter()
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "{}", weir.log());
    let mut by_record: HashMap<(Lsn, u64), Vec<&Received>> = HashMap::new();
    for request in &hook_got {
        let records = request.records();
        assert_eq!(records.len(), 1, "{request:?}");
        by_record
            .entry(position(&records[0]))
            .or_default()
            .push(request);
    }
    assert_eq!(by_record.len(), 20);
    for (at, requests) in &by_record {
        assert!(requests.len() >= 2, "{at:?} was not replayed");
        assert!(
            requests
                .iter()
                .all(|r| r.key() == requests[0].key() && r.body == requests[0].body),
            "{at:?}: {requests:?}"
        );
    }

    // With batches cut as they come, a replayed request has its old key
    // only when the replay cut at the same records.
    let replayed_ids: Vec<i64> = delivered(&batched_got[first_run.1..])
        .iter()
        .map(|r| r["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(replayed_ids, (0..20).collect::<Vec<_>>());
    let old: HashMap<&str, &Received> = batched_got[..first_run.1]
        .iter()
        .map(|r| (r.key(), r))
        .collect();
    let again = &batched_got[first_run.1..];
    let same_key = again.iter().filter(|r| old.contains_key(r.key())).count();
    for request in again {
        if let Some(before) = old.get(request.key()) {
            assert_eq!(before.body, request.body, "one key, two bodies");
        }
    }
    eprintln!(
        "batched sink: {} requests before the kill, {} after, {same_key} of them with a key seen before",
        first_run.1,
        again.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_is_dead_lettered_with_the_reason() {
    let db = TestDb::new("http_dlq", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let receiver = Receiver::start();
    receiver.answer_containing("poison", Reply::new(400, "field v: poison is not allowed"));
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let body = format!(
        "{}[dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n",
        http_sink_toml("hook", &receiver, "max_batch_records = 1"),
    );
    let (weir, _) = start_weir(&db, dir.path(), FAST_RETRIES, &body);
    db.exec("INSERT INTO t VALUES (1, 'ok')").await;
    db.exec("INSERT INTO t VALUES (2, 'poison')").await;
    db.exec("INSERT INTO t VALUES (3, 'fine')").await;
    let letters = wait_for(Duration::from_secs(90), || {
        let letters = read_jsonl(&dlq);
        (!letters.is_empty()).then_some(letters)
    })
    .unwrap_or_else(|| {
        panic!(
            "no dead letter; the endpoint got {:?}\n{}",
            receiver.received(),
            weir.log()
        )
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["sink"], "hook", "{letter}");
    let error = letter["error"].as_str().unwrap();
    assert!(
        error.contains("400 Bad Request: field v: poison is not allowed"),
        "{error}"
    );
    assert_eq!(letter["event"]["after"]["id"], 2, "{letter}");
    let got = receiver.wait_until(
        Duration::from_secs(60),
        |got| delivered(got).len() >= 2,
        || weir.log(),
    );
    assert_eq!(ops(&delivered(&got)), ["insert 1", "insert 3"]);
    let last = position(delivered(&got).last().unwrap()).0;
    wait_for(Duration::from_secs(30), || {
        db.confirmed_flush().filter(|l| *l > last)
    })
    .unwrap_or_else(|| panic!("not acknowledged past {last}:\n{}", weir.log()));
}

/// A CA's PEM and a TLS front on a free port that forwards to `backend`
/// with a certificate for 127.0.0.1 signed by that CA.
fn tls_front(backend: u16) -> (String, u16) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair, KeyUsagePurpose,
    };
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
    let key = KeyPair::generate().unwrap();
    let cert = params(vec!["127.0.0.1".to_owned()], "127.0.0.1")
        .signed_by(&key, &*ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (ca.pem(), port)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_ca_file_is_trusted_for_https() {
    let receiver = Receiver::start();
    let (ca_pem, port) = tls_front(receiver.port);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = format!("https://127.0.0.1:{port}/hook");

    // Without the CA the certificate is not trusted: a transient error
    // naming the endpoint (an operator can fix the certificate).
    let mut untrusted = HttpSink::new("hook", HttpSinkConfig::new(&url)).unwrap();
    let err = untrusted.write(&[change(0, 1)]).await.unwrap_err();
    assert!(matches!(err, SinkError::Transient(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(receiver.received().is_empty());

    let mut config = HttpSinkConfig::new(&url);
    config.tls_ca_file = Some(ca_file.to_str().unwrap().to_owned());
    let mut trusted = HttpSink::new("hook", config).unwrap();
    trusted.write(&[change(0, 1)]).await.unwrap();
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].records()[0]["after"]["id"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_reaches_the_webhook_as_in_the_file_sink() {
    let db = TestDb::new("http_types", TABLE).await;
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}[sinks.file]\ntype = \"file\"\npath = {out:?}\n",
            db.source_toml(&["typed"]),
            http_sink_toml("hook", &receiver, "format = \"ndjson\""),
        ),
    )
    .unwrap();
    let weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(120), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec(ROWS).await;
    let lines = wait_lines(&out, 5, Duration::from_secs(60));
    let got = receiver.wait_until(
        Duration::from_secs(60),
        |got| delivered(got).len() >= 5,
        || weir.log(),
    );
    let records = delivered(&got);
    assert_eq!(records.len(), 5);
    for (record, line) in records.iter().zip(&lines) {
        let id = &line["after"]["id"];
        for (column, value) in line["after"].as_object().unwrap() {
            assert_eq!(
                &record["after"][column], value,
                "column {column} of row {id}: the webhook got {}, the file {value}",
                record["after"][column]
            );
        }
        assert_eq!(record, line);
    }
    // A few values as types_roundtrip.rs expects them, so that two equally
    // wrong outputs cannot pass.
    assert_eq!(records[0]["after"]["i8"], 9223372036854775807i64);
    assert_eq!(records[0]["after"]["n"], "-12345678901234567890.123456789");
    assert_eq!(records[0]["after"]["by"], "AP8Q");
    assert_eq!(records[0]["after"]["tstz"], "2024-02-29T11:14:15.123Z");
    assert_eq!(records[2]["after"]["f4"], "NaN");
    assert_eq!(records[3]["after"]["d"], "-0043-03-15");
}
