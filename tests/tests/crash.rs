//! Weir is killed with SIGKILL at random moments while a workload commits
//! at least 10 000 rows, and restarted each time. Afterwards every
//! committed row must be in the sink: nothing acknowledged may be lost.
//! Redelivered duplicates are allowed only for transactions Postgres had
//! not been told were durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use weir_core::Lsn;
use weir_tests::*;

const ROWS: i64 = 10_000;
const KILLS: usize = 6;

#[tokio::test(flavor = "multi_thread")]
async fn nothing_committed_is_lost_across_kill_9() {
    let db = TestDb::new(
        "crash",
        "CREATE TABLE items (id bigint PRIMARY KEY, batch int NOT NULL, note text NOT NULL)",
    )
    .await;
    let p = FilePipeline::start(
        &db,
        &["items"],
        "",
        &format!("{}\n[pipeline]\nmax_batch = 512\n", passthrough()),
    );
    let (out, config, mut weir) = (p.out.clone(), p.config.clone(), p.weir);

    // The workload: transactions of 1..100 rows, some written with COPY,
    // whose multi-insert WAL records give several changes one LSN. It runs
    // until every kill is done and at least ROWS rows are committed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let dbname = db.name.clone();
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(
                &format!(
                    "host={} port={} user={} dbname={dbname}",
                    pg_host(),
                    pg_port(),
                    pg_user()
                ),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let mut next = 0i64;
            let mut batch = 0;
            while next < ROWS || !stop.load(Ordering::Relaxed) {
                let n = rand::rng().random_range(1..=100);
                batch += 1;
                if batch % 3 == 0 {
                    use futures_util::SinkExt;
                    client.batch_execute("BEGIN").await.unwrap();
                    let sink = client
                        .copy_in("COPY items (id, batch, note) FROM STDIN")
                        .await
                        .unwrap();
                    let mut data = String::new();
                    for id in next..next + n {
                        data.push_str(&format!("{id}\t{batch}\tcopy {id}\n"));
                    }
                    futures_util::pin_mut!(sink);
                    sink.send(bytes::Bytes::from(data)).await.unwrap();
                    sink.finish().await.unwrap();
                    client.batch_execute("COMMIT").await.unwrap();
                } else {
                    client
                        .batch_execute(&format!(
                            "INSERT INTO items SELECT g, {batch}, 'row ' || g FROM generate_series({}, {}) g",
                            next,
                            next + n - 1
                        ))
                        .await
                        .unwrap();
                }
                next += n;
                let pause = rand::rng().random_range(5..40);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            next
        })
    };

    // Kill at random moments; remember what Postgres had been told was
    // durable just before each kill, and how much output existed after it.
    let mut marks: Vec<(Lsn, usize)> = Vec::new();
    for k in 0..KILLS {
        // Kill only once this run has written something, so every kill
        // lands while Weir is streaming, not while it starts.
        let before = read_jsonl(&out).len();
        wait_for(Duration::from_secs(90), || {
            (read_jsonl(&out).len() > before).then_some(())
        })
        .unwrap_or_else(|| panic!("no new output before kill {k}:\n{}", weir.log()));
        let pause = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let acked = db.confirmed_flush().expect("slot exists");
        weir.kill9();
        marks.push((acked, read_jsonl(&out).len()));
        weir = WeirProcess::start(&config, &[]);
    }
    stop.store(true, Ordering::Relaxed);
    let rows = writer.await.unwrap();
    assert!(rows >= ROWS);

    let lines = wait_for(Duration::from_secs(180), || {
        let lines = read_jsonl(&out);
        let ids: std::collections::HashSet<i64> = lines
            .iter()
            .map(|l| l["after"]["id"].as_i64().unwrap())
            .collect();
        (ids.len() as i64 >= rows).then_some(lines)
    })
    .unwrap_or_else(|| {
        let lines = read_jsonl(&out);
        let ids: std::collections::HashSet<i64> = lines
            .iter()
            .map(|l| l["after"]["id"].as_i64().unwrap())
            .collect();
        let missing: Vec<i64> = (0..rows).filter(|i| !ids.contains(i)).take(20).collect();
        panic!(
            "{} of {rows} committed rows are missing (first: {missing:?})\n{}",
            rows - ids.len() as i64,
            weir.log()
        )
    });

    let mut seen: HashMap<i64, usize> = HashMap::new();
    for l in &lines {
        assert_eq!(l["op"], "insert");
        let id = l["after"]["id"].as_i64().unwrap();
        let note = l["after"]["note"].as_str().unwrap();
        assert!(
            note == format!("row {id}") || note == format!("copy {id}"),
            "{l}"
        );
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len() as i64, rows, "exactly the committed ids");
    assert!(seen.keys().all(|id| (0..rows).contains(id)));

    // Output written after restart i may only repeat transactions that
    // were not acknowledged before kill i.
    for (i, (acked, lines_before)) in marks.iter().enumerate() {
        for l in &lines[*lines_before..] {
            let commit: Lsn = l["source"]["commit_lsn"].as_str().unwrap().parse().unwrap();
            assert!(
                commit >= *acked,
                "after kill {i}, a transaction committed at {commit} was redelivered although {acked} had been acknowledged"
            );
        }
    }
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{KILLS} kills, {} lines for {rows} rows, {duplicates} rows redelivered",
        lines.len()
    );
    assert!(weir.is_running(), "weir died:\n{}", weir.log());
}
