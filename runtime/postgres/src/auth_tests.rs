//! Password authentication (cleartext, MD5, SCRAM-SHA-256) and Unix
//! sockets, tested against a private throwaway cluster: the shared server
//! on this machine trusts every local connection, and its pg_hba.conf is
//! not ours to change. The test skips, saying why, only when no `initdb`
//! can be found.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_core::{SourceItem, Value};

use crate::conn::ReplConn;
use crate::{CancellationToken, PgError, PostgresConfig, PostgresSource};

struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest PostgreSQL server binaries on this machine.
fn find_bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WEIR_PG_BINDIR") {
        return Some(PathBuf::from(d));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    for root in ["/usr/lib/postgresql", "/usr/local/pgsql"] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let bin = e.path().join("bin");
            let version = e.file_name().to_string_lossy().parse::<u32>().unwrap_or(0);
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, b)| b).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).find(|p| p.join("initdb").exists())
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Cluster {
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        // Postgres refuses to run as root; as root, run it as `postgres`.
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn start() -> Result<Option<Cluster>, String> {
        let Some(bin) = find_bindir() else {
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("weir-auth-{:08x}", rand::random::<u32>()));
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let as_postgres = is_root();
        let cluster = Cluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        if as_postgres {
            let st = Command::new("chown")
                .arg("postgres:")
                .arg(&cluster.dir)
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err("chown postgres failed".into());
            }
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let hba = "local all all trust\n\
                   host all md5_user 127.0.0.1/32 md5\n\
                   host all scram_user 127.0.0.1/32 scram-sha-256\n\
                   host all pw_user 127.0.0.1/32 password\n\
                   host all postgres 127.0.0.1/32 trust\n";
        std::fs::write(Path::new(&data).join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             fsync = off\nshared_buffers = 16MB\n",
            cluster.dir.display()
        );
        let conf_path = Path::new(&data).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).map_err(|e| e.to_string())?;
        let log = cluster.dir.join("log").display().to_string();
        cluster.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        )?;
        Ok(Some(cluster))
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn config(&self, user: &str, password: Option<&str>, slot: &str) -> PostgresConfig {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: user.into(),
            password: password.map(str::to_owned),
            dbname: "postgres".into(),
            slot: slot.into(),
            publication: "p".into(),
            tables: vec![("public".into(), "t".into())],
            create_publication: false,
            ..Default::default()
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prepares, streams one insert, and stops.
async fn stream_one_row(cfg: PostgresConfig, admin: &tokio_postgres::Client, id: i32) {
    let who = format!("{} via {}", cfg.user, cfg.address());
    let source = PostgresSource::prepare(cfg)
        .await
        .unwrap_or_else(|e| panic!("{who}: {e}"));
    let (tx, mut rx) = mpsc::channel(4);
    let (_ack, ack_rx) = watch::channel(source.start_lsn());
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, ack_rx, stop.clone()));
    admin
        .execute("INSERT INTO t VALUES ($1)", &[&id])
        .await
        .unwrap();
    let mut seen = None;
    while seen.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{who}: no data"))
            .unwrap_or_else(|| panic!("{who}: source stopped"));
        for item in batch {
            if let SourceItem::Change(c) = item {
                seen = c.after.map(|r| r[0].clone());
            }
        }
    }
    assert_eq!(seen, Some(Value::Int(i64::from(id))), "{who}");
    stop.cancel();
    task.await.unwrap().unwrap_or_else(|e| panic!("{who}: {e}"));
}

#[tokio::test]
async fn password_methods_and_unix_socket() {
    let cluster = match Cluster::start() {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!(
                "skipping: no initdb found (set WEIR_PG_BINDIR to a PostgreSQL bin directory)"
            );
            return;
        }
        Err(e) => panic!("starting a private cluster: {e}"),
    };
    let (admin, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY);
             CREATE PUBLICATION p FOR TABLE t;
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5 secret';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram secret';
             CREATE ROLE pw_user LOGIN REPLICATION PASSWORD 'plain secret';",
        )
        .await
        .unwrap();
    // The stored verifiers decide what the server asks for: make sure each
    // role really exercises its method.
    let kinds: Vec<(String, String)> = admin
        .query(
            "SELECT rolname::text, split_part(rolpassword, '$', 1) FROM pg_authid \
             WHERE rolname IN ('md5_user', 'scram_user') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, String>(1).chars().take(13).collect()))
        .collect();
    assert_eq!(kinds[0].0, "md5_user");
    assert!(kinds[0].1.starts_with("md5"), "{kinds:?}");
    assert_eq!(kinds[1], ("scram_user".into(), "SCRAM-SHA-256".into()));

    for (i, (user, password)) in [
        ("md5_user", "md5 secret"),
        ("scram_user", "scram secret"),
        ("pw_user", "plain secret"),
    ]
    .into_iter()
    .enumerate()
    {
        // The replication connection's own handshake.
        let cfg = cluster.config(user, Some(password), &format!("slot_{user}"));
        let mut conn = ReplConn::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let sys = conn.identify_system().await.unwrap();
        assert_eq!(sys.dbname.as_deref(), Some("postgres"));
        conn.close().await;

        let wrong = cluster.config(user, Some("wrong"), "unused");
        match ReplConn::connect(&wrong).await {
            Err(PgError::Auth {
                user: u, message, ..
            }) => {
                assert_eq!(u, user);
                assert!(
                    message.contains("password authentication failed"),
                    "{message}"
                );
            }
            Err(e) => panic!("{user}: expected an authentication error, got {e:?}"),
            Ok(_) => panic!("{user}: a wrong password was accepted"),
        }
        match ReplConn::connect(&cluster.config(user, None, "unused")).await {
            Err(PgError::Auth { message, .. }) => {
                assert!(message.contains("none is configured"), "{message}")
            }
            Err(e) => panic!("{user}: expected an authentication error, got {e:?}"),
            Ok(_) => panic!("{user}: no password was accepted"),
        }
        // The SQL connection of prepare() reports it the same way.
        let err = PostgresSource::prepare(wrong).await.unwrap_err();
        assert!(matches!(err, PgError::Auth { .. }), "{user}: {err:?}");
        assert!(!err.is_retryable());

        stream_one_row(cfg, &admin, i as i32).await;
    }

    // Unix socket: the host is the socket directory.
    let mut cfg = cluster.config("postgres", None, "slot_unix");
    cfg.host = cluster.dir.display().to_string();
    stream_one_row(cfg, &admin, 100).await;
}
