//! Private instances of the destinations sinks write to, one per test.

pub mod http;
