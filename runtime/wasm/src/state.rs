//! What each plugin instance's store holds: its WASI context (which grants
//! only what the plugin's spec grants), its memory limiter, its captured
//! output, and the host functions of the contract's `host` interface.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::ClosedInputStream;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use weir_core::TableSchema;

use crate::PluginEngine;
use crate::bindings::host::{self, Level};
use crate::bindings::wit;
use crate::registry::TableShape;
use crate::spec::PluginSpec;

/// The `tracing` target of everything plugins log or print, so operators
/// can filter it (`RUST_LOG=weir::plugin=debug`).
const PLUGIN_TARGET: &str = "weir::plugin";
/// Log messages longer than this are cut: a plugin must not be able to
/// flood the log with one call.
const MAX_LOG_MESSAGE: usize = 8 * 1024;
/// Lines of output kept for the error report of a failing call.
const RECENT_LINES: usize = 16;
/// Output without a newline is logged once it reaches this length.
const MAX_LINE: usize = 4 * 1024;
/// Tables are small in practice (function references); this bounds a
/// hostile plugin's host memory use through them.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The data of one plugin instance's store.
pub(crate) struct HostState {
    plugin: Arc<str>,
    engine: PluginEngine,
    config: Arc<[(String, String)]>,
    wasi: WasiCtx,
    resources: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    output: PluginOutput,
    /// Counts of the calls since the last [`HostState::publish_counts`]:
    /// they reach the plugin's totals only once the calls succeed, so the
    /// re-runs that isolate a failing event do not count twice.
    counts: HashMap<String, u64>,
    /// Tables this instance declared, by id: ids its answers may use.
    pub(crate) declared: HashMap<u32, Arc<TableSchema>>,
    /// When the call in progress must end: WASI's blocking calls wait no
    /// longer than this (see `blocking`).
    pub(crate) deadline: Option<Instant>,
}

impl HostState {
    pub(crate) fn new(
        plugin: Arc<str>,
        spec: &PluginSpec,
        engine: PluginEngine,
    ) -> Result<Self, String> {
        let output = PluginOutput::new(plugin.clone());
        let grants = &spec.grants;
        let mut wasi = WasiCtxBuilder::new();
        // Stdin is closed (not merely empty and open): a read returns at
        // once instead of waiting for input that never comes.
        wasi.stdin(ClosedInputStream)
            .stdout(output.stream("stdout"))
            .stderr(output.stream("stderr"))
            .envs(&grants.env);
        let network = grants.network.is_granted();
        wasi.allow_tcp(network)
            .allow_udp(network)
            .allow_ip_name_lookup(network);
        if network {
            let grant = Arc::new(grants.network.clone());
            wasi.socket_addr_check(move |addr, used| {
                let grant = grant.clone();
                Box::pin(async move {
                    let allowed = match used {
                        // A bind reaches nothing (connecting binds
                        // implicitly, to the wildcard address).
                        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => true,
                        SocketAddrUse::TcpConnect
                        | SocketAddrUse::UdpSend
                        | SocketAddrUse::UdpReceive => grant.allows(addr).await,
                        // Grants are for outgoing connections: a plugin
                        // does not serve.
                        _ => false,
                    };
                    if !allowed {
                        tracing::debug!(%addr, ?used, "a plugin's socket address was refused by its network grant");
                    }
                    allowed
                })
            });
        }
        for dir in &grants.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    format!(
                        "cannot open the granted directory {}: {e:#}",
                        dir.host.display()
                    )
                })?;
        }
        Ok(HostState {
            plugin,
            engine,
            config: spec.config.clone().into(),
            wasi: wasi.build(),
            resources: ResourceTable::new(),
            limiter: MemoryLimiter::new(spec.memory_limit_bytes),
            output,
            counts: HashMap::new(),
            declared: HashMap::new(),
            deadline: None,
        })
    }

    /// Adds what the instance counted to its plugin's totals.
    pub(crate) fn publish_counts(&mut self) {
        let refused = self.engine.counters().add(&self.plugin, &mut self.counts);
        if refused > 0 {
            tracing::warn!(
                target: PLUGIN_TARGET,
                plugin = &*self.plugin,
                refused,
                "the plugin has too many counters ({} at most); new names are not counted",
                crate::registry::MAX_COUNTERS_PER_PLUGIN
            );
        }
    }

    /// Forgets what the instance counted since the last publish.
    pub(crate) fn discard_counts(&mut self) {
        self.counts.clear();
    }

    /// Starts a call that must end within `timeout`. Forgets the output of
    /// earlier calls, so an error report shows what the failing call wrote.
    pub(crate) fn begin_call(&mut self, timeout: Duration) {
        self.output.clear_recent();
        self.deadline = Instant::now().checked_add(timeout);
    }

    /// The store's WASI resources (streams, pollables, sockets).
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.resources
    }

    /// What the plugin wrote to stdout and stderr during the current call
    /// (the last lines of it), one line each.
    pub(crate) fn recent_output(&self) -> Vec<String> {
        self.output.recent()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.resources,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) {
        truncate(&mut message, MAX_LOG_MESSAGE);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: PLUGIN_TARGET, plugin, "{message}"),
            Level::Debug => tracing::debug!(target: PLUGIN_TARGET, plugin, "{message}"),
            Level::Info => tracing::info!(target: PLUGIN_TARGET, plugin, "{message}"),
            Level::Warn => tracing::warn!(target: PLUGIN_TARGET, plugin, "{message}"),
            Level::Error => tracing::error!(target: PLUGIN_TARGET, plugin, "{message}"),
        }
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.to_vec()
    }

    fn count(&mut self, name: String, delta: u64) {
        // Bounded per plugin when published; bounded per call here, so a
        // plugin inventing names cannot grow this map without bound either.
        if self.counts.len() >= crate::registry::MAX_COUNTERS_PER_PLUGIN
            && !self.counts.contains_key(&name)
        {
            return;
        }
        let total = self.counts.entry(name).or_default();
        *total = total.saturating_add(delta);
    }

    fn declare_table(
        &mut self,
        schema: String,
        name: String,
        columns: Vec<wit::ColumnResult>,
    ) -> u32 {
        let shape = TableShape {
            schema,
            name,
            columns: columns
                .into_iter()
                .map(|c| (c.name, c.type_name, c.key))
                .collect(),
        };
        match self.engine.declared().declare(shape) {
            Some(table) => {
                let id = table.id;
                self.declared.insert(id, table);
                id
            }
            None => {
                // 0 names no table, so a change using it fails with a
                // contract error that says why.
                tracing::warn!(
                    target: PLUGIN_TARGET,
                    plugin = &*self.plugin,
                    "declare-table refused: {} tables are declared already",
                    crate::registry::MAX_DECLARED_TABLES
                );
                0
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// Caps the linear memory of all the instance's memories together, and
/// remembers that it did so: a refused growth traps, and the flag tells
/// that trap apart from any other.
pub(crate) struct MemoryLimiter {
    limit: usize,
    in_use: usize,
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            in_use: 0,
            hit: false,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let in_use = self.in_use - current.min(self.in_use) + desired;
        if in_use > self.limit {
            self.hit = true;
            // An error (rather than `Ok(false)`) traps right at the
            // `memory.grow`, instead of letting the guest's allocator turn
            // the failure into some other trap later.
            wasmtime::bail!(
                "memory limit of {} bytes reached (growing a memory to {desired} bytes)",
                self.limit
            );
        }
        self.in_use = in_use;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A plugin's stdout and stderr: complete lines go to the log (tagged with
/// the plugin's name), and the last few are kept for error reports (a Rust
/// plugin's panic message arrives this way).
#[derive(Clone)]
struct PluginOutput {
    plugin: Arc<str>,
    buffer: Arc<Mutex<OutputBuffer>>,
}

#[derive(Default)]
struct OutputBuffer {
    /// The unfinished last line.
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

impl PluginOutput {
    fn new(plugin: Arc<str>) -> Self {
        PluginOutput {
            plugin,
            buffer: Arc::default(),
        }
    }

    fn stream(&self, name: &'static str) -> OutputStreamHandle {
        OutputStreamHandle {
            output: self.clone(),
            name,
        }
    }

    fn clear_recent(&self) {
        let mut buffer = self.lock();
        buffer.recent.clear();
    }

    /// The last lines written, blank lines and Rust's advice to set
    /// `RUST_BACKTRACE` (which an operator cannot act on) left out.
    fn recent(&self) -> Vec<String> {
        let mut buffer = self.lock();
        let partial = std::mem::take(&mut buffer.partial);
        buffer
            .recent
            .iter()
            .cloned()
            .chain((!partial.is_empty()).then(|| String::from_utf8_lossy(&partial).into_owned()))
            .filter(|line| {
                !line.trim().is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE")
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutputBuffer> {
        // Only this module touches the buffer, and nothing in it panics
        // while holding the lock; recover the data if that ever changes.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, stream: &'static str, mut bytes: &[u8]) {
        let mut buffer = self.lock();
        while !bytes.is_empty() {
            let (chunk, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            buffer.partial.extend_from_slice(chunk);
            bytes = rest;
            if complete || buffer.partial.len() >= MAX_LINE {
                let mut line = String::from_utf8_lossy(&buffer.partial).into_owned();
                buffer.partial.clear();
                truncate(&mut line, MAX_LINE);
                tracing::warn!(target: PLUGIN_TARGET, plugin = &*self.plugin, stream, "{line}");
                if buffer.recent.len() == RECENT_LINES {
                    buffer.recent.pop_front();
                }
                buffer.recent.push_back(line);
            }
        }
    }
}

/// One of a plugin's output streams, as WASI sees it.
#[derive(Clone)]
struct OutputStreamHandle {
    output: PluginOutput,
    name: &'static str,
}

impl IsTerminal for OutputStreamHandle {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputStreamHandle {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputStreamHandle {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputStreamHandle {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.name, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready; one write may be this large.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for OutputStreamHandle {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.output.write(self.name, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_and_the_last_ones_kept() {
        let out = PluginOutput::new("p".into());
        out.write("stderr", b"\nthread panicked at x:\nboom");
        out.write(
            "stderr",
            b"!\nnote: run with `RUST_BACKTRACE=1` to see more\npartial",
        );
        assert_eq!(out.recent(), ["thread panicked at x:", "boom!", "partial"]);
        out.clear_recent();
        assert!(out.recent().is_empty());
        for i in 0..40 {
            out.write("stdout", format!("{i}\n").as_bytes());
        }
        let recent = out.recent();
        assert_eq!(recent.len(), RECENT_LINES);
        assert_eq!(recent.last().map(String::as_str), Some("39"));
    }

    #[test]
    fn memory_limit_counts_all_memories() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(60, 80, None).unwrap());
        assert!(limiter.memory_growing(0, 30, None).is_err());
        assert!(limiter.hit);
    }

    #[test]
    fn long_messages_are_cut_on_char_boundaries() {
        let mut s = "é".repeat(10);
        truncate(&mut s, 5);
        assert_eq!(s, "éé…");
    }
}
