//! The smallest Weir transform: keeps every event as it is.
//!
//! Useful as a template and to measure the cost of the plugin boundary
//! itself. It takes no configuration.

use weir_plugin_sdk::{Config, Event, Outcome, Transform};

/// Keeps every event.
pub struct Passthrough;

impl Transform for Passthrough {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Passthrough)
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(Passthrough);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn keeps_everything() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<Passthrough>::new(&[]).unwrap();
        h.announce(&t);
        let out = h.process(vec![
            testing::insert(&t, &[("id", 1.into())]),
            testing::delete(&t, &[("id", 1.into())]),
            testing::truncate(&t),
            testing::message("m", b"hi"),
        ]);
        assert_eq!(out, vec![wit::Outcome::Keep; 4]);
    }
}
