//! Shadow deploys, through `weir plugin deploy --shadow`, `shadow`,
//! `promote` and `discard` against a running pipeline: a shadow that
//! changes one column reports exactly the changes it would deliver
//! differently and delivers nothing; a shadow that traps or loops leaves
//! delivery as it was; a promotion under load hands over at a transaction
//! boundary with every change delivered once, in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use weir_tests::*;

/// A pipeline with the stamp plugin (version 0) as its one transform.
fn stamped(db: &TestDb, admin: u16, extra: &str) -> (FilePipeline, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    let path = plugins.path().join("stamp.wasm");
    std::fs::write(&path, stamp_version(0)).unwrap();
    let body = format!(
        "[[transforms]]\nname = \"stamp\"\npath = {path:?}\n{extra}\n[pipeline]\nmax_batch = 2\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    (
        running(FilePipeline::start(db, &["t"], "", &body), admin),
        plugins,
    )
}

/// `p` once its pipeline runs: the slot exists a moment before (the
/// initial snapshot is recorded in between), and deploys wait for it.
fn running(p: FilePipeline, admin: u16) -> FilePipeline {
    wait_for(Duration::from_secs(30), || {
        http_get(admin, "/status")
            .contains("\"state\":\"running\"")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the pipeline never ran:\n{}", p.weir.log()));
    p
}

/// Runs `weir plugin ARGS… --admin` against the pipeline's endpoint.
fn cli(admin: u16, args: &[&str]) -> (i32, String) {
    let url = format!("http://127.0.0.1:{admin}");
    let mut all = args.to_vec();
    all.extend(["--admin", &url]);
    let mut full = vec!["plugin"];
    full.extend(all);
    let (status, out) = run_weir(&full, Duration::from_secs(120));
    (status.code().unwrap_or(-1), out)
}

fn write_component(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

fn shadow_report(admin: u16) -> Json {
    http_json(&http_get(admin, "/plugins/stamp/shadow"))
}

/// Waits until the shadow has answered `n` changes (`failed` of them
/// failed), and returns its report.
fn answered(admin: u16, n: u64, failed: u64, log: impl Fn() -> String) -> Json {
    wait_for(Duration::from_secs(60), || {
        let report = shadow_report(admin);
        let c = &report["counts"];
        let total: u64 = ["same", "changed", "dropped", "failed", "skipped"]
            .iter()
            .map(|k| c[k].as_u64().unwrap_or(0))
            .sum();
        (total >= n && c["failed"].as_u64() >= Some(failed)).then_some(report)
    })
    .unwrap_or_else(|| {
        panic!(
            "the shadow never answered {n} changes: {}\n{}",
            shadow_report(admin),
            log()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_reports_exactly_what_it_would_change_and_delivers_nothing() {
    let db = TestDb::new("shadow_diff", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let admin = free_port();
    let (mut p, plugins) = stamped(&db, admin, "");

    // Before any shadow: the endpoint says there is none, and why.
    let none = http_get(admin, "/plugins/stamp/shadow");
    assert!(none.starts_with("HTTP/1.1 404"), "{none}");
    assert!(
        http_json(&none)["error"]
            .as_str()
            .unwrap()
            .contains("has no shadow version")
    );
    let unknown = http_get(admin, "/plugins/nope/shadow");
    assert!(
        http_json(&unknown)["error"]
            .as_str()
            .unwrap()
            .contains("configured: stamp"),
        "{unknown}"
    );
    let (code, out) = cli(admin, &["promote", "stamp"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("has no shadow version"), "{out}");
    let bad_mode = http(admin, "PUT", "/plugins/stamp?mode=canary", b"x");
    assert!(bad_mode.starts_with("HTTP/1.1 400"), "{bad_mode}");

    let shadow = write_component(plugins.path(), "stamp-1.wasm", &stamp_version(1));
    let (code, out) = cli(admin, &["deploy", "stamp", &shadow, "--shadow"]);
    assert_eq!(code, 0, "{out}\n{}", p.weir.log());
    assert!(out.contains("runs beside"), "{out}");

    // The stamp plugin changes `v` when it is text: 10 of these 25 changes.
    for id in 0..20 {
        let v = if id % 2 == 0 { "'x'" } else { "NULL" };
        db.exec(&format!("INSERT INTO t VALUES ({id}, {v})")).await;
    }
    db.exec("DELETE FROM t WHERE id < 5").await;
    let lines = wait_lines(&p.out, 25, Duration::from_secs(60));
    let report = answered(admin, 25, 0, || p.weir.log());
    assert_eq!(
        report["counts"],
        serde_json::json!({"same": 15, "changed": 10, "dropped": 0, "failed": 0, "skipped": 0}),
        "{report}"
    );
    assert_eq!(report["state"], "running");
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 10, "{report}");
    for (sample, id) in samples.iter().zip((0..20).step_by(2)) {
        assert_eq!(sample["verdict"], "changed");
        assert_eq!(sample["change"]["after"]["id"], id, "{sample}");
        assert_eq!(sample["running"]["outcome"], "replace", "{sample}");
        let v = |answer: &Json| answer["emits"][0]["change"]["after"]["v"].clone();
        assert_eq!(v(&sample["running"]), "x@weir-stamp:000", "{sample}");
        assert_eq!(v(&sample["shadow"]), "x@weir-stamp:001", "{sample}");
    }
    // Only the running version's output reached the sink.
    for line in &lines {
        if let Some(v) = line["after"]["v"].as_str() {
            assert_eq!(v, "x@weir-stamp:000", "{line}");
        }
    }

    let (code, out) = cli(admin, &["shadow", "stamp"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("same 15, changed 10, dropped 0, failed 0, skipped 0"),
        "{out}"
    );
    let (code, out) = cli(admin, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("same 15 changed 10"), "{out}");
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.contains("verdict=\"changed\"} 10"), "{metrics}");

    let (code, out) = cli(admin, &["discard", "stamp"]);
    assert_eq!(code, 0, "{out}");
    assert!(http_get(admin, "/plugins/stamp/shadow").starts_with("HTTP/1.1 404"));
    // The plugin's file was never touched.
    assert_eq!(
        std::fs::read(plugins.path().join("stamp.wasm")).unwrap(),
        stamp_version(0)
    );

    // While the source is idle, a deploy takes over at once: no change
    // has to come first.
    let (code, out) = cli(admin, &["deploy", "stamp", &shadow]);
    assert_eq!(code, 0, "{out}\n{}", p.weir.log());
    assert!(out.contains("runs (was"), "{out}");
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_that_traps_or_loops_leaves_delivery_untouched() {
    let db = TestDb::new(
        "shadow_hostile",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    )
    .await;
    let admin = free_port();
    // The shadow gets the running plugin's configuration and limits: the
    // hostile plugins read `trap_on_id`, the stamp plugin ignores it.
    let (mut p, plugins) = stamped(
        &db,
        admin,
        "timeout = \"2s\"\nconfig = { trap_on_id = \"3\" }\n",
    );

    // A shadow that traps on one change.
    let trap = std::fs::read(plugin("trap")).unwrap();
    let trap = write_component(plugins.path(), "trap.wasm", &trap);
    let (code, out) = cli(admin, &["deploy", "stamp", &trap, "--shadow"]);
    assert_eq!(code, 0, "{out}");
    for id in 0..10 {
        db.exec(&format!("INSERT INTO t VALUES ({id}, 'a')")).await;
    }
    let lines = wait_lines(&p.out, 10, Duration::from_secs(60));
    let report = answered(admin, 10, 1, || p.weir.log());
    assert_eq!(report["counts"]["failed"], 1, "{report}");
    // Every other change: the trap keeps it, the running version stamps it.
    assert_eq!(report["counts"]["changed"], 9, "{report}");
    let failed: Vec<&Json> = report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["change"]["after"]["id"], 3);
    assert!(
        failed[0]["shadow"]["error"]
            .as_str()
            .unwrap()
            .contains("trapped"),
        "{report}"
    );

    // A shadow that loops on one change until its 2 s deadline (twice: a
    // change that runs out of time is tried again on a fresh instance):
    // the changes after it queue for the shadow, or are left out for it,
    // while delivery goes on.
    let spin = std::fs::read(plugin("spin")).unwrap();
    let spin = write_component(plugins.path(), "spin.wasm", &spin);
    let (code, out) = cli(admin, &["deploy", "stamp", &spin, "--shadow"]);
    assert_eq!(code, 0, "{out}");
    db.exec("UPDATE t SET v = 'c' WHERE id = 3").await;
    for id in 10..60 {
        db.exec(&format!("INSERT INTO t VALUES ({id}, 'b')")).await;
    }
    let lines_after = wait_lines(&p.out, 61, Duration::from_secs(60));

    // Delivery is what the running version alone makes of every change.
    let plugins_state = http_json(&http_get(admin, "/plugins"));
    assert_eq!(plugins_state["stamp"]["skipped"], 0, "{plugins_state}");
    assert_eq!(
        plugins_state["stamp"]["dead_lettered"], 0,
        "{plugins_state}"
    );
    let ids: Vec<i64> = lines_after
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..10).chain([3]).chain(10..60).collect();
    assert_eq!(ids, expected);
    for line in lines.iter().chain(&lines_after) {
        assert!(
            line["after"]["v"]
                .as_str()
                .unwrap()
                .ends_with("@weir-stamp:000"),
            "{line}"
        );
    }
    let spun = answered(admin, 51, 1, || p.weir.log());
    assert_eq!(spun["counts"]["failed"], 1, "{spun}");
    assert_eq!(spun["samples"][0]["verdict"], "failed", "{spun}");
    assert_eq!(spun["samples"][0]["change"]["after"]["id"], 3, "{spun}");
    let error = spun["samples"][0]["shadow"]["error"].as_str().unwrap();
    assert!(
        error.contains("was stopped after running for more than"),
        "{spun}"
    );
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_under_load_hands_over_at_a_transaction_boundary() {
    let db = Arc::new(
        TestDb::new(
            "shadow_promote",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
        )
        .await,
    );
    let admin = free_port();
    let (mut p, plugins) = stamped(&db, admin, "");
    let load = StampLoad::start(db.clone(), 40);
    wait_lines(&p.out, 30, Duration::from_secs(60));
    let shadow = write_component(plugins.path(), "stamp-1.wasm", &stamp_version(1));
    let (code, out) = cli(admin, &["deploy", "stamp", &shadow, "--shadow"]);
    assert_eq!(code, 0, "{out}");
    let seen = answered(admin, 30, 0, || p.weir.log());
    assert_eq!(seen["counts"]["failed"], 0, "{seen}");
    let (code, out) = cli(admin, &["promote", "stamp"]);
    assert_eq!(code, 0, "{out}\n{}", p.weir.log());
    assert!(out.contains("runs (was"), "{out}");
    // The promoted version is the shadow's, and the shadow is gone.
    assert!(http_get(admin, "/plugins/stamp/shadow").starts_with("HTTP/1.1 404"));
    assert_eq!(
        std::fs::read(plugins.path().join("stamp.wasm")).unwrap(),
        stamp_version(1)
    );

    let now = read_jsonl(&p.out).len();
    wait_lines(&p.out, now + 30, Duration::from_secs(60));
    let rows = load.stop().await;
    let lines = wait_lines(&p.out, rows, Duration::from_secs(60));
    p.stop_cleanly();

    assert_eq!(lines.len(), rows);
    let order = stamp_versions_in_order(&lines);
    assert_eq!(
        order,
        [0, 1],
        "the shadow took over once, and nothing it saw as a shadow was delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_has_shadows_too() {
    let db = TestDb::new(
        "shadow_router",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    )
    .await;
    let admin = free_port();
    let router = plugin("route-by-table");
    let body = format!(
        "[router]\nname = \"router\"\npath = {router:?}\nconfig = {{ \"route.*\" = \"out\" }}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    let mut p = running(FilePipeline::start(&db, &["t"], "", &body), admin);

    // A transform is no router: refused with the endpoint's reason, and
    // nothing changes.
    let stamp = tempfile::tempdir().unwrap();
    let stamp = write_component(stamp.path(), "stamp.wasm", &stamp_version(1));
    let (code, out) = cli(admin, &["deploy", "router", &stamp, "--shadow"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error:") && out.contains("router"), "{out}");
    assert!(http_get(admin, "/plugins/router/shadow").starts_with("HTTP/1.1 404"));

    // The same router as its own shadow agrees on every change.
    let (code, out) = cli(
        admin,
        &["deploy", "router", router.to_str().unwrap(), "--shadow"],
    );
    assert_eq!(code, 0, "{out}");
    for id in 0..12 {
        db.exec(&format!("INSERT INTO t VALUES ({id}, 'a')")).await;
    }
    wait_lines(&p.out, 12, Duration::from_secs(60));
    let report = wait_for(Duration::from_secs(60), || {
        let report = http_json(&http_get(admin, "/plugins/router/shadow"));
        (report["counts"]["same"] == 12).then_some(report)
    })
    .unwrap_or_else(|| panic!("{}", p.weir.log()));
    assert_eq!(
        report["counts"],
        serde_json::json!({"same": 12, "changed": 0, "dropped": 0, "failed": 0, "skipped": 0})
    );
    assert_eq!(report["samples"], serde_json::json!([]));
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_with_a_commit_hook_sees_one_transaction_at_a_time() {
    let db = TestDb::new("shadow_hook", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let admin = free_port();
    let plugins = tempfile::tempdir().unwrap();
    let path = write_component(plugins.path(), "stamp.wasm", &stamp_version(0));
    // Batches large enough to hold several transactions: the running
    // version (no hook) gets them in one call, the shadow's hook must still
    // see each transaction alone.
    let body = format!(
        "[[transforms]]\nname = \"stamp\"\npath = {path:?}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    let mut p = running(FilePipeline::start(&db, &["t"], "", &body), admin);
    let hook = std::fs::read(plugin("commit-hook")).unwrap();
    let hook = write_component(plugins.path(), "hook.wasm", &hook);
    let (code, out) = cli(admin, &["deploy", "stamp", &hook, "--shadow"]);
    assert_eq!(code, 0, "{out}");
    // Transactions of three rows, committed one right after the other so
    // that batches hold several.
    let txns = 20;
    for t in 0..txns {
        let id = t * 3;
        db.exec(&format!(
            "INSERT INTO t VALUES ({id}, 'a'), ({}, 'b'), ({}, 'c')",
            id + 1,
            id + 2
        ))
        .await;
    }
    wait_lines(&p.out, txns * 3, Duration::from_secs(60));
    // Every change is changed (the hook plugin keeps it, the running one
    // stamps it), and so is every transaction's hook output (the running
    // version has no hook). An empty transaction of the stream (a
    // heartbeat) may be compared too.
    let report = answered(admin, (txns * 4) as u64, 0, || p.weir.log());
    assert_eq!(report["counts"]["same"], 0, "{report}");
    assert!(
        report["counts"]["changed"].as_u64() >= Some((txns * 4) as u64),
        "{report}"
    );
    let commits: Vec<&Json> = report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("commit").is_some())
        .collect();
    assert!(!commits.is_empty(), "{report}");
    let mut whole = 0;
    for sample in commits {
        let raw = &sample["shadow"]["emits"][0]["raw"]["value"];
        let summary: Json = serde_json::from_str(raw.as_str().unwrap()).unwrap();
        assert_eq!(summary["xid"], sample["commit"]["xid"], "{sample}");
        match summary["changes"].as_u64() {
            Some(3) => whole += 1,
            Some(0) => {}
            _ => panic!("the hook saw more or less than one transaction: {sample}"),
        }
    }
    assert!(whole > 0, "{report}");
    p.stop_cleanly();
}
