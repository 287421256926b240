//! Table schemas, as announced by pgoutput Relation messages.

/// How much of the old row Postgres logs for UPDATE and DELETE.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// Primary-key columns (the default).
    Default,
    /// Nothing.
    Nothing,
    /// Every column.
    Full,
    /// The columns of a chosen unique index.
    Index,
}

/// One column of a captured table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Postgres type OID.
    pub type_oid: u32,
    /// Postgres type name, such as `int4`, `varchar` or `myschema.mood`.
    pub type_name: String,
    /// Type modifier (`atttypmod`), `-1` when none.
    pub type_modifier: i32,
    /// Whether the column is part of the replica identity (normally the primary key).
    pub key: bool,
}

/// The shape of a captured table at one point in the WAL.
///
/// Postgres re-announces a table after its schema changes; each announcement
/// that differs gets the next `version`, so a row is always read with the
/// schema it was written under.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    /// The table's OID.
    pub id: u32,
    /// Increments each time the announced schema changes.
    pub version: u32,
    /// Schema (namespace) name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns, in the order values appear in rows.
    pub columns: Vec<Column>,
    /// What the old row of an UPDATE or DELETE contains.
    pub replica_identity: ReplicaIdentity,
}

impl TableSchema {
    /// The index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `schema.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}
