//! Weir's service: the `weir` binary's configuration, pipeline wiring,
//! checkpointing and admin API.
//!
//! This crate is where the data path is assembled. `weir-postgres` reads
//! the WAL, `weir-wasm` runs plugins, `weir-sinks` writes to destinations;
//! [`pipeline`] connects them with bounded channels, and [`checkpoint`]
//! decides which source position may be acknowledged so that no committed
//! change is ever lost: the flush LSN only covers transactions that every
//! sink they were routed to has made durable. The processor thread
//! (`processor.rs`) runs the plugin stages (`stages.rs`: isolating a failing
//! change, failure policies, circuit breakers) and swaps in new plugin
//! versions from the [`reload::Deployer`] at transaction boundaries;
//! [`cli`] holds the `weir plugin` tools for plugin authors.

pub mod admin;
pub mod checkpoint;
pub mod cli;
pub mod config;
mod dead_letter;
mod delivery;
pub mod pipeline;
mod processor;
pub mod reload;
pub mod routing;
mod stages;
pub mod status;
