//! The controller of one partition: elects leaders, fences dead brokers, and applies the ISR
//! changes leaders propose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::effect::{Effect, Effects};
use super::message::Msg;
use super::types::{BrokerId, Node, PartitionState};
use crate::errors::Errors;

/// The controller's configuration; the names are Kafka's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ControllerConfig {
    /// The partition's assigned replicas, preferred leader first: elections try them in order.
    pub replicas: Vec<BrokerId>,
    /// `unclean.leader.election.enable`: when no ISR member is alive, elect any live replica
    /// and accept losing what only the ISR had. Off by default, as in Kafka.
    pub unclean_leader_election_enable: bool,
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// A deliberately wrong rule for the model checker to catch; `None` in production.
    pub broken: Option<super::BrokenVariant>,
}

impl ControllerConfig {
    /// Kafka's defaults for `replicas`.
    pub fn new(replicas: Vec<BrokerId>) -> Self {
        ControllerConfig {
            replicas,
            unclean_leader_election_enable: false,
            broker_session_timeout_ms: 9_000,
            broken: None,
        }
    }
}

/// Timers the controller sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControllerTimer {
    /// The broker's session expired without a heartbeat: fence it.
    BrokerSession(BrokerId),
    /// The leader re-registered after a restart, or a broker of an offline partition came
    /// back: elect a leader.
    Election,
}

type Out = Effects<ControllerTimer>;

/// The single source of truth for who leads and who is in sync.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Controller {
    config: Arc<ControllerConfig>,
    state: PartitionState,
    fenced: BTreeSet<BrokerId>,
    incarnations: BTreeMap<BrokerId, u32>,
    /// The incarnation the current leader had when it was elected: a later one means it
    /// restarted and lost what it held in memory, so it must not lead its epoch any further.
    leader_incarnation: u32,
}

impl Controller {
    /// A controller whose partition is in `initial` and whose brokers are all alive. Tell the
    /// brokers with [`Controller::announce`].
    pub fn new(config: Arc<ControllerConfig>, initial: PartitionState) -> (Self, Out) {
        let out = config
            .replicas
            .iter()
            .map(|&broker| Effect::SetTimer {
                timer: ControllerTimer::BrokerSession(broker),
                after_ms: config.broker_session_timeout_ms,
            })
            .collect();
        let incarnations = config.replicas.iter().map(|&b| (b, 0)).collect();
        let controller = Controller {
            config,
            state: initial,
            fenced: BTreeSet::new(),
            incarnations,
            leader_incarnation: 0,
        };
        (controller, out)
    }

    /// A controller taking over a partition whose brokers are already known: a cluster
    /// controller that restarts (or creates a partition) must not take every broker for alive,
    /// nor see a leader's current incarnation as a restart, or it would fence and elect for
    /// nothing. `incarnations` holds each replica's current incarnation (a replica missing
    /// from it counts as incarnation 0) and the current leader is taken to have been elected
    /// in its current one. Nothing is announced and no timer is set: the caller already
    /// publishes `initial`, and keeps the brokers' sessions itself.
    pub fn with_brokers(
        config: Arc<ControllerConfig>,
        initial: PartitionState,
        mut incarnations: BTreeMap<BrokerId, u32>,
        fenced: BTreeSet<BrokerId>,
    ) -> Self {
        for &replica in &config.replicas {
            incarnations.entry(replica).or_insert(0);
        }
        let leader_incarnation = initial
            .leader
            .and_then(|leader| incarnations.get(&leader).copied())
            .unwrap_or(0);
        Controller {
            config,
            state: initial,
            fenced,
            incarnations,
            leader_incarnation,
        }
    }

    /// `LeaderAndIsr` to every replica, with the current state.
    pub fn announce(&self) -> Out {
        self.config
            .replicas
            .iter()
            .map(|&broker| Effect::Send {
                to: Node::Broker(broker),
                msg: Msg::LeaderAndIsr(self.state.clone()),
            })
            .collect()
    }

    /// The partition's state.
    pub fn state(&self) -> &PartitionState {
        &self.state
    }

    /// Brokers whose session expired and who have not registered again.
    pub fn fenced(&self) -> &BTreeSet<BrokerId> {
        &self.fenced
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Handles one message.
    pub fn on_message(&mut self, from: Node, msg: Msg) -> Out {
        match msg {
            Msg::BrokerHeartbeat {
                broker_id,
                incarnation,
            } => self.on_heartbeat(broker_id, incarnation),
            Msg::AlterPartition {
                broker_id,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => self.on_alter_partition(from, broker_id, leader_epoch, partition_epoch, new_isr),
            _ => Vec::new(),
        }
    }

    /// Handles the loss of the connection to `peer`: a broker may have missed a decision, so
    /// it is sent the current state again (Kafka's controller resends until a broker answers;
    /// a KRaft broker fetches the metadata it missed).
    pub fn on_disconnect(&mut self, peer: Node) -> Out {
        match peer {
            Node::Broker(broker) if self.config.replicas.contains(&broker) => vec![Effect::Send {
                to: peer,
                msg: Msg::LeaderAndIsr(self.state.clone()),
            }],
            _ => Vec::new(),
        }
    }

    /// Handles a timer, electing as Kafka does: the first eligible replica in assignment order.
    pub fn on_timer(&mut self, timer: ControllerTimer) -> Out {
        let first = self.election_choices(timer).first().copied();
        self.on_timer_electing(timer, first)
    }

    /// The leaders the election `timer` would hold could choose from, Kafka's choice first;
    /// empty when it holds none. A model checker explores every one of them (which covers
    /// every assignment order) through [`Controller::on_timer_electing`].
    pub fn election_choices(&self, timer: ControllerTimer) -> Vec<BrokerId> {
        match timer {
            ControllerTimer::BrokerSession(broker) => {
                if self.fenced.contains(&broker) || self.state.leader != Some(broker) {
                    return Vec::new();
                }
                let mut fenced = self.fenced.clone();
                fenced.insert(broker);
                self.candidates(&fenced, Some(broker))
            }
            ControllerTimer::Election if self.needs_election() => {
                self.candidates(&self.fenced, self.state.leader)
            }
            ControllerTimer::Election => Vec::new(),
        }
    }

    /// Handles a timer, electing `leader` if it holds an election and `leader` is one of its
    /// [`Controller::election_choices`] (otherwise Kafka's choice).
    pub fn on_timer_electing(&mut self, timer: ControllerTimer, leader: Option<BrokerId>) -> Out {
        match timer {
            ControllerTimer::BrokerSession(broker) => self.fence(broker, leader),
            ControllerTimer::Election if self.needs_election() => {
                let avoid = self.state.leader;
                if self.elect(avoid, leader) {
                    self.announce()
                } else {
                    Vec::new()
                }
            }
            ControllerTimer::Election => Vec::new(),
        }
    }

    /// The same controller with every broker renamed by `rename` (see
    /// [`PartitionState::renamed`]). The assignment order, which decides Kafka's choice in an
    /// election, is renamed with the brokers; with `forget_order` it is sorted instead, which
    /// is only right for a driver that chooses every election itself.
    pub fn renamed(&self, rename: &impl Fn(BrokerId) -> BrokerId, forget_order: bool) -> Self {
        let mut config = (*self.config).clone();
        config.replicas = config.replicas.iter().map(|&b| rename(b)).collect();
        if forget_order {
            config.replicas.sort_unstable();
        }
        Controller {
            config: Arc::new(config),
            state: self.state.renamed(rename),
            fenced: self.fenced.iter().map(|&b| rename(b)).collect(),
            incarnations: self
                .incarnations
                .iter()
                .map(|(&b, &i)| (rename(b), i))
                .collect(),
            leader_incarnation: self.leader_incarnation,
        }
    }

    /// Whether the partition has no leader, or its leader restarted since it was elected.
    fn needs_election(&self) -> bool {
        match self.state.leader {
            None => true,
            Some(leader) => self.incarnations.get(&leader) != Some(&self.leader_incarnation),
        }
    }

    fn on_heartbeat(&mut self, broker: BrokerId, incarnation: u32) -> Out {
        let Some(known) = self.incarnations.get_mut(&broker) else {
            return Vec::new();
        };
        if incarnation < *known {
            return Vec::new(); // from an incarnation that has since restarted
        }
        let restarted = incarnation > *known;
        *known = incarnation;
        let was_fenced = self.fenced.remove(&broker);
        let mut out = vec![Effect::SetTimer {
            timer: ControllerTimer::BrokerSession(broker),
            after_ms: self.config.broker_session_timeout_ms,
        }];
        if !restarted && !was_fenced {
            return out;
        }
        if self.needs_election() {
            // A restarted leader lost its in-memory state (its HW, its followers' progress):
            // it must not go on leading its epoch. Nor is it told it does: the election that
            // follows tells every replica who leads now.
            out.push(Effect::SetTimer {
                timer: ControllerTimer::Election,
                after_ms: 0,
            });
            if self.state.leader != Some(broker) {
                out.push(Effect::Send {
                    to: Node::Broker(broker),
                    msg: Msg::LeaderAndIsr(self.state.clone()),
                });
            }
            return out;
        }
        out.push(Effect::Send {
            to: Node::Broker(broker),
            msg: Msg::LeaderAndIsr(self.state.clone()),
        });
        out
    }

    fn on_alter_partition(
        &mut self,
        from: Node,
        broker: BrokerId,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: BTreeSet<BrokerId>,
    ) -> Out {
        let error = if self.state.leader != Some(broker) || leader_epoch != self.state.leader_epoch
        {
            Errors::FencedLeaderEpoch
        } else if partition_epoch != self.state.partition_epoch {
            Errors::InvalidUpdateVersion
        } else if !new_isr.contains(&broker)
            || !new_isr.iter().all(|r| self.config.replicas.contains(r))
        {
            Errors::InvalidRequest
        } else if new_isr
            .iter()
            .any(|r| self.fenced.contains(r) && !self.state.isr.contains(r))
        {
            Errors::IneligibleReplica
        } else {
            self.state.isr = new_isr.clone();
            self.state.partition_epoch += 1;
            Errors::None
        };
        vec![Effect::Send {
            to: from,
            msg: Msg::AlterPartitionResponse {
                error_code: error,
                proposal: (partition_epoch, new_isr),
                state: self.state.clone(),
            },
        }]
    }

    fn fence(&mut self, broker: BrokerId, leader: Option<BrokerId>) -> Out {
        if !self.fenced.insert(broker) {
            return Vec::new();
        }
        if self.state.leader == Some(broker) {
            self.elect(Some(broker), leader);
        } else if self.state.isr.contains(&broker) && self.state.isr.len() > 1 {
            self.state.isr.remove(&broker);
            self.state.partition_epoch += 1;
        } else {
            return Vec::new();
        }
        self.announce()
    }

    /// The replicas an election may choose, in assignment order: live ISR members other than
    /// `avoid`, else `avoid` itself if it is a live ISR member, else (only with unclean
    /// election) any live replica, preferring others than `avoid` again.
    fn candidates(&self, fenced: &BTreeSet<BrokerId>, avoid: Option<BrokerId>) -> Vec<BrokerId> {
        let live: Vec<BrokerId> = self
            .config
            .replicas
            .iter()
            .copied()
            .filter(|r| !fenced.contains(r))
            .collect();
        let prefer_others = |pool: Vec<BrokerId>| {
            let others: Vec<BrokerId> =
                pool.iter().copied().filter(|&r| Some(r) != avoid).collect();
            if others.is_empty() { pool } else { others }
        };
        let clean = prefer_others(
            live.iter()
                .copied()
                .filter(|r| self.state.isr.contains(r))
                .collect(),
        );
        if clean.is_empty() && self.config.unclean_leader_election_enable {
            prefer_others(live)
        } else {
            clean
        }
    }

    /// Elects `leader` if it is a candidate (else the first candidate); with none, the
    /// partition goes offline. Every outcome bumps the leader epoch. Returns whether the state
    /// changed.
    fn elect(&mut self, avoid: Option<BrokerId>, leader: Option<BrokerId>) -> bool {
        let candidates = self.candidates(&self.fenced, avoid);
        let chosen = leader
            .filter(|l| candidates.contains(l))
            .or_else(|| candidates.first().copied());
        if chosen.is_none() && self.state.leader.is_none() {
            return false;
        }
        if self.config.broken != Some(super::BrokenVariant::NoEpochBump) {
            self.state.leader_epoch += 1;
        }
        self.state.leader = chosen;
        self.state.partition_epoch += 1;
        if let Some(leader) = chosen {
            self.leader_incarnation = self.incarnations.get(&leader).copied().unwrap_or(0);
            if self.state.isr.contains(&leader) {
                let fenced = &self.fenced;
                self.state
                    .isr
                    .retain(|r| !fenced.contains(r) || *r == leader);
            } else {
                self.state.isr = BTreeSet::from([leader]);
            }
        }
        true
    }
}
