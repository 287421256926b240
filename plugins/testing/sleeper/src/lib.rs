//! A hostile Weir transform for the host's tests.
//!
//! Blocks inside the host on the event whose new row has `id` =
//! `trap_on_id`, running no WebAssembly code while it waits, so the epoch
//! deadline that stops a looping plugin never gets to interrupt it.
//!
//! Configuration: `trap_on_id`, an integer; `block_on`, what to wait for:
//! `sleep` (the default: `std::thread::sleep` for an hour, a WASI clock
//! subscription and a poll) or `stdin` (read standard input to its end,
//! then keep the event). Every other event is kept.

use std::io::Read;
use std::time::Duration;

use weir_plugin_sdk::{Config, Event, Outcome, Transform, Value};

/// What the plugin waits for on the chosen event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockOn {
    Sleep,
    Stdin,
}

/// Waits on the event whose new row has `id` = `trap_on_id`.
pub struct Sleeper {
    trap_on_id: Option<i64>,
    block_on: BlockOn,
}

impl Transform for Sleeper {
    fn init(config: &Config) -> Result<Self, String> {
        let block_on = match config.get("block_on") {
            None | Some("sleep") => BlockOn::Sleep,
            Some("stdin") => BlockOn::Stdin,
            Some(other) => {
                return Err(format!(
                    "block_on: {other:?} is neither \"sleep\" nor \"stdin\""
                ));
            }
        };
        Ok(Sleeper {
            trap_on_id: config.parse("trap_on_id")?,
            block_on,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        if self.trap_on_id.is_none() || event.after("id").and_then(Value::as_i64) != self.trap_on_id
        {
            return Outcome::Keep;
        }
        match self.block_on {
            BlockOn::Sleep => {
                std::thread::sleep(Duration::from_secs(3600));
                Outcome::Keep
            }
            BlockOn::Stdin => {
                let mut input = Vec::new();
                match std::io::stdin().read_to_end(&mut input) {
                    Ok(_) => Outcome::Keep,
                    Err(e) => Outcome::fail(format!("reading stdin: {e}")),
                }
            }
        }
    }
}

weir_plugin_sdk::export_transform!(Sleeper);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, TransformHarness};
    use weir_plugin_sdk::{Table, wit};

    #[test]
    fn keeps_events_that_do_not_match() {
        let t = Table::new(1, "public", "t").with_key("id", "int8");
        let mut h = TransformHarness::<Sleeper>::new(&[("trap_on_id", "7")]).unwrap();
        h.announce(&t);
        let out = h.process(vec![
            testing::insert(&t, &[("id", 6.into())]),
            testing::delete(&t, &[("id", 7.into())]),
        ]);
        assert_eq!(out, vec![wit::Outcome::Keep; 2]);
        assert!(TransformHarness::<Sleeper>::new(&[("block_on", "nap")]).is_err());
    }
}
