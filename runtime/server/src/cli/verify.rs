//! `weir verify --config weir.toml [--table T…] [--sink S…] [--repair]`:
//! whether the sinks that hold state hold what the source holds, beside a
//! running Weir (see [`crate::verify`]). It reads the source and the sinks
//! and writes nothing, unless `--repair` asks it to send the drifted keys
//! through the pipeline again.
//!
//! Exit status: 0 when every compared sink holds what the source holds,
//! 1 when something differs (after a repair: still differs), 2 when the
//! verification could not be made.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use weir_core::TablePattern;

use crate::config::Config;
use crate::verify::{Options, Report, Verifier, VerifyError};

/// The options of `weir verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Configuration file of the running Weir.
    #[arg(long, short, default_value = "weir.toml")]
    pub config: std::path::PathBuf,
    /// Only these tables (`schema.table`, patterns as in `source.tables`);
    /// repeat for more. Every published table when absent.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Only these sinks; repeat for more. Every sink that holds state when
    /// absent.
    #[arg(long = "sink", value_name = "SINK")]
    pub sinks: Vec<String>,
    /// Send the drifted keys through the pipeline again (current rows as
    /// `read` events, `delete` events for keys the source no longer has),
    /// then compare them again.
    #[arg(long)]
    pub repair: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Most source rows read per second.
    #[arg(long, value_name = "N")]
    pub rows_per_second: Option<u64>,
    /// Rows per chunk read from the source.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub chunk_rows: u64,
    /// Longest wait for the pipeline to acknowledge a chunk, and for a
    /// repair to be delivered.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs `weir verify`.
pub async fn run(args: VerifyArgs) -> ExitCode {
    match verify(&args).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.text());
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn verify(args: &VerifyArgs) -> Result<Report, String> {
    let config = load(&args.config)?;
    let mut patterns = Vec::new();
    for t in &args.tables {
        patterns.push(TablePattern::parse(t).map_err(|e| format!("--table {t:?}: {e}"))?);
    }
    let options = Options {
        chunk_rows: args.chunk_rows.max(1),
        rows_per_second: args.rows_per_second,
        ack_timeout: args.timeout,
        ..Options::default()
    };
    let show = |e: VerifyError| e.to_string();
    let (mut verifier, skipped) = Verifier::connect(Arc::new(config), &args.sinks, options)
        .await
        .map_err(show)?;
    if let Some(why) = verifier.not_ready().await.map_err(show)? {
        return Err(why);
    }
    let started = Instant::now();
    let plan = verifier.plan(&patterns).await.map_err(show)?;
    let mut report = Report {
        skipped,
        ..Report::default()
    };
    report.skipped.extend(plan.skipped);
    let terminal = std::io::stderr().is_terminal() && !args.json;
    for ((schema, name), targets) in &plan.tables {
        let table = verifier.table(schema, name).await.map_err(show)?;
        let bar = terminal.then(|| {
            bar(
                &table.shape.schema.qualified_name(),
                table.shape.estimated_rows,
            )
        });
        let tick = |rows: u64| {
            if let Some(bar) = &bar {
                bar.set_position(rows);
            }
        };
        let mut reports = verifier
            .verify_table(&table, targets, &tick)
            .await
            .map_err(show)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if args.repair
            && verifier
                .repair_drift(&table, targets, &mut reports, args.timeout)
                .await
                .map_err(show)?
                > 0
        {
            report.repaired = true;
        }
        report.targets.extend(reports);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string().trim_end().to_owned())
}

fn bar(table: &str, estimate: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::new(estimate.unwrap_or(0).max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} {bar:30} {pos}/{len} rows {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(table.to_owned());
    bar
}
