//! Consumer groups, model-checked: core's [`GroupCoordinator`] and consumers running
//! core's [`GroupMember`], over one TCP-like connection per consumer (each direction delivers
//! in order; a crash loses both). The coordinator's store (its `__consumer_offsets` partition)
//! answers in order too. Consumers start (one later than the others), heartbeat, commit, leave,
//! crash, and pause past their session (then resume) within the bound; the application revokes
//! when asked, committing first.
//!
//! Timing assumption, as in every proof of this protocol: timeouts are longer than any delay,
//! except across an explicit pause.
//! So the coordinator expires a session only of a member no live consumer is (it crashed, left,
//! or was given another id), ends a join phase by timeout only when every member that has not
//! joined is gone so, and lets an id it handed out (KIP-394) expire only if no live consumer
//! is about to join with it. (Kafka's zombie consumer — one paused past its
//! session while it still processes — is outside this assumption; commit fencing, checked
//! here as `stale_commit_rejected`, is what keeps it from corrupting progress.)
//!
//! Properties (`specs/group.md`):
//! - `one_owner_per_partition`: no partition is owned by two members of the group at once.
//! - `stable_group_assigns_all_partitions`: once the group and all its live members are
//!   stable in one generation, every partition is owned.
//! - `generation_monotonic`: the generation never goes back.
//! - `stale_commit_rejected`: no offset commit from an earlier generation is stored.
//! - `group_stable_with_every_consumer` (sometimes): all started, live consumers own their
//!   share of a stable generation.
//!
//! Broken variants: `accept-stale-commits` must fail `stale_commit_rejected`;
//! `no-revoke-before-rejoin` `one_owner_per_partition`; `reset-generation-when-empty`
//! `generation_monotonic`; `assignor-drops-partition` `stable_group_assigns_all_partitions`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use clap::ValueEnum;
use stateright::{Model, Property};
use surety_core::actor::{Effect, Node};
use surety_core::errors::Errors;
use surety_core::group::{
    GroupBrokenVariant, GroupConfig, GroupCoordinator, GroupMember, GroupMsg, GroupState,
    GroupTimer, MemberBrokenVariant, MemberConfig, MemberEvent, MemberPhase, MemberTimer,
    TopicPartition,
};

/// Where the coordinator lives, and where its stores go.
const COORDINATOR: Node = Node::Broker(0);

/// Which protocol to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum GroupVariant {
    /// Kafka's protocol.
    Sound,
    /// The coordinator stores commits from any generation. Must fail `stale_commit_rejected`.
    AcceptStaleCommits,
    /// Consumers rejoin without revoking first. Must fail `one_owner_per_partition`.
    NoRevokeBeforeRejoin,
    /// The coordinator restarts generations from 0 when the group empties. Must fail
    /// `generation_monotonic`.
    ResetGenerationWhenEmpty,
    /// The leader's assignor leaves a partition out. Must fail
    /// `stable_group_assigns_all_partitions`.
    AssignorDropsPartition,
}

/// The bound of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupBound {
    /// The protocol.
    pub variant: GroupVariant,
    /// Consumers; all but the last start at once, the last may start at any time.
    pub consumers: usize,
    /// Partitions of the one subscribed topic.
    pub partitions: i32,
    /// Heartbeats each consumer may send in the run.
    pub heartbeats: u8,
    /// Offset commits in the whole run.
    pub commits: u8,
    /// Consumers that may leave the group.
    pub leaves: u8,
    /// Consumers that may crash.
    pub crashes: u8,
    /// Consumers that may pause past their session (a long GC pause, a partition) and resume.
    pub pauses: u8,
}

impl GroupBound {
    /// The default bound for a variant: the sound protocol at the CI bound, a broken one at the
    /// smallest bound where it fails.
    pub fn for_variant(variant: GroupVariant) -> Self {
        // Two consumers (the second starts at any point), two partitions: every rebalance a
        // join, a leave or a pause causes, with a commit racing them. A crash adds little a
        // pause does not (both end in a timed-out member) and multiplies the states; it is a
        // flag away (`--crashes 1`: 52 M states, about 2.5 minutes on two cores).
        let sound = GroupBound {
            variant,
            consumers: 2,
            partitions: 2,
            heartbeats: 2,
            commits: 1,
            leaves: 1,
            crashes: 0,
            pauses: 1,
        };
        match variant {
            GroupVariant::Sound => sound,
            GroupVariant::AcceptStaleCommits => GroupBound {
                heartbeats: 1,
                leaves: 0,
                ..sound
            },
            GroupVariant::NoRevokeBeforeRejoin | GroupVariant::AssignorDropsPartition => {
                GroupBound {
                    heartbeats: 1,
                    leaves: 0,
                    pauses: 0,
                    ..sound
                }
            }
            GroupVariant::ResetGenerationWhenEmpty => GroupBound {
                consumers: 1,
                heartbeats: 0,
                commits: 0,
                pauses: 0,
                ..sound
            },
        }
    }

    /// The property the variant must break, if it is a broken one.
    pub fn expected_violation(&self) -> Option<&'static str> {
        match self.variant {
            GroupVariant::Sound => None,
            GroupVariant::AcceptStaleCommits => Some("stale_commit_rejected"),
            GroupVariant::NoRevokeBeforeRejoin => Some("one_owner_per_partition"),
            GroupVariant::ResetGenerationWhenEmpty => Some("generation_monotonic"),
            GroupVariant::AssignorDropsPartition => Some("stable_group_assigns_all_partitions"),
        }
    }

    /// The model of this bound.
    pub fn into_model(self) -> GroupModel {
        GroupModel { bound: self }
    }
}

/// One consumer as the model runs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Consumer {
    member: GroupMember,
    started: bool,
    alive: bool,
    /// Paused past its session: it does nothing, and the coordinator may time it out.
    paused: bool,
    timers: BTreeSet<MemberTimer>,
    /// Requests on its connection to the coordinator, in order.
    to_coordinator: VecDeque<GroupMsg>,
    /// Answers on its connection, in order.
    to_consumer: VecDeque<GroupMsg>,
    heartbeats_left: u8,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupSystem {
    coordinator: GroupCoordinator,
    coordinator_timers: BTreeSet<GroupTimer>,
    /// Stores on their way to the coordinator's partition and back, in order.
    stores: VecDeque<u64>,
    consumers: Vec<Consumer>,
    commits_left: u8,
    leaves_left: u8,
    crashes_left: u8,
    pauses_left: u8,
    highest_generation: i32,
    generation_regressed: bool,
    stale_commit_stored: bool,
}

/// What can happen next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupAction {
    /// The late consumer starts.
    Start(usize),
    /// The coordinator reads the consumer's oldest request.
    ToCoordinator(usize),
    /// The consumer reads its oldest answer.
    ToConsumer(usize),
    /// The coordinator's partition answers its oldest store.
    Stored,
    /// A coordinator timer fires.
    CoordinatorTimer(GroupTimer),
    /// A consumer's timer fires.
    ConsumerTimer(usize, MemberTimer),
    /// A stable consumer commits its position for what it owns.
    Commit(usize),
    /// A stable consumer leaves (close: revoke, then LeaveGroup).
    Leave(usize),
    /// A consumer crashes: its connection and everything on it are gone.
    Crash(usize),
    /// A consumer stops for longer than its session (it keeps its state and its connection).
    Pause(usize),
    /// A paused consumer goes on where it stopped.
    Resume(usize),
}

/// The model.
pub struct GroupModel {
    /// Its bound.
    pub bound: GroupBound,
}

fn index_of(node: Node) -> Option<usize> {
    match node {
        Node::Client(i) => Some(i as usize),
        _ => None,
    }
}

impl GroupModel {
    fn apply_coordinator(&self, s: &mut GroupSystem, effects: Vec<Effect<GroupTimer, GroupMsg>>) {
        for effect in effects {
            match effect {
                Effect::Send {
                    msg: GroupMsg::Append { write_id, .. },
                    ..
                } => s.stores.push_back(write_id),
                Effect::Send { to, msg } => {
                    if let Some(c) = index_of(to).and_then(|i| s.consumers.get_mut(i))
                        && c.alive
                    {
                        c.to_consumer.push_back(msg);
                    }
                }
                Effect::SetTimer { timer, .. } => {
                    s.coordinator_timers.insert(timer);
                }
                Effect::CancelTimer(timer) => {
                    s.coordinator_timers.remove(&timer);
                }
                Effect::Persist(_) => {}
            }
        }
        let generation = s.coordinator.generation_id();
        if generation < s.highest_generation {
            s.generation_regressed = true;
        }
        s.highest_generation = s.highest_generation.max(generation);
    }

    fn apply_consumer(
        &self,
        s: &mut GroupSystem,
        i: usize,
        effects: Vec<Effect<MemberTimer, GroupMsg>>,
    ) {
        let c = &mut s.consumers[i];
        for effect in effects {
            match effect {
                Effect::Send { msg, .. } => c.to_coordinator.push_back(msg),
                Effect::SetTimer { timer, .. } => {
                    c.timers.insert(timer);
                }
                Effect::CancelTimer(timer) => {
                    c.timers.remove(&timer);
                }
                Effect::Persist(_) => {}
            }
        }
        // The application: it revokes when asked (having committed, which the bound counts
        // separately), and lets the member rejoin.
        while let Some(event) = s.consumers[i].member.poll_event() {
            if matches!(event, MemberEvent::Revoke(_)) {
                let out = s.consumers[i].member.on_revoked();
                self.apply_consumer(s, i, out);
            }
        }
    }

    /// Whether no running consumer is, or is about to be, a member under `member_id`: none
    /// holds it, none has an answer naming it on its way, and none has a request under it on
    /// its way (it crashed, left, paused past its session, or was given another id). Only then may the coordinator time that
    /// member out, timeouts being longer than delays.
    fn gone(s: &GroupSystem, member_id: u32) -> bool {
        let names = |msg: &GroupMsg| match msg {
            GroupMsg::JoinGroupResponse { member_id: m, .. }
            | GroupMsg::JoinGroup { member_id: m, .. } => *m == Some(member_id),
            GroupMsg::SyncGroup { member_id: m, .. } | GroupMsg::Heartbeat { member_id: m, .. } => {
                *m == member_id
            }
            _ => false,
        };
        !s.consumers.iter().any(|c| {
            c.alive
                && !c.paused
                && c.member.phase() != MemberPhase::Left
                && (c.member.member_id() == Some(member_id)
                    || c.to_consumer.iter().any(names)
                    || c.to_coordinator.iter().any(names))
        })
    }

    fn timer_may_fire(s: &GroupSystem, timer: GroupTimer) -> bool {
        match timer {
            GroupTimer::Session(id) => Self::gone(s, id),
            GroupTimer::Join => s
                .coordinator
                .members()
                .iter()
                .filter(|(_, m)| !m.awaiting_join())
                .all(|(&id, _)| Self::gone(s, id)),
            // An id handed out expires only if no live consumer is about to join with it.
            GroupTimer::PendingMember(id) => Self::gone(s, id),
        }
    }
}

impl Model for GroupModel {
    type State = GroupSystem;
    type Action = GroupAction;

    fn init_states(&self) -> Vec<GroupSystem> {
        let b = self.bound;
        let mut group_config = GroupConfig::new(COORDINATOR);
        group_config.broken = match b.variant {
            GroupVariant::AcceptStaleCommits => Some(GroupBrokenVariant::AcceptStaleCommits),
            GroupVariant::ResetGenerationWhenEmpty => {
                Some(GroupBrokenVariant::ResetGenerationWhenEmpty)
            }
            _ => None,
        };
        let topic: Arc<str> = Arc::from("t");
        let mut member_config = MemberConfig::new(COORDINATOR, vec![topic.clone()]);
        member_config.broken = match b.variant {
            GroupVariant::NoRevokeBeforeRejoin => Some(MemberBrokenVariant::NoRevokeBeforeRejoin),
            GroupVariant::AssignorDropsPartition => {
                Some(MemberBrokenVariant::AssignorDropsLastPartition)
            }
            _ => None,
        };
        let member_config = Arc::new(member_config);
        let consumers = (0..b.consumers)
            .map(|_| {
                let mut member = GroupMember::new(member_config.clone());
                member.set_partition_counts(BTreeMap::from([(topic.clone(), b.partitions)]));
                Consumer {
                    member,
                    started: false,
                    alive: true,
                    paused: false,
                    timers: BTreeSet::new(),
                    to_coordinator: VecDeque::new(),
                    to_consumer: VecDeque::new(),
                    heartbeats_left: b.heartbeats,
                }
            })
            .collect();
        let mut s = GroupSystem {
            coordinator: GroupCoordinator::new(Arc::new(group_config)),
            coordinator_timers: BTreeSet::new(),
            stores: VecDeque::new(),
            consumers,
            commits_left: b.commits,
            leaves_left: b.leaves,
            crashes_left: b.crashes,
            pauses_left: b.pauses,
            highest_generation: 0,
            generation_regressed: false,
            stale_commit_stored: false,
        };
        for i in 0..b.consumers.saturating_sub(1) {
            s.consumers[i].started = true;
            let out = s.consumers[i].member.start();
            self.apply_consumer(&mut s, i, out);
        }
        vec![s]
    }

    fn actions(&self, s: &GroupSystem, actions: &mut Vec<GroupAction>) {
        for (i, c) in s.consumers.iter().enumerate() {
            if !c.alive {
                continue;
            }
            if !c.started {
                actions.push(GroupAction::Start(i));
                continue;
            }
            if !c.to_coordinator.is_empty() {
                actions.push(GroupAction::ToCoordinator(i));
            }
            if c.paused {
                actions.push(GroupAction::Resume(i));
                continue;
            }
            if s.pauses_left > 0 && !c.member.owned().is_empty() {
                actions.push(GroupAction::Pause(i));
            }
            if !c.to_consumer.is_empty() {
                actions.push(GroupAction::ToConsumer(i));
            }
            for &timer in &c.timers {
                if timer != MemberTimer::Heartbeat || c.heartbeats_left > 0 {
                    actions.push(GroupAction::ConsumerTimer(i, timer));
                }
            }
            let stable = c.member.phase() == MemberPhase::Stable;
            if stable && s.commits_left > 0 && !c.member.owned().is_empty() {
                actions.push(GroupAction::Commit(i));
            }
            if stable && s.leaves_left > 0 {
                actions.push(GroupAction::Leave(i));
            }
            if s.crashes_left > 0 {
                actions.push(GroupAction::Crash(i));
            }
        }
        if !s.stores.is_empty() {
            actions.push(GroupAction::Stored);
        }
        for &timer in &s.coordinator_timers {
            if Self::timer_may_fire(s, timer) {
                actions.push(GroupAction::CoordinatorTimer(timer));
            }
        }
    }

    fn next_state(&self, last: &GroupSystem, action: GroupAction) -> Option<GroupSystem> {
        let mut s = last.clone();
        match action {
            GroupAction::Start(i) => {
                s.consumers[i].started = true;
                let out = s.consumers[i].member.start();
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::ToCoordinator(i) => {
                let msg = s.consumers[i].to_coordinator.pop_front()?;
                let commit_generation = match &msg {
                    GroupMsg::OffsetCommit { generation_id, .. } => Some(*generation_id),
                    _ => None,
                };
                let stores_before = s.stores.len();
                let out = s.coordinator.on_message(Node::Client(i as u64), msg);
                self.apply_coordinator(&mut s, out);
                if let Some(generation) = commit_generation
                    && generation >= 0
                    && generation < s.coordinator.generation_id()
                    && s.stores.len() > stores_before
                {
                    s.stale_commit_stored = true;
                }
            }
            GroupAction::ToConsumer(i) => {
                let msg = s.consumers[i].to_consumer.pop_front()?;
                let out = s.consumers[i].member.on_message(msg);
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::Stored => {
                let write_id = s.stores.pop_front()?;
                let result = GroupMsg::AppendResult {
                    write_id,
                    error: Errors::None,
                };
                let out = s.coordinator.on_message(COORDINATOR, result);
                self.apply_coordinator(&mut s, out);
            }
            GroupAction::CoordinatorTimer(timer) => {
                s.coordinator_timers.remove(&timer);
                let out = s.coordinator.on_timer(timer);
                self.apply_coordinator(&mut s, out);
            }
            GroupAction::ConsumerTimer(i, timer) => {
                s.consumers[i].timers.remove(&timer);
                if timer == MemberTimer::Heartbeat {
                    s.consumers[i].heartbeats_left -= 1;
                }
                let out = s.consumers[i].member.on_timer(timer);
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::Commit(i) => {
                s.commits_left -= 1;
                let c = &mut s.consumers[i];
                let (member_id, generation_id) = c.member.commit_identity()?;
                let offsets = c.member.owned().iter().map(|tp| (tp.clone(), 1)).collect();
                c.to_coordinator.push_back(GroupMsg::OffsetCommit {
                    correlation_id: 0,
                    member_id: Some(member_id),
                    group_instance_id: None,
                    generation_id,
                    offsets,
                });
            }
            GroupAction::Leave(i) => {
                s.leaves_left -= 1;
                let out = s.consumers[i].member.leave();
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::Pause(i) => {
                s.pauses_left -= 1;
                s.consumers[i].paused = true;
            }
            GroupAction::Resume(i) => s.consumers[i].paused = false,
            GroupAction::Crash(i) => {
                s.crashes_left -= 1;
                let c = &mut s.consumers[i];
                c.alive = false;
                c.to_coordinator.clear();
                c.to_consumer.clear();
                c.timers.clear();
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one_owner_per_partition", |_, s: &GroupSystem| {
                // Among the group's members: a consumer the coordinator has timed out (a
                // zombie, after a pause) may still believe it owns partitions until it hears
                // so, as in Kafka; fencing its commits is `stale_commit_rejected`'s job.
                let mut seen: BTreeSet<&TopicPartition> = BTreeSet::new();
                s.consumers
                    .iter()
                    .filter(|c| {
                        c.alive
                            && c.member
                                .member_id()
                                .is_some_and(|id| s.coordinator.members().contains_key(&id))
                    })
                    .flat_map(|c| c.member.owned())
                    .all(|tp| seen.insert(tp))
            }),
            Property::always(
                "stable_group_assigns_all_partitions",
                |m: &GroupModel, s: &GroupSystem| {
                    let generation = s.coordinator.generation_id();
                    let members: Vec<&Consumer> = s
                        .consumers
                        .iter()
                        .filter(|c| {
                            c.member
                                .member_id()
                                .is_some_and(|id| s.coordinator.members().contains_key(&id))
                        })
                        .collect();
                    let settled = s.coordinator.state() == GroupState::Stable
                        && members.len() == s.coordinator.members().len()
                        && members.iter().all(|c| {
                            c.alive
                                && c.member.phase() == MemberPhase::Stable
                                && c.member.generation_id() == generation
                        });
                    !settled
                        || members
                            .iter()
                            .map(|c| c.member.owned().len())
                            .sum::<usize>()
                            == m.bound.partitions as usize
                },
            ),
            Property::always("generation_monotonic", |_, s: &GroupSystem| {
                !s.generation_regressed
            }),
            Property::always("stale_commit_rejected", |_, s: &GroupSystem| {
                !s.stale_commit_stored
            }),
            Property::sometimes(
                "group_stable_with_every_consumer",
                |m: &GroupModel, s: &GroupSystem| {
                    s.coordinator.state() == GroupState::Stable
                        && s.consumers.iter().all(|c| c.started && c.alive)
                        && s.consumers
                            .iter()
                            .all(|c| c.member.phase() == MemberPhase::Stable)
                        && s.consumers
                            .iter()
                            .map(|c| c.member.owned().len())
                            .sum::<usize>()
                            == m.bound.partitions as usize
                },
            ),
        ]
    }
}

/// A counterexample, one line per step, with each consumer's phase, generation and partitions
/// after it.
pub fn describe_path(path: &[(GroupSystem, Option<GroupAction>)]) -> String {
    let mut out = String::new();
    for (i, window) in path.windows(2).enumerate() {
        let (_, action) = &window[0];
        let (after, _) = &window[1];
        if let Some(action) = action {
            let consumers: Vec<String> = after
                .consumers
                .iter()
                .map(|c| {
                    let owned: Vec<i32> = c.member.owned().iter().map(|tp| tp.partition).collect();
                    format!(
                        "{:?} gen {} owns {owned:?}{}",
                        c.member.phase(),
                        c.member.generation_id(),
                        if c.alive { "" } else { " (crashed)" }
                    )
                })
                .collect();
            out.push_str(&format!(
                "{:>3}. {action:?}\n     coordinator {:?} gen {}; consumers: {}\n",
                i + 1,
                after.coordinator.state(),
                after.coordinator.generation_id(),
                consumers.join("; ")
            ));
        }
    }
    out
}
