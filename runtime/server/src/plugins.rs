//! The configured plugins as the WASM host loads them: their specs, the
//! set compiled at startup, and the new versions (swaps) that replace them
//! while the pipeline runs.

use std::sync::Arc;

use weir_wasm::{
    DirGrant, Grants, PluginEngine, PluginError, PluginSpec, RouterPlugin, TransformPlugin,
};

use crate::answers::ShadowReport;
use crate::config::{Config, PluginConfig};

/// The spec the WASM host loads a configured plugin by.
pub fn plugin_spec(p: &PluginConfig) -> PluginSpec {
    PluginSpec {
        name: p.display_name(),
        path: p.path.clone(),
        config: p.config_pairs(),
        memory_limit_bytes: p.memory_limit_mib * 1024 * 1024,
        call_timeout: p.timeout,
        fuel: p.fuel,
        grants: Grants {
            env: p
                .sandbox
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            dirs: p
                .sandbox
                .dirs
                .iter()
                .map(|d| DirGrant {
                    host: d.host.clone(),
                    guest: d.guest.clone(),
                    writable: d.writable,
                })
                .collect(),
            network: p.sandbox.network.grant(),
        },
    }
}

/// The configuration's plugins, compiled and initialised.
pub struct LoadedPlugins {
    /// The engine they were compiled by; later versions must be too.
    pub engine: PluginEngine,
    /// The transform chain.
    pub transforms: Vec<TransformPlugin>,
    /// The router.
    pub router: Option<RouterPlugin>,
}

/// Compiles and initialises every plugin of the configuration once, so a
/// bad plugin is reported before anything connects. Compilation is CPU
/// work; it runs off the async runtime.
pub async fn load_plugins(config: &Config) -> Result<LoadedPlugins, PluginError> {
    let transforms: Vec<PluginSpec> = config.transforms.iter().map(plugin_spec).collect();
    let router = config.router.as_ref().map(plugin_spec);
    let cache_dir = config.plugins.cache_dir();
    let cache_max = config.plugins.cache_max_bytes();
    tokio::task::spawn_blocking(move || {
        let engine = match cache_dir {
            Some(dir) => PluginEngine::with_cache(dir, cache_max)?,
            None => PluginEngine::new()?,
        };
        let mut loaded = Vec::new();
        for spec in transforms {
            let plugin = TransformPlugin::load(&engine, spec)?;
            plugin.instantiate()?;
            loaded.push(plugin);
        }
        let router = match router {
            Some(spec) => {
                let plugin = RouterPlugin::load(&engine, spec)?;
                plugin.instantiate()?;
                Some(plugin)
            }
            None => None,
        };
        Ok(LoadedPlugins {
            engine,
            transforms: loaded,
            router,
        })
    })
    .await
    .expect("plugin loading panicked")
}

/// A validated new version of a configured plugin, waiting to take over
/// (or to run as a shadow) at a transaction boundary.
pub enum Swap {
    /// The transform at this position of the chain.
    Transform(usize, TransformPlugin),
    /// The router.
    Router(RouterPlugin),
    /// A shadow beside the transform at this position, replacing any
    /// shadow it has.
    ShadowTransform(usize, TransformPlugin, Arc<ShadowReport>),
    /// A shadow beside the router.
    ShadowRouter(RouterPlugin, Arc<ShadowReport>),
    /// The transform at this position loses its shadow.
    EndShadowTransform(usize),
    /// The router loses its shadow.
    EndShadowRouter,
}
