//! The replication model as the harness runs it ([`TcpModel`]): what it adds is its actors'
//! hooks, and elections that may choose any eligible replica (`--elections any`), one step per
//! leader.

use stateright::Property;
use stateright::actor::{ActorModelAction, Envelope};
use surety_core::log::MemoryLog;
use surety_core::replication::{BrokerId, Msg, Node, PartitionState, Replica};

use super::actor::timer_within_bound;
use super::actor::{BrokerState, ControllerState, ModelActor, ModelState, ModelTimer};
use super::{Bound, Elections, properties};
use crate::harness::properties::Observe;
use crate::harness::system::{brokers, controller};
use crate::harness::{self, Layout, TcpModel, fetch_expiry};

/// The replication model the checker runs.
pub type ReplicationModel = TcpModel<Replication>;
/// A state of the whole system. Its `history` counts the connections broken so far.
pub type State = harness::State<Replication>;
/// A step: a delivery, a broken connection (Stateright's `Drop`), a timer, a crash or a
/// restart.
pub type Action = harness::Action<Replication>;

/// The replication model's part of the system: it keeps nothing beside its bound.
pub struct Replication;

impl harness::System for Replication {
    type Broker = BrokerState;
    type Controller = ControllerState;
    type Actor = ModelActor;
    type Bound = Bound;

    fn partition_msg(_: u8, msg: Msg) -> Msg {
        msg
    }

    fn as_partition_msg(msg: &Msg) -> Option<(u8, &Msg)> {
        Some((0, msg))
    }

    fn broker_ignores(broker: &BrokerState, from: Node, msg: &Msg) -> bool {
        broker.replica.is_stale(from, msg)
    }

    fn incarnation(broker: &BrokerState) -> u32 {
        broker.replica.durable().incarnation
    }

    /// A leader's parked follower fetches: the follower still waits for their answers.
    fn held_requests(state: &State) -> Vec<Envelope<Msg>> {
        let layout = Layout::of(state);
        let mut held = Vec::new();
        for (leader, b, _) in brokers::<Replication>(state) {
            for (follower, msg) in fetch_expiry::held(&b.replica) {
                let src = layout.id(Node::Broker(follower));
                let dst = layout.id(Node::Broker(leader));
                held.push(Envelope { src, dst, msg });
            }
        }
        held
    }

    /// With `--elections any`, a controller timer that holds an election is fired once per
    /// leader it may choose.
    fn refine_actions(model: &ReplicationModel, state: &State, actions: &mut Vec<Action>) {
        if model.bound.elections != Elections::Any {
            return;
        }
        let controller = model.layout().controller();
        let controller_state = &state.actor_states[usize::from(controller)];
        let ModelState::Controller(c) = &**controller_state else {
            return;
        };
        let mut elections = Vec::new();
        actions.retain(|action| {
            let ActorModelAction::Timeout(id, ModelTimer::Controller(timer)) = action else {
                return true;
            };
            let choices = c.controller.election_choices(*timer);
            let fires = timer_within_bound(
                model.bound,
                controller_state,
                ModelTimer::Controller(*timer),
            );
            if *id != controller || choices.len() < 2 || !fires {
                return true;
            }
            elections.extend(choices.into_iter().map(|leader| {
                ActorModelAction::Timeout(
                    controller,
                    ModelTimer::Elect {
                        timer: *timer,
                        leader,
                    },
                )
            }));
            false
        });
        actions.extend(elections);
    }

    fn properties() -> Vec<Property<ReplicationModel>> {
        properties::properties()
    }

    fn within_boundary(model: &ReplicationModel, state: &State) -> bool {
        properties::within_boundary(&model.bound, state)
    }

    fn describe_msg(msg: &Msg) -> String {
        harness::trace::describe_msg(msg)
    }

    fn describe_timer(timer: &ModelTimer) -> String {
        match timer {
            ModelTimer::Replica(t) => format!("{t:?}"),
            ModelTimer::ExpireFetch(follower) => {
                format!("parked fetch of broker {follower} expires")
            }
            ModelTimer::Controller(t) => format!("{t:?}"),
            ModelTimer::Elect { timer, leader } => {
                format!("{timer:?}, and its election chooses broker {leader},")
            }
        }
    }

    fn describe_state(_: &Bound, state: &State) -> String {
        properties::describe_state(state)
    }
}

impl Observe for Replication {
    fn partitions(_: &Bound) -> u8 {
        1
    }

    fn replicas(state: &State, _: u8) -> Vec<(BrokerId, &Replica<MemoryLog>, bool)> {
        brokers::<Replication>(state)
            .map(|(id, b, down)| (id, &b.replica, down))
            .collect()
    }

    fn decided(state: &State, _: u8) -> &PartitionState {
        controller::<Replication>(state).controller.state()
    }

    fn elected_outside_isr(state: &State) -> bool {
        controller::<Replication>(state).elected_outside_isr
    }

    fn isr_shrank_and_expanded(bound: &Bound, state: &State) -> bool {
        properties::isr_shrank_and_expanded(bound, state)
    }
}
