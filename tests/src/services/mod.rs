//! Private instances of the destinations the sinks write to, one per test,
//! on free loopback ports with their data in temporary directories.

pub mod clickhouse;
pub mod http;
pub mod nats;
pub mod redis;
pub mod sphinx;
