//! Kafka errors that retrying cannot fix, end to end: a record the brokers
//! refuse goes to a Kafka dead-letter sink (or halts the pipeline naming
//! it), a sink that keeps failing shows as degraded, and `weir check`
//! refuses topic templates that can make an empty or illegal topic name.

use std::time::Duration;

use weir_tests::*;

/// The producer of sink `kafka` refuses messages over 2000 bytes.
fn kafka_sink(broker: &Broker) -> String {
    format!(
        "[sinks.kafka]\ntype = \"kafka\"\nbrokers = {:?}\ntopic = \"cdc\"\ncreate_topics = true\nproperties = {{ \"message.max.bytes\" = \"2000\" }}\n",
        broker.addr
    )
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Before: every Kafka delivery error was retried forever, so one oversized
/// row stopped the pipeline for good; and a Kafka dead-letter sink wrote
/// dead letters (raw records) to the topic the default `message_topic`
/// "{prefix}" made of them, which is empty, so it halted on the first one.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_row_is_dead_lettered_to_kafka_and_the_slot_moves_past_it() {
    let broker = Broker::start();
    let db = TestDb::new(
        "kafka_dlq",
        "CREATE TABLE t (id int PRIMARY KEY, body text)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            "{}\n{}\n[sinks.dlq]\ntype = \"kafka\"\nbrokers = {:?}\ncreate_topics = true\n\n[dead_letter]\nsink = \"dlq\"\n",
            db.source_toml(&["t"]),
            kafka_sink(&broker),
            broker.addr
        ),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));

    db.exec("INSERT INTO t VALUES (1, 'small')").await;
    db.exec("INSERT INTO t VALUES (2, repeat('x', 5000))").await;
    db.exec("INSERT INTO t VALUES (3, 'small too')").await;

    let delivered = consume(&broker.addr, &["cdc"], 2, Duration::from_secs(60)).await;
    let ids: Vec<i64> = delivered
        .iter()
        .map(|m| m.value["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3], "{}", weir.log());

    let letters = consume(&broker.addr, &["weir.raw"], 1, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), 1, "no dead letter:\n{}", weir.log());
    let letter = &letters[0];
    assert_eq!(letter.value["sink"], "kafka");
    let error = letter.value["error"].as_str().unwrap();
    assert!(error.contains("too large"), "{error}");
    assert_eq!(letter.value["event"]["after"]["id"], 2);
    assert_eq!(letter.key.as_deref(), Some(&br#"{"id":2}"#[..]));
    assert!(
        letter
            .headers
            .iter()
            .any(|(k, v)| k == "weir.sink" && v == b"kafka"),
        "{:?}",
        letter.headers
    );

    // The slot is acknowledged past the refused row, up to the last one.
    let last_commit: weir_core::Lsn = delivered[1].value["source"]["commit_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let acked = wait_for(Duration::from_secs(30), || {
        db.confirmed_flush().filter(|lsn| *lsn >= last_commit)
    });
    assert!(
        acked.is_some(),
        "slot stuck at {:?}, last commit {last_commit}:\n{}",
        db.confirmed_flush(),
        weir.log()
    );
    assert!(weir.is_running(), "{}", weir.log());
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_dead_letter_sink_an_oversized_row_halts_naming_it() {
    let broker = Broker::start();
    let db = TestDb::new(
        "kafka_halt",
        "CREATE TABLE t (id int PRIMARY KEY, body text)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!("{}\n{}", db.source_toml(&["t"]), kafka_sink(&broker)),
    );
    let mut weir = WeirProcess::start(&config, &["--exit-on-halt"]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO t VALUES (1, 'small')").await;
    consume(&broker.addr, &["cdc"], 1, Duration::from_secs(60)).await;
    let before_big = db.current_wal_lsn();
    db.exec("INSERT INTO t VALUES (7, repeat('x', 5000))").await;

    let exited = wait_for(Duration::from_secs(60), || {
        (!weir.is_running()).then_some(())
    });
    assert!(exited.is_some(), "weir kept running:\n{}", weir.log());
    let log = weir.log();
    assert!(
        log.contains("sink kafka refused insert on public.t key id=7"),
        "{log}"
    );
    assert!(log.contains("commit LSN"), "{log}");
    assert!(log.contains("too large"), "{log}");
    let status = weir.terminate().expect("exit status");
    assert_eq!(status.code(), Some(2), "{log}");
    let acked = db.confirmed_flush().unwrap();
    assert!(
        acked <= before_big,
        "acknowledged {acked}, past the refused row (WAL was at {before_big} before it)"
    );
}

/// Before: a sink retrying forever looked healthy on `/health`.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_longer_than_degraded_after_shows_on_health_and_metrics() {
    let broker = Broker::start();
    let db = TestDb::new("kafka_degraded", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            "{}\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = {:?}\ntopic = \"cdc\"\ncreate_topics = true\ndelivery_timeout = \"1s\"\n\n[pipeline]\nmax_retry_backoff = \"500ms\"\ndegraded_after = \"2s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            db.source_toml(&["t"]),
            broker.addr
        ),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO t VALUES (1)").await;
    consume(&broker.addr, &["cdc"], 1, Duration::from_secs(60)).await;
    assert!(http_get(admin, "/health").contains("200 OK"));
    assert!(http_get(admin, "/metrics").contains("weir_sink_degraded{sink=\"kafka\"} 0"));

    broker.pause();
    db.exec("INSERT INTO t VALUES (2)").await;
    let degraded = wait_for(Duration::from_secs(60), || {
        let health = http_get(admin, "/health");
        health
            .contains("degraded: sink kafka failing for")
            .then_some(health)
    });
    let Some(health) = degraded else {
        broker.resume();
        panic!("never degraded:\n{}", weir.log());
    };
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(
        http_get(admin, "/metrics").contains("weir_sink_degraded{sink=\"kafka\"} 1"),
        "{}",
        http_get(admin, "/metrics")
    );
    assert_eq!(
        http_json(&http_get(admin, "/status"))["sinks"]["kafka"]["degraded"],
        true
    );

    broker.resume();
    let healthy = wait_for(Duration::from_secs(90), || {
        http_get(admin, "/health").contains("200 OK").then_some(())
    });
    assert!(healthy.is_some(), "did not recover:\n{}", weir.log());
    assert!(http_get(admin, "/metrics").contains("weir_sink_degraded{sink=\"kafka\"} 0"));
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// Before: `weir check` took any template that parsed, so `"{prefix}"`
/// (the old default of `message_topic`) passed and failed at run time.
#[test]
fn weir_check_refuses_topic_templates_that_can_make_a_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "[source]\ndatabase = \"app\"\ntables = [\"t\"]\n\n[sinks.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\nmessage_topic = \"{prefix}\"\nraw_topic = \"{table}\"\ntopic = \"cdc/{table}\"\n\n[dead_letter]\nsink = \"k\"\ntopic = \"{op}\"\n",
    );
    let (status, out) = run_weir(
        &["check", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(1), "{out}");
    for expected in [
        "sinks.k.message_topic: \"{prefix}\" can expand to an empty topic name",
        "sinks.k.raw_topic: \"{table}\" can expand to an empty topic name",
        "sinks.k.topic: \"cdc/{table}\" contains '/'",
        "dead_letter.topic: \"{op}\" can expand to an empty topic name",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }

    // The defaults pass.
    let config = write_config(
        &dir,
        "[source]\ndatabase = \"app\"\ntables = [\"t\"]\n\n[sinks.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n\n[dead_letter]\nsink = \"k\"\n",
    );
    let (status, out) = run_weir(
        &["check", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{out}");
}
