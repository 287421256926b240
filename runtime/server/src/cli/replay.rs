//! `weir plugin test`: runs a plugin over events from a file, the way the
//! pipeline would, and prints what it made of each.
//!
//! Events are native JSON envelopes, one per line (blank lines are
//! skipped); consecutive events with the same `source.xid` and
//! `source.commit_lsn` are one transaction, passed to the plugin in one
//! batch. Whether the component is a transform or a router is read from
//! its exports.
//!
//! Output, one JSON object per line on stdout, in input order (`N` is the
//! event's line number in the events file):
//!
//! * transform: `{"line":N,"outcome":"keep"}`, `{"line":N,"outcome":"drop"}`,
//!   `{"line":N,"outcome":"replace","emits":[EMIT,...]}`, or
//!   `{"line":N,"outcome":"fail","error":"..."}` when the plugin rejected
//!   the event or failed on it (a trap, a timeout, the memory limit, an
//!   answer the contract does not allow);
//! * after each transaction, when the transform asked for the `commit`
//!   hook: `{"commit":{"xid":X,"commit_lsn":"0/16B3748"},"emits":[EMIT,...]}`,
//!   or `{"commit":{...},"error":"..."}`;
//! * router: `{"line":N,"destinations":[{"sink":"s","topic":"t"|null},...]}`,
//!   or `{"line":N,"outcome":"fail","error":"..."}`.
//!
//! `EMIT` is `{"destination":{"sink":..,"topic":..}|null,"change":ENVELOPE}`
//! (the envelope a sink would write) or
//! `{"destination":..,"raw":{"key":BYTES,"value":BYTES,"headers":{"name":BYTES,...}}}`,
//! where `BYTES` is `null`, a string when the bytes are UTF-8, or
//! `{"base64":"..."}` when they are not.
//!
//! A failure does not stop the run: as in the pipeline (the same plugin
//! stage runs it), the event that fails is found by re-running parts of
//! the batch on fresh instances, reported, and the rest goes on. A summary and the
//! plugin's counters go to stderr at the end, with its log.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use weir_codec::{DecodeContext, JsonEncoder, decode_native_json};
use weir_core::ChangeEvent;
use weir_wasm::{
    Grants, Outcome, PluginSpec, PluginWorld, RouterPlugin, Transaction, TransformPlugin,
};

use crate::answers::{emits_json, outcome_fields, route_fields, string};
use crate::config::{BreakerConfig, FailurePolicy};
use crate::stages::{Stage, StagePlugin};

/// What `weir plugin test` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The component file.
    pub plugin: PathBuf,
    /// The events file (JSON Lines of native envelopes).
    pub events: PathBuf,
    /// The plugin's configuration pairs.
    pub config: Vec<(String, String)>,
    /// The deadline of one call.
    pub timeout: Duration,
    /// The memory limit of one instance.
    pub memory_limit_bytes: usize,
    /// What the plugin may reach outside its memory.
    pub grants: Grants,
}

/// Runs `weir plugin test`, printing to stdout (results) and stderr
/// (summary, counters). Fails on an unreadable or malformed events file and
/// on a plugin that cannot be loaded or refuses its configuration; events
/// the plugin fails on are results, not errors.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let events = read_events(&options.events)?;
    let bytes = std::fs::read(&options.plugin)
        .with_context(|| format!("cannot read {}", options.plugin.display()))?;
    let engine = super::engine()?;
    let inspection = weir_wasm::inspect(&engine, &options.plugin, &bytes)?;
    let name = options
        .plugin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned());
    let mut spec = PluginSpec::new(name.clone(), &options.plugin)
        .with_call_timeout(options.timeout)
        .with_memory_limit(options.memory_limit_bytes)
        .with_grants(options.grants.clone());
    spec.config = options.config.clone();

    let mut out = BufWriter::new(std::io::stdout().lock());
    let summary = match inspection.world {
        PluginWorld::Transform => {
            let plugin = TransformPlugin::load_bytes(&engine, spec, &bytes)?;
            TransformRun::new(plugin, &mut out)?.run(&events)?
        }
        PluginWorld::Router => {
            let plugin = RouterPlugin::load_bytes(&engine, spec, &bytes)?;
            RouterRun::new(plugin, &mut out)?.run(&events)?
        }
        PluginWorld::Neither => bail!(
            "cannot test {}: {}",
            options.plugin.display(),
            inspection
                .load_error
                .as_deref()
                .unwrap_or("it is neither a transform nor a router")
        ),
    };
    out.flush().context("cannot write the results to stdout")?;
    drop(out);

    eprintln!("{summary}");
    let counters: Vec<_> = engine
        .counter_totals()
        .into_iter()
        .filter(|(plugin, _, _)| *plugin == name)
        .collect();
    if counters.is_empty() {
        eprintln!("counters: none");
    } else {
        eprintln!("counters:");
        for (_, counter, total) in counters {
            eprintln!("  {counter} = {total}");
        }
    }
    Ok(())
}

/// An event of the events file, with the line it was read from.
struct LineEvent {
    line: usize,
    event: ChangeEvent,
}

/// Reads and decodes the whole events file first, so a mistake on its last
/// line is reported before the plugin runs at all.
fn read_events(path: &Path) -> anyhow::Result<Vec<LineEvent>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the events file {}", path.display()))?;
    let mut context = DecodeContext::new();
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = decode_native_json(line, &mut context)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), index + 1))?;
        events.push(LineEvent {
            line: index + 1,
            event,
        });
    }
    Ok(events)
}

/// The events split into transactions (runs of one `TxnId`).
fn transactions(events: &[LineEvent]) -> impl Iterator<Item = &[LineEvent]> {
    events.chunk_by(|a, b| a.event.txn == b.event.txn)
}

/// What a run did, for the summary line.
#[derive(Default)]
struct Tally {
    events: usize,
    transactions: usize,
    keep: usize,
    drop: usize,
    replace: usize,
    routed: usize,
    fail: usize,
}

/// Runs a transform over transactions.
struct TransformRun<'a, W: Write> {
    stage: Stage<TransformPlugin>,
    out: &'a mut W,
    encoder: JsonEncoder,
    tally: Tally,
}

impl<'a, W: Write> TransformRun<'a, W> {
    /// Instantiates the plugin at once, so a configuration it refuses is an
    /// error before any output.
    fn new(plugin: TransformPlugin, out: &'a mut W) -> anyhow::Result<Self> {
        Ok(TransformRun {
            stage: started(plugin)?,
            out,
            encoder: JsonEncoder::new(),
            tally: Tally::default(),
        })
    }

    fn run(mut self, events: &[LineEvent]) -> anyhow::Result<String> {
        for txn in transactions(events) {
            self.tally.transactions += 1;
            self.transaction(txn)?;
        }
        let t = &self.tally;
        Ok(format!(
            "{} event(s) in {} transaction(s): {} keep, {} drop, {} replace, {} fail",
            t.events, t.transactions, t.keep, t.drop, t.replace, t.fail
        ))
    }

    fn transaction(&mut self, txn: &[LineEvent]) -> anyhow::Result<()> {
        for (line, answer) in run_stage(&mut self.stage, txn) {
            self.tally.events += 1;
            match &answer {
                Ok(Outcome::Keep) => self.tally.keep += 1,
                Ok(Outcome::Drop) => self.tally.drop += 1,
                Ok(Outcome::Replace(_)) => self.tally.replace += 1,
                Ok(Outcome::Fail { .. }) | Err(_) => self.tally.fail += 1,
            }
            let fields = outcome_fields(&answer, &mut self.encoder);
            writeln!(self.out, r#"{{"line":{},{fields}}}"#, line.line)
                .context("cannot write to stdout")?;
        }
        if self.stage.wants_commit()? {
            self.commit(&txn[0].event)?;
        }
        Ok(())
    }

    /// Runs the `commit` hook after the transaction of `event`.
    fn commit(&mut self, event: &ChangeEvent) -> anyhow::Result<()> {
        let txn = Transaction {
            txn: event.txn,
            xid: event.source.xid,
            commit_lsn: event.source.commit_lsn,
            commit_time_micros: event.source.commit_time_micros,
        };
        let commit = format!(r#"{{"xid":{},"commit_lsn":"{}"}}"#, txn.xid, txn.commit_lsn);
        let line = match self.stage.commit(&txn) {
            Ok(emits) => format!(
                r#"{{"commit":{commit},"emits":{}}}"#,
                emits_json(&emits, &mut self.encoder)
            ),
            Err(e) => format!(
                r#"{{"commit":{commit},"error":{}}}"#,
                string(&e.to_string())
            ),
        };
        writeln!(self.out, "{line}").context("cannot write to stdout")
    }
}

/// Runs a router over transactions.
struct RouterRun<'a, W: Write> {
    stage: Stage<RouterPlugin>,
    out: &'a mut W,
    tally: Tally,
}

impl<'a, W: Write> RouterRun<'a, W> {
    /// Instantiates the plugin at once, as [`TransformRun::new`] does.
    fn new(plugin: RouterPlugin, out: &'a mut W) -> anyhow::Result<Self> {
        Ok(RouterRun {
            stage: started(plugin)?,
            out,
            tally: Tally::default(),
        })
    }

    fn run(mut self, events: &[LineEvent]) -> anyhow::Result<String> {
        for txn in transactions(events) {
            self.tally.transactions += 1;
            for (line, answer) in run_stage(&mut self.stage, txn) {
                self.tally.events += 1;
                match &answer {
                    Ok(_) => self.tally.routed += 1,
                    Err(_) => self.tally.fail += 1,
                }
                let text = format!(r#"{{"line":{},{}}}"#, line.line, route_fields(&answer));
                writeln!(self.out, "{text}").context("cannot write to stdout")?;
            }
        }
        let t = &self.tally;
        Ok(format!(
            "{} event(s) in {} transaction(s): {} routed, {} fail",
            t.events, t.transactions, t.routed, t.fail
        ))
    }
}

/// A stage for `plugin`, with an instance made (so a refused configuration
/// is reported before anything else). Its policy and breaker are never
/// consulted: here every failure is a result.
fn started<P: StagePlugin>(plugin: P) -> anyhow::Result<Stage<P>> {
    let mut stage = Stage::new(plugin, FailurePolicy::Skip, &BreakerConfig::default());
    stage.start()?;
    Ok(stage)
}

/// The stage's answer for each event of a transaction. A failure no event
/// can be blamed for (it did not recur on fresh instances) is every
/// event's result.
fn run_stage<'e, P: StagePlugin>(
    stage: &mut Stage<P>,
    txn: &'e [LineEvent],
) -> Vec<(&'e LineEvent, Result<P::Answer, String>)> {
    let batch: Vec<ChangeEvent> = txn.iter().map(|e| e.event.clone()).collect();
    match stage.run(&batch) {
        Ok(answers) => txn.iter().zip(answers).collect(),
        Err(e) => txn.iter().map(|line| (line, Err(e.to_string()))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_files_are_read_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let event = |xid: u32, id: u32| {
            format!(
                r#"{{"op":"insert","schema":"public","table":"t","key":{{"id":{id}}},"before":null,"after":{{"id":{id}}},"source":{{"commit_lsn":"0/{xid}0","lsn":"0/1","xid":{xid},"commit_time":"2026-01-01T00:00:00Z","seq":0}}}}"#
            )
        };
        std::fs::write(
            &path,
            format!("{}\n\n{}\n{}\n", event(5, 1), event(5, 2), event(6, 3)),
        )
        .unwrap();
        let events = read_events(&path).unwrap();
        assert_eq!(events.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 3, 4]);
        let sizes: Vec<usize> = transactions(&events).map(<[_]>::len).collect();
        assert_eq!(sizes, [2, 1]);

        std::fs::write(&path, format!("{}\n{{\"op\":1}}\n", event(5, 1))).unwrap();
        let err = read_events(&path).err().unwrap().to_string();
        assert_eq!(
            err,
            format!(
                "{}:2: `op`: expected a string, got a number",
                path.display()
            )
        );
    }
}
