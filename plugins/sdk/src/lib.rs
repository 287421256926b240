//! Write Weir transforms and routers in Rust.
//!
//! Weir hands plugins batches of committed changes whose rows are positional
//! value lists (cheap to pass across the WebAssembly boundary), and announces
//! each table's columns once through `on-table`. This SDK keeps those
//! announcements so plugin code reads and writes columns **by name**:
//!
//! ```
//! use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};
//!
//! /// Drops test accounts.
//! pub struct DropTestAccounts;
//!
//! impl Transform for DropTestAccounts {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(DropTestAccounts)
//!     }
//!
//!     fn process(&mut self, event: &mut Event<'_>) -> Outcome {
//!         match event.value("email").and_then(Value::as_str) {
//!             Some(email) if email.ends_with("@test.invalid") => Outcome::Drop,
//!             _ => Outcome::Keep,
//!         }
//!     }
//! }
//!
//! weir_plugin_sdk::export_transform!(DropTestAccounts);
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-wasip2` and the result is a
//! component Weir loads. The same code compiles natively, where
//! [`testing`] drives a plugin exactly as the host would (configuration,
//! announced tables, batches, the commit hook, counters, declared tables)
//! so plugin logic is unit-tested with plain `cargo test`.
//!
//! Beyond deciding each event's [`Outcome`], a transform can:
//!
//! * ask for a call after each transaction with
//!   [`Transform::COMMIT_HOOK`] and [`Transform::commit`];
//! * count things with [`count`], exported by Weir as metrics;
//! * add columns: extend an announced [`Table`], [`Table::declare`] it,
//!   copy the event into it with [`Event::to_table`] and fill the new
//!   columns by name;
//! * send the event to a chosen sink with [`Outcome::route_to`], or emit
//!   [`RawMessage`]s of its own.
//!
//! A [`Router`] is written the same way and returns the destinations of each
//! event; export it with [`export_router!`].
//!
//! The crate binds `wit/weir-cdc.wit` (package `weir:cdc@1.0.0`), so a copy
//! of the crate with that file builds on its own.

extern crate self as weir_plugin_sdk;

#[doc(hidden)]
pub mod bindings;
mod config;
mod event;
mod host;
pub mod log;
mod runtime;
mod table;
pub mod testing;
mod value;

pub use config::Config;
pub use event::{Event, Outcome};
pub use host::{count, declare_table};
pub use runtime::{Router, Transform};
pub use table::{Table, TablePattern};

/// The WIT types of the plugin contract (`weir:cdc/types`), as generated.
///
/// The most used ones are also re-exported at the crate root.
pub mod wit {
    pub use crate::bindings::transform::weir::cdc::types::*;
}

pub use wit::{
    Column, Destination, Emit, LogicalMessage, Op, Payload, RawMessage, Source, Transaction, Value,
};

#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::{RouterRuntime, TransformRuntime};
    pub use wit_bindgen;
}

/// Exports a [`Transform`] as the plugin's `transform` world.
///
/// Use it once, at the crate root of a `cdylib`. On targets other than
/// WebAssembly it expands to nothing, so the crate still builds and tests
/// natively.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            use $crate::__private::TransformRuntime;
            use $crate::bindings::transform as world;

            ::std::thread_local! {
                // A component instance is single-threaded: this is the
                // plugin's one state, created by `init`.
                static RUNTIME: ::std::cell::RefCell<TransformRuntime<$plugin>> =
                    ::std::cell::RefCell::new(TransformRuntime::new());
            }

            struct WeirTransformExport;

            impl world::Guest for WeirTransformExport {
                fn init() -> ::std::result::Result<world::Hooks, ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.init())
                }

                fn on_table(table: world::Table) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_table(table))
                }

                fn process(
                    batch: ::std::vec::Vec<world::Change>,
                ) -> ::std::vec::Vec<world::Outcome> {
                    RUNTIME.with_borrow_mut(|rt| rt.process(batch))
                }

                fn commit(txn: world::Transaction) -> ::std::vec::Vec<world::Emit> {
                    RUNTIME.with_borrow_mut(|rt| rt.commit(txn))
                }
            }

            $crate::bindings::transform::__weir_export_transform_world!(WeirTransformExport);
        };
    };
}

/// Exports a [`Router`] as the plugin's `router` world.
///
/// Use it once, at the crate root of a `cdylib`. On targets other than
/// WebAssembly it expands to nothing, so the crate still builds and tests
/// natively.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            use $crate::__private::RouterRuntime;
            use $crate::bindings::router as world;

            ::std::thread_local! {
                static RUNTIME: ::std::cell::RefCell<RouterRuntime<$plugin>> =
                    ::std::cell::RefCell::new(RouterRuntime::new());
            }

            struct WeirRouterExport;

            impl world::Guest for WeirRouterExport {
                fn init() -> ::std::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.init())
                }

                fn on_table(table: world::Table) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_table(table))
                }

                fn route(
                    batch: ::std::vec::Vec<world::Change>,
                ) -> ::std::vec::Vec<::std::vec::Vec<world::Destination>> {
                    RUNTIME.with_borrow_mut(|rt| rt.route(batch))
                }
            }

            $crate::bindings::router::__weir_export_router_world!(WeirRouterExport);
        };
    };
}
