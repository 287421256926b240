//! Watching the slot while it streams: heartbeats that keep it moving,
//! and readings of how far behind it is and how much WAL it holds back.
//!
//! A slot whose published tables are idle while other tables (or other
//! databases of the cluster) are written never sees a change to
//! acknowledge, so it may pin WAL; a heartbeat, a non-transactional
//! logical message with [`HEARTBEAT_PREFIX`], gives the stream a position
//! to acknowledge (it reaches no sink). A slot that falls too far behind
//! is invalidated by the server once it passes `max_slot_wal_keep_size`;
//! the readings say how close that is, and an alarm is logged (and shown
//! on `/status`) before it happens.
//!
//! Both run on a SQL connection of their own, every `status_interval`;
//! a failure to read or to write a heartbeat is logged and tried again,
//! never a reason to stop streaming.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use weir_core::Lsn;

use crate::config::PostgresConfig;
use crate::pgoutput::HEARTBEAT_PREFIX;
use crate::setup::connect_sql;

/// The latest reading of the slot, shared with the status endpoint.
#[derive(Debug, Default)]
pub struct SlotHealth {
    reading: Mutex<Option<SlotReading>>,
}

/// How the slot stood when last read.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotReading {
    /// The server's WAL position (its replay position on a standby).
    pub server_lsn: Option<Lsn>,
    /// The server's WAL position less the slot's confirmed flush: what is
    /// written and not yet acknowledged by every sink.
    pub lag_bytes: i64,
    /// How long the newest acknowledged WAL waited to be acknowledged
    /// (`pg_stat_replication.flush_lag`); 0 when caught up.
    pub lag_seconds: f64,
    /// WAL the server keeps for the slot (from its `restart_lsn`).
    pub retained_bytes: i64,
    /// `pg_replication_slots.wal_status`: `reserved`, `extended`,
    /// `unreserved` (invalidated at the next checkpoint unless it catches
    /// up) or `lost`.
    pub wal_status: Option<String>,
    /// WAL that may still be written before the slot is in danger
    /// (`safe_wal_size`); `None` without `max_slot_wal_keep_size`.
    pub safe_wal_bytes: Option<i64>,
    /// Why the slot needs an operator's attention, if it does.
    pub alarm: Option<String>,
    /// Heartbeats written by this process.
    pub heartbeats: u64,
}

impl SlotHealth {
    /// The latest reading; `None` before the first.
    pub fn reading(&self) -> Option<SlotReading> {
        self.reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, reading: SlotReading) {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = Some(reading);
    }
}

const READ: &str = "\
    SELECT pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn)::int8, \
           pg_wal_lsn_diff(w.lsn, s.restart_lsn)::int8, \
           to_jsonb(s) ->> 'wal_status', \
           (to_jsonb(s) ->> 'safe_wal_size')::int8, \
           coalesce(extract(epoch FROM r.flush_lag), 0)::float8, \
           pg_size_bytes(current_setting('max_slot_wal_keep_size', true)), \
           w.lsn::text \
    FROM pg_replication_slots s \
    CROSS JOIN (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                       ELSE pg_current_wal_lsn() END AS lsn) w \
    LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
    WHERE s.slot_name = $1";

/// Reads the slot and writes heartbeats every `cfg.status_interval` until
/// `shutdown`.
pub(crate) async fn watch_slot(
    cfg: PostgresConfig,
    health: Arc<SlotHealth>,
    shutdown: CancellationToken,
) {
    let addr = cfg.address();
    let mut client: Option<Client> = None;
    let mut last_beat = Instant::now();
    let mut heartbeats = health.reading().map_or(0, |r| r.heartbeats);
    let mut beat_failed = false;
    let mut alarm: Option<String> = health.reading().and_then(|r| r.alarm);
    // Before 14 pgoutput sends no messages: a heartbeat would only write WAL.
    let mut beats = cfg.heartbeat_interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(cfg.status_interval.max(Duration::from_millis(100))) => {}
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            match connect_sql(&cfg, &addr).await {
                Ok(c) => {
                    let version: Option<i32> = c
                        .query_one("SELECT current_setting('server_version_num')::int4", &[])
                        .await
                        .ok()
                        .map(|r| r.get(0));
                    if version.is_some_and(|v| v < 140_000) && beats.take().is_some() {
                        tracing::info!(slot = %cfg.slot, "no heartbeats: pgoutput sends logical messages from PostgreSQL 14 on");
                    }
                    client = Some(c);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watching the slot: cannot connect");
                    continue;
                }
            }
        }
        let Some(c) = &client else { continue };
        if let Some(every) = beats
            && last_beat.elapsed() >= every
        {
            last_beat = Instant::now();
            match c
                .execute(
                    "SELECT pg_logical_emit_message(false, $1, '')",
                    &[&HEARTBEAT_PREFIX],
                )
                .await
            {
                Ok(_) => {
                    heartbeats += 1;
                    beat_failed = false;
                }
                Err(e) if !beat_failed => {
                    beat_failed = true;
                    tracing::warn!(slot = %cfg.slot, error = %e, "could not write a heartbeat; the slot may pin WAL while its tables are idle");
                }
                Err(_) => {}
            }
        }
        let row = match c.query_opt(READ, &[&cfg.slot]).await {
            Ok(Some(row)) => row,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "watching the slot: cannot read it");
                continue;
            }
        };
        let mut reading = SlotReading {
            server_lsn: row.get::<_, Option<String>>(6).and_then(|l| l.parse().ok()),
            lag_bytes: row.get::<_, Option<i64>>(0).unwrap_or(0),
            retained_bytes: row.get::<_, Option<i64>>(1).unwrap_or(0),
            wal_status: row.get(2),
            safe_wal_bytes: row.get(3),
            lag_seconds: row.get(4),
            alarm: None,
            heartbeats,
        };
        let keep: Option<i64> = row.get(5);
        reading.alarm = judge(&reading, keep, cfg.retained_wal_alarm);
        if reading.alarm != alarm {
            match &reading.alarm {
                Some(a) => tracing::warn!(slot = %cfg.slot, "{a}"),
                None => tracing::info!(slot = %cfg.slot, "the slot's WAL is back within bounds"),
            }
            alarm = reading.alarm.clone();
        }
        health.set(reading);
    }
}

/// What is wrong with the slot, the worst first; `keep` is
/// `max_slot_wal_keep_size` in bytes (-1 or `None`: unlimited).
fn judge(r: &SlotReading, keep: Option<i64>, alarm_at: u64) -> Option<String> {
    let mib = |b: i64| b / (1 << 20);
    match r.wal_status.as_deref() {
        Some("lost") => {
            return Some(
                "the server invalidated the slot (wal_status = lost): the changes it still needed are gone"
                    .into(),
            );
        }
        Some("unreserved") => {
            return Some(format!(
                "the slot holds back {} MiB of WAL, past max_slot_wal_keep_size: the server invalidates it at its next checkpoint unless it catches up",
                mib(r.retained_bytes)
            ));
        }
        _ => {}
    }
    if let (Some(safe), Some(keep)) = (r.safe_wal_bytes, keep.filter(|k| *k > 0))
        && safe < keep / 5
    {
        return Some(format!(
            "only {} MiB more WAL before the server invalidates the slot (max_slot_wal_keep_size = {} MiB, {} MiB held back)",
            mib(safe),
            mib(keep),
            mib(r.retained_bytes)
        ));
    }
    if r.retained_bytes > 0 && r.retained_bytes as u64 > alarm_at {
        return Some(format!(
            "the slot holds back {} MiB of WAL (alarm at {} MiB): the pipeline is behind or stopped",
            mib(r.retained_bytes),
            alarm_at >> 20
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(retained_mib: i64, status: &str, safe_mib: Option<i64>) -> SlotReading {
        SlotReading {
            server_lsn: None,
            lag_bytes: 0,
            lag_seconds: 0.0,
            retained_bytes: retained_mib << 20,
            wal_status: Some(status.into()),
            safe_wal_bytes: safe_mib.map(|m| m << 20),
            alarm: None,
            heartbeats: 0,
        }
    }

    #[test]
    fn alarms_name_the_worst_trouble_first() {
        let gib = 1 << 30;
        assert_eq!(judge(&reading(10, "reserved", None), None, gib), None);
        let a = judge(&reading(2048, "extended", None), Some(-1), gib).unwrap();
        assert!(
            a.contains("2048 MiB") && a.contains("alarm at 1024 MiB"),
            "{a}"
        );
        let a = judge(&reading(900, "reserved", Some(100)), Some(1000 << 20), gib).unwrap();
        assert!(a.contains("only 100 MiB more"), "{a}");
        assert_eq!(
            judge(&reading(500, "reserved", Some(500)), Some(1000 << 20), gib),
            None,
            "half the room left"
        );
        let a = judge(
            &reading(1100, "unreserved", Some(-100)),
            Some(1000 << 20),
            gib,
        )
        .unwrap();
        assert!(a.contains("next checkpoint"), "{a}");
        let a = judge(&reading(0, "lost", None), Some(1000 << 20), gib).unwrap();
        assert!(a.contains("wal_status = lost"), "{a}");
    }
}
