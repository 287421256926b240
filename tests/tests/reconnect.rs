//! The replication connection drops in the middle of a large transaction
//! (the walsender is terminated). Weir reconnects by itself, the cut-off
//! transaction is delivered again from its start, and acknowledgement
//! keeps moving afterwards instead of waiting forever for a commit that
//! the old connection will never bring.

use std::collections::HashSet;
use std::time::Duration;

use weir_core::Lsn;
use weir_tests::*;

const BIG: i64 = 30_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_mid_transaction_resumes_and_keeps_acknowledging() {
    let db = TestDb::new(
        "reconnect",
        "CREATE TABLE t (id bigint PRIMARY KEY, pad text)",
    )
    .await;
    let p = FilePipeline::start(
        &db,
        &["t"],
        "",
        &format!("{}\n[pipeline]\nmax_batch = 256\n", passthrough()),
    );
    let (out, mut weir) = (p.out.clone(), p.weir);

    db.exec(&format!(
        "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {BIG}) g"
    ))
    .await;
    // Cut the connection while the big transaction is being delivered.
    wait_for(Duration::from_secs(120), || {
        let n = read_jsonl(&out).len() as i64;
        (n > 0).then_some(n)
    })
    .unwrap_or_else(|| panic!("nothing delivered:\n{}", weir.log()));
    let killed = psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{}'",
            db.slot
        ),
    )
    .unwrap();
    assert_eq!(killed, "t", "the walsender was terminated");
    let lines_at_cut = read_jsonl(&out).len() as i64;

    db.exec("INSERT INTO t VALUES (0, 'after the reconnect')")
        .await;
    let lines = wait_for(Duration::from_secs(180), || {
        let lines = read_jsonl(&out);
        let ids: HashSet<i64> = lines
            .iter()
            .map(|l| l["after"]["id"].as_i64().unwrap())
            .collect();
        (ids.len() as i64 == BIG + 1).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every row arrived after the reconnect ({} lines):\n{}",
            read_jsonl(&out).len(),
            weir.log()
        )
    });
    assert!(weir.log().contains("reconnect"), "{}", weir.log());
    let last_commit: Lsn = lines.last().unwrap()["source"]["commit_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        db.confirmed_flush().filter(|l| *l > last_commit)
    })
    .unwrap_or_else(|| {
        panic!(
            "acknowledgement stalled after the reconnect at {:?} (last commit {last_commit}; {lines_at_cut} lines at the cut)\n{}",
            db.confirmed_flush(),
            weir.log()
        )
    });
    let status = weir.terminate().expect("exit status");
    assert!(status.success(), "{}", weir.log());
}
