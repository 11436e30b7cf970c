//! Core's actors as one Stateright actor type, and the translation of their effects.
//!
//! Nothing protocol-specific happens here: each step hands the message or timer to the core
//! actor and turns its [`Effect`]s into Stateright commands. Two things are added, both about
//! the search rather than the protocol:
//!
//! - the bound: a leader's lag check and the controller's session expiry do not fire once the
//!   run's budget of ISR changes or leader changes is spent, so the checker does not build
//!   states only to discard them;
//! - one *ghost* field (did a leader's HW go back within its epoch) that a property reads; the
//!   actors never do.
//!
//! One input comes from the driver rather than from a core actor: a leader's parked follower
//! fetch expiring (`replica.fetch.wait.max.ms`, the server calls `Replica::expire_parked_fetch`).
//! It is a timer here, set exactly while a parked fetch would carry a high watermark its
//! follower was not sent yet, so the checker may fire it at any such moment the server could.
//! (An expiry that carries nothing new makes the follower fetch again and changes nothing
//! else; leaving it out keeps the state space to the behaviours that differ.)

use std::borrow::Cow;
use std::sync::Arc;

use stateright::actor::{Actor, Id, Out, model_timeout};
use surety_core::log::{LogConfig, MemoryLog};
use surety_core::replication::{
    BrokerId, Controller, ControllerConfig, ControllerTimer, Durability, Durable, Effect, Msg,
    Node, PartitionState, Replica, ReplicaConfig, ReplicaTimer, Role,
};

use super::Bound;
use super::system::Replication;
use crate::harness::fetch_expiry::{expirable, timer_changes};
use crate::harness::system::{client_disconnected, client_send, keep_idle_timer, step_client};
use crate::harness::{self, ClientState, Disconnected, Layout};

/// The partition log of a modelled broker.
pub type Log = MemoryLog;

/// Every actor of the model, with the bound it runs under.
#[derive(Clone, Debug)]
pub enum ModelActor {
    /// A broker's replica, and the partition state it starts from.
    Broker {
        /// Its configuration.
        config: Arc<ReplicaConfig>,
        /// The controller's first decision, known to every broker at the start.
        initial: PartitionState,
        /// The run's bound.
        bound: Bound,
    },
    /// The controller.
    Controller {
        /// Its configuration.
        config: Arc<ControllerConfig>,
        /// The partition state it starts from.
        initial: PartitionState,
        /// The run's bound.
        bound: Bound,
    },
    /// The producing client.
    Client {
        /// The partition state it starts from.
        initial: PartitionState,
        /// The run's bound.
        bound: Bound,
    },
}

/// A modelled broker: its replica and one ghost.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrokerState {
    /// The core replica.
    pub replica: Replica<Log>,
    /// Ghost: a leader's HW went down within one epoch.
    pub hw_regressed: bool,
}

/// The modelled controller and its ghost.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ControllerState {
    /// The core controller.
    pub controller: Controller,
    /// Ghost: some election chose a replica outside the ISR.
    pub elected_outside_isr: bool,
}

/// What a broker saved to disk: its replica's durable state as of its last step.
///
/// A broker saves whenever its durable state changes, so what it saved always equals the
/// durable state its replica holds (up, or frozen while it is down). The saved copy therefore
/// tells two system states apart only when their actor states already differ, and hashing it
/// again would only cost time: its hash is empty. Equality still compares it in full, and the
/// `storage_matches_replica` check in the model's tests holds the invariant to account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved(pub Arc<Durable<Log>>);

impl std::hash::Hash for Saved {
    fn hash<H: std::hash::Hasher>(&self, _state: &mut H) {}
}

/// An actor's state.
pub type ModelState = harness::ModelState<BrokerState, ControllerState>;

/// Timers of every actor. (The client has none: it retries on failures it is told of.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelTimer {
    /// A replica's.
    Replica(ReplicaTimer),
    /// The controller's.
    Controller(ControllerTimer),
    /// A leader's parked fetch from this follower expiring; set while one is parked and
    /// expiring it would tell the follower a new high watermark.
    ExpireFetch(BrokerId),
    /// Never set: the checker's way of firing the controller's `timer` with its election
    /// choosing `leader`, one step per eligible leader (`--elections any`).
    Elect {
        /// The timer that fires.
        timer: ControllerTimer,
        /// The leader its election chooses.
        leader: BrokerId,
    },
}

impl ModelActor {
    fn bound(&self) -> Bound {
        match self {
            ModelActor::Broker { bound, .. }
            | ModelActor::Controller { bound, .. }
            | ModelActor::Client { bound, .. } => *bound,
        }
    }

    fn layout(&self) -> Layout {
        Layout {
            brokers: self.bound().brokers,
        }
    }
}

/// Turns a core actor's effects into Stateright commands. Durable state is saved whenever the
/// actor asked for it and it changed.
fn apply<T>(
    layout: Layout,
    effects: Vec<Effect<T>>,
    wrap: fn(T) -> ModelTimer,
    durable: Option<&Durable<Log>>,
    o: &mut Out<ModelActor>,
) {
    let mut persist = false;
    for effect in effects {
        match effect {
            Effect::Send { to, msg } => o.send(layout.id(to), msg),
            Effect::SetTimer { timer, .. } => o.set_timer(wrap(timer), model_timeout()),
            Effect::CancelTimer(timer) => o.cancel_timer(wrap(timer)),
            Effect::Persist(_) => persist = true,
        }
    }
    if persist && let Some(durable) = durable {
        o.save(Saved(Arc::new(durable.clone())));
    }
}

fn leader_hw(replica: &Replica<Log>) -> Option<(i32, i64)> {
    match replica.role() {
        Role::Leader(leader) => Some((leader.leader_epoch, replica.high_watermark())),
        _ => None,
    }
}

fn step_broker(
    layout: Layout,
    state: &mut Cow<ModelState>,
    o: &mut Out<ModelActor>,
    step: impl FnOnce(&mut Replica<Log>) -> Vec<Effect<ReplicaTimer>>,
) {
    let ModelState::Broker(before) = state.as_ref() else {
        return;
    };
    let mut broker = before.clone();
    let effects = step(&mut broker.replica);
    if effects.is_empty() && broker == *before {
        return;
    }
    if let (Some((e1, hw1)), Some((e2, hw2))) =
        (leader_hw(&before.replica), leader_hw(&broker.replica))
        && e1 == e2
        && hw2 < hw1
    {
        broker.hw_regressed = true;
    }
    let changed = broker.replica.durable() != before.replica.durable();
    let durable = changed.then(|| broker.replica.durable());
    apply(layout, effects, ModelTimer::Replica, durable, o);
    let (was, is) = (expirable(&before.replica), expirable(&broker.replica));
    for (follower, set) in timer_changes(was, is) {
        match set {
            true => o.set_timer(ModelTimer::ExpireFetch(follower), model_timeout()),
            false => o.cancel_timer(ModelTimer::ExpireFetch(follower)),
        }
    }
    if broker != *before {
        *state.to_mut() = ModelState::Broker(broker);
    }
}

fn step_controller(
    layout: Layout,
    state: &mut Cow<ModelState>,
    o: &mut Out<ModelActor>,
    step: impl FnOnce(&mut Controller) -> Vec<Effect<ControllerTimer>>,
) {
    let ModelState::Controller(before) = state.as_ref() else {
        return;
    };
    let mut next = before.clone();
    let effects = step(&mut next.controller);
    if effects.is_empty() && next == *before {
        return;
    }
    let (old, new) = (before.controller.state(), next.controller.state());
    let leader_changed = new.leader_epoch > old.leader_epoch;
    if leader_changed
        && let Some(leader) = new.leader
        && !old.isr.contains(&leader)
    {
        next.elected_outside_isr = true;
    }
    // Clients learn leader changes through metadata; the model hands them the decision.
    let metadata = new.clone();
    apply(layout, effects, ModelTimer::Controller, None, o);
    if leader_changed {
        o.send(layout.client(), Msg::LeaderAndIsr(metadata));
    }
    if next != *before {
        *state.to_mut() = ModelState::Controller(next);
    }
}

/// Whether a timer may fire within the bound. A timer that may not is left set, so that
/// firing it is a no-op to the checker rather than a state without the timer.
pub(super) fn timer_within_bound(bound: Bound, state: &ModelState, timer: ModelTimer) -> bool {
    let timer = match timer {
        ModelTimer::Elect { timer, .. } => ModelTimer::Controller(timer),
        other => other,
    };
    match (state, timer) {
        // Only a leader's lag check proposes ISR changes; it stops once the leader's own view
        // shows the run's budget spent.
        (ModelState::Broker(b), ModelTimer::Replica(ReplicaTimer::LagCheck)) => {
            match b.replica.role() {
                Role::Leader(l) => l.partition_epoch - l.leader_epoch < bound.isr_changes,
                _ => true,
            }
        }
        // Only the leader's session expires (a live leader so fenced goes on as a zombie until
        // it hears of the new epoch): a follower dropping out of the ISR is what the leader's
        // lag check already explores. None expires once the leader-change budget is spent.
        (
            ModelState::Controller(c),
            ModelTimer::Controller(ControllerTimer::BrokerSession(broker)),
        ) => {
            let partition = c.controller.state();
            partition.leader == Some(broker) && partition.leader_epoch < bound.leader_changes
        }
        _ => true,
    }
}

impl Disconnected for ModelActor {
    fn disconnected(&self, state: &mut Cow<ModelState>, peer: Node, down: bool, o: &mut Out<Self>) {
        let layout = self.layout();
        match self {
            ModelActor::Broker { .. } => step_broker(layout, state, o, |r| r.on_disconnect(peer)),
            ModelActor::Controller { .. } => {
                step_controller(layout, state, o, |c| c.on_disconnect(peer));
            }
            ModelActor::Client { bound, .. } => {
                client_disconnected::<Replication>(layout, state, peer, down, bound.records, o);
            }
        }
    }
}

impl Actor for ModelActor {
    type Msg = Msg;
    type State = ModelState;
    type Timer = ModelTimer;
    type Random = ();
    type Storage = Saved;

    fn on_start(&self, _id: Id, storage: &Option<Self::Storage>, o: &mut Out<Self>) -> ModelState {
        let layout = self.layout();
        match self {
            ModelActor::Broker {
                config, initial, ..
            } => {
                let (replica, effects) = match storage {
                    Some(Saved(durable)) => Replica::recover(config.clone(), (**durable).clone())
                        .expect("a memory log always reads back"),
                    None => {
                        // A new partition: the controller's first decision is already known.
                        let log = MemoryLog::new(LogConfig::default());
                        let mut replica = Replica::new(config.clone(), log);
                        let leader_and_isr = Msg::LeaderAndIsr(initial.clone());
                        let mut effects = replica.on_message(Node::Controller, leader_and_isr, 0);
                        effects.push(Effect::Persist(Durability::BeforeSends));
                        (replica, effects)
                    }
                };
                let durable = Some(replica.durable());
                apply(layout, effects, ModelTimer::Replica, durable, o);
                ModelState::Broker(BrokerState {
                    replica,
                    hw_regressed: false,
                })
            }
            ModelActor::Controller {
                config, initial, ..
            } => {
                let (controller, effects) = Controller::new(config.clone(), initial.clone());
                apply(layout, effects, ModelTimer::Controller, None, o);
                ModelState::Controller(ControllerState {
                    controller,
                    elected_outside_isr: false,
                })
            }
            ModelActor::Client { initial, bound } => {
                let initial = std::slice::from_ref(initial);
                let (client, send) = ClientState::new(initial, bound.retries, bound.records);
                client_send::<Replication>(layout, send, o);
                ModelState::Client(client)
            }
        }
    }

    fn on_msg(&self, _id: Id, state: &mut Cow<ModelState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        let layout = self.layout();
        let from = layout.node(src);
        match self {
            ModelActor::Broker { .. } => {
                step_broker(layout, state, o, |r| r.on_message(from, msg, 0));
            }
            ModelActor::Controller { .. } => {
                step_controller(layout, state, o, |c| c.on_message(from, msg));
            }
            ModelActor::Client { bound, .. } => {
                let records = bound.records;
                step_client::<Replication>(layout, state, o, |client| {
                    client.on_msg(0, msg, records)
                });
            }
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<ModelState>,
        timer: &ModelTimer,
        o: &mut Out<Self>,
    ) {
        let layout = self.layout();
        if timer_within_bound(self.bound(), state, *timer) {
            match (self, *timer) {
                (ModelActor::Broker { .. }, ModelTimer::Replica(t)) => {
                    // A timer firing means its whole interval has passed, however long that is.
                    step_broker(layout, state, o, |r| r.on_timer(t, i64::MAX));
                }
                (ModelActor::Broker { .. }, ModelTimer::ExpireFetch(follower)) => {
                    step_broker(layout, state, o, |r| r.expire_parked_fetch(follower));
                }
                (ModelActor::Controller { .. }, ModelTimer::Controller(t)) => {
                    step_controller(layout, state, o, |c| c.on_timer(t));
                }
                (ModelActor::Controller { .. }, ModelTimer::Elect { timer: t, leader }) => {
                    step_controller(layout, state, o, |c| c.on_timer_electing(t, Some(leader)));
                    o.cancel_timer(ModelTimer::Controller(t));
                }
                _ => {}
            }
        }
        // An `Elect` timer is the checker's way of firing the controller's, never set itself.
        if !matches!(timer, ModelTimer::Elect { .. }) {
            keep_idle_timer(state, timer, o);
        }
    }
}
