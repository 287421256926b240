//! Dead letters: a change that could not be delivered (a plugin failed on
//! it, or a sink refused it), written as one JSON document that says why,
//! with the change in the native envelope, so the dead-letter sink keeps
//! what would otherwise be lost.

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
