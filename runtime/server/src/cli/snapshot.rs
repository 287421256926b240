//! `weir snapshot`, against a running Weir's `[admin]` endpoint:
//! * `weir snapshot TABLE… [--where COND]` queues a snapshot of those
//!   tables (`POST /snapshots`), read while the slot streams;
//! * `weir snapshot status` shows snapshot progress from `/status`: one
//!   progress bar per table in a terminal, refreshed until every snapshot
//!   is delivered, or, with `--once` (and whenever the output is not a
//!   terminal), one line per table.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value as Json;

use crate::config::Config;

/// How often a terminal view asks again.
const REFRESH: Duration = Duration::from_millis(500);

/// The admin endpoint of the Weir `config_path` configures.
fn admin_of(config_path: &Path) -> Result<crate::config::AdminConfig, ExitCode> {
    let config = Config::load(config_path).map_err(|e| {
        eprint!("error: {e}");
        ExitCode::FAILURE
    })?;
    config.admin.ok_or_else(|| {
        eprintln!(
            "error: {}: `weir snapshot` talks to the admin endpoint; add [admin] listen = \"127.0.0.1:PORT\"",
            config_path.display()
        );
        ExitCode::FAILURE
    })
}

/// Queues a snapshot of `tables` (only the rows matching `filter`, when
/// given) with the Weir that `config_path` configures.
pub async fn request(config_path: &Path, tables: &[String], filter: Option<&str>) -> ExitCode {
    let admin = match admin_of(config_path) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let url = format!("http://{}/snapshots", admin.listen);
    let mut request = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(30))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "tables": tables, "where": filter }).to_string());
    if let Some(token) = &admin.token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {url}: {e} (is weir running with this configuration?)");
            return ExitCode::FAILURE;
        }
    };
    let code = response.status();
    let body: Json = match response.bytes().await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Json::Null),
        Err(_) => Json::Null,
    };
    if !code.is_success() {
        eprintln!(
            "error: {}",
            body["error"]
                .as_str()
                .map_or_else(|| format!("{url}: HTTP {code}"), str::to_owned)
        );
        return ExitCode::FAILURE;
    }
    println!(
        "snapshot request {} queued for {}; follow it with `weir snapshot status`",
        body["request"],
        tables.join(", ")
    );
    ExitCode::SUCCESS
}

/// Shows the snapshot progress of the Weir that `config_path` configures.
pub async fn status(config_path: &Path, once: bool) -> ExitCode {
    let admin = match admin_of(config_path) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let url = format!("http://{}/status", admin.listen);
    let client = reqwest::Client::new();
    let fetch = || async {
        let mut request = client.get(&url).timeout(Duration::from_secs(5));
        if let Some(token) = &admin.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{url}: {e} (is weir running with this configuration?)"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_slice::<Json>(&body).map_err(|e| format!("{url}: {e}"))
    };
    let live = !once && std::io::stdout().is_terminal();
    let bars = MultiProgress::new();
    let mut shown: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let status = match fetch().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let snapshot = &status["snapshot"];
        if snapshot.is_null() {
            println!(
                "no snapshot in this run (the slot existed, or snapshot = \"never\", and none was requested)"
            );
            return ExitCode::SUCCESS;
        }
        // Nothing left to copy: every table delivered, or some given up.
        let delivered = snapshot["state"] == "delivered" || snapshot["state"] == "failed";
        let tables = snapshot["tables"].as_array().cloned().unwrap_or_default();
        if !live {
            for t in &tables {
                println!("{}", line(t));
            }
            println!(
                "{}: {} rows in {}s",
                snapshot["state"].as_str().unwrap_or("?"),
                snapshot["rows"],
                snapshot["elapsed_seconds"]
            );
            return exit_code(snapshot);
        }
        for t in &tables {
            let name = label(t);
            let bar = shown.entry(name.clone()).or_insert_with(|| {
                let bar = bars.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:30} [{bar:40}] {pos}/{len} rows  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(name);
                bar
            });
            let rows = t["rows"].as_u64().unwrap_or(0);
            let total = t["estimated_rows"].as_u64().unwrap_or(rows).max(rows);
            bar.set_length(total);
            bar.set_position(rows);
            bar.set_message(rate_and_eta(t));
            if t["state"] == "failed" {
                bar.abandon_with_message(format!("failed: {}", t["error"].as_str().unwrap_or("?")));
            } else if t["state"] == "delivered"
                || (t["state"] == "copying" && t["chunks_done"] == t["chunks"])
            {
                bar.set_length(rows);
                bar.finish_with_message(format!("done, {} chunks", t["chunks"]));
            }
        }
        if delivered {
            let _ = bars.println(format!(
                "{}: {} rows",
                snapshot["state"].as_str().unwrap_or("?"),
                snapshot["rows"]
            ));
            return exit_code(snapshot);
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Failure when a table was given up, so scripts notice.
fn exit_code(snapshot: &Json) -> ExitCode {
    if snapshot["state"] == "failed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `public.orders`, or `public.orders #3` for request 3 (not the initial
/// snapshot).
fn label(t: &Json) -> String {
    let table = t["table"].as_str().unwrap_or("?");
    match t["request"].as_i64() {
        Some(r) if r > 0 => format!("{table} #{r}"),
        _ => table.to_owned(),
    }
}

/// `public.orders: copying, 1200/5000 rows, 3/10 chunks, 850 rows/s, 4s left`.
fn line(t: &Json) -> String {
    let estimate = t["estimated_rows"]
        .as_u64()
        .map_or_else(|| "?".to_owned(), |e| e.to_string());
    format!(
        "{}: {}, {}/{} rows, {}/{} chunks, {}",
        label(t),
        t["state"].as_str().unwrap_or("?"),
        t["rows"],
        estimate,
        t["chunks_done"],
        t["chunks"],
        rate_and_eta(t)
    )
}

fn rate_and_eta(t: &Json) -> String {
    if let Some(error) = t["error"].as_str() {
        return format!("failed: {error}");
    }
    match t["eta_seconds"].as_u64() {
        Some(left) => format!("{} rows/s, {left}s left", t["rows_per_second"]),
        None => format!("{} rows/s", t["rows_per_second"]),
    }
}
