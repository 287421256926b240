//! The Redis sink's I/O: one pipeline (one round trip) per batch, or per
//! run of a batch between truncates, of guarded `EVALSHA` writes in cache
//! mode and of `XADD`s in stream mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind};
use weir_codec::{Encoder, NameTemplate, write_json_value, write_lsn, write_str, write_text};
use weir_core::{
    ChangeEvent, Op, Position, Rejected, Sink, SinkError, SinkPayload, SinkRecord, TableSchema,
    Value,
};

use crate::owners::Owners;

use super::config::{Format, KeyTemplate, KeyTemplates, Mode, RedisSinkConfig};

/// The guarded writes, loaded once per connection with `SCRIPT LOAD`.
const SCRIPT: &str = include_str!("apply.lua");

/// Row keys handed to one truncate call: bounded so that one script call
/// never blocks the server for long.
const TRUNCATE_CHUNK: usize = 256;

/// What Redis says when `XADD` is given an id not above the stream's last:
/// for Weir's ids, the entry is already there.
const DUPLICATE_ID: &str = "equal or smaller than the target stream top item";

/// A sink writing to one Redis server; see the module documentation.
pub struct RedisSink {
    name: String,
    config: RedisSinkConfig,
    conn: ConnectionManager,
    sha: String,
    keys: KeyTemplates,
    owners: Owners,
    streams: [NameTemplate; 3],
    route_streams: HashMap<String, Result<NameTemplate, String>>,
    encoder: Encoder,
    /// The last position a stream entry was made for, and how many records
    /// of that position came before the next one: several records can share
    /// a position, and each needs its own entry id.
    last_position: Option<(Position, u32)>,
    secrets: Vec<String>,
}

/// One command of a pipeline and the record it is for.
struct Planned {
    record: usize,
    cmd: Cmd,
}

impl RedisSink {
    /// Connects to the server and loads the script.
    ///
    /// Fails with [`SinkError::Config`] when the configuration is invalid,
    /// [`SinkError::Auth`] when the server refuses the credentials, and
    /// [`SinkError::Transient`] naming the server when it cannot be reached.
    pub async fn connect(name: &str, config: RedisSinkConfig) -> Result<RedisSink, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let url = config.display_url();
        let (mut conn, secrets) = open_connection(&config).await?;
        let sha = load_script(&mut conn, &secrets).await?;
        let keys = KeyTemplates::new(&config.key).map_err(SinkError::Config)?;
        let stream = |t: &str| NameTemplate::parse(t).map_err(SinkError::Config);
        let streams = [
            stream(&config.stream)?,
            stream(&config.message_stream)?,
            stream(&config.raw_stream)?,
        ];
        tracing::info!(sink = %name, url = %url, mode = ?config.mode, "connected to Redis");
        let encoder = Encoder::new(config.encoding, config.debezium.as_ref());
        Ok(RedisSink {
            name: name.to_owned(),
            config,
            conn,
            sha,
            keys,
            owners: Owners::default(),
            streams,
            route_streams: HashMap::new(),
            encoder,
            last_position: None,
            secrets,
        })
    }

    /// Runs `planned` as one pipeline and returns, per command, `None` when
    /// it was applied (or was a stream entry already there) or the reason
    /// Redis refused it. Reloads the script and runs the whole pipeline
    /// again when the server lost it (a restart): every command is guarded,
    /// so running one twice changes nothing.
    async fn run(&mut self, planned: &mut [Planned]) -> Result<Vec<Option<String>>, SinkError> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let mut reloaded = false;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for p in planned.iter_mut() {
            pipe.add_command(std::mem::take(&mut p.cmd));
        }
        loop {
            let replies: Vec<redis::RedisResult<redis::Value>> = pipe
                .query_async(&mut self.conn)
                .await
                .map_err(|e| classify(&e, &self.secrets, "writing a batch"))?;
            let mut outcome = Vec::with_capacity(replies.len());
            let mut lost_script = false;
            for reply in replies {
                outcome.push(match reply {
                    Ok(_) => None,
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        lost_script = true;
                        None
                    }
                    Err(e) if e.to_string().contains(DUPLICATE_ID) => None,
                    Err(e) if is_refusal(&e) => Some(scrub(&e, &self.secrets)),
                    Err(e) => return Err(classify(&e, &self.secrets, "writing a batch")),
                });
            }
            if !lost_script {
                return Ok(outcome);
            }
            if reloaded {
                return Err(SinkError::Transient(
                    "the server keeps forgetting the sink's script (SCRIPT FLUSH?)".to_owned(),
                ));
            }
            tracing::info!(sink = %self.name, "Redis lost the script (restarted?); loading it again");
            // The hash is the SHA-1 of the script's text: the same as before,
            // so the pipeline's commands stand as they are.
            let sha = load_script(&mut self.conn, &self.secrets).await?;
            debug_assert_eq!(sha, self.sha);
            reloaded = true;
        }
    }

    fn evalsha(&self, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        cmd
    }

    /// Records that `event`'s table owns the key space `table` (the
    /// expanded part of the key template before the key).
    fn claim(&mut self, table: &str, event: &ChangeEvent) -> Result<(), ChangeError> {
        match &event.table {
            Some(source) => self
                .owners
                .claim("key space", table, source)
                .map_err(ChangeError::Sink),
            None => Ok(()),
        }
    }

    fn key_template(&mut self, topic: Option<&str>) -> Result<Arc<KeyTemplate>, String> {
        self.keys.get(topic)
    }

    /// The commands for one row change: a delete, an upsert, or for a key
    /// change both (the new row first, which may copy from the old one).
    fn plan_change(
        &mut self,
        event: &ChangeEvent,
        topic: Option<&str>,
        out: &mut Vec<Cmd>,
    ) -> Result<(), ChangeError> {
        let template = self.key_template(topic)?;
        let version = event.source.position().to_hex();
        let mut key = String::new();
        template
            .row
            .expand_event(event, &mut key)
            .map_err(|e| e.to_string())?;
        let mut table = String::new();
        template
            .table
            .expand_event(event, &mut table)
            .map_err(|e| e.to_string())?;
        self.claim(&table, event)?;
        let prefix = &self.config.version_prefix;
        let tkey = format!("{prefix}{table}");
        let tombstone_ms = self.config.tombstone_ttl.as_millis().to_string();
        let delete_op = match self.config.format {
            Format::Hash => "hdel",
            Format::Json => "jdel",
        };
        match event.op {
            Op::Delete => {
                let vkey = format!("{prefix}{key}");
                let mut cmd = self.evalsha(&[&key, &vkey, &tkey]);
                cmd.arg(delete_op).arg(&version).arg(&tombstone_ms);
                out.push(cmd);
            }
            Op::Insert | Op::Update | Op::Read => {
                let vkey = format!("{prefix}{key}");
                let mut old_key = String::new();
                if key_changed(event) {
                    let old = ChangeEvent {
                        after: None,
                        ..event.clone()
                    };
                    template
                        .row
                        .expand_event(&old, &mut old_key)
                        .map_err(|e| e.to_string())?;
                }
                // A template naming only some key columns may give a key
                // change the same cache key: that is a plain upsert.
                if old_key.is_empty() || old_key == key {
                    let mut cmd = self.evalsha(&[&key, &vkey, &tkey]);
                    self.upsert_args(event, &version, &mut cmd)?;
                    out.push(cmd);
                    return Ok(());
                }
                let old_vkey = format!("{prefix}{old_key}");
                // The new row first: values the update left unchanged are
                // copied from the old row before it is deleted.
                let partial = event
                    .after
                    .as_ref()
                    .is_some_and(|row| row.iter().any(|v| matches!(v, Value::Unchanged)));
                let mut cmd = if partial {
                    self.evalsha(&[&key, &vkey, &tkey, &old_key, &old_vkey])
                } else {
                    self.evalsha(&[&key, &vkey, &tkey])
                };
                self.upsert_args(event, &version, &mut cmd)?;
                out.push(cmd);
                let mut cmd = self.evalsha(&[&old_key, &old_vkey, &tkey]);
                cmd.arg(delete_op).arg(&version).arg(&tombstone_ms);
                out.push(cmd);
            }
            Op::Truncate | Op::Message => unreachable!("planned elsewhere"),
        }
        Ok(())
    }

    fn upsert_args(&self, event: &ChangeEvent, version: &str, cmd: &mut Cmd) -> Result<(), String> {
        let (Some(table), Some(row)) = (&event.table, &event.after) else {
            return Err(format!("{} event without a row", event.op.as_str()));
        };
        if row.len() != table.columns.len() {
            return Err(format!(
                "row of {}.{} has {} values but the table has {} columns",
                table.schema,
                table.name,
                row.len(),
                table.columns.len()
            ));
        }
        let ttl_ms = self.config.ttl.map_or(0, |t| t.as_millis()).to_string();
        let partial = row.iter().any(|v| matches!(v, Value::Unchanged));
        match self.config.format {
            Format::Hash => {
                let set = hash_fields(table, row);
                cmd.arg("hset")
                    .arg(version)
                    .arg(&ttl_ms)
                    .arg(if partial { "0" } else { "1" })
                    .arg(set.len());
                for (column, text) in &set {
                    cmd.arg(*column).arg(text);
                }
                for (column, value) in table.columns.iter().zip(row) {
                    if value.is_null() {
                        cmd.arg(&column.name);
                    }
                }
            }
            Format::Json => {
                if partial {
                    cmd.arg("jmerge").arg(version).arg(&ttl_ms);
                    let mut buf = Vec::new();
                    for (column, value) in table.columns.iter().zip(row) {
                        buf.clear();
                        write_str(&mut buf, &column.name);
                        cmd.arg(&buf);
                        buf.clear();
                        if !matches!(value, Value::Unchanged) {
                            write_json_value(&mut buf, value)
                                .map_err(|e| column_error(table, column, e))?;
                        }
                        cmd.arg(&buf);
                    }
                } else {
                    let mut buf = Vec::new();
                    json_row(table, row, &mut buf)?;
                    cmd.arg("jset").arg(version).arg(&ttl_ms).arg(&buf);
                }
            }
        }
        Ok(())
    }

    /// Removes the rows of `event`'s table written before the truncate and
    /// records the truncate's position, so older writes are refused later.
    /// Costs one `SCAN` of the whole keyspace.
    async fn truncate(
        &mut self,
        event: &ChangeEvent,
        topic: Option<&str>,
    ) -> Result<(), ChangeError> {
        let template = self.key_template(topic).map_err(ChangeError::Record)?;
        let mut table = String::new();
        template
            .table
            .expand_event(event, &mut table)
            .map_err(|e| ChangeError::Record(e.to_string()))?;
        self.claim(&table, event)?;
        let prefix = self.config.version_prefix.clone();
        let version = event.source.position().to_hex();
        let tkey = format!("{prefix}{table}");
        let format = match self.config.format {
            Format::Hash => "hash",
            Format::Json => "json",
        };
        let pattern = table_pattern(&table);
        let mut cursor: u64 = 0;
        let mut first = true;
        loop {
            let (next, found) = scan(&mut self.conn, &self.secrets, &pattern, cursor, 1000)
                .await
                .map_err(ChangeError::Sink)?;
            for chunk in found.chunks(TRUNCATE_CHUNK).chain(first.then_some(&[][..])) {
                let mut keys: Vec<String> = vec![tkey.clone()];
                for k in chunk {
                    keys.push(k.clone());
                    keys.push(format!("{prefix}{k}"));
                }
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let mut cmd = self.evalsha(&refs);
                cmd.arg("trunc").arg(&version).arg(format);
                let mut planned = [Planned { record: 0, cmd }];
                let outcome = self.run(&mut planned).await.map_err(ChangeError::Sink)?;
                if let Some(Some(reason)) = outcome.into_iter().next() {
                    return Err(ChangeError::Record(format!(
                        "Redis refused the truncate: {reason}"
                    )));
                }
                first = false;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn write_cache(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut rejected = Vec::new();
        let mut planned: Vec<Planned> = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            let event = match &record.payload {
                SinkPayload::Change(event) => Arc::clone(event),
                SinkPayload::Raw(_) => {
                    rejected.push(Rejected {
                        index,
                        reason:
                            "a raw record cannot be written in cache mode (use mode = \"stream\")"
                                .to_owned(),
                    });
                    continue;
                }
            };
            match event.op {
                // A cache holds rows; a logical message is not one.
                Op::Message => {}
                Op::Truncate => {
                    // Everything before the truncate goes first, in order.
                    self.flush(&mut planned, &mut rejected).await?;
                    match self.truncate(&event, record.topic.as_deref()).await {
                        Ok(()) => {}
                        Err(ChangeError::Record(reason)) => {
                            rejected.push(Rejected { index, reason })
                        }
                        Err(ChangeError::Sink(e)) => return Err(e),
                    }
                }
                _ => {
                    let mut cmds = Vec::new();
                    match self.plan_change(&event, record.topic.as_deref(), &mut cmds) {
                        Ok(()) => planned
                            .extend(cmds.into_iter().map(|cmd| Planned { record: index, cmd })),
                        Err(ChangeError::Record(reason)) => {
                            rejected.push(Rejected { index, reason })
                        }
                        Err(ChangeError::Sink(e)) => return Err(e),
                    }
                }
            }
        }
        self.flush(&mut planned, &mut rejected).await?;
        finish(rejected)
    }

    async fn flush(
        &mut self,
        planned: &mut Vec<Planned>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), SinkError> {
        let outcome = self.run(planned).await?;
        for (p, reason) in planned.iter().zip(outcome) {
            if let Some(reason) = reason
                && rejected.last().is_none_or(|r| r.index != p.record)
            {
                rejected.push(Rejected {
                    index: p.record,
                    reason: format!("Redis refused the write: {reason}"),
                });
            }
        }
        planned.clear();
        Ok(())
    }

    fn stream_name(&mut self, record: &SinkRecord, out: &mut String) -> Result<(), String> {
        let which = match &record.payload {
            SinkPayload::Change(e) if e.op == Op::Message => 1,
            SinkPayload::Change(_) => 0,
            SinkPayload::Raw(_) => 2,
        };
        let template = match &record.topic {
            None => &self.streams[which],
            Some(t) => {
                let parsed = self
                    .route_streams
                    .entry(t.clone())
                    .or_insert_with(|| NameTemplate::parse(t));
                match parsed {
                    Ok(p) => &*p,
                    Err(e) => return Err(format!("stream {t:?}: {e}")),
                }
            }
        };
        template.expand(record, out).map_err(|e| e.to_string())?;
        if out.is_empty() {
            return Err("the stream name is empty".to_owned());
        }
        Ok(())
    }

    fn plan_entry(
        &mut self,
        record: &SinkRecord,
        sequence: u32,
        stream: &str,
    ) -> Result<Cmd, String> {
        let source = record.source();
        let position = source.position();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream);
        if let Some(n) = self.config.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        // The id's first part is the commit LSN, its second the change's
        // place in the transaction (high 32 bits) and the record's place
        // among the records of that change (low 32 bits): it grows with the
        // stream and is the same when the record is written again.
        let sequence_part = (u64::from(position.seq) << 32) | u64::from(sequence);
        cmd.arg(format!("{}-{sequence_part}", source.commit_lsn.0));
        let mut lsn = Vec::new();
        write_lsn(&mut lsn, source.commit_lsn);
        match &record.payload {
            SinkPayload::Change(event) => {
                cmd.arg("op").arg(event.op.as_str());
                if let Some(t) = &event.table {
                    cmd.arg("schema").arg(&t.schema).arg("table").arg(&t.name);
                }
                if let Some(m) = &event.message {
                    cmd.arg("prefix").arg(&m.prefix);
                }
                cmd.arg("commit_lsn").arg(&lsn);
                let (mut key, mut value) = (Vec::new(), Vec::new());
                let encoded = self
                    .encoder
                    .encode(event, &mut key, &mut value)
                    .map_err(|e| e.to_string())?;
                if encoded.has_key {
                    cmd.arg("key").arg(&key);
                }
                cmd.arg("value").arg(&value);
            }
            SinkPayload::Raw(raw) => {
                cmd.arg("op").arg("raw").arg("commit_lsn").arg(&lsn);
                if let Some(k) = &raw.key {
                    cmd.arg("key").arg(k);
                }
                if let Some(v) = &raw.value {
                    cmd.arg("value").arg(v);
                }
                for (name, value) in &raw.headers {
                    cmd.arg(format!("header.{name}")).arg(value);
                }
            }
        }
        Ok(cmd)
    }

    async fn write_stream(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut rejected = Vec::new();
        let mut planned = Vec::with_capacity(batch.len());
        let mut last = self.last_position;
        let mut stream = String::new();
        for (index, record) in batch.iter().enumerate() {
            let position = record.source().position();
            let sequence = match last {
                Some((p, n)) if p == position => n + 1,
                _ => 0,
            };
            last = Some((position, sequence));
            let planned_entry = self
                .stream_name(record, &mut stream)
                .and_then(|()| self.plan_entry(record, sequence, &stream));
            match planned_entry {
                Ok(cmd) => planned.push(Planned { record: index, cmd }),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        self.flush(&mut planned, &mut rejected).await?;
        // Only now: a failed batch is written again from the same state.
        self.last_position = last;
        finish(rejected)
    }
}

/// Why a change could not be written: the record's fault (refused,
/// dead-lettered), or the destination's or configuration's (the batch
/// fails: written again, or the pipeline halts).
enum ChangeError {
    Record(String),
    Sink(SinkError),
}

impl From<String> for ChangeError {
    fn from(reason: String) -> Self {
        ChangeError::Record(reason)
    }
}

fn finish(mut rejected: Vec<Rejected>) -> Result<(), SinkError> {
    if rejected.is_empty() {
        return Ok(());
    }
    rejected.sort_by_key(|r| r.index);
    Err(SinkError::Rejected(rejected))
}

/// Whether the update moves the row to another key (its `before` has other
/// key values than its `after`).
fn key_changed(event: &ChangeEvent) -> bool {
    let (Some(table), Some(before), Some(after)) = (&event.table, &event.before, &event.after)
    else {
        return false;
    };
    table
        .columns
        .iter()
        .zip(before.iter().zip(after))
        .any(|(c, (b, a))| c.key && !matches!(a, Value::Unchanged) && a != b)
}

/// Opens a connection to the configured server (the password set apart
/// from the URL's, if any) and returns it with the secrets to scrub from
/// messages.
pub(super) async fn open_connection(
    config: &RedisSinkConfig,
) -> Result<(ConnectionManager, Vec<String>), SinkError> {
    let url = config.display_url();
    let mut secrets: Vec<String> = config.password.iter().cloned().collect();
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| SinkError::Config(format!("url {url}: {e}")))?;
    if let Some(password) = info.redis_settings().password() {
        secrets.push(password.to_owned());
    }
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)
        .map_err(|e| SinkError::Config(format!("url {url}: {}", scrub(&e, &secrets))))?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        // Reconnecting is the connection manager's, retrying a batch
        // the pipeline's: one quick try here, so that a failed batch is
        // reported rather than held.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let conn = client
        .get_connection_manager_with_config(manager)
        .await
        .map_err(|e| classify(&e, &secrets, &format!("connecting to {url}")))?;
    Ok((conn, secrets))
}

/// A row's hash fields as `hset` stores them: each column's text, NULL and
/// unchanged TOAST columns left out.
pub(super) fn hash_fields<'a>(table: &'a TableSchema, row: &[Value]) -> Vec<(&'a str, String)> {
    let mut fields = Vec::with_capacity(row.len());
    for (column, value) in table.columns.iter().zip(row) {
        if !matches!(value, Value::Null | Value::Unchanged) {
            let mut text = String::new();
            write_text(&mut text, value);
            fields.push((column.name.as_str(), text));
        }
    }
    fields
}

/// Appends a whole row's JSON object as `jset` stores it, columns in table
/// order; the error names the column that cannot be encoded.
pub(super) fn json_row(
    table: &TableSchema,
    row: &[Value],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.reserve(64 + row.len() * 16);
    out.push(b'{');
    for (i, (column, value)) in table.columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, &column.name);
        out.push(b':');
        write_json_value(out, value).map_err(|e| column_error(table, column, e))?;
    }
    out.push(b'}');
    Ok(())
}

fn column_error(table: &TableSchema, c: &weir_core::Column, e: weir_codec::EncodeError) -> String {
    format!(
        "column {}.{}.{} ({}): {e}",
        table.schema, table.name, c.name, c.type_name
    )
}

/// The `SCAN MATCH` pattern of every key starting with `table` (the
/// expanded part of a key template before the row's key).
pub(super) fn table_pattern(table: &str) -> String {
    format!("{}*", glob_escape(table))
}

/// One `SCAN` step: the next cursor (0 at the end) and the keys matching
/// `pattern` among about `count` examined.
pub(super) async fn scan(
    conn: &mut ConnectionManager,
    secrets: &[String],
    pattern: &str,
    cursor: u64,
    count: usize,
) -> Result<(u64, Vec<String>), SinkError> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|e| classify(&e, secrets, "scanning"))
}

/// `SCAN MATCH` treats `* ? [ ] \` specially; a table name may hold them.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

async fn load_script(
    conn: &mut ConnectionManager,
    secrets: &[String],
) -> Result<String, SinkError> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(conn)
        .await
        .map_err(|e| classify(&e, secrets, "loading the sink's script"))
}

/// Whether Redis refused this one command for good: the key holds another
/// type, the stored value is not what the sink wrote, an invalid argument.
/// Out-of-memory, loading and read-only replies pass, so they are not.
fn is_refusal(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError) | ErrorKind::Extension => {
            let code = e.code().unwrap_or_default();
            !matches!(
                code,
                "OOM"
                    | "BUSY"
                    | "NOAUTH"
                    | "WRONGPASS"
                    | "MISCONF"
                    | "NOREPLICAS"
                    | "MASTERDOWN"
                    | "LOADING"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
            )
        }
        _ => false,
    }
}

pub(super) fn classify(e: &RedisError, secrets: &[String], what: &str) -> SinkError {
    let text = format!("{what}: {}", scrub(e, secrets));
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
            SinkError::Auth(text)
        }
        ErrorKind::InvalidClientConfig => SinkError::Config(text),
        _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => SinkError::Auth(text),
        _ => SinkError::Transient(text),
    }
}

fn scrub(e: &RedisError, secrets: &[String]) -> String {
    let mut text = e.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "<redacted>");
    }
    text
}

#[async_trait::async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.config.mode {
            Mode::Cache => self.write_cache(batch).await,
            Mode::Stream => self.write_stream(batch).await,
        }
    }
}
