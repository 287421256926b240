//! The last hour of the pipeline's counters, one reading a second, in a
//! bounded ring: what the console's charts draw and where `/status` takes
//! its rates from. Readings are totals; rates are the differences between
//! neighbours, so a reading that comes late or is missed bends no line.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use weir_core::Lsn;

/// How often a reading is taken.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Readings kept: an hour at one a second.
pub const CAPACITY: usize = 3600;

/// The counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Changes received from the source so far.
    pub changes_in: u64,
    /// The acknowledged source position.
    pub acked: Lsn,
    /// The slot's lag in bytes and seconds, once the slot was read.
    pub lag_bytes: Option<i64>,
    /// See `lag_bytes`.
    pub lag_seconds: Option<f64>,
    /// Records each sink has made durable, in the order of the sink names
    /// the history was made with.
    pub sink_records: Vec<u64>,
}

/// One point of the charts: a reading, with the rates since the one before.
#[derive(Debug, Serialize, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t: u64,
    /// Changes received per second since the reading before.
    pub changes_per_second: f64,
    /// The slot's lag, when it was known.
    pub lag_bytes: Option<i64>,
    /// See `lag_bytes`.
    pub lag_seconds: Option<f64>,
    /// The acknowledged position, as Postgres prints it.
    pub acked_lsn: String,
    /// Records made durable per second, by sink.
    pub sinks: serde_json::Map<String, serde_json::Value>,
}

/// The ring of readings.
#[derive(Debug)]
pub struct History {
    sinks: Vec<String>,
    readings: Mutex<VecDeque<Reading>>,
}

impl History {
    /// An empty history of a pipeline with these sinks (their order is
    /// the order of [`Reading::sink_records`]).
    pub fn new(sinks: Vec<String>) -> Self {
        History {
            sinks,
            readings: Mutex::new(VecDeque::with_capacity(CAPACITY)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Reading>> {
        self.readings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a reading; the oldest goes once the ring is full. Its time
    /// is moved past the last one's if the clock was set back, so that
    /// readings stay in order and a poll `since` the last point it saw
    /// still gets the new ones.
    pub fn record(&self, mut reading: Reading) {
        let mut readings = self.lock();
        if let Some(last) = readings.back() {
            reading.at_ms = reading.at_ms.max(last.at_ms + 1);
        }
        if readings.len() == CAPACITY {
            readings.pop_front();
        }
        readings.push_back(reading);
    }

    /// The points after `since_ms` (all without it), oldest first. The
    /// first reading of all has no rate, so it is no point.
    pub fn points(&self, since_ms: Option<u64>) -> Vec<Point> {
        let readings = self.lock();
        // Every point needs its predecessor; readings are in time order.
        let start = since_ms.map_or(0, |since| {
            readings
                .partition_point(|r| r.at_ms <= since)
                .saturating_sub(1)
        });
        if readings.len() < start + 2 {
            return Vec::new();
        }
        readings
            .range(start..)
            .zip(readings.range(start + 1..))
            .filter(|(_, r)| since_ms.is_none_or(|since| r.at_ms > since))
            .map(|(before, r)| self.point(before, r))
            .collect()
    }

    fn point(&self, before: &Reading, r: &Reading) -> Point {
        let rate = |now: u64, then: u64| rate(now.saturating_sub(then), before.at_ms, r.at_ms);
        Point {
            t: r.at_ms,
            changes_per_second: rate(r.changes_in, before.changes_in),
            lag_bytes: r.lag_bytes,
            lag_seconds: r.lag_seconds,
            acked_lsn: r.acked.to_string(),
            sinks: self
                .sinks
                .iter()
                .zip(r.sink_records.iter().zip(&before.sink_records))
                .map(|(name, (now, then))| (name.clone(), rate(*now, *then).into()))
                .collect(),
        }
    }

    /// Changes per second, and records per second of each sink, over the
    /// last `window_ms` of readings; zeros before there are two.
    pub fn rates(&self, window_ms: u64) -> (f64, Vec<f64>) {
        let readings = self.lock();
        let (Some(last), Some(_)) = (readings.back(), readings.get(1)) else {
            return (0.0, vec![0.0; self.sinks.len()]);
        };
        let from = last.at_ms.saturating_sub(window_ms);
        // At most the one before the last, so some time has passed.
        let first = &readings[readings
            .partition_point(|r| r.at_ms < from)
            .min(readings.len() - 2)];
        let per = |now: u64, then: u64| rate(now.saturating_sub(then), first.at_ms, last.at_ms);
        (
            per(last.changes_in, first.changes_in),
            last.sink_records
                .iter()
                .zip(&first.sink_records)
                .map(|(now, then)| per(*now, *then))
                .collect(),
        )
    }
}

/// `n` events between two moments, per second; 0 when no time passed.
fn rate(n: u64, from_ms: u64, to_ms: u64) -> f64 {
    let ms = to_ms.saturating_sub(from_ms);
    if ms == 0 {
        return 0.0;
    }
    (n as f64 * 1000.0 / ms as f64 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ms: u64, changes_in: u64, records: u64) -> Reading {
        Reading {
            at_ms,
            changes_in,
            acked: Lsn(at_ms),
            lag_bytes: Some(7),
            lag_seconds: None,
            sink_records: vec![records],
        }
    }

    #[test]
    fn points_are_rates_between_neighbours_after_a_moment() {
        let h = History::new(vec!["out".into()]);
        assert!(h.points(None).is_empty());
        h.record(reading(1_000, 0, 0));
        assert!(h.points(None).is_empty(), "one reading has no rate");
        h.record(reading(2_000, 100, 50));
        h.record(reading(4_000, 300, 50));
        let all = h.points(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].t, 2_000);
        assert_eq!(all[0].changes_per_second, 100.0);
        assert_eq!(all[0].sinks["out"], 50.0);
        assert_eq!(all[1].changes_per_second, 100.0, "200 changes over 2 s");
        assert_eq!(all[1].sinks["out"], 0.0);
        assert_eq!(all[1].acked_lsn, Lsn(4_000).to_string());
        // Polling with the newest time seen gives only what came after.
        let after = h.points(Some(2_000));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].t, 4_000);
        assert!(h.points(Some(4_000)).is_empty());
        assert_eq!(h.points(Some(0)).len(), 2);
    }

    #[test]
    fn the_ring_keeps_the_newest_hour() {
        let h = History::new(vec![]);
        for i in 0..CAPACITY as u64 + 10 {
            h.record(reading(i * 1000, i, 0));
        }
        let points = h.points(None);
        assert_eq!(points.len(), CAPACITY - 1);
        assert_eq!(points[0].t, 11_000);
        assert_eq!(points.last().unwrap().t, (CAPACITY as u64 + 9) * 1000);
    }

    #[test]
    fn rates_cover_the_window() {
        let h = History::new(vec!["a".into()]);
        assert_eq!(h.rates(10_000), (0.0, vec![0.0]));
        for i in 0..30u64 {
            // 10 changes a second for 20 s, then 50 a second.
            let changes = if i <= 20 { i * 10 } else { 200 + (i - 20) * 50 };
            h.record(reading(i * 1000, changes, i));
        }
        let (changes, sinks) = h.rates(5_000);
        assert_eq!(changes, 50.0);
        assert_eq!(sinks, [1.0]);
        let (changes, _) = h.rates(1_000_000);
        assert_eq!(changes, (650.0f64 / 29.0 * 10.0).round() / 10.0);
    }
}
