//! The Redis sink against private `redis-server` processes: the
//! conformance kit in both cache formats, end to end through the `weir`
//! binary (cache, and stream with a replay after SIGKILL), every type of
//! the types table in both formats, its errors (server down at start,
//! killed and restarted mid-run, a write Redis refuses), and `weir
//! verify`'s readback of the cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redis::Commands as _;
use serde_json::json;
use weir_core::{Capabilities, Op, Sink, SinkRecord, TableSchema, Value};
use weir_sinks::SinkSpec as _;
use weir_sinks::redis::{Format, Mode, RedisSink, RedisSinkConfig};
use weir_tests::conformance::{self, StateTarget};
use weir_tests::services::redis::RedisServer;
use weir_tests::types::{TYPES_ROWS, TYPES_TABLE, native_rows};
use weir_tests::*;

/// Every key matching `pattern`.
fn keys(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut out: Vec<String> = conn
        .scan_match::<_, String>(pattern)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan");
    out.sort();
    out.dedup();
    out
}

/// The rows under key prefix `prefix` as the cache holds them: JSON
/// objects, hash fields as strings (without `_weir_version`).
fn cached_rows(server: &RedisServer, format: Format, prefix: &str) -> Vec<Json> {
    let mut conn = server.connection();
    let mut rows = Vec::new();
    for key in keys(&mut conn, &format!("{prefix}*")) {
        match format {
            // A key can go between SCAN and the read while the sink is
            // still applying changes: it is simply not there any more.
            Format::Json => {
                let Some(text): Option<String> = conn.get(&key).expect("GET a row") else {
                    continue;
                };
                rows.push(
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {text}")),
                );
            }
            Format::Hash => {
                let mut fields: BTreeMap<String, String> = conn.hgetall(&key).expect("HGETALL");
                if fields.is_empty() {
                    continue;
                }
                assert!(
                    fields.remove("_weir_version").is_some(),
                    "{key} has no version: {fields:?}"
                );
                rows.push(json!(fields));
            }
        }
    }
    rows
}

struct Target {
    server: RedisServer,
    format: Format,
}

impl Target {
    fn config(&self) -> RedisSinkConfig {
        let mut config = RedisSinkConfig::new(self.server.url());
        config.format = self.format;
        config
    }
}

impl StateTarget for Target {
    fn capabilities(&self) -> Capabilities {
        self.config().capabilities()
    }

    async fn open(&self) -> Box<dyn Sink> {
        Box::new(
            RedisSink::connect("redis", self.config())
                .await
                .expect("connect the sink"),
        )
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        cached_rows(
            &self.server,
            self.format,
            &format!("{}:{}:", table.schema, table.name),
        )
        .into_iter()
        .map(|row| match self.format {
            Format::Json => json!({
                "id": row["id"], "name": row["name"], "qty": row["qty"],
                "note": row.get("note").cloned().unwrap_or(Json::Null),
            }),
            Format::Hash => json!({
                "id": row["id"].as_str().and_then(|s| s.parse::<i64>().ok()),
                "name": row["name"],
                "qty": row["qty"].as_str().and_then(|s| s.parse::<i64>().ok()),
                "note": row.get("note").cloned().unwrap_or(Json::Null),
            }),
        })
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_in_json_format() {
    let target = Target {
        server: RedisServer::start(),
        format: Format::Json,
    };
    conformance::run(&target).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_in_hash_format() {
    let target = Target {
        server: RedisServer::start(),
        format: Format::Hash,
    };
    conformance::run(&target).await;
}

fn table(name: &str, columns: &[(&str, &str, bool)]) -> Arc<TableSchema> {
    weir_tests::records::table("public", name, columns)
}

fn record(
    table: &Arc<TableSchema>,
    op: Op,
    lsn: u64,
    seq: u32,
    after: Option<Vec<Value>>,
) -> SinkRecord {
    weir_tests::records::change(table, op, lsn, seq, None, after)
}

/// Kept TOAST values are copied from the stored JSON byte for byte: an
/// int8 past 2^53 (which a Lua JSON decoder would round) and an embedded
/// document with its own spacing come out as they went in. And a server
/// that lost its scripts (SCRIPT FLUSH, as after a restart) gets them again.
#[tokio::test(flavor = "multi_thread")]
async fn json_merge_is_exact_and_lost_scripts_are_reloaded() {
    let server = RedisServer::start();
    let t = table(
        "exact",
        &[
            ("id", "int8", true),
            ("big", "int8", false),
            ("doc", "json", false),
            ("s", "text", false),
        ],
    );
    let mut sink = RedisSink::connect("redis", RedisSinkConfig::new(server.url()))
        .await
        .unwrap();
    let big = 9_007_199_254_740_993i64; // 2^53 + 1
    let doc = "{ \"a\" : [1, {\"b\": \"}\"}],  \"n\": 12345678901234567891 }";
    let insert = record(
        &t,
        Op::Insert,
        0x100,
        0,
        Some(vec![
            Value::Int(1),
            Value::Int(big),
            Value::Json(doc.into()),
            Value::Text("one".into()),
        ]),
    );
    let update = record(
        &t,
        Op::Update,
        0x200,
        0,
        Some(vec![
            Value::Int(1),
            Value::Unchanged,
            Value::Unchanged,
            Value::Text("two".into()),
        ]),
    );
    sink.write(&[insert]).await.unwrap();
    let mut conn = server.connection();
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    sink.write(&[update]).await.unwrap();
    let stored: String = conn.get("public:exact:1").unwrap();
    assert_eq!(
        stored,
        format!("{{\"id\":1,\"big\":{big},\"doc\":{doc},\"s\":\"two\"}}")
    );
    let version: String = conn.get("weir:v:public:exact:1").unwrap();
    assert_eq!(version, "000000000000020000000000");
}

/// A key template that names only some of the key columns: an update that
/// changes another key column keeps the same cache key, and must leave the
/// row there (not write it, then delete it as the "old" key), with its
/// unchanged TOAST value.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_change_the_key_template_does_not_see_keeps_the_row() {
    let server = RedisServer::start();
    let t = table(
        "tenanted",
        &[
            ("tenant", "int8", true),
            ("id", "int8", true),
            ("note", "text", false),
        ],
    );
    for format in [Format::Hash, Format::Json] {
        let mut config = RedisSinkConfig::new(server.url());
        config.format = format;
        config.key = "{schema}:{table}:{key.id}".into();
        let mut sink = RedisSink::connect("redis", config).await.unwrap();
        let insert = record(
            &t,
            Op::Insert,
            0x100,
            0,
            Some(vec![
                Value::Int(1),
                Value::Int(5),
                Value::Text("long".into()),
            ]),
        );
        let moved = weir_tests::records::change(
            &t,
            Op::Update,
            0x200,
            0,
            Some(vec![Value::Int(1), Value::Int(5), Value::Null]),
            Some(vec![Value::Int(2), Value::Int(5), Value::Unchanged]),
        );
        sink.write(&[insert]).await.unwrap();
        sink.write(std::slice::from_ref(&moved)).await.unwrap();
        let rows = cached_rows(&server, format, "public:tenanted:");
        let want = match format {
            Format::Json => json!({"tenant": 2, "id": 5, "note": "long"}),
            Format::Hash => json!({"tenant": "2", "id": "5", "note": "long"}),
        };
        assert_eq!(rows, [want], "{format:?}");
        let mut conn = server.connection();
        let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    }
}

/// Several records of one position (a plugin can make them) get entries
/// of their own, and writing them again, in other batch cuts, adds none.
#[tokio::test(flavor = "multi_thread")]
async fn stream_ids_tell_records_of_one_position_apart() {
    let server = RedisServer::start();
    let t = table("s", &[("id", "int4", true)]);
    let mut config = RedisSinkConfig::new(server.url());
    config.mode = Mode::Stream;
    let batch: Vec<SinkRecord> = [(0x100, 0), (0x100, 0), (0x100, 0), (0x100, 1), (0x300, 0)]
        .iter()
        .enumerate()
        .map(|(i, (lsn, seq))| record(&t, Op::Insert, *lsn, *seq, Some(vec![Value::Int(i as i64)])))
        .collect();
    let mut sink = RedisSink::connect("redis", config.clone()).await.unwrap();
    sink.write(&batch[..2]).await.unwrap();
    sink.write(&batch[2..]).await.unwrap();
    drop(sink);
    // A restarted sink replays the whole of it, cut differently.
    let mut sink = RedisSink::connect("redis", config).await.unwrap();
    sink.write(&batch[..3]).await.unwrap();
    sink.write(&batch[3..]).await.unwrap();
    let mut conn = server.connection();
    let entries: redis::streams::StreamRangeReply = conn.xrange_all("weir:public:s").unwrap();
    let ids: Vec<&str> = entries.ids.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["256-0", "256-1", "256-2", "256-4294967296", "768-0"],
        "one entry per record, none twice"
    );
    let values: Vec<i64> = entries
        .ids
        .iter()
        .map(|e| {
            let value: String = e.get("value").unwrap();
            let v: Json = serde_json::from_str(&value).unwrap();
            v["after"]["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(values, [0, 1, 2, 3, 4]);
    let first = &entries.ids[0];
    for (field, want) in [
        ("op", "insert"),
        ("schema", "public"),
        ("table", "s"),
        ("commit_lsn", "0/100"),
        ("key", "{\"id\":0}"),
    ] {
        assert_eq!(first.get::<String>(field).as_deref(), Some(want), "{field}");
    }
}

/// A config file in a temp dir: `db`'s source over `tables`, the
/// passthrough plugin, then `sinks`.
fn write_config(db: &TestDb, tables: &[&str], sinks: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!("{}\n{}\n{sinks}", db.source_toml(tables), passthrough()),
    )
    .unwrap();
    (dir, path)
}

fn start(config: &std::path::Path, db: &TestDb) -> WeirProcess {
    let weir = WeirProcess::start(config, &[]);
    wait_for(Duration::from_secs(120), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    weir
}

/// `table`'s rows as `row_to_json` gives them, by id.
fn table_rows(db: &TestDb, table: &str) -> Vec<Json> {
    let text = psql(
        &db.name,
        &format!("SELECT coalesce(json_agg(row_to_json(t) ORDER BY id), '[]') FROM {table} t"),
    )
    .unwrap();
    serde_json::from_str::<Vec<Json>>(&text).unwrap()
}

fn by_id(mut rows: Vec<Json>) -> Vec<Json> {
    rows.sort_by_key(|r| {
        r["id"]
            .as_i64()
            .or_else(|| r["id"].as_str().and_then(|s| s.parse().ok()))
    });
    rows
}

/// Hash rows hold text; the table's rows as the hash format writes them.
fn as_hash_rows(rows: Vec<Json>) -> Vec<Json> {
    rows.into_iter()
        .map(|row| {
            let fields: BTreeMap<String, String> = row
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let text = match v {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect();
            json!(fields)
        })
        .collect()
}

/// Waits until the cache under `prefix` holds exactly `table`'s rows.
fn wait_mirrored(
    server: &RedisServer,
    db: &TestDb,
    format: Format,
    prefix: &str,
    table: &str,
    weir: &WeirProcess,
) {
    let mut last = (Vec::new(), Vec::new());
    let same = wait_for(Duration::from_secs(90), || {
        let mut want = table_rows(db, table);
        if format == Format::Hash {
            want = as_hash_rows(want);
        }
        let got = by_id(cached_rows(server, format, prefix));
        last = (got.clone(), want.clone());
        (got == want).then_some(())
    });
    if same.is_none() {
        panic!(
            "the cache under {prefix} never matched table {table}:\n  cache: {}\n  table: {}\n{}",
            serde_json::to_string(&last.0).unwrap(),
            serde_json::to_string(&last.1).unwrap(),
            weir.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_mirrors_the_tables_end_to_end() {
    let server = RedisServer::start();
    let db = TestDb::new(
        "redis_cache",
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text);
         CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         CREATE TABLE gone (id int PRIMARY KEY, v text);",
    )
    .await;
    let sinks = format!(
        "[sinks.json]\ntype = \"redis\"\nurl = {url:?}\nformat = \"json\"\nkey = \"j:{{schema}}:{{table}}:{{key}}\"\n\n\
         [sinks.hash]\ntype = \"redis\"\nurl = {url:?}\nformat = \"hash\"\nkey = \"h:{{schema}}:{{table}}:{{key}}\"\n",
        url = server.url()
    );
    let (_dir, config) = write_config(&db, &["items", "docs", "gone"], &sinks);
    let mut weir = start(&config, &db);
    for sql in [
        "INSERT INTO items SELECT g, 'n' || g, g, NULL FROM generate_series(1, 50) g",
        "UPDATE items SET qty = qty * 10, note = 'x' WHERE id % 3 = 0",
        "DELETE FROM items WHERE id % 5 = 0",
        "UPDATE items SET id = 1000, note = 'moved' WHERE id = 1",
        "UPDATE items SET note = NULL WHERE id = 3",
        // Random hex barely compresses, so a 32 kB body is stored out of
        // line and the next update does not send it.
        "INSERT INTO docs SELECT 1, 'first', string_agg(md5(random()::text), '') FROM generate_series(1, 1000)",
        "UPDATE docs SET title = 'second' WHERE id = 1",
        "INSERT INTO gone VALUES (1, 'a'), (2, 'b')",
        "TRUNCATE gone",
        "INSERT INTO gone VALUES (3, 'c')",
    ] {
        db.exec(sql).await;
    }
    for (format, prefix) in [(Format::Json, "j"), (Format::Hash, "h")] {
        for table in ["items", "docs", "gone"] {
            wait_mirrored(
                &server,
                &db,
                format,
                &format!("{prefix}:public:{table}:"),
                table,
                &weir,
            );
        }
    }
    let docs = cached_rows(&server, Format::Json, "j:public:docs:");
    assert_eq!(docs[0]["body"].as_str().map(str::len), Some(32_000));
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// Entries of `stream` as (id, the event's `after.id`).
fn stream_entries(server: &RedisServer, stream: &str) -> Vec<(String, i64)> {
    let mut conn = server.connection();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let value: String = e.get("value").expect("a value field");
            let event: Json = serde_json::from_str(&value).unwrap();
            (e.id.clone(), event["after"]["id"].as_i64().unwrap())
        })
        .collect()
}

/// A replication slot the test made, dropped with the guard.
struct SlotGuard(String);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let name = &self.0;
        let _ = psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{name}' AND active_pid IS NOT NULL"
            ),
        );
        let _ = wait_for(Duration::from_secs(10), || {
            psql(
                "postgres",
                &format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}'"
                ),
            )
            .ok()
        });
    }
}

/// Weir is killed with SIGKILL after writing, and restarted on a copy of
/// its slot taken before any row was written, so Postgres sends every
/// transaction again (more than any real crash would): each entry is
/// refused as already there, and the stream holds every row once.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_replayed_after_kill_9_has_no_duplicates() {
    let server = RedisServer::start();
    let db = TestDb::new(
        "redis_stream",
        "CREATE TABLE ev (id bigint PRIMARY KEY, v text)",
    )
    .await;
    let sinks = format!(
        "[sinks.log]\ntype = \"redis\"\nurl = {:?}\nmode = \"stream\"\nmaxlen = 100000\n",
        server.url()
    );
    let (dir, config) = write_config(&db, &["ev"], &sinks);
    let mut weir = start(&config, &db);
    let copy = SlotGuard(format!("{}_copy", db.slot));
    // From the test's database: a copy belongs to the copying session's.
    psql(
        &db.name,
        &format!(
            "SELECT pg_copy_logical_replication_slot('{}', '{}')",
            db.slot, copy.0
        ),
    )
    .expect("copy the slot");
    let mut next = 1i64;
    for _ in 0..40 {
        db.exec(&format!(
            "INSERT INTO ev SELECT g, 'v' FROM generate_series({next}, {}) g",
            next + 4
        ))
        .await;
        next += 5;
    }
    let written = (next - 1) as usize;
    wait_for(Duration::from_secs(60), || {
        (stream_entries(&server, "weir:public:ev").len() >= written).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the stream never reached {written} entries:\n{}",
            weir.log()
        )
    });
    weir.kill9();

    let replay = dir.path().join("replay.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("slot = {:?}", db.slot),
        &format!("slot = {:?}", copy.0),
    );
    std::fs::write(&replay, text).unwrap();
    let mut weir = WeirProcess::start(&replay, &[]);
    db.exec(&format!("INSERT INTO ev VALUES ({next}, 'last')"))
        .await;
    let total = next as usize;
    wait_for(Duration::from_secs(90), || {
        (stream_entries(&server, "weir:public:ev").len() >= total).then_some(())
    })
    .unwrap_or_else(|| panic!("the last row never arrived:\n{}", weir.log()));
    let entries = stream_entries(&server, "weir:public:ev");
    let ids: Vec<i64> = entries.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        ids,
        (1..=next).collect::<Vec<_>>(),
        "every row once, in order:\n{}",
        weir.log()
    );
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// Checks a hash field's text against the envelope's value of the column.
fn check_hash_value(column: &str, id: &Json, text: Option<&String>, want: &Json) {
    use base64::Engine as _;
    let what = format!("hash column {column} of row {id}: got {text:?}, want {want}");
    match want {
        Json::Null => assert_eq!(text, None, "{what}"),
        Json::Bool(b) => assert_eq!(
            text.map(String::as_str),
            Some(if *b { "true" } else { "false" }),
            "{what}"
        ),
        Json::Number(n) => {
            let text = text.unwrap_or_else(|| panic!("{what}"));
            match n.as_i64() {
                Some(i) => assert_eq!(text.parse::<i64>().ok(), Some(i), "{what}"),
                None => assert_eq!(text.parse::<f64>().ok(), n.as_f64(), "{what}"),
            }
        }
        Json::String(s) if column == "by" => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(text, Some(&format!("\\x{hex}")), "{what}");
        }
        Json::String(s) => assert_eq!(text, Some(s), "{what}"),
        Json::Array(_) | Json::Object(_) => {
            let got: Json = serde_json::from_str(text.unwrap_or_else(|| panic!("{what}")))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(&got, want, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_in_both_formats() {
    let server = RedisServer::start();
    let db = TestDb::new("redis_types", TYPES_TABLE).await;
    let sinks = format!(
        "[sinks.json]\ntype = \"redis\"\nurl = {url:?}\nkey = \"j:{{table}}:{{key}}\"\n\n\
         [sinks.hash]\ntype = \"redis\"\nurl = {url:?}\nformat = \"hash\"\nkey = \"h:{{table}}:{{key}}\"\n",
        url = server.url()
    );
    let (_dir, config) = write_config(&db, &["typed"], &sinks);
    let mut weir = start(&config, &db);
    db.exec(TYPES_ROWS).await;
    let expected = native_rows();
    let rows = |format, prefix| {
        wait_for(Duration::from_secs(60), || {
            let rows = by_id(cached_rows(&server, format, prefix));
            (rows.len() == expected.len()).then_some(rows)
        })
        .unwrap_or_else(|| panic!("not every row reached {prefix}:\n{}", weir.log()))
    };
    let json_rows = rows(Format::Json, "j:typed:");
    let hash_rows = rows(Format::Hash, "h:typed:");
    for ((json_row, hash_row), want) in json_rows.iter().zip(&hash_rows).zip(&expected) {
        let hash: BTreeMap<String, String> = serde_json::from_value(hash_row.clone()).unwrap();
        for (column, value) in want.as_object().unwrap() {
            assert_eq!(
                &json_row[column], value,
                "json column {column} of row {}: got {}, want {value}",
                want["id"], json_row[column]
            );
            check_hash_value(column, &want["id"], hash.get(column), value);
        }
    }
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_down_at_start_is_a_clear_error() {
    let db = TestDb::new("redis_down", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let port = free_port();
    let sinks = format!(
        "[sinks.cache]\ntype = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:{port}\"\nconnect_timeout = \"2s\"\n"
    );
    let (_dir, config) = write_config(&db, &["t"], &sinks);
    let (status, out) = run_weir(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("sink cache")
            && out.contains(&format!("redis://:<redacted>@127.0.0.1:{port}")),
        "the error names neither the sink nor the server:\n{out}"
    );
    assert!(!out.contains("hunter2"), "the password leaked:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_run_is_written_again_once_it_is_back() {
    // The append-only file, fsynced on every write, is what makes an
    // acknowledged batch survive the server's crash.
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let db = TestDb::new(
        "redis_restart",
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text)",
    )
    .await;
    let sinks = format!(
        "[sinks.cache]\ntype = \"redis\"\nurl = {:?}\nformat = \"hash\"\nresponse_timeout = \"2s\"\nconnect_timeout = \"2s\"\n",
        server.url()
    );
    let (_dir, config) = write_config(&db, &["items"], &sinks);
    let mut weir = start(&config, &db);
    db.exec("INSERT INTO items SELECT g, 'n' || g, g, NULL FROM generate_series(1, 20) g")
        .await;
    wait_mirrored(&server, &db, Format::Hash, "public:items:", "items", &weir);

    server.kill();
    db.exec("INSERT INTO items SELECT g, 'n' || g, g, 'while down' FROM generate_series(21, 40) g")
        .await;
    db.exec("UPDATE items SET qty = -qty WHERE id % 2 = 0")
        .await;
    db.exec("DELETE FROM items WHERE id % 7 = 0").await;
    // Weir must have tried and failed before the server comes back.
    wait_for(Duration::from_secs(60), || {
        let log = weir.log();
        (log.contains("sink write failed") && log.contains("sink=cache")).then_some(())
    })
    .unwrap_or_else(|| panic!("weir never reported the failing sink:\n{}", weir.log()));
    server.restart();
    db.exec("INSERT INTO items SELECT g, 'n' || g, g, 'after' FROM generate_series(41, 50) g")
        .await;
    wait_mirrored(&server, &db, Format::Hash, "public:items:", "items", &weir);
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_redis_refuses_is_dead_lettered_and_the_rest_flows() {
    let server = RedisServer::start();
    let db = TestDb::new(
        "redis_refused",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    )
    .await;
    // Someone else's list where row 2 would go: Redis refuses a hash
    // write there (WRONGTYPE) every time.
    let mut conn = server.connection();
    let _: i64 = conn.rpush("public:t:2", "not a row").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let sinks = format!(
        "[sinks.cache]\ntype = \"redis\"\nurl = {:?}\nformat = \"hash\"\n\n\
         [sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n\n[dead_letter]\nsink = \"dlq\"\n",
        server.url()
    );
    let (_cfg_dir, config) = write_config(&db, &["t"], &sinks);
    // The dead-letter sink must not get the table's changes too.
    let text = std::fs::read_to_string(&config).unwrap() + "\n[[routes]]\nsinks = [\"cache\"]\n";
    std::fs::write(&config, text).unwrap();
    let mut weir = start(&config, &db);
    for id in 1..=3 {
        db.exec(&format!("INSERT INTO t VALUES ({id}, 'v{id}')"))
            .await;
    }
    let letters = wait_lines(&dlq, 1, Duration::from_secs(60));
    let letter = &letters[0];
    assert_eq!(letter["sink"], "cache", "{letter}");
    assert_eq!(letter["event"]["after"]["id"], 2, "{letter}");
    let error = letter["error"].as_str().unwrap();
    assert!(error.contains("WRONGTYPE"), "{error}");
    db.exec("INSERT INTO t VALUES (4, 'v4')").await;
    let values = wait_for(Duration::from_secs(60), || {
        let values: Vec<Option<String>> = [1, 3, 4]
            .iter()
            .map(|id| conn.hget(format!("public:t:{id}"), "v").unwrap())
            .collect();
        values.iter().all(Option::is_some).then_some(values)
    })
    .unwrap_or_else(|| panic!("rows 1, 3 and 4 never all arrived:\n{}", weir.log()));
    assert_eq!(
        values,
        [Some("v1".into()), Some("v3".into()), Some("v4".into())]
    );
    let kept: Vec<String> = conn.lrange("public:t:2", 0, -1).unwrap();
    assert_eq!(kept, ["not a row"], "the refused key was touched");
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// `weir verify`'s readback of the cache: rows compared through the
/// sink's own key template and encoding, and a table's keys listed with
/// `SCAN`, in both formats.
mod readback {
    use weir_core::{Held, HeldKey, Readback};
    use weir_tests::readback::{column_diff, held_ids, key_pages, open};
    use weir_tests::records::{
        BIG, change, gone, item, items, read, routed, tenanted, transaction,
    };

    use super::*;

    fn config(server: &RedisServer, format: Format) -> RedisSinkConfig {
        let mut config = RedisSinkConfig::new(server.url());
        config.format = format;
        config
    }

    /// Every key `keys()` lists for `table`, about `limit` keys a page
    /// (SCAN's count is a hint), sorted by name and once each (SCAN may
    /// return a key twice); and how many pages it took.
    async fn all_keys(
        readback: &mut dyn Readback,
        table: &TableSchema,
        topic: Option<&str>,
        limit: usize,
    ) -> (Vec<HeldKey>, usize) {
        let pages = key_pages(readback, table, topic, limit).await;
        let mut keys = pages.concat();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys.dedup();
        (keys, pages.len())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_compares_rows_in_both_formats() {
        let server = RedisServer::start();
        let t = items();
        for format in [Format::Json, Format::Hash] {
            let config = config(&server, format);
            let mut sink = RedisSink::connect("redis", config.clone()).await.unwrap();
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
            // 5 is deleted through the sink: its tombstone is no row.
            let delete = change(
                &t,
                Op::Delete,
                0x200,
                0,
                Some(item(5, "five", 5, None)),
                None,
            );
            sink.write(&[delete]).await.unwrap();

            let mut readback = open(config.readback("redis")).await;
            assert!(
                readback.compares().contains(match format {
                    Format::Json => "JSON",
                    Format::Hash => "_weir_version",
                }),
                "{}",
                readback.compares()
            );
            let all: Vec<SinkRecord> = rows[..4].iter().map(|r| read(&t, r.clone())).collect();
            assert_eq!(
                readback.compare(&all).await.unwrap(),
                [Held::Same, Held::Same, Held::Same, Held::Same],
                "{format:?}"
            );

            let mut conn = server.connection();
            let () = conn.del("public:items:2").unwrap();
            match format {
                Format::Json => {
                    // Another member order and number spelling is the same
                    // value; the int8 past 2^53 must still match exactly.
                    let same = format!(
                        "{{ \"note\": \"exact\", \"qty\": 1.0, \"name\": \"big\", \"id\": {BIG} }}"
                    );
                    let () = conn.set(format!("public:items:{BIG}"), same).unwrap();
                    let () = conn
                        .set(
                            "public:items:3",
                            r#"{"id":3,"name":"changed","qty":3,"note":"c"}"#,
                        )
                        .unwrap();
                }
                Format::Hash => {
                    let () = conn.hset("public:items:3", "name", "changed").unwrap();
                }
            }
            let name_diff =
                |source: &str, sink: &str| Held::Differs(vec![column_diff("name", source, sink)]);
            let want_diff = match format {
                Format::Json => name_diff("\"three\"", "\"changed\""),
                Format::Hash => name_diff("three", "changed"),
            };
            assert_eq!(
                readback.compare(&all).await.unwrap(),
                [Held::Same, Held::Missing, want_diff, Held::Same],
                "{format:?}"
            );

            // A stored int8 one off is a difference, not rounded away.
            if format == Format::Json {
                let off = format!(
                    "{{\"id\":{BIG},\"name\":\"big\",\"qty\":1,\"note\":\"exact\",\"x\":{}}}",
                    BIG - 1
                );
                let () = conn.set(format!("public:items:{BIG}"), off).unwrap();
                let held = readback.compare(&all[..1]).await.unwrap();
                assert_eq!(
                    held,
                    [Held::Differs(vec![column_diff(
                        "x",
                        "(none)",
                        &(BIG - 1).to_string()
                    )])]
                );
            }
            // A NULL column is an absent field in a hash: one that appears
            // is a difference.
            if format == Format::Hash {
                let () = conn.hset("public:items:4", "note", "new").unwrap();
                let held = readback.compare(&all[3..]).await.unwrap();
                assert_eq!(
                    held,
                    [Held::Differs(vec![column_diff("note", "(none)", "new")])]
                );
            }

            let deletes = [
                gone(&t, &[Value::Int(4)]),
                gone(&t, &[Value::Int(99)]),
                gone(&t, &[Value::Int(5)]),
                gone(&t, &[Value::Int(2)]),
            ];
            assert_eq!(
                readback.compare(&deletes).await.unwrap(),
                [Held::Extra, Held::Same, Held::Same, Held::Same],
                "{format:?}"
            );
            // The tombstone is still there: it is the sink's, not a row.
            let tombstone: Option<String> = conn.get("weir:v:public:items:5").unwrap();
            assert!(tombstone.is_some());
            let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_keys_page_through_a_table() {
        let server = RedisServer::start();
        let t = items();
        let other = table("other", &[("id", "int8", true), ("name", "text", false)]);
        for format in [Format::Json, Format::Hash] {
            let config = config(&server, format);
            let mut sink = RedisSink::connect("redis", config.clone()).await.unwrap();
            // A truncate first leaves its marker, then rows, one deleted.
            let truncate = change(&t, Op::Truncate, 0x100, 0, None, None);
            sink.write(&[truncate]).await.unwrap();
            let mut batch: Vec<SinkRecord> = (1..=9)
                .map(|id| {
                    let row = item(id, &format!("n{id}"), id, None);
                    record(&t, Op::Insert, 0x200, id as u32, Some(row))
                })
                .collect();
            batch.push(record(
                &other,
                Op::Insert,
                0x200,
                50,
                Some(vec![Value::Int(1), Value::Text("x".into())]),
            ));
            batch.push(change(
                &t,
                Op::Delete,
                0x300,
                0,
                Some(item(4, "n4", 4, None)),
                None,
            ));
            sink.write(&batch).await.unwrap();
            let mut conn = server.connection();
            // Rows the sink never wrote: one the source may have, one whose
            // name maps back to no key of the table.
            let () = conn.set("public:items:100", r#"{"id":100}"#).unwrap();
            let () = conn.set("public:items:a:b", "{}").unwrap();
            // Filler, so that SCAN needs many steps.
            for i in 0..200 {
                let () = conn.set(format!("unrelated:{i}"), "x").unwrap();
            }
            let version_keys = keys(&mut conn, "weir:v:*");
            assert!(
                version_keys.contains(&"weir:v:public:items:".to_owned())
                    && version_keys.contains(&"weir:v:public:items:4".to_owned()),
                "{version_keys:?}"
            );

            let mut readback = open(config.readback("redis")).await;
            let (held, pages) = all_keys(&mut *readback, &t, None, 2).await;
            assert!(pages > 2, "{pages} pages");
            let ids = [1, 2, 3, 5, 6, 7, 8, 9, 100];
            let want = held_ids("public:items:", &ids, &["public:items:a:b"]);
            assert_eq!(held, want, "{format:?}");

            let (held, _) = all_keys(&mut *readback, &other, None, 1000).await;
            assert_eq!(held, held_ids("public:other:", &[1], &[]));
            let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
        }
    }

    /// A text key with the separator and escape in it, a two-column key,
    /// and a route's own key template.
    #[tokio::test(flavor = "multi_thread")]
    async fn readback_maps_text_and_two_column_keys_back() {
        let server = RedisServer::start();
        let t = tenanted();
        let config = config(&server, Format::Json);
        let mut sink = RedisSink::connect("redis", config.clone()).await.unwrap();
        let route = "cache/{table}/{key.id}@{key.tenant}";
        let rows = [
            vec![
                Value::Text("a:b\\c".into()),
                Value::Int(1),
                Value::Text("one".into()),
            ],
            vec![Value::Text("plain".into()), Value::Int(2), Value::Null],
        ];
        let mut batch = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let insert = |seq| record(&t, Op::Insert, 0x100, seq, Some(row.clone()));
            batch.push(insert(i as u32));
            batch.push(routed(insert(10 + i as u32), route));
        }
        sink.write(&batch).await.unwrap();
        let mut conn = server.connection();
        assert_eq!(
            keys(&mut conn, "[cp]*tenanted*"),
            [
                "cache/tenanted/1@a:b\\c",
                "cache/tenanted/2@plain",
                "public:tenanted:a\\:b\\\\c:1",
                "public:tenanted:plain:2",
            ]
        );

        let mut readback = open(config.readback("redis")).await;
        let reads: Vec<SinkRecord> = rows
            .iter()
            .map(|r| read(&t, r.clone()))
            .chain(rows.iter().map(|r| routed(read(&t, r.clone()), route)))
            .collect();
        assert_eq!(readback.compare(&reads).await.unwrap(), vec![Held::Same; 4]);
        let () = conn.del("cache/tenanted/2@plain").unwrap();
        let held = readback.compare(&reads).await.unwrap();
        assert_eq!(held, [Held::Same, Held::Same, Held::Same, Held::Missing]);

        let key = |tenant: &str, id: i64| Some(vec![tenant.to_owned(), id.to_string()]);
        let (held, _) = all_keys(&mut *readback, &t, None, 1).await;
        assert_eq!(
            held,
            [
                HeldKey {
                    name: "public:tenanted:a\\:b\\\\c:1".into(),
                    key: key("a:b\\c", 1),
                },
                HeldKey {
                    name: "public:tenanted:plain:2".into(),
                    key: key("plain", 2),
                },
            ]
        );
        let (held, _) = all_keys(&mut *readback, &t, Some(route), 1).await;
        assert_eq!(
            held,
            [HeldKey {
                name: "cache/tenanted/1@a:b\\c".into(),
                key: key("a:b\\c", 1),
            }]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_is_refused_in_stream_mode() {
        let mut config = RedisSinkConfig::new("redis://127.0.0.1:1");
        config.mode = Mode::Stream;
        let Err(reason) = config.readback("redis") else {
            panic!("stream mode has no rows to read back");
        };
        assert!(reason.contains("stream"), "{reason}");
    }
}
