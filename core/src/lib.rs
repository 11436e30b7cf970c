//! Surety's verified core.
//!
//! Everything here is deterministic and free of network I/O so that the same code can be driven by
//! the Stateright model checker and by the production broker. Storage is the one place this crate
//! touches the operating system: [`log::SegmentLog`] keeps a partition on disk, and
//! [`log::MemoryLog`] keeps the same contract in memory for the models.
//!
//! - [`record`]: Kafka record batches (message format v2), parsed and built byte for byte as Kafka
//!   writes them, validated by CRC-32C, and re-offset in place without re-encoding.
//! - [`fetch`]: how a consumer's fetch is planned (KIP-74, `max_bytes`, isolation level) and when
//!   it is answered (`min_bytes`, `max_wait_ms`).
//! - [`group`]: consumer groups — the coordinator of Kafka's classic rebalance protocol as a
//!   sans-IO actor (joins, generations, assignment, heartbeats, fenced offset commits).
//! - [`log`]: the partition log, a directory of segments with memory-mapped sparse offset and time
//!   indexes, crash recovery, flush policy and retention.
//! - [`partitioner`]: Kafka's murmur2 key partitioner, number for number.
//! - [`producer`]: the producer's core: the `buffer.memory` budget ([`producer::BufferPool`]),
//!   checked with loom under `--cfg loom`.
//! - [`producer_state`]: idempotent producers as a partition leader tracks them — which batches
//!   each producer id has written, so retries are not appended twice and gaps are refused.
//! - [`replication`]: partition replication as sans-IO actors — the replica every broker runs
//!   (leader or follower, high watermark, leader epochs, ISR proposals) and the controller that
//!   elects leaders — which the model checker in `model/` explores and the broker runs.
//! - [`cluster`]: a KRaft-style cluster — the metadata log's records, the image every broker
//!   reads from them, and the cluster controller (broker registration and fencing, topic
//!   creation, producer id blocks) that writes them, running replication's controller per
//!   partition.
//! - `trace` (feature `trace`): the record of a running node's actor steps, which the model
//!   replays.
//! - [`actor`]: the one shape of every actor: a message or timer in, [`actor::Effect`]s out.
//! - [`errors`]: Kafka's error codes under Kafka's names, one table for the broker, the clients
//!   and the actors.

pub mod actor;
pub mod cluster;
pub mod errors;
pub mod fetch;
pub mod group;
pub mod log;
pub mod partitioner;
pub mod producer;
pub mod producer_state;
pub mod record;
pub mod replication;
mod sync;
#[cfg(feature = "trace")]
pub mod trace;
