//! The Kafka wire protocol as the broker speaks it: framing, the served versions, and decoding
//! and encoding over the `kafka-protocol` crate.

pub mod codec;
pub mod frame;
pub mod response;
pub mod versions;
