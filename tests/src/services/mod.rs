//! Private servers for tests: each starts on free loopback ports with its
//! data in a temp dir, and is killed when its guard drops.

pub mod clickhouse;
