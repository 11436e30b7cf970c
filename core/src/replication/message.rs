//! The messages replication exchanges. Each mirrors a Kafka request or response (named in its
//! doc), reduced to the fields the protocol decides on.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::epoch_cache::EpochEndOffset;
use super::types::{Acks, BrokerId, PartitionState};
use crate::errors::Errors;

/// A replication message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum Msg {
    /// Produce: a client's record batches for the partition.
    Produce {
        /// Echoed in the answer.
        correlation_id: u32,
        /// When to answer.
        acks: Acks,
        /// Record batches as the client encoded them.
        records: Bytes,
    },
    /// ProduceResponse.
    ProduceResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` on success.
        error_code: Errors,
        /// Offset given to the first record, or -1.
        base_offset: i64,
        /// The broker's timestamp for the batch when the topic uses `LogAppendTime`, else -1.
        log_append_time: i64,
    },
    /// Fetch from a follower (`replica_id` ≥ 0 in Kafka's request).
    Fetch {
        /// The fetching follower.
        replica_id: BrokerId,
        /// The leader epoch the follower believes current; fences either side.
        current_leader_epoch: i32,
        /// The follower's log end offset: what it needs next, and what it already holds.
        fetch_offset: i64,
        /// The epoch of the follower's last batch (KIP-320), checked for divergence.
        last_fetched_epoch: Option<i32>,
    },
    /// FetchResponse to a follower.
    FetchResponse {
        /// The leader epoch of the request this answers.
        leader_epoch: i32,
        /// The fetch offset of the request this answers, so a late duplicate is recognised.
        fetch_offset: i64,
        /// Records, divergence, or an error.
        result: FetchResult,
    },
    /// AlterPartition: the leader proposes a new ISR.
    AlterPartition {
        /// The proposing leader.
        broker_id: BrokerId,
        /// Its leader epoch.
        leader_epoch: i32,
        /// The partition epoch the proposal is based on.
        partition_epoch: i32,
        /// The proposed ISR.
        new_isr: BTreeSet<BrokerId>,
    },
    /// AlterPartitionResponse: the state now in force, or why the proposal was refused.
    AlterPartitionResponse {
        /// `None` when `state` is the accepted change.
        error_code: Errors,
        /// The partition epoch the answered proposal was based on, and the ISR it proposed:
        /// which request this answers (Kafka matches a response to its in-flight request). An
        /// answer to an earlier proposal must not settle a later one.
        proposal: (i32, BTreeSet<BrokerId>),
        /// The controller's state after the request.
        state: PartitionState,
    },
    /// LeaderAndIsr (or the KRaft metadata record that replaced it): the controller's decision.
    LeaderAndIsr(PartitionState),
    /// BrokerHeartbeat: liveness, and after a restart a new incarnation that re-registers.
    BrokerHeartbeat {
        /// The broker.
        broker_id: BrokerId,
        /// Bumped on every start.
        incarnation: u32,
    },
}

impl Msg {
    /// The same message with every broker renamed by `rename` (see
    /// [`PartitionState::renamed`]).
    pub fn renamed(&self, rename: &impl Fn(BrokerId) -> BrokerId) -> Self {
        let set = |isr: &BTreeSet<BrokerId>| isr.iter().map(|&b| rename(b)).collect();
        match self {
            Msg::Fetch {
                replica_id,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => Msg::Fetch {
                replica_id: rename(*replica_id),
                current_leader_epoch: *current_leader_epoch,
                fetch_offset: *fetch_offset,
                last_fetched_epoch: *last_fetched_epoch,
            },
            Msg::AlterPartition {
                broker_id,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => Msg::AlterPartition {
                broker_id: rename(*broker_id),
                leader_epoch: *leader_epoch,
                partition_epoch: *partition_epoch,
                new_isr: set(new_isr),
            },
            Msg::AlterPartitionResponse {
                error_code,
                proposal: (epoch, isr),
                state,
            } => Msg::AlterPartitionResponse {
                error_code: *error_code,
                proposal: (*epoch, set(isr)),
                state: state.renamed(rename),
            },
            Msg::LeaderAndIsr(state) => Msg::LeaderAndIsr(state.renamed(rename)),
            Msg::BrokerHeartbeat {
                broker_id,
                incarnation,
            } => Msg::BrokerHeartbeat {
                broker_id: rename(*broker_id),
                incarnation: *incarnation,
            },
            Msg::Produce { .. } | Msg::ProduceResponse { .. } | Msg::FetchResponse { .. } => {
                self.clone()
            }
        }
    }
}

/// The partition part of a FetchResponse.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum FetchResult {
    /// Batches from the fetch offset on (possibly none), and the leader's high watermark.
    Records {
        /// The leader's high watermark.
        high_watermark: i64,
        /// Stored batches, as appended.
        records: Bytes,
    },
    /// The follower's last epoch ended earlier on the leader: truncate, then fetch again.
    Diverging(EpochEndOffset),
    /// Why the leader sent nothing (`FencedLeaderEpoch`, `NotLeaderOrFollower`, ...).
    Error(Errors),
}
