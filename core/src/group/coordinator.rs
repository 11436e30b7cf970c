//! One consumer group as its coordinator keeps it: Kafka's `GroupMetadata` and the classic
//! rebalance protocol of its `GroupCoordinator`, as a sans-IO actor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use super::message::{
    ExpectedProtocol, GroupMsg, GroupRecord, Leaving, MemberId, Protocol, TopicPartition,
};
use crate::actor::{Effect, Node};
use crate::errors::Errors;

/// Deliberately broken protocols, for the model checker to catch. `None` in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupBrokenVariant {
    /// Accept an offset commit from any generation, as if fencing did not exist: a member that
    /// lost its partitions in a rebalance can overwrite the new owner's progress.
    AcceptStaleCommits,
    /// Start generations again from 0 when the group empties, as if the generation were
    /// per-membership: a member of an old generation 1 is then indistinguishable from one of
    /// the new generation 1.
    ResetGenerationWhenEmpty,
    /// Let a static member that restarts while its group is being assigned take its old place
    /// without a rebalance: the leader's plan names the old member id, so the new one is given
    /// nothing.
    StaticReplaceKeepsAssigning,

    /// Load a group from its partition with its members and assignments but from generation
    /// 0, as if the generation lived only in memory: after a coordinator moves, generations
    /// are numbered again from 1.
    ForgetGenerationOnLoad,
}

/// The coordinator's settings; the names are Kafka's broker configs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a new group's first rebalance waits for more
    /// members, so a fleet starting together is assigned once, not once per member.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`.
    pub max_size: usize,
    /// The broker whose `__consumer_offsets` partition holds the group.
    pub storage: Node,
    /// `None` in every real deployment.
    pub broken: Option<GroupBrokenVariant>,
}

impl GroupConfig {
    /// Kafka's defaults, storing through `storage`.
    pub fn new(storage: Node) -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            storage,
            broken: None,
        }
    }
}

/// Kafka's group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    /// No members (offsets may still be committed, by consumers that assign themselves).
    Empty,
    /// Waiting for every member to join the next generation.
    PreparingRebalance,
    /// The generation is formed; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted, or moved to another coordinator.
    Dead,
}

impl GroupState {
    /// Kafka's name, as DescribeGroups and ListGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Timers the coordinator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupTimer {
    /// The join phase ends: the rebalance timeout, or a new group's initial delay.
    Join,
    /// A member's session ends unless it heartbeats first.
    Session(MemberId),
    /// A member given an id (KIP-394) has not joined with it in time.
    PendingMember(MemberId),
}

type Effects = Vec<Effect<GroupTimer, GroupMsg>>;

/// Where to answer a request held until the group moves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Waiting {
    client: Node,
    correlation_id: u32,
}

/// A member as the coordinator keeps it (Kafka's `MemberMetadata`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberMetadata {
    /// Its protocols, preferred first.
    pub protocols: Vec<Protocol>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// How long a rebalance waits for it.
    pub rebalance_timeout_ms: u64,
    /// Its assignment in the current generation.
    pub assignment: Bytes,
    /// `group.instance.id`, for a static member.
    pub group_instance_id: Option<Arc<str>>,
    awaiting_join: Option<Waiting>,
    awaiting_sync: Option<Waiting>,
}

impl MemberMetadata {
    /// Whether its JoinGroup is held, waiting for the generation to form.
    pub fn awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }

    /// What a generation's record keeps of member `id` (Kafka's `MemberMetadata` in
    /// `GroupMetadataValue`), so that [`GroupCoordinator::loaded`] can bring it back: its
    /// subscription for the generation's `protocol`, its timeouts and `assignment`.
    pub fn stored(&self, id: MemberId, protocol: &str, assignment: Bytes) -> LoadedMember {
        LoadedMember {
            id,
            group_instance_id: self.group_instance_id.clone(),
            subscription: self.metadata_for(protocol),
            session_timeout_ms: self.session_timeout_ms,
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            assignment,
        }
    }

    /// Its subscription metadata for `protocol` (empty if it does not support it).
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| &*p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }
}

/// A write to `__consumer_offsets` whose answer the coordinator waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PendingWrite {
    /// The leader's assignment for `generation_id`.
    Assignment {
        generation_id: i32,
        assignments: BTreeMap<MemberId, Bytes>,
    },
    /// An offset commit.
    Offsets {
        waiting: Waiting,
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// The record of an emptied group; nothing waits for it.
    Emptied,
    /// The generation again, with a restarted static member's new id in its old place (Kafka
    /// stores it so a coordinator that takes the group over knows the new id); its JoinGroup
    /// waits for it.
    StaticReplaced {
        old: MemberId,
        new: MemberId,
        waiting: Waiting,
    },
    /// Tombstones for the whole group (DeleteGroups).
    Deleted { waiting: Waiting },
    /// Tombstones for expired offsets, and for the group itself once nothing is left.
    Expired {
        partitions: Vec<TopicPartition>,
        group_too: bool,
    },
    /// Tombstones for some committed offsets (OffsetDelete).
    OffsetsDeleted {
        waiting: Waiting,
        partitions: Vec<(TopicPartition, Errors)>,
    },
}

/// A group's last stored generation, as [`GroupCoordinator::loaded`] takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LoadedGroup {
    /// The generation.
    pub generation_id: i32,
    /// `consumer`, for consumers.
    pub protocol_type: Option<Arc<str>>,
    /// The generation's protocol (`None` for an empty group).
    pub protocol: Option<Arc<str>>,
    /// Its leader.
    pub leader: Option<MemberId>,
    /// Its members.
    pub members: Vec<LoadedMember>,
    /// The first id a new member may be given (at least one past every stored member's).
    /// Member ids are the driver's numbering of member names, which Kafka makes unique (a
    /// UUID), so a name handed out before the load is never handed out again; a driver whose
    /// numbering outlives the load says here where it goes on.
    pub next_member_id: MemberId,
}

/// A member of a stored generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadedMember {
    /// Its id (the broker numbers stored member ids afresh).
    pub id: MemberId,
    /// `group.instance.id`, for a static member.
    pub group_instance_id: Option<Arc<str>>,
    /// Its subscription for the generation's protocol.
    pub subscription: Bytes,
    /// `session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// Its rebalance timeout.
    pub rebalance_timeout_ms: u64,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A new group's first join phase (Kafka's `InitialDelayedJoin`): it waits
/// `group.initial.rebalance.delay.ms`, and again each time members joined during the last
/// wait, so a fleet starting over a few seconds is assigned once, not once per member; never
/// longer in all than the rebalance timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct InitialDelay {
    configured_ms: u64,
    /// What is left of the rebalance timeout after the waits so far.
    remaining_ms: u64,
    new_member_added: bool,
}

impl InitialDelay {
    /// The next wait, if members joined during this one and time is left.
    fn extend(&mut self) -> Option<u64> {
        if !self.new_member_added || self.remaining_ms == 0 {
            return None;
        }
        let wait = self.configured_ms.min(self.remaining_ms);
        self.remaining_ms -= wait;
        self.new_member_added = false;
        Some(wait)
    }
}

/// One group, as its coordinator keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupCoordinator {
    config: Arc<GroupConfig>,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<Arc<str>>,
    protocol: Option<Arc<str>>,
    leader: Option<MemberId>,
    members: BTreeMap<MemberId, MemberMetadata>,
    /// Given an id by a JoinGroup v4+ and expected to join with it (KIP-394).
    pending_members: BTreeSet<MemberId>,
    /// Static members (KIP-345): each `group.instance.id` and the member id that holds it now.
    static_members: BTreeMap<Arc<str>, MemberId>,
    next_member_id: MemberId,
    /// The running join phase, if it is a new group's initial delay.
    initial_delay: Option<InitialDelay>,
    committed: BTreeMap<TopicPartition, i64>,
    pending_writes: BTreeMap<u64, PendingWrite>,
    next_write_id: u64,
}

impl GroupCoordinator {
    /// A new, empty group.
    pub fn new(config: Arc<GroupConfig>) -> Self {
        GroupCoordinator {
            config,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeSet::new(),
            static_members: BTreeMap::new(),
            next_member_id: 1,
            initial_delay: None,
            committed: BTreeMap::new(),
            pending_writes: BTreeMap::new(),
            next_write_id: 0,
        }
    }

    /// A group read back from its `__consumer_offsets` partition (a restart, or a broker taking
    /// over the partition), as its last stored generation left it (Kafka's `loadGroup`): with
    /// members, it is Stable with their assignments, and each member's session starts now (the
    /// returned timers), so members that are still there carry on without a rebalance and
    /// those that are gone expire. The generation goes on from the stored one, so no member of
    /// an old generation is mistaken for one of a new generation.
    pub fn loaded(
        config: Arc<GroupConfig>,
        stored: LoadedGroup,
        committed: BTreeMap<TopicPartition, i64>,
    ) -> (Self, Effects) {
        let mut group = GroupCoordinator {
            generation_id: stored.generation_id,
            committed,
            ..GroupCoordinator::new(config)
        };
        group.next_member_id = group.next_member_id.max(stored.next_member_id);
        if group.config.broken == Some(GroupBrokenVariant::ForgetGenerationOnLoad) {
            group.generation_id = 0;
        }
        let mut out = Vec::new();
        if stored.members.is_empty() || stored.protocol.is_none() {
            return (group, out);
        }
        group.protocol_type = stored.protocol_type;
        group.protocol = stored.protocol.clone();
        let protocol = stored.protocol.expect("checked above");
        for m in stored.members {
            group.next_member_id = group.next_member_id.max(m.id + 1);
            if let Some(instance) = &m.group_instance_id {
                group.static_members.insert(instance.clone(), m.id);
            }
            out.push(Effect::SetTimer {
                timer: GroupTimer::Session(m.id),
                after_ms: m.session_timeout_ms,
            });
            group.members.insert(
                m.id,
                MemberMetadata {
                    protocols: vec![Protocol {
                        name: protocol.clone(),
                        metadata: m.subscription,
                    }],
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    assignment: m.assignment,
                    group_instance_id: m.group_instance_id,
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
        }
        group.leader = stored
            .leader
            .filter(|l| group.members.contains_key(l))
            .or_else(|| group.members.keys().next().copied());
        group.state = GroupState::Stable;
        (group, out)
    }

    /// Whether `id` is a member, or was given its id and is expected to join with it.
    pub fn knows(&self, id: MemberId) -> bool {
        self.members.contains_key(&id) || self.pending_members.contains(&id)
    }

    /// Whether the group holds nothing: no members and no committed offsets (Kafka then
    /// forgets it).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty() && self.committed.is_empty()
    }

    /// The group's state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// The current generation.
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// The generation's leader.
    pub fn leader(&self) -> Option<MemberId> {
        self.leader
    }

    /// The protocol type (`consumer`) and the generation's protocol.
    pub fn protocol(&self) -> (Option<&Arc<str>>, Option<&Arc<str>>) {
        (self.protocol_type.as_ref(), self.protocol.as_ref())
    }

    /// The members, by id.
    pub fn members(&self) -> &BTreeMap<MemberId, MemberMetadata> {
        &self.members
    }

    /// The committed offsets.
    pub fn committed(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.committed
    }

    /// Handles one message from `from`.
    pub fn on_message(&mut self, from: Node, msg: GroupMsg) -> Effects {
        let mut out = Vec::new();
        match msg {
            GroupMsg::JoinGroup {
                correlation_id,
                member_id,
                group_instance_id,
                require_known_member_id,
                protocol_type,
                protocols,
                session_timeout_ms,
                rebalance_timeout_ms,
            } => {
                let join = Join {
                    waiting: Waiting {
                        client: from,
                        correlation_id,
                    },
                    group_instance_id,
                    protocol_type,
                    protocols,
                    session_timeout_ms,
                    rebalance_timeout_ms,
                };
                self.on_join(member_id, require_known_member_id, join, &mut out)
            }
            GroupMsg::SyncGroup {
                correlation_id,
                member_id,
                group_instance_id,
                generation_id,
                expected_protocol,
                assignments,
            } => {
                let waiting = Waiting {
                    client: from,
                    correlation_id,
                };
                if self.fenced(member_id, group_instance_id.as_ref()) {
                    out.push(sync_answer(waiting, Errors::FencedInstanceId, Bytes::new()));
                } else if self.members.contains_key(&member_id)
                    && generation_id == self.generation_id
                    && !self.has_protocol(expected_protocol.as_ref())
                {
                    // Kafka's SyncGroup v5 check: the member thinks the group runs another
                    // protocol than it does.
                    out.push(sync_answer(
                        waiting,
                        Errors::InconsistentGroupProtocol,
                        Bytes::new(),
                    ));
                } else {
                    self.on_sync(waiting, member_id, generation_id, assignments, &mut out)
                }
            }
            GroupMsg::Heartbeat {
                correlation_id,
                member_id,
                group_instance_id,
                generation_id,
            } => {
                let error = if self.fenced(member_id, group_instance_id.as_ref()) {
                    Errors::FencedInstanceId
                } else {
                    self.on_heartbeat(member_id, generation_id, &mut out)
                };
                out.push(send(
                    from,
                    GroupMsg::HeartbeatResponse {
                        correlation_id,
                        error,
                    },
                ));
            }
            GroupMsg::LeaveGroup {
                correlation_id,
                members,
            } => {
                let members = members
                    .into_iter()
                    .map(|leaving| self.on_leave(leaving, &mut out))
                    .collect();
                self.after_removal(&mut out);
                out.push(send(
                    from,
                    GroupMsg::LeaveGroupResponse {
                        correlation_id,
                        members,
                    },
                ));
            }
            GroupMsg::OffsetCommit {
                correlation_id,
                member_id,
                group_instance_id,
                generation_id,
                offsets,
            } => {
                let waiting = Waiting {
                    client: from,
                    correlation_id,
                };
                if let Some(id) = member_id
                    && self.fenced(id, group_instance_id.as_ref())
                {
                    out.push(send(
                        from,
                        GroupMsg::OffsetCommitResponse {
                            correlation_id,
                            error: Errors::FencedInstanceId,
                        },
                    ));
                } else {
                    self.on_commit(waiting, member_id, generation_id, offsets, &mut out)
                }
            }
            GroupMsg::OffsetFetch {
                correlation_id,
                partitions,
            } => {
                let offsets = match partitions {
                    Some(partitions) => partitions
                        .into_iter()
                        .map(|tp| {
                            let offset = self.committed.get(&tp).copied().unwrap_or(-1);
                            (tp, offset)
                        })
                        .collect(),
                    None => self
                        .committed
                        .iter()
                        .map(|(tp, &o)| (tp.clone(), o))
                        .collect(),
                };
                out.push(send(
                    from,
                    GroupMsg::OffsetFetchResponse {
                        correlation_id,
                        offsets,
                    },
                ));
            }
            GroupMsg::AppendResult { write_id, error } => {
                self.on_append_result(write_id, error, &mut out)
            }
            GroupMsg::DeleteGroup { correlation_id } => {
                let waiting = Waiting {
                    client: from,
                    correlation_id,
                };
                self.on_delete_group(waiting, &mut out)
            }
            GroupMsg::ExpireOffsets { partitions } => self.on_expire(partitions, &mut out),
            GroupMsg::OffsetDelete {
                correlation_id,
                partitions,
            } => {
                let waiting = Waiting {
                    client: from,
                    correlation_id,
                };
                self.on_offset_delete(waiting, partitions, &mut out)
            }
            GroupMsg::JoinGroupResponse { .. }
            | GroupMsg::SyncGroupResponse { .. }
            | GroupMsg::HeartbeatResponse { .. }
            | GroupMsg::LeaveGroupResponse { .. }
            | GroupMsg::OffsetCommitResponse { .. }
            | GroupMsg::OffsetFetchResponse { .. }
            | GroupMsg::DeleteGroupResponse { .. }
            | GroupMsg::OffsetDeleteResponse { .. }
            | GroupMsg::Append { .. } => {}
        }
        out
    }

    /// Handles a timer.
    pub fn on_timer(&mut self, timer: GroupTimer) -> Effects {
        let mut out = Vec::new();
        match timer {
            GroupTimer::Join if self.state == GroupState::PreparingRebalance => {
                match self.initial_delay.as_mut().and_then(InitialDelay::extend) {
                    Some(after_ms) => out.push(Effect::SetTimer {
                        timer: GroupTimer::Join,
                        after_ms,
                    }),
                    None => self.complete_join(&mut out),
                }
            }
            GroupTimer::Join => {}
            GroupTimer::Session(id) => {
                let Some(member) = self.members.get(&id) else {
                    return out;
                };
                // A member held in a join or sync is waiting on the group, not gone (Kafka's
                // `shouldKeepAlive`); its session starts again once it is answered.
                if member.awaiting_join.is_some() || member.awaiting_sync.is_some() {
                    return out;
                }
                self.remove_member(id, &mut out);
                self.after_removal(&mut out);
            }
            GroupTimer::PendingMember(id) => {
                if self.pending_members.remove(&id) {
                    self.try_complete_join(&mut out);
                }
            }
        }
        out
    }

    fn on_join(
        &mut self,
        member_id: Option<MemberId>,
        require_known_member_id: bool,
        join: Join,
        out: &mut Effects,
    ) {
        let refuse = |out: &mut Effects, error: Errors, member_id: Option<MemberId>| {
            out.push(join_error(join.waiting, error, member_id));
        };
        if join.session_timeout_ms < self.config.min_session_timeout_ms
            || join.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return refuse(out, Errors::InvalidSessionTimeout, member_id);
        }
        if self.state == GroupState::Dead {
            return refuse(out, Errors::CoordinatorNotAvailable, member_id);
        }
        if !self.supports(&join) {
            return refuse(out, Errors::InconsistentGroupProtocol, member_id);
        }
        if let Some(instance) = join.group_instance_id.clone() {
            let current = self.static_members.get(&instance).copied();
            match (member_id, current) {
                // A static member back (a restart): it takes its old place under a new id.
                (None, Some(old)) => return self.replace_static_member(old, join, out),
                // A new static member needs no second join (KIP-394 is for dynamic ones).
                (None, None) => {
                    if self.members.len() + self.pending_members.len() >= self.config.max_size {
                        return refuse(out, Errors::GroupMaxSizeReached, None);
                    }
                    let id = self.next_member_id;
                    self.next_member_id += 1;
                    return self.add_member_and_rebalance(id, join, out);
                }
                // Another process holds the instance id now: this one is a zombie.
                (Some(id), Some(current)) if id != current => {
                    return refuse(out, Errors::FencedInstanceId, Some(id));
                }
                _ => {}
            }
        }
        let Some(id) = member_id else {
            if self.members.len() + self.pending_members.len() >= self.config.max_size {
                return refuse(out, Errors::GroupMaxSizeReached, None);
            }
            let id = self.next_member_id;
            self.next_member_id += 1;
            if require_known_member_id {
                self.pending_members.insert(id);
                out.push(Effect::SetTimer {
                    timer: GroupTimer::PendingMember(id),
                    after_ms: join.session_timeout_ms,
                });
                return refuse(out, Errors::MemberIdRequired, Some(id));
            }
            return self.add_member_and_rebalance(id, join, out);
        };
        if self.pending_members.remove(&id) {
            out.push(Effect::CancelTimer(GroupTimer::PendingMember(id)));
            return self.add_member_and_rebalance(id, join, out);
        }
        let Some(member) = self.members.get(&id) else {
            return refuse(out, Errors::UnknownMemberId, Some(id));
        };
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(id, join, out),
            GroupState::CompletingRebalance if member.same_protocols(&join.protocols) => {
                // A repeat of its join (say, after a lost answer): the same generation again.
                out.push(self.join_response(id, join.waiting));
            }
            GroupState::Stable
                if member.same_protocols(&join.protocols) && self.leader != Some(id) =>
            {
                out.push(self.join_response(id, join.waiting));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(id, join, out)
            }
            GroupState::Empty | GroupState::Dead => refuse(out, Errors::UnknownMemberId, Some(id)),
        }
    }

    /// Kafka's compatibility rule: a member may join if its protocol type is the group's and
    /// it shares an assignment protocol with every current member.
    fn supports(&self, join: &Join) -> bool {
        if join.protocol_type.is_empty() || join.protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(&*join.protocol_type)
            && join
                .protocols
                .iter()
                .any(|p| self.candidate_protocols().contains(&p.name))
    }

    /// The protocols every member supports.
    fn candidate_protocols(&self) -> BTreeSet<Arc<str>> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return BTreeSet::new();
        };
        let mut candidates: BTreeSet<Arc<str>> =
            first.protocols.iter().map(|p| p.name.clone()).collect();
        for member in members {
            candidates.retain(|name| member.protocols.iter().any(|p| &p.name == name));
        }
        candidates
    }

    /// Kafka's vote: each member votes for the first candidate in its preference order; the
    /// most votes wins (ties to the protocol named first in the leader's preference).
    fn select_protocol(&self) -> Option<Arc<str>> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(p) = member
                .protocols
                .iter()
                .find(|p| candidates.contains(&p.name))
            {
                *votes.entry(p.name.clone()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        let leader_order = self
            .leader
            .and_then(|l| self.members.get(&l))
            .map(|m| m.protocols.clone())
            .unwrap_or_default();
        leader_order
            .iter()
            .map(|p| p.name.clone())
            .find(|name| votes.get(name) == Some(&most))
            .or_else(|| {
                votes
                    .into_iter()
                    .find(|&(_, v)| v == most)
                    .map(|(name, _)| name)
            })
    }

    /// Whether the group runs the protocol type and name a SyncGroup v5 names (each checked
    /// only if named).
    fn has_protocol(&self, expected: Option<&ExpectedProtocol>) -> bool {
        let Some((protocol_type, protocol)) = expected else {
            return true;
        };
        protocol_type
            .as_ref()
            .is_none_or(|t| self.protocol_type.as_ref() == Some(t))
            && protocol
                .as_ref()
                .is_none_or(|p| self.protocol.as_ref() == Some(p))
    }

    /// Whether `group_instance_id` belongs to a member other than `id` (Kafka's
    /// `isStaticMemberFenced`): the caller is an old incarnation, answered `FENCED_INSTANCE_ID`.
    fn fenced(&self, id: MemberId, group_instance_id: Option<&Arc<str>>) -> bool {
        group_instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|&current| current != id)
    }

    /// A static member rejoined without its member id (it restarted): it gets a new id and the
    /// old member's place, assignment included. Requests the old id still has waiting are
    /// fenced. A stable group does not rebalance for it unless its protocols changed, which
    /// is the point of static membership: a rolling restart moves no partitions. A group being
    /// assigned does rebalance (found by the model checker: the new id got nothing).
    fn replace_static_member(&mut self, old: MemberId, join: Join, out: &mut Effects) {
        let Some(mut member) = self.members.remove(&old) else {
            return;
        };
        out.push(Effect::CancelTimer(GroupTimer::Session(old)));
        if let Some(waiting) = member.awaiting_join.take() {
            out.push(join_error(waiting, Errors::FencedInstanceId, Some(old)));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            out.push(sync_answer(waiting, Errors::FencedInstanceId, Bytes::new()));
        }
        let id = self.next_member_id;
        self.next_member_id += 1;
        let same_protocols = member.same_protocols(&join.protocols);
        member.protocols = join.protocols;
        member.session_timeout_ms = join.session_timeout_ms;
        member.rebalance_timeout_ms = join.rebalance_timeout_ms;
        let instance = join.group_instance_id.clone().expect("a static member");
        self.members.insert(id, member);
        self.static_members.insert(instance, id);
        if self.leader == Some(old) {
            self.leader = Some(id);
        }
        // Only a stable group keeps its generation: while it is being assigned, the leader's
        // plan names the old id, so the new one would be given nothing (Kafka rebalances too).
        let keeps_generation = self.state == GroupState::Stable
            || (self.state == GroupState::CompletingRebalance
                && self.config.broken == Some(GroupBrokenVariant::StaticReplaceKeepsAssigning));
        match self.state {
            _ if keeps_generation && same_protocols => {
                self.restart_session(id, out);
                let replaced = PendingWrite::StaticReplaced {
                    old,
                    new: id,
                    waiting: join.waiting,
                };
                if self.state == GroupState::Stable {
                    self.write(replaced, out);
                } else {
                    out.push(self.join_response(id, join.waiting));
                }
            }
            _ => {
                if let Some(member) = self.members.get_mut(&id) {
                    member.awaiting_join = Some(join.waiting);
                }
                self.maybe_prepare_rebalance(out);
                self.try_complete_join(out);
            }
        }
    }

    /// Gives a static member's place back to `old`, its replacement by `new` not having been
    /// stored (Kafka's revert in `updateStaticMemberAndRebalance`).
    fn undo_static_replacement(&mut self, old: MemberId, new: MemberId, out: &mut Effects) {
        let Some(member) = self.members.remove(&new) else {
            return;
        };
        out.push(Effect::CancelTimer(GroupTimer::Session(new)));
        if let Some(instance) = &member.group_instance_id {
            self.static_members.insert(instance.clone(), old);
        }
        if self.leader == Some(new) {
            self.leader = Some(old);
        }
        self.members.insert(old, member);
        self.restart_session(old, out);
    }

    fn add_member_and_rebalance(&mut self, id: MemberId, join: Join, out: &mut Effects) {
        if self.members.is_empty() {
            self.protocol_type = Some(join.protocol_type.clone());
        }
        if let Some(instance) = &join.group_instance_id {
            self.static_members.insert(instance.clone(), id);
        }
        if self.generation_id == 0
            && let Some(delay) = &mut self.initial_delay
        {
            delay.new_member_added = true;
        }
        self.members.insert(
            id,
            MemberMetadata {
                protocols: join.protocols,
                session_timeout_ms: join.session_timeout_ms,
                rebalance_timeout_ms: join.rebalance_timeout_ms,
                assignment: Bytes::new(),
                group_instance_id: join.group_instance_id,
                awaiting_join: Some(join.waiting),
                awaiting_sync: None,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        self.maybe_prepare_rebalance(out);
        self.try_complete_join(out);
    }

    fn update_member_and_rebalance(&mut self, id: MemberId, join: Join, out: &mut Effects) {
        if let Some(member) = self.members.get_mut(&id) {
            member.protocols = join.protocols;
            member.session_timeout_ms = join.session_timeout_ms;
            member.rebalance_timeout_ms = join.rebalance_timeout_ms;
            member.awaiting_join = Some(join.waiting);
        }
        self.maybe_prepare_rebalance(out);
        self.try_complete_join(out);
    }

    fn maybe_prepare_rebalance(&mut self, out: &mut Effects) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(out);
        }
    }

    fn prepare_rebalance(&mut self, out: &mut Effects) {
        if self.state == GroupState::CompletingRebalance {
            // The generation being formed is abandoned: its syncs are told to join again.
            self.reset_assignments_and_fail_syncs(Errors::RebalanceInProgress, out);
        }
        let initial = self.state == GroupState::Empty && self.config.initial_rebalance_delay_ms > 0;
        let after_ms = if initial {
            self.config.initial_rebalance_delay_ms
        } else {
            self.rebalance_timeout_ms()
        };
        self.initial_delay = initial.then(|| InitialDelay {
            configured_ms: self.config.initial_rebalance_delay_ms,
            remaining_ms: self.rebalance_timeout_ms().saturating_sub(after_ms),
            new_member_added: false,
        });
        self.state = GroupState::PreparingRebalance;
        out.push(Effect::SetTimer {
            timer: GroupTimer::Join,
            after_ms,
        });
    }

    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Completes the join phase early once every member has joined and no member given an id
    /// is still expected, except during a new group's initial delay, which runs its course.
    fn try_complete_join(&mut self, out: &mut Effects) {
        if self.state != GroupState::PreparingRebalance || self.initial_delay.is_some() {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined && self.pending_members.is_empty() {
            out.push(Effect::CancelTimer(GroupTimer::Join));
            self.complete_join(out);
        }
    }

    /// Ends the join phase: members that did not join are removed, and the rest form the next
    /// generation (or the group is empty).
    fn complete_join(&mut self, out: &mut Effects) {
        self.initial_delay = None;
        let absent: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in absent {
            self.remove_member(id, out);
        }
        self.generation_id += 1;
        if self.members.is_empty() {
            if self.config.broken == Some(GroupBrokenVariant::ResetGenerationWhenEmpty) {
                self.generation_id = 0;
            }
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.protocol_type = None;
            self.write(PendingWrite::Emptied, out);
            return;
        }
        if self.leader.is_none_or(|l| !self.members.contains_key(&l)) {
            self.leader = self.members.keys().next().copied();
        }
        self.protocol = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<MemberId> = self.members.keys().copied().collect();
        for id in ids {
            let member = self.members.get_mut(&id).expect("a member");
            let waiting = member.awaiting_join.take().expect("every member joined");
            let session = member.session_timeout_ms;
            out.push(self.join_response(id, waiting));
            out.push(Effect::SetTimer {
                timer: GroupTimer::Session(id),
                after_ms: session,
            });
        }
    }

    /// The current generation, as JoinGroupResponse tells `id` (the member list to the leader
    /// only).
    fn join_response(&self, id: MemberId, waiting: Waiting) -> Effect<GroupTimer, GroupMsg> {
        let protocol = self.protocol.clone();
        let members = if self.leader == Some(id) {
            let name = protocol.as_deref().unwrap_or_default();
            self.members
                .iter()
                .map(|(&m, meta)| (m, meta.metadata_for(name)))
                .collect()
        } else {
            Vec::new()
        };
        send(
            waiting.client,
            GroupMsg::JoinGroupResponse {
                correlation_id: waiting.correlation_id,
                error: Errors::None,
                generation_id: self.generation_id,
                protocol_name: protocol,
                leader: self.leader,
                member_id: Some(id),
                members,
            },
        )
    }

    fn on_sync(
        &mut self,
        waiting: Waiting,
        id: MemberId,
        generation_id: i32,
        assignments: Vec<(MemberId, Bytes)>,
        out: &mut Effects,
    ) {
        let error = if !self.members.contains_key(&id) {
            Some(Errors::UnknownMemberId)
        } else if generation_id != self.generation_id {
            Some(Errors::IllegalGeneration)
        } else {
            match self.state {
                GroupState::PreparingRebalance => Some(Errors::RebalanceInProgress),
                GroupState::Empty | GroupState::Dead => Some(Errors::UnknownMemberId),
                GroupState::CompletingRebalance | GroupState::Stable => None,
            }
        };
        if let Some(error) = error {
            return out.push(sync_answer(waiting, error, Bytes::new()));
        }
        self.restart_session(id, out);
        let member = self.members.get_mut(&id).expect("checked above");
        if self.state == GroupState::Stable {
            return out.push(sync_answer(
                waiting,
                Errors::None,
                member.assignment.clone(),
            ));
        }
        member.awaiting_sync = Some(waiting);
        let leader_syncs = self.leader == Some(id)
            && !self
                .pending_writes
                .values()
                .any(|w| matches!(w, PendingWrite::Assignment { generation_id: g, .. } if *g == generation_id));
        if leader_syncs {
            // Every member gets what the leader gave it (nothing, if it gave nothing); the
            // assignment is stored before anyone is told.
            let assignments: BTreeMap<MemberId, Bytes> = self
                .members
                .keys()
                .map(|&m| {
                    let given = assignments
                        .iter()
                        .find(|(a, _)| *a == m)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (m, given)
                })
                .collect();
            self.write(
                PendingWrite::Assignment {
                    generation_id,
                    assignments,
                },
                out,
            );
        }
    }

    fn on_heartbeat(&mut self, id: MemberId, generation_id: i32, out: &mut Effects) -> Errors {
        if !self.members.contains_key(&id) {
            return Errors::UnknownMemberId;
        }
        if generation_id != self.generation_id {
            return Errors::IllegalGeneration;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Errors::UnknownMemberId,
            GroupState::PreparingRebalance => {
                self.restart_session(id, out);
                Errors::RebalanceInProgress
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.restart_session(id, out);
                Errors::None
            }
        }
    }

    fn on_leave(&mut self, leaving: Leaving, out: &mut Effects) -> Errors {
        if let Some(instance) = &leaving.group_instance_id {
            // A static member leaves by its instance id (KIP-345); a stale incarnation that
            // names an old member id is fenced.
            return match self.static_members.get(instance).copied() {
                None => Errors::UnknownMemberId,
                Some(current) if leaving.member_id.is_some_and(|m| m != current) => {
                    Errors::FencedInstanceId
                }
                Some(current) => {
                    self.remove_member(current, out);
                    Errors::None
                }
            };
        }
        let Some(id) = leaving.member_id else {
            return Errors::UnknownMemberId;
        };
        if self.pending_members.remove(&id) {
            out.push(Effect::CancelTimer(GroupTimer::PendingMember(id)));
            return Errors::None;
        }
        if !self.members.contains_key(&id) {
            return Errors::UnknownMemberId;
        }
        self.remove_member(id, out);
        Errors::None
    }

    fn remove_member(&mut self, id: MemberId, out: &mut Effects) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        if let Some(instance) = &member.group_instance_id
            && self.static_members.get(instance) == Some(&id)
        {
            self.static_members.remove(instance);
        }
        out.push(Effect::CancelTimer(GroupTimer::Session(id)));
        if let Some(waiting) = member.awaiting_join {
            out.push(join_error(waiting, Errors::UnknownMemberId, Some(id)));
        }
        if let Some(waiting) = member.awaiting_sync {
            out.push(sync_answer(waiting, Errors::UnknownMemberId, Bytes::new()));
        }
        if self.leader == Some(id) {
            self.leader = self.members.keys().next().copied();
        }
    }

    /// After members left or expired: a join phase may now be complete; a formed generation
    /// is no longer whole and rebalances.
    fn after_removal(&mut self, out: &mut Effects) {
        match self.state {
            GroupState::PreparingRebalance => self.try_complete_join(out),
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.prepare_rebalance(out);
                    self.try_complete_join(out);
                } else {
                    self.prepare_rebalance(out);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn on_commit(
        &mut self,
        waiting: Waiting,
        member_id: Option<MemberId>,
        generation_id: i32,
        offsets: Vec<(TopicPartition, i64)>,
        out: &mut Effects,
    ) {
        let accept_stale = self.config.broken == Some(GroupBrokenVariant::AcceptStaleCommits);
        let error = if self.state == GroupState::Dead {
            Some(Errors::CoordinatorNotAvailable)
        } else if generation_id < 0 && member_id.is_none() {
            // A consumer that assigns itself: only into a group that has no members.
            (self.state != GroupState::Empty).then_some(Errors::UnknownMemberId)
        } else if !member_id.is_some_and(|id| self.members.contains_key(&id)) && !accept_stale {
            Some(Errors::UnknownMemberId)
        } else if generation_id != self.generation_id && !accept_stale {
            Some(Errors::IllegalGeneration)
        } else if self.state == GroupState::CompletingRebalance && !accept_stale {
            // Its generation is valid but not yet assigned: it must not commit for partitions
            // it is about to learn it does not own.
            Some(Errors::RebalanceInProgress)
        } else {
            None
        };
        if let Some(error) = error {
            return out.push(send(
                waiting.client,
                GroupMsg::OffsetCommitResponse {
                    correlation_id: waiting.correlation_id,
                    error,
                },
            ));
        }
        if let Some(id) = member_id
            && self.members.contains_key(&id)
        {
            self.restart_session(id, out);
        }
        self.write(PendingWrite::Offsets { waiting, offsets }, out);
    }

    /// Kafka's DeleteGroups: only a group without members, and only once; its offsets and
    /// metadata are deleted (tombstones), and it is Dead from then on.
    fn on_delete_group(&mut self, waiting: Waiting, out: &mut Effects) {
        let error = match self.state {
            GroupState::Dead => Some(Errors::GroupIdNotFound),
            GroupState::Empty if self.pending_members.is_empty() => None,
            _ => Some(Errors::NonEmptyGroup),
        };
        if let Some(error) = error {
            return out.push(send(
                waiting.client,
                GroupMsg::DeleteGroupResponse {
                    correlation_id: waiting.correlation_id,
                    error,
                },
            ));
        }
        self.state = GroupState::Dead;
        self.write(PendingWrite::Deleted { waiting }, out);
    }

    /// Kafka's OffsetDelete: an empty group forgets any of its offsets; a consumer group with
    /// members only those of topics no member subscribes to (`GROUP_SUBSCRIBED_TO_TOPIC`); a
    /// group of another protocol type with members, none (`NON_EMPTY_GROUP`).
    fn on_offset_delete(
        &mut self,
        waiting: Waiting,
        partitions: Vec<TopicPartition>,
        out: &mut Effects,
    ) {
        let group_error = match self.state {
            GroupState::Dead => Some(Errors::GroupIdNotFound),
            GroupState::Empty => None,
            _ if self.protocol_type.as_deref() != Some("consumer") => Some(Errors::NonEmptyGroup),
            _ => None,
        };
        if let Some(error) = group_error {
            return out.push(send(
                waiting.client,
                GroupMsg::OffsetDeleteResponse {
                    correlation_id: waiting.correlation_id,
                    error,
                    partitions: Vec::new(),
                },
            ));
        }
        let subscribed = self.subscribed_topics();
        let partitions = partitions
            .into_iter()
            .map(|tp| {
                let error = if subscribed.contains(&*tp.topic) {
                    Errors::GroupSubscribedToTopic
                } else {
                    Errors::None
                };
                (tp, error)
            })
            .collect();
        self.write(
            PendingWrite::OffsetsDeleted {
                waiting,
                partitions,
            },
            out,
        );
    }

    /// Kafka's `offsets.retention.minutes` (KIP-211): what the broker should expire now, as
    /// the message to hand back. A group without members forgets a committed offset once
    /// `retention_ms` has passed since the later of its commit and the group becoming empty,
    /// and a group left with neither offsets nor members is forgotten itself; a group with
    /// members keeps its offsets. `committed_at` is when the broker stored each commit.
    pub fn expiry(
        &self,
        now_ms: i64,
        retention_ms: i64,
        empty_since_ms: i64,
        committed_at: impl Fn(&TopicPartition) -> i64,
    ) -> Option<GroupMsg> {
        if self.state != GroupState::Empty || !self.pending_members.is_empty() {
            return None;
        }
        let due = |since: i64| since.max(empty_since_ms).saturating_add(retention_ms) <= now_ms;
        let partitions: Vec<TopicPartition> = self
            .committed
            .keys()
            .filter(|tp| due(committed_at(tp)))
            .cloned()
            .collect();
        let forgotten = self.committed.is_empty() && due(empty_since_ms);
        (!partitions.is_empty() || forgotten).then_some(GroupMsg::ExpireOffsets { partitions })
    }

    /// Expired offsets go (tombstones); a group left with no offsets and no members goes too,
    /// as Kafka then forgets it.
    fn on_expire(&mut self, partitions: Vec<TopicPartition>, out: &mut Effects) {
        if self.state != GroupState::Empty || !self.pending_members.is_empty() {
            return; // a member joined since the broker looked
        }
        let partitions: Vec<TopicPartition> = partitions
            .into_iter()
            .filter(|tp| self.committed.contains_key(tp))
            .collect();
        let group_too = partitions.len() == self.committed.len();
        if partitions.is_empty() && !group_too {
            return;
        }
        if group_too {
            self.state = GroupState::Dead;
        }
        self.write(
            PendingWrite::Expired {
                partitions,
                group_too,
            },
            out,
        );
    }

    /// The topics the members subscribe to, from their consumer-protocol metadata.
    fn subscribed_topics(&self) -> BTreeSet<String> {
        let protocol = self.protocol.as_deref().unwrap_or_default();
        self.members
            .values()
            .filter_map(|m| {
                super::consumer_protocol::Subscription::decode(&m.metadata_for(protocol)).ok()
            })
            .flat_map(|s| s.topics.into_iter().map(|t| t.to_string()))
            .collect()
    }

    fn write(&mut self, write: PendingWrite, out: &mut Effects) {
        let records = match &write {
            PendingWrite::Assignment {
                generation_id,
                assignments,
            } => vec![GroupRecord::Metadata {
                generation_id: *generation_id,
                protocol: self.protocol.clone(),
                leader: self.leader,
                assignments: assignments.iter().map(|(&m, a)| (m, a.clone())).collect(),
            }],
            PendingWrite::Emptied => vec![GroupRecord::Metadata {
                generation_id: self.generation_id,
                protocol: None,
                leader: None,
                assignments: Vec::new(),
            }],
            PendingWrite::StaticReplaced { .. } => vec![GroupRecord::Metadata {
                generation_id: self.generation_id,
                protocol: self.protocol.clone(),
                leader: self.leader,
                assignments: self
                    .members
                    .iter()
                    .map(|(&m, member)| (m, member.assignment.clone()))
                    .collect(),
            }],
            PendingWrite::Offsets { offsets, .. } => offsets
                .iter()
                .map(|(partition, offset)| GroupRecord::Offset {
                    partition: partition.clone(),
                    offset: *offset,
                })
                .collect(),
            PendingWrite::Expired {
                partitions,
                group_too,
            } => partitions
                .iter()
                .map(|tp| GroupRecord::OffsetDeleted {
                    partition: tp.clone(),
                })
                .chain(group_too.then_some(GroupRecord::GroupDeleted))
                .collect(),
            PendingWrite::Deleted { .. } => self
                .committed
                .keys()
                .map(|partition| GroupRecord::OffsetDeleted {
                    partition: partition.clone(),
                })
                .chain([GroupRecord::GroupDeleted])
                .collect(),
            PendingWrite::OffsetsDeleted { partitions, .. } => partitions
                .iter()
                .filter(|(tp, e)| *e == Errors::None && self.committed.contains_key(tp))
                .map(|(tp, _)| GroupRecord::OffsetDeleted {
                    partition: tp.clone(),
                })
                .collect(),
        };
        let write_id = self.next_write_id;
        self.next_write_id += 1;
        self.pending_writes.insert(write_id, write);
        if records.is_empty() {
            // Nothing to store (deleting offsets that were never committed): done at once.
            return self.on_append_result(write_id, Errors::None, out);
        }
        out.push(send(
            self.config.storage,
            GroupMsg::Append { write_id, records },
        ));
    }

    fn on_append_result(&mut self, write_id: u64, error: Errors, out: &mut Effects) {
        let Some(write) = self.pending_writes.remove(&write_id) else {
            return;
        };
        match write {
            PendingWrite::Offsets { waiting, offsets } => {
                if error == Errors::None {
                    self.committed.extend(offsets);
                }
                let error = storage_error(error);
                out.push(send(
                    waiting.client,
                    GroupMsg::OffsetCommitResponse {
                        correlation_id: waiting.correlation_id,
                        error,
                    },
                ));
            }
            PendingWrite::Assignment {
                generation_id,
                assignments,
            } => {
                if self.state != GroupState::CompletingRebalance
                    || self.generation_id != generation_id
                {
                    return; // a rebalance began meanwhile and told the members
                }
                if error != Errors::None {
                    self.reset_assignments_and_fail_syncs(storage_error(error), out);
                    self.prepare_rebalance(out);
                    return;
                }
                for (id, assignment) in assignments {
                    if let Some(member) = self.members.get_mut(&id) {
                        member.assignment = assignment.clone();
                        if let Some(waiting) = member.awaiting_sync.take() {
                            out.push(sync_answer(waiting, Errors::None, assignment));
                        }
                    }
                }
                self.state = GroupState::Stable;
            }
            PendingWrite::Emptied => {}
            PendingWrite::StaticReplaced { old, new, waiting } => {
                if !self.members.contains_key(&new) {
                    // Gone meanwhile (it left, or its session ended).
                    return out.push(join_error(waiting, Errors::UnknownMemberId, Some(new)));
                }
                if error == Errors::None {
                    return out.push(self.join_response(new, waiting));
                }
                // Not stored: the old id keeps its place, as the partition still says.
                self.undo_static_replacement(old, new, out);
                out.push(join_error(waiting, storage_error(error), None));
            }
            PendingWrite::Expired {
                partitions,
                group_too,
            } => {
                if error == Errors::None {
                    for tp in &partitions {
                        self.committed.remove(tp);
                    }
                } else if group_too {
                    self.state = GroupState::Empty; // not stored: the next check tries again
                }
            }
            PendingWrite::Deleted { waiting } => {
                if error == Errors::None {
                    self.committed.clear();
                } else {
                    // Not deleted after all: the group is as it was, empty.
                    self.state = GroupState::Empty;
                }
                out.push(send(
                    waiting.client,
                    GroupMsg::DeleteGroupResponse {
                        correlation_id: waiting.correlation_id,
                        error: storage_error(error),
                    },
                ));
            }
            PendingWrite::OffsetsDeleted {
                waiting,
                partitions,
            } => {
                let error = storage_error(error);
                if error == Errors::None {
                    for (tp, e) in &partitions {
                        if *e == Errors::None {
                            self.committed.remove(tp);
                        }
                    }
                }
                out.push(send(
                    waiting.client,
                    GroupMsg::OffsetDeleteResponse {
                        correlation_id: waiting.correlation_id,
                        error,
                        partitions: if error == Errors::None {
                            partitions
                        } else {
                            Vec::new()
                        },
                    },
                ));
            }
        }
    }

    fn reset_assignments_and_fail_syncs(&mut self, error: Errors, out: &mut Effects) {
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(waiting) = member.awaiting_sync.take() {
                out.push(sync_answer(waiting, error, Bytes::new()));
            }
        }
    }

    fn restart_session(&self, id: MemberId, out: &mut Effects) {
        if let Some(member) = self.members.get(&id) {
            out.push(Effect::SetTimer {
                timer: GroupTimer::Session(id),
                after_ms: member.session_timeout_ms,
            });
        }
    }
}

/// A JoinGroup as the coordinator handles it.
struct Join {
    waiting: Waiting,
    group_instance_id: Option<Arc<str>>,
    protocol_type: Arc<str>,
    protocols: Vec<Protocol>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
}

fn send(to: Node, msg: GroupMsg) -> Effect<GroupTimer, GroupMsg> {
    Effect::Send { to, msg }
}

fn join_error(
    waiting: Waiting,
    error: Errors,
    member_id: Option<MemberId>,
) -> Effect<GroupTimer, GroupMsg> {
    send(
        waiting.client,
        GroupMsg::JoinGroupResponse {
            correlation_id: waiting.correlation_id,
            error,
            generation_id: -1,
            protocol_name: None,
            leader: None,
            member_id,
            members: Vec::new(),
        },
    )
}

fn sync_answer(waiting: Waiting, error: Errors, assignment: Bytes) -> Effect<GroupTimer, GroupMsg> {
    send(
        waiting.client,
        GroupMsg::SyncGroupResponse {
            correlation_id: waiting.correlation_id,
            error,
            assignment,
        },
    )
}

/// Kafka's translation of a failed `__consumer_offsets` write into what a group member is told:
/// the coordinator is not available (move or retry), or the commit was too large.
fn storage_error(error: Errors) -> Errors {
    match error {
        Errors::None => Errors::None,
        Errors::MessageTooLarge | Errors::RecordListTooLarge => Errors::InvalidCommitOffsetSize,
        Errors::NotLeaderOrFollower | Errors::KafkaStorageError => Errors::NotCoordinator,
        _ => Errors::CoordinatorNotAvailable,
    }
}
