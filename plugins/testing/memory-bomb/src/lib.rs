//! A hostile Weir transform for the host's tests.
//!
//! Allocates without bound on the event whose new row has `id` =
//! `trap_on_id`.
//!
//! Configuration: `trap_on_id`, an integer. Every other event is kept.

use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};

/// Allocates without bound on the event whose new row has `id` = `trap_on_id`.
pub struct MemoryBomb {
    trap_on_id: Option<i64>,
}

impl Transform for MemoryBomb {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(MemoryBomb {
            trap_on_id: config.parse("trap_on_id")?,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if self.trap_on_id.is_some() && event.after("id").and_then(Value::as_i64) == self.trap_on_id
        {
            // Touch every page so the memory is really used, and keep every
            // block alive; only the host's memory limit ends this.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
            }
        }
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(MemoryBomb);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn keeps_events_that_do_not_match() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<MemoryBomb>::new(&[("trap_on_id", "7")]).unwrap();
        h.announce(&t);
        let out = h.process(vec![
            testing::insert(&t, &[("id", 6.into())]),
            testing::delete(&t, &[("id", 7.into())]),
            testing::truncate(&t),
        ]);
        assert_eq!(out, vec![wit::Outcome::Keep; 3]);
        assert!(TransformHarness::<MemoryBomb>::new(&[("trap_on_id", "x")]).is_err());
    }
}
