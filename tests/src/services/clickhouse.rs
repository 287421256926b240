//! A private ClickHouse server for one test: `clickhouse-server` on free
//! loopback ports, with its data, configuration and logs in a temp dir,
//! killed (and waited for) when the guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Json, free_port, wait_for};

/// A running (or stopped, between [`stop`](ClickHouse::stop) and
/// [`start_again`](ClickHouse::start_again)) ClickHouse server.
pub struct ClickHouse {
    /// The HTTP interface's port on 127.0.0.1.
    pub http_port: u16,
    tcp_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The server binary: `$CLICKHOUSE_SERVER`, or `clickhouse-server` on the
/// PATH (the Debian package, installed by `scripts/setup`), or
/// `clickhouse server` from the single binary.
fn server_command() -> Command {
    if let Some(bin) = std::env::var_os("CLICKHOUSE_SERVER") {
        return Command::new(bin);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        if dir.join("clickhouse-server").is_file() {
            return Command::new(dir.join("clickhouse-server"));
        }
        if dir.join("clickhouse").is_file() {
            let mut c = Command::new(dir.join("clickhouse"));
            c.arg("server");
            return c;
        }
    }
    panic!(
        "clickhouse-server is not installed: run scripts/setup (it installs the \
         clickhouse-server package), or set CLICKHOUSE_SERVER to the binary"
    );
}

impl ClickHouse {
    /// Starts a server with a fresh data directory and waits until it
    /// answers `GET /ping`.
    pub fn start() -> ClickHouse {
        let dir = tempfile::tempdir().expect("temp dir for ClickHouse");
        let mut server = ClickHouse {
            http_port: free_port(),
            tcp_port: free_port(),
            child: None,
            dir,
        };
        server.write_config();
        server.start_again();
        server
    }

    /// The `url` to configure the sink with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn write_config(&self) {
        let root = self.dir.path();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{root}/server.log</log>
        <errorlog>{root}/error.log</errorlog>
        <console>0</console>
    </logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709120</mark_cache_size>
</yandex>
"#,
            root = root.display(),
            http = self.http_port,
            tcp = self.tcp_port,
        );
        std::fs::write(root.join("config.xml"), config).expect("write ClickHouse config");
        // `default` without a password, and `reader`, who may only read.
        let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default></default>
        <readonly><readonly>1</readonly></readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <reader>
            <password>secret</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>readonly</profile>
            <quota>default</quota>
        </reader>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#;
        std::fs::write(root.join("users.xml"), users).expect("write ClickHouse users");
    }

    /// Starts the server again on the same ports and data (after
    /// [`stop`](Self::stop)), and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "ClickHouse is already running");
        let root = self.dir.path();
        let out = std::fs::File::create(root.join("stdout.log")).expect("ClickHouse output file");
        let child = server_command()
            .arg(format!(
                "--config-file={}",
                root.join("config.xml").display()
            ))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone output file"))
            .stderr(out)
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let port = self.http_port;
        let up = wait_for(Duration::from_secs(30), || {
            http(port, "GET", "/ping", b"")
                .filter(|r| r.ends_with(b"Ok.\n"))
                .map(|_| ())
        });
        if up.is_none() {
            let log = self.logs();
            self.stop();
            panic!("ClickHouse did not answer /ping on port {port} within 30s:\n{log}");
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log files, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!("{}\n{}", tail(read("stdout.log")), tail(read("error.log")))
    }

    /// The directory that holds the server's data.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` (as `default`); the answer's body, or the server's error.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let response = http(
            self.http_port,
            "POST",
            "/?output_format_json_quote_64bit_integers=0",
            sql.as_bytes(),
        )
        .ok_or_else(|| format!("ClickHouse on port {} does not answer", self.http_port))?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let body = dechunk(&head, response.get(split + 4..).unwrap_or_default());
        let body = String::from_utf8_lossy(&body).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            Ok(body)
        } else {
            Err(format!(
                "{}: {body}",
                head.lines().next().unwrap_or_default()
            ))
        }
    }

    /// Runs a `SELECT … FORMAT JSONEachRow`, one JSON object per row.
    pub fn rows(&self, sql: &str) -> Vec<Json> {
        let text = self.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

/// One HTTP/1.1 request; the whole response, or `None` when nothing
/// listens or the connection breaks.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(out)
}

/// The body of a response sent with `Transfer-Encoding: chunked`, which
/// ClickHouse uses for query results.
fn dechunk(head: &str, body: &[u8]) -> Vec<u8> {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let after = &rest[eol + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    out
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}
