//! Configuration of the `sphinx` sink, as written under `[sinks.NAME]`.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use weir_codec::{NameTemplate, TemplateUse};
use weir_core::{Capabilities, Readback, Sink, SinkError};

use crate::registry::{OpenReadback, SinkSpec};

/// Settings of a `sphinx` sink (Sphinx 2.2 or Manticore Search real-time
/// indexes, written over SphinxQL).
///
/// ```toml
/// [sinks.search]
/// type = "sphinx"
/// address = "127.0.0.1:9306"
/// index = "{schema}_{table}"
/// fields = ["title", "body"]
/// attributes = { title = "string", body = "string", price = "float", created = "timestamp" }
/// nulls_attribute = "weir_nulls"
/// ```
///
/// Every index the sink writes needs a companion real-time index, its
/// *state index*, named after it with `state_suffix`, declared in
/// `sphinx.conf` as:
///
/// ```text
/// index public_products_weir {
///     type = rt
///     path = /var/lib/sphinxsearch/data/public_products_weir
///     rt_field = weir_unused
///     rt_attr_string = weir_key
///     rt_attr_bigint = weir_lsn
///     rt_attr_uint = weir_seq
///     rt_attr_uint = weir_deleted
///     rt_attr_string = weir_doc
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphinxSinkConfig {
    /// `host:port` of searchd's SphinxQL listener (`listen = …:mysql41`).
    pub address: String,
    /// The index a row change goes to when the router gave it none;
    /// `{schema}`, `{table}` (and the other name placeholders) are filled
    /// from the change. Each index holds one source table: a template
    /// giving two tables one index stops the sink. Default:
    /// `"{schema}_{table}"`.
    #[serde(default = "default_index")]
    pub index: String,
    /// Appended to an index's name to name its state index, which holds
    /// every document's version, its tombstone once deleted, and the
    /// values needed to rebuild it. Default: `"_weir"`.
    #[serde(default = "default_state_suffix")]
    pub state_suffix: String,
    /// Columns written as full-text fields (`rt_field`).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Columns written as attributes, with the attribute type declared in
    /// the index: `"string"`, `"bigint"`, `"uint"`, `"float"`, `"bool"`,
    /// `"timestamp"` or `"json"`. A column may be both a field and an
    /// attribute (declared `rt_field` and `rt_attr_string` of one name).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeType>,
    /// A string attribute of the index that receives the names of the
    /// columns that were NULL, separated by spaces: attributes have no
    /// NULL (a NULL is written as `''` or `0`). Unset: not written.
    pub nulls_attribute: Option<String>,
    /// Most bytes in one SphinxQL statement; keep it under searchd's
    /// `max_packet_size` (8 MiB by default). Batches are written in
    /// multi-row statements up to this size; a single row that does not
    /// fit is refused (dead-lettered). Default: 4194304.
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: usize,
    /// Most records in one batch (the state of a batch's documents is read
    /// with one query per index). Default: 1000.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// How long connecting, and each statement, may take before the batch
    /// fails (and is retried). Default: `"10s"`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_core::duration::deserialize"
    )]
    pub timeout: Duration,
}

/// The type of an attribute, as declared in the index (`rt_attr_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeType {
    /// `rt_attr_string`: any value, as text.
    String,
    /// `rt_attr_bigint`: signed 64-bit integers (and booleans as 0/1).
    Bigint,
    /// `rt_attr_uint`: integers from 0 to 4294967295.
    Uint,
    /// `rt_attr_float`: 32-bit floating point (integers, floats, numerics).
    Float,
    /// `rt_attr_bool`: booleans (and the integers 0 and 1).
    Bool,
    /// `rt_attr_timestamp`: Unix seconds from 1970 to 2106; dates are
    /// midnight UTC, timestamps lose their fraction of a second.
    Timestamp,
    /// `rt_attr_json`: JSON objects and arrays (Sphinx stores any other
    /// JSON value, or text that is not JSON, as NULL).
    Json,
}

impl AttributeType {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeType::String => "string",
            AttributeType::Bigint => "bigint",
            AttributeType::Uint => "uint",
            AttributeType::Float => "float",
            AttributeType::Bool => "bool",
            AttributeType::Timestamp => "timestamp",
            AttributeType::Json => "json",
        }
    }
}

fn default_index() -> String {
    "{schema}_{table}".to_owned()
}

fn default_state_suffix() -> String {
    "_weir".to_owned()
}

fn default_max_statement_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_max_batch_records() -> usize {
    1000
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The columns of a state index (besides `id`), which the sink reads and writes.
pub(crate) const STATE_COLUMNS: &[&str] = &[
    "weir_key",
    "weir_lsn",
    "weir_seq",
    "weir_deleted",
    "weir_doc",
];

/// The smallest statement size that leaves room for a row.
const MIN_STATEMENT_BYTES: usize = 4096;

/// Whether `name` can be written unquoted in SphinxQL (an index or column name).
pub(crate) fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SphinxSinkConfig {
    /// A configuration for `address` with every other field at its default.
    pub fn new(address: impl Into<String>) -> Self {
        SphinxSinkConfig {
            address: address.into(),
            index: default_index(),
            state_suffix: default_state_suffix(),
            fields: Vec::new(),
            attributes: BTreeMap::new(),
            nulls_attribute: None,
            max_statement_bytes: default_max_statement_bytes(),
            max_batch_records: default_max_batch_records(),
            timeout: default_timeout(),
        }
    }

    /// Checks an index-name template (the sink's own, a route's topic).
    pub fn check_index_template(template: &str, used_for: TemplateUse) -> Result<(), String> {
        let parsed = NameTemplate::parse(template)?;
        if used_for != TemplateUse::Change {
            return Err("only row changes can be written to a Sphinx index".to_owned());
        }
        let shortest = parsed.shortest(used_for);
        if shortest.is_empty() {
            return Err("can make an empty index name".to_owned());
        }
        if !parsed
            .fixed_text()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(
                "index names may hold only letters, digits and '_' (check the fixed text)"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Problems that make this configuration unusable, each as
    /// `field: message`; empty when it is valid. Does no I/O.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let address_ok = self
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !address_ok {
            problems.push(format!(
                "address: {:?} is not host:port (searchd's mysql41 listener)",
                self.address
            ));
        }
        if let Err(e) = Self::check_index_template(&self.index, TemplateUse::Change) {
            problems.push(format!("index: {:?} {e}", self.index));
        }
        if !self
            .state_suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.state_suffix.is_empty()
        {
            problems.push(format!(
                "state_suffix: {:?} must be letters, digits and '_', and not empty",
                self.state_suffix
            ));
        }
        if self.fields.is_empty() && self.attributes.is_empty() {
            problems.push(
                "fields: list the columns to index as full-text fields, or give attributes"
                    .to_owned(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, field) in self.fields.iter().enumerate() {
            if !is_plain_name(field) {
                problems.push(format!("fields[{i}]: {field:?} is not a plain column name"));
            }
            if !seen.insert(field) {
                problems.push(format!("fields[{i}]: {field:?} is listed twice"));
            }
        }
        for name in self.attributes.keys() {
            if !is_plain_name(name) {
                problems.push(format!(
                    "attributes.{name}: not a plain column name (letters, digits, '_')"
                ));
            }
        }
        for name in self.fields.iter().chain(self.attributes.keys()) {
            if name == "id" {
                problems.push(
                    "fields: `id` is the document id, which the sink makes from the key; \
                     index the column under another name with a plugin"
                        .to_owned(),
                );
            }
        }
        if let Some(nulls) = &self.nulls_attribute {
            if !is_plain_name(nulls) {
                problems.push(format!("nulls_attribute: {nulls:?} is not a plain name"));
            } else if self.fields.contains(nulls) || self.attributes.contains_key(nulls) {
                problems.push(format!(
                    "nulls_attribute: {nulls:?} is also a column the sink writes"
                ));
            }
        }
        if self.max_statement_bytes < MIN_STATEMENT_BYTES {
            problems.push(format!(
                "max_statement_bytes: must be at least {MIN_STATEMENT_BYTES}, not {}",
                self.max_statement_bytes
            ));
        }
        if self.max_statement_bytes > 1 << 30 {
            problems.push("max_statement_bytes: must be at most 1 GiB".to_owned());
        }
        if self.max_batch_records == 0 || self.max_batch_records > 100_000 {
            problems.push(format!(
                "max_batch_records: must be between 1 and 100000, not {}",
                self.max_batch_records
            ));
        }
        if self.timeout.is_zero() {
            problems.push("timeout: must be more than 0".to_owned());
        }
        problems
    }

    /// The columns the sink writes, each once, in a fixed order: the fields,
    /// then the attributes that are not fields.
    pub(crate) fn columns(&self) -> Vec<(String, Option<AttributeType>)> {
        let mut out: Vec<(String, Option<AttributeType>)> = self
            .fields
            .iter()
            .map(|f| (f.clone(), self.attributes.get(f).copied()))
            .collect();
        for (name, ty) in &self.attributes {
            if !self.fields.contains(name) {
                out.push((name.clone(), Some(*ty)));
            }
        }
        out
    }
}

impl SinkSpec for SphinxSinkConfig {
    fn validate(&self) -> Vec<String> {
        SphinxSinkConfig::validate(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_records: self.max_batch_records,
            // Several statements per batch; each is bounded on its own.
            max_batch_bytes: usize::MAX,
            needs_key: true,
            applies_state: true,
            accepts_raw: false,
        }
    }

    fn check_topic(&self, template: &str, used_for: TemplateUse) -> Result<(), String> {
        SphinxSinkConfig::check_index_template(template, used_for)
    }

    fn build<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            super::SphinxSink::connect(name, self.clone())
                .await
                .map(|s| Box::new(s) as Box<dyn Sink>)
        })
    }

    fn readback<'a>(&'a self, name: &'a str) -> Result<OpenReadback<'a>, String> {
        Ok(Box::pin(async move {
            super::readback::SphinxReadback::connect(name, self.clone())
                .await
                .map(|r| Box::new(r) as Box<dyn Readback>)
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
