//! Consumer groups as sans-IO actors: the [`GroupCoordinator`] that runs Kafka's classic
//! rebalance protocol for one group, the [`GroupMember`] every consumer runs, and the
//! [`assignor`]s a group's leader runs.
//!
//! The protocol is Kafka's (`GroupCoordinator`, `GroupMetadata`):
//!
//! - A member **joins** (JoinGroup). A new member of a v4+ client is first given an id and told
//!   `MEMBER_ID_REQUIRED` (KIP-394), so a member that retries its first join is not counted
//!   twice. The join moves the group to **PreparingRebalance**, which collects members until
//!   every known member has joined again or the rebalance timeout (the largest member's
//!   `max.poll.interval.ms`) passes; members that did not join are removed. A new group first
//!   waits `group.initial.rebalance.delay.ms`, so a fleet starting together is assigned once.
//! - The next **generation** is formed (**CompletingRebalance**): the generation id grows, a
//!   protocol every member supports is chosen by vote, and the first member to have joined
//!   leads. The leader alone receives the members' subscriptions.
//! - The leader computes the assignment and sends it in its **SyncGroup**; the coordinator stores
//!   it in `__consumer_offsets` and then answers every member's SyncGroup with its share
//!   (**Stable**).
//! - Members **heartbeat**; a heartbeat during a rebalance answers `REBALANCE_IN_PROGRESS`, which
//!   tells the member to join again. A member whose `session.timeout.ms` passes without one is
//!   removed, and so is one that leaves (LeaveGroup); either starts a rebalance.
//! - **Offset commits** are fenced: only a member of the current generation may commit
//!   (`UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`), and not while its generation is being
//!   assigned (`REBALANCE_IN_PROGRESS`); a consumer that assigns itself commits with no
//!   generation, into a group without members. A commit is answered once it is stored.
//!
//! The coordinator does no I/O and reads no clock; its stores go to the broker that holds the
//! group's `__consumer_offsets` partition as [`GroupMsg::Append`] messages, answered with
//! [`GroupMsg::AppendResult`].

pub mod assignor;
mod codec;
pub mod consumer_protocol;
mod coordinator;
mod member;
mod message;
pub mod placement;
pub mod stored;

pub use coordinator::{
    GroupBrokenVariant, GroupConfig, GroupCoordinator, GroupState, GroupTimer, LoadedGroup,
    LoadedMember, MemberMetadata,
};
pub use member::{
    AssignorKind, GroupMember, MemberBrokenVariant, MemberConfig, MemberEvent, MemberPhase,
    MemberTimer,
};
pub use message::{
    ExpectedProtocol, GroupMsg, GroupRecord, Leaving, MemberId, Protocol, TopicPartition,
};

#[cfg(test)]
mod tests;
