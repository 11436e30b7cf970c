//! Partition replication as sans-IO actors: the [`Replica`] every broker runs for a partition,
//! and the [`Controller`] that elects leaders and keeps the in-sync replica set.
//!
//! The protocol is Kafka's:
//!
//! - The leader appends produced batches stamped with its **leader epoch** and keeps, for each
//!   follower, the offset it last fetched from (the follower's log end offset, LEO). The **high
//!   watermark** (HW) is the smallest LEO over the in-sync replicas (ISR); records below it are
//!   committed, and a produce with `acks=all` is answered once the HW passes it.
//! - Followers fetch from the leader with the offset they need next and the epoch of the last
//!   batch they hold. When that epoch ended earlier on the leader, the leader answers with the
//!   **diverging epoch** and its end offset instead of records, and the follower truncates to the
//!   point where the two logs agree (KIP-101, KIP-279, KIP-320, and the fetch-based form of
//!   KIP-595). A follower never truncates to its own HW: that is the bug KIP-101 fixed, kept here
//!   only as a [`BrokenVariant`] so the model checker can show it.
//! - The leader proposes ISR changes to the controller (`AlterPartition`): it drops a follower
//!   that has not caught up within `replica.lag.time.max.ms` and re-admits one that has. For its
//!   HW it counts the **maximal ISR** (the committed ISR plus a pending addition), so a proposal
//!   in flight can never make it commit too early.
//! - The controller elects leaders from the ISR only (unless `unclean.leader.election.enable`),
//!   bumps the leader epoch on every election, and rejects ISR proposals carrying a stale leader
//!   or partition epoch.
//!
//! The actors do no I/O and read no clock: they take a message or a timer and return
//! [`Effect`]s. The model checker (`model/`) and the broker drive the same code.

mod controller;
mod effect;
mod epoch_cache;
mod message;
mod replica;
mod types;

pub use crate::actor::Durability;
pub use controller::{Controller, ControllerConfig, ControllerTimer};
pub use effect::{Effect, Effects};
pub use epoch_cache::{EpochEndOffset, LeaderEpochCache};
pub use message::{FetchResult, Msg};
pub use replica::{
    BrokenVariant, Durable, LeaderState, OffsetSnapshot, Replica, ReplicaConfig, ReplicaTimer, Role,
};
pub use types::{Acks, BrokerId, Node, PartitionState};

#[cfg(test)]
mod tests;
