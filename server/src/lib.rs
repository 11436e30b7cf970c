//! The `surety` broker, clients and command-line tools.
//!
//! This crate will hold everything that touches the network: the Kafka wire protocol (through the
//! `kafka-protocol` crate), the tokio network layer, the broker's request handlers that drive
//! `surety-core`'s actors over the on-disk log, the Rust producer and consumer, and the `surety`
//! binary (`serve`, `topics`, `produce`, `consume`, `groups`, `perf`). Protocol decisions are not
//! made here; they are made in `surety-core`, and this crate carries their messages.
