//! A real headless browser for the console tests: Debian's Chromium,
//! driven over WebDriver through its ChromeDriver (both installed by
//! `scripts/setup-browser`), with a fresh profile per test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};

use crate::{free_port, wait_for};

/// A ChromeDriver and the one browser session it drives. Dropping it ends
/// both, also when a test panics midway.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless
    /// Chromium, 1280×900, with an empty profile.
    pub async fn start() -> Browser {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so the browsers it starts go with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command
            .spawn()
            .expect("chromedriver (scripts/setup-browser installs it)");
        wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        })
        .expect("chromedriver did not listen within 30 s");
        let profile = dir.path().join("profile");
        // Without the background-networking flags Chromium keeps trying
        // to reach Google's hosts, which a closed network refuses.
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a browser session: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Browser {
            client,
            driver,
            log,
            _dir: dir,
        }
    }

    /// Saves a screenshot of the page as `NAME.png` among the test
    /// artifacts, and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).expect("artifacts folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// ChromeDriver's log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends the session and the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.driver.id().to_string();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        let _ = self.driver.wait();
    }
}

/// Where tests keep what they make for people to look at (screenshots):
/// `$WEIR_TEST_ARTIFACTS`, or `test-artifacts` in the build's target folder.
/// Never committed.
pub fn artifacts() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_TEST_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current test executable");
    exe.ancestors()
        .nth(3)
        .expect("target/<profile>/deps")
        .join("test-artifacts")
}
