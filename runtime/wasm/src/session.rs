//! One live plugin instance: its store, the tables it has been told about,
//! and the guard around every call into it (deadline, error
//! classification, poisoning). Transforms and routers share all of this;
//! they differ only in their entry point.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Engine, Store, Trap};
use weir_core::{ChangeEvent, TableSchema};

use crate::bindings::{router, transform, wit};
use crate::convert::{Announced, Lowering, lower_columns, lower_table};
use crate::engine::deadline_ticks;
use crate::spec::Grants;
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
    /// Runs `init`; returns the hooks the plugin asked for.
    fn init(&self, store: &mut Store<HostState>) -> wasmtime::Result<Result<wit::Hooks, String>>;
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

    fn init(&self, store: &mut Store<HostState>) -> wasmtime::Result<Result<wit::Hooks, String>> {
        self.call_init(store)
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

    fn init(&self, store: &mut Store<HostState>) -> wasmtime::Result<Result<wit::Hooks, String>> {
        // Routers have no optional hooks.
        Ok(self.call_init(store)?.map(|()| wit::Hooks::empty()))
    }

    fn on_table(
        &self,
        store: &mut Store<HostState>,
        table: wit::Table<'_>,
    ) -> wasmtime::Result<()> {
        self.call_on_table(store, table)
    }
}

/// The public handle of a compiled plugin of one world (`TransformPlugin`,
/// `RouterPlugin`) and how it makes instances: the same for both worlds.
macro_rules! plugin_handle {
    ($plugin:ident, $instance:ident, $kind:literal) => {
        impl $plugin {
            #[doc = concat!("Compiles the component at `spec.path` and checks it is a ", $kind, ".")]
            ///
            /// Compiling takes a while (tens of milliseconds to seconds):
            /// keep it off the data path.
            pub fn load(engine: &PluginEngine, spec: PluginSpec) -> Result<Self, PluginError> {
                Ok($plugin {
                    loaded: Arc::new(Loaded::load(engine, spec)?),
                })
            }

            /// Compiles `bytes` as a new version of the plugin of `spec`
            #[doc = concat!("(whose file is not replaced yet) and checks it is a ", $kind, ".")]
            pub fn load_bytes(
                engine: &PluginEngine,
                spec: PluginSpec,
                bytes: &[u8],
            ) -> Result<Self, PluginError> {
                Ok($plugin {
                    loaded: Arc::new(Loaded::from_bytes(engine, spec, bytes)?),
                })
            }

            /// Creates an instance and runs `init` with the spec's configuration.
            pub fn instantiate(&self) -> Result<$instance, PluginError> {
                Ok($instance {
                    session: Session::start(&self.loaded, true)?,
                })
            }

            /// An instance whose counts are thrown away: for re-runs that
            /// isolate a failing event, which must not count events twice.
            pub(crate) fn instantiate_probe(&self) -> Result<$instance, PluginError> {
                Ok($instance {
                    session: Session::start(&self.loaded, false)?,
                })
            }

            /// The plugin's name.
            pub fn name(&self) -> &str {
                &self.loaded.name
            }

            /// The first 12 hex digits of the component's SHA-256: which
            /// build of the plugin this is.
            pub fn version(&self) -> &str {
                &self.loaded.version
            }

            /// The `weir:cdc` contract version the component was built against.
            pub fn contract(&self) -> Option<&semver::Version> {
                self.loaded.contract.as_ref()
            }

            /// What the plugin was loaded from.
            pub fn spec(&self) -> &PluginSpec {
                &self.loaded.spec
            }
        }
    };
}
pub(crate) use plugin_handle;

/// A compiled, validated plugin of world `W`, ready to instantiate.
pub(crate) struct Loaded<W: World> {
    engine: PluginEngine,
    pub(crate) spec: PluginSpec,
    pub(crate) name: Arc<str>,
    /// The first 12 hex digits of the component's SHA-256: names exactly
    /// which build of the plugin ran.
    pub(crate) version: String,
    /// The `weir:cdc` contract version the component was built against.
    pub(crate) contract: Option<semver::Version>,
    pre: W::Pre,
}

impl<W: World> Loaded<W> {
    /// Compiles and validates the component at `spec.path`.
    pub(crate) fn load(engine: &PluginEngine, spec: PluginSpec) -> Result<Self, PluginError> {
        let bytes = std::fs::read(&spec.path).map_err(|e| PluginError::Load {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::from_bytes(engine, spec, &bytes)
    }

    /// Compiles and validates `bytes`, a new version of the component at
    /// `spec.path` that is not written there yet.
    pub(crate) fn from_bytes(
        engine: &PluginEngine,
        spec: PluginSpec,
        bytes: &[u8],
    ) -> Result<Self, PluginError> {
        let load_err = |message: String| PluginError::Load {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            message,
        };
        check_header(bytes).map_err(load_err)?;
        let compiled = engine
            .compile(bytes, spec.fuel.is_some())
            .map_err(load_err)?;
        let component = compiled.component;
        let runtime = engine.runtime(spec.fuel.is_some())?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&runtime.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let contract = check_contract(&imports).map_err(load_err)?;
        check_grants(&imports, &spec.grants).map_err(load_err)?;
        check_world::<W>(&runtime.engine, &component).map_err(load_err)?;
        let pre = runtime
            .linker
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
            version: hex::encode(&compiled.digest[..6]),
            contract,
            spec,
            pre,
        })
    }
}

/// Recognises files that are not components before the parser does, to
/// say so in words rather than byte dumps.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), String> {
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

/// The contract version this host implements (`package weir:cdc@…` in
/// wit/weir-cdc.wit, which the bindings are generated from).
pub const CONTRACT_VERSION: &str = "1.0.0";

/// Checks the version of the `weir:cdc` interfaces the component imports:
/// same major version as the host, and a minor version no newer (a newer
/// one may call host functions this Weir does not have). Returns the
/// version found, if any `weir:cdc` interface is imported.
pub(crate) fn check_contract(imports: &[String]) -> Result<Option<semver::Version>, String> {
    let ours = semver::Version::parse(CONTRACT_VERSION).expect("a valid version");
    let mut found: Option<semver::Version> = None;
    for name in imports {
        let Some(rest) = name.strip_prefix("weir:cdc/") else {
            continue;
        };
        let Some((_, version)) = rest.split_once('@') else {
            return Err(format!(
                "it imports `{name}` without a version; rebuild it against wit/weir-cdc.wit (weir:cdc@{CONTRACT_VERSION})"
            ));
        };
        let theirs = semver::Version::parse(version)
            .map_err(|e| format!("it imports `{name}`, whose version is not semver: {e}"))?;
        let compatible = if ours.major == 0 {
            theirs.major == 0 && theirs.minor == ours.minor && theirs.patch <= ours.patch
        } else {
            theirs.major == ours.major && theirs.minor <= ours.minor
        };
        if !compatible {
            let advice = if theirs > ours {
                "upgrade Weir to run it, or rebuild the plugin against this Weir's wit/weir-cdc.wit"
            } else {
                "rebuild it with a plugin SDK for this contract version"
            };
            let range = if ours.major == 0 {
                format!("0.{}.0 to {ours}", ours.minor)
            } else {
                format!("{}.0 to {}.{}", ours.major, ours.major, ours.minor)
            };
            return Err(format!(
                "it was built for the plugin contract weir:cdc@{theirs}, but this Weir \
                 implements weir:cdc@{ours} and runs plugins built for {range}; {advice}"
            ));
        }
        found = Some(found.map_or(theirs.clone(), |f| f.max(theirs)));
    }
    Ok(found)
}

/// Refuses a component that imports an interface its grants do not cover,
/// naming the import, rather than let it fail at its first use.
pub(crate) fn check_grants(imports: &[String], grants: &Grants) -> Result<(), String> {
    let mut refused = Vec::new();
    for name in imports {
        let why = if name.starts_with("wasi:sockets/") && !grants.network.is_granted() {
            "network access, not granted (grant it with `sandbox.network = true`)"
        } else if name.starts_with("wasi:filesystem/") && grants.dirs.is_empty() {
            "file system access, not granted (grant directories with `sandbox.dirs`)"
        } else if name.starts_with("wasi:http/") {
            "outgoing HTTP, which Weir does not offer to plugins"
        } else {
            continue;
        };
        refused.push(format!("`{name}` ({why})"));
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("it imports {}", refused.join(", ")))
    }
}

/// Says plainly when a component is of the other world, or of none.
pub(crate) fn check_world<W: World>(engine: &Engine, component: &Component) -> Result<(), String> {
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
        .exports(engine)
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
    /// The optional calls the plugin asked for in `init`.
    pub(crate) hooks: wit::Hooks,
    /// Fuel each call starts with, when metered.
    fuel: Option<u64>,
    /// Whether successful calls add to the plugin's counters; not for the
    /// throwaway instances that isolate a failing event.
    publish_counts: bool,
}

impl<W: World> Session<W> {
    /// Instantiates the plugin and runs its `init`. `publish_counts` says
    /// whether what the instance counts is real (see the field).
    pub(crate) fn start(plugin: &Loaded<W>, publish_counts: bool) -> Result<Self, PluginError> {
        let spec = &plugin.spec;
        let runtime = plugin.engine.runtime(spec.fuel.is_some())?;
        let state = HostState::new(plugin.name.clone(), spec, plugin.engine.clone()).map_err(
            |message| PluginError::Load {
                plugin: plugin.name.to_string(),
                path: spec.path.clone(),
                message,
            },
        )?;
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        if let Some(fuel) = spec.fuel {
            store.set_fuel(fuel).map_err(|e| PluginError::Engine {
                message: format!("{e:#}"),
            })?;
        }
        let deadline_ticks = deadline_ticks(spec.call_timeout);
        // A component may run start functions while instantiating: they get
        // a deadline too.
        store.set_epoch_deadline(deadline_ticks);
        store.data_mut().begin_call(spec.call_timeout);
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
            hooks: wit::Hooks::empty(),
            fuel: spec.fuel,
            publish_counts,
        };
        match session.call(|exports, store| exports.init(store))? {
            Ok(hooks) => {
                session.hooks = hooks;
                session.calls_succeeded();
                Ok(session)
            }
            Err(message) => Err(PluginError::Init {
                plugin: plugin.name.to_string(),
                message,
            }),
        }
    }

    /// Ends a unit of work that succeeded: what the plugin counted during
    /// it becomes part of its totals (or is dropped, for a throwaway
    /// instance).
    pub(crate) fn calls_succeeded(&mut self) {
        let state = self.store.data_mut();
        if self.publish_counts {
            state.publish_counts();
        } else {
            state.discard_counts();
        }
    }

    /// The tables the instance declared, by id.
    pub(crate) fn declared(&self) -> &std::collections::HashMap<u32, Arc<TableSchema>> {
        &self.store.data().declared
    }

    /// Makes a call that is not a batch (the `commit` hook).
    pub(crate) fn call_other<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.call(f)
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
        if let Some(fuel) = self.fuel
            && let Err(e) = self.store.set_fuel(fuel)
        {
            return Err(PluginError::Engine {
                message: format!("{e:#}"),
            });
        }
        self.store.data_mut().begin_call(self.call_timeout);
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
    if trap == Some(&Trap::OutOfFuel) {
        return PluginError::OutOfFuel { plugin };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn contract_versions_are_checked_by_semver() {
        let ok = check_contract(&names(&["wasi:io/streams@0.2.6", "weir:cdc/host@1.0.0"]));
        assert_eq!(ok.unwrap().unwrap().to_string(), "1.0.0");
        assert_eq!(
            check_contract(&names(&["wasi:io/streams@0.2.6"])).unwrap(),
            None
        );

        let newer_major = check_contract(&names(&["weir:cdc/types@2.0.0"])).unwrap_err();
        assert!(newer_major.contains("weir:cdc@2.0.0"), "{newer_major}");
        assert!(
            newer_major.contains("implements weir:cdc@1.0.0"),
            "{newer_major}"
        );
        assert!(newer_major.contains("upgrade Weir"), "{newer_major}");

        let older_major = check_contract(&names(&["weir:cdc/types@0.1.0"])).unwrap_err();
        assert!(
            older_major.contains("rebuild it with a plugin SDK"),
            "{older_major}"
        );

        let newer_minor = check_contract(&names(&["weir:cdc/host@1.1.0"])).unwrap_err();
        assert!(newer_minor.contains("1.0 to 1.0"), "{newer_minor}");

        let unversioned = check_contract(&names(&["weir:cdc/host"])).unwrap_err();
        assert!(unversioned.contains("without a version"), "{unversioned}");
    }

    #[test]
    fn imports_need_their_grants() {
        let imports = names(&[
            "wasi:cli/environment@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
        ]);
        let err = check_grants(&imports, &Grants::default()).unwrap_err();
        for named in [
            "wasi:filesystem/preopens",
            "wasi:sockets/tcp",
            "wasi:http/outgoing-handler",
        ] {
            assert!(err.contains(named), "{err}");
        }
        assert!(!err.contains("environment"), "{err}");

        let granted = Grants {
            network: crate::NetworkGrant::Public,
            dirs: vec![crate::DirGrant {
                host: "/tmp".into(),
                guest: "/tmp".into(),
                writable: false,
            }],
            ..Grants::default()
        };
        let err = check_grants(&imports, &granted).unwrap_err();
        assert!(
            err.contains("wasi:http") && !err.contains("wasi:sockets"),
            "{err}"
        );
        assert!(check_grants(&imports[..3], &granted).is_ok());
    }
}
