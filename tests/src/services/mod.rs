//! Private instances of the destinations the sink tests write to, each on
//! a free loopback port with its data in a temporary directory, stopped
//! when dropped.

pub mod nats;
