//! Configuration of the `file` sink, as written under `[sinks.NAME]`.

use std::any::Any;

use futures::future::BoxFuture;
use weir_codec::DebeziumConfig;
use weir_core::{Capabilities, Sink, SinkError};

use crate::Encoding;
use crate::registry::SinkSpec;

/// Settings of a `file` sink.
///
/// The file holds one line per record: the native JSON envelope of a
/// change event (its Debezium value with `encoding = "debezium"`), or the
/// bytes of a raw record (followed by a newline unless they end with one;
/// a raw record without a value writes nothing).
/// Every batch is fsynced before it is acknowledged, so after a crash the
/// file holds every acknowledged record; records after the last
/// acknowledged transaction may appear twice, since they are written again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to. Its directory must exist; the file is created
    /// if it does not. `"-"` writes to standard output instead, which is
    /// flushed but cannot be fsynced, so it gives no durability.
    pub path: String,
    /// How change events are written: `"json"`, the native JSON envelope
    /// (the default), or `"debezium"`, the value of Debezium's PostgreSQL
    /// connector envelope (a file has no keys and no tombstones).
    #[serde(default)]
    pub encoding: Encoding,
    /// Settings of `encoding = "debezium"`, as a `[sinks.NAME.debezium]`
    /// table (`schemas`, `topic_prefix`, `decimal_handling`, `database`;
    /// `tombstones_on_delete` has no effect here).
    pub debezium: Option<DebeziumConfig>,
}

impl FileSinkConfig {
    /// A configuration writing to `path` with the default encoding.
    pub fn new(path: impl Into<String>) -> Self {
        FileSinkConfig {
            path: path.into(),
            encoding: Encoding::default(),
            debezium: None,
        }
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.path.is_empty() {
            problems.push("path: must not be empty (use \"-\" for standard output)".to_owned());
        }
        problems.extend(self.encoding.validate(self.debezium.as_ref()));
        problems
    }
}

impl SinkSpec for FileSinkConfig {
    fn validate(&self) -> Vec<String> {
        FileSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::LOG
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(
            async move { super::FileSink::open(name, self).map(|s| Box::new(s) as Box<dyn Sink>) },
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
