//! Weir's service: the `weir` binary's configuration, pipeline wiring,
//! checkpointing and admin API.
//!
//! This crate is where the data path is assembled. `weir-postgres` reads
//! the WAL, `weir-wasm` runs plugins, `weir-sinks` writes to destinations;
//! [`pipeline`] connects them with bounded channels, and [`checkpoint`]
//! decides which source position may be acknowledged so that no committed
//! change is ever lost: the flush LSN only covers transactions that every
//! sink they were routed to has made durable. The processor thread
//! (`processor.rs`) runs the plugin stages (`stages.rs`: isolating a failing
//! change, failure policies, circuit breakers) and swaps in new plugin
//! versions from the [`reload::Deployer`] at transaction boundaries;
//! `delivery.rs` writes to the sinks; [`cli`] holds the `weir plugin` tools
//! for plugin authors; [`verify`] compares the sinks that hold state with
//! the source, once (`weir verify`) or continuously (`[verify]`).
//!
//! # Module order
//!
//! Modules use only modules on a line below their own, never one beside or
//! above it, so the graph runs one way and each layer can be read (and
//! tested) without the ones above. A test below holds the code to this.
//!
//! ```text
//!  admin  cli                       endpoints: HTTP, the `weir plugin` tools
//!  console                          the operator console's page and sampling
//!  pipeline                         wires source, processor, sinks
//!  processor  delivery              the data path: plugins, then sinks
//!  shadow                           a new version tried beside the running one
//!  stages  reload                   one plugin's calls; new plugin versions
//!  halt  status  plugins            errors; counters; loading
//!  verify                           sinks compared with the source (and its results)
//!  routing                          route rules
//!  config  checkpoint  dead_letter  leaves: no module of this crate
//!    answers  history               (plugin answers as JSON; shadow reports;
//!                                   the last hour of counters)
//! ```
//!
//! The checkpointer publishes its watermark on a `watch` channel that the
//! source and [`status`] read; the admin endpoint gets the deployer from
//! its own [`admin::AdminState`], not through the status.

pub mod admin;
pub mod answers;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod console;
mod dead_letter;
mod delivery;
pub mod halt;
pub mod history;
pub mod pipeline;
pub mod plugins;
mod processor;
pub mod reload;
pub mod routing;
mod shadow;
mod stages;
pub mod status;
pub mod verify;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The module order of the crate documentation, lowest line first,
    /// with each module's source files.
    const LAYERS: &[&[(&str, &[&str])]] = &[
        &[
            ("config", &[include_str!("config.rs")]),
            ("checkpoint", &[include_str!("checkpoint.rs")]),
            ("dead_letter", &[include_str!("dead_letter.rs")]),
            ("answers", &[include_str!("answers.rs")]),
            ("history", &[include_str!("history.rs")]),
        ],
        &[("routing", &[include_str!("routing.rs")])],
        &[(
            "verify",
            &[
                include_str!("verify/mod.rs"),
                include_str!("verify/continuous.rs"),
                include_str!("verify/report.rs"),
            ],
        )],
        &[
            ("halt", &[include_str!("halt.rs")]),
            ("status", &[include_str!("status.rs")]),
            ("plugins", &[include_str!("plugins.rs")]),
        ],
        &[
            ("stages", &[include_str!("stages.rs")]),
            ("reload", &[include_str!("reload.rs")]),
        ],
        &[("shadow", &[include_str!("shadow.rs")])],
        &[
            ("processor", &[include_str!("processor.rs")]),
            ("delivery", &[include_str!("delivery.rs")]),
        ],
        &[("pipeline", &[include_str!("pipeline.rs")])],
        &[("console", &[include_str!("console.rs")])],
        &[
            ("admin", &[include_str!("admin.rs")]),
            (
                "cli",
                &[
                    include_str!("cli/mod.rs"),
                    include_str!("cli/deploy.rs"),
                    include_str!("cli/inspect.rs"),
                    include_str!("cli/new.rs"),
                    include_str!("cli/record.rs"),
                    include_str!("cli/replay.rs"),
                    include_str!("cli/snapshot.rs"),
                    include_str!("cli/templates.rs"),
                    include_str!("cli/verify.rs"),
                ],
            ),
        ],
    ];

    /// The modules of this crate that `source` names through `crate::`,
    /// in a path or a `use` (also `use crate::{a::X, b}`).
    fn imports(source: &str) -> Vec<&str> {
        fn ident(s: &str) -> &str {
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            &s[..end]
        }
        let mut found = Vec::new();
        for (at, _) in source.match_indices("crate::") {
            // `weir_crate::` or `$crate::` are other paths.
            if source[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &source[at + "crate::".len()..];
            let Some(group) = rest.strip_prefix('{') else {
                found.push(ident(rest));
                continue;
            };
            let (mut depth, mut first) = (0, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => first = true,
                    c if first && (c.is_alphanumeric() || c == '_') => {
                        found.push(ident(&group[i..]));
                        first = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => first = false,
                }
            }
        }
        found
    }

    /// The modules `source` declares (`mod x;`, `pub mod x;`).
    fn declared(source: &str) -> BTreeSet<&str> {
        source
            .lines()
            .filter_map(|l| l.trim().strip_suffix(';'))
            .filter_map(|l| l.strip_prefix("pub mod ").or(l.strip_prefix("mod ")))
            .collect()
    }

    #[test]
    fn the_import_scan_finds_every_form() {
        let source = "use crate::a::B;\nuse crate::{b::{C, D}, c};\n\
                      let x = crate::d::f();\nweir_crate::e::g(); $crate::h";
        assert_eq!(imports(source), ["a", "b", "c", "d"]);
    }

    #[test]
    fn every_module_has_a_place_in_the_order() {
        let placed: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().map(|m| m.0)).collect();
        assert_eq!(declared(include_str!("lib.rs")), placed);
        // The cli files listed are all of them.
        let cli = LAYERS.iter().flat_map(|l| l.iter()).find(|m| m.0 == "cli");
        assert_eq!(
            cli.map(|m| m.1.len()),
            Some(declared(include_str!("cli/mod.rs")).len() + 1)
        );
    }

    #[test]
    fn modules_only_use_modules_below_them() {
        let layer_of = |name: &str| LAYERS.iter().position(|l| l.iter().any(|m| m.0 == name));
        let mut wrong = Vec::new();
        for (layer, modules) in LAYERS.iter().enumerate() {
            for (module, files) in modules.iter() {
                for used in files.iter().flat_map(|f| imports(f)) {
                    if used == *module {
                        continue;
                    }
                    match layer_of(used) {
                        Some(below) if below < layer => {}
                        Some(_) => wrong.push(format!(
                            "{module} uses crate::{used}, which is not below it"
                        )),
                        None => wrong.push(format!(
                            "{module} uses crate::{used}, which has no place in the order"
                        )),
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "the module order in lib.rs is broken:\n{}",
            wrong.join("\n")
        );
    }
}
