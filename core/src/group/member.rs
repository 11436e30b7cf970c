//! The member side of the classic rebalance protocol, as a sans-IO actor: what a consumer does
//! to join its group, follow its rebalances and keep its session, in Kafka's order.
//!
//! - **Revoke before rejoining, commit before revoking.** When the group rebalances (a heartbeat
//!   says `REBALANCE_IN_PROGRESS`), the member asks its driver to revoke what it owns
//!   ([`MemberEvent::Revoke`]): the application's listener runs and may commit, and only when
//!   the driver reports back ([`GroupMember::on_revoked`]) does the member send its JoinGroup.
//!   So no partition is ever processed by a member that has rejoined.
//! - **Fenced means lost.** An answer saying the member or its generation is gone
//!   (`UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`) means its partitions were already given away:
//!   they are reported lost ([`MemberEvent::Lost`], Kafka's `onPartitionsLost`), never
//!   committed, and the member joins again.
//! - **The leader assigns.** The member the coordinator names leader runs the chosen assignor
//!   over every member's subscription and sends the plan in its SyncGroup.
//! - **Cooperative members keep what they own** (KIP-429). A member whose assignors are all
//!   cooperative (`cooperative-sticky`) rejoins at once on a rebalance, telling the leader what
//!   it owns, and goes on processing it. The leader's plan never hands an owned partition
//!   straight to another member; the owner, seeing it gone from its new assignment, revokes
//!   just that and joins again, and the next rebalance gives it to its new owner. One assignor
//!   that is not cooperative makes the member eager, as Kafka resolves
//!   `partition.assignment.strategy` (the upgrade path from `range` lists both).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::assignor;
use super::consumer_protocol::{Assignment, Subscription};
use super::message::{GroupMsg, Leaving, MemberId, Protocol, TopicPartition};
use crate::actor::{Effect, Node};
use crate::errors::Errors;

/// Which assignor a consumer offers (`partition.assignment.strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AssignorKind {
    /// `range`.
    Range,
    /// `roundrobin`.
    RoundRobin,
    /// `cooperative-sticky`: balanced, moving as little as it can, incrementally (KIP-429).
    CooperativeSticky,
}

impl AssignorKind {
    /// Kafka's protocol name.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Range => "range",
            AssignorKind::RoundRobin => "roundrobin",
            AssignorKind::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor of a protocol name; Java's class names name the same ones.
    pub fn from_name(name: &str) -> Option<Self> {
        let short = name.rsplit('.').next().unwrap_or(name);
        [
            (AssignorKind::Range, "RangeAssignor"),
            (AssignorKind::RoundRobin, "RoundRobinAssignor"),
            (AssignorKind::CooperativeSticky, "CooperativeStickyAssignor"),
        ]
        .into_iter()
        .find(|(a, class)| a.name() == name || *class == short)
        .map(|(a, _)| a)
    }

    /// Whether it supports the cooperative protocol.
    pub fn cooperative(self) -> bool {
        self == AssignorKind::CooperativeSticky
    }
}

/// A deliberately broken member, for the model checker to catch. `None` in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberBrokenVariant {
    /// Rejoin at once on a rebalance, keeping its partitions until the new assignment arrives,
    /// instead of revoking them first.
    NoRevokeBeforeRejoin,
    /// As leader, leave the topic's last partition out of the plan.
    AssignorDropsLastPartition,
    /// As a cooperative leader, hand a partition straight to its new owner instead of first
    /// to nobody.
    CooperativeTransfersOwned,
}

/// A consumer's group settings; the names are Kafka's consumer configs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberConfig {
    /// The group's coordinator.
    pub coordinator: Node,
    /// The subscribed topics.
    pub topics: Vec<Arc<str>>,
    /// `partition.assignment.strategy`, preferred first.
    pub assignors: Vec<AssignorKind>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `max.poll.interval.ms`.
    pub rebalance_timeout_ms: u64,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `retry.backoff.ms`: the wait before joining again after a refused join.
    pub retry_backoff_ms: u64,
    /// Whether this client speaks JoinGroup v4+ (KIP-394).
    pub require_known_member_id: bool,
    /// `group.instance.id`: a static member (KIP-345), which keeps its partitions across a
    /// restart within its session.
    pub group_instance_id: Option<Arc<str>>,
    /// `None` in every real consumer.
    pub broken: Option<MemberBrokenVariant>,
}

impl MemberConfig {
    /// Kafka's defaults for a consumer of `topics`.
    pub fn new(coordinator: Node, topics: Vec<Arc<str>>) -> Self {
        MemberConfig {
            coordinator,
            topics,
            assignors: vec![AssignorKind::Range],
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 300_000,
            heartbeat_interval_ms: 3_000,
            retry_backoff_ms: 100,
            require_known_member_id: true,
            group_instance_id: None,
            broken: None,
        }
    }
}

/// Timers a member sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberTimer {
    /// Time to heartbeat.
    Heartbeat,
    /// Time to try joining again.
    Rejoin,
}

/// What the member asks of the application, through its driver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MemberEvent {
    /// Stop processing these, commit what was processed, then call
    /// [`GroupMember::on_revoked`] (Kafka's `onPartitionsRevoked`). Eagerly, all it owns; a
    /// cooperative member, only what its new assignment takes away.
    Revoke(Vec<TopicPartition>),
    /// These were given away while the member was fenced: stop, and do not commit
    /// (`onPartitionsLost`).
    Lost(Vec<TopicPartition>),
    /// Partitions added by the new generation (`onPartitionsAssigned`): eagerly its whole
    /// assignment, cooperatively only what it did not already own.
    Assigned(Vec<TopicPartition>),
    /// Another consumer with this one's `group.instance.id` took its place
    /// (`FENCED_INSTANCE_ID`): it has left the group for good, and the application must stop
    /// (Kafka's consumer throws `FencedInstanceIdException`).
    Fenced,
}

/// Where the member is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberPhase {
    /// Not in the group (new, refused, or left).
    Unjoined,
    /// Waiting for the application to finish revoking before it joins.
    Revoking,
    /// JoinGroup sent.
    Joining,
    /// SyncGroup sent.
    Syncing,
    /// Owns its assignment.
    Stable,
    /// Left the group for good.
    Left,
}

type Effects = Vec<Effect<MemberTimer, GroupMsg>>;

/// A consumer's membership in its group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupMember {
    config: Arc<MemberConfig>,
    member_id: Option<MemberId>,
    generation_id: i32,
    phase: MemberPhase,
    owned: Vec<TopicPartition>,
    /// Partitions per subscribed topic, as the driver last learned from Metadata.
    partitions_per_topic: BTreeMap<Arc<str>, i32>,
    /// The join or sync in flight, by correlation id, and what it carried (resent as is after
    /// a lost connection).
    in_flight: Option<(u32, GroupMsg)>,
    heartbeat_in_flight: Option<u32>,
    next_correlation: u32,
    events: Vec<MemberEvent>,
}

impl GroupMember {
    /// A member that has not joined yet; [`GroupMember::start`] joins.
    pub fn new(config: Arc<MemberConfig>) -> Self {
        GroupMember {
            config,
            member_id: None,
            generation_id: -1,
            phase: MemberPhase::Unjoined,
            owned: Vec::new(),
            partitions_per_topic: BTreeMap::new(),
            in_flight: None,
            heartbeat_in_flight: None,
            next_correlation: 0,
            events: Vec::new(),
        }
    }

    /// Joins the group.
    pub fn start(&mut self) -> Effects {
        let mut out = Vec::new();
        if self.phase == MemberPhase::Unjoined {
            self.send_join(&mut out);
        }
        out
    }

    /// The partition counts of the subscribed topics, from Metadata (the leader assigns with
    /// them).
    pub fn set_partition_counts(&mut self, counts: BTreeMap<Arc<str>, i32>) {
        self.partitions_per_topic = counts;
    }

    /// The next thing the application must do, if any.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// Whether something waits for the application.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Its `group.instance.id`, if it is a static member.
    pub fn group_instance_id(&self) -> Option<&Arc<str>> {
        self.config.group_instance_id.as_ref()
    }

    /// The topics it subscribes to.
    pub fn subscribed_topics(&self) -> &[Arc<str>] {
        &self.config.topics
    }

    /// The member's id, once given.
    pub fn member_id(&self) -> Option<MemberId> {
        self.member_id
    }

    /// The generation it belongs to (-1 before its first).
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// Whether it follows the cooperative protocol: every assignor it offers supports it.
    pub fn cooperative(&self) -> bool {
        self.config.assignors.iter().all(|a| a.cooperative())
    }

    /// Where it is in the protocol.
    pub fn phase(&self) -> MemberPhase {
        self.phase
    }

    /// The partitions it owns now.
    pub fn owned(&self) -> &[TopicPartition] {
        &self.owned
    }

    /// Whether a commit now carries a generation the coordinator may accept: a member that
    /// owns its assignment, or is revoking it (Kafka's commit before revoking: its generation
    /// is still the group's until it joins again), commits with its member id and generation.
    pub fn commit_identity(&self) -> Option<(MemberId, i32)> {
        match (self.phase, self.member_id) {
            (MemberPhase::Stable | MemberPhase::Revoking, Some(id)) => {
                Some((id, self.generation_id))
            }
            _ => None,
        }
    }

    /// The application finished revoking (and committing): the member may join again.
    pub fn on_revoked(&mut self) -> Effects {
        let mut out = Vec::new();
        if self.phase == MemberPhase::Revoking {
            self.send_join(&mut out);
        }
        out
    }

    /// Leaves the group (on close, or when `max.poll.interval.ms` passed without a poll). The
    /// driver revokes first, as for a rebalance.
    pub fn leave(&mut self) -> Effects {
        let mut out = Vec::new();
        if let Some(id) = self.member_id
            && self.phase != MemberPhase::Left
        {
            self.next_correlation += 1;
            out.push(Effect::Send {
                to: self.config.coordinator,
                msg: GroupMsg::LeaveGroup {
                    correlation_id: self.next_correlation,
                    members: vec![Leaving {
                        member_id: Some(id),
                        group_instance_id: self.config.group_instance_id.clone(),
                    }],
                },
            });
        }
        self.owned.clear();
        self.phase = MemberPhase::Left;
        self.in_flight = None;
        out.push(Effect::CancelTimer(MemberTimer::Heartbeat));
        out.push(Effect::CancelTimer(MemberTimer::Rejoin));
        out
    }

    /// Handles an answer from the coordinator.
    pub fn on_message(&mut self, msg: GroupMsg) -> Effects {
        let mut out = Vec::new();
        match msg {
            GroupMsg::JoinGroupResponse { correlation_id, .. }
                if self.answers_in_flight(correlation_id) =>
            {
                self.in_flight = None;
                self.on_join_response(msg, &mut out)
            }
            GroupMsg::SyncGroupResponse {
                correlation_id,
                error,
                assignment,
            } if self.answers_in_flight(correlation_id) => {
                self.in_flight = None;
                self.on_sync_response(error, assignment, &mut out)
            }
            GroupMsg::HeartbeatResponse {
                correlation_id,
                error,
            } if self.heartbeat_in_flight == Some(correlation_id) => {
                self.heartbeat_in_flight = None;
                self.on_heartbeat_response(error, &mut out)
            }
            _ => {}
        }
        out
    }

    /// Handles a timer.
    pub fn on_timer(&mut self, timer: MemberTimer) -> Effects {
        let mut out = Vec::new();
        match timer {
            MemberTimer::Heartbeat => {
                let joined = matches!(self.phase, MemberPhase::Syncing | MemberPhase::Stable);
                if let (true, Some(member_id), None) =
                    (joined, self.member_id, self.heartbeat_in_flight)
                {
                    self.next_correlation += 1;
                    self.heartbeat_in_flight = Some(self.next_correlation);
                    out.push(Effect::Send {
                        to: self.config.coordinator,
                        msg: GroupMsg::Heartbeat {
                            correlation_id: self.next_correlation,
                            member_id,
                            group_instance_id: self.config.group_instance_id.clone(),
                            generation_id: self.generation_id,
                        },
                    });
                }
                if joined {
                    out.push(Effect::SetTimer {
                        timer: MemberTimer::Heartbeat,
                        after_ms: self.config.heartbeat_interval_ms,
                    });
                }
            }
            MemberTimer::Rejoin if self.phase == MemberPhase::Unjoined => self.send_join(&mut out),
            MemberTimer::Rejoin => {}
        }
        out
    }

    /// The connection to the coordinator broke: what was in flight on it is resent.
    pub fn on_disconnect(&mut self) -> Effects {
        let mut out = Vec::new();
        self.heartbeat_in_flight = None;
        if let Some((_, msg)) = &self.in_flight {
            out.push(Effect::Send {
                to: self.config.coordinator,
                msg: msg.clone(),
            });
        }
        out
    }

    /// Another incarnation holds its `group.instance.id`: what it owns is lost, and it stops.
    fn fenced(&mut self, out: &mut Effects) {
        let owned = std::mem::take(&mut self.owned);
        if !owned.is_empty() {
            self.events.push(MemberEvent::Lost(owned));
        }
        self.events.push(MemberEvent::Fenced);
        self.phase = MemberPhase::Left;
        self.in_flight = None;
        self.heartbeat_in_flight = None;
        out.push(Effect::CancelTimer(MemberTimer::Heartbeat));
        out.push(Effect::CancelTimer(MemberTimer::Rejoin));
    }

    /// The coordinator no longer knows this member: it joins again as a new one.
    fn forget_membership(&mut self) {
        self.member_id = None;
        self.generation_id = -1;
    }

    fn answers_in_flight(&self, correlation_id: u32) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|(c, _)| *c == correlation_id)
    }

    fn protocols(&self) -> Vec<Protocol> {
        let subscription = Subscription {
            topics: self.config.topics.clone(),
            ..Subscription::default()
        };
        let metadata = if self.cooperative() {
            Subscription {
                owned_partitions: self.owned.clone(),
                generation_id: self.generation_id,
                ..subscription
            }
            .encode_cooperative()
        } else {
            subscription.encode()
        };
        self.config
            .assignors
            .iter()
            .map(|a| Protocol {
                name: Arc::from(a.name()),
                metadata: metadata.clone(),
            })
            .collect()
    }

    fn send_join(&mut self, out: &mut Effects) {
        self.next_correlation += 1;
        let msg = GroupMsg::JoinGroup {
            correlation_id: self.next_correlation,
            member_id: self.member_id,
            group_instance_id: self.config.group_instance_id.clone(),
            require_known_member_id: self.config.require_known_member_id,
            protocol_type: Arc::from("consumer"),
            protocols: self.protocols(),
            session_timeout_ms: self.config.session_timeout_ms,
            rebalance_timeout_ms: self.config.rebalance_timeout_ms,
        };
        self.phase = MemberPhase::Joining;
        self.in_flight = Some((self.next_correlation, msg.clone()));
        out.push(Effect::Send {
            to: self.config.coordinator,
            msg,
        });
    }

    /// Gives up what it owns and joins again: through the application's revocation if the
    /// partitions are still its own, at once if they were already lost.
    fn rejoin(&mut self, lost: bool, out: &mut Effects) {
        out.push(Effect::CancelTimer(MemberTimer::Heartbeat));
        self.heartbeat_in_flight = None;
        if !lost
            && (self.cooperative()
                || self.config.broken == Some(MemberBrokenVariant::NoRevokeBeforeRejoin))
        {
            return self.send_join(out);
        }
        let owned = std::mem::take(&mut self.owned);
        if owned.is_empty() {
            self.send_join(out);
        } else if lost {
            self.events.push(MemberEvent::Lost(owned));
            self.send_join(out);
        } else {
            self.events.push(MemberEvent::Revoke(owned));
            self.phase = MemberPhase::Revoking;
        }
    }

    fn on_join_response(&mut self, answer: GroupMsg, out: &mut Effects) {
        let GroupMsg::JoinGroupResponse {
            error,
            generation_id,
            protocol_name,
            leader,
            member_id,
            members,
            ..
        } = answer
        else {
            return;
        };
        match error {
            Errors::None => {}
            Errors::MemberIdRequired => {
                self.member_id = member_id;
                return self.send_join(out);
            }
            Errors::FencedInstanceId => return self.fenced(out),
            Errors::UnknownMemberId | Errors::IllegalGeneration => {
                // A cooperative member rejoined owning partitions, which are now lost.
                self.forget_membership();
                let owned = std::mem::take(&mut self.owned);
                if !owned.is_empty() {
                    self.events.push(MemberEvent::Lost(owned));
                }
                return self.send_join(out);
            }
            _ => {
                self.phase = MemberPhase::Unjoined;
                out.push(Effect::SetTimer {
                    timer: MemberTimer::Rejoin,
                    after_ms: self.config.retry_backoff_ms,
                });
                return;
            }
        }
        self.member_id = member_id;
        self.generation_id = generation_id;
        let assignments = if leader.is_some() && leader == member_id {
            self.assign(protocol_name.as_deref(), &members)
        } else {
            Vec::new()
        };
        self.next_correlation += 1;
        let msg = GroupMsg::SyncGroup {
            correlation_id: self.next_correlation,
            member_id: member_id.unwrap_or_default(),
            group_instance_id: self.config.group_instance_id.clone(),
            generation_id,
            expected_protocol: None,
            assignments,
        };
        self.phase = MemberPhase::Syncing;
        self.in_flight = Some((self.next_correlation, msg.clone()));
        out.push(Effect::Send {
            to: self.config.coordinator,
            msg,
        });
        out.push(Effect::SetTimer {
            timer: MemberTimer::Heartbeat,
            after_ms: self.config.heartbeat_interval_ms,
        });
    }

    /// The leader's plan: the chosen assignor over every member's subscription.
    fn assign(
        &self,
        protocol: Option<&str>,
        members: &[(MemberId, Bytes)],
    ) -> Vec<(MemberId, Bytes)> {
        // A member whose subscription cannot be read subscribes to nothing and owns nothing.
        let owners: BTreeMap<MemberId, assignor::Owner> = members
            .iter()
            .map(|(id, metadata)| {
                let s = Subscription::decode(metadata).unwrap_or_default();
                let owner = assignor::Owner {
                    topics: s.topics.into_iter().collect(),
                    owned: s.owned_partitions,
                    generation: s.generation_id,
                };
                (*id, owner)
            })
            .collect();
        let subscriptions = || {
            owners
                .iter()
                .map(|(id, o)| (*id, o.topics.clone()))
                .collect::<assignor::Subscriptions<MemberId>>()
        };
        let plan = match protocol.and_then(AssignorKind::from_name) {
            Some(AssignorKind::RoundRobin) => {
                assignor::round_robin(&subscriptions(), &self.partitions_per_topic)
            }
            Some(AssignorKind::CooperativeSticky)
                if self.config.broken == Some(MemberBrokenVariant::CooperativeTransfersOwned) =>
            {
                let forgetful = owners
                    .iter()
                    .map(|(id, o)| {
                        (
                            *id,
                            assignor::Owner {
                                owned: Vec::new(),
                                ..o.clone()
                            },
                        )
                    })
                    .collect();
                assignor::cooperative_sticky(&forgetful, &self.partitions_per_topic)
            }
            Some(AssignorKind::CooperativeSticky) => {
                assignor::cooperative_sticky(&owners, &self.partitions_per_topic)
            }
            _ => assignor::range(&subscriptions(), &self.partitions_per_topic),
        };
        let drop_last = self.config.broken == Some(MemberBrokenVariant::AssignorDropsLastPartition);
        let last = self
            .partitions_per_topic
            .iter()
            .next_back()
            .map(|(topic, &count)| TopicPartition {
                topic: topic.clone(),
                partition: count - 1,
            });
        plan.into_iter()
            .map(|(id, mut partitions)| {
                if drop_last {
                    partitions.retain(|p| Some(p) != last.as_ref());
                }
                let bytes = Assignment {
                    partitions,
                    user_data: None,
                }
                .encode();
                (id, bytes)
            })
            .collect()
    }

    fn on_sync_response(&mut self, error: Errors, assignment: Bytes, out: &mut Effects) {
        match error {
            Errors::None => {
                let partitions = Assignment::decode(&assignment)
                    .map(|a| a.partitions)
                    .unwrap_or_default();
                self.phase = MemberPhase::Stable;
                if !self.cooperative() {
                    self.owned = partitions.clone();
                    self.events.push(MemberEvent::Assigned(partitions));
                    return;
                }
                // Revoke what was taken away, then join again so the next rebalance can give
                // it to its new owner; keep the rest and add what is new.
                let revoked: Vec<TopicPartition> = self
                    .owned
                    .iter()
                    .filter(|p| !partitions.contains(p))
                    .cloned()
                    .collect();
                let added: Vec<TopicPartition> = partitions
                    .iter()
                    .filter(|p| !self.owned.contains(p))
                    .cloned()
                    .collect();
                self.owned = partitions;
                if !revoked.is_empty() {
                    out.push(Effect::CancelTimer(MemberTimer::Heartbeat));
                    self.heartbeat_in_flight = None;
                    self.events.push(MemberEvent::Revoke(revoked));
                    self.phase = MemberPhase::Revoking;
                }
                self.events.push(MemberEvent::Assigned(added));
            }
            Errors::UnknownMemberId => {
                self.forget_membership();
                self.rejoin(true, out);
            }
            Errors::IllegalGeneration => self.rejoin(true, out),
            Errors::FencedInstanceId => self.fenced(out),
            // The generation was abandoned (or the coordinator moved): still a member, it
            // joins again keeping what it owns.
            _ => self.rejoin(false, out),
        }
    }

    fn on_heartbeat_response(&mut self, error: Errors, out: &mut Effects) {
        if self.phase != MemberPhase::Stable {
            return;
        }
        match error {
            Errors::None => {}
            Errors::RebalanceInProgress => self.rejoin(false, out),
            Errors::UnknownMemberId => {
                self.forget_membership();
                self.rejoin(true, out);
            }
            Errors::IllegalGeneration => self.rejoin(true, out),
            Errors::FencedInstanceId => self.fenced(out),
            // The coordinator moved or is busy: the next heartbeat tries again.
            _ => {}
        }
    }
}
