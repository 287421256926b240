//! Bad configuration and bad environments stop Weir before it reads a
//! single change: a clear message naming the cause, a non-zero exit, and
//! nothing acknowledged (no slot is even created).

use std::time::Duration;

use weir_tests::*;

const TIMEOUT: Duration = Duration::from_secs(60);

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("weir.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn file_sink(dir: &std::path::Path) -> String {
    format!(
        "[sinks.out]\ntype = \"file\"\npath = {:?}\n",
        dir.join("out.jsonl")
    )
}

#[test]
fn check_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        &format!(
            "[source]\ndatabase = \"app\"\ntables = [\"public.orders\"]\n\n[[transforms]]\npath = {:?}\n\n{}",
            plugin("passthrough"),
            file_sink(dir.path())
        ),
    );
    let (status, out) = run_weir(&["check", "--config", good.to_str().unwrap()], TIMEOUT);
    assert!(status.success(), "{out}");
    assert!(
        out.contains(": ok (1 transform(s), 1 sink(s): out)"),
        "{out}"
    );

    let bad = write_config(
        dir.path(),
        "[source]\ndatabase = \"app\"\ntables = [\"public.orders\"]\n\n[sinks.orders_kafka]\ntype = \"kafka\"\nbrokers = 9092\n",
    );
    let (status, out) = run_weir(&["check", "--config", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("sinks.orders_kafka"), "{out}");
    assert!(out.contains("expected a string"), "{out}");

    let bad = write_config(
        dir.path(),
        &format!(
            "[source]\ndatabase = \"${{WEIR_TEST_UNSET_VARIABLE}}\"\ntables = [\"a.b.c\"]\n\n[[routes]]\nsinks = [\"nowhere\"]\n\n{}",
            file_sink(dir.path())
        ),
    );
    let (status, out) = run_weir(&["check", "--config", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("WEIR_TEST_UNSET_VARIABLE") && out.contains("line 2"),
        "{out}"
    );

    let bad = write_config(
        dir.path(),
        &format!(
            "[source]\ndatabase = \"app\"\ntables = [\"a.b.c\"]\n\n[[routes]]\nsinks = [\"nowhere\"]\n\n[[transforms]]\npath = \"missing.wasm\"\n\n{}",
            file_sink(dir.path())
        ),
    );
    let (status, out) = run_weir(&["check", "--config", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("source.tables[0]"), "{out}");
    assert!(
        out.contains("routes[0].sinks") && out.contains("nowhere"),
        "{out}"
    );
    assert!(out.contains("transforms[0].path"), "{out}");

    // A file that is not a component is refused by check, naming the file.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let bad = write_config(
        dir.path(),
        &format!(
            "[source]\ndatabase = \"app\"\ntables = [\"t\"]\n\n[[transforms]]\npath = {junk:?}\n\n{}",
            file_sink(dir.path())
        ),
    );
    let (status, out) = run_weir(&["check", "--config", bad.to_str().unwrap()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("junk"), "{out}");
}

fn slot_exists(slot: &str) -> bool {
    psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .unwrap()
        == "1"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_table_is_named_and_nothing_is_created() {
    let db = TestDb::new("missing", "CREATE TABLE present (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            db.source_toml(&["public.present", "public.absent"]),
            file_sink(dir.path())
        ),
    );
    let (status, out) = run_weir(&["run", "--config", config.to_str().unwrap()], TIMEOUT);
    assert!(!status.success(), "{out}");
    assert!(out.contains("public.absent"), "{out}");
    assert!(
        !out.contains("public.present"),
        "only the missing table is named: {out}"
    );
    assert!(!slot_exists(&db.slot), "no slot may be created");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_named() {
    let db = TestDb::new("nobroker", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().unwrap();
    let broker = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n[sinks.events]\ntype = \"kafka\"\nbrokers = {broker:?}\n",
            db.source_toml(&["t"])
        ),
    );
    let (status, out) = run_weir(&["run", "--config", config.to_str().unwrap()], TIMEOUT);
    assert!(!status.success(), "{out}");
    assert!(out.contains(&broker), "{out}");
    assert!(out.contains("events"), "the sink is named: {out}");
    assert!(!slot_exists(&db.slot), "no slot may be created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_replication_is_named() {
    let db = TestDb::new("norepl", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let role = unique("weir_norepl");
    psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN NOREPLICATION"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = db.source_toml(&["t"]).replace(
        &format!("user = {:?}", pg_user()),
        &format!("user = {role:?}"),
    );
    let config = write_config(dir.path(), &format!("{source}\n{}", file_sink(dir.path())));
    let (status, out) = run_weir(&["run", "--config", config.to_str().unwrap()], TIMEOUT);
    let _ = psql("postgres", &format!("DROP ROLE {role}"));
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&role) && out.to_lowercase().contains("replication"),
        "{out}"
    );
    assert!(!slot_exists(&db.slot), "no slot may be created");
}

#[test]
fn wal_level_replica_is_explained() {
    let cluster = PrivateCluster::start(&[("wal_level", "replica")]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[source]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"postgres\"\ntables = [\"t\"]\n\n{}",
            cluster.port,
            file_sink(dir.path())
        ),
    );
    let (status, out) = run_weir(&["run", "--config", config.to_str().unwrap()], TIMEOUT);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("wal_level") && out.contains("logical"),
        "{out}"
    );
}
