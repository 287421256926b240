//! The host's imports, and their stand-ins in native builds.
//!
//! In a component these call Weir. Natively there is no host: each test
//! harness owns a [`NativeHost`] and installs it for the duration of every
//! call into the plugin, so what a plugin reads, counts, declares and logs
//! belongs to the harness that drove it, as it would belong to one plugin
//! in Weir.

use crate::Table;
use crate::log::Level;
use crate::wit::{self, Column};

/// Adds `delta` to the plugin's counter `name`.
///
/// Weir exports it from its metrics endpoint as
/// `weir_plugin_counter_total{plugin, name}`. Use a fixed set of names
/// (Weir bounds how many one plugin may have); put what varies in the
/// delta, not in the name. In native tests the harness keeps the counts:
/// [`TransformHarness::counter`](crate::testing::TransformHarness::counter).
pub fn count(name: &str, delta: u64) {
    imp::count(name, delta);
}

/// Declares a table for changes the plugin builds itself, and returns it
/// with the id the host gave it (to put in `change.table`).
///
/// Declaring the same schema, name and columns again returns the same id;
/// a different column list is a different table with an id of its own.
/// Plugins later in the chain see the table through `on-table`, and sinks
/// name it by schema and name. [`Table::declare`] is the usual way in.
pub fn declare_table(schema: &str, name: &str, columns: Vec<Column>) -> Table {
    let id = imp::declare_table(schema, name, &columns);
    Table::from_wit(wit::Table {
        id,
        version: 1,
        schema: schema.to_owned(),
        name: name.to_owned(),
        columns,
    })
}

pub(crate) fn config() -> Vec<(String, String)> {
    imp::config()
}

pub(crate) fn log(level: Level, message: &str) {
    imp::log(level, message);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::transform::weir::cdc::host;
    use crate::log::Level;
    use crate::wit::Column;

    pub(super) fn config() -> Vec<(String, String)> {
        host::config()
    }

    pub(super) fn count(name: &str, delta: u64) {
        host::count(name, delta);
    }

    pub(super) fn declare_table(schema: &str, name: &str, columns: &[Column]) -> u32 {
        host::declare_table(schema, name, columns)
    }

    pub(super) fn log(level: Level, message: &str) {
        host::log(level, message);
    }
}

pub(crate) use native::NativeHost;

#[cfg(not(target_arch = "wasm32"))]
use native as imp;

/// Compiled for wasm32 too, where only the test harness refers to it, so
/// that plugin tests type-check for the target the plugins ship for.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use crate::log::Level;
    use crate::wit::{self, Column};

    /// What Weir keeps for one plugin: its configuration, counters, the
    /// tables it declared, and (natively only) what it logged.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct NativeHost {
        pub(crate) config: Vec<(String, String)>,
        pub(crate) counters: BTreeMap<String, u64>,
        pub(crate) declared: Vec<wit::Table>,
        pub(crate) logs: Vec<(Level, String)>,
    }

    thread_local! {
        // Calls outside any harness (a plugin's helper called directly
        // from a test) land here and are forgotten with the thread.
        static CURRENT: RefCell<NativeHost> = RefCell::default();
    }

    impl NativeHost {
        /// A host whose `config` import returns `config`.
        pub(crate) fn new(config: Vec<(String, String)>) -> Self {
            NativeHost {
                config,
                ..NativeHost::default()
            }
        }

        /// Runs `f` with this host behind the imports, as Weir is behind a
        /// component's imports for the length of one call.
        pub(crate) fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
            /// Puts the harness's host back even when the plugin panics,
            /// so a `should_panic` test leaves the thread clean.
            struct Restore<'a>(&'a mut NativeHost);

            impl Drop for Restore<'_> {
                fn drop(&mut self) {
                    CURRENT.with_borrow_mut(|current| std::mem::swap(current, self.0));
                }
            }

            CURRENT.with_borrow_mut(|current| std::mem::swap(current, self));
            let _restore = Restore(self);
            f()
        }

        fn declare(&mut self, schema: &str, name: &str, columns: &[Column]) -> u32 {
            if let Some(known) = self
                .declared
                .iter()
                .find(|t| t.schema == schema && t.name == name && t.columns == columns)
            {
                return known.id;
            }
            // Weir hands ids out downward from the top of the range, far
            // from the OIDs of captured tables; doing the same here keeps
            // tests from passing only because of a lucky id.
            let id = u32::MAX - u32::try_from(self.declared.len()).unwrap_or(u32::MAX);
            self.declared.push(wit::Table {
                id,
                version: 1,
                schema: schema.to_owned(),
                name: name.to_owned(),
                columns: columns.to_vec(),
            });
            id
        }
    }

    pub(super) fn config() -> Vec<(String, String)> {
        CURRENT.with_borrow(|host| host.config.clone())
    }

    pub(super) fn count(name: &str, delta: u64) {
        CURRENT.with_borrow_mut(|host| {
            let total = host.counters.entry(name.to_owned()).or_default();
            *total = total.saturating_add(delta);
        });
    }

    pub(super) fn declare_table(schema: &str, name: &str, columns: &[Column]) -> u32 {
        CURRENT.with_borrow_mut(|host| host.declare(schema, name, columns))
    }

    pub(super) fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
        CURRENT.with_borrow_mut(|host| host.logs.push((level, message.to_owned())));
    }
}
