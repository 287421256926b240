//! The one place that knows every sink type: `type = "…"` in a
//! `[sinks.NAME]` section picks an entry of [`SINK_TYPES`], which reads the
//! section into a [`SinkSpec`]; the spec validates itself (no I/O, every
//! problem at once) and later builds the sink.
//!
//! Adding a sink touches its own folder and one line here. Each sink is a
//! cargo feature of this crate (all on by default), so a build without one
//! leaves out its client library too.

use std::any::Any;
use std::fmt;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use weir_codec::{NameTemplate, TemplateUse};
use weir_core::{Capabilities, Readback, Sink, SinkError};

/// A readback being opened ([`SinkSpec::readback`]).
pub type OpenReadback<'a> = BoxFuture<'a, Result<Box<dyn Readback>, SinkError>>;

/// Reads a sink's section into its spec; errors are `field: message`.
pub type ParseSection = fn(toml::Table) -> Result<Box<dyn SinkSpec>, Vec<String>>;

/// A sink type: its name in `type = "…"` and how to read its section.
pub struct SinkType {
    /// The `type` value that selects it.
    pub name: &'static str,
    /// Reads a section (without its `type` key); [`SinkSpec::validate`]
    /// then says what else is wrong with it.
    pub parse: ParseSection,
}

/// Every sink type this build has, in the order the documentation lists them.
pub const SINK_TYPES: &[SinkType] = &[
    #[cfg(feature = "file")]
    crate::file::TYPE,
    #[cfg(feature = "kafka")]
    crate::kafka::TYPE,
    #[cfg(feature = "http")]
    crate::http::TYPE,
    #[cfg(feature = "postgres")]
    crate::postgres::TYPE,
    #[cfg(feature = "redis")]
    crate::redis::TYPE,
    #[cfg(feature = "sphinx")]
    crate::sphinx::TYPE,
    #[cfg(feature = "nats")]
    crate::nats::TYPE,
    #[cfg(feature = "clickhouse")]
    crate::clickhouse::TYPE,
];

/// A sink's validated configuration, ready to build the sink.
pub trait SinkSpec: fmt::Debug + Send + Sync + Any {
    /// Every problem that makes the configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    fn validate(&self) -> Vec<String>;

    /// What the sink can take; the pipeline respects it.
    fn capabilities(&self) -> Capabilities;

    /// Checks a name template given outside the sink's own section (a
    /// route's `topic`, the dead-letter `topic`) for records of kind
    /// `used_for`: what it names in this sink (a topic, a key, a table…)
    /// must be possible to make from it.
    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        let _ = used_for;
        NameTemplate::parse(template).map(|_| ())
    }

    /// Whether this sink can be the `[dead_letter]` sink, or why not. Dead
    /// letters are raw records, from several sinks and from plugins, so
    /// several can share one source position and arrive out of order: a sink
    /// must take raw records and must not drop a record as a duplicate of
    /// another at the same position.
    fn takes_dead_letters(&self) -> Result<(), String> {
        if self.capabilities().accepts_raw {
            Ok(())
        } else {
            Err(
                "it cannot take raw records, which dead letters are; use a log sink \
                 (file, Kafka, HTTP)"
                    .to_owned(),
            )
        }
    }

    /// Connects to the destination and makes the sink. `name` is the
    /// section's name, for logs.
    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>>;

    /// Connects to the destination to read back what it holds, for
    /// `weir verify`; `Err` says why this sink (or this mode of it) has no
    /// rows to compare.
    fn readback<'a>(&'a self, name: &'a str) -> Result<OpenReadback<'a>, String> {
        let _ = name;
        Err(
            "it appends every change to a log rather than keeping rows, so there is \
             no state to compare with the source's"
                .to_owned(),
        )
    }

    /// The concrete configuration, for code that knows the sink type.
    fn as_any(&self) -> &dyn Any;
}

/// Fails when `problems` (what a [`SinkSpec::validate`] found) is not
/// empty, listing each under its path `sinks.NAME.`: for a sink made from a
/// configuration nobody checked yet (a test, an embedding program).
pub fn check_valid(name: &str, problems: Vec<String>) -> Result<(), SinkError> {
    if problems.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = problems
        .iter()
        .map(|p| format!("sinks.{name}.{p}"))
        .collect();
    Err(SinkError::Config(format!(
        "invalid configuration: {}",
        listed.join("; ")
    )))
}

/// [`SinkType::parse`] for a configuration type that deserializes from the
/// section; an error names the field's path.
pub fn parse_as<C>(section: toml::Table) -> Result<Box<dyn SinkSpec>, Vec<String>>
where
    C: DeserializeOwned + SinkSpec,
{
    let config: C = serde_path_to_error::deserialize(toml::Value::Table(section)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().trim().to_owned();
        vec![if path.is_empty() || path == "." {
            message
        } else {
            format!("{path}: {message}")
        }]
    })?;
    Ok(Box::new(config))
}

/// Reads one `[sinks.NAME]` section: its `type` picks the sink type, which
/// reads the rest. Problems are `field: message`, relative to the section;
/// call [`SinkSpec::validate`] on the result for the others.
pub fn parse_sink(mut section: toml::Table) -> Result<Box<dyn SinkSpec>, Vec<String>> {
    let known = || {
        SINK_TYPES
            .iter()
            .map(|t| format!("{:?}", t.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = match section.remove("type") {
        Some(toml::Value::String(name)) => name,
        Some(other) => {
            return Err(vec![format!(
                "type: expected a string, found {} (known types: {})",
                other.type_str(),
                known()
            )]);
        }
        None => return Err(vec![format!("type: missing (known types: {})", known())]),
    };
    match SINK_TYPES.iter().find(|t| t.name == name) {
        Some(t) => (t.parse)(section),
        None => Err(vec![format!(
            "type: unknown sink type {name:?} (known types: {})",
            known()
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn type_picks_the_sink_and_errors_name_the_field() {
        let spec = parse_sink(section("type = \"file\"\npath = \"out.jsonl\"")).unwrap();
        assert!(spec.as_any().is::<crate::FileSinkConfig>());
        assert!(!spec.capabilities().applies_state);

        let errs = parse_sink(section("type = \"fiel\"")).unwrap_err();
        assert!(
            errs[0].starts_with("type: unknown sink type \"fiel\""),
            "{errs:?}"
        );
        assert!(errs[0].contains("\"kafka\""), "{errs:?}");

        let errs = parse_sink(section("path = \"x\"")).unwrap_err();
        assert!(errs[0].starts_with("type: missing"), "{errs:?}");

        let errs = parse_sink(section("type = \"file\"\npath = \"x\"\npaht = 1")).unwrap_err();
        assert!(errs[0].contains("unknown field `paht`"), "{errs:?}");

        let spec = parse_sink(section("type = \"file\"\npath = \"\"")).unwrap();
        assert_eq!(
            spec.validate(),
            ["path: must not be empty (use \"-\" for standard output)"]
        );
    }

    #[test]
    fn every_type_is_listed_once() {
        let mut names: Vec<&str> = SINK_TYPES.iter().map(|t| t.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a sink type is registered twice");
    }
}
