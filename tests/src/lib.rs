//! Test harness for Weir's end-to-end tests.
//!
//! Everything here talks to real services: the machine's PostgreSQL (made
//! ready for logical replication by `scripts/setup-postgres`), a tansu
//! Kafka broker started per test on a free loopback port, and the real
//! `weir` binary run as a child process. Each test gets its own database,
//! slot and publication, so tests run in parallel without colliding, and
//! every process or database a test creates is removed when its guard drops.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
pub use serde_json::Value as Json;

pub mod browser;
pub mod conformance;
pub mod readback;
pub mod records;
pub mod services;
pub mod types;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// [`wait_for`] for async checks: `f` every 100 ms until it gives
/// something, for at most `timeout`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `weir` binary built alongside the tests (`cargo test --workspace`
/// builds it), or `$WEIR_BIN`.
pub fn weir_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("weir");
    assert!(
        bin.exists(),
        "the weir binary is missing at {}: build it with `cargo build -p weir` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// A plugin component built by `scripts/build-plugins`.
pub fn plugin(name: &str) -> PathBuf {
    let file = name.replace('-', "_");
    let path = repo_root()
        .join("plugins/target/wasm32-wasip2/release")
        .join(format!("{file}.wasm"));
    assert!(
        path.exists(),
        "plugin {name} is not built ({} missing): run scripts/build-plugins",
        path.display()
    );
    path
}

const STAMP_MARKER: &[u8] = b"weir-stamp:000";

/// The stamp plugin with its marker rewritten to `weir-stamp:NNN`: a valid
/// component with another hash, that stamps changes with another marker,
/// for deploying "new versions" in tests.
pub fn stamp_version(n: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(plugin("stamp")).unwrap();
    let at = bytes
        .windows(STAMP_MARKER.len())
        .position(|w| w == STAMP_MARKER)
        .expect("the stamp plugin holds its marker");
    bytes[at..at + STAMP_MARKER.len()].copy_from_slice(format!("weir-stamp:{n:03}").as_bytes());
    bytes
}

/// Load for the stamp plugin's tests: transactions of three rows into
/// table `t` (`id`, `v` = `a`, `b`, `c`), committed one after the other
/// until stopped, and at least `min` of them.
pub struct StampLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writer: tokio::task::JoinHandle<i64>,
}

impl StampLoad {
    /// Starts writing.
    pub fn start(db: std::sync::Arc<TestDb>, min: i64) -> StampLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let writer = tokio::spawn(async move {
            let mut txns = 0;
            while !stopped.load(Ordering::Relaxed) || txns < min {
                let id = txns * 3;
                db.exec(&format!(
                    "INSERT INTO t VALUES ({id}, 'a'), ({}, 'b'), ({}, 'c')",
                    id + 1,
                    id + 2
                ))
                .await;
                txns += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            txns
        });
        StampLoad { stop, writer }
    }

    /// Stops writing; returns how many rows were written.
    pub async fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let txns = self.writer.await.expect("the load's writer");
        (txns * 3) as usize
    }
}

/// Checks the output of the stamp plugin under load (rows `0..n` written
/// as transactions of three, `v` being `a`, `b` or `c`): every change once,
/// in order, each stamped by exactly one version, each transaction by one
/// version. Returns the versions in the order they took over.
pub fn stamp_versions_in_order(lines: &[Json]) -> Vec<u32> {
    let ids: Vec<i64> = lines
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..lines.len() as i64).collect::<Vec<_>>(),
        "every change once, in order"
    );
    let mut per_txn: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for (id, line) in ids.iter().zip(lines) {
        let v = line["after"]["v"].as_str().unwrap();
        let (value, stamp) = v
            .split_once("@weir-stamp:")
            .unwrap_or_else(|| panic!("{v}"));
        assert!(
            !value.contains('@') && ["a", "b", "c"].contains(&value),
            "stamped by one version only: {v}"
        );
        per_txn
            .entry(id / 3)
            .or_default()
            .push(stamp.parse().unwrap());
    }
    let mut versions_in_order = Vec::new();
    for (txn, stamps) in &per_txn {
        assert!(
            stamps.iter().all(|s| *s == stamps[0]),
            "transaction {txn} was split across versions: {stamps:?}"
        );
        if versions_in_order.last() != Some(&stamps[0]) {
            versions_in_order.push(stamps[0]);
        }
    }
    versions_in_order
}

/// The path of a Python or JavaScript example component (`redact_pii`,
/// `normalize`, `py_passthrough`, `js_passthrough`), built by
/// `scripts/build-polyglot-plugins`.
pub fn polyglot(name: &str) -> PathBuf {
    let path = repo_root()
        .join("plugins/target/polyglot")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "plugin {name} is not built ({} missing): run scripts/build-polyglot-plugins",
        path.display()
    );
    path
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A short random lower-case suffix for names.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}_{n:x}")
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connection settings of the machine's Postgres (override with PGHOST, PGPORT, PGUSER).
pub fn pg_host() -> String {
    std::env::var("PGHOST").unwrap_or_else(|_| "127.0.0.1".into())
}

/// Postgres port.
pub fn pg_port() -> u16 {
    std::env::var("PGPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432)
}

/// Postgres superuser name.
pub fn pg_user() -> String {
    std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into())
}

/// Runs SQL through `psql` (used where a synchronous call is needed, as in `Drop`).
pub fn psql(db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-qAt", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h",
            &pg_host(),
            "-p",
            &pg_port().to_string(),
            "-U",
            &pg_user(),
        ])
        .args(["-d", db, "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A fresh database with its own slot and publication names, dropped
/// (after its slot) when the guard drops.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// Slot name for Weir to use.
    pub slot: String,
    /// Publication name for Weir to use.
    pub publication: String,
    /// A connection to the database.
    pub client: tokio_postgres::Client,
}

impl TestDb {
    /// Creates the database and runs `setup` SQL in it.
    pub async fn new(prefix: &str, setup: &str) -> TestDb {
        let name = unique(&format!("weir_{prefix}"));
        psql("postgres", &format!("CREATE DATABASE {name}")).expect("create test database");
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host={} port={} user={} dbname={name}",
                pg_host(),
                pg_port(),
                pg_user()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test database");
        tokio::spawn(conn);
        if !setup.is_empty() {
            client.batch_execute(setup).await.expect("test setup SQL");
        }
        TestDb {
            slot: format!("{name}_slot"),
            publication: format!("{name}_pub"),
            name,
            client,
        }
    }

    /// The `[source]` section for this database.
    pub fn source_toml(&self, tables: &[&str]) -> String {
        let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
        format!(
            "[source]\nhost = {:?}\nport = {}\nuser = {:?}\ndatabase = {:?}\nslot = {:?}\npublication = {:?}\ntables = [{}]\nstatus_interval = \"1s\"\n",
            pg_host(),
            pg_port(),
            pg_user(),
            self.name,
            self.slot,
            self.publication,
            tables.join(", ")
        )
    }

    /// The slot's confirmed flush LSN, if the slot exists.
    pub fn confirmed_flush(&self) -> Option<weir_core::Lsn> {
        let out = psql(
            "postgres",
            &format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ),
        )
        .ok()?;
        out.parse().ok()
    }

    /// `pg_current_wal_lsn()` now.
    pub fn current_wal_lsn(&self) -> weir_core::Lsn {
        psql(&self.name, "SELECT pg_current_wal_lsn()")
            .expect("read current WAL LSN")
            .parse()
            .expect("an LSN")
    }

    /// Runs SQL (several statements allowed).
    pub async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{s}' AND active_pid IS NOT NULL",
                s = self.slot
            ),
        );
        // The walsender needs a moment to release the slot after termination.
        let _ = wait_for(Duration::from_secs(10), || {
            psql(
                "postgres",
                &format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'",
                    self.slot
                ),
            )
            .ok()
        });
        let _ = psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A tansu Kafka broker on a free loopback port, in memory, killed on drop.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

/// The tansu binary: `$WEIR_TANSU`, the setup script's cache, or PATH.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_TANSU") {
        return PathBuf::from(p);
    }
    let tools = std::env::var_os("WEIR_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir/tools")));
    if let Some(t) = tools {
        let bin = t.join("bin/tansu");
        if bin.exists() {
            return bin;
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!(
        "tansu (the Kafka-protocol broker the tests use) is not installed: run scripts/setup-tansu"
    );
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Broker { child, addr };
        wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(&broker.addr).ok()
        })
        .unwrap_or_else(|| panic!("tansu did not listen on {} within 30s", broker.addr));
        broker
    }
}

impl Broker {
    /// Freezes the broker (SIGSTOP): it keeps its state but answers nothing,
    /// like a hung or partitioned broker.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `weir` process, its stderr captured to a file; killed on drop.
pub struct WeirProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl WeirProcess {
    /// Runs `weir run --config CONFIG` plus `args`.
    pub fn start(config: &Path, args: &[&str]) -> WeirProcess {
        let log = config.with_extension(format!("{}.log", unique("run")));
        let stderr = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(weir_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .env(
                "WEIR_LOG",
                std::env::var("WEIR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start weir");
        WeirProcess {
            child: Some(child),
            log,
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit code once the process has exited by itself.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.as_mut()?.try_wait().ok().flatten()?.code()
    }

    /// Sends `signal` (`STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &c.id().to_string()])
                .status();
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 30 s, then SIGKILL) for the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let status = wait_for(Duration::from_secs(30), || c.try_wait().ok().flatten());
        if status.is_none() {
            let _ = c.kill();
            return c.wait().ok();
        }
        status
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `weir` with arguments to completion (for `check` and startup errors),
/// returning exit status and everything it printed. Gives up after `timeout`.
pub fn run_weir(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    // Output goes to a file, not a pipe: a chatty process must never block
    // on a full pipe that is only read after it exits.
    let out = tempfile::NamedTempFile::new().expect("temp file for output");
    let mut child = Command::new(weir_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen output file"))
        .stderr(out.reopen().expect("reopen output file"))
        .spawn()
        .expect("start weir");
    let status = wait_for(timeout, || child.try_wait().ok().flatten());
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    match status {
        Some(s) => (s, text),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir {args:?} did not exit within {timeout:?}; it printed:\n{text}");
        }
    }
}

/// How long [`weir_in`] lets a command run.
const WEIR_IN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one run of `weir` printed.
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Run {
    /// The stdout lines, each parsed as JSON.
    pub fn json_lines(&self) -> Vec<Json> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON ({e}):\n{self}"))
            })
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `weir ARGS` in `cwd` to completion (killed after two minutes),
/// with stdout and stderr apart and `WEIR_LOG=warn`.
pub fn weir_in(cwd: &Path, args: &[&str]) -> Run {
    // Files, not pipes: nothing can block on a full pipe.
    let stdout = tempfile::NamedTempFile::new().unwrap();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(weir_bin())
        .args(args)
        .current_dir(cwd)
        .env("WEIR_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout.reopen().unwrap())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("start weir");
    let status = wait_for(WEIR_IN_TIMEOUT, || child.try_wait().ok().flatten());
    let run = |status| Run {
        status,
        stdout: std::fs::read_to_string(stdout.path()).unwrap(),
        stderr: std::fs::read_to_string(stderr.path()).unwrap(),
    };
    match status {
        Some(status) => run(status),
        None => {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "weir {args:?} did not exit within {WEIR_IN_TIMEOUT:?}:\n{}",
                run(status)
            );
        }
    }
}

/// Reads a JSON Lines file written by the file sink. A torn last line (a
/// process killed mid-write) is ignored: it was never acknowledged.
pub fn read_jsonl(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Waits until the file sink has written at least `n` lines.
pub fn wait_lines(path: &Path, n: usize, timeout: Duration) -> Vec<Json> {
    let mut last = Vec::new();
    let got = wait_for(timeout, || {
        last = read_jsonl(path);
        (last.len() >= n).then(|| last.clone())
    });
    got.unwrap_or_else(|| {
        panic!(
            "expected at least {n} lines in {} within {timeout:?}, found {}",
            path.display(),
            last.len()
        )
    })
}

/// One consumed Kafka message.
#[derive(Debug, Clone)]
pub struct KafkaMessage {
    /// Topic.
    pub topic: String,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value parsed as JSON; `null` for a tombstone (no value).
    pub value: Json,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Consumes `topics` from the beginning until `n` messages arrived or
/// `timeout` passed; returns what arrived, in partition order.
pub async fn consume(
    brokers: &str,
    topics: &[&str],
    n: usize,
    timeout: Duration,
) -> Vec<KafkaMessage> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("weir_test"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("create consumer");
    // Subscribing to a topic that does not exist yet leaves the group
    // without partitions until the next metadata refresh; wait for it.
    let deadline = tokio::time::Instant::now() + timeout;
    for topic in topics {
        loop {
            let found = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .map(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == *topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
                .unwrap_or(false);
            if found || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    consumer.subscribe(topics).expect("subscribe");
    let mut out = Vec::new();
    while out.len() < n {
        let msg = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            // The topic may not exist until Weir writes its first record.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(Err(e)) => panic!("consume failed: {e}"),
            Err(_) => break,
        };
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(KafkaMessage {
            topic: msg.topic().to_owned(),
            key: msg.key().map(<[u8]>::to_vec),
            // A tombstone (no value at all) reads as `null`.
            value: msg.payload().map_or(Json::Null, |p| {
                serde_json::from_slice(p).expect("message value is JSON")
            }),
            headers,
        });
    }
    out
}

/// A throwaway Postgres cluster of our own (for settings the machine's
/// server must not change, such as `wal_level = replica`), run as the
/// `postgres` OS user on a free port and stopped on drop.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn pg_bindir() -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(o) = out
        && o.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|b| b.join("initdb").exists())
        .expect("initdb not found (is the PostgreSQL server package installed?)")
}

fn as_postgres(bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .output()
        .expect("run a Postgres server binary")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivateCluster {
    /// initdb + start with extra `-c` settings.
    pub fn start(settings: &[(&str, &str)]) -> PrivateCluster {
        let bin = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("weir-pg")
            .tempdir()
            .unwrap();
        if running_as_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown the private cluster directory");
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap();
        let out = as_postgres(
            &bin.join("initdb"),
            &["-D", data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = dir.path().join("server.log");
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data_s,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "private cluster did not start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PrivateCluster { dir, bin, port }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// `[[transforms]]` running the passthrough plugin.
pub fn passthrough() -> String {
    format!("[[transforms]]\npath = {:?}\n", plugin("passthrough"))
}

/// A `weir run` whose sink is one JSON Lines file, against a test database.
pub struct FilePipeline {
    /// The running process.
    pub weir: WeirProcess,
    /// The file sink's output.
    pub out: PathBuf,
    /// The configuration file (rewrite it and start again to change plugins).
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl FilePipeline {
    /// Writes a configuration (`db`'s `[source]` over `tables` plus
    /// `source_extra` lines, then `body`, then a file sink `out`), starts
    /// Weir and waits until it has created its slot: changes committed from
    /// then on are captured.
    pub fn start(db: &TestDb, tables: &[&str], source_extra: &str, body: &str) -> FilePipeline {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out.jsonl");
        let config = dir.path().join("weir.toml");
        std::fs::write(
            &config,
            format!(
                "{}{source_extra}\n{body}\n[sinks.out]\ntype = \"file\"\npath = {out:?}\n",
                db.source_toml(tables)
            ),
        )
        .expect("write config");
        let weir = WeirProcess::start(&config, &[]);
        // Generous: the first start compiles the plugins, which takes tens
        // of seconds for the Python and JavaScript ones on a busy machine
        // (later starts load the compiled code from the cache).
        wait_for(Duration::from_secs(300), || db.confirmed_flush())
            .unwrap_or_else(|| panic!("weir did not create its slot:\n{}", weir.log()));
        FilePipeline {
            weir,
            out,
            config,
            _dir: dir,
        }
    }

    /// Stops Weir with SIGTERM and asserts it exited with status 0.
    pub fn stop_cleanly(&mut self) {
        let status = self.weir.terminate().expect("exit status");
        assert!(
            status.success(),
            "weir exited with {status}:\n{}",
            self.weir.log()
        );
    }
}

/// One HTTP request to the admin endpoint on `port`; the whole response
/// (status line, headers, body) as text.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> String {
    http_with(port, method, path, &[], body)
}

/// [`http`] with more headers (`("Authorization", "Bearer …")`).
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin endpoint");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `GET path` on the admin endpoint.
pub fn http_get(port: u16, path: &str) -> String {
    http(port, "GET", path, b"")
}

/// The JSON body of an admin endpoint response.
pub fn http_json(response: &str) -> Json {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}
