//! Snapshots that survive crashes and run beside the stream, through the
//! real binary and a file sink, each judged by replaying the file (reads,
//! inserts and updates upsert the row, deletes remove it) and comparing the
//! result with the table:
//!
//! * an initial snapshot SIGKILLed three times resumes from the chunks
//!   recorded delivered instead of starting over, and re-copies at most
//!   the chunks that were in flight;
//! * an initial snapshot of a million rows with 2 and with 4 workers under
//!   concurrent writes equals the source;
//! * an ad-hoc snapshot (`weir snapshot TABLE`) under writes rebuilds the
//!   whole table while the slot keeps being acknowledged, and bad requests
//!   are refused with 422;
//! * a table added to `source.tables` of an existing slot is backfilled.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use rand::Rng;
use weir_tests::*;

/// `id → (v, pad)`.
type Rows = BTreeMap<i64, (i64, String)>;

/// Far above any id a test or its writer uses.
const SENTINEL: i64 = 9_000_000_000_000;

fn create_table(name: &str) -> String {
    format!("CREATE TABLE {name} (id int8 PRIMARY KEY, v int8 NOT NULL, pad text NOT NULL);")
}

/// One captured table rebuilt from the file.
#[derive(Default)]
struct Replica {
    rows: Rows,
    reads: u64,
    /// How often each id was read: above 1, a re-copy.
    read_counts: HashMap<i64, u32>,
    changes: u64,
}

/// The file sink's output, parsed as it grows: polled while waiting, a
/// million lines are not parsed again on every poll.
struct Tail {
    path: PathBuf,
    /// The end of the last complete line applied: a torn last line (a
    /// SIGKILL mid-write) is cut off by the next start, so it is never
    /// applied and the offset stays on a line boundary.
    consumed: u64,
    tables: HashMap<String, Replica>,
    lines: u64,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_owned(),
            consumed: 0,
            tables: HashMap::new(),
            lines: 0,
        }
    }

    fn poll(&mut self) -> &mut Tail {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.consumed)).is_err() || f.read_to_end(&mut buf).is_err() {
            return self;
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return self;
        };
        for line in buf[..end].split(|&b| b == b'\n') {
            self.apply(line);
        }
        self.consumed += end as u64 + 1;
        self
    }

    fn apply(&mut self, line: &[u8]) {
        self.lines += 1;
        let l: Json = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "bad JSON line {:?}: {e}",
                String::from_utf8_lossy(&line[..line.len().min(300)])
            )
        });
        let Some(table) = l["table"].as_str() else {
            return;
        };
        let r = self.tables.entry(table.to_owned()).or_default();
        let row = |l: &Json| {
            let a = &l["after"];
            let id = a["id"].as_i64().unwrap_or_else(|| panic!("no id in {l}"));
            let v = a["v"].as_i64().unwrap_or_else(|| panic!("no v in {l}"));
            let pad = a["pad"].as_str().unwrap_or_else(|| panic!("no pad in {l}"));
            (id, (v, pad.to_owned()))
        };
        match l["op"].as_str() {
            Some("read") => {
                let (id, row) = row(&l);
                r.reads += 1;
                *r.read_counts.entry(id).or_default() += 1;
                r.rows.insert(id, row);
            }
            Some("insert" | "update") => {
                let (id, row) = row(&l);
                r.changes += 1;
                r.rows.insert(id, row);
            }
            Some("delete") => {
                let id = l["key"]["id"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("a delete without its key: {l}"));
                r.changes += 1;
                r.rows.remove(&id);
            }
            Some("truncate") => {
                r.changes += 1;
                r.rows.clear();
            }
            _ => {}
        }
    }

    fn table(&self, name: &str) -> Option<&Replica> {
        self.tables.get(name)
    }

    fn has_row(&self, table: &str, id: i64) -> bool {
        self.table(table).is_some_and(|r| r.rows.contains_key(&id))
    }
}

/// Every row of `table`, streamed: a million rows need not sit in memory
/// twice.
async fn table_rows(db: &TestDb, table: &str) -> Rows {
    let stream = db
        .client
        .query_raw(
            &format!("SELECT id, v, pad FROM {table}"),
            std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
        )
        .await
        .expect("read the source table");
    futures_util::pin_mut!(stream);
    let mut rows = Rows::new();
    while let Some(row) = stream.try_next().await.expect("read a source row") {
        rows.insert(row.get(0), (row.get(1), row.get(2)));
    }
    rows
}

/// Asserts the replica equals the source; on a difference says how many
/// keys are missing, extra or different, and shows a few of each.
fn assert_same(what: &str, got: &Rows, want: &Rows, log: &str) {
    let missing: Vec<i64> = want
        .keys()
        .filter(|k| !got.contains_key(k))
        .copied()
        .collect();
    let extra: Vec<i64> = got
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    let differ: Vec<String> = want
        .iter()
        .filter_map(|(k, w)| {
            got.get(k)
                .filter(|g| *g != w)
                .map(|g| format!("{k}: file {g:?}, table {w:?}"))
        })
        .collect();
    if missing.is_empty() && extra.is_empty() && differ.is_empty() {
        return;
    }
    let tail: String = {
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    };
    panic!(
        "{what}: the file replayed differs from the table ({} rows in the file, {} in the table): \
         {} missing (first {:?}), {} extra (first {:?}), {} different (first {:?})\n\
         end of the log:\n{tail}",
        got.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(10)],
        extra.len(),
        &extra[..extra.len().min(10)],
        differ.len(),
        &differ[..differ.len().min(5)],
    );
}

/// Inserts the sentinel row and waits until the file holds it: the file is
/// written in commit order, so everything committed before it is there too.
async fn sentinel(db: &TestDb, tail: &mut Tail, table: &str, log: impl Fn() -> String) {
    db.exec(&format!(
        "INSERT INTO {table} VALUES ({SENTINEL}, 0, 'sentinel')"
    ))
    .await;
    wait_for(Duration::from_secs(180), || {
        tail.poll().has_row(table, SENTINEL).then_some(())
    })
    .unwrap_or_else(|| panic!("the sentinel never reached the file:\n{}", log()));
}

/// `GET path` on the admin endpoint as JSON; `None` while it does not
/// answer (the process is starting).
fn admin_json(port: u16, path: &str) -> Option<Json> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split("\r\n\r\n").nth(1)?).ok()
}

/// The `/status` entry of `table` in snapshot request `request`.
fn status_entry(status: &Json, table: &str, request: i64) -> Option<Json> {
    status["snapshot"]["tables"]
        .as_array()?
        .iter()
        .find(|t| t["table"] == table && t["request"] == request)
        .cloned()
}

fn admin_section(port: u16) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// The initial snapshot's progress as recorded in the source database.
#[derive(Debug, Clone)]
struct Recorded {
    state: String,
    /// Chunks recorded delivered.
    done: i64,
    chunks: i64,
    /// Rows of the chunks recorded delivered.
    rows: i64,
}

fn recorded(db: &TestDb) -> Option<Recorded> {
    let out = psql(
        &db.name,
        &format!(
            "SELECT s.state, coalesce(sum(cardinality(t.done)), 0), coalesce(sum(t.chunks), 0), \
               coalesce(sum(t.rows), 0) \
             FROM weir.snapshots s LEFT JOIN weir.snapshot_tables t \
               ON t.slot = s.slot AND t.request = 0 \
             WHERE s.slot = '{}' GROUP BY s.state",
            db.slot
        ),
    )
    .ok()?;
    let f: Vec<&str> = out.split('|').collect();
    if f.len() != 4 {
        return None;
    }
    Some(Recorded {
        state: f[0].to_owned(),
        done: f[1].parse().ok()?,
        chunks: f[2].parse().ok()?,
        rows: f[3].parse().ok()?,
    })
}

/// A client that updates, inserts and deletes random rows of a table until
/// stopped, in single-statement and multi-row transactions.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    /// Writes to `table`, whose ids run from 1 to `ids`; new rows get ids
    /// above `ids`.
    async fn start(db: &TestDb, table: &str, ids: i64) -> Writer {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host={} port={} user={} dbname={}",
                pg_host(),
                pg_port(),
                pg_user(),
                db.name
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect the writer");
        tokio::spawn(conn);
        let stop = Arc::new(AtomicBool::new(false));
        let table = table.to_owned();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut next = ids;
                let mut transactions = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (pick, id) = {
                        let mut r = rand::rng();
                        (r.random_range(0..10), r.random_range(1..=ids))
                    };
                    // A new pad length moves the row to another page now
                    // and then: rows wander between chunks while they are
                    // read.
                    let sql = match pick {
                        0..=4 => format!(
                            "UPDATE {table} SET v = v + 1, pad = repeat('w', (v % 50)::int) WHERE id = {id}"
                        ),
                        5 | 6 => {
                            next += 1;
                            format!("INSERT INTO {table} VALUES ({next}, {next}, 'new')")
                        }
                        7 => format!("DELETE FROM {table} WHERE id = {id}"),
                        _ => format!(
                            "BEGIN; UPDATE {table} SET v = v + 1 WHERE id BETWEEN {id} AND {id} + 20; \
                             DELETE FROM {table} WHERE id = {id} + 21; COMMIT;"
                        ),
                    };
                    client
                        .batch_execute(&sql)
                        .await
                        .unwrap_or_else(|e| panic!("the writer failed: {e}\n{sql}"));
                    transactions += 1;
                    // Paced, so the stream is not buried under a backlog
                    // on this small machine.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                transactions
            }
        });
        Writer { stop, task }
    }

    /// Stops it; the transactions it committed.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer task")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_sigkills_during_the_initial_snapshot_resume_without_starting_over() {
    const ROWS: i64 = 300_000;
    const KILLS: i64 = 3;
    let started = Instant::now();
    let db = TestDb::new("resume", &create_table("t")).await;
    db.exec(&format!(
        "INSERT INTO t SELECT g, g, repeat('p', 40) FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    // One worker: chunks are read and recorded in order, so "three more
    // chunks recorded" means the snapshot moved on since the last start.
    // One batch per channel: with the default eight, the pipeline alone
    // holds several chunks between the reader and the sink, and the bound
    // below is about the snapshot's own chunks in flight.
    let mut p = FilePipeline::start(
        &db,
        &["public.t"],
        "snapshot_chunk_pages = 64\nsnapshot_workers = 1",
        "[pipeline]\nchannel_batches = 1\n",
    );
    let mut tail = Tail::new(&p.out);
    let mut base = 0;
    // (chunks recorded, rows recorded, reads in the file) at each kill.
    let mut at_kills: Vec<(i64, i64, u64)> = Vec::new();
    for kill in 1..=KILLS {
        // No parsing in this loop: the kill should land soon after the
        // third chunk is recorded, well before the snapshot ends.
        wait_for(Duration::from_secs(120), || {
            recorded(&db).filter(|r| r.done >= base + 3)
        })
        .unwrap_or_else(|| {
            panic!(
                "the snapshot did not record 3 more chunks after {base} (at {:?}):\n{}",
                recorded(&db),
                p.weir.log()
            )
        });
        p.weir.kill9();
        let r = recorded(&db).expect("the snapshot's record");
        assert_eq!(
            r.state,
            "running",
            "kill {kill} came after the snapshot finished: {r:?}\n{}",
            p.weir.log()
        );
        assert!(r.done < r.chunks, "kill {kill}: {r:?}");
        assert!(
            r.done >= base,
            "kill {kill}: chunks recorded delivered were forgotten: {r:?}, {base} before"
        );
        let reads = tail.poll().table("t").map_or(0, |t| t.reads);
        at_kills.push((r.done, r.rows, reads));
        base = r.done;
        // Changes while it is down, to rows in chunks already delivered
        // (low ids) and in chunks still to read (high ids).
        db.exec(&format!(
            "UPDATE t SET v = -v, pad = 'changed while down {kill}' \
               WHERE id IN ({}, {}, {}, {});
             DELETE FROM t WHERE id IN ({}, {}, {});
             INSERT INTO t VALUES ({}, 0, 'inserted while down'), ({}, 0, 'inserted while down');",
            kill * 11,
            kill * 1000 + 5,
            150_000 + kill,
            ROWS - kill,
            kill * 13,
            200_000 + kill,
            ROWS - 100 - kill,
            ROWS + kill * 2,
            ROWS + kill * 2 + 1,
        ))
        .await;
        p.weir = WeirProcess::start(&p.config, &[]);
    }
    wait_for(Duration::from_secs(180), || {
        tail.poll();
        recorded(&db).filter(|r| r.state == "done")
    })
    .unwrap_or_else(|| {
        panic!(
            "the resumed snapshot did not finish (at {:?}):\n{}",
            recorded(&db),
            p.weir.log()
        )
    });
    let log = p.weir.log();
    assert!(
        log.contains("resuming with the chunks not yet delivered"),
        "the last start did not resume:\n{log}"
    );
    assert!(
        !log.contains("starting it over"),
        "the snapshot was started over:\n{log}"
    );
    sentinel(&db, &mut tail, "t", || p.weir.log()).await;
    let replica = tail.table("t").expect("rows of t in the file");
    assert_same(
        "t",
        &replica.rows,
        &table_rows(&db, "t").await,
        &p.weir.log(),
    );

    let r = recorded(&db).unwrap();
    assert_eq!(r.done, r.chunks, "{r:?}");
    let rows_per_chunk = ROWS / r.chunks;
    let recopied = replica.reads as i64 - ROWS;
    let read_again = replica
        .read_counts
        .values()
        .map(|&n| i64::from(n) - 1)
        .sum::<i64>();
    let bound = KILLS * 2 * rows_per_chunk;
    // Reads in the file beyond the rows recorded delivered, at each kill:
    // the rows the next start reads again.
    let per_kill: Vec<i64> = at_kills
        .iter()
        .scan(0, |before, &(_, rows, reads)| {
            let cumulative = reads as i64 - rows;
            let this = cumulative - *before;
            *before = cumulative;
            Some(this)
        })
        .collect();
    // The last start was never killed: whatever it read beyond what the
    // kills left unrecorded was read again for no reason.
    let killed: i64 = per_kill.iter().sum();
    let without_a_kill = recopied - killed;
    let numbers = format!(
        "{} chunks, {rows_per_chunk} rows per chunk; chunks recorded at the kills {:?}; \
         {} reads in the file, {recopied} rows re-copied ({read_again} reads of an id already read): \
         {per_kill:?} left unrecorded by each kill, {without_a_kill} by the last run, never killed; \
         bound {bound}",
        r.chunks,
        at_kills.iter().map(|k| k.0).collect::<Vec<_>>(),
        replica.reads,
    );
    eprintln!("resume: {numbers}; {:?}", started.elapsed());
    assert!(
        recopied < bound,
        "more than 2 chunks re-copied per kill: {numbers}"
    );
    // A few rows of slack: rows deleted while down are not read, rows
    // inserted are.
    assert!(
        without_a_kill < rows_per_chunk / 10,
        "the run that was not killed read chunks again: {numbers}"
    );
    p.stop_cleanly();
}

/// An initial snapshot with `workers` connections of a million rows while
/// a writer changes them, replayed and compared with the table.
async fn a_million_rows_under_writes(workers: usize) {
    const ROWS: i64 = 1_000_000;
    let started = Instant::now();
    let db = TestDb::new(&format!("million{workers}"), &create_table("t")).await;
    // Short rows: a million lines of file is parsed afterwards.
    db.exec(&format!(
        "INSERT INTO t SELECT g, g, 'p' || g FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let admin = free_port();
    let writer = Writer::start(&db, "t", ROWS).await;
    let mut p = FilePipeline::start(
        &db,
        &["public.t"],
        &format!("snapshot_workers = {workers}"),
        &admin_section(admin),
    );
    let mut tail = Tail::new(&p.out);
    wait_for(Duration::from_secs(300), || {
        tail.poll();
        admin_json(admin, "/status").filter(|s| s["snapshot"]["initial_delivered"] == true)
    })
    .unwrap_or_else(|| panic!("the initial snapshot was not delivered:\n{}", p.weir.log()));
    let transactions = writer.stop().await;
    sentinel(&db, &mut tail, "t", || p.weir.log()).await;
    let replica = tail.table("t").expect("rows of t in the file");
    assert_same(
        &format!("{workers} workers"),
        &replica.rows,
        &table_rows(&db, "t").await,
        &p.weir.log(),
    );
    // The writer started before the slot: the snapshot holds the rows of
    // its consistent point, not quite a million, but each once.
    let twice = replica.read_counts.values().filter(|&&n| n > 1).count();
    assert_eq!(twice, 0, "rows read more than once by a fresh snapshot");
    assert!(replica.changes > 0, "the writer's changes were streamed");
    eprintln!(
        "{workers} workers: {} reads, {} changes, {transactions} writer transactions, {:?}",
        replica.reads,
        replica.changes,
        started.elapsed()
    );
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initial_snapshot_of_a_million_rows_under_writes_equals_the_source_2_workers() {
    a_million_rows_under_writes(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initial_snapshot_of_a_million_rows_under_writes_equals_the_source_4_workers() {
    a_million_rows_under_writes(4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ad_hoc_snapshot_under_writes_rebuilds_the_table_while_the_slot_moves() {
    const ROWS: i64 = 100_000;
    let started = Instant::now();
    let db = TestDb::new(
        "adhoc",
        &format!("{}{}", create_table("t"), create_table("other")),
    )
    .await;
    db.exec(&format!(
        "INSERT INTO t SELECT g, g, repeat('p', 40) FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let admin = free_port();
    let mut p = FilePipeline::start(
        &db,
        &["public.t"],
        "snapshot = \"never\"\nsnapshot_chunk_pages = 64",
        &admin_section(admin),
    );
    wait_for(Duration::from_secs(60), || admin_json(admin, "/status"))
        .unwrap_or_else(|| panic!("the admin endpoint did not answer:\n{}", p.weir.log()));
    let mut tail = Tail::new(&p.out);

    // Refused requests name what is wrong.
    let refused = |body: &str| {
        let response = http(admin, "POST", "/snapshots", body.as_bytes());
        assert!(
            response.starts_with("HTTP/1.1 422"),
            "{body} was not refused with 422: {response}"
        );
        http_json(&response)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {response}"))
            .to_owned()
    };
    let error = refused(r#"{"tables": ["public.other"]}"#);
    assert!(error.contains("public.other"), "{error}");
    let error = refused(r#"{"tables": ["public.*"]}"#);
    assert!(error.contains("a pattern, not one table"), "{error}");
    let error = refused(r#"{"tables": ["Public.t"]}"#);
    assert!(
        error.contains("\"Public.t\" is not a table pattern"),
        "{error}"
    );
    let error = refused(r#"{"tables": ["public.t"], "where": "no_such_column > 10"}"#);
    assert!(error.contains("no_such_column > 10"), "{error}");

    let writer = Writer::start(&db, "t", ROWS).await;
    let config = p.config.to_str().unwrap().to_owned();
    let (status, out) = run_weir(
        &["snapshot", "public.t", "--config", &config],
        Duration::from_secs(60),
    );
    assert!(status.success(), "weir snapshot failed: {out}");
    let request: i64 = out
        .split_whitespace()
        .skip_while(|w| *w != "request")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request number in {out:?}"));
    // Shown at once, before the reader takes it (`weir snapshot status`
    // would otherwise say none was requested).
    let status = admin_json(admin, "/status").expect("/status");
    assert!(
        status["snapshot"]["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["table"] == "public.t" && t["request"] == request),
        "{status}"
    );

    // The slot's position while the table is being read.
    let mut during = Vec::new();
    // The file is not parsed here: a poll must be quick to see the copy
    // in progress more than once.
    let entry = wait_for(Duration::from_secs(120), || {
        let status = admin_json(admin, "/status")?;
        let entry = status_entry(&status, "public.t", request);
        match &entry {
            Some(e) if e["state"] == "delivered" => return entry,
            Some(_) => during.extend(db.confirmed_flush()),
            None => {}
        }
        None
    })
    .unwrap_or_else(|| {
        panic!(
            "request {request} was not delivered: {:?}\n{}",
            admin_json(admin, "/status"),
            p.weir.log()
        )
    });
    let transactions = writer.stop().await;
    eprintln!(
        "ad hoc: {} slot positions sampled while copying: {:?} .. {:?}; {entry}",
        during.len(),
        during.first(),
        during.last()
    );
    assert!(
        during.len() >= 2,
        "the snapshot was seen copying {} times; cannot tell whether the slot moved",
        during.len()
    );
    assert!(
        during.last() > during.first(),
        "the slot was not acknowledged while the snapshot ran: {during:?}"
    );
    assert_eq!(
        psql(
            &db.name,
            &format!(
                "SELECT state FROM weir.snapshot_tables WHERE slot = '{}' AND request = {request}",
                db.slot
            )
        )
        .unwrap(),
        "done"
    );

    sentinel(&db, &mut tail, "t", || p.weir.log()).await;
    let replica = tail.table("t").expect("rows of t in the file");
    assert_same(
        "ad-hoc snapshot",
        &replica.rows,
        &table_rows(&db, "t").await,
        &p.weir.log(),
    );
    // A row is read twice only when an update moved it from a chunk read
    // to one not yet read; a second pass over chunks costs far more.
    let read_again: u64 = replica
        .read_counts
        .values()
        .map(|&n| u64::from(n) - 1)
        .sum();
    eprintln!(
        "ad hoc: {} reads ({read_again} of an id already read), {} changes, \
         {transactions} writer transactions, {:?}",
        replica.reads,
        replica.changes,
        started.elapsed()
    );
    assert!(
        read_again <= replica.changes,
        "{read_again} reads of rows already read, more than the {} changes that could have \
         moved them: chunks were read twice ({} reads for {ROWS} rows; /status: {entry})",
        replica.changes,
        replica.reads
    );
    p.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_added_to_the_config_later_is_backfilled() {
    let started = Instant::now();
    let db = TestDb::new(
        "backfill",
        &format!("{}{}", create_table("a"), create_table("b")),
    )
    .await;
    db.exec(
        "INSERT INTO a SELECT g, g, 'a' || g FROM generate_series(1, 1000) g;
         INSERT INTO b SELECT g, g, 'b' || g FROM generate_series(1, 500) g;",
    )
    .await;
    let admin = free_port();
    let mut p = FilePipeline::start(&db, &["public.a"], "", &admin_section(admin));
    let mut tail = Tail::new(&p.out);
    wait_for(Duration::from_secs(120), || {
        tail.poll();
        admin_json(admin, "/status").filter(|s| s["snapshot"]["initial_delivered"] == true)
    })
    .unwrap_or_else(|| panic!("a's snapshot was not delivered:\n{}", p.weir.log()));
    p.stop_cleanly();
    assert!(tail.poll().table("b").is_none(), "b was not captured yet");

    db.exec(
        "INSERT INTO b SELECT g, g, 'b' || g FROM generate_series(501, 2000) g;
         UPDATE b SET v = -v WHERE id <= 10;",
    )
    .await;
    let config = std::fs::read_to_string(&p.config).unwrap();
    let longer = config.replace(
        "tables = [\"public.a\"]",
        "tables = [\"public.a\", \"public.b\"]",
    );
    assert_ne!(config, longer, "the tables line was found");
    std::fs::write(&p.config, longer).unwrap();
    p.weir = WeirProcess::start(&p.config, &[]);

    let entry = wait_for(Duration::from_secs(120), || {
        tail.poll();
        let status = admin_json(admin, "/status")?;
        status["snapshot"]["tables"]
            .as_array()?
            .iter()
            .find(|t| t["table"] == "public.b" && t["request"].as_i64() > Some(0))
            .filter(|t| t["state"] == "delivered")
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "b's backfill was not delivered: {:?}\n{}",
            admin_json(admin, "/status"),
            p.weir.log()
        )
    });
    let b = tail.poll().table("b").expect("b's rows in the file");
    assert_eq!(b.reads, 2000, "b's rows came as reads: {entry}");
    assert_eq!(b.changes, 0, "nothing was written to b since it was added");

    // Changes to b after the backfill are streamed.
    db.exec("UPDATE b SET v = 4242, pad = 'after the backfill' WHERE id = 7")
        .await;
    db.exec("DELETE FROM b WHERE id = 8").await;
    db.exec("INSERT INTO b VALUES (2001, 1, 'new after the backfill')")
        .await;
    sentinel(&db, &mut tail, "b", || p.weir.log()).await;
    let b = tail.table("b").unwrap();
    assert_eq!(b.changes, 4, "update, delete, insert and the sentinel");
    assert_eq!(
        b.rows.get(&7),
        Some(&(4242, "after the backfill".to_owned()))
    );
    assert_same("b", &b.rows, &table_rows(&db, "b").await, &p.weir.log());
    assert_same(
        "a",
        &tail.table("a").expect("a's rows").rows,
        &table_rows(&db, "a").await,
        &p.weir.log(),
    );
    eprintln!(
        "backfill: {} reads of b, {:?}, {entry}",
        b.reads,
        started.elapsed()
    );
    p.stop_cleanly();
}
