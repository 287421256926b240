//! Snapshot reads (`weir_postgres::snapshot`) against the stream: a table
//! described from the catalog has the shape its Relation message
//! announces, and its rows read back through COPY decode to exactly the
//! values the stream delivered for them, whole or in chunks by pages or
//! by key (a composite key whose text needs escaping), keyed or not.

use weir_core::{Op, Value};
use weir_postgres::snapshot::{Chunk, SnapshotTable, describe, session_settings};

use crate::common::*;

const SETUP: &str = r#"
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE snap (
    region text, id int8,
    b bool, f8 float8, n numeric, t text, by bytea, d date, ts timestamptz, u uuid,
    j jsonb, arr int4[], span interval, addr inet, m mood, p posint,
    twice int8 GENERATED ALWAYS AS (id * 2) STORED,
    PRIMARY KEY (region, id));
CREATE TABLE loose (v text, w int4);
"#;

const ROWS: &str = r#"
BEGIN;
INSERT INTO snap VALUES
  ('eu', 1, true, 1.5, '12.30', E'tab\there\nnewline \\ backslash ''quote''', '\x00ff', '2024-02-29',
   '2024-02-29 13:14:15.123456+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, "x\ty"]}',
   '{1,NULL,3}', '1 day 02:00:03', '10.1.2.3/24', 'sad', 7),
  (E'e\tu ''x''', 2, NULL, 'NaN', NULL, '', NULL, '-infinity', 'infinity', NULL, NULL, '{}', NULL, NULL, NULL, NULL),
  ('us', 3, false, -0.1, '-1e-20', E'\\N is not null', '\x', '0044-03-15 BC', NULL, NULL, 'null',
   NULL, '-1 mons', '::1', 'ok', 1),
  ('eu', 4, true, 0, 0, 'é🌍', '\x5c', '2000-01-01', '1970-01-01 00:00:00+00', NULL, '[]', NULL, NULL, NULL, NULL, 2);
COMMIT;
INSERT INTO loose SELECT 'row ' || g, g FROM generate_series(1, 300) g;
"#;

async fn snapshot_client(db: &TestDb) -> tokio_postgres::Client {
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {}",
            session_settings()
        ))
        .await
        .unwrap();
    client
}

fn assert_rows(got: &[Vec<Value>], want: &[Vec<Value>], ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_row(g, w, &format!("{ctx}: row {i}"));
    }
}

fn key_order(rows: &mut [Vec<Value>]) {
    rows.sort_by(|a, b| format!("{:?}{:?}", a[0], a[1]).cmp(&format!("{:?}{:?}", b[0], b[1])));
}

/// Every row of `table`, read in key chunks of `limit` rows.
async fn by_key(
    table: &SnapshotTable,
    client: &tokio_postgres::Client,
    limit: u64,
) -> (Vec<Vec<Value>>, usize) {
    let (mut all, mut chunks, mut key) = (Vec::new(), 0, None);
    loop {
        let got = table
            .read(client, "test", &Chunk::After { key, limit }, None)
            .await
            .unwrap();
        if got.rows.is_empty() {
            return (all, chunks);
        }
        assert!(got.rows.len() as u64 <= limit);
        chunks += 1;
        all.extend(got.rows);
        key = got.last_key;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_rows_decode_as_the_stream_does() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SETUP).await.unwrap();
    let slot = db.slot();
    let mut running = Running::start(db.config(&slot, &["snap", "loose"])).await;
    db.client().await.batch_execute(ROWS).await.unwrap();
    let txns = running.txns(2).await;
    let streamed: Vec<Vec<Value>> = txns[0]
        .changes
        .iter()
        .map(|c| {
            assert_eq!(c.op, Op::Insert);
            c.after.clone().unwrap()
        })
        .collect();
    let stream_table = txns[0].changes[0].table.clone().unwrap();
    let loose_streamed: Vec<Vec<Value>> = txns[1]
        .changes
        .iter()
        .map(|c| c.after.clone().unwrap())
        .collect();

    let client = snapshot_client(&db).await;
    let db_key: std::sync::Arc<str> = "snapshot-test".into();
    let snap = describe(&client, "test", &db_key, "public", "snap", None)
        .await
        .unwrap();
    // The shape pgoutput announced: columns (generated one left out, the
    // domain by its base type, the enum by schema.name), key flags, OID.
    assert_eq!(snap.schema.id, stream_table.id);
    assert_eq!(snap.schema.columns, stream_table.columns);
    assert_eq!(snap.schema.replica_identity, stream_table.replica_identity);
    assert!(snap.has_key());

    let mut want = streamed.clone();
    key_order(&mut want);
    let mut whole = snap
        .read(
            &client,
            "test",
            &Chunk::Pages {
                start: 0,
                end: None,
            },
            None,
        )
        .await
        .unwrap()
        .rows;
    key_order(&mut whole);
    assert_rows(&whole, &want, "whole table by pages");

    // Key order is Postgres's (collation), so compare as sets and check
    // that chunks of one row each cover every row once.
    let (mut keyed, chunks) = by_key(&snap, &client, 1).await;
    assert_eq!(chunks, 4);
    key_order(&mut keyed);
    assert_rows(&keyed, &want, "by key, a row per chunk");
    let (mut keyed, chunks) = by_key(&snap, &client, 3).await;
    assert_eq!(chunks, 2);
    key_order(&mut keyed);
    assert_rows(&keyed, &want, "by key, three rows per chunk");

    // By listed keys (a verifier's second look, a repair): the key texts
    // a key read gives find exactly their rows, in key order, a key that
    // is not there finds nothing, and a key decodes as the stream's values.
    let all = snap
        .read(
            &client,
            "test",
            &Chunk::After {
                key: None,
                limit: 10,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(all.keys.len(), 4);
    let mut listed = all.keys.clone();
    listed.reverse();
    listed.push(vec!["nowhere".into(), "9".into()]);
    let found = snap
        .read(&client, "test", &Chunk::Keys(listed), None)
        .await
        .unwrap();
    assert_eq!(found.keys, all.keys);
    assert_rows(&found.rows, &all.rows, "by listed keys");
    let none = snap
        .read(&client, "test", &Chunk::Keys(Vec::new()), None)
        .await
        .unwrap();
    assert!(none.rows.is_empty());
    for (key, row) in all.keys.iter().zip(&all.rows) {
        let only_key = snap.key_row(key).unwrap();
        assert_eq!(only_key[..2], row[..2], "{key:?}");
        assert!(only_key[2..].iter().all(|v| *v == Value::Null), "{key:?}");
    }
    assert!(snap.key_row(&["eu".into()]).is_err());
    assert!(snap.key_row(&["eu".into(), "one".into()]).is_err());

    let filtered = snap
        .read(
            &client,
            "test",
            &Chunk::Pages {
                start: 0,
                end: None,
            },
            Some("region = 'eu'"),
        )
        .await
        .unwrap();
    assert_eq!(filtered.rows.len(), 2);

    // A keyless table reads by pages only; two page ranges cover it.
    client.batch_execute("COMMIT").await.unwrap();
    db.client()
        .await
        .batch_execute("ANALYZE loose")
        .await
        .unwrap();
    let client = snapshot_client(&db).await;
    let loose = describe(&client, "test", &db_key, "public", "loose", None)
        .await
        .unwrap();
    assert!(!loose.has_key());
    assert!(
        loose.pages >= 2,
        "300 rows should fill more than one page: {}",
        loose.pages
    );
    assert_eq!(loose.estimated_rows, Some(300));
    assert!(
        loose
            .copy_sql(
                &Chunk::After {
                    key: None,
                    limit: 10
                },
                None
            )
            .is_err()
    );
    let half = loose.pages / 2;
    let mut rows = loose
        .read(
            &client,
            "test",
            &Chunk::Pages {
                start: 0,
                end: Some(half),
            },
            None,
        )
        .await
        .unwrap()
        .rows;
    let first = rows.len();
    rows.extend(
        loose
            .read(
                &client,
                "test",
                &Chunk::Pages {
                    start: half,
                    end: None,
                },
                None,
            )
            .await
            .unwrap()
            .rows,
    );
    assert!(first > 0 && first < 300, "{first}");
    rows.sort_by_key(|r| match r[1] {
        Value::Int(n) => n,
        _ => 0,
    });
    assert_rows(&rows, &loose_streamed, "keyless, by two page ranges");
    running.ack.send_replace(txns[1].commit.end_lsn);
    running.stop().await.unwrap();
}

/// Runs `setup` in a new database, streams `rows` (one transaction into
/// `table`) with pgoutput's binary option `binary`, and reads `table` as
/// one page chunk matching that stream: the streamed rows and the read
/// ones, in key order, and the COPY statement.
async fn streamed_and_read(
    setup: &str,
    rows: &str,
    table: &str,
    binary: bool,
) -> (Vec<Vec<Value>>, Vec<Vec<Value>>, String) {
    let db = TestDb::new().await;
    db.client().await.batch_execute(setup).await.unwrap();
    let slot = db.slot();
    let config = weir_postgres::PostgresConfig {
        binary,
        ..db.config(&slot, &[table])
    };
    let mut running = Running::start(config).await;
    db.client().await.batch_execute(rows).await.unwrap();
    let txn = running.txn().await;
    let mut streamed: Vec<Vec<Value>> = txn
        .changes
        .iter()
        .map(|c| c.after.clone().unwrap())
        .collect();
    key_order(&mut streamed);

    let client = snapshot_client(&db).await;
    let db_key: std::sync::Arc<str> = "snapshot-test".into();
    let shape = describe(&client, "test", &db_key, "public", table, None)
        .await
        .unwrap();
    let whole = Chunk::Pages {
        start: 0,
        end: None,
    };
    let mut read = shape
        .read(&client, "test", &whole, None)
        .await
        .unwrap()
        .rows;
    key_order(&mut read);
    running.ack.send_replace(txn.commit.end_lsn);
    running.stop().await.unwrap();
    (streamed, read, shape.copy_sql(&whole, None).unwrap())
}

/// With pgoutput's binary mode, a page chunk (read as binary COPY) holds
/// exactly the stream's values, including the types without a `Value` of
/// their own (array, interval, inet, enum), which the stream prints as
/// their text and the chunk selects as text: so a watermark window can
/// match the stream's changes to a chunk's rows whatever the key's type.
#[tokio::test(flavor = "multi_thread")]
async fn in_binary_mode_snapshot_rows_decode_as_the_binary_stream_does() {
    let (streamed, read, sql) = streamed_and_read(SETUP, ROWS, "snap", true).await;
    // The enum is its label, printed from the binary form.
    assert!(
        streamed
            .iter()
            .any(|r| r[14] == Value::Other("sad".to_owned())),
        "{streamed:?}"
    );
    assert!(
        sql.contains("pg_catalog.format('%s', \"m\")"),
        "m as text: {sql}"
    );
    assert_rows(&read, &streamed, "binary stream, binary COPY");
}

/// Types whose text and binary forms take different paths through the
/// decoder, or that Weir does not decode (composites, domains over arrays
/// and enums, money, ranges, geometry, `aclitem`, which has no binary
/// form at all): a page chunk reads each as the stream sends it, in text
/// mode and in binary mode.
#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_column_reads_as_the_stream_sends_it_in_both_modes() {
    const KINDS: &str = r#"
        CREATE TYPE feeling_base AS ENUM ('ok', 'sad');
        CREATE DOMAIN feeling AS feeling_base;
        CREATE DOMAIN tags AS text[];
        CREATE TYPE pair AS (a int, b text);
        CREATE TABLE kinds (
            id int PRIMARY KEY, n numeric, js json, f4 float4, i2 int2, o oid,
            tm time, tsp timestamp, bc char(5), nm name, ch "char", pr pair,
            tg tags, fe feeling, mo money, iv interval, ci cidr, bits varbit,
            pt point, r int4range, acl aclitem);
    "#;
    const KIND_ROWS: &str = r#"
        INSERT INTO kinds VALUES
          (1, 'NaN', '{"a": 1}', 1.1, -32768, 4294967295, '23:59:59.999999', 'infinity',
           'ab', 'nm', 'x', ROW(NULL, NULL), '{a,"b c"}', 'sad', 12.34, '1 year 2 mons',
           '10.0.0.0/8', B'101', '(1,2)', '[1,5)', 'postgres=arwdDxt/postgres'),
          (2, 'Infinity', 'null', 'NaN', 0, 0, '00:00', '-infinity', '', '', '', ROW(1, 'x'),
           '{}', 'ok', -0.5, '-3 days', '::1/128', B'', '(-1.5,0)', 'empty', NULL),
          (3, '-Infinity', '[1, 2]', '-Infinity', 32767, 1, '12:00', '2000-01-01 00:00:00.5',
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    "#;
    for binary in [false, true] {
        let (streamed, read, _) = streamed_and_read(KINDS, KIND_ROWS, "kinds", binary).await;
        assert_eq!(streamed.len(), 3);
        assert_rows(&read, &streamed, &format!("binary = {binary}"));
    }
}

/// A config capturing `tables` through `slot` with the initial snapshot on.
fn snapshot_config(db: &TestDb, slot: &str, tables: &[&str]) -> weir_postgres::PostgresConfig {
    weir_postgres::PostgresConfig {
        snapshot: weir_postgres::SnapshotMode::Initial,
        ..db.config(slot, tables)
    }
}

/// Reads an initial snapshot to the end: its transaction's items.
async fn take_snapshot(
    source: &mut weir_postgres::PostgresSource,
) -> (
    weir_postgres::snapshot::SnapshotSummary,
    Vec<weir_core::SourceItem>,
) {
    let snapshot = source
        .take_initial_snapshot()
        .expect("a new slot with snapshot on has an initial snapshot");
    assert_eq!(snapshot.consistent_point(), source.start_lsn());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let collect = tokio::spawn(async move {
        let mut items = Vec::new();
        while let Some(batch) = rx.recv().await {
            items.extend(batch);
        }
        items
    });
    // Nothing downstream: every transaction counts as retired at once.
    let (_retired_tx, retired) = tokio::sync::watch::channel(Some(weir_core::TxnId(u64::MAX)));
    let summary = snapshot
        .run(&tx, retired, &weir_postgres::CancellationToken::new())
        .await
        .unwrap();
    drop(tx);
    (summary, collect.await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_slot_reads_existing_rows_then_streams_from_its_consistent_point() {
    use weir_core::SourceItem;
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE big (id int8 PRIMARY KEY, v text); \
             INSERT INTO big SELECT g, repeat('x', 200) || g FROM generate_series(1, 60000) g; \
             CREATE TABLE empty (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let slot = db.slot();
    let config = weir_postgres::PostgresConfig {
        snapshot_workers: 3,
        ..snapshot_config(&db, &slot, &["big", "empty"])
    };
    let mut source = weir_postgres::PostgresSource::prepare(config.clone())
        .await
        .unwrap();
    // Written after the slot was created: in the stream, not the snapshot.
    client
        .batch_execute(
            "UPDATE big SET v = 'after' WHERE id = 1; INSERT INTO big VALUES (60001, 'new')",
        )
        .await
        .unwrap();
    let (summary, items) = take_snapshot(&mut source).await;
    assert!(summary.complete);
    assert_eq!(summary.rows, 60000);
    assert_eq!(summary.tables, 2);
    // One transaction per chunk with rows, each ending at the consistent
    // point (acknowledging it moves nothing).
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    let mut open = None;
    let mut txns = 0;
    for item in &items {
        match item {
            SourceItem::Begin(b) => {
                assert!(open.is_none(), "transactions do not nest");
                open = Some(b.txn);
                txns += 1;
            }
            SourceItem::Commit(c) => {
                assert_eq!(open.take(), Some(c.txn));
                assert_eq!(c.end_lsn, source.start_lsn());
            }
            SourceItem::Change(c) => {
                assert_eq!(c.op, Op::Read);
                assert_eq!(Some(c.txn), open);
                // Just below the consistent point, where a streamed commit may sit.
                assert_eq!(c.source.commit_lsn.0, source.start_lsn().0 - 1);
                seqs.push(c.source.seq);
                kinds.push(c.source.snapshot);
                let row = c.after.as_ref().unwrap();
                let Value::Int(id) = row[0] else { panic!() };
                if id == 1 {
                    assert_eq!(
                        row[1],
                        Value::Text(format!("{}1", "x".repeat(200))),
                        "the snapshot's version"
                    );
                }
                ids.push(id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(txns > 1, "60000 rows of 200 bytes fill more than one chunk");
    assert_eq!(
        summary.last_txn,
        match items.last() {
            Some(SourceItem::Commit(c)) => Some(c.txn),
            _ => None,
        }
    );
    assert_eq!(
        seqs,
        (0..60000).collect::<Vec<u32>>(),
        "positions are unique and in order"
    );
    // Debezium's "last": the last row handed on, and only it.
    let last = kinds.pop();
    assert_eq!(last, Some(weir_core::SnapshotKind::Last));
    assert!(kinds.iter().all(|k| *k == weir_core::SnapshotKind::Initial));
    ids.sort_unstable();
    assert_eq!(ids, (1..=60000).collect::<Vec<_>>());

    // Done: a restart does not snapshot again.
    weir_postgres::snapshot::record_finished(&config, &slot)
        .await
        .unwrap();
    let source_start = source.start_lsn();
    let mut running = Running::spawn(source);
    let after = running.txn().await;
    assert!(after.begin.commit_lsn >= source_start);
    assert_eq!(after.changes.len(), 2);
    assert_eq!(after.changes[0].op, Op::Update);
    assert_eq!(after.changes[1].op, Op::Insert);
    running.ack.send_replace(after.commit.end_lsn);
    running.stop().await.unwrap();
    let mut again = weir_postgres::PostgresSource::prepare(config)
        .await
        .unwrap();
    assert!(again.take_initial_snapshot().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_initial_snapshot_starts_over_on_a_new_slot() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)",
        )
        .await
        .unwrap();
    let slot = db.slot();
    let config = snapshot_config(&db, &slot, &["t"]);
    let mut first = weir_postgres::PostgresSource::prepare(config.clone())
        .await
        .unwrap();
    drop(first.take_initial_snapshot());
    drop(first);
    client
        .batch_execute("INSERT INTO t VALUES (11)")
        .await
        .unwrap();
    // The snapshot was never recorded finished: the slot is made again and
    // the new snapshot holds the row written meanwhile.
    let mut second = weir_postgres::PostgresSource::prepare(config)
        .await
        .unwrap();
    let (summary, _) = take_snapshot(&mut second).await;
    assert_eq!(summary.rows, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publications_column_list_and_row_filter_apply_to_the_snapshot() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text, secret text); \
             INSERT INTO t SELECT g, 'v' || g, 'hidden' FROM generate_series(1, 10) g; \
             CREATE PUBLICATION {} FOR TABLE t (id, v) WHERE (id > 6);",
            db.publication
        ))
        .await
        .unwrap();
    let slot = db.slot();
    let config = snapshot_config(&db, &slot, &["t"]);
    let mut source = weir_postgres::PostgresSource::prepare(config)
        .await
        .unwrap();
    let (summary, items) = take_snapshot(&mut source).await;
    assert_eq!(summary.rows, 4, "rows 7..=10 pass the filter");
    for item in &items {
        if let weir_core::SourceItem::Change(c) = item {
            let table = c.table.as_ref().unwrap();
            let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["id", "v"], "the secret column is not published");
            assert_eq!(c.after.as_ref().unwrap().len(), 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_made_just_before_a_crash_is_snapshotted_again() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let slot = db.slot();
    // As a crash right after CREATE_REPLICATION_SLOT leaves it: the
    // snapshot recorded as running (no consistent point yet), the slot made.
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 5); \
             CREATE SCHEMA weir; CREATE TABLE weir.snapshots (slot text PRIMARY KEY, \
               consistent_point pg_lsn, state text NOT NULL, \
               started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz); \
             INSERT INTO weir.snapshots (slot, state) VALUES ('{slot}', 'running');"
        ))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ))
        .await
        .unwrap();
    let config = snapshot_config(&db, &slot, &["t"]);
    let mut source = weir_postgres::PostgresSource::prepare(config)
        .await
        .unwrap();
    let (summary, _) = take_snapshot(&mut source).await;
    assert_eq!(summary.rows, 5);
}

/// The table as a map from id to (v, pad): what a state sink would hold.
type Rows = std::collections::BTreeMap<i64, (i64, String)>;

/// Fails naming the first rows that differ, not printing both tables.
fn assert_same(rebuilt: &Rows, source: &Rows) {
    let differ: Vec<_> = source
        .iter()
        .filter(|(k, v)| rebuilt.get(k) != Some(v))
        .map(|(k, v)| (k, Some(v), rebuilt.get(k)))
        .chain(
            rebuilt
                .iter()
                .filter(|(k, _)| !source.contains_key(k))
                .map(|(k, v)| (k, None, Some(v))),
        )
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "the rebuilt table differs from the source ({} vs {} rows); first (id, source, rebuilt): {differ:?}",
        rebuilt.len(),
        source.len()
    );
}

async fn table_rows(client: &tokio_postgres::Client) -> Rows {
    client
        .query("SELECT id, v, pad FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// Applies `txn` as a state sink would: `read`, insert and update upsert
/// the new row, delete removes it. Returns the `read` events it held.
fn apply(rows: &mut Rows, txn: &Txn) -> usize {
    let mut reads = 0;
    for c in &txn.changes {
        let id = |row: &Option<Vec<Value>>| match row.as_ref().map(|r| &r[0]) {
            Some(Value::Int(id)) => *id,
            other => panic!("{other:?}"),
        };
        match c.op {
            Op::Read | Op::Insert | Op::Update => {
                reads += usize::from(c.op == Op::Read);
                // Which snapshot: the initial one, or one while streaming.
                assert_eq!(
                    c.op == Op::Read,
                    c.source.snapshot != weir_core::SnapshotKind::None,
                    "{c:?}"
                );
                if let Some(before) = &c.before {
                    rows.remove(&id(&Some(before.clone())));
                }
                let after = c.after.as_ref().unwrap();
                let (Value::Int(v), Value::Text(pad)) = (&after[1], &after[2]) else {
                    panic!("{after:?}")
                };
                rows.insert(id(&c.after), (*v, pad.clone()));
            }
            Op::Delete => {
                rows.remove(&id(&c.before));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    reads
}

/// Writes random updates, inserts, key changes and deletes to `t` until
/// stopped; returns how many statements it ran.
fn writer(
    db: &TestDb,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let dbname = db.name.clone();
    tokio::spawn(async move {
        let client = connect(&dbname).await;
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let k = (n * 7919) % 20000 + 1;
            let sql = match n % 4 {
                0 => format!("UPDATE t SET v = v + 1 WHERE id = {k}"),
                1 => format!(
                    "INSERT INTO t VALUES ({}, 0, 'new') ON CONFLICT DO NOTHING",
                    100000 + n
                ),
                2 => format!("DELETE FROM t WHERE id = {}", k + 3),
                _ => format!("UPDATE t SET id = {} WHERE id = {}", 200000 + n, k + 5),
            };
            client.batch_execute(&sql).await.unwrap();
            n += 1;
        }
        n
    })
}

/// Reads transactions, acknowledging each, into `rows` until one inserts
/// the row `sentinel`; returns the `read` events seen.
async fn until_sentinel(running: &mut Running, rows: &mut Rows, sentinel: i64) -> usize {
    let mut reads = 0;
    loop {
        let txn = running.txn().await;
        reads += apply(rows, &txn);
        assert!(
            txn.changes
                .iter()
                .filter(|c| c.op == Op::Read)
                .all(|c| c.source.snapshot == weir_core::SnapshotKind::Incremental),
            "rows read while streaming are marked so"
        );
        running.ack.send_replace(txn.commit.end_lsn);
        if txn.changes.iter().any(|c| {
            c.op == Op::Insert
                && c.after
                    .as_ref()
                    .is_some_and(|r| r[0] == Value::Int(sentinel))
        }) {
            return reads;
        }
    }
}

async fn request_state(client: &tokio_postgres::Client, slot: &str, request: i64) -> (String, i64) {
    let row = client
        .query_one(
            "SELECT state || coalesce(': ' || error, ''), cardinality(done)::int8 \
             FROM weir.snapshot_tables WHERE slot = $1 AND request = $2",
            &[&slot, &request],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

const TABLE_T: &str = "CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL, pad text NOT NULL); \
     INSERT INTO t SELECT g, g, repeat('p', 100) FROM generate_series(1, 20000) g;";

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_while_streaming_under_writes_rebuilds_the_table_and_the_slot_moves_on() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE_T).await.unwrap();
    let slot = db.slot();
    let config = weir_postgres::PostgresConfig {
        snapshot_chunk_pages: 32,
        ..db.config(&slot, &["t"])
    };
    let mut running = Running::start(config.clone()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = writer(&db, stop.clone());
    let start = confirmed_flush(&client, &slot).await;
    let request = weir_postgres::snapshot::request(&config, &["public.t".into()], None)
        .await
        .unwrap();
    assert!(request > 0, "request 0 is the initial snapshot's");
    // A state sink that only sees changes from now on, plus the snapshot.
    let mut rows = Rows::new();
    let (mut reads, mut moved_while_copying) = (0, false);
    // The request's state is read every 100 ms, not after every
    // transaction: a query per transaction made this reader slower than
    // the writer, so it fell ever further behind and the snapshot, which
    // waits for the stream to pass its watermarks, could not finish.
    let mut next_look = tokio::time::Instant::now();
    loop {
        let txn = running.txn().await;
        reads += apply(&mut rows, &txn);
        running.ack.send_replace(txn.commit.end_lsn);
        if tokio::time::Instant::now() < next_look {
            continue;
        }
        next_look = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
        let (state, done) = request_state(&client, &slot, request).await;
        if state == "pending" && done >= 2 {
            moved_while_copying |= confirmed_flush(&client, &slot).await > start;
        }
        if state != "pending" {
            assert_eq!(state, "done");
            break;
        }
    }
    assert!(
        moved_while_copying,
        "the slot was acknowledged while the snapshot ran"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writes.await.unwrap();
    assert!(
        written > 20,
        "the writer ran during the snapshot ({written} writes)"
    );
    client
        .batch_execute("INSERT INTO t VALUES (-1, 0, 'end')")
        .await
        .unwrap();
    reads += until_sentinel(&mut running, &mut rows, -1).await;
    assert_same(&rows, &table_rows(&client).await);
    assert!(
        reads >= 19000,
        "the snapshot read the table ({reads} reads)"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_initial_snapshot_resumes_with_the_chunks_not_delivered() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE_T).await.unwrap();
    let slot = db.slot();
    let config = weir_postgres::PostgresConfig {
        snapshot_chunk_pages: 32,
        snapshot_workers: 1,
        ..snapshot_config(&db, &slot, &["t"])
    };
    let mut first = weir_postgres::PostgresSource::prepare(config.clone())
        .await
        .unwrap();
    let snapshot = first.take_initial_snapshot().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let (retired_tx, retired) = tokio::sync::watch::channel(None);
    let shutdown = weir_postgres::CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { snapshot.run(&tx, retired, &shutdown).await }
    });
    // Three chunks reach the "sinks"; then the process dies.
    let mut rows = Rows::new();
    let mut txns = Vec::new();
    let mut current: Option<(weir_core::TxnBegin, Vec<weir_core::ChangeEvent>)> = None;
    while txns.len() < 3 {
        for item in rx.recv().await.unwrap() {
            match item {
                weir_core::SourceItem::Begin(b) => current = Some((b, Vec::new())),
                weir_core::SourceItem::Change(c) => current.as_mut().unwrap().1.push(c),
                weir_core::SourceItem::Commit(commit) => {
                    let (begin, changes) = current.take().unwrap();
                    txns.push(Txn {
                        begin,
                        changes,
                        commit,
                    });
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let kept: usize = txns[..3].iter().map(|t| apply(&mut rows, t)).sum();
    retired_tx.send_replace(Some(txns[2].begin.txn));
    eventually("three chunks recorded", || async {
        request_state(&client, &slot, 0).await.1 >= 3
    })
    .await;
    shutdown.cancel();
    drop(rx);
    let _ = task.await;
    drop(first);
    // Written while Weir was down: after the consistent point, in the stream.
    client
        .batch_execute("UPDATE t SET v = -v WHERE id % 100 = 0; DELETE FROM t WHERE id % 101 = 0")
        .await
        .unwrap();

    let mut second = weir_postgres::PostgresSource::prepare(config.clone())
        .await
        .unwrap();
    assert!(
        second.take_initial_snapshot().is_none(),
        "no new slot, no new snapshot"
    );
    assert!(second.resumes_initial_snapshot());
    let progress = std::sync::Arc::new(weir_postgres::snapshot::SnapshotProgress::default());
    second.share_progress(progress.clone());
    let mut running = Running::spawn(second);
    let mut reread = 0;
    let mut ticks = 0;
    while !progress.is_delivered() {
        let txn = running.txn().await;
        reread += apply(&mut rows, &txn);
        running.ack.send_replace(txn.commit.end_lsn);
        // The last chunk is recorded after its acknowledgement: keep the
        // stream busy meanwhile, so there is always a next transaction.
        ticks += 1;
        client
            .batch_execute(&format!("INSERT INTO t VALUES (-{ticks} - 1, 0, 'tick')"))
            .await
            .unwrap();
    }
    client
        .batch_execute("INSERT INTO t VALUES (-1, 0, 'end')")
        .await
        .unwrap();
    reread += until_sentinel(&mut running, &mut rows, -1).await;
    assert_same(&rows, &table_rows(&client).await);
    // The 200 rows updated while Weir was down may have moved into pages
    // not yet read, and are read there again; nothing else is.
    assert!(
        kept + reread <= 20000 + 200,
        "only the chunks not delivered were read again ({kept} kept, {reread} read after the restart)"
    );
    assert!(
        kept >= 3 * 1000,
        "three chunks were delivered before the crash ({kept} rows)"
    );
    let state: String = client
        .query_one("SELECT state FROM weir.snapshots WHERE slot = $1", &[&slot])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "done");
    running.stop().await.unwrap();
}
