//! `weir verify`'s view of the `sphinx` sink: the documents of the main
//! indexes (what searches read), compared through the sink's own planning
//! and encoding, with the state index consulted for what the main index
//! cannot tell (the key text of a hashed id, the full-text fields as last
//! written).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mysql_async::Row;
use weir_codec::{NameTemplate, split_key};
use weir_core::{
    ChangeEvent, Column, ColumnDiff, Held, HeldKey, KeyPage, Op, Readback, SinkError, SinkPayload,
    SinkRecord, TableSchema, Value,
};

use super::config::{AttributeType, SphinxSinkConfig};
use super::encode::{Cell, DocId, WATERMARK_ID};
use super::sink::{Action, IDS_PER_QUERY, SphinxSink, column_text, join_ids};

/// Most ids one [`Readback::keys`] page lists, whatever the limit asked.
const MAX_PAGE: usize = 10_000;

/// Reads back the documents a `sphinx` sink wrote, over a connection of
/// its own.
pub(crate) struct SphinxReadback {
    /// A sink that never writes: its planning names each record's index
    /// and document id, its encoder the values, exactly as `write` does.
    sink: SphinxSink,
}

/// A state index document, as far as a readback needs it.
struct StateDoc {
    key: String,
    deleted: bool,
    /// `weir_doc`, when field-only columns are compared and it is readable.
    cells: Option<BTreeMap<String, Cell>>,
}

/// One compared record: where its document is and what it should hold.
struct Wanted<'a> {
    record: usize,
    id: DocId,
    /// The row for a `read`, `None` for a `delete`.
    row: Option<(&'a ChangeEvent, &'a [Value])>,
}

impl SphinxReadback {
    /// Connects to searchd with the sink's settings.
    pub(crate) async fn connect(name: &str, config: SphinxSinkConfig) -> Result<Self, SinkError> {
        Ok(SphinxReadback {
            sink: SphinxSink::connect(name, config).await?,
        })
    }

    /// Attributes read from the main index: the configured columns that
    /// are attributes (the nulls attribute, if any, is read after them).
    fn attributes(&self) -> Vec<(String, AttributeType)> {
        self.sink
            .columns()
            .iter()
            .filter_map(|(c, ty)| Some((c.clone(), (*ty)?)))
            .collect()
    }

    /// Columns written only as full-text fields, which only `weir_doc` keeps.
    fn field_only(&self) -> Vec<String> {
        self.sink
            .columns()
            .iter()
            .filter(|(_, ty)| ty.is_none())
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Refuses a template with `{op}`: verify's records are `read`s, while
    /// the rows were written by inserts and updates, to other indexes.
    fn check_op(&self, topic: Option<&str>) -> Result<(), SinkError> {
        let text = topic.unwrap_or(&self.sink.config().index);
        if text.contains("{op}") {
            return Err(SinkError::Config(format!(
                "index template {text:?} uses {{op}}: a row's changes went to several \
                 indexes, so what one index holds cannot be compared with the row"
            )));
        }
        Ok(())
    }

    /// The main index holding `table`'s rows under `topic`.
    fn index_of_table(
        &self,
        table: &TableSchema,
        topic: Option<&str>,
    ) -> Result<String, SinkError> {
        self.check_op(topic)?;
        let text = topic.unwrap_or(&self.sink.config().index);
        let template = NameTemplate::parse(text).map_err(SinkError::Config)?;
        if template.uses_key() {
            return Err(SinkError::Config(format!(
                "index template {text:?} uses the key: every row has an index of its own, \
                 which cannot be listed"
            )));
        }
        let event = ChangeEvent::read_of(table);
        let mut name = String::new();
        self.sink
            .index_name(topic, &event, &mut name)
            .map_err(|e| {
                SinkError::Config(format!("table {}.{}: {e}", table.schema, table.name))
            })?;
        Ok(name)
    }

    /// The main index's documents among `ids`: each attribute's text, in
    /// [`attributes`](Self::attributes) order, then the nulls attribute's.
    async fn main_docs(
        &mut self,
        index: &str,
        ids: &[u64],
    ) -> Result<HashMap<u64, Vec<String>>, SinkError> {
        let mut select = String::from("id");
        for (column, _) in self.attributes() {
            select.push_str(&format!(",`{column}`"));
        }
        if let Some(nulls) = &self.sink.config().nulls_attribute {
            select.push_str(&format!(",`{nulls}`"));
        }
        let rows = self.select_ids(index, &select, ids).await?;
        Ok(rows
            .into_iter()
            .map(|(id, row)| (id, (1..row.len()).map(|i| column_text(&row, i)).collect()))
            .collect())
    }

    /// The state index's documents among `ids` (never the watermark);
    /// `weir_doc` is read only when `cells` is set.
    async fn state_docs(
        &mut self,
        index: &str,
        ids: &[u64],
        cells: bool,
    ) -> Result<HashMap<u64, StateDoc>, SinkError> {
        let state = self.sink.state_index(index);
        let select = if cells {
            "id, weir_key, weir_deleted, weir_doc"
        } else {
            "id, weir_key, weir_deleted"
        };
        let mut out = HashMap::new();
        let ids: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| *id != WATERMARK_ID)
            .collect();
        for (id, row) in self.select_ids(&state, select, &ids).await? {
            let deleted = column_text(&row, 2) != "0";
            // An unreadable weir_doc (not written by Weir) leaves the
            // fields uncompared rather than failing the whole verify.
            let cells = (cells && !deleted)
                .then(|| serde_json::from_str(&column_text(&row, 3)).ok())
                .flatten();
            out.insert(
                id,
                StateDoc {
                    key: column_text(&row, 1),
                    deleted,
                    cells,
                },
            );
        }
        Ok(out)
    }

    /// `index`'s documents among `ids`, each with its `select` columns (the
    /// id first), in queries of at most [`IDS_PER_QUERY`] ids: searchd
    /// answers no more rows than `max_matches`.
    async fn select_ids(
        &mut self,
        index: &str,
        select: &str,
        ids: &[u64],
    ) -> Result<Vec<(u64, Row)>, SinkError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT {select} FROM {index} WHERE id IN ({}) LIMIT {n} OPTION max_matches={n}",
                join_ids(chunk),
                n = chunk.len()
            );
            let rows = self
                .sink
                .select(&sql)
                .await
                .map_err(|e| e.into_sink(index))?;
            for row in rows {
                out.push((doc_id(index, &column_text(&row, 0))?, row));
            }
        }
        Ok(out)
    }

    /// What writing `wanted`'s row would change in the document `held`
    /// (the main index's attributes) and `state` (its state document).
    fn row_diffs(
        &self,
        event: &ChangeEvent,
        values: &[Value],
        held: &[String],
        state: Option<&StateDoc>,
    ) -> Vec<ColumnDiff> {
        let mut cells = BTreeMap::new();
        let mut refused = BTreeMap::new();
        for (column, ty) in self.sink.columns() {
            match self.sink.cell_of(event, values, column, *ty, None) {
                Ok(cell) => {
                    cells.insert(column.clone(), cell);
                }
                Err(reason) => {
                    refused.insert(column.clone(), reason);
                }
            }
        }
        let mut diffs = Vec::new();
        let attributes = self.attributes();
        for ((column, ty), held) in attributes.iter().zip(held) {
            if let Some(reason) = refused.get(column) {
                diffs.push(ColumnDiff {
                    column: column.clone(),
                    source: format!("(cannot be written: {reason})"),
                    sink: held.clone(),
                });
            } else if let Some((source, sink)) = attribute_diff(*ty, &cells[column], held) {
                diffs.push(ColumnDiff {
                    column: column.clone(),
                    source,
                    sink,
                });
            }
        }
        if let Some(nulls) = &self.sink.config().nulls_attribute
            && refused.is_empty()
        {
            let want = self.sink.nulls(&cells);
            let have = held.get(attributes.len()).map_or("", String::as_str);
            let set = |s: &str| {
                s.split_whitespace()
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>()
            };
            if set(&want) != set(have) {
                diffs.push(ColumnDiff {
                    column: nulls.clone(),
                    source: want,
                    sink: have.to_owned(),
                });
            }
        }
        // Fields are compared only with what Weir last wrote: searchd
        // does not keep them.
        if let Some(written) = state.and_then(|s| s.cells.as_ref()) {
            for column in self.field_only() {
                let have = written.get(&column);
                let source = match (refused.get(&column), cells.get(&column)) {
                    (Some(reason), _) => format!("(cannot be written: {reason})"),
                    (None, Some(cell)) if have != Some(cell) => show(cell),
                    _ => continue,
                };
                diffs.push(ColumnDiff {
                    column: format!("{column} (weir_doc)"),
                    source,
                    sink: have.map_or_else(|| "(none)".to_owned(), show),
                });
            }
        }
        diffs
    }
}

#[async_trait::async_trait]
impl Readback for SphinxReadback {
    fn compares(&self) -> String {
        "each document's attributes in the main index (and the nulls attribute), as the sink \
         encodes the row (floats at 32-bit precision, JSON as Sphinx keeps it); full-text \
         fields, which Sphinx 2.2 does not store, only against the copy Weir last wrote to the \
         state index (weir_doc)"
            .to_owned()
    }

    async fn compare(&mut self, records: &[SinkRecord]) -> Result<Vec<Held>, SinkError> {
        let mut held = vec![Held::Same; records.len()];
        // Only `read` and `delete` records ask anything of the index.
        let mut picked = Vec::new();
        let mut subset = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if let SinkPayload::Change(event) = &record.payload
                && matches!(event.op, Op::Read | Op::Delete)
                && event.table.is_some()
            {
                self.check_op(record.topic.as_deref())?;
                picked.push(i);
                subset.push(record.clone());
            }
        }
        let mut rejected = Vec::new();
        let steps = self.sink.plan(&subset, &mut rejected);
        if let Some(r) = rejected.first() {
            let table = match &subset[r.index].payload {
                SinkPayload::Change(e) => {
                    e.table.as_ref().map(|t| format!("{}.{}", t.schema, t.name))
                }
                SinkPayload::Raw(_) => None,
            };
            return Err(SinkError::Config(format!(
                "a row of {} cannot be written to Sphinx, so not compared: {}",
                table.unwrap_or_default(),
                r.reason
            )));
        }
        let mut by_index: BTreeMap<String, Vec<Wanted<'_>>> = BTreeMap::new();
        for step in &steps {
            let (id, row) = match &step.action {
                Action::Upsert { id, values, .. } => (id, Some((step.event, values.as_slice()))),
                Action::Delete { id } => (id, None),
                Action::Truncate => continue,
            };
            by_index
                .entry(step.index.clone())
                .or_default()
                .push(Wanted {
                    record: picked[step.record],
                    id: id.clone(),
                    row,
                });
        }
        let fields = !self.field_only().is_empty();
        for (index, wanted) in by_index {
            self.sink.check_index(&index).await?;
            let ids: Vec<u64> = wanted
                .iter()
                .map(|w| w.id.id)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let main = self.main_docs(&index, &ids).await?;
            let present: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| main.contains_key(id))
                .collect();
            let state = self.state_docs(&index, &present, fields).await?;
            for w in wanted {
                let doc = state.get(&w.id.id);
                // A hashed id whose state names another key is that key's
                // document (the sink refuses the second key of a collision).
                let ours = main
                    .get(&w.id.id)
                    .filter(|_| doc.is_none_or(|d| d.key == w.id.key));
                held[w.record] = match (ours, w.row) {
                    (None, None) => Held::Same,
                    (Some(_), None) => Held::Extra,
                    (None, Some(_)) => Held::Missing,
                    (Some(attrs), Some((event, values))) => {
                        let live = doc.filter(|d| !d.deleted);
                        Held::from_diffs(self.row_diffs(event, values, attrs, live))
                    }
                };
            }
        }
        Ok(held)
    }

    async fn keys(
        &mut self,
        table: &TableSchema,
        topic: Option<&str>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, SinkError> {
        let index = self.index_of_table(table, topic)?;
        self.sink.check_index(&index).await?;
        let after = match cursor {
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                SinkError::Config(format!("index {index}: {c:?} is not a cursor of its keys"))
            })?),
            None => None,
        };
        let n = limit.clamp(1, MAX_PAGE);
        let filter = after.map_or_else(String::new, |a| format!(" WHERE id > {a}"));
        let sql = format!(
            "SELECT id FROM {index}{filter} ORDER BY id ASC LIMIT {n} OPTION max_matches={n}"
        );
        let rows = self
            .sink
            .select(&sql)
            .await
            .map_err(|e| e.into_sink(&index))?;
        let ids = rows
            .iter()
            .map(|r| doc_id(&index, &column_text(r, 0)))
            .collect::<Result<Vec<u64>, _>>()?;
        let state = self.state_docs(&index, &ids, false).await?;
        let key_columns: Vec<&Column> = table.columns.iter().filter(|c| c.key).collect();
        let integer_key = matches!(key_columns.as_slice(), [c] if is_integer(c));
        let keys = ids
            .iter()
            .map(|id| HeldKey {
                name: format!("{index} id={id}"),
                key: match state.get(id) {
                    Some(doc) => split_key(&doc.key).filter(|k| k.len() == key_columns.len()),
                    // Not written by Weir: only an integer key's own id
                    // says which key it is.
                    None if integer_key && i64::try_from(*id).is_ok() => Some(vec![id.to_string()]),
                    None => None,
                },
            })
            .collect();
        let cursor = (ids.len() == n)
            .then(|| ids.last().map(u64::to_string))
            .flatten();
        Ok(KeyPage { keys, cursor })
    }
}

fn doc_id(index: &str, text: &str) -> Result<u64, SinkError> {
    text.parse().map_err(|_| {
        SinkError::Config(format!(
            "index {index}: document id {text:?} is not a number"
        ))
    })
}

/// Whether a key column holds integers, which are document ids as they are.
fn is_integer(column: &Column) -> bool {
    matches!(column.type_oid, 20 | 21 | 23 | 26)
        || matches!(column.type_name.as_str(), "int2" | "int4" | "int8" | "oid")
}

/// A cell as text for a report (`NULL` for SQL NULL).
fn show(cell: &Cell) -> String {
    match cell {
        Cell::Null => "NULL".to_owned(),
        Cell::Number(s) | Cell::Text(s) => s.clone(),
    }
}

/// How an attribute of type `ty` written from `want` differs from the text
/// searchd shows for it, `held`: `Some((source, sink))` when it does, both
/// as searchd would show them.
fn attribute_diff(ty: AttributeType, want: &Cell, held: &str) -> Option<(String, String)> {
    let text = match want {
        Cell::Null => None,
        Cell::Number(s) | Cell::Text(s) => Some(s.as_str()),
    };
    let (source, same) = match ty {
        AttributeType::String => {
            let source = text.unwrap_or("").to_owned();
            let same = source == held;
            (source, same)
        }
        AttributeType::Bigint
        | AttributeType::Uint
        | AttributeType::Bool
        | AttributeType::Timestamp => {
            let source = text.unwrap_or("0").to_owned();
            let same = source == held
                || matches!((source.parse::<i128>(), held.parse::<i128>()), (Ok(a), Ok(b)) if a == b);
            (source, same)
        }
        AttributeType::Float => {
            // searchd shows a float with six decimals; the value written
            // is the 32-bit float the sink encoded.
            let source = text
                .map_or(Some(0.0), |s| s.parse::<f32>().ok())
                .map(f64::from);
            let source =
                source.map_or_else(|| text.unwrap_or("").to_owned(), |f| format!("{f:.6}"));
            let same = held
                .parse::<f64>()
                .is_ok_and(|h| format!("{h:.6}") == source);
            (source, same)
        }
        AttributeType::Json => {
            // Sphinx keeps objects and arrays only; anything else is NULL.
            let source = text
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .filter(|v| v.is_object() || v.is_array());
            let shown = match &source {
                Some(_) => text.unwrap_or("").to_owned(),
                None => "NULL".to_owned(),
            };
            let same = match held {
                "" | "NULL" => source.is_none(),
                // searchd cannot print some numbers back as JSON (it
                // overflows on huge ones): what it holds is not readable,
                // so not compared.
                _ => match serde_json::from_str::<serde_json::Value>(held) {
                    Ok(have) => source.as_ref().is_some_and(|s| json_same(s, &have)),
                    Err(_) => true,
                },
            };
            (shown, same)
        }
    };
    (!same).then(|| (source, held.to_owned()))
}

/// JSON equality as Sphinx stores it: integers exactly, other numbers as
/// the six decimals searchd prints, objects in any key order.
fn json_same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => format!("{x:.6}") == format!("{y:.6}"),
                _ => false,
            },
        },
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_same(x, y))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_compare_as_searchd_shows_them() {
        let num = |s: &str| Cell::Number(s.to_owned());
        assert_eq!(
            attribute_diff(AttributeType::Float, &num("1.1"), "1.100000"),
            None
        );
        assert_eq!(
            attribute_diff(AttributeType::Float, &Cell::Null, "0.000000"),
            None
        );
        assert_eq!(
            attribute_diff(AttributeType::Float, &num("1.5"), "2.500000"),
            Some(("1.500000".to_owned(), "2.500000".to_owned()))
        );
        assert_eq!(
            attribute_diff(AttributeType::Bigint, &Cell::Null, "0"),
            None
        );
        assert_eq!(
            attribute_diff(AttributeType::String, &Cell::Null, "x"),
            Some((String::new(), "x".to_owned()))
        );
        let json = |s: &str| Cell::Text(s.to_owned());
        assert_eq!(
            attribute_diff(
                AttributeType::Json,
                &json(r#"{"b": [1, 2.5, "x\"y"], "a": null}"#),
                r#"{"a":null,"b":[1,2.500000,"x\"y"]}"#
            ),
            None
        );
        assert_eq!(
            attribute_diff(AttributeType::Json, &json("5"), "NULL"),
            None
        );
        assert!(attribute_diff(AttributeType::Json, &json("[1]"), "[2]").is_some());
        assert!(attribute_diff(AttributeType::Json, &json("[1]"), "").is_some());
    }
}
