//! Bindings generated from `wit/weir-cdc.wit`, the contract the host binds too.
//!
//! `wit/` is inside this crate so a copy of the crate builds on its own; in
//! the repository it is a symlink to the one contract file.
//!
//! Both worlds are generated here so plugins need no `wit-bindgen`
//! dependency of their own; the router world reuses the transform world's
//! `types` and `host` modules, so there is one Rust type per WIT type.

#![allow(missing_docs, unsafe_code, clippy::all)]

/// The `transform` world: `init`, `on-table`, `process`, `commit`.
pub mod transform {
    wit_bindgen::generate!({
        path: "wit",
        world: "transform",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__weir_export_transform_world",
        default_bindings_module: "::weir_plugin_sdk::bindings::transform",
        runtime_path: "::weir_plugin_sdk::__private::wit_bindgen::rt",
    });
}

/// The `router` world: `init`, `on-table`, `route`.
pub mod router {
    wit_bindgen::generate!({
        path: "wit",
        world: "router",
        with: {
            "weir:cdc/types@1.0.0": super::transform::weir::cdc::types,
            "weir:cdc/host@1.0.0": super::transform::weir::cdc::host,
        },
        pub_export_macro: true,
        export_macro_name: "__weir_export_router_world",
        default_bindings_module: "::weir_plugin_sdk::bindings::router",
        runtime_path: "::weir_plugin_sdk::__private::wit_bindgen::rt",
    });
}
