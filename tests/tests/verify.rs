//! `weir verify` against real sinks beside a running Weir: it reports
//! exactly the keys changed behind Weir's back (and no key a live write
//! load has in flight), `--repair` mends them through the pipeline, and
//! `[verify]` does the same continuously, on `/status` and `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value as Json;
use weir_tests::services::clickhouse::ClickHouse;
use weir_tests::services::nats::NatsServer;
use weir_tests::services::redis::RedisServer;
use weir_tests::services::sphinx::{RtIndex, Searchd};
use weir_tests::{
    TestDb, WeirProcess, free_port, http_get, http_json, pg_host, pg_port, pg_user, wait_for,
    weir_in,
};

const ITEMS: &str = "CREATE TABLE items (id int8 PRIMARY KEY, name text, qty int4);
    INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 3000) g;
    CREATE TABLE keyless (a int4, b text);";

/// Changes rows 1001..=3000 and adds and removes rows above 100 000, in
/// transactions of `per_txn` changes, `per_second` changes a second,
/// until stopped; never rows 1..=1000, which the tests corrupt.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(db: &TestDb, per_second: u64, per_txn: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let conninfo = format!(
            "host={} port={} user={} dbname={}",
            pg_host(),
            pg_port(),
            pg_user(),
            db.name
        );
        let (s, d) = (stop.clone(), done.clone());
        let task = tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .expect("connect the load");
            tokio::spawn(conn);
            let pause = Duration::from_secs_f64(per_txn as f64 / per_second as f64);
            let mut round = 0u64;
            while !s.load(Ordering::Relaxed) {
                round += 1;
                let started = tokio::time::Instant::now();
                // A third updates, a third inserts new rows, a third deletes
                // the rows inserted two rounds ago.
                let third = (per_txn / 3).max(1);
                let base = 100_000 + round * third;
                let sql = format!(
                    "BEGIN;
                     UPDATE items SET qty = qty + 1, name = 'load {round}'
                       WHERE id IN (SELECT 1001 + (random() * 1999)::int8 FROM generate_series(1, {third}));
                     INSERT INTO items SELECT g, 'new', 0 FROM generate_series({base}, {base} + {third} - 1) g;
                     DELETE FROM items WHERE id >= {old} AND id < {old} + {third} AND id >= 100000;
                     COMMIT;",
                    old = base.saturating_sub(2 * third)
                );
                if client.batch_execute(&sql).await.is_ok() {
                    d.fetch_add(3 * third, Ordering::Relaxed);
                }
                tokio::time::sleep_until(started + pause).await;
            }
        });
        Load { stop, done, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.done.load(Ordering::Relaxed)
    }
}

/// The five sinks that hold state, and the services behind them.
struct Sinks {
    redis: RedisServer,
    nats: NatsServer,
    clickhouse: ClickHouse,
    searchd: Searchd,
    target: TestDb,
}

impl Sinks {
    async fn start() -> Sinks {
        let clickhouse = ClickHouse::start();
        clickhouse.query("CREATE DATABASE cdc").unwrap();
        Sinks {
            redis: RedisServer::start(),
            nats: NatsServer::start(),
            clickhouse,
            searchd: Searchd::start(
                &[
                    RtIndex::new("public_items")
                        .field("name")
                        .attr("string", "name")
                        .attr("bigint", "qty"),
                    RtIndex::state_of("public_items"),
                ],
                8 << 20,
            ),
            target: TestDb::new("verify_target", "").await,
        }
    }

    /// The `[sinks.*]` sections of `names` (all five when empty).
    fn toml(&self, names: &[&str]) -> String {
        let all = [
            (
                "cache",
                format!(
                    "type = \"redis\"\nurl = {:?}\nformat = \"json\"\n",
                    self.redis.url()
                ),
            ),
            (
                "kv",
                format!(
                    "type = \"nats\"\nurl = {:?}\nmode = \"kv\"\nbucket = \"rows\"\ncreate_bucket = true\n",
                    self.nats.url
                ),
            ),
            (
                "analytics",
                format!(
                    "type = \"clickhouse\"\nurl = {:?}\ndatabase = \"cdc\"\n",
                    self.clickhouse.url()
                ),
            ),
            (
                "search",
                format!(
                    "type = \"sphinx\"\naddress = {:?}\nfields = [\"name\"]\nattributes = {{ name = \"string\", qty = \"bigint\" }}\n",
                    self.searchd.addr
                ),
            ),
            (
                "replica",
                format!(
                    "type = \"postgres\"\nhost = {:?}\nport = {}\nuser = {:?}\ndatabase = {:?}\ncreate_tables = true\n",
                    pg_host(),
                    pg_port(),
                    pg_user(),
                    self.target.name
                ),
            ),
        ];
        all.iter()
            .filter(|(n, _)| names.is_empty() || names.contains(n))
            .map(|(n, body)| format!("[sinks.{n}]\n{body}\n"))
            .collect()
    }
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until the initial snapshot is recorded delivered and the slot
/// has acknowledged everything written so far.
fn caught_up(db: &TestDb, weir: &WeirProcess) {
    let state = format!(
        "SELECT state FROM weir.snapshots WHERE slot = '{}'",
        db.slot
    );
    wait_for(Duration::from_secs(120), || {
        (weir_tests::psql(&db.name, &state).ok()? == "done").then_some(())
    })
    .unwrap_or_else(|| panic!("the initial snapshot was not delivered:\n{}", weir.log()));
    let target = db.current_wal_lsn();
    wait_for(Duration::from_secs(120), || {
        db.confirmed_flush().filter(|l| *l >= target)
    })
    .unwrap_or_else(|| panic!("weir did not catch up:\n{}", weir.log()));
}

/// `weir verify ARGS --json`: exit code and the report.
fn verify(config: &Path, args: &[&str]) -> (i32, Json) {
    let mut all = vec!["verify", "--config", config.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let run = weir_in(config.parent().unwrap(), &all);
    let report: Json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("weir verify printed no JSON report ({e}):\n{run}"));
    (run.status.code().unwrap_or(-1), report)
}

/// Per sink: the drifted keys, as `kind:key` strings, sorted.
fn drift_by_sink(report: &Json) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut keys: Vec<String> = t["drift"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    format!(
                        "{}:{}",
                        d["kind"].as_str().unwrap(),
                        d["key"][0].as_str().unwrap()
                    )
                })
                .collect();
            keys.sort();
            (t["sink"].as_str().unwrap().to_owned(), keys)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_exactly_what_was_changed_behind_weirs_back_and_repair_mends_it() {
    let sinks = Sinks::start().await;
    let db = TestDb::new("verify_e2e", ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let log = dir.path().join("log.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n[[routes]]\ntables = [\"items\"]\nsinks = [\"cache\", \"kv\", \"analytics\", \"search\", \"replica\", \"log\"]\n\n\
             [[routes]]\ntables = [\"keyless\"]\nsinks = [\"cache\"]\n\n\
             {}[sinks.log]\ntype = \"file\"\npath = {log:?}\n\n\
             [sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n\n[dead_letter]\nsink = \"dlq\"\n",
            db.source_toml(&["items", "keyless"]),
            sinks.toml(&[])
        ),
    );
    let weir = WeirProcess::start(&config, &[]);
    caught_up(&db, &weir);

    // In sync, with nothing written meanwhile: clean, every row compared.
    let (code, report) = verify(&config, &["--table", "items"]);
    assert_eq!(code, 0, "{report:#}");
    for t in report["targets"].as_array().unwrap() {
        assert_eq!(t["rows"], 3000, "{t:#}");
        assert!(t["sink_keys"].as_u64().unwrap() >= 3000, "{t:#}");
    }
    assert_eq!(report["targets"].as_array().unwrap().len(), 5, "{report:#}");
    // The log sink is named, with why it is not compared; the dead-letter
    // sink is no copy of any table.
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report:#}");
    assert_eq!(skipped[0]["sink"], "log", "{report:#}");
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("log"),
        "{report:#}"
    );

    let load = Load::start(&db, 1000, 60);
    // Behind Weir's back, one key in each sink.
    let mut redis = sinks.redis.connection();
    let _: () = redis::cmd("DEL")
        .arg("public:items:5")
        .query(&mut redis)
        .unwrap();
    let nats = async_nats::connect(&sinks.nats.url).await.unwrap();
    let kv = async_nats::jetstream::new(nats)
        .get_key_value("rows")
        .await
        .unwrap();
    kv.delete("public.items.6").await.unwrap();
    sinks
        .target
        .exec("UPDATE public.items SET name = 'tampered' WHERE id = 7")
        .await;
    sinks
        .clickhouse
        .query(
            "INSERT INTO cdc.public_items (id, name, qty, _weir_deleted, _weir_version) \
             VALUES (999999, 'ghost', 1, 0, 1)",
        )
        .unwrap();
    sinks
        .searchd
        .query("DELETE FROM public_items WHERE id = 8")
        .await
        .unwrap();

    let (code, report) = verify(&config, &["--table", "items"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        drift_by_sink(&report),
        [
            ("analytics".to_owned(), vec!["extra:999999".to_owned()]),
            ("cache".to_owned(), vec!["missing:5".to_owned()]),
            ("kv".to_owned(), vec!["missing:6".to_owned()]),
            ("replica".to_owned(), vec!["differs:7".to_owned()]),
            ("search".to_owned(), vec!["missing:8".to_owned()]),
        ],
        "{report:#}"
    );
    let replica = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["sink"] == "replica")
        .unwrap();
    let columns = &replica["drift"][0]["columns"];
    assert_eq!(columns.as_array().unwrap().len(), 1, "{columns:#}");
    assert_eq!(columns[0]["column"], "name", "{columns:#}");
    assert!(
        columns[0]["source"].as_str().unwrap().contains("item 7"),
        "{columns:#}"
    );
    assert!(
        columns[0]["sink"].as_str().unwrap().contains("tampered"),
        "{columns:#}"
    );

    let (code, report) = verify(&config, &["--table", "items", "--repair"]);
    assert_eq!(code, 0, "the repair left drift:\n{report:#}");
    assert_eq!(report["repaired"], true, "{report:#}");
    for t in report["targets"].as_array().unwrap() {
        assert_eq!(t["still_drifting"], 0, "{t:#}");
    }
    let (code, report) = verify(&config, &["--table", "items"]);
    assert_eq!(code, 0, "drift after the repair:\n{report:#}");
    let written = load.stop().await;
    assert!(written > 0, "the load wrote nothing");

    // The repaired rows are the source's, in each store.
    let cached: String = redis::cmd("GET")
        .arg("public:items:5")
        .query(&mut redis)
        .unwrap();
    assert!(cached.contains("item 5"), "{cached}");
    let name = weir_tests::psql(
        &sinks.target.name,
        "SELECT name FROM public.items WHERE id = 7",
    )
    .unwrap();
    assert_eq!(name, "item 7");
    let ghost = sinks
        .clickhouse
        .rows("SELECT id FROM cdc.public_items FINAL WHERE _weir_deleted = 0 AND id = 999999 FORMAT JSONEachRow");
    assert!(ghost.is_empty(), "{ghost:?}");

    // A table without a key is refused, with the reason, and the pass
    // proves nothing.
    let (code, report) = verify(&config, &["--table", "keyless"]);
    assert_eq!(code, 1, "{report:#}");
    let refused = report["targets"][0]["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("no primary key"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_passes_under_five_thousand_changes_a_second_find_no_drift() {
    let sinks = Sinks::start().await;
    let db = TestDb::new("verify_load", ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            db.source_toml(&["items"]),
            sinks.toml(&["cache", "analytics", "replica"])
        ),
    );
    let weir = WeirProcess::start(&config, &[]);
    caught_up(&db, &weir);
    let load = Load::start(&db, 5000, 500);
    for pass in 0..10 {
        let (code, report) = verify(&config, &["--table", "items", "--chunk-rows", "1000"]);
        assert_eq!(
            code, 0,
            "pass {pass} reported drift under load:\n{report:#}"
        );
        assert_eq!(report["targets"].as_array().unwrap().len(), 3, "{report:#}");
    }
    let written = load.stop().await;
    // The load kept its rate, so the passes ran under it.
    assert!(written > 10_000, "only {written} changes were written");
}

#[tokio::test(flavor = "multi_thread")]
async fn continuous_verification_reports_and_repairs_on_its_own() {
    let sinks = Sinks::start().await;
    let db = TestDb::new("verify_cont", ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
             [verify]\ninterval = \"2s\"\nrows_per_second = 50000\nrepair = true\n",
            db.source_toml(&["items"]),
            sinks.toml(&["cache"])
        ),
    );
    let weir = WeirProcess::start(&config, &[]);
    caught_up(&db, &weir);
    let clean_passes = |status: &Json| status["verify"]["passes"]["clean"].as_u64().unwrap_or(0);
    let first = wait_for(Duration::from_secs(60), || {
        let status = http_json(&http_get(admin, "/status"));
        (clean_passes(&status) > 0).then_some(status)
    })
    .unwrap_or_else(|| panic!("no clean verification pass:\n{}", weir.log()));
    assert_eq!(first["verify"]["tables"][0]["rows"], 3000, "{first:#}");

    let mut redis = sinks.redis.connection();
    let _: () = redis::cmd("DEL")
        .arg("public:items:9")
        .query(&mut redis)
        .unwrap();
    let repaired = wait_for(Duration::from_secs(60), || {
        let status = http_json(&http_get(admin, "/status"));
        (status["verify"]["repaired_rows"].as_u64().unwrap_or(0) >= 1).then_some(status)
    })
    .unwrap_or_else(|| panic!("the drift was not repaired:\n{}", weir.log()));
    assert_eq!(repaired["verify"]["passes"]["drift"], 0, "{repaired:#}");
    let cached: Option<String> = wait_for(Duration::from_secs(30), || {
        redis::cmd("GET")
            .arg("public:items:9")
            .query::<Option<String>>(&mut redis)
            .ok()
            .flatten()
    });
    assert!(cached.is_some_and(|c| c.contains("item 9")));
    let metrics = http_get(admin, "/metrics");
    for line in [
        "weir_verify_drifted_rows{table=\"public.items\",sink=\"cache\",kind=\"missing\"}",
        "weir_verify_passes_total{result=\"clean\"}",
        "weir_verify_last_full_pass_timestamp_seconds",
        "weir_verify_repaired_rows_total 1",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_a_sink_spells_its_own_way_are_the_sources_keys() {
    // A cache names rows `public:tags:a:true`; the source prints that key
    // as (a, t). Verify must take both for one key.
    let redis = RedisServer::start();
    let db = TestDb::new(
        "verify_spelling",
        "CREATE TABLE tags (name text, flag bool, n int4, PRIMARY KEY (name, flag));
         INSERT INTO tags SELECT 'tag ' || g, g % 2 = 0, g FROM generate_series(1, 50) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n[sinks.cache]\ntype = \"redis\"\nurl = {:?}\nformat = \"json\"\n",
            db.source_toml(&["tags"]),
            redis.url()
        ),
    );
    let weir = WeirProcess::start(&config, &[]);
    caught_up(&db, &weir);
    let (code, report) = verify(&config, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["targets"][0]["sink_keys"], 50, "{report:#}");

    let mut conn = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("public:tags:ghost:false")
        .arg(r#"{"name":"ghost","flag":false,"n":0}"#)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("public:tags:tag 7:maybe")
        .arg(r#"{"name":"tag 7","flag":"maybe","n":7}"#)
        .query(&mut conn)
        .unwrap();
    let (code, report) = verify(&config, &["--repair"]);
    assert_eq!(code, 1, "the key that is no key stays:\n{report:#}");
    let t = &report["targets"][0];
    assert_eq!(t["extra"], 2, "{t:#}");
    assert_eq!(
        t["drift"][0]["key"],
        serde_json::json!(["ghost", "f"]),
        "{t:#}"
    );
    assert_eq!(
        t["unmapped"],
        serde_json::json!(["public:tags:tag 7:maybe"]),
        "{t:#}"
    );
    assert_eq!(t["still_drifting"], 1, "{t:#}");
    let ghost: Option<String> = redis::cmd("GET")
        .arg("public:tags:ghost:false")
        .query(&mut conn)
        .unwrap();
    assert_eq!(ghost, None, "the repair deletes the extra row");
}
