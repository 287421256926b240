//! The example plugins do what they say, end to end against real Postgres:
//! `filter` drops changes by table and by a column predicate, `mask` hashes
//! or redacts columns, `route-by-table` sends each table to its own sink.

use std::time::Duration;

use weir_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn filter_then_mask() {
    let db = TestDb::new(
        "filter_mask",
        "CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric);
         CREATE TABLE customers (id int PRIMARY KEY, email text, phone text);
         CREATE TABLE noise (id int PRIMARY KEY);",
    )
    .await;
    let body = format!(
        r#"
[[transforms]]
name = "keep-big-orders"
path = {:?}
config = {{ tables = "public.orders,public.customers", where = "amount > 100" }}

[[transforms]]
name = "hide-contact"
path = {:?}
config = {{ columns = ["email", "phone"], mode = "hash" }}

[[transforms]]
name = "redact-status"
path = {:?}
config = {{ columns = "status", mode = "redact" }}
"#,
        plugin("filter"),
        plugin("mask"),
        plugin("mask"),
    );
    let mut p = FilePipeline::start(&db, &["orders", "customers", "noise"], "", &body);
    let out = p.out.clone();
    db.exec(
        "INSERT INTO orders VALUES (1, 'new', 50), (2, 'new', 500), (3, 'new', 100.01);
         INSERT INTO noise VALUES (1);
         INSERT INTO customers VALUES (1, 'ada@example.com', NULL);
         UPDATE orders SET amount = 20 WHERE id = 2;
         INSERT INTO orders VALUES (4, 'last', 1000);",
    )
    .await;
    let lines = wait_lines(&out, 4, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let lines_now = read_jsonl(&out);
    assert_eq!(lines_now.len(), 4, "{lines_now:#?}");
    let summary: Vec<(String, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["table"].as_str().unwrap().to_owned(),
                l["after"]["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("orders".into(), 2),
            ("orders".into(), 3),
            ("customers".into(), 1),
            ("orders".into(), 4)
        ],
        "small orders, the shrunk update and the unlisted table are filtered out"
    );
    let want_hash = psql(
        &db.name,
        "SELECT encode(sha256('ada@example.com'::bytea), 'hex')",
    )
    .unwrap();
    assert_eq!(lines[2]["after"]["email"], want_hash.as_str());
    assert!(lines[2]["after"]["phone"].is_null(), "NULL stays NULL");
    assert_eq!(lines[0]["after"]["status"], "***");
    assert_eq!(lines[0]["after"]["amount"], "500");
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn route_by_table_sends_each_table_to_its_sink() {
    let db = TestDb::new(
        "route",
        "CREATE TABLE orders (id int PRIMARY KEY);
         CREATE TABLE customers (id int PRIMARY KEY);
         CREATE TABLE misc (id int PRIMARY KEY);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(format!("{n}.jsonl"));
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            r#"{}
[[transforms]]
path = {:?}

[router]
path = {:?}
config = {{ "route.public.orders" = "orders", "route.public.customers" = "customers,everything", default = "everything" }}

[sinks.orders]
type = "file"
path = {:?}

[sinks.customers]
type = "file"
path = {:?}

[sinks.everything]
type = "file"
path = {:?}
"#,
            db.source_toml(&["orders", "customers", "misc"]),
            plugin("passthrough"),
            plugin("route-by-table"),
            file("orders"),
            file("customers"),
            file("everything"),
        ),
    )
    .unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec(
        "INSERT INTO orders VALUES (1), (2);
         INSERT INTO customers VALUES (10);
         INSERT INTO misc VALUES (100);",
    )
    .await;
    let everything = wait_lines(&file("everything"), 2, Duration::from_secs(60));
    let orders = wait_lines(&file("orders"), 2, Duration::from_secs(60));
    let customers = wait_lines(&file("customers"), 1, Duration::from_secs(60));
    let tables = |lines: &[Json]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["table"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(tables(&orders), ["orders", "orders"]);
    assert_eq!(tables(&customers), ["customers"]);
    assert_eq!(tables(&everything), ["customers", "misc"]);
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}
