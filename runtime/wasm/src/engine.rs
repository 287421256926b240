//! The shared WebAssembly engine: compiler settings, the host functions
//! every plugin is linked against, and the clock that enforces deadlines.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::PluginError;
use crate::bindings::host;
use crate::code_cache::CodeCache;
use crate::registry::{Counters, DeclaredTables};
use crate::state::HostState;

/// How often the engine's epoch advances. Deadlines are counted in these
/// ticks, so a call may overrun its deadline by up to one tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How many compiled components the engine keeps for reuse. Each holds its
/// machine code; a plugin reloaded many times must not pile them up.
const COMPILED_CACHE_SIZE: usize = 32;

/// The wasmtime engine all plugins share.
///
/// Cheap to clone (an `Arc`). It owns a background thread that advances the
/// engine's epoch every 10 ms, which is what interrupts a plugin running
/// past its deadline; the thread stops when the last clone is dropped.
///
/// It remembers the components it compiled, by the SHA-256 of their bytes:
/// loading the same file again (another plugin entry using it, a reload of
/// an unchanged file) does not compile it again. With a cache directory
/// ([`PluginEngine::with_cache_dir`]) compiled code is also kept on disk,
/// so a restart does not compile again either.
///
/// Plugins that ask for fuel metering run on a second engine, made the
/// first time one is loaded: metering slows every call, so plugins that do
/// not ask for it do not pay for it.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    plain: Runtime,
    fueled: Arc<OnceLock<Runtime>>,
    compiled: Mutex<CompiledCache>,
    disk: Option<CodeCache>,
    /// How many components this engine compiled (rather than found).
    compilations: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) declared: DeclaredTables,
    _ticker: EpochTicker,
}

/// An engine and the linker holding the host functions for it.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    /// Names this engine's compiled code on disk: code compiled by another
    /// engine configuration or wasmtime version must not be loaded.
    compatibility: String,
}

/// Compiled components by engine and the hash of their bytes, oldest first
/// out.
#[derive(Default)]
struct CompiledCache {
    components: HashMap<(bool, [u8; 32]), Component>,
    order: VecDeque<(bool, [u8; 32])>,
}

/// A compiled component and the SHA-256 of the bytes it came from.
pub(crate) struct Compiled {
    pub(crate) component: Component,
    pub(crate) digest: [u8; 32],
}

impl Runtime {
    fn new(fuel: bool) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Plugins are synchronous; without the data structures for
        // concurrent component-model calls a call is ~3x cheaper.
        config.concurrency_support(false);
        // Deadlines by epoch: a counter check at function entries and loop
        // back-edges, far cheaper than fuel metering.
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        // WASI is linked whole; what a plugin may actually reach is decided
        // per plugin, by its grants: the component is refused at load if it
        // imports what it was not granted (see `session::check_imports`),
        // and its WASI context holds only the directories, variables and
        // network access granted (see `HostState`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Its blocking calls are replaced by ones that end at the call's
        // deadline, which the epoch cannot interrupt.
        crate::blocking::add_to_linker(&mut linker)?;
        host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;

        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compatibility = format!("{:016x}", hasher.finish());
        Ok(Runtime {
            engine,
            linker,
            compatibility,
        })
    }
}

impl PluginEngine {
    /// Sets up the engine and starts its epoch thread. Compiled code is
    /// kept in memory only.
    pub fn new() -> Result<Self, PluginError> {
        Self::build(None)
    }

    /// As [`PluginEngine::with_cache`], with the default size cap
    /// ([`PluginEngine::DEFAULT_CACHE_MAX_BYTES`]).
    pub fn with_cache_dir(dir: impl Into<PathBuf>) -> Result<Self, PluginError> {
        Self::with_cache(dir, Self::DEFAULT_CACHE_MAX_BYTES)
    }

    /// As [`PluginEngine::new`], and keeps compiled code in `dir` too,
    /// named by the hash of the component and of the engine's settings,
    /// at most `max_bytes` of it (least recently used first out).
    ///
    /// Compiled code runs outside the sandbox, so only files this
    /// installation wrote are loaded: `dir` is created `0700` and refused
    /// when another user owns it or others may write to it, and each file
    /// carries a MAC under a key kept beside it (`key`, `0600`); a file
    /// whose MAC does not verify is deleted and compiled again.
    pub fn with_cache(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self, PluginError> {
        let cache = CodeCache::open(dir.into(), max_bytes)
            .map_err(|message| PluginError::Engine { message })?;
        Self::build(Some(cache))
    }

    /// The default size cap of the compiled-code cache: 1 GiB.
    pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;

    fn build(disk: Option<CodeCache>) -> Result<Self, PluginError> {
        let plain = Runtime::new(false).map_err(engine_err)?;
        let fueled = Arc::new(OnceLock::new());
        let ticker = EpochTicker::start(plain.engine.clone(), fueled.clone()).map_err(|e| {
            PluginError::Engine {
                message: format!("cannot start the epoch thread: {e}"),
            }
        })?;
        Ok(PluginEngine {
            inner: Arc::new(EngineInner {
                plain,
                fueled,
                compiled: Mutex::default(),
                disk,
                compilations: AtomicU64::new(0),
                counters: Counters::default(),
                declared: DeclaredTables::default(),
                _ticker: ticker,
            }),
        })
    }

    /// The engine for plugins with (`fuel`) or without fuel metering.
    pub(crate) fn runtime(&self, fuel: bool) -> Result<&Runtime, PluginError> {
        if !fuel {
            return Ok(&self.inner.plain);
        }
        if let Some(r) = self.inner.fueled.get() {
            return Ok(r);
        }
        let runtime = Runtime::new(true).map_err(engine_err)?;
        // Two threads may race to make it; either result is as good.
        Ok(self.inner.fueled.get_or_init(|| runtime))
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub(crate) fn declared(&self) -> &DeclaredTables {
        &self.inner.declared
    }

    /// Every plugin counter, as (plugin, counter, total), sorted: what the
    /// plugins counted with the contract's `count`, across instances and
    /// reloads.
    pub fn counter_totals(&self) -> Vec<(String, String, u64)> {
        self.inner.counters.snapshot()
    }

    /// Compiles a component, or returns the one compiled earlier from the
    /// same bytes (in memory, or in the cache directory).
    pub(crate) fn compile(&self, bytes: &[u8], fuel: bool) -> Result<Compiled, String> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let key = (fuel, digest);
        if let Some(component) = self.cache().components.get(&key) {
            return Ok(Compiled {
                component: component.clone(),
                digest,
            });
        }
        let runtime = self.runtime(fuel).map_err(|e| e.to_string())?;
        // Compile without holding the lock: it takes a while, and other
        // plugins may be loading meanwhile.
        let component = match &self.inner.disk {
            Some(disk) => self.cached_compile(runtime, disk, &digest, bytes)?,
            None => self.compile_now(runtime, bytes)?,
        };
        let mut cache = self.cache();
        if cache.components.insert(key, component.clone()).is_none() {
            cache.order.push_back(key);
            if cache.order.len() > COMPILED_CACHE_SIZE
                && let Some(oldest) = cache.order.pop_front()
            {
                cache.components.remove(&oldest);
            }
        }
        Ok(Compiled { component, digest })
    }

    fn compile_now(&self, runtime: &Runtime, bytes: &[u8]) -> Result<Component, String> {
        self.inner.compilations.fetch_add(1, Ordering::Relaxed);
        Component::from_binary(&runtime.engine, bytes)
            .map_err(|e| format!("not a WebAssembly component: {e:#}"))
    }

    /// Loads the compiled code of `bytes` from the disk cache, or compiles
    /// it and stores it there. A cache file that cannot be used (written by
    /// another wasmtime, cut short, not carrying the installation's MAC) is
    /// replaced; a cache that cannot be written only costs the next start a
    /// compile.
    fn cached_compile(
        &self,
        runtime: &Runtime,
        disk: &CodeCache,
        digest: &[u8; 32],
        bytes: &[u8],
    ) -> Result<Component, String> {
        let name = format!("{}-{}.cwasm", hex::encode(digest), runtime.compatibility);
        if let Some(code) = disk.get(&name) {
            // SAFETY: wasmtime runs deserialized code as it is, so it must
            // come from `Component::serialize` of a compatible engine. These
            // bytes carry a MAC (verified by `get`, on this very buffer, so
            // the file cannot change in between) that only this
            // installation can make, over the name, which carries the
            // engine's compatibility hash; wasmtime checks the version and
            // settings recorded in the code as well.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize(&runtime.engine, &code) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    dir = %disk.dir().display(),
                    name,
                    "ignoring an unusable compiled plugin in the cache: {e:#}"
                ),
            }
        }
        let component = self.compile_now(runtime, bytes)?;
        match component.serialize() {
            Ok(code) => disk.put(&name, &code),
            Err(e) => tracing::warn!(name, "cannot serialize a compiled plugin: {e:#}"),
        }
        Ok(component)
    }

    #[cfg(test)]
    fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CompiledCache> {
        // The cache holds no invariant a panic could break half-way.
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn engine_err(e: wasmtime::Error) -> PluginError {
    PluginError::Engine {
        message: format!("{e:#}"),
    }
}

/// The number of epoch ticks that covers at least `timeout`: the first tick
/// may come right after the deadline is set, hence the extra one. Capped so
/// that adding it to the current epoch cannot overflow.
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    const NEVER: u64 = u64::MAX / 2;
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
    u64::try_from(ticks).map_or(NEVER, |t| t.min(NEVER))
}

/// The thread advancing the engine's epoch. Dropping it stops the thread.
struct EpochTicker {
    /// Dropping the sender wakes the thread and tells it to stop.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, fueled: Arc<OnceLock<Runtime>>) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                    if let Some(fueled) = fueled.get() {
                        fueled.engine.increment_epoch();
                    }
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments a counter; it cannot
            // panic in a way worth reporting from a destructor.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_cover_the_timeout() {
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
        assert_eq!(deadline_ticks(Duration::from_millis(10)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(11)), 3);
        assert_eq!(deadline_ticks(Duration::from_secs(5)), 501);
        assert_eq!(deadline_ticks(Duration::MAX), u64::MAX / 2);
    }

    #[test]
    fn compiled_components_are_reused_and_bounded() {
        // The smallest component: the preamble of the component encoding.
        let empty = b"\0asm\x0d\0\x01\0";
        let engine = PluginEngine::new().unwrap();
        engine.compile(empty, false).unwrap();
        engine.compile(empty, false).unwrap();
        assert_eq!(engine.cache().components.len(), 1);
        assert!(engine.compile(b"junk", false).is_err());
        for i in 0..COMPILED_CACHE_SIZE + 3 {
            // Each gets its own custom section (id 0, 4 bytes: a one-byte
            // name and a two-byte payload), so its own hash.
            let mut bytes = empty.to_vec();
            bytes.extend_from_slice(&[0, 4, 1, b'x']);
            bytes.extend_from_slice(&(i as u16).to_le_bytes());
            engine.compile(&bytes, false).unwrap();
        }
        assert_eq!(engine.cache().components.len(), COMPILED_CACHE_SIZE);
    }

    #[test]
    fn compiled_code_is_kept_on_disk_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = b"\0asm\x0d\0\x01\0";
        let engine = PluginEngine::with_cache_dir(dir.path()).unwrap();
        let first = engine.compile(empty, false).unwrap();
        let files = cwasm_files(dir.path());
        assert_eq!(files.len(), 1);
        let file = files[0].clone();
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(&hex::encode(first.digest)), "{name}");

        assert_eq!(engine.compilations(), 1);

        // A new engine (a restart) finds it without compiling.
        let again = PluginEngine::with_cache_dir(dir.path()).unwrap();
        again.compile(empty, false).unwrap();
        assert_eq!(again.compilations(), 0);

        // A corrupt file is replaced.
        std::fs::write(&file, b"garbage").unwrap();
        let third = PluginEngine::with_cache_dir(dir.path()).unwrap();
        third.compile(empty, false).unwrap();
        assert_eq!(third.compilations(), 1);
        assert_ne!(std::fs::read(&file).unwrap(), b"garbage");
        // Fuel metering is another engine: another file.
        third.compile(empty, true).unwrap();
        assert_eq!(cwasm_files(dir.path()).len(), 2);
    }

    fn cwasm_files(dir: &std::path::Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    }

    #[test]
    fn planted_compiled_code_is_not_run() {
        // Genuine compiled code of another component, planted under the
        // name of this one without the installation's MAC (here: with the
        // MAC of another installation) must be compiled over, not loaded.
        let empty = b"\0asm\x0d\0\x01\0";
        let mut other = empty.to_vec();
        other.extend_from_slice(&[0, 4, 1, b'x', 0, 0]);
        let elsewhere = tempfile::tempdir().unwrap();
        PluginEngine::with_cache_dir(elsewhere.path())
            .unwrap()
            .compile(&other, false)
            .unwrap();
        let foreign = std::fs::read(&cwasm_files(elsewhere.path())[0]).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let engine = PluginEngine::with_cache_dir(dir.path()).unwrap();
        engine.compile(empty, false).unwrap();
        let file = cwasm_files(dir.path()).remove(0);
        let genuine = std::fs::read(&file).unwrap();
        std::fs::write(&file, &foreign).unwrap();

        let restarted = PluginEngine::with_cache_dir(dir.path()).unwrap();
        restarted.compile(empty, false).unwrap();
        assert_eq!(restarted.compilations(), 1, "the planted file was loaded");
        assert_eq!(std::fs::read(&file).unwrap(), genuine);
    }

    #[test]
    fn the_epoch_thread_stops_with_the_engine() {
        let engine = PluginEngine::new().unwrap();
        let clone = engine.clone();
        drop(engine);
        drop(clone); // joins the thread; a hang here fails the test run
    }
}
