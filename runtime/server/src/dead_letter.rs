//! Dead letters: a change that could not be delivered (a plugin failed on
//! it, or a sink refused it), written as one JSON document that says why,
//! with the change in the native envelope, so the dead-letter sink keeps
//! what would otherwise be lost. The newest few are also kept in memory
//! ([`DeadLetterRing`]) for the console.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use weir_codec::EncodeError;
use weir_core::{ChangeEvent, RawMessage, SinkPayload, SinkRecord};

/// `{"<why>":…, "failed_at":…, "event":…}` for `event`, keyed like the
/// change (so a compacted topic keeps the last failure per row), with
/// `headers`. `why` are the leading fields, in order, as strings.
pub(crate) fn letter(
    why: &[(&str, &str)],
    headers: Vec<(String, Vec<u8>)>,
    event: &ChangeEvent,
) -> Result<RawMessage, EncodeError> {
    let mut value = Vec::with_capacity(512);
    for (i, (field, text)) in why.iter().enumerate() {
        value.push(if i == 0 { b'{' } else { b',' });
        serde_json::to_writer(&mut value, field).expect("writing to a Vec");
        value.push(b':');
        serde_json::to_writer(&mut value, text).expect("writing to a Vec");
    }
    value.extend_from_slice(if why.is_empty() {
        b"{\"failed_at\":\""
    } else {
        b",\"failed_at\":\""
    });
    weir_codec::write_utc_timestamp(&mut value, micros(SystemTime::now()));
    value.extend_from_slice(b"\",\"event\":");
    weir_codec::encode_native_json(event, &mut value)?;
    value.push(b'}');
    let mut key = Vec::new();
    let key = weir_codec::encode_key_json(event, &mut key)?.then_some(key);
    Ok(RawMessage {
        key,
        value: Some(value),
        headers,
        source: event.source,
    })
}

/// Dead letters the console shows: the newest ones.
pub const KEPT: usize = 200;

/// A kept letter holds at most this much of its change; a larger one is
/// named, not kept (the dead-letter sink has it whole).
const KEPT_BYTES: usize = 64 << 10;

/// Longest error, key or header text a kept letter holds.
const KEPT_TEXT: usize = 4 << 10;

/// The newest dead letters, for the console: those the dead-letter sink
/// has made durable, so it shows only what was really sent. At most
/// [`KEPT`], each held as JSON text of at most 64 KiB of change and a few
/// capped fields, so a flood of failures costs at most about 15 MiB.
#[derive(Debug, Default)]
pub struct DeadLetterRing {
    /// The dead-letter sink, once the pipeline has one.
    sink: OnceLock<String>,
    letters: Mutex<VecDeque<String>>,
    total: AtomicU64,
}

impl DeadLetterRing {
    /// Keeps what `sink`, the dead-letter sink, makes durable from now on.
    pub fn kept_from(&self, sink: &str) {
        let _ = self.sink.set(sink.to_owned());
    }

    /// `batch` is durable at `sink`: keeps it if that is the dead-letter
    /// sink (which gets dead letters only).
    pub fn delivered(&self, sink: &str, batch: &[SinkRecord]) {
        if self.sink.get().is_none_or(|s| s != sink) {
            return;
        }
        for record in batch {
            if let SinkPayload::Raw(letter) = &record.payload {
                self.keep(letter);
            }
        }
    }

    /// Keeps a letter made by [`letter`] (why it failed in its headers, the
    /// change in its value) or the letter of a raw record a sink refused
    /// (its own key and value).
    fn keep(&self, letter: &RawMessage) {
        let header = |name: &str| {
            letter
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| capped(v, KEPT_TEXT))
        };
        let plugin = header("weir.plugin");
        let mut kept = serde_json::json!({
            "at": utc(SystemTime::now()),
            "by": if plugin.is_some() { "plugin" } else { "sink" },
            "plugin": plugin,
            "plugin_version": header("weir.plugin_version"),
            "sink": header("weir.sink"),
            "error": header("weir.error"),
        });
        let value = letter.value.as_deref().unwrap_or_default();
        let made = (value.len() <= KEPT_BYTES)
            .then(|| serde_json::from_slice::<serde_json::Value>(value).ok())
            .flatten()
            .filter(|v| v.get("failed_at").is_some());
        match made {
            Some(mut made) => kept["event"] = made["event"].take(),
            None if value.len() > KEPT_BYTES => {
                kept["omitted"] = format!(
                    "{} bytes, more than the console keeps; the dead-letter sink has it",
                    value.len()
                )
                .into();
            }
            None => {
                kept["record"] = serde_json::json!({
                    "key": letter.key.as_deref().map(|k| capped(k, KEPT_TEXT)),
                    "value": letter.value.as_deref().map(|v| capped(v, KEPT_BYTES)),
                });
            }
        }
        // Held as text: a parsed value of nested JSON takes many times
        // the bytes of its text.
        let kept = kept.to_string();
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut letters = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        if letters.len() == KEPT {
            letters.pop_back();
        }
        letters.push_front(kept);
    }

    /// Dead letters made durable since the start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// How many are kept.
    pub fn kept(&self) -> usize {
        self.letters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The kept letters and their count as `GET /dead-letters` answers:
    /// a JSON document, the newest first.
    pub fn json(&self) -> String {
        let letters = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = format!(
            r#"{{"capacity":{KEPT},"total":{},"letters":["#,
            self.total()
        );
        for (i, letter) in letters.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(letter);
        }
        out.push_str("]}");
        out
    }
}

/// At most `max` bytes of `bytes` as text, cut at a character boundary.
fn capped(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], bytes.len())
}

/// `at` in RFC 3339, UTC, to the microsecond, as the envelope writes times.
pub fn utc(at: SystemTime) -> String {
    let mut out = Vec::with_capacity(32);
    weir_codec::write_utc_timestamp(&mut out, micros(at));
    String::from_utf8_lossy(&out).into_owned()
}

fn micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use weir_core::{LogicalMessage, Op, SourceInfo, TxnId};

    use super::*;

    /// A logical message: the one kind of change that needs no table.
    fn event(prefix: &str, content: &str) -> ChangeEvent {
        ChangeEvent {
            op: Op::Message,
            table: None,
            before: None,
            after: None,
            message: Some(LogicalMessage {
                prefix: prefix.into(),
                content: content.as_bytes().to_vec(),
            }),
            source: SourceInfo::default(),
            txn: TxnId(1),
        }
    }

    fn durable(ring: &DeadLetterRing, sink: &str, letters: Vec<RawMessage>) {
        let batch: Vec<SinkRecord> = letters
            .into_iter()
            .map(|m| SinkRecord {
                topic: None,
                payload: SinkPayload::Raw(std::sync::Arc::new(m)),
                txn: TxnId(1),
            })
            .collect();
        ring.delivered(sink, &batch);
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn only_what_the_dead_letter_sink_made_durable_is_kept_newest_first() {
        let ring = DeadLetterRing::default();
        let why = [("plugin", "trapper"), ("error", "trapped")];
        let made = |i: usize| {
            let h = headers(&[
                ("weir.plugin", "trapper"),
                ("weir.plugin_version", "abc"),
                ("weir.error", "trapped"),
            ]);
            letter(&why, h, &event(&format!("v{i}"), "")).unwrap()
        };
        durable(&ring, "dlq", vec![made(0)]);
        assert_eq!(
            ring.total(),
            0,
            "kept before the pipeline named its dead-letter sink"
        );
        ring.kept_from("dlq");
        durable(&ring, "out", vec![made(0)]);
        assert_eq!(ring.total(), 0, "kept from another sink");
        durable(&ring, "dlq", (0..KEPT + 5).map(made).collect());
        let json: serde_json::Value = serde_json::from_str(&ring.json()).unwrap();
        assert_eq!(json["total"], KEPT as u64 + 5);
        assert_eq!(json["capacity"], KEPT as u64);
        assert_eq!(ring.kept(), KEPT);
        let newest = &json["letters"][0];
        assert_eq!(newest["by"], "plugin");
        assert_eq!(newest["plugin"], "trapper");
        assert_eq!(newest["plugin_version"], "abc");
        assert_eq!(newest["error"], "trapped");
        assert_eq!(
            newest["event"]["message"]["prefix"],
            format!("v{}", KEPT + 4)
        );
        assert!(newest["at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn raw_records_huge_changes_and_long_errors_are_cut_to_size() {
        let ring = DeadLetterRing::default();
        ring.kept_from("dlq");
        let raw = RawMessage {
            key: Some(b"k1".to_vec()),
            value: Some(b"not json".to_vec()),
            headers: headers(&[
                ("weir.sink", "kafka"),
                ("weir.error", &"e".repeat(KEPT_TEXT + 10)),
            ]),
            source: SourceInfo::default(),
        };
        let huge = letter(
            &[("sink", "s")],
            headers(&[("weir.sink", "s")]),
            &event("p", &"x".repeat(KEPT_BYTES)),
        )
        .unwrap();
        durable(&ring, "dlq", vec![raw, huge]);
        let json: serde_json::Value = serde_json::from_str(&ring.json()).unwrap();
        assert!(
            json["letters"][0]["omitted"]
                .as_str()
                .unwrap()
                .contains("bytes")
        );
        let raw = &json["letters"][1];
        assert_eq!(raw["by"], "sink");
        assert_eq!(raw["sink"], "kafka");
        assert_eq!(raw["record"]["key"], "k1");
        assert_eq!(raw["record"]["value"], "not json");
        let error = raw["error"].as_str().unwrap();
        assert!(
            error.len() < KEPT_TEXT + 40 && error.ends_with("bytes in all)"),
            "{error}"
        );
    }
}
