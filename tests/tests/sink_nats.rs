//! The NATS sink against private `nats-server`s with JetStream: the
//! conformance kit on a KV bucket, end to end through the weir binary to a
//! stream (every change once, also across a SIGKILL of weir, and a batch
//! published again dropped by the stream's deduplication) and to a
//! bucket (its keys equal the table), every type into KV values, and the
//! errors: no server at start, a server killed and restarted mid-run, and a
//! message over the server's max_payload dead-lettered; and `weir verify`'s
//! readback of a bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use weir_core::{Capabilities, Op, Sink, SinkRecord, TableSchema, Value};
use weir_sinks::{NatsMode, NatsSink, NatsSinkConfig, SinkSpec as _};
use weir_tests::services::nats::NatsServer;
use weir_tests::types::{TYPES_ROWS, TYPES_TABLE, native_rows};
use weir_tests::*;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

async fn js(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("connect to the test server");
    jetstream::new(client)
}

/// Every live key of `bucket` starting with `prefix`, and its value as JSON.
async fn kv_rows(url: &str, bucket: &str, prefix: &str) -> BTreeMap<String, Json> {
    let kv = js(url)
        .await
        .get_key_value(bucket)
        .await
        .expect("open bucket");
    let mut keys = kv.keys().await.expect("list keys");
    let mut rows = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.expect("a key");
        if !key.starts_with(prefix) {
            continue;
        }
        if let Some(value) = kv.get(&key).await.expect("get") {
            rows.insert(key, serde_json::from_slice(&value).expect("a JSON value"));
        }
    }
    rows
}

/// Every message of `stream`, in order, as (subject, headers, body).
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, async_nats::HeaderMap, Json)> {
    let js = js(url).await;
    let mut stream = js.get_stream(stream).await.expect("the stream");
    let info = stream.info().await.expect("stream info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let m = stream.get_raw_message(seq).await.expect("a message");
        let body = serde_json::from_slice(&m.payload).unwrap_or(Json::Null);
        out.push((m.subject.to_string(), m.headers, body));
    }
    out
}

struct KvTarget {
    server: NatsServer,
    bucket: String,
}

impl KvTarget {
    fn config(&self) -> NatsSinkConfig {
        let mut config = NatsSinkConfig::new(&self.server.url, NatsMode::Kv);
        config.bucket = Some(self.bucket.clone());
        config.create_bucket = true;
        config
    }
}

impl weir_tests::conformance::StateTarget for KvTarget {
    fn capabilities(&self) -> Capabilities {
        self.config().capabilities()
    }

    async fn open(&self) -> Box<dyn Sink> {
        Box::new(
            NatsSink::connect("kit", self.config())
                .await
                .expect("open the NATS sink"),
        )
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        let prefix = format!("{}.{}.", table.schema, table.name);
        kv_rows(&self.server.url, &self.bucket, &prefix)
            .await
            .into_values()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_mode_passes_the_conformance_kit() {
    let target = KvTarget {
        server: NatsServer::start(),
        bucket: "kit".to_owned(),
    };
    weir_tests::conformance::run(&target).await;
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stream_sink(url: &str) -> String {
    format!(
        "[sinks.nats]\ntype = \"nats\"\nurl = {url:?}\nstream = \"WEIR\"\ncreate_stream = true\nrequest_timeout = \"2s\"\nconnect_timeout = \"2s\"\n"
    )
}

fn kv_sink(url: &str) -> String {
    format!(
        "[sinks.nats]\ntype = \"nats\"\nurl = {url:?}\nmode = \"kv\"\nbucket = \"rows\"\ncreate_bucket = true\nrequest_timeout = \"2s\"\nconnect_timeout = \"2s\"\n"
    )
}

/// The (op, id) of every change message in the stream.
async fn changes(url: &str) -> Vec<(String, i64)> {
    stream_messages(url, "WEIR")
        .await
        .into_iter()
        .filter(|(subject, _, _)| subject.starts_with("weir.public."))
        .map(|(_, _, body)| {
            let row = if body["op"] == "delete" {
                &body["before"]
            } else {
                &body["after"]
            };
            (
                body["op"].as_str().unwrap_or_default().to_owned(),
                row["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

async fn wait_changes(url: &str, n: usize, weir: &WeirProcess) -> Vec<(String, i64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = changes(url).await;
        if got.len() >= n || std::time::Instant::now() > deadline {
            assert!(
                got.len() >= n,
                "only {} of {n} changes in the stream:\n{}",
                got.len(),
                weir.log()
            );
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_gets_every_change_once_even_across_a_sigkill() {
    let server = NatsServer::start();
    let db = TestDb::new("nats_js", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!("{}\n{}", db.source_toml(&["t"]), stream_sink(&server.url)),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await;
    db.exec("UPDATE t SET v = 'bb' WHERE id = 2").await;
    db.exec("DELETE FROM t WHERE id = 3").await;
    let got = wait_changes(&server.url, 5, &weir).await;
    let want: Vec<(String, i64)> = [
        ("insert", 1),
        ("insert", 2),
        ("insert", 3),
        ("update", 2),
        ("delete", 3),
    ]
    .iter()
    .map(|(op, id)| ((*op).to_owned(), *id))
    .collect();
    assert_eq!(got, want, "{}", weir.log());

    // Headers carry the position; the message id is unique per record.
    let messages = stream_messages(&server.url, "WEIR").await;
    let (_, headers, body) = &messages[3];
    assert_eq!(headers.get("weir.op").map(|v| v.as_str()), Some("update"));
    assert_eq!(headers.get("weir.table").map(|v| v.as_str()), Some("t"));
    assert_eq!(
        headers.get("weir.commit_lsn").map(|v| v.as_str()),
        body["source"]["commit_lsn"].as_str()
    );
    let id = headers.get("Nats-Msg-Id").expect("a message id").as_str();
    assert!(id.starts_with("nats:"), "{id}");

    // Many transactions; weir is killed while they flow, then restarted:
    // what it publishes again is dropped by the stream as duplicates.
    let insert_many = |from: i64, to: i64| {
        (from..to)
            .map(|i| format!("INSERT INTO t VALUES ({i}, 'x');"))
            .collect::<String>()
    };
    db.exec(&insert_many(100, 700)).await;
    wait_for(Duration::from_secs(60), || {
        (block_on(changes(&server.url)).len() > 50).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing flowed:\n{}", weir.log()));
    weir.kill9();
    db.exec(&insert_many(700, 800)).await;
    let mut weir = WeirProcess::start(&config, &[]);
    let got = wait_changes(&server.url, 5 + 700, &weir).await;
    let mut ids: Vec<i64> = got[5..].iter().map(|(_, id)| *id).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "a change was stored twice");
    assert_eq!(ids, (100..800).collect::<Vec<_>>());
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// An insert into `public.t (id int8 primary key)` at (commit LSN, seq).
fn insert_at(table: &std::sync::Arc<TableSchema>, lsn: u64, seq: u32, id: i64) -> SinkRecord {
    weir_tests::records::change(
        table,
        Op::Insert,
        lsn,
        seq,
        None,
        Some(vec![Value::Int(id)]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_published_again_after_a_crash_is_dropped_by_the_stream() {
    let server = NatsServer::start();
    let mut config = NatsSinkConfig::new(&server.url, NatsMode::Jetstream);
    config.stream = Some("WEIR".into());
    config.create_stream = true;
    let table = weir_tests::records::table("public", "t", &[("id", "int8", true)]);
    let first = [
        insert_at(&table, 0x100, 0, 1),
        insert_at(&table, 0x100, 1, 2),
        insert_at(&table, 0x200, 0, 3),
    ];
    let mut sink = NatsSink::connect("nats", config.clone()).await.unwrap();
    sink.write(&first).await.unwrap();
    // A crash before the slot advanced: a new process publishes the same
    // records again (as part of a batch cut differently), then new ones.
    drop(sink);
    let mut sink = NatsSink::connect("nats", config).await.unwrap();
    let replay = [
        first[1].clone(),
        first[2].clone(),
        insert_at(&table, 0x300, 0, 4),
    ];
    sink.write(&replay).await.unwrap();
    sink.close().await.unwrap();
    let ids: Vec<i64> = stream_messages(&server.url, "WEIR")
        .await
        .iter()
        .map(|(_, _, body)| body["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4], "the stream kept a duplicate");
}

/// The table's rows as the KV bucket should hold them.
async fn table_rows(db: &TestDb) -> BTreeMap<String, Json> {
    let rows = db
        .client
        .query("SELECT id, v FROM t ORDER BY id", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id: i32 = r.get(0);
            let v: Option<String> = r.get(1);
            (
                format!("public.t.{id}"),
                serde_json::json!({"id": id, "v": v}),
            )
        })
        .collect()
}

async fn wait_kv_equals_table(url: &str, db: &TestDb, weir: &WeirProcess) {
    let want = table_rows(db).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = kv_rows(url, "rows", "public.t.").await;
        if got == want {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "the bucket never matched the table:\n  bucket: {got:?}\n  table:  {want:?}\n{}",
                weir.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_bucket_ends_equal_to_the_table() {
    let server = NatsServer::start();
    let db = TestDb::new("nats_kv", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!("{}\n{}", db.source_toml(&["t"]), kv_sink(&server.url)),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g")
        .await;
    db.exec("UPDATE t SET v = NULL WHERE id % 3 = 0").await;
    db.exec("DELETE FROM t WHERE id % 5 = 0").await;
    db.exec("UPDATE t SET id = id + 1000 WHERE id = 7").await;
    wait_kv_equals_table(&server.url, &db, &weir).await;
    db.exec("TRUNCATE t").await;
    db.exec("INSERT INTO t VALUES (1, 'after'), (2, 'truncate')")
        .await;
    wait_kv_equals_table(&server.url, &db, &weir).await;
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_into_kv_values() {
    let server = NatsServer::start();
    let db = TestDb::new("nats_types", TYPES_TABLE).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!("{}\n{}", db.source_toml(&["typed"]), kv_sink(&server.url)),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec(TYPES_ROWS).await;
    let rows = wait_for(Duration::from_secs(60), || {
        let rows = block_on(kv_rows(&server.url, "rows", "public.typed."));
        (rows.len() == 5).then_some(rows)
    })
    .unwrap_or_else(|| panic!("the rows did not arrive:\n{}", weir.log()));
    for want in native_rows() {
        let key = format!("public.typed.{}", want["id"]);
        let got = &rows[&key];
        for (column, value) in want.as_object().unwrap() {
            assert_eq!(
                &got[column], value,
                "column {column} of key {key}: got {}",
                got[column]
            );
        }
        // A column the row does not list is NULL.
        for (column, value) in got.as_object().unwrap() {
            if want.get(column).is_none() {
                assert!(value.is_null(), "column {column} of key {key}: got {value}");
            }
        }
    }
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_at_start_is_a_clear_error_naming_it() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut config = NatsSinkConfig::new(&url, NatsMode::Jetstream);
    config.stream = Some("WEIR".to_owned());
    config.connect_timeout = Duration::from_secs(2);
    let error = match NatsSink::connect("events", config).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    let text = error.to_string();
    assert!(error.is_retryable(), "{error:?}");
    assert!(text.contains(&url), "{text}");

    // A server without the stream, and create_stream off: a config error.
    let server = NatsServer::start();
    let mut config = NatsSinkConfig::new(&server.url, NatsMode::Jetstream);
    config.stream = Some("MISSING".to_owned());
    let error = match NatsSink::connect("events", config).await {
        Ok(_) => panic!("the stream does not exist"),
        Err(e) => e,
    };
    assert!(!error.is_retryable(), "{error:?}");
    assert!(
        error.to_string().contains("stream MISSING does not exist")
            && error.to_string().contains("create_stream"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_run_comes_back_with_nothing_lost() {
    for mode in ["jetstream", "kv"] {
        let mut server = NatsServer::start();
        let db = TestDb::new(
            "nats_restart",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let sink = if mode == "kv" {
            kv_sink(&server.url)
        } else {
            stream_sink(&server.url)
        };
        let config = write_config(&dir, &format!("{}\n{sink}", db.source_toml(&["t"])));
        let weir = WeirProcess::start(&config, &[]);
        wait_for(Duration::from_secs(60), || db.confirmed_flush())
            .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
        db.exec("INSERT INTO t VALUES (1, 'before')").await;
        if mode == "kv" {
            wait_kv_equals_table(&server.url, &db, &weir).await;
        } else {
            wait_changes(&server.url, 1, &weir).await;
        }
        server.kill();
        db.exec("INSERT INTO t VALUES (2, 'while down'), (3, 'while down')")
            .await;
        db.exec("UPDATE t SET v = 'changed while down' WHERE id = 1")
            .await;
        // Long enough for weir to fail a batch or two against nothing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        server.resume();
        db.exec("INSERT INTO t VALUES (4, 'after')").await;
        if mode == "kv" {
            wait_kv_equals_table(&server.url, &db, &weir).await;
        } else {
            let got = wait_changes(&server.url, 5, &weir).await;
            let ids: Vec<i64> = got.iter().map(|(_, id)| *id).collect();
            assert_eq!(ids, [1, 2, 3, 1, 4], "{}", weir.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_max_payload_is_dead_lettered() {
    let server = NatsServer::start_with("max_payload: 4096\n");
    let db = TestDb::new("nats_dlq", "CREATE TABLE t (id int PRIMARY KEY, body text)").await;
    let dir = tempfile::tempdir().unwrap();
    let letters = dir.path().join("letters.jsonl");
    let config = write_config(
        &dir,
        &format!(
            "{}\n{}\n[sinks.dlq]\ntype = \"file\"\npath = {:?}\n\n[dead_letter]\nsink = \"dlq\"\n",
            db.source_toml(&["t"]),
            stream_sink(&server.url),
            letters.to_str().unwrap()
        ),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO t VALUES (1, 'small')").await;
    db.exec("INSERT INTO t VALUES (2, repeat('x', 10000))")
        .await;
    db.exec("INSERT INTO t VALUES (3, 'small too')").await;
    let got = wait_changes(&server.url, 2, &weir).await;
    assert_eq!(
        got,
        [("insert".to_owned(), 1), ("insert".to_owned(), 3)],
        "{}",
        weir.log()
    );
    let dead = wait_lines(&letters, 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let error = dead[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("max payload"), "{error}");
    assert_eq!(dead[0]["event"]["after"]["id"], 2, "{}", dead[0]);
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// `weir verify`'s readback of a KV bucket: each key's latest entry
/// compared through the sink's own key template and row encoding, and a
/// table's keys listed from the bucket's stream.
mod readback {
    use std::sync::Arc;

    use weir_core::{Held, HeldKey, Readback};
    use weir_tests::readback::{self, column_diff, held_ids, open};
    use weir_tests::records::{
        BIG, change, gone, item, items, read, routed, tenanted, transaction,
    };

    use super::*;

    fn table(name: &str, columns: &[(&str, &str, bool)]) -> Arc<TableSchema> {
        weir_tests::records::table("public", name, columns)
    }

    fn config(server: &NatsServer, bucket: &str) -> NatsSinkConfig {
        let mut config = NatsSinkConfig::new(&server.url, NatsMode::Kv);
        config.bucket = Some(bucket.to_owned());
        config.create_bucket = true;
        config
    }

    async fn bucket(server: &NatsServer, name: &str) -> jetstream::kv::Store {
        js(&server.url)
            .await
            .get_key_value(name)
            .await
            .expect("open the bucket")
    }

    /// Every key `keys()` lists for `table`, `limit` keys a page, sorted by
    /// name (a bucket lists them in no order); and how many pages it took.
    async fn all_keys(
        readback: &mut dyn Readback,
        table: &TableSchema,
        topic: Option<&str>,
        limit: usize,
    ) -> (Vec<HeldKey>, usize) {
        let (mut keys, pages) = readback::all_keys(readback, table, topic, limit).await;
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        (keys, pages)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_compares_kv_rows() {
        let server = NatsServer::start();
        let config = config(&server, "rows");
        let t = items();
        let mut sink = NatsSink::connect("nats", config.clone()).await.unwrap();
        let rows = [
            item(BIG, "big", 1, Some("exact")),
            item(2, "two", 2, None),
            item(3, "three", 3, Some("c")),
            item(4, "four", 4, None),
            item(5, "five", 5, None),
        ];
        sink.write(&transaction(&t, 0x100, rows.iter().cloned()))
            .await
            .unwrap();
        // 5 is deleted through the sink: its delete marker is no row.
        let delete = change(&t, Op::Delete, 0x200, 0, Some(rows[4].clone()), None);
        sink.write(&[delete]).await.unwrap();

        let mut readback = open(config.readback("nats")).await;
        assert!(
            readback.compares().contains("JSON"),
            "{}",
            readback.compares()
        );
        let all: Vec<SinkRecord> = rows[..4].iter().map(|r| read(&t, r.clone())).collect();
        assert_eq!(readback.compare(&all).await.unwrap(), vec![Held::Same; 4]);

        let kv = bucket(&server, "rows").await;
        kv.purge("public.items.2").await.unwrap();
        kv.put(
            "public.items.3",
            r#"{"id":3,"name":"changed","qty":3,"note":"c"}"#.into(),
        )
        .await
        .unwrap();
        // Another member order and number spelling is the same value; the
        // int8 past 2^53 must still match exactly.
        let same =
            format!("{{ \"note\": \"exact\", \"qty\": 1.0, \"name\": \"big\", \"id\": {BIG} }}");
        kv.put(format!("public.items.{BIG}"), same.into())
            .await
            .unwrap();
        kv.put("public.items.4", "not json".into()).await.unwrap();
        assert_eq!(
            readback.compare(&all).await.unwrap(),
            [
                Held::Same,
                Held::Missing,
                Held::Differs(vec![column_diff("name", "\"three\"", "\"changed\"")]),
                Held::Differs(vec![column_diff("(value)", "a JSON object", "not json")]),
            ]
        );
        let off = format!(
            "{{\"id\":{},\"name\":\"big\",\"qty\":1,\"note\":\"exact\"}}",
            BIG - 1
        );
        kv.put(format!("public.items.{BIG}"), off.into())
            .await
            .unwrap();
        assert_eq!(
            readback.compare(&all[..1]).await.unwrap(),
            [Held::Differs(vec![column_diff(
                "id",
                &BIG.to_string(),
                &(BIG - 1).to_string()
            )])]
        );

        let deletes = [
            gone(&t, &[Value::Int(4)]),
            gone(&t, &[Value::Int(99)]),
            gone(&t, &[Value::Int(5)]),
            gone(&t, &[Value::Int(2)]),
        ];
        assert_eq!(
            readback.compare(&deletes).await.unwrap(),
            [Held::Extra, Held::Same, Held::Same, Held::Same]
        );
    }

    /// Writes rows 1..=9 of `items` and one of `other` through the sink
    /// after a truncate of `items`, deletes row 4, and adds keys behind
    /// the sink's back: 100, and two names that map to no key.
    async fn fill(server: &NatsServer, config: &NatsSinkConfig, other: &Arc<TableSchema>) {
        let t = items();
        let mut sink = NatsSink::connect("nats", config.clone()).await.unwrap();
        sink.write(&[change(&t, Op::Truncate, 0x100, 0, None, None)])
            .await
            .unwrap();
        let mut batch: Vec<SinkRecord> = (1..=9)
            .map(|id| {
                let row = item(id, &format!("n{id}"), id, None);
                change(&t, Op::Insert, 0x200, id as u32, None, Some(row))
            })
            .collect();
        batch.push(change(
            other,
            Op::Insert,
            0x200,
            50,
            None,
            Some(vec![Value::Int(1), Value::Text("x".into())]),
        ));
        sink.write(&batch).await.unwrap();
        // Updates, so that rows have later revisions than others.
        for round in 0..3u32 {
            let row = item(7, &format!("again {round}"), 7, None);
            let update = change(&t, Op::Update, 0x300 + u64::from(round), 0, None, Some(row));
            sink.write(&[update]).await.unwrap();
        }
        let delete = change(&t, Op::Delete, 0x400, 0, Some(item(4, "n4", 4, None)), None);
        sink.write(&[delete]).await.unwrap();
        let kv = bucket(server, config.bucket.as_deref().unwrap()).await;
        kv.put("public.items.100", r#"{"id":100}"#.into())
            .await
            .unwrap();
        kv.put("public.items.a=3Ab", "{}".into()).await.unwrap();
        kv.put("public.items.x.y", "{}".into()).await.unwrap();
    }

    /// Asserts that `readback` lists the keys [`fill`] leaves for `items`,
    /// in more than two pages of two.
    async fn assert_lists_filled_items(readback: &mut dyn Readback) {
        let (held, pages) = all_keys(readback, &items(), None, 2).await;
        assert!(pages > 2, "{pages} pages");
        let unmapped = ["public.items.a=3Ab", "public.items.x.y"];
        let ids = [1, 2, 3, 5, 6, 7, 8, 9, 100];
        assert_eq!(held, held_ids("public.items.", &ids, &unmapped));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_keys_page_through_a_bucket() {
        let server = NatsServer::start();
        let config = config(&server, "rows");
        let other = table("other", &[("id", "int8", true), ("name", "text", false)]);
        fill(&server, &config, &other).await;

        let mut readback = open(config.readback("nats")).await;
        assert_lists_filled_items(&mut *readback).await;
        let (held, _) = all_keys(&mut *readback, &other, None, 100).await;
        assert_eq!(held, held_ids("public.other.", &[1], &[]));
        let empty = table("empty", &[("id", "int8", true)]);
        let page = readback.keys(&empty, None, None, 10).await.unwrap();
        assert_eq!(page, weir_core::KeyPage::default());
    }

    /// A bucket that keeps older entries of a key: only each key's latest
    /// counts, so a deleted row's older entries are no key.
    #[tokio::test(flavor = "multi_thread")]
    async fn readback_keys_of_a_bucket_with_history_are_the_latest_entries() {
        let server = NatsServer::start();
        let js = js(&server.url).await;
        js.create_stream(jetstream::stream::Config {
            name: "KV_hist".into(),
            subjects: vec!["$KV.hist.>".into()],
            max_messages_per_subject: 5,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut config = config(&server, "hist");
        config.create_bucket = false;
        let other = table("other", &[("id", "int8", true), ("name", "text", false)]);
        fill(&server, &config, &other).await;

        let mut readback = open(config.readback("nats")).await;
        assert_lists_filled_items(&mut *readback).await;
        let row7 = item(7, "again 2", 7, None);
        assert_eq!(
            readback.compare(&[read(&items(), row7)]).await.unwrap(),
            [Held::Same]
        );
    }

    /// A text key with the escapes in it, a two-column key, and a route's
    /// own key template.
    #[tokio::test(flavor = "multi_thread")]
    async fn readback_maps_text_and_two_column_keys_back() {
        let server = NatsServer::start();
        let config = config(&server, "rows");
        let t = tenanted();
        let mut sink = NatsSink::connect("nats", config.clone()).await.unwrap();
        let route = "cache.{table}.{key.id}.{key.tenant}";
        let rows = [
            vec![
                Value::Text("a.b c:d".into()),
                Value::Int(1),
                Value::Text("one".into()),
            ],
            vec![Value::Text("".into()), Value::Int(2), Value::Null],
        ];
        let mut batch = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let insert = |seq| change(&t, Op::Insert, 0x100, seq, None, Some(row.clone()));
            batch.push(insert(i as u32));
            batch.push(routed(insert(10 + i as u32), route));
        }
        sink.write(&batch).await.unwrap();

        let mut readback = open(config.readback("nats")).await;
        let reads: Vec<SinkRecord> = rows
            .iter()
            .map(|r| read(&t, r.clone()))
            .chain(rows.iter().map(|r| routed(read(&t, r.clone()), route)))
            .collect();
        assert_eq!(readback.compare(&reads).await.unwrap(), vec![Held::Same; 4]);

        let key = |tenant: &str, id: i64| Some(vec![tenant.to_owned(), id.to_string()]);
        let (held, _) = all_keys(&mut *readback, &t, None, 1).await;
        assert_eq!(
            held,
            [
                HeldKey {
                    name: "public.tenanted.=3A2".into(),
                    key: key("", 2),
                },
                HeldKey {
                    name: "public.tenanted.a=2Eb=20c=5C=3Ad=3A1".into(),
                    key: key("a.b c:d", 1),
                },
            ]
        );
        let (held, _) = all_keys(&mut *readback, &t, Some(route), 1).await;
        assert_eq!(
            held,
            [
                HeldKey {
                    name: "cache.tenanted.1.a=2Eb=20c=3Ad".into(),
                    key: key("a.b c:d", 1),
                },
                HeldKey {
                    name: "cache.tenanted.2.=00".into(),
                    key: key("", 2),
                },
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_is_refused_in_jetstream_mode() {
        let mut config = NatsSinkConfig::new("nats://127.0.0.1:1", NatsMode::Jetstream);
        config.stream = Some("WEIR".into());
        let Err(reason) = config.readback("nats") else {
            panic!("jetstream mode has no rows to read back");
        };
        assert!(reason.contains("stream"), "{reason}");
    }
}
