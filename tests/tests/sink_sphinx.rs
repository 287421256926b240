//! The `sphinx` sink against a private searchd (Sphinx 2.2.11): the
//! conformance kit, changes end to end through the `weir` binary answered
//! by full-text queries, every type of the types table reaching its
//! closest attribute type, and the errors (searchd down at start, stopped
//! and back mid-run, a document it cannot take dead-lettered).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use weir_core::{Capabilities, Sink, TableSchema};
use weir_sinks::SinkSpec as _;
use weir_sinks::sphinx::{AttributeType, SphinxSinkConfig};
use weir_tests::conformance::{self, StateTarget};
use weir_tests::services::sphinx::{RtIndex, Searchd};
use weir_tests::*;

/// The kit's indexes: `name` and `note` are fields and string attributes.
fn kit_index(name: &str) -> [RtIndex; 2] {
    [
        RtIndex::new(name)
            .field("name")
            .field("note")
            .attr("string", "name")
            .attr("string", "note")
            .attr("bigint", "qty")
            .attr("string", "weir_nulls"),
        RtIndex::state_of(name),
    ]
}

fn kit_config(addr: &str) -> SphinxSinkConfig {
    let mut config = SphinxSinkConfig::new(addr);
    config.fields = vec!["name".into(), "note".into()];
    config.attributes = BTreeMap::from([
        ("name".into(), AttributeType::String),
        ("note".into(), AttributeType::String),
        ("qty".into(), AttributeType::Bigint),
    ]);
    config.nulls_attribute = Some("weir_nulls".into());
    config
}

struct Target {
    searchd: Searchd,
    config: SphinxSinkConfig,
}

impl StateTarget for Target {
    fn capabilities(&self) -> Capabilities {
        self.config.capabilities()
    }

    async fn open(&self) -> Box<dyn Sink> {
        self.config
            .build("search")
            .await
            .expect("open the sphinx sink")
    }

    async fn rows(&self, table: &TableSchema) -> Vec<Json> {
        let rows = self
            .searchd
            .query(&format!(
                "SELECT id, name, qty, note, weir_nulls FROM public_{} LIMIT 1000",
                table.name
            ))
            .await
            .expect("read the index");
        rows.into_iter()
            .map(|r| {
                let nulls = r[4].clone().unwrap_or_default();
                let is_null = |c: &str| nulls.split(' ').any(|n| n == c);
                json!({
                    "id": r[0].as_deref().unwrap().parse::<i64>().unwrap(),
                    "name": r[1],
                    "qty": r[2].as_deref().unwrap().parse::<i64>().unwrap(),
                    "note": if is_null("note") { None } else { r[3].clone() },
                })
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_kit_against_searchd() {
    let tag = conformance::new_tag();
    let indexes: Vec<RtIndex> = conformance::table_names(&tag)
        .iter()
        .flat_map(|t| kit_index(&format!("public_{t}")))
        .collect();
    let searchd = Searchd::start(&indexes, 8 << 20);
    let config = kit_config(&searchd.addr);
    let target = Target { searchd, config };
    conformance::run_tagged(&target, &tag).await;
}

const DOCS: &str = "CREATE TABLE docs (id int8 PRIMARY KEY, title text, body text, qty int4)";

fn docs_index() -> [RtIndex; 2] {
    [
        RtIndex::new("public_docs")
            .field("title")
            .field("body")
            .attr("string", "title")
            .attr("string", "body")
            .attr("bigint", "qty")
            .attr("float", "price")
            .attr("string", "weir_nulls"),
        RtIndex::state_of("public_docs"),
    ]
}

/// The `[sinks.search]` section for the docs index, plus `extra` lines.
fn docs_sink(addr: &str, extra: &str) -> String {
    format!(
        "[sinks.search]\ntype = \"sphinx\"\naddress = {addr:?}\nfields = [\"title\", \"body\"]\n\
         attributes = {{ title = \"string\", body = \"string\", qty = \"bigint\", price = \"float\" }}\n\
         nulls_attribute = \"weir_nulls\"\n{extra}\n"
    )
}

fn start_weir(dir: &tempfile::TempDir, text: &str) -> (WeirProcess, PathBuf) {
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, text).unwrap();
    (WeirProcess::start(&config, &[]), config)
}

/// What the docs index holds: `[id, title, body, qty]` per document, by id.
async fn index_view(searchd: &Searchd) -> Option<Vec<Json>> {
    let rows = searchd
        .query(
            "SELECT id, title, body, qty, weir_nulls FROM public_docs ORDER BY id ASC LIMIT 1000",
        )
        .await
        .ok()?;
    Some(
        rows.into_iter()
            .map(|r| {
                let nulls = r[4].clone().unwrap_or_default();
                let text = |i: usize, c: &str| {
                    if nulls.split(' ').any(|n| n == c) {
                        Json::Null
                    } else {
                        json!(r[i])
                    }
                };
                json!([
                    r[0].as_deref().unwrap().parse::<i64>().unwrap(),
                    text(1, "title"),
                    text(2, "body"),
                    if nulls.split(' ').any(|n| n == "qty") {
                        Json::Null
                    } else {
                        json!(r[3].as_deref().unwrap().parse::<i64>().unwrap())
                    }
                ])
            })
            .collect(),
    )
}

async fn table_view(db: &TestDb) -> Vec<Json> {
    db.client
        .query("SELECT id, title, body, qty FROM docs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r.get::<_, i64>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<i32>>(3)
            ])
        })
        .collect()
}

/// Waits until the index holds what the table holds.
async fn wait_equal(db: &TestDb, searchd: &Searchd, weir: &WeirProcess, what: &str) {
    let want = table_view(db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = index_view(searchd).await;
    while last.as_ref() != Some(&want) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = index_view(searchd).await;
    }
    let ok = (last.as_ref() == Some(&want)).then_some(());
    assert!(
        ok.is_some(),
        "{what}: the index never held what the table holds\n  index: {last:?}\n  table: {want:?}\n{}",
        weir.log()
    );
}

async fn matching(searchd: &Searchd, query: &str) -> Vec<u64> {
    searchd
        .query(&format!(
            "SELECT id FROM public_docs WHERE MATCH('{query}') ORDER BY id ASC LIMIT 1000"
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_end_to_end_answered_by_full_text_queries() {
    let searchd = Searchd::start(&docs_index(), 8 << 20);
    let db = TestDb::new("sphinx_e2e", DOCS).await;
    let dir = tempfile::tempdir().unwrap();
    let (weir, _) = start_weir(
        &dir,
        &format!(
            "{}\n{}",
            db.source_toml(&["docs"]),
            docs_sink(&searchd.addr, "")
        ),
    );
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));

    db.exec(
        "INSERT INTO docs VALUES (1, 'apple banana', 'fruit salad', 3), (2, 'cherry', NULL, 1),
                                 (3, 'durian apple', 'it''s \"smelly\" \\ odd', NULL);",
    )
    .await;
    db.exec("UPDATE docs SET title = 'elderberry' WHERE id = 1")
        .await;
    db.exec("DELETE FROM docs WHERE id = 2").await;
    db.exec("INSERT INTO docs VALUES (4, 'fig', 'apple pie', 7)")
        .await;
    wait_equal(
        &db,
        &searchd,
        &weir,
        "after inserts, an update and a delete",
    )
    .await;
    // Words updated away and deleted are no longer found; new ones are.
    assert_eq!(matching(&searchd, "apple").await, [3, 4]);
    assert_eq!(matching(&searchd, "elderberry").await, [1]);
    assert_eq!(matching(&searchd, "banana").await, Vec::<u64>::new());
    assert_eq!(matching(&searchd, "cherry").await, Vec::<u64>::new());
    assert_eq!(matching(&searchd, "smelly").await, [3]);

    db.exec("UPDATE docs SET id = 40 WHERE id = 4").await;
    db.exec("TRUNCATE docs").await;
    db.exec("INSERT INTO docs VALUES (5, 'grape', 'after the truncate', 5)")
        .await;
    wait_equal(
        &db,
        &searchd,
        &weir,
        "after a key change, a truncate and an insert",
    )
    .await;
    assert_eq!(matching(&searchd, "grape").await, [5]);
    assert_eq!(matching(&searchd, "elderberry").await, Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn searchd_down_at_start_is_named() {
    let db = TestDb::new("sphinx_down", DOCS).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}",
            db.source_toml(&["docs"]),
            docs_sink(&addr, "timeout = \"2s\"")
        ),
    )
    .unwrap();
    let (status, out) = run_weir(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&format!("cannot connect to searchd at {addr}")) && out.contains("search"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn searchd_stopped_mid_run_and_back_loses_nothing() {
    let searchd = Searchd::start(&docs_index(), 8 << 20);
    let db = TestDb::new("sphinx_restart", DOCS).await;
    let dir = tempfile::tempdir().unwrap();
    let (weir, _) = start_weir(
        &dir,
        &format!(
            "{}\n{}",
            db.source_toml(&["docs"]),
            docs_sink(&searchd.addr, "timeout = \"2s\"")
        ),
    );
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    for i in 1..=5 {
        db.exec(&format!(
            "INSERT INTO docs VALUES ({i}, 'before {i}', 'b', {i})"
        ))
        .await;
    }
    wait_equal(&db, &searchd, &weir, "before the stop").await;

    searchd.stop();
    for i in 6..=10 {
        db.exec(&format!(
            "INSERT INTO docs VALUES ({i}, 'during {i}', 'd', {i})"
        ))
        .await;
    }
    db.exec("UPDATE docs SET title = 'changed while down' WHERE id = 2")
        .await;
    db.exec("DELETE FROM docs WHERE id = 3").await;
    // Weir has tried and failed at least once before searchd comes back.
    wait_for(Duration::from_secs(60), || {
        weir.log().contains("searchd at").then_some(())
    })
    .unwrap_or_else(|| panic!("no failed write was reported:\n{}", weir.log()));
    searchd.resume();
    wait_equal(&db, &searchd, &weir, "after searchd came back").await;
    assert_eq!(matching(&searchd, "during").await, [6, 7, 8, 9, 10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_sphinx_cannot_take_are_dead_lettered() {
    let searchd = Searchd::start(&docs_index(), 8 << 20);
    let db = TestDb::new(
        "sphinx_dlq",
        "CREATE TABLE docs (id int8 PRIMARY KEY, title text, body text, qty int4, price float8)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let (weir, _) = start_weir(
        &dir,
        &format!(
            "{}\n{}\n[dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n",
            db.source_toml(&["docs"]),
            docs_sink(&searchd.addr, "max_statement_bytes = 16384")
        ),
    );
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec("INSERT INTO docs VALUES (1, 'small', 'ok', 1, 1.5)")
        .await;
    db.exec("INSERT INTO docs VALUES (2, 'huge', repeat('word ', 10000), 2, 2.5)")
        .await;
    db.exec("INSERT INTO docs VALUES (3, 'not a number', 'nan', 3, 'NaN')")
        .await;
    db.exec("INSERT INTO docs VALUES (4, 'small too', 'ok', 4, 4.5)")
        .await;
    let letters = wait_lines(&dlq, 2, Duration::from_secs(60));
    assert_eq!(letters.len(), 2, "{letters:?}\n{}", weir.log());
    assert_eq!(letters[0]["event"]["after"]["id"], 2, "{}", letters[0]);
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("max_statement_bytes"),
        "{}",
        letters[0]
    );
    assert_eq!(letters[1]["event"]["after"]["id"], 3, "{}", letters[1]);
    assert!(
        letters[1]["error"]
            .as_str()
            .unwrap()
            .contains("column price"),
        "{}",
        letters[1]
    );
    let got = eventually(Duration::from_secs(30), || async {
        let ids: Vec<u64> = matching(&searchd, "small").await;
        (ids == [1, 4]).then_some(ids)
    })
    .await;
    assert!(got.is_some(), "{}", weir.log());
    let price = searchd
        .query("SELECT price FROM public_docs WHERE id = 4")
        .await
        .unwrap();
    assert_eq!(price[0][0].as_deref(), Some("4.500000"));
}

/// Every column of the types table with the attribute type it goes to.
const TYPED_COLUMNS: &[(&str, &str)] = &[
    ("b", "bool"),
    ("i2", "bigint"),
    ("i4", "bigint"),
    ("i8", "bigint"),
    ("f4", "float"),
    // Beyond a 32-bit float's range: kept exact as text.
    ("f8", "string"),
    ("n", "string"),
    ("n2", "string"),
    ("t", "string"),
    ("vc", "string"),
    ("bp", "string"),
    ("nm", "string"),
    ("by", "string"),
    ("d", "timestamp"),
    ("tm", "string"),
    ("ts", "timestamp"),
    ("tstz", "timestamp"),
    ("u", "string"),
    ("j", "json"),
    ("jb", "json"),
    ("addr", "string"),
    ("span", "string"),
    ("arr", "string"),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_type_reaches_its_closest_attribute_type() {
    let mut index = RtIndex::new("public_typed").field("t");
    for (column, ty) in TYPED_COLUMNS {
        index = index.attr(ty, column);
    }
    let index = index.attr("string", "weir_nulls");
    let searchd = Searchd::start(&[index, RtIndex::state_of("public_typed")], 8 << 20);
    let db = TestDb::new(
        "sphinx_types",
        "CREATE TABLE typed (
            id int PRIMARY KEY,
            b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, n2 numeric(12,3),
            t text, vc varchar(20), bp char(5), nm name, by bytea,
            d date, tm time, ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb,
            addr inet, span interval, arr int4[]
        )",
    )
    .await;
    let attributes: Vec<String> = TYPED_COLUMNS
        .iter()
        .map(|(c, ty)| format!("{c} = \"{ty}\""))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (weir, _) = start_weir(
        &dir,
        &format!(
            "{}\n[sinks.search]\ntype = \"sphinx\"\naddress = {:?}\nfields = [\"t\"]\nattributes = {{ {} }}\nnulls_attribute = \"weir_nulls\"\n",
            db.source_toml(&["typed"]),
            searchd.addr,
            attributes.join(", ")
        ),
    );
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec(r#"
        INSERT INTO typed VALUES (1,
            true, -32768, 2147483647, 9223372036854775807, 1.5, -2.25e300,
            '-12345678901234567890.123456789', 42.5,
            E'héllo "quoted"\n\ttab \\ done', 'abc', 'ab', 'a_name', '\x00ff10',
            '2024-02-29', '13:14:15.123456', '2024-02-29 13:14:15.5', '2024-02-29 13:14:15.123+02',
            'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{"a": [1, 2.5, "x"]}', '{"b": {"c": null}, "d": [true]}',
            '10.1.2.3/24', '1 day 02:00:03', '{1,2,3}');
        INSERT INTO typed (id) VALUES (2);
        INSERT INTO typed (id, f4, f8, n, ts) VALUES (5, -0.25, 1e-300, 'Infinity', '2000-01-01 00:00:00');
    "#)
    .await;
    let columns: Vec<&str> = TYPED_COLUMNS.iter().map(|(c, _)| *c).collect();
    let sql = format!(
        "SELECT id, {}, weir_nulls FROM public_typed ORDER BY id ASC LIMIT 10",
        columns
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows = eventually(Duration::from_secs(60), || async {
        searchd.query(&sql).await.ok().filter(|r| r.len() == 3)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the rows never reached the index ({:?}):\n{}",
            futures_util::FutureExt::now_or_never(searchd.query(&sql)),
            weir.log()
        )
    });
    // Sphinx prints floats with six decimals and JSON compactly.
    let want: [(i64, Vec<(&str, &str)>); 3] = [
        (
            1,
            vec![
                ("b", "1"),
                ("i2", "-32768"),
                ("i4", "2147483647"),
                ("i8", "9223372036854775807"),
                ("f4", "1.500000"),
                ("f8", "-2.25e+300"),
                ("n", "-12345678901234567890.123456789"),
                ("n2", "42.500"),
                ("t", "héllo \"quoted\"\n\ttab \\ done"),
                ("vc", "abc"),
                ("bp", "ab   "),
                ("nm", "a_name"),
                ("by", "\\x00ff10"),
                ("d", "1709164800"),
                ("tm", "13:14:15.123456"),
                ("ts", "1709212455"),
                ("tstz", "1709205255"),
                ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                ("j", r#"{"a":[1,2.500000,"x"]}"#),
                ("jb", r#"{"b":{"c":null},"d":[true]}"#),
                ("addr", "10.1.2.3/24"),
                ("span", "1 day 02:00:03"),
                ("arr", "{1,2,3}"),
            ],
        ),
        (
            2,
            vec![
                ("b", "0"),
                ("i8", "0"),
                ("f4", "0.000000"),
                ("t", ""),
                ("d", "0"),
                ("j", "NULL"),
            ],
        ),
        (
            5,
            vec![
                ("f4", "-0.250000"),
                ("f8", "1e-300"),
                ("n", "Infinity"),
                ("ts", "946684800"),
            ],
        ),
    ];
    for (row, (id, values)) in rows.iter().zip(want) {
        assert_eq!(row[0].as_deref(), Some(id.to_string().as_str()));
        for (column, value) in values {
            let i = 1 + columns.iter().position(|c| *c == column).unwrap();
            let got = row[i].as_deref().unwrap_or("NULL");
            assert_eq!(got, value, "column {column} of row {id}");
        }
    }
    // Row 2: every column but the key was NULL, and says so.
    let mut nulls: Vec<&str> = rows[1]
        .last()
        .unwrap()
        .as_deref()
        .unwrap()
        .split(' ')
        .collect();
    nulls.sort_unstable();
    let mut all = columns.clone();
    all.sort_unstable();
    assert_eq!(nulls, all);
    assert_eq!(rows[0].last().unwrap().as_deref(), Some(""));
}

// `weir verify`'s readback, against the same private searchd.

mod readback {
    use std::sync::Arc;

    use weir_core::{Held, Op, Readback, SinkRecord, TableSchema, Value};
    use weir_sinks::SinkSpec as _;
    use weir_sinks::sphinx::{AttributeType, SphinxSinkConfig};
    use weir_tests::readback::{all_keys, column_diff as diff};
    use weir_tests::records::{self, gone, inserts, read};
    use weir_tests::services::sphinx::{RtIndex, Searchd};

    /// `name` is a field and a string attribute, `body` only a field.
    fn rb_indexes() -> [RtIndex; 2] {
        [
            RtIndex::new("public_rb")
                .field("name")
                .field("body")
                .attr("string", "name")
                .attr("bigint", "qty")
                .attr("float", "price")
                .attr("json", "meta")
                .attr("string", "weir_nulls"),
            RtIndex::state_of("public_rb"),
        ]
    }

    fn rb_config(addr: &str) -> SphinxSinkConfig {
        let mut config = SphinxSinkConfig::new(addr);
        config.fields = vec!["name".into(), "body".into()];
        config.attributes = [
            ("name", AttributeType::String),
            ("qty", AttributeType::Bigint),
            ("price", AttributeType::Float),
            ("meta", AttributeType::Json),
        ]
        .into_iter()
        .map(|(c, t)| (c.to_owned(), t))
        .collect();
        config.nulls_attribute = Some("weir_nulls".into());
        config
    }

    fn rb_table() -> Arc<TableSchema> {
        records::table(
            "public",
            "rb",
            &[
                ("id", "int8", true),
                ("name", "text", false),
                ("body", "text", false),
                ("qty", "int4", false),
                ("price", "float8", false),
                ("meta", "jsonb", false),
            ],
        )
    }

    fn text(s: Option<&str>) -> Value {
        s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
    }

    fn rb_row(
        id: i64,
        name: &str,
        body: Option<&str>,
        qty: i64,
        price: f64,
        meta: &str,
    ) -> Vec<Value> {
        vec![
            Value::Int(id),
            Value::Text(name.into()),
            text(body),
            Value::Int(qty),
            Value::Float(price),
            if meta.is_empty() {
                Value::Null
            } else {
                Value::Json(meta.into())
            },
        ]
    }

    /// The first rows of `public_rb`, as written through the sink.
    fn rb_rows() -> Vec<Vec<Value>> {
        vec![
            rb_row(
                1,
                "one",
                Some("first body"),
                1,
                1.1,
                r#"{"b": [1, 2.5, "x\"y\\z"], "a": {"c": null}}"#,
            ),
            rb_row(2, "two", None, 2, 2.0, ""),
            rb_row(3, "three", Some("third"), 3, 0.3, r#""a scalar""#),
            rb_row(4, "four", Some("fourth"), 4, -4.25, "[1, 2]"),
        ]
    }

    fn insert(table: &Arc<TableSchema>, lsn: u64, row: Vec<Value>) -> SinkRecord {
        records::change(table, Op::Insert, lsn, 0, None, Some(row))
    }

    async fn write(config: &SphinxSinkConfig, records: &[SinkRecord]) {
        let mut sink = config.build("search").await.expect("open the sink");
        sink.write(records).await.expect("write");
        sink.close().await.unwrap();
    }

    async fn open(config: &SphinxSinkConfig) -> Box<dyn Readback> {
        weir_tests::readback::open(config.readback("search")).await
    }

    async fn sql(searchd: &Searchd, sql: &str) -> Vec<Vec<Option<String>>> {
        searchd
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_compares_rows_and_sees_changes_behind_the_sinks_back() {
        let searchd = Searchd::start(&rb_indexes(), 8 << 20);
        let config = rb_config(&searchd.addr);
        let table = rb_table();
        let rows = rb_rows();
        write(&config, &inserts(&table, 100, rows.iter().cloned())).await;
        let mut readback = open(&config).await;
        assert!(readback.compares().contains("weir_doc"));

        let mut records: Vec<SinkRecord> = rows.iter().map(|r| read(&table, r.clone())).collect();
        records.push(gone(&table, &[Value::Int(9)]));
        records.push(gone(&table, &[Value::Int(4)]));
        let held = readback.compare(&records).await.unwrap();
        assert_eq!(
            held,
            [
                Held::Same,
                Held::Same,
                Held::Same,
                Held::Same,
                Held::Same,
                Held::Extra
            ]
        );

        // Behind the sink's back: a document removed from the main index
        // (its state document stays), an attribute updated, a document
        // rewritten with another name.
        sql(&searchd, "DELETE FROM public_rb WHERE id = 2").await;
        sql(&searchd, "UPDATE public_rb SET qty = 99 WHERE id = 1").await;
        sql(
            &searchd,
            "REPLACE INTO public_rb (id, name, body, qty, price, meta, weir_nulls) \
             VALUES (3, 'changed', 'third', 3, 0.3, '', '')",
        )
        .await;
        let state = sql(
            &searchd,
            "SELECT weir_deleted FROM public_rb_weir WHERE id = 2",
        )
        .await;
        assert_eq!(
            state,
            [[Some("0".to_owned())]],
            "the state index still has it"
        );
        // And a change the sink never got: row 4's body and row 1's price.
        let mut row4 = rows[3].clone();
        row4[2] = text(Some("a new body"));
        let mut row1 = rows[0].clone();
        row1[4] = Value::Float(1.25);

        let records = [
            read(&table, row1),
            read(&table, rows[1].clone()),
            read(&table, rows[2].clone()),
            read(&table, row4),
            gone(&table, &[Value::Int(2)]),
        ];
        let held = readback.compare(&records).await.unwrap();
        assert_eq!(
            held,
            [
                // In the sink's column order: fields, then attributes by name.
                Held::Differs(vec![
                    diff("price", "1.250000", "1.100000"),
                    diff("qty", "1", "99"),
                ]),
                Held::Missing,
                Held::Differs(vec![diff("name", "three", "changed")]),
                Held::Differs(vec![diff("body (weir_doc)", "a new body", "fourth")]),
                Held::Same,
            ]
        );

        // A source value the sink cannot write (it would dead-letter the row).
        let mut nan = rows[3].clone();
        nan[4] = Value::Float(f64::NAN);
        let held = readback.compare(&[read(&table, nan)]).await.unwrap();
        let Held::Differs(diffs) = &held[0] else {
            panic!("{held:?}");
        };
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert_eq!(diffs[0].column, "price");
        assert!(
            diffs[0]
                .source
                .starts_with("(cannot be written: column price"),
            "{diffs:?}"
        );
        assert_eq!(diffs[0].sink, "-4.250000");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_keys_page_through_every_held_key() {
        let searchd = Searchd::start(&rb_indexes(), 8 << 20);
        let config = rb_config(&searchd.addr);
        let table = rb_table();
        // A truncate first, for the state index's watermark document.
        let mut records = vec![records::change(&table, Op::Truncate, 50, 0, None, None)];
        for id in 1..=7 {
            records.push(insert(
                &table,
                100 + id as u64 * 8,
                rb_row(id, &format!("row {id}"), Some("b"), id, 1.0, ""),
            ));
        }
        write(&config, &records).await;
        // A tombstone, and a negative key (a hashed id).
        write(
            &config,
            &[
                records::change(
                    &table,
                    Op::Delete,
                    400,
                    0,
                    Some(rb_row(3, "row 3", Some("b"), 3, 1.0, "")),
                    None,
                ),
                insert(&table, 408, rb_row(-5, "minus five", None, 0, 0.0, "")),
            ],
        )
        .await;
        // Behind the sink's back: a document under an integer id, and one
        // under an id no integer key makes.
        sql(
            &searchd,
            "REPLACE INTO public_rb (id, name, qty) VALUES (100, 'stray', 5), \
             (18446744073709551000, 'stray too', 6)",
        )
        .await;
        let mut readback = open(&config).await;
        let (keys, pages) = all_keys(readback.as_mut(), &table, None, 3).await;
        assert!(pages >= 3, "{pages} pages: {keys:?}");
        let mut got: Vec<(String, Option<Vec<String>>)> =
            keys.into_iter().map(|k| (k.name, k.key)).collect();
        got.sort();
        let hashed = sql(&searchd, "SELECT id FROM public_rb WHERE qty = 0").await;
        let hashed = hashed[0][0].clone().unwrap();
        let mut want: Vec<(String, Option<Vec<String>>)> = [1, 2, 4, 5, 6, 7, 100]
            .into_iter()
            .map(|id: i64| (format!("public_rb id={id}"), Some(vec![id.to_string()])))
            .collect();
        want.push((
            format!("public_rb id={hashed}"),
            Some(vec!["-5".to_owned()]),
        ));
        want.push(("public_rb id=18446744073709551000".to_owned(), None));
        want.sort();
        assert_eq!(got, want);

        // One page for all, and a page size of one.
        let (one_page, pages) = all_keys(readback.as_mut(), &table, None, 1000).await;
        assert_eq!((one_page.len(), pages), (9, 1));
        let (single, _) = all_keys(readback.as_mut(), &table, None, 1).await;
        assert_eq!(single.len(), 9);
    }

    fn rk_indexes() -> [RtIndex; 2] {
        [
            RtIndex::new("public_rk")
                .field("note")
                .attr("string", "note")
                .attr("bigint", "qty"),
            RtIndex::state_of("public_rk"),
        ]
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_two_column_keys_map_back_through_the_state_index() {
        let searchd = Searchd::start(&rk_indexes(), 8 << 20);
        let mut config = SphinxSinkConfig::new(&searchd.addr);
        config.fields = vec!["note".into()];
        config.attributes = [
            ("note".to_owned(), AttributeType::String),
            ("qty".to_owned(), AttributeType::Bigint),
        ]
        .into_iter()
        .collect();
        let table = records::table(
            "public",
            "rk",
            &[
                ("region", "text", true),
                ("n", "int8", true),
                ("note", "text", false),
                ("qty", "int4", false),
            ],
        );
        let row = |region: &str, n: i64, note: &str, qty: i64| {
            vec![
                Value::Text(region.into()),
                Value::Int(n),
                Value::Text(note.into()),
                Value::Int(qty),
            ]
        };
        let rows = [
            row("eu:west", 1, "colon", 1),
            row(r"back\slash", -2, "it's \"quoted\"", 2),
            row("plain", 3, "plain", 3),
        ];
        write(&config, &inserts(&table, 100, rows.iter().cloned())).await;
        let mut readback = open(&config).await;

        let mut records: Vec<SinkRecord> = rows.iter().map(|r| read(&table, r.clone())).collect();
        records.push(gone(&table, &[Value::Text("plain".into()), Value::Int(3)]));
        records.push(gone(&table, &[Value::Text("plain".into()), Value::Int(4)]));
        let held = readback.compare(&records).await.unwrap();
        assert_eq!(
            held,
            [Held::Same, Held::Same, Held::Same, Held::Extra, Held::Same]
        );

        let (keys, pages) = all_keys(readback.as_mut(), &table, None, 2).await;
        assert_eq!(pages, 2, "{keys:?}");
        let mut got: Vec<Option<Vec<String>>> = keys.iter().map(|k| k.key.clone()).collect();
        got.sort();
        let key = |r: &str, n: &str| Some(vec![r.to_owned(), n.to_owned()]);
        assert_eq!(
            got,
            [
                key(r"back\slash", "-2"),
                key("eu:west", "1"),
                key("plain", "3")
            ]
        );

        // Behind the sink's back: one document removed, one changed, one
        // stray document whose id no key of the state index has.
        let state = sql(
            &searchd,
            "SELECT id, weir_key FROM public_rk_weir LIMIT 100",
        )
        .await;
        let id_of = |key: &str| {
            state
                .iter()
                .find(|r| r[1].as_deref() == Some(key))
                .and_then(|r| r[0].clone())
                .unwrap_or_else(|| panic!("no state document for {key}: {state:?}"))
        };
        sql(
            &searchd,
            &format!("DELETE FROM public_rk WHERE id = {}", id_of("plain:3")),
        )
        .await;
        sql(
            &searchd,
            &format!(
                "UPDATE public_rk SET qty = 7 WHERE id = {}",
                id_of(r"eu\:west:1")
            ),
        )
        .await;
        sql(
            &searchd,
            "REPLACE INTO public_rk (id, note, qty) VALUES (12345, 'stray', 0)",
        )
        .await;
        let held = readback.compare(&records).await.unwrap();
        assert_eq!(
            held,
            [
                Held::Differs(vec![diff("qty", "1", "7")]),
                Held::Same,
                Held::Missing,
                Held::Same,
                Held::Same
            ]
        );
        let (keys, _) = all_keys(readback.as_mut(), &table, None, 2).await;
        let mut got: Vec<(String, Option<Vec<String>>)> =
            keys.into_iter().map(|k| (k.name, k.key)).collect();
        got.sort();
        assert!(
            got.contains(&("public_rk id=12345".to_owned(), None)),
            "{got:?}"
        );
        assert_eq!(got.len(), 3, "{got:?}");
    }

    /// Every attribute type, written through the sink and read back, is
    /// what the sink would write: no difference from searchd's printing.
    #[tokio::test(flavor = "multi_thread")]
    async fn readback_every_attribute_type_compares_same() {
        let columns: &[(&str, &str, AttributeType)] = &[
            ("b", "bool", AttributeType::Bool),
            ("u", "int8", AttributeType::Uint),
            ("i", "int8", AttributeType::Bigint),
            ("f", "float8", AttributeType::Float),
            ("nf", "numeric", AttributeType::Float),
            ("n", "numeric", AttributeType::String),
            ("ts", "timestamptz", AttributeType::Timestamp),
            ("d", "date", AttributeType::Timestamp),
            ("tx", "text", AttributeType::String),
            ("by", "bytea", AttributeType::String),
            ("uu", "uuid", AttributeType::String),
            ("j", "jsonb", AttributeType::Json),
        ];
        let mut index = RtIndex::new("public_ty").field("tx");
        for (name, _, ty) in columns {
            index = index.attr(ty_name(*ty), name);
        }
        let index = index.attr("string", "weir_nulls");
        let searchd = Searchd::start(&[index, RtIndex::state_of("public_ty")], 8 << 20);
        let mut config = SphinxSinkConfig::new(&searchd.addr);
        config.fields = vec!["tx".into()];
        config.attributes = columns
            .iter()
            .map(|(c, _, ty)| ((*c).to_owned(), *ty))
            .collect();
        config.nulls_attribute = Some("weir_nulls".into());
        let mut spec = vec![("id", "int8", true)];
        spec.extend(columns.iter().map(|(c, t, _)| (*c, *t, false)));
        let table = records::table("public", "ty", &spec);
        let full = vec![
            Value::Int(1),
            Value::Bool(true),
            Value::Int(4_294_967_295),
            Value::Int(i64::MIN),
            Value::Float(3.0e38),
            Value::Numeric("12.345678".into()),
            Value::Numeric("-12345678901234567890.123456789".into()),
            Value::TimestampTz(1_709_205_255_123_000),
            Value::Date(19_782),
            Value::Text("héllo 'quoted' \\ \"double\"\n\ttab".into()),
            Value::Bytes(vec![0, 0xff, 0x10]),
            Value::Uuid([0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11]),
            Value::Json(
                r#"{"a": [1, 2.5, "x", true, null, -0.0000001], "é": {"c": "q\"\\\n\u00e9"}, "big": 9007199254740993}"#
                    .into(),
            ),
        ];
        let mut nulls = vec![Value::Int(2)];
        nulls.resize(full.len(), Value::Null);
        let edges = vec![
            Value::Int(3),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(-1),
            Value::Float(1.0e-7),
            Value::Numeric("0.1".into()),
            Value::Numeric("0".into()),
            Value::TimestampTz(0),
            Value::Date(0),
            Value::Text(String::new()),
            Value::Bytes(Vec::new()),
            Value::Null,
            Value::Json("[]".into()),
        ];
        let rows = [full, nulls, edges];
        write(&config, &inserts(&table, 100, rows.iter().cloned())).await;
        let mut readback = open(&config).await;
        let records: Vec<SinkRecord> = rows.iter().map(|r| read(&table, r.clone())).collect();
        let held = readback.compare(&records).await.unwrap();
        assert_eq!(held, [Held::Same, Held::Same, Held::Same]);

        // Every attribute type tells a change apart.
        sql(
            &searchd,
            "UPDATE public_ty SET b = 0, u = 7, i = 8, f = 2.5, ts = 9, d = 10 WHERE id = 1",
        )
        .await;
        let held = readback.compare(&records[..1]).await.unwrap();
        let Held::Differs(diffs) = &held[0] else {
            panic!("{held:?}");
        };
        let named: Vec<&str> = diffs.iter().map(|d| d.column.as_str()).collect();
        assert_eq!(named, ["b", "d", "f", "i", "ts", "u"], "{diffs:?}");
    }

    fn ty_name(ty: AttributeType) -> &'static str {
        match ty {
            AttributeType::Bool => "bool",
            AttributeType::Uint => "uint",
            AttributeType::Bigint => "bigint",
            AttributeType::Float => "float",
            AttributeType::Timestamp => "timestamp",
            AttributeType::Json => "json",
            AttributeType::String => "string",
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readback_names_an_index_that_is_not_declared() {
        let searchd = Searchd::start(&rb_indexes(), 8 << 20);
        let mut config = rb_config(&searchd.addr);
        config.index = "elsewhere_{table}".into();
        let table = rb_table();
        let mut readback = open(&config).await;
        let err = readback
            .compare(&[read(&table, rb_rows()[0].clone())])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, weir_core::SinkError::Config(m) if m.contains("elsewhere_rb")),
            "{err:?}"
        );
        let err = readback.keys(&table, None, None, 10).await.unwrap_err();
        assert!(
            matches!(&err, weir_core::SinkError::Config(m) if m.contains("elsewhere_rb")),
            "{err:?}"
        );
        // A route's topic picks the index, as for writes.
        let page = readback
            .keys(&table, Some("public_rb"), None, 10)
            .await
            .unwrap();
        assert_eq!(page, weir_core::KeyPage::default());
    }
}
