//! The replication connection drops in the middle of a large transaction
//! (the walsender is terminated). Weir reconnects by itself, the cut-off
//! transaction is delivered again from its start, a plugin with the
//! `commit` hook summarises it exactly once per row (its instance does not
//! keep what it counted of the cut-off copy), and acknowledgement keeps
//! moving afterwards instead of waiting forever for a commit that the old
//! connection will never bring.

use std::collections::HashMap;
use std::time::Duration;

use weir_core::Lsn;
use weir_tests::*;

const BIG: i64 = 20_000;

/// What the processor logs when the stream is cut inside a transaction.
const CUT: &str = "the replication stream was cut inside a transaction";

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_mid_transaction_resumes_and_keeps_acknowledging() {
    let db = TestDb::new(
        "reconnect",
        "CREATE TABLE t (id bigint PRIMARY KEY, pad text)",
    )
    .await;
    // Each row carries 4 kB on the wire (compressed in the WAL), so the
    // transaction (80 MB) is far more than the socket buffers and Weir's
    // channels can hold: when the walsender dies, the commit cannot have
    // been sent yet. `mask` shortens the rows before the file sink.
    let body = format!(
        "[[transforms]]\nname = \"summary\"\npath = {:?}\n\n\
         [[transforms]]\npath = {:?}\nconfig = {{ columns = \"pad\", mode = \"redact\" }}\n\n\
         [pipeline]\nmax_batch = 64\nchannel_batches = 1\n",
        plugin("commit-hook"),
        plugin("mask"),
    );
    let p = FilePipeline::start(&db, &["t"], "", &body);
    let (out, mut weir) = (p.out.clone(), p.weir);

    db.exec(&format!(
        "INSERT INTO t SELECT g, repeat('x', 4000) FROM generate_series(1, {BIG}) g"
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
    // The small transaction commits after the big one: its summary arriving
    // means everything before it did.
    let lines = wait_for(Duration::from_secs(180), || {
        let lines = read_jsonl(&out);
        lines.iter().any(|l| l["changes"] == 1).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "the transaction after the reconnect did not arrive ({} lines):\n{}",
            read_jsonl(&out).len(),
            weir.log()
        )
    });
    let log = weir.log();
    assert!(log.contains("reconnect"), "{log}");
    // The cut fell inside the big transaction as the processor saw it: it
    // had changes of it and no commit.
    assert!(
        log.contains(CUT),
        "the stream was not cut mid-transaction ({lines_at_cut} lines at the cut):\n{log}"
    );

    let (summaries, changes): (Vec<&Json>, Vec<&Json>) =
        lines.iter().partition(|l| l.get("changes").is_some());
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for c in &changes {
        *seen.entry(c["after"]["id"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len() as i64, BIG + 1, "every row arrived");
    assert!(
        seen[&1] >= 2,
        "the cut-off transaction was delivered again from its start"
    );
    // One summary per delivered commit, each counting its transaction's
    // rows once: the partial copy before the cut is not counted.
    let counts: Vec<i64> = summaries
        .iter()
        .map(|s| s["changes"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [BIG, 1], "{summaries:?}");
    assert_eq!(summaries[0]["xid"], changes[0]["source"]["xid"]);

    let last_commit: Lsn = changes.last().unwrap()["source"]["commit_lsn"]
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
