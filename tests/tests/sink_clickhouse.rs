//! The `clickhouse` sink against a private ClickHouse server: the
//! conformance kit, end to end through the weir binary (also across a
//! SIGKILL of weir and a restart of the server), every type of the types
//! table, and the errors (server down, wrong credentials, read-only user,
//! a table of another shape, values the server cannot hold).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use weir_core::{Capabilities, Op, Sink, SinkError, SinkRecord, TableSchema, Value};
use weir_sinks::{ClickHouseSinkConfig, SinkSpec};
use weir_tests::conformance::{self, StateTarget};
use weir_tests::services::clickhouse::ClickHouse;
use weir_tests::types::TYPES_TABLE as TYPED;
use weir_tests::*;

struct Target {
    server: ClickHouse,
    config: ClickHouseSinkConfig,
}

impl StateTarget for Target {
    fn capabilities(&self) -> Capabilities {
        self.config.capabilities()
    }

    async fn open(&self) -> Box<dyn Sink> {
        self.config.build("kit").await.expect("open the sink")
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        self.server.rows(&format!(
            "SELECT id, name, qty, note FROM kit.`public_{}` FINAL WHERE _weir_deleted = 0 FORMAT JSONEachRow",
            table.name
        ))
    }
}

fn config(server: &ClickHouse, database: &str) -> ClickHouseSinkConfig {
    let mut config = ClickHouseSinkConfig::new(server.url());
    config.database = database.to_owned();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kit() {
    let server = ClickHouse::start();
    let target = Target {
        config: config(&server, "kit"),
        server,
    };
    conformance::run(&target).await;
}

/// The rows of a Postgres query as JSON objects.
fn pg_rows(db: &TestDb, select: &str) -> Vec<Json> {
    let text = psql(
        &db.name,
        &format!("SELECT coalesce(json_agg(t), '[]') FROM ({select}) t"),
    )
    .expect("query the source");
    match serde_json::from_str(&text).expect("json_agg is JSON") {
        Json::Array(rows) => rows,
        other => panic!("{other}"),
    }
}

/// The current rows of a destination table, as the source would list them.
fn ch_rows(server: &ClickHouse, select: &str) -> Vec<Json> {
    server
        .query(&format!("{select} FORMAT JSONEachRow"))
        .map(|text| {
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

const ITEMS: &str = "SELECT id, name, qty, md5(coalesce(body, '')) AS body FROM items ORDER BY id";
const CH_ITEMS: &str = "SELECT id, name, qty, lower(hex(MD5(ifNull(body, '')))) AS body \
                        FROM e2e.public_items FINAL WHERE _weir_deleted = 0 ORDER BY id";

/// Waits until the destination holds what the source holds.
fn wait_converged(db: &TestDb, server: &ClickHouse, weir: &WeirProcess, what: &str) {
    let mut last = (Vec::new(), Vec::new());
    let same = wait_for(Duration::from_secs(120), || {
        last = (pg_rows(db, ITEMS), ch_rows(server, CH_ITEMS));
        (last.0 == last.1).then_some(())
    });
    if same.is_none() {
        let only = |a: &[Json], b: &[Json]| -> Vec<Json> {
            a.iter()
                .filter(|r| !b.contains(r))
                .take(5)
                .cloned()
                .collect()
        };
        let extra = only(&last.1, &last.0);
        let history: Vec<Json> = extra
            .iter()
            .flat_map(|r| {
                ch_rows(
                    server,
                    &format!(
                        "SELECT id, name, _weir_deleted, toString(_weir_version) AS v FROM e2e.public_items WHERE id = {}",
                        r["id"]
                    ),
                )
            })
            .collect();
        panic!(
            "{what}: the destination does not match the source\n  source ({} rows), only there: {}\n  destination ({} rows), only there: {}\n  their versions: {}\nweir log:\n{}",
            last.0.len(),
            serde_json::to_string(&only(&last.0, &last.1)).unwrap(),
            last.1.len(),
            serde_json::to_string(&extra).unwrap(),
            serde_json::to_string(&history).unwrap(),
            weir.log()
        );
    }
}

fn write_config(dir: &Path, db: &TestDb, tables: &[&str], sink: &str) -> std::path::PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!("{}\n{}\n{sink}\n", db.source_toml(tables), passthrough()),
    )
    .unwrap();
    path
}

fn clickhouse_section(url: &str, database: &str) -> String {
    format!("[sinks.analytics]\ntype = \"clickhouse\"\nurl = {url:?}\ndatabase = {database:?}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_through_crashes_and_a_server_restart() {
    let mut server = ClickHouse::start();
    let db = TestDb::new(
        "ch_e2e",
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, body text);
         CREATE TABLE other (id int PRIMARY KEY, v text);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db,
        &["items", "other"],
        &clickhouse_section(&server.url(), "e2e"),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(120), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));

    // Inserts, updates, deletes, a key change, an unchanged TOAST value, a
    // truncate, and rows after it.
    for sql in [
        "INSERT INTO items SELECT g, 'n' || g, g, NULL FROM generate_series(1, 50) g",
        "INSERT INTO other VALUES (1, 'stays')",
        "UPDATE items SET qty = qty * 10 WHERE id % 3 = 0",
        "DELETE FROM items WHERE id % 5 = 0",
        "UPDATE items SET id = 1000 WHERE id = 7",
        "INSERT INTO items SELECT 2000, 'toasted', 1, string_agg(md5(random()::text), '') FROM generate_series(1, 1000)",
        "UPDATE items SET qty = 2 WHERE id = 2000",
        "TRUNCATE items",
        "INSERT INTO items SELECT g, 'after ' || g, -g, NULL FROM generate_series(1, 20) g",
        "INSERT INTO items SELECT 3000, 'toasted again', 1, string_agg(md5(random()::text), '') FROM generate_series(1, 1000)",
        "BEGIN; UPDATE items SET name = 'renamed' WHERE id = 3000; DELETE FROM items WHERE id = 1; INSERT INTO items VALUES (1, 'back', 1, 'b'); COMMIT;",
    ] {
        db.exec(sql).await;
    }
    wait_converged(&db, &server, &weir, "after the first changes");
    assert_eq!(
        ch_rows(
            &server,
            "SELECT v FROM e2e.public_other FINAL WHERE _weir_deleted = 0"
        ),
        [json!({"v": "stays"})],
        "the truncate touched another table"
    );

    // A big load in many transactions, with weir killed in the middle of
    // it: the restart replays what was not acknowledged.
    db.exec(
        "CREATE PROCEDURE load() LANGUAGE plpgsql AS $$
         BEGIN
           FOR b IN 0..39 LOOP
             INSERT INTO items SELECT g, 'load ' || g, b, NULL FROM generate_series(10000 + b * 1000, 10999 + b * 1000) g;
             UPDATE items SET qty = qty + 1 WHERE id BETWEEN 10000 + b * 1000 AND 10100 + b * 1000;
             DELETE FROM items WHERE id BETWEEN 10900 + b * 1000 AND 10999 + b * 1000;
             COMMIT;
           END LOOP;
         END $$;",
    )
    .await;
    let load = {
        let name = db.name.clone();
        std::thread::spawn(move || psql(&name, "CALL load()"))
    };
    // Kill once part of the load has reached the destination.
    wait_for(Duration::from_secs(120), || {
        let n = ch_rows(
            &server,
            "SELECT count() AS n FROM e2e.public_items WHERE id >= 10000",
        );
        (n.first()?["n"].as_u64()? > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("the load did not start arriving:\n{}", weir.log()));
    weir.kill9();
    load.join().unwrap().expect("the load");
    let mut weir = WeirProcess::start(&config, &[]);
    wait_converged(
        &db,
        &server,
        &weir,
        "after a SIGKILL mid-load and a restart",
    );

    // The server dies and comes back on the same port and data.
    server.stop();
    db.exec("UPDATE items SET name = 'while down' WHERE id < 15000")
        .await;
    db.exec("DELETE FROM items WHERE id BETWEEN 15000 AND 15500")
        .await;
    wait_for(Duration::from_secs(60), || {
        weir.log().contains("did not answer").then_some(())
    })
    .unwrap_or_else(|| panic!("weir never met the stopped server:\n{}", weir.log()));
    server.start_again();
    wait_converged(&db, &server, &weir, "after the server came back");
    assert!(weir.is_running(), "{}", weir.log());
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

/// The rows of the types round trip (tests/tests/types_roundtrip.rs), with
/// dates ClickHouse's `Date` can hold; rows 5 and 6 have dates it cannot.
const TYPED_ROWS: &str = r#"
INSERT INTO typed VALUES (1,
    true, -32768, 2147483647, 9223372036854775807, 1.5, -2.25e300,
    '-12345678901234567890.123456789', 42.5,
    E'héllo "quoted"\n\ttab \\ done', 'abc', 'ab', 'a_name', '\x00ff10',
    '2024-02-29', '13:14:15.123456', '2024-02-29 13:14:15.5', '2024-02-29 13:14:15.123+02',
    'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{"a": [1, 2.5, "x"]}', '{"b": {"c": null}, "d": [true]}',
    '10.1.2.3/24', '1 day 02:00:03', '{1,2,3}');
INSERT INTO typed (id) VALUES (2);
INSERT INTO typed VALUES (3,
    false, 0, -2147483648, -9223372036854775808, 'NaN', 'Infinity',
    'NaN', 0,
    '', '', '', '', '',
    '1970-01-01', '00:00:00', 'infinity', '-infinity',
    '00000000-0000-0000-0000-000000000000', '[]', '{}',
    '::1', '-1 mons', '{}');
INSERT INTO typed (id, f4, f8, n, d, tm, ts, tstz) VALUES (4,
    '-Infinity', 1e-300, '0.000000000000000000001', '2105-12-31', '23:59:59.999999',
    '0044-03-15 12:00:00 BC', '1970-01-01 00:00:00.000001+00');
INSERT INTO typed (id, d) VALUES (5, '9999-12-31');
INSERT INTO typed (id, d, t) VALUES (6, '1969-12-31', 'before 1970');
INSERT INTO typed (id, t) VALUES (7, 'the last');
"#;

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn micros(date: (i64, i64, i64), h: i64, mi: i64, s: i64, us: i64) -> i64 {
    days(date.0, date.1, date.2) * 86_400_000_000 + ((h * 60 + mi) * 60 + s) * 1_000_000 + us
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_reaches_its_closest_clickhouse_type() {
    let server = ClickHouse::start();
    let db = TestDb::new("ch_types", TYPED).await;
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let config = write_config(
        dir.path(),
        &db,
        &["typed"],
        &format!(
            "{}\n[dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n",
            clickhouse_section(&server.url(), "types")
        ),
    );
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(120), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec(TYPED_ROWS).await;

    let select = "SELECT id, b, i2, i4, i8, toString(f4) AS f4, toString(f8) AS f8, n, n2, t, vc, bp, \
                  nm, hex(by) AS by, toUInt16(d) AS d, tm, ts, tstz, toString(u) AS u, j, jb, addr, \
                  span, arr FROM types.public_typed FINAL WHERE _weir_deleted = 0 ORDER BY id";
    let rows = wait_for(Duration::from_secs(120), || {
        let rows = ch_rows(&server, select);
        rows.iter().any(|r| r["id"] == 7).then_some(rows)
    })
    .unwrap_or_else(|| panic!("the rows did not arrive:\n{}", weir.log()));
    let ts1 = micros((2024, 2, 29), 13, 14, 15, 500_000);
    let tstz1 = micros((2024, 2, 29), 11, 14, 15, 123_000);
    let expected = [
        json!({"id": 1, "b": 1, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64,
               "f4": "1.5", "f8": "-2.25e300", "n": "-12345678901234567890.123456789", "n2": "42.500",
               "t": "héllo \"quoted\"\n\ttab \\ done", "vc": "abc", "bp": "ab   ", "nm": "a_name",
               "by": "00FF10", "d": days(2024, 2, 29), "tm": micros((1970, 1, 1), 13, 14, 15, 123_456),
               "ts": ts1, "tstz": tstz1, "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
               "j": "{\"a\": [1, 2.5, \"x\"]}", "jb": "{\"b\": {\"c\": null}, \"d\": [true]}",
               "addr": "10.1.2.3/24", "span": "1 day 02:00:03", "arr": "{1,2,3}"}),
        json!({"id": 2, "b": null, "i2": null, "i4": null, "i8": null, "f4": null, "f8": null,
               "n": null, "n2": null, "t": null, "vc": null, "bp": null, "nm": null, "by": null,
               "d": null, "tm": null, "ts": null, "tstz": null, "u": null, "j": null, "jb": null,
               "addr": null, "span": null, "arr": null}),
        json!({"id": 3, "b": 0, "i2": 0, "i4": -2147483648, "i8": i64::MIN,
               "f4": "nan", "f8": "inf", "n": "NaN", "n2": "0.000", "t": "", "vc": "",
               "bp": "     ", "nm": "", "by": "", "d": 0, "tm": 0,
               "ts": i64::MAX, "tstz": i64::MIN, "u": "00000000-0000-0000-0000-000000000000",
               "j": "[]", "jb": "{}", "addr": "::1", "span": "-1 mons", "arr": "{}"}),
        json!({"id": 4, "f4": "-inf", "f8": "1e-300", "n": "0.000000000000000000001",
               "d": days(2105, 12, 31), "tm": 86_399_999_999i64,
               "ts": micros((-43, 3, 15), 12, 0, 0, 0), "tstz": 1}),
        json!({"id": 7, "t": "the last"}),
    ];
    assert_eq!(
        rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        [1, 2, 3, 4, 7],
        "rows 5 and 6 hold dates ClickHouse's Date cannot: {rows:?}"
    );
    for (row, want) in rows.iter().zip(&expected) {
        for (column, value) in want.as_object().unwrap() {
            assert_eq!(
                &row[column], value,
                "column {column} of row {}: got {}, want {value}",
                want["id"], row[column]
            );
        }
    }
    // The two rows the sink refused are dead letters, each naming the
    // column and its value.
    let letters = wait_lines(&dlq, 2, Duration::from_secs(30));
    for (letter, (id, date)) in letters.iter().zip([(5, "9999-12-31"), (6, "1969-12-31")]) {
        assert_eq!(letter["event"]["after"]["id"], id, "{letter}");
        let error = letter["error"].as_str().unwrap();
        assert!(
            error.contains("column d") && error.contains(date) && error.contains("Date range"),
            "{letter}"
        );
    }
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_at_start_is_named() {
    let db = TestDb::new("ch_down", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &db,
        &["t"],
        &clickhouse_section(&format!("http://127.0.0.1:{port}"), "x"),
    );
    let (status, out) = run_weir(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("analytics")
            && out.contains(&format!(
                "ClickHouse at http://127.0.0.1:{port} did not answer"
            )),
        "{out}"
    );
}

fn kit_table(name: &str) -> std::sync::Arc<TableSchema> {
    weir_tests::records::table(
        "public",
        name,
        &[("id", "int8", true), ("qty", "int4", false)],
    )
}

fn insert(table: &std::sync::Arc<TableSchema>, id: i64, qty: Value) -> SinkRecord {
    let lsn = 0x1000 + id as u64;
    weir_tests::records::change(
        table,
        Op::Insert,
        lsn,
        0,
        None,
        Some(vec![Value::Int(id), qty]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_shapes_and_refused_values() {
    let server = ClickHouse::start();

    let mut nobody = config(&server, "errs");
    nobody.user = "nobody".into();
    match nobody.build("x").await {
        Err(SinkError::Auth(m)) => assert!(m.contains("Unknown user nobody"), "{m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("an unknown user was let in"),
    }
    let mut wrong = config(&server, "errs");
    wrong.user = "reader".into();
    wrong.password = Some("wrong".into());
    match wrong.build("x").await {
        Err(SinkError::Auth(m)) => assert!(!m.contains("wrong"), "the password leaked: {m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a wrong password was let in"),
    }

    // The read-only user connects, but may not create or write.
    let mut reader = config(&server, "errs");
    reader.user = "reader".into();
    reader.password = Some("secret".into());
    let mut sink = reader.build("x").await.expect("the reader connects");
    let t = kit_table("t");
    match sink.write(&[insert(&t, 1, Value::Int(1))]).await {
        Err(SinkError::Auth(m)) => assert!(m.contains("readonly"), "{m}"),
        other => panic!("{other:?}"),
    }

    // A table of another shape stops the sink, naming the column.
    server.query("CREATE DATABASE errs").unwrap();
    server
        .query(
            "CREATE TABLE errs.public_t (id Int64, qty Nullable(String), _weir_deleted UInt8, \
             _weir_version UInt64) ENGINE = ReplacingMergeTree(_weir_version) ORDER BY id",
        )
        .unwrap();
    let mut sink = config(&server, "errs").build("x").await.unwrap();
    match sink.write(&[insert(&t, 1, Value::Int(1))]).await {
        Err(SinkError::Config(m)) => assert!(
            m.contains("column qty is Nullable(String)") && m.contains("needs Nullable(Int32)"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let mut missing = config(&server, "errs");
    missing.create_tables = false;
    let mut sink = missing.build("x").await.unwrap();
    match sink
        .write(&[insert(&kit_table("absent"), 1, Value::Int(1))])
        .await
    {
        Err(SinkError::Config(m)) => {
            assert!(m.contains("errs.public_absent does not exist"), "{m}")
        }
        other => panic!("{other:?}"),
    }

    // A value its column cannot hold refuses that record alone.
    let mut sink = config(&server, "errs").build("x").await.unwrap();
    let ok = kit_table("ok");
    let batch = [
        insert(&ok, 1, Value::Int(1)),
        insert(&ok, 2, Value::Text("not a number".into())),
        insert(&ok, 3, Value::Int(3)),
    ];
    match sink.write(&batch).await {
        Err(SinkError::Rejected(list)) => {
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].index, 1);
            assert!(list[0].reason.contains("column qty"), "{list:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.rows("SELECT id, qty FROM errs.public_ok FINAL WHERE _weir_deleted = 0 ORDER BY id FORMAT JSONEachRow"),
        [json!({"id": 1, "qty": 1}), json!({"id": 3, "qty": 3})]
    );

    // A template giving two source tables one table stops the sink rather
    // than merging them.
    let mut merged = config(&server, "errs");
    merged.table = "{table}".into();
    let mut sink = merged.build("x").await.unwrap();
    let mut other = TableSchema::clone(&ok);
    other.schema = "archive".into();
    sink.write(&[insert(&ok, 5, Value::Int(5))]).await.unwrap();
    match sink.write(&[insert(&other.into(), 6, Value::Int(6))]).await {
        Err(SinkError::Config(m)) => assert!(
            m.contains(
                "table \"`errs`.`ok`\" would hold two source tables, public.ok and archive.ok"
            ),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

// ---- readback (`weir verify`) ----

use weir_core::Held;
use weir_tests::readback::{all_keys, assert_keys, column_diff, diffs, key_values, open};
use weir_tests::records::{gone, inserts, read};

/// Writes `rows` (JSONEachRow lines) straight into `table`, behind the
/// sink's back, at a version newer than any the sink wrote.
fn behind_the_back(server: &ClickHouse, table: &str, rows: &[Json]) {
    let mut sql = format!("INSERT INTO {table} FORMAT JSONEachRow\n");
    for row in rows {
        let mut row = row.clone();
        row["_weir_version"] = json!(1u64 << 50);
        if row.get("_weir_deleted").is_none() {
            row["_weir_deleted"] = json!(0);
        }
        sql.push_str(&row.to_string());
        sql.push('\n');
    }
    server.query(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_compares_what_the_sink_wrote_and_lists_its_keys() {
    let server = ClickHouse::start();
    let config = config(&server, "rb");
    let items = weir_tests::records::table(
        "public",
        "items",
        &[
            ("id", "int8", true),
            ("name", "text", false),
            ("qty", "int4", false),
            ("price", "float8", false),
            ("raw", "bytea", false),
        ],
    );
    // Values whose JSON ClickHouse gives back in another form: escapes in
    // text, bytes that are not UTF-8, NaN, a float written as `3.0`.
    let row = |id: i64| {
        vec![
            Value::Int(id),
            Value::Text(format!("item {id}\n/é\u{1F600}")),
            Value::Int(id * 10),
            Value::Float(if id == 1 { f64::NAN } else { id as f64 + 0.1 }),
            Value::Bytes(vec![0, 0xff, b'"', b'\\', id as u8]),
        ]
    };
    let mut sink = config.build("analytics").await.unwrap();
    sink.write(&inserts(&items, 0x1008, (1..=6).map(row)))
        .await
        .unwrap();
    behind_the_back(
        &server,
        "rb.public_items",
        &[
            json!({"id": 2, "_weir_deleted": 1}),
            json!({"id": 3, "name": "renamed", "qty": 30, "price": 3.1}),
            json!({"id": 4, "name": "item 4\n/é\u{1F600}", "qty": null, "price": 4.1}),
            json!({"id": 100, "name": "stray"}),
            json!({"id": 101, "_weir_deleted": 1}),
        ],
    );

    let mut readback = open(config.readback("analytics")).await;
    assert!(!readback.compares().is_empty());
    let held = readback
        .compare(&[
            read(&items, row(1)),
            read(&items, row(2)),
            read(&items, row(3)),
            read(&items, row(4)),
            gone(&items, &[Value::Int(5)]),
            gone(&items, &[Value::Int(99)]),
            gone(&items, &[Value::Int(2)]),
            read(&items, row(6)),
        ])
        .await
        .unwrap();
    assert_eq!(held[0], Held::Same, "{held:?}");
    assert_eq!(held[1], Held::Missing, "{held:?}");
    // 3's raw bytes were not rewritten: the row behind the back has none.
    assert_eq!(
        diffs(&held[2]),
        [
            column_diff("name", "\"item 3\\n/é\u{1F600}\"", "\"renamed\""),
            column_diff("raw", "\"\\u0000\u{FFFD}\\\"\\\\\\u0003\"", "null"),
        ],
        "{held:?}"
    );
    assert_eq!(
        diffs(&held[3])[0],
        column_diff("qty", "40", "null"),
        "{held:?}"
    );
    assert_eq!(held[4], Held::Extra, "{held:?}");
    assert_eq!(held[5], Held::Same, "{held:?}");
    assert_eq!(held[6], Held::Same, "a tombstone is no row: {held:?}");
    assert_eq!(held[7], Held::Same, "{held:?}");

    let (keys, pages) = all_keys(readback.as_mut(), &items, None, 2).await;
    assert!(pages >= 3, "{pages} pages: {keys:?}");
    assert_keys(&keys, &[["1"], ["3"], ["4"], ["5"], ["6"], ["100"]]);
    assert!(keys.iter().any(|k| k.name == "id=100"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_with_a_two_column_text_key_as_a_read_only_user() {
    let server = ClickHouse::start();
    let config = config(&server, "rb");
    let stock = weir_tests::records::stock("shop", "text");
    let row = weir_tests::records::stock_row;
    let mut sink = config.build("analytics").await.unwrap();
    let rows = [
        ("north", 1, 5),
        ("north", 2, 6),
        ("south, west", 1, 7),
        ("Ünïcode 'q'", 3, 8),
    ];
    let writes = inserts(&stock, 0x1000, rows.iter().map(|(r, c, n)| row(r, *c, *n)));
    sink.write(&writes).await.unwrap();
    behind_the_back(
        &server,
        "rb.shop_stock",
        &[
            json!({"region": "north", "code": 2, "n": 60, "note": "north/2"}),
            json!({"region": "south, west", "code": 1, "_weir_deleted": 1}),
            json!({"region": "east", "code": 9, "n": 1, "note": "behind"}),
        ],
    );

    // Verifying only reads: a read-only user will do.
    let mut reader = config.clone();
    reader.user = "reader".into();
    reader.password = Some("secret".into());
    let mut readback = open(reader.readback("analytics")).await;
    let held = readback
        .compare(&[
            read(&stock, row("north", 1, 5)),
            read(&stock, row("north", 2, 6)),
            read(&stock, row("south, west", 1, 7)),
            gone(&stock, &[Value::Text("Ünïcode 'q'".into()), Value::Int(3)]),
            read(&stock, row("Ünïcode 'q'", 3, 8)),
        ])
        .await
        .unwrap();
    assert_eq!(held[0], Held::Same, "{held:?}");
    assert_eq!(diffs(&held[1]), [column_diff("n", "6", "60")]);
    assert_eq!(held[2], Held::Missing, "{held:?}");
    assert_eq!(held[3], Held::Extra, "{held:?}");
    assert_eq!(held[4], Held::Same, "{held:?}");

    let (keys, pages) = all_keys(readback.as_mut(), &stock, None, 1).await;
    assert!(pages >= 4, "{pages} pages: {keys:?}");
    assert_keys(
        &keys,
        &[
            ["east", "9"],
            ["north", "1"],
            ["north", "2"],
            ["Ünïcode 'q'", "3"],
        ],
    );
    assert!(
        keys.iter().any(|k| k.name == "region=east,code=9"),
        "{keys:?}"
    );

    // A table that is not there is a configuration error naming it.
    let mut elsewhere = reader.clone();
    elsewhere.database = "nowhere".into();
    let mut readback = open(elsewhere.readback("analytics")).await;
    match readback.compare(&[read(&stock, row("north", 1, 5))]).await {
        Err(SinkError::Config(m)) => assert!(m.contains("nowhere.shop_stock"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_lists_more_keys_than_one_listing_query_fetches() {
    let server = ClickHouse::start();
    let config = config(&server, "rb");
    let big = kit_table("big");
    let mut sink = config.build("analytics").await.unwrap();
    sink.write(&[insert(&big, 0, Value::Int(0))]).await.unwrap();
    // 120,000 keys, every tenth one then deleted: more than two of the
    // readback's listing queries.
    server
        .query(
            "INSERT INTO rb.public_big SELECT toInt64(number), toInt32(1), 0, 1 \
             FROM system.numbers LIMIT 120000",
        )
        .unwrap();
    server
        .query(
            "INSERT INTO rb.public_big SELECT toInt64(number * 10), NULL, 1, 1125899906842624 \
             FROM system.numbers LIMIT 12000",
        )
        .unwrap();
    let mut readback = open(config.readback("analytics")).await;
    let (keys, pages) = all_keys(readback.as_mut(), &big, None, 7_000).await;
    let mut ids: Vec<i64> = keys
        .iter()
        .map(|k| k.key.as_ref().unwrap()[0].parse().unwrap())
        .collect();
    ids.sort_unstable();
    let want: Vec<i64> = (0..120_000).filter(|n| n % 10 != 0).collect();
    assert_eq!(ids.len(), want.len(), "{pages} pages");
    assert!(ids == want, "{pages} pages: other keys than the live ones");
    assert!(pages >= 16, "{pages} pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn readback_finds_every_type_the_sink_wrote_the_same() {
    let server = ClickHouse::start();
    let config = config(&server, "rb");
    let typed = weir_tests::records::table(
        "public",
        "typed",
        &[
            ("id", "int8", true),
            ("b", "bool", false),
            ("i2", "int2", false),
            ("o", "oid", false),
            ("f4", "float4", false),
            ("f8", "float8", false),
            ("n", "numeric", false),
            ("t", "text", false),
            ("by", "bytea", false),
            ("d", "date", false),
            ("tm", "time", false),
            ("ts", "timestamp", false),
            ("tstz", "timestamptz", false),
            ("u", "uuid", false),
            ("j", "json", false),
            ("arr", "int4[]", false),
        ],
    );
    let rows = [
        vec![
            Value::Int(1),
            Value::Bool(true),
            Value::Int(-32768),
            Value::Int(4_294_967_295),
            // A float4 as the source gives it: the shortest text of the
            // Float32, read as an f64 it is not.
            Value::Float(0.1),
            Value::Float(-2.25e300),
            Value::Numeric("-12345678901234567890.123456789".into()),
            Value::Text("héllo \"q\"\n\t\\ \u{7f}\u{1} /".into()),
            Value::Bytes(vec![0, 0xff, 0x10, b'\\', b'"']),
            Value::Date(19_782),
            Value::Time(47_655_123_456),
            Value::Timestamp(1_709_212_455_500_000),
            Value::TimestampTz(i64::MIN),
            Value::Uuid([0xa0; 16]),
            Value::Json("{\"a\": [1, 2.5, \"x\"]}".into()),
            Value::Other("{1,2,3}".into()),
        ],
        vec![
            Value::Int(2),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(0),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Numeric("NaN".into()),
            Value::Text(String::new()),
            Value::Bytes(Vec::new()),
            Value::Date(0),
            Value::Time(0),
            Value::Timestamp(i64::MAX),
            Value::TimestampTz(1),
            Value::Uuid([0; 16]),
            Value::Json("[]".into()),
            Value::Other("{}".into()),
        ],
        vec![
            Value::Int(3),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Float(-0.0),
            // An integer where a float goes (a transform's), written `3`.
            Value::Int(3),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Text("A0A0A0A0-A0A0-A0A0-A0A0-A0A0A0A0A0A0".into()),
            Value::Null,
            Value::Null,
        ],
    ];
    let mut sink = config.build("analytics").await.unwrap();
    sink.write(&inserts(&typed, 0x1000, rows.iter().cloned()))
        .await
        .unwrap();
    let mut readback = open(config.readback("analytics")).await;
    let records: Vec<SinkRecord> = rows.iter().map(|r| read(&typed, r.clone())).collect();
    let held = readback.compare(&records).await.unwrap();
    assert_eq!(held, [Held::Same, Held::Same, Held::Same]);

    // The held values, changed: each differs in the sink's JSON.
    behind_the_back(
        &server,
        "rb.public_typed",
        &[
            json!({"id": 2, "b": 0, "i2": 0, "o": 0, "f4": 0.5, "f8": "-inf", "n": "NaN",
                 "t": "", "by": "\u{0}", "d": "1970-01-02", "tm": 0, "ts": 9223372036854775807i64,
                 "tstz": 1, "u": "00000000-0000-0000-0000-000000000001", "j": "[]", "arr": "{}"}),
        ],
    );
    let held = readback.compare(&records[1..2]).await.unwrap();
    assert_eq!(
        diffs(&held[0]),
        [
            column_diff("f4", "\"nan\"", "0.5"),
            column_diff("f8", "\"inf\"", "\"-inf\""),
            column_diff("by", "\"\"", "\"\\u0000\""),
            column_diff("d", "\"1970-01-01\"", "\"1970-01-02\""),
            column_diff(
                "u",
                "\"00000000-0000-0000-0000-000000000000\"",
                "\"00000000-0000-0000-0000-000000000001\""
            ),
        ]
    );
    // Keys come back as Postgres prints them, which the source's lookup
    // reads back.
    let odd = weir_tests::records::table(
        "public",
        "odd",
        &[
            ("flag", "bool", true),
            ("at", "timestamptz", true),
            ("ts", "timestamp", true),
            ("u", "uuid", true),
            ("by", "bytea", true),
        ],
    );
    let odd_rows = [
        vec![
            Value::Bool(true),
            Value::TimestampTz(micros((2024, 2, 29), 11, 14, 15, 500_000)),
            Value::Timestamp(micros((-43, 3, 15), 12, 0, 0, 0)),
            Value::Uuid([0xa0; 16]),
            Value::Bytes(vec![0, 0xff]),
        ],
        vec![
            Value::Bool(false),
            Value::TimestampTz(0),
            Value::Timestamp(1),
            Value::Uuid([0; 16]),
            Value::Bytes(Vec::new()),
        ],
    ];
    sink.write(&inserts(&odd, 0x2000, odd_rows)).await.unwrap();
    let (keys, _) = all_keys(readback.as_mut(), &odd, None, 1).await;
    assert_eq!(
        key_values(&keys),
        [
            [
                "f",
                "1970-01-01 00:00:00+00",
                "1970-01-01 00:00:00.000001",
                "00000000-0000-0000-0000-000000000000",
                "\\x"
            ],
            [
                "t",
                "2024-02-29 11:14:15.5+00",
                "0044-03-15 12:00:00 BC",
                "a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0",
                "\\x00ff"
            ]
        ],
        "{keys:?}"
    );
}
