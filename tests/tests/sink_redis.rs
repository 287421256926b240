//! The Redis sink against private `redis-server` processes: the
//! conformance kit in both cache formats, end to end through the `weir`
//! binary (cache, and stream with a replay after SIGKILL), every type of
//! the types table in both formats, and its errors (server down at start,
//! killed and restarted mid-run, a write Redis refuses).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use redis::Commands as _;
use serde_json::json;
use weir_core::{
    Capabilities, ChangeEvent, Column, Lsn, Op, ReplicaIdentity, Sink, SinkPayload, SinkRecord,
    SourceInfo, TableSchema, TxnId, Value,
};
use weir_sinks::SinkSpec as _;
use weir_sinks::redis::{Format, Mode, RedisSink, RedisSinkConfig};
use weir_tests::conformance::{self, StateTarget};
use weir_tests::services::redis::RedisServer;
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

/// The rows of `schema.table` as the cache holds them: JSON objects, hash
/// fields as strings (no `_weir_version`).
fn cached_rows(server: &RedisServer, format: Format, schema: &str, table: &str) -> Vec<Json> {
    let mut conn = server.connection();
    let mut rows = Vec::new();
    for key in keys(&mut conn, &format!("{schema}:{table}:*")) {
        match format {
            Format::Json => {
                let text: String = conn.get(&key).expect("GET a row");
                rows.push(
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {text}")),
                );
            }
            Format::Hash => {
                let mut fields: BTreeMap<String, String> = conn.hgetall(&key).expect("HGETALL");
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
        cached_rows(&self.server, self.format, &table.schema, &table.name)
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
    Arc::new(TableSchema {
        id: 7,
        version: 1,
        schema: "public".into(),
        name: name.into(),
        columns: columns
            .iter()
            .map(|(n, t, key)| Column {
                name: (*n).into(),
                type_oid: 0,
                type_name: (*t).into(),
                type_modifier: -1,
                key: *key,
            })
            .collect(),
        replica_identity: ReplicaIdentity::Default,
    })
}

fn record(
    table: &Arc<TableSchema>,
    op: Op,
    lsn: u64,
    seq: u32,
    after: Option<Vec<Value>>,
) -> SinkRecord {
    SinkRecord {
        topic: None,
        payload: SinkPayload::Change(Arc::new(ChangeEvent {
            op,
            table: Some(Arc::clone(table)),
            before: None,
            after,
            message: None,
            source: SourceInfo {
                commit_lsn: Lsn(lsn),
                lsn: Lsn(lsn - 8),
                xid: 9,
                commit_time_micros: 0,
                seq,
            },
            txn: TxnId(lsn),
        })),
        txn: TxnId(lsn),
    }
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
        .map(|(i, (lsn, seq))| {
            record(
                &t,
                Op::Insert,
                *lsn,
                *seq,
                Some(vec![Value::Int(i as i64)]),
            )
        })
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
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all("weir:public:s").unwrap();
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
