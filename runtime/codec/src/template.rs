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
//!
//! A name can also be read back into the key it was made from
//! ([`NameTemplate::key_reader`]): `weir verify` maps the keys a sink holds
//! to source rows that way. A sink that escapes filled-in values further
//! (NATS's `=XX`) says how with an [`Escaping`].

use weir_core::{ChangeEvent, SinkPayload, SinkRecord, TableSchema, Value};

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

impl NameTemplate {
    /// A reader of the names this template gives the rows of `table`,
    /// each filled-in placeholder written as `escaping` writes it. A
    /// template with `{op}` or `{prefix}` reads no name back: one row has
    /// several names under it.
    pub fn key_reader(&self, table: &TableSchema, escaping: Escaping) -> KeyReader {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut readable = true;
        for part in &self.parts {
            let text = match part {
                Part::Text(t) => t.clone(),
                Part::Schema | Part::Table => {
                    let value = if matches!(part, Part::Schema) {
                        &table.schema
                    } else {
                        &table.name
                    };
                    let mut escaped = String::new();
                    (escaping.escape)(&mut escaped, value);
                    escaped
                }
                Part::Key => {
                    pieces.push(Piece::Key);
                    continue;
                }
                Part::KeyColumn(column) => {
                    pieces.push(Piece::Column(column.clone()));
                    continue;
                }
                Part::Op | Part::Prefix => {
                    readable = false;
                    continue;
                }
            };
            match pieces.last_mut() {
                Some(Piece::Text(t)) => t.push_str(&text),
                _ => pieces.push(Piece::Text(text)),
            }
        }
        KeyReader {
            pieces: readable.then_some(pieces),
            columns: table
                .columns
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.clone())
                .collect(),
            unescape: escaping.unescape,
        }
    }
}

/// How a sink rewrites each filled-in placeholder's text before it stands
/// in a name, so that a [`KeyReader`] can undo it.
#[derive(Clone, Copy, Debug)]
pub struct Escaping {
    /// Appends a placeholder's text as the names hold it.
    pub escape: fn(&mut String, &str),
    /// Undoes `escape`; `None` for text it never writes.
    pub unescape: fn(&str) -> Option<String>,
}

impl Escaping {
    /// Placeholders as [`NameTemplate::expand_event`] writes them.
    pub const NONE: Escaping = Escaping {
        escape: |out, text| out.push_str(text),
        unescape: |text| Some(text.to_owned()),
    };
}

/// Reads names one template gave the rows of one table back into the texts
/// of the table's key columns, inverting the template: `{key}` is split at
/// its unescaped `:`s and unescaped ([`split_key`]), `{key.COLUMN}` is the
/// column's text.
#[derive(Clone, Debug)]
pub struct KeyReader {
    /// The template's pieces with `{schema}` and `{table}` filled in;
    /// `None` when it cannot be read back.
    pieces: Option<Vec<Piece>>,
    /// The table's key columns, in table order.
    columns: Vec<String>,
    unescape: fn(&str) -> Option<String>,
}

/// A piece of a template being read back.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Key,
    Column(String),
}

/// Most ways of cutting one name looked at: enough to tell one reading
/// from several.
const MAX_READINGS: usize = 8;

impl KeyReader {
    /// The key columns' texts, in table order; `None` when `name` is not
    /// one of the table's names, or could be several (two key placeholders
    /// with nothing between them).
    pub fn read(&self, name: &str) -> Option<Vec<String>> {
        let pieces = self.pieces.as_deref()?;
        let mut readings = Vec::new();
        self.walk(pieces, name, &mut Vec::new(), &mut readings);
        let mut keys: Vec<Vec<String>> = readings
            .into_iter()
            .filter_map(|found| {
                self.columns
                    .iter()
                    .map(|c| found.iter().find(|(n, _)| n == c).map(|(_, v)| v.clone()))
                    .collect::<Option<Vec<String>>>()
            })
            .collect();
        keys.dedup();
        match keys.len() {
            1 => keys.pop(),
            _ => None,
        }
    }

    /// Collects in `readings` every way `text` can be cut into `pieces`,
    /// with `found` the values of the pieces already cut.
    fn walk(
        &self,
        pieces: &[Piece],
        text: &str,
        found: &mut Vec<(String, String)>,
        readings: &mut Vec<Vec<(String, String)>>,
    ) {
        if readings.len() >= MAX_READINGS {
            return;
        }
        let Some(piece) = pieces.first() else {
            if text.is_empty() {
                readings.push(found.clone());
            }
            return;
        };
        if let Piece::Text(t) = piece {
            if let Some(rest) = text.strip_prefix(t.as_str()) {
                self.walk(&pieces[1..], rest, found, readings);
            }
            return;
        }
        let ends: Vec<usize> = match pieces.get(1) {
            None => vec![text.len()],
            Some(Piece::Text(t)) => text.match_indices(t.as_str()).map(|(i, _)| i).collect(),
            Some(_) => text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect(),
        };
        for end in ends {
            let Some(values) = self.capture(piece, &text[..end]) else {
                continue;
            };
            let mark = found.len();
            // `{key}` and `{key.COLUMN}` can both name a column: a reading
            // must give it one value.
            let mut consistent = true;
            for (column, value) in values {
                match found.iter().find(|(c, _)| *c == column) {
                    Some((_, seen)) if *seen != value => consistent = false,
                    Some(_) => {}
                    None => found.push((column, value)),
                }
            }
            if consistent {
                self.walk(&pieces[1..], &text[end..], found, readings);
            }
            found.truncate(mark);
        }
    }

    /// The columns a key placeholder's `text` gives values to.
    fn capture(&self, piece: &Piece, text: &str) -> Option<Vec<(String, String)>> {
        let value = (self.unescape)(text)?;
        match piece {
            Piece::Text(_) => None,
            Piece::Column(column) => self
                .columns
                .contains(column)
                .then(|| vec![(column.clone(), value)]),
            Piece::Key => {
                let values = split_key(&value)?;
                (values.len() == self.columns.len())
                    .then(|| self.columns.iter().cloned().zip(values).collect())
            }
        }
    }
}

/// Undoes the joining and escaping of [`write_key`]: the key columns'
/// texts, split at the unescaped `:`s, with `\\` and `\:` undone; `None`
/// for text it never writes (a `\` before anything else, or last).
pub fn split_key(text: &str) -> Option<Vec<String>> {
    let mut values = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                e @ ('\\' | ':') => values.last_mut()?.push(e),
                _ => return None,
            },
            ':' => values.push(String::new()),
            c => values.last_mut()?.push(c),
        }
    }
    Some(values)
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

    fn read(template: &str, keys: &[&str], name: &str) -> Option<Vec<String>> {
        let e = event(keys.iter().map(|k| (*k, Value::Int(0))).collect(), Op::Read);
        NameTemplate::parse(template)
            .unwrap()
            .key_reader(e.table.as_ref().unwrap(), Escaping::NONE)
            .read(name)
    }

    fn texts(values: &[&str]) -> Option<Vec<String>> {
        Some(values.iter().map(|v| (*v).to_owned()).collect())
    }

    #[test]
    fn names_read_back_as_key_texts() {
        let t = "{schema}:{table}:{key}";
        assert_eq!(read(t, &["id"], "sales:orders:42"), texts(&["42"]));
        assert_eq!(read(t, &["id"], "sales:orders:a\\:b"), texts(&["a:b"]));
        assert_eq!(read(t, &["id"], "sales:orders:a:b"), None);
        assert_eq!(read(t, &["id"], "sales:other:42"), None);
        assert_eq!(
            read(t, &["a", "b"], "sales:orders:x\\\\:\\:z"),
            texts(&["x\\", ":z"])
        );
        let t = "{key.b}/{key.a}@{table}";
        assert_eq!(read(t, &["a", "b"], "2/1@orders"), texts(&["1", "2"]));
        assert_eq!(read("{key.b}/{key.a}", &["a", "b"], "2/1/0"), None);
        assert_eq!(read("{key.a}", &["a", "b"], "1"), None);
        assert_eq!(read("{key.a}{key.b}", &["a", "b"], "12"), None);
        assert_eq!(read("{key.a}-{key.b}", &["a", "b"], "-"), texts(&["", ""]));
        assert_eq!(read("{op}:{key}", &["id"], "read:42"), None);
    }

    #[test]
    fn split_key_undoes_write_key() {
        for key in ["x\\:y:z", "x:y\\:z", "x\\\\:\\:z"] {
            let parts = split_key(key).unwrap();
            let e = event(
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (["a", "b", "c"][i], Value::Text(p.clone())))
                    .collect(),
                Op::Insert,
            );
            assert_eq!(expand("{key}", &e).unwrap(), key);
        }
        assert_eq!(split_key(""), Some(vec![String::new()]));
        assert_eq!(split_key("a\\b"), None);
        assert_eq!(split_key("dangling\\"), None);
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
