//! A Debezium-compatible envelope (`encoding = "debezium"`), so consumers
//! written for Debezium's PostgreSQL connector read Weir's output unchanged.
//!
//! Each change event becomes a Kafka Connect JSON key and value, as
//! Debezium's connector and the JSON converter write them:
//!
//! ```text
//! key:   {"schema": {..Key struct..}, "payload": {"id": 1}}
//! value: {"schema": {..Envelope struct..},
//!         "payload": {"before": {..}|null, "after": {..}|null,
//!                     "source": {"version", "connector": "postgresql", "name",
//!                                "ts_ms", "snapshot", "db", "sequence", "schema",
//!                                "table", "txId", "lsn", "xmin"},
//!                     "op": "c"|"u"|"d"|"r"|"t", "ts_ms"}}
//! ```
//!
//! With `schemas = false` (the converter's `schemas.enable=false`) only the
//! payloads are written. Column values follow Debezium's defaults:
//!
//! | Postgres | Connect type | Semantic name |
//! |---|---|---|
//! | `bool` | `boolean` | |
//! | `int2`, `int4`, `int8`, `oid` | `int16`, `int32`, `int64`, `int64` | |
//! | `float4`, `float8` | `float`, `double` | |
//! | `numeric(p,s)` | `bytes` | `org.apache.kafka.connect.data.Decimal` (`scale`, `connect.decimal.precision`) |
//! | `numeric` | `struct {scale, value}` | `io.debezium.data.VariableScaleDecimal` |
//! | `text`, `varchar`, `bpchar`, `name`, others | `string` | |
//! | `bytea` | `bytes` (base64) | |
//! | `date` | `int32` (days) | `io.debezium.time.Date` |
//! | `time(0..3)` / `time` | `int32` ms / `int64` µs | `io.debezium.time.Time` / `io.debezium.time.MicroTime` |
//! | `timestamp(0..3)` / `timestamp` | `int64` ms / `int64` µs | `io.debezium.time.Timestamp` / `io.debezium.time.MicroTimestamp` |
//! | `timestamptz` | `string` (ISO 8601, UTC) | `io.debezium.time.ZonedTimestamp` |
//! | `uuid` | `string` | `io.debezium.data.Uuid` |
//! | `json`, `jsonb` | `string` | `io.debezium.data.Json` |
//!
//! That is `time.precision.mode = adaptive` (the default: the precision
//! declared on the column picks milli- or microseconds; an undeclared one
//! is 6, so micro) and `decimal.handling.mode = precise` unless the
//! configuration picks `string` or `double`. `binary.handling.mode` is
//! `bytes`. Weir knows no column's nullability, so every non-key column is
//! `optional`.
//!
//! Where Weir departs from what a Debezium deployment would show:
//! `source.version` is Weir's version; `source.sequence` is
//! `["<commit LSN>","<LSN>"]` (Debezium's first element is the previous
//! commit's LSN; this one orders the same way); `source.xmin` is always
//! `null`; the envelope has no `transaction` block.
//!
//! Truncates are always written, as `op = "t"` events with no key and
//! null `before` and `after` (Debezium writes them only when its
//! `skipped.operations` does not list `t`, and by default it does); a
//! consumer that does not expect them must skip `op = "t"`. An unchanged
//! TOAST column (an UPDATE that did not touch a large value, with REPLICA
//! IDENTITY other than FULL) is Debezium's placeholder
//! `__debezium_unavailable_value` (its bytes, in base64, for a `bytes`
//! column). A logical message is Debezium's `op = "m"` event: key
//! `{"prefix": ...}`, value `{"op", "ts_ms", "source",
//! "message": {"prefix", "content" (base64)}}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use weir_core::{ChangeEvent, Column, Lsn, Op, SnapshotKind, SourceInfo, TableSchema, Value};

use crate::json::{
    check_row_len, column_error, undo_on_error, write_base64, write_float, write_str,
};
use crate::{EncodeError, PgType, calendar};

/// What Debezium writes for a column value the change does not carry (an
/// unchanged TOAST value): its `unavailable.value.placeholder` default.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// How `numeric` columns are written (Debezium's `decimal.handling.mode`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecimalHandling {
    /// Exact: `org.apache.kafka.connect.data.Decimal` (the unscaled value as
    /// big-endian two's complement bytes, the scale in the schema) for a
    /// column with a declared scale, `io.debezium.data.VariableScaleDecimal`
    /// otherwise. Debezium's default. `NaN` and the infinities cannot be
    /// written and are encoding errors.
    #[default]
    Precise,
    /// The value's text, as Postgres prints it.
    String,
    /// A `double`, which may round.
    Double,
}

/// Settings of the Debezium envelope, written as `[sinks.NAME.debezium]`
/// next to `encoding = "debezium"`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebeziumConfig {
    /// Whether to write the Kafka Connect schema next to each payload
    /// (`{"schema": ..., "payload": ...}`, the JSON converter's
    /// `schemas.enable=true`) or the payload alone. Default: `true`.
    #[serde(default = "yes")]
    pub schemas: bool,
    /// Debezium's `topic.prefix`: the logical server name in `source.name`,
    /// the first part of schema names and of the default topic
    /// (`PREFIX.SCHEMA.TABLE`). Default: `"weir"`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// `"precise"` (the default), `"string"` or `"double"`; see
    /// Debezium's `decimal.handling.mode`.
    #[serde(default)]
    pub decimal_handling: DecimalHandling,
    /// Whether a delete is followed by a tombstone (same key, null value)
    /// so that Kafka log compaction can drop the row. Default: `true`.
    #[serde(default = "yes")]
    pub tombstones_on_delete: bool,
    /// The source database's name, written as `source.db`. Default: empty.
    #[serde(default)]
    pub database: String,
}

fn yes() -> bool {
    true
}

fn default_topic_prefix() -> String {
    "weir".to_owned()
}

impl Default for DebeziumConfig {
    fn default() -> Self {
        DebeziumConfig {
            schemas: true,
            topic_prefix: default_topic_prefix(),
            decimal_handling: DecimalHandling::default(),
            tombstones_on_delete: true,
            database: String::new(),
        }
    }
}

impl DebeziumConfig {
    /// Every problem of these settings, as `field: message`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let prefix = &self.topic_prefix;
        if prefix.is_empty() {
            problems.push("topic_prefix: must not be empty".to_owned());
        } else if let Some(c) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            problems.push(format!(
                "topic_prefix: {prefix:?} contains {c:?}; use ASCII letters, digits, '.', '_' and '-', \
                 as it starts Kafka topic names"
            ));
        }
        problems
    }

    /// The topic of a row change when the sink's own template is not set:
    /// Debezium's `PREFIX.{schema}.{table}`.
    pub fn default_topic(&self) -> String {
        format!("{}.{{schema}}.{{table}}", self.topic_prefix)
    }

    /// The topic of a logical message when the sink's own template is not
    /// set: Debezium's `PREFIX.message`.
    pub fn default_message_topic(&self) -> String {
        format!("{}.message", self.topic_prefix)
    }
}

/// Writes change events as Debezium does, caching each table's schema
/// text (it is the same for every row of one table version).
pub struct DebeziumEncoder {
    config: DebeziumConfig,
    /// Avro-safe `topic_prefix`, the first part of every schema name.
    server: String,
    tables: HashMap<usize, TableSchemas>,
    /// The value schema of logical messages.
    message_schema: String,
    clock: fn() -> i64,
}

/// A table version's cached JSON: how each column is written and the
/// key and value schemas.
struct TableSchemas {
    /// Keeps the `Arc`'s address from being reused while cached.
    _table: Arc<TableSchema>,
    kinds: Vec<Kind>,
    /// `"name":` of each column.
    names: Vec<Vec<u8>>,
    key_schema: Vec<u8>,
    value_schema: Vec<u8>,
}

/// Bounds the schema cache under endless schema changes.
const MAX_CACHED_TABLES: usize = 4096;

/// The milliseconds since 1970 of now: the envelope's `ts_ms`, when
/// Weir processed the event, as Debezium's is.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How one column's values are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    Decimal { scale: i32, precision: i32 },
    VariableScaleDecimal,
    DecimalString,
    DecimalDouble,
    Date,
    TimeMillis,
    MicroTime,
    TimestampMillis,
    MicroTimestamp,
    ZonedTimestamp,
    Uuid,
    Json,
}

impl Kind {
    fn of(column: &Column, decimals: DecimalHandling) -> Kind {
        // time(p) and timestamp(p) carry p as their type modifier; -1 is
        // "not declared", which Postgres treats as 6.
        let millis = (0..=3).contains(&column.type_modifier);
        match PgType::from_name(&column.type_name) {
            PgType::Bool => Kind::Boolean,
            PgType::Int2 => Kind::Int16,
            PgType::Int4 => Kind::Int32,
            PgType::Int8 | PgType::Oid => Kind::Int64,
            PgType::Float4 => Kind::Float32,
            PgType::Float8 => Kind::Float64,
            PgType::Numeric => match decimals {
                DecimalHandling::String => Kind::DecimalString,
                DecimalHandling::Double => Kind::DecimalDouble,
                DecimalHandling::Precise if column.type_modifier >= 4 => {
                    // numeric(p,s): ((p << 16) | s) + 4, s an 11-bit signed
                    // number since Postgres 15 allows negative scales.
                    let m = column.type_modifier - 4;
                    let scale = ((m & 0x7ff) ^ 0x400) - 0x400;
                    Kind::Decimal {
                        scale,
                        precision: (m >> 16) & 0xffff,
                    }
                }
                DecimalHandling::Precise => Kind::VariableScaleDecimal,
            },
            PgType::Bytea => Kind::Bytes,
            PgType::Date => Kind::Date,
            PgType::Time if millis => Kind::TimeMillis,
            PgType::Time => Kind::MicroTime,
            PgType::Timestamp if millis => Kind::TimestampMillis,
            PgType::Timestamp => Kind::MicroTimestamp,
            PgType::TimestampTz => Kind::ZonedTimestamp,
            PgType::Uuid => Kind::Uuid,
            PgType::Json | PgType::Jsonb => Kind::Json,
            PgType::Text | PgType::Other => Kind::String,
        }
    }

    /// The Connect type and the semantic (logical type) name.
    fn schema(self) -> (&'static str, Option<&'static str>) {
        match self {
            Kind::Boolean => ("boolean", None),
            Kind::Int16 => ("int16", None),
            Kind::Int32 => ("int32", None),
            Kind::Int64 => ("int64", None),
            Kind::Float32 => ("float", None),
            Kind::Float64 | Kind::DecimalDouble => ("double", None),
            Kind::String | Kind::DecimalString => ("string", None),
            Kind::Bytes => ("bytes", None),
            Kind::Decimal { .. } => ("bytes", Some("org.apache.kafka.connect.data.Decimal")),
            Kind::VariableScaleDecimal => ("struct", Some("io.debezium.data.VariableScaleDecimal")),
            Kind::Date => ("int32", Some("io.debezium.time.Date")),
            Kind::TimeMillis => ("int32", Some("io.debezium.time.Time")),
            Kind::MicroTime => ("int64", Some("io.debezium.time.MicroTime")),
            Kind::TimestampMillis => ("int64", Some("io.debezium.time.Timestamp")),
            Kind::MicroTimestamp => ("int64", Some("io.debezium.time.MicroTimestamp")),
            Kind::ZonedTimestamp => ("string", Some("io.debezium.time.ZonedTimestamp")),
            Kind::Uuid => ("string", Some("io.debezium.data.Uuid")),
            Kind::Json => ("string", Some("io.debezium.data.Json")),
        }
    }
}

/// Replaces what an Avro name may not hold with `_`, as Debezium does for
/// the schema names it derives from server, schema and table names.
fn avro_name(out: &mut String, name: &str) {
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
}

/// Appends `"field":"NAME"` style text: a JSON key and string value.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    write_str(out, key);
    out.push(b':');
    write_str(out, value);
}

/// Appends one field's schema: `{"type":..,"optional":..,["name":..,"version":1,]..,"field":..}`.
fn field_schema(out: &mut Vec<u8>, kind: Kind, optional: bool, name: &str) {
    let (ty, semantic) = kind.schema();
    out.push(b'{');
    field(out, "type", ty);
    if kind == Kind::VariableScaleDecimal {
        out.extend_from_slice(
            b",\"fields\":[{\"type\":\"int32\",\"optional\":false,\"field\":\"scale\"},\
              {\"type\":\"bytes\",\"optional\":false,\"field\":\"value\"}]",
        );
    }
    out.extend_from_slice(if optional {
        b",\"optional\":true,"
    } else {
        b",\"optional\":false,"
    });
    if let Some(semantic) = semantic {
        field(out, "name", semantic);
        out.extend_from_slice(b",\"version\":1,");
    }
    if let Kind::Decimal { scale, precision } = kind {
        out.extend_from_slice(b"\"parameters\":{\"scale\":\"");
        out.extend_from_slice(itoa::Buffer::new().format(scale).as_bytes());
        out.extend_from_slice(b"\",\"connect.decimal.precision\":\"");
        out.extend_from_slice(itoa::Buffer::new().format(precision).as_bytes());
        out.extend_from_slice(b"\"},");
    }
    if kind == Kind::VariableScaleDecimal {
        out.extend_from_slice(b"\"doc\":\"Variable scaled decimal\",");
    }
    field(out, "field", name);
    out.push(b'}');
}

/// The schema of `source`, the same for every event.
const SOURCE_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"version"},"#,
    r#"{"type":"string","optional":false,"field":"connector"},"#,
    r#"{"type":"string","optional":false,"field":"name"},"#,
    r#"{"type":"int64","optional":false,"field":"ts_ms"},"#,
    r#"{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"#,
    r#""parameters":{"allowed":"true,last,false,incremental"},"default":"false","field":"snapshot"},"#,
    r#"{"type":"string","optional":false,"field":"db"},"#,
    r#"{"type":"string","optional":true,"field":"sequence"},"#,
    r#"{"type":"string","optional":false,"field":"schema"},"#,
    r#"{"type":"string","optional":false,"field":"table"},"#,
    r#"{"type":"int64","optional":true,"field":"txId"},"#,
    r#"{"type":"int64","optional":true,"field":"lsn"},"#,
    r#"{"type":"int64","optional":true,"field":"xmin"}"#,
    r#"],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}"#,
);

/// The key schema of a logical message.
const MESSAGE_KEY_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"prefix"}],"#,
    r#""optional":false,"name":"io.debezium.connector.postgresql.MessageKey"}"#,
);

impl TableSchemas {
    fn new(table: &Arc<TableSchema>, server: &str, decimals: DecimalHandling) -> Self {
        let kinds: Vec<Kind> = table
            .columns
            .iter()
            .map(|c| Kind::of(c, decimals))
            .collect();
        let names = table
            .columns
            .iter()
            .map(|c| {
                let mut name = Vec::with_capacity(c.name.len() + 3);
                write_str(&mut name, &c.name);
                name.push(b':');
                name
            })
            .collect();
        let mut base = server.to_owned();
        base.push('.');
        avro_name(&mut base, &table.schema);
        base.push('.');
        avro_name(&mut base, &table.name);

        let mut key_schema = br#"{"type":"struct","fields":["#.to_vec();
        let mut first = true;
        for (column, kind) in table.columns.iter().zip(&kinds) {
            if column.key {
                if !first {
                    key_schema.push(b',');
                }
                first = false;
                field_schema(&mut key_schema, *kind, false, &column.name);
            }
        }
        key_schema.extend_from_slice(br#"],"optional":false,"#);
        field(&mut key_schema, "name", &format!("{base}.Key"));
        key_schema.push(b'}');

        let mut row = br#"{"type":"struct","fields":["#.to_vec();
        for (i, (column, kind)) in table.columns.iter().zip(&kinds).enumerate() {
            if i > 0 {
                row.push(b',');
            }
            field_schema(&mut row, *kind, !column.key, &column.name);
        }
        row.extend_from_slice(br#"],"optional":true,"#);
        field(&mut row, "name", &format!("{base}.Value"));
        let mut value_schema = br#"{"type":"struct","fields":["#.to_vec();
        for which in ["before", "after"] {
            value_schema.extend_from_slice(&row);
            value_schema.push(b',');
            field(&mut value_schema, "field", which);
            value_schema.extend_from_slice(b"},");
        }
        value_schema.extend_from_slice(SOURCE_SCHEMA.as_bytes());
        value_schema.extend_from_slice(
            br#",{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"}],"optional":false,"#,
        );
        field(&mut value_schema, "name", &format!("{base}.Envelope"));
        value_schema.push(b'}');
        TableSchemas {
            _table: Arc::clone(table),
            kinds,
            names,
            key_schema,
            value_schema,
        }
    }
}

/// The value schema of a logical message.
fn message_value_schema() -> String {
    [
        r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"op"},"#,
        r#"{"type":"int64","optional":true,"field":"ts_ms"},"#,
        SOURCE_SCHEMA,
        r#",{"type":"struct","fields":[{"type":"string","optional":false,"field":"prefix"},"#,
        r#"{"type":"bytes","optional":false,"field":"content"}],"optional":false,"#,
        r#""name":"io.debezium.connector.postgresql.Message","field":"message"}],"#,
        r#""optional":false,"name":"io.debezium.connector.postgresql.MessageValue"}"#,
    ]
    .concat()
}

impl DebeziumEncoder {
    /// An encoder with these settings, nothing cached yet.
    pub fn new(config: DebeziumConfig) -> Self {
        // Dots separate Avro namespaces, so the prefix keeps its own.
        let mut server = String::new();
        for (i, part) in config.topic_prefix.split('.').enumerate() {
            if i > 0 {
                server.push('.');
            }
            avro_name(&mut server, part);
        }
        DebeziumEncoder {
            config,
            server,
            tables: HashMap::new(),
            message_schema: message_value_schema(),
            clock: now_ms,
        }
    }

    /// Replaces the clock behind the envelope's `ts_ms` (milliseconds since
    /// 1970), so that tests can compare whole events.
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// The settings this encoder writes with.
    pub fn config(&self) -> &DebeziumConfig {
        &self.config
    }

    /// The cached schemas of `table`, built on first sight.
    fn schemas<'a>(
        tables: &'a mut HashMap<usize, TableSchemas>,
        table: &Arc<TableSchema>,
        server: &str,
        decimals: DecimalHandling,
    ) -> &'a TableSchemas {
        let address = Arc::as_ptr(table) as usize;
        if tables.len() >= MAX_CACHED_TABLES && !tables.contains_key(&address) {
            tables.clear();
        }
        tables
            .entry(address)
            .or_insert_with(|| TableSchemas::new(table, server, decimals))
    }

    /// Appends the Kafka key of `event` to `key` and its value to `value`.
    /// Returns whether there is a key (a truncate, and a change of a table
    /// without key columns, have none; `key` is then left as it was).
    pub fn encode(
        &mut self,
        event: &ChangeEvent,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let key_start = key.len();
        let result = undo_on_error(value, |value| self.write(event, key, value));
        if result.is_err() {
            key.truncate(key_start);
        }
        result
    }

    fn write(
        &mut self,
        event: &ChangeEvent,
        key: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let ts_ms = (self.clock)();
        let with_schemas = self.config.schemas;
        if event.op == Op::Message {
            return self.write_message(event, ts_ms, key, out);
        }
        let Some(table) = &event.table else {
            return Err(EncodeError::new(format!(
                "a {} event without a table",
                event.op.as_str()
            )));
        };
        let config = &self.config;
        let schemas = Self::schemas(
            &mut self.tables,
            table,
            &self.server,
            config.decimal_handling,
        );
        if with_schemas {
            out.extend_from_slice(b"{\"schema\":");
            out.extend_from_slice(&schemas.value_schema);
            out.extend_from_slice(b",\"payload\":");
        }
        out.extend_from_slice(b"{\"before\":");
        write_row(out, table, schemas, event.before.as_deref(), "before")?;
        out.extend_from_slice(b",\"after\":");
        write_row(out, table, schemas, event.after.as_deref(), "after")?;
        out.extend_from_slice(b",\"source\":");
        write_source(
            out,
            config,
            &event.source,
            Some(table),
            event.op == Op::Read,
        );
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(match event.op {
            Op::Insert => b"c",
            Op::Update => b"u",
            Op::Delete => b"d",
            Op::Read => b"r",
            Op::Truncate | Op::Message => b"t",
        });
        out.extend_from_slice(b"\",\"ts_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(ts_ms).as_bytes());
        out.push(b'}');
        if with_schemas {
            out.push(b'}');
        }
        if event.op == Op::Truncate {
            return Ok(false);
        }
        write_key(event, table, schemas, with_schemas, key)
    }

    fn write_message(
        &self,
        event: &ChangeEvent,
        ts_ms: i64,
        key: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let Some(message) = &event.message else {
            return Err(EncodeError::new("a message event without its message"));
        };
        let with_schemas = self.config.schemas;
        if with_schemas {
            key.extend_from_slice(b"{\"schema\":");
            key.extend_from_slice(MESSAGE_KEY_SCHEMA.as_bytes());
            key.extend_from_slice(b",\"payload\":");
        }
        key.push(b'{');
        field(key, "prefix", &message.prefix);
        key.push(b'}');
        if with_schemas {
            key.push(b'}');
            out.extend_from_slice(b"{\"schema\":");
            out.extend_from_slice(self.message_schema.as_bytes());
            out.extend_from_slice(b",\"payload\":");
        }
        out.extend_from_slice(b"{\"op\":\"m\",\"ts_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(ts_ms).as_bytes());
        out.extend_from_slice(b",\"source\":");
        write_source(out, &self.config, &event.source, None, false);
        out.extend_from_slice(b",\"message\":{");
        field(out, "prefix", &message.prefix);
        out.extend_from_slice(b",\"content\":");
        write_base64(out, &message.content);
        out.extend_from_slice(b"}}");
        if with_schemas {
            out.push(b'}');
        }
        Ok(true)
    }
}

/// An LSN as Debezium writes it: the 64-bit WAL position as a number.
fn lsn_number(lsn: Lsn) -> i64 {
    // Real LSNs stay far below 2^63; saturate rather than wrap if one does not.
    i64::try_from(lsn.0).unwrap_or(i64::MAX)
}

fn write_source(
    out: &mut Vec<u8>,
    config: &DebeziumConfig,
    source: &SourceInfo,
    table: Option<&TableSchema>,
    snapshot: bool,
) {
    out.push(b'{');
    field(out, "version", concat!("weir-", env!("CARGO_PKG_VERSION")));
    out.extend_from_slice(b",\"connector\":\"postgresql\",");
    field(out, "name", &config.topic_prefix);
    out.extend_from_slice(b",\"ts_ms\":");
    let commit_ms = source.commit_time_micros.div_euclid(1000);
    out.extend_from_slice(itoa::Buffer::new().format(commit_ms).as_bytes());
    // Debezium's values: "true" for a snapshot's rows, "last" for the
    // initial snapshot's last one, "incremental" for rows read while
    // streaming.
    let value: &[u8] = match (snapshot, source.snapshot) {
        (false, _) => b",\"snapshot\":\"false\",",
        (true, SnapshotKind::Last) => b",\"snapshot\":\"last\",",
        (true, SnapshotKind::Incremental) => b",\"snapshot\":\"incremental\",",
        (true, SnapshotKind::Initial | SnapshotKind::None) => b",\"snapshot\":\"true\",",
    };
    out.extend_from_slice(value);
    field(out, "db", &config.database);
    out.extend_from_slice(b",\"sequence\":\"[\\\"");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(lsn_number(source.commit_lsn))
            .as_bytes(),
    );
    out.extend_from_slice(b"\\\",\\\"");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(lsn_number(source.lsn))
            .as_bytes(),
    );
    out.extend_from_slice(b"\\\"]\",");
    field(out, "schema", table.map_or("", |t| &t.schema));
    out.push(b',');
    field(out, "table", table.map_or("", |t| &t.name));
    out.extend_from_slice(b",\"txId\":");
    out.extend_from_slice(itoa::Buffer::new().format(source.xid).as_bytes());
    out.extend_from_slice(b",\"lsn\":");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(lsn_number(source.lsn))
            .as_bytes(),
    );
    out.extend_from_slice(b",\"xmin\":null}");
}

fn write_row(
    out: &mut Vec<u8>,
    table: &TableSchema,
    schemas: &TableSchemas,
    row: Option<&[Value]>,
    which: &str,
) -> Result<(), EncodeError> {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    check_row_len(table, row, which)?;
    out.push(b'{');
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&schemas.names[i]);
        write_value(out, schemas.kinds[i], value)
            .map_err(|e| column_error(table, &table.columns[i], e))?;
    }
    out.push(b'}');
    Ok(())
}

fn write_key(
    event: &ChangeEvent,
    table: &TableSchema,
    schemas: &TableSchemas,
    with_schemas: bool,
    out: &mut Vec<u8>,
) -> Result<bool, EncodeError> {
    let after = event.after.as_deref();
    let before = event.before.as_deref();
    let Some(row) = after.or(before) else {
        return Ok(false);
    };
    if !table.columns.iter().any(|c| c.key) {
        return Ok(false);
    }
    let start = out.len();
    if with_schemas {
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(&schemas.key_schema);
        out.extend_from_slice(b",\"payload\":");
    }
    let mut first = true;
    for (i, column) in table.columns.iter().enumerate() {
        if !column.key {
            continue;
        }
        // An UPDATE that leaves a TOASTed key column alone does not send it
        // in the new row; the old row has it when the identity sent one.
        let mut value = &row[i];
        if matches!(value, Value::Unchanged)
            && let Some(old) = before.and_then(|b| b.get(i))
        {
            value = old;
        }
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.extend_from_slice(&schemas.names[i]);
        if let Err(e) = write_value(out, schemas.kinds[i], value) {
            out.truncate(start);
            return Err(column_error(table, column, e));
        }
    }
    out.push(b'}');
    if with_schemas {
        out.push(b'}');
    }
    Ok(true)
}

fn mismatch(kind: Kind, value: &Value) -> EncodeError {
    let (ty, semantic) = kind.schema();
    EncodeError::new(format!(
        "{} value cannot be written as Debezium's {}",
        value_kind(value),
        semantic.unwrap_or(ty)
    ))
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "a null",
        Value::Unchanged => "an unchanged TOAST",
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Numeric(_) => "a numeric",
        Value::Text(_) => "a text",
        Value::Bytes(_) => "a bytes",
        Value::Date(_) => "a date",
        Value::Time(_) => "a time",
        Value::Timestamp(_) => "a timestamp",
        Value::TimestampTz(_) => "a timestamptz",
        Value::Uuid(_) => "a uuid",
        Value::Json(_) => "a json",
        Value::Other(_) => "a text-form",
    }
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn write_value(out: &mut Vec<u8>, kind: Kind, value: &Value) -> Result<(), EncodeError> {
    match (kind, value) {
        (_, Value::Null) => out.extend_from_slice(b"null"),
        (Kind::Bytes | Kind::Decimal { .. }, Value::Unchanged) => {
            write_base64(out, UNAVAILABLE_VALUE.as_bytes());
        }
        (
            Kind::String | Kind::DecimalString | Kind::Json | Kind::Uuid | Kind::ZonedTimestamp,
            Value::Unchanged,
        ) => write_str(out, UNAVAILABLE_VALUE),
        (Kind::Boolean, Value::Bool(b)) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" });
        }
        (Kind::Int16, Value::Int(n)) if i16::try_from(*n).is_ok() => write_int(out, *n),
        (Kind::Int32, Value::Int(n)) if i32::try_from(*n).is_ok() => write_int(out, *n),
        (Kind::Int64, Value::Int(n)) => write_int(out, *n),
        (Kind::Float32 | Kind::Float64, Value::Float(f)) => write_float(out, *f),
        (Kind::Decimal { scale, .. }, Value::Numeric(text)) => {
            let (negative, digits) = unscaled(text, Some(scale))?;
            write_base64(out, &twos_complement(negative, &digits));
        }
        (Kind::VariableScaleDecimal, Value::Numeric(text)) => {
            let scale = text.split_once('.').map_or(0, |(_, f)| f.len());
            let (negative, digits) = unscaled(text, None)?;
            out.extend_from_slice(b"{\"scale\":");
            write_int(out, scale as i64);
            out.extend_from_slice(b",\"value\":");
            write_base64(out, &twos_complement(negative, &digits));
            out.push(b'}');
        }
        (Kind::DecimalString, Value::Numeric(text)) => write_str(out, text),
        (Kind::DecimalDouble, Value::Numeric(text)) => {
            let f: f64 = text
                .parse()
                .map_err(|_| EncodeError::new(format!("numeric {text:?} is not a number")))?;
            write_float(out, f);
        }
        (Kind::Date, Value::Date(days)) => write_int(out, i64::from(*days)),
        (Kind::TimeMillis, Value::Time(micros)) => write_int(out, micros.div_euclid(1000)),
        (Kind::MicroTime, Value::Time(micros)) => write_int(out, *micros),
        (Kind::TimestampMillis, Value::Timestamp(micros)) => {
            // The infinities stay the extremes rather than shrink.
            let millis = match *micros {
                i64::MAX | i64::MIN => *micros,
                m => m.div_euclid(1000),
            };
            write_int(out, millis);
        }
        (Kind::MicroTimestamp, Value::Timestamp(micros)) => write_int(out, *micros),
        (Kind::ZonedTimestamp, Value::TimestampTz(micros)) => {
            out.push(b'"');
            calendar::write_timestamp(out, *micros, true);
            out.push(b'"');
        }
        (Kind::Uuid, Value::Uuid(bytes)) => {
            out.push(b'"');
            crate::uuid::write_uuid_text(out, bytes);
            out.push(b'"');
        }
        (Kind::Json, Value::Json(text)) => write_str(out, text),
        (Kind::Bytes, Value::Bytes(bytes)) => write_base64(out, bytes),
        // A `string` column takes any value by its text; so does one whose
        // value Postgres could not put in Weir's types (a timestamp past
        // the year 294246 arrives as text).
        (Kind::String, value) | (_, value @ Value::Other(_)) => {
            let text = crate::to_text(value);
            write_str(out, &text);
        }
        (kind, value) => return Err(mismatch(kind, value)),
    }
    Ok(())
}

/// The sign and decimal digits of a numeric's unscaled value at `scale`
/// (at its own scale when `None`): `"-12.5"` at scale 2 is `(true, "1250")`.
fn unscaled(text: &str, scale: Option<i32>) -> Result<(bool, Vec<u8>), EncodeError> {
    let special = || {
        EncodeError::new(format!(
            "numeric {text:?} cannot be written as a Decimal; set decimal_handling = \"string\" \
             or \"double\" to carry NaN and infinities"
        ))
    };
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(special());
    }
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let own = frac.len() as i64;
    let target = scale.map_or(own, i64::from);
    if target >= own {
        digits.extend(std::iter::repeat_n(0, (target - own) as usize));
    } else {
        let drop = (own - target) as usize;
        let cut = digits.len().saturating_sub(drop);
        if digits[cut..].iter().any(|&d| d != 0) {
            return Err(EncodeError::new(format!(
                "numeric {text:?} has more digits than the column's scale {target}"
            )));
        }
        digits.truncate(cut);
    }
    Ok((negative, digits))
}

/// Big-endian two's complement bytes of the integer with these decimal
/// digits, in the fewest bytes (as Java's `BigInteger.toByteArray`).
fn twos_complement(negative: bool, digits: &[u8]) -> Vec<u8> {
    // Little-endian base-256 magnitude.
    let mut magnitude: Vec<u8> = Vec::new();
    for &d in digits {
        let mut carry = u32::from(d);
        for byte in &mut magnitude {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            magnitude.push(carry as u8);
        }
    }
    while magnitude.last() == Some(&0) {
        magnitude.pop();
    }
    let is_zero = magnitude.is_empty();
    if negative && !is_zero {
        // -m is the bitwise complement of m - 1.
        for byte in &mut magnitude {
            let (v, borrow) = byte.overflowing_sub(1);
            *byte = v;
            if !borrow {
                break;
            }
        }
        while magnitude.last() == Some(&0) {
            magnitude.pop();
        }
        let mut out: Vec<u8> = magnitude.iter().rev().map(|b| !b).collect();
        if out.first().is_none_or(|b| b & 0x80 == 0) {
            out.insert(0, 0xff);
        }
        out
    } else {
        let mut out: Vec<u8> = magnitude.into_iter().rev().collect();
        if out.first().is_none_or(|b| b & 0x80 != 0) {
            out.insert(0, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests;
