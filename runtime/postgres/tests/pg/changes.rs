//! Row changes: before/after images per replica identity, unchanged TOAST
//! values, truncates, logical messages, rollbacks and schema versions.

use std::sync::Arc;

use weir_core::{Op, ReplicaIdentity, Value};

use crate::common::*;

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

#[tokio::test]
async fn insert_update_delete_truncate_with_default_and_full_identity() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE kv (id int PRIMARY KEY, name text, big text);
         ALTER TABLE kv ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE full_t (id int PRIMARY KEY, name text);
         ALTER TABLE full_t REPLICA IDENTITY FULL;",
    )
    .await
    .unwrap();
    let slot = db.slot();
    let mut run = Running::start(db.config(&slot, &["kv", "full_t"])).await;

    // Large enough to be stored out of line (and STORAGE EXTERNAL keeps it
    // uncompressed), so an UPDATE that leaves it alone does not log it.
    let big = "x".repeat(100_000);
    c.execute("INSERT INTO kv VALUES (1, 'a', $1)", &[&big])
        .await
        .unwrap();
    c.batch_execute("UPDATE kv SET name = 'b' WHERE id = 1")
        .await
        .unwrap();
    c.batch_execute("UPDATE kv SET id = 2 WHERE id = 1")
        .await
        .unwrap();
    c.batch_execute("DELETE FROM kv WHERE id = 2")
        .await
        .unwrap();
    c.batch_execute(
        "BEGIN;
         INSERT INTO full_t VALUES (1, 'a');
         UPDATE full_t SET name = 'b' WHERE id = 1;
         DELETE FROM full_t WHERE id = 1;
         COMMIT;",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO kv VALUES (3, 'c', 'small')")
        .await
        .unwrap();
    c.batch_execute("TRUNCATE kv, full_t").await.unwrap();

    let t = run.txns(7).await;
    let one = |i: usize| {
        assert_eq!(t[i].changes.len(), 1, "txn {i}");
        &t[i].changes[0]
    };

    let ins = one(0);
    assert_eq!(ins.op, Op::Insert);
    let kv = ins.table.clone().unwrap();
    assert_eq!(kv.replica_identity, ReplicaIdentity::Default);
    assert_eq!(ins.after, Some(vec![Value::Int(1), text("a"), text(&big)]));
    assert_eq!(ins.before, None);

    // Key unchanged under DEFAULT identity: no old row; the TOASTed column
    // is Unchanged, not NULL.
    let upd = one(1);
    assert_eq!(upd.op, Op::Update);
    assert_eq!(upd.before, None);
    assert_eq!(
        upd.after,
        Some(vec![Value::Int(1), text("b"), Value::Unchanged])
    );
    assert_eq!(
        upd.key_values(),
        vec![("id", &Value::Int(1))],
        "key of the new row"
    );

    // Key changed: the old key arrives, other old columns are NULL.
    let key_upd = one(2);
    assert_eq!(
        key_upd.before,
        Some(vec![Value::Int(1), Value::Null, Value::Null])
    );
    assert_eq!(
        key_upd.after,
        Some(vec![Value::Int(2), text("b"), Value::Unchanged])
    );

    let del = one(3);
    assert_eq!(del.op, Op::Delete);
    assert_eq!(
        del.before,
        Some(vec![Value::Int(2), Value::Null, Value::Null])
    );
    assert_eq!(del.after, None);

    // REPLICA IDENTITY FULL: whole old rows.
    let full = &t[4].changes;
    assert_eq!(full.len(), 3);
    assert_eq!(
        full[0].table.as_ref().unwrap().replica_identity,
        ReplicaIdentity::Full
    );
    assert_eq!(full[1].op, Op::Update);
    assert_eq!(full[1].before, Some(vec![Value::Int(1), text("a")]));
    assert_eq!(full[1].after, Some(vec![Value::Int(1), text("b")]));
    assert_eq!(full[2].op, Op::Delete);
    assert_eq!(full[2].before, Some(vec![Value::Int(1), text("b")]));
    assert_eq!(
        full.iter().map(|c| c.source.seq).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    assert_eq!(one(5).op, Op::Insert);
    let trunc = &t[6].changes;
    assert_eq!(trunc.len(), 2, "one event per truncated table");
    let mut names: Vec<String> = trunc
        .iter()
        .map(|c| {
            assert_eq!(c.op, Op::Truncate);
            assert!(c.before.is_none() && c.after.is_none());
            c.table.as_ref().unwrap().qualified_name()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["public.full_t", "public.kv"]);

    // Transactions arrive in commit order with increasing ids and LSNs.
    for w in t.windows(2) {
        assert!(w[0].begin.txn < w[1].begin.txn);
        assert!(w[0].commit.end_lsn <= w[1].begin.commit_lsn);
    }
    run.stop().await.unwrap();
}

#[tokio::test]
async fn rolled_back_work_never_appears() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut run = Running::start(db.config(&slot, &["t"])).await;
    c.batch_execute("BEGIN; INSERT INTO t VALUES (100); ROLLBACK;")
        .await
        .unwrap();
    c.batch_execute(
        "BEGIN; INSERT INTO t VALUES (101); SAVEPOINT s; INSERT INTO t VALUES (102);
         ROLLBACK TO SAVEPOINT s; INSERT INTO t VALUES (103); COMMIT;",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO t VALUES (104)").await.unwrap();
    let t = run.txns(2).await;
    assert_eq!(ints(&t[0], 0), [101, 103]);
    assert_eq!(ints(&t[1], 0), [104]);
    run.stop().await.unwrap();
}

#[tokio::test]
async fn logical_messages_in_and_out_of_transactions() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut run = Running::start(db.config(&slot, &["t"])).await;
    c.batch_execute("SELECT pg_logical_emit_message(false, 'weir', 'not transactional')")
        .await
        .unwrap();
    c.batch_execute(
        "BEGIN; INSERT INTO t VALUES (1);
         SELECT pg_logical_emit_message(true, 'weir', '\\x00ff'::bytea); COMMIT;",
    )
    .await
    .unwrap();
    // Outside any transaction: one of its own, xid 0, at its LSN.
    let alone = run.txn().await;
    assert_eq!(alone.begin.xid, 0);
    assert_eq!(alone.changes.len(), 1);
    let m = &alone.changes[0];
    assert_eq!((m.op, m.source.xid), (Op::Message, 0));
    assert_eq!(m.message.as_ref().unwrap().content, b"not transactional");
    assert_eq!(m.source.lsn, alone.begin.commit_lsn);
    // Acknowledging it never passes the start of the next record.
    let t = run.txn().await;
    assert!(t.begin.commit_lsn >= alone.commit.end_lsn);
    assert!(alone.commit.end_lsn > alone.begin.commit_lsn);
    assert_eq!(t.changes.len(), 2);
    assert_eq!(t.changes[0].op, Op::Insert);
    let m = &t.changes[1];
    assert_eq!(m.op, Op::Message);
    assert!(m.table.is_none());
    let msg = m.message.as_ref().unwrap();
    assert_eq!(msg.prefix, "weir");
    assert_eq!(msg.content, [0x00, 0xff]);
    assert!(m.source.lsn >= t.changes[0].source.lsn);
    run.stop().await.unwrap();
}

#[tokio::test]
async fn heartbeats_move_the_slot_while_its_tables_are_idle_and_readings_show_its_wal() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int)")
        .await
        .unwrap();
    let slot = db.slot();
    let config = weir_postgres::PostgresConfig {
        heartbeat_interval: Some(std::time::Duration::from_millis(300)),
        status_interval: std::time::Duration::from_millis(300),
        // Any WAL held back raises the alarm.
        retained_wal_alarm: 1,
        ..db.config(&slot, &["t"])
    };
    let mut source = weir_postgres::PostgresSource::prepare(config)
        .await
        .unwrap();
    let health = Arc::new(weir_postgres::SlotHealth::default());
    source.share_health(health.clone());
    let mut run = Running::spawn(source);
    // Another table written: nothing for this slot, and it must not pin.
    c.batch_execute("INSERT INTO other SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    let before = confirmed_flush(&c, &slot).await;
    // A heartbeat: a transaction with nothing in it, which, acknowledged,
    // moves the slot past everything written before it.
    let beat = run.txn().await;
    assert!(beat.changes.is_empty(), "{beat:?}");
    assert_eq!(beat.begin.xid, 0);
    assert!(beat.commit.end_lsn > before);
    assert!(beat.commit.end_lsn > beat.begin.commit_lsn);
    run.ack.send_replace(beat.commit.end_lsn);
    eventually("the slot moved to the heartbeat", || async {
        confirmed_flush(&c, &slot).await >= beat.commit.end_lsn
    })
    .await;
    eventually("a reading of the slot", || async {
        health.reading().is_some_and(|r| r.heartbeats > 0)
    })
    .await;
    let r = health.reading().unwrap();
    assert_eq!(r.wal_status.as_deref(), Some("reserved"), "{r:?}");
    assert!(r.retained_bytes > 0 && r.lag_bytes >= 0, "{r:?}");
    assert!(
        r.alarm.as_deref().is_some_and(|a| a.contains("holds back")),
        "{r:?}"
    );
    // Heartbeats go on; let the stop not wait for their acknowledgement.
    run.ack.send_replace(weir_core::Lsn(u64::MAX));
    run.stop().await.unwrap();
}

#[tokio::test]
async fn partitions_report_under_their_root_when_published_via_it() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
         CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu'); \
         CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us')",
    )
    .await
    .unwrap();
    for via_root in [false, true] {
        let slot = db.slot();
        let config = weir_postgres::PostgresConfig {
            publish_via_partition_root: via_root,
            ..db.config(&slot, &["m"])
        };
        let mut run = Running::start(config).await;
        c.batch_execute("INSERT INTO m VALUES (1, 'eu'), (2, 'us')")
            .await
            .unwrap();
        let t = run.txn().await;
        let names: Vec<&str> = t
            .changes
            .iter()
            .map(|c| c.table.as_ref().unwrap().name.as_str())
            .collect();
        if via_root {
            assert_eq!(names, ["m", "m"]);
        } else {
            assert_eq!(names, ["m_eu", "m_us"], "the server's default");
        }
        run.ack.send_replace(t.commit.end_lsn);
        run.stop().await.unwrap();
        c.batch_execute("DELETE FROM m").await.unwrap();
    }
}

#[tokio::test]
async fn schema_changes_get_new_versions() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut run = Running::start(db.config(&slot, &["t"])).await;
    // Each statement on its own: a multi-statement string would be one
    // implicit transaction.
    for sql in [
        "INSERT INTO t VALUES (1, 'x')",
        "ALTER TABLE t SET (fillfactor = 70)",
        "INSERT INTO t VALUES (2, 'y')",
        "ALTER TABLE t ADD COLUMN extra int4",
        "INSERT INTO t VALUES (3, 'z', 7)",
        "INSERT INTO t VALUES (4, 'w', 8)",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    let t = run.txns(4).await;
    let table = |i: usize| t[i].changes[0].table.clone().unwrap();
    // A storage-parameter change does not change the shape.
    assert!(Arc::ptr_eq(&table(0), &table(1)));
    let (v1, v2) = (table(1), table(2));
    assert_eq!(v2.id, v1.id);
    assert_eq!(v2.version, v1.version + 1);
    assert_eq!(v1.columns.len(), 2);
    assert_eq!(v2.columns.len(), 3);
    assert_eq!(v2.columns[2].name, "extra");
    assert_eq!(v2.columns[2].type_name, "int4");
    assert_eq!(
        t[2].changes[0].after,
        Some(vec![Value::Int(3), text("z"), Value::Int(7)])
    );
    assert!(Arc::ptr_eq(&table(2), &table(3)));
    run.stop().await.unwrap();
}
