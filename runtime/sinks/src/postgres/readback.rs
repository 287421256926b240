//! Reading back the `postgres` sink's target tables for `weir verify`: the
//! comparison runs in the target, one statement per table and shape of a
//! batch, so only the differences travel back.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};
use weir_core::{
    ChangeEvent, ColumnDiff, Held, HeldKey, KeyPage, Readback, SinkError, SinkRecord, TableSchema,
    Value,
};

use super::config::{PostgresSinkConfig, SPREAD_BY_OP, TableTemplate};
use super::encode::{column_text, quote_ident};
use super::session::Session;
use super::sink::{Kind, TEXT_FORMS, TableName, describe, describe_table, kind, table_name};
use super::statements::Target;

/// Reads back what a `postgres` sink's target tables hold.
pub struct PostgresReadback {
    name: String,
    config: PostgresSinkConfig,
    template: TableTemplate,
    session: Session,
    /// Target tables by quoted name.
    tables: HashMap<String, Arc<Table>>,
}

/// A target table, with how each of its columns compares.
struct Table {
    target: Target,
    /// Column name → whether its type has an equality that Postgres can
    /// use (`IS NOT DISTINCT FROM`); the others (`json`, `xml`, `point`,
    /// arrays of those, composites) compare by their text output.
    equality: HashMap<String, bool>,
}

/// How one column of a comparison statement compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// With the type's `=`, as `IS NOT DISTINCT FROM`.
    Equal,
    /// By the text output of both sides.
    Text,
    /// The target's type refuses the source's text: the column differs.
    Refused,
}

/// One column a statement sends.
#[derive(Clone)]
struct Sent {
    name: String,
    key: bool,
    mode: Mode,
}

/// The records of a batch that go to one table with one set of columns.
struct Group {
    table: Arc<Table>,
    /// `delete` records: only whether the key is held.
    delete: bool,
    columns: Vec<Sent>,
    /// Index in the batch of each record.
    records: Vec<usize>,
    /// Per column, the text of each record's value (`None` for NULL).
    texts: Vec<Vec<Option<String>>>,
}

/// What one record's row of a comparison statement says.
struct Found {
    found: bool,
    /// Per compared (non-key) column: whether it is the same, and the
    /// target's text when it is not.
    columns: Vec<(bool, Option<String>)>,
}

impl PostgresReadback {
    /// Connects to the sink's target database, read-only.
    pub async fn connect(
        name: &str,
        config: PostgresSinkConfig,
    ) -> Result<PostgresReadback, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let template = TableTemplate::parse(&config.table).map_err(SinkError::Config)?;
        let mut readback = PostgresReadback {
            name: name.to_owned(),
            session: Session::new(name, &config),
            config,
            template,
            tables: HashMap::new(),
        };
        readback.ensure_client().await?;
        Ok(readback)
    }

    async fn ensure_client(&mut self) -> Result<(), SinkError> {
        if self.session.is_open() {
            return Ok(());
        }
        let mut cfg = self.config.connection(&self.name);
        cfg.application_name.push_str("-verify");
        // The sink's text forms, so that each text casts to the value the
        // sink's write stores; read-only, since verifying must change
        // nothing.
        let setup = format!("{TEXT_FORMS}; SET default_transaction_read_only = on");
        self.session
            .open(&cfg, &setup, "setting up the session")
            .await
    }

    /// The target table of `event` under `topic`, as the sink's write
    /// names it, looked up the first time.
    async fn table(
        &mut self,
        event: &ChangeEvent,
        topic: Option<&str>,
    ) -> Result<Arc<Table>, SinkError> {
        if topic.is_some_and(|t| t.contains("{op}")) {
            return Err(SinkError::Config(format!(
                "route topic {:?}: {SPREAD_BY_OP}",
                topic.unwrap_or_default()
            )));
        }
        let TableName { sql, display, .. } = table_name(&self.template, event, topic)?;
        if let Some(t) = self.tables.get(&sql) {
            return Ok(Arc::clone(t));
        }
        let doing = format!("looking up table {display}");
        let target = describe_table(self.session.client(), &sql, &display)
            .await
            .map_err(|e| self.session.error(&doing, &e))?
            .ok_or_else(|| {
                let source = event.table.as_ref().map_or_else(String::new, |t| {
                    format!(" (for source table {})", t.qualified_name())
                });
                SinkError::Config(format!(
                    "{}: table {display} does not exist{source}",
                    self.session.place
                ))
            })?;
        let rows = self
            .session
            .client()
            .query(EQUALITY, &[&sql])
            .await
            .map_err(|e| self.session.error(&doing, &e))?;
        let equality = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .collect();
        let table = Arc::new(Table { target, equality });
        self.tables.insert(sql, Arc::clone(&table));
        Ok(table)
    }

    /// The columns of `schema` that a record sends, checked against the
    /// target (as the sink's write refuses a target without a source
    /// column).
    fn columns(
        &self,
        table: &Table,
        schema: &TableSchema,
        row: &[Value],
        delete: bool,
    ) -> Result<Vec<(usize, Sent)>, SinkError> {
        let mut out = Vec::new();
        for (i, c) in schema.columns.iter().enumerate() {
            if !table.target.columns.contains_key(&c.name) {
                return Err(SinkError::Config(format!(
                    "{}: table {} has no column {:?} that the source table {} has",
                    self.session.place,
                    table.target.display,
                    c.name,
                    schema.qualified_name()
                )));
            }
            // An unchanged TOAST value is not written: the target keeps
            // its own, whatever it is.
            let unchanged = matches!(row.get(i), Some(Value::Unchanged) | None);
            if !c.key && (delete || unchanged) {
                continue;
            }
            let mode = if table.equality.get(&c.name).copied().unwrap_or(false) {
                Mode::Equal
            } else {
                Mode::Text
            };
            out.push((
                i,
                Sent {
                    name: c.name.clone(),
                    key: c.key,
                    mode,
                },
            ));
        }
        if !out.iter().any(|(_, s)| s.key) {
            return Err(SinkError::Config(format!(
                "source table {} has no key columns, so its rows cannot be found in table {}",
                schema.qualified_name(),
                table.target.display
            )));
        }
        Ok(out)
    }

    async fn statement(&mut self, sql: &str, types: &[Type]) -> Result<Statement, SinkError> {
        self.session
            .prepare(sql, types)
            .await
            .map_err(|e| self.session.error("preparing a comparison", &e))
    }

    /// Runs `group`'s comparison for the records `which` (indexes into
    /// the group); `Ok(Err(..))` when the target refused a value.
    async fn run(
        &mut self,
        group: &Group,
        columns: &[Sent],
        which: &[usize],
    ) -> Result<Result<Vec<Found>, tokio_postgres::Error>, SinkError> {
        let sql = compare_sql(&group.table.target, columns, group.delete);
        let statement = self
            .statement(&sql, &vec![Type::TEXT_ARRAY; columns.len()])
            .await?;
        let arrays: Vec<Vec<Option<&str>>> = group
            .texts
            .iter()
            .map(|column| which.iter().map(|&r| column[r].as_deref()).collect())
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = match self.session.client().query(&statement, &params).await {
            Ok(rows) => rows,
            Err(e) if kind(&e) == Kind::Record => return Ok(Err(e)),
            Err(e) => {
                let doing = format!("comparing rows of table {}", group.table.target.display);
                return Err(self.session.error(&doing, &e));
            }
        };
        let compared = columns.iter().filter(|c| !c.key && !group.delete).count();
        let mut found: Vec<Option<Found>> = (0..which.len()).map(|_| None).collect();
        for row in rows {
            let ord = usize::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            // A target without a unique key may hold a key twice: the
            // first row found stands for it.
            if let Some(slot @ None) = ord.checked_sub(1).and_then(|i| found.get_mut(i)) {
                *slot = Some(read_found(&row, compared));
            }
        }
        Ok(Ok(found
            .into_iter()
            .map(|f| {
                f.unwrap_or(Found {
                    found: false,
                    columns: Vec::new(),
                })
            })
            .collect()))
    }

    /// The [`Held`] of each record of `group`, into `held`.
    async fn compare_group(&mut self, group: &Group, held: &mut [Held]) -> Result<(), SinkError> {
        let all: Vec<usize> = (0..group.records.len()).collect();
        let columns = group_columns(group, &[]);
        match self.run(group, &columns, &all).await? {
            Ok(found) => {
                for (r, f) in found.into_iter().enumerate() {
                    held[group.records[r]] = judge(group, &columns, r, &f);
                }
            }
            // A value the target's type refuses fails the whole statement:
            // the records one by one, to find which.
            Err(_) => {
                for r in all {
                    held[group.records[r]] = self.compare_one(group, r).await?;
                }
            }
        }
        Ok(())
    }

    /// One record of `group` alone, when a value of the group was refused.
    async fn compare_one(&mut self, group: &Group, r: usize) -> Result<Held, SinkError> {
        let columns = group_columns(group, &[]);
        if let Ok(found) = self.run(group, &columns, &[r]).await? {
            return Ok(judge(group, &columns, r, &found[0]));
        }
        if group.delete {
            // Its key is no value of the target's key type: no row has it.
            return Ok(Held::Same);
        }
        let mut refused = Vec::new();
        for (i, c) in group.columns.iter().enumerate() {
            let Some(text) = &group.texts[i][r] else {
                continue;
            };
            let cast = &group.table.target.columns[&c.name];
            let sql = format!("SELECT $1::text::{cast}");
            let statement = self.statement(&sql, &[Type::TEXT]).await?;
            match self.session.client().query(&statement, &[text]).await {
                Ok(_) => {}
                Err(e) if kind(&e) == Kind::Record => {
                    if c.key {
                        // No row of the target can have this key.
                        return Ok(Held::Missing);
                    }
                    refused.push(i);
                }
                Err(e) => return Err(self.session.error("checking a value", &e)),
            }
        }
        let columns = group_columns(group, &refused);
        match self.run(group, &columns, &[r]).await? {
            Ok(found) => Ok(judge(group, &columns, r, &found[0])),
            Err(e) => Err(SinkError::Config(format!(
                "{}: comparing a row of table {}: {}",
                self.session.place,
                group.table.target.display,
                describe(&e)
            ))),
        }
    }
}

/// Per column of each table, whether `IS NOT DISTINCT FROM` can compare
/// it: its type (under a domain; for an array, the element's) has an `=`
/// that is a real equality (mergeable or hashable, which `box`'s equal
/// areas are not), or is an enum or a range, whose `=` comes from a
/// polymorphic one.
const EQUALITY: &str = "SELECT a.attname::text, \
       t.typtype IN ('e', 'r', 'm') OR EXISTS (SELECT 1 FROM pg_operator o \
         WHERE o.oprname = '=' AND o.oprleft = t.oid AND o.oprright = t.oid \
         AND (o.oprcanmerge OR o.oprcanhash)) \
     FROM pg_attribute a \
     JOIN pg_type t0 ON t0.oid = a.atttypid \
     JOIN pg_type t1 ON t1.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END \
     JOIN pg_type t2 ON t2.oid = CASE WHEN t1.typcategory = 'A' AND t1.typelem <> 0 \
       THEN t1.typelem ELSE t1.oid END \
     JOIN pg_type t ON t.oid = CASE WHEN t2.typtype = 'd' THEN t2.typbasetype ELSE t2.oid END \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

/// The group's columns, those at `refused` marked so.
fn group_columns(group: &Group, refused: &[usize]) -> Vec<Sent> {
    group
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| Sent {
            name: c.name.clone(),
            key: c.key,
            mode: if refused.contains(&i) {
                Mode::Refused
            } else {
                c.mode
            },
        })
        .collect()
}

/// The comparison of many rows with `table`: the texts of each row (one
/// `text[]` per column), cast as the sink's write casts them, joined with
/// the target on the key; per row its ordinal, whether the key is held,
/// and per other column whether it is the same and, when not, the
/// target's text.
fn compare_sql(target: &Target, columns: &[Sent], delete: bool) -> String {
    let value = |i: usize, c: &Sent| format!("weir_rows.c{}::{}", i + 1, target.columns[&c.name]);
    let mut select = vec!["weir_rows.weir_ord".to_owned()];
    let mut on = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let held = format!("weir_target.{}", quote_ident(&c.name));
        if c.key {
            if on.is_empty() {
                // A key matched with `=` is never NULL.
                select.push(format!("{held} IS NOT NULL"));
            }
            on.push(format!("{held} = {}", value(i, c)));
            continue;
        }
        if delete {
            continue;
        }
        let same = match c.mode {
            Mode::Equal => format!("{held} IS NOT DISTINCT FROM {}", value(i, c)),
            Mode::Text => format!("{held}::text IS NOT DISTINCT FROM ({})::text", value(i, c)),
            Mode::Refused => "false".to_owned(),
        };
        select.push(format!("({same})"));
        select.push(format!(
            "CASE WHEN ({same}) THEN NULL ELSE {held}::text END"
        ));
    }
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    format!(
        "SELECT {} FROM unnest({}) WITH ORDINALITY AS weir_rows({}, weir_ord) \
         LEFT JOIN {} AS weir_target ON {}",
        select.join(", "),
        arrays.join(", "),
        aliases.join(", "),
        target.sql,
        on.join(" AND ")
    )
}

fn read_found(row: &Row, compared: usize) -> Found {
    Found {
        found: row.get(1),
        columns: (0..compared)
            .map(|i| {
                (
                    row.get::<_, Option<bool>>(2 + 2 * i).unwrap_or(false),
                    row.get(3 + 2 * i),
                )
            })
            .collect(),
    }
}

/// What record `r` of `group` finds, compared through `columns`.
fn judge(group: &Group, columns: &[Sent], r: usize, found: &Found) -> Held {
    match (group.delete, found.found) {
        (true, true) => return Held::Extra,
        (true, false) => return Held::Same,
        (false, false) => return Held::Missing,
        (false, true) => {}
    }
    let compared = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.key)
        .zip(&found.columns);
    let diffs: Vec<ColumnDiff> = compared
        .filter(|(_, (same, _))| !same)
        .map(|((i, c), (_, held))| ColumnDiff {
            column: c.name.clone(),
            source: shown(group.texts[i][r].as_deref()),
            sink: shown(held.as_deref()),
        })
        .collect();
    if diffs.is_empty() {
        Held::Same
    } else {
        Held::Differs(diffs)
    }
}

fn shown(text: Option<&str>) -> String {
    text.unwrap_or("NULL").to_owned()
}

/// The page's cursor: the last key's texts, as JSON.
fn cursor_of(key: &[Option<String>]) -> String {
    serde_json::to_string(key).expect("strings serialize")
}

#[async_trait::async_trait]
impl Readback for PostgresReadback {
    fn compares(&self) -> String {
        "each row's columns as the sink writes them (its casts of its texts), compared in the \
         target with IS NOT DISTINCT FROM (by text for types without an equality, such as \
         json), found by the key columns; the progress table is bookkeeping and not compared"
            .to_owned()
    }

    async fn compare(&mut self, records: &[SinkRecord]) -> Result<Vec<Held>, SinkError> {
        self.ensure_client().await?;
        let mut held = vec![Held::Same; records.len()];
        let mut groups: Vec<Group> = Vec::new();
        let mut by_shape: HashMap<(String, bool, Vec<String>), usize> = HashMap::new();
        for (index, record) in records.iter().enumerate() {
            let Some((event, schema, row, delete)) = weir_core::expected(record) else {
                continue;
            };
            let table = self.table(event, record.topic.as_deref()).await?;
            let columns = self.columns(&table, schema, row, delete)?;
            let shape = (
                table.target.sql.clone(),
                delete,
                columns.iter().map(|(_, c)| c.name.clone()).collect(),
            );
            let g = *by_shape.entry(shape).or_insert_with(|| {
                groups.push(Group {
                    table: Arc::clone(&table),
                    delete,
                    texts: columns.iter().map(|_| Vec::new()).collect(),
                    columns: columns.iter().map(|(_, c)| c.clone()).collect(),
                    records: Vec::new(),
                });
                groups.len() - 1
            });
            let group = &mut groups[g];
            group.records.push(index);
            for (texts, (i, _)) in group.texts.iter_mut().zip(&columns) {
                texts.push(column_text(&row[*i]));
            }
        }
        for group in &groups {
            self.compare_group(group, &mut held).await?;
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
        self.ensure_client().await?;
        // The name as the sink's write gives it to a `read` of the table,
        // which is what the records to compare are.
        let event = ChangeEvent::read_of(table);
        let target = self.table(&event, topic).await?;
        let keys: Vec<&str> = table
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.as_str())
            .collect();
        if keys.is_empty() {
            return Err(SinkError::Config(format!(
                "source table {} has no key columns, so the keys of table {} cannot be listed",
                table.qualified_name(),
                target.target.display
            )));
        }
        let mut casts = Vec::with_capacity(keys.len());
        for k in &keys {
            let cast = target.target.columns.get(*k).ok_or_else(|| {
                SinkError::Config(format!(
                    "{}: table {} has no column {k:?} that the source table {} has",
                    self.session.place,
                    target.target.display,
                    table.qualified_name()
                ))
            })?;
            casts.push(cast.clone());
        }
        let after: Option<Vec<Option<String>>> = cursor
            .map(|c| {
                serde_json::from_str::<Vec<Option<String>>>(&c)
                    .ok()
                    .filter(|k| k.len() == keys.len())
                    .ok_or_else(|| {
                        SinkError::Config(format!(
                            "cursor {c:?} is not one of this readback's for table {}",
                            target.target.display
                        ))
                    })
            })
            .transpose()?;
        let quoted: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
        // The type's output text (`format`), which is how Postgres prints
        // a key and what its input reads back; `::text` is a cast, which
        // for `bool`, `char(n)` and `inet` writes something else. Named
        // apart from the key columns: ORDER BY a column's own name would
        // sort by the output column, the text.
        let texts: Vec<String> = quoted
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!("CASE WHEN {k} IS NULL THEN NULL ELSE format('%s', {k}) END AS weir_k{i}")
            })
            .collect();
        let limit = limit.max(1);
        let mut sql = format!("SELECT {} FROM {}", texts.join(", "), target.target.sql);
        if after.is_some() {
            let params: Vec<String> = casts
                .iter()
                .enumerate()
                .map(|(i, cast)| format!("${}::text::{cast}", i + 1))
                .collect();
            // Keyset pagination: the key's btree order, from its index.
            sql.push_str(&format!(
                " WHERE ({}) > ({})",
                quoted.join(", "),
                params.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", quoted.join(", ")));
        let types = vec![Type::TEXT; if after.is_some() { keys.len() } else { 0 }];
        let statement = self.statement(&sql, &types).await?;
        let after = after.unwrap_or_default();
        let params: Vec<&(dyn ToSql + Sync)> =
            after.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self
            .session
            .client()
            .query(&statement, &params)
            .await
            .map_err(|e| {
                self.session.error(
                    &format!("listing the keys of table {}", target.target.display),
                    &e,
                )
            })?;
        let mut page = KeyPage::default();
        let mut last = None;
        for row in &rows {
            let values: Vec<Option<String>> = (0..keys.len()).map(|i| row.get(i)).collect();
            let name = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| format!("{k}={}", shown(v.as_deref())))
                .collect::<Vec<_>>()
                .join(",");
            // A NULL in a key column (a target without a primary key) is
            // no key of the source's.
            let key = values.iter().cloned().collect::<Option<Vec<String>>>();
            page.keys.push(HeldKey { name, key });
            last = Some(values);
        }
        if rows.len() >= limit {
            page.cursor = last.as_deref().map(cursor_of);
        }
        Ok(page)
    }
}
