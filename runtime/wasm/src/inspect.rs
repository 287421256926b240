//! What a component is, as the host sees it, without running it: the
//! analysis behind `weir plugin inspect`.
//!
//! Every verdict here comes from the checks the host makes when it loads a
//! plugin (`session.rs`), so what `inspect` says and what `weir run` does
//! cannot drift apart.

use std::path::Path;

use wasmtime::component::types::ComponentItem;

use crate::bindings::{router, transform};
use crate::session::{check_contract, check_grants, check_header, check_world};
use crate::spec::{DirGrant, Grants};
use crate::{PluginEngine, PluginError, PluginSpec, RouterPlugin, TransformPlugin};

/// What a component file is and whether this Weir would run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The file's size in bytes.
    pub size: usize,
    /// The first 12 hex digits of the component's SHA-256: the version the
    /// host names the plugin by in its logs and status.
    pub version: String,
    /// Which world of the contract the component implements, judged by its
    /// exports.
    pub world: PluginWorld,
    /// The `weir:cdc` contract version the component was built against
    /// (that of the `weir:cdc` interfaces it imports), if it imports any.
    pub contract: Option<String>,
    /// Why this Weir refuses the component's contract version; `None` when
    /// it accepts it (or the component imports no `weir:cdc` interface).
    pub contract_error: Option<String>,
    /// What the component imports, by name.
    pub imports: Vec<Item>,
    /// What the component exports, by name.
    pub exports: Vec<Item>,
    /// The imports that need a sandbox grant, or that no grant allows.
    pub grants: Vec<GrantNeed>,
    /// Why this Weir would not load the component even with the grants it
    /// needs; `None` when it loads.
    pub load_error: Option<String>,
}

/// A world of the `weir:cdc` contract.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PluginWorld {
    /// Exports `process`: a transform.
    Transform,
    /// Exports `route`: a router.
    Router,
    /// Exports neither entry point.
    Neither,
}

impl PluginWorld {
    /// `transform`, `router` or `neither`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginWorld::Transform => "transform",
            PluginWorld::Router => "router",
            PluginWorld::Neither => "neither",
        }
    }
}

/// One import or export of a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its name, such as `weir:cdc/host@1.0.0` or `process`.
    pub name: String,
    /// What it is: `instance`, `func`, `type`, `resource`, `module`,
    /// `component` or `core func`.
    pub kind: &'static str,
}

/// An import that a plugin may only have with a grant in weir.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantNeed {
    /// The import, such as `wasi:sockets/tcp@0.2.6`.
    pub import: String,
    /// The setting that grants it (`sandbox.network`, `sandbox.dirs`), or
    /// `None` when Weir never offers it (`wasi:http`).
    pub grant: Option<&'static str>,
    /// The host's explanation, as `weir run` would give it.
    pub reason: String,
}

/// Analyses the component in `bytes` (read from `path`, which only names
/// it in errors).
///
/// Fails only when the bytes are not a component at all; a component this
/// Weir would refuse (wrong world, contract version or imports) is
/// described, with the reason in [`Inspection::load_error`].
pub fn inspect(
    engine: &PluginEngine,
    path: &Path,
    bytes: &[u8],
) -> Result<Inspection, PluginError> {
    let load_err = |message: String| PluginError::Load {
        plugin: plugin_name(path),
        path: path.to_owned(),
        message,
    };
    check_header(bytes).map_err(load_err)?;
    let compiled = engine.compile(bytes, false).map_err(load_err)?;
    let runtime = engine.runtime(false)?;
    let component_type = compiled.component.component_type();
    let imports: Vec<Item> = component_type
        .imports(&runtime.engine)
        .map(|(name, item)| Item {
            name: name.to_owned(),
            kind: kind(&item.ty),
        })
        .collect();
    let exports: Vec<Item> = component_type
        .exports(&runtime.engine)
        .map(|(name, item)| Item {
            name: name.to_owned(),
            kind: kind(&item.ty),
        })
        .collect();
    let import_names: Vec<String> = imports.iter().map(|i| i.name.clone()).collect();

    let contract_error = check_contract(&import_names).err();
    let grants: Vec<GrantNeed> = import_names
        .iter()
        .filter_map(|name| grant_needed(name))
        .collect();

    let world = if check_world::<transform::Transform>(&runtime.engine, &compiled.component).is_ok()
    {
        PluginWorld::Transform
    } else if check_world::<router::Router>(&runtime.engine, &compiled.component).is_ok() {
        PluginWorld::Router
    } else {
        PluginWorld::Neither
    };

    // The host's own load, with every grant the component asks for: what
    // is left is what no configuration can fix.
    let spec = PluginSpec::new(plugin_name(path), path).with_grants(Grants {
        network: if grants.iter().any(|g| g.grant == Some(NETWORK)) {
            crate::NetworkGrant::Public
        } else {
            crate::NetworkGrant::None
        },
        dirs: if grants.iter().any(|g| g.grant == Some(DIRS)) {
            vec![probe_dir()]
        } else {
            Vec::new()
        },
        ..Grants::default()
    });
    let load_error = match world {
        PluginWorld::Transform => TransformPlugin::load_bytes(engine, spec, bytes)
            .err()
            .map(load_message),
        PluginWorld::Router => RouterPlugin::load_bytes(engine, spec, bytes)
            .err()
            .map(load_message),
        PluginWorld::Neither => Some(format!(
            "it exports neither `process` (a transform) nor `route` (a router), so it is no \
             weir:cdc plugin (it exports: {})",
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )),
    };

    Ok(Inspection {
        size: bytes.len(),
        version: hex::encode(&compiled.digest[..6]),
        world,
        contract: contract_version(&import_names),
        contract_error,
        imports,
        exports,
        grants,
        load_error,
    })
}

const NETWORK: &str = "sandbox.network";
const DIRS: &str = "sandbox.dirs";

/// Which grant `import` needs, found by asking the host's own check with
/// each grant in turn, so that the rules live in one place.
fn grant_needed(import: &str) -> Option<GrantNeed> {
    let one = [import.to_owned()];
    let reason = check_grants(&one, &Grants::default()).err()?;
    let with_network = Grants {
        network: crate::NetworkGrant::Public,
        ..Grants::default()
    };
    let with_dirs = Grants {
        dirs: vec![probe_dir()],
        ..Grants::default()
    };
    let grant = if check_grants(&one, &with_network).is_ok() {
        Some(NETWORK)
    } else if check_grants(&one, &with_dirs).is_ok() {
        Some(DIRS)
    } else {
        None
    };
    // The host phrases it for a list: "it imports `x` (why)"; keep the why.
    let reason = reason
        .split_once(" (")
        .map(|(_, why)| why.strip_suffix(')').unwrap_or(why).to_owned())
        .unwrap_or(reason);
    Some(GrantNeed {
        import: import.to_owned(),
        grant,
        reason,
    })
}

/// A directory grant that only stands for "some directory": checks look at
/// whether directories are granted, never at which.
fn probe_dir() -> DirGrant {
    DirGrant {
        host: "/".into(),
        guest: "/".into(),
        writable: false,
    }
}

/// The newest `weir:cdc` version among the imports, for display even when
/// the host refuses it (its check then names it only inside a sentence).
fn contract_version(imports: &[String]) -> Option<String> {
    imports
        .iter()
        .filter_map(|name| name.strip_prefix("weir:cdc/")?.split_once('@'))
        .map(|(_, version)| version)
        .max_by(
            |a, b| match (semver::Version::parse(a), semver::Version::parse(b)) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.cmp(b),
            },
        )
        .map(str::to_owned)
}

/// The host's message without the plugin name and path the CLI already shows.
fn load_message(error: PluginError) -> String {
    match error {
        PluginError::Load { message, .. } => message,
        other => other.to_string(),
    }
}

/// The name errors give the plugin: its file name without `.wasm`.
fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_named_by_the_hosts_own_rules() {
        let network = grant_needed("wasi:sockets/tcp@0.2.6").unwrap();
        assert_eq!(network.grant, Some(NETWORK));
        assert!(
            network.reason.contains("network access"),
            "{}",
            network.reason
        );
        let dirs = grant_needed("wasi:filesystem/preopens@0.2.6").unwrap();
        assert_eq!(dirs.grant, Some(DIRS));
        let http = grant_needed("wasi:http/outgoing-handler@0.2.6").unwrap();
        assert_eq!(http.grant, None);
        assert!(http.reason.contains("does not offer"), "{}", http.reason);
        assert_eq!(grant_needed("wasi:cli/environment@0.2.6"), None);
        assert_eq!(grant_needed("weir:cdc/host@1.0.0"), None);
    }

    #[test]
    fn the_contract_version_is_the_newest_imported() {
        let imports = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            contract_version(&imports(&[
                "wasi:io/streams@0.2.6",
                "weir:cdc/types@1.0.0",
                "weir:cdc/host@1.10.0",
                "weir:cdc/x@1.9.0",
            ])),
            Some("1.10.0".into())
        );
        assert_eq!(contract_version(&imports(&["wasi:io/streams@0.2.6"])), None);
    }

    #[test]
    fn files_that_are_not_components_are_refused_in_words() {
        let engine = PluginEngine::new().unwrap();
        let err = inspect(&engine, Path::new("x/notes.txt"), b"hello").unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin `notes`: cannot load x/notes.txt: not a WebAssembly file"
        );
        let core = inspect(&engine, Path::new("m.wasm"), b"\0asm\x01\0\0\0").unwrap_err();
        assert!(
            core.to_string().contains("core WebAssembly module"),
            "{core}"
        );
    }

    #[test]
    fn an_empty_component_is_described() {
        let engine = PluginEngine::new().unwrap();
        let empty = b"\0asm\x0d\0\x01\0";
        let found = inspect(&engine, Path::new("empty.wasm"), empty).unwrap();
        assert_eq!(found.size, empty.len());
        assert_eq!(found.version.len(), 12);
        assert_eq!(found.world, PluginWorld::Neither);
        assert_eq!(found.contract, None);
        assert_eq!(found.contract_error, None);
        assert!(found.imports.is_empty() && found.exports.is_empty());
        let why = found.load_error.unwrap();
        assert!(
            why.contains("neither `process` (a transform) nor `route`"),
            "{why}"
        );
        assert!(why.contains("exports: nothing"), "{why}");
    }
}
