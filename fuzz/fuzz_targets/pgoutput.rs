//! The pgoutput decoder on a sequence of length-prefixed messages (see
//! `weir_postgres::fuzzing`): it must return items or an error, never
//! panic, and the items it returns must be well nested.

#![no_main]

use items::check;
use libfuzzer_sys::fuzz_target;

mod items;

fuzz_target!(|data: &[u8]| {
    match weir_postgres::fuzzing::decode_pgoutput(data) {
        Ok(items) => check(&items),
        // Error messages quote the input: building them must not panic either.
        Err(e) => drop(e.to_string()),
    }
});
