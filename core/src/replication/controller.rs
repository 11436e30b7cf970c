//! The controller of one partition: elects leaders, fences dead brokers, and applies the ISR
//! changes leaders propose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::effect::{Effect, Effects};
use super::message::Msg;
use super::types::{BrokerId, Node, PartitionState, error_code};

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
}

impl ControllerConfig {
    /// Kafka's defaults for `replicas`.
    pub fn new(replicas: Vec<BrokerId>) -> Self {
        ControllerConfig {
            replicas,
            unclean_leader_election_enable: false,
            broker_session_timeout_ms: 9_000,
        }
    }
}

/// Timers the controller sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControllerTimer {
    /// The broker's session expired without a heartbeat: fence it.
    BrokerSession(BrokerId),
}

type Out = Effects<ControllerTimer>;

/// The single source of truth for who leads and who is in sync.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Controller {
    config: Arc<ControllerConfig>,
    state: PartitionState,
    fenced: BTreeSet<BrokerId>,
    incarnations: BTreeMap<BrokerId, u32>,
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
        };
        (controller, out)
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

    /// Handles a timer.
    pub fn on_timer(&mut self, timer: ControllerTimer) -> Out {
        match timer {
            ControllerTimer::BrokerSession(broker) => self.fence(broker),
        }
    }

    fn on_heartbeat(&mut self, broker: BrokerId, incarnation: u32) -> Out {
        let Some(known) = self.incarnations.get_mut(&broker) else {
            return Vec::new();
        };
        let restarted = incarnation > *known;
        *known = (*known).max(incarnation);
        let was_fenced = self.fenced.remove(&broker);
        let mut out = vec![Effect::SetTimer {
            timer: ControllerTimer::BrokerSession(broker),
            after_ms: self.config.broker_session_timeout_ms,
        }];
        if !restarted && !was_fenced {
            return out;
        }
        let led = self.state.leader == Some(broker);
        if (restarted && led) || self.state.leader.is_none() {
            // A restarted leader lost its in-memory state (its HW, its followers' progress):
            // it must not go on leading the same epoch.
            if self.elect(Some(broker)) {
                out.extend(self.announce());
                return out;
            }
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
            error_code::FENCED_LEADER_EPOCH
        } else if partition_epoch != self.state.partition_epoch {
            error_code::INVALID_UPDATE_VERSION
        } else if !new_isr.contains(&broker)
            || !new_isr.iter().all(|r| self.config.replicas.contains(r))
        {
            error_code::INVALID_REQUEST
        } else if new_isr
            .iter()
            .any(|r| self.fenced.contains(r) && !self.state.isr.contains(r))
        {
            error_code::INELIGIBLE_REPLICA
        } else {
            self.state.isr = new_isr.clone();
            self.state.partition_epoch += 1;
            error_code::NONE
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

    fn fence(&mut self, broker: BrokerId) -> Out {
        if !self.fenced.insert(broker) {
            return Vec::new();
        }
        if self.state.leader == Some(broker) {
            self.elect(Some(broker));
        } else if self.state.isr.contains(&broker) && self.state.isr.len() > 1 {
            self.state.isr.remove(&broker);
            self.state.partition_epoch += 1;
        } else {
            return Vec::new();
        }
        self.announce()
    }

    /// Elects a leader, preferring live ISR members other than `avoid`, then `avoid` itself if
    /// it is a live ISR member, then (only with unclean election) any live replica. With no
    /// candidate the partition goes offline. Every outcome bumps the leader epoch. Returns
    /// whether the state changed.
    fn elect(&mut self, avoid: Option<BrokerId>) -> bool {
        let live = |r: &&BrokerId| !self.fenced.contains(r);
        let in_isr = |r: &&BrokerId| self.state.isr.contains(r);
        let replicas = &self.config.replicas;
        let clean = replicas
            .iter()
            .filter(live)
            .filter(in_isr)
            .find(|&&r| Some(r) != avoid)
            .or_else(|| replicas.iter().filter(live).find(in_isr));
        let unclean = || {
            replicas
                .iter()
                .filter(live)
                .find(|&&r| Some(r) != avoid)
                .or_else(|| replicas.iter().find(live))
        };
        let chosen = match clean {
            Some(&leader) => Some(leader),
            None if self.config.unclean_leader_election_enable => unclean().copied(),
            None => None,
        };
        if chosen.is_none() && self.state.leader.is_none() {
            return false;
        }
        self.state.leader = chosen;
        self.state.leader_epoch += 1;
        self.state.partition_epoch += 1;
        if let Some(leader) = chosen {
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
