//! The replication stream reader (framing, CopyData, XLogData, keepalives,
//! then the pgoutput decoder) on the raw bytes a server sends.

#![no_main]

use items::check;
use libfuzzer_sys::fuzz_target;

mod items;

fuzz_target!(|data: &[u8]| {
    match weir_postgres::fuzzing::replay_stream(data) {
        Ok(items) => check(&items),
        Err(e) => drop(e.to_string()),
    }
});
