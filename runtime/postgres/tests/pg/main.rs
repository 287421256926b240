//! Integration tests against the real Postgres on 127.0.0.1:5432 (trust
//! authentication, `wal_level = logical`). One test binary, so the suite
//! links once.

mod binary;
mod changes;
mod common;
mod errors;
mod resume;
mod snapshot;
mod streaming;
mod throughput;
mod types;
