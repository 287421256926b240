//! A hostile Weir transform for the host's tests.
//!
//! Loops forever on the event whose new row has `id` =
//! `trap_on_id`.
//!
//! Configuration: `trap_on_id`, an integer. Every other event is kept.

use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};

/// Loops forever on the event whose new row has `id` = `trap_on_id`.
pub struct Spin {
    trap_on_id: Option<i64>,
}

impl Transform for Spin {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Spin {
            trap_on_id: config.parse("trap_on_id")?,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if self.trap_on_id.is_some() && event.after("id").and_then(Value::as_i64) == self.trap_on_id
        {
            // Only an epoch deadline ends this call. `black_box` keeps the
            // compiler from reasoning about the loop.
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(Spin);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn keeps_events_that_do_not_match() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<Spin>::new(&[("trap_on_id", "7")]).unwrap();
        h.announce(&t);
        let out = h.process(vec![
            testing::insert(&t, &[("id", 6.into())]),
            testing::delete(&t, &[("id", 7.into())]),
            testing::truncate(&t),
        ]);
        assert_eq!(out, vec![wit::Outcome::Keep; 3]);
        assert!(TransformHarness::<Spin>::new(&[("trap_on_id", "x")]).is_err());
    }
}
