//! Surety's broker, clients and command-line tools.
//!
//! - [`alloc`]: the global allocator, which keeps hostile array lengths from aborting.
//! - [`config`]: the broker's configuration under Kafka's names.
//! - [`wire`]: the Kafka wire protocol (framing, served versions, codec).
//! - [`broker`]: topics on disk and a handler per API.
//! - [`controller`]: the controller node: the cluster's metadata log and its decisions.
//! - [`network`]: the acceptor and per-connection tasks.
//! - [`server`]: starting and stopping a broker.
//! - [`cli`]: the command-line tools (`topics`, `produce`, `consume`).
//! - [`client`]: a small wire-protocol client the command-line tools use.

#[cfg(unix)]
pub mod alloc;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod consumer;
pub mod controller;
pub mod network;
pub mod producer;
pub mod server;
pub mod trace;
pub mod wire;

/// See [`alloc`]: a hostile array length must cost an error, not the process.
#[cfg(unix)]
#[global_allocator]
static GLOBAL: alloc::LazyHugeAllocator = alloc::LazyHugeAllocator;
