//! Runs real plugin components from the `plugins/` workspace through the
//! host: the example plugins on real events, and hostile plugins that trap,
//! loop and hoard memory.
//!
//! The components are built by `scripts/build-plugins` (run automatically
//! once per test run; set `WEIR_PLUGINS_DIR` to use prebuilt ones).

mod common;
mod contract;
mod examples;
mod host;
mod hostile;
