//! The native JSON decoder on lines of text, one context for all of them.
//! Whatever it accepts must encode, and encoding must be stable: decoding
//! the encoder's output and encoding again gives the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_sinks::encode::{DecodeContext, decode_native_json, encode_native_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut context = DecodeContext::new();
    let mut again = DecodeContext::new();
    for line in text.lines() {
        let event = match decode_native_json(line, &mut context) {
            Ok(event) => event,
            Err(e) => {
                drop(e.to_string());
                continue;
            }
        };
        let mut first = Vec::new();
        encode_native_json(&event, &mut first).expect("a decoded event encodes");
        let first = String::from_utf8(first).expect("the encoder writes UTF-8");
        let event = decode_native_json(&first, &mut again)
            .unwrap_or_else(|e| panic!("the encoder's output {first} does not decode: {e}"));
        let mut second = Vec::new();
        encode_native_json(&event, &mut second).expect("a decoded event encodes");
        assert_eq!(
            first,
            String::from_utf8_lossy(&second),
            "encoding is not stable"
        );
    }
});
