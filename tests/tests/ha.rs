//! High availability: two `weir run` processes with one configuration
//! (each with its own admin port). The leader is killed with SIGKILL under
//! load three times, alternating, and restarted as a standby each time.
//! Every committed row must reach the sink, and at no moment may both
//! processes report themselves leader.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_tests::*;

const KILLS: usize = 3;

/// The process's `[ha]` role from `/status`, or `None` when it does not
/// answer (killed, or not up yet).
fn role(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split("\r\n\r\n").nth(1)?;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["ha"]["role"].as_str().map(str::to_owned)
}

fn write_config(path: &Path, db: &TestDb, out: &Path, admin: u16) {
    std::fs::write(
        path,
        format!(
            "{}\n[ha]\ntakeover = \"4s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[plugins]\nwatch = false\n\n[sinks.out]\ntype = \"file\"\npath = {out:?}\n",
            db.source_toml(&["items"])
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_from_a_killed_leader_and_nothing_is_lost_or_doubled() {
    let db = TestDb::new(
        "ha",
        "CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let ports = [free_port(), free_port()];
    let configs = [dir.path().join("a.toml"), dir.path().join("b.toml")];
    for (c, p) in configs.iter().zip(ports) {
        write_config(c, &db, &out, p);
    }

    let mut procs = [
        WeirProcess::start(&configs[0], &[]),
        WeirProcess::start(&configs[1], &[]),
    ];
    let logs = |procs: &[WeirProcess; 2]| format!("A:\n{}\nB:\n{}", procs[0].log(), procs[1].log());
    // One leads (it creates the slot), the other stands by.
    let leader = wait_for(Duration::from_secs(120), || {
        let roles = [role(ports[0]), role(ports[1])];
        match roles {
            [Some(a), Some(b)] if a == "leader" && b == "standby" => Some(0),
            [Some(a), Some(b)] if a == "standby" && b == "leader" => Some(1),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("no leader and standby:\n{}", logs(&procs)));
    wait_for(Duration::from_secs(120), || db.confirmed_flush())
        .unwrap_or_else(|| panic!("the leader did not create its slot:\n{}", logs(&procs)));

    // Never two leaders: polled every 20 ms for the whole test.
    let both = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (both, watching) = (both.clone(), watching.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let a = role(ports[0]).as_deref() == Some("leader");
                let b = role(ports[1]).as_deref() == Some("leader");
                if a && b {
                    both.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The load: small transactions, until the kills are done.
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
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute(&format!(
                        "INSERT INTO items SELECT g, 'row ' || g FROM generate_series({next}, {}) g",
                        next + 9
                    ))
                    .await
                    .unwrap();
                next += 10;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            next
        })
    };

    let mut leader = leader;
    for k in 0..KILLS {
        // Kill while the leader is delivering.
        let before = read_jsonl(&out).len();
        wait_for(Duration::from_secs(60), || {
            (read_jsonl(&out).len() > before + 50).then_some(())
        })
        .unwrap_or_else(|| panic!("no output before kill {k}:\n{}", logs(&procs)));
        procs[leader].kill9();
        let killed = Instant::now();
        let standby = 1 - leader;
        wait_for(Duration::from_secs(60), || {
            (role(ports[standby]).as_deref() == Some("leader")).then_some(())
        })
        .unwrap_or_else(|| panic!("no takeover after kill {k}:\n{}", logs(&procs)));
        eprintln!("kill {k}: the standby leads {:?} after", killed.elapsed());
        // The killed one comes back as the standby.
        procs[leader] = WeirProcess::start(&configs[leader], &[]);
        wait_for(Duration::from_secs(60), || {
            (role(ports[leader]).as_deref() == Some("standby")).then_some(())
        })
        .unwrap_or_else(|| panic!("the restarted process is no standby:\n{}", logs(&procs)));
        leader = standby;
    }
    stop.store(true, Ordering::Relaxed);
    let rows = writer.await.unwrap();

    let ids = wait_for(Duration::from_secs(120), || {
        let ids: HashSet<i64> = read_jsonl(&out)
            .iter()
            .map(|l| l["after"]["id"].as_i64().unwrap())
            .collect();
        (ids.len() as i64 >= rows).then_some(ids)
    })
    .unwrap_or_else(|| {
        let have = read_jsonl(&out).len();
        panic!("{have} lines for {rows} rows:\n{}", logs(&procs))
    });
    assert!((0..rows).all(|i| ids.contains(&i)));
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        both.load(Ordering::Relaxed),
        0,
        "both processes reported leader at once:\n{}",
        logs(&procs)
    );
    for p in &mut procs {
        p.terminate();
    }
}
