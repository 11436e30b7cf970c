//! The cluster model as the harness runs it ([`TcpModel`]), with two rules of its own: a
//! broker's heartbeat timer is offered only when the heartbeat would tell the controller
//! something (see [`heartbeat_unfences`]), and a session expires only as the timing assumption
//! allows (see [`Bound::zombies`](super::Bound::zombies)).

use stateright::Property;
use stateright::actor::{ActorModelAction, Envelope, Id, Network};
use surety_core::cluster::ClusterTimer;
use surety_core::log::MemoryLog;
use surety_core::replication::{BrokerId, Msg, Node, PartitionState, Replica};

use super::actor::Sealed;
use super::actor::{BrokerState, ClusterMsg, ControllerState, ModelActor, ModelState, ModelTimer};
use super::{Bound, properties, trace};
use crate::harness::properties::Observe;
use crate::harness::system::brokers;
use crate::harness::{self, Layout, TcpModel, fetch_expiry};

/// The cluster model the checker runs.
pub type ClusterModel = TcpModel<Cluster>;
/// A state of the whole system. Its `history` counts the connections broken so far.
pub type State = harness::State<Cluster>;
/// A step: a delivery, a broken connection (Stateright's `Drop`), a timer, a crash or a
/// restart.
pub type Action = harness::Action<Cluster>;

/// The cluster model's part of the system.
pub struct Cluster {
    /// Whether a broker heartbeats only when that would unfence it (always, but in the test
    /// that shows other heartbeats change nothing an actor can reach). Otherwise a registered
    /// broker heartbeats at any moment, one heartbeat in flight at a time (Kafka's broker sends
    /// the next once the last is answered).
    pub useful_heartbeats_only: bool,
}

impl harness::System for Cluster {
    type Broker = BrokerState;
    type Controller = Sealed<ControllerState>;
    type Actor = ModelActor;
    type Bound = Bound;

    fn partition_msg(p: u8, msg: Msg) -> ClusterMsg {
        ClusterMsg::Partition(p, msg)
    }

    fn as_partition_msg(msg: &ClusterMsg) -> Option<(u8, &Msg)> {
        match msg {
            ClusterMsg::Partition(p, msg) => Some((*p, msg)),
            _ => None,
        }
    }

    /// A replication message its replica will ignore for the rest of its incarnation
    /// (`Replica::is_stale`), or one for a partition the broker does not hold.
    fn broker_ignores(broker: &BrokerState, from: Node, msg: &ClusterMsg) -> bool {
        let ClusterMsg::Partition(p, msg) = msg else {
            return false;
        };
        match broker.replicas.get(usize::from(*p)) {
            Some(Some(replica)) => replica.is_stale(from, msg),
            _ => true,
        }
    }

    fn incarnation(broker: &BrokerState) -> u32 {
        broker.incarnation
    }

    /// Every leader's held follower fetches, by partition: the followers still wait for them.
    fn held_requests(state: &State) -> Vec<Envelope<ClusterMsg>> {
        let layout = Layout::of(state);
        let mut held = Vec::new();
        for (leader, b, _) in brokers::<Cluster>(state) {
            for (p, replica) in b.hosted() {
                for (follower, msg) in fetch_expiry::held(replica) {
                    let src = layout.id(Node::Broker(follower));
                    let dst = layout.id(Node::Broker(leader));
                    held.push(Envelope {
                        src,
                        dst,
                        msg: ClusterMsg::Partition(p, msg),
                    });
                }
            }
        }
        held
    }

    fn refine_actions(model: &ClusterModel, state: &State, actions: &mut Vec<Action>) {
        let brokers = model.bound.brokers;
        actions.retain(|action| match action {
            ActorModelAction::Timeout(_, ModelTimer::Cluster(ClusterTimer::BrokerSession(b))) => {
                model.bound.zombies || !heartbeating(state, brokers, *b as usize)
            }
            ActorModelAction::Timeout(id, ModelTimer::Heartbeat) => {
                let useful_only = model.system.useful_heartbeats_only;
                heartbeat_may_go(state, brokers, usize::from(*id), useful_only)
            }
            _ => true,
        });
    }

    fn properties() -> Vec<Property<ClusterModel>> {
        properties::properties()
    }

    fn describe_msg(msg: &ClusterMsg) -> String {
        trace::describe_msg(msg)
    }

    fn describe_timer(timer: &ModelTimer) -> String {
        trace::describe_timer(timer)
    }

    fn describe_state(bound: &Bound, state: &State) -> String {
        properties::describe_state(bound, state)
    }
}

impl Observe for Cluster {
    fn partitions(bound: &Bound) -> u8 {
        bound.partitions as u8
    }

    fn replicas(state: &State, p: u8) -> Vec<(BrokerId, &Replica<MemoryLog>, bool)> {
        brokers::<Cluster>(state)
            .filter_map(|(id, b, down)| Some((id, &**b.replicas[usize::from(p)].as_ref()?, down)))
            .collect()
    }

    fn decided(state: &State, p: u8) -> &PartitionState {
        controller(state).partition(p)
    }

    fn elected_outside_isr(state: &State) -> bool {
        controller(state).elected_outside_isr
    }

    fn isr_shrank_and_expanded(bound: &Bound, state: &State) -> bool {
        let c = controller(state);
        (0..bound.partitions as u8).any(|p| {
            c.shrunk & (1 << p) != 0 && c.partition(p).isr.len() == bound.replication_factor
        })
    }
}

/// The controller's state.
pub(super) fn controller(state: &State) -> &ControllerState {
    harness::system::controller::<Cluster>(state)
}

/// Whether broker `b` heartbeats for the registration the controller holds: it is up and
/// holds that registration, or a heartbeat for it is on its way. Then, under the timing
/// assumption (heartbeats reach the controller well within `broker.session.timeout.ms`), its
/// session does not expire unless zombies are explored. A broker that is down, or restarted and
/// not registered again, has stopped heartbeating for that registration once its last
/// heartbeat arrived.
fn heartbeating(state: &State, brokers: usize, b: usize) -> bool {
    let ModelState::Broker(broker) = &*state.actor_states[b] else {
        return false;
    };
    let Some(registered) = controller(state)
        .quorum
        .image()
        .broker(b as u32)
        .map(|image| image.broker_epoch)
    else {
        return false;
    };
    let up = !state.crashed[b] && broker.broker_epoch == Some(registered);
    up || heartbeat_in_flight(state, brokers, b, Some(registered))
}

/// Whether a heartbeat of broker `b` (for registration `epoch`, or any) is on its way.
fn heartbeat_in_flight(state: &State, brokers: usize, b: usize, epoch: Option<i64>) -> bool {
    let Network::Ordered(flows) = &state.network else {
        return false;
    };
    flows
        .get(&(Id::from(b), Id::from(brokers)))
        .is_some_and(|queue| {
            queue.iter().any(|m| {
                matches!(m, ClusterMsg::Heartbeat { broker_epoch }
                    if epoch.is_none_or(|e| e == *broker_epoch))
            })
        })
}

/// Whether broker `b`'s heartbeat would tell the controller something: the controller has its
/// current registration fenced (just registered, or its session expired), and no heartbeat of
/// it is on its way. Any other heartbeat only renews a session, and the model fires a session's
/// expiry at any moment whatever the heartbeats: it changes no state.
pub fn heartbeat_unfences(state: &State, brokers: usize, b: usize) -> bool {
    heartbeat_may_go(state, brokers, b, true)
}

fn heartbeat_may_go(state: &State, brokers: usize, b: usize, useful_only: bool) -> bool {
    let ModelState::Broker(broker) = &*state.actor_states[b] else {
        return false;
    };
    let Some(epoch) = broker.broker_epoch else {
        return false;
    };
    let fenced = controller(state)
        .quorum
        .image()
        .broker(b as u32)
        .is_some_and(|image| image.broker_epoch == epoch && image.fenced)
        || !useful_only;
    fenced && !heartbeat_in_flight(state, brokers, b, None)
}
