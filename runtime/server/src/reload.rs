//! Deploying new plugin versions into a running pipeline: by replacing a
//! plugin's file (watched) or through the admin endpoint
//! (`PUT /plugins/{name}`).
//!
//! A new version is compiled and validated off the data path (its world,
//! its imports against the plugin's grants, its `init` with the plugin's
//! configuration) before anything changes; an invalid one is refused and
//! the running version stays. A valid one goes to the processor, which
//! swaps it in at the next transaction boundary (at once when the source
//! is idle between transactions).
//!
//! A version can also be tried first: deployed as a shadow
//! (`PUT /plugins/{name}?mode=shadow`) it runs beside the running version
//! without delivering anything, then is promoted (`POST
//! /plugins/{name}/promote`, an ordinary deploy of the same bytes) or
//! discarded (`DELETE /plugins/{name}/shadow`).
//!
//! Versions waiting for a boundary are few ([`SWAPS_WAITING`]): none
//! comes inside a long transaction, and each waiting version holds its
//! compiled code, so more deploys are refused until they have taken over.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_core::SourceItem;
use weir_wasm::{PluginEngine, PluginSpec, RouterPlugin, TransformPlugin};

use crate::answers::ShadowReport;

use crate::config::Config;
use crate::halt::HaltError;
use crate::plugins::{LoadedPlugins, Swap, plugin_spec};
use crate::status::Status;

/// Takes new versions of the pipeline's plugins.
pub struct Deployer {
    engine: PluginEngine,
    slots: Vec<Slot>,
    swaps: mpsc::Sender<Swap>,
    status: Arc<Status>,
    /// One deploy at a time, so a file write by the endpoint and the
    /// watcher noticing it cannot both swap.
    busy: tokio::sync::Mutex<()>,
    /// The processor's input, to wake it when a version is queued while
    /// the source is idle (no batch would come to take it over). Weak, so
    /// the processor still stops when the source does.
    wake: OnceLock<mpsc::WeakSender<Vec<SourceItem>>>,
}

/// One configured plugin.
struct Slot {
    spec: PluginSpec,
    kind: Kind,
    seen: Mutex<Seen>,
}

#[derive(Clone, Copy)]
enum Kind {
    Transform(usize),
    Router,
}

/// What the deployer knows of a plugin's file.
struct Seen {
    /// Modification time and length when last read: unchanged means the
    /// file need not be read again.
    stamp: Option<(SystemTime, u64)>,
    /// The version running or waiting to take over.
    version: String,
    /// The shadow version, if one runs or waits to: its version and
    /// bytes, kept for a promotion.
    shadow: Option<(String, Bytes)>,
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No plugin of that name is configured.
    #[error("no plugin named {name:?} (configured: {known})")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The new version is not valid; the running one stays.
    #[error("{0}")]
    Invalid(String),
    /// Too many validated versions wait for a transaction boundary.
    #[error(
        "{waiting} new plugin versions already wait for a transaction boundary (none comes inside a long transaction); send this one again once they have taken over"
    )]
    Waiting {
        /// How many wait.
        waiting: usize,
    },
    /// The new version could not be written next to the old one.
    #[error("{0}")]
    Io(String),
    /// The pipeline has stopped: nothing would run a shadow.
    #[error("the pipeline has stopped; a shadow version would never run")]
    Stopped,
    /// A shadow was asked for, and the plugin has none.
    #[error(
        "plugin {name:?} has no shadow version; deploy one with PUT /plugins/{name}?mode=shadow (weir plugin deploy --shadow)"
    )]
    NoShadow {
        /// The plugin.
        name: String,
    },
}

/// The most validated versions that wait for a transaction boundary.
pub const SWAPS_WAITING: usize = 4;

/// The channel new versions travel to the processor in, bounded by
/// [`SWAPS_WAITING`].
pub fn swap_channel() -> (mpsc::Sender<Swap>, mpsc::Receiver<Swap>) {
    mpsc::channel(SWAPS_WAITING)
}

/// A deploy that was accepted.
#[derive(Debug, serde::Serialize)]
pub struct Deployed {
    /// The plugin's name.
    pub plugin: String,
    /// The new version (the first 12 hex digits of its SHA-256).
    pub version: String,
    /// The version it replaces.
    pub previous: String,
}

/// The version string of a component's bytes, as the WASM host names it.
fn version_of(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

impl Deployer {
    /// A deployer for the plugins of `config`, as loaded in `plugins`.
    pub fn new(
        config: &Config,
        plugins: &LoadedPlugins,
        swaps: mpsc::Sender<Swap>,
        status: Arc<Status>,
    ) -> Self {
        let mut slots = Vec::new();
        for (i, (c, p)) in config
            .transforms
            .iter()
            .zip(&plugins.transforms)
            .enumerate()
        {
            slots.push(Slot::new(plugin_spec(c), Kind::Transform(i), p.version()));
        }
        if let (Some(c), Some(p)) = (&config.router, &plugins.router) {
            slots.push(Slot::new(plugin_spec(c), Kind::Router, p.version()));
        }
        Deployer {
            engine: plugins.engine.clone(),
            slots,
            swaps,
            status,
            busy: tokio::sync::Mutex::new(()),
            wake: OnceLock::new(),
        }
    }

    /// Where to wake the processor when a version is queued.
    pub fn wake_with(&self, processor: mpsc::WeakSender<Vec<SourceItem>>) {
        let _ = self.wake.set(processor);
    }

    /// Whether any plugin is configured.
    pub fn has_plugins(&self) -> bool {
        !self.slots.is_empty()
    }

    fn slot(&self, name: &str) -> Result<&Slot, DeployError> {
        self.slots
            .iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| DeployError::UnknownPlugin {
                name: name.to_owned(),
                known: self
                    .slots
                    .iter()
                    .map(|s| s.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Whether a plugin `name` is configured.
    pub fn knows(&self, name: &str) -> Result<(), DeployError> {
        self.slot(name).map(|_| ())
    }

    /// Whether a deploy of `name` could be taken now: the plugin exists and
    /// the queue to the processor has room. Checked before an upload is
    /// read, so a deploy that would be refused costs no upload.
    pub fn ready_for(&self, name: &str) -> Result<(), DeployError> {
        self.slot(name)?;
        if !self.swaps.is_closed() && self.swaps.capacity() == 0 {
            return Err(DeployError::Waiting {
                waiting: SWAPS_WAITING,
            });
        }
        Ok(())
    }

    /// Validates `bytes` as the new version of plugin `name`; if valid,
    /// writes it over the plugin's file (so a restart runs it too) and
    /// hands it to the pipeline, which swaps it in at the next transaction
    /// boundary.
    pub async fn deploy(&self, name: &str, bytes: Bytes) -> Result<Deployed, DeployError> {
        let _busy = self.busy.lock().await;
        self.deploy_locked(name, bytes).await
    }

    /// [`Deployer::deploy`], with `busy` held by the caller.
    async fn deploy_locked(&self, name: &str, bytes: Bytes) -> Result<Deployed, DeployError> {
        let slot = self.slot(name)?;
        // Before compiling: a refused deploy should cost nothing.
        let place = self
            .reserve()
            .map_err(|waiting| DeployError::Waiting { waiting })?;
        let previous = slot.seen().version.clone();
        let version = version_of(&bytes);
        let swap = self.validate(slot, bytes.clone()).await.map_err(|e| {
            self.refused(slot, &e);
            DeployError::Invalid(e)
        })?;
        let path = slot.spec.path.clone();
        let stamp = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| DeployError::Io(e.to_string()))?
            .map_err(|e| {
                DeployError::Io(format!(
                    "cannot write the new version to {}: {e}",
                    slot.spec.path.display()
                ))
            })?;
        {
            let mut seen = slot.seen();
            seen.stamp = Some(stamp);
            seen.version = version.clone();
            seen.forget_shadow_of(&version);
        }
        self.accept(slot, &version, swap, place);
        Ok(Deployed {
            plugin: name.to_owned(),
            version,
            previous,
        })
    }

    /// Validates `bytes` as a shadow version of plugin `name`: from the
    /// next transaction boundary it runs beside the running version on the
    /// same batches, and only the running version's output is delivered
    /// (see `shadow.rs`). The plugin's file is left alone: a restart runs
    /// the running version, without the shadow. A shadow the plugin
    /// already has is replaced.
    pub async fn deploy_shadow(&self, name: &str, bytes: Bytes) -> Result<Deployed, DeployError> {
        let _busy = self.busy.lock().await;
        let slot = self.slot(name)?;
        let Some(place) = self
            .reserve()
            .map_err(|waiting| DeployError::Waiting { waiting })?
        else {
            return Err(DeployError::Stopped);
        };
        let running = slot.seen().version.clone();
        let version = version_of(&bytes);
        // Its own name, so its log lines and counters are told apart from
        // the running version's.
        let mut spec = slot.spec.clone();
        spec.name = format!("{name}@shadow");
        let swap = self
            .validate_as(spec, slot.kind, bytes.clone())
            .await
            .map_err(|e| {
                self.refused(slot, &e);
                DeployError::Invalid(e)
            })?;
        let report = Arc::new(ShadowReport::new(name, &version));
        let swap = match swap {
            Swap::Transform(i, plugin) => Swap::ShadowTransform(i, plugin, report.clone()),
            Swap::Router(plugin) => Swap::ShadowRouter(plugin, report.clone()),
            other => other,
        };
        // A shadow it replaces stops at once.
        if let Some(old) = self.status.plugins.shadow(name) {
            old.stop();
        }
        slot.seen().shadow = Some((version.clone(), bytes));
        tracing::info!(plugin = %name, %version, %running, "shadow version validated; it runs beside the running version from the next transaction boundary");
        self.status.plugins.start_shadow(name, report);
        self.send(Some(place), swap);
        Ok(Deployed {
            plugin: name.to_owned(),
            version,
            previous: running,
        })
    }

    /// Deploys the shadow version of `name` as its running version: the
    /// file is replaced and the version takes over at the next transaction
    /// boundary, as any deploy; the shadow ends then.
    pub async fn promote(&self, name: &str) -> Result<Deployed, DeployError> {
        // Held from reading the shadow to deploying it: a discard or a
        // new shadow in between would otherwise be overridden.
        let _busy = self.busy.lock().await;
        let slot = self.slot(name)?;
        let Some((_, bytes)) = slot.seen().shadow.clone() else {
            return Err(DeployError::NoShadow {
                name: name.to_owned(),
            });
        };
        self.deploy_locked(name, bytes).await
    }

    /// Ends the shadow version of `name` at once (its thread stops after
    /// the call it is in); returns its version.
    pub async fn discard(&self, name: &str) -> Result<String, DeployError> {
        let _busy = self.busy.lock().await;
        let slot = self.slot(name)?;
        let Some((version, _)) = slot.seen().shadow.take() else {
            return Err(DeployError::NoShadow {
                name: name.to_owned(),
            });
        };
        if let Some(report) = self.status.plugins.shadow(name) {
            report.stop();
        }
        self.status.plugins.end_shadow(name, &version);
        // The processor lets go of the stopped shadow at a boundary, or
        // once it finds the shadow's thread gone, whichever comes first.
        let end = match slot.kind {
            Kind::Transform(i) => Swap::EndShadowTransform(i),
            Kind::Router => Swap::EndShadowRouter,
        };
        if let Ok(Some(place)) = self.reserve() {
            self.send(Some(place), end);
        }
        tracing::info!(plugin = %name, %version, "shadow version discarded");
        Ok(version)
    }

    /// Checks every plugin's file every `interval` until `stop`, and
    /// deploys what changed.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> Result<(), HaltError> {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
            for slot in &self.slots {
                self.check(slot).await;
            }
        }
    }

    /// Deploys the plugin's file if it holds a new version.
    async fn check(&self, slot: &Slot) {
        let _busy = self.busy.lock().await;
        let Ok(stamp) = stamp(&slot.spec.path) else {
            // Missing for a moment while being replaced, or gone: the
            // running version stays either way.
            return;
        };
        if slot.seen().stamp == Some(stamp) {
            return;
        }
        // A full queue: the file is read again at the next poll.
        let Ok(place) = self.reserve() else {
            return;
        };
        let Ok(bytes) = std::fs::read(&slot.spec.path) else {
            return;
        };
        let version = version_of(&bytes);
        {
            let mut seen = slot.seen();
            seen.stamp = Some(stamp);
            if seen.version == version {
                return;
            }
        }
        match self.validate(slot, bytes.into()).await {
            Ok(swap) => {
                let mut seen = slot.seen();
                seen.version = version.clone();
                seen.forget_shadow_of(&version);
                drop(seen);
                self.accept(slot, &version, swap, place);
            }
            // A file still being written is refused too, and read again
            // once its size or time changes.
            Err(e) => self.refused(slot, &e),
        }
    }

    /// Compiles `bytes` and runs `init` on them, off the async runtime.
    async fn validate(&self, slot: &Slot, bytes: Bytes) -> Result<Swap, String> {
        self.validate_as(slot.spec.clone(), slot.kind, bytes).await
    }

    /// [`Deployer::validate`] under `spec`.
    async fn validate_as(
        &self,
        spec: PluginSpec,
        kind: Kind,
        bytes: Bytes,
    ) -> Result<Swap, String> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || match kind {
            Kind::Transform(i) => {
                let plugin = TransformPlugin::load_bytes(&engine, spec, &bytes)
                    .map_err(|e| e.to_string())?;
                plugin.instantiate().map_err(|e| e.to_string())?;
                Ok(Swap::Transform(i, plugin))
            }
            Kind::Router => {
                let plugin =
                    RouterPlugin::load_bytes(&engine, spec, &bytes).map_err(|e| e.to_string())?;
                plugin.instantiate().map_err(|e| e.to_string())?;
                Ok(Swap::Router(plugin))
            }
        })
        .await
        .map_err(|e| format!("validating the new version panicked: {e}"))?
    }

    /// A place in the queue to the processor; `None` when the processor
    /// has stopped (nothing is left to swap, but the file is still
    /// written, so a restart runs the new version). Errs with the queue's
    /// length when it is full.
    fn reserve(&self) -> Result<Option<mpsc::Permit<'_, Swap>>, usize> {
        match self.swaps.try_reserve() {
            Ok(place) => Ok(Some(place)),
            Err(mpsc::error::TrySendError::Closed(())) => Ok(None),
            Err(mpsc::error::TrySendError::Full(())) => Err(SWAPS_WAITING),
        }
    }

    fn accept(
        &self,
        slot: &Slot,
        version: &str,
        swap: Swap,
        place: Option<mpsc::Permit<'_, Swap>>,
    ) {
        tracing::info!(plugin = %slot.spec.name, %version, "new plugin version validated; it takes over at the next transaction boundary");
        self.status.plugins.accepted(&slot.spec.name, version);
        self.send(place, swap);
    }

    /// Queues `swap` for the processor and wakes it: between transactions
    /// it takes over at once, without waiting for the source's next batch.
    fn send(&self, place: Option<mpsc::Permit<'_, Swap>>, swap: Swap) {
        let Some(place) = place else {
            return;
        };
        place.send(swap);
        if let Some(processor) = self.wake.get().and_then(mpsc::WeakSender::upgrade) {
            // Full means batches are flowing: the next one takes it over.
            let _ = processor.try_send(Vec::new());
        }
    }

    fn refused(&self, slot: &Slot, error: &str) {
        let running = slot.seen().version.clone();
        tracing::error!(plugin = %slot.spec.name, %running, %error, "refused a new plugin version; the running version stays");
        self.status.plugins.refused(&slot.spec.name, error);
    }
}

impl Seen {
    /// Forgets the shadow when `version`, its version, is now the running
    /// one (a promotion, or the same bytes deployed another way).
    fn forget_shadow_of(&mut self, version: &str) {
        if self.shadow.as_ref().is_some_and(|(v, _)| v == version) {
            self.shadow = None;
        }
    }
}

impl Slot {
    fn new(spec: PluginSpec, kind: Kind, version: &str) -> Self {
        let stamp = stamp(&spec.path).ok();
        Slot {
            spec,
            kind,
            seen: Mutex::new(Seen {
                stamp,
                version: version.to_owned(),
                shadow: None,
            }),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

/// Replaces `path` by `bytes` in one rename, so a reader (the watcher, a
/// restart) sees the old file or the new one, never half of one. Returns
/// the new file's stamp.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<(SystemTime, u64)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.deploy-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    stamp(path)
}
