//! End-to-end read throughput from a backlog. Ignored by default (it
//! measures, it does not check); run with
//! `cargo test --release -p weir-postgres --test pg throughput -- --ignored --nocapture`.

use std::time::Instant;

use weir_core::SourceItem;

use crate::common::*;

async fn backlog(binary: bool) {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c varchar(40), d float8,
                             e numeric, f timestamptz, g bool, h uuid, i jsonb)",
    )
    .await
    .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["bench"]);
    cfg.binary = binary;
    let source = weir_postgres::PostgresSource::prepare(cfg).await.unwrap();
    let n: i64 = 500_000;
    c.execute(
        "INSERT INTO bench SELECT g, g % 1000, 'some text value ' || g, 'varchar ' || g,
                g * 1.5, g / 7.0, now(), g % 2 = 0, gen_random_uuid(), '{\"a\": 1, \"b\": [1, 2]}'
         FROM generate_series(1, $1::bigint) g",
        &[&n],
    )
    .await
    .unwrap();
    let mut run = Running::spawn(source);
    let start = Instant::now();
    let t = run.txn().await;
    let el = start.elapsed();
    assert_eq!(t.changes.len() as i64, n);
    println!(
        "{} mode: {n} rows in {el:?}: {:.0} rows/s",
        if binary { "binary" } else { "text" },
        n as f64 / el.as_secs_f64()
    );
    let _ = SourceItem::Commit(t.commit);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_text() {
    backlog(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_binary() {
    backlog(true).await;
}
