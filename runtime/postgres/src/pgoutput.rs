//! Decoding of pgoutput messages into [`SourceItem`]s.
//!
//! pgoutput sends, per committed transaction: `B`egin, then `R`elation
//! (and `Y` type) messages for tables whose schema the stream has not
//! described yet or that changed, then `I`nsert / `U`pdate / `D`elete /
//! `T`runcate / `M`essage changes, then `C`ommit. The decoder keeps the
//! relation and type caches and the state of the open transaction, and
//! turns each message into zero or more items.
//!
//! With streaming on (protocol 2), a large transaction may also arrive
//! before its commit, in Stream Start … Stream Stop blocks whose changes
//! carry their (sub)transaction's xid; [`Streamed`] keeps those messages,
//! and at Stream Commit the decoder replays them, a bounded number per
//! [`Decoder::replay`] call, as one ordinary transaction. The relations
//! such a transaction described stay in force after it: pgoutput counts
//! them as sent once it commits (and not if it aborts, when they are
//! dropped with it, unread).
//!
//! A non-transactional logical decoding message
//! (`pg_logical_emit_message(false, ...)`) arrives between transactions,
//! when the walsender reads it, and is handed on as a transaction of its
//! own holding just that message: xid 0 (no transaction), the time it was
//! decoded as the commit time. The LSN pgoutput gives it is the *end* of
//! its WAL record, where the next record may begin (a commit, say): that
//! is its end LSN, so acknowledging it moves the slot past the message
//! and never past the next record, and one byte before it is its commit
//! LSN, inside its own record, so no transaction shares its position.
//! Weir's heartbeats ([`HEARTBEAT_PREFIX`]) become such transactions
//! without the message: nothing is delivered, but the slot moves.
//!
//! In binary mode a column's values decode by its type's [`Form`]: a
//! built-in type's is known here, any other type's comes from the
//! catalog, which the source looks up ([`Decoder::missing_types`],
//! [`Decoder::learn`]) before a Relation message that needs it is decoded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use weir_codec::PgType;
use weir_core::{
    ChangeEvent, Column, LogicalMessage, Lsn, Op, ReplicaIdentity, SnapshotKind, SourceInfo,
    SourceItem, TableSchema, TxnBegin, TxnCommit, TxnId, Value,
};

use crate::conn::PG_EPOCH_OFFSET_MICROS;
use crate::decode::decode_value;
use crate::error::PgError;
use crate::streamed::{Replay, Streamed};
use crate::types::{self, Catalog, Form};

/// The prefix of the heartbeat messages Weir writes to keep the slot
/// moving (see [`crate::watch`]).
pub(crate) const HEARTBEAT_PREFIX: &str = "weir.heartbeat";

/// Weir's transaction numbers come from one process-wide counter, so a
/// reconnect (a new [`PostgresSource`](crate::PostgresSource)) never reuses
/// a number the ack tracker may still hold.
static NEXT_TXN: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_txn_id() -> TxnId {
    TxnId(NEXT_TXN.fetch_add(1, Ordering::Relaxed))
}

/// The newest schema seen for each table, per database, across every
/// decoder in the process.
///
/// A reconnect starts a new decoder whose Relation messages may describe
/// an older or newer shape than the last run saw; version numbers are
/// handed out here so that one `(table id, version)` always means one
/// shape within the process, which lets downstream stages cache schemas
/// by that pair.
struct SchemaEntry {
    latest: Arc<TableSchema>,
    max_version: u32,
}

type SchemaRegistry = Mutex<HashMap<(Arc<str>, u32), SchemaEntry>>;

fn registry() -> &'static SchemaRegistry {
    static R: OnceLock<SchemaRegistry> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Forgets every schema version registered for `db_key`, so the next
/// decoder for it starts from version 1 again. Only for fuzzing, where
/// each input must decode the same whatever ran before it.
pub(crate) fn forget_schemas(db_key: &str) {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    reg.retain(|(key, _), _| &**key != db_key);
}

/// The registered schema of `candidate`'s shape (`version` ignored): the
/// latest one when the shape is the same, else a new version of it.
pub(crate) fn register(db_key: &Arc<str>, candidate: TableSchema) -> Arc<TableSchema> {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    match reg.get_mut(&(db_key.clone(), candidate.id)) {
        Some(e) if same_shape(&e.latest, &candidate) => e.latest.clone(),
        Some(e) => {
            e.max_version += 1;
            e.latest = Arc::new(TableSchema {
                version: e.max_version,
                ..candidate
            });
            e.latest.clone()
        }
        None => {
            let id = candidate.id;
            let latest = Arc::new(TableSchema {
                version: 1,
                ..candidate
            });
            reg.insert(
                (db_key.clone(), id),
                SchemaEntry {
                    latest: latest.clone(),
                    max_version: 1,
                },
            );
            latest
        }
    }
}

fn same_shape(a: &TableSchema, b: &TableSchema) -> bool {
    a.id == b.id
        && a.schema == b.schema
        && a.name == b.name
        && a.replica_identity == b.replica_identity
        && a.columns == b.columns
}

struct CachedRelation {
    schema: Arc<TableSchema>,
    kinds: Box<[Form]>,
}

struct OpenTxn {
    id: TxnId,
    final_lsn: Lsn,
    xid: u32,
    commit_time_micros: i64,
    seq: u32,
}

/// Stateful pgoutput decoder for one replication stream.
pub(crate) struct Decoder {
    db_key: Arc<str>,
    relations: HashMap<u32, CachedRelation>,
    /// Non-built-in types announced by Type messages: name and decoding.
    types: HashMap<u32, (String, PgType)>,
    /// Whether values arrive in their binary form (pgoutput's `binary`).
    binary: bool,
    /// The server's `server_version_num`, for the few forms that differ.
    server_version: u32,
    /// Non-built-in types looked up in the catalog: name and form.
    catalog: Catalog,
    txn: Option<OpenTxn>,
    last_commit_end: Lsn,
    /// Transactions streamed before their commit (protocol 2).
    streamed: Option<Streamed>,
    /// A committed streamed transaction being handed on.
    replaying: Option<Replaying>,
}

/// The replay of one committed streamed transaction.
struct Replaying {
    messages: Replay,
    commit: TxnCommit,
}

/// A bounds-checked big-endian reader over one message.
struct Rd<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, String>;

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let s = self
            .b
            .get(self.i..self.i + n)
            .ok_or_else(|| format!("message truncated at byte {}", self.i))?;
        self.i += n;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> R<i16> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn i32(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn i64(&mut self) -> R<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn cstr(&mut self) -> R<&'a str> {
        let rest = &self.b[self.i.min(self.b.len())..];
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated string")?;
        self.i += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "string is not valid UTF-8".to_owned())
    }
}

impl Decoder {
    /// A decoder for a stream from the database identified by `db_key`
    /// (the cluster's system identifier and the database name).
    pub(crate) fn new(db_key: Arc<str>) -> Decoder {
        Decoder {
            db_key,
            relations: HashMap::new(),
            types: HashMap::new(),
            binary: false,
            server_version: 0,
            catalog: HashMap::new(),
            txn: None,
            last_commit_end: Lsn::ZERO,
            streamed: None,
            replaying: None,
        }
    }

    /// Decodes values in their binary form, from a server of
    /// `server_version` (`server_version_num`), with the forms of the
    /// non-built-in types in `catalog` ([`types::lookup`]).
    pub(crate) fn with_binary(mut self, server_version: u32, catalog: Catalog) -> Decoder {
        self.binary = true;
        self.server_version = server_version;
        self.catalog = catalog;
        self
    }

    /// In binary mode, the types that the Relation message `msg` names
    /// and whose forms are still unknown: look them up and [`learn`]
    /// them before decoding it.
    ///
    /// [`learn`]: Self::learn
    pub(crate) fn missing_types(&self, msg: &[u8]) -> Vec<u32> {
        if !self.binary || msg.first() != Some(&b'R') {
            return Vec::new();
        }
        let in_stream = self
            .streamed
            .as_ref()
            .is_some_and(|s| s.current().is_some());
        let mut rd = Rd {
            b: msg,
            i: if in_stream { 5 } else { 1 },
        };
        let mut oids = Vec::new();
        // A malformed message is left for decoding to report.
        let _ = (|| -> R<()> {
            rd.u32()?;
            rd.cstr()?;
            rd.cstr()?;
            rd.u8()?;
            for _ in 0..rd.i16()?.max(0) {
                rd.u8()?;
                rd.cstr()?;
                let oid = rd.u32()?;
                rd.i32()?;
                if types::builtin(oid, self.server_version).is_none()
                    && !self.catalog.contains_key(&oid)
                {
                    oids.push(oid);
                }
            }
            Ok(())
        })();
        oids
    }

    /// Adds looked-up types to the catalog.
    pub(crate) fn learn(&mut self, found: Catalog) {
        self.catalog.extend(found);
    }

    /// Accepts streamed transactions (protocol 2), held by `streamed`.
    pub(crate) fn with_streaming(mut self, streamed: Streamed) -> Decoder {
        self.streamed = Some(streamed);
        self
    }

    /// Whether a transaction has begun and not yet been handed on,
    /// streamed ones included.
    pub(crate) fn in_txn(&self) -> bool {
        self.txn.is_some() || self.streamed.as_ref().is_some_and(Streamed::any_open)
    }

    /// Whether a committed streamed transaction still has messages to
    /// hand on: call [`replay`](Self::replay) before decoding more.
    pub(crate) fn replaying(&self) -> bool {
        self.replaying.is_some()
    }

    /// Hands on up to `max` more changes of the streamed transaction
    /// being replayed, and its Commit after the last.
    pub(crate) fn replay(&mut self, max: usize, out: &mut Vec<SourceItem>) -> Result<(), PgError> {
        let Some(r) = &mut self.replaying else {
            return Ok(());
        };
        let at = r.commit.commit_lsn;
        for _ in 0..max.max(1) {
            let next = match self.replaying.as_mut().map(|r| r.messages.next()) {
                Some(Ok(next)) => next,
                Some(Err(message)) => return Err(PgError::Decode { lsn: at, message }),
                None => return Ok(()),
            };
            match next {
                Some((lsn, message)) => self
                    .decode_inner(lsn, &message, out)
                    .map_err(|message| PgError::Decode { lsn, message })?,
                None => {
                    let Some(r) = self.replaying.take() else {
                        return Ok(());
                    };
                    self.txn = None;
                    self.last_commit_end = r.commit.end_lsn;
                    out.push(SourceItem::Commit(r.commit));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// End LSN of the last transaction decoded (zero before the first).
    pub(crate) fn last_commit_end(&self) -> Lsn {
        self.last_commit_end
    }

    /// Decodes one pgoutput message that arrived in XLogData starting at
    /// `lsn`, appending items to `out`.
    pub(crate) fn decode(
        &mut self,
        lsn: Lsn,
        msg: &[u8],
        out: &mut Vec<SourceItem>,
    ) -> Result<(), PgError> {
        if self.replaying.is_some() {
            return Err(PgError::Decode {
                lsn,
                message: "a message arrived while a streamed transaction was still being replayed"
                    .into(),
            });
        }
        self.decode_inner(lsn, msg, out)
            .map_err(|message| PgError::Decode { lsn, message })
    }

    fn decode_inner(&mut self, lsn: Lsn, msg: &[u8], out: &mut Vec<SourceItem>) -> R<()> {
        let mut rd = Rd { b: msg, i: 1 };
        if let Some(streamed) = &mut self.streamed
            && streamed.current().is_some()
            && matches!(
                msg.first(),
                Some(b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M')
            )
        {
            // Kept as a protocol 1 message would be: without the xid.
            let subxid = rd.u32()?;
            let mut kept = Vec::with_capacity(msg.len() - 4);
            kept.push(msg[0]);
            kept.extend_from_slice(&msg[5..]);
            return streamed.push(lsn, subxid, kept.into_boxed_slice());
        }
        match msg.first().copied() {
            Some(b'B') => {
                let final_lsn = Lsn(rd.u64()?);
                let commit_time = rd.i64()?;
                let xid = rd.u32()?;
                if let Some(t) = &self.txn {
                    return Err(format!(
                        "BEGIN of xid {xid} while xid {} is still open",
                        t.xid
                    ));
                }
                self.begin(xid, final_lsn, commit_time, out);
            }
            Some(b'C') => {
                let _flags = rd.u8()?;
                let commit_lsn = Lsn(rd.u64()?);
                let end_lsn = Lsn(rd.u64()?);
                let _commit_time = rd.i64()?;
                let t = self.txn.take().ok_or("COMMIT without BEGIN")?;
                if t.final_lsn != commit_lsn {
                    return Err(format!(
                        "COMMIT at {commit_lsn} does not match BEGIN's final LSN {}",
                        t.final_lsn
                    ));
                }
                self.last_commit_end = end_lsn;
                out.push(SourceItem::Commit(TxnCommit {
                    txn: t.id,
                    commit_lsn,
                    end_lsn,
                }));
            }
            // Origin of a replicated transaction: not needed downstream.
            Some(b'O') => {}
            Some(b'Y') => {
                let oid = rd.u32()?;
                let ns = rd.cstr()?;
                let name = rd.cstr()?;
                // For a domain pgoutput announces the domain's OID with its
                // base type's name; an empty namespace means pg_catalog, so
                // a domain over a built-in type decodes like that type.
                let entry = if ns.is_empty() {
                    (name.to_owned(), PgType::from_name(name))
                } else {
                    (format!("{ns}.{name}"), PgType::Other)
                };
                self.types.insert(oid, entry);
            }
            Some(b'R') => self.relation(&mut rd)?,
            Some(b'I') => {
                let rel = self.rel(rd.u32()?)?;
                expect_tag(&mut rd, b'N')?;
                let after = read_tuple(&mut rd, rel)?;
                let table = rel.schema.clone();
                self.push_change(lsn, Op::Insert, Some(table), None, Some(after), None, out)?;
            }
            Some(b'U') => {
                let rel = self.rel(rd.u32()?)?;
                let mut before = None;
                let mut tag = rd.u8()?;
                if tag == b'K' || tag == b'O' {
                    before = Some(read_tuple(&mut rd, rel)?);
                    tag = rd.u8()?;
                }
                if tag != b'N' {
                    return Err(format!("UPDATE: expected 'N', found {:?}", tag as char));
                }
                let after = read_tuple(&mut rd, rel)?;
                let table = rel.schema.clone();
                self.push_change(lsn, Op::Update, Some(table), before, Some(after), None, out)?;
            }
            Some(b'D') => {
                let rel = self.rel(rd.u32()?)?;
                let tag = rd.u8()?;
                if tag != b'K' && tag != b'O' {
                    return Err(format!(
                        "DELETE: expected 'K' or 'O', found {:?}",
                        tag as char
                    ));
                }
                let before = read_tuple(&mut rd, rel)?;
                let table = rel.schema.clone();
                self.push_change(lsn, Op::Delete, Some(table), Some(before), None, None, out)?;
            }
            Some(b'T') => {
                let n = rd.u32()?;
                // CASCADE / RESTART IDENTITY: the events carry no options.
                let _options = rd.u8()?;
                for _ in 0..n {
                    let table = self.rel(rd.u32()?)?.schema.clone();
                    self.push_change(lsn, Op::Truncate, Some(table), None, None, None, out)?;
                }
            }
            Some(b'M') => {
                let transactional = rd.u8()? & 1 == 1;
                let msg_lsn = Lsn(rd.u64()?);
                let prefix = rd.cstr()?;
                let len = usize::try_from(rd.i32()?).map_err(|_| "negative message length")?;
                let content = rd.take(len)?;
                let message = LogicalMessage {
                    prefix: prefix.to_owned(),
                    content: content.to_vec(),
                };
                if !transactional {
                    return self.untransactional(msg_lsn, message, out);
                }
                self.push_change(lsn, Op::Message, None, None, None, Some(message), out)?;
            }
            Some(b'S') => {
                let xid = rd.u32()?;
                let first = rd.u8()? == 1;
                self.streaming("STREAM START")?.start(xid, first)?;
            }
            Some(b'E') => self.streaming("STREAM STOP")?.stop()?,
            Some(b'A') => {
                let xid = rd.u32()?;
                let subxid = rd.u32()?;
                self.streaming("STREAM ABORT")?.abort(xid, subxid);
            }
            Some(b'c') => {
                let xid = rd.u32()?;
                let _flags = rd.u8()?;
                let commit_lsn = Lsn(rd.u64()?);
                let end_lsn = Lsn(rd.u64()?);
                let commit_time = rd.i64()?;
                if let Some(t) = &self.txn {
                    return Err(format!(
                        "STREAM COMMIT of xid {xid} while xid {} is still open",
                        t.xid
                    ));
                }
                let messages = self.streaming("STREAM COMMIT")?.commit(xid)?;
                let id = self.begin(xid, commit_lsn, commit_time, out);
                self.replaying = Some(Replaying {
                    messages,
                    commit: TxnCommit {
                        txn: id,
                        commit_lsn,
                        end_lsn,
                    },
                });
            }
            Some(t) => {
                return Err(format!(
                    "unexpected pgoutput message {:?} (two-phase is not enabled)",
                    t as char
                ));
            }
            None => return Err("empty pgoutput message".into()),
        }
        Ok(())
    }

    /// Opens transaction `xid`, which commits at `final_lsn` at
    /// `commit_time` (Postgres's epoch), and hands on its Begin.
    fn begin(
        &mut self,
        xid: u32,
        final_lsn: Lsn,
        commit_time: i64,
        out: &mut Vec<SourceItem>,
    ) -> TxnId {
        let id = next_txn_id();
        let commit_time_micros = commit_time.saturating_add(PG_EPOCH_OFFSET_MICROS);
        self.txn = Some(OpenTxn {
            id,
            final_lsn,
            xid,
            commit_time_micros,
            seq: 0,
        });
        out.push(SourceItem::Begin(TxnBegin {
            txn: id,
            xid,
            commit_lsn: final_lsn,
            commit_time_micros,
        }));
        id
    }

    /// A non-transactional message, as a transaction of its own.
    fn untransactional(
        &mut self,
        at: Lsn,
        message: LogicalMessage,
        out: &mut Vec<SourceItem>,
    ) -> R<()> {
        if let Some(t) = &self.txn {
            return Err(format!(
                "a non-transactional message at {at} inside the transaction of xid {}",
                t.xid
            ));
        }
        // `at` is the end of the message's record (see the module docs).
        let end_lsn = at;
        let at = Lsn(at.0.saturating_sub(1));
        let id = next_txn_id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        out.push(SourceItem::Begin(TxnBegin {
            txn: id,
            xid: 0,
            commit_lsn: at,
            commit_time_micros: now,
        }));
        if message.prefix != HEARTBEAT_PREFIX {
            out.push(SourceItem::Change(ChangeEvent {
                op: Op::Message,
                table: None,
                before: None,
                after: None,
                message: Some(message),
                source: SourceInfo {
                    commit_lsn: at,
                    lsn: at,
                    xid: 0,
                    commit_time_micros: now,
                    seq: 0,
                    snapshot: SnapshotKind::None,
                },
                txn: id,
            }));
        }
        self.last_commit_end = end_lsn;
        out.push(SourceItem::Commit(TxnCommit {
            txn: id,
            commit_lsn: at,
            end_lsn,
        }));
        Ok(())
    }

    fn streaming(&mut self, what: &str) -> R<&mut Streamed> {
        self.streamed
            .as_mut()
            .ok_or_else(|| format!("{what} although streaming is off"))
    }

    fn rel(&self, oid: u32) -> R<&CachedRelation> {
        self.relations
            .get(&oid)
            .ok_or_else(|| format!("change for relation {oid} before its RELATION message"))
    }

    #[allow(clippy::too_many_arguments)]
    fn push_change(
        &mut self,
        lsn: Lsn,
        op: Op,
        table: Option<Arc<TableSchema>>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        message: Option<LogicalMessage>,
        out: &mut Vec<SourceItem>,
    ) -> R<()> {
        let t = self
            .txn
            .as_mut()
            .ok_or_else(|| format!("{} outside a transaction", op.as_str()))?;
        // Weir's own bookkeeping (a FOR ALL TABLES publication includes it)
        // is not the user's data.
        if table
            .as_ref()
            .is_some_and(|t| crate::snapshot::is_state_table(&t.schema, &t.name))
        {
            return Ok(());
        }
        let source = SourceInfo {
            commit_lsn: t.final_lsn,
            lsn,
            xid: t.xid,
            commit_time_micros: t.commit_time_micros,
            seq: t.seq,
            snapshot: SnapshotKind::None,
        };
        t.seq += 1;
        out.push(SourceItem::Change(ChangeEvent {
            op,
            table,
            before,
            after,
            message,
            source,
            txn: t.id,
        }));
        Ok(())
    }

    fn relation(&mut self, rd: &mut Rd<'_>) -> R<()> {
        let id = rd.u32()?;
        let ns = rd.cstr()?;
        let name = rd.cstr()?;
        let replica_identity = match rd.u8()? {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            c => return Err(format!("unknown replica identity {:?}", c as char)),
        };
        let n = usize::try_from(rd.i16()?).map_err(|_| "negative column count")?;
        let mut columns = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for _ in 0..n {
            let flags = rd.u8()?;
            let col_name = rd.cstr()?;
            let type_oid = rd.u32()?;
            let type_modifier = rd.i32()?;
            let (type_name, kind) = self.resolve_type(type_oid);
            if self.binary
                && let Some((part, send)) = kind.unsupported()
            {
                return Err(types::unsupported_column(
                    &format!(
                        "{}.{name}.{col_name}",
                        if ns.is_empty() { "pg_catalog" } else { ns }
                    ),
                    &type_name,
                    part,
                    send,
                ));
            }
            kinds.push(kind);
            columns.push(Column {
                name: col_name.to_owned(),
                type_oid,
                type_name,
                type_modifier,
                key: flags & 1 == 1,
            });
        }
        let candidate = TableSchema {
            id,
            version: 0,
            // pgoutput sends an empty namespace for pg_catalog.
            schema: if ns.is_empty() { "pg_catalog" } else { ns }.to_owned(),
            name: name.to_owned(),
            columns,
            replica_identity,
        };
        if let Some(c) = self.relations.get(&id)
            && same_shape(&c.schema, &candidate)
        {
            return Ok(());
        }
        let schema = register(&self.db_key, candidate);
        self.relations.insert(
            id,
            CachedRelation {
                schema,
                kinds: kinds.into_boxed_slice(),
            },
        );
        Ok(())
    }

    /// A column type's name and decoding: built-in types by OID; others
    /// named by their Type message, decoded by their looked-up form (in
    /// binary mode) or as the Type message's base type, else `oid:N`.
    fn resolve_type(&self, oid: u32) -> (String, Form) {
        if let Some(found) = types::builtin(oid, self.server_version) {
            return found;
        }
        let looked_up = self.catalog.get(&oid);
        match (self.types.get(&oid), looked_up) {
            (Some((name, _)), Some((_, form))) => (name.clone(), form.clone()),
            (Some((name, PgType::Other)), None) => (name.clone(), Form::Unknown),
            (Some((name, kind)), None) => (name.clone(), Form::Typed(*kind)),
            (None, Some((name, form))) => (name.clone(), form.clone()),
            (None, None) => (format!("oid:{oid}"), Form::Unknown),
        }
    }
}

fn expect_tag(rd: &mut Rd<'_>, want: u8) -> R<()> {
    let t = rd.u8()?;
    if t != want {
        return Err(format!(
            "expected tuple tag {:?}, found {:?}",
            want as char, t as char
        ));
    }
    Ok(())
}

fn read_tuple(rd: &mut Rd<'_>, rel: &CachedRelation) -> R<Vec<Value>> {
    let n = usize::try_from(rd.i16()?).map_err(|_| "negative column count")?;
    if n != rel.kinds.len() {
        return Err(format!(
            "row of {} has {n} columns but its RELATION message announced {}",
            rel.schema.qualified_name(),
            rel.kinds.len()
        ));
    }
    let mut values = Vec::with_capacity(n);
    for (i, kind) in rel.kinds.iter().enumerate() {
        let v = match rd.u8()? {
            b'n' => Value::Null,
            b'u' => Value::Unchanged,
            tag @ (b't' | b'b') => {
                let len = usize::try_from(rd.i32()?).map_err(|_| "negative value length")?;
                let data = rd.take(len)?;
                decode_value(kind, tag == b'b', data).map_err(|e| {
                    let col = &rel.schema.columns[i];
                    let preview = &data[..data.len().min(64)];
                    format!(
                        "column {}.{} ({}): {e}: {:?}",
                        rel.schema.qualified_name(),
                        col.name,
                        col.type_name,
                        String::from_utf8_lossy(preview)
                    )
                })?
            }
            t => return Err(format!("unknown tuple value kind {:?}", t as char)),
        };
        values.push(v);
    }
    Ok(values)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builders for pgoutput messages, so decoder tests and the decode
    /// benchmark need no server.
    pub(crate) mod wire {
        pub(crate) fn begin(final_lsn: u64, time: i64, xid: u32) -> Vec<u8> {
            let mut v = vec![b'B'];
            v.extend_from_slice(&final_lsn.to_be_bytes());
            v.extend_from_slice(&time.to_be_bytes());
            v.extend_from_slice(&xid.to_be_bytes());
            v
        }
        pub(crate) fn commit(commit_lsn: u64, end_lsn: u64, time: i64) -> Vec<u8> {
            let mut v = vec![b'C', 0];
            v.extend_from_slice(&commit_lsn.to_be_bytes());
            v.extend_from_slice(&end_lsn.to_be_bytes());
            v.extend_from_slice(&time.to_be_bytes());
            v
        }
        /// Columns as (name, type oid, key).
        pub(crate) fn relation(
            oid: u32,
            ns: &str,
            name: &str,
            ident: u8,
            cols: &[(&str, u32, bool)],
        ) -> Vec<u8> {
            let mut v = vec![b'R'];
            v.extend_from_slice(&oid.to_be_bytes());
            for s in [ns, name] {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            v.push(ident);
            v.extend_from_slice(&(cols.len() as i16).to_be_bytes());
            for (n, t, key) in cols {
                v.push(u8::from(*key));
                v.extend_from_slice(n.as_bytes());
                v.push(0);
                v.extend_from_slice(&t.to_be_bytes());
                v.extend_from_slice(&(-1i32).to_be_bytes());
            }
            v
        }
        /// Tuple values: None = null, Some(b"\0u") = unchanged, else text.
        pub(crate) fn tuple(v: &mut Vec<u8>, vals: &[Option<&[u8]>]) {
            v.extend_from_slice(&(vals.len() as i16).to_be_bytes());
            for val in vals {
                match val {
                    None => v.push(b'n'),
                    Some(b"\0u") => v.push(b'u'),
                    Some(b) => {
                        v.push(b't');
                        v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        v.extend_from_slice(b);
                    }
                }
            }
        }
        pub(crate) fn insert(oid: u32, vals: &[Option<&[u8]>]) -> Vec<u8> {
            let mut v = vec![b'I'];
            v.extend_from_slice(&oid.to_be_bytes());
            v.push(b'N');
            tuple(&mut v, vals);
            v
        }
    }

    fn decoder() -> Decoder {
        // A unique key per test keeps the process-wide registry from
        // mixing tests that run in parallel.
        static N: AtomicU64 = AtomicU64::new(0);
        Decoder::new(format!("test-{}", N.fetch_add(1, Ordering::Relaxed)).into())
    }

    #[test]
    fn transaction_with_insert_update_delete() {
        let mut d = decoder();
        let mut out = Vec::new();
        let lsn = Lsn(100);
        d.decode(lsn, &wire::begin(500, 0, 7), &mut out).unwrap();
        assert!(d.in_txn());
        let rel = wire::relation(
            16384,
            "public",
            "t",
            b'd',
            &[("id", 23, true), ("name", 25, false)],
        );
        d.decode(lsn, &rel, &mut out).unwrap();
        d.decode(
            Lsn(110),
            &wire::insert(16384, &[Some(b"1"), Some(b"a")]),
            &mut out,
        )
        .unwrap();
        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'K');
        wire::tuple(&mut upd, &[Some(b"1"), None]);
        upd.push(b'N');
        wire::tuple(&mut upd, &[Some(b"2"), Some(b"\0u")]);
        d.decode(Lsn(120), &upd, &mut out).unwrap();
        let mut del = vec![b'D'];
        del.extend_from_slice(&16384u32.to_be_bytes());
        del.push(b'K');
        wire::tuple(&mut del, &[Some(b"2"), None]);
        d.decode(Lsn(130), &del, &mut out).unwrap();
        d.decode(Lsn(510), &wire::commit(500, 510, 0), &mut out)
            .unwrap();
        assert!(!d.in_txn());
        assert_eq!(d.last_commit_end(), Lsn(510));

        assert_eq!(out.len(), 5);
        let SourceItem::Begin(b) = &out[0] else {
            panic!()
        };
        assert_eq!(b.commit_lsn, Lsn(500));
        assert_eq!(b.commit_time_micros, PG_EPOCH_OFFSET_MICROS);
        let SourceItem::Change(ins) = &out[1] else {
            panic!()
        };
        assert_eq!(ins.op, Op::Insert);
        assert_eq!(
            ins.after,
            Some(vec![Value::Int(1), Value::Text("a".into())])
        );
        assert_eq!(ins.source.seq, 0);
        assert_eq!(ins.source.lsn, Lsn(110));
        assert_eq!(ins.source.commit_lsn, Lsn(500));
        assert_eq!(ins.source.xid, 7);
        let table = ins.table.as_ref().unwrap();
        assert_eq!(table.version, 1);
        assert_eq!(table.columns[0].type_name, "int4");
        assert!(table.columns[0].key);
        assert!(!table.columns[1].key);
        let SourceItem::Change(u) = &out[2] else {
            panic!()
        };
        assert_eq!(u.before, Some(vec![Value::Int(1), Value::Null]));
        assert_eq!(u.after, Some(vec![Value::Int(2), Value::Unchanged]));
        assert_eq!(u.source.seq, 1);
        let SourceItem::Change(del) = &out[3] else {
            panic!()
        };
        assert_eq!(del.op, Op::Delete);
        assert_eq!(del.after, None);
        assert_eq!(del.source.seq, 2);
        let SourceItem::Commit(c) = &out[4] else {
            panic!()
        };
        assert_eq!(
            (c.commit_lsn, c.end_lsn, c.txn),
            (Lsn(500), Lsn(510), b.txn)
        );
    }

    #[test]
    fn relation_versions() {
        let mut d = decoder();
        let mut out = Vec::new();
        let cols1: &[(&str, u32, bool)] = &[("id", 23, true)];
        let cols2: &[(&str, u32, bool)] = &[("id", 23, true), ("x", 99_999, false)];
        d.decode(Lsn(1), &wire::relation(1, "s", "t", b'd', cols1), &mut out)
            .unwrap();
        let v1 = d.relations[&1].schema.clone();
        d.decode(Lsn(2), &wire::relation(1, "s", "t", b'd', cols1), &mut out)
            .unwrap();
        assert!(
            Arc::ptr_eq(&v1, &d.relations[&1].schema),
            "identical re-send keeps the Arc"
        );
        let mut ty = vec![b'Y'];
        ty.extend_from_slice(&99_999u32.to_be_bytes());
        ty.extend_from_slice(b"app\0mood\0");
        d.decode(Lsn(3), &ty, &mut out).unwrap();
        d.decode(Lsn(4), &wire::relation(1, "s", "t", b'd', cols2), &mut out)
            .unwrap();
        let v2 = d.relations[&1].schema.clone();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v2.columns[1].type_name, "app.mood");
        // Same table in a new decoder (a reconnect): the old shape again
        // must not reuse version 1's number for anything but that shape.
        let mut d2 = Decoder::new(d.db_key.clone());
        d2.decode(Lsn(1), &wire::relation(1, "s", "t", b'd', cols1), &mut out)
            .unwrap();
        assert_eq!(d2.relations[&1].schema.version, 3);
        d2.decode(Lsn(1), &wire::relation(1, "s", "t", b'f', cols1), &mut out)
            .unwrap();
        assert_eq!(d2.relations[&1].schema.version, 4);
        // Unknown non-builtin type without a Type message.
        d2.decode(
            Lsn(1),
            &wire::relation(2, "", "u", b'd', &[("c", 77_777, false)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(d2.relations[&2].schema.columns[0].type_name, "oid:77777");
        // A domain over int4: announced with its base type's name.
        let mut ty = vec![b'Y'];
        ty.extend_from_slice(&88_888u32.to_be_bytes());
        ty.extend_from_slice(b"\0int4\0");
        d2.decode(Lsn(1), &ty, &mut out).unwrap();
        d2.decode(
            Lsn(1),
            &wire::relation(5, "s", "d", b'd', &[("c", 88_888, false)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(d2.relations[&5].schema.columns[0].type_name, "int4");
        assert_eq!(d2.relations[&5].kinds[0], Form::Typed(PgType::Int4));
        assert_eq!(d2.relations[&2].schema.schema, "pg_catalog");
        assert!(out.is_empty());
    }

    #[test]
    fn messages_and_errors() {
        let mut d = decoder();
        let mut out = Vec::new();
        let mut m = vec![b'M', 0];
        m.extend_from_slice(&5u64.to_be_bytes());
        m.extend_from_slice(b"pfx\0");
        m.extend_from_slice(&2i32.to_be_bytes());
        m.extend_from_slice(b"hi");
        // Non-transactional: a transaction of its own, at its LSN.
        d.decode(Lsn(5), &m, &mut out).unwrap();
        let [
            SourceItem::Begin(b),
            SourceItem::Change(c),
            SourceItem::Commit(end),
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        // The LSN is the end of the message's record, where the next one
        // may start: acknowledged, it must not pass that one.
        assert_eq!((b.xid, b.commit_lsn, c.source.xid), (0, Lsn(4), 0));
        assert_eq!(c.message.as_ref().unwrap().content, b"hi");
        assert_eq!((end.commit_lsn, end.end_lsn), (Lsn(4), Lsn(5)));
        assert!(!d.in_txn());
        out.clear();
        // A heartbeat: a transaction with nothing in it.
        let mut hb = vec![b'M', 0];
        hb.extend_from_slice(&7u64.to_be_bytes());
        hb.extend_from_slice(HEARTBEAT_PREFIX.as_bytes());
        hb.extend_from_slice(&[0, 0, 0, 0, 0]);
        d.decode(Lsn(7), &hb, &mut out).unwrap();
        assert!(
            matches!(&out[..], [SourceItem::Begin(_), SourceItem::Commit(c)] if c.end_lsn == Lsn(7)),
            "{out:?}"
        );
        out.clear();
        m[1] = 1;
        // Transactional outside a transaction is a protocol violation.
        assert!(d.decode(Lsn(5), &m, &mut out).is_err());
        d.decode(Lsn(5), &wire::begin(9, 0, 1), &mut out).unwrap();
        d.decode(Lsn(5), &m, &mut out).unwrap();
        let SourceItem::Change(e) = &out[1] else {
            panic!()
        };
        assert_eq!(e.op, Op::Message);
        assert_eq!(e.table, None);
        assert_eq!(
            e.message,
            Some(LogicalMessage {
                prefix: "pfx".into(),
                content: b"hi".to_vec()
            })
        );
        // Changes for an unknown relation are an error naming the OID.
        let err = d
            .decode(Lsn(6), &wire::insert(4242, &[None]), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("4242"), "{err}");
        // A bad value names the table and column.
        d.decode(
            Lsn(6),
            &wire::relation(3, "public", "n", b'd', &[("i", 23, true)]),
            &mut out,
        )
        .unwrap();
        let err = d
            .decode(Lsn(6), &wire::insert(3, &[Some(b"x1")]), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("public.n.i"), "{err}");
        assert!(d.decode(Lsn(6), &wire::begin(1, 0, 2), &mut out).is_err());
        assert!(d.decode(Lsn(6), &[b'C', 0, 1], &mut out).is_err());
    }

    /// Rough decode throughput on one core for a 10-column row. Run with
    /// `cargo test --release -p weir-postgres decode_throughput -- --ignored --nocapture`.
    /// `message` as sent inside a stream block: its xid after the tag.
    fn streamed(xid: u32, message: &[u8]) -> Vec<u8> {
        let mut v = vec![message[0]];
        v.extend_from_slice(&xid.to_be_bytes());
        v.extend_from_slice(&message[1..]);
        v
    }

    fn stream_start(xid: u32, first: bool) -> Vec<u8> {
        let mut v = vec![b'S'];
        v.extend_from_slice(&xid.to_be_bytes());
        v.push(u8::from(first));
        v
    }

    fn stream_commit(xid: u32, commit_lsn: u64, end_lsn: u64) -> Vec<u8> {
        let mut v = vec![b'c'];
        v.extend_from_slice(&xid.to_be_bytes());
        v.push(0);
        v.extend_from_slice(&commit_lsn.to_be_bytes());
        v.extend_from_slice(&end_lsn.to_be_bytes());
        v.extend_from_slice(&0i64.to_be_bytes());
        v
    }

    fn stream_abort(xid: u32, subxid: u32) -> Vec<u8> {
        let mut v = vec![b'A'];
        v.extend_from_slice(&xid.to_be_bytes());
        v.extend_from_slice(&subxid.to_be_bytes());
        v
    }

    fn inserted_ids(items: &[SourceItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                SourceItem::Begin(b) => format!("B{}", b.xid),
                SourceItem::Commit(_) => "C".into(),
                SourceItem::Change(c) => match &c.after.as_ref().unwrap()[0] {
                    Value::Int(id) => id.to_string(),
                    v => panic!("{v:?}"),
                },
                SourceItem::Restart => "R".into(),
            })
            .collect()
    }

    #[test]
    fn streamed_transactions_are_handed_on_at_their_commit_without_aborted_parts() {
        let dir = std::env::temp_dir().join(format!("weir-pgoutput-{}", std::process::id()));
        let mut d = decoder().with_streaming(Streamed::open(dir, 1 << 20).unwrap());
        let mut out = Vec::new();
        let rel = wire::relation(1, "public", "t", b'd', &[("id", 20, true)]);
        let ins = |id: &str| wire::insert(1, &[Some(id.as_bytes())]);
        let feed = |d: &mut Decoder, out: &mut Vec<SourceItem>, m: Vec<u8>| {
            d.decode(Lsn(1), &m, out).unwrap();
            while d.replaying() {
                d.replay(2, out).unwrap();
            }
        };
        // Two streamed transactions, 10 (with subtransaction 11) and 20,
        // interleaved; a plain one, 30, commits between their blocks.
        feed(&mut d, &mut out, stream_start(10, true));
        feed(&mut d, &mut out, streamed(10, &rel));
        feed(&mut d, &mut out, streamed(10, &ins("1")));
        feed(&mut d, &mut out, streamed(11, &ins("2")));
        feed(&mut d, &mut out, vec![b'E']);
        assert!(d.in_txn(), "a streamed transaction is open");
        feed(&mut d, &mut out, stream_start(20, true));
        feed(&mut d, &mut out, streamed(20, &rel));
        feed(&mut d, &mut out, streamed(20, &ins("5")));
        feed(&mut d, &mut out, vec![b'E']);
        feed(&mut d, &mut out, wire::begin(300, 0, 30));
        // Described again outside the streams: theirs were their own.
        feed(&mut d, &mut out, rel.clone());
        feed(&mut d, &mut out, ins("9"));
        feed(&mut d, &mut out, wire::commit(300, 301, 0));
        feed(&mut d, &mut out, stream_start(10, false));
        feed(&mut d, &mut out, streamed(10, &ins("3")));
        feed(&mut d, &mut out, vec![b'E']);
        assert_eq!(
            inserted_ids(&out),
            ["B30", "9", "C"],
            "nothing streamed yet"
        );
        feed(&mut d, &mut out, stream_abort(10, 11));
        feed(&mut d, &mut out, stream_abort(20, 20));
        feed(&mut d, &mut out, stream_commit(10, 400, 401));
        assert_eq!(
            inserted_ids(&out),
            ["B30", "9", "C", "B10", "1", "3", "C"],
            "10 without 11's change; 20 never"
        );
        assert!(!d.in_txn());
        assert_eq!(d.last_commit_end(), Lsn(401));
        // Each change numbered within its transaction, at its commit.
        let SourceItem::Change(c) = &out[5] else {
            panic!()
        };
        assert_eq!(
            (c.source.seq, c.source.commit_lsn, c.source.xid),
            (1, Lsn(400), 10)
        );
        // Out of order, or with streaming off: errors naming what.
        let e = d
            .decode(Lsn(9), &stream_commit(20, 500, 501), &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("never streamed"), "{e}");
        let e = decoder()
            .decode(Lsn(9), &stream_start(1, true), &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("streaming is off"), "{e}");
    }

    #[test]
    #[ignore]
    fn decode_throughput() {
        let mut d = decoder();
        let mut out = Vec::with_capacity(4096);
        let cols: &[(&str, u32, bool)] = &[
            ("id", 20, true),
            ("a", 23, false),
            ("b", 25, false),
            ("c", 1043, false),
            ("d", 701, false),
            ("e", 1700, false),
            ("f", 1184, false),
            ("g", 16, false),
            ("h", 2950, false),
            ("i", 3802, false),
        ];
        d.decode(
            Lsn(1),
            &wire::relation(1, "public", "t", b'd', cols),
            &mut out,
        )
        .unwrap();
        let ins = wire::insert(
            1,
            &[
                Some(b"123456789"),
                Some(b"42"),
                Some(b"some text value here"),
                Some(b"varchar value"),
                Some(b"3.141592653589793"),
                Some(b"12345.6789"),
                Some(b"2024-02-29 12:34:56.789012+00"),
                Some(b"t"),
                Some(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                Some(b"{\"a\": 1, \"b\": [1, 2]}"),
            ],
        );
        let n = 1_000_000;
        let start = std::time::Instant::now();
        d.decode(Lsn(1), &wire::begin(2, 0, 1), &mut out).unwrap();
        for _ in 0..n {
            d.decode(Lsn(1), &ins, &mut out).unwrap();
            if out.len() == 4096 {
                out.clear();
            }
        }
        let el = start.elapsed();
        println!(
            "{n} rows in {el:?}: {:.0} rows/s",
            n as f64 / el.as_secs_f64()
        );
    }
}
