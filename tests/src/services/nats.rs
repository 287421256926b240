//! A private `nats-server` with JetStream for one test: a free loopback
//! port, its store in a temporary directory, killed on drop. It can be
//! stopped and started again on the same port and store, as a server that
//! goes down and comes back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// A running (or stopped) private NATS server.
pub struct NatsServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    store: tempfile::TempDir,
    config: PathBuf,
}

/// The server binary: `$WEIR_NATS_SERVER`, or `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_NATS_SERVER") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!("nats-server is not installed: run scripts/setup (it installs the nats-server package)");
}

impl NatsServer {
    /// Starts a server with JetStream and waits until it accepts clients.
    pub fn start() -> NatsServer {
        NatsServer::start_with("")
    }

    /// Starts a server with extra configuration-file text (for example
    /// `max_payload: 4096`).
    pub fn start_with(config_text: &str) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir for the NATS store");
        let config = store.path().join("nats.conf");
        std::fs::write(&config, config_text).expect("write the NATS config");
        let port = free_port();
        let mut server = NatsServer {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store,
            config,
        };
        server.resume();
        server
    }

    /// Starts the server again after [`kill`](Self::kill), on the same
    /// port and store.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the NATS server is already running");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.config)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(&addr).ok()
        })
        .unwrap_or_else(|| panic!("nats-server did not listen on {addr} within 30s"));
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
