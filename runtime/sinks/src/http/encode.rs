//! What a batch becomes on the wire: one element per record, requests cut
//! deterministically, their bodies, idempotency keys and signatures.

use std::ops::Range;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use weir_codec::Encoder;
use weir_core::{Position, SinkPayload, SinkRecord};

use super::Format;

/// Appends the element of one record (without separator) to `out`, or
/// says why the record cannot be sent; `out` is then left as it was.
pub(crate) fn encode_element(
    record: &SinkRecord,
    format: Format,
    encoder: &mut Encoder,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = out.len();
    let result = match &record.payload {
        SinkPayload::Change(event) => encoder
            .encode_value(event, scratch, out)
            .map_err(|e| e.to_string()),
        SinkPayload::Raw(message) => match message.value.as_deref() {
            // A raw record without a value (a tombstone) has nothing but its absence to say.
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            Some(value) => raw_element(value, format).map(|v| out.extend_from_slice(v)),
        },
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The bytes of a raw record as an element: JSON for the array format,
/// one line for NDJSON (a trailing newline is dropped, the sink adds its own).
fn raw_element(value: &[u8], format: Format) -> Result<&[u8], String> {
    match format {
        Format::Json => match serde_json::from_slice::<serde::de::IgnoredAny>(value) {
            Ok(_) => Ok(value),
            Err(e) => Err(format!(
                "a raw record's bytes are not JSON ({e}), and format = \"json\" sends a JSON \
                 array; use format = \"ndjson\" to send raw bytes as lines"
            )),
        },
        Format::Ndjson => {
            let line = value.strip_suffix(b"\n").unwrap_or(value);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match line.iter().position(|&b| b == b'\n') {
                Some(at) => Err(format!(
                    "a raw record's bytes hold a newline (at byte {at}), and format = \"ndjson\" \
                     sends one line per record"
                )),
                None => Ok(line),
            }
        }
    }
}

/// Cuts the encoded elements (`spans`, in batch order) into requests of at
/// most `max_records` elements and `max_bytes` of body; an element larger
/// than `max_bytes` goes alone. The cut depends only on the elements, so
/// the same records give the same requests, and the same keys, every time.
pub(crate) fn cut(
    spans: &[Range<usize>],
    format: Format,
    max_records: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let max_records = max_records.max(1);
    let mut requests = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, span) in spans.iter().enumerate() {
        // An element costs its bytes plus a comma or a newline; the array's
        // brackets count once, with the first.
        let cost = span.len() + 1;
        let first_cost = match format {
            Format::Json => cost + 1,
            Format::Ndjson => cost,
        };
        if i > start && (i - start >= max_records || bytes.saturating_add(cost) > max_bytes) {
            requests.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(if i == start { first_cost } else { cost });
    }
    if start < spans.len() {
        requests.push(start..spans.len());
    }
    requests
}

/// The body of one request: the elements `spans` of `elements`, as a JSON
/// array or as lines.
pub(crate) fn body(elements: &[u8], spans: &[Range<usize>], format: Format) -> Vec<u8> {
    let len: usize = spans.iter().map(|s| s.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    match format {
        Format::Json => {
            out.push(b'[');
            for (i, span) in spans.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&elements[span.clone()]);
            }
            out.push(b']');
        }
        Format::Ndjson => {
            for span in spans {
                out.extend_from_slice(&elements[span.clone()]);
                out.push(b'\n');
            }
        }
    }
    out
}

/// The `Idempotency-Key` of a request whose records run from `first` to
/// `last`: `FIRST-LAST`, each the position as 24 upper-case hex digits
/// (16 for the commit LSN, 8 for the change's place in its transaction).
pub(crate) fn idempotency_key(first: Position, last: Position) -> String {
    format!("{}-{}", first.to_hex(), last.to_hex())
}

/// The signature header's value: `sha256=` and the lower-case hex
/// HMAC-SHA256, keyed with `secret`, of `timestamp`, `.` and `body`.
pub(crate) fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
