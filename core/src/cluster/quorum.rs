//! The cluster controller as a sans-IO actor, after Kafka's `QuorumController`: brokers
//! register and heartbeat to it, it fences those whose session expires, creates and deletes
//! topics, hands out producer id blocks, and runs one [`Controller`] per partition for
//! elections and ISR changes (their rules are replication's, not repeated here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::image::{ImageChange, MetadataImage, PartitionImage, TopicImage};
use super::records::{MAX_BROKER_ID, MAX_STRING_LEN, MetadataRecord, TopicId};
use crate::actor::{Effect, Effects, Node};
use crate::errors::Errors;
use crate::replication::{
    BrokerId, Controller, ControllerConfig, ControllerTimer, Msg, PartitionState,
};

/// What the cluster controller is configured with; the names are Kafka's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub struct QuorumConfig {
    /// `unclean.leader.election.enable`, unless a topic overrides it: when no ISR member is
    /// alive, elect any live replica and accept losing what only the ISR had.
    pub unclean_leader_election_enable: bool,
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `default.replication.factor`, for a CreateTopics that asks for -1.
    pub default_replication_factor: i16,
    /// `num.partitions`, for a CreateTopics that asks for -1.
    pub num_partitions: i32,
    /// How many producer ids a broker gets at once: it asks again only when they run out.
    pub producer_id_block_size: i64,
}

impl Default for QuorumConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        QuorumConfig {
            unclean_leader_election_enable: false,
            broker_session_timeout_ms: 9_000,
            default_replication_factor: 1,
            num_partitions: 1,
            producer_id_block_size: 1_000,
        }
    }
}

/// Timers the cluster controller sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum ClusterTimer {
    /// The broker's session expired without a heartbeat: fence it. Each heartbeat sets it anew.
    BrokerSession(BrokerId),
    /// A partition may elect a leader (a broker it waited for came back).
    Election(TopicId, i32),
}

/// A topic a CreateTopics request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub struct NewTopic {
    /// Checked against Kafka's naming rules by the broker, before it gets here.
    pub name: String,
    /// A fresh random id, from the driver: the core draws no random numbers.
    pub topic_id: TopicId,
    /// -1 for `num.partitions`; must be -1 with `assignments`.
    pub num_partitions: i32,
    /// -1 for `default.replication.factor`; must be -1 with `assignments`.
    pub replication_factor: i16,
    /// Replicas of each partition, preferred leader first; empty to place them automatically.
    pub assignments: Vec<Vec<BrokerId>>,
    /// Overrides of the broker defaults (`unclean.leader.election.enable` is read here too).
    pub configs: Vec<(String, String)>,
}

/// What CreateTopics answers for a topic it created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatedTopic {
    /// The id the topic was created with.
    pub topic_id: TopicId,
    /// After defaults were applied.
    pub num_partitions: i32,
    /// After defaults were applied.
    pub replication_factor: i16,
}

/// Deliberately broken rules of the cluster controller. They exist only so the model checker
/// (`model/src/cluster/`) can show that it catches what they break; nothing else sets one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuorumBrokenVariant {
    /// A broker that registers again while its earlier incarnation is alive is fenced in the
    /// image, but its partitions are not told: it goes on leading them and stays in their ISRs.
    RegisterKeepsPartitions,
    /// When a broker is fenced (its session expired, or it registered again while live), each
    /// partition it led elects the first replica in assignment order that the image shows live,
    /// in the ISR or not: the cluster's shared liveness stands in for the partition's ISR.
    ElectLiveReplica,
}

/// What a BrokerHeartbeat answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// A fenced broker must not serve as leader or join ISRs yet.
    pub is_fenced: bool,
}

/// Why a topic request was refused: Kafka's error code and the message Kafka gives with it.
pub type Refusal = (Errors, String);

/// The effects of one step: records to append (`Send` to [`Node::Controller`]) and timers.
pub type ClusterEffects = Effects<ClusterTimer, MetadataRecord>;

/// Kafka's `MAX_RECORDS_PER_USER_OP`: one request writes at most this many records, so a
/// CreateTopics asking for a million partitions cannot stall the log.
pub const MAX_RECORDS_PER_USER_OP: usize = 10_000;

/// The topic config that overrides `unclean.leader.election.enable` for one topic.
const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// The cluster controller.
///
/// Every decision is a [`MetadataRecord`]: a step returns `Effect::Send { to:
/// Node::Controller, msg }` for each record to append to the metadata log, in order. The
/// controller applies its own records to its image as it emits them, so its image runs ahead
/// of the log by the records not yet appended, and the driver must:
/// - append a step's records at the offsets the image gave them (`image().next_offset()`
///   before the step is the first one's), one record per offset;
/// - append a step's records as one batch (all or none survive a crash, as KRaft appends a
///   `ControllerResult` atomically): a fence without the elections it caused would leave a
///   fenced leader. [`QuorumController::start`] repairs such a log, but answers sent on it
///   were wrong;
/// - make them durable before it sends any answer of the same step.
#[derive(Clone, Debug)]
pub struct QuorumController {
    pub(super) config: Arc<QuorumConfig>,
    pub(super) image: MetadataImage,
    /// One per partition of the image, holding the same state once a step's records are
    /// applied.
    pub(super) partitions: BTreeMap<(TopicId, i32), Controller>,
    /// A deliberately broken rule for the model checker; `None` everywhere else.
    pub(super) broken: Option<QuorumBrokenVariant>,
}

impl QuorumController {
    /// A controller with an empty log: [`QuorumController::replay`] the log, then
    /// [`QuorumController::start`].
    pub fn new(config: Arc<QuorumConfig>) -> Self {
        QuorumController {
            config,
            image: MetadataImage::new(),
            partitions: BTreeMap::new(),
            broken: None,
        }
    }

    /// The same controller following a deliberately broken rule (`None`: the sound ones). Only
    /// the model checker calls this, to show that its properties catch the rule.
    pub fn with_broken(mut self, broken: Option<QuorumBrokenVariant>) -> Self {
        self.broken = broken;
        self
    }

    /// Partition `p`'s controller: its state, and what it knows of its replicas' brokers
    /// (fenced, incarnations). A model checker compares and hashes controllers by it.
    pub fn partition_controller(&self, topic_id: &TopicId, p: i32) -> Option<&Controller> {
        self.partitions.get(&(*topic_id, p))
    }

    /// What the records emitted so far say.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Partition `p`'s state as its controller holds it (the image's, once its records are
    /// applied).
    pub fn partition_state(&self, topic_id: &TopicId, p: i32) -> Option<&PartitionState> {
        Some(self.partitions.get(&(*topic_id, p))?.state())
    }

    /// Applies a record of the log, read back at start. Partition controllers are rebuilt from
    /// the image with the brokers' current incarnations, so the leaders elected before the
    /// restart are not taken for restarted ones.
    pub fn replay(&mut self, offset: i64, record: &MetadataRecord) {
        for change in self.image.apply(offset, record) {
            match change {
                ImageChange::Partition { topic, partition } => {
                    if let Some(topic) = self.image.topic(&topic) {
                        let key = (topic.topic_id, partition);
                        self.rebuild(key, &BTreeSet::new());
                    }
                }
                ImageChange::TopicRemoved { topic_id, .. } => self.drop_partitions(&topic_id),
                ImageChange::Broker(broker) => {
                    for key in self.partitions_of(broker) {
                        self.rebuild(key, &BTreeSet::new());
                    }
                }
            }
        }
    }

    /// Takes over after [`QuorumController::replay`]: every live broker gets a session (it
    /// counts as alive until that expires), a partition that waits for an election gets it,
    /// and a log cut inside a step is completed (a fenced broker still leading or in an ISR is
    /// fenced in its partitions).
    pub fn start(&mut self) -> ClusterEffects {
        let mut out = Vec::new();
        let keys: Vec<_> = self.partitions.keys().copied().collect();
        for key in keys {
            self.complete_fencing(key, &mut out);
            if let Some(controller) = self.partitions.get(&key)
                && !controller
                    .election_choices(ControllerTimer::Election)
                    .is_empty()
            {
                out.push(Effect::SetTimer {
                    timer: ClusterTimer::Election(key.0, key.1),
                    after_ms: 0,
                });
            }
        }
        for (broker, _) in self.image.live_brokers() {
            out.push(self.session(broker));
        }
        out
    }

    /// BrokerRegistration: a broker (re)starts. It is fenced until its first heartbeat, and an
    /// earlier incarnation still alive is fenced now: a restarted broker lost what it held in
    /// memory, so it must not go on leading or count in ISRs until its leader readmits it.
    pub fn register_broker(
        &mut self,
        broker_id: BrokerId,
        host: impl Into<String>,
        port: u16,
    ) -> (Result<i64, Errors>, ClusterEffects) {
        let host = host.into();
        if broker_id > MAX_BROKER_ID || host.len() > MAX_STRING_LEN {
            return (Err(Errors::InvalidRequest), Vec::new());
        }
        let was_live = self.image.broker(broker_id).is_some_and(|b| !b.fenced);
        let broker_epoch = self.image.next_offset();
        let mut out = Vec::new();
        self.append(
            MetadataRecord::RegisterBroker {
                broker_id,
                broker_epoch,
                host,
                port,
            },
            &mut out,
        );
        out.push(Effect::CancelTimer(ClusterTimer::BrokerSession(broker_id)));
        if was_live && self.broken != Some(QuorumBrokenVariant::RegisterKeepsPartitions) {
            self.fence_in_partitions(broker_id, &mut out);
        }
        (Ok(broker_epoch), out)
    }

    /// BrokerHeartbeat. `want_fence` is a broker that has not caught up with the log yet: it
    /// stays fenced. The first heartbeat that does not want it unfences the broker, and its
    /// partitions learn it is back (a leaderless one elects it, a restarted one's new
    /// incarnation is recorded). Later heartbeats only renew the session: a partition
    /// controller would learn nothing from them.
    pub fn heartbeat(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
        want_fence: bool,
    ) -> (Result<HeartbeatAnswer, Errors>, ClusterEffects) {
        let fenced = match self.image.broker(broker_id) {
            None => return (Err(Errors::BrokerIdNotRegistered), Vec::new()),
            Some(b) if b.broker_epoch != broker_epoch => {
                return (Err(Errors::StaleBrokerEpoch), Vec::new());
            }
            Some(b) => b.fenced,
        };
        let mut out = vec![self.session(broker_id)];
        if fenced && !want_fence {
            self.append(
                MetadataRecord::UnfenceBroker {
                    broker_id,
                    broker_epoch,
                },
                &mut out,
            );
            let heartbeat = Msg::BrokerHeartbeat {
                broker_id,
                incarnation: incarnation(broker_epoch),
            };
            for key in self.partitions_of(broker_id) {
                if let Some(controller) = self.partitions.get_mut(&key) {
                    let effects = controller.on_message(Node::Broker(broker_id), heartbeat.clone());
                    self.absorb(key, effects, &mut out);
                }
            }
        }
        let is_fenced = fenced && want_fence;
        (Ok(HeartbeatAnswer { is_fenced }), out)
    }

    /// AlterPartition: a leader proposes a new ISR. Answers with the partition controller's
    /// AlterPartitionResponse, or one carrying `STALE_BROKER_EPOCH` (the leader restarted since
    /// it sent it) or `UNKNOWN_TOPIC_OR_PARTITION`.
    #[allow(clippy::too_many_arguments)]
    pub fn alter_partition(
        &mut self,
        from_broker: BrokerId,
        broker_epoch: i64,
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: BTreeSet<BrokerId>,
    ) -> (Msg, ClusterEffects) {
        let key = (topic_id, partition);
        let refuse = |error_code, state: Option<&PartitionState>| Msg::AlterPartitionResponse {
            error_code,
            proposal: (partition_epoch, new_isr.clone()),
            state: state.cloned().unwrap_or(PartitionState {
                leader: None,
                leader_epoch: -1,
                isr: BTreeSet::new(),
                partition_epoch: -1,
            }),
        };
        if let Err(error) = self.check_epoch(from_broker, broker_epoch) {
            return (
                refuse(error, self.partition_state(&topic_id, partition)),
                Vec::new(),
            );
        }
        let Some(controller) = self.partitions.get_mut(&key) else {
            return (refuse(Errors::UnknownTopicOrPartition, None), Vec::new());
        };
        let effects = controller.on_message(
            Node::Broker(from_broker),
            Msg::AlterPartition {
                broker_id: from_broker,
                leader_epoch,
                partition_epoch,
                new_isr: new_isr.clone(),
            },
        );
        let mut out = Vec::new();
        let answer = self.absorb(key, effects, &mut out);
        let answer = answer.unwrap_or_else(|| refuse(Errors::UnknownServerError, None));
        (answer, out)
    }

    /// AllocateProducerIds: the next block of producer ids, recorded before it is answered so
    /// no restart hands it out again.
    pub fn allocate_producer_ids(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> (Result<(i64, i64), Errors>, ClusterEffects) {
        if let Err(error) = self.check_epoch(broker_id, broker_epoch) {
            return (Err(error), Vec::new());
        }
        let first = self.image.next_producer_id();
        let count = self.config.producer_id_block_size.max(1);
        // Kafka: the ids are exhausted once the block's end passes the int64 range.
        let Some(next_producer_id) = first.checked_add(count) else {
            return (Err(Errors::UnknownServerError), Vec::new());
        };
        let mut out = Vec::new();
        self.append(
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            },
            &mut out,
        );
        (Ok((first, count)), out)
    }

    /// A timer fired: a broker's session expired (fence it), or a partition may elect.
    pub fn on_timer(&mut self, timer: ClusterTimer) -> ClusterEffects {
        let mut out = Vec::new();
        match timer {
            ClusterTimer::BrokerSession(broker_id) => {
                let Some(broker) = self.image.broker(broker_id).filter(|b| !b.fenced) else {
                    return out;
                };
                let broker_epoch = broker.broker_epoch;
                self.append(
                    MetadataRecord::FenceBroker {
                        broker_id,
                        broker_epoch,
                    },
                    &mut out,
                );
                self.fence_in_partitions(broker_id, &mut out);
            }
            ClusterTimer::Election(topic_id, partition) => {
                let key = (topic_id, partition);
                if let Some(controller) = self.partitions.get_mut(&key) {
                    let effects = controller.on_timer(ControllerTimer::Election);
                    self.absorb(key, effects, &mut out);
                }
            }
        }
        out
    }

    /// Appends `record`: applies it to the image at the offset the log will give it.
    pub(super) fn append(&mut self, record: MetadataRecord, out: &mut ClusterEffects) {
        let offset = self.image.next_offset();
        self.image.apply(offset, &record);
        out.push(Effect::Send {
            to: Node::Controller,
            msg: record,
        });
    }

    /// The partition controller of an image partition, as the image says: its brokers'
    /// current incarnations, and the fenced ones among its replicas except `not_fenced`.
    pub(super) fn rebuild(&mut self, key: (TopicId, i32), not_fenced: &BTreeSet<BrokerId>) {
        let Some(topic) = self.image.topic_by_id(&key.0) else {
            return;
        };
        let Some(partition) = topic.partition(key.1) else {
            return;
        };
        let controller = self.controller_for(topic, partition, not_fenced);
        self.partitions.insert(key, controller);
    }

    fn controller_for(
        &self,
        topic: &TopicImage,
        partition: &PartitionImage,
        not_fenced: &BTreeSet<BrokerId>,
    ) -> Controller {
        let mut config = ControllerConfig::new(partition.replicas.clone());
        config.unclean_leader_election_enable = topic
            .configs
            .iter()
            .rev()
            .find(|(name, _)| name == UNCLEAN_LEADER_ELECTION)
            .map_or(self.config.unclean_leader_election_enable, |(_, v)| {
                v.trim().eq_ignore_ascii_case("true")
            });
        config.broker_session_timeout_ms = self.config.broker_session_timeout_ms;
        let mut incarnations = BTreeMap::new();
        let mut fenced = BTreeSet::new();
        for &replica in &partition.replicas {
            match self.image.broker(replica) {
                Some(b) => {
                    incarnations.insert(replica, incarnation(b.broker_epoch));
                    if b.fenced && !not_fenced.contains(&replica) {
                        fenced.insert(replica);
                    }
                }
                None => {
                    fenced.insert(replica);
                }
            }
        }
        Controller::with_brokers(
            Arc::new(config),
            partition.state.clone(),
            incarnations,
            fenced,
        )
    }

    pub(super) fn drop_partitions(&mut self, topic_id: &TopicId) {
        let keys: Vec<_> = self
            .partitions
            .range((*topic_id, i32::MIN)..=(*topic_id, i32::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.partitions.remove(&key);
        }
    }

    /// The partitions that have `broker` among their replicas.
    fn partitions_of(&self, broker: BrokerId) -> Vec<(TopicId, i32)> {
        self.partitions
            .iter()
            .filter(|(_, c)| c.config().replicas.contains(&broker))
            .map(|(key, _)| *key)
            .collect()
    }

    fn session(&self, broker: BrokerId) -> Effect<ClusterTimer, MetadataRecord> {
        Effect::SetTimer {
            timer: ClusterTimer::BrokerSession(broker),
            after_ms: self.config.broker_session_timeout_ms,
        }
    }

    /// Kafka's `checkBrokerEpoch`: a request from an unknown broker or from an earlier
    /// incarnation is stale.
    fn check_epoch(&self, broker_id: BrokerId, broker_epoch: i64) -> Result<(), Errors> {
        match self.image.broker(broker_id) {
            Some(b) if b.broker_epoch == broker_epoch => Ok(()),
            _ => Err(Errors::StaleBrokerEpoch),
        }
    }

    /// Every partition of `broker` moves on without it: it leads none, and leaves the ISRs it
    /// is not the last member of.
    fn fence_in_partitions(&mut self, broker: BrokerId, out: &mut ClusterEffects) {
        for key in self.partitions_of(broker) {
            if self.broken == Some(QuorumBrokenVariant::ElectLiveReplica)
                && self.elect_live_replica(key, broker, out)
            {
                continue;
            }
            if let Some(controller) = self.partitions.get_mut(&key) {
                let effects = controller.on_timer(ControllerTimer::BrokerSession(broker));
                self.absorb(key, effects, out);
            }
        }
    }

    /// The `ElectLiveReplica` bug: if `broker` led partition `key`, the first other replica the
    /// image shows live leads it next, alone in its ISR if it was not in it. Returns whether it
    /// decided the partition's fate (otherwise the partition controller does, soundly).
    fn elect_live_replica(
        &mut self,
        key: (TopicId, i32),
        broker: BrokerId,
        out: &mut ClusterEffects,
    ) -> bool {
        let Some(controller) = self.partitions.get(&key) else {
            return false;
        };
        let state = controller.state();
        if state.leader != Some(broker) {
            return false;
        }
        let image = &self.image;
        let live = |r: &BrokerId| *r != broker && image.broker(*r).is_some_and(|b| !b.fenced);
        let Some(chosen) = controller.config().replicas.iter().copied().find(live) else {
            return false;
        };
        let mut isr: BTreeSet<BrokerId> = state.isr.iter().copied().filter(live).collect();
        if !isr.contains(&chosen) {
            isr = BTreeSet::from([chosen]);
        }
        let next = PartitionState {
            leader: Some(chosen),
            leader_epoch: state.leader_epoch + 1,
            isr,
            partition_epoch: state.partition_epoch + 1,
        };
        self.append(
            MetadataRecord::PartitionChange {
                topic_id: key.0,
                partition: key.1,
                state: next,
            },
            out,
        );
        self.rebuild(key, &BTreeSet::new());
        true
    }

    /// After a log cut inside a step: fences, in partition `key`, the fenced brokers still
    /// leading it or in its ISR (followers first, so the election that follows skips them).
    fn complete_fencing(&mut self, key: (TopicId, i32), out: &mut ClusterEffects) {
        let Some(controller) = self.partitions.get(&key) else {
            return;
        };
        let state = controller.state();
        let mut stale: Vec<BrokerId> = state
            .isr
            .iter()
            .copied()
            .filter(|b| controller.fenced().contains(b) && state.leader != Some(*b))
            .collect();
        stale.extend(state.leader.filter(|l| controller.fenced().contains(l)));
        if stale.is_empty() {
            return;
        }
        self.rebuild(key, &stale.iter().copied().collect());
        let mut effects = Vec::new();
        if let Some(controller) = self.partitions.get_mut(&key) {
            for broker in stale {
                effects.extend(controller.on_timer(ControllerTimer::BrokerSession(broker)));
            }
        }
        self.absorb(key, effects, out);
    }

    /// Translates a partition controller's effects: its decisions become one
    /// `PartitionChange` record (a `LeaderAndIsr` goes to every replica, but the log needs it
    /// once), its election timer becomes ours, its session timers are dropped (a broker's
    /// session is ours, reset by the same heartbeats), and what it sends otherwise is the
    /// answer to the request.
    fn absorb(
        &mut self,
        key: (TopicId, i32),
        effects: Effects<ControllerTimer, Msg>,
        out: &mut ClusterEffects,
    ) -> Option<Msg> {
        let mut answer = None;
        for effect in effects {
            match effect {
                Effect::SetTimer {
                    timer: ControllerTimer::Election,
                    after_ms,
                } => out.push(Effect::SetTimer {
                    timer: ClusterTimer::Election(key.0, key.1),
                    after_ms,
                }),
                Effect::CancelTimer(ControllerTimer::Election) => {
                    out.push(Effect::CancelTimer(ClusterTimer::Election(key.0, key.1)))
                }
                Effect::SetTimer {
                    timer: ControllerTimer::BrokerSession(_),
                    ..
                }
                | Effect::CancelTimer(ControllerTimer::BrokerSession(_))
                | Effect::Persist(_)
                | Effect::Send {
                    msg: Msg::LeaderAndIsr(_),
                    ..
                } => {}
                Effect::Send { msg, .. } => answer = Some(msg),
            }
        }
        // Compared rather than taken from a LeaderAndIsr: an accepted AlterPartition changes
        // the state and announces nothing but its answer.
        if let Some(state) = self.partitions.get(&key).map(|c| c.state().clone())
            && self.image.partition_by_id(&key.0, key.1).map(|p| &p.state) != Some(&state)
        {
            self.append(
                MetadataRecord::PartitionChange {
                    topic_id: key.0,
                    partition: key.1,
                    state,
                },
                out,
            );
        }
        answer
    }
}

/// A broker epoch as a partition controller's incarnation, which only needs to grow with each
/// registration. Epochs are log offsets: they wrap after 2^32 records, far beyond any log here.
fn incarnation(broker_epoch: i64) -> u32 {
    broker_epoch as u32
}
