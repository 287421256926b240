//! The `postgres` sink's I/O: one target transaction per batch, holding the
//! batch's changes and the sink's new position together.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};
use weir_core::{
    ChangeEvent, Lsn, Op, Position, Rejected, Sink, SinkError, SinkPayload, SinkRecord,
    TableSchema, TxnId, Value,
};
use weir_postgres::PgError;

use crate::owners::Owners;

use super::config::{PostgresSinkConfig, TableTemplate, split_fixed_name};
use super::encode::{quote_ident, quote_name};
use super::session::Session;
use super::statements::{
    Many, Params, Step, Target, coalesce, delete, key_of, rekey, truncate, upsert,
};

/// A sink applying row changes to tables of a Postgres database.
pub struct PostgresSink {
    name: String,
    config: PostgresSinkConfig,
    template: TableTemplate,
    /// `progress_table`, quoted.
    progress_sql: String,
    session: Session,
    /// Target tables by quoted name.
    targets: HashMap<String, Arc<Target>>,
    owners: Owners,
    /// The many-row form of each one-row statement.
    shapes: HashMap<String, Arc<Many>>,
    /// Where this sink's last committed batch ended, and the transaction
    /// (as this process delivered it) of its last record, to tell a batch
    /// that continues that delivery from a replay; see [`plan`].
    last_committed: Option<(Progress, TxnId)>,
}

/// A sink's applied position as `progress_table` stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The last applied record's position.
    pub(crate) position: Position,
    /// How many records at exactly that position have been taken, counted
    /// from the first of them: several records may share a position (a
    /// plugin may turn one change into several), and a batch may end
    /// between two of them.
    pub(crate) taken: u64,
}

/// What to do with one record of a batch.
pub(crate) struct Decision {
    /// Whether it was already applied (or is older than what was).
    pub(crate) skip: bool,
}

/// What [`plan`] decided for a batch.
pub(crate) struct Plan {
    /// Per record, whether to apply it.
    pub(crate) decisions: Vec<Decision>,
    /// The progress to store: the furthest of the stored one and this
    /// batch's.
    pub(crate) latest: Option<Progress>,
    /// Where this batch ended: its last record's position and ordinal
    /// there (+1), which the next batch of the same delivery continues.
    pub(crate) end: Option<Progress>,
}

/// Which records of `batch` to apply, given the stored progress and the
/// run the batch continues (`start`: where the previous batch of the same
/// delivery ended, when it ended at the batch's first position).
///
/// A record is skipped when its position is before the stored one, or at
/// it and among the first `taken` records there. The ordinal of a record
/// within its position counts from the start of that position's run in the
/// delivery: from `start.taken` for a batch continuing one, else from the
/// batch's first record at the position (a replay starts at a transaction
/// boundary, and a new position starts a new run).
pub(crate) fn plan(
    positions: &[Position],
    stored: Option<Progress>,
    start: Option<Progress>,
) -> Plan {
    let mut decisions = Vec::with_capacity(positions.len());
    let mut run: Option<Progress> = start;
    let mut latest = stored;
    for &p in positions {
        let ordinal = match run {
            Some(r) if r.position == p => r.taken,
            _ => 0,
        };
        let r = Progress {
            position: p,
            taken: ordinal + 1,
        };
        run = Some(r);
        let skip = match stored {
            Some(s) => p < s.position || (p == s.position && ordinal < s.taken),
            None => false,
        };
        decisions.push(Decision { skip });
        if latest.is_none_or(|l| (r.position, r.taken) > (l.position, l.taken)) {
            latest = Some(r);
        }
    }
    Plan {
        decisions,
        latest,
        end: if positions.is_empty() { start } else { run },
    }
}

impl PostgresSink {
    /// Connects to the target, creates `progress_table` when missing, and
    /// makes the sink.
    pub async fn connect(
        name: &str,
        config: PostgresSinkConfig,
    ) -> Result<PostgresSink, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let template = TableTemplate::parse(&config.table).map_err(SinkError::Config)?;
        let (schema, table) =
            split_fixed_name(&config.progress_table).map_err(SinkError::Config)?;
        let progress_sql = quote_name(schema, table);
        let mut sink = PostgresSink {
            name: name.to_owned(),
            session: Session::new(name, &config),
            config,
            template,
            progress_sql,
            targets: HashMap::new(),
            owners: Owners::default(),
            shapes: HashMap::new(),
            last_committed: None,
        };
        sink.ensure_client().await?;
        Ok(sink)
    }

    async fn ensure_client(&mut self) -> Result<(), SinkError> {
        if self.session.is_open() {
            return Ok(());
        }
        // Commit must mean durable whatever the server's default, and the
        // text forms sent back must be read the way Weir writes them.
        let setup = format!(
            "SET synchronous_commit = on; {TEXT_FORMS};
             CREATE TABLE IF NOT EXISTS {} (
                 sink text PRIMARY KEY,
                 commit_lsn pg_lsn NOT NULL,
                 seq bigint NOT NULL,
                 taken bigint NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now()
             )",
            self.progress_sql
        );
        let doing = format!("creating {}", self.config.progress_table);
        let cfg = self.config.connection(&self.name);
        self.session.open(&cfg, &setup, &doing).await
    }

    /// The target table of `event` (routed by `topic` when given), looked
    /// up in the catalog the first time, or created when allowed.
    async fn target(
        &mut self,
        event: &ChangeEvent,
        topic: Option<&str>,
    ) -> Result<Arc<Target>, SinkError> {
        let TableName {
            schema,
            sql,
            display,
        } = table_name(&self.template, event, topic)?;
        if let Some(source) = &event.table {
            self.owners.claim("table", &sql, source)?;
        }
        if let Some(t) = self.targets.get(&sql) {
            return Ok(Arc::clone(t));
        }
        let mut target = self.describe_table(&sql, &display).await?;
        if target.is_none() {
            let Some(source) = &event.table else {
                return Err(SinkError::Config(format!(
                    "{}: table {display} does not exist",
                    self.session.place
                )));
            };
            if !self.config.create_tables {
                return Err(SinkError::Config(format!(
                    "{}: table {display} does not exist (for source table {}.{}); create it, \
                     or set create_tables = true",
                    self.session.place, source.schema, source.name
                )));
            }
            self.create_table(schema.as_deref(), &sql, &display, source)
                .await?;
            target = self.describe_table(&sql, &display).await?;
        }
        let target = Arc::new(target.ok_or_else(|| {
            SinkError::Config(format!(
                "{}: table {display} does not exist",
                self.session.place
            ))
        })?);
        self.targets.insert(sql, Arc::clone(&target));
        Ok(target)
    }

    async fn describe_table(&self, sql: &str, display: &str) -> Result<Option<Target>, SinkError> {
        describe_table(self.session.client(), sql, display)
            .await
            .map_err(|e| {
                self.session
                    .error(&format!("looking up table {display}"), &e)
            })
    }

    async fn create_table(
        &self,
        schema: Option<&str>,
        sql: &str,
        shown: &str,
        source: &TableSchema,
    ) -> Result<(), SinkError> {
        let doing = format!("creating table {shown}");
        let mut columns = Vec::new();
        for c in &source.columns {
            let ty = if c.type_oid < 16384 {
                // Built-in types have the same OID everywhere; the target
                // spells them with their modifier (`varchar(20)`).
                self.session
                    .client()
                    .query_one(
                        "SELECT format_type($1::text::oid, $2::text::int4)",
                        &[&c.type_oid.to_string(), &c.type_modifier.to_string()],
                    )
                    .await
                    .map_err(|e| self.session.error(&doing, &e))?
                    .get::<_, String>(0)
            } else if c.type_name.starts_with("oid:") {
                return Err(SinkError::Config(format!(
                    "{}: cannot create table {shown}: the type of column {:?} of {}.{} is \
                     unknown (type {}); create the table yourself",
                    self.session.place, c.name, source.schema, source.name, c.type_name
                )));
            } else {
                match c.type_name.split_once('.') {
                    Some((s, t)) => quote_name(Some(s), t),
                    None => quote_ident(&c.type_name),
                }
            };
            columns.push(format!("{} {ty}", quote_ident(&c.name)));
        }
        let keys: Vec<String> = source
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| quote_ident(&c.name))
            .collect();
        if !keys.is_empty() {
            columns.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        let mut ddl = String::new();
        if let Some(s) = schema {
            ddl.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {};\n",
                quote_ident(s)
            ));
        }
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {sql} ({})",
            columns.join(", ")
        ));
        tracing::info!(sink = %self.name, table = %shown, "creating the target table");
        self.session
            .client()
            .batch_execute(&ddl)
            .await
            .map_err(|e| self.session.error(&doing, &e))
    }

    /// The statements that apply one record.
    fn steps(
        &mut self,
        record: &SinkRecord,
        target: Option<&Target>,
        steps: &mut Vec<Step>,
    ) -> Result<(), String> {
        let event = match &record.payload {
            SinkPayload::Change(e) => e,
            SinkPayload::Raw(_) => {
                return Err("a raw record cannot be applied to a table".to_owned());
            }
        };
        let Some(target) = target else {
            // Logical messages change no table.
            return Ok(());
        };
        let Some(table) = &event.table else {
            return Ok(());
        };
        for c in &table.columns {
            if !target.columns.contains_key(&c.name) {
                return Err(format!("missing column {:?}", c.name));
            }
        }
        let shapes = &mut self.shapes;
        match event.op {
            Op::Truncate => steps.push(truncate(target)),
            Op::Delete => {
                let row = event.before.as_ref().or(event.after.as_ref());
                steps.push(delete(
                    target,
                    table,
                    row.ok_or("a delete without a row")?,
                    shapes,
                )?);
            }
            Op::Insert | Op::Update | Op::Read => {
                let after = event.after.as_ref().ok_or("a change without a new row")?;
                if let Some(before) = &event.before
                    && key_of(table, before) != key_of(table, after)
                {
                    if after.iter().any(|v| matches!(v, Value::Unchanged)) {
                        // The unchanged TOASTed values are only in the old
                        // row: move it to the new key in place, which keeps
                        // them; the upsert then finds it there.
                        steps.push(rekey(target, table, before, after)?);
                    }
                    steps.push(delete(target, table, before, shapes)?);
                }
                steps.push(upsert(target, table, after, shapes)?);
            }
            Op::Message => {}
        }
        Ok(())
    }

    async fn read_progress(&self) -> Result<Option<Progress>, SinkError> {
        let row = self
            .session
            .client()
            .query_opt(
                &format!(
                    "SELECT commit_lsn::text, seq, taken FROM {} WHERE sink = $1 FOR UPDATE",
                    self.progress_sql
                ),
                &[&self.name],
            )
            .await
            .map_err(|e| self.session.error("reading the applied position", &e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lsn: String = row.get(0);
        let commit_lsn: Lsn = lsn.parse().map_err(|_| {
            SinkError::Config(format!(
                "{}: {} holds commit_lsn {lsn:?}, not an LSN",
                self.session.place, self.config.progress_table
            ))
        })?;
        let (seq, taken): (i64, i64) = (row.get(1), row.get(2));
        Ok(Some(Progress {
            position: Position {
                commit_lsn,
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
            },
            taken: u64::try_from(taken).unwrap_or(0),
        }))
    }

    fn progress_step(&self, p: Progress) -> Step {
        Step {
            many: None,
            sql: format!(
                "INSERT INTO {} (sink, commit_lsn, seq, taken, updated_at) \
                 VALUES ($1::text, $2::pg_lsn, $3::int8, $4::int8, now()) \
                 ON CONFLICT (sink) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, \
                 seq = EXCLUDED.seq, taken = EXCLUDED.taken, updated_at = EXCLUDED.updated_at",
                self.progress_sql
            ),
            params: Params::Row(vec![
                Some(self.name.clone()),
                Some(p.position.commit_lsn.to_string()),
                Some(p.position.seq.to_string()),
                Some(p.taken.to_string()),
            ]),
        }
    }

    /// Runs `steps` in order, sent together; the index of the first that
    /// failed, with its error.
    async fn run(&mut self, steps: &[Step]) -> Result<(), (usize, tokio_postgres::Error)> {
        let mut prepared = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let types = match &step.params {
                Params::Row(p) => vec![Type::TEXT; p.len()],
                Params::Columns(p) => vec![Type::TEXT_ARRAY; p.len()],
            };
            prepared.push(
                self.session
                    .prepare(&step.sql, &types)
                    .await
                    .map_err(|e| (i, e))?,
            );
        }
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = steps
            .iter()
            .map(|s| match &s.params {
                Params::Row(p) => p.iter().map(|v| v as &(dyn ToSql + Sync)).collect(),
                Params::Columns(p) => p.iter().map(|v| v as &(dyn ToSql + Sync)).collect(),
            })
            .collect();
        let client = self.session.client();
        // Sent without waiting for each answer: the server runs them in
        // order, and after a failure refuses the rest of the transaction.
        let results = futures::future::join_all(
            prepared
                .iter()
                .zip(&params)
                .map(|(s, p)| client.execute(s, p)),
        )
        .await;
        for (i, r) in results.into_iter().enumerate() {
            r.map_err(|e| (i, e))?;
        }
        Ok(())
    }

    async fn simple(&self, sql: &str) -> Result<(), SinkError> {
        self.session
            .client()
            .batch_execute(sql)
            .await
            .map_err(|e| self.session.error(sql, &e))
    }

    async fn apply(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        // Tables are looked up (and created) outside the batch's
        // transaction, so that a rolled-back batch leaves no stale entry.
        let mut targets: Vec<Option<Arc<Target>>> = Vec::with_capacity(batch.len());
        for record in batch {
            targets.push(match &record.payload {
                SinkPayload::Change(e) if e.op != Op::Message && e.table.is_some() => {
                    Some(self.target(e, record.topic.as_deref()).await?)
                }
                _ => None,
            });
        }
        self.simple("BEGIN").await?;
        let result = self.apply_in_transaction(batch, &targets).await;
        if result.is_err() && self.session.is_open() {
            let _ = self.session.client().batch_execute("ROLLBACK").await;
        }
        result
    }

    async fn apply_in_transaction(
        &mut self,
        batch: &[SinkRecord],
        targets: &[Option<Arc<Target>>],
    ) -> Result<(), SinkError> {
        let stored = self.read_progress().await?;
        // A batch continues the run its delivery's previous batch ended
        // in only when it is the same delivery of the transaction; a
        // replay (a restart, a reconnect) delivers it under a new id.
        let start = match (self.last_committed, batch.first()) {
            (Some((end, txn)), Some(first)) if first.txn == txn => Some(end),
            _ => None,
        };
        let positions: Vec<Position> = batch.iter().map(|r| r.source().position()).collect();
        let Plan {
            decisions,
            latest,
            end,
        } = plan(&positions, stored, start);
        tracing::debug!(
            sink = %self.name,
            ?stored,
            ?start,
            first = ?positions.first(),
            last = ?positions.last(),
            skipped = decisions.iter().filter(|d| d.skip).count(),
            "applying a batch"
        );
        // Per record, its statements: `owner[i]` is the record of step i.
        let mut steps = Vec::new();
        let mut owner = Vec::new();
        let mut refused = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            if decisions[index].skip {
                continue;
            }
            let before = steps.len();
            if let Err(reason) = self.steps(record, targets[index].as_deref(), &mut steps) {
                if reason.starts_with("missing column") {
                    let target = targets[index].as_ref().map_or("", |t| t.display.as_str());
                    return Err(SinkError::Config(format!(
                        "{}: table {target} has no column {} that the source table has; add \
                         it (ALTER TABLE … ADD COLUMN)",
                        self.session.place,
                        reason.trim_start_matches("missing column ")
                    )));
                }
                refused.push(Rejected {
                    index,
                    reason: format!("{}: {reason}", describe_record(record)),
                });
                steps.truncate(before);
                continue;
            }
            owner.extend(std::iter::repeat_n(index, steps.len() - before));
        }
        let (mut steps, owner) = coalesce(steps, owner);
        if let Some(p) = latest
            && Some(p) != stored
        {
            steps.push(self.progress_step(p));
        }
        match self.run(&steps).await {
            Ok(()) => {}
            Err((i, e)) => {
                let Some(&index) = owner.get(i) else {
                    return Err(self.session.error("storing the applied position", &e));
                };
                match kind(&e) {
                    Kind::Record => {
                        self.simple("ROLLBACK").await?;
                        return self
                            .apply_one_by_one(batch, targets, &decisions, latest, end, stored)
                            .await;
                    }
                    _ => {
                        let doing = format!("applying {}", describe_record(&batch[index]));
                        return Err(self.session.error(&doing, &e));
                    }
                }
            }
        }
        self.commit(end, batch).await?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Rejected(refused))
        }
    }

    async fn commit(
        &mut self,
        end: Option<Progress>,
        batch: &[SinkRecord],
    ) -> Result<(), SinkError> {
        self.simple("COMMIT").await?;
        self.last_committed = end.zip(batch.last().map(|r| r.txn));
        Ok(())
    }

    /// After a record-level failure: every record again in its own
    /// savepoint, so that the refused ones are found and the others
    /// applied, still in one transaction with the position.
    async fn apply_one_by_one(
        &mut self,
        batch: &[SinkRecord],
        targets: &[Option<Arc<Target>>],
        decisions: &[Decision],
        latest: Option<Progress>,
        end: Option<Progress>,
        stored: Option<Progress>,
    ) -> Result<(), SinkError> {
        self.simple("BEGIN").await?;
        let again = self.read_progress().await?;
        if again != stored {
            // Another writer moved the position meanwhile: start over.
            return Err(SinkError::Transient(format!(
                "{}: the applied position of this sink changed during the batch (is another \
                 Weir writing as the same sink?)",
                self.session.place
            )));
        }
        let mut refused = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            if decisions[index].skip {
                continue;
            }
            let mut steps = Vec::new();
            if let Err(reason) = self.steps(record, targets[index].as_deref(), &mut steps) {
                refused.push(Rejected {
                    index,
                    reason: format!("{}: {reason}", describe_record(record)),
                });
                continue;
            }
            if steps.is_empty() {
                continue;
            }
            self.simple("SAVEPOINT weir_record").await?;
            match self.run(&steps).await {
                Ok(()) => self.simple("RELEASE SAVEPOINT weir_record").await?,
                Err((_, e)) if kind(&e) == Kind::Record => {
                    self.simple("ROLLBACK TO SAVEPOINT weir_record").await?;
                    refused.push(Rejected {
                        index,
                        reason: format!(
                            "{}: the target refused it: {}",
                            describe_record(record),
                            describe(&e)
                        ),
                    });
                }
                Err((_, e)) => {
                    let doing = format!("applying {}", describe_record(record));
                    return Err(self.session.error(&doing, &e));
                }
            }
        }
        if let Some(p) = latest
            && Some(p) != stored
        {
            let step = self.progress_step(p);
            self.run(std::slice::from_ref(&step))
                .await
                .map_err(|(_, e)| self.session.error("storing the applied position", &e))?;
        }
        self.commit(end, batch).await?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Rejected(refused))
        }
    }
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_client().await?;
        let result = self.apply(batch).await;
        if let Err(e) = &result
            && e.is_retryable()
            && !self.session.is_open()
        {
            // Whether the COMMIT happened is unknown; the next write reads
            // the stored position again on a new connection.
            self.session.close();
        }
        result
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.session.close();
        Ok(())
    }
}

/// `table public.t, key id=5 (update at 0/16B3F28#2)`, for messages.
fn describe_record(record: &SinkRecord) -> String {
    match &record.payload {
        SinkPayload::Change(e) => {
            let table = e
                .table
                .as_ref()
                .map_or_else(String::new, |t| format!("{}.{}", t.schema, t.name));
            let key: Vec<String> = e
                .key_values()
                .into_iter()
                .map(|(c, v)| format!("{c}={}", weir_codec::to_text(v)))
                .collect();
            format!(
                "{} of table {table}{} at {}",
                e.op.as_str(),
                if key.is_empty() {
                    String::new()
                } else {
                    format!(", key {}", key.join(","))
                },
                e.source.position()
            )
        }
        SinkPayload::Raw(m) => format!("raw record at {}", m.source.position()),
    }
}

/// The session settings under which the texts the sink sends are read
/// the way Weir writes them, and the texts Postgres prints are the ones
/// Weir's encoders write (ISO dates and times in UTC).
pub(super) const TEXT_FORMS: &str =
    "SET DateStyle = ISO; SET IntervalStyle = postgres; SET TimeZone = 'UTC'";

/// A target table's name, from the route's topic or the sink's template.
pub(super) struct TableName {
    pub(super) schema: Option<String>,
    /// Quoted, for SQL.
    pub(super) sql: String,
    /// As the user would write it, for messages.
    pub(super) display: String,
}

/// The target table of `event`: `topic` (a route's) when given, else the
/// sink's `template`, expanded for the event.
pub(super) fn table_name(
    template: &TableTemplate,
    event: &ChangeEvent,
    topic: Option<&str>,
) -> Result<TableName, SinkError> {
    let routed;
    let template = match topic {
        Some(t) => {
            routed = TableTemplate::parse(t)
                .map_err(|e| SinkError::Config(format!("table name {t:?} {e}")))?;
            &routed
        }
        None => template,
    };
    let expand = |t: &weir_codec::NameTemplate| -> Result<String, SinkError> {
        let mut out = String::new();
        t.expand_event(event, &mut out)
            .map_err(|e| SinkError::Config(e.to_string()))?;
        Ok(out)
    };
    let schema = template.schema.as_ref().map(expand).transpose()?;
    let table = expand(&template.table)?;
    let sql = quote_name(schema.as_deref(), &table);
    let display = match &schema {
        Some(s) => format!("{s}.{table}"),
        None => table,
    };
    Ok(TableName {
        schema,
        sql,
        display,
    })
}

/// Table `sql` as the catalog describes it; `None` when it does not exist.
pub(super) async fn describe_table(
    client: &Client,
    sql: &str,
    display: &str,
) -> Result<Option<Target>, tokio_postgres::Error> {
    let rows = client
    .query(
            "SELECT c.oid IS NOT NULL, a.attname::text, quote_ident(n.nspname) || '.' || quote_ident(t.typname) \
             FROM (SELECT to_regclass($1) AS oid) c \
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
             AND NOT a.attisdropped \
             LEFT JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_namespace n ON n.oid = t.typnamespace",
            &[&sql],
        )
    .await?;
    if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(None);
    }
    let columns = rows
        .iter()
        .filter_map(|r| Some((r.get::<_, Option<String>>(1)?, r.get::<_, String>(2))))
        .collect();
    Ok(Some(Target {
        sql: sql.to_owned(),
        display: display.to_owned(),
        columns,
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Transient,
    Auth,
    Config,
    /// The record's data was refused (a constraint, a value the type
    /// does not accept): the record, not the batch, is at fault.
    Record,
}

pub(super) fn kind(e: &tokio_postgres::Error) -> Kind {
    let Some(db) = e.as_db_error() else {
        // A closed or broken connection, a timeout.
        return Kind::Transient;
    };
    sqlstate_kind(db.code().code())
}

/// What a SQLSTATE says about who is at fault.
pub(crate) fn sqlstate_kind(code: &str) -> Kind {
    match code {
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("58") => Kind::Transient,
        "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "55P03" | "25P02" => {
            Kind::Transient
        }
        c if c.starts_with("28") => Kind::Auth,
        "42501" => Kind::Auth,
        // Undefined table, column, object, function, schema; no unique
        // index for ON CONFLICT; a read-only target.
        "42P01" | "42703" | "42704" | "42883" | "3F000" | "3D000" | "42P10" | "25006" => {
            Kind::Config
        }
        _ => Kind::Record,
    }
}

pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => {
            let mut message = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                message.push_str(": ");
                message.push_str(&s.to_string());
                src = s.source();
            }
            message
        }
    }
}

pub(super) fn connect_error(e: PgError) -> SinkError {
    let message = e.to_string();
    match &e {
        PgError::Auth { .. } => SinkError::Auth(message),
        PgError::Server { error, .. } if error.code.starts_with("28") => SinkError::Auth(message),
        PgError::Server { error, .. } if error.code == "3D000" => SinkError::Config(message),
        _ if e.is_retryable() => SinkError::Transient(message),
        _ => SinkError::Config(message),
    }
}
