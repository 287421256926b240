//! Real events for plugin tests: `weir plugin record` writes rows of a
//! live table as `read` events that `weir plugin test` takes, and what a
//! file sink wrote is an events file as it is.

use std::path::Path;
use std::time::Duration;

use weir_tests::*;

/// Runs `weir ARGS`; whether it succeeded, its stdout and its stderr.
fn weir(args: &[&str]) -> (bool, String, String) {
    let run = weir_in(&repo_root(), args);
    (run.status.success(), run.stdout, run.stderr)
}

fn json_lines(text: &str) -> Vec<Json> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// What `weir plugin test` with the passthrough plugin answered for each
/// event of `events`.
fn passthrough_answers(events: &Path) -> Vec<Json> {
    let wasm = plugin("passthrough");
    let (ok, out, err) = weir(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    json_lines(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn record_writes_rows_of_a_live_table_as_read_events() {
    let db = TestDb::new(
        "record",
        "CREATE TABLE users (id int PRIMARY KEY, email text, note text, seen timestamptz);
         INSERT INTO users SELECT g, 'u' || g || '@x.org', CASE WHEN g % 2 = 0 THEN 'even' END,
           '2026-12-01 10:00:00+00' FROM generate_series(1, 2500) g;
         CREATE TABLE keyless (v text);
         INSERT INTO keyless VALUES ('a'), ('b'), ('c');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n",
            db.source_toml(&["users"])
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let record = |extra: &[&str]| {
        let mut args = vec!["plugin", "record", "--config", config];
        args.extend(extra);
        weir(&args)
    };

    // More rows than one round trip reads, in key order.
    let (ok, out, err) = record(&["--table", "users", "--limit", "1500"]);
    assert!(ok, "{err}");
    assert!(err.contains("recorded 1500 row(s) of users"), "{err}");
    let events = json_lines(&out);
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=1500).collect::<Vec<_>>());
    assert_eq!(
        events[1],
        serde_json::json!({
            "op": "read", "schema": "public", "table": "users", "key": {"id": 2}, "before": null,
            "after": {"id": 2, "email": "u2@x.org", "note": "even", "seen": "2026-12-01T10:00:00Z"},
            "source": events[1]["source"].clone(),
        })
    );
    assert_eq!(events[1]["source"]["snapshot"], true);
    assert_eq!(events[1]["source"]["seq"], 1);
    // One snapshot: one source position for every row.
    assert!(
        events
            .iter()
            .all(|e| e["source"]["commit_lsn"] == events[0]["source"]["commit_lsn"])
    );

    // What it wrote is an events file for `weir plugin test`.
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, &out).unwrap();
    let answers = passthrough_answers(&file);
    assert_eq!(answers.len(), 1500);
    assert!(
        answers.iter().all(|a| a["outcome"] == "keep"),
        "{:?}",
        answers[0]
    );

    let (ok, out, err) = record(&["--table", "public.users", "--where", "id % 1000 = 0"]);
    assert!(ok, "{err}");
    let ids: Vec<i64> = json_lines(&out)
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1000, 2000]);

    let (ok, out, err) = record(&["--table", "keyless", "--limit", "2"]);
    assert!(ok, "{err}");
    assert_eq!(json_lines(&out).len(), 2);

    // Mistakes are named.
    let (ok, _, err) = record(&["--table", "users", "--where", "nope ="]);
    assert!(!ok);
    assert!(
        err.contains("--where \"nope =\" is not a valid condition on public.users"),
        "{err}"
    );
    let (ok, _, err) = record(&["--table", "missing"]);
    assert!(!ok);
    assert!(err.contains("no such table"), "{err}");
    let (ok, _, err) = record(&["--table", "public.*"]);
    assert!(!ok);
    assert!(err.contains("a pattern, not one table"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_sinks_output_is_an_events_file_as_it_is() {
    let db = TestDb::new(
        "sink_events",
        "CREATE TABLE t (id int PRIMARY KEY, v text, big text);
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;",
    )
    .await;
    let mut p = FilePipeline::start(&db, &["t"], "", &passthrough());
    db.exec(
        "INSERT INTO t VALUES (1, 'a', repeat('x', 10000)), (2, 'b', NULL);
         UPDATE t SET v = 'c' WHERE id = 1;
         DELETE FROM t WHERE id = 2;",
    )
    .await;
    let lines = wait_lines(&p.out, 4, Duration::from_secs(60));
    p.stop_cleanly();
    // The update left the TOASTed column unsent.
    assert_eq!(
        lines[2]["after"]["big"],
        serde_json::json!({"$unchanged": true})
    );
    let answers = passthrough_answers(&p.out);
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    let numbered: Vec<u64> = answers
        .iter()
        .map(|a| a["line"].as_u64().unwrap())
        .collect();
    assert_eq!(numbered, (1..=lines.len() as u64).collect::<Vec<_>>());
    assert!(
        answers.iter().all(|a| a["outcome"] == "keep"),
        "{answers:?}"
    );
}
