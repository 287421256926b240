//! `encoding = "debezium"` end to end: changes captured from Postgres reach
//! a real Kafka-protocol broker (tansu) as Debezium's PostgreSQL connector
//! would write them: Connect JSON keys and values on `PREFIX.SCHEMA.TABLE`,
//! and a tombstone with the same key after each delete.

use std::time::Duration;

use serde_json::json;
use weir_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn debezium_events_and_tombstones_reach_kafka() {
    let broker = Broker::start();
    let db = TestDb::new(
        "dbz_kafka",
        "CREATE TABLE customers (id int PRIMARY KEY, name text, price numeric(10,2), seen timestamptz)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[transforms]]\npath = {:?}\n\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = {:?}\n\
             create_topics = true\nencoding = \"debezium\"\n\n[sinks.kafka.debezium]\n\
             topic_prefix = \"dbz\"\ndatabase = {:?}\n",
            db.source_toml(&["customers"]),
            plugin("passthrough"),
            broker.addr,
            db.name,
        ),
    )
    .unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));

    for sql in [
        "INSERT INTO customers VALUES (1, 'Ada', 12.50, '2024-01-02 03:04:05.25+00')",
        "UPDATE customers SET name = 'Ada Lovelace' WHERE id = 1",
        "DELETE FROM customers WHERE id = 1",
    ] {
        db.exec(sql).await;
    }

    // Debezium's default topic: topic_prefix.schema.table.
    let topic = "dbz.public.customers";
    let got = consume(&broker.addr, &[topic], 4, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 4, "{got:?}\n{}", weir.log());

    let key_schema = json!({
        "type": "struct",
        "fields": [{"type": "int32", "optional": false, "field": "id"}],
        "optional": false,
        "name": "dbz.public.customers.Key"
    });
    for m in &got {
        assert_eq!(m.topic, topic);
        let key: serde_json::Value =
            serde_json::from_slice(m.key.as_deref().expect("every message has the key")).unwrap();
        assert_eq!(key, json!({"schema": key_schema, "payload": {"id": 1}}));
    }

    let ops: Vec<&str> = got[..3]
        .iter()
        .map(|m| m.value["payload"]["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["c", "u", "d"]);

    let insert = &got[0].value;
    assert_eq!(insert["schema"]["name"], "dbz.public.customers.Envelope");
    let after_fields = &insert["schema"]["fields"][1]["fields"];
    assert_eq!(
        after_fields[2],
        json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
               "version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "10"},
               "field": "price"})
    );
    assert_eq!(after_fields[3]["name"], "io.debezium.time.ZonedTimestamp");
    let payload = &insert["payload"];
    assert_eq!(payload["before"], serde_json::Value::Null);
    // 12.50 at scale 2 is 1250 = 0x04E2.
    assert_eq!(
        payload["after"],
        json!({"id": 1, "name": "Ada", "price": "BOI=", "seen": "2024-01-02T03:04:05.25Z"})
    );
    let source = &payload["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], "dbz");
    assert_eq!(source["db"], db.name.as_str());
    assert_eq!(source["schema"], "public");
    assert_eq!(source["table"], "customers");
    assert_eq!(source["snapshot"], "false");
    assert!(source["lsn"].as_i64().unwrap() > 0, "{source}");
    assert!(source["txId"].as_i64().unwrap() > 0, "{source}");
    assert!(
        source["ts_ms"].as_i64().unwrap() > 1_700_000_000_000,
        "{source}"
    );
    assert!(payload["ts_ms"].as_i64().unwrap() >= source["ts_ms"].as_i64().unwrap());

    let update = &got[1].value["payload"];
    // REPLICA IDENTITY DEFAULT: Postgres sends no old row for this update.
    assert_eq!(update["before"], serde_json::Value::Null);
    assert_eq!(update["after"]["name"], "Ada Lovelace");
    assert!(
        update["source"]["lsn"].as_i64().unwrap() > source["lsn"].as_i64().unwrap(),
        "later changes have later LSNs"
    );

    let delete = &got[2].value["payload"];
    assert_eq!(
        delete["before"],
        json!({"id": 1, "name": null, "price": null, "seen": null})
    );
    assert_eq!(delete["after"], serde_json::Value::Null);

    // The tombstone: same key, no value.
    assert_eq!(got[3].value, serde_json::Value::Null, "{:?}", got[3]);

    // Nothing else arrives.
    let all = consume(&broker.addr, &[topic], 5, Duration::from_secs(3)).await;
    assert_eq!(all.len(), 4, "{all:?}");

    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}
