//! Tables as announced by `on-table`, with column lookup by name.

use std::collections::HashMap;

use crate::wit::{self, Column, Value};

/// Above this many columns a name index beats scanning the column list.
const INDEX_THRESHOLD: usize = 16;

/// A captured table: its name and columns, in the order values appear in
/// rows.
///
/// Plugins receive tables from the host; tests build them with
/// [`Table::new`] and the `with_*` methods.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    raw: wit::Table,
    /// Column name to position, for wide tables only.
    index: Option<HashMap<String, usize>>,
}

impl Table {
    /// A table with no columns yet, at version 1.
    pub fn new(id: u32, schema: impl Into<String>, name: impl Into<String>) -> Self {
        Table::from_wit(wit::Table {
            id,
            version: 1,
            schema: schema.into(),
            name: name.into(),
            columns: Vec::new(),
        })
    }

    /// Adds a key (replica identity) column.
    pub fn with_key(self, name: &str, type_name: &str) -> Self {
        self.with_new(name, type_name, true)
    }

    /// Adds an ordinary column.
    pub fn with_column(self, name: &str, type_name: &str) -> Self {
        self.with_new(name, type_name, false)
    }

    /// Sets the schema version.
    pub fn with_version(mut self, version: u32) -> Self {
        self.raw.version = version;
        self
    }

    /// Adds `column` as it is.
    pub fn with(mut self, column: Column) -> Self {
        self.raw.columns.push(column);
        Table::from_wit(self.raw)
    }

    fn with_new(self, name: &str, type_name: &str, key: bool) -> Self {
        self.with(Column {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            key,
        })
    }

    /// Declares a table with this one's schema, name and columns for
    /// changes the plugin builds itself, and returns it with the id the
    /// host gave it; see [`declare_table`](crate::declare_table).
    ///
    /// The usual way to add computed columns to a captured table: extend
    /// the announced table and declare the result, then copy each event
    /// into it with [`Event::to_table`](crate::Event::to_table).
    ///
    /// ```
    /// # use weir_plugin_sdk::Table;
    /// # let users = Table::new(16384, "public", "users").with_key("id", "int8");
    /// let enriched = users.clone().with_column("email_domain", "text").declare();
    /// assert_eq!(enriched.columns().len(), 2);
    /// assert_ne!(enriched.id(), users.id());
    /// ```
    pub fn declare(&self) -> Table {
        crate::declare_table(self.schema(), self.name(), self.raw.columns.clone())
    }

    /// Wraps a table announced by the host.
    pub fn from_wit(raw: wit::Table) -> Self {
        let index = (raw.columns.len() > INDEX_THRESHOLD).then(|| {
            raw.columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect()
        });
        Table { raw, index }
    }

    /// The announcement as the host sent it.
    pub fn as_wit(&self) -> &wit::Table {
        &self.raw
    }

    /// The table's id (its Postgres OID).
    pub fn id(&self) -> u32 {
        self.raw.id
    }

    /// The schema version; it grows when the table's columns change.
    pub fn version(&self) -> u32 {
        self.raw.version
    }

    /// The schema (namespace) name, such as `public`.
    pub fn schema(&self) -> &str {
        &self.raw.schema
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// `schema.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.raw.schema, self.raw.name)
    }

    /// Whether `qualified` is this table's `schema.name` (no allocation).
    pub fn is(&self, qualified: &str) -> bool {
        qualified
            .split_once('.')
            .is_some_and(|(s, n)| s == self.raw.schema && n == self.raw.name)
    }

    /// The columns, in row order.
    pub fn columns(&self) -> &[Column] {
        &self.raw.columns
    }

    /// The position of the column named `name` in a row.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.raw.columns.iter().position(|c| c.name == name),
        }
    }

    /// The value of column `name` in `row`, a row of this table.
    pub fn value<'r>(&self, row: &'r [Value], name: &str) -> Option<&'r Value> {
        row.get(self.column_index(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_columns_by_name_in_narrow_and_wide_tables() {
        let narrow = Table::new(1, "public", "t")
            .with_key("id", "int8")
            .with_column("b", "text");
        assert_eq!(narrow.column_index("b"), Some(1));
        assert_eq!(narrow.column_index("z"), None);
        assert!(narrow.is("public.t"));
        assert!(!narrow.is("public.tt"));
        assert!(!narrow.is("public"));

        let wide = (0..40).fold(Table::new(2, "s", "w"), |t, i| {
            t.with_column(&format!("c{i}"), "int4")
        });
        assert_eq!(wide.column_index("c39"), Some(39));
        assert_eq!(wide.column_index("nope"), None);
        let row: Vec<Value> = (0..40).map(Value::Int).collect();
        assert_eq!(wide.value(&row, "c7"), Some(&Value::Int(7)));
    }
}

/// A `schema.table` name from a plugin's configuration, where `schema.*`
/// stands for every table of the schema: what plugins' `tables` settings
/// hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePattern {
    schema: String,
    /// `None` for every table of the schema.
    table: Option<String>,
}

impl TablePattern {
    /// Parses `schema.table` or `schema.*`; the error names the `tables`
    /// config key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (schema, table) = text
            .split_once('.')
            .filter(|(s, t)| !s.is_empty() && !t.is_empty())
            .ok_or_else(|| format!("config key `tables`: expected schema.table, got {text:?}"))?;
        Ok(TablePattern {
            schema: schema.to_owned(),
            table: (table != "*").then(|| table.to_owned()),
        })
    }

    /// Whether the table `schema.table` is one the pattern names.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema == schema && self.table.as_deref().is_none_or(|t| t == table)
    }
}

#[cfg(test)]
mod pattern_tests {
    use super::TablePattern;

    #[test]
    fn patterns_name_a_table_or_a_schema() {
        let one = TablePattern::parse("public.users").unwrap();
        assert!(one.matches("public", "users"));
        assert!(!one.matches("public", "orders"));
        let all = TablePattern::parse("crm.*").unwrap();
        assert!(all.matches("crm", "anything"));
        assert!(!all.matches("public", "anything"));
        for bad in ["users", ".users", "public."] {
            assert!(
                TablePattern::parse(bad)
                    .unwrap_err()
                    .contains("expected schema.table"),
                "{bad}"
            );
        }
    }
}
