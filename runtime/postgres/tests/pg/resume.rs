//! Acknowledgement and resume: the slot advances exactly to what was
//! acknowledged, restarts redeliver everything after it, and an idle
//! stream lets the slot move past WAL it has nothing to send for.

use std::time::Duration;

use weir_core::Lsn;
use weir_postgres::PostgresSource;

use crate::common::*;

#[tokio::test]
async fn restart_resumes_after_the_acknowledged_transaction() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let slot = db.slot();
    let cfg = db.config(&slot, &["t"]);
    let first = PostgresSource::prepare(cfg.clone()).await.unwrap();
    for id in 1..=3 {
        c.execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
    }

    // Without acknowledgements, everything is delivered again.
    let mut run = Running::spawn(first);
    let a = run.txns(3).await;
    run.stop().await.unwrap();
    assert_eq!(
        a.iter().map(|t| ints(t, 0)[0]).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let second = PostgresSource::prepare(cfg.clone()).await.unwrap();
    assert!(
        second.start_lsn() <= a[0].begin.commit_lsn,
        "slot moved to {} without acknowledgement (first commit at {})",
        second.start_lsn(),
        a[0].begin.commit_lsn
    );

    let mut run = Running::spawn(second);
    let b = run.txns(3).await;
    assert_eq!(
        b.iter().map(|t| ints(t, 0)[0]).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Same WAL positions, new transaction ids.
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.commit.end_lsn, y.commit.end_lsn);
        assert!(y.begin.txn > a[2].begin.txn, "txn ids never repeat");
    }
    // Acknowledge the second transaction only.
    run.ack.send_replace(b[1].commit.end_lsn);
    run.stop().await.unwrap();
    assert_eq!(confirmed_flush(&c, &slot).await, b[1].commit.end_lsn);

    let third = PostgresSource::prepare(cfg.clone()).await.unwrap();
    assert_eq!(third.start_lsn(), b[1].commit.end_lsn);
    let mut run = Running::spawn(third);
    c.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
    let t = run.txns(2).await;
    assert_eq!(
        ints(&t[0], 0),
        [3],
        "the first transaction after the acked one"
    );
    assert_eq!(ints(&t[1], 0), [4]);
    // Acknowledging the newest transaction received confirms all of it.
    run.ack.send_replace(t[1].commit.end_lsn);
    run.stop().await.unwrap();
    assert!(confirmed_flush(&c, &slot).await >= t[1].commit.end_lsn);

    let mut run = Running::start(cfg).await;
    c.execute("INSERT INTO t VALUES (5)", &[]).await.unwrap();
    assert_eq!(
        ints(&run.txn().await, 0),
        [5],
        "nothing acknowledged comes back"
    );
    run.stop().await.unwrap();
}

#[tokio::test]
async fn flush_follows_acks_and_idle_keepalives() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE TABLE unpublished (id int)",
    )
    .await
    .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["t"]);
    // Frequent status updates (each asks for a keepalive) keep the test short.
    cfg.status_interval = Duration::from_millis(100);
    let mut run = Running::start(cfg).await;

    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let t1 = run.txn().await;
    c.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let t2 = run.txn().await;

    // Acknowledge the first: the slot follows, exactly.
    run.ack.send_replace(t1.commit.end_lsn);
    eventually("confirmed_flush to reach the ack", || async {
        confirmed_flush(&c, &slot).await == t1.commit.end_lsn
    })
    .await;

    // With t2 unacknowledged, WAL written to unpublished tables must not
    // move the flush past t1, even after keepalives beyond it arrived.
    c.execute("INSERT INTO unpublished VALUES (1)", &[])
        .await
        .unwrap();
    let wal: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let wal: Lsn = wal.parse().unwrap();
    eventually("keepalives past the unpublished write", || async {
        let w: Option<String> = c
            .query_one(
                "SELECT write_lsn::text FROM pg_stat_replication WHERE application_name = 'weir-test' \
                 AND pid = (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(None);
        w.and_then(|w| w.parse::<Lsn>().ok()).is_some_and(|w| w >= wal)
    })
    .await;
    // A status update carries write and flush together, so once write is
    // past `wal` the flush sent alongside has been applied too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(confirmed_flush(&c, &slot).await, t1.commit.end_lsn);

    // Everything acknowledged and idle: keepalives may move the slot on.
    run.ack.send_replace(t2.commit.end_lsn);
    eventually(
        "the idle slot to move past the unpublished write",
        || async { confirmed_flush(&c, &slot).await >= wal },
    )
    .await;
    assert!(wal > t2.commit.end_lsn);
    run.stop().await.unwrap();
}

/// A pipeline that stops taking batches (a sink down) must not let the
/// walsender time out: status updates keep flowing while `run` is blocked
/// handing a batch downstream.
#[tokio::test]
async fn backpressure_does_not_starve_status_updates() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // A walsender for this database gives up after 2 s without a reply.
    c.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY);
         ALTER DATABASE {} SET wal_sender_timeout = '2s'",
        db.name
    ))
    .await
    .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["t"]);
    cfg.status_interval = Duration::from_millis(500);
    // One item per batch, so a few transactions fill the bounded channel
    // and the source blocks sending.
    cfg.max_batch = 1;
    let mut run = Running::start(cfg).await;
    for id in 0..20 {
        c.execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    // Take nothing for three timeouts' worth.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let t = run.txns(20).await;
    assert_eq!(
        t.iter().map(|t| ints(t, 0)[0]).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    // Still the same, healthy stream.
    c.execute("INSERT INTO t VALUES (20)", &[]).await.unwrap();
    assert_eq!(ints(&run.txn().await, 0), [20]);
    run.stop().await.unwrap();
}
