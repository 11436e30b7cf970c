//! Scenario tests of the replication actors, driven by a tiny deterministic driver that delivers
//! every message in the order sent (the model checker explores the other orders).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::errors::Errors;
use crate::log::{LogConfig, MemoryLog, PartitionLog};
use crate::record::BatchBuilder;

const CLIENT: Node = Node::Client(99);

fn batch(value: u8) -> Bytes {
    let mut b = BatchBuilder::new(0);
    b.append(0, None, Some(&[value]), &[]);
    b.build()
}

fn values(log: &MemoryLog) -> Vec<u8> {
    log.batches()
        .map(|b| {
            let batch = crate::record::RecordBatch::parse(b.clone()).unwrap();
            let record = batch.records().unwrap().next().unwrap().unwrap();
            record.value.unwrap()[0]
        })
        .collect()
}

struct Cluster {
    replicas: Vec<Replica<MemoryLog>>,
    controller: Controller,
    queue: VecDeque<(Node, Node, Msg)>,
    client_inbox: Vec<Msg>,
    /// Brokers whose incoming messages are lost (a dead connection).
    cut: BTreeSet<BrokerId>,
}

impl Cluster {
    fn new(brokers: u32, min_isr: usize) -> Self {
        let ids: Vec<BrokerId> = (0..brokers).collect();
        let initial = PartitionState {
            leader: Some(0),
            leader_epoch: 0,
            isr: ids.iter().copied().collect(),
            partition_epoch: 0,
        };
        let (controller, _) = Controller::new(
            Arc::new(ControllerConfig::new(ids.clone())),
            initial.clone(),
        );
        let replicas = ids
            .iter()
            .map(|&id| {
                let mut config = ReplicaConfig::new(id, ids.clone());
                config.min_insync_replicas = min_isr;
                Replica::new(Arc::new(config), MemoryLog::new(LogConfig::default()))
            })
            .collect();
        let mut cluster = Cluster {
            replicas,
            controller,
            queue: VecDeque::new(),
            client_inbox: Vec::new(),
            cut: BTreeSet::new(),
        };
        let announce = cluster.controller.announce();
        cluster.enqueue(Node::Controller, announce);
        cluster
    }

    fn enqueue<T>(&mut self, from: Node, effects: Effects<T>) {
        for effect in effects {
            if let Effect::Send { to, msg } = effect {
                self.queue.push_back((from, to, msg));
            }
        }
    }

    fn run(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            let Some((from, to, msg)) = self.queue.pop_front() else {
                return;
            };
            match to {
                Node::Broker(b) if self.cut.contains(&b) => {}
                Node::Broker(b) => {
                    let out = self.replicas[b as usize].on_message(from, msg, 0);
                    self.enqueue(to, out);
                }
                Node::Controller => {
                    let out = self.controller.on_message(from, msg);
                    self.enqueue(to, out);
                }
                Node::Client(_) => self.client_inbox.push(msg),
            }
        }
    }

    fn produce(&mut self, leader: BrokerId, value: u8, acks: Acks) {
        let msg = Msg::Produce {
            correlation_id: value as u32,
            acks,
            records: batch(value),
        };
        self.queue.push_back((CLIENT, Node::Broker(leader), msg));
    }

    fn acks(&self) -> Vec<(u32, Errors)> {
        self.produce_answers()
            .into_iter()
            .map(|(id, error, _)| (id, error))
            .collect()
    }

    /// Every produce answer so far: (correlation id, error, base offset).
    fn produce_answers(&self) -> Vec<(u32, Errors, i64)> {
        self.client_inbox
            .iter()
            .filter_map(|m| match m {
                Msg::ProduceResponse {
                    correlation_id,
                    error_code,
                    base_offset,
                    ..
                } => Some((*correlation_id, *error_code, *base_offset)),
                _ => None,
            })
            .collect()
    }

    fn lag_check(&mut self, broker: BrokerId) {
        let out = self.replicas[broker as usize].on_timer(ReplicaTimer::LagCheck, i64::MAX);
        self.enqueue(Node::Broker(broker), out);
    }

    /// The leader's `replica.fetch.wait.max.ms` passing for every follower's parked fetch.
    fn expire_parked_fetches(&mut self, leader: BrokerId) {
        for follower in 0..self.replicas.len() as BrokerId {
            if follower != leader {
                let out = self.replicas[leader as usize].expire_parked_fetch(follower);
                self.enqueue(Node::Broker(leader), out);
            }
        }
    }

    fn expire(&mut self, broker: BrokerId) {
        let out = self
            .controller
            .on_timer(ControllerTimer::BrokerSession(broker));
        self.enqueue(Node::Controller, out);
    }
}

#[test]
fn acks_all_is_answered_once_every_isr_member_has_the_record() {
    let mut c = Cluster::new(3, 2);
    c.run(100);
    c.produce(0, 7, Acks::All);
    c.run(1);
    assert!(c.acks().is_empty(), "answered before replication");
    c.run(100);
    assert_eq!(c.acks(), vec![(7, Errors::None)]);
    assert_eq!(c.replicas[0].high_watermark(), 1);
    for r in &c.replicas[1..] {
        assert_eq!(values(r.log()), vec![7]);
        assert_eq!(
            r.high_watermark(),
            0,
            "a new HW alone wakes no parked fetch"
        );
    }
    // replica.fetch.wait.max.ms later the parked fetches are answered, carrying the HW.
    c.expire_parked_fetches(0);
    c.run(100);
    for r in &c.replicas {
        assert_eq!(r.high_watermark(), 1, "followers learn the HW too");
    }
}

#[test]
fn a_follower_that_stops_fetching_holds_back_the_hw_until_the_isr_shrinks() {
    let mut c = Cluster::new(3, 2);
    c.run(100);
    c.cut.insert(2);
    c.produce(0, 1, Acks::All);
    c.run(100);
    assert!(c.acks().is_empty());
    assert_eq!(c.replicas[0].high_watermark(), 0);
    c.lag_check(0);
    c.run(100);
    assert_eq!(c.controller.state().isr, BTreeSet::from([0, 1]));
    assert_eq!(c.acks(), vec![(1, Errors::None)]);
}

#[test]
fn acks_all_is_refused_below_min_insync_replicas() {
    let mut c = Cluster::new(2, 2);
    c.run(100);
    c.cut.insert(1);
    // A follower level with the leader stays in sync however long it is silent (Kafka's
    // isCaughtUp); one record leaves it behind.
    c.lag_check(0);
    c.run(100);
    assert_eq!(c.controller.state().isr, BTreeSet::from([0, 1]));
    c.produce(0, 9, Acks::Leader);
    c.run(100);
    c.lag_check(0);
    c.run(100);
    assert_eq!(c.controller.state().isr, BTreeSet::from([0]));
    c.produce(0, 1, Acks::All);
    c.produce(0, 2, Acks::Leader);
    c.run(100);
    assert_eq!(
        c.acks(),
        vec![
            (9, Errors::None),
            (1, Errors::NotEnoughReplicas),
            (2, Errors::None)
        ]
    );
    assert_eq!(values(c.replicas[0].log()), vec![9, 2]);
}

#[test]
fn a_fenced_leader_is_replaced_by_an_isr_member_with_a_new_epoch() {
    let mut c = Cluster::new(3, 2);
    c.run(100);
    c.produce(0, 1, Acks::All);
    c.run(100);
    c.expire(0);
    c.run(100);
    let state = c.controller.state().clone();
    assert_eq!((state.leader, state.leader_epoch), (Some(1), 1));
    assert!(matches!(c.replicas[1].role(), Role::Leader(_)));
    assert_eq!(values(c.replicas[1].log()), vec![1]);
    // The old leader learned of the new epoch and follows.
    assert_eq!(c.replicas[0].leader_epoch(), Some(1));
    c.produce(0, 2, Acks::All);
    c.run(100);
    assert_eq!(c.acks().last(), Some(&(2, Errors::NotLeaderOrFollower)));
}

#[test]
fn a_diverged_follower_truncates_to_the_epoch_boundary_not_to_its_hw() {
    // Broker 0 leads epoch 0 and appends a record only it has; then it is fenced, broker 1
    // leads epoch 1 and appends a different record at the same offset.
    let mut c = Cluster::new(2, 1);
    c.run(100);
    c.cut.insert(1);
    c.produce(0, 10, Acks::Leader);
    c.run(100);
    c.cut.clear();
    c.queue.clear();
    c.expire(0);
    c.run(100);
    assert_eq!(c.controller.state().leader, Some(1));
    c.produce(1, 20, Acks::Leader);
    c.run(100);
    // Broker 0 fetched with last epoch 0, learned epoch 0 ends at 0 on the leader, truncated
    // its uncommitted record and replicated the leader's.
    assert_eq!(values(c.replicas[0].log()), vec![20]);
    assert_eq!(c.replicas[0].epochs().entries(), &[(1, 0)]);
}

#[test]
fn the_controller_rejects_stale_isr_proposals_and_ineligible_replicas() {
    let ids = vec![0, 1, 2];
    let initial = PartitionState {
        leader: Some(0),
        leader_epoch: 0,
        isr: BTreeSet::from([0, 1, 2]),
        partition_epoch: 0,
    };
    let (mut c, _) = Controller::new(Arc::new(ControllerConfig::new(ids)), initial);
    let propose = |leader_epoch, partition_epoch, isr: &[u32]| Msg::AlterPartition {
        broker_id: 0,
        leader_epoch,
        partition_epoch,
        new_isr: isr.iter().copied().collect(),
    };
    let code = |out: Effects<ControllerTimer>| match &out[0] {
        Effect::Send {
            msg: Msg::AlterPartitionResponse { error_code, .. },
            ..
        } => *error_code,
        other => panic!("{other:?}"),
    };
    let from = Node::Broker(0);
    assert_eq!(
        code(c.on_message(from, propose(0, 0, &[0, 1]))),
        Errors::None
    );
    assert_eq!(
        code(c.on_message(from, propose(0, 0, &[0]))),
        Errors::InvalidUpdateVersion
    );
    assert_eq!(
        code(c.on_message(from, propose(1, 1, &[0]))),
        Errors::FencedLeaderEpoch
    );
    assert_eq!(
        code(c.on_message(from, propose(0, 1, &[1]))),
        Errors::InvalidRequest
    );
    c.on_timer(ControllerTimer::BrokerSession(2));
    assert_eq!(
        code(c.on_message(from, propose(0, 1, &[0, 1, 2]))),
        Errors::IneligibleReplica
    );
}

#[test]
fn without_unclean_election_a_partition_whose_isr_died_stays_offline() {
    for unclean in [false, true] {
        let mut config = ControllerConfig::new(vec![0, 1]);
        config.unclean_leader_election_enable = unclean;
        let initial = PartitionState {
            leader: Some(0),
            leader_epoch: 0,
            isr: BTreeSet::from([0]),
            partition_epoch: 0,
        };
        let (mut c, _) = Controller::new(Arc::new(config), initial);
        c.on_timer(ControllerTimer::BrokerSession(0));
        let expected = if unclean { Some(1) } else { None };
        assert_eq!(c.state().leader, expected);
        assert_eq!(c.state().leader_epoch, 1);
    }
}

#[test]
fn epoch_cache_answers_end_offsets_as_kafka_does() {
    let mut cache = LeaderEpochCache::default();
    cache.assign(0, 0);
    cache.assign(2, 5);
    cache.assign(1, 3); // older than the latest: ignored
    cache.assign(4, 9);
    let at = |epoch| cache.end_offset_for(epoch, 12);
    assert_eq!(
        at(0),
        EpochEndOffset {
            epoch: 0,
            end_offset: 5
        }
    );
    assert_eq!(
        at(1),
        EpochEndOffset {
            epoch: 0,
            end_offset: 5
        }
    );
    assert_eq!(
        at(3),
        EpochEndOffset {
            epoch: 2,
            end_offset: 9
        }
    );
    assert_eq!(
        at(4),
        EpochEndOffset {
            epoch: 4,
            end_offset: 12
        }
    );
    assert_eq!(at(-1), EpochEndOffset::UNDEFINED);
    assert_eq!(
        at(5),
        EpochEndOffset::UNDEFINED,
        "newer than any epoch known here"
    );
    let mut late = LeaderEpochCache::default();
    late.assign(3, 7);
    late.assign(5, 10);
    assert_eq!(
        late.end_offset_for(1, 12),
        EpochEndOffset {
            epoch: 1,
            end_offset: 7
        },
        "older than every epoch here: nothing of it is held, so it ends where the first starts"
    );
    assert_eq!(
        LeaderEpochCache::default().end_offset_for(0, 0),
        EpochEndOffset::UNDEFINED
    );
    assert_eq!(cache.epoch_for_offset(0), Some(0));
    assert_eq!(cache.epoch_for_offset(4), Some(0));
    assert_eq!(cache.epoch_for_offset(5), Some(2));
    assert_eq!(cache.epoch_for_offset(100), Some(4));
    assert_eq!(late.epoch_for_offset(6), None);
    let mut trimmed = cache.clone();
    trimmed.truncate_from_start(6);
    assert_eq!(trimmed.entries(), &[(2, 6), (4, 9)]);
    trimmed.truncate_from_start(1);
    assert_eq!(
        trimmed.entries(),
        &[(2, 6), (4, 9)],
        "a start below the first changes nothing"
    );
    cache.truncate_from_end(9);
    assert_eq!(cache.latest_epoch(), Some(2));
    cache.assign(3, 4); // contradicts epoch 2's start: epoch 2 is dropped
    assert_eq!(cache.entries(), &[(0, 0), (3, 4)]);
}

#[test]
fn a_restarted_replica_keeps_its_log_and_reregisters() {
    let mut c = Cluster::new(2, 1);
    c.run(100);
    c.produce(0, 5, Acks::All);
    c.run(100);
    let durable = c.replicas[1].durable().clone();
    let config = Arc::new(c.replicas[1].config().clone());
    let (replica, out) = Replica::recover(config, durable).expect("a memory log reads back");
    assert_eq!(values(replica.log()), vec![5]);
    assert_eq!(replica.durable().incarnation, 1);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Send {
            to: Node::Controller,
            msg: Msg::BrokerHeartbeat { incarnation: 1, .. }
        }
    )));
    let _ = replica.log().log_end_offset();
}

#[test]
fn an_answer_to_an_earlier_isr_proposal_does_not_settle_a_later_one() {
    // Found by the model checker: a resent shrink is refused as stale after the leader has
    // moved on and proposed an expansion the controller then accepts. Had the stale refusal
    // cleared the pending expansion, the leader would commit without the re-admitted replica.
    let replicas = vec![0, 1];
    let initial = PartitionState {
        leader: Some(0),
        leader_epoch: 0,
        isr: BTreeSet::from([0]),
        partition_epoch: 1,
    };
    let mut config = ReplicaConfig::new(0, replicas.clone());
    config.min_insync_replicas = 1;
    let mut leader = Replica::new(Arc::new(config), MemoryLog::new(LogConfig::default()));
    leader.on_message(Node::Controller, Msg::LeaderAndIsr(initial.clone()), 0);
    // Broker 1 catches up, so the leader proposes to re-admit it, based on partition epoch 1.
    let fetch = Msg::Fetch {
        replica_id: 1,
        current_leader_epoch: 0,
        fetch_offset: 0,
        last_fetched_epoch: None,
    };
    leader.on_message(Node::Broker(1), fetch, 0);
    let Role::Leader(state) = leader.role() else {
        panic!("leads")
    };
    assert_eq!(state.pending_isr, Some(BTreeSet::from([0, 1])));
    // The answer to an earlier proposal (based on partition epoch 0) arrives: refused as stale,
    // carrying the state the leader already knows.
    let stale = Msg::AlterPartitionResponse {
        error_code: Errors::InvalidUpdateVersion,
        proposal: (0, BTreeSet::from([0])),
        state: initial.clone(),
    };
    leader.on_message(Node::Controller, stale, 0);
    let Role::Leader(state) = leader.role() else {
        panic!("leads")
    };
    assert_eq!(
        state.pending_isr,
        Some(BTreeSet::from([0, 1])),
        "still pending"
    );
    // So a produced record waits for broker 1, which the controller may have admitted.
    let out = leader.on_message(
        CLIENT,
        Msg::Produce {
            correlation_id: 1,
            acks: Acks::All,
            records: batch(1),
        },
        0,
    );
    assert!(
        !out.iter()
            .any(|e| matches!(e, Effect::Send { to: CLIENT, .. }))
    );
    assert_eq!(leader.high_watermark(), 0);
    // The controller's answer to this very proposal settles it.
    let accepted = Msg::AlterPartitionResponse {
        error_code: Errors::None,
        proposal: (1, BTreeSet::from([0, 1])),
        state: PartitionState {
            isr: BTreeSet::from([0, 1]),
            partition_epoch: 2,
            ..initial
        },
    };
    leader.on_message(Node::Controller, accepted, 0);
    let Role::Leader(state) = leader.role() else {
        panic!("leads")
    };
    assert_eq!((state.isr.len(), state.pending_isr.clone()), (2, None));
}

fn idempotent_batch(sequence: i32, value: u8) -> Bytes {
    let mut b = BatchBuilder::new(0).producer(7, 0, sequence);
    b.append(0, None, Some(&[value]), &[]);
    b.build()
}

#[test]
fn the_leader_appends_an_idempotent_retry_once_and_answers_it_with_the_first_offsets() {
    let mut c = Cluster::new(1, 1);
    c.run(100);
    let send = |c: &mut Cluster, id: u32, records: Bytes| {
        let msg = Msg::Produce {
            correlation_id: id,
            acks: Acks::All,
            records,
        };
        c.queue.push_back((CLIENT, Node::Broker(0), msg));
        c.run(100);
    };
    send(&mut c, 1, idempotent_batch(0, 10));
    send(&mut c, 2, idempotent_batch(1, 11));
    // A retry of the first batch: answered with offset 0, not appended again.
    send(&mut c, 3, idempotent_batch(0, 10));
    // A gap, a record set of two batches, and bytes that are no batch.
    send(&mut c, 4, idempotent_batch(5, 12));
    let mut two = idempotent_batch(2, 13).to_vec();
    two.extend_from_slice(&idempotent_batch(3, 14));
    send(&mut c, 5, Bytes::from(two));
    send(&mut c, 6, Bytes::from_static(b"not a batch"));
    let answers = c.produce_answers();
    assert_eq!(
        answers,
        vec![
            (1, Errors::None, 0),
            (2, Errors::None, 1),
            (3, Errors::None, 0),
            (4, Errors::OutOfOrderSequenceNumber, -1),
            (5, Errors::InvalidRecord, -1),
            (6, Errors::CorruptMessage, -1),
        ]
    );
    assert_eq!(values(c.replicas[0].log()), vec![10, 11]);

    // After a restart the producer's state is rebuilt from the log: the retry is still known.
    let durable = c.replicas[0].durable().clone();
    let config = Arc::new(c.replicas[0].config().clone());
    let (replica, out) = Replica::recover(config, durable).expect("a memory log reads back");
    c.replicas[0] = replica;
    c.enqueue(Node::Broker(0), out);
    c.run(100);
    // The controller re-elects the restarted broker (its election timer, fired now).
    let out = c.controller.on_timer(ControllerTimer::Election);
    c.enqueue(Node::Controller, out);
    c.run(100);
    let before = c.produce_answers().len();
    send(&mut c, 7, idempotent_batch(1, 11));
    send(&mut c, 8, idempotent_batch(2, 15));
    assert_eq!(
        c.produce_answers()[before..],
        [(7, Errors::None, 1), (8, Errors::None, 2)]
    );
    assert_eq!(values(c.replicas[0].log()), vec![10, 11, 15]);
}

#[test]
fn a_follower_that_becomes_leader_knows_the_idempotent_batches_it_replicated() {
    let mut c = Cluster::new(3, 2);
    c.run(100);
    let send = |c: &mut Cluster, leader: BrokerId, id: u32, records: Bytes| {
        let msg = Msg::Produce {
            correlation_id: id,
            acks: Acks::All,
            records,
        };
        c.queue.push_back((CLIENT, Node::Broker(leader), msg));
        c.run(100);
    };
    send(&mut c, 0, 1, idempotent_batch(0, 10));
    send(&mut c, 0, 2, idempotent_batch(1, 11));
    c.expire(0);
    c.run(100);
    assert_eq!(c.controller.state().leader, Some(1));
    // The producer did not see the second answer and retries it at the new leader: a
    // duplicate, answered with its first offset, not a second copy (found by the cluster's
    // kill test before followers kept producer state).
    send(&mut c, 1, 3, idempotent_batch(1, 11));
    send(&mut c, 1, 4, idempotent_batch(2, 12));
    let answers = c.produce_answers();
    assert_eq!(
        answers[answers.len() - 2..],
        [(3, Errors::None, 1), (4, Errors::None, 2)]
    );
    assert_eq!(values(c.replicas[1].log()), vec![10, 11, 12]);
}

#[test]
fn clients_are_answered_by_the_leader_of_their_epoch_from_the_epoch_cache() {
    let config = Arc::new(ReplicaConfig::new(0, vec![0]));
    let mut replica = Replica::new(config, MemoryLog::new(LogConfig::default()));
    let lead = |replica: &mut Replica<MemoryLog>, epoch: i32| {
        let state = PartitionState {
            leader: Some(0),
            leader_epoch: epoch,
            isr: BTreeSet::from([0]),
            partition_epoch: epoch,
        };
        replica.on_message(Node::Controller, Msg::LeaderAndIsr(state), 0);
    };
    let produce = |replica: &mut Replica<MemoryLog>, value: u8| {
        let msg = Msg::Produce {
            correlation_id: value.into(),
            acks: Acks::All,
            records: batch(value),
        };
        replica.on_message(CLIENT, msg, 0);
    };
    assert_eq!(
        replica.validate_client_epoch(-1),
        Err(Errors::NotLeaderOrFollower),
        "no epoch known yet"
    );
    lead(&mut replica, 0);
    produce(&mut replica, 1);
    produce(&mut replica, 2);
    lead(&mut replica, 3);
    produce(&mut replica, 3);
    let end = |epoch, end_offset| Ok(EpochEndOffset { epoch, end_offset });
    // Past epochs end where the next starts; the current one at the log end; an epoch between
    // two known ones is reported as the older; a newer one is undefined.
    assert_eq!(replica.offset_for_leader_epoch(3, 0), end(0, 2));
    assert_eq!(replica.offset_for_leader_epoch(3, 2), end(0, 2));
    assert_eq!(replica.offset_for_leader_epoch(-1, 3), end(3, 3));
    assert_eq!(
        replica.offset_for_leader_epoch(3, 4),
        Ok(EpochEndOffset::UNDEFINED)
    );
    // KIP-320's fencing, before any answer.
    assert_eq!(
        replica.offset_for_leader_epoch(2, 0),
        Err(Errors::FencedLeaderEpoch)
    );
    assert_eq!(
        replica.offset_for_leader_epoch(4, 0),
        Err(Errors::UnknownLeaderEpoch)
    );
    assert_eq!(replica.epochs().epoch_for_offset(1), Some(0));
    assert_eq!(replica.epochs().epoch_for_offset(2), Some(3));
    let snapshot = replica.offset_snapshot();
    assert_eq!(
        (snapshot.high_watermark, snapshot.log_end_offset),
        (3, 3),
        "a leader alone in its ISR commits at once"
    );
    // A follower serves no client.
    let follow = PartitionState {
        leader: Some(1),
        leader_epoch: 4,
        isr: BTreeSet::from([1]),
        partition_epoch: 4,
    };
    replica.on_message(Node::Controller, Msg::LeaderAndIsr(follow), 0);
    assert_eq!(
        replica.validate_client_epoch(4),
        Err(Errors::NotLeaderOrFollower)
    );
}
