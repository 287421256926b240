//! Changes flow through the passthrough plugin into a real Kafka-protocol
//! broker (tansu), one topic per table, keyed by primary key, with source
//! metadata in headers, in commit order; a real client consumes them.

use std::time::Duration;

use weir_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_kafka_in_commit_order() {
    let broker = Broker::start();
    let db = TestDb::new(
        "kafka",
        "CREATE TABLE orders (id int PRIMARY KEY, status text);
         CREATE TABLE customers (id int PRIMARY KEY, name text);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[transforms]]\npath = {:?}\n\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = {:?}\ntopic = \"{{schema}}.{{table}}\"\ncreate_topics = true\n",
            db.source_toml(&["orders", "customers"]),
            plugin("passthrough"),
            broker.addr
        ),
    )
    .unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));

    // One statement per call, so each is its own transaction.
    for sql in [
        "INSERT INTO customers VALUES (1, 'Ada')",
        "BEGIN; INSERT INTO orders VALUES (1, 'new'); INSERT INTO orders VALUES (2, 'new'); COMMIT;",
        "BEGIN; INSERT INTO orders VALUES (99, 'rolled back'); ROLLBACK;",
        "UPDATE orders SET status = 'paid' WHERE id = 1",
        "UPDATE orders SET status = 'shipped' WHERE id = 1",
        "DELETE FROM orders WHERE id = 2",
        "UPDATE customers SET name = 'Ada Lovelace' WHERE id = 1",
    ] {
        db.exec(sql).await;
    }

    let orders = consume(&broker.addr, &["public.orders"], 5, Duration::from_secs(60)).await;
    let summary: Vec<(String, Option<String>, String)> = orders
        .iter()
        .map(|m| {
            (
                m.value["op"].as_str().unwrap().to_owned(),
                m.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                m.value["after"]["status"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("insert".into(), Some(r#"{"id":1}"#.into()), "new".into()),
            ("insert".into(), Some(r#"{"id":2}"#.into()), "new".into()),
            ("update".into(), Some(r#"{"id":1}"#.into()), "paid".into()),
            (
                "update".into(),
                Some(r#"{"id":1}"#.into()),
                "shipped".into()
            ),
            ("delete".into(), Some(r#"{"id":2}"#.into()), "-".into()),
        ],
        "{}",
        weir.log()
    );
    let header = |m: &KafkaMessage, k: &str| {
        m.headers
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("header {k} missing: {:?}", m.headers))
    };
    for m in &orders {
        assert_eq!(m.topic, "public.orders");
        assert_eq!(header(m, "weir.table"), "orders");
        assert_eq!(header(m, "weir.schema"), "public");
        assert_eq!(header(m, "weir.op"), m.value["op"].as_str().unwrap());
        assert_eq!(
            header(m, "weir.commit_lsn"),
            m.value["source"]["commit_lsn"].as_str().unwrap()
        );
    }
    assert_eq!(
        header(&orders[0], "weir.xid"),
        header(&orders[1], "weir.xid"),
        "same transaction"
    );

    let customers = consume(
        &broker.addr,
        &["public.customers"],
        2,
        Duration::from_secs(60),
    )
    .await;
    let names: Vec<&str> = customers
        .iter()
        .map(|m| m.value["after"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada", "Ada Lovelace"]);

    // Nothing else arrives: the rolled-back insert never appears.
    let all = consume(&broker.addr, &["public.orders"], 6, Duration::from_secs(3)).await;
    assert_eq!(all.len(), 5, "{all:?}");

    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// With the broker hung, changes stay unacknowledged (the slot does not
/// move past them) and the sink retries; when the broker answers again, they
/// arrive. Nothing is lost while a sink is down.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_acknowledged_while_the_broker_is_down() {
    let broker = Broker::start();
    let db = TestDb::new("kafka_down", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[transforms]]\npath = {:?}\n\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = {:?}\ntopic = \"cdc\"\ncreate_topics = true\ndelivery_timeout = \"2s\"\n\n[pipeline]\nmax_retry_backoff = \"1s\"\n",
            db.source_toml(&["t"]),
            plugin("passthrough"),
            broker.addr
        ),
    )
    .unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO t VALUES (1)").await;
    let first = consume(&broker.addr, &["cdc"], 1, Duration::from_secs(60)).await;
    assert_eq!(first.len(), 1, "{}", weir.log());

    broker.pause();
    db.exec("INSERT INTO t VALUES (2)").await;
    db.exec("INSERT INTO t VALUES (3)").await;
    let outage = wait_for(Duration::from_secs(60), || {
        weir.log().contains("retrying the batch").then_some(())
    });
    assert!(
        outage.is_some(),
        "the sink never reported the outage:\n{}",
        weir.log()
    );
    let acked_during_outage = db.confirmed_flush().unwrap();

    broker.resume();
    // A request that timed out during the outage may still have landed,
    // and the new producer cannot dedupe against the old one's sequence
    // numbers, so a change can arrive twice (at-least-once): each arrives,
    // in order.
    let mut after: Vec<KafkaMessage> = Vec::new();
    wait_for(Duration::from_secs(90), || {
        let all = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(consume(
                &broker.addr,
                &["cdc"],
                10,
                Duration::from_secs(3),
            ))
        });
        after = all.into_iter().skip(1).collect();
        after
            .iter()
            .any(|m| m.value["after"]["id"] == 3)
            .then_some(())
    });
    let ids: Vec<i64> = after
        .iter()
        .map(|m| m.value["after"]["id"].as_i64().unwrap())
        .collect();
    // A retried batch is sent again from its first record, so the stream
    // is runs of consecutive changes, in order, and each change's first
    // appearance is in commit order.
    let mut first_seen = Vec::new();
    for id in &ids {
        if !first_seen.contains(id) {
            first_seen.push(*id);
        }
    }
    assert_eq!(first_seen, [2, 3], "{ids:?}\n{}", weir.log());
    for run in ids.chunk_by(|a, b| b == &(a + 1)) {
        assert!(
            [&[2, 3][..], &[2], &[3]].contains(&run),
            "a replay out of order: {ids:?}\n{}",
            weir.log()
        );
    }
    let commit: weir_core::Lsn = after[0].value["source"]["commit_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        acked_during_outage <= commit,
        "acknowledged {acked_during_outage} while the transaction at {commit} was undelivered"
    );
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}
