//! `weir plugin inspect`: what a component is and whether this Weir runs it.
//!
//! Text output (`--json` prints the same as one JSON object, see
//! [`Report`]):
//!
//! ```text
//! file:      plugins/network.wasm
//! size:      71234 bytes
//! version:   0c1d2e3f4a5b
//! world:     transform
//! contract:  weir:cdc@1.0.0 (accepted: this Weir implements weir:cdc@1.0.0)
//! grants:    sandbox.network = true, for wasi:sockets/tcp@0.2.6, ...
//! loads:     yes, as a transform, with the grants above
//! imports:
//!   weir:cdc/host@1.0.0  (instance)
//!   ...
//! exports:
//!   process  (func)
//!   ...
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use weir_wasm::{CONTRACT_VERSION, Inspection, PluginError};

/// Runs `weir plugin inspect`.
pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let engine = super::engine()?;
    let inspection = weir_wasm::inspect(&engine, path, &bytes).map_err(|e| match e {
        PluginError::Load { path, message, .. } => {
            anyhow::anyhow!("cannot inspect {}: {message}", path.display())
        }
        other => other.into(),
    })?;
    let report = Report::new(path, &inspection);
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.text()
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// The file, as given.
    pub file: String,
    /// Its size in bytes.
    pub size: usize,
    /// The first 12 hex digits of its SHA-256, as Weir's logs name it.
    pub version: &'a str,
    /// `transform`, `router` or `neither`.
    pub world: &'static str,
    /// The contract it was built for, and whether this Weir accepts it.
    pub contract: Contract<'a>,
    /// The sandbox grants its imports need.
    pub grants: Vec<Grant<'a>>,
    /// Whether this Weir loads it (given the grants above).
    pub loads: bool,
    /// Why it does not load, when it does not.
    pub load_error: Option<&'a str>,
    /// Its imports.
    pub imports: Vec<Item<'a>>,
    /// Its exports.
    pub exports: Vec<Item<'a>>,
}

/// The `contract` of a [`Report`].
#[derive(Debug, Serialize)]
pub struct Contract<'a> {
    /// The `weir:cdc` version it imports; `null` when it imports none.
    pub version: Option<&'a str>,
    /// The version this Weir implements.
    pub host: &'static str,
    /// Whether this Weir accepts the component's version.
    pub accepted: bool,
    /// Why not, when it does not.
    pub error: Option<&'a str>,
}

/// One of the `grants` of a [`Report`].
#[derive(Debug, Serialize)]
pub struct Grant<'a> {
    /// The import that needs it.
    pub import: &'a str,
    /// `sandbox.network` or `sandbox.dirs`; `null` when no grant allows it.
    pub grant: Option<&'static str>,
    /// The host's explanation.
    pub reason: &'a str,
}

/// One of the `imports` or `exports` of a [`Report`].
#[derive(Debug, Serialize)]
pub struct Item<'a> {
    /// The name, such as `weir:cdc/host@1.0.0`.
    pub name: &'a str,
    /// `instance`, `func`, `type`, ...
    pub kind: &'static str,
}

impl<'a> Report<'a> {
    /// The report of `inspection`, a component read from `path`.
    pub fn new(path: &Path, inspection: &'a Inspection) -> Self {
        let items = |items: &'a [weir_wasm::Item]| {
            items
                .iter()
                .map(|i| Item {
                    name: &i.name,
                    kind: i.kind,
                })
                .collect()
        };
        Report {
            file: path.display().to_string(),
            size: inspection.size,
            version: &inspection.version,
            world: inspection.world.as_str(),
            contract: Contract {
                version: inspection.contract.as_deref(),
                host: CONTRACT_VERSION,
                accepted: inspection.contract_error.is_none(),
                error: inspection.contract_error.as_deref(),
            },
            grants: inspection
                .grants
                .iter()
                .map(|g| Grant {
                    import: &g.import,
                    grant: g.grant,
                    reason: &g.reason,
                })
                .collect(),
            loads: inspection.load_error.is_none(),
            load_error: inspection.load_error.as_deref(),
            imports: items(&inspection.imports),
            exports: items(&inspection.exports),
        }
    }

    /// The text output.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "file:      {}", self.file)?;
        writeln!(out, "size:      {} bytes", self.size)?;
        writeln!(out, "version:   {}", self.version)?;
        writeln!(out, "world:     {}", self.world)?;
        let contract = &self.contract;
        match (contract.version, contract.error) {
            (Some(v), None) => writeln!(
                out,
                "contract:  weir:cdc@{v} (accepted: this Weir implements weir:cdc@{})",
                contract.host
            )?,
            (Some(v), Some(e)) => writeln!(out, "contract:  weir:cdc@{v} (refused: {e})")?,
            (None, None) => writeln!(
                out,
                "contract:  none (it imports no weir:cdc interface; this Weir implements weir:cdc@{})",
                contract.host
            )?,
            (None, Some(e)) => writeln!(out, "contract:  refused: {e}")?,
        }
        if self.grants.is_empty() {
            writeln!(out, "grants:    none needed")?;
        }
        // One line per grant, naming every import that needs it.
        let mut label = "grants:   ";
        for grant in [Some("sandbox.network"), Some("sandbox.dirs"), None] {
            let imports: Vec<&str> = self
                .grants
                .iter()
                .filter(|g| g.grant == grant)
                .map(|g| g.import)
                .collect();
            if imports.is_empty() {
                continue;
            }
            let what = match grant {
                Some("sandbox.network") => "sandbox.network = true, for".to_owned(),
                Some(other) => format!("{other}, for"),
                None => "none can allow".to_owned(),
            };
            writeln!(out, "{label} {what} {}", imports.join(", "))?;
            label = "          ";
        }
        match self.load_error {
            None if self.grants.is_empty() => writeln!(out, "loads:     yes, as a {}", self.world)?,
            None => writeln!(
                out,
                "loads:     yes, as a {}, with the grants above",
                self.world
            )?,
            Some(e) => writeln!(out, "loads:     no: {e}")?,
        }
        for (title, items) in [("imports", &self.imports), ("exports", &self.exports)] {
            if items.is_empty() {
                writeln!(out, "{title}:   none")?;
                continue;
            }
            writeln!(out, "{title}:")?;
            let width = items.iter().map(|i| i.name.len()).max().unwrap_or(0);
            for item in items {
                writeln!(out, "  {:width$}  ({})", item.name, item.kind)?;
            }
        }
        Ok(())
    }
}
