//! A slot the server invalidated (`wal_status = lost`, past
//! `max_slot_wal_keep_size`), while Weir was stopped and while it ran:
//! Weir refuses to resume from it, naming the slot and what happened, and
//! with `on_slot_lost = "resnapshot"` makes it again and reads every row
//! anew.

use std::time::Duration;

use weir_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_slot_is_a_clear_error_or_with_resnapshot_a_new_slot_and_snapshot() {
    let cluster = PrivateCluster::start(&[
        ("wal_level", "logical"),
        ("max_slot_wal_keep_size", "1MB"),
        ("min_wal_size", "32MB"),
        ("max_wal_size", "64MB"),
    ]);
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            cluster.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL); \
             INSERT INTO t SELECT g, 'first' FROM generate_series(1, 3) g",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = dir.path().join("weir.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[source]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"postgres\"\n\
                 slot = \"lost\"\ntables = [\"public.t\"]\nstatus_interval = \"1s\"\n{extra}\n\
                 [sinks.out]\ntype = \"file\"\npath = {out:?}\n",
                cluster.port
            ),
        )
        .unwrap();
    };
    write_config("");
    let reads = |op: &str| read_jsonl(&out).iter().filter(|l| l["op"] == op).count();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(120), || {
        (reads("read") == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("the initial snapshot:\n{}", weir.log()));
    weir.terminate();

    // Weir stopped; the server writes on and removes the WAL the slot needs.
    lose_the_slot(&client, 1000).await;

    let (exit, printed) = run_weir(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(!exit.success(), "{printed}");
    assert!(
        printed.contains("replication slot \"lost\"")
            && printed.contains("invalidated by the server (wal_status = lost)")
            && printed.contains("on_slot_lost"),
        "{printed}"
    );

    // Asked to: a new slot, and every row of the table read again.
    write_config("on_slot_lost = \"resnapshot\"");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    let before = read_jsonl(&out).len();
    let mut weir = WeirProcess::start(&config, &[]);
    wait_for(Duration::from_secs(120), || {
        (read_jsonl(&out).len() - before == rows as usize).then_some(())
    })
    .unwrap_or_else(|| panic!("the fresh snapshot:\n{}", weir.log()));
    let fresh = &read_jsonl(&out)[before..];
    assert!(fresh.iter().all(|l| l["op"] == "read"), "{fresh:?}");
    // And the new slot streams.
    client
        .batch_execute("INSERT INTO t VALUES (-1, 'after')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        (reads("insert") == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("a change after the fresh snapshot:\n{}", weir.log()));

    // Now under a running Weir, frozen so that it falls behind: the server
    // ends its stream, and once thawed it makes the slot again.
    weir.signal("STOP");
    lose_the_slot(&client, 100_000).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    let before = reads("read");
    weir.signal("CONT");
    wait_for(Duration::from_secs(120), || {
        (reads("read") - before == rows as usize).then_some(())
    })
    .unwrap_or_else(|| panic!("no fresh snapshot after the slot was lost:\n{}", weir.log()));
    // Made again twice by this process: when it started, and now.
    assert_eq!(
        weir.log()
            .matches("making it again and taking a fresh snapshot")
            .count(),
        2,
        "{}",
        weir.log()
    );
    assert!(weir.is_running(), "{}", weir.log());
    weir.terminate();
}

/// Writes WAL, switching segments and checkpointing, until the server
/// invalidates slot `lost` (new rows from id `from`).
async fn lose_the_slot(client: &tokio_postgres::Client, from: i64) {
    for i in 0..20 {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series({}, {}) g; \
                 SELECT pg_switch_wal(); CHECKPOINT",
                from + i * 1000,
                from + i * 1000 + 999
            ))
            .await
            .unwrap();
        let status: Option<String> = client
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            return;
        }
    }
    panic!("the server did not invalidate the slot");
}
