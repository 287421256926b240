//! Dead letters: a change that could not be delivered (a plugin failed on
//! it, or a sink refused it), written as one JSON document that says why,
//! with the change in the native envelope, so the dead-letter sink keeps
//! what would otherwise be lost. The newest few are also kept in memory
//! ([`DeadLetterRing`]) for the console.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use weir_codec::EncodeError;
use weir_core::{ChangeEvent, RawMessage};

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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    weir_codec::write_utc_timestamp(&mut value, now);
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

/// The newest dead letters, in memory, for the console: at most [`KEPT`],
/// each at most 64 KiB of change, so a flood of failures costs at most
/// about 13 MiB.
#[derive(Debug, Default)]
pub struct DeadLetterRing {
    letters: Mutex<VecDeque<serde_json::Value>>,
    total: AtomicU64,
}

impl DeadLetterRing {
    /// Keeps `letter`, made by [`letter`], or the letter of a raw record a
    /// sink refused: `why` are its leading fields, `record` its key and
    /// value.
    pub(crate) fn keep(&self, letter: &RawMessage, why: &[(&str, &str)]) {
        let mut kept = serde_json::Map::new();
        for (field, text) in why {
            kept.insert((*field).to_owned(), (*text).into());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut at = Vec::with_capacity(32);
        weir_codec::write_utc_timestamp(&mut at, now);
        kept.insert("at".into(), String::from_utf8_lossy(&at).into());
        let value = letter.value.as_deref().unwrap_or_default();
        let parsed = (value.len() <= KEPT_BYTES)
            .then(|| serde_json::from_slice::<serde_json::Value>(value).ok())
            .flatten();
        match parsed {
            // One made by `letter`: its change is the part to keep.
            Some(serde_json::Value::Object(mut made)) if made.contains_key("failed_at") => {
                kept.insert("event".into(), made.remove("event").unwrap_or_default());
            }
            _ if value.len() > KEPT_BYTES => {
                kept.insert(
                    "omitted".into(),
                    format!(
                        "{} bytes, more than the console keeps; the dead-letter sink has it",
                        value.len()
                    )
                    .into(),
                );
            }
            _ => {
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                kept.insert(
                    "record".into(),
                    serde_json::json!({
                        "key": text(letter.key.as_deref()),
                        "value": text(letter.value.as_deref()),
                    }),
                );
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut letters = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        if letters.len() == KEPT {
            letters.pop_back();
        }
        letters.push_front(serde_json::Value::Object(kept));
    }

    /// Dead letters since the start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The kept letters and their count, as `GET /dead-letters` shows
    /// them: the newest first.
    pub fn json(&self) -> serde_json::Value {
        let letters = self.letters.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "capacity": KEPT,
            "total": self.total(),
            "letters": *letters,
        })
    }

    /// How many are kept.
    pub fn kept(&self) -> usize {
        self.letters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
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

    #[test]
    fn the_ring_keeps_the_newest_letters_first_and_counts_all() {
        let ring = DeadLetterRing::default();
        for i in 0..KEPT + 5 {
            let why = [("plugin", "trapper"), ("error", "trapped")];
            let made = letter(&why, vec![], &event(&format!("v{i}"), "")).unwrap();
            ring.keep(&made, &why);
        }
        let json = ring.json();
        assert_eq!(json["total"], KEPT as u64 + 5);
        assert_eq!(ring.kept(), KEPT);
        let newest = &json["letters"][0];
        assert_eq!(newest["plugin"], "trapper");
        assert_eq!(newest["error"], "trapped");
        assert_eq!(
            newest["event"]["message"]["prefix"],
            format!("v{}", KEPT + 4)
        );
        assert!(newest["at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn raw_records_and_huge_changes_are_kept_by_name() {
        let ring = DeadLetterRing::default();
        let raw = RawMessage {
            key: Some(b"k1".to_vec()),
            value: Some(b"not json".to_vec()),
            headers: vec![],
            source: SourceInfo::default(),
        };
        ring.keep(&raw, &[("sink", "kafka"), ("error", "too large")]);
        let huge = letter(
            &[("sink", "s")],
            vec![],
            &event("p", &"x".repeat(KEPT_BYTES)),
        )
        .unwrap();
        ring.keep(&huge, &[("sink", "s"), ("error", "e")]);
        let json = ring.json();
        assert!(
            json["letters"][0]["omitted"]
                .as_str()
                .unwrap()
                .contains("bytes")
        );
        assert_eq!(json["letters"][1]["record"]["key"], "k1");
        assert_eq!(json["letters"][1]["record"]["value"], "not json");
        assert_eq!(json["letters"][1]["sink"], "kafka");
    }
}
