//! The example plugins do what they say, end to end against real Postgres:
//! `filter` drops changes by table and by a column predicate, `mask` hashes
//! or redacts columns, `route-by-table` sends each table to its own sink,
//! `enrich` adds computed columns, `outbox` publishes outbox rows as
//! messages, and the Python and JavaScript examples run in one chain; a
//! plugin's `tables` filter keeps it to the tables it names.

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

/// A plugin's `tables` filter: `mask` redacts emails of `customers` only,
/// and the router only decides for `orders` (any change it got would land
/// in `orders`); the other tables pass both untouched and go by the routes.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_tables_filters_leave_other_tables_untouched() {
    let db = TestDb::new(
        "plugin_tables",
        "CREATE TABLE customers (id int PRIMARY KEY, email text);
         CREATE TABLE staff (id int PRIMARY KEY, email text);
         CREATE TABLE orders (id int PRIMARY KEY, email text);",
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
tables = ["public.cust*"]
config = {{ columns = "email", mode = "redact" }}

[router]
path = {:?}
tables = ["orders"]
config = {{ default = "orders" }}

[[routes]]
sinks = ["rest"]

[sinks.orders]
type = "file"
path = {:?}

[sinks.rest]
type = "file"
path = {:?}
"#,
            db.source_toml(&["customers", "staff", "orders"]),
            plugin("mask"),
            plugin("route-by-table"),
            file("orders"),
            file("rest"),
        ),
    )
    .unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    db.exec(
        "INSERT INTO customers VALUES (1, 'ada@example.com');
         INSERT INTO staff VALUES (2, 'bob@example.com');
         INSERT INTO orders VALUES (3, 'cy@example.com');",
    )
    .await;
    let rest = wait_lines(&file("rest"), 2, Duration::from_secs(60));
    let orders = wait_lines(&file("orders"), 1, Duration::from_secs(60));
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
    let seen = |lines: &[Json]| -> Vec<(String, String)> {
        lines
            .iter()
            .map(|l| {
                (
                    l["table"].as_str().unwrap().to_owned(),
                    l["after"]["email"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        seen(&read_jsonl(&file("rest"))),
        [
            ("customers".into(), "***".into()),
            ("staff".into(), "bob@example.com".into())
        ],
        "{rest:#?}"
    );
    assert_eq!(
        seen(&read_jsonl(&file("orders"))),
        [("orders".into(), "cy@example.com".into())],
        "{orders:#?}"
    );
}

/// The Python and JavaScript examples in one chain: `redact_pii` (Python)
/// removes emails and card numbers from free text, then `normalize`
/// (JavaScript) tidies the email column and drops rows without a name.
#[tokio::test(flavor = "multi_thread")]
async fn python_and_javascript_transforms_in_one_chain() {
    let db = TestDb::new(
        "polyglot",
        "CREATE TABLE signups (id int PRIMARY KEY, name text, email text, note text)",
    )
    .await;
    let admin = free_port();
    let body = format!(
        r#"
[[transforms]]
name = "redact"
path = {:?}
timeout = "30s"
config = {{ columns = "note" }}

[[transforms]]
name = "normalize"
path = {:?}
timeout = "30s"
config = {{ trim = "name,email", lowercase = "email", require = "name" }}

[admin]
listen = "127.0.0.1:{admin}"
"#,
        polyglot("redact_pii"),
        polyglot("normalize"),
    );
    let mut p = FilePipeline::start(&db, &["signups"], "", &body);
    db.exec(
        "INSERT INTO signups VALUES
           (1, ' Ada ', ' Ada@Example.COM ', 'mail me at ada@example.com, card 4111 1111 1111 1111'),
           (2, NULL, 'nobody@example.com', 'no name'),
           (3, 'Grace', 'GRACE@example.com', 'order 1234567890123 is not a card');
         UPDATE signups SET note = 'call 4012-8888-8888-1881 now' WHERE id = 3;",
    )
    .await;
    let lines = wait_lines(&p.out, 3, Duration::from_secs(120));
    let row = |i: usize| &lines[i]["after"];
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(row(0)["id"], 1);
    assert_eq!(row(0)["name"], "Ada");
    assert_eq!(row(0)["email"], "ada@example.com");
    assert_eq!(row(0)["note"], "mail me at [redacted], card [redacted]");
    assert_eq!(row(1)["id"], 3, "the row without a name is dropped");
    assert_eq!(row(1)["note"], "order 1234567890123 is not a card");
    assert_eq!(row(1)["email"], "grace@example.com");
    assert_eq!(lines[2]["op"], "update");
    assert_eq!(row(2)["note"], "call [redacted] now");
    // Both languages' counters reach the metrics.
    let metrics = wait_for(Duration::from_secs(10), || {
        let m = http_get(admin, "/metrics");
        m.contains("weir_plugin_counter_total{plugin=\"normalize\",name=\"dropped\"} 1")
            .then_some(m)
    })
    .unwrap_or_else(|| http_get(admin, "/metrics"));
    assert!(
        metrics.contains("weir_plugin_counter_total{plugin=\"redact\",name=\"redacted\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_plugin_counter_total{plugin=\"normalize\",name=\"dropped\"} 1"),
        "{metrics}"
    );
    p.stop_cleanly();
}

/// `enrich` adds computed columns through a declared table, and a plugin
/// with the `commit` hook adds one summary record per transaction, after
/// the transaction's changes.
#[tokio::test(flavor = "multi_thread")]
async fn enrich_adds_columns_and_commit_hooks_summarise_transactions() {
    let db = TestDb::new(
        "enrich",
        "CREATE TABLE users (id int PRIMARY KEY, email text, name text)",
    )
    .await;
    let body = format!(
        r#"
[[transforms]]
path = {:?}
config = {{ add = {{ email_domain = "email_domain(email)", shout = "upper(name)", tx = "xid()" }} }}

[[transforms]]
path = {:?}
"#,
        plugin("enrich"),
        plugin("commit-hook"),
    );
    let mut p = FilePipeline::start(&db, &["users"], "", &body);
    db.exec("INSERT INTO users VALUES (1, 'ada@Example.com', 'ada'), (2, NULL, 'bob')")
        .await;
    db.exec("UPDATE users SET name = 'grace' WHERE id = 1")
        .await;
    let lines = wait_lines(&p.out, 5, Duration::from_secs(60));
    // Changes carry the added columns, after the table's own.
    let raw = std::fs::read_to_string(&p.out).unwrap();
    assert!(
        raw.lines().next().unwrap().contains(
            r#""after":{"id":1,"email":"ada@Example.com","name":"ada","email_domain":"example.com","shout":"ADA","tx":"#
        ),
        "{raw}"
    );
    assert_eq!(lines[0]["table"], "users");
    assert_eq!(lines[0]["after"]["email_domain"], "example.com");
    assert_eq!(lines[0]["after"]["shout"], "ADA");
    assert!(
        lines[1]["after"]["email_domain"].is_null(),
        "NULL in, NULL out"
    );
    let xid = lines[0]["source"]["xid"].as_i64().unwrap();
    assert_eq!(lines[0]["after"]["tx"], xid);
    // Then each transaction's summary, right after its changes.
    assert_eq!(lines[2]["xid"], xid, "{:#?}", lines);
    assert_eq!(lines[2]["changes"], 2);
    assert_eq!(lines[3]["op"], "update");
    assert_eq!(lines[3]["after"]["shout"], "GRACE");
    assert_eq!(lines[4]["changes"], 1);
    p.stop_cleanly();
}

/// `outbox` publishes rows of an outbox table as Kafka messages whose
/// topic, key, body and headers come from the row, with Debezium's outbox
/// semantics; other tables flow as usual.
#[tokio::test(flavor = "multi_thread")]
async fn outbox_rows_become_kafka_messages() {
    let broker = Broker::start();
    let db = TestDb::new(
        "outbox",
        "CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text, aggregateid text,
                              type text, payload jsonb);
         CREATE TABLE orders (id int PRIMARY KEY, total int);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    let out = dir.path().join("orders.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"{}
[[transforms]]
path = {:?}
config = {{ sink = "events" }}

[[routes]]
tables = ["public.orders"]
sinks = ["orders"]

[sinks.events]
type = "kafka"
brokers = {:?}
create_topics = true

[sinks.orders]
type = "file"
path = {out:?}
"#,
            db.source_toml(&["outbox", "orders"]),
            plugin("outbox"),
            broker.addr,
        ),
    )
    .unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(60), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
    // The service writes its data and its event in one transaction.
    db.exec(
        "BEGIN;
         INSERT INTO orders VALUES (1, 99);
         INSERT INTO outbox VALUES ('9a2f3c1e-0000-4000-8000-000000000001', 'Order', '1',
                                    'OrderCreated', '{\"total\": 99}');
         COMMIT;
         DELETE FROM outbox;",
    )
    .await;
    let messages = consume(
        &broker.addr,
        &["outbox.event.Order"],
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(messages.len(), 1, "{}", weir.log());
    let m = &messages[0];
    assert_eq!(m.key.as_deref(), Some(&b"1"[..]));
    assert_eq!(m.value, serde_json::json!({"total": 99}));
    let header = |name: &str| {
        m.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(
        header("id").as_deref(),
        Some("9a2f3c1e-0000-4000-8000-000000000001")
    );
    assert_eq!(header("type").as_deref(), Some("OrderCreated"));
    let orders = wait_lines(&out, 1, Duration::from_secs(30));
    assert_eq!(orders[0]["after"]["total"], 99);
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}
