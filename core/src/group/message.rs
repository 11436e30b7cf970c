//! The messages a group coordinator exchanges. Each mirrors a Kafka request or response, reduced
//! to the fields the protocol decides on; the broker maps member ids to Kafka's strings and
//! encodes the rest.

use std::sync::Arc;

use bytes::Bytes;

use crate::errors::Errors;

/// A member, as the coordinator numbers them (the broker renders it as Kafka's string id).
pub type MemberId = u32;

/// One partition assignment protocol a member supports (`range`, `cooperative-sticky`, ...),
/// with its opaque subscription metadata.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol {
    /// The assignor's name.
    pub name: Arc<str>,
    /// The member's subscription, as its client encoded it.
    pub metadata: Bytes,
}

/// The protocol type and name a SyncGroup v5 says the group runs (each may be left out).
pub type ExpectedProtocol = (Option<Arc<str>>, Option<Arc<str>>);

/// A member named in a LeaveGroup: by its id, or (a static member) by its instance id, or both.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leaving {
    /// Its member id, if the caller knows it.
    pub member_id: Option<MemberId>,
    /// Its `group.instance.id`, for a static member.
    pub group_instance_id: Option<Arc<str>>,
}

impl Leaving {
    /// A dynamic member leaving by its id.
    pub fn member(id: MemberId) -> Self {
        Leaving {
            member_id: Some(id),
            group_instance_id: None,
        }
    }
}

/// A topic partition whose offset a group commits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
}

/// What the coordinator writes to its `__consumer_offsets` partition before it answers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupRecord {
    /// A committed offset.
    Offset {
        /// Where.
        partition: TopicPartition,
        /// The next offset to consume.
        offset: i64,
    },
    /// The group's generation, protocol, leader and every member's assignment.
    Metadata {
        /// The generation.
        generation_id: i32,
        /// The chosen protocol, `None` for an empty group.
        protocol: Option<Arc<str>>,
        /// The leader.
        leader: Option<MemberId>,
        /// Each member's assignment.
        assignments: Vec<(MemberId, Bytes)>,
    },
    /// A committed offset deleted (a tombstone of its key).
    OffsetDeleted {
        /// Where.
        partition: TopicPartition,
    },
    /// The group deleted (a tombstone of its metadata key).
    GroupDeleted,
}

/// A group protocol message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupMsg {
    /// JoinGroup.
    JoinGroup {
        /// Echoed in the answer.
        correlation_id: u32,
        /// `None` on a member's first join.
        member_id: Option<MemberId>,
        /// `group.instance.id` of a static member (KIP-345), which keeps its assignment across
        /// restarts within its session.
        group_instance_id: Option<Arc<str>>,
        /// JoinGroup v4+ (KIP-394): a new member is first given an id and must join again.
        require_known_member_id: bool,
        /// `consumer` for consumers; others (Connect) pass through opaque.
        protocol_type: Arc<str>,
        /// The assignment protocols the member supports, preferred first.
        protocols: Vec<Protocol>,
        /// `session.timeout.ms`.
        session_timeout_ms: u64,
        /// `max.poll.interval.ms` for consumers: how long a rebalance waits for the member.
        rebalance_timeout_ms: u64,
    },
    /// JoinGroupResponse.
    JoinGroupResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` on success.
        error: Errors,
        /// The new generation (-1 on error).
        generation_id: i32,
        /// The protocol chosen for the generation.
        protocol_name: Option<Arc<str>>,
        /// The generation's leader.
        leader: Option<MemberId>,
        /// The member's id (given here on a first join).
        member_id: Option<MemberId>,
        /// For the leader only: every member with its metadata for the chosen protocol.
        members: Vec<(MemberId, Bytes)>,
    },
    /// SyncGroup.
    SyncGroup {
        /// Echoed in the answer.
        correlation_id: u32,
        /// The member.
        member_id: MemberId,
        /// A static member's instance id.
        group_instance_id: Option<Arc<str>>,
        /// Its generation.
        generation_id: i32,
        /// SyncGroup v5+: the protocol type and name the member believes the group has.
        expected_protocol: Option<ExpectedProtocol>,
        /// From the leader: every member's assignment; empty from the others.
        assignments: Vec<(MemberId, Bytes)>,
    },
    /// SyncGroupResponse.
    SyncGroupResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` on success.
        error: Errors,
        /// The member's assignment.
        assignment: Bytes,
    },
    /// Heartbeat.
    Heartbeat {
        /// Echoed in the answer.
        correlation_id: u32,
        /// The member.
        member_id: MemberId,
        /// A static member's instance id.
        group_instance_id: Option<Arc<str>>,
        /// Its generation.
        generation_id: i32,
    },
    /// HeartbeatResponse: `REBALANCE_IN_PROGRESS` tells the member to join again.
    HeartbeatResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` while all is well.
        error: Errors,
    },
    /// LeaveGroup (batched, KIP-345).
    LeaveGroup {
        /// Echoed in the answer.
        correlation_id: u32,
        /// The members leaving.
        members: Vec<Leaving>,
    },
    /// LeaveGroupResponse.
    LeaveGroupResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// Each leaving member's outcome, in the request's order.
        members: Vec<Errors>,
    },
    /// OffsetCommit. A member of a generation commits with both; a consumer that assigns
    /// partitions itself (no group membership) commits with neither, to an empty group.
    OffsetCommit {
        /// Echoed in the answer.
        correlation_id: u32,
        /// The committing member, if any.
        member_id: Option<MemberId>,
        /// A static member's instance id.
        group_instance_id: Option<Arc<str>>,
        /// Its generation, or -1.
        generation_id: i32,
        /// What to commit.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// OffsetCommitResponse: one error for every partition of the request.
    OffsetCommitResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` on success.
        error: Errors,
    },
    /// OffsetFetch.
    OffsetFetch {
        /// Echoed in the answer.
        correlation_id: u32,
        /// The partitions asked for; `None` for every committed one.
        partitions: Option<Vec<TopicPartition>>,
    },
    /// OffsetFetchResponse: -1 for a partition with no committed offset.
    OffsetFetchResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// The offsets.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// DeleteGroups, for one group: only an empty group may be deleted.
    DeleteGroup {
        /// Echoed in the answer.
        correlation_id: u32,
    },
    /// The outcome of a [`GroupMsg::DeleteGroup`].
    DeleteGroupResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` once its offsets and metadata are deleted.
        error: Errors,
    },
    /// OffsetDelete: forget committed offsets of partitions the group no longer consumes.
    OffsetDelete {
        /// Echoed in the answer.
        correlation_id: u32,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// The outcome of an [`GroupMsg::OffsetDelete`]: a group-level error, else one per
    /// partition.
    OffsetDeleteResponse {
        /// The request's correlation id.
        correlation_id: u32,
        /// `None` unless the whole request failed.
        error: Errors,
        /// Each partition's outcome.
        partitions: Vec<(TopicPartition, Errors)>,
    },
    /// From the coordinator's broker: these committed offsets are past
    /// `offsets.retention.minutes`, as [`crate::group::GroupCoordinator::expiry`] found; no
    /// answer.
    ExpireOffsets {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// To the coordinator's broker: append these records to the group's `__consumer_offsets`
    /// partition (with `acks=all`), and answer with [`GroupMsg::AppendResult`].
    Append {
        /// Names the write in its answer.
        write_id: u64,
        /// What to append.
        records: Vec<GroupRecord>,
    },
    /// The outcome of an [`GroupMsg::Append`].
    AppendResult {
        /// The write.
        write_id: u64,
        /// `None` once the records are committed in the partition.
        error: Errors,
    },
}
