//! Scenario tests of the group coordinator, driven by a tiny driver: every client is a
//! connection, stores succeed at once unless a test says otherwise, and timers fire only when a
//! test fires them (the model checker explores the other orders).

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::actor::{Effect, Node};
use crate::errors::Errors;

const STORAGE: Node = Node::Broker(0);

struct Driver {
    coordinator: GroupCoordinator,
    /// Answers to clients, in order: (client, message).
    answers: Vec<(Node, GroupMsg)>,
    timers: Vec<GroupTimer>,
    correlation: u32,
    /// Whether stores are answered at once.
    auto_store: bool,
    appends: Vec<u64>,
}

fn client(n: u64) -> Node {
    Node::Client(n)
}

fn range() -> Vec<Protocol> {
    vec![Protocol {
        name: Arc::from("range"),
        metadata: Bytes::from_static(b"sub"),
    }]
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition {
        topic: Arc::from("t"),
        partition,
    }
}

impl Driver {
    fn new(config: GroupConfig) -> Self {
        Driver {
            coordinator: GroupCoordinator::new(Arc::new(config)),
            answers: Vec::new(),
            timers: Vec::new(),
            correlation: 0,
            auto_store: true,
            appends: Vec::new(),
        }
    }

    fn apply(&mut self, effects: Vec<Effect<GroupTimer, GroupMsg>>) {
        for effect in effects {
            match effect {
                Effect::Send {
                    to,
                    msg: GroupMsg::Append { write_id, .. },
                } => {
                    assert_eq!(to, STORAGE);
                    if self.auto_store {
                        let result = GroupMsg::AppendResult {
                            write_id,
                            error: Errors::None,
                        };
                        let out = self.coordinator.on_message(STORAGE, result);
                        self.apply(out);
                    } else {
                        self.appends.push(write_id);
                    }
                }
                Effect::Send { to, msg } => self.answers.push((to, msg)),
                Effect::SetTimer { timer, .. } => {
                    self.timers.retain(|t| *t != timer);
                    self.timers.push(timer);
                }
                Effect::CancelTimer(timer) => self.timers.retain(|t| *t != timer),
                Effect::Persist(_) => {}
            }
        }
    }

    fn send(&mut self, from: u64, msg: impl FnOnce(u32) -> GroupMsg) -> u32 {
        self.correlation += 1;
        let correlation = self.correlation;
        let out = self.coordinator.on_message(client(from), msg(correlation));
        self.apply(out);
        correlation
    }

    fn fire(&mut self, timer: GroupTimer) {
        assert!(self.timers.contains(&timer), "{timer:?} is not set");
        self.timers.retain(|t| *t != timer);
        let out = self.coordinator.on_timer(timer);
        self.apply(out);
    }

    /// The answer to `correlation`, taken out of the inbox.
    fn answer(&mut self, correlation: u32) -> GroupMsg {
        let at = self
            .answers
            .iter()
            .position(|(_, m)| correlation_of(m) == Some(correlation))
            .unwrap_or_else(|| panic!("no answer to {correlation}: {:?}", self.answers));
        self.answers.remove(at).1
    }

    fn unanswered(&self, correlation: u32) -> bool {
        !self
            .answers
            .iter()
            .any(|(_, m)| correlation_of(m) == Some(correlation))
    }

    fn join(&mut self, from: u64, member_id: Option<MemberId>) -> u32 {
        self.join_as(from, member_id, false)
    }

    /// A static member's JoinGroup, as `group.instance.id` `instance`.
    fn static_join(&mut self, from: u64, member_id: Option<MemberId>, instance: &str) -> u32 {
        self.send(from, |correlation_id| GroupMsg::JoinGroup {
            correlation_id,
            member_id,
            group_instance_id: Some(Arc::from(instance)),
            require_known_member_id: true,
            protocol_type: Arc::from("consumer"),
            protocols: range(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
        })
    }

    /// A JoinGroup v4+ (`require_known_member_id`) or older.
    fn join_as(&mut self, from: u64, member_id: Option<MemberId>, v4: bool) -> u32 {
        self.send(from, |correlation_id| GroupMsg::JoinGroup {
            correlation_id,
            group_instance_id: None,
            member_id,
            require_known_member_id: v4,
            protocol_type: Arc::from("consumer"),
            protocols: range(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
        })
    }

    /// (error, generation, member id, leader, members the answer lists).
    fn joined(
        &mut self,
        correlation: u32,
    ) -> (Errors, i32, Option<MemberId>, Option<MemberId>, usize) {
        match self.answer(correlation) {
            GroupMsg::JoinGroupResponse {
                error,
                generation_id,
                member_id,
                leader,
                members,
                ..
            } => (error, generation_id, member_id, leader, members.len()),
            other => panic!("{other:?}"),
        }
    }

    fn sync(
        &mut self,
        from: u64,
        member_id: MemberId,
        generation_id: i32,
        assignments: Vec<(MemberId, Bytes)>,
    ) -> u32 {
        self.send(from, |correlation_id| GroupMsg::SyncGroup {
            correlation_id,
            group_instance_id: None,
            member_id,
            generation_id,
            expected_protocol: None,
            assignments,
        })
    }

    fn synced(&mut self, correlation: u32) -> (Errors, Bytes) {
        match self.answer(correlation) {
            GroupMsg::SyncGroupResponse {
                error, assignment, ..
            } => (error, assignment),
            other => panic!("{other:?}"),
        }
    }

    fn heartbeat(&mut self, from: u64, member_id: MemberId, generation_id: i32) -> Errors {
        let c = self.send(from, |correlation_id| GroupMsg::Heartbeat {
            correlation_id,
            group_instance_id: None,
            member_id,
            generation_id,
        });
        match self.answer(c) {
            GroupMsg::HeartbeatResponse { error, .. } => error,
            other => panic!("{other:?}"),
        }
    }

    fn commit(
        &mut self,
        from: u64,
        member_id: Option<MemberId>,
        generation_id: i32,
        offset: i64,
    ) -> u32 {
        self.send(from, |correlation_id| GroupMsg::OffsetCommit {
            correlation_id,
            group_instance_id: None,
            member_id,
            generation_id,
            offsets: vec![(tp(0), offset)],
        })
    }

    fn committed(&mut self, correlation: u32) -> Errors {
        match self.answer(correlation) {
            GroupMsg::OffsetCommitResponse { error, .. } => error,
            other => panic!("{other:?}"),
        }
    }

    /// Three members join a new group within its initial delay and sync; returns their ids.
    fn stable_group_of_three(&mut self) -> [MemberId; 3] {
        let joins = [self.join(1, None), self.join(2, None), self.join(3, None)];
        assert!(
            joins.iter().all(|&c| self.unanswered(c)),
            "held for the initial delay"
        );
        self.fire(GroupTimer::Join);
        assert!(
            joins.iter().all(|&c| self.unanswered(c)),
            "members joined during the delay: it runs once more"
        );
        self.fire(GroupTimer::Join);
        let answers: Vec<_> = joins.iter().map(|&c| self.joined(c)).collect();
        let ids: Vec<MemberId> = answers.iter().map(|a| a.2.unwrap()).collect();
        for (error, generation, _, leader, _) in &answers {
            assert_eq!(
                (*error, *generation, *leader),
                (Errors::None, 1, Some(ids[0]))
            );
        }
        let listed: Vec<usize> = answers.iter().map(|a| a.4).collect();
        assert_eq!(listed, [3, 0, 0], "only the leader learns the members");
        let waiting = [
            self.sync(2, ids[1], 1, vec![]),
            self.sync(3, ids[2], 1, vec![]),
        ];
        assert!(waiting.iter().all(|&c| self.unanswered(c)));
        let plan = ids
            .iter()
            .map(|&m| (m, Bytes::from(format!("for {m}"))))
            .collect();
        let leader = self.sync(1, ids[0], 1, plan);
        for (c, m) in [(leader, ids[0]), (waiting[0], ids[1]), (waiting[1], ids[2])] {
            assert_eq!(
                self.synced(c),
                (Errors::None, Bytes::from(format!("for {m}")))
            );
        }
        assert_eq!(self.coordinator.state(), GroupState::Stable);
        [ids[0], ids[1], ids[2]]
    }
}

fn correlation_of(msg: &GroupMsg) -> Option<u32> {
    match msg {
        GroupMsg::JoinGroupResponse { correlation_id, .. }
        | GroupMsg::SyncGroupResponse { correlation_id, .. }
        | GroupMsg::HeartbeatResponse { correlation_id, .. }
        | GroupMsg::LeaveGroupResponse { correlation_id, .. }
        | GroupMsg::OffsetCommitResponse { correlation_id, .. }
        | GroupMsg::OffsetFetchResponse { correlation_id, .. }
        | GroupMsg::DeleteGroupResponse { correlation_id, .. }
        | GroupMsg::OffsetDeleteResponse { correlation_id, .. } => Some(*correlation_id),
        _ => None,
    }
}

#[test]
fn a_new_group_waits_its_initial_delay_then_assigns_everyone_the_leaders_plan() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    assert_eq!(d.heartbeat(2, m2, 1), Errors::None);

    // A fourth member: the group rebalances, members learn it from their heartbeats, and the
    // generation forms once all have joined again (no waiting for the timeout).
    let fourth = d.join(4, None);
    assert_eq!(d.coordinator.state(), GroupState::PreparingRebalance);
    assert_eq!(d.heartbeat(1, m1, 1), Errors::RebalanceInProgress);
    let rejoins = [d.join(1, Some(m1)), d.join(2, Some(m2))];
    assert!(d.unanswered(rejoins[0]), "m3 has not joined yet");
    let last = d.join(3, Some(m3));
    for c in [rejoins[0], rejoins[1], last, fourth] {
        let (error, generation, _, leader, _) = d.joined(c);
        assert_eq!((error, generation, leader), (Errors::None, 2, Some(m1)));
    }
    assert_eq!(d.coordinator.state(), GroupState::CompletingRebalance);
    // The old generation is fenced.
    let stale = d.sync(3, m3, 1, vec![]);
    assert_eq!(d.synced(stale).0, Errors::IllegalGeneration);
    assert_eq!(d.heartbeat(3, m3, 1), Errors::IllegalGeneration);
    assert_eq!(d.heartbeat(3, m3, 2), Errors::None);
}

#[test]
fn the_initial_delay_runs_again_while_members_keep_joining_up_to_the_rebalance_timeout() {
    // A rebalance timeout of 60 s and a delay of 25 s: 25 s, then 25 s more, then the 10 s
    // left, however many keep joining.
    let mut d = Driver::new(GroupConfig {
        initial_rebalance_delay_ms: 25_000,
        ..GroupConfig::new(STORAGE)
    });
    let first = d.join(1, None);
    let mut waits = Vec::new();
    for from in 2.. {
        d.join(from, None);
        let out = d.coordinator.on_timer(GroupTimer::Join);
        match out.as_slice() {
            [Effect::SetTimer { after_ms, .. }] => waits.push(*after_ms),
            _ => {
                d.apply(out);
                break;
            }
        }
    }
    assert_eq!(waits, [25_000, 10_000]);
    assert_eq!(d.joined(first).0, Errors::None);
    assert_eq!(d.coordinator.generation_id(), 1);

    // Nobody joins during the delay: it runs once.
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let only = d.join(1, None);
    d.fire(GroupTimer::Join);
    assert_eq!(d.joined(only).1, 1);
}

#[test]
fn offset_commits_are_fenced_by_member_and_generation_and_answered_once_stored() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    // Generation 1 is current: its members commit.
    let ok = d.commit(1, Some(m1), 1, 42);
    assert_eq!(d.committed(ok), Errors::None);
    // A member leaves; the rest must rejoin, and until they have, generation 1's commits are
    // still accepted (its members still own their partitions) ...
    let c = d.send(2, |correlation_id| GroupMsg::LeaveGroup {
        correlation_id,
        members: vec![Leaving::member(m2)],
    });
    assert!(
        matches!(d.answer(c), GroupMsg::LeaveGroupResponse { members, .. } if members == vec![Errors::None])
    );
    let during = d.commit(1, Some(m1), 1, 43);
    assert_eq!(d.committed(during), Errors::None);
    // ... but not from the member that left, nor from nobody into a group with members.
    let gone = d.commit(2, Some(m2), 1, 44);
    assert_eq!(d.committed(gone), Errors::UnknownMemberId);
    let simple = d.commit(9, None, -1, 45);
    assert_eq!(d.committed(simple), Errors::UnknownMemberId);
    // The next generation forms once the rest have joined; generation 1's commits are stale.
    let a = d.join(1, Some(m1));
    let b = d.join(3, Some(m3));
    assert_eq!((d.joined(a).1, d.joined(b).1), (2, 2));
    let stale = d.commit(1, Some(m1), 1, 46);
    assert_eq!(d.committed(stale), Errors::IllegalGeneration);
    // Formed but not yet assigned: even the current generation waits.
    let early = d.commit(1, Some(m1), 2, 47);
    assert_eq!(d.committed(early), Errors::RebalanceInProgress);
    let fetch = d.send(1, |correlation_id| GroupMsg::OffsetFetch {
        correlation_id,
        partitions: Some(vec![tp(0), tp(1)]),
    });
    assert!(
        matches!(d.answer(fetch), GroupMsg::OffsetFetchResponse { offsets, .. }
        if offsets == vec![(tp(0), 43), (tp(1), -1)])
    );
}

#[test]
fn a_commit_is_answered_only_after_its_store_and_a_failed_store_is_reported() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    d.auto_store = false;
    // No members: a consumer that assigns itself commits with no generation.
    let c = d.commit(9, None, -1, 10);
    assert!(d.unanswered(c), "held until stored");
    let write = d.appends.remove(0);
    let failed = d.coordinator.on_message(
        STORAGE,
        GroupMsg::AppendResult {
            write_id: write,
            error: Errors::NotLeaderOrFollower,
        },
    );
    d.apply(failed);
    assert_eq!(d.committed(c), Errors::NotCoordinator);
    assert!(
        d.coordinator.committed().is_empty(),
        "nothing stored, nothing committed"
    );
}

#[test]
fn the_broken_variant_accepts_a_stale_generations_commit() {
    let mut config = GroupConfig::new(STORAGE);
    config.broken = Some(GroupBrokenVariant::AcceptStaleCommits);
    let mut d = Driver::new(config);
    let [m1, ..] = d.stable_group_of_three();
    let _ = d.join(4, None);
    d.fire(GroupTimer::Join);
    assert_eq!(d.coordinator.generation_id(), 2);
    let stale = d.commit(1, Some(m1), 1, 99);
    assert_eq!(d.committed(stale), Errors::None);
}

#[test]
fn a_silent_member_is_removed_when_its_session_ends_and_the_rest_rebalance() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    d.fire(GroupTimer::Session(m3));
    assert_eq!(d.coordinator.state(), GroupState::PreparingRebalance);
    assert!(!d.coordinator.members().contains_key(&m3));
    assert_eq!(d.heartbeat(1, m1, 1), Errors::RebalanceInProgress);
    let a = d.join(1, Some(m1));
    let b = d.join(2, Some(m2));
    assert_eq!(d.joined(a).1, 2);
    assert_eq!(d.joined(b).1, 2);
    assert_eq!(d.heartbeat(3, m3, 1), Errors::UnknownMemberId);
}

#[test]
fn a_member_that_misses_the_rebalance_timeout_is_left_out_of_the_generation() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    let _ = d.join(4, None);
    let a = d.join(1, Some(m1));
    let b = d.join(2, Some(m2));
    d.fire(GroupTimer::Join);
    let (_, generation, ..) = d.joined(a);
    assert_eq!(generation, 2);
    assert_eq!(d.joined(b).1, 2);
    assert_eq!(d.coordinator.members().len(), 3, "m3 did not join in time");
    let late = d.join(3, Some(m3));
    assert_eq!(d.joined(late).0, Errors::UnknownMemberId);
}

#[test]
fn a_v4_member_is_given_its_id_first_and_joins_with_it() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let first = d.join_as(1, None, true);
    let (error, _, id, ..) = d.joined(first);
    assert_eq!(error, Errors::MemberIdRequired);
    let id = id.unwrap();
    assert!(
        d.coordinator.members().is_empty(),
        "not a member until it joins with the id"
    );
    let second = d.join(1, Some(id));
    d.fire(GroupTimer::Join);
    assert_eq!(d.joined(second).2, Some(id));
    // An id given out and never used expires.
    let unused = d.join_as(2, None, true);
    let other = d.joined(unused).2.unwrap();
    d.fire(GroupTimer::PendingMember(other));
    let stale = d.join(2, Some(other));
    assert_eq!(d.joined(stale).0, Errors::UnknownMemberId);
}

#[test]
fn joins_are_checked_for_session_timeout_and_a_shared_protocol() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let short = d.send(1, |correlation_id| GroupMsg::JoinGroup {
        correlation_id,
        group_instance_id: None,
        member_id: None,
        require_known_member_id: false,
        protocol_type: Arc::from("consumer"),
        protocols: range(),
        session_timeout_ms: 10,
        rebalance_timeout_ms: 60_000,
    });
    assert_eq!(d.joined(short).0, Errors::InvalidSessionTimeout);
    let _ = d.join(1, None);
    let other = d.send(2, |correlation_id| GroupMsg::JoinGroup {
        correlation_id,
        group_instance_id: None,
        member_id: None,
        require_known_member_id: false,
        protocol_type: Arc::from("consumer"),
        protocols: vec![Protocol {
            name: Arc::from("roundrobin"),
            metadata: Bytes::new(),
        }],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 60_000,
    });
    assert_eq!(d.joined(other).0, Errors::InconsistentGroupProtocol);
}

#[test]
fn when_the_last_member_leaves_the_group_is_empty_and_takes_simple_commits() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    let c = d.send(1, |correlation_id| GroupMsg::LeaveGroup {
        correlation_id,
        members: [m1, m2, m3].map(Leaving::member).to_vec(),
    });
    let _ = d.answer(c);
    assert_eq!(d.coordinator.state(), GroupState::Empty);
    assert_eq!(d.coordinator.generation_id(), 2);
    let simple = d.commit(9, None, -1, 7);
    assert_eq!(d.committed(simple), Errors::None);
    assert_eq!(d.coordinator.committed().get(&tp(0)), Some(&7));
}

#[test]
fn only_an_empty_group_is_deleted_and_its_offsets_go_with_it() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    let c = d.commit(1, Some(m1), 1, 5);
    assert_eq!(d.committed(c), Errors::None);
    let delete = |d: &mut Driver| {
        let c = d.send(9, |correlation_id| GroupMsg::DeleteGroup { correlation_id });
        match d.answer(c) {
            GroupMsg::DeleteGroupResponse { error, .. } => error,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(delete(&mut d), Errors::NonEmptyGroup);
    let c = d.send(1, |correlation_id| GroupMsg::LeaveGroup {
        correlation_id,
        members: [m1, m2, m3].map(Leaving::member).to_vec(),
    });
    let _ = d.answer(c);
    assert_eq!(delete(&mut d), Errors::None);
    assert_eq!(d.coordinator.state(), GroupState::Dead);
    assert!(d.coordinator.committed().is_empty());
    assert_eq!(delete(&mut d), Errors::GroupIdNotFound);
}

#[test]
fn offsets_of_a_subscribed_topic_stay_while_the_group_has_members() {
    use super::consumer_protocol::Subscription;
    let mut d = Driver::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::new(STORAGE)
    });
    let subscription = Subscription {
        topics: vec![Arc::from("t")],
        ..Subscription::default()
    }
    .encode();
    let c = d.send(1, |correlation_id| GroupMsg::JoinGroup {
        correlation_id,
        group_instance_id: None,
        member_id: None,
        require_known_member_id: false,
        protocol_type: Arc::from("consumer"),
        protocols: vec![Protocol {
            name: Arc::from("range"),
            metadata: subscription,
        }],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
    });
    let GroupMsg::JoinGroupResponse {
        member_id: Some(m),
        generation_id,
        ..
    } = d.answer(c)
    else {
        panic!("joined")
    };
    let c = d.sync(1, m, generation_id, vec![(m, Bytes::new())]);
    assert_eq!(d.synced(c).0, Errors::None);
    let c = d.commit(1, Some(m), generation_id, 3);
    assert_eq!(d.committed(c), Errors::None);
    let other = TopicPartition {
        topic: Arc::from("u"),
        partition: 0,
    };
    let c = d.send(9, |correlation_id| GroupMsg::OffsetDelete {
        correlation_id,
        partitions: vec![tp(0), other.clone()],
    });
    match d.answer(c) {
        GroupMsg::OffsetDeleteResponse {
            error, partitions, ..
        } => {
            assert_eq!(error, Errors::None);
            assert_eq!(
                partitions,
                vec![
                    (tp(0), Errors::GroupSubscribedToTopic),
                    (other, Errors::None)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.coordinator.committed().get(&tp(0)), Some(&3));
}

#[test]
fn a_static_member_that_restarts_keeps_its_assignment_without_a_rebalance() {
    let mut d = Driver::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::new(STORAGE)
    });
    // A new static member joins at once: no MEMBER_ID_REQUIRED round trip.
    let c = d.static_join(1, None, "a");
    let (error, generation, Some(a), _, _) = d.joined(c) else {
        panic!("joined")
    };
    assert_eq!((error, generation), (Errors::None, 1));
    let c = d.sync(1, a, 1, vec![(a, Bytes::from_static(b"p0"))]);
    assert_eq!(d.synced(c), (Errors::None, Bytes::from_static(b"p0")));

    // It restarts and joins again without its member id: a new id, the same generation and
    // assignment, and the group stays stable.
    let c = d.static_join(2, None, "a");
    let (error, generation, Some(a2), leader, _) = d.joined(c) else {
        panic!("joined")
    };
    assert_ne!(a2, a);
    assert_eq!((error, generation, leader), (Errors::None, 1, Some(a2)));
    assert_eq!(d.coordinator.state(), GroupState::Stable);
    let c = d.send(2, |correlation_id| GroupMsg::SyncGroup {
        correlation_id,
        member_id: a2,
        group_instance_id: Some(Arc::from("a")),
        generation_id: 1,
        expected_protocol: None,
        assignments: vec![],
    });
    assert_eq!(d.synced(c), (Errors::None, Bytes::from_static(b"p0")));

    // The old incarnation is fenced, whatever it sends.
    let c = d.send(1, |correlation_id| GroupMsg::Heartbeat {
        correlation_id,
        member_id: a,
        group_instance_id: Some(Arc::from("a")),
        generation_id: 1,
    });
    assert!(matches!(
        d.answer(c),
        GroupMsg::HeartbeatResponse {
            error: Errors::FencedInstanceId,
            ..
        }
    ));
    let c = d.static_join(1, Some(a), "a");
    assert_eq!(d.joined(c).0, Errors::FencedInstanceId);
    let c = d.send(1, |correlation_id| GroupMsg::OffsetCommit {
        correlation_id,
        member_id: Some(a),
        group_instance_id: Some(Arc::from("a")),
        generation_id: 1,
        offsets: vec![(tp(0), 1)],
    });
    assert_eq!(d.committed(c), Errors::FencedInstanceId);

    // It leaves by its instance id; a stale member id naming it is fenced, not obeyed.
    let leave = |d: &mut Driver, member_id| {
        let c = d.send(9, |correlation_id| GroupMsg::LeaveGroup {
            correlation_id,
            members: vec![Leaving {
                member_id,
                group_instance_id: Some(Arc::from("a")),
            }],
        });
        match d.answer(c) {
            GroupMsg::LeaveGroupResponse { members, .. } => members,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(leave(&mut d, Some(a)), vec![Errors::FencedInstanceId]);
    assert_eq!(leave(&mut d, None), vec![Errors::None]);
    assert!(d.coordinator.members().is_empty());
}

#[test]
fn a_static_members_new_id_is_stored_before_it_is_answered_and_undone_if_the_store_fails() {
    // Kafka stores the generation with the new id, so a coordinator that takes the group over
    // does not fence the running incarnation; a failed store gives the place back.
    let mut d = Driver::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::new(STORAGE)
    });
    let c = d.static_join(1, None, "a");
    let (_, generation, Some(a), _, _) = d.joined(c) else {
        panic!("joined")
    };
    let c = d.sync(1, a, generation, vec![(a, Bytes::from_static(b"p0"))]);
    assert_eq!(d.synced(c).0, Errors::None);

    d.auto_store = false;
    let c = d.static_join(2, None, "a");
    assert!(d.unanswered(c), "answered once stored");
    let [write_id] = std::mem::take(&mut d.appends)[..] else {
        panic!("one store")
    };
    let out = d.coordinator.on_message(
        STORAGE,
        GroupMsg::AppendResult {
            write_id,
            error: Errors::NotEnoughReplicas,
        },
    );
    d.apply(out);
    assert_eq!(d.joined(c).0, Errors::CoordinatorNotAvailable);
    assert_eq!(
        d.heartbeat(1, a, generation),
        Errors::None,
        "the old id keeps its place"
    );

    d.auto_store = true;
    let c = d.static_join(2, None, "a");
    let (error, same, Some(a2), _, _) = d.joined(c) else {
        panic!("joined")
    };
    assert_eq!((error, same), (Errors::None, generation));
    assert_eq!(d.heartbeat(2, a2, generation), Errors::None);
    assert_ne!(
        d.heartbeat(1, a, generation),
        Errors::None,
        "the old id is gone"
    );
}

#[test]
fn a_static_member_that_restarts_while_its_group_is_assigned_causes_a_rebalance() {
    // Found by the model checker: the leader's plan, stored after the restart, named the old
    // member id, so the new incarnation joined a stable generation with nothing assigned.
    let mut d = Driver::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::new(STORAGE)
    });
    d.auto_store = false;
    let c = d.static_join(1, None, "a");
    let (_, generation, Some(a), _, _) = d.joined(c) else {
        panic!("joined")
    };
    // The leader's plan is being stored when the member restarts.
    let sync = d.sync(1, a, generation, vec![(a, Bytes::from_static(b"p0"))]);
    assert_eq!(d.coordinator.state(), GroupState::CompletingRebalance);
    let again = d.static_join(2, None, "a");
    assert_eq!(d.synced(sync).0, Errors::FencedInstanceId);
    // The abandoned plan's store, answered late, changes nothing.
    assert_eq!(d.coordinator.generation_id(), generation + 1);
    for write_id in std::mem::take(&mut d.appends) {
        let out = d.coordinator.on_message(
            STORAGE,
            GroupMsg::AppendResult {
                write_id,
                error: Errors::None,
            },
        );
        d.apply(out);
    }
    // The new incarnation leads the next generation and assigns itself.
    let (error, next, Some(a2), leader, _) = d.joined(again) else {
        panic!("joined")
    };
    assert_eq!(
        (error, next, leader),
        (Errors::None, generation + 1, Some(a2))
    );
    d.auto_store = true;
    let c = d.sync(2, a2, next, vec![(a2, Bytes::from_static(b"p0"))]);
    assert_eq!(d.synced(c), (Errors::None, Bytes::from_static(b"p0")));
}

/// A coordinator and consumers over an in-order network: every message is delivered in the
/// order sent, stores succeed, and the application revokes at once.
struct Group {
    coordinator: GroupCoordinator,
    members: Vec<GroupMember>,
    queue: std::collections::VecDeque<(Node, Node, GroupMsg)>,
    member_timers: Vec<Vec<MemberTimer>>,
    coordinator_timers: Vec<GroupTimer>,
    events: Vec<(usize, MemberEvent)>,
}

impl Group {
    fn new(consumers: usize, partitions: i32) -> Self {
        let coordinator = GroupCoordinator::new(Arc::new(GroupConfig::new(STORAGE)));
        let members = (0..consumers)
            .map(|i| Group::member(i, partitions))
            .collect();
        Group {
            coordinator,
            members,
            queue: Default::default(),
            member_timers: vec![Vec::new(); consumers],
            coordinator_timers: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A group whose consumers offer `assignors`.
    fn offering(consumers: usize, partitions: i32, assignors: &[AssignorKind]) -> Self {
        let mut g = Group::new(consumers, partitions);
        for i in 0..consumers {
            let mut config = MemberConfig::new(STORAGE, vec![Arc::from("t")]);
            config.assignors = assignors.to_vec();
            g.members[i] = GroupMember::new(Arc::new(config));
            g.members[i].set_partition_counts(std::collections::BTreeMap::from([(
                Arc::from("t"),
                partitions,
            )]));
        }
        g
    }

    fn member(_i: usize, partitions: i32) -> GroupMember {
        let config = MemberConfig::new(STORAGE, vec![Arc::from("t")]);
        let mut member = GroupMember::new(Arc::new(config));
        member.set_partition_counts(std::collections::BTreeMap::from([(
            Arc::from("t"),
            partitions,
        )]));
        member
    }

    fn apply_member(&mut self, i: usize, effects: Vec<Effect<MemberTimer, GroupMsg>>) {
        for effect in effects {
            match effect {
                Effect::Send { msg, .. } => self.queue.push_back((client(i as u64), STORAGE, msg)),
                Effect::SetTimer { timer, .. } => {
                    self.member_timers[i].retain(|t| *t != timer);
                    self.member_timers[i].push(timer);
                }
                Effect::CancelTimer(timer) => self.member_timers[i].retain(|t| *t != timer),
                Effect::Persist(_) => {}
            }
        }
        // The application revokes at once; a revocation lets the member rejoin.
        while let Some(event) = self.members[i].poll_event() {
            let revoke = matches!(event, MemberEvent::Revoke(_));
            self.events.push((i, event));
            if revoke {
                let out = self.members[i].on_revoked();
                self.apply_member(i, out);
            }
        }
    }

    fn apply_coordinator(&mut self, effects: Vec<Effect<GroupTimer, GroupMsg>>) {
        for effect in effects {
            match effect {
                Effect::Send {
                    msg: GroupMsg::Append { write_id, .. },
                    ..
                } => self.queue.push_back((
                    STORAGE,
                    STORAGE,
                    GroupMsg::AppendResult {
                        write_id,
                        error: Errors::None,
                    },
                )),
                Effect::Send { to, msg } => self.queue.push_back((STORAGE, to, msg)),
                Effect::SetTimer { timer, .. } => {
                    self.coordinator_timers.retain(|t| *t != timer);
                    self.coordinator_timers.push(timer);
                }
                Effect::CancelTimer(timer) => self.coordinator_timers.retain(|t| *t != timer),
                Effect::Persist(_) => {}
            }
        }
    }

    fn start(&mut self, i: usize) {
        let out = self.members[i].start();
        self.apply_member(i, out);
    }

    /// Delivers everything queued, checking after each step that no partition has two owners.
    fn run(&mut self) {
        while let Some((from, to, msg)) = self.queue.pop_front() {
            match to {
                Node::Client(i) => {
                    let out = self.members[i as usize].on_message(msg);
                    self.apply_member(i as usize, out);
                }
                _ => {
                    let out = self.coordinator.on_message(from, msg);
                    self.apply_coordinator(out);
                }
            }
            self.assert_one_owner_per_partition();
        }
    }

    fn fire_coordinator(&mut self, timer: GroupTimer) {
        self.coordinator_timers.retain(|t| *t != timer);
        let out = self.coordinator.on_timer(timer);
        self.apply_coordinator(out);
        self.run();
    }

    /// The new group's initial delay runs out, however often joins extended it.
    fn end_initial_delay(&mut self) {
        while self.coordinator.state() == GroupState::PreparingRebalance {
            self.fire_coordinator(GroupTimer::Join);
        }
    }

    /// Every member's heartbeat timer fires once.
    fn heartbeat_all(&mut self) {
        for i in 0..self.members.len() {
            if self.member_timers[i].contains(&MemberTimer::Heartbeat) {
                let out = self.members[i].on_timer(MemberTimer::Heartbeat);
                self.apply_member(i, out);
            }
        }
        self.run();
    }

    fn assert_one_owner_per_partition(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for member in &self.members {
            for tp in member.owned() {
                assert!(seen.insert(tp.clone()), "{tp:?} has two owners");
            }
        }
    }

    fn owned_counts(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.owned().len()).collect()
    }
}

#[test]
fn consumers_join_are_assigned_disjoint_ranges_and_revoke_before_a_rebalance() {
    let mut g = Group::new(4, 6);
    for i in 0..3 {
        g.start(i);
    }
    g.run();
    // v4 clients: each was given an id and joined with it; the new group waits its delay.
    assert_eq!(g.coordinator.members().len(), 3);
    g.end_initial_delay();
    assert_eq!(g.coordinator.state(), GroupState::Stable);
    assert_eq!(g.owned_counts(), [2, 2, 2, 0]);
    let generation = g.coordinator.generation_id();
    assert!(
        g.members[..3]
            .iter()
            .all(|m| m.commit_identity() == Some((m.member_id().unwrap(), generation)))
    );

    // A fourth consumer: the others learn of the rebalance from their heartbeats, revoke
    // everything (the listener runs) before rejoining, and the next generation splits 6 ways
    // over 4.
    g.start(3);
    g.run();
    g.heartbeat_all();
    assert_eq!(g.coordinator.state(), GroupState::Stable);
    assert_eq!(g.coordinator.generation_id(), generation + 1);
    let mut counts = g.owned_counts();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2, 2]);
    let revoked = g
        .events
        .iter()
        .filter(|(_, e)| matches!(e, MemberEvent::Revoke(p) if p.len() == 2))
        .count();
    assert_eq!(
        revoked, 3,
        "each of the first three revoked its two partitions"
    );

    // One leaves: the rest rebalance again and still cover all six partitions.
    let out = g.members[3].leave();
    g.apply_member(3, out);
    g.run();
    g.heartbeat_all();
    assert_eq!(g.owned_counts().iter().sum::<usize>(), 6);
    assert_eq!(g.owned_counts()[3], 0);
}

#[test]
fn cooperative_members_keep_their_partitions_and_move_only_what_balance_needs() {
    let mut g = Group::offering(4, 6, &[AssignorKind::CooperativeSticky]);
    assert!(g.members[0].cooperative());
    for i in 0..3 {
        g.start(i);
    }
    g.run();
    g.end_initial_delay();
    assert_eq!(g.owned_counts(), [2, 2, 2, 0]);
    let before: Vec<Vec<TopicPartition>> = g.members.iter().map(|m| m.owned().to_vec()).collect();
    g.events.clear();

    // A fourth joins. The others rejoin owning their partitions; one must move, so the leader
    // gives it to nobody, its owner revokes just that and rejoins, and the next generation
    // (which the others learn of from their heartbeats) gives it to the new member. No one
    // revokes what it keeps.
    g.start(3);
    g.run();
    g.heartbeat_all();
    assert_eq!(g.owned_counts().iter().sum::<usize>(), 5);
    g.heartbeat_all();
    let mut counts = g.owned_counts();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2, 2], "{:#?}", g.events);
    assert_eq!(g.coordinator.state(), GroupState::Stable);
    let revoked: Vec<TopicPartition> = g
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            MemberEvent::Revoke(p) => Some(p.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(revoked.len(), 1, "{:?}", g.events);
    assert_eq!(g.members[3].owned(), revoked);
    for (i, owned) in before.iter().enumerate().take(3) {
        let kept: Vec<&TopicPartition> = owned.iter().filter(|p| !revoked.contains(p)).collect();
        assert!(kept.iter().all(|p| g.members[i].owned().contains(p)));
    }
}

#[test]
fn one_eager_assignor_makes_the_member_eager() {
    // Kafka's default list (range, cooperative-sticky) is eager: range does not cooperate.
    let mut g = Group::offering(
        2,
        2,
        &[AssignorKind::Range, AssignorKind::CooperativeSticky],
    );
    assert!(!g.members[0].cooperative());
    g.start(0);
    g.run();
    g.end_initial_delay();
    assert_eq!(g.owned_counts(), [2, 0]);
    g.start(1);
    g.run();
    g.heartbeat_all();
    assert_eq!(g.owned_counts(), [1, 1]);
    assert!(
        g.events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, MemberEvent::Revoke(p) if p.len() == 2))
    );
}

#[test]
fn a_fenced_member_reports_its_partitions_lost_and_joins_again() {
    let mut g = Group::new(2, 2);
    g.start(0);
    g.start(1);
    g.run();
    g.end_initial_delay();
    assert_eq!(g.owned_counts(), [1, 1]);
    // Member 1's session expires at the coordinator (its heartbeats were lost).
    let id = g.members[1].member_id().unwrap();
    g.fire_coordinator(GroupTimer::Session(id));
    g.heartbeat_all();
    // Member 1 is told it is unknown: its partition is lost (not revoked, not committed), and
    // it joins again with a new id; member 0 revoked and rejoined; a generation forms.
    assert!(
        g.events
            .iter()
            .any(|(i, e)| *i == 1 && matches!(e, MemberEvent::Lost(_)))
    );
    assert_ne!(g.members[1].member_id(), Some(id));
    assert_eq!(g.coordinator.members().len(), 2);
    assert_eq!(g.owned_counts(), [1, 1]);
}

#[test]
fn a_loaded_group_is_stable_with_its_stored_members_until_their_sessions_end() {
    let config = Arc::new(GroupConfig::new(STORAGE));
    let member = |id| LoadedMember {
        id,
        group_instance_id: None,
        subscription: Bytes::from_static(b"sub"),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 60_000,
        assignment: Bytes::from(format!("for {id}")),
    };
    let stored = LoadedGroup {
        generation_id: 7,
        protocol_type: Some(Arc::from("consumer")),
        protocol: Some(Arc::from("range")),
        leader: Some(2),
        members: vec![member(1), member(2)],
        next_member_id: 0,
    };
    let (coordinator, timers) = GroupCoordinator::loaded(config, stored, Default::default());
    assert_eq!(coordinator.state(), GroupState::Stable);
    assert_eq!(coordinator.generation_id(), 7);
    assert_eq!(coordinator.leader(), Some(2));
    assert_eq!(timers.len(), 2, "each member's session starts at the load");
    let mut d = Driver {
        coordinator,
        answers: Vec::new(),
        timers: vec![GroupTimer::Session(1), GroupTimer::Session(2)],
        correlation: 0,
        auto_store: true,
        appends: Vec::new(),
    };
    // A member that is still there carries on: heartbeats and syncs in its generation.
    assert_eq!(d.heartbeat(1, 1, 7), Errors::None);
    let c = d.sync(1, 1, 7, vec![]);
    assert_eq!(d.synced(c), (Errors::None, Bytes::from_static(b"for 1")));
    // One that is gone expires, and the group rebalances without it.
    d.fire(GroupTimer::Session(2));
    assert_eq!(d.coordinator.state(), GroupState::PreparingRebalance);
    assert_eq!(d.heartbeat(1, 1, 7), Errors::RebalanceInProgress);
    // A new member's id never collides with a loaded one; member 1, which did not join
    // again in time, is left out of the next generation.
    let c = d.join(3, None);
    d.fire(GroupTimer::Join);
    let (error, generation, id, ..) = d.joined(c);
    assert_eq!((error, generation, id), (Errors::None, 8, Some(3)));
    assert_eq!(
        d.coordinator.members().keys().copied().collect::<Vec<_>>(),
        [3]
    );
}

#[test]
fn an_empty_groups_offsets_expire_after_retention_and_then_the_group_goes() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, m2, m3] = d.stable_group_of_three();
    let c = d.commit(1, Some(m1), 1, 5);
    assert_eq!(d.committed(c), Errors::None);
    // With members, nothing expires.
    assert_eq!(d.coordinator.expiry(1_000_000, 10, 0, |_| 0), None);
    let c = d.send(1, |correlation_id| GroupMsg::LeaveGroup {
        correlation_id,
        members: [m1, m2, m3].map(Leaving::member).to_vec(),
    });
    let _ = d.answer(c);
    assert_eq!(d.coordinator.state(), GroupState::Empty);
    // Retention counts from the later of the commit and the group emptying.
    assert_eq!(d.coordinator.expiry(150, 100, 100, |_| 0), None);
    let expired = d.coordinator.expiry(200, 100, 100, |_| 0).unwrap();
    assert_eq!(
        expired,
        GroupMsg::ExpireOffsets {
            partitions: vec![tp(0)]
        }
    );
    let out = d.coordinator.on_message(STORAGE, expired);
    d.apply(out);
    assert!(d.coordinator.committed().is_empty());
    assert_eq!(
        d.coordinator.state(),
        GroupState::Dead,
        "nothing left: the group goes"
    );
}

#[test]
fn a_sync_naming_another_protocol_is_inconsistent() {
    let mut d = Driver::new(GroupConfig::new(STORAGE));
    let [m1, ..] = d.stable_group_of_three();
    let sync = |d: &mut Driver, expected: ExpectedProtocol| {
        let c = d.send(1, |correlation_id| GroupMsg::SyncGroup {
            correlation_id,
            member_id: m1,
            group_instance_id: None,
            generation_id: 1,
            expected_protocol: Some(expected),
            assignments: vec![],
        });
        d.synced(c).0
    };
    let consumer = Some(Arc::from("consumer"));
    assert_eq!(
        sync(&mut d, (consumer.clone(), Some(Arc::from("roundrobin")))),
        Errors::InconsistentGroupProtocol
    );
    assert_eq!(
        sync(&mut d, (Some(Arc::from("connect")), None)),
        Errors::InconsistentGroupProtocol
    );
    assert_eq!(
        sync(&mut d, (consumer, Some(Arc::from("range")))),
        Errors::None
    );
    assert_eq!(sync(&mut d, (None, None)), Errors::None);
}
