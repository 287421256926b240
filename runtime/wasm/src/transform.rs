//! Transform plugins: what each change becomes.

use std::sync::Arc;

use weir_core::{ChangeEvent, Destination, Lsn, Op, RawMessage, SourceInfo, TxnId};

use crate::bindings::{transform, wit};
use crate::convert::{Tables, lift_change, lift_destination, lift_raw};
use crate::session::{Loaded, Session};
use crate::{PluginEngine, PluginError, PluginSpec};

/// What a transform decided for one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Deliver the event unchanged.
    Keep,
    /// Deliver nothing for this event.
    Drop,
    /// Deliver these instead (zero or more).
    Replace(Vec<Emit>),
    /// The plugin could not process the event.
    Fail {
        /// The plugin's explanation.
        message: String,
        /// Whether the same event might succeed later.
        retryable: bool,
    },
}

/// One thing a transform asked to deliver in place of an event.
#[derive(Clone, Debug, PartialEq)]
pub struct Emit {
    /// Where to deliver it; `None` lets the pipeline's router decide.
    pub destination: Option<Destination>,
    /// What to deliver.
    pub payload: EmitPayload,
}

/// The payload of an [`Emit`].
#[derive(Clone, Debug, PartialEq)]
pub enum EmitPayload {
    /// A change event, encoded by the sink. It belongs to the transaction of
    /// the event it was made from, and refers to the host's own table
    /// schema; its source position is what the plugin returned.
    Change(ChangeEvent),
    /// Bytes written as they are, with the source position of the event
    /// they were made from.
    Raw(RawMessage),
}

/// A committed transaction, as the `commit` hook is told of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Weir's id of the transaction: what emits made at commit belong to.
    pub txn: TxnId,
    /// Postgres transaction id.
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// Commit time, microseconds since 1970-01-01 UTC.
    pub commit_time_micros: i64,
}

/// A compiled transform component, validated against the `transform`
/// world. Cheap to clone; instantiate it once per pipeline (and again after
/// an instance fails).
#[derive(Clone)]
pub struct TransformPlugin {
    loaded: Arc<Loaded<transform::Transform>>,
}

crate::session::plugin_handle!(TransformPlugin, TransformInstance, "transform");

/// A live transform instance. It keeps its store (and the plugin's state)
/// across calls; after a call fails it is poisoned and every call returns
/// [`PluginError::Poisoned`].
///
/// Calls block until the plugin answers (at most the spec's call timeout):
/// make them from a blocking thread, not an async task.
pub struct TransformInstance {
    session: Session<transform::Transform>,
}

impl TransformInstance {
    /// Runs the transform over `batch` and returns one outcome per event,
    /// in order.
    ///
    /// Tables the instance has not seen (at the event's version) are
    /// announced first. An error is about the whole batch: a trap, timeout
    /// or memory error poisons the instance; a contract error (an answer the
    /// contract does not allow) does not.
    pub fn process(&mut self, batch: &[ChangeEvent]) -> Result<Vec<Outcome>, PluginError> {
        self.session.check_usable()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let end = self.session.prepare_segment(batch, start)?;
            let segment = &batch[start..end];
            let answers = self
                .session
                .call_batch(segment, |exports, store, changes| {
                    exports.call_process(store, changes)
                })?;
            if answers.len() != segment.len() {
                return Err(self
                    .session
                    .count_error("outcomes", answers.len(), segment.len()));
            }
            let tables = Tables {
                announced: &self.session.tables,
                declared: self.session.declared(),
            };
            for (offset, (answer, event)) in answers.into_iter().zip(segment).enumerate() {
                let outcome = lift_outcome(answer, event, &tables)
                    .map_err(|m| self.session.contract_error(start + offset, event, &m))?;
                outcomes.push(outcome);
            }
            start = end;
        }
        self.session.calls_succeeded();
        Ok(outcomes)
    }

    /// Whether the plugin asked for the `commit` hook: then call
    /// [`TransformInstance::commit`] after each transaction's last change,
    /// and never pass changes of two transactions in one `process` call.
    pub fn wants_commit(&self) -> bool {
        self.session.hooks.contains(wit::Hooks::COMMIT)
    }

    /// Runs the `commit` hook for `txn`; returns what the plugin emits as
    /// part of the transaction.
    pub fn commit(&mut self, txn: &Transaction) -> Result<Vec<Emit>, PluginError> {
        let arg = wit::Transaction {
            xid: txn.xid,
            commit_lsn: txn.commit_lsn.0,
            commit_time_micros: txn.commit_time_micros,
        };
        let emits = self
            .session
            .call_other(|exports, store| exports.call_commit(store, arg))?;
        // Raw bytes made at commit have no change of their own: they carry
        // the commit's position.
        let source = SourceInfo {
            commit_lsn: txn.commit_lsn,
            lsn: txn.commit_lsn,
            xid: txn.xid,
            commit_time_micros: txn.commit_time_micros,
            seq: 0,
            snapshot: Default::default(),
        };
        let tables = Tables {
            announced: &self.session.tables,
            declared: self.session.declared(),
        };
        let emits = emits
            .into_iter()
            .map(|emit| lift_emit(emit, &tables, txn.txn, source))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|message| PluginError::Contract {
                plugin: self.session.name.to_string(),
                message: format!(
                    "answer of `commit` for xid {} (commit LSN {}): {message}",
                    txn.xid, txn.commit_lsn
                ),
            })?;
        self.session.calls_succeeded();
        Ok(emits)
    }

    /// Whether an earlier call failed, so this instance refuses calls.
    pub fn is_poisoned(&self) -> bool {
        self.session.is_poisoned()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.session.name
    }
}

fn lift_outcome(
    answer: wit::Outcome,
    event: &ChangeEvent,
    tables: &Tables<'_>,
) -> Result<Outcome, String> {
    Ok(match answer {
        wit::Outcome::Keep => Outcome::Keep,
        wit::Outcome::Drop => Outcome::Drop,
        wit::Outcome::Fail(f) => Outcome::Fail {
            message: f.message,
            retryable: f.retryable,
        },
        wit::Outcome::Replace(emits) => Outcome::Replace(
            emits
                .into_iter()
                .map(|emit| lift_emit(emit, tables, event.txn, event.source))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Lifts one emit of transaction `txn`; raw bytes get position `source`.
fn lift_emit(
    emit: wit::Emit,
    tables: &Tables<'_>,
    txn: TxnId,
    source: SourceInfo,
) -> Result<Emit, String> {
    Ok(Emit {
        destination: emit.destination.map(lift_destination),
        payload: match emit.payload {
            wit::Payload::Change(c) => {
                let mut change = lift_change(c, tables, txn)?;
                // The contract has no snapshot kind: a read the plugin
                // passes on keeps the one it was given.
                if change.op == Op::Read {
                    change.source.snapshot = source.snapshot;
                }
                EmitPayload::Change(change)
            }
            wit::Payload::Raw(r) => EmitPayload::Raw(lift_raw(r, source)),
        },
    })
}
