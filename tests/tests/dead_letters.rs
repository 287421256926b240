//! Failure policies: a plugin that traps, loops or hoards memory on one
//! change, with `on_failure = "dead-letter"`, sends that change (with the
//! plugin, its version and the error) to the dead-letter sink, and the
//! pipeline goes on and acknowledges past it; with `skip` the change is
//! left out and counted; and a plugin failing too often trips its circuit
//! breaker, which halts the pipeline. A batch that fails only because it
//! is large blames no change. Components importing files or the network
//! without a grant are refused while the pipeline runs on.

use std::time::Duration;

use weir_core::Lsn;
use weir_tests::*;

fn commit_of(line: &Json) -> Lsn {
    line["source"]["commit_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn ids(lines: &[Json]) -> Vec<i64> {
    lines
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_plugins_fail_on_are_dead_lettered_and_the_rest_flows() {
    let db = TestDb::new("dead_letter", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let hostile = |name: &str, file: &str, culprit: i64, extra: &str| {
        format!(
            "[[transforms]]\nname = {name:?}\npath = {:?}\non_failure = \"dead-letter\"\n{extra}\nconfig = {{ trap_on_id = \"{culprit}\" }}\n",
            plugin(file)
        )
    };
    let body = format!(
        "{}{}{}\n[dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        hostile("trapper", "trap", 5, ""),
        hostile("spinner", "spin", 6, "timeout = \"300ms\""),
        hostile("hoarder", "memory-bomb", 7, "memory_limit_mib = 16"),
    );
    let mut p = FilePipeline::start(&db, &["t"], "", &body);

    for ids in ["1, 2", "3, 4, 5", "6", "7, 8", "9, 10"] {
        let rows: Vec<String> = ids.split(", ").map(|i| format!("({i}, 'v{i}')")).collect();
        db.exec(&format!("INSERT INTO t VALUES {}", rows.join(", ")))
            .await;
    }

    let out = wait_lines(&p.out, 7, Duration::from_secs(90));
    assert_eq!(ids(&out), [1, 2, 3, 4, 8, 9, 10], "{}", p.weir.log());
    let letters = wait_lines(&dlq, 3, Duration::from_secs(30));
    assert_eq!(letters.len(), 3, "{letters:?}");
    let expected = [
        ("trapper", 5, "trapped"),
        (
            "spinner",
            6,
            "was stopped after running for more than 300ms",
        ),
        ("hoarder", 7, "memory limit of 16777216 bytes"),
    ];
    for (letter, (plugin, id, error)) in letters.iter().zip(expected) {
        assert_eq!(letter["plugin"], plugin, "{letter}");
        assert_eq!(letter["plugin_kind"], "transform");
        assert_eq!(letter["plugin_version"].as_str().unwrap().len(), 12);
        assert!(
            letter["error"].as_str().unwrap().contains(error),
            "{letter}"
        );
        // The original change, in the native envelope.
        assert_eq!(letter["event"]["after"]["id"], id, "{letter}");
        assert_eq!(letter["event"]["after"]["v"], format!("v{id}"));
        assert_eq!(letter["event"]["op"], "insert");
        assert!(letter["failed_at"].as_str().unwrap().ends_with('Z'));
    }

    // Dead letters count as delivered: the slot moves past everything.
    let last = commit_of(&out[6]);
    wait_for(Duration::from_secs(30), || {
        db.confirmed_flush().filter(|l| *l > last)
    })
    .unwrap_or_else(|| panic!("not acknowledged past {last}:\n{}", p.weir.log()));
    assert!(p.weir.is_running());
    assert!(http_get(admin, "/health").starts_with("HTTP/1.1 200"));
    let metrics = http_get(admin, "/metrics");
    for plugin in ["trapper", "spinner", "hoarder"] {
        assert!(
            metrics.contains(&format!(
                "weir_plugin_failures_total{{plugin=\"{plugin}\",action=\"dead-letter\"}} 1"
            )),
            "{metrics}"
        );
    }
    let status = http_json(&http_get(admin, "/plugins"));
    assert_eq!(status["trapper"]["dead_lettered"], 1, "{status}");
    assert_eq!(status["trapper"]["on_failure"], "dead-letter");

    // Components wanting files or the network without a grant are refused,
    // naming the import, and the pipeline stays up with what it runs.
    for (file, import) in [
        ("filesystem", "wasi:filesystem/"),
        ("network", "wasi:sockets/"),
    ] {
        let bytes = std::fs::read(plugin(file)).unwrap();
        let refused = http(admin, "PUT", "/plugins/trapper", &bytes);
        assert!(refused.starts_with("HTTP/1.1 422"), "{refused}");
        assert!(refused.contains(import), "{refused}");
    }
    db.exec("INSERT INTO t VALUES (11, 'v11')").await;
    let out = wait_lines(&p.out, 8, Duration::from_secs(60));
    assert_eq!(out[7]["after"]["id"], 11);
    assert!(http_get(admin, "/health").starts_with("HTTP/1.1 200"));
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn skipped_changes_are_counted_and_the_breaker_halts_a_failing_plugin() {
    // No primary key: the same id can be inserted again, to fail again.
    let db = TestDb::new("breaker", "CREATE TABLE t (id int, v text)").await;
    let admin = free_port();
    let body = format!(
        "[[transforms]]\nname = \"trapper\"\npath = {:?}\non_failure = \"skip\"\nbreaker = {{ max_failures = 2, window = \"10m\" }}\nconfig = {{ trap_on_id = \"5\" }}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        plugin("trap")
    );
    let p = FilePipeline::start(&db, &["t"], "", &body);
    let (out, mut weir) = (p.out.clone(), p.weir);

    db.exec("INSERT INTO t VALUES (4, 'a'), (5, 'b'), (6, 'c')")
        .await;
    let lines = wait_lines(&out, 2, Duration::from_secs(60));
    assert_eq!(ids(&lines), [4, 6]);
    let skipped = wait_for(Duration::from_secs(10), || {
        let m = http_get(admin, "/metrics");
        m.contains("weir_plugin_failures_total{plugin=\"trapper\",action=\"skip\"} 1")
            .then_some(m)
    });
    assert!(skipped.is_some(), "{}", http_get(admin, "/metrics"));
    assert!(weir.log().contains("skipped a change the plugin failed on"));

    // The second failure is tolerated; the third within the window trips
    // the breaker, and the pipeline halts before that change's transaction
    // is acknowledged.
    db.exec("INSERT INTO t VALUES (5, 'again')").await;
    db.exec("INSERT INTO t VALUES (7, 'd')").await;
    wait_lines(&out, 3, Duration::from_secs(60));
    let before_trip = db.current_wal_lsn();
    db.exec("INSERT INTO t VALUES (5, 'third time')").await;
    let log = wait_for(Duration::from_secs(60), || {
        let log = weir.log();
        log.contains("pipeline halted").then_some(log)
    })
    .unwrap_or_else(|| panic!("the breaker did not trip:\n{}", weir.log()));
    assert!(
        log.contains("plugin trapper failed 3 times within 10m") && log.contains("circuit breaker"),
        "{log}"
    );
    let health = http_get(admin, "/health");
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    let trip_commit: Lsn = log
        .split("commit LSN ")
        .last()
        .and_then(|rest| rest.split(',').next())
        .and_then(|lsn| lsn.parse().ok())
        .unwrap_or_else(|| panic!("the report names the commit LSN:\n{log}"));
    assert!(trip_commit > before_trip);
    let acked = db.confirmed_flush().unwrap();
    assert!(
        acked <= trip_commit,
        "acknowledged {acked}, past the transaction that tripped the breaker ({trip_commit})"
    );
    assert_eq!(ids(&read_jsonl(&out)), [4, 6, 7]);
    let status = weir.terminate().expect("exit status");
    assert_eq!(status.code(), Some(2), "{}", weir.log());
    // Stopping does not acknowledge it either: the final status update
    // reports what was delivered, not what was received.
    let acked = db.confirmed_flush().unwrap();
    assert!(
        acked <= trip_commit,
        "acknowledged {acked} at shutdown, past the transaction that tripped the breaker ({trip_commit})\n{}",
        weir.log()
    );
    assert_eq!(ids(&read_jsonl(&out)), [4, 6, 7]);
}

/// A plugin that needs memory for every change of a call fails a large
/// batch, yet no change is to blame: the batch goes on in smaller calls,
/// nothing is dead-lettered, and every change comes out. A change that
/// fails alone in the same batch is still dead-lettered, alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_failing_for_its_size_blames_no_change() {
    const ROWS: i64 = 2000;
    const CULPRIT: i64 = 1500;
    let db = TestDb::new("batch_size", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    // 64 KiB per change against 16 MiB: a call of a few hundred changes
    // fits, the transaction's batches of up to 4096 do not.
    let body = format!(
        "[[transforms]]\nname = \"hog\"\npath = {:?}\non_failure = \"dead-letter\"\nmemory_limit_mib = 16\nconfig = {{ kib_per_change = \"64\", trap_on_id = \"{CULPRIT}\" }}\n\n[dead_letter]\nsink = \"dlq\"\n\n[sinks.dlq]\ntype = \"file\"\npath = {dlq:?}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        plugin("batch-hog")
    );
    let mut p = FilePipeline::start(&db, &["t"], "", &body);
    db.exec(&format!(
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    // A transaction after it: once it is out, everything before it is.
    db.exec("INSERT INTO t VALUES (0, 'last')").await;
    let out = wait_for(Duration::from_secs(120), || {
        let out = read_jsonl(&p.out);
        out.last()
            .is_some_and(|l| l["after"]["id"] == 0)
            .then_some(out)
    })
    .unwrap_or_else(|| panic!("the last transaction did not arrive:\n{}", p.weir.log()));
    let expected: Vec<i64> = (1..=ROWS).filter(|i| *i != CULPRIT).chain([0]).collect();
    let got = ids(&out);
    let missing: Vec<i64> = (1..=ROWS).filter(|i| !got.contains(i)).collect();
    assert_eq!(missing, [CULPRIT], "only the culprit is left out");
    assert_eq!(got, expected, "every change but the culprit, in order");
    let letters = wait_lines(&dlq, 1, Duration::from_secs(30));
    assert_eq!(letters[0]["event"]["after"]["id"], CULPRIT);
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("memory limit of 16777216 bytes"),
        "{}",
        letters[0]
    );
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("weir_plugin_failures_total{plugin=\"hog\",action=\"dead-letter\"} 1\n"),
        "{metrics}"
    );
    // The batches were too large for one call, which the log tells, and
    // later calls are cut up front, which `/status` tells.
    let status = http_json(&http_get(admin, "/status"));
    let per_call = status["plugins"]["hog"]["per_call"].as_u64();
    assert!(
        per_call.is_some_and(|n| (1..4096).contains(&n)),
        "calls are not cut: {status:#}"
    );
    let log = p.weir.log();
    assert!(
        log.contains("a batch failed for its size"),
        "no batch was too large for one call:\n{log}"
    );
    p.stop_cleanly();
    let letters = read_jsonl(&dlq);
    assert_eq!(letters.len(), 1, "{letters:#?}");
}
