//! The `postgres` sink against a real server: the conformance kit, end to
//! end through the `weir` binary, exactly-once effect across SIGKILLs, the
//! types table, and its errors. Each test's target is a fresh database of
//! its own, dropped afterwards.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use weir_core::{Capabilities, Sink, TableSchema};
use weir_sinks::PostgresSinkConfig;
use weir_sinks::registry::SinkSpec;
use weir_tests::conformance::{self, StateTarget};
use weir_tests::types::{TYPES_ROWS, TYPES_TABLE};
use weir_tests::*;

/// A `[sinks.pg]` section writing to `target`, plus `extra` lines.
fn sink_toml(target: &TestDb, extra: &str) -> String {
    format!(
        "[sinks.pg]\ntype = \"postgres\"\nhost = {:?}\nport = {}\nuser = {:?}\ndatabase = {:?}\n{extra}\n",
        pg_host(),
        pg_port(),
        pg_user(),
        target.name
    )
}

/// Runs the transaction `round_sql(n)` for n = 1, 2, … on `db` until
/// `stop`; the task returns how many ran.
fn write_load(
    db: &TestDb,
    stop: &Arc<AtomicBool>,
    round_sql: impl Fn(i32) -> String + Send + 'static,
) -> tokio::task::JoinHandle<i32> {
    let stop = Arc::clone(stop);
    let dsn = format!(
        "host={} port={} user={} dbname={}",
        pg_host(),
        pg_port(),
        pg_user(),
        db.name
    );
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .expect("load connection");
        tokio::spawn(conn);
        let mut round = 0i32;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            client
                .batch_execute(&round_sql(round))
                .await
                .expect("load transaction");
        }
        round
    })
}

/// Every row of `table` in `db` as one JSON array text, ordered by `id`.
fn rows_json(db: &str, table: &str, columns: &str) -> String {
    psql(
        db,
        &format!(
            "SELECT coalesce(json_agg(x ORDER BY id)::text, '[]') FROM (SELECT {columns} FROM {table}) x"
        ),
    )
    .unwrap_or_else(|e| format!("error: {e}"))
}

/// Waits until `table` holds the same rows in the target as in the source.
fn wait_equal(source: &TestDb, target: &TestDb, table: &str, columns: &str, weir: &WeirProcess) {
    let mut last = (String::new(), String::new());
    let same = wait_for(Duration::from_secs(90), || {
        let want = rows_json(&source.name, table, columns);
        let got = rows_json(&target.name, table, columns);
        let same = want == got;
        last = (want, got);
        same.then_some(())
    });
    if same.is_none() {
        panic!(
            "target differs from source for {table}:\n  source: {}\n  target: {}\n{}",
            last.0,
            last.1,
            weir.log()
        );
    }
}

struct KitTarget {
    db: TestDb,
    /// The last table prepared: each kit scenario is a stream of its own,
    /// with positions starting again, so each gets its own sink name (and
    /// so its own applied position).
    scenario: Mutex<String>,
}

impl KitTarget {
    fn config(&self) -> PostgresSinkConfig {
        let mut c = PostgresSinkConfig::new(&self.db.name);
        c.host = pg_host();
        c.port = pg_port();
        c.user = pg_user();
        c
    }
}

impl StateTarget for KitTarget {
    fn capabilities(&self) -> Capabilities {
        self.config().capabilities()
    }

    async fn prepare(&self, table: &TableSchema) {
        self.db
            .exec(&format!(
                "CREATE TABLE {}.{} (id int8 PRIMARY KEY, name text, qty int4, note text)",
                table.schema, table.name
            ))
            .await;
        *self.scenario.lock().unwrap() = table.name.clone();
    }

    async fn open(&self) -> Box<dyn Sink> {
        let name = self.scenario.lock().unwrap().clone();
        self.config()
            .build(&name)
            .await
            .unwrap_or_else(|e| panic!("opening the sink: {e}"))
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        let text = rows_json(
            &self.db.name,
            &format!("{}.{}", table.schema, table.name),
            "id, name, qty, note",
        );
        serde_json::from_str::<Json>(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kit() {
    let target = KitTarget {
        db: TestDb::new("pgsink_kit", "").await,
        scenario: Mutex::new(String::new()),
    };
    conformance::run(&target).await;
    // The kit's records carry positions, and the sink stored them.
    let stored = psql(&target.db.name, "SELECT count(*) FROM weir_progress").unwrap();
    assert!(stored.parse::<u32>().unwrap() >= 7, "{stored}");
}

const SOURCE_TABLE: &str =
    "CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0, \"Mixed Case\" text);
     CREATE TABLE other (k text PRIMARY KEY, w int)";

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_target_equals_source() {
    let source = TestDb::new("pgsink_e2e_src", SOURCE_TABLE).await;
    let target = TestDb::new("pgsink_e2e_dst", "").await;
    let mut p = FilePipeline::start(
        &source,
        &["t", "other"],
        "",
        &sink_toml(&target, "create_tables = true"),
    );
    let cols = "id, v, n, \"Mixed Case\"";
    source
        .exec(
            "INSERT INTO t SELECT g, 'v' || g, g, 'm' FROM generate_series(1, 50) g;
             INSERT INTO other VALUES ('a', 1), ('b', 2);",
        )
        .await;
    wait_equal(&source, &target, "t", cols, &p.weir);
    source
        .exec(
            "UPDATE t SET v = NULL, n = n * 10 WHERE id % 3 = 0;
             UPDATE t SET id = id + 1000 WHERE id = 7;
             DELETE FROM t WHERE id % 5 = 0;
             BEGIN; DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (1, 'again', 1, NULL); COMMIT;
             UPDATE other SET w = 20 WHERE k = 'b';",
        )
        .await;
    wait_equal(&source, &target, "t", cols, &p.weir);
    // A key change that leaves a TOASTed value alone: Postgres does not
    // send it, and the target must keep it under the new key.
    source
        .exec(
            "ALTER TABLE t ALTER COLUMN v SET STORAGE EXTERNAL;
             UPDATE t SET v = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g)
              WHERE id = 8;",
        )
        .await;
    wait_equal(&source, &target, "t", cols, &p.weir);
    source
        .exec("UPDATE t SET id = 2008, n = 88 WHERE id = 8")
        .await;
    wait_equal(&source, &target, "t", cols, &p.weir);
    source
        .exec("TRUNCATE other; INSERT INTO other VALUES ('c', 3)")
        .await;
    wait_equal(&source, &target, "other", "k AS id, w", &p.weir);
    wait_equal(&source, &target, "t", cols, &p.weir);
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_never_apply_a_change_twice() {
    let source = TestDb::new(
        "pgsink_crash_src",
        "CREATE TABLE c (id int PRIMARY KEY, n int NOT NULL, pad text);
         INSERT INTO c SELECT g, 0, repeat('x', 50) FROM generate_series(1, 300) g;",
    )
    .await;
    let target = TestDb::new(
        "pgsink_crash_dst",
        "CREATE TABLE c (id int PRIMARY KEY, n int NOT NULL, pad text)",
    )
    .await;
    // Small batches, so source transactions are split across target ones.
    // No initial snapshot: the target is seeded by hand, and the trigger
    // below counts only the changes the load makes.
    let mut p = FilePipeline::start(
        &source,
        &["c"],
        "snapshot = \"never\"",
        &sink_toml(&target, "max_batch_records = 17"),
    );
    // The rows inserted before the slot existed are not captured: seed the
    // target with them.
    target
        .exec("INSERT INTO c SELECT g, 0, repeat('x', 50) FROM generate_series(1, 300) g")
        .await;
    // Every change the sink applies to a row is logged by a trigger, so a
    // change applied twice shows even though its row image is the same.
    target
        .exec(
            "CREATE TABLE applied (id int, n int);
             CREATE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO applied VALUES (NEW.id, NEW.n); RETURN NEW; END $$;
             CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON c
               FOR EACH ROW EXECUTE FUNCTION log_applied();
             ALTER TABLE c ENABLE ALWAYS TRIGGER log_applied;",
        )
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(&source, &stop, |round| {
        format!(
            "BEGIN;
             UPDATE c SET n = n + 1 WHERE id % 11 = {m};
             UPDATE c SET n = n + 1 WHERE id = {one};
             INSERT INTO c VALUES ({new}, 0, 'new') ON CONFLICT (id) DO UPDATE SET n = c.n + 1;
             DELETE FROM c WHERE id = {gone};
             COMMIT;",
            m = round % 11,
            one = round % 300 + 1,
            new = 1000 + round % 40,
            gone = 1000 + (round + 20) % 40,
        )
    });

    let applied = |db: &TestDb| -> u64 {
        psql(&db.name, "SELECT count(*) FROM applied")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for kill in 0..4 {
        // Kill once this Weir has applied a good part of a few batches, so
        // every kill lands mid-stream.
        let before = applied(&target);
        wait_for(Duration::from_secs(120), || {
            (applied(&target) >= before + 150).then_some(())
        })
        .unwrap_or_else(|| panic!("no progress before kill {kill}:\n{}", p.weir.log()));
        p.weir.kill9();
        p.weir = WeirProcess::start(&p.config, &[]);
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = load.await.unwrap();
    assert!(rounds > 20, "the load ran only {rounds} transactions");
    wait_equal(&source, &target, "c", "id, n, pad", &p.weir);
    let total: i64 = psql(&target.name, "SELECT sum(n) FROM c")
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 0, "no update reached the target");
    // Rows 1..=300 are never deleted: each was set to 1, 2, … n once each.
    let twice = psql(
        &target.name,
        "SELECT coalesce(string_agg(format('row %s: %s changes logged for n = %s', c.id, \
         (SELECT count(*) FROM applied a WHERE a.id = c.id), c.n), '; '), '') FROM c \
         WHERE c.id <= 300 AND ((SELECT count(*) FROM applied a WHERE a.id = c.id) <> c.n \
         OR (SELECT count(DISTINCT a.n) FROM applied a WHERE a.id = c.id) <> c.n)",
    )
    .unwrap();
    if !twice.is_empty() {
        let dups = psql(
            &target.name,
            "SELECT string_agg(format('(%s,%s)x%s', id, n, k), ' ') FROM \
             (SELECT id, n, count(*) k FROM applied WHERE id <= 300 GROUP BY 1, 2 HAVING count(*) > 1) d",
        )
        .unwrap();
        let mut logs = String::new();
        for e in std::fs::read_dir(p.config.parent().unwrap())
            .unwrap()
            .flatten()
        {
            if e.path().to_string_lossy().ends_with(".log") {
                logs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        panic!("a change was applied twice or lost: {twice}; logged twice: {dups}\n{logs}");
    }
    p.stop_cleanly();
}

const TYPED_COLUMNS: &[&str] = &[
    "b", "i2", "i4", "i8", "f4", "f8", "n", "n2", "t", "vc", "bp", "nm", "by", "d", "tm", "ts",
    "tstz", "u", "j", "jb", "addr", "span", "arr",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_into_a_created_table() {
    let source = TestDb::new("pgsink_types_src", TYPES_TABLE).await;
    // The expected values, written by the same SQL in the target database,
    // so that each column compares with IS NOT DISTINCT FROM there.
    let target = TestDb::new(
        "pgsink_types_dst",
        &format!(
            "CREATE SCHEMA expected; SET search_path = expected; {TYPES_TABLE}; {TYPES_ROWS}; RESET search_path"
        ),
    )
    .await;
    let mut p = FilePipeline::start(
        &source,
        &["typed"],
        "",
        &sink_toml(&target, "create_tables = true"),
    );
    source.exec(TYPES_ROWS).await;
    wait_for(Duration::from_secs(60), || {
        (psql(&target.name, "SELECT count(*) FROM public.typed").ok()? == "5").then_some(())
    })
    .unwrap_or_else(|| panic!("the rows did not arrive:\n{}", p.weir.log()));
    for col in TYPED_COLUMNS {
        // json has no equality operator: its text is what it stores.
        let (e, g) = if *col == "j" {
            ("e.j::text".to_owned(), "g.j::text".to_owned())
        } else {
            (format!("e.{col}"), format!("g.{col}"))
        };
        let differing = psql(
            &target.name,
            &format!(
                "SELECT coalesce(string_agg(e.id || ': want ' || coalesce({e}::text, 'NULL') || ', got ' \
                 || coalesce({g}::text, 'NULL'), '; '), '') \
                 FROM expected.typed e FULL JOIN public.typed g USING (id) \
                 WHERE {e} IS DISTINCT FROM {g} OR e.id IS NULL OR g.id IS NULL"
            ),
        )
        .unwrap();
        assert!(differing.is_empty(), "column {col}: {differing}");
        let types = psql(
            &target.name,
            &format!(
                "SELECT string_agg(format_type(atttypid, atttypmod), '|' ORDER BY attrelid::regclass::text) \
                 FROM pg_attribute WHERE attname = '{col}' \
                 AND attrelid IN ('expected.typed'::regclass, 'public.typed'::regclass)"
            ),
        )
        .unwrap();
        let (a, b) = types.split_once('|').expect("two types");
        assert_eq!(a, b, "column {col}: the created table's type differs");
    }
    p.stop_cleanly();
}

#[test]
fn a_target_that_is_down_at_start_is_named() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ndatabase = \"postgres\"\ntables = [\"t\"]\n\n[sinks.pg]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"nowhere\"\nsslmode = \"disable\"\n"
        ),
    )
    .unwrap();
    let (status, out) = run_weir(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("sink pg") && out.contains(&format!("127.0.0.1:{port}")),
        "the error names neither the sink nor the address:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_stops_the_sink_naming_it() {
    let source = TestDb::new("pgsink_missing_src", SOURCE_TABLE).await;
    let target = TestDb::new("pgsink_missing_dst", "").await;
    let mut p = FilePipeline::start(&source, &["t"], "", &sink_toml(&target, ""));
    source.exec("INSERT INTO t VALUES (1, 'x')").await;
    let log = wait_for(Duration::from_secs(60), || {
        let log = p.weir.log();
        log.contains("table public.t does not exist").then_some(log)
    })
    .unwrap_or_else(|| panic!("no error naming the table:\n{}", p.weir.log()));
    assert!(log.contains("create_tables"), "{log}");
    assert!(!p.weir.is_running() || p.weir.terminate().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_row_is_dead_lettered_and_the_rest_applied() {
    let source = TestDb::new("pgsink_refuse_src", SOURCE_TABLE).await;
    let target = TestDb::new(
        "pgsink_refuse_dst",
        "CREATE TABLE t (id int PRIMARY KEY, v text CHECK (v IS DISTINCT FROM 'bad'), n int NOT NULL DEFAULT 0, \"Mixed Case\" text)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let body = format!(
        "{}\n[dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n",
        sink_toml(&target, "")
    );
    let mut p = FilePipeline::start(&source, &["t"], "", &body);
    source
        .exec(
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 4) g;
             BEGIN; INSERT INTO t VALUES (5, 'bad'); INSERT INTO t VALUES (6, 'fine'); COMMIT;
             UPDATE t SET v = 'bad' WHERE id = 2;
             INSERT INTO t VALUES (7, 'last');",
        )
        .await;
    let letters = wait_lines(&dlq, 2, Duration::from_secs(60));
    assert_eq!(letters.len(), 2, "{letters:?}");
    let text = serde_json::to_string(&letters).unwrap();
    assert!(
        text.contains("23514") || text.contains("check constraint"),
        "{text}"
    );
    // Everything else arrived: the source minus the refused changes.
    let want = json!([
        {"id": 1, "v": "v1"}, {"id": 2, "v": "v2"}, {"id": 3, "v": "v3"},
        {"id": 4, "v": "v4"}, {"id": 6, "v": "fine"}, {"id": 7, "v": "last"}
    ])
    .to_string();
    let got = wait_for(Duration::from_secs(60), || {
        let got = rows_json(&target.name, "t", "id, v");
        (serde_json::from_str::<Json>(&got).ok()? == serde_json::from_str::<Json>(&want).ok()?)
            .then_some(got)
    });
    assert!(
        got.is_some(),
        "target: {}\n{}",
        rows_json(&target.name, "t", "id, v"),
        p.weir.log()
    );
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_target_connection_recovers_without_loss() {
    let source = TestDb::new("pgsink_lost_src", SOURCE_TABLE).await;
    let target = TestDb::new(
        "pgsink_lost_dst",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0, \"Mixed Case\" text)",
    )
    .await;
    let mut p = FilePipeline::start(&source, &["t"], "", &sink_toml(&target, ""));
    let kill_sink = || {
        psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{}' AND application_name = 'weir-pg'",
                target.name
            ),
        )
        .unwrap()
    };
    let mut cut = 0;
    for round in 0..5 {
        source
            .exec(&format!(
                "INSERT INTO t SELECT g, 'r{round}' FROM generate_series({a}, {b}) g;
                 UPDATE t SET n = n + 1;",
                a = round * 100 + 1,
                b = round * 100 + 100
            ))
            .await;
        // Cut the sink's session (when it has one: it reconnects on its
        // next write) while this round's changes are being applied.
        cut += kill_sink().parse::<u32>().unwrap();
    }
    assert!(cut >= 1, "the sink's session was never found");
    wait_equal(&source, &target, "t", "id, v, n", &p.weir);
    p.stop_cleanly();
}

/// The initial snapshot into a state sink while a writer keeps changing
/// the table: once caught up, the target equals the source row for row,
/// so no change at the handover was lost or overwritten by a snapshot row.
#[tokio::test(flavor = "multi_thread")]
async fn an_initial_snapshot_under_writes_leaves_the_target_equal() {
    let source = TestDb::new(
        "pgsink_snap_src",
        "CREATE TABLE s (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO s SELECT g, 0 FROM generate_series(1, 50000) g;",
    )
    .await;
    let target = TestDb::new("pgsink_snap_dst", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_load(&source, &stop, |round| {
        format!(
            "BEGIN;
             UPDATE s SET n = n + 1 WHERE id % 97 = {m};
             DELETE FROM s WHERE id = {gone};
             INSERT INTO s VALUES ({new}, {round}) ON CONFLICT (id) DO UPDATE SET n = s.n + 1;
             COMMIT;",
            m = round % 97,
            gone = round * 7 % 50000 + 1,
            new = 50000 + round,
        )
    });
    // The writer runs before, while and after the slot is made.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = FilePipeline::start(
        &source,
        &["s"],
        "",
        &sink_toml(&target, "create_tables = true"),
    );
    wait_for(Duration::from_secs(120), || {
        (psql(&target.name, "SELECT count(*) FROM s")
            .ok()?
            .parse::<u64>()
            .ok()?
            > 40000)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the snapshot never reached the target:\n{}", p.weir.log()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds > 10, "the writer ran only {rounds} transactions");
    wait_equal(&source, &target, "s", "id, n", &p.weir);
}

// ---- readback (`weir verify`) ----

use weir_core::{Held, SinkRecord, Value};
use weir_tests::readback::{all_keys, assert_keys, column_diff, diffs, key_values, open};
use weir_tests::records::{gone, inserts, read, stock, stock_row, table};

/// A sink config writing to `db`.
fn readback_config(db: &TestDb) -> PostgresSinkConfig {
    let mut c = PostgresSinkConfig::new(&db.name);
    c.host = pg_host();
    c.port = pg_port();
    c.user = pg_user();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_compares_what_the_sink_wrote_and_lists_its_keys() {
    let target = TestDb::new(
        "pgsink_rb",
        "CREATE TABLE public.items (id int8 PRIMARY KEY, name text, qty int4, doc json)",
    )
    .await;
    let config = readback_config(&target);
    let items = table(
        "public",
        "items",
        &[
            ("id", "int8", true),
            ("name", "text", false),
            ("qty", "int4", false),
            ("doc", "json", false),
        ],
    );
    let row = |id: i64| {
        vec![
            Value::Int(id),
            Value::Text(format!("item {id}")),
            Value::Int(id * 10),
            Value::Json(format!("{{\"n\": {id}}}")),
        ]
    };
    let mut sink = config.build("pg").await.unwrap();
    sink.write(&inserts(&items, 0x1008, (1..=6).map(row)))
        .await
        .unwrap();
    // Changed behind the sink's back: 2 deleted, 3 renamed, 4's qty
    // emptied and its JSON respaced (json keeps its text, so it differs),
    // and 100 inserted.
    target
        .exec(
            "DELETE FROM items WHERE id = 2;
             UPDATE items SET name = 'renamed' WHERE id = 3;
             UPDATE items SET qty = NULL, doc = '{\"n\":4}' WHERE id = 4;
             INSERT INTO items VALUES (100, 'stray', 1, NULL);",
        )
        .await;

    let mut readback = open(config.readback("pg")).await;
    assert!(!readback.compares().is_empty());
    let records = vec![
        read(&items, row(1)),
        read(&items, row(2)),
        read(&items, row(3)),
        read(&items, row(4)),
        gone(&items, &[Value::Int(5)]),
        gone(&items, &[Value::Int(99)]),
        read(&items, row(6)),
    ];
    let held = readback.compare(&records).await.unwrap();
    assert_eq!(held[0], Held::Same, "{held:?}");
    assert_eq!(held[1], Held::Missing, "{held:?}");
    assert_eq!(
        diffs(&held[2]),
        [column_diff("name", "item 3", "renamed")],
        "{held:?}"
    );
    assert_eq!(
        diffs(&held[3]),
        [
            column_diff("qty", "40", "NULL"),
            column_diff("doc", "{\"n\": 4}", "{\"n\":4}")
        ]
    );
    assert_eq!(held[4], Held::Extra, "{held:?}");
    assert_eq!(held[5], Held::Same, "{held:?}");
    assert_eq!(held[6], Held::Same, "{held:?}");

    // A raw payload is nothing to compare.
    let raw = SinkRecord {
        topic: None,
        payload: weir_core::SinkPayload::Raw(std::sync::Arc::new(weir_core::RawMessage {
            key: None,
            value: Some(b"x".to_vec()),
            headers: Vec::new(),
            source: Default::default(),
        })),
        txn: weir_core::TxnId(1),
    };
    assert_eq!(readback.compare(&[raw]).await.unwrap(), [Held::Same]);

    let (keys, pages) = all_keys(readback.as_mut(), &items, None, 2).await;
    assert!(pages >= 3, "{pages} pages: {keys:?}");
    assert_keys(&keys, &[["1"], ["3"], ["4"], ["5"], ["6"], ["100"]]);
    assert!(keys.iter().any(|k| k.name == "id=100"), "{keys:?}");
    // The sink's bookkeeping is in its own table, which is not listed.
    assert_eq!(
        psql(&target.name, "SELECT count(*) FROM weir_progress").unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_with_a_two_column_text_key_and_a_refused_value() {
    let target = TestDb::new(
        "pgsink_rb2",
        "CREATE SCHEMA shop;
         CREATE TABLE shop.stock (region text, code int8, n int4, note varchar(20),
                                  PRIMARY KEY (region, code))",
    )
    .await;
    let mut config = readback_config(&target);
    config.table = "shop.{table}".to_owned();
    let stock = stock("public", "varchar");
    let row = stock_row;
    let mut sink = config.build("pg").await.unwrap();
    let rows = [
        ("north", 1, 5),
        ("north", 2, 6),
        ("south, west", 1, 7),
        ("Ünïcode", 3, 8),
    ];
    let writes = inserts(&stock, 0x1000, rows.iter().map(|(r, c, n)| row(r, *c, *n)));
    sink.write(&writes).await.unwrap();
    target
        .exec(
            "UPDATE shop.stock SET n = 60 WHERE region = 'north' AND code = 2;
             DELETE FROM shop.stock WHERE region = 'south, west';
             INSERT INTO shop.stock VALUES ('east', 9, 1, 'behind');",
        )
        .await;

    let mut readback = open(config.readback("pg")).await;
    // A value the target's type refuses (a transform's text in an int4
    // column) fails only its own record, as a difference.
    let mut refused = row("north", 1, 5);
    refused[2] = Value::Text("five".into());
    let held = readback
        .compare(&[
            read(&stock, row("north", 1, 5)),
            read(&stock, row("north", 2, 6)),
            read(&stock, row("south, west", 1, 7)),
            read(&stock, refused),
            gone(&stock, &[Value::Text("Ünïcode".into()), Value::Int(3)]),
            read(&stock, row("Ünïcode", 3, 8)),
        ])
        .await
        .unwrap();
    assert_eq!(held[0], Held::Same, "{held:?}");
    assert_eq!(diffs(&held[1])[0], column_diff("n", "6", "60"), "{held:?}");
    assert_eq!(held[2], Held::Missing, "{held:?}");
    assert_eq!(
        diffs(&held[3])[0],
        column_diff("n", "five", "5"),
        "{held:?}"
    );
    assert_eq!(held[4], Held::Extra, "{held:?}");
    assert_eq!(held[5], Held::Same, "{held:?}");

    let (keys, pages) = all_keys(readback.as_mut(), &stock, None, 1).await;
    assert!(pages >= 4, "{pages} pages");
    assert_keys(
        &keys,
        &[
            ["east", "9"],
            ["north", "1"],
            ["north", "2"],
            ["Ünïcode", "3"],
        ],
    );
    assert!(
        keys.iter().any(|k| k.name == "region=east,code=9"),
        "{keys:?}"
    );

    // A table per kind of change holds no source table's rows.
    let mut by_op = readback_config(&target);
    by_op.table = "shop.{table}_{op}".to_owned();
    let reason = by_op.readback("pg").err().expect("no readback with {op}");
    assert!(reason.contains("{op}"), "{reason}");

    // A target that is not there is a configuration error naming it.
    let mut elsewhere = readback_config(&target);
    elsewhere.table = "nowhere.{table}".to_owned();
    let mut readback = open(elsewhere.readback("pg")).await;
    let err = readback
        .compare(&[read(&stock, row("north", 1, 5))])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, weir_core::SinkError::Config(m) if m.contains("nowhere.stock")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_finds_every_type_the_sink_wrote_the_same() {
    // Types whose value reads back in another form than the text sent
    // (a scale added, padding, jsonb's normal form, time zones), and types
    // without an equality operator (json, point, json[]).
    let target = TestDb::new(
        "pgsink_rb_types",
        "CREATE TABLE typed (id int8 PRIMARY KEY, b bool, f4 float4, f8 float8, n numeric,
           n2 numeric(12,3), vc varchar(20), bp char(5), by bytea, d date, tm time,
           ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb, addr inet,
           span interval, arr int4[], jarr json[], pt point)",
    )
    .await;
    let config = readback_config(&target);
    let typed = table(
        "public",
        "typed",
        &[
            ("id", "int8", true),
            ("b", "bool", false),
            ("f4", "float4", false),
            ("f8", "float8", false),
            ("n", "numeric", false),
            ("n2", "numeric", false),
            ("vc", "varchar", false),
            ("bp", "bpchar", false),
            ("by", "bytea", false),
            ("d", "date", false),
            ("tm", "time", false),
            ("ts", "timestamp", false),
            ("tstz", "timestamptz", false),
            ("u", "uuid", false),
            ("j", "json", false),
            ("jb", "jsonb", false),
            ("addr", "inet", false),
            ("span", "interval", false),
            ("arr", "int4[]", false),
            ("jarr", "json[]", false),
            ("pt", "point", false),
        ],
    );
    let day = 86_400_000_000i64;
    let rows = [
        vec![
            Value::Int(1),
            Value::Bool(true),
            Value::Float(0.1),
            Value::Float(-2.25e300),
            Value::Numeric("-12345678901234567890.123456789".into()),
            Value::Numeric("42.5".into()),
            Value::Text("héllo \"q\"\n\t\\".into()),
            Value::Text("ab   ".into()),
            Value::Bytes(vec![0, 0xff, 0x10]),
            Value::Date(19_782),
            Value::Time(47_655_123_456),
            Value::Timestamp(19_782 * day + 500_000),
            Value::TimestampTz(19_782 * day + 123_000),
            Value::Uuid([0xa0; 16]),
            Value::Json("{\"a\": [1, 2.5, \"x\"]}".into()),
            Value::Json("{\"d\": [true], \"b\": {\"c\": null}}".into()),
            Value::Other("10.1.2.3/24".into()),
            Value::Other("1 day 02:00:03".into()),
            Value::Other("{1,2,3}".into()),
            Value::Other("{\"{\\\"a\\\": 1}\",NULL}".into()),
            Value::Other("(1.5,-2)".into()),
        ],
        vec![
            Value::Int(2),
            Value::Bool(false),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Numeric("NaN".into()),
            Value::Numeric("0".into()),
            Value::Text(String::new()),
            Value::Text(String::new()),
            Value::Bytes(Vec::new()),
            Value::Date(i32::MIN),
            Value::Time(0),
            Value::Timestamp(i64::MAX),
            // 44 BC, which Postgres writes with its `BC` suffix.
            Value::TimestampTz(-63_524_664_000_000_000),
            Value::Uuid([0; 16]),
            Value::Json("[]".into()),
            Value::Json("{}".into()),
            Value::Other("::1".into()),
            Value::Other("-1 mons".into()),
            Value::Other("{}".into()),
            Value::Other("{}".into()),
            Value::Other("(0,0)".into()),
        ],
        std::iter::once(Value::Int(3))
            .chain(std::iter::repeat_n(Value::Null, 20))
            .collect(),
    ];
    let mut sink = config.build("pg").await.unwrap();
    sink.write(&inserts(&typed, 0x1000, rows.iter().cloned()))
        .await
        .unwrap();
    let mut readback = open(config.readback("pg")).await;
    let records: Vec<SinkRecord> = rows.iter().map(|r| read(&typed, r.clone())).collect();
    let held = readback.compare(&records).await.unwrap();
    assert_eq!(held, [Held::Same, Held::Same, Held::Same]);
    // Changed behind the back, the columns compared by text and by `=`
    // both show it.
    target
        .exec("UPDATE typed SET pt = '(9,9)', jarr = '{}', n2 = 42.501 WHERE id = 1")
        .await;
    let held = readback.compare(&records[..1]).await.unwrap();
    let diffs = diffs(&held[0]);
    let columns: Vec<&str> = diffs.iter().map(|d| d.column.as_str()).collect();
    assert_eq!(columns, ["n2", "jarr", "pt"], "{diffs:?}");
    assert_eq!(diffs[0].sink, "42.501", "{diffs:?}");

    // Keys come back as Postgres prints them, which its input (and the
    // source's lookup) reads back: not as their `::text` casts.
    target
        .exec(
            "CREATE TABLE odd (flag bool, at timestamptz, c char(3), PRIMARY KEY (flag, at, c));
             INSERT INTO odd VALUES (true, '2024-02-29 13:14:15.5+02', 'ab'),
                                    (false, '0044-03-15 12:00:00+00 BC', 'x');",
        )
        .await;
    let odd = table(
        "public",
        "odd",
        &[
            ("flag", "bool", true),
            ("at", "timestamptz", true),
            ("c", "bpchar", true),
        ],
    );
    let (keys, _) = all_keys(readback.as_mut(), &odd, None, 1).await;
    assert_eq!(
        key_values(&keys),
        [
            ["f", "0044-03-15 12:00:00+00 BC", "x  "],
            ["t", "2024-02-29 11:14:15.5+00", "ab "]
        ],
        "{keys:?}"
    );
}
