//! One live plugin instance: its store, the tables it has been told about,
//! and the guard around every call into it (deadline, error
//! classification, poisoning). Transforms and routers share all of this;
//! they differ only in their entry point.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap};
use weir_core::{ChangeEvent, TableSchema};

use crate::bindings::{router, transform, wit};
use crate::convert::{Announced, Lowering, lower_columns, lower_table};
use crate::engine::deadline_ticks;
use crate::state::HostState;
use crate::{PluginEngine, PluginError, PluginSpec};

/// A world of the contract, as seen by the host: how to pre-instantiate a
/// component of it and how to make its common calls.
pub(crate) trait World: Sized + Send + 'static {
    /// The pre-instantiated component, with its exports looked up.
    type Pre: Clone + Send + Sync + 'static;
    /// The world's name in the WIT file.
    const NAME: &'static str;
    /// The export that handles batches.
    const ENTRY: &'static str;
    /// The other world's entry, to recognise a component of the wrong world.
    const OTHER: (&'static str, &'static str);

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[(&str, &str)],
    ) -> wasmtime::Result<Result<(), String>>;
    fn on_table(&self, store: &mut Store<HostState>, table: wit::Table<'_>)
    -> wasmtime::Result<()>;
}

impl World for transform::Transform {
    type Pre = transform::TransformPre<HostState>;
    const NAME: &'static str = "transform";
    const ENTRY: &'static str = "process";
    const OTHER: (&'static str, &'static str) = ("router", "route");

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        transform::TransformPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[(&str, &str)],
    ) -> wasmtime::Result<Result<(), String>> {
        self.call_init(store, config)
    }

    fn on_table(
        &self,
        store: &mut Store<HostState>,
        table: wit::Table<'_>,
    ) -> wasmtime::Result<()> {
        self.call_on_table(store, table)
    }
}

impl World for router::Router {
    type Pre = router::RouterPre<HostState>;
    const NAME: &'static str = "router";
    const ENTRY: &'static str = "route";
    const OTHER: (&'static str, &'static str) = ("transform", "process");

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        router::RouterPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[(&str, &str)],
    ) -> wasmtime::Result<Result<(), String>> {
        self.call_init(store, config)
    }

    fn on_table(
        &self,
        store: &mut Store<HostState>,
        table: wit::Table<'_>,
    ) -> wasmtime::Result<()> {
        self.call_on_table(store, table)
    }
}

/// A compiled, validated plugin of world `W`, ready to instantiate.
pub(crate) struct Loaded<W: World> {
    engine: PluginEngine,
    pub(crate) spec: PluginSpec,
    pub(crate) name: Arc<str>,
    pre: W::Pre,
}

impl<W: World> Loaded<W> {
    /// Compiles and validates the component at `spec.path`.
    pub(crate) fn load(engine: &PluginEngine, spec: PluginSpec) -> Result<Self, PluginError> {
        let load_err = |message: String| PluginError::Load {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            message,
        };
        let bytes =
            std::fs::read(&spec.path).map_err(|e| load_err(format!("cannot read it: {e}")))?;
        check_header(&bytes).map_err(load_err)?;
        let component = engine
            .compile(&bytes)
            .map_err(|e| load_err(format!("not a WebAssembly component: {e:#}")))?;
        check_imports(engine, &component).map_err(load_err)?;
        check_world::<W>(engine, &component).map_err(load_err)?;
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("it needs an import Weir does not offer: {e:#}")))?;
        let pre = W::pre(pre).map_err(|e| {
            load_err(format!(
                "its exports do not match the weir:cdc {} world (built against another version of wit/weir-cdc.wit?): {e:#}",
                W::NAME
            ))
        })?;
        Ok(Loaded {
            engine: engine.clone(),
            name: spec.name.as_str().into(),
            spec,
            pre,
        })
    }
}

/// Recognises files that are not components before the parser does, to
/// say so in words rather than byte dumps.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly file".into());
    }
    if bytes.starts_with(CORE_MODULE) {
        return Err(
            "it is a core WebAssembly module, not a component: build plugins for the \
             wasm32-wasip2 target (or wrap a module with `wasm-tools component new`)"
                .into(),
        );
    }
    Ok(())
}

/// Plugins get no network: refuse components that would need it, rather
/// than let them fail at their first connection attempt.
fn check_imports(engine: &PluginEngine, component: &Component) -> Result<(), String> {
    let component_type = component.component_type();
    let denied: Vec<&str> = component_type
        .imports(engine.engine())
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("wasi:sockets/") || name.starts_with("wasi:http/"))
        .collect();
    if denied.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "it imports {}, but plugins get no network access",
            denied.join(", ")
        ))
    }
}

/// Says plainly when a component is of the other world, or of none.
fn check_world<W: World>(engine: &PluginEngine, component: &Component) -> Result<(), String> {
    if component.get_export_index(None, W::ENTRY).is_some() {
        return Ok(());
    }
    let (other, other_entry) = W::OTHER;
    if component.get_export_index(None, other_entry).is_some() {
        return Err(format!(
            "it is a {other} component (it exports `{other_entry}`), not a {}",
            W::NAME
        ));
    }
    let component_type = component.component_type();
    let exports: Vec<&str> = component_type
        .exports(engine.engine())
        .map(|(name, _)| name)
        .collect();
    Err(format!(
        "it does not export `{}`, so it is not a weir:cdc {} component (it exports: {})",
        W::ENTRY,
        W::NAME,
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    ))
}

/// A live instance of a plugin.
pub(crate) struct Session<W: World> {
    pub(crate) name: Arc<str>,
    exports: W,
    store: Store<HostState>,
    deadline_ticks: u64,
    call_timeout: Duration,
    /// What the instance has been told with `on-table`: the newest version
    /// of each table.
    pub(crate) tables: Announced,
    /// Tables the current segment's events use (see `prepare_segment`).
    segment_tables: HashSet<u32>,
    lowering: Lowering,
    /// Why the instance refuses calls, once a call failed.
    poisoned: Option<String>,
}

impl<W: World> Session<W> {
    /// Instantiates the plugin and runs its `init`.
    pub(crate) fn start(plugin: &Loaded<W>) -> Result<Self, PluginError> {
        let spec = &plugin.spec;
        let mut store = Store::new(
            plugin.engine.engine(),
            HostState::new(plugin.name.clone(), spec.memory_limit_bytes),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        let deadline_ticks = deadline_ticks(spec.call_timeout);
        // A component may run start functions while instantiating: they get
        // a deadline too.
        store.set_epoch_deadline(deadline_ticks);
        let exports = W::instantiate(&plugin.pre, &mut store)
            .map_err(|e| classify(&plugin.name, spec.call_timeout, store.data(), e))?;
        let mut session = Session {
            name: plugin.name.clone(),
            exports,
            store,
            deadline_ticks,
            call_timeout: spec.call_timeout,
            tables: Announced::new(),
            segment_tables: HashSet::new(),
            lowering: Lowering::default(),
            poisoned: None,
        };
        let config: Vec<(&str, &str)> = spec
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match session.call(|exports, store| exports.init(store, &config))? {
            Ok(()) => Ok(session),
            Err(message) => Err(PluginError::Init {
                plugin: plugin.name.to_string(),
                message,
            }),
        }
    }

    /// Whether an earlier call failed, so the instance refuses calls.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Makes one call into the plugin, under the call deadline. A failing
    /// call poisons the instance: after a trap its state is unknown, and
    /// wasmtime refuses to enter it again anyway.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.check_usable()?;
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().begin_call();
        f(&self.exports, &mut self.store).map_err(|e| {
            let err = classify(&self.name, self.call_timeout, self.store.data(), e);
            self.poisoned = Some(err.to_string());
            err
        })
    }

    pub(crate) fn check_usable(&self) -> Result<(), PluginError> {
        match &self.poisoned {
            None => Ok(()),
            Some(cause) => Err(PluginError::Poisoned {
                plugin: self.name.to_string(),
                cause: cause.clone(),
            }),
        }
    }

    /// Announces every table the events of `batch[start..end]` use that
    /// the plugin does not know at that version yet, and returns `end`.
    ///
    /// The plugin knows one version of each table at a time, so a batch in
    /// which a table changes shape is cut before the first event of the new
    /// version; the caller processes the rest in a following segment.
    pub(crate) fn prepare_segment(
        &mut self,
        batch: &[ChangeEvent],
        start: usize,
    ) -> Result<usize, PluginError> {
        self.segment_tables.clear();
        let mut previous: Option<&Arc<TableSchema>> = None;
        for (offset, event) in batch[start..].iter().enumerate() {
            let Some(table) = &event.table else { continue };
            // Runs of events of one table are the common case.
            if previous.is_some_and(|p| Arc::ptr_eq(p, table)) {
                continue;
            }
            previous = Some(table);
            let known = self
                .tables
                .get(&table.id)
                .is_some_and(|k| k.version == table.version);
            if !known {
                if self.segment_tables.contains(&table.id) {
                    return Ok(start + offset);
                }
                self.announce(table)?;
            }
            self.segment_tables.insert(table.id);
        }
        Ok(batch.len())
    }

    fn announce(&mut self, table: &Arc<TableSchema>) -> Result<(), PluginError> {
        let columns = lower_columns(table);
        let announcement = lower_table(table, &columns);
        self.call(|exports, store| exports.on_table(store, announcement))?;
        self.tables.insert(table.id, table.clone());
        Ok(())
    }

    /// Lowers `segment` and passes it to `entry` (the world's batch export).
    pub(crate) fn call_batch<R>(
        &mut self,
        segment: &[ChangeEvent],
        entry: impl FnOnce(&W, &mut Store<HostState>, &[wit::ChangeParam<'_>]) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // The lowered batch borrows the lowering's buffers; take them out so
        // `self` stays free for the call.
        let mut lowering = std::mem::take(&mut self.lowering);
        let result = {
            let mut values = Vec::new();
            let changes = lowering.lower(segment, &mut values);
            self.call(|exports, store| entry(exports, store, &changes))
        };
        self.lowering = lowering;
        result
    }

    /// A contract error about the event at `index` of the caller's batch.
    pub(crate) fn contract_error(
        &self,
        index: usize,
        event: &ChangeEvent,
        message: &str,
    ) -> PluginError {
        PluginError::Contract {
            plugin: self.name.to_string(),
            message: format!(
                "answer for event {index} (lsn {}, xid {}, seq {}): {message}",
                event.source.lsn, event.source.xid, event.source.seq
            ),
        }
    }

    /// A contract error about a whole segment's answer.
    pub(crate) fn count_error(&self, what: &str, got: usize, expected: usize) -> PluginError {
        PluginError::Contract {
            plugin: self.name.to_string(),
            message: format!(
                "`{}` returned {got} {what} for a batch of {expected} events",
                W::ENTRY
            ),
        }
    }
}

/// Tells why a call failed: memory limit, deadline, or any other trap
/// (with what the plugin wrote to stdout/stderr during the call, which for
/// a Rust plugin includes its panic message).
fn classify(
    plugin: &str,
    timeout: Duration,
    state: &HostState,
    error: wasmtime::Error,
) -> PluginError {
    tracing::debug!(plugin, "plugin call failed: {error:?}");
    let plugin = plugin.to_owned();
    if state.limiter.hit {
        return PluginError::MemoryLimit {
            plugin,
            limit: state.limiter.limit(),
        };
    }
    let trap = error.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) {
        return PluginError::Timeout {
            plugin,
            after: timeout,
        };
    }
    let mut message = match (trap, error.downcast_ref::<wasmtime_wasi::I32Exit>()) {
        (Some(trap), _) => trap.to_string(),
        (None, Some(exit)) => format!("the plugin called exit({})", exit.0),
        (None, None) => format!("{error:#}"),
    };
    let output = state.recent_output();
    if !output.is_empty() {
        message.push_str("; plugin output: ");
        message.push_str(&output.join(" | "));
    }
    PluginError::Trap { plugin, message }
}
