//! Test fixtures against the real Postgres on 127.0.0.1:5432 (trust auth,
//! wal_level = logical): a throwaway database per test, unique slot,
//! publication and role names, and cleanup on drop — even when the test
//! fails — so the cluster does not collect slots that pin WAL.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use weir_core::{ChangeEvent, Lsn, SourceItem, TxnBegin, TxnCommit, Value};
use weir_postgres::{CancellationToken, PgError, PostgresConfig, PostgresSource};

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 5432;
/// Upper bound for waiting on the server; only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

pub async fn connect(dbname: &str) -> Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host(HOST)
        .port(PORT)
        .user("postgres")
        .dbname(dbname)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {HOST}:{PORT}/{dbname}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of its own, plus the cluster-global objects a test made.
pub struct TestDb {
    pub name: String,
    pub publication: String,
    slots: Mutex<Vec<String>>,
    roles: Mutex<Vec<String>>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = unique("weir_pg");
        connect("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            publication: format!("{name}_pub"),
            name,
            slots: Mutex::new(Vec::new()),
            roles: Mutex::new(Vec::new()),
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.name).await
    }

    /// A fresh slot name, dropped with the database.
    pub fn slot(&self) -> String {
        let s = unique("weir_slot");
        self.slots.lock().unwrap().push(s.clone());
        s
    }

    /// A fresh role name, dropped with the database.
    pub fn role(&self) -> String {
        let r = unique("weir_role");
        self.roles.lock().unwrap().push(r.clone());
        r
    }

    /// A config capturing `tables` (in schema public) through `slot`.
    pub fn config(&self, slot: &str, tables: &[&str]) -> PostgresConfig {
        PostgresConfig {
            host: HOST.into(),
            port: PORT,
            user: "postgres".into(),
            password: None,
            dbname: self.name.clone(),
            application_name: "weir-test".into(),
            slot: slot.into(),
            publication: self.publication.clone(),
            tables: tables
                .iter()
                .map(|t| ("public".to_owned(), (*t).to_owned()))
                .collect(),
            ..PostgresConfig::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let slots = std::mem::take(&mut *self.slots.lock().unwrap());
        let roles = std::mem::take(&mut *self.roles.lock().unwrap());
        // Drop may run inside a runtime (or during a panic): clean up on a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cleanup(name, slots, roles));
        })
        .join();
    }
}

async fn cleanup(name: String, slots: Vec<String>, roles: Vec<String>) {
    let c = connect("postgres").await;
    for slot in &slots {
        for _ in 0..100 {
            let _ = c
                .execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND active",
                    &[slot],
                )
                .await;
            match c
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = $1",
                    &[slot],
                )
                .await
            {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    if let Err(e) = c
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("cleanup: dropping database {name}: {e}");
    }
    for r in &roles {
        let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
    }
}

/// One transaction as the source delivered it.
#[derive(Debug)]
pub struct Txn {
    pub begin: TxnBegin,
    pub changes: Vec<ChangeEvent>,
    pub commit: TxnCommit,
}

/// A source running in a task, with the test playing the pipeline.
pub struct Running {
    rx: mpsc::Receiver<Vec<SourceItem>>,
    pub ack: watch::Sender<Lsn>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), PgError>>>,
    pending: VecDeque<SourceItem>,
}

impl Running {
    pub async fn start(config: PostgresConfig) -> Running {
        let source = PostgresSource::prepare(config)
            .await
            .unwrap_or_else(|e| panic!("prepare: {e}"));
        Running::spawn(source)
    }

    pub fn spawn(source: PostgresSource) -> Running {
        let (tx, rx) = mpsc::channel(4);
        let (ack, ack_rx) = watch::channel(source.start_lsn());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, ack_rx, shutdown.clone()));
        Running {
            rx,
            ack,
            shutdown,
            task: Some(task),
            pending: VecDeque::new(),
        }
    }

    async fn item(&mut self) -> SourceItem {
        loop {
            if let Some(i) = self.pending.pop_front() {
                return i;
            }
            match tokio::time::timeout(PATIENCE, self.rx.recv()).await {
                Ok(Some(batch)) => {
                    assert!(!batch.is_empty(), "the source sent an empty batch");
                    self.pending.extend(batch);
                }
                Ok(None) => {
                    let r = self.task.take().unwrap().await.unwrap();
                    panic!("the source stopped: {r:?}");
                }
                Err(_) => panic!("no item from the source within {PATIENCE:?}"),
            }
        }
    }

    /// The next whole transaction, checking its framing.
    pub async fn txn(&mut self) -> Txn {
        let SourceItem::Begin(begin) = self.item().await else {
            panic!("expected Begin");
        };
        let mut changes = Vec::new();
        loop {
            match self.item().await {
                SourceItem::Change(c) => {
                    assert_eq!(c.txn, begin.txn);
                    assert_eq!(c.source.commit_lsn, begin.commit_lsn);
                    assert_eq!(c.source.xid, begin.xid);
                    assert_eq!(c.source.commit_time_micros, begin.commit_time_micros);
                    assert_eq!(c.source.seq as usize, changes.len());
                    changes.push(c);
                }
                SourceItem::Commit(commit) => {
                    assert_eq!(commit.txn, begin.txn);
                    assert_eq!(commit.commit_lsn, begin.commit_lsn);
                    assert!(commit.end_lsn > commit.commit_lsn);
                    return Txn {
                        begin,
                        changes,
                        commit,
                    };
                }
                SourceItem::Begin(b) => panic!("Begin {b:?} inside a transaction"),
                SourceItem::Restart => panic!("the source never produces Restart itself"),
            }
        }
    }

    pub async fn txns(&mut self, n: usize) -> Vec<Txn> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.txn().await);
        }
        v
    }

    /// Requests shutdown and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), PgError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped twice");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("run did not return after shutdown")
            .unwrap()
    }

    /// Waits for `run` to end on its own (an error) and returns it.
    pub async fn failure(mut self) -> PgError {
        let task = self.task.take().unwrap();
        match tokio::time::timeout(PATIENCE, task).await {
            Ok(r) => r.unwrap().expect_err("run succeeded"),
            Err(_) => panic!("run did not fail within {PATIENCE:?}"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The slot's confirmed flush position.
pub async fn confirmed_flush(c: &Client, slot: &str) -> Lsn {
    let s: String = c
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    s.parse().unwrap()
}

/// Polls `f` until it returns true, failing after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Compares rows, treating NaN floats as equal to NaN.
pub fn assert_row(actual: &[Value], expected: &[Value], ctx: &str) {
    assert_eq!(actual.len(), expected.len(), "{ctx}: column count");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let same = match (a, e) {
            (Value::Float(x), Value::Float(y)) if x.is_nan() && y.is_nan() => true,
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == e,
        };
        assert!(same, "{ctx}: column {i}: got {a:?}, expected {e:?}");
    }
}

/// Integer values of column `col` of each change's `after` row.
pub fn ints(txn: &Txn, col: usize) -> Vec<i64> {
    txn.changes
        .iter()
        .map(|c| match &c.after.as_ref().expect("after")[col] {
            Value::Int(i) => *i,
            v => panic!("not an int: {v:?}"),
        })
        .collect()
}
