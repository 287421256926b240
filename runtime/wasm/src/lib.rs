//! The WebAssembly host: runs Weir's transform and router plugins.
//!
//! ```text
//! source ──▶ [transform chain] ──▶ [router] ──▶ sinks
//!              this crate runs these two stages
//! ```
//!
//! Plugins are WebAssembly components of the `weir:cdc` contract
//! (`wit/weir-cdc.wit`, the same file the plugin SDK binds): a
//! **transform** answers each change of a batch with an [`Outcome`] (keep,
//! drop, replace with other changes or raw bytes, fail); a **router**
//! answers with the [`Destination`](weir_core::Destination)s of each change.
//!
//! The server uses it like this:
//!
//! 1. one [`PluginEngine`] for the process;
//! 2. [`TransformPlugin::load`] / [`RouterPlugin::load`] per configured
//!    plugin (compiles and validates; off the data path);
//! 3. `instantiate()` once, then `process()` / `route()` per batch, from a
//!    blocking thread;
//! 4. on an error that [poisons the instance](PluginError::poisons_instance),
//!    [`find_failing_event`] names the culprit, and a fresh instance goes on.
//!
//! What a plugin can and cannot do:
//!
//! * it sees only what it is passed and what its [`Grants`] allow: by
//!   default no directories, no environment variables, no network; a
//!   component importing `wasi:filesystem` or `wasi:sockets` it was not
//!   granted (or `wasi:http`, never offered) is refused at load, naming the
//!   import; what it logs, and its stdout and stderr, go to the log under
//!   the `tracing` target `weir::plugin`, with the plugin's name as the
//!   `plugin` field;
//! * from the host it gets its configuration, counters (read back with
//!   [`PluginEngine::counter_totals`]) and tables of its own
//!   (`declare-table`); a component built for another major version of the
//!   contract ([`CONTRACT_VERSION`]) is refused at load;
//! * each instance has a memory limit, each call a deadline and optionally
//!   fuel ([`PluginSpec`]); a plugin that traps, loops or hoards memory
//!   fails that call with a [`PluginError`] naming it, and the process goes
//!   on.
//!
//! Compiled code is reused by the SHA-256 of the component, in memory and,
//! with [`PluginEngine::with_cache_dir`], on disk across restarts.
//! [`inspect`] describes a component without running it.
//!
//! Hot-path costs: a batch is passed in one call, rows positionally, each
//! table's schema once per instance (`on-table`). Values are lowered
//! straight from Weir's events into guest memory, and the store is reused
//! across calls; a new instance is made only after a failure.

mod bindings;
mod blocking;
mod code_cache;
mod convert;
mod engine;
mod error;
mod inspect;
mod isolate;
mod network;
mod registry;
mod router;
mod session;
mod spec;
mod state;
mod transform;

pub use engine::PluginEngine;
pub use error::PluginError;
pub use inspect::{GrantNeed, Inspection, Item, PluginWorld, inspect};
pub use isolate::{find_failing_event, find_failing_route};
pub use network::{NetworkGrant, NetworkRule, forbid_address};
pub use router::{RouterInstance, RouterPlugin};
pub use session::CONTRACT_VERSION;
pub use spec::{DirGrant, Grants, PluginSpec};
pub use transform::{Emit, EmitPayload, Outcome, Transaction, TransformInstance, TransformPlugin};

#[cfg(test)]
mod tests {
    use super::*;

    /// The server moves instances into blocking threads and shares plugins
    /// and the engine between them.
    #[test]
    fn handles_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PluginEngine>();
        send_sync::<TransformPlugin>();
        send_sync::<RouterPlugin>();
        send::<TransformInstance>();
        send::<RouterInstance>();
        send_sync::<PluginError>();
    }
}
