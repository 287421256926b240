//! `weir plugin record`: rows of a live table as `read` events in the
//! native envelope, one per line on stdout: a test file for
//! `weir plugin test` made of real data. Read through the configuration's
//! `[source]` connection in one read-only transaction; no slot is needed
//! and nothing is written.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, anyhow};
use weir_codec::JsonEncoder;

use crate::config::Config;

/// Writes at most `limit` rows of `table` matching `filter` to stdout, and
/// how many to stderr.
pub fn run(
    config_path: &Path,
    table: &str,
    limit: u64,
    filter: Option<&str>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    let pg = crate::config::postgres_config(&config.source, &config.pipeline);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut encoder = JsonEncoder::new();
    let mut line = Vec::new();
    // Kept apart from the source's errors, so a closed pipe (`| head`)
    // is told as one.
    let mut written: Result<(), std::io::Error> = Ok(());
    let read = runtime.block_on(weir_postgres::snapshot::sample(
        &pg,
        table,
        limit,
        filter,
        |event| {
            line.clear();
            encoder.encode(&event, &mut line).map_err(|e| {
                weir_postgres::PgError::Config(format!("cannot encode a row of {table}: {e}"))
            })?;
            line.push(b'\n');
            out.write_all(&line).map_err(|e| {
                written = Err(e);
                weir_postgres::PgError::Config("stdout closed".into())
            })
        },
    ));
    written.context("cannot write to stdout")?;
    let read = read.map_err(|e| anyhow!("{e}"))?;
    out.flush().context("cannot write to stdout")?;
    eprintln!("recorded {read} row(s) of {table} as read events");
    Ok(())
}
