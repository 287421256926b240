//! Private instances of the destination servers the sink tests write to,
//! each on a free loopback port with its data in a temp dir.

pub mod sphinx;
