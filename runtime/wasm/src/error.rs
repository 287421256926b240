//! Why a plugin could not be loaded or run.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong loading or calling a plugin. Each message
/// names the plugin (its name from the configuration).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The WebAssembly engine could not be set up (no plugin involved).
    #[error("cannot set up the WebAssembly engine: {message}")]
    Engine {
        /// What failed.
        message: String,
    },
    /// The file is missing, is not a component, is not of the expected world,
    /// or imports something Weir does not offer.
    #[error("plugin `{plugin}`: cannot load {}: {message}", path.display())]
    Load {
        /// The plugin's name.
        plugin: String,
        /// The file it was loaded from.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The plugin's `init` refused its configuration.
    #[error("plugin `{plugin}` refused its configuration: {message}")]
    Init {
        /// The plugin's name.
        plugin: String,
        /// The plugin's own explanation.
        message: String,
    },
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access,
    /// a stack overflow, ...). The instance is poisoned.
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The trap, and what the plugin wrote to stderr during the call.
        message: String,
    },
    /// A call ran past its deadline and was interrupted. The instance is
    /// poisoned.
    #[error("plugin `{plugin}` was stopped after running for more than {after:?} in one call")]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The configured deadline per call.
        after: Duration,
    },
    /// The plugin tried to grow its memory past its limit. The instance is
    /// poisoned.
    #[error("plugin `{plugin}` was stopped for exceeding its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The plugin's name.
        plugin: String,
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// A metered call used up its fuel. The instance is poisoned.
    #[error("plugin `{plugin}` was stopped after using up the fuel of one call")]
    OutOfFuel {
        /// The plugin's name.
        plugin: String,
    },
    /// The plugin answered something the contract does not allow: a wrong
    /// number of outcomes, an unknown table, a row of the wrong length.
    #[error("plugin `{plugin}` broke the plugin contract: {message}")]
    Contract {
        /// The plugin's name.
        plugin: String,
        /// What was wrong, and for which event.
        message: String,
    },
    /// The instance failed earlier and refuses further calls; create a fresh
    /// one.
    #[error(
        "plugin `{plugin}`: this instance is unusable after an earlier failure ({cause}); create a fresh instance"
    )]
    Poisoned {
        /// The plugin's name.
        plugin: String,
        /// The earlier failure.
        cause: String,
    },
}

impl PluginError {
    /// The name of the plugin concerned; `None` only for [`PluginError::Engine`].
    pub fn plugin(&self) -> Option<&str> {
        match self {
            PluginError::Engine { .. } => None,
            PluginError::Load { plugin, .. }
            | PluginError::Init { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::Contract { plugin, .. }
            | PluginError::OutOfFuel { plugin, .. }
            | PluginError::Poisoned { plugin, .. } => Some(plugin),
        }
    }

    /// Whether the instance that returned this error refuses further calls,
    /// so the caller must create a fresh one to go on.
    pub fn poisons_instance(&self) -> bool {
        matches!(
            self,
            PluginError::Trap { .. }
                | PluginError::Timeout { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::OutOfFuel { .. }
                | PluginError::Poisoned { .. }
        )
    }
}
