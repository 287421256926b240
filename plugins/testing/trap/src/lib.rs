//! A hostile Weir transform for the host's tests.
//!
//! Traps when it sees the event whose new row has `id` =
//! `trap_on_id` (a panic becomes a trap: wasm32-wasip2 aborts on panic).
//!
//! Configuration: `trap_on_id`, an integer. Every other event is kept.

use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};

/// Traps when it sees the event whose new row has `id` = `trap_on_id`.
pub struct Trap {
    trap_on_id: Option<i64>,
}

impl Transform for Trap {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Trap {
            trap_on_id: config.parse("trap_on_id")?,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if self.trap_on_id.is_some() && event.after("id").and_then(Value::as_i64) == self.trap_on_id
        {
            panic!("trap_on_id {} matched", self.trap_on_id.unwrap_or_default());
        }
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(Trap);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn keeps_events_that_do_not_match() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<Trap>::new(&[("trap_on_id", "7")]).unwrap();
        h.announce(&t);
        let out = h.process(vec![
            testing::insert(&t, &[("id", 6.into())]),
            testing::delete(&t, &[("id", 7.into())]),
            testing::truncate(&t),
        ]);
        assert_eq!(out, vec![wit::Outcome::Keep; 3]);
        assert!(TransformHarness::<Trap>::new(&[("trap_on_id", "x")]).is_err());
    }

    #[test]
    #[should_panic(expected = "trap_on_id 7 matched")]
    fn panics_on_the_matching_event() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<Trap>::new(&[("trap_on_id", "7")]).unwrap();
        h.announce(&t);
        h.process_one(testing::insert(&t, &[("id", 7.into())]));
    }
}
