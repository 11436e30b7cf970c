//! Names shared by the replication actors and their drivers.

use std::collections::BTreeSet;

/// A broker's `node.id`.
pub type BrokerId = u32;

pub use crate::actor::Node;

/// The partition's replication state as the controller decides it, and as `LeaderAndIsr`
/// carries it to brokers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub struct PartitionState {
    /// The leader, or `None` while the partition is offline (no eligible replica).
    pub leader: Option<BrokerId>,
    /// Bumped on every leader election; fences requests to and from older leaders.
    pub leader_epoch: i32,
    /// The in-sync replicas. Only they may become leader (unless unclean election is on).
    pub isr: BTreeSet<BrokerId>,
    /// Bumped on every change of this state, so a stale ISR proposal is rejected.
    pub partition_epoch: i32,
}

impl PartitionState {
    /// The same state with every broker renamed by `rename` (a bijection). Nothing in the
    /// protocol depends on a broker's number, only on which broker is which, so a model
    /// checker may explore a state and its renamings once (symmetry reduction).
    pub fn renamed(&self, rename: &impl Fn(BrokerId) -> BrokerId) -> Self {
        PartitionState {
            leader: self.leader.map(rename),
            leader_epoch: self.leader_epoch,
            isr: self.isr.iter().map(|&b| rename(b)).collect(),
            partition_epoch: self.partition_epoch,
        }
    }
}

impl Node {
    /// The same node with a broker renamed by `rename`.
    pub fn renamed(self, rename: &impl Fn(BrokerId) -> BrokerId) -> Self {
        match self {
            Node::Broker(b) => Node::Broker(rename(b)),
            other => other,
        }
    }
}

/// How many replicas must have a produced batch before the leader answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum Acks {
    /// `acks=0`: no answer at all.
    None,
    /// `acks=1`: answered once the leader has appended.
    Leader,
    /// `acks=all` (`-1`): answered once the high watermark passes the batch.
    All,
}

impl Acks {
    /// Kafka's wire value: 0, 1 or -1.
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}
