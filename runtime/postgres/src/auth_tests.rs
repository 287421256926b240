//! Password authentication (cleartext, MD5, SCRAM-SHA-256) and Unix
//! sockets, tested against a private throwaway cluster: the shared server
//! on this machine trusts every local connection, and its pg_hba.conf is
//! not ours to change. Without PostgreSQL's server binaries (`initdb`)
//! these tests fail rather than skip: the suite needs a PostgreSQL server
//! installed anyway, and a skip would report green for tests never run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_core::{SourceItem, Value};

use crate::conn::ReplConn;
use crate::{CancellationToken, PgError, PostgresConfig, PostgresSource, SslMode};

/// A private throwaway cluster, stopped and removed on drop (also when a
/// test panics).
pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    bin: PathBuf,
    pub(crate) port: u16,
    as_postgres: bool,
}

/// The newest PostgreSQL server binaries on this machine.
fn find_bindir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("WEIR_PG_BINDIR") {
        let d = PathBuf::from(d);
        if !d.join("initdb").exists() {
            return Err(format!("WEIR_PG_BINDIR {} holds no initdb", d.display()));
        }
        return Ok(d);
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
    best.map(|(_, b)| b)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).find(|p| p.join("initdb").exists())
        })
        .ok_or_else(|| {
            "no PostgreSQL server binaries found (initdb in /usr/lib/postgresql/*/bin, \
             /usr/local/pgsql/*/bin or PATH): install the PostgreSQL server, or set \
             WEIR_PG_BINDIR to its bin directory"
                .to_owned()
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

    fn start() -> Result<Cluster, String> {
        let hba = "local all pw_user password\n\
                   local all all trust\n\
                   host all md5_user 127.0.0.1/32 md5\n\
                   host all scram_user 127.0.0.1/32 scram-sha-256\n\
                   host all pw_user 127.0.0.1/32 password\n\
                   host all postgres 127.0.0.1/32 trust\n";
        Cluster::start_with(hba, |_| Ok(String::new()))
    }

    /// Starts a cluster with `hba` as its pg_hba.conf. `setup` may put files
    /// into the cluster's directory and returns extra postgresql.conf lines.
    pub(crate) fn start_with(
        hba: &str,
        setup: impl FnOnce(&Path) -> Result<String, String>,
    ) -> Result<Cluster, String> {
        let bin = find_bindir()?;
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
        let extra = setup(&cluster.dir)?;
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:"])
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
        std::fs::write(Path::new(&data).join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             fsync = off\nshared_buffers = 16MB\n{extra}\n",
            cluster.dir.display()
        );
        let conf_path = Path::new(&data).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).map_err(|e| e.to_string())?;
        let log = cluster.dir.join("log").display().to_string();
        cluster
            .run(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
            )
            .map_err(|e| {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                format!("{e}\nserver log:\n{log}")
            })?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    pub(crate) fn config(&self, user: &str, password: Option<&str>, slot: &str) -> PostgresConfig {
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

/// An admin connection over the cluster's Unix socket (trusted).
pub(crate) async fn admin(cluster: &Cluster) -> tokio_postgres::Client {
    let (admin, conn) = tokio_postgres::Config::new()
        .host_path(&cluster.dir)
        .port(cluster.port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin
}

/// Prepares, streams one insert, and stops.
pub(crate) async fn stream_one_row(cfg: PostgresConfig, admin: &tokio_postgres::Client, id: i32) {
    let who = format!("{} via {}", cfg.user, cfg.address());
    let source = PostgresSource::prepare(cfg)
        .await
        .unwrap_or_else(|e| panic!("{who}: {e}"));
    let (tx, mut rx) = mpsc::channel(4);
    let (ack, ack_rx) = watch::channel(source.start_lsn());
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, ack_rx, stop.clone()));
    admin
        .execute("INSERT INTO t VALUES ($1)", &[&id])
        .await
        .unwrap();
    let mut seen = None;
    let mut committed = false;
    while !committed {
        let batch = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{who}: no data"))
            .unwrap_or_else(|| panic!("{who}: source stopped"));
        for item in batch {
            match item {
                SourceItem::Change(c) => seen = c.after.map(|r| r[0].clone()),
                // Acknowledged, so stopping need not wait for the pipeline.
                SourceItem::Commit(c) if seen.is_some() => {
                    ack.send_replace(c.end_lsn);
                    committed = true;
                }
                _ => {}
            }
        }
    }
    assert_eq!(seen, Some(Value::Int(i64::from(id))), "{who}");
    stop.cancel();
    task.await.unwrap().unwrap_or_else(|e| panic!("{who}: {e}"));
}

#[tokio::test]
async fn password_methods_and_unix_socket() {
    let cluster = Cluster::start().unwrap_or_else(|e| panic!("starting a private cluster: {e}"));
    let admin = admin(&cluster).await;
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
        // This cluster has no TLS: a cleartext password needs consent.
        let cleartext = user == "pw_user";
        let config = |password: Option<&str>, slot: &str| PostgresConfig {
            allow_cleartext_password: cleartext,
            ..cluster.config(user, password, slot)
        };
        // The replication connection's own handshake.
        let cfg = config(Some(password), &format!("slot_{user}"));
        assert_eq!(
            cfg.ssl_mode,
            SslMode::Prefer,
            "the default falls back to plaintext"
        );
        let mut conn = ReplConn::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let sys = conn.identify_system().await.unwrap();
        assert_eq!(sys.dbname.as_deref(), Some("postgres"));
        conn.close().await;

        let wrong = config(Some("wrong"), "unused");
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
        match ReplConn::connect(&config(None, "unused")).await {
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

    // Without consent, a cleartext request over plaintext is refused by
    // both connections, before the password leaves.
    let cfg = cluster.config("pw_user", Some("plain secret"), "slot_pw_user");
    match ReplConn::connect(&cfg).await {
        Err(PgError::Auth { message, .. }) => {
            assert!(
                message.contains("in cleartext over an unencrypted"),
                "{message}"
            );
            assert!(message.contains("allow_cleartext_password"), "{message}");
        }
        Err(e) => panic!("expected an authentication error, got {e:?}"),
        Ok(_) => panic!("the cleartext password was sent over plaintext"),
    }
    let err = PostgresSource::prepare(cfg).await.unwrap_err();
    assert!(
        matches!(&err, PgError::Auth { message, .. } if message.contains("in cleartext")),
        "{err:?}"
    );

    // sslmode = require against a server without TLS fails, and says so.
    let cfg = PostgresConfig {
        ssl_mode: SslMode::Require,
        ..cluster.config("scram_user", Some("scram secret"), "slot_scram_user")
    };
    for err in [
        ReplConn::connect(&cfg)
            .await
            .err()
            .expect("require without TLS"),
        PostgresSource::prepare(cfg.clone()).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, PgError::Tls { message, .. }
                if message.contains("does not accept TLS") && message.contains("require")),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }

    // require_auth: SCRAM passes when required; a role whose server
    // asks for another method, or none, is refused on both connections
    // before anything is sent.
    let cfg = PostgresConfig {
        require_auth: "scram-sha-256".parse().unwrap(),
        ..cluster.config("scram_user", Some("scram secret"), "slot_require_scram")
    };
    stream_one_row(cfg, &admin, 200).await;
    for (user, password, needle) in [
        (
            "pw_user",
            Some("plain secret"),
            "password authentication, which",
        ),
        ("md5_user", Some("md5 secret"), "md5 authentication, which"),
        ("postgres", None, "without authenticating"),
    ] {
        let cfg = PostgresConfig {
            require_auth: "scram-sha-256".parse().unwrap(),
            allow_cleartext_password: true,
            ..cluster.config(user, password, "unused")
        };
        for err in [
            ReplConn::connect(&cfg)
                .await
                .err()
                .expect("require_auth ignored"),
            PostgresSource::prepare(cfg).await.unwrap_err(),
        ] {
            assert!(
                matches!(&err, PgError::Auth { message, .. }
                    if message.contains(needle) && message.contains("require_auth")),
                "{user}: {err:?}"
            );
        }
    }
    let cfg = PostgresConfig {
        require_auth: "none".parse().unwrap(),
        ..cluster.config("postgres", None, "slot_require_none")
    };
    stream_one_row(cfg, &admin, 201).await;

    // Unix socket: the host is the socket directory. There is no TLS on
    // Unix sockets, so even `require` goes on in plaintext, as in libpq.
    let mut cfg = cluster.config("postgres", None, "slot_unix");
    cfg.host = cluster.dir.display().to_string();
    cfg.ssl_mode = SslMode::Require;
    stream_one_row(cfg, &admin, 100).await;

    // A cleartext password over a Unix socket never crosses a network, so
    // it needs no consent; the wrong one is refused, which shows the
    // socket really asked for it.
    let mut cfg = cluster.config("pw_user", Some("plain secret"), "slot_unix_pw");
    cfg.host = cluster.dir.display().to_string();
    assert!(!cfg.allow_cleartext_password);
    let mut conn = ReplConn::connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("pw_user over the socket: {e}"));
    conn.identify_system().await.unwrap();
    conn.close().await;
    stream_one_row(cfg.clone(), &admin, 101).await;
    cfg.password = Some("wrong".into());
    for err in [
        ReplConn::connect(&cfg).await.err().expect("wrong password"),
        PostgresSource::prepare(cfg).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, PgError::Auth { message, .. }
                if message.contains("password authentication failed")),
            "{err:?}"
        );
    }
}

/// Impostor servers: each plays one trick on a client that has a password
/// configured. In-process, because no real server misbehaves like this;
/// what is tested is Weir's side of the protocol.
mod impostor {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Trick {
        /// AuthenticationOk right after the client's SCRAM first message.
        OkAfterScramStart,
        /// AuthenticationOk after the client's SCRAM final message, instead
        /// of the server's signature.
        OkInsteadOfScramFinal,
        /// AuthenticationCleartextPassword over plaintext.
        Cleartext,
        /// AuthenticationOk at once, as a trust server (or an impostor
        /// not knowing the password) would.
        ImmediateOk,
    }

    fn auth(code: i32, data: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + data.len() as i32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    async fn read_tagged(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let tag = s.read_u8().await.ok()?;
        let len = s.read_i32().await.ok()?;
        let mut body = vec![0; usize::try_from(len).ok()?.checked_sub(4)?];
        s.read_exact(&mut body).await.ok()?;
        Some((tag, body))
    }

    async fn read_untagged(s: &mut TcpStream) -> Vec<u8> {
        let len = s.read_i32().await.unwrap();
        let mut body = vec![0; len as usize - 4];
        s.read_exact(&mut body).await.unwrap();
        body
    }

    /// Serves one connection; returns the tags of what the client sent
    /// after the trick.
    async fn serve(listener: TcpListener, trick: Trick) -> Vec<u8> {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut startup = read_untagged(&mut s).await;
        if startup == 80_877_103i32.to_be_bytes() {
            s.write_all(b"N").await.unwrap();
            startup = read_untagged(&mut s).await;
        }
        assert!(
            startup.starts_with(&196_608i32.to_be_bytes()),
            "{startup:?}"
        );
        if trick == Trick::Cleartext {
            s.write_all(&auth(3, &[])).await.unwrap();
        } else if trick == Trick::ImmediateOk {
            let mut ok = auth(0, &[]);
            ok.extend_from_slice(b"Z\0\0\0\x05I");
            s.write_all(&ok).await.unwrap();
        } else {
            s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
            let (tag, first) = read_tagged(&mut s).await.unwrap();
            assert_eq!(tag, b'p');
            if trick == Trick::OkInsteadOfScramFinal {
                let first = String::from_utf8_lossy(&first).into_owned();
                // The nonce follows the first ",r=" and holds no comma;
                // it may itself contain "r=", so never split from the end.
                let nonce = first.split_once(",r=").unwrap().1;
                let server_first = format!("r={nonce}impostor,s=c2FsdHNhbHRzYWx0c2FsdA==,i=4096");
                s.write_all(&auth(11, server_first.as_bytes()))
                    .await
                    .unwrap();
                let (tag, _) = read_tagged(&mut s).await.unwrap();
                assert_eq!(tag, b'p');
            }
            let mut ok = auth(0, &[]);
            ok.extend_from_slice(b"Z\0\0\0\x05I");
            s.write_all(&ok).await.unwrap();
        }
        let mut tags = Vec::new();
        while let Ok(Some((tag, _))) =
            tokio::time::timeout(Duration::from_secs(10), read_tagged(&mut s)).await
        {
            tags.push(tag);
        }
        tags
    }

    /// Postgres answers the SSLRequest with a raw ErrorResponse when it
    /// cannot start a backend (too many clients, out of memory at fork):
    /// a passing condition, so both connections report something to
    /// retry, and neither shows the unauthenticated server's words.
    #[tokio::test]
    async fn error_answer_to_the_tls_request_is_retryable() {
        for sql in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                assert_eq!(read_untagged(&mut s).await, 80_877_103i32.to_be_bytes());
                let fields = b"SFATAL\0C53300\0Msorry, too many clients already\0\0";
                let mut e = vec![b'E'];
                e.extend_from_slice(&(4 + fields.len() as i32).to_be_bytes());
                e.extend_from_slice(fields);
                s.write_all(&e).await.unwrap();
                // Postgres closes right after; whatever the client sends
                // now is counted.
                let mut rest = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
                rest
            });
            let cfg = PostgresConfig {
                host: "127.0.0.1".into(),
                port,
                user: "weir".into(),
                password: Some("secret".into()),
                tables: vec![("public".into(), "t".into())],
                ..Default::default()
            };
            let err = if sql {
                PostgresSource::prepare(cfg).await.err()
            } else {
                ReplConn::connect(&cfg).await.err()
            };
            let err = err.expect("connected to a server that answered with an error");
            let which = if sql { "SQL" } else { "replication" };
            assert!(
                matches!(err, PgError::Connection { .. }) && err.is_retryable(),
                "{which}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("error"), "{which}: {text}");
            assert!(!text.contains("sorry"), "{which}: {text}");
            assert!(server.await.unwrap().is_empty(), "{which}");
        }
    }

    #[tokio::test]
    async fn impostors_do_not_log_weir_in_nor_get_the_password() {
        for trick in [
            Trick::OkAfterScramStart,
            Trick::OkInsteadOfScramFinal,
            Trick::Cleartext,
            Trick::ImmediateOk,
        ] {
            for sql in [false, true] {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                let server = tokio::spawn(serve(listener, trick));
                let cfg = PostgresConfig {
                    host: "127.0.0.1".into(),
                    port,
                    user: "weir".into(),
                    password: Some("secret".into()),
                    tables: vec![("public".into(), "t".into())],
                    // Only require_auth stops a server that does not
                    // authenticate at all.
                    require_auth: if trick == Trick::ImmediateOk {
                        "scram-sha-256".parse().unwrap()
                    } else {
                        Default::default()
                    },
                    ..Default::default()
                };
                let which = if sql { "SQL" } else { "replication" };
                let err = if sql {
                    PostgresSource::prepare(cfg).await.err()
                } else {
                    ReplConn::connect(&cfg).await.err()
                };
                let err =
                    err.unwrap_or_else(|| panic!("{trick:?}: the {which} connection logged in"));
                let sent = server.await.unwrap();
                // No password and no query after the trick.
                assert!(
                    !sent.iter().any(|t| matches!(t, b'p' | b'Q' | b'P')),
                    "{trick:?}, {which} connection sent {sent:?} (error: {err})"
                );
                let message = match &err {
                    PgError::Auth { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                if trick == Trick::ImmediateOk {
                    assert!(
                        matches!(err, PgError::Auth { .. })
                            && message.contains("without authenticating")
                            && message.contains("scram-sha-256"),
                        "{which}: {err:?}"
                    );
                } else if trick == Trick::Cleartext {
                    assert!(
                        matches!(err, PgError::Auth { .. }) && message.contains("in cleartext"),
                        "{which}: {err:?}"
                    );
                } else if !sql {
                    // tokio-postgres (the SQL connection) refuses these as
                    // an unexpected message; the replication one explains.
                    assert!(
                        matches!(err, PgError::Auth { .. })
                            && message.contains("before completing the SCRAM exchange"),
                        "{trick:?}: {err:?}"
                    );
                }
            }
        }
        // What require_auth is for: without it, a server that skips
        // authentication logs Weir in.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve(listener, Trick::ImmediateOk));
        let cfg = PostgresConfig {
            host: "127.0.0.1".into(),
            port,
            user: "weir".into(),
            password: Some("secret".into()),
            ..Default::default()
        };
        ReplConn::connect(&cfg).await.unwrap().close().await;
        server.await.unwrap();
    }
}
