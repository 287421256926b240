//! Test plugin: appends `@` and a build marker to the text column `v` of
//! every change, so a test can tell which build of a plugin processed
//! which change.
//!
//! The marker is the string [`STAMP`] in the component's data. The
//! hot-swap test makes new versions of the component by overwriting those
//! bytes with another marker of the same length, which keeps the component
//! valid and gives it another hash.

use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};

/// The build marker: `weir-stamp:` and three digits.
pub const STAMP: &str = "weir-stamp:000";

/// Stamps changes.
pub struct Stamp {
    stamp: String,
}

impl Transform for Stamp {
    fn init(_config: &Config) -> Result<Self, String> {
        // Read through a black box so the optimiser keeps the marker as
        // bytes in the data section rather than folding it into code.
        let stamp = std::hint::black_box(STAMP);
        Ok(Stamp {
            stamp: stamp.to_owned(),
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        let stamped = match event.after("v") {
            Some(Value::Text(v)) => format!("{v}@{}", self.stamp),
            _ => return Outcome::Keep,
        };
        match event.set("v", stamped) {
            Ok(()) => Outcome::Keep,
            Err(e) => Outcome::fail(e),
        }
    }
}

weir_plugin_sdk::export_transform!(Stamp);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn stamps_the_text_column() {
        let t = Table::new(1, "public", "t")
            .with_key("id", "int4")
            .with_column("v", "text");
        let mut h = TransformHarness::<Stamp>::new(&[]).unwrap();
        h.announce(&t);
        let out = h.process(vec![
            testing::insert(&t, &[("id", 1.into()), ("v", "x".into())]),
            testing::delete(&t, &[("id", 1.into())]),
        ]);
        let wit::Outcome::Replace(emits) = &out[0] else {
            panic!("{out:?}");
        };
        let wit::Payload::Change(c) = &emits[0].payload else {
            panic!("{emits:?}");
        };
        assert_eq!(
            c.after.as_ref().unwrap()[1],
            wit::Value::Text("x@weir-stamp:000".into())
        );
        assert_eq!(out[1], wit::Outcome::Keep);
    }
}
