//! Which source table each destination of a state sink holds.
//!
//! A sink that applies state keeps one source table per destination (an
//! index, a table, a key space): its keys, its versions and its truncates
//! belong to that table. A name template that maps two source tables to
//! one destination (`"{table}"` over two schemas, or a route naming one
//! table for several) would merge their rows, let equal keys overwrite each
//! other, and let a truncate of one wipe the other. The sinks record the
//! first source table seen for each destination and stop with a
//! configuration error naming both when another one arrives.

use std::collections::HashMap;

use weir_core::{SinkError, TableSchema};

/// Destination name → the source table (`schema.table`) written to it.
#[derive(Debug, Default)]
pub struct Owners {
    by_destination: HashMap<String, (String, String)>,
}

impl Owners {
    /// Records that `source` is written to `destination` (`what` names the
    /// kind of destination in the error: "index", "table", "key space"),
    /// or fails when another source table already is.
    pub fn claim(
        &mut self,
        what: &str,
        destination: &str,
        source: &TableSchema,
    ) -> Result<(), SinkError> {
        if let Some((schema, name)) = self.by_destination.get(destination) {
            if *schema == source.schema && *name == source.name {
                return Ok(());
            }
            return Err(SinkError::Config(format!(
                "{what} {destination:?} would hold two source tables, {schema}.{name} and {}: their rows \
                 would merge and a truncate of one would remove the other's; give each its own \
                 name (use {{schema}} and {{table}} in the template, or a route per table)",
                source.qualified_name()
            )));
        }
        self.by_destination.insert(
            destination.to_owned(),
            (source.schema.clone(), source.name.clone()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ReplicaIdentity;

    fn table(schema: &str, name: &str) -> TableSchema {
        TableSchema {
            id: 1,
            version: 1,
            schema: schema.into(),
            name: name.into(),
            columns: Vec::new(),
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn a_second_source_table_for_one_destination_is_refused() {
        let mut owners = Owners::default();
        owners
            .claim("index", "orders", &table("eu", "orders"))
            .unwrap();
        owners
            .claim("index", "orders", &table("eu", "orders"))
            .unwrap();
        owners
            .claim("index", "eu_items", &table("eu", "items"))
            .unwrap();
        let err = owners
            .claim("index", "orders", &table("us", "orders"))
            .unwrap_err();
        assert!(matches!(err, SinkError::Config(_)));
        let text = err.to_string();
        assert!(text.contains("\"orders\""), "{text}");
        assert!(text.contains("eu.orders and us.orders"), "{text}");
    }

    #[test]
    fn a_dot_in_a_table_name_does_not_confuse_owners() {
        let mut owners = Owners::default();
        owners.claim("table", "t", &table("a", "b.c")).unwrap();
        assert!(owners.claim("table", "t", &table("a.b", "c")).is_err());
        owners.claim("table", "t", &table("a", "b.c")).unwrap();
    }
}
