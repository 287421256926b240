//! The initial snapshot through the real binary: a new slot delivers the
//! rows its tables already hold as `read` events, then the changes made
//! since, none lost or doubled at the handover; a SIGKILL during the
//! snapshot makes the next start take it again, so nothing is missing;
//! `initial_only` stops after it.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_tests::*;

const TABLES: &str = "CREATE TABLE items (id int8 PRIMARY KEY, v text);
     CREATE TABLE pairs (a int, b text, PRIMARY KEY (a, b));
     CREATE TABLE loose (v text);
     CREATE TABLE empty (id int PRIMARY KEY);";

fn ids(lines: &[Json], table: &str, op: &str) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l["table"] == table && l["op"] == op)
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect()
}

fn snapshot_state(db: &TestDb) -> String {
    psql(
        &db.name,
        &format!(
            "SELECT state FROM weir.snapshots WHERE slot = '{}'",
            db.slot
        ),
    )
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_rows_come_first_as_reads_then_the_changes_since() {
    let db = TestDb::new("snap", TABLES).await;
    db.exec(
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3000) g;
         INSERT INTO pairs VALUES (1, 'x'), (1, 'y'), (2, 'x');
         INSERT INTO loose SELECT 'l' || g FROM generate_series(1, 10) g;",
    )
    .await;
    let tables = [
        "public.items",
        "public.pairs",
        "public.loose",
        "public.empty",
    ];
    let admin = free_port();
    let p = FilePipeline::start(
        &db,
        &tables,
        "",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
    );
    db.exec("UPDATE items SET v = 'changed' WHERE id = 1").await;
    db.exec("INSERT INTO items VALUES (3001, 'sentinel')").await;
    let lines = wait_for(Duration::from_secs(120), || {
        let lines = read_jsonl(&p.out);
        lines
            .iter()
            .any(|l| l["after"]["v"] == "sentinel")
            .then_some(lines)
    })
    .unwrap_or_else(|| panic!("the sentinel never came:\n{}", p.weir.log()));
    assert_eq!(lines.len(), 3000 + 3 + 10 + 2, "{}", p.weir.log());
    // Every read before every change, each row once.
    let first_change = lines.iter().position(|l| l["op"] != "read").unwrap();
    assert_eq!(first_change, 3013);
    let mut read = ids(&lines, "items", "read");
    read.sort_unstable();
    assert_eq!(read, (1..=3000).collect::<Vec<_>>());
    let v1 = lines
        .iter()
        .find(|l| l["op"] == "read" && l["after"]["id"] == 1)
        .unwrap();
    assert_eq!(
        v1["after"]["v"], "v1",
        "the snapshot shows the row as it was"
    );
    assert_eq!(v1["source"]["snapshot"], true, "{v1}");
    assert!(lines[3013]["source"].get("snapshot").is_none());
    let pairs: BTreeSet<(i64, String)> = lines
        .iter()
        .filter(|l| l["table"] == "pairs")
        .map(|l| {
            (
                l["after"]["a"].as_i64().unwrap(),
                l["after"]["b"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(pairs.len(), 3);
    assert_eq!(lines.iter().filter(|l| l["table"] == "loose").count(), 10);
    assert_eq!(lines[3013]["op"], "update");
    assert_eq!(lines[3014]["op"], "insert");
    assert_eq!(snapshot_state(&db), "done");

    // What /status and /metrics say of it once delivered.
    let status = http_json(&http_get(admin, "/status"));
    let snapshot = &status["snapshot"];
    assert_eq!(snapshot["state"], "delivered", "{status}");
    assert_eq!(snapshot["rows"], 3013, "{status}");
    let per_table: Vec<(String, u64, bool)> = snapshot["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                t["rows"].as_u64().unwrap(),
                t["chunks_done"] == t["chunks"],
            )
        })
        .collect();
    assert_eq!(
        per_table,
        [
            ("public.empty".to_owned(), 0, true),
            ("public.items".to_owned(), 3000, true),
            ("public.loose".to_owned(), 10, true),
            ("public.pairs".to_owned(), 3, true),
        ]
    );
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("weir_snapshot_rows{table=\"public.items\",request=\"0\"} 3000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nweir_snapshot_delivered 1\n"),
        "{metrics}"
    );

    // And what `weir snapshot status` prints of it, outside a terminal.
    let out = std::process::Command::new(weir_bin())
        .args(["snapshot", "status", "--once", "--config"])
        .arg(&p.config)
        .output()
        .expect("run weir snapshot status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("public.items: delivered, 3000/"), "{text}");
    assert!(text.contains("delivered: 3013 rows"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_during_the_snapshot_resumes_it_and_loses_nothing() {
    let db = TestDb::new("snapkill", TABLES).await;
    db.exec("INSERT INTO items SELECT g, repeat('p', 100) FROM generate_series(1, 400000) g")
        .await;
    // One worker and small batches to the file, so the kill lands while
    // the snapshot is still being delivered.
    let mut p = FilePipeline::start(
        &db,
        &["public.items"],
        "snapshot_workers = 1",
        "[pipeline]\nmax_batch = 256\n",
    );
    wait_for(Duration::from_secs(120), || {
        (!read_jsonl(&p.out).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the snapshot did not start:\n{}", p.weir.log()));
    p.weir.kill9();
    assert_eq!(snapshot_state(&db), "running", "killed before it finished");
    db.exec("INSERT INTO items VALUES (400001, 'between runs')")
        .await;
    let weir = WeirProcess::start(&p.config, &[]);
    // The second run resumes: the stream from the consistent point (which
    // has the row written between the runs) and the chunks not yet
    // recorded delivered, read with watermarks. Once it is recorded done,
    // every chunk is durable in the file.
    wait_for(Duration::from_secs(180), || {
        (snapshot_state(&db) == "done").then_some(())
    })
    .unwrap_or_else(|| panic!("the snapshot was not recorded done:\n{}", weir.log()));
    let got: BTreeSet<i64> = read_jsonl(&p.out)
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect();
    let missing: Vec<i64> = (1..=400001)
        .filter(|id| !got.contains(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "rows never delivered, first ones: {missing:?}"
    );
    assert!(
        weir.log()
            .contains("resuming with the chunks not yet delivered"),
        "{}",
        weir.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_only_stops_after_the_snapshot() {
    let db = TestDb::new("snaponly", TABLES).await;
    db.exec("INSERT INTO items SELECT g, 'v' FROM generate_series(1, 500) g")
        .await;
    let mut p = FilePipeline::start(&db, &["public.items"], "snapshot = \"initial_only\"", "");
    let exited = wait_for(Duration::from_secs(60), || {
        (!p.weir.is_running()).then_some(())
    });
    assert!(exited.is_some(), "weir kept running:\n{}", p.weir.log());
    let status = p.weir.terminate().expect("an exit status");
    assert!(status.success(), "{}", p.weir.log());
    assert_eq!(ids(&read_jsonl(&p.out), "items", "read").len(), 500);
    assert_eq!(snapshot_state(&db), "done");
}

/// `weir snapshot status` in a terminal (a pseudo-terminal from
/// `script`): one live bar per table, redrawn until the snapshot is
/// delivered, then the total.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_status_in_a_terminal_draws_a_bar_per_table_until_delivered() {
    let db = TestDb::new("snaptty", TABLES).await;
    db.exec(
        "INSERT INTO items SELECT g, repeat('p', 100) FROM generate_series(1, 200000) g;
         INSERT INTO pairs VALUES (1, 'x'), (2, 'y');",
    )
    .await;
    let admin = free_port();
    // Small chunks, one worker and small batches: the snapshot takes a
    // few seconds, so the view sees it running.
    let p = FilePipeline::start(
        &db,
        &["public.items", "public.pairs"],
        "snapshot_workers = 1\nsnapshot_chunk_pages = 16",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n[pipeline]\nmax_batch = 256\n"),
    );
    wait_for(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", admin))
            .ok()
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("the admin API did not start:\n{}", p.weir.log()));
    // The view starts once the snapshot shows (it says "no snapshot"
    // before).
    wait_for(Duration::from_secs(60), || {
        let status = http_json(&http_get(admin, "/status"));
        status["snapshot"]["tables"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the snapshot did not show:\n{}", p.weir.log()));
    let command = format!(
        "{} snapshot status --config {}",
        weir_bin().display(),
        p.config.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run weir snapshot status under script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}\n{}", p.weir.log());
    // The live view, not the plain lines `--once` and pipes get.
    assert!(!screen.contains("public.items: "), "{screen}");
    for table in ["public.items", "public.pairs"] {
        assert!(screen.contains(table), "no bar for {table}:\n{screen}");
    }
    assert!(screen.contains("=]"), "no full bar:\n{screen}");
    assert!(screen.contains("200000/200000 rows"), "{screen}");
    assert!(screen.contains("2/2 rows"), "{screen}");
    assert!(screen.contains("delivered: 200002 rows"), "{screen}");
}
