//! Verifying that the sinks which hold state hold what the source holds,
//! finding what differs, and repairing it through the pipeline.
//!
//! ```text
//!  source pages (key order) ──wait for ack──▶ routes ──▶ read records ──▶ Readback::compare
//!  sink's keys (pages) ──lookup in source──▶ keys the source lacks ──▶ delete records ──▶ compare
//!  every key that differed ──read again, wait for ack──▶ compare ──▶ drift (the report)
//!  drift ──repair request (watermark chunk by key)──▶ read / delete events through the pipeline
//! ```
//!
//! A table is read in chunks of rows in key order, each one statement
//! followed by the WAL position it reflects ([`weir_postgres::verify`]).
//! The sink is read only once the pipeline has acknowledged that position,
//! so it has had every change the chunk saw. The records compared are the
//! ones the pipeline would hand the sink for those rows (the routes decide
//! the sinks and topics), so each sink compares through its own mapping.
//! The second direction lists the keys each sink holds and looks them up
//! in the source, to find rows the source no longer has.
//!
//! A key that differs may only be in flight: changed in the source after
//! its chunk was read, and not yet delivered. Every such key is read again
//! once, after the pipeline acknowledged a later position, and only a key
//! that still differs is drift.
//!
//! A table whose changes pass through a plugin is not verified: the
//! plugin decides what the sink holds, and verify does not run plugins.

pub mod continuous;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::{
    ChangeEvent, Held, HeldKey, Op, Readback, SinkPayload, SinkRecord, SnapshotKind, SourceInfo,
    TablePattern, TxnId, Value,
};
use weir_postgres::snapshot;
use weir_postgres::verify::{Page, VerifySource, VerifyTable};
use weir_postgres::{PgError, PostgresConfig};

use crate::config::Config;
use crate::routing::{RouteRules, in_tables};
pub use continuous::VerifyStatus;
pub use report::{Drift, DriftKind, Report, Skipped, TargetReport};

/// How a pass reads.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rows per chunk: one statement on the source and one wait for the
    /// pipeline's acknowledgement.
    pub chunk_rows: u64,
    /// Most source rows read per second, over the whole pass (`None`: as
    /// fast as the source and sinks answer).
    pub rows_per_second: Option<u64>,
    /// Longest wait for the pipeline to acknowledge a chunk's position.
    pub ack_timeout: Duration,
    /// Drifted keys kept per table and sink, for the report and a repair;
    /// any more are counted only.
    pub keep: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_rows: 5000,
            rows_per_second: None,
            ack_timeout: Duration::from_secs(60),
            keep: 100_000,
        }
    }
}

/// Keys compared with a sink per round trip.
const COMPARE_BATCH: usize = 1000;

/// Keys that differed on a first look held per target before they are
/// looked at again.
const SUSPECTS_HELD: usize = 10_000;

/// How many times a key the source keeps changing is read again before
/// it is given up as unsettled.
pub const RECHECK_ROUNDS: usize = 4;

/// What a second look found.
#[derive(Debug, Default)]
pub struct Rechecked {
    /// Keys that still differ, the source unchanged since: drift.
    pub drifts: Vec<Drift>,
    /// Keys the source changed every time they were read again.
    pub unsettled: u64,
}

/// Why a verification could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The source failed.
    #[error("source: {0}")]
    Source(#[from] PgError),
    /// A sink failed while it was read back.
    #[error("sink {sink}: {error}")]
    Sink {
        /// Its name.
        sink: String,
        /// What went wrong.
        error: weir_core::SinkError,
    },
    /// The command asks for something the configuration does not have.
    #[error("{0}")]
    Config(String),
}

/// One sink (and topic) a table's changes go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The sink's name.
    pub sink: String,
    /// The route's topic (the sink's default when `None`).
    pub topic: Option<String>,
}

/// What to verify: per table, the sinks it goes to.
#[derive(Debug, Default)]
pub struct Plan {
    /// `(schema, table)` and its targets, in name order.
    pub tables: Vec<((String, String), Vec<Target>)>,
    /// Tables or sinks left out, and why.
    pub skipped: Vec<Skipped>,
}

/// Verifies against one source and the sinks of one configuration.
pub struct Verifier {
    source: VerifySource,
    pg: PostgresConfig,
    config: Arc<Config>,
    readbacks: BTreeMap<String, Box<dyn Readback>>,
    options: Options,
    /// Rows read in this pass, for `rows_per_second`.
    paced: (Instant, u64),
    /// Woken when a repair is queued, so the running source takes it at
    /// once (inside Weir; from outside, it looks every few seconds).
    wake: Option<Arc<snapshot::SnapshotProgress>>,
}

/// Per target, the keys that differed on the first look.
type Suspects = Vec<BTreeSet<Vec<String>>>;

impl Verifier {
    /// Connects to the source and opens a readback of every sink that
    /// `sinks` names (every sink when empty) and can be read back.
    /// Returns the sinks that cannot be, with the reason, as skipped.
    pub async fn connect(
        config: Arc<Config>,
        sinks: &[String],
        options: Options,
    ) -> Result<(Self, Vec<Skipped>), VerifyError> {
        for s in sinks {
            if !config.sinks.contains_key(s) {
                return Err(VerifyError::Config(format!(
                    "--sink {s}: no such sink (configured: {})",
                    config.sink_names()
                )));
            }
        }
        let pg = crate::config::postgres_config(&config.source, &config.pipeline);
        let source = VerifySource::connect(&pg).await?;
        let dead_letter = config.dead_letter.as_ref().map(|d| d.sink.as_str());
        let mut readbacks = BTreeMap::new();
        let mut skipped = Vec::new();
        for (name, spec) in &config.sinks {
            if (!sinks.is_empty() && !sinks.contains(name)) || dead_letter == Some(name.as_str()) {
                continue;
            }
            match spec.readback(name) {
                Ok(open) => {
                    let readback = open.await.map_err(|error| VerifyError::Sink {
                        sink: name.clone(),
                        error,
                    })?;
                    readbacks.insert(name.clone(), readback);
                }
                Err(reason) => skipped.push(Skipped {
                    table: None,
                    sink: Some(name.clone()),
                    reason,
                }),
            }
        }
        Ok((
            Verifier {
                source,
                pg,
                config,
                readbacks,
                options,
                paced: (Instant::now(), 0),
                wake: None,
            },
            skipped,
        ))
    }

    /// Wakes `progress`'s snapshot reader whenever a repair is queued.
    pub fn wake_with(&mut self, progress: Arc<snapshot::SnapshotProgress>) {
        self.wake = Some(progress);
    }

    /// What each sink's readback compares, for the report.
    pub fn compares(&self) -> BTreeMap<String, String> {
        self.readbacks
            .iter()
            .map(|(n, r)| (n.clone(), r.compares()))
            .collect()
    }

    /// Why no pass can be made now, if none can: the slot's initial
    /// snapshot is still being copied, so the sinks lack rows they will
    /// get, and the slot is acknowledged past it only once it is done.
    pub async fn not_ready(&mut self) -> Result<Option<String>, VerifyError> {
        Ok(self.source.initial_snapshot_running().await?.then(|| {
            format!(
                "the initial snapshot of slot {:?} is still being copied; verify once it is \
                 delivered (`weir snapshot status`)",
                self.pg.slot
            )
        }))
    }

    /// The tables to verify (those `tables` matches, every published
    /// table when empty) and the sinks each goes to.
    pub async fn plan(&mut self, tables: &[TablePattern]) -> Result<Plan, VerifyError> {
        let rules = RouteRules::new(
            &self.config.routes,
            self.config
                .sinks
                .keys()
                .filter(|n| {
                    self.config
                        .dead_letter
                        .as_ref()
                        .is_none_or(|d| &d.sink != *n)
                })
                .cloned(),
        );
        let mut plan = Plan::default();
        let published = self.source.published().await?;
        for pattern in tables {
            if !published.iter().any(|(s, t)| pattern.matches(s, t)) {
                return Err(VerifyError::Config(format!(
                    "--table {pattern}: no table of publication {:?} matches",
                    self.pg.publication
                )));
            }
        }
        for (schema, name) in published {
            if !tables.is_empty() && !tables.iter().any(|p| p.matches(&schema, &name)) {
                continue;
            }
            let qualified = format!("{schema}.{name}");
            let probe = ChangeEvent {
                op: Op::Read,
                table: Some(Arc::new(weir_core::TableSchema {
                    id: 0,
                    version: 0,
                    schema: schema.clone(),
                    name: name.clone(),
                    columns: Vec::new(),
                    replica_identity: weir_core::ReplicaIdentity::Default,
                })),
                before: None,
                after: None,
                message: None,
                source: position(weir_core::Lsn::ZERO, 0),
                txn: TxnId(0),
            };
            if let Some(plugin) = self.plugin_of(&probe) {
                plan.skipped.push(Skipped {
                    table: Some(qualified),
                    sink: None,
                    reason: format!(
                        "its changes pass through plugin {plugin:?}, which decides what the \
                         sinks hold; verify compares rows as the routes deliver them"
                    ),
                });
                continue;
            }
            let targets: Vec<Target> = rules
                .route(&probe)
                .iter()
                .filter(|d| self.readbacks.contains_key(&d.sink))
                .map(|d| Target {
                    sink: d.sink.clone(),
                    topic: d.topic.clone(),
                })
                .collect();
            if !targets.is_empty() {
                plan.tables.push(((schema, name), targets));
            }
        }
        Ok(plan)
    }

    /// The plugin that sees changes like `event`, if one does.
    fn plugin_of(&self, event: &ChangeEvent) -> Option<String> {
        let sees = |tables: &Option<Vec<TablePattern>>| {
            tables.as_ref().is_none_or(|t| in_tables(t, event))
        };
        self.config
            .transforms
            .iter()
            .chain(self.config.router.as_ref())
            .find(|p| sees(&p.tables))
            .map(|p| p.display_name())
    }

    /// The source's shape of a table, and its estimated rows.
    pub async fn table(&mut self, schema: &str, name: &str) -> Result<VerifyTable, VerifyError> {
        Ok(self.source.table(schema, name).await?)
    }

    /// Verifies one table against its targets: one report per target.
    /// `progress` hears the rows read so far.
    pub async fn verify_table(
        &mut self,
        table: &VerifyTable,
        targets: &[Target],
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<TargetReport>, VerifyError> {
        let started = Instant::now();
        let qualified = table.shape.schema.qualified_name();
        let mut reports: Vec<TargetReport> = targets
            .iter()
            .map(|t| TargetReport::new(&qualified, t, self.readbacks[&t.sink].compares()))
            .collect();
        if !table.shape.has_key() {
            for r in &mut reports {
                r.refused = Some(
                    "the table has no primary key (or its replica identity is FULL), so a sink's \
                     rows cannot be matched to the source's; give it a primary key"
                        .to_owned(),
                );
            }
            return Ok(reports);
        }
        let mut suspects: Suspects = vec![BTreeSet::new(); targets.len()];
        // Source to sinks: every row the source has.
        let mut after = None;
        let mut read = 0u64;
        loop {
            let page = self
                .source
                .page(table, after.take(), self.options.chunk_rows)
                .await?;
            let n = page.rows.len() as u64;
            read += n;
            progress(read);
            if n == 0 {
                break;
            }
            self.pace(n).await;
            self.source
                .wait_acknowledged(page.at, self.options.ack_timeout)
                .await?;
            let events = events(table, &page, &[]);
            for (i, target) in targets.iter().enumerate() {
                let report = &mut reports[i];
                report.chunks += 1;
                report.rows += n;
                for (k, held) in self.compare(target, &events).await?.into_iter().enumerate() {
                    if held != Held::Same {
                        suspects[i].insert(page.keys[k].clone());
                    }
                }
            }
            self.settle(table, targets, &mut suspects, &mut reports, SUSPECTS_HELD)
                .await?;
            if n < self.options.chunk_rows {
                break;
            }
            after = page.keys.last().cloned();
        }
        // Sinks to source: keys the sinks hold that the source lacks.
        for (i, target) in targets.iter().enumerate() {
            let mut cursor = None;
            loop {
                let page = {
                    let readback = self.readbacks.get_mut(&target.sink).expect("opened");
                    readback
                        .keys(
                            &table.shape.schema,
                            target.topic.as_deref(),
                            cursor.take(),
                            COMPARE_BATCH,
                        )
                        .await
                        .map_err(|error| VerifyError::Sink {
                            sink: target.sink.clone(),
                            error,
                        })?
                };
                reports[i].sink_keys += page.keys.len() as u64;
                // In the source's spelling, so that the sets below, and a
                // repair's keys, match the source's rows by text.
                let (named, listed): (Vec<HeldKey>, Vec<HeldKey>) =
                    page.keys.into_iter().partition(|h| h.key.is_some());
                for held in listed {
                    reports[i].unmapped(held.name, self.options.keep);
                }
                let given: Vec<Vec<String>> = named.iter().filter_map(|h| h.key.clone()).collect();
                let printed = self.source.canonical(table, &given).await?;
                let mut mapped = Vec::new();
                for (held, key) in named.into_iter().zip(printed) {
                    match key.filter(|k| table.shape.key_row(k).is_ok()) {
                        Some(key) => {
                            // Already a suspect: it is read again anyway.
                            if !suspects[i].contains(&key) {
                                mapped.push(key);
                            }
                        }
                        None => reports[i].unmapped(held.name, self.options.keep),
                    }
                }
                self.pace(mapped.len() as u64).await;
                if !mapped.is_empty() {
                    let found = self.source.lookup(table, mapped.clone()).await?;
                    let absent = absent_from(table, &mapped, &found);
                    if !absent.is_empty() {
                        self.source
                            .wait_acknowledged(found.at, self.options.ack_timeout)
                            .await?;
                        let gone = Page {
                            rows: Vec::new(),
                            keys: Vec::new(),
                            at: found.at,
                        };
                        let events = events(table, &gone, &absent);
                        for (k, held) in
                            self.compare(target, &events).await?.into_iter().enumerate()
                        {
                            if held != Held::Same {
                                suspects[i].insert(absent[k].clone());
                            }
                        }
                    }
                }
                self.settle(table, targets, &mut suspects, &mut reports, SUSPECTS_HELD)
                    .await?;
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        self.settle(table, targets, &mut suspects, &mut reports, 0)
            .await?;
        for r in &mut reports {
            r.seconds = started.elapsed().as_secs_f64();
        }
        Ok(reports)
    }

    /// A second look at the keys that differed, after a later
    /// acknowledgement, for each target holding more than `above` of them:
    /// what still differs is drift. Holding at most [`SUSPECTS_HELD`] keys
    /// per target keeps memory bounded however much differs.
    async fn settle(
        &mut self,
        table: &VerifyTable,
        targets: &[Target],
        suspects: &mut Suspects,
        reports: &mut [TargetReport],
        above: usize,
    ) -> Result<(), VerifyError> {
        for (i, target) in targets.iter().enumerate() {
            if suspects[i].len() <= above {
                continue;
            }
            let keys: Vec<Vec<String>> = std::mem::take(&mut suspects[i]).into_iter().collect();
            let rechecked = self.recheck(table, target, keys).await?;
            for drift in rechecked.drifts {
                reports[i].drift(drift, self.options.keep);
            }
            reports[i].unsettled += rechecked.unsettled;
        }
        Ok(())
    }

    /// Reads `keys` again, once the pipeline acknowledged the read, and
    /// compares them: the ones that differ, and how many kept changing.
    ///
    /// The sink may be *ahead* of a read: a change committed after it can
    /// be delivered before the comparison. So a key that differs is read
    /// once more after the comparison, and is drift only if the source
    /// still has what was compared; a key the source changed meanwhile is
    /// looked at again, up to [`RECHECK_ROUNDS`] times, and then counted
    /// as unsettled (changing faster than it can be compared).
    pub async fn recheck(
        &mut self,
        table: &VerifyTable,
        target: &Target,
        keys: Vec<Vec<String>>,
    ) -> Result<Rechecked, VerifyError> {
        let mut out = Rechecked::default();
        let mut pending = keys;
        for _ in 0..RECHECK_ROUNDS {
            if pending.is_empty() {
                return Ok(out);
            }
            let mut differing = Vec::new();
            for slice in pending.chunks(COMPARE_BATCH) {
                differing.extend(self.look(table, target, slice).await?);
            }
            pending = Vec::new();
            // What the source holds now, for the keys that differed.
            let keys: Vec<Vec<String>> = differing.iter().map(|(d, _)| d.key.clone()).collect();
            let mut now = std::collections::HashMap::new();
            for slice in keys.chunks(COMPARE_BATCH) {
                self.pace(slice.len() as u64).await;
                let page = self.source.lookup(table, slice.to_vec()).await?;
                for row in page.rows {
                    now.insert(row_identity(table, &row), row);
                }
            }
            for (drift, compared) in differing {
                let id = key_identity(table, &drift.key);
                // By their printed values, so that a NaN equals itself.
                let unchanged = format!("{:?}", id.and_then(|id| now.get(&id)))
                    == format!("{:?}", compared.as_ref());
                if unchanged {
                    out.drifts.push(drift);
                } else {
                    pending.push(drift.key);
                }
            }
        }
        out.unsettled = pending.len() as u64;
        Ok(out)
    }

    /// Reads `keys` from the source, waits until the pipeline acknowledged
    /// the read, and compares: each key that differs, with the source row
    /// compared (`None`: the source had none).
    async fn look(
        &mut self,
        table: &VerifyTable,
        target: &Target,
        keys: &[Vec<String>],
    ) -> Result<Vec<(Drift, Option<Vec<Value>>)>, VerifyError> {
        self.pace(keys.len() as u64).await;
        let page = self.source.lookup(table, keys.to_vec()).await?;
        self.source
            .wait_acknowledged(page.at, self.options.ack_timeout)
            .await?;
        let absent = absent_from(table, keys, &page);
        let events = events(table, &page, &absent);
        let rows = page
            .rows
            .iter()
            .map(Some)
            .chain(absent.iter().map(|_| None));
        let keys = page.keys.iter().chain(&absent);
        let mut out = Vec::new();
        let held = self.compare(target, &events).await?;
        for ((held, key), row) in held.into_iter().zip(keys).zip(rows) {
            let (kind, columns) = match held {
                Held::Same => continue,
                Held::Missing => (DriftKind::Missing, Vec::new()),
                Held::Extra => (DriftKind::Extra, Vec::new()),
                Held::Differs(columns) => (DriftKind::Differs, columns),
            };
            let drift = Drift {
                key: key.clone(),
                kind,
                columns,
            };
            out.push((drift, row.cloned()));
        }
        Ok(out)
    }

    /// Compares `events` with what `target` holds, in batches.
    async fn compare(
        &mut self,
        target: &Target,
        events: &[Arc<ChangeEvent>],
    ) -> Result<Vec<Held>, VerifyError> {
        let readback = self.readbacks.get_mut(&target.sink).expect("opened");
        let mut out = Vec::with_capacity(events.len());
        for slice in events.chunks(COMPARE_BATCH) {
            let records: Vec<SinkRecord> = slice
                .iter()
                .map(|e| SinkRecord {
                    topic: target.topic.clone(),
                    payload: SinkPayload::Change(e.clone()),
                    txn: e.txn,
                })
                .collect();
            let held = readback
                .compare(&records)
                .await
                .map_err(|error| VerifyError::Sink {
                    sink: target.sink.clone(),
                    error,
                })?;
            if held.len() != records.len() {
                return Err(VerifyError::Sink {
                    sink: target.sink.clone(),
                    error: weir_core::SinkError::Config(format!(
                        "its readback answered {} of {} records",
                        held.len(),
                        records.len()
                    )),
                });
            }
            out.extend(held);
        }
        Ok(out)
    }

    /// Sleeps as long as `rows_per_second` asks, `n` rows having been read.
    async fn pace(&mut self, n: u64) {
        let Some(rate) = self.options.rows_per_second.filter(|r| *r > 0) else {
            return;
        };
        let (since, rows) = &mut self.paced;
        *rows += n;
        let due = Duration::from_secs_f64(*rows as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(since.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Starts counting `rows_per_second` afresh (a new pass).
    pub fn reset_pace(&mut self) {
        self.paced = (Instant::now(), 0);
    }

    /// Repairs every key `reports` (of `table`, one per target, in order)
    /// found drifted, then sets each report's `still_drifting`. Returns
    /// how many keys were sent through the pipeline again.
    pub async fn repair_drift(
        &mut self,
        table: &VerifyTable,
        targets: &[Target],
        reports: &mut [TargetReport],
        timeout: Duration,
    ) -> Result<usize, VerifyError> {
        let keys: BTreeSet<Vec<String>> = reports
            .iter()
            .flat_map(|r| r.drifts.iter().map(|d| d.key.clone()))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        tracing::info!(table = %table.shape.schema.qualified_name(), keys = keys.len(), "repairing drifted keys through the pipeline");
        let left = self.repair(table, targets, &keys, timeout).await?;
        for (r, left) in reports.iter_mut().zip(left) {
            // What was not kept (held entries that are no key, drift past
            // `keep`) is out of this repair's reach.
            let unreached = r.drifted() - r.drifts.len() as u64;
            r.still_drifting = Some(left.drifts.len() as u64 + unreached);
        }
        Ok(keys.len())
    }

    /// Queues a repair of `keys` of `table` through the pipeline, waits
    /// until it is delivered (or `timeout`), and compares those keys again
    /// with `targets`: the drift left, per target.
    pub async fn repair(
        &mut self,
        table: &VerifyTable,
        targets: &[Target],
        keys: &BTreeSet<Vec<String>>,
        timeout: Duration,
    ) -> Result<Vec<Rechecked>, VerifyError> {
        let (schema, name) = (&table.shape.schema.schema, &table.shape.schema.name);
        let qualified = table.shape.schema.qualified_name();
        let keys: Vec<Vec<String>> = keys.iter().cloned().collect();
        let mut requests = Vec::new();
        for slice in keys.chunks(snapshot::MAX_REPAIR_KEYS) {
            requests.push(snapshot::request_repair(&self.pg, schema, name, slice).await?);
        }
        if let Some(progress) = &self.wake {
            progress.wake();
        }
        let started = Instant::now();
        for id in requests {
            loop {
                let states = self.source.request_state(id).await?;
                if let Some((table, _, error)) = states.iter().find(|s| s.1 == "failed") {
                    return Err(VerifyError::Config(format!(
                        "the repair of {table} failed: {}",
                        error.as_deref().unwrap_or("no reason given")
                    )));
                }
                if states.iter().all(|s| s.1 == "done") {
                    break;
                }
                if started.elapsed() >= timeout {
                    return Err(VerifyError::Config(format!(
                        "the repair of {qualified} (request {id}) was not delivered within \
                         {timeout:?}: is Weir running with this configuration?"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut left = Vec::new();
        for target in targets {
            left.push(self.recheck(table, target, keys.clone()).await?);
        }
        Ok(left)
    }
}

/// The keys of `asked` that `page` (their lookup) has no row for. Matched
/// by value, not text: a sink may give a key's text in another spelling
/// than the source prints it (`042`, upper-case hex), which the lookup's
/// cast still finds.
fn absent_from(table: &VerifyTable, asked: &[Vec<String>], page: &Page) -> Vec<Vec<String>> {
    let found: HashSet<String> = page.rows.iter().map(|r| row_identity(table, r)).collect();
    asked
        .iter()
        .filter(|k| key_identity(table, k).is_none_or(|id| !found.contains(&id)))
        .cloned()
        .collect()
}

/// A row's key, as comparable text of its decoded values.
fn row_identity(table: &VerifyTable, row: &[Value]) -> String {
    let mut id = String::new();
    for (column, value) in table.shape.schema.columns.iter().zip(row) {
        if column.key {
            id.push_str(&format!("{value:?}\u{1f}"));
        }
    }
    id
}

/// [`row_identity`] of a key given as its columns' texts, when they decode.
fn key_identity(table: &VerifyTable, key: &[String]) -> Option<String> {
    table
        .shape
        .key_row(key)
        .ok()
        .map(|row| row_identity(table, &row))
}

/// `read` events for `page`'s rows, then `delete` events for `absent`
/// keys, positioned at the page's WAL position.
fn events(table: &VerifyTable, page: &Page, absent: &[Vec<String>]) -> Vec<Arc<ChangeEvent>> {
    let schema = &table.shape.schema;
    let reads = page
        .rows
        .iter()
        .map(|row| (Op::Read, None, Some(row.clone())));
    let deletes = absent.iter().map(|key| {
        let row: Vec<Value> = table.shape.key_row(key).unwrap_or_default();
        (Op::Delete, Some(row), None)
    });
    reads
        .chain(deletes)
        .enumerate()
        .map(|(seq, (op, before, after))| {
            Arc::new(ChangeEvent {
                op,
                table: Some(schema.clone()),
                before,
                after,
                message: None,
                source: position(page.at, seq),
                txn: TxnId(0),
            })
        })
        .collect()
}

fn position(at: weir_core::Lsn, seq: usize) -> SourceInfo {
    SourceInfo {
        commit_lsn: at,
        lsn: at,
        xid: 0,
        commit_time_micros: 0,
        seq: u32::try_from(seq).unwrap_or(u32::MAX),
        snapshot: SnapshotKind::Incremental,
    }
}
