//! Writing to Weir's log from a plugin.
//!
//! In a component the lines go to the host, which tags them with the
//! plugin's name. Natively (unit tests) they go to standard error, and the
//! test harness keeps them so a test can assert a warning was written
//! ([`TransformHarness::logs`](crate::testing::TransformHarness::logs)).

pub use crate::bindings::transform::weir::cdc::host::Level;

/// Writes `message` to Weir's log at `level`.
pub fn log(level: Level, message: &str) {
    crate::host::log(level, message);
}

/// Writes `message` at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes `message` at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes `message` at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes `message` at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes `message` at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}
