//! A private Sphinx `searchd` (Debian's `sphinxsearch`, 2.2.11) with
//! real-time indexes declared in its configuration, as Sphinx 2.2 cannot
//! create indexes over SphinxQL. It daemonises; the guard stops it with
//! `searchd --stopwait` (and kills the pid in its pid file if that fails).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::Queryable as _;

use crate::{free_port, wait_for};

/// A real-time index to declare in `sphinx.conf`.
#[derive(Clone, Debug)]
pub struct RtIndex {
    /// The index name.
    pub name: String,
    /// `rt_field` names.
    pub fields: Vec<String>,
    /// `(type, name)` for each `rt_attr_TYPE = name`.
    pub attributes: Vec<(String, String)>,
}

impl RtIndex {
    /// An index with neither fields nor attributes yet.
    pub fn new(name: &str) -> RtIndex {
        RtIndex {
            name: name.to_owned(),
            fields: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// Adds a full-text field.
    pub fn field(mut self, name: &str) -> RtIndex {
        self.fields.push(name.to_owned());
        self
    }

    /// Adds an attribute of type `ty` (`string`, `bigint`, `uint`, ...).
    pub fn attr(mut self, ty: &str, name: &str) -> RtIndex {
        self.attributes.push((ty.to_owned(), name.to_owned()));
        self
    }

    /// The state index the sphinx sink needs beside index `main`.
    pub fn state_of(main: &str) -> RtIndex {
        RtIndex::new(&format!("{main}_weir"))
            .field("weir_unused")
            .attr("string", "weir_key")
            .attr("bigint", "weir_lsn")
            .attr("uint", "weir_seq")
            .attr("uint", "weir_deleted")
            .attr("string", "weir_doc")
    }
}

/// A running private searchd.
pub struct Searchd {
    /// `127.0.0.1:PORT` of its SphinxQL (mysql41) listener.
    pub addr: String,
    /// Its port.
    pub port: u16,
    config: PathBuf,
    pid_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn searchd_bin() -> &'static str {
    if Command::new("sh")
        .args(["-c", "command -v searchd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        "searchd"
    } else {
        panic!(
            "searchd (Sphinx 2.2) is not installed: run scripts/setup (Debian package sphinxsearch)"
        )
    }
}

impl Searchd {
    /// Writes a configuration declaring `indexes` (and a
    /// `max_packet_size` of `max_packet` bytes), starts searchd and waits
    /// until it accepts connections.
    pub fn start(indexes: &[RtIndex], max_packet: usize) -> Searchd {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let data = dir.path();
        let mut conf = String::new();
        for index in indexes {
            let _ = writeln!(
                conf,
                "index {}\n{{\n  type = rt\n  path = {}",
                index.name,
                data.join(&index.name).display()
            );
            for f in &index.fields {
                let _ = writeln!(conf, "  rt_field = {f}");
            }
            for (ty, name) in &index.attributes {
                let _ = writeln!(conf, "  rt_attr_{ty} = {name}");
            }
            conf.push_str("}\n");
        }
        let pid_file = data.join("searchd.pid");
        let _ = write!(
            conf,
            "searchd\n{{\n  listen = 127.0.0.1:{port}:mysql41\n  log = {log}\n  pid_file = {pid}\n  \
             binlog_path = {data}\n  binlog_flush = 1\n  workers = threads\n  watchdog = 0\n  \
             max_packet_size = {max_packet}\n  seamless_rotate = 0\n}}\n",
            log = data.join("searchd.log").display(),
            pid = pid_file.display(),
            data = data.display(),
        );
        let config = data.join("sphinx.conf");
        std::fs::write(&config, conf).expect("write sphinx.conf");
        let searchd = Searchd {
            addr: format!("127.0.0.1:{port}"),
            port,
            config,
            pid_file,
            _dir: dir,
        };
        searchd.resume();
        searchd
    }

    /// Starts searchd again (after [`stop`](Self::stop)) on the same port
    /// and data.
    pub fn resume(&self) {
        let out = Command::new(searchd_bin())
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run searchd");
        assert!(
            out.status.success(),
            "searchd did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(&self.addr).ok()
        })
        .unwrap_or_else(|| panic!("searchd did not listen on {} within 30s", self.addr));
    }

    /// Stops searchd and waits until it has exited.
    pub fn stop(&self) {
        let status = Command::new(searchd_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("--stopwait")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success())
            && let Ok(pid) = std::fs::read_to_string(&self.pid_file)
        {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(&self.addr).err()
        });
    }

    /// Runs a SphinxQL query; every column of every row as text (NULL as
    /// `None`).
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .prefer_socket(false)
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28_800))
            .stmt_cache_size(0);
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| e.to_string())?;
        let rows: Vec<mysql_async::Row> = conn.query(sql).await.map_err(|e| e.to_string())?;
        let _ = conn.disconnect().await;
        Ok(rows
            .into_iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.as_ref(i) {
                        Some(mysql_async::Value::Bytes(b)) => {
                            Some(String::from_utf8_lossy(b).into_owned())
                        }
                        Some(mysql_async::Value::NULL) | None => None,
                        Some(other) => Some(other.as_sql(true)),
                    })
                    .collect()
            })
            .collect())
    }
}

impl Drop for Searchd {
    fn drop(&mut self) {
        self.stop();
    }
}
