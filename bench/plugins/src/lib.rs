//! Benchmarks of Weir's plugin path, run with criterion:
//! `cargo bench -p weir-bench` (see `benches/plugin_path.rs` and
//! BENCHMARKS.md). The library itself is empty.
