//! The `sphinx` sink against a private searchd (Sphinx 2.2.11): the
//! conformance kit, changes end to end through the `weir` binary answered
//! by full-text queries, every type of the types table reaching its
//! closest attribute type, and the errors (searchd down at start, stopped
//! and back mid-run, a document it cannot take dead-lettered).

use std::collections::BTreeMap;
use std::future::Future;
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

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
