//! The shared WebAssembly engine: compiler settings, the host functions
//! every plugin is linked against, and the clock that enforces deadlines.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::PluginError;
use crate::bindings::host;
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
/// It also remembers the components it compiled, by the SHA-256 of their
/// bytes: loading the same file again (another plugin entry using it, a
/// reload of an unchanged file) does not compile it again.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<HostState>,
    compiled: Mutex<CompiledCache>,
    _ticker: EpochTicker,
}

/// Compiled components by the hash of their bytes, oldest first out.
#[derive(Default)]
struct CompiledCache {
    components: HashMap<[u8; 32], Component>,
    order: VecDeque<[u8; 32]>,
}

impl PluginEngine {
    /// Sets up the engine and starts its epoch thread.
    pub fn new() -> Result<Self, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine {
            message: format!("{e:#}"),
        };
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Plugins are synchronous; without the data structures for
        // concurrent component-model calls a call is ~3x cheaper.
        config.concurrency_support(false);
        // Deadlines by epoch: a counter check at function entries and loop
        // back-edges, far cheaper than fuel metering.
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut linker = Linker::new(&engine);
        // Rust's standard library for wasm32-wasip2 imports WASI (stdio,
        // environment, exit, clocks, random). The context each store gets
        // (see `HostState`) grants none of the outside world: no
        // directories, no environment, no network, stdio to the log only.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(engine_err)?;

        let ticker = EpochTicker::start(engine.clone()).map_err(|e| PluginError::Engine {
            message: format!("cannot start the epoch thread: {e}"),
        })?;
        Ok(PluginEngine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                compiled: Mutex::default(),
                _ticker: ticker,
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// Compiles a component, or returns the one compiled earlier from the
    /// same bytes.
    pub(crate) fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(component) = self.cache().components.get(&key) {
            return Ok(component.clone());
        }
        // Compile without holding the lock: it takes a while, and other
        // plugins may be loading meanwhile.
        let component = Component::from_binary(&self.inner.engine, bytes)?;
        let mut cache = self.cache();
        if cache.components.insert(key, component.clone()).is_none() {
            cache.order.push_back(key);
            if cache.order.len() > COMPILED_CACHE_SIZE
                && let Some(oldest) = cache.order.pop_front()
            {
                cache.components.remove(&oldest);
            }
        }
        Ok(component)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CompiledCache> {
        // The cache holds no invariant a panic could break half-way.
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
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
        engine.compile(empty).unwrap();
        engine.compile(empty).unwrap();
        assert_eq!(engine.cache().components.len(), 1);
        assert!(engine.compile(b"junk").is_err());
        for i in 0..COMPILED_CACHE_SIZE + 3 {
            // Each gets its own custom section (id 0, 4 bytes: a one-byte
            // name and a two-byte payload), so its own hash.
            let mut bytes = empty.to_vec();
            bytes.extend_from_slice(&[0, 4, 1, b'x']);
            bytes.extend_from_slice(&(i as u16).to_le_bytes());
            engine.compile(&bytes).unwrap();
        }
        assert_eq!(engine.cache().components.len(), COMPILED_CACHE_SIZE);
    }

    #[test]
    fn the_epoch_thread_stops_with_the_engine() {
        let engine = PluginEngine::new().unwrap();
        let clone = engine.clone();
        drop(engine);
        drop(clone); // joins the thread; a hang here fails the test run
    }
}
