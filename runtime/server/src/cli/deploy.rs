//! `weir plugin deploy|status|shadow|promote|discard`: deploys and
//! inspects plugins of a running Weir through its admin endpoint
//! (`--admin URL`, or `WEIR_ADMIN_URL`; the token from
//! `WEIR_ADMIN_TOKEN` when the endpoint has one).
//!
//! A deploy waits until the new version runs (or, as a shadow, runs
//! beside the running one), so a script that deploys and then checks the
//! output checks the new version. A refusal prints the endpoint's own
//! message. Exit status: 0 when the version runs, 1 when it was refused or
//! the endpoint could not be reached, 2 when it was accepted but did not
//! take over within `--wait` (no transaction boundary came: a long
//! transaction is in progress).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value as Json;

/// How often a deploy asks whether the new version runs yet.
const POLL: Duration = Duration::from_millis(100);

/// Where the admin endpoint is.
#[derive(Clone, Debug, Args)]
pub struct AdminArgs {
    /// The admin endpoint of the running Weir, such as
    /// `http://127.0.0.1:9187` (its `[admin] listen`).
    #[arg(long = "admin", value_name = "URL", env = "WEIR_ADMIN_URL")]
    pub url: String,
}

/// The endpoint, with the token from `WEIR_ADMIN_TOKEN`.
struct Endpoint {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

/// An answer of the endpoint: its status and its JSON body.
struct Answer {
    code: reqwest::StatusCode,
    body: Json,
}

impl Answer {
    /// The endpoint's own words for a refusal.
    fn error(&self) -> String {
        self.body["error"].as_str().map_or_else(
            || format!("HTTP {}: {}", self.code, self.body),
            str::to_owned,
        )
    }
}

impl Endpoint {
    fn new(admin: &AdminArgs) -> Self {
        let url = admin.url.trim_end_matches('/');
        let base = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        Endpoint {
            base,
            token: std::env::var("WEIR_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method, &url)
            .timeout(Duration::from_secs(180));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(body);
        }
        let response = request.send().await.with_context(|| {
            format!("cannot reach {url} (is weir running, with [admin] listening there?)")
        })?;
        let code = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("{url}: the answer broke off"))?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Json::from(String::from_utf8_lossy(&bytes).trim().to_owned()));
        if code == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            bail!("{url}: the endpoint needs its token: set WEIR_ADMIN_TOKEN");
        }
        Ok(Answer { code, body })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The plugins as `GET /plugins` lists them.
    async fn plugins(&self) -> anyhow::Result<Json> {
        let answer = self.get("/plugins").await?;
        if !answer.code.is_success() {
            bail!("{}", answer.error());
        }
        Ok(answer.body)
    }

    /// Waits until `done` holds for the plugin's state, up to `wait`.
    async fn wait_for(
        &self,
        name: &str,
        wait: Duration,
        done: impl Fn(&Json) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + wait;
        loop {
            if done(&self.plugins().await?[name]) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What a command came to, for its exit status.
enum Ended {
    Done,
    Refused(String),
    NotYet(String),
}

/// Runs `task` on a runtime of its own and turns its end into an exit
/// status, printing why it failed.
fn finish(task: impl Future<Output = anyhow::Result<Ended>>) -> ExitCode {
    let ended = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(task));
    match ended {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Ok(Ended::NotYet(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `weir plugin deploy NAME FILE`: uploads `file` as the new version of
/// plugin `name` (or, with `shadow`, as its shadow) and waits until it
/// runs.
pub fn deploy(
    admin: &AdminArgs,
    name: &str,
    file: &Path,
    shadow: bool,
    wait: Duration,
) -> ExitCode {
    finish(async {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let endpoint = Endpoint::new(admin);
        let mode = if shadow { "?mode=shadow" } else { "" };
        let answer = endpoint
            .call(
                reqwest::Method::PUT,
                &format!("/plugins/{name}{mode}"),
                Some(bytes),
            )
            .await?;
        if !answer.code.is_success() {
            return Ok(Ended::Refused(answer.error()));
        }
        if shadow {
            let version = answer.body["shadow"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let running = answer.body["running"].as_str().unwrap_or_default();
            eprintln!(
                "{name}: shadow version {version} validated beside {running}; waiting for it to start"
            );
            let started = endpoint
                .wait_for(name, wait, |p| {
                    p["shadow"]["version"] == version.as_str() && p["shadow"]["state"] != "waiting"
                })
                .await?;
            if !started {
                return Ok(not_yet(name, &version, wait));
            }
            let plugins = endpoint.plugins().await?;
            if plugins[name]["shadow"]["state"] == "stopped" {
                return Ok(Ended::Refused(format!(
                    "{name}: shadow version {version} stopped: {}",
                    plugins[name]["shadow"]["last_failure"]
                        .as_str()
                        .unwrap_or("no reason given")
                )));
            }
            println!(
                "{name}: shadow version {version} runs beside {running}, delivering nothing; \
                 compare with `weir plugin shadow {name}`, then `weir plugin promote {name}` or `weir plugin discard {name}`"
            );
            return Ok(Ended::Done);
        }
        took_over(&endpoint, name, &answer.body, wait).await
    })
}

/// Waits for the deployed version in `answer` to run.
async fn took_over(
    endpoint: &Endpoint,
    name: &str,
    answer: &Json,
    wait: Duration,
) -> anyhow::Result<Ended> {
    let version = answer["version"].as_str().unwrap_or_default().to_owned();
    let previous = answer["previous"].as_str().unwrap_or_default();
    eprintln!(
        "{name}: version {version} validated (running: {previous}); waiting for it to take over"
    );
    if !endpoint
        .wait_for(name, wait, |p| p["version"] == version.as_str())
        .await?
    {
        return Ok(not_yet(name, &version, wait));
    }
    println!("{name}: version {version} runs (was {previous})");
    Ok(Ended::Done)
}

fn not_yet(name: &str, version: &str, wait: Duration) -> Ended {
    Ended::NotYet(format!(
        "{name}: version {version} was accepted but has not taken over after {}: it does at the \
         next transaction boundary (a long transaction may be in progress); see `weir plugin status`",
        humantime::format_duration(wait)
    ))
}

/// `weir plugin promote NAME`: deploys the shadow version and waits until
/// it runs.
pub fn promote(admin: &AdminArgs, name: &str, wait: Duration) -> ExitCode {
    finish(async {
        let endpoint = Endpoint::new(admin);
        let answer = endpoint
            .call(
                reqwest::Method::POST,
                &format!("/plugins/{name}/promote"),
                None,
            )
            .await?;
        if !answer.code.is_success() {
            return Ok(Ended::Refused(answer.error()));
        }
        took_over(&endpoint, name, &answer.body, wait).await
    })
}

/// `weir plugin discard NAME`: ends the shadow version.
pub fn discard(admin: &AdminArgs, name: &str) -> ExitCode {
    finish(async {
        let answer = Endpoint::new(admin)
            .call(
                reqwest::Method::DELETE,
                &format!("/plugins/{name}/shadow"),
                None,
            )
            .await?;
        if !answer.code.is_success() {
            return Ok(Ended::Refused(answer.error()));
        }
        println!(
            "{name}: shadow version {} discarded",
            answer.body["discarded"].as_str().unwrap_or_default()
        );
        Ok(Ended::Done)
    })
}

/// `weir plugin status`: the running version of each plugin, one line
/// each (or the endpoint's JSON).
pub fn status(admin: &AdminArgs, json: bool) -> ExitCode {
    finish(async {
        let plugins = Endpoint::new(admin).plugins().await?;
        if json {
            println!("{plugins}");
            return Ok(Ended::Done);
        }
        print!("{}", status_table(&plugins));
        Ok(Ended::Done)
    })
}

/// `GET /plugins` as a table for people.
fn status_table(plugins: &Json) -> String {
    let Some(plugins) = plugins.as_object().filter(|p| !p.is_empty()) else {
        return "no plugins are configured\n".to_owned();
    };
    let text = |v: &Json| match v {
        Json::Null => "-".to_owned(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows = vec![
        [
            "PLUGIN", "KIND", "VERSION", "WAITING", "FAILED", "DEPLOYS", "SHADOW",
        ]
        .map(str::to_owned),
    ];
    for (name, p) in plugins {
        let failed = p["skipped"].as_u64().unwrap_or(0) + p["dead_lettered"].as_u64().unwrap_or(0);
        let shadow = match &p["shadow"] {
            Json::Null => "-".to_owned(),
            s => {
                let c = &s["counts"];
                format!(
                    "{} {}: same {} changed {} dropped {} failed {} skipped {}",
                    text(&s["version"]),
                    text(&s["state"]),
                    c["same"],
                    c["changed"],
                    c["dropped"],
                    c["failed"],
                    c["skipped"]
                )
            }
        };
        rows.push([
            name.clone(),
            text(&p["kind"]),
            text(&p["version"]),
            text(&p["pending_version"]),
            failed.to_string(),
            text(&p["deploys"]),
            shadow,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `weir plugin shadow NAME`: how the shadow version's answers compare
/// with the running version's, and the first ones that differ.
pub fn shadow(admin: &AdminArgs, name: &str, json: bool) -> ExitCode {
    finish(async {
        let answer = Endpoint::new(admin)
            .get(&format!("/plugins/{name}/shadow"))
            .await?;
        if !answer.code.is_success() {
            return Ok(Ended::Refused(answer.error()));
        }
        let report = &answer.body;
        if json {
            println!("{report}");
            return Ok(Ended::Done);
        }
        let c = &report["counts"];
        println!(
            "{name}: shadow version {} ({}): same {}, changed {}, dropped {}, failed {}, skipped {}",
            report["version"].as_str().unwrap_or_default(),
            report["state"].as_str().unwrap_or_default(),
            c["same"],
            c["changed"],
            c["dropped"],
            c["failed"],
            c["skipped"]
        );
        if let Some(failure) = report["last_failure"].as_str() {
            println!("last failure: {failure}");
        }
        let samples = report["samples"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !samples.is_empty() {
            println!("first differences ({}), one JSON line each:", samples.len());
        }
        for sample in samples {
            println!("{sample}");
        }
        Ok(Ended::Done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_lines_up() {
        let plugins = serde_json::json!({
            "mask": {"kind": "transform", "version": "0123456789ab", "pending_version": null,
                     "skipped": 1, "dead_lettered": 2, "deploys": 3, "shadow": {
                         "version": "ba9876543210", "state": "running",
                         "counts": {"same": 5, "changed": 1, "dropped": 0, "failed": 0, "skipped": 0}}},
            "route": {"kind": "router", "version": "ffffffffffff", "pending_version": "eeeeeeeeeeee",
                      "skipped": 0, "dead_lettered": 0, "deploys": 0, "shadow": null},
        });
        assert_eq!(
            status_table(&plugins),
            "PLUGIN  KIND       VERSION       WAITING       FAILED  DEPLOYS  SHADOW\n\
             mask    transform  0123456789ab  -             3       3        ba9876543210 running: same 5 changed 1 dropped 0 failed 0 skipped 0\n\
             route   router     ffffffffffff  eeeeeeeeeeee  0       0        -\n"
        );
        assert_eq!(
            status_table(&serde_json::json!({})),
            "no plugins are configured\n"
        );
    }

    #[test]
    fn an_address_without_a_scheme_is_http() {
        let endpoint = |url: &str| {
            Endpoint::new(&AdminArgs {
                url: url.to_owned(),
            })
            .base
        };
        assert_eq!(endpoint("127.0.0.1:9187"), "http://127.0.0.1:9187");
        assert_eq!(
            endpoint("https://weir.example:1/"),
            "https://weir.example:1"
        );
    }
}
