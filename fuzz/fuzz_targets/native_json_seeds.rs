//! Writes the native_json target's seeds from the frames seeds: each
//! captured transaction read and decoded as the source would, and its changes
//! encoded as the sinks write them, one envelope per line.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir fuzz native_json_seeds`, then run
//! `fuzz/target/x86_64-unknown-linux-gnu/release/native_json_seeds`.

use std::fs;
use std::path::Path;

use weir_core::SourceItem;
use weir_sinks::encode::encode_native_json;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let out_dir = corpus.join("native_json");
    fs::create_dir_all(&out_dir).expect("creating corpus/native_json");
    let mut inputs: Vec<_> = fs::read_dir(corpus.join("frames"))
        .expect("corpus/frames: run the capture first")
        .map(|e| e.expect("listing corpus/frames").path())
        .filter(|p| p.to_string_lossy().contains("-txn-"))
        .collect();
    inputs.sort();
    for input in inputs {
        let data = fs::read(&input).expect("reading a frames seed");
        let items = weir_postgres::fuzzing::replay_stream(&data)
            .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let mut lines = Vec::new();
        for item in &items {
            if let SourceItem::Change(event) = item {
                encode_native_json(event, &mut lines).expect("a captured change encodes");
                lines.push(b'\n');
            }
        }
        if !lines.is_empty() {
            let name = input.file_name().expect("a file name");
            fs::write(out_dir.join(name), &lines).expect("writing a native_json seed");
        }
    }
}
