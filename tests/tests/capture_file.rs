//! Insert, update, delete and truncate flow through the passthrough plugin
//! into the file sink, in commit order; rolled-back work never appears;
//! the slot is acknowledged only after the sink made the changes durable;
//! no change is written twice.

use std::time::Duration;

use weir_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_the_file_sink_in_commit_order() {
    let db = TestDb::new(
        "file",
        "CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10,2));
         CREATE TABLE ignored (id int PRIMARY KEY);",
    )
    .await;
    let mut p = FilePipeline::start(&db, &["public.orders"], "", &passthrough());
    let out = p.out.clone();
    // One statement per call: several statements in one simple query
    // would run as one implicit transaction.
    for sql in [
        "BEGIN;
         INSERT INTO orders VALUES (1, 'new', 10.50);
         INSERT INTO orders VALUES (2, 'new', 20.00);
         INSERT INTO ignored VALUES (1);
         COMMIT;",
        "BEGIN;
         INSERT INTO orders VALUES (3, 'rolled back', 0);
         ROLLBACK;",
        "UPDATE orders SET status = 'shipped' WHERE id = 1",
        "DELETE FROM orders WHERE id = 2",
        "TRUNCATE orders",
        "INSERT INTO orders VALUES (4, 'after truncate', 1)",
    ] {
        db.exec(sql).await;
    }
    let end = db.current_wal_lsn();
    // A sentinel transaction after all of them: the sink writes in commit
    // order, so once it is out, every line before it is too, and a late
    // duplicate of an earlier change would show up before it.
    db.exec("INSERT INTO orders VALUES (5, 'sentinel', 0)")
        .await;

    let mut lines = wait_for(Duration::from_secs(60), || {
        let lines = read_jsonl(&out);
        lines
            .iter()
            .any(|l| l["after"]["status"] == "sentinel")
            .then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sentinel did not arrive: {:#?}\n{}",
            read_jsonl(&out),
            p.weir.log()
        )
    });
    assert_eq!(lines.len(), 7, "unexpected extra lines: {lines:#?}");
    let sentinel = lines.pop().unwrap();
    assert_eq!(sentinel["after"]["status"], "sentinel", "{lines:#?}");
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        ["insert", "insert", "update", "delete", "truncate", "insert"]
    );
    for l in &lines {
        assert_eq!(l["schema"], "public");
        assert_eq!(l["table"], "orders");
    }
    assert_eq!(lines[0]["after"]["id"], 1);
    assert_eq!(lines[0]["after"]["amount"], "10.50");
    assert_eq!(lines[0]["key"]["id"], 1);
    assert_eq!(lines[1]["after"]["id"], 2);
    assert_eq!(lines[2]["after"]["status"], "shipped");
    assert_eq!(lines[3]["before"]["id"], 2);
    assert!(lines[3]["after"].is_null());
    assert!(lines[4]["after"].is_null() && lines[4]["before"].is_null());
    assert_eq!(lines[5]["after"]["status"], "after truncate");

    // The two inserts share a transaction: same commit LSN and xid,
    // positions 0 and 1. Commit LSNs grow with commit order.
    let src = |i: usize| &lines[i]["source"];
    assert_eq!(src(0)["commit_lsn"], src(1)["commit_lsn"]);
    assert_eq!(src(0)["xid"], src(1)["xid"]);
    assert_eq!(
        (src(0)["seq"].as_u64(), src(1)["seq"].as_u64()),
        (Some(0), Some(1))
    );
    let lsns: Vec<weir_core::Lsn> = (0..6)
        .map(|i| src(i)["commit_lsn"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        lsns.windows(2).all(|w| w[0] <= w[1]),
        "commit order: {lsns:?}"
    );
    assert!(lsns[1] < lsns[2] && lsns[2] < lsns[3] && lsns[3] < lsns[4] && lsns[4] < lsns[5]);

    // Once durable, the slot is acknowledged past the last commit.
    let last_commit: weir_core::Lsn = sentinel["source"]["commit_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last_commit > lsns[5]);
    wait_for(Duration::from_secs(30), || {
        db.confirmed_flush().filter(|l| *l > last_commit)
    })
    .unwrap_or_else(|| {
        panic!(
            "slot not acknowledged past {last_commit}: at {:?}\n{}",
            db.confirmed_flush(),
            p.weir.log()
        )
    });

    // Idle, with nothing in flight: WAL written by tables outside the
    // publication must not stay pinned by the slot.
    db.exec("INSERT INTO ignored SELECT g FROM generate_series(2, 100) g")
        .await;
    let idle_end = db.current_wal_lsn();
    assert!(idle_end > end);
    wait_for(Duration::from_secs(90), || {
        db.confirmed_flush().filter(|l| *l >= idle_end)
    })
    .unwrap_or_else(|| {
        panic!(
            "idle slot not acknowledged up to {idle_end}: at {:?}\n{}",
            db.confirmed_flush(),
            p.weir.log()
        )
    });
    assert_eq!(
        read_jsonl(&out).len(),
        7,
        "nothing from the unpublished table, nothing late"
    );

    p.stop_cleanly();
}
