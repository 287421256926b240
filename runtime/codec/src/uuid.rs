//! UUIDs between their 16 bytes and their canonical text
//! (`a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`): the one implementation the
//! encoders, the Postgres decoder and the plugin host share.

/// Length of a UUID's canonical text.
pub const UUID_TEXT_LEN: usize = 36;

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// The canonical text of a UUID, lower case, as ASCII bytes.
fn ascii(bytes: &[u8; 16]) -> [u8; UUID_TEXT_LEN] {
    let mut text = [0u8; UUID_TEXT_LEN];
    let mut pos = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[pos] = b'-';
            pos += 1;
        }
        text[pos] = HEX_LOWER[usize::from(b >> 4)];
        text[pos + 1] = HEX_LOWER[usize::from(b & 0xf)];
        pos += 2;
    }
    text
}

/// Appends a UUID in its canonical form, lower case, without quotes.
pub fn write_uuid_text(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    out.extend_from_slice(&ascii(bytes));
}

/// Appends a UUID in its canonical form, lower case, to a `String`.
pub fn push_uuid_text(out: &mut String, bytes: &[u8; 16]) {
    // One copy of 36 bytes, not 36 pushes of a char (each its own
    // capacity check): this runs for every UUID handed to a plugin.
    out.push_str(std::str::from_utf8(&ascii(bytes)).expect("hex digits and hyphens are ASCII"));
}

/// The value of a hex digit, either case.
pub fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses a UUID in its canonical hyphenated form (or as 32 bare hex
/// digits), in either case. `None` for anything else.
pub fn parse_uuid(text: &[u8]) -> Option<[u8; 16]> {
    let hyphenated = text.len() == UUID_TEXT_LEN;
    if hyphenated {
        if [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
            return None;
        }
    } else if text.len() != 32 {
        return None;
    }
    let mut out = [0; 16];
    let mut pos = 0;
    for (i, byte) in out.iter_mut().enumerate() {
        if hyphenated && matches!(i, 4 | 6 | 8 | 10) {
            pos += 1;
        }
        *byte = hex_digit(text[pos])? << 4 | hex_digit(text[pos + 1])?;
        pos += 2;
    }
    Some(out)
}

/// Appends bytes as Postgres prints a `bytea`: `\x` and lower-case hex.
pub fn push_bytea_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(2 + 2 * bytes.len());
    out.push_str("\\x");
    for byte in bytes {
        out.push(char::from(HEX_LOWER[usize::from(byte >> 4)]));
        out.push(char::from(HEX_LOWER[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];

    #[test]
    fn uuids_round_trip() {
        let mut s = String::new();
        push_uuid_text(&mut s, &UUID);
        assert_eq!(s, "12345678-9abc-def0-0123-456789abcdef");
        let mut v = Vec::new();
        write_uuid_text(&mut v, &UUID);
        assert_eq!(v, s.as_bytes());
        assert_eq!(parse_uuid(s.as_bytes()), Some(UUID));
        assert_eq!(parse_uuid(s.to_uppercase().as_bytes()), Some(UUID));
        assert_eq!(parse_uuid(b"123456789abcdef00123456789abcdef"), Some(UUID));
        assert_eq!(parse_uuid(b"12345678-9abc-def0-0123-456789abcde"), None);
        assert_eq!(parse_uuid(b"12345678_9abc-def0-0123-456789abcdef"), None);
        assert_eq!(parse_uuid(b"g2345678-9abc-def0-0123-456789abcdef"), None);
        assert_eq!(parse_uuid(b"a0eebc99"), None);
    }

    #[test]
    fn bytea_hex() {
        let mut s = String::new();
        push_bytea_hex(&mut s, &[0, 0xab, 0x10]);
        assert_eq!(s, "\\x00ab10");
    }
}
