//! Scenarios of the cluster controller, driven as the broker's driver will: every record a step
//! emits is appended to a log at the offset the controller's image gave it, and timers are
//! fired by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::actor::{Effect, Node};
use crate::errors::Errors;
use crate::replication::{BrokerId, Msg, PartitionState};

const TOPIC: TopicId = [1; 16];

struct Cluster {
    quorum: QuorumController,
    /// The metadata log: the record at offset `o` is `log[o]`.
    log: Vec<MetadataRecord>,
    timers: BTreeMap<ClusterTimer, u64>,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            quorum: QuorumController::new(Arc::new(QuorumConfig::default())),
            log: Vec::new(),
            timers: BTreeMap::new(),
        }
    }

    /// Three brokers, registered and unfenced.
    fn three_brokers() -> Self {
        let mut cluster = Cluster::new();
        for broker in 0..3 {
            let epoch = cluster.register(broker);
            assert_eq!(epoch, i64::from(broker));
        }
        for broker in 0..3 {
            let (answer, records) = cluster.heartbeat(broker, i64::from(broker));
            assert_eq!(answer, Ok(HeartbeatAnswer { is_fenced: false }));
            assert_eq!(
                records,
                [MetadataRecord::UnfenceBroker {
                    broker_id: broker,
                    broker_epoch: i64::from(broker),
                }]
            );
        }
        assert_eq!(live(&cluster), [0, 1, 2]);
        cluster
    }

    /// Plus topic `t` with three partitions on all three brokers.
    fn with_topic() -> Self {
        let mut cluster = Cluster::three_brokers();
        let (results, records) = cluster.create(vec![new_topic("t", TOPIC, 3, 3)]);
        assert_eq!(
            results,
            [Ok(CreatedTopic {
                topic_id: TOPIC,
                num_partitions: 3,
                replication_factor: 3,
            })]
        );
        assert_eq!(records.len(), 4);
        cluster
    }

    /// Carries out one step's effects; returns the records it appended.
    fn step(&mut self, effects: ClusterEffects) -> Vec<MetadataRecord> {
        let mut appended = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => {
                    assert_eq!(to, Node::Controller);
                    appended.push(msg.clone());
                    self.log.push(msg);
                }
                Effect::SetTimer { timer, after_ms } => {
                    self.timers.insert(timer, after_ms);
                }
                Effect::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Effect::Persist(_) => panic!("the cluster controller persists through its log"),
            }
        }
        // The image counts exactly the records the log holds: offsets agree.
        assert_eq!(self.quorum.image().next_offset(), self.log.len() as i64);
        appended
    }

    fn register(&mut self, broker: BrokerId) -> i64 {
        let (epoch, out) = self
            .quorum
            .register_broker(broker, "localhost", 9092 + broker as u16);
        let epoch = epoch.unwrap();
        let records = self.step(out);
        assert_eq!(
            records[0],
            MetadataRecord::RegisterBroker {
                broker_id: broker,
                broker_epoch: epoch,
                host: "localhost".into(),
                port: 9092 + broker as u16,
            }
        );
        assert_eq!(self.log.len() as i64 - records.len() as i64, epoch);
        assert!(self.quorum.image().broker(broker).unwrap().fenced);
        epoch
    }

    fn heartbeat(
        &mut self,
        broker: BrokerId,
        epoch: i64,
    ) -> (Result<HeartbeatAnswer, Errors>, Vec<MetadataRecord>) {
        let (answer, out) = self.quorum.heartbeat(broker, epoch, false);
        let records = self.step(out);
        if answer.is_ok() {
            assert!(
                self.timers
                    .contains_key(&ClusterTimer::BrokerSession(broker))
            );
        }
        (answer, records)
    }

    fn create(
        &mut self,
        topics: Vec<NewTopic>,
    ) -> (Vec<Result<CreatedTopic, Refusal>>, Vec<MetadataRecord>) {
        let (results, out) = self.quorum.create_topics(&topics);
        (results, self.step(out))
    }

    fn fire(&mut self, timer: ClusterTimer) -> Vec<MetadataRecord> {
        self.timers.remove(&timer);
        let out = self.quorum.on_timer(timer);
        self.step(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn alter(
        &mut self,
        broker: BrokerId,
        epoch: i64,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[BrokerId],
    ) -> (Msg, Vec<MetadataRecord>) {
        let (answer, out) = self.quorum.alter_partition(
            broker,
            epoch,
            TOPIC,
            partition,
            leader_epoch,
            partition_epoch,
            isr.iter().copied().collect(),
        );
        (answer, self.step(out))
    }

    fn state(&self, partition: i32) -> PartitionState {
        let state = self
            .quorum
            .partition_state(&TOPIC, partition)
            .unwrap()
            .clone();
        let image = &self
            .quorum
            .image()
            .partition_by_id(&TOPIC, partition)
            .unwrap()
            .state;
        assert_eq!(&state, image, "controller and image disagree");
        state
    }

    /// A fresh controller that replays the log.
    fn restarted(&self) -> (QuorumController, ClusterEffects) {
        let mut quorum = QuorumController::new(Arc::new(QuorumConfig::default()));
        for (offset, record) in self.log.iter().enumerate() {
            let bytes = record.encode();
            quorum.replay(offset as i64, &MetadataRecord::decode(&bytes).unwrap());
        }
        let out = quorum.start();
        (quorum, out)
    }
}

fn live(cluster: &Cluster) -> Vec<BrokerId> {
    let image = cluster.quorum.image();
    image.live_brokers().into_iter().map(|(id, _)| id).collect()
}

fn new_topic(name: &str, topic_id: TopicId, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        topic_id,
        num_partitions: partitions,
        replication_factor: rf,
        assignments: Vec::new(),
        configs: Vec::new(),
    }
}

fn state(
    leader: Option<BrokerId>,
    leader_epoch: i32,
    isr: &[BrokerId],
    epoch: i32,
) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch,
        isr: isr.iter().copied().collect(),
        partition_epoch: epoch,
    }
}

fn change(partition: i32, state: PartitionState) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id: TOPIC,
        partition,
        state,
    }
}

fn records_of(out: &ClusterEffects) -> Vec<&MetadataRecord> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

#[test]
fn brokers_register_fenced_and_heartbeat_unfenced() {
    let mut cluster = Cluster::new();
    assert_eq!(cluster.register(5), 0);
    // A broker still catching up with the log stays fenced, and keeps its session.
    let (answer, out) = cluster.quorum.heartbeat(5, 0, true);
    assert_eq!(answer, Ok(HeartbeatAnswer { is_fenced: true }));
    assert_eq!(cluster.step(out), []);
    assert!(cluster.timers.contains_key(&ClusterTimer::BrokerSession(5)));
    let (answer, records) = cluster.heartbeat(5, 0);
    assert_eq!(answer, Ok(HeartbeatAnswer { is_fenced: false }));
    assert_eq!(
        records,
        [MetadataRecord::UnfenceBroker {
            broker_id: 5,
            broker_epoch: 0
        }]
    );
    // Later heartbeats renew the session and record nothing.
    assert_eq!(
        cluster.heartbeat(5, 0),
        (Ok(HeartbeatAnswer { is_fenced: false }), vec![])
    );
    assert_eq!(
        cluster.heartbeat(6, 0).0,
        Err(Errors::BrokerIdNotRegistered)
    );
    assert_eq!(cluster.heartbeat(5, 1).0, Err(Errors::StaleBrokerEpoch));
    assert_eq!(
        cluster.quorum.register_broker(1 << 31, "h", 1).0,
        Err(Errors::InvalidRequest)
    );
}

#[test]
fn topics_are_placed_round_robin_from_the_ids_start() {
    let cluster = Cluster::with_topic();
    // Three live brokers and a topic id starting with 1: round robin starts at broker 1.
    let created = &cluster.log[cluster.log.len() - 4..];
    assert_eq!(
        created[0],
        MetadataRecord::Topic {
            name: "t".into(),
            topic_id: TOPIC,
            configs: vec![]
        }
    );
    let expected = [[1, 2, 0], [2, 0, 1], [0, 1, 2]];
    for (p, replicas) in expected.iter().enumerate() {
        assert_eq!(
            created[p + 1],
            MetadataRecord::Partition {
                topic_id: TOPIC,
                partition: p as i32,
                replicas: replicas.to_vec(),
                state: state(Some(replicas[0]), 0, &[0, 1, 2], 0),
            }
        );
        assert_eq!(
            cluster.state(p as i32),
            state(Some(replicas[0]), 0, &[0, 1, 2], 0)
        );
    }
    let topic = cluster.quorum.image().topic("t").unwrap();
    assert_eq!(topic.partitions.len(), 3);
    assert_eq!(cluster.quorum.image().topic_by_id(&TOPIC), Some(topic));
}

#[test]
fn an_expired_session_fences_the_broker_and_moves_its_partitions() {
    let mut cluster = Cluster::with_topic();
    let records = cluster.fire(ClusterTimer::BrokerSession(1));
    assert_eq!(
        records,
        [
            MetadataRecord::FenceBroker {
                broker_id: 1,
                broker_epoch: 1
            },
            // Broker 1 led partition 0: the next ISR member in assignment order leads, in a
            // new epoch.
            change(0, state(Some(2), 1, &[0, 2], 1)),
            change(1, state(Some(2), 0, &[0, 2], 1)),
            change(2, state(Some(0), 0, &[0, 2], 1)),
        ]
    );
    assert!(cluster.quorum.image().broker(1).unwrap().fenced);
    assert_eq!(live(&cluster), [0, 2]);
    // A second expiry of the same session changes nothing.
    assert_eq!(cluster.fire(ClusterTimer::BrokerSession(1)), []);

    // It heartbeats again: unfenced, but back in no ISR until a leader readmits it.
    let (answer, records) = cluster.heartbeat(1, 1);
    assert_eq!(answer, Ok(HeartbeatAnswer { is_fenced: false }));
    assert_eq!(
        records,
        [MetadataRecord::UnfenceBroker {
            broker_id: 1,
            broker_epoch: 1
        }]
    );
    assert_eq!(cluster.state(0), state(Some(2), 1, &[0, 2], 1));
}

#[test]
fn alter_partition_is_applied_once_and_stale_proposals_are_refused() {
    let mut cluster = Cluster::with_topic();
    cluster.fire(ClusterTimer::BrokerSession(1));
    let _ = cluster.heartbeat(1, 1);

    // Partition 0's leader (2, epoch 1) readmits broker 1.
    let (answer, records) = cluster.alter(2, 2, 0, 1, 1, &[0, 1, 2]);
    let accepted = state(Some(2), 1, &[0, 1, 2], 2);
    assert_eq!(
        answer,
        Msg::AlterPartitionResponse {
            error_code: Errors::None,
            proposal: (1, BTreeSet::from([0, 1, 2])),
            state: accepted.clone(),
        }
    );
    assert_eq!(records, [change(0, accepted.clone())]);

    // The same proposal again is based on an old partition epoch.
    let (answer, records) = cluster.alter(2, 2, 0, 1, 1, &[0, 1, 2]);
    let Msg::AlterPartitionResponse {
        error_code, state, ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(
        (error_code, state),
        (Errors::InvalidUpdateVersion, accepted.clone())
    );
    assert_eq!(records, []);

    // From an earlier incarnation of the leader, or for a partition that does not exist.
    let (answer, records) = cluster.alter(2, 0, 0, 1, 2, &[0, 2]);
    assert!(matches!(
        answer,
        Msg::AlterPartitionResponse { error_code: Errors::StaleBrokerEpoch, ref state, .. }
            if *state == accepted
    ));
    assert_eq!(records, []);
    let (answer, _) = cluster.alter(2, 2, 7, 1, 2, &[0, 2]);
    assert!(matches!(
        answer,
        Msg::AlterPartitionResponse {
            error_code: Errors::UnknownTopicOrPartition,
            ..
        }
    ));
    let (answer, _) = cluster.alter(3, 2, 0, 1, 2, &[0, 2]);
    assert!(matches!(
        answer,
        Msg::AlterPartitionResponse {
            error_code: Errors::StaleBrokerEpoch,
            ..
        }
    ));
}

#[test]
fn a_leader_that_registers_again_is_replaced() {
    let mut cluster = Cluster::with_topic();
    // Broker 2 restarts: a new registration while its old session is alive. It led partition 1.
    let epoch = cluster.register(2);
    assert_eq!(epoch, 10);
    let registered = &cluster.log[10..];
    assert_eq!(
        registered[1..],
        [
            change(0, state(Some(1), 0, &[0, 1], 1)),
            change(1, state(Some(0), 1, &[0, 1], 1)),
            change(2, state(Some(0), 0, &[0, 1], 1)),
        ]
    );
    assert!(!cluster.timers.contains_key(&ClusterTimer::BrokerSession(2)));
    // The old incarnation is refused; the new one's first heartbeat unfences it.
    assert_eq!(cluster.heartbeat(2, 2).0, Err(Errors::StaleBrokerEpoch));
    let (answer, records) = cluster.heartbeat(2, epoch);
    assert_eq!(answer, Ok(HeartbeatAnswer { is_fenced: false }));
    assert_eq!(
        records,
        [MetadataRecord::UnfenceBroker {
            broker_id: 2,
            broker_epoch: epoch
        }]
    );
    assert_eq!(cluster.state(1), state(Some(0), 1, &[0, 1], 1));
}

#[test]
fn a_sole_replica_that_restarts_is_elected_again_in_a_new_epoch() {
    let mut cluster = Cluster::three_brokers();
    let mut topic = new_topic("t", TOPIC, -1, -1);
    topic.assignments = vec![vec![0]];
    assert!(cluster.create(vec![topic]).0[0].is_ok());
    let epoch = cluster.register(0);
    assert_eq!(cluster.state(0), state(None, 1, &[0], 1));
    let (_, records) = cluster.heartbeat(0, epoch);
    assert_eq!(
        records.len(),
        1,
        "only the unfence: the election waits for its timer"
    );
    let election = ClusterTimer::Election(TOPIC, 0);
    assert_eq!(cluster.timers.get(&election), Some(&0));

    // A controller restarting before the timer fires sets it again.
    let (_, out) = cluster.restarted();
    assert!(out.contains(&Effect::SetTimer {
        timer: election,
        after_ms: 0
    }));

    assert_eq!(
        cluster.fire(election),
        [change(0, state(Some(0), 2, &[0], 2))]
    );
    assert_eq!(cluster.fire(election), []);
}

#[test]
fn replaying_the_log_rebuilds_the_same_controller() {
    let mut cluster = Cluster::with_topic();
    cluster.fire(ClusterTimer::BrokerSession(1));
    let _ = cluster.heartbeat(1, 1);
    cluster.alter(2, 2, 0, 1, 1, &[0, 1, 2]);
    let epoch = cluster.register(0);
    let _ = cluster.heartbeat(0, epoch);
    let (block, out) = cluster.quorum.allocate_producer_ids(0, epoch);
    assert_eq!(block, Ok((0, 1000)));
    cluster.step(out);

    let (restarted, out) = cluster.restarted();
    assert_eq!(restarted.image(), cluster.quorum.image());
    for p in 0..3 {
        assert_eq!(
            restarted.partition_state(&TOPIC, p),
            Some(&cluster.state(p))
        );
    }
    // No record and no election: the brokers alive before are alive until their sessions end.
    assert_eq!(records_of(&out), Vec::<&MetadataRecord>::new());
    let timers: Vec<_> = out
        .iter()
        .map(|e| match e {
            Effect::SetTimer { timer, .. } => *timer,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        timers,
        [0, 1, 2].map(ClusterTimer::BrokerSession),
        "a session for each live broker"
    );

    // And it goes on as the old one would.
    let mut old = cluster.quorum.clone();
    let mut new = restarted;
    let timer = ClusterTimer::BrokerSession(2);
    assert_eq!(old.on_timer(timer), new.on_timer(timer));
    assert_eq!(old.image(), new.image());
}

#[test]
fn start_completes_a_step_cut_short() {
    let mut cluster = Cluster::with_topic();
    let fenced = cluster.fire(ClusterTimer::BrokerSession(1));
    assert_eq!(fenced.len(), 4);
    // A driver that lost the partition changes after the fence (not one batch).
    cluster.log.truncate(cluster.log.len() - 3);
    let (restarted, out) = cluster.restarted();
    let records = records_of(&out);
    assert_eq!(
        records,
        [
            &change(0, state(Some(2), 1, &[0, 2], 1)),
            &change(1, state(Some(2), 0, &[0, 2], 1)),
            &change(2, state(Some(0), 0, &[0, 2], 1)),
        ]
    );
    assert_eq!(restarted.image().next_offset(), 14);
}

#[test]
fn deleted_topics_are_gone_with_their_partitions() {
    let mut cluster = Cluster::with_topic();
    let (results, out) = cluster
        .quorum
        .delete_topics(&["t".into(), "t".into(), "u".into()]);
    assert_eq!(
        results,
        [
            Ok(TOPIC),
            Err(Errors::UnknownTopicOrPartition),
            Err(Errors::UnknownTopicOrPartition)
        ]
    );
    assert_eq!(
        cluster.step(out),
        [MetadataRecord::RemoveTopic { topic_id: TOPIC }]
    );
    assert_eq!(cluster.quorum.image().topic("t"), None);
    assert_eq!(cluster.quorum.partition_state(&TOPIC, 0), None);
    // A pending timer of a deleted partition does nothing.
    assert_eq!(cluster.fire(ClusterTimer::Election(TOPIC, 0)), []);
    // The name is free again, under a new id.
    let (results, _) = cluster.create(vec![new_topic("t", [2; 16], 1, 1)]);
    assert!(results[0].is_ok());
    let (restarted, _) = cluster.restarted();
    assert_eq!(restarted.image(), cluster.quorum.image());
    assert_eq!(restarted.partition_state(&TOPIC, 0), None);
}

#[test]
fn added_partitions_continue_the_round_robin() {
    let mut cluster = Cluster::with_topic();
    let (result, out) = cluster.quorum.create_partitions("t", 5);
    assert_eq!(result, Ok(()));
    let records = cluster.step(out);
    let replicas: Vec<_> = records
        .iter()
        .map(|r| match r {
            MetadataRecord::Partition {
                partition,
                replicas,
                ..
            } => (*partition, replicas.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replicas, [(3, vec![1, 2, 0]), (4, vec![2, 0, 1])]);
    assert_eq!(cluster.state(4), state(Some(2), 0, &[0, 1, 2], 0));

    let refused = |cluster: &mut Cluster, name: &str, total| {
        let (result, out) = cluster.quorum.create_partitions(name, total);
        assert_eq!(out, []);
        result.unwrap_err()
    };
    assert_eq!(
        refused(&mut cluster, "t", 5),
        (
            Errors::InvalidPartitions,
            "Topic already has 5 partition(s).".into()
        )
    );
    assert_eq!(
        refused(&mut cluster, "t", 2),
        (
            Errors::InvalidPartitions,
            "The topic t currently has 5 partition(s); 2 would not be an increase.".into()
        )
    );
    assert_eq!(
        refused(&mut cluster, "u", 2).0,
        Errors::UnknownTopicOrPartition
    );
    cluster.fire(ClusterTimer::BrokerSession(0));
    assert_eq!(
        refused(&mut cluster, "t", 6),
        (
            Errors::InvalidReplicationFactor,
            "The target replication factor of 3 cannot be reached because only 2 broker(s) are \
             registered and unfenced."
                .into()
        )
    );
}

#[test]
fn producer_id_blocks_never_overlap_across_a_restart() {
    let mut cluster = Cluster::three_brokers();
    let mut blocks = Vec::new();
    for broker in [0, 1] {
        let (block, out) = cluster
            .quorum
            .allocate_producer_ids(broker, i64::from(broker));
        blocks.push(block.unwrap());
        cluster.step(out);
    }
    assert_eq!(blocks, [(0, 1000), (1000, 1000)]);
    assert_eq!(
        cluster.log.last(),
        Some(&MetadataRecord::ProducerIds {
            broker_id: 1,
            broker_epoch: 1,
            next_producer_id: 2000
        })
    );
    let (mut restarted, _) = cluster.restarted();
    let (block, _) = restarted.allocate_producer_ids(2, 2);
    assert_eq!(block, Ok((2000, 1000)));
    assert_eq!(
        restarted.allocate_producer_ids(2, 0).0,
        Err(Errors::StaleBrokerEpoch)
    );
    assert_eq!(
        restarted.allocate_producer_ids(9, 0).0,
        Err(Errors::StaleBrokerEpoch)
    );
}

#[test]
fn create_topics_refuses_as_kafka_does() {
    let mut cluster = Cluster::with_topic();
    let manual = |assignments: Vec<Vec<BrokerId>>| NewTopic {
        assignments,
        ..new_topic("m", [3; 16], -1, -1)
    };
    let cases = [
        (
            new_topic("t", [4; 16], 1, 1),
            Errors::TopicAlreadyExists,
            "Topic 't' already exists.",
        ),
        (
            new_topic("a", [4; 16], 0, 1),
            Errors::InvalidPartitions,
            "Number of partitions was set to an invalid non-positive value.",
        ),
        (
            new_topic("a", [4; 16], 1, 0),
            Errors::InvalidReplicationFactor,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ),
        (
            new_topic("a", [4; 16], 1, 4),
            Errors::InvalidReplicationFactor,
            "Unable to replicate the partition 4 time(s): The target replication factor of 4 \
             cannot be reached because only 3 broker(s) are registered.",
        ),
        (
            new_topic("a", TOPIC, 1, 1),
            Errors::InvalidRequest,
            "Topic id 01010101010101010101010101010101 is not available.",
        ),
        (
            new_topic("a", [4; 16], 20_000, 1),
            Errors::PolicyViolation,
            "Unable to perform excessively large batch operation.",
        ),
        (
            manual(vec![vec![0, 7]]),
            Errors::InvalidReplicaAssignment,
            "The manual partition assignment includes broker 7, but no such broker is \
             registered.",
        ),
        (
            manual(vec![vec![1, 0, 1]]),
            Errors::InvalidReplicaAssignment,
            "The manual partition assignment includes the broker 1 more than once.",
        ),
        (
            manual(vec![vec![0, 1], vec![2]]),
            Errors::InvalidReplicaAssignment,
            "The manual partition assignment includes a partition with 1 replica(s), but this \
             is not consistent with previous partitions, which have 2 replica(s).",
        ),
        (
            manual(vec![vec![]]),
            Errors::InvalidReplicaAssignment,
            "The manual partition assignment includes an empty replica list.",
        ),
        (
            NewTopic {
                replication_factor: 2,
                ..manual(vec![vec![0]])
            },
            Errors::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set \
             to -1.",
        ),
        (
            NewTopic {
                num_partitions: 1,
                ..manual(vec![vec![0]])
            },
            Errors::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1.",
        ),
    ];
    for (topic, error, message) in cases {
        let (results, records) = cluster.create(vec![topic.clone()]);
        assert_eq!(results, [Err((error, message.to_string()))], "{topic:?}");
        assert_eq!(records, []);
    }

    // Only fenced brokers in a manual assignment: nobody could lead.
    cluster.fire(ClusterTimer::BrokerSession(2));
    let (results, _) = cluster.create(vec![manual(vec![vec![2]])]);
    assert_eq!(
        results,
        [Err((
            Errors::InvalidReplicaAssignment,
            "All brokers specified in the manual partition assignment for partition 0 are \
             fenced or in controlled shutdown."
                .into()
        ))]
    );
    // With a live one, the fenced one is a replica outside the ISR.
    let (results, records) = cluster.create(vec![manual(vec![vec![2, 0]])]);
    assert!(results[0].is_ok());
    assert_eq!(
        records[1],
        MetadataRecord::Partition {
            topic_id: [3; 16],
            partition: 0,
            replicas: vec![2, 0],
            state: state(Some(0), 0, &[0], 0),
        }
    );
    // Defaults: one partition, one replica; each topic of a request stands alone.
    let (results, _) = cluster.create(vec![
        new_topic("d", [5; 16], -1, -1),
        new_topic("d", [6; 16], -1, -1),
    ]);
    assert_eq!(
        results,
        [
            Ok(CreatedTopic {
                topic_id: [5; 16],
                num_partitions: 1,
                replication_factor: 1
            }),
            Err((
                Errors::TopicAlreadyExists,
                "Topic 'd' already exists.".into()
            ))
        ]
    );
}

#[test]
fn a_topic_can_enable_unclean_election_for_itself() {
    let mut cluster = Cluster::three_brokers();
    let mut topic = new_topic("t", TOPIC, -1, -1);
    topic.assignments = vec![vec![0, 1]];
    topic.configs = vec![("unclean.leader.election.enable".into(), "true".into())];
    cluster.create(vec![topic]);
    // Broker 1 leaves the ISR, then the leader dies: only the out-of-sync replica is left.
    cluster.fire(ClusterTimer::BrokerSession(1));
    let _ = cluster.heartbeat(1, 1);
    let records = cluster.fire(ClusterTimer::BrokerSession(0));
    assert_eq!(records[1..], [change(0, state(Some(1), 1, &[1], 2))]);
}

#[test]
fn the_image_ignores_records_that_do_not_fit() {
    let mut image = MetadataImage::new();
    let orphan = change(0, state(Some(1), 1, &[1], 1));
    assert_eq!(image.apply(0, &orphan), []);
    let fence = MetadataRecord::FenceBroker {
        broker_id: 1,
        broker_epoch: 0,
    };
    assert_eq!(image.apply(1, &fence), []);
    let register = MetadataRecord::RegisterBroker {
        broker_id: 1,
        broker_epoch: 2,
        host: "h".into(),
        port: 1,
    };
    assert_eq!(image.apply(2, &register), [ImageChange::Broker(1)]);
    // A fence of an earlier incarnation, and a record at an offset already applied.
    assert_eq!(image.apply(3, &fence), []);
    let unfence = MetadataRecord::UnfenceBroker {
        broker_id: 1,
        broker_epoch: 2,
    };
    assert_eq!(image.apply(2, &unfence), []);
    assert_eq!(image.apply(4, &unfence), [ImageChange::Broker(1)]);
    let gap = MetadataRecord::Partition {
        topic_id: TOPIC,
        partition: 1,
        replicas: vec![1],
        state: state(Some(1), 0, &[1], 0),
    };
    image.apply(
        5,
        &MetadataRecord::Topic {
            name: "t".into(),
            topic_id: TOPIC,
            configs: vec![],
        },
    );
    assert_eq!(image.apply(6, &gap), []);
    assert_eq!(image.topic("t").unwrap().partitions.len(), 0);
    assert_eq!(
        image.apply(7, &MetadataRecord::RemoveTopic { topic_id: TOPIC }),
        [ImageChange::TopicRemoved {
            name: "t".into(),
            topic_id: TOPIC,
            partitions: 0
        }]
    );
    assert_eq!(image.next_offset(), 8);
}

#[test]
fn broken_register_keeps_partitions_leaves_a_fenced_broker_leading() {
    let mut cluster = Cluster::with_topic();
    let sound = cluster.quorum.clone();
    cluster.quorum = cluster
        .quorum
        .clone()
        .with_broken(Some(QuorumBrokenVariant::RegisterKeepsPartitions));
    // Broker 2 leads partition 1 and registers again: only the registration is recorded.
    let epoch = cluster.register(2);
    assert_eq!(cluster.log.len() as i64, epoch + 1);
    assert!(cluster.quorum.image().broker(2).unwrap().fenced);
    assert_eq!(cluster.state(1), state(Some(2), 0, &[0, 1, 2], 0));
    // The sound controller, from the same state, moves broker 2's partitions.
    let mut sound = sound;
    let (_, out) = sound.register_broker(2, "localhost", 9094);
    assert_eq!(records_of(&out).len(), 4);
    assert_eq!(sound.partition_state(&TOPIC, 1).unwrap().leader, Some(0));
}

#[test]
fn broken_elect_live_replica_elects_outside_the_isr() {
    let mut cluster = Cluster::with_topic();
    cluster.quorum = cluster
        .quorum
        .clone()
        .with_broken(Some(QuorumBrokenVariant::ElectLiveReplica));
    // Broker 1 (leading partition 0, replicas [1, 2, 0]) expires: broker 2, live and in the ISR,
    // leads, exactly as the sound rule has it.
    cluster.fire(ClusterTimer::BrokerSession(1));
    assert_eq!(cluster.state(0), state(Some(2), 1, &[0, 2], 1));
    let _ = cluster.heartbeat(1, 1);
    // Now broker 2 expires: broker 1 is live but out of the ISR, and the broken rule elects it.
    let sound_next = {
        let mut sound = cluster.quorum.clone().with_broken(None);
        let _ = sound.on_timer(ClusterTimer::BrokerSession(2));
        sound.partition_state(&TOPIC, 0).cloned().unwrap()
    };
    assert_eq!(sound_next, state(Some(0), 2, &[0], 2));
    let records = cluster.fire(ClusterTimer::BrokerSession(2));
    assert_eq!(records[1], change(0, state(Some(1), 2, &[1], 2)));
    assert_eq!(cluster.state(0), state(Some(1), 2, &[1], 2));
    let controller = cluster.quorum.partition_controller(&TOPIC, 0).unwrap();
    assert_eq!(controller.state(), &cluster.state(0));
    assert!(controller.fenced().contains(&2));
}
