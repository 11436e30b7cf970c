//! The replication model: brokers running core's [`Replica`], core's [`Controller`], and a
//! producing client, over a network that is ordered per connection and may drop messages.
//!
//! Brokers crash and restart (Stateright's `max_crashes`): what the replica persists (its log,
//! leader-epoch cache, HW checkpoint and incarnation) survives, the rest is lost. The controller
//! may expire any broker's session at any moment, which fences it and, for a leader, elects a new
//! one; a leader's lag check may fire at any moment, which is how the ISR shrinks. Bounds keep the
//! state space finite: records produced, crashes, leader changes, ISR changes and client retries.
//!
//! [`Replica`]: surety_core::replication::Replica
//! [`Controller`]: surety_core::replication::Controller

mod actor;
pub mod invariants;
mod properties;
mod symmetry;
mod system;

use std::sync::Arc;

use surety_core::replication::{BrokenVariant, ControllerConfig, PartitionState, ReplicaConfig};

use crate::harness::Budget;

pub use actor::{BrokerState, ControllerState, ModelActor, ModelState, ModelTimer, Saved};
pub use properties::describe_state;
pub use symmetry::{renamed, representative};
pub use system::{Action, Replication, ReplicationModel, State};

/// A whole counterexample in words: the steps, then the final state.
pub fn describe_path(bound: Bound, steps: Vec<(State, Option<Action>)>) -> String {
    crate::harness::trace::describe_path::<Replication>(bound, steps)
}

/// A protocol to check: the sound one, or a deliberately broken one that must fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Kafka's protocol with leader epochs (KIP-101/279/320), as the broker runs it.
    Sound,
    /// Before KIP-101: restart and become-follower truncate to the HW checkpoint, no epochs.
    HwTruncation,
    /// `unclean.leader.election.enable=true`: a replica outside the ISR may be elected.
    UncleanElection,
    /// `acks=all` answered on the leader's append.
    AcksLeaderOnly,
    /// The leader's HW follows its own log end, not the ISR's.
    HwIgnoresFollowers,
    /// A follower rejoins the ISR below the HW, and the HW is recomputed downwards.
    IsrExpandBelowHw,
    /// Elections keep the leader epoch.
    NoEpochBump,
}

impl Variant {
    /// Every broken variant.
    pub const BROKEN: [Variant; 6] = [
        Variant::HwTruncation,
        Variant::UncleanElection,
        Variant::AcksLeaderOnly,
        Variant::HwIgnoresFollowers,
        Variant::IsrExpandBelowHw,
        Variant::NoEpochBump,
    ];

    /// The property this variant is expected to violate.
    pub fn expected_violation(self) -> Option<&'static str> {
        match self {
            Variant::Sound => None,
            Variant::HwTruncation | Variant::UncleanElection | Variant::AcksLeaderOnly => {
                Some(invariants::ACKED_RECORDS_NEVER_LOST)
            }
            Variant::HwIgnoresFollowers => Some(invariants::HW_NEVER_EXCEEDS_ISR_LEO),
            Variant::IsrExpandBelowHw => Some(properties::LEADER_HW_MONOTONIC),
            Variant::NoEpochBump => Some(invariants::ONE_LEADER_PER_EPOCH),
        }
    }

    /// The smallest bound that exposes the variant, from the failure it is known for. The
    /// sound protocol must pass at each of these bounds too.
    pub fn smallest_bound(self) -> Bound {
        // Two replicas with `min.insync.replicas=1` and one record: KIP-101's own setting.
        let kip101 = Bound {
            brokers: 2,
            min_insync_replicas: 1,
            records: 1,
            crashes: 0,
            leader_changes: 1,
            isr_changes: 0,
            retries: 0,
            drops: 0,
            elections: Elections::Preferred,
            variant: self,
        };
        match self {
            Variant::Sound => Bound::default(),
            // The follower restarts and truncates to its HW checkpoint, then the leader is lost.
            Variant::HwTruncation => Bound {
                crashes: 1,
                ..kip101
            },
            // The lagging follower is dropped from the ISR, then elected anyway.
            Variant::UncleanElection => Bound {
                isr_changes: 1,
                ..kip101
            },
            // The leader is replaced before its follower has the acknowledged record.
            Variant::AcksLeaderOnly => kip101,
            // The leader appends; its HW passes the follower at once.
            Variant::HwIgnoresFollowers => Bound {
                leader_changes: 0,
                ..kip101
            },
            // The follower is dropped, the HW moves on, the follower rejoins below it.
            Variant::IsrExpandBelowHw => Bound {
                isr_changes: 2,
                leader_changes: 0,
                ..kip101
            },
            // The leader's session expires while it still believes it leads. (An election that
            // keeps the leader epoch still bumps the partition epoch, which the bound counts
            // as an ISR change.)
            Variant::NoEpochBump => Bound {
                isr_changes: 1,
                ..kip101
            },
        }
    }

    /// Every bound the tests check: the default, and each broken variant's.
    pub fn bounds_to_check() -> Vec<Bound> {
        std::iter::once(Bound::default())
            .chain(Variant::BROKEN.iter().map(|v| v.smallest_bound()))
            .collect()
    }
}

/// How the controller chooses a leader among the eligible replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Elections {
    /// Kafka's rule: the first eligible replica in assignment order, as the broker runs it.
    Preferred,
    /// Every eligible replica, one branch each: every assignment order at once. Brokers are
    /// then interchangeable, which symmetry reduction needs.
    Any,
}

/// The model's bound and knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Brokers, each a replica of the one partition (replication factor = brokers).
    pub brokers: usize,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// Records the client produces with `acks=all`, one at a time.
    pub records: u32,
    /// Broker restarts in the whole run (at most one broker is down at a time).
    pub crashes: u32,
    /// Leader elections after the first.
    pub leader_changes: i32,
    /// ISR changes (shrinks, expansions, fencings) besides elections.
    pub isr_changes: i32,
    /// Client retries in the whole run.
    pub retries: u8,
    /// Connections that may break (besides those a crash breaks) in the whole run.
    pub drops: u8,
    /// How elections choose.
    pub elections: Elections,
    /// Which protocol.
    pub variant: Variant,
}

impl Default for Bound {
    /// The default bound: 3 brokers, replication factor 3, `min.insync.replicas=2`, 2 records,
    /// at most one crash, one leader change and one further ISR change. Retries and broken
    /// connections are left to smaller bounds and the deep one, to keep this run within two
    /// minutes.
    fn default() -> Self {
        Bound {
            brokers: 3,
            min_insync_replicas: 2,
            records: 2,
            crashes: 1,
            leader_changes: 1,
            isr_changes: 1,
            retries: 0,
            drops: 0,
            elections: Elections::Preferred,
            variant: Variant::Sound,
        }
    }
}

impl Bound {
    /// The nightly bound, searched depth-first with symmetry reduction: the default bound with
    /// elections that may choose any eligible replica (every assignment order at once, which is
    /// what makes brokers interchangeable) and a client retry (duplicates, fenced and refused
    /// produces). It completes in minutes; wider bounds are flags away (`--crashes 2
    /// --leader-changes 2` ran 45 minutes and 83.6 million states without a violation, and
    /// without finishing).
    pub fn deep() -> Self {
        Bound {
            retries: 1,
            elections: Elections::Any,
            ..Bound::default()
        }
    }

    /// The bound for random walks (`--simulate`), far past what an exhaustive search covers:
    /// three records, two crashes, three leader changes, three ISR changes, two retries, two
    /// broken connections, and elections that may choose any eligible replica.
    pub fn walks() -> Self {
        Bound {
            records: 3,
            crashes: 2,
            leader_changes: 3,
            isr_changes: 3,
            retries: 2,
            drops: 2,
            elections: Elections::Any,
            ..Bound::default()
        }
    }

    /// The partition state every actor starts from: broker 0 leads epoch 0, all in sync.
    pub fn initial_state(&self) -> PartitionState {
        PartitionState {
            leader: Some(0),
            leader_epoch: 0,
            isr: (0..self.brokers as u32).collect(),
            partition_epoch: 0,
        }
    }

    /// The Stateright model at this bound.
    pub fn into_model(self) -> ReplicationModel {
        let replicas: Vec<u32> = (0..self.brokers as u32).collect();
        let initial = self.initial_state();
        let broken = match self.variant {
            Variant::HwTruncation => Some(BrokenVariant::HwTruncation),
            Variant::AcksLeaderOnly => Some(BrokenVariant::AcksLeaderOnly),
            Variant::HwIgnoresFollowers => Some(BrokenVariant::HwIgnoresFollowers),
            Variant::IsrExpandBelowHw => Some(BrokenVariant::IsrExpandBelowHw),
            Variant::NoEpochBump => Some(BrokenVariant::NoEpochBump),
            Variant::Sound | Variant::UncleanElection => None,
        };
        let brokers: Vec<_> = replicas
            .iter()
            .map(|&id| {
                let mut config = ReplicaConfig::new(id, replicas.clone());
                config.min_insync_replicas = self.min_insync_replicas;
                config.broken = broken;
                ModelActor::Broker {
                    config: Arc::new(config),
                    initial: initial.clone(),
                    bound: self,
                }
            })
            .collect();
        let mut controller = ControllerConfig::new(replicas.clone());
        controller.unclean_leader_election_enable = self.variant == Variant::UncleanElection;
        controller.broken = broken;
        let controller = ModelActor::Controller {
            config: Arc::new(controller),
            initial: initial.clone(),
            bound: self,
        };
        let client = ModelActor::Client {
            initial,
            bound: self,
        };
        let budget = Budget {
            crashes: self.crashes,
            drops: self.drops,
        };
        ReplicationModel::new(self, Replication, budget, brokers, controller, client)
    }
}
