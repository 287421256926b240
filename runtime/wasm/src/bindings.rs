//! Host bindings generated from `wit/weir-cdc.wit`, the contract the plugin
//! SDK binds too.
//!
//! Types are generated in *borrowing* mode: the parameters the host passes
//! to plugins (`ChangeParam`, `ValueParam`, `Table`) borrow from Weir's own
//! events, so lowering a batch copies each string once, straight into guest
//! memory, instead of cloning it on the host first. Results (`Outcome`,
//! `ChangeResult`) are owned.
//!
//! The router world reuses the transform world's `types` and `host`
//! modules: one Rust type per WIT type, so one conversion serves both
//! worlds. (Generating the router's types on their own also trips a
//! wasmtime 48 `bindgen!` bug: borrowed types the world never uses come out
//! without their lifetime parameter.)

// Generated code: its `unsafe` blocks are wasmtime's typed-function casts,
// and its items are documented by the WIT file.
#![allow(unsafe_code, missing_docs, clippy::all, rust_2018_idioms)]

/// The `transform` world, and the `types` and `host` interfaces.
pub mod transform {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "transform",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

/// The `types` interface under the names the router world's bindings look
/// for: in that world `change` only appears as a parameter, so it calls the
/// borrowed type by its plain name.
pub mod router_types {
    pub use super::transform::weir::cdc::types::*;
    pub type Change<'a> = ChangeParam<'a>;
}

/// The `router` world.
pub mod router {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "router",
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "weir:cdc/host": super::transform::weir::cdc::host,
            "weir:cdc/types": super::router_types,
        },
    });
}

pub use transform::weir::cdc::host;
pub use transform::weir::cdc::types as wit;
