//! A test transform that wants the network: its `init` opens a TCP
//! connection to the `connect` address when one is configured. Using
//! `std::net` makes the component import `wasi:sockets`, and the host must
//! refuse to load it at all.

use std::net::TcpStream;

use weir_plugin_sdk::{Config, Event, Outcome, Transform};

/// Connects somewhere on init, then keeps every event.
pub struct Network {
    _connection: Option<TcpStream>,
}

impl Transform for Network {
    fn init(config: &Config) -> Result<Self, String> {
        let connection = match config.get("connect") {
            Some(address) => Some(TcpStream::connect(address).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Network {
            _connection: connection,
        })
    }

    fn process(&mut self, _event: &mut Event<'_>) -> Outcome {
        Outcome::Keep
    }
}

weir_plugin_sdk::export_transform!(Network);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::TransformHarness;

    #[test]
    fn without_an_address_it_connects_nowhere() {
        assert!(TransformHarness::<Network>::new(&[]).is_ok());
    }
}
