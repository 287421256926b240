//! A plugin that traps, one that loops forever, one that sleeps for an
//! hour and one that allocates past its cap: Weir stays up, reports which
//! plugin failed on which change, delivers and acknowledges what came
//! before it, and acknowledges nothing from the failing transaction on.
//! A plugin sleeping when Weir is told to stop does not keep it from
//! stopping.

use std::time::{Duration, Instant};

use weir_core::Lsn;
use weir_tests::*;

async fn halts_on_the_poisoned_change(plugin_name: &str) {
    let db = TestDb::new(
        &plugin_name.replace('-', "_"),
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    )
    .await;
    let admin = free_port();
    let body = format!(
        "[[transforms]]\nname = \"hostile\"\npath = {:?}\ntimeout = \"500ms\"\nmemory_limit_mib = 16\nconfig = {{ trap_on_id = \"5\" }}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        plugin(plugin_name),
    );
    let p = FilePipeline::start(&db, &["t"], "", &body);
    let (out, config, mut weir) = (p.out.clone(), p.config.clone(), p.weir);

    db.exec("INSERT INTO t SELECT g, 'fine' FROM generate_series(1, 4) g")
        .await;
    let lines = wait_lines(&out, 4, Duration::from_secs(60));
    let good_commit: Lsn = lines[3]["source"]["commit_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        db.confirmed_flush().filter(|l| *l > good_commit)
    })
    .unwrap_or_else(|| panic!("the good transaction was not acknowledged:\n{}", weir.log()));

    let before_poison = db.current_wal_lsn();
    db.exec("INSERT INTO t VALUES (5, 'poison'), (6, 'same transaction')")
        .await;
    db.exec("INSERT INTO t VALUES (7, 'later')").await;

    let log = wait_for(Duration::from_secs(60), || {
        let log = weir.log();
        log.contains("pipeline halted").then_some(log)
    })
    .unwrap_or_else(|| panic!("weir did not report the failure:\n{}", weir.log()));
    assert!(log.contains("hostile"), "names the plugin:\n{log}");
    assert!(log.contains("id=5"), "names the change:\n{log}");
    assert!(log.contains("public.t"), "names the table:\n{log}");

    // Still up, reporting the halt; nothing from the failing transaction on
    // was delivered, and the slot still holds the failing transaction.
    std::thread::sleep(Duration::from_secs(2));
    assert!(weir.is_running(), "weir must stay up:\n{}", weir.log());
    let health = http_get(admin, "/health");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("hostile"),
        "{health}"
    );
    assert_eq!(
        read_jsonl(&out).len(),
        4,
        "no change at or after the poisoned one"
    );
    let poison_commit: Lsn = log
        .split("commit LSN ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|lsn| lsn.parse().ok())
        .unwrap_or_else(|| panic!("the report names the commit LSN:\n{log}"));
    assert!(poison_commit > before_poison);
    let acked = db.confirmed_flush().unwrap();
    assert!(
        acked <= poison_commit,
        "acknowledged {acked}, past the failing transaction committed at {poison_commit}"
    );

    let status = weir.terminate().expect("exit status");
    assert_eq!(status.code(), Some(2), "a halted pipeline exits with 2");
    assert!(db.confirmed_flush().unwrap() <= poison_commit);

    // Nothing was lost: with the plugin fixed (here: replaced by
    // passthrough), the poisoned transaction and the later one arrive.
    let fixed = std::fs::read_to_string(&config).unwrap().replace(
        plugin(plugin_name).to_str().unwrap(),
        plugin("passthrough").to_str().unwrap(),
    );
    std::fs::write(&config, fixed).unwrap();
    let mut weir = WeirProcess::start(&config, &[]);
    let lines = wait_lines(&out, 7, Duration::from_secs(60));
    let ids: Vec<i64> = lines
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7], "{}", weir.log());
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_plugin_halts_without_acknowledging() {
    halts_on_the_poisoned_change("trap").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_plugin_is_interrupted_and_halts() {
    halts_on_the_poisoned_change("spin").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_is_capped_and_halts() {
    halts_on_the_poisoned_change("memory-bomb").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sleeping_plugin_is_stopped_at_its_deadline_and_halts() {
    halts_on_the_poisoned_change("sleeper").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_plugin_sleep_stops_within_the_drain_grace() {
    // The server waits this long for queued changes before abandoning them.
    const DRAIN_GRACE: Duration = Duration::from_secs(20);
    let db = TestDb::new("sleeper_sigterm", "CREATE TABLE t (id int PRIMARY KEY)").await;
    // The default call deadline, well inside the grace.
    let body = format!(
        "[[transforms]]\nname = \"sleeper\"\npath = {:?}\ntimeout = \"5s\"\nconfig = {{ trap_on_id = \"2\" }}\n",
        plugin("sleeper"),
    );
    let p = FilePipeline::start(&db, &["t"], "", &body);
    let (out, mut weir) = (p.out.clone(), p.weir);
    db.exec("INSERT INTO t VALUES (1)").await;
    wait_lines(&out, 1, Duration::from_secs(60));

    db.exec("INSERT INTO t VALUES (2)").await;
    // Let the change reach the plugin, which then sleeps.
    std::thread::sleep(Duration::from_secs(1));
    assert!(weir.is_running(), "{}", weir.log());
    let signalled = Instant::now();
    let status = weir.terminate().expect("exit status");
    let took = signalled.elapsed();
    assert!(
        took < DRAIN_GRACE,
        "stopping took {took:?} ({status}):\n{}",
        weir.log()
    );
    // It exited by itself rather than being killed.
    assert!(status.code().is_some(), "{status}:\n{}", weir.log());
    assert_eq!(
        read_jsonl(&out).len(),
        1,
        "the slept-on change is not delivered"
    );
}
