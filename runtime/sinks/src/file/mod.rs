//! The `file` sink: one JSON line per record, appended to a file (or
//! written to standard output) and fsynced before a batch is acknowledged.
//!
//! ```toml
//! [sinks.audit]
//! type = "file"
//! path = "/var/lib/weir/audit.jsonl"
//! ```

mod config;
mod sink;

#[cfg(test)]
mod tests;

pub use config::FileSinkConfig;
pub use sink::FileSink;

use crate::registry::{SinkType, parse_as};

/// The `file` entry of the sink registry.
pub(crate) const TYPE: SinkType = SinkType {
    name: "file",
    parse: parse_as::<FileSinkConfig>,
};
