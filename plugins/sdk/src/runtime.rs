//! The plugin traits, and the glue between them and the WIT exports.
//!
//! The export macros and the native test harness both drive a plugin
//! through [`TransformRuntime`] / [`RouterRuntime`], so the code that runs
//! in the component is the code the unit tests exercise.

use std::collections::HashMap;

use crate::wit::{self, Change, Destination, Emit, Failure, Hooks, Payload, Transaction};
use crate::{Config, Event, Outcome, Table};

/// A transform: decides what each change becomes.
///
/// One value of the type lives in each plugin instance; the host creates a
/// fresh instance (and calls [`init`](Transform::init) again) after a trap.
pub trait Transform: Sized + 'static {
    /// Whether Weir should call [`commit`](Transform::commit) after the last
    /// change of each transaction. Asking for it makes Weir cut batches at
    /// transaction boundaries, so leave it off unless the plugin needs it.
    const COMMIT_HOOK: bool = false;

    /// Builds the transform from its configuration (the plugin's `config`
    /// table in weir.toml); an error refuses the plugin, and the message is
    /// shown to the operator.
    fn init(config: &Config) -> Result<Self, String>;

    /// Called when a table, or a new version of it, is announced, before
    /// any event of it. Events already carry their table; override this only
    /// to precompute something per table, such as declaring the table with
    /// added columns ([`Table::declare`]).
    fn on_table(&mut self, table: &Table) {
        let _ = table;
    }

    /// Decides what `event` becomes.
    fn process(&mut self, event: &mut Event<'_>) -> Outcome;

    /// Called after the last change of `txn` when
    /// [`COMMIT_HOOK`](Transform::COMMIT_HOOK) is set; what it returns is
    /// delivered as part of the transaction, after its changes.
    fn commit(&mut self, txn: &Transaction) -> Vec<Emit> {
        let _ = txn;
        Vec::new()
    }
}

/// A router: decides where each change goes, without rewriting it.
pub trait Router: Sized + 'static {
    /// Builds the router from its configuration (the plugin's `config`
    /// table in weir.toml); an error refuses the plugin, and the message is
    /// shown to the operator.
    fn init(config: &Config) -> Result<Self, String>;

    /// Called when a table, or a new version of it, is announced.
    fn on_table(&mut self, table: &Table) {
        let _ = table;
    }

    /// The destinations of `event`; an empty list delivers it nowhere.
    fn route(&mut self, event: &Event<'_>) -> Vec<Destination>;
}

const NOT_INITIALISED: &str = "the plugin was called before init succeeded";

/// A transform and the tables announced to it.
#[doc(hidden)]
pub struct TransformRuntime<T> {
    plugin: Option<T>,
    tables: HashMap<u32, Table>,
}

impl<T: Transform> Default for TransformRuntime<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Transform> TransformRuntime<T> {
    /// A runtime whose plugin is not initialised yet.
    pub fn new() -> Self {
        TransformRuntime {
            plugin: None,
            tables: HashMap::new(),
        }
    }

    /// The `init` export: reads the configuration from the host and
    /// answers the hooks the plugin asked for.
    pub fn init(&mut self) -> Result<Hooks, String> {
        self.plugin = Some(T::init(&Config::new(crate::host::config()))?);
        Ok(if T::COMMIT_HOOK {
            Hooks::COMMIT
        } else {
            Hooks::empty()
        })
    }

    /// The `on-table` export.
    pub fn on_table(&mut self, table: wit::Table) {
        let table = Table::from_wit(table);
        if let Some(plugin) = &mut self.plugin {
            plugin.on_table(&table);
        }
        self.tables.insert(table.id(), table);
    }

    /// The `process` export: one outcome per change, in order.
    pub fn process(&mut self, batch: Vec<Change>) -> Vec<wit::Outcome> {
        let Some(plugin) = &mut self.plugin else {
            return batch.iter().map(|_| fail(NOT_INITIALISED)).collect();
        };
        batch
            .into_iter()
            .map(|change| {
                let table = self.tables.get(&change.table);
                let mut event = Event::new(change, table);
                let outcome = plugin.process(&mut event);
                to_wit(outcome, event)
            })
            .collect()
    }

    /// The `commit` export. Weir calls it only after a successful `init`
    /// that asked for it; anything else gets nothing to deliver.
    pub fn commit(&mut self, txn: Transaction) -> Vec<Emit> {
        match &mut self.plugin {
            Some(plugin) if T::COMMIT_HOOK => plugin.commit(&txn),
            _ => Vec::new(),
        }
    }
}

fn fail(message: &str) -> wit::Outcome {
    wit::Outcome::Fail(Failure {
        message: message.to_owned(),
        retryable: false,
    })
}

/// Turns a plugin's answer into the contract's, carrying changes the plugin
/// made to the event (a `keep` would deliver the original).
fn to_wit(outcome: Outcome, event: Event<'_>) -> wit::Outcome {
    match outcome {
        Outcome::Keep if !event.is_modified() => wit::Outcome::Keep,
        Outcome::Keep => wit::Outcome::Replace(vec![Emit {
            destination: None,
            payload: Payload::Change(event.into_change()),
        }]),
        Outcome::Drop => wit::Outcome::Drop,
        Outcome::Route(destinations) => {
            let mut emits = Vec::with_capacity(destinations.len());
            let mut destinations = destinations.into_iter();
            let last = destinations.next_back();
            emits.extend(destinations.map(|d| event.to_emit(Some(d))));
            if let Some(last) = last {
                // The last destination takes the change itself: no clone.
                emits.push(Emit {
                    destination: Some(last),
                    payload: Payload::Change(event.into_change()),
                });
            }
            wit::Outcome::Replace(emits)
        }
        Outcome::Emit(emits) => wit::Outcome::Replace(emits),
        Outcome::Fail { message, retryable } => wit::Outcome::Fail(Failure { message, retryable }),
    }
}

/// A router and the tables announced to it.
#[doc(hidden)]
pub struct RouterRuntime<R> {
    plugin: Option<R>,
    tables: HashMap<u32, Table>,
}

impl<R: Router> Default for RouterRuntime<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Router> RouterRuntime<R> {
    /// A runtime whose plugin is not initialised yet.
    pub fn new() -> Self {
        RouterRuntime {
            plugin: None,
            tables: HashMap::new(),
        }
    }

    /// The `init` export: reads the configuration from the host.
    pub fn init(&mut self) -> Result<(), String> {
        self.plugin = Some(R::init(&Config::new(crate::host::config()))?);
        Ok(())
    }

    /// The `on-table` export.
    pub fn on_table(&mut self, table: wit::Table) {
        let table = Table::from_wit(table);
        if let Some(plugin) = &mut self.plugin {
            plugin.on_table(&table);
        }
        self.tables.insert(table.id(), table);
    }

    /// The `route` export: one list of destinations per change, in order.
    ///
    /// # Panics
    ///
    /// When called before a successful `init`: the host never does that,
    /// and the route export has no way to report an error, so the plugin
    /// traps.
    pub fn route(&mut self, batch: Vec<Change>) -> Vec<Vec<Destination>> {
        let plugin = self.plugin.as_mut().expect(NOT_INITIALISED);
        batch
            .into_iter()
            .map(|change| {
                let table = self.tables.get(&change.table);
                plugin.route(&Event::new(change, table))
            })
            .collect()
    }
}
