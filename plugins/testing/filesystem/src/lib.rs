//! A test transform that wants the filesystem: its `init` reads the file
//! named by `read`, when one is configured. Using `std::fs` makes the
//! component import `wasi:filesystem`, and the host must refuse to load it
//! unless its configuration grants filesystem access.
//!
//! Configuration: `read`, a path to read in `init` (its contents are
//! logged at debug level with their length). Every event is kept.

use weir_plugin_sdk::{Config, Event, Outcome, Transform, log};

/// Reads a file on init, then keeps every event.
pub struct Filesystem;

impl Transform for Filesystem {
    fn init(config: &Config) -> Result<Self, String> {
        if let Some(path) = config.get("read") {
            let contents =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            log::debug(&format!("read {} bytes from {path}", contents.len()));
        }
        Ok(Filesystem)
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(Filesystem);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::TransformHarness;

    #[test]
    fn reads_the_configured_file() {
        let path = std::env::temp_dir().join(format!("weir-fs-plugin-{}", std::process::id()));
        std::fs::write(&path, "twelve bytes").unwrap();
        let h = TransformHarness::<Filesystem>::new(&[("read", path.to_str().unwrap())]);
        std::fs::remove_file(&path).unwrap();
        let h = h.unwrap();
        assert!(
            h.logs()[0].1.starts_with("read 12 bytes from "),
            "{:?}",
            h.logs()
        );

        let err = TransformHarness::<Filesystem>::new(&[("read", "/nonexistent/weir")])
            .err()
            .unwrap();
        assert!(err.starts_with("cannot read /nonexistent/weir: "), "{err}");
        assert!(TransformHarness::<Filesystem>::new(&[]).is_ok());
    }
}
