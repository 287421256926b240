//! Transactions streamed before their commit (protocol 2): the database
//! sets `logical_decoding_work_mem` to its least (64 kB), so the
//! walsender streams every transaction of more than a few hundred rows,
//! and Weir holds 64 KiB in memory, so it spills them.

use std::path::{Path, PathBuf};

use tokio_postgres::Client;
use weir_core::{Op, Value};
use weir_postgres::PostgresConfig;

use crate::common::*;

/// A database whose walsenders stream early, a table `big`, and a
/// streaming config spilling into `spill`.
async fn streaming_db(spill: &Path) -> (TestDb, Client, PostgresConfig) {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "ALTER DATABASE {} SET logical_decoding_work_mem = '64kB'; \
             CREATE TABLE big (id int8 PRIMARY KEY, pad text NOT NULL)",
            db.name
        ))
        .await
        .unwrap();
    let slot = db.slot();
    let config = PostgresConfig {
        streaming: true,
        streaming_memory: 64 << 10,
        spill_dir: spill.to_owned(),
        ..db.config(&slot, &["big"])
    };
    (db, client, config)
}

/// The spill files under `spill`, of any stream.
fn spill_files(spill: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(spill) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|f| f.flatten().map(|e| e.path()))
        .collect()
}

fn ids(txn: &Txn) -> Vec<i64> {
    txn.changes
        .iter()
        .map(
            |c| match c.after.as_ref().or(c.before.as_ref()).map(|r| &r[0]) {
                Some(Value::Int(id)) => *id,
                other => panic!("{other:?} in {c:?}"),
            },
        )
        .collect()
}

fn insert_range(from: i64, to: i64) -> String {
    format!("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series({from}, {to}) g")
}

async fn wait_for_spill(spill: &Path) {
    eventually("a streamed transaction spilled to disk", || async {
        !spill_files(spill).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_transaction_arrives_whole_at_its_commit_after_those_committed_first() {
    let spill = tempfile::tempdir().unwrap();
    let (db, client, config) = streaming_db(spill.path()).await;
    let mut running = Running::start(config).await;
    let big = db.client().await;
    big.batch_execute(&format!("BEGIN; {}", insert_range(1, 20000)))
        .await
        .unwrap();
    // Streamed while still open: Weir holds it, past its memory on disk.
    wait_for_spill(spill.path()).await;
    client
        .batch_execute("INSERT INTO big VALUES (-1, 'small')")
        .await
        .unwrap();
    let small = running.txn().await;
    assert_eq!(
        ids(&small),
        vec![-1],
        "the small transaction is not held back"
    );
    running.ack.send_replace(small.commit.end_lsn);
    // A change of shape inside the streamed transaction.
    big.batch_execute(
        "ALTER TABLE big ADD COLUMN extra int8 NOT NULL DEFAULT 7; \
         INSERT INTO big VALUES (20001, 'y', 8); COMMIT",
    )
    .await
    .unwrap();
    let whole = running.txn().await;
    assert_eq!(ids(&whole), (1..=20001).collect::<Vec<_>>());
    assert!(whole.changes.iter().all(|c| c.op == Op::Insert));
    assert_eq!(
        whole.changes[0].after.as_ref().unwrap()[1],
        Value::Text("x".repeat(200))
    );
    let last = whole.changes.last().unwrap();
    assert_eq!(last.table.as_ref().unwrap().columns.len(), 3);
    assert_eq!(last.after.as_ref().unwrap()[2], Value::Int(8));
    assert!(whole.begin.commit_lsn > small.commit.end_lsn);
    running.ack.send_replace(whole.commit.end_lsn);
    assert!(spill_files(spill.path()).is_empty(), "its file is gone");
    // After it, the table's new shape holds outside it too.
    client
        .batch_execute("INSERT INTO big VALUES (-2, 'after', 9)")
        .await
        .unwrap();
    let after = running.txn().await;
    assert_eq!(after.changes[0].after.as_ref().unwrap()[2], Value::Int(9));
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_streamed_transaction_and_a_rolled_back_savepoint_leave_no_trace() {
    let spill = tempfile::tempdir().unwrap();
    let (db, client, config) = streaming_db(spill.path()).await;
    let mut running = Running::start(config).await;
    let other = db.client().await;
    // Aborted after being streamed (and spilled).
    other
        .batch_execute(&format!("BEGIN; {}", insert_range(1, 20000)))
        .await
        .unwrap();
    wait_for_spill(spill.path()).await;
    other.batch_execute("ROLLBACK").await.unwrap();
    eventually("the aborted transaction's file removed", || async {
        spill_files(spill.path()).is_empty()
    })
    .await;
    // A savepoint rolled back, inside a streamed transaction that commits;
    // a deletion and an update in the part that stays.
    client
        .batch_execute(&format!(
            "BEGIN; {}; SAVEPOINT s; {}; DELETE FROM big WHERE id = 100001; \
             ROLLBACK TO SAVEPOINT s; {}; UPDATE big SET pad = 'u' WHERE id = 100002; \
             SAVEPOINT t; {}; RELEASE SAVEPOINT t; COMMIT",
            insert_range(100001, 101000),
            insert_range(200001, 220000),
            insert_range(300001, 301000),
            insert_range(400001, 400010),
        ))
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO big VALUES (-1, 'end')")
        .await
        .unwrap();
    let kept = running.txn().await;
    let want: Vec<i64> = (100001..=101000)
        .chain(300001..=301000)
        .chain([100002])
        .chain(400001..=400010)
        .collect();
    assert_eq!(ids(&kept), want);
    assert_eq!(kept.changes[2000].op, Op::Update);
    let end = running.txn().await;
    assert_eq!(ids(&end), vec![-1], "nothing else was delivered");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_broken_inside_a_streamed_transaction_gets_it_whole_once_committed() {
    let spill = tempfile::tempdir().unwrap();
    let (db, client, config) = streaming_db(spill.path()).await;
    let running = Running::start(config.clone()).await;
    let big = db.client().await;
    big.batch_execute(&format!("BEGIN; {}", insert_range(1, 20000)))
        .await
        .unwrap();
    wait_for_spill(spill.path()).await;
    // Gone without acknowledging anything: the next stream starts at the
    // slot's position again, before the transaction.
    running.stop().await.unwrap();
    big.batch_execute(&format!("{}; COMMIT", insert_range(20001, 30000)))
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO big VALUES (-1, 'end')")
        .await
        .unwrap();
    let mut running = Running::start(config).await;
    let whole = running.txn().await;
    assert_eq!(ids(&whole), (1..=30000).collect::<Vec<_>>());
    let end = running.txn().await;
    assert_eq!(ids(&end), vec![-1]);
    running.stop().await.unwrap();
}
