//! What plugins leave behind in the host beyond one call: their counters
//! (exported as metrics) and the tables they declared. Both outlive
//! instances and reloads, so a counter keeps counting across a hot swap
//! and a declared table keeps its id.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use weir_core::{Column, ReplicaIdentity, TableSchema};

/// Counter names one plugin may create. A plugin that makes up a name per
/// event would otherwise grow the host's memory and the metrics output
/// without bound.
pub(crate) const MAX_COUNTERS_PER_PLUGIN: usize = 256;
/// Longest counter name kept; longer ones are cut.
const MAX_COUNTER_NAME: usize = 64;
/// Tables all plugins together may declare.
pub(crate) const MAX_DECLARED_TABLES: usize = 4096;

/// Counters of every plugin, by plugin name then counter name.
#[derive(Default)]
pub(crate) struct Counters {
    by_plugin: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl Counters {
    /// Adds an instance's counts to its plugin's totals. Names past the
    /// per-plugin limit are dropped, and so reported by the return value.
    pub(crate) fn add(&self, plugin: &str, counts: &mut HashMap<String, u64>) -> usize {
        if counts.is_empty() {
            return 0;
        }
        let mut all = lock(&self.by_plugin);
        let totals = all.entry(plugin.to_owned()).or_default();
        let mut refused = 0;
        for (mut name, delta) in counts.drain() {
            if name.len() > MAX_COUNTER_NAME {
                let mut end = MAX_COUNTER_NAME;
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name.truncate(end);
            }
            let full = totals.len() >= MAX_COUNTERS_PER_PLUGIN;
            match totals.get_mut(&name) {
                Some(total) => *total = total.saturating_add(delta),
                None if full => refused += 1,
                None => {
                    totals.insert(name, delta);
                }
            }
        }
        refused
    }

    /// Every counter: (plugin, counter, total), sorted.
    pub(crate) fn snapshot(&self) -> Vec<(String, String, u64)> {
        lock(&self.by_plugin)
            .iter()
            .flat_map(|(plugin, counters)| {
                counters
                    .iter()
                    .map(move |(name, total)| (plugin.clone(), name.clone(), *total))
            })
            .collect()
    }
}

/// The shape of a declared table: what makes two declarations the same.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct TableShape {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// (name, type name, key) of each column, in order.
    pub(crate) columns: Vec<(String, String, bool)>,
}

/// Tables plugins declared, by shape. (Each instance keeps the ones it
/// declared by id: those are the ids its answers may use.)
pub(crate) struct DeclaredTables {
    inner: Mutex<Declared>,
    /// Ids are handed out downward from `u32::MAX`: table ids of captured
    /// tables are Postgres OIDs, which are allocated upward and in practice
    /// never come near the top of the range.
    next_id: AtomicU32,
}

#[derive(Default)]
struct Declared {
    by_shape: HashMap<TableShape, Arc<TableSchema>>,
}

impl Default for DeclaredTables {
    fn default() -> Self {
        DeclaredTables {
            inner: Mutex::default(),
            next_id: AtomicU32::new(u32::MAX),
        }
    }
}

impl DeclaredTables {
    /// The table of this shape, declared now if it is new; `None` when the
    /// limit of declared tables is reached.
    pub(crate) fn declare(&self, shape: TableShape) -> Option<Arc<TableSchema>> {
        let mut declared = lock(&self.inner);
        if let Some(table) = declared.by_shape.get(&shape) {
            return Some(table.clone());
        }
        if declared.by_shape.len() >= MAX_DECLARED_TABLES {
            return None;
        }
        let id = self.next_id.fetch_sub(1, Ordering::Relaxed);
        let any_key = shape.columns.iter().any(|(_, _, key)| *key);
        let table = Arc::new(TableSchema {
            id,
            version: 1,
            schema: shape.schema.clone(),
            name: shape.name.clone(),
            columns: shape
                .columns
                .iter()
                .map(|(name, type_name, key)| Column {
                    name: name.clone(),
                    // Not a Postgres type: the plugin names it; sinks only
                    // use the name.
                    type_oid: 0,
                    type_name: type_name.clone(),
                    type_modifier: -1,
                    key: *key,
                })
                .collect(),
            replica_identity: if any_key {
                ReplicaIdentity::Default
            } else {
                ReplicaIdentity::Nothing
            },
        });
        declared.by_shape.insert(shape, table.clone());
        Some(table)
    }
}

/// Neither registry holds an invariant a panic could break half-way.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str) -> TableShape {
        TableShape {
            schema: "public".into(),
            name: name.into(),
            columns: vec![("id".into(), "int4".into(), true)],
        }
    }

    #[test]
    fn the_same_shape_gets_the_same_id() {
        let tables = DeclaredTables::default();
        let a = tables.declare(shape("a")).unwrap();
        let again = tables.declare(shape("a")).unwrap();
        let b = tables.declare(shape("b")).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_ne!(a.id, b.id);
        assert_eq!(a.id, u32::MAX);
        assert_eq!(b.name, "b");
        assert_eq!(a.replica_identity, ReplicaIdentity::Default);
    }

    #[test]
    fn declarations_are_bounded() {
        let tables = DeclaredTables::default();
        for i in 0..MAX_DECLARED_TABLES {
            assert!(tables.declare(shape(&i.to_string())).is_some());
        }
        assert!(tables.declare(shape("one too many")).is_none());
        assert!(
            tables.declare(shape("0")).is_some(),
            "known shapes still resolve"
        );
    }

    #[test]
    fn counters_add_up_and_are_bounded() {
        let counters = Counters::default();
        let mut counts: HashMap<String, u64> = [("seen".to_owned(), 2)].into();
        assert_eq!(counters.add("p", &mut counts), 0);
        assert!(counts.is_empty(), "counts are moved into the totals");
        counts.insert("seen".into(), 3);
        counters.add("p", &mut counts);
        assert_eq!(counters.snapshot(), [("p".into(), "seen".into(), 5)]);

        let mut many: HashMap<String, u64> = (0..MAX_COUNTERS_PER_PLUGIN + 10)
            .map(|i| (format!("c{i}"), 1))
            .collect();
        let refused = counters.add("q", &mut many);
        assert_eq!(refused, 10);
        let q = counters
            .snapshot()
            .iter()
            .filter(|(p, ..)| p == "q")
            .count();
        assert_eq!(q, MAX_COUNTERS_PER_PLUGIN);
    }
}
