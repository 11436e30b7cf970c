//! Consumer groups, model-checked: core's [`GroupCoordinator`] and consumers running
//! core's [`GroupMember`], over one TCP-like connection per consumer (each direction delivers
//! in order; a crash loses both). The coordinator's store (its `__consumer_offsets` partition)
//! answers in order too. Consumers start at once (a first JoinGroup may wait on its connection
//! for any time, so a consumer joins at any point), heartbeat, commit, leave, crash, and pause
//! past their session (then resume) within the bound; the application revokes when asked,
//! committing first.
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
//! - `group_stable_with_every_consumer` (sometimes): all consumers, live, own their share of
//!   a stable generation.
//!
//! Broken variants: `accept-stale-commits` must fail `stale_commit_rejected`;
//! `no-revoke-before-rejoin` `one_owner_per_partition`; `reset-generation-when-empty`
//! `generation_monotonic`; `assignor-drops-partition` `stable_group_assigns_all_partitions`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use clap::ValueEnum;
use stateright::{Model, Property};
use surety_core::actor::{Effect, Node};
use surety_core::errors::Errors;
use surety_core::group::{
    AssignorKind, GroupBrokenVariant, GroupConfig, GroupCoordinator, GroupMember, GroupMsg,
    GroupRecord, GroupState, GroupTimer, LoadedGroup, MemberBrokenVariant, MemberConfig,
    MemberEvent, MemberId, MemberPhase, MemberTimer, TopicPartition,
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
    /// Cooperative consumers whose leader hands an owned partition straight to its new owner.
    /// Must fail `one_owner_per_partition`.
    CooperativeTransfersOwned,
    /// A coordinator that takes the group over loads it from generation 0. Must fail
    /// `generation_monotonic`.
    ForgetGenerationOnLoad,
    /// Static members, and a coordinator that lets one that restarts while its group is
    /// being assigned take its place without a rebalance. Must fail
    /// `stable_group_assigns_all_partitions`.
    StaticReplaceKeepsAssigning,
}

/// The consumers' `partition.assignment.strategy`, and with it the rebalance protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum GroupAssignor {
    /// `range`: eager, every member revokes everything before it rejoins.
    Range,
    /// `cooperative-sticky`: incremental (KIP-429), members keep what they own through a
    /// rebalance and revoke only what moves.
    CooperativeSticky,
}

/// The bound of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupBound {
    /// The protocol.
    pub variant: GroupVariant,
    /// The consumers' assignor.
    pub assignor: GroupAssignor,
    /// Consumers. They start at once; any may join late, its first JoinGroup held up.
    pub consumers: usize,
    /// Partitions of the one subscribed topic.
    pub partitions: i32,
    /// Offset commits in the whole run.
    pub commits: u8,
    /// Consumers that may leave the group.
    pub leaves: u8,
    /// Consumers that may crash.
    pub crashes: u8,
    /// Consumers that may pause past their session (a long GC pause, a partition) and resume.
    pub pauses: u8,
    /// Times the coordinator moves (its broker dies, or another takes over its partition): the
    /// new one loads the group from what its partition holds, and every connection breaks.
    pub moves: u8,
    /// Stores that fail (not written; the coordinator answers what waited on them with an
    /// error, and a generation whose assignment failed to store is rebalanced again).
    pub failures: u8,
    /// Static members (KIP-345): each consumer has its own `group.instance.id`.
    pub statics: bool,
    /// Crashed consumers that start again (a static one under its `group.instance.id`, taking
    /// its old place; a dynamic one as a new member).
    pub restarts: u8,
}

impl GroupBound {
    /// The default bound for a variant: the sound protocol at the CI bound, a broken one at the
    /// smallest bound where it fails.
    pub fn for_variant(variant: GroupVariant) -> Self {
        // Three consumers, two partitions: every rebalance a join, a leave or a crash (a
        // session or a rebalance timing out) causes, with a commit racing them; one consumer
        // is always without a partition, and a rebalance moves partitions between the others.
        let sound = GroupBound {
            variant,
            assignor: GroupAssignor::Range,
            consumers: 3,
            partitions: 2,
            commits: 1,
            leaves: 1,
            crashes: 1,
            pauses: 0,
            moves: 0,
            failures: 0,
            statics: false,
            restarts: 0,
        };
        // The broken variants fail with two consumers, and a pause is what exposes a zombie's
        // commit.
        let two = GroupBound {
            consumers: 2,
            crashes: 0,
            ..sound
        };
        match variant {
            GroupVariant::Sound => sound,
            GroupVariant::AcceptStaleCommits => GroupBound {
                leaves: 0,
                pauses: 1,
                ..two
            },
            GroupVariant::NoRevokeBeforeRejoin | GroupVariant::AssignorDropsPartition => {
                GroupBound { leaves: 0, ..two }
            }
            GroupVariant::ResetGenerationWhenEmpty => GroupBound {
                consumers: 1,
                commits: 0,
                ..two
            },
            GroupVariant::CooperativeTransfersOwned => GroupBound {
                assignor: GroupAssignor::CooperativeSticky,
                leaves: 0,
                commits: 0,
                ..two
            },
            GroupVariant::ForgetGenerationOnLoad => GroupBound {
                leaves: 0,
                commits: 0,
                moves: 1,
                ..two
            },
            GroupVariant::StaticReplaceKeepsAssigning => GroupBound {
                consumers: 1,
                leaves: 0,
                commits: 0,
                crashes: 1,
                restarts: 1,
                statics: true,
                ..two
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
            GroupVariant::CooperativeTransfersOwned => Some("one_owner_per_partition"),
            GroupVariant::ForgetGenerationOnLoad => Some("generation_monotonic"),
            GroupVariant::StaticReplaceKeepsAssigning => {
                Some("stable_group_assigns_all_partitions")
            }
        }
    }

    /// The model of this bound.
    pub fn into_model(self) -> GroupModel {
        let topic: Arc<str> = Arc::from("t");
        let mut config = MemberConfig::new(COORDINATOR, vec![topic.clone()]);
        config.broken = match self.variant {
            GroupVariant::NoRevokeBeforeRejoin => Some(MemberBrokenVariant::NoRevokeBeforeRejoin),
            GroupVariant::AssignorDropsPartition => {
                Some(MemberBrokenVariant::AssignorDropsLastPartition)
            }
            GroupVariant::CooperativeTransfersOwned => {
                Some(MemberBrokenVariant::CooperativeTransfersOwned)
            }
            _ => None,
        };
        config.assignors = vec![match self.assignor {
            GroupAssignor::Range => AssignorKind::Range,
            GroupAssignor::CooperativeSticky => AssignorKind::CooperativeSticky,
        }];
        let fresh = (0..self.consumers)
            .map(|i| {
                let mut config = config.clone();
                if self.statics {
                    config.group_instance_id = Some(Arc::from(format!("consumer-{i}")));
                }
                let mut member = GroupMember::new(Arc::new(config));
                member.set_partition_counts(BTreeMap::from([(topic.clone(), self.partitions)]));
                member
            })
            .collect();
        let mut group_config = GroupConfig::new(COORDINATOR);
        group_config.broken = match self.variant {
            GroupVariant::AcceptStaleCommits => Some(GroupBrokenVariant::AcceptStaleCommits),
            GroupVariant::ResetGenerationWhenEmpty => {
                Some(GroupBrokenVariant::ResetGenerationWhenEmpty)
            }
            GroupVariant::ForgetGenerationOnLoad => {
                Some(GroupBrokenVariant::ForgetGenerationOnLoad)
            }
            GroupVariant::StaticReplaceKeepsAssigning => {
                Some(GroupBrokenVariant::StaticReplaceKeepsAssigning)
            }

            _ => None,
        };
        GroupModel {
            bound: self,
            forget_ignored: true,
            heartbeat_budget: None,
            fresh,
            group_config: Arc::new(group_config),
        }
    }
}

/// An actor's state as the system holds it: shared until changed (a step copies only the
/// actors it changes) and hashed once per change. The search hashes every state it generates
/// twice (its fingerprint and its representative's) and sorts consumers by their hashes, and
/// core's actors carry their configs and encoded subscriptions: copying and hashing them whole
/// made the check three times slower. A state's hash covers each actor's digest instead, which
/// changes whenever the actor does: [`GroupSystem::seal`] recomputes the digests of the
/// actors a step touched, before anyone hashes the state.
#[derive(Clone)]
struct Cached<T> {
    value: Arc<T>,
    /// The hash of `value`, or [`STALE`] since it was last borrowed mutably.
    digest: u64,
}

/// The digest of a [`Cached`] value changed and not yet sealed.
const STALE: u64 = 0;

impl<T: Hash + Clone> Cached<T> {
    fn new(value: T) -> Self {
        let mut cached = Cached {
            value: Arc::new(value),
            digest: STALE,
        };
        cached.seal();
        cached
    }

    fn seal(&mut self) {
        if self.digest == STALE {
            let mut hasher = DefaultHasher::new();
            self.value.hash(&mut hasher);
            self.digest = hasher.finish().max(STALE + 1);
        }
    }
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Clone> std::ops::DerefMut for Cached<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.digest = STALE;
        Arc::make_mut(&mut self.value)
    }
}

impl<T> Hash for Cached<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert_ne!(self.digest, STALE, "a state is sealed before it is hashed");
        state.write_u64(self.digest);
    }
}

impl<T: PartialEq> PartialEq for Cached<T> {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
            && (Arc::ptr_eq(&self.value, &other.value) || self.value == other.value)
    }
}

impl<T: Eq> Eq for Cached<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

/// One consumer as the model runs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Consumer {
    member: GroupMember,
    alive: bool,
    /// Paused past its session: it does nothing, and the coordinator may time it out.
    paused: bool,
    timers: BTreeSet<MemberTimer>,
    /// Requests on its connection to the coordinator, in order.
    to_coordinator: VecDeque<GroupMsg>,
    /// Answers on its connection, in order.
    to_consumer: VecDeque<GroupMsg>,
    /// With a heartbeat budget ([`GroupModel::heartbeat_budget`]), what is left of it.
    heartbeats_left: u8,
    /// What the application is revoking, while it may still commit it (Kafka's commit before
    /// revoking).
    revoking: Vec<TopicPartition>,
    /// Times it started again.
    incarnation: u8,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupSystem {
    coordinator: Cached<GroupCoordinator>,
    coordinator_timers: BTreeSet<GroupTimer>,
    /// Stores on their way to the coordinator's partition and back, in order; with coordinator
    /// moves in the bound, each with what the partition holds once it is written.
    stores: VecDeque<(u64, Option<Arc<[Written]>>)>,
    /// What the coordinator's partition holds (kept only with coordinator moves in the bound).
    durable: Arc<Durable>,
    consumers: Vec<Cached<Consumer>>,
    commits_left: u8,
    leaves_left: u8,
    crashes_left: u8,
    pauses_left: u8,
    moves_left: u8,
    failures_left: u8,
    restarts_left: u8,
    /// The highest generation of the coordinator now running.
    highest_generation: i32,
    generation_regressed: bool,
    stale_commit_stored: bool,
}

impl GroupSystem {
    /// Brings every actor's digest up to date, after a step.
    fn seal(&mut self) {
        self.coordinator.seal();
        for c in &mut self.consumers {
            c.seal();
        }
    }
}

/// What can happen next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupAction {
    /// The coordinator reads the consumer's oldest request.
    ToCoordinator(usize),
    /// The consumer reads its oldest answer.
    ToConsumer(usize),
    /// The coordinator's partition answers its oldest store.
    Stored,
    /// The coordinator's partition fails its oldest store: it is not written.
    StoreFails,
    /// A coordinator timer fires.
    CoordinatorTimer(GroupTimer),
    /// A consumer's timer fires.
    ConsumerTimer(usize, MemberTimer),
    /// A stable consumer commits its position for what it owns, or a revoking one for what
    /// it owns and is revoking (commit before revoking).
    Commit(usize),
    /// The application has revoked what it was asked to: the member joins again.
    Revoked(usize),
    /// A stable consumer leaves (close: revoke, then LeaveGroup).
    Leave(usize),
    /// A consumer crashes: its connection and everything on it are gone.
    Crash(usize),
    /// A crashed consumer starts again, from nothing but its configuration.
    Restart(usize),
    /// A consumer stops for longer than its session (it keeps its state and its connection).
    Pause(usize),
    /// A paused consumer goes on where it stopped.
    Resume(usize),
    /// The coordinator moves: a new one loads the group from its partition (stores not yet
    /// written are lost), and every consumer's connection breaks (what it had in flight is
    /// sent again).
    CoordinatorMove,
}

/// The model.
pub struct GroupModel {
    /// Its bound.
    pub bound: GroupBound,
    /// Whether what no one will read is forgotten: answers a consumer will ignore are dropped
    /// rather than put on its connection ([`GroupModel::ignored`]), and a consumer that left
    /// or crashed keeps only its member id ([`GroupModel::husk`]). Off only to measure what
    /// that saves, and to check that it loses nothing.
    pub forget_ignored: bool,
    /// `None`: a member heartbeats whenever a heartbeat would tell it something (see
    /// [`GroupModel::heartbeat_tells`]), as often as that is. `Some(n)`: whenever its timer
    /// fires, at most `n` times; only to check that the first loses nothing.
    pub heartbeat_budget: Option<u8>,
    /// Each consumer's member before it starts (they differ only in their `group.instance.id`,
    /// if static).
    fresh: Vec<GroupMember>,
    group_config: Arc<GroupConfig>,
}

/// What the coordinator's `__consumer_offsets` partition holds of the group: its last stored
/// generation and its committed offsets, as a coordinator taking the partition over loads them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Durable {
    group: LoadedGroup,
    committed: BTreeMap<TopicPartition, i64>,
}

/// A store's records as the partition keeps them. A generation's record carries each member's
/// subscription and timeouts, as the broker writes Kafka's `GroupMetadataValue` from the
/// coordinator's members when it stores the generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Written {
    Offset(TopicPartition, i64),
    OffsetDeleted(TopicPartition),
    GroupDeleted,
    Group(LoadedGroup),
}

impl Written {
    /// What `records`, stored by `coordinator` as it is now, put in the partition.
    fn of(records: &[GroupRecord], coordinator: &GroupCoordinator) -> Vec<Written> {
        records
            .iter()
            .map(|record| match record {
                GroupRecord::Offset { partition, offset } => {
                    Written::Offset(partition.clone(), *offset)
                }
                GroupRecord::OffsetDeleted { partition } => {
                    Written::OffsetDeleted(partition.clone())
                }
                GroupRecord::GroupDeleted => Written::GroupDeleted,
                GroupRecord::Metadata {
                    generation_id,
                    protocol,
                    leader,
                    assignments,
                } => {
                    let members = assignments
                        .iter()
                        .filter_map(|(id, assignment)| {
                            let protocol = protocol.as_deref().unwrap_or("");
                            let m = coordinator.members().get(id)?;
                            Some(m.stored(*id, protocol, assignment.clone()))
                        })
                        .collect();
                    Written::Group(LoadedGroup {
                        generation_id: *generation_id,
                        protocol_type: Some(Arc::from("consumer")),
                        protocol: protocol.clone(),
                        leader: *leader,
                        members,
                        next_member_id: 0,
                    })
                }
            })
            .collect()
    }
}

impl Durable {
    /// Writes `written`; whether the stored generation went back.
    fn write(&mut self, written: &[Written]) -> bool {
        let mut regressed = false;
        for w in written {
            match w {
                Written::Offset(tp, offset) => {
                    self.committed.insert(tp.clone(), *offset);
                }
                Written::OffsetDeleted(tp) => {
                    self.committed.remove(tp);
                }
                Written::GroupDeleted => *self = Durable::default(),
                Written::Group(group) => {
                    regressed |= group.generation_id < self.group.generation_id;
                    self.group = group.clone();
                }
            }
        }
        regressed
    }
}

/// The address a request comes from, as the coordinator records it: its member id, or
/// [`ANONYMOUS`] for a first JoinGroup, which carries none.
///
/// Not the consumer's position: the coordinator keeps the address of every request it holds
/// (a JoinGroup, a SyncGroup, a commit being stored), so addresses by position would make
/// its state tell consumers apart and renaming them would have to reach into it (it is
/// core's, and private). Addressed by member id, the coordinator's state is the same whichever
/// consumer holds which id, so consumers are interchangeable (see [`representative`]). The
/// two addressings deliver alike because a member id is handed to one consumer only, ever:
/// an answer to it is for that consumer, and one it no longer holds the id for is one it
/// would ignore (its join or sync in flight keeps the id until answered; a heartbeat or
/// commit under a forgotten id is answered to no one it awaits).
///
/// A static member's first JoinGroup carries no member id either, but the coordinator holds it
/// (it joins without the KIP-394 round trip): it is addressed by the consumer's
/// `group.instance.id` and incarnation ([`static_address`]), which is what the consumer's own
/// connection stands for.
fn address(msg: &GroupMsg, from: &Consumer) -> Node {
    if let GroupMsg::JoinGroup {
        member_id: None, ..
    } = msg
        && let Some(node) = static_address(from)
    {
        return node;
    }
    let member_id = match msg {
        GroupMsg::JoinGroup { member_id, .. } | GroupMsg::OffsetCommit { member_id, .. } => {
            *member_id
        }
        GroupMsg::SyncGroup { member_id, .. } | GroupMsg::Heartbeat { member_id, .. } => {
            Some(*member_id)
        }
        GroupMsg::LeaveGroup { members, .. } => members.first().and_then(|m| m.member_id),
        _ => None,
    };
    member_id.map_or(ANONYMOUS, |id| Node::Client(u64::from(id)))
}

/// The address of a request without a member id; the coordinator answers it at once (a first
/// JoinGroup is told `MEMBER_ID_REQUIRED`), to the consumer that sent it. Member ids start at 1.
const ANONYMOUS: Node = Node::Client(0);

/// Where static members' first joins come from: past any member id.
const STATIC_BASE: u64 = 1 << 40;

/// A static consumer's address for a join without a member id: its instance and incarnation, so
/// an answer held for an incarnation that crashed never reaches the one that replaced it.
fn static_address(c: &Consumer) -> Option<Node> {
    let instance = c.member.group_instance_id()?;
    let index: u64 = instance.rsplit('-').next()?.parse().ok()?;
    Some(Node::Client(
        STATIC_BASE + index * 256 + u64::from(c.incarnation),
    ))
}

impl GroupModel {
    /// Applies the coordinator's effects; `sender` is the consumer whose request it is
    /// handling, if any (the one [`ANONYMOUS`] answers go to).
    fn apply_coordinator(
        &self,
        s: &mut GroupSystem,
        sender: Option<usize>,
        effects: Vec<Effect<GroupTimer, GroupMsg>>,
    ) {
        for effect in effects {
            match effect {
                Effect::Send {
                    msg: GroupMsg::Append { write_id, records },
                    ..
                } => {
                    let written = (self.bound.moves > 0)
                        .then(|| Arc::from(Written::of(&records, &s.coordinator)));
                    s.stores.push_back((write_id, written));
                }
                Effect::Send { to, msg } => {
                    let to = if to == ANONYMOUS {
                        assert!(sender.is_some(), "only a request is answered anonymously");
                        sender
                    } else {
                        s.consumers.iter().position(|c| {
                            c.alive
                                && (c.member.member_id().map(|id| Node::Client(id.into()))
                                    == Some(to)
                                    || static_address(c) == Some(to))
                        })
                    };
                    if let Some(c) = to.map(|i| &mut s.consumers[i])
                        && c.alive
                        && !(self.forget_ignored && Self::ignored(&c.member, &msg))
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
        // The application: asked to revoke, it may commit first while a commit is left in the
        // bound (then it finishes revoking as an action of its own); otherwise it revokes at
        // once, which no one can tell from revoking later: its JoinGroup may wait on the
        // connection as long.
        while let Some(event) = s.consumers[i].member.poll_event() {
            match event {
                MemberEvent::Revoke(partitions) if s.commits_left > 0 => {
                    s.consumers[i].revoking = partitions;
                }
                MemberEvent::Revoke(_) => {
                    let out = s.consumers[i].member.on_revoked();
                    self.apply_consumer(s, i, out);
                }
                MemberEvent::Fenced | MemberEvent::Lost(_) | MemberEvent::Assigned(_) => {}
            }
        }
    }

    /// A consumer's member before it starts, with the same configuration as `member`'s (its
    /// `group.instance.id` is what tells consumers' configurations apart).
    fn fresh_like(&self, member: &GroupMember) -> GroupMember {
        self.fresh
            .iter()
            .find(|f| f.group_instance_id() == member.group_instance_id())
            .unwrap_or(&self.fresh[0])
            .clone()
    }

    /// What is left of a consumer that left or crashed: a member that has left under
    /// `member_id` and holds nothing else. Such a consumer never acts again, and all anyone
    /// reads of it is its member id (a member the coordinator still counts, held by a crashed
    /// or departed consumer, keeps the group from being settled); what else it held (its
    /// generation, its answers on the way, a heartbeat in flight, its budget) would only tell
    /// apart states that go on alike. Built through the member's own steps: a first join
    /// answered with the id, then a leave.
    fn husk(&self, of: &GroupMember, member_id: Option<MemberId>) -> GroupMember {
        let mut member = self.fresh_like(of);
        if member_id.is_some() {
            member.start();
            member.on_message(GroupMsg::JoinGroupResponse {
                correlation_id: 1,
                error: Errors::MemberIdRequired,
                generation_id: -1,
                protocol_name: None,
                leader: None,
                member_id,
                members: Vec::new(),
            });
        }
        member.leave();
        debug_assert_eq!(member.member_id(), member_id);
        member
    }

    /// Whether consumer `c`'s heartbeat timer fires now: when it sends a heartbeat whose answer
    /// tells the member something. That is when the member owns its assignment and the group
    /// has moved on without it: a rebalance has begun, or the member is no longer one, or of an
    /// older generation. The coordinator's answer then says so (`REBALANCE_IN_PROGRESS`,
    /// `UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`) and the member joins again.
    ///
    /// Any other heartbeat changes nothing anyone reads: the coordinator only restarts a
    /// session (time is not modelled), and the member only learns that all is well, or, while
    /// it is still syncing, nothing. A heartbeat sent earlier and answered after the group
    /// moved on is the same heartbeat sent once it had: it carries the member's id and
    /// generation, which do not change while the member owns its assignment, and nothing the
    /// coordinator does in between depends on it. So the model lets a member heartbeat
    /// exactly when that tells it something, as often as it does, instead of a budget of
    /// heartbeats spent mostly on states that differ only in how many were left
    /// (`the_reductions_lose_no_state_anyone_reads` compares the two at small bounds).
    fn heartbeat_tells(s: &GroupSystem, c: &Consumer) -> bool {
        let current = s.coordinator.state() == GroupState::Stable
            && c.member.generation_id() == s.coordinator.generation_id()
            && c.member
                .member_id()
                .is_some_and(|id| s.coordinator.members().contains_key(&id));
        c.member.phase() == MemberPhase::Stable
            && !current
            // Not while one is in flight: the timer would only come round again.
            && c.member
                .clone()
                .on_timer(MemberTimer::Heartbeat)
                .iter()
                .any(|e| matches!(e, Effect::Send { .. }))
    }

    /// Whether `member` would ignore `answer`, now and whenever it arrives: then it is not
    /// put on the connection, where it would only split states until read. An answer the member
    /// ignores now matches nothing it has in flight, and never will (correlation ids only grow),
    /// or is one it never reads (commit and leave answers).
    fn ignored(member: &GroupMember, answer: &GroupMsg) -> bool {
        let mut after = member.clone();
        after.on_message(answer.clone()).is_empty() && after == *member
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
        let consumers = (0..b.consumers)
            .map(|i| {
                Cached::new(Consumer {
                    member: self.fresh[i].clone(),
                    alive: true,
                    paused: false,
                    timers: BTreeSet::new(),
                    to_coordinator: VecDeque::new(),
                    to_consumer: VecDeque::new(),
                    heartbeats_left: self.heartbeat_budget.unwrap_or(0),
                    revoking: Vec::new(),
                    incarnation: 0,
                })
            })
            .collect();
        let mut s = GroupSystem {
            coordinator: Cached::new(GroupCoordinator::new(self.group_config.clone())),
            coordinator_timers: BTreeSet::new(),
            stores: VecDeque::new(),
            durable: Arc::default(),
            consumers,
            commits_left: b.commits,
            leaves_left: b.leaves,
            crashes_left: b.crashes,
            pauses_left: b.pauses,
            moves_left: b.moves,
            failures_left: b.failures,
            restarts_left: b.restarts,
            highest_generation: 0,
            generation_regressed: false,
            stale_commit_stored: false,
        };
        // A consumer that starts later is one whose first JoinGroup is still on its way: until
        // the coordinator reads it, nothing tells the two apart.
        for i in 0..b.consumers {
            let out = s.consumers[i].member.start();
            self.apply_consumer(&mut s, i, out);
        }
        s.seal();
        vec![s]
    }

    fn actions(&self, s: &GroupSystem, actions: &mut Vec<GroupAction>) {
        for (i, c) in s.consumers.iter().enumerate() {
            if !c.alive {
                if s.restarts_left > 0 {
                    actions.push(GroupAction::Restart(i));
                }
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
                let fires = match (timer, self.heartbeat_budget) {
                    (MemberTimer::Rejoin, _) => true,
                    (MemberTimer::Heartbeat, None) => Self::heartbeat_tells(s, c),
                    (MemberTimer::Heartbeat, Some(_)) => c.heartbeats_left > 0,
                };
                if fires {
                    actions.push(GroupAction::ConsumerTimer(i, timer));
                }
            }
            let stable = c.member.phase() == MemberPhase::Stable;
            let revoking = c.member.phase() == MemberPhase::Revoking;
            if (stable || revoking)
                && s.commits_left > 0
                && !(c.member.owned().is_empty() && c.revoking.is_empty())
            {
                actions.push(GroupAction::Commit(i));
            }
            if revoking {
                actions.push(GroupAction::Revoked(i));
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
            if s.failures_left > 0 {
                actions.push(GroupAction::StoreFails);
            }
        }
        if s.moves_left > 0 {
            actions.push(GroupAction::CoordinatorMove);
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
            GroupAction::ToCoordinator(i) => {
                let msg = s.consumers[i].to_coordinator.pop_front()?;
                let commit_generation = match &msg {
                    GroupMsg::OffsetCommit { generation_id, .. } => Some(*generation_id),
                    _ => None,
                };
                let stores_before = s.stores.len();
                let from = address(&msg, &s.consumers[i]);
                let out = s.coordinator.on_message(from, msg);
                self.apply_coordinator(&mut s, Some(i), out);
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
            GroupAction::Stored | GroupAction::StoreFails => {
                let (write_id, written) = s.stores.pop_front()?;
                let error = if action == GroupAction::StoreFails {
                    // Not written (the partition lost its leadership, or its replicas).
                    s.failures_left -= 1;
                    Errors::NotEnoughReplicas
                } else {
                    if let Some(written) = written
                        && Arc::make_mut(&mut s.durable).write(&written)
                    {
                        s.generation_regressed = true;
                    }
                    Errors::None
                };
                let result = GroupMsg::AppendResult { write_id, error };
                let out = s.coordinator.on_message(COORDINATOR, result);
                self.apply_coordinator(&mut s, None, out);
            }
            GroupAction::CoordinatorTimer(timer) => {
                s.coordinator_timers.remove(&timer);
                let out = s.coordinator.on_timer(timer);
                self.apply_coordinator(&mut s, None, out);
            }
            GroupAction::ConsumerTimer(i, timer) => {
                s.consumers[i].timers.remove(&timer);
                if timer == MemberTimer::Heartbeat && self.heartbeat_budget.is_some() {
                    s.consumers[i].heartbeats_left -= 1;
                }
                let out = s.consumers[i].member.on_timer(timer);
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::Commit(i) => {
                s.commits_left -= 1;
                let c = &mut s.consumers[i];
                let (member_id, generation_id) = c.member.commit_identity()?;
                let offsets = c
                    .member
                    .owned()
                    .iter()
                    .chain(&c.revoking)
                    .map(|tp| (tp.clone(), 1))
                    .collect();
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
                if self.forget_ignored {
                    let c = &mut s.consumers[i];
                    c.member = self.husk(&c.member, c.member.member_id());
                    c.to_consumer.clear();
                    c.heartbeats_left = 0;
                }
            }
            GroupAction::Revoked(i) => {
                s.consumers[i].revoking.clear();
                let out = s.consumers[i].member.on_revoked();
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::Pause(i) => {
                s.pauses_left -= 1;
                s.consumers[i].paused = true;
            }
            GroupAction::Resume(i) => s.consumers[i].paused = false,
            GroupAction::CoordinatorMove => {
                s.moves_left -= 1;
                let mut stored = s.durable.group.clone();
                // Kafka's member ids are unique names, never handed out twice; ours are
                // numbers, so the new coordinator numbers past every id a consumer holds.
                stored.next_member_id = s
                    .consumers
                    .iter()
                    .filter_map(|c| c.member.member_id())
                    .max()
                    .map_or(1, |id| id + 1);
                let (coordinator, out) = GroupCoordinator::loaded(
                    self.group_config.clone(),
                    stored,
                    s.durable.committed.clone(),
                );
                s.coordinator = Cached::new(coordinator);
                s.coordinator_timers.clear();
                s.stores.clear();
                // A new coordinator: its generation goes on from the stored one, which
                // `Stored` checks never goes back.
                s.highest_generation = s.coordinator.generation_id();
                self.apply_coordinator(&mut s, None, out);
                for i in 0..s.consumers.len() {
                    if !s.consumers[i].alive {
                        continue;
                    }
                    let c = &mut s.consumers[i];
                    c.to_coordinator.clear();
                    c.to_consumer.clear();
                    let out = c.member.on_disconnect();
                    self.apply_consumer(&mut s, i, out);
                }
            }
            GroupAction::Restart(i) => {
                s.restarts_left -= 1;
                let c = &mut s.consumers[i];
                c.member = self.fresh_like(&c.member);
                c.alive = true;
                c.paused = false;
                c.incarnation += 1;
                c.heartbeats_left = self.heartbeat_budget.unwrap_or(0);
                let out = c.member.start();
                self.apply_consumer(&mut s, i, out);
            }
            GroupAction::Crash(i) => {
                s.crashes_left -= 1;
                let c = &mut s.consumers[i];
                c.alive = false;
                c.to_coordinator.clear();
                c.to_consumer.clear();
                c.timers.clear();
                c.revoking.clear();
                if self.forget_ignored {
                    c.member = self.husk(&c.member, c.member.member_id());
                    c.heartbeats_left = 0;
                }
            }
        }
        s.seal();
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
                        .map(|c| &**c)
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
                        && s.consumers.iter().all(|c| c.alive)
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

/// What anyone reads of a state: the coordinator whole but for correlation ids, and of each
/// consumer what the properties read, in no order. Two models that reach the same of these
/// check the same. (A correlation id only pairs an answer with its request; it counts the
/// requests a member sent, heartbeats among them.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Observed {
    coordinator: String,
    coordinator_timers: BTreeSet<GroupTimer>,
    stores: VecDeque<u64>,
    durable: Durable,
    consumers: Vec<ObservedConsumer>,
    budgets: [u8; 7],
    flags: (i32, bool, bool),
}

/// A consumer as the properties read it: the generation only of one still running.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ObservedConsumer {
    alive: bool,
    paused: bool,
    phase: MemberPhase,
    member_id: Option<MemberId>,
    generation: Option<i32>,
    owned: Vec<TopicPartition>,
}

impl GroupSystem {
    /// Whether a consumer that is revoking has committed and its commit is stored: the
    /// coordinator, in `PreparingRebalance`, still takes the generation the consumer is leaving.
    pub fn stores_a_commit_made_while_revoking(&self) -> bool {
        self.consumers.iter().any(|c| {
            c.member.phase() == MemberPhase::Revoking
                && !c.revoking.is_empty()
                && !c
                    .to_coordinator
                    .iter()
                    .any(|m| matches!(m, GroupMsg::OffsetCommit { .. }))
        }) && self.commits_left == 0
            && !self.stores.is_empty()
    }

    /// What anyone reads of it.
    pub fn observed(&self) -> Observed {
        let mut consumers: Vec<ObservedConsumer> = self
            .consumers
            .iter()
            .map(|c| {
                let running = c.alive && c.member.phase() != MemberPhase::Left;
                ObservedConsumer {
                    alive: c.alive,
                    paused: c.paused,
                    phase: if c.alive {
                        c.member.phase()
                    } else {
                        MemberPhase::Left
                    },
                    member_id: c.member.member_id(),
                    generation: running.then(|| c.member.generation_id()),
                    owned: if c.alive {
                        c.member.owned().to_vec()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        consumers.sort();
        let mut coordinator = String::new();
        for (i, part) in format!("{:?}", *self.coordinator)
            .split("correlation_id: ")
            .enumerate()
        {
            coordinator.push_str(if i == 0 {
                part
            } else {
                part.trim_start_matches(|c: char| c.is_ascii_digit())
            });
        }
        Observed {
            coordinator,
            coordinator_timers: self.coordinator_timers.clone(),
            stores: self.stores.iter().map(|(id, _)| *id).collect(),
            durable: (*self.durable).clone(),
            consumers,
            budgets: [
                self.commits_left,
                self.leaves_left,
                self.crashes_left,
                self.pauses_left,
                self.moves_left,
                self.failures_left,
                self.restarts_left,
            ],
            flags: (
                self.highest_generation,
                self.generation_regressed,
                self.stale_commit_stored,
            ),
        }
    }
}

/// The state with its consumers in a canonical order, for symmetry reduction: consumers are
/// interchangeable, because nothing in the model depends on a consumer's position. Requests are addressed by
/// member id ([`address`]), so the coordinator's state holds no positions, and every budget
/// is either global or the consumer's own. Sorting by a hash of each consumer makes any two
/// orderings of the same consumers equal (a hash collision only costs some reduction, the
/// result being a reordering of `s` whatever the order).
pub fn representative(s: &GroupSystem) -> GroupSystem {
    let mut canonical = s.clone();
    canonical.consumers.sort_by_key(|c| c.digest);
    canonical
}

/// The state with consumer `i` moved to position `new_index[i]` (`new_index` a permutation).
pub fn reordered(s: &GroupSystem, new_index: &[usize]) -> GroupSystem {
    assert_eq!(
        new_index.len(),
        s.consumers.len(),
        "a reordering places every consumer"
    );
    let mut moved = s.clone();
    for (old, &new) in new_index.iter().enumerate() {
        moved.consumers[new] = s.consumers[old].clone();
    }
    moved
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
                    // What is left of a consumer that left or crashed is its member id.
                    let id = c
                        .member
                        .member_id()
                        .map_or("-".to_string(), |m| m.to_string());
                    if !c.alive {
                        return format!("crashed (member {id})");
                    }
                    if c.member.phase() == MemberPhase::Left {
                        return format!("Left (member {id})");
                    }
                    let owned: Vec<i32> = c.member.owned().iter().map(|tp| tp.partition).collect();
                    format!(
                        "{:?} gen {} owns {owned:?}{}",
                        c.member.phase(),
                        c.member.generation_id(),
                        if c.paused { " (paused)" } else { "" }
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
