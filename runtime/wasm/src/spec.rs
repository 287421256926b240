//! What to load, and with which limits.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A plugin to load: where its component is, its configuration and its
/// limits.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// The plugin's name in the configuration; every log line and error
    /// about the plugin carries it.
    pub name: String,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// The key/value pairs passed to the plugin's `init`.
    pub config: Vec<(String, String)>,
    /// The most linear memory one instance may use, in bytes. Growing past
    /// it stops the call with [`PluginError::MemoryLimit`](crate::PluginError::MemoryLimit).
    pub memory_limit_bytes: usize,
    /// The longest one call (`init`, `on-table`, `process`, `route`) may
    /// run. Running past it stops the call with
    /// [`PluginError::Timeout`](crate::PluginError::Timeout).
    pub call_timeout: Duration,
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
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_config_values() {
        let spec = PluginSpec::new("mask", "mask.wasm").with_config("salt", "s3cret");
        let shown = format!("{spec:?}");
        assert!(shown.contains("salt"));
        assert!(!shown.contains("s3cret"));
    }
}
