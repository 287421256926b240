//! Problems an operator must fix come back as specific, non-retryable
//! errors that name the table, role or slot; publications and slots are
//! created (or not) as configured.

use std::time::Duration;

use weir_postgres::{PgError, PostgresSource};

use crate::common::*;

#[tokio::test]
async fn missing_tables_are_named() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE present (id int PRIMARY KEY)")
        .await
        .unwrap();
    let slot = db.slot();
    let err = PostgresSource::prepare(db.config(&slot, &["nope", "present", "gone"]))
        .await
        .unwrap_err();
    match &err {
        PgError::MissingTables { tables, dbname, .. } => {
            assert_eq!(tables, &["public.nope", "public.gone"]);
            assert_eq!(dbname, &db.name);
        }
        e => panic!("expected MissingTables, got {e:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("public.nope, public.gone"), "{msg}");
    assert!(msg.contains("127.0.0.1:5432"), "{msg}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn role_without_replication_is_refused() {
    let db = TestDb::new().await;
    let role = db.role();
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN NOREPLICATION; CREATE TABLE t (id int PRIMARY KEY)"
    ))
    .await
    .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["t"]);
    cfg.user = role.clone();
    let err = PostgresSource::prepare(cfg).await.unwrap_err();
    match &err {
        PgError::NotReplicationRole { role: r, .. } => assert_eq!(r, &role),
        e => panic!("expected NotReplicationRole, got {e:?}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("ALTER ROLE \"{role}\" REPLICATION"))
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn slot_in_use_names_the_holder() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["t"]);
    cfg.slot_wait = Duration::from_millis(300);
    // Prepared while the slot is free; its run() will find it taken.
    let late = PostgresSource::prepare(cfg.clone()).await.unwrap();

    let mut run = Running::start(cfg.clone()).await;
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    run.txn().await;
    let pid: i32 = c
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);

    let check = |err: PgError| {
        match &err {
            PgError::SlotInUse {
                slot: s, pid: p, ..
            } => {
                assert_eq!(s, &slot);
                assert_eq!(*p, Some(pid));
            }
            e => panic!("expected SlotInUse, got {e:?}"),
        }
        assert!(err.to_string().contains(&format!("process {pid}")), "{err}");
        assert!(!err.is_retryable());
    };
    // From prepare (polling pg_replication_slots)...
    check(PostgresSource::prepare(cfg.clone()).await.unwrap_err());
    // ...and from run (START_REPLICATION refused).
    check(Running::spawn(late).failure().await);
    run.stop().await.unwrap();
}

#[tokio::test]
async fn publication_and_slot_creation_follow_the_config() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE PUBLICATION {} FOR TABLE a",
        db.publication
    ))
    .await
    .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["a", "b"]);

    // The publication lacks b and may not be altered.
    cfg.create_publication = false;
    let err = PostgresSource::prepare(cfg.clone()).await.unwrap_err();
    match &err {
        PgError::PublicationLacksTables { tables, .. } => assert_eq!(tables, &["public.b"]),
        e => panic!("expected PublicationLacksTables, got {e:?}"),
    }

    // The slot is missing and may not be created.
    cfg.create_publication = true;
    cfg.create_slot = false;
    let err = PostgresSource::prepare(cfg.clone()).await.unwrap_err();
    assert!(
        matches!(&err, PgError::SlotMissing { slot: s, .. } if *s == slot),
        "{err:?}"
    );
    // ...but the publication was completed on the way.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1",
            &[&db.publication],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    cfg.create_slot = true;
    let source = PostgresSource::prepare(cfg.clone()).await.unwrap();
    let plugin: String = c
        .query_one(
            "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plugin, "pgoutput");
    // Preparing never moves the slot.
    assert_eq!(confirmed_flush(&c, &slot).await, source.start_lsn());

    // A slot with another output plugin is rejected by name.
    let other = db.slot();
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
        &[&other],
    )
    .await
    .unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.slot = other.clone();
    let err = PostgresSource::prepare(cfg2).await.unwrap_err();
    match &err {
        PgError::SlotMismatch {
            slot: s, reason, ..
        } => {
            assert_eq!(s, &other);
            assert!(reason.contains("test_decoding"), "{reason}");
        }
        e => panic!("expected SlotMismatch, got {e:?}"),
    }
}

#[tokio::test]
async fn all_tables_publication_is_created() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE x (id int PRIMARY KEY)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &[]);
    cfg.all_tables = true;
    let mut run = Running::start(cfg).await;
    c.execute("INSERT INTO x VALUES (1)", &[]).await.unwrap();
    let t = run.txn().await;
    assert_eq!(
        t.changes[0].table.as_ref().unwrap().qualified_name(),
        "public.x"
    );
    run.stop().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_retryable() {
    let cfg = weir_postgres::PostgresConfig {
        host: "127.0.0.1".into(),
        // Nothing listens on port 1.
        port: 1,
        tables: vec![("public".into(), "t".into())],
        ..Default::default()
    };
    let err = PostgresSource::prepare(cfg).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn message_beyond_max_message_bytes_is_a_clear_error() {
    let db = TestDb::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE big (id int PRIMARY KEY, body text)")
        .await
        .unwrap();
    let slot = db.slot();
    let mut cfg = db.config(&slot, &["big"]);
    cfg.max_message_bytes = 64 * 1024;
    let mut run = Running::start(cfg).await;
    // Under the cap streams as usual.
    c.execute("INSERT INTO big VALUES (1, repeat('x', 1000))", &[])
        .await
        .unwrap();
    run.txn().await;
    c.execute("INSERT INTO big VALUES (2, repeat('x', 200000))", &[])
        .await
        .unwrap();
    let err = run.failure().await;
    let msg = err.to_string();
    assert!(
        matches!(err, PgError::Protocol { .. })
            && msg.contains("more than max_message_bytes (65536)"),
        "{msg}"
    );
    assert!(msg.contains("127.0.0.1:5432"), "{msg}");
}
