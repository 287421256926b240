//! The SQL that applies row changes to a target table: one statement per
//! change, and the same statements for many rows at once, which is how a
//! batch runs them when consecutive changes have one shape.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use weir_core::{Column, TableSchema, Value};

use super::encode::{column_text, quote_ident};

/// A target table as the catalog describes it.
pub(crate) struct Target {
    /// Quoted, possibly schema-qualified name, for SQL.
    pub(crate) sql: String,
    /// As the user would write it, for messages.
    pub(crate) display: String,
    /// Column name → the type its values are cast to: the type's own
    /// qualified name, without the column's modifier, so that the column's
    /// `varchar(n)` or `numeric(p,s)` check applies on assignment rather
    /// than a silent truncation by the cast (and `bpchar` is not `char(1)`).
    pub(crate) columns: HashMap<String, String>,
}

/// A statement with its parameters, all sent as text.
pub(crate) struct Step {
    pub(crate) sql: String,
    pub(crate) params: Params,
    /// For a one-row upsert or delete: the statement doing it for many
    /// rows, to run consecutive steps of one shape as one.
    pub(crate) many: Option<Arc<Many>>,
}

/// A statement's parameters.
pub(crate) enum Params {
    /// One value per parameter (`text`).
    Row(Vec<Option<String>>),
    /// One array per parameter (`text[]`), a value per row.
    Columns(Vec<Vec<Option<String>>>),
}

/// The many-row form of a one-row statement.
pub(crate) struct Many {
    /// Takes one `text[]` per parameter of the one-row statement.
    pub(crate) sql: String,
    /// Which parameters are the key: a statement may touch a row only once.
    pub(crate) key: Vec<usize>,
}

impl Many {
    /// The key values among a one-row statement's parameters.
    fn key_of<'a>(&self, params: &'a [Option<String>]) -> Vec<Option<&'a str>> {
        self.key.iter().map(|&k| params[k].as_deref()).collect()
    }
}

impl Step {
    fn one(sql: String, params: Vec<Option<String>>) -> Step {
        Step {
            sql,
            params: Params::Row(params),
            many: None,
        }
    }
}

/// The columns an upsert writes: all but those holding an unchanged TOAST
/// value, which the target keeps.
fn sent<'a>(
    table: &'a TableSchema,
    row: &'a [Value],
) -> Result<Vec<(&'a Column, &'a Value)>, String> {
    let mut out = Vec::with_capacity(row.len());
    for (c, v) in table.columns.iter().zip(row) {
        if matches!(v, Value::Unchanged) {
            if c.key {
                return Err(format!("key column {:?} has no value", c.name));
            }
            continue;
        }
        out.push((c, v));
    }
    if !out.iter().any(|(c, _)| c.key) {
        return Err("the row has no key columns".to_owned());
    }
    Ok(out)
}

/// `INSERT … ON CONFLICT (key) DO UPDATE`, for one row; `shapes` caches
/// the many-row form by the one-row statement.
pub(crate) fn upsert(
    target: &Target,
    table: &TableSchema,
    row: &[Value],
    shapes: &mut HashMap<String, Arc<Many>>,
) -> Result<Step, String> {
    let columns = sent(table, row)?;
    let mut values = Vec::with_capacity(columns.len());
    let mut params = Vec::with_capacity(columns.len());
    for (i, (c, v)) in columns.iter().enumerate() {
        params.push(column_text(v));
        values.push(format!("${}::{}", i + 1, target.columns[&c.name]));
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({}) {}",
        target.sql,
        names(&columns),
        values.join(", "),
        on_conflict(&columns)
    );
    let many = match shapes.get(&sql) {
        Some(m) => Arc::clone(m),
        None => {
            let m = Arc::new(upsert_many(target, &columns));
            shapes.insert(sql.clone(), Arc::clone(&m));
            m
        }
    };
    Ok(Step {
        sql,
        params: Params::Row(params),
        many: Some(many),
    })
}

fn names(columns: &[(&Column, &Value)]) -> String {
    columns
        .iter()
        .map(|(c, _)| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn on_conflict(columns: &[(&Column, &Value)]) -> String {
    let keys: Vec<String> = columns
        .iter()
        .filter(|(c, _)| c.key)
        .map(|(c, _)| quote_ident(&c.name))
        .collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|(c, _)| !c.key)
        .map(|(c, _)| {
            let name = quote_ident(&c.name);
            format!("{name} = EXCLUDED.{name}")
        })
        .collect();
    let action = if updates.is_empty() {
        "NOTHING".to_owned()
    } else {
        format!("UPDATE SET {}", updates.join(", "))
    };
    format!("ON CONFLICT ({}) DO {action}", keys.join(", "))
}

/// `unnest($1::text[], …) AS weir_rows(c1, …)`, for `n` parameters.
fn unnest(n: usize) -> String {
    let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let aliases: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
    format!(
        "unnest({}) AS weir_rows({})",
        arrays.join(", "),
        aliases.join(", ")
    )
}

fn upsert_many(target: &Target, columns: &[(&Column, &Value)]) -> Many {
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("weir_rows.c{}::{}", i + 1, target.columns[&c.name]))
        .collect();
    Many {
        sql: format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} {}",
            target.sql,
            names(columns),
            casts.join(", "),
            unnest(columns.len()),
            on_conflict(columns)
        ),
        key: columns
            .iter()
            .enumerate()
            .filter(|(_, (c, _))| c.key)
            .map(|(i, _)| i)
            .collect(),
    }
}

/// `UPDATE … SET` the new row's sent values `WHERE` the old key: a key
/// change that keeps the columns the new row did not carry. Moves nothing
/// when the old row is not there (the upsert that follows then writes what
/// it has).
pub(crate) fn rekey(
    target: &Target,
    table: &TableSchema,
    before: &[Value],
    after: &[Value],
) -> Result<Step, String> {
    let mut sets = Vec::new();
    let mut params = Vec::new();
    for (c, v) in sent(table, after)? {
        params.push(column_text(v));
        sets.push(format!(
            "{} = ${}::{}",
            quote_ident(&c.name),
            params.len(),
            target.columns[&c.name]
        ));
    }
    let mut conditions = Vec::new();
    for (c, v) in table.columns.iter().zip(before) {
        if c.key {
            params.push(column_text(v));
            conditions.push(format!(
                "{} = ${}::{}",
                quote_ident(&c.name),
                params.len(),
                target.columns[&c.name]
            ));
        }
    }
    Ok(Step::one(
        format!(
            "UPDATE {} SET {} WHERE {}",
            target.sql,
            sets.join(", "),
            conditions.join(" AND ")
        ),
        params,
    ))
}

/// `DELETE … WHERE key = …`, for one row; `shapes` caches the many-row
/// form by the one-row statement.
pub(crate) fn delete(
    target: &Target,
    table: &TableSchema,
    row: &[Value],
    shapes: &mut HashMap<String, Arc<Many>>,
) -> Result<Step, String> {
    let keys: Vec<(&Column, &Value)> = table
        .columns
        .iter()
        .zip(row)
        .filter(|(c, _)| c.key)
        .collect();
    if keys.is_empty() {
        return Err("the row has no key columns".to_owned());
    }
    let conditions: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            format!(
                "{} = ${}::{}",
                quote_ident(&c.name),
                i + 1,
                target.columns[&c.name]
            )
        })
        .collect();
    let sql = format!(
        "DELETE FROM {} WHERE {}",
        target.sql,
        conditions.join(" AND ")
    );
    let many = match shapes.get(&sql) {
        Some(m) => Arc::clone(m),
        None => {
            let matches: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, (c, _))| {
                    format!(
                        "weir_target.{} = weir_rows.c{}::{}",
                        quote_ident(&c.name),
                        i + 1,
                        target.columns[&c.name]
                    )
                })
                .collect();
            let m = Arc::new(Many {
                sql: format!(
                    "DELETE FROM {} AS weir_target USING {} WHERE {}",
                    target.sql,
                    unnest(keys.len()),
                    matches.join(" AND ")
                ),
                key: (0..keys.len()).collect(),
            });
            shapes.insert(sql.clone(), Arc::clone(&m));
            m
        }
    };
    Ok(Step {
        sql,
        params: Params::Row(keys.iter().map(|(_, v)| column_text(v)).collect()),
        many: Some(many),
    })
}

/// `TRUNCATE`.
pub(crate) fn truncate(target: &Target) -> Step {
    Step::one(format!("TRUNCATE {}", target.sql), Vec::new())
}

/// The key columns' values of `row`.
pub(crate) fn key_of<'a>(table: &TableSchema, row: &'a [Value]) -> Vec<&'a Value> {
    table
        .columns
        .iter()
        .zip(row)
        .filter(|(c, _)| c.key)
        .map(|(_, v)| v)
        .collect()
}

/// Runs of consecutive one-row steps with one statement, and keys that
/// differ, become one many-row step each. `owner[i]` (the batch record of
/// step i) follows: a merged step's is its first record's. The order of
/// what touches any one row is kept, and so is the order of everything
/// else: only neighbours merge.
pub(crate) fn coalesce(steps: Vec<Step>, owner: Vec<usize>) -> (Vec<Step>, Vec<usize>) {
    // Where each run ends, found while the steps are only borrowed.
    let mut ends = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let mut j = i + 1;
        if let (Some(many), Params::Row(first)) = (&steps[i].many, &steps[i].params) {
            let mut keys: HashSet<Vec<Option<&str>>> = HashSet::from([many.key_of(first)]);
            while let Some(Step {
                sql,
                params: Params::Row(p),
                many: Some(_),
            }) = steps.get(j)
            {
                if *sql != steps[i].sql || !keys.insert(many.key_of(p)) {
                    break;
                }
                j += 1;
            }
        }
        ends.push(j);
        i = j;
    }
    let mut merged = Vec::with_capacity(ends.len());
    let mut owners = Vec::with_capacity(ends.len());
    let mut steps = steps.into_iter();
    let mut start = 0;
    for end in ends {
        owners.push(owner[start]);
        let first = steps.next().expect("counted above");
        if end - start == 1 {
            merged.push(first);
        } else {
            let many = first.many.clone().expect("runs are of many-row steps");
            let Params::Row(values) = first.params else {
                unreachable!("runs are of one-row steps")
            };
            let mut columns: Vec<Vec<Option<String>>> = values
                .into_iter()
                .map(|v| {
                    let mut column = Vec::with_capacity(end - start);
                    column.push(v);
                    column
                })
                .collect();
            for step in steps.by_ref().take(end - start - 1) {
                let Params::Row(values) = step.params else {
                    unreachable!("runs are of one-row steps")
                };
                for (column, v) in columns.iter_mut().zip(values) {
                    column.push(v);
                }
            }
            merged.push(Step {
                sql: many.sql.clone(),
                params: Params::Columns(columns),
                many: None,
            });
        }
        start = end;
    }
    (merged, owners)
}
