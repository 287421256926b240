//! The reader end of `bench/latency`: follows what Weir delivers (a file
//! sink's JSON Lines, or a Kafka topic) and, for every change, measures the
//! time from its transaction's commit in Postgres (the envelope's
//! `source.commit_time`) to the moment the probe reads it. Postgres and the
//! probe share the machine's clock.
//!
//! ```text
//! weir-latency-probe file PATH SECONDS SKIP
//! weir-latency-probe kafka BROKERS TOPIC SECONDS SKIP
//! ```
//!
//! It reads for SECONDS from its first change, leaves the first SKIP
//! seconds out (Weir and the load warming up) and prints one JSON object:
//! the count and the percentiles in milliseconds.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

/// How long the file reader sleeps when it has caught up. It adds up to
/// this much to what it measures (half of it on average).
const POLL: Duration = Duration::from_micros(250);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (seconds, skip) = match args.len() {
        4 | 5 => (
            args[args.len() - 2].parse::<f64>().context("SECONDS")?,
            args[args.len() - 1].parse::<f64>().context("SKIP")?,
        ),
        _ => bail!(
            "usage: weir-latency-probe file PATH SECONDS SKIP | kafka BROKERS TOPIC SECONDS SKIP"
        ),
    };
    let mut window = Window::new(seconds, skip)?;
    match (args[0].as_str(), args.len()) {
        ("file", 4) => follow_file(&args[1], &mut window)?,
        ("kafka", 5) => follow_kafka(&args[1], &args[2], &mut window)?,
        _ => bail!(
            "usage: weir-latency-probe file PATH SECONDS SKIP | kafka BROKERS TOPIC SECONDS SKIP"
        ),
    }
    window.print()
}

/// The measurements of one run, counted from its first change.
struct Window {
    histogram: Histogram<u64>,
    started: Option<Instant>,
    seconds: Duration,
    skip: Duration,
    skipped: u64,
}

impl Window {
    fn new(seconds: f64, skip: f64) -> Result<Window> {
        Ok(Window {
            // Microseconds, from 1 µs to 100 s, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 100_000_000, 3)?,
            started: None,
            seconds: Duration::from_secs_f64(seconds),
            skip: Duration::from_secs_f64(skip),
            skipped: 0,
        })
    }

    /// Records one change read now; `false` once the window is over.
    fn record(&mut self, envelope: &[u8]) -> Result<bool> {
        let read_at = SystemTime::now();
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed();
        if elapsed >= self.seconds {
            return Ok(false);
        }
        if elapsed < self.skip {
            self.skipped += 1;
            return Ok(true);
        }
        let committed = commit_time(envelope)?;
        let micros = read_at
            .duration_since(committed)
            .unwrap_or_default()
            .as_micros()
            .max(1) as u64;
        self.histogram.saturating_record(micros);
        Ok(true)
    }

    fn done(&self) -> bool {
        self.started.is_some_and(|s| s.elapsed() >= self.seconds)
    }

    fn print(&self) -> Result<()> {
        let h = &self.histogram;
        if h.is_empty() {
            bail!("no change arrived after the first {:?}", self.skip);
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let measured = (self.seconds - self.skip).as_secs_f64();
        let report = serde_json::json!({
            "changes": h.len(),
            "changes_per_second": (h.len() as f64 / measured).round(),
            "skipped": self.skipped,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p99_9_ms": ms(0.999),
            "max_ms": h.max() as f64 / 1000.0,
            "mean_ms": (h.mean() / 10.0).round() / 100.0,
        });
        println!("{report}");
        Ok(())
    }
}

/// The commit time of a Weir JSON envelope (`"commit_time":"…Z"`).
fn commit_time(envelope: &[u8]) -> Result<SystemTime> {
    const FIELD: &[u8] = b"\"commit_time\":\"";
    let at = envelope
        .windows(FIELD.len())
        .position(|w| w == FIELD)
        .context("an envelope without source.commit_time")?
        + FIELD.len();
    let end = envelope[at..]
        .iter()
        .position(|&b| b == b'"')
        .context("an unterminated commit_time")?;
    let text = std::str::from_utf8(&envelope[at..at + end])?;
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("commit_time {text:?}"))?;
    Ok(UNIX_EPOCH + Duration::from_nanos(parsed.unix_timestamp_nanos() as u64))
}

/// Follows a growing JSON Lines file, one change per line.
fn follow_file(path: &str, window: &mut Window) -> Result<()> {
    let mut file = loop {
        match File::open(path) {
            Ok(f) => break f,
            Err(e) if e.kind() == ErrorKind::NotFound => std::thread::sleep(POLL),
            Err(e) => return Err(e).context(path.to_owned()),
        }
    };
    let mut buf = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).context(path.to_owned())?;
        if n == 0 {
            if window.done() {
                return Ok(());
            }
            std::thread::sleep(POLL);
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut from = 0;
        while let Some(len) = buf[from..].iter().position(|&b| b == b'\n') {
            if !window.record(&buf[from..from + len])? {
                return Ok(());
            }
            from += len + 1;
        }
        buf.drain(..from);
    }
}

/// Consumes a Kafka topic, one change per message.
fn follow_kafka(brokers: &str, topic: &str, window: &mut Window) -> Result<()> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("weir-latency-{}", std::process::id()))
        // The topic is the run's own: from its start (what came before
        // the subscription took hold falls in the skipped seconds).
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1")
        .set("fetch.min.bytes", "1")
        // Weir makes the topic with its first record; notice it soon.
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                if let Some(payload) = msg.payload()
                    && !window.record(payload)?
                {
                    return Ok(());
                }
            }
            // Until Weir's first record makes the topic.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => std::thread::sleep(Duration::from_millis(100)),
            Some(Err(e)) => bail!("consuming {topic}: {e}"),
            None if window.done() => return Ok(()),
            None => {}
        }
    }
}
