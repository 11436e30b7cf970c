//! The cluster model: core's [`QuorumController`] as the one controller, brokers each running
//! core's [`Replica`] for every partition placed on them, and a producing client, over a
//! network that is ordered per connection and may break.
//!
//! One topic with two partitions (by default), created at the start through the controller
//! itself: three brokers register and heartbeat, then CreateTopics places the partitions round
//! robin (replication factor 2: partition 0 on brokers 0 and 1, partition 1 on brokers 1 and 2,
//! so broker 1 leads one and follows the other; `--replication-factor 3` puts every broker in
//! both). From there the model explores what the combination decides that no single
//! partition's controller does:
//!
//! - **Shared broker liveness.** One session per broker, not per partition: when it expires
//!   (`ClusterTimer::BrokerSession`, `--expiries` times, at any moment once the broker has
//!   stopped heartbeating, or at any moment at all with `--zombies`) the broker is fenced in
//!   the image and in every partition it holds at once: partitions it led elect, the others drop
//!   it from their ISR. Its next heartbeat unfences it.
//! - **Registration and broker epochs.** A broker that crashes restarts from what its replicas
//!   saved and registers again (BrokerRegistration): a new broker epoch (the record's offset in
//!   the metadata log), and its earlier incarnation is fenced in all its partitions. Until it
//!   heartbeats it stays fenced; then a partition it led and that found no other leader elects
//!   again (`ClusterTimer::Election`).
//! - **AlterPartition routing.** A leader's ISR proposal reaches its partition's controller
//!   only with the broker epoch of its current registration.
//! - **The metadata log.** Every `PartitionChange` the controller records is delivered to each
//!   replica as `LeaderAndIsr` (and to the client, which learns leaders from metadata) over the
//!   controller's connection to it, in order; a broken connection loses what was on it and the
//!   controller sends the current state again, as a KRaft broker fetches the log again from
//!   where it stopped. A restarted broker learns the whole current state with its registration.
//!
//! The model's actions and what keeps them finite are in `specs/cluster.md`.
//!
//! [`QuorumController`]: surety_core::cluster::QuorumController
//! [`Replica`]: surety_core::replication::Replica

mod actor;
mod properties;
mod system;
#[cfg(test)]
mod tests;
mod trace;

use std::sync::Arc;

use surety_core::cluster::{
    NewTopic, QuorumBrokenVariant, QuorumConfig, QuorumController, TopicId,
};
use surety_core::replication::{BrokerId, PartitionState, ReplicaConfig};

use crate::harness::Budget;

pub use actor::{
    BrokerState, ClusterMsg, ControllerState, ModelActor, ModelState, ModelTimer, Saved,
};
pub use properties::describe_state;
pub use system::{Action, Cluster, ClusterModel, State, heartbeat_unfences};
pub use trace::describe_msg;

/// A whole counterexample in words: the steps, then the final state.
pub fn describe_path(bound: Bound, steps: Vec<(State, Option<Action>)>) -> String {
    crate::harness::trace::describe_path::<Cluster>(bound, steps)
}

/// The cluster model's variants, under a name that does not clash with replication's.
pub type ClusterVariant = Variant;

/// The topic's id. Round robin starts at the broker its first byte picks: broker 0.
pub const TOPIC_ID: TopicId = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// A protocol to check: the sound cluster controller, or a deliberately broken one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Variant {
    /// Core's `QuorumController` as the controller node runs it.
    Sound,
    /// A broker that registers again is fenced, but its partitions are not told: it keeps
    /// leading them. Must fail `fenced_broker_leads_nothing`.
    RegisterKeepsPartitions,
    /// When a broker is fenced (its session expires, or it registers again), the partitions it
    /// led elect the first live replica, in their ISR or not. Must fail
    /// `acked_records_never_lost`.
    ElectLiveReplica,
}

impl Variant {
    /// Every broken variant.
    pub const BROKEN: [Variant; 2] = [Variant::RegisterKeepsPartitions, Variant::ElectLiveReplica];

    /// The property the variant is known to break.
    pub fn expected_violation(self) -> Option<&'static str> {
        match self {
            Variant::Sound => None,
            Variant::RegisterKeepsPartitions => Some(properties::FENCED_BROKER_LEADS_NOTHING),
            Variant::ElectLiveReplica => {
                Some(crate::replication::invariants::ACKED_RECORDS_NEVER_LOST)
            }
        }
    }

    fn broken(self) -> Option<QuorumBrokenVariant> {
        match self {
            Variant::Sound => None,
            Variant::RegisterKeepsPartitions => Some(QuorumBrokenVariant::RegisterKeepsPartitions),
            Variant::ElectLiveReplica => Some(QuorumBrokenVariant::ElectLiveReplica),
        }
    }

    /// The bound a check of this variant runs at: the default one, where each broken variant
    /// fails breadth-first with its shortest counterexample; `elect-live-replica` adds one ISR
    /// change (a leader's lag check), which puts a live replica outside the ISR.
    pub fn bound(self) -> Bound {
        let default = Bound {
            variant: self,
            ..Bound::default()
        };
        match self {
            Variant::Sound | Variant::RegisterKeepsPartitions => default,
            Variant::ElectLiveReplica => Bound {
                isr_changes: 1,
                ..default
            },
        }
    }
}

/// The model's bound and knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bound {
    /// Brokers, registered and unfenced at the start.
    pub brokers: usize,
    /// Partitions of the one topic.
    pub partitions: usize,
    /// Replicas of each partition, placed round robin.
    pub replication_factor: usize,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// Records the client produces to each partition with `acks=all`, one at a time, in turn.
    pub records: u32,
    /// Broker restarts in the whole run (at most one broker is down at a time).
    pub crashes: u32,
    /// Broker sessions that expire in the whole run (a crashed broker's or a live one's).
    pub expiries: u8,
    /// Whether the session of a broker that heartbeats may expire (it goes on as a zombie until
    /// it learns it was fenced). Otherwise only the session of a broker that stopped
    /// heartbeating for its registration (it is down, or restarted and not registered again)
    /// expires: Kafka's timing, where heartbeats (every 2 s) reach the controller well within
    /// the session (9 s).
    pub zombies: bool,
    /// Whether a restarted broker reads the metadata log before it registers and hands its
    /// replicas what it reads, as Surety's broker does (Kafka's waits until it has caught up past
    /// its registration; so does the model otherwise).
    pub early_metadata: bool,
    /// ISR changes a leader's lag check may propose, as each leader sees its partition's
    /// epochs (fencings and rejoins are not limited by it).
    pub isr_changes: i32,
    /// Client retries in the whole run.
    pub retries: u8,
    /// Connections that may break (besides those crashes break) in the whole run.
    pub drops: u8,
    /// Which controller.
    pub variant: Variant,
}

impl Default for Bound {
    /// Three brokers; two partitions with replication factor 2 and `min.insync.replicas=1`
    /// (placed round robin: partition 0 on brokers 0 and 1, partition 1 on brokers 1 and 2, so
    /// broker 1 holds both); one record to each; one restart, one session expiry (of a broker
    /// that stopped heartbeating: see `zombies`) and one broken connection.
    fn default() -> Self {
        Bound {
            brokers: 3,
            partitions: 2,
            replication_factor: 2,
            min_insync_replicas: 1,
            records: 1,
            crashes: 1,
            expiries: 1,
            zombies: false,
            early_metadata: false,
            isr_changes: 0,
            retries: 0,
            drops: 1,
            variant: Variant::Sound,
        }
    }
}

/// The cluster as the model starts it, built by core's controller: brokers registered and
/// unfenced, the topic created and placed.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The controller after the setup's requests.
    pub quorum: QuorumController,
    /// Each partition's replicas, preferred leader first, as the controller placed them.
    pub assignments: Vec<Vec<BrokerId>>,
    /// Each partition's state at creation.
    pub initial: Vec<PartitionState>,
    /// Each broker's epoch after its first registration.
    pub broker_epochs: Vec<i64>,
    /// Each broker's replica configuration, by partition (`None` where it holds no replica).
    pub replica_configs: Vec<Vec<Option<Arc<ReplicaConfig>>>>,
}

impl Setup {
    /// Whether `broker` holds a replica of partition `p`.
    pub fn hosts(&self, broker: BrokerId, p: usize) -> bool {
        self.assignments[p].contains(&broker)
    }
}

impl Bound {
    /// Registers the brokers, unfences them and creates the topic, through the controller.
    pub fn setup(&self) -> Setup {
        assert!(self.brokers >= self.replication_factor && self.replication_factor > 0);
        assert!(self.partitions > 0 && self.partitions < 256);
        let mut quorum = QuorumController::new(Arc::new(QuorumConfig::default()))
            .with_broken(self.variant.broken());
        let mut broker_epochs = Vec::new();
        for b in 0..self.brokers as BrokerId {
            let (epoch, _) = quorum.register_broker(b, "localhost", 9092 + b as u16);
            let epoch = epoch.expect("the setup registers valid brokers");
            broker_epochs.push(epoch);
        }
        for b in 0..self.brokers as BrokerId {
            let (answer, _) = quorum.heartbeat(b, broker_epochs[b as usize], false);
            assert!(answer.is_ok_and(|a| !a.is_fenced));
        }
        let topic = NewTopic {
            name: "t".into(),
            topic_id: TOPIC_ID,
            num_partitions: self.partitions as i32,
            replication_factor: self.replication_factor as i16,
            assignments: Vec::new(),
            configs: Vec::new(),
        };
        let (results, _) = quorum.create_topics(&[topic]);
        assert!(results[0].is_ok(), "{results:?}");
        let image = quorum.image().topic_by_id(&TOPIC_ID).expect("created");
        let assignments: Vec<Vec<BrokerId>> = image
            .partitions
            .iter()
            .map(|p| p.replicas.clone())
            .collect();
        let initial: Vec<PartitionState> =
            image.partitions.iter().map(|p| p.state.clone()).collect();
        let replica_configs = (0..self.brokers as BrokerId)
            .map(|b| {
                assignments
                    .iter()
                    .map(|replicas| {
                        replicas.contains(&b).then(|| {
                            let mut config = ReplicaConfig::new(b, replicas.clone());
                            config.min_insync_replicas = self.min_insync_replicas;
                            Arc::new(config)
                        })
                    })
                    .collect()
            })
            .collect();
        Setup {
            quorum,
            assignments,
            initial,
            broker_epochs,
            replica_configs,
        }
    }

    /// The Stateright model at this bound.
    pub fn into_model(self) -> ClusterModel {
        let setup = Arc::new(self.setup());
        let brokers: Vec<_> = (0..self.brokers as BrokerId)
            .map(|id| ModelActor::Broker {
                id,
                setup: setup.clone(),
                bound: self,
            })
            .collect();
        let controller = ModelActor::Controller {
            setup: setup.clone(),
            bound: self,
        };
        let client = ModelActor::Client { setup, bound: self };
        let cluster = Cluster {
            useful_heartbeats_only: true,
        };
        let budget = Budget {
            crashes: self.crashes,
            drops: self.drops,
        };
        ClusterModel::new(self, cluster, budget, brokers, controller, client)
    }
}
