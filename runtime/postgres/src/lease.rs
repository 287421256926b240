//! Leadership among several Weir processes with one configuration: the
//! one that holds a session-level advisory lock on the source database
//! streams; the others wait for it.
//!
//! The lock lives as long as the session that took it, so the leader keeps
//! that connection and proves it alive with a query every tenth of the
//! takeover time. Two rules keep two processes from ever delivering at
//! once, without trusting clocks beyond their rate:
//! * the leader stops trusting its lease a quarter of the takeover time
//!   after sending the last query that succeeded ([`Held::lost`]); the
//!   server cannot have dropped the session before it received that query;
//! * a new leader waits that same quarter after it got the lock before it
//!   starts ([`Lease::acquire`]), so any old leader has stopped by then.
//!
//! A leader that dies closes its connection and the lock is free at once;
//! one cut off from the server leaves a session behind, which the server
//! ends after `idle_session_timeout` (set to half the takeover time on the
//! lock's session, PostgreSQL 14+; TCP keepalives otherwise).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::PgError;
use crate::config::PostgresConfig;
use crate::setup::connect_sql;

/// The advisory lock's key for a slot, when none is configured: one lock
/// per slot, since the slot is what only one process may stream from.
pub fn lock_key(slot: &str) -> i64 {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"weir.ha:".iter().chain(slot.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The leadership this process holds.
pub struct Lease {
    client: Client,
    addr: String,
    key: i64,
    takeover: Duration,
    /// When the last query that succeeded was sent.
    proven: Instant,
}

impl Lease {
    /// Waits until this process holds the lock `key` on the source
    /// database, trying every tenth of `takeover`; then waits a quarter of
    /// `takeover` more (see the module). `None` when `shutdown` came
    /// first. Connection failures are retried: a standby outlives a server
    /// restart.
    pub async fn acquire(
        cfg: &PostgresConfig,
        key: i64,
        takeover: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Option<Lease>, PgError> {
        let addr = cfg.address();
        let poll = takeover / 10;
        let mut logged = false;
        loop {
            let attempt = async {
                let client = connect_sql(cfg, &addr).await?;
                prepare_session(&client, takeover).await;
                loop {
                    let got: bool = client
                        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                        .await
                        .map_err(|e| PgError::sql(&addr, "taking the leadership lock", e))?
                        .get(0);
                    if got {
                        return Ok::<_, PgError>((client, ()));
                    }
                    if !logged {
                        tracing::info!(
                            key,
                            "another process holds the leadership lock; standing by"
                        );
                        logged = true;
                    }
                    sleep(poll).await;
                }
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                r = attempt => r,
            };
            match result {
                Ok((client, _)) => {
                    // Any leader before us has stopped by the time this
                    // returns (see the module).
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = sleep(takeover / 4) => {}
                    }
                    // The lease counts from a query sent now, not from
                    // before that wait.
                    let proven = Instant::now();
                    client
                        .simple_query("SELECT 1")
                        .await
                        .map_err(|e| PgError::sql(&addr, "proving the leadership lock", e))?;
                    return Ok(Some(Lease {
                        client,
                        addr,
                        key,
                        takeover,
                        proven,
                    }));
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot reach the source for the leadership lock; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = sleep(poll) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps the lease proven from now on, in a task of its own, so that
    /// nothing the leader does (starting its pipeline) delays the proofs.
    pub fn keep(self) -> Held {
        let lost = CancellationToken::new();
        let clock = LeaseClock::new();
        clock.trust_until(self.proven + self.takeover / 4);
        let (release, released) = oneshot::channel();
        let task = tokio::spawn(keep(self, clock.clone(), lost.clone(), released));
        Held {
            clock,
            lost,
            task,
            release: Some(release),
        }
    }

    /// Ends the walsender still streaming `slot` for a leader that is gone
    /// or fenced, so that this one can start without waiting for the
    /// server to notice (`wal_sender_timeout`).
    pub async fn evict_slot_holder(&self, slot: &str) -> Result<(), PgError> {
        let ended = self
            .client
            .query(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            )
            .await
            .map_err(|e| PgError::sql(&self.addr, "ending the old leader's walsender", e))?;
        if !ended.is_empty() {
            tracing::warn!(
                slot,
                "ended the walsender a previous leader left on the slot"
            );
        }
        Ok(())
    }
}

/// Until when the lease is trusted, readable at any moment without a
/// task having to run: a sink checks it before each write, so a leader
/// that was paused (SIGSTOP, a frozen VM) and resumes after a standby took
/// over writes nothing more, even before its keeper has noticed.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    base: std::time::Instant,
    /// Nanoseconds after `base`; 0 once lost or released.
    until: Arc<AtomicU64>,
}

impl LeaseClock {
    fn new() -> LeaseClock {
        LeaseClock {
            base: std::time::Instant::now(),
            until: Arc::new(AtomicU64::new(0)),
        }
    }

    fn trust_until(&self, until: Instant) {
        let nanos = until
            .into_std()
            .saturating_duration_since(self.base)
            .as_nanos();
        self.until
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Whether the lease is still trusted now.
    pub fn valid(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.until.load(Ordering::Acquire)
    }
}

/// A lease being kept: [`lost`](Held::lost) resolves once it can no longer
/// be trusted, and the caller must then stop delivering at once.
pub struct Held {
    clock: LeaseClock,
    lost: CancellationToken,
    task: JoinHandle<String>,
    release: Option<oneshot::Sender<()>>,
}

impl Held {
    /// The lease's clock, for checks before each write.
    pub fn clock(&self) -> LeaseClock {
        self.clock.clone()
    }

    /// Waits until the lease is lost; the reason.
    pub async fn lost(&mut self) -> String {
        self.lost.cancelled().await;
        (&mut self.task)
            .await
            .unwrap_or_else(|e| format!("the lease keeper failed: {e}"))
    }

    /// Ends the leadership for a clean stop: another process may take
    /// over at once.
    pub async fn release(mut self) {
        if let Some(r) = self.release.take() {
            let _ = r.send(());
        }
        let _ = timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// Proves the lease every tenth of the takeover time until a proof is
/// late or fails (then cancels `lost`, returning why) or `released`
/// (then unlocks).
async fn keep(
    lease: Lease,
    clock: LeaseClock,
    lost: CancellationToken,
    mut released: oneshot::Receiver<()>,
) -> String {
    let every = lease.takeover / 10;
    let limit = lease.takeover / 4;
    let mut proven = lease.proven;
    let reason = loop {
        let sent = Instant::now();
        let ping = timeout(limit, lease.client.simple_query("SELECT 1"));
        tokio::select! {
            _ = &mut released => {
                clock.revoke();
                let _ = lease
                    .client
                    .query("SELECT pg_advisory_unlock($1)", &[&lease.key])
                    .await;
                return "released".to_owned();
            }
            _ = sleep_until(proven + limit) => {
                break format!(
                    "no answer from {} on the leadership lock's connection for {limit:?}",
                    lease.addr
                );
            }
            r = ping => match r {
                Ok(Ok(_)) => {
                    proven = sent;
                    clock.trust_until(proven + limit);
                }
                Ok(Err(e)) => {
                    break format!(
                        "the leadership lock's connection to {} failed: {e}",
                        lease.addr
                    );
                }
                Err(_) => {}
            },
        }
        tokio::select! {
            _ = sleep(every) => {}
            _ = sleep_until(proven + limit) => {}
        }
    };
    clock.revoke();
    lost.cancel();
    reason
}

/// Lets the server end the lock's session soon after its client is cut
/// off, so a standby can take over. Best effort: older servers lack
/// `idle_session_timeout`.
async fn prepare_session(client: &Client, takeover: Duration) {
    let idle = (takeover / 2).as_millis().max(1);
    let keepalive = (takeover / 10).as_secs().max(1);
    let settings = [
        format!("SET idle_session_timeout = {idle}"),
        format!("SET tcp_keepalives_idle = {keepalive}"),
        format!("SET tcp_keepalives_interval = {keepalive}"),
        "SET tcp_keepalives_count = 3".to_owned(),
    ];
    for s in settings {
        if let Err(e) = client.batch_execute(&s).await {
            tracing::debug!(setting = %s, error = %e, "leadership session setting not applied");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_per_slot() {
        assert_eq!(lock_key("weir"), lock_key("weir"));
        assert_ne!(lock_key("weir"), lock_key("weir2"));
    }
}
