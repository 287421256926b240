//! What a verification found, per table and sink: for the terminal, for
//! `--json`, for `/status` and for the metrics.

use std::fmt::Write as _;

use serde::Serialize;
use weir_core::ColumnDiff;

use super::Target;

/// How many drifted keys a report shows per table and sink (all are
/// counted).
pub const SHOWN: usize = 10;

/// How a key differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    /// The source has the row, the sink does not.
    Missing,
    /// The sink has a row the source does not.
    Extra,
    /// Both have it, with other values.
    Differs,
}

/// One key that differs, after its second look.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The key columns' texts.
    pub key: Vec<String>,
    /// How it differs.
    pub kind: DriftKind,
    /// For [`DriftKind::Differs`], the columns that differ.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "columns")]
    pub columns: Vec<ColumnDiff>,
}

fn columns<S: serde::Serializer>(c: &[ColumnDiff], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let mut seq = s.serialize_seq(Some(c.len()))?;
    for d in c {
        seq.serialize_element(&serde_json::json!({
            "column": d.column, "source": d.source, "sink": d.sink,
        }))?;
    }
    seq.end()
}

/// A table or sink verify left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The table (`schema.table`), when the reason is the table's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The sink, when the reason is the sink's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// Why.
    pub reason: String,
}

/// One table against one sink.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    /// `schema.table`.
    pub table: String,
    /// The sink's name.
    pub sink: String,
    /// The route's topic, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// What the sink's readback compares.
    pub compares: String,
    /// Why the table could not be compared with this sink at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Chunks of source rows compared.
    pub chunks: u64,
    /// Source rows compared.
    pub rows: u64,
    /// Keys listed from the sink (a key may be listed twice by a sink
    /// that cannot page exactly, such as Redis's `SCAN`).
    pub sink_keys: u64,
    /// Keys the sink lacks.
    pub missing: u64,
    /// Keys the sink has and the source does not, including those that
    /// cannot be mapped to a key ([`Self::unmapped`]).
    pub extra: u64,
    /// Keys whose values differ.
    pub differing: u64,
    /// Keys the source changed every time they were read again: in
    /// flight, so neither drift nor proven equal.
    pub unsettled: u64,
    /// Names of held entries that cannot be a key of the table (a Redis
    /// key whose key part is not a number for an integer key...): extra,
    /// and out of the pipeline's reach to repair.
    pub unmapped: Vec<String>,
    /// The drifted keys, as many as kept (see [`SHOWN`] for the report).
    #[serde(rename = "drift", serialize_with = "shown")]
    pub drifts: Vec<Drift>,
    /// After a repair: keys that still differ (`None`: no repair).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub still_drifting: Option<u64>,
    /// Seconds the table took with this sink (all sinks are read in one
    /// pass: the time is the table's).
    pub seconds: f64,
}

fn shown<S: serde::Serializer>(d: &[Drift], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.iter().take(SHOWN))
}

impl TargetReport {
    /// An empty report of `table` against `target`.
    pub fn new(table: &str, target: &Target, compares: String) -> Self {
        TargetReport {
            table: table.to_owned(),
            sink: target.sink.clone(),
            topic: target.topic.clone(),
            compares,
            refused: None,
            chunks: 0,
            rows: 0,
            sink_keys: 0,
            missing: 0,
            extra: 0,
            differing: 0,
            unsettled: 0,
            unmapped: Vec::new(),
            drifts: Vec::new(),
            still_drifting: None,
            seconds: 0.0,
        }
    }

    /// Counts `drift`, keeping it when fewer than `keep` are kept.
    pub fn drift(&mut self, drift: Drift, keep: usize) {
        match drift.kind {
            DriftKind::Missing => self.missing += 1,
            DriftKind::Extra => self.extra += 1,
            DriftKind::Differs => self.differing += 1,
        }
        if self.drifts.len() < keep {
            self.drifts.push(drift);
        }
    }

    /// Counts a held entry that is no key of the table.
    pub fn unmapped(&mut self, name: String, keep: usize) {
        self.extra += 1;
        if self.unmapped.len() < keep.min(SHOWN) {
            self.unmapped.push(name);
        }
    }

    /// Keys that differ, all kinds.
    pub fn drifted(&self) -> u64 {
        self.missing + self.extra + self.differing
    }

    /// Nothing differs (after a repair: nothing still differs). A table
    /// that could not be compared has no drift; [`Report::clean`] wants
    /// at least one that could.
    pub fn clean(&self) -> bool {
        self.still_drifting.unwrap_or(self.drifted()) == 0
    }
}

/// A whole verification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Every table and sink compared.
    pub targets: Vec<TargetReport>,
    /// What was left out.
    pub skipped: Vec<Skipped>,
    /// Seconds the whole pass took.
    pub seconds: f64,
    /// Whether anything was repaired.
    pub repaired: bool,
}

impl Report {
    /// Nothing differs anywhere. A pass that compared nothing is not
    /// clean: it proved nothing.
    pub fn clean(&self) -> bool {
        self.targets.iter().any(|t| t.refused.is_none())
            && self.targets.iter().all(TargetReport::clean)
    }

    /// For people: one block per table and sink, then what was skipped.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let topic = t
                .topic
                .as_ref()
                .map(|t| format!(" (topic {t})"))
                .unwrap_or_default();
            let _ = write!(out, "{} → {}{topic}: ", t.table, t.sink);
            if let Some(why) = &t.refused {
                let _ = writeln!(out, "not compared: {why}");
                continue;
            }
            let verdict = if t.drifted() == 0 {
                "in sync".to_owned()
            } else {
                format!(
                    "DRIFT: {} missing, {} extra, {} differing",
                    t.missing, t.extra, t.differing
                )
            };
            let _ = writeln!(
                out,
                "{verdict} ({} rows in {} chunks, {} keys in the sink, {:.1} s)",
                t.rows, t.chunks, t.sink_keys, t.seconds
            );
            for d in t.drifts.iter().take(SHOWN) {
                let _ = write!(
                    out,
                    "  {:<8} key {}",
                    format!("{:?}", d.kind).to_lowercase(),
                    d.key.join(", ")
                );
                for c in d.columns.iter().take(4) {
                    let _ = write!(out, "; {}: source {} ≠ sink {}", c.column, c.source, c.sink);
                }
                if d.columns.len() > 4 {
                    let _ = write!(out, "; and {} more columns", d.columns.len() - 4);
                }
                out.push('\n');
            }
            for name in &t.unmapped {
                let _ = writeln!(
                    out,
                    "  extra    {name} (not a key of the table: not repairable)"
                );
            }
            if t.unsettled > 0 {
                let _ = writeln!(
                    out,
                    "  {} keys changed every time they were read again (in flight, not compared)",
                    t.unsettled
                );
            }
            if t.drifted() > SHOWN as u64 {
                let _ = writeln!(out, "  … and {} more", t.drifted() - SHOWN as u64);
            }
            if let Some(left) = t.still_drifting {
                let _ = writeln!(
                    out,
                    "  repaired through the pipeline: {} of {} keys now in sync",
                    t.drifted().saturating_sub(left),
                    t.drifted()
                );
            }
        }
        for s in &self.skipped {
            let what = match (&s.table, &s.sink) {
                (Some(t), Some(k)) => format!("{t} → {k}"),
                (Some(t), None) => t.clone(),
                (None, Some(k)) => format!("sink {k}"),
                (None, None) => "?".to_owned(),
            };
            let _ = writeln!(out, "skipped {what}: {}", s.reason);
        }
        let _ = writeln!(
            out,
            "{} in {:.1} s",
            if self.clean() {
                "every sink holds what the source holds"
            } else if self.targets.iter().all(|t| t.refused.is_some()) {
                "nothing was compared"
            } else {
                "the sinks differ from the source"
            },
            self.seconds
        );
        out
    }
}
