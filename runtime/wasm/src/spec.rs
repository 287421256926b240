//! What to load, and with which limits.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::NetworkGrant;

/// A plugin to load: where its component is, its configuration and its
/// limits.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// The plugin's name in the configuration; every log line and error
    /// about the plugin carries it.
    pub name: String,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// The key/value pairs the plugin reads with the contract's
    /// `host.config`.
    pub config: Vec<(String, String)>,
    /// The most linear memory one instance may use, in bytes. Growing past
    /// it stops the call with [`PluginError::MemoryLimit`](crate::PluginError::MemoryLimit).
    pub memory_limit_bytes: usize,
    /// The longest one call (`init`, `on-table`, `process`, `route`) may
    /// run. Running past it stops the call with
    /// [`PluginError::Timeout`](crate::PluginError::Timeout).
    pub call_timeout: Duration,
    /// Fuel per call, when set: a deterministic bound on the work one call
    /// may do (roughly one unit per WebAssembly instruction), on top of the
    /// wall-clock deadline. Metered plugins run somewhat slower.
    pub fuel: Option<u64>,
    /// What the plugin may reach outside its own memory.
    pub grants: Grants,
}

/// What a plugin may reach outside its own memory: nothing unless granted.
/// A component importing an interface it was not granted (`wasi:filesystem`
/// without `dirs`, `wasi:sockets` without `network`) is refused at load.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables the plugin sees, as (name, value).
    pub env: Vec<(String, String)>,
    /// Host directories the plugin may open.
    pub dirs: Vec<DirGrant>,
    /// Outgoing TCP and UDP connections and name lookups (`wasi:sockets`),
    /// to which addresses.
    pub network: NetworkGrant,
}

/// A host directory a plugin may open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it, such as `/data`.
    pub guest: String,
    /// Whether the plugin may create, change and remove files in it.
    pub writable: bool,
}

/// Environment values may be secrets: only their names are shown.
impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grants")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("dirs", &self.dirs)
            .field("network", &self.network)
            .finish()
    }
}

impl PluginSpec {
    /// The default memory limit: 64 MiB.
    pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 64 << 20;
    /// The default deadline per call: 5 seconds.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

    /// A spec with no configuration and the default limits.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        PluginSpec {
            name: name.into(),
            path: path.into(),
            config: Vec::new(),
            memory_limit_bytes: Self::DEFAULT_MEMORY_LIMIT_BYTES,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            fuel: None,
            grants: Grants::default(),
        }
    }

    /// Adds a configuration pair.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Sets the memory limit.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit_bytes = bytes;
        self
    }

    /// Sets the deadline per call.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Meters each call with this much fuel.
    pub fn with_fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Sets what the plugin may reach.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }
}

/// Configuration values may be secrets (a hashing salt, a token): only
/// their keys are shown.
impl fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("path", &self.path)
            .field(
                "config_keys",
                &self.config.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("call_timeout", &self.call_timeout)
            .field("fuel", &self.fuel)
            .field("grants", &self.grants)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_config_values() {
        let spec = PluginSpec::new("mask", "mask.wasm")
            .with_config("salt", "s3cret")
            .with_grants(Grants {
                env: vec![("TOKEN".into(), "t0ken".into())],
                ..Grants::default()
            });
        let shown = format!("{spec:?}");
        assert!(shown.contains("salt"));
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("TOKEN"));
        assert!(!shown.contains("t0ken"));
    }
}
