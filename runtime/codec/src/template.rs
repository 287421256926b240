//! Name templates: the one grammar for every name a sink derives from a
//! record (Kafka topics, Redis keys and streams, NATS subjects, index and
//! table names).
//!
//! A template is text with placeholders: `{schema}`, `{table}`, `{op}`,
//! `{prefix}` (a logical message's prefix), `{key}` (all key columns) and
//! `{key.COLUMN}` (one key column). It is parsed once, when the
//! configuration is checked, and expanded per record into a reused buffer.
//!
//! `{key}` joins the key column values with `:`; inside a value a `\` is
//! written `\\` and a `:` is written `\:`, so two different keys never
//! expand to the same text (`("a:b", "c")` is `a\:b:c`, `("a", "b:c")`
//! is `a:b\:c`). `{key.COLUMN}` writes that one column unescaped. Values are
//! written as [`write_text`](crate::write_text) does.

use weir_core::{ChangeEvent, SinkPayload, SinkRecord, Value};

use crate::text::write_text;

/// A parsed name template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Schema,
    Table,
    Op,
    Prefix,
    Key,
    KeyColumn(String),
}

/// The kind of record a template is expanded for, which decides the
/// placeholders that can be empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateUse {
    /// Row changes: `{schema}`, `{table}` and `{op}` are never empty,
    /// `{prefix}` always is; `{key}` is empty for a keyless table.
    Change,
    /// Logical decoding messages: `{op}` is `message`, `{prefix}` may be
    /// empty, every other placeholder is.
    Message,
    /// Raw records (a plugin's own bytes, dead letters): every placeholder
    /// is empty.
    Raw,
}

/// Why a record cannot fill in a template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `{key.COLUMN}` names a column the record's table has not got as a
    /// key column.
    #[error("{{key.{column}}}: table {table} has no key column {column:?}")]
    NoKeyColumn {
        /// The column the template names.
        column: String,
        /// `schema.table`.
        table: String,
    },
}

impl NameTemplate {
    /// Parses a template; fails on an unknown or unclosed placeholder.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("unclosed '{{' in template {template:?}"));
            };
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "schema" => Part::Schema,
                "table" => Part::Table,
                "op" => Part::Op,
                "prefix" => Part::Prefix,
                "key" => Part::Key,
                _ => match name.strip_prefix("key.") {
                    Some(column) if !column.is_empty() => Part::KeyColumn(column.to_owned()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}} in template {template:?} (known: \
                             {{schema}}, {{table}}, {{op}}, {{prefix}}, {{key}}, {{key.COLUMN}})"
                        ));
                    }
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(NameTemplate { parts })
    }

    /// Whether the template uses `{key}` or `{key.COLUMN}`.
    pub fn uses_key(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Key | Part::KeyColumn(_)))
    }

    /// Whether the template has no placeholder: every record gets the same name.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The template's fixed text, placeholders left out: what a sink checks
    /// against its own rules for names.
    pub fn fixed_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The shortest name the template can expand to for records of kind
    /// `used_for`, with `x` standing for every placeholder that is never
    /// empty there. An empty result means some record would get an empty name.
    pub fn shortest(&self, used_for: TemplateUse) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match (part, used_for) {
                (Part::Text(t), _) => out.push_str(t),
                (Part::Schema | Part::Table | Part::Op, TemplateUse::Change) => out.push('x'),
                (Part::Op, TemplateUse::Message) => out.push_str("message"),
                _ => {}
            }
        }
        out
    }

    /// Writes the name for `record` into `out`, replacing its content.
    pub fn expand(&self, record: &SinkRecord, out: &mut String) -> Result<(), ExpandError> {
        match &record.payload {
            SinkPayload::Change(event) => self.expand_event(event, out),
            SinkPayload::Raw(_) => {
                out.clear();
                for part in &self.parts {
                    if let Part::Text(t) = part {
                        out.push_str(t);
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes the name for `event` into `out`, replacing its content.
    pub fn expand_event(&self, event: &ChangeEvent, out: &mut String) -> Result<(), ExpandError> {
        out.clear();
        let (schema, table) = match &event.table {
            Some(t) => (t.schema.as_str(), t.name.as_str()),
            None => ("", ""),
        };
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Schema => out.push_str(schema),
                Part::Table => out.push_str(table),
                Part::Op => out.push_str(event.op.as_str()),
                Part::Prefix => {
                    if let Some(m) = &event.message {
                        out.push_str(&m.prefix);
                    }
                }
                Part::Key => write_key(event, out),
                Part::KeyColumn(column) => {
                    let value =
                        key_value(event, column).ok_or_else(|| ExpandError::NoKeyColumn {
                            column: column.clone(),
                            table: format!("{schema}.{table}"),
                        })?;
                    write_text(out, value);
                }
            }
        }
        Ok(())
    }
}

/// The value of key column `column` of `event`'s row.
fn key_value<'a>(event: &'a ChangeEvent, column: &str) -> Option<&'a Value> {
    let table = event.table.as_ref()?;
    let row = event.after.as_ref().or(event.before.as_ref())?;
    table
        .columns
        .iter()
        .zip(row)
        .find(|(c, _)| c.key && c.name == column)
        .map(|(_, v)| v)
}

/// Appends `event`'s key as `{key}` writes it: the key columns' values,
/// escaped, joined with `:`. Nothing for a keyless row.
pub fn write_key(event: &ChangeEvent, out: &mut String) {
    let mut scratch = String::new();
    for (i, (_, value)) in event.key_values().into_iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        scratch.clear();
        write_text(&mut scratch, value);
        for c in scratch.chars() {
            if c == '\\' || c == ':' {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_core::{Column, Op, SourceInfo, TableSchema, TxnId};

    use super::*;

    fn event(key: Vec<(&str, Value)>, op: Op) -> ChangeEvent {
        let mut columns: Vec<Column> = key
            .iter()
            .map(|(name, _)| Column {
                name: (*name).to_owned(),
                type_oid: 25,
                type_name: "text".to_owned(),
                type_modifier: -1,
                key: true,
            })
            .collect();
        columns.push(Column {
            name: "note".to_owned(),
            type_oid: 25,
            type_name: "text".to_owned(),
            type_modifier: -1,
            key: false,
        });
        let mut row: Vec<Value> = key.into_iter().map(|(_, v)| v).collect();
        row.push(Value::Text("n".into()));
        ChangeEvent {
            op,
            table: Some(Arc::new(TableSchema {
                id: 1,
                version: 1,
                schema: "sales".into(),
                name: "orders".into(),
                columns,
                replica_identity: weir_core::ReplicaIdentity::Default,
            })),
            before: None,
            after: Some(row),
            message: None,
            source: SourceInfo::default(),
            txn: TxnId(1),
        }
    }

    fn expand(template: &str, event: &ChangeEvent) -> Result<String, ExpandError> {
        let mut out = String::from("stale");
        NameTemplate::parse(template)
            .unwrap()
            .expand_event(event, &mut out)?;
        Ok(out)
    }

    #[test]
    fn placeholders_expand() {
        let e = event(vec![("id", Value::Int(42))], Op::Update);
        assert_eq!(
            expand("{schema}:{table}:{key}/{op}", &e).unwrap(),
            "sales:orders:42/update"
        );
        assert_eq!(expand("k-{key.id}", &e).unwrap(), "k-42");
        assert_eq!(expand("plain", &e).unwrap(), "plain");
    }

    #[test]
    fn composite_keys_never_collide() {
        let a = event(
            vec![
                ("a", Value::Text("x:y".into())),
                ("b", Value::Text("z".into())),
            ],
            Op::Insert,
        );
        let b = event(
            vec![
                ("a", Value::Text("x".into())),
                ("b", Value::Text("y:z".into())),
            ],
            Op::Insert,
        );
        let c = event(
            vec![
                ("a", Value::Text("x\\".into())),
                ("b", Value::Text(":z".into())),
            ],
            Op::Insert,
        );
        let names: Vec<String> = [&a, &b, &c]
            .iter()
            .map(|e| expand("{key}", e).unwrap())
            .collect();
        assert_eq!(names, ["x\\:y:z", "x:y\\:z", "x\\\\:\\:z"]);
    }

    #[test]
    fn unknown_key_column_is_an_error_naming_it() {
        let e = event(vec![("id", Value::Int(1))], Op::Insert);
        let err = expand("{key.sku}", &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "{key.sku}: table sales.orders has no key column \"sku\""
        );
    }

    #[test]
    fn parse_errors_say_what_is_known() {
        let err = NameTemplate::parse("{tabel}").unwrap_err();
        assert!(
            err.contains("{tabel}") && err.contains("{key.COLUMN}"),
            "{err}"
        );
        assert!(NameTemplate::parse("a{table").is_err());
        assert!(NameTemplate::parse("{key.}").is_err());
    }

    #[test]
    fn shortest_name_per_use() {
        let t = NameTemplate::parse("{prefix}{schema}").unwrap();
        assert_eq!(t.shortest(TemplateUse::Change), "x");
        assert_eq!(t.shortest(TemplateUse::Message), "");
        let t = NameTemplate::parse("cdc.{op}").unwrap();
        assert_eq!(t.shortest(TemplateUse::Message), "cdc.message");
        assert_eq!(t.shortest(TemplateUse::Raw), "cdc.");
        assert!(t.fixed_text() == "cdc." && !t.uses_key() && !t.is_constant());
    }
}
