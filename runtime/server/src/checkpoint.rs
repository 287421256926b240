//! The ack tracker: which source position may be acknowledged to Postgres.
//!
//! The rule: the flush LSN sent to Postgres is the end LSN of the newest
//! transaction such that it and every earlier transaction are durable at
//! every sink they were routed to. A transaction is tracked from its BEGIN;
//! each record routed to a sink adds one pending delivery; COMMIT records
//! its end LSN. It is complete when it has committed and nothing is
//! pending. The watermark only moves across a prefix of complete
//! transactions, so a slow early transaction holds back later fast ones,
//! and several events sharing an LSN (or BEGIN sharing one with the first
//! change) cannot be half-acknowledged: acknowledgement is per transaction,
//! never per event.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;
use weir_core::{Lsn, SinkRecord, TxnId};

#[derive(Debug, Default)]
struct TxnState {
    pending: u64,
    end_lsn: Option<Lsn>,
    /// Cut off by a stream restart before its commit; it will be delivered
    /// again under a new id, so it retires without moving the watermark.
    abandoned: bool,
}

/// Tracks in-flight transactions and computes the acknowledgeable LSN.
#[derive(Debug, Default)]
pub struct AckTracker {
    txns: BTreeMap<TxnId, TxnState>,
    acked: Lsn,
    /// The newest transaction retired complete (not abandoned).
    last_retired: Option<TxnId>,
}

/// A delivery report named a transaction the tracker does not know, or
/// more deliveries than were dispatched: a bug, never silently ignored.
#[derive(Debug, thiserror::Error)]
#[error("ack tracker: {0}")]
pub struct AckError(String);

impl AckTracker {
    /// A tracker whose watermark starts at `start` (the slot's confirmed LSN).
    pub fn new(start: Lsn) -> Self {
        AckTracker {
            txns: BTreeMap::new(),
            acked: start,
            last_retired: None,
        }
    }

    /// A transaction entered the pipeline.
    pub fn begin(&mut self, txn: TxnId) {
        self.txns.entry(txn).or_default();
    }

    /// `n` records of `txn` were dispatched to sinks.
    pub fn dispatched(&mut self, txn: TxnId, n: u64) -> Result<(), AckError> {
        let state = self.txns.get_mut(&txn).ok_or_else(|| {
            AckError(format!(
                "records dispatched for unknown transaction {txn:?}"
            ))
        })?;
        state.pending += n;
        Ok(())
    }

    /// Every record of `txn` has been dispatched; `end_lsn` is its commit's end.
    pub fn commit(&mut self, txn: TxnId, end_lsn: Lsn) -> Result<(), AckError> {
        let state = self
            .txns
            .get_mut(&txn)
            .ok_or_else(|| AckError(format!("commit for unknown transaction {txn:?}")))?;
        state.end_lsn = Some(end_lsn);
        Ok(())
    }

    /// `n` records of `txn` are durable.
    pub fn delivered(&mut self, txn: TxnId, n: u64) -> Result<(), AckError> {
        let state = self
            .txns
            .get_mut(&txn)
            .ok_or_else(|| AckError(format!("delivery for unknown transaction {txn:?}")))?;
        state.pending = state.pending.checked_sub(n).ok_or_else(|| {
            AckError(format!(
                "{n} deliveries reported for transaction {txn:?} with {} pending",
                state.pending
            ))
        })?;
        Ok(())
    }

    /// The stream restarted: every transaction still waiting for its commit
    /// will be redelivered from its start and must not hold the watermark
    /// forever. Its records already dispatched are still counted, so it
    /// retires once they are delivered (or at once if none are pending).
    pub fn abandon_uncommitted(&mut self) {
        for state in self.txns.values_mut() {
            if state.end_lsn.is_none() {
                state.abandoned = true;
            }
        }
    }

    /// Retires the complete prefix of transactions and returns the new
    /// watermark if it moved.
    pub fn advance(&mut self) -> Option<Lsn> {
        let before = self.acked;
        while let Some(entry) = self.txns.first_entry() {
            let state = entry.get();
            if state.pending > 0 {
                break;
            }
            match state.end_lsn {
                Some(end) => {
                    // A transaction redelivered after a reconnect may end
                    // below the watermark; the watermark never goes back.
                    self.acked = self.acked.max(end);
                    self.last_retired = Some(*entry.key());
                    entry.remove();
                }
                None if state.abandoned => {
                    entry.remove();
                }
                None => break,
            }
        }
        (self.acked != before).then_some(self.acked)
    }

    /// The current watermark.
    pub fn acked(&self) -> Lsn {
        self.acked
    }

    /// Transactions begun but not yet retired.
    pub fn in_flight(&self) -> usize {
        self.txns.len()
    }
}

/// The tracker shared by the processor and the sink tasks, publishing each
/// new watermark to its subscribers: the source (which reports it to
/// Postgres) and the status.
#[derive(Debug)]
pub struct Checkpointer {
    tracker: Mutex<AckTracker>,
    watermark: watch::Sender<Lsn>,
    retired: watch::Sender<Option<TxnId>>,
}

impl Checkpointer {
    /// A checkpointer starting at the slot's confirmed position.
    pub fn new(start: Lsn) -> Self {
        Checkpointer {
            tracker: Mutex::new(AckTracker::new(start)),
            watermark: watch::Sender::new(start),
            retired: watch::Sender::new(None),
        }
    }

    /// Receives the newest transaction retired complete (committed and
    /// durable at every sink, as every one before it), which tells a
    /// transaction whose end moves no watermark (an initial snapshot's)
    /// when it is delivered.
    pub fn subscribe_retired(&self) -> watch::Receiver<Option<TxnId>> {
        self.retired.subscribe()
    }

    /// Receives every new watermark, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Lsn> {
        self.watermark.subscribe()
    }

    /// Runs `f` on the tracker, then publishes the watermark if it moved.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut AckTracker) -> Result<T, AckError>,
    ) -> Result<T, AckError> {
        let mut tracker = self.lock();
        let out = f(&mut tracker)?;
        if let Some(lsn) = tracker.advance() {
            self.watermark.send_replace(lsn);
        }
        if let Some(txn) = tracker.last_retired
            && self.retired.borrow().is_none_or(|r| r < txn)
        {
            self.retired.send_replace(Some(txn));
        }
        Ok(out)
    }

    /// Records that every record of `batch` is durable.
    pub fn delivered(&self, batch: &[SinkRecord]) -> Result<(), AckError> {
        self.update(|t| {
            for (txn, n) in txn_runs(batch) {
                t.delivered(txn, n)?;
            }
            Ok(())
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AckTracker> {
        // A panic while holding the lock already halts the pipeline; the
        // tracker itself is never left half-updated by a panic in it.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Records per transaction, as `(txn, count)` runs: records come grouped
/// by transaction, so one pass with no map counts them.
pub fn txn_runs(records: &[SinkRecord]) -> impl Iterator<Item = (TxnId, u64)> + '_ {
    let mut iter = records.iter().map(|r| r.txn).peekable();
    std::iter::from_fn(move || {
        let txn = iter.next()?;
        let mut n = 1;
        while iter.next_if_eq(&txn).is_some() {
            n += 1;
        }
        Some((txn, n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> TxnId {
        TxnId(n)
    }

    #[test]
    fn waits_for_every_delivery_of_a_transaction() {
        let mut a = AckTracker::new(Lsn(10));
        a.begin(t(1));
        a.dispatched(t(1), 2).unwrap();
        a.commit(t(1), Lsn(100)).unwrap();
        assert_eq!(a.advance(), None);
        a.delivered(t(1), 1).unwrap();
        assert_eq!(a.advance(), None);
        a.delivered(t(1), 1).unwrap();
        assert_eq!(a.advance(), Some(Lsn(100)));
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn a_later_transaction_never_overtakes_an_earlier_one() {
        let mut a = AckTracker::new(Lsn::ZERO);
        a.begin(t(1));
        a.dispatched(t(1), 1).unwrap();
        a.commit(t(1), Lsn(100)).unwrap();
        a.begin(t(2));
        a.dispatched(t(2), 1).unwrap();
        a.commit(t(2), Lsn(200)).unwrap();
        a.delivered(t(2), 1).unwrap();
        assert_eq!(a.advance(), None, "txn 1 is still pending");
        a.delivered(t(1), 1).unwrap();
        assert_eq!(a.advance(), Some(Lsn(200)));
    }

    #[test]
    fn an_uncommitted_transaction_holds_the_watermark_even_with_nothing_pending() {
        // All records of a transaction can be delivered before its COMMIT
        // arrives (it is still streaming): acking then would skip the rest.
        let mut a = AckTracker::new(Lsn::ZERO);
        a.begin(t(1));
        a.dispatched(t(1), 1).unwrap();
        a.delivered(t(1), 1).unwrap();
        assert_eq!(a.advance(), None);
        a.commit(t(1), Lsn(50)).unwrap();
        assert_eq!(a.advance(), Some(Lsn(50)));
    }

    #[test]
    fn empty_and_filtered_transactions_complete_at_commit() {
        let mut a = AckTracker::new(Lsn::ZERO);
        a.begin(t(1));
        a.commit(t(1), Lsn(70)).unwrap();
        assert_eq!(a.advance(), Some(Lsn(70)));
    }

    #[test]
    fn the_watermark_never_goes_backwards() {
        let mut a = AckTracker::new(Lsn(500));
        a.begin(t(7));
        a.commit(t(7), Lsn(300)).unwrap();
        assert_eq!(a.advance(), None);
        assert_eq!(a.acked(), Lsn(500));
    }

    #[test]
    fn a_transaction_cut_off_by_a_restart_stops_holding_the_watermark() {
        let mut a = AckTracker::new(Lsn::ZERO);
        a.begin(t(1));
        a.dispatched(t(1), 1).unwrap();
        a.commit(t(1), Lsn(100)).unwrap();
        a.begin(t(2));
        a.dispatched(t(2), 2).unwrap();
        // The connection drops before txn 2 commits; it is redelivered as 3.
        a.abandon_uncommitted();
        a.begin(t(3));
        a.dispatched(t(3), 1).unwrap();
        a.commit(t(3), Lsn(300)).unwrap();
        a.delivered(t(1), 1).unwrap();
        a.delivered(t(3), 1).unwrap();
        assert_eq!(
            a.advance(),
            Some(Lsn(100)),
            "txn 2 still has records in flight"
        );
        a.delivered(t(2), 2).unwrap();
        assert_eq!(
            a.advance(),
            Some(Lsn(300)),
            "abandoned txn 2 never counts as acknowledged"
        );
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn an_abandoned_transaction_never_moves_the_watermark_itself() {
        let mut a = AckTracker::new(Lsn(10));
        a.begin(t(1));
        a.abandon_uncommitted();
        assert_eq!(a.advance(), None);
        assert_eq!(a.acked(), Lsn(10));
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn unknown_or_excess_deliveries_are_errors() {
        let mut a = AckTracker::new(Lsn::ZERO);
        assert!(a.delivered(t(9), 1).is_err());
        a.begin(t(1));
        a.dispatched(t(1), 1).unwrap();
        assert!(a.delivered(t(1), 2).is_err());
    }
}
