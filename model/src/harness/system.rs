//! The system the checker explores: a model's actors, as Stateright's actor model runs them,
//! over a network that behaves as Kafka sees TCP.
//!
//! - **Connections fail, and their ends are told.** A broken connection loses what was in
//!   flight on it in both directions, and both ends learn of it (a reset), as Kafka's network
//!   client does: each core actor's `on_disconnect` decides what to resend. The run's budget of
//!   broken connections is [`Budget::drops`]; the count so far is the state's `history`.
//! - **A crash breaks every connection of the broker.** What was in flight to it, and what is
//!   sent to it while it is down, is lost (Stateright would keep it for the restarted process;
//!   TCP does not). Every other actor is told its connection to the broker broke; the client
//!   is also told when it sends to a broker that is down (connection refused). Messages *from*
//!   the broker that were already on the wire may still arrive.
//! - **Only brokers crash**, while the run's budget of restarts lasts: the controller stands
//!   for a replicated quorum, and the client's failures are the connections it loses.
//! - **Messages that can no longer matter are forgotten.** A message its receiver will ignore
//!   for the rest of its incarnation ([`System::broker_ignores`], the client's `is_stale`)
//!   would only be delivered and vanish, so two states that differ only in it behave alike;
//!   the checker explores them once. With `forget_stale: false` every message is kept, and
//!   [`assert_forgetting_stale_hides_nothing`] shows, in each model's tests, that the states
//!   every actor reaches are the same either way.

use std::borrow::Cow;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Command, Envelope, Id, LossyNetwork,
    Network, Out, model_timeout,
};
use stateright::{Model, Path, Property};
use surety_core::replication::{BrokerId, Msg, Node};

use super::client::{ClientState, Outgoing};
use super::{Layout, ModelState, trace};
use crate::symmetry::{actor_states, reachable};

/// A state of the whole system. Its `history` counts the connections broken so far.
pub type State<S> = ActorModelState<<S as System>::Actor, u8>;
/// A step: a delivery, a broken connection (Stateright's `Drop`), a timer, a crash or a
/// restart.
pub type Action<S> = ActorModelAction<Message<S>, Timer<S>, ()>;
/// What one actor of the system holds.
pub type ActorState<S> = ModelState<<S as System>::Broker, <S as System>::Controller>;
/// What travels between the system's actors.
pub type Message<S> = <<S as System>::Actor as Actor>::Msg;
/// The system's timers.
pub type Timer<S> = <<S as System>::Actor as Actor>::Timer;

/// What a model adds to the harness: its brokers, controller and messages, which of
/// Stateright's actions it offers, its properties, and how its states read.
pub trait System: Sized + Send + Sync + 'static {
    /// What a broker holds.
    type Broker: Clone + Debug + Eq + Hash + Send + Sync;
    /// What the controller holds.
    type Controller: Clone + Debug + Eq + Hash + Send + Sync;
    /// Every actor of the model: the brokers, the controller and the client.
    type Actor: Actor<
            State = ActorState<Self>,
            Msg: Ord + Send + Sync,
            Timer: Ord + Send + Sync,
            Storage: Send + Sync,
            Random = (),
        > + Disconnected
        + Send
        + Sync
        + 'static;
    /// The model's bound and knobs.
    type Bound: Copy + Debug + Send + Sync + 'static;

    /// Partition `p`'s replication message, as the model carries it.
    fn partition_msg(p: u8, msg: Msg) -> Message<Self>;
    /// The partition and replication message `msg` carries, if it is one.
    fn as_partition_msg(msg: &Message<Self>) -> Option<(u8, &Msg)>;
    /// Whether `broker` will ignore `msg` from `from` for the rest of its incarnation.
    fn broker_ignores(broker: &Self::Broker, from: Node, msg: &Message<Self>) -> bool;
    /// The broker's starts before this one: what counts restarts.
    fn incarnation(broker: &Self::Broker) -> u32;

    /// Requests a receiver holds unanswered, as envelopes from their sender (a leader's parked
    /// follower fetch): nothing is on the wire, but the sender still waits for an answer, so
    /// their connection may break too.
    fn held_requests(_state: &State<Self>) -> Vec<Envelope<Message<Self>>> {
        Vec::new()
    }

    /// Narrows or widens the actions Stateright's actor model offers (after the harness has
    /// kept crashes to brokers and left connection breaks to itself).
    fn refine_actions(model: &TcpModel<Self>, state: &State<Self>, actions: &mut Vec<Action<Self>>);
    /// The model's properties, in the order reports list them.
    fn properties() -> Vec<Property<TcpModel<Self>>>;
    /// Keeps the search inside what the bound allows beyond restarts (which the harness keeps).
    fn within_boundary(_model: &TcpModel<Self>, _state: &State<Self>) -> bool {
        true
    }

    /// A message, briefly.
    fn describe_msg(msg: &Message<Self>) -> String;
    /// A timer, briefly.
    fn describe_timer(timer: &Timer<Self>) -> String;
    /// A readable summary of a state.
    fn describe_state(bound: &Self::Bound, state: &State<Self>) -> String;
}

/// An actor told that a connection broke.
pub trait Disconnected: Actor {
    /// The connection to `peer` broke; `down` when the peer crashed (or refused the connection
    /// because it is down). Each core actor decides what to send again.
    fn disconnected(&self, state: &mut Cow<Self::State>, peer: Node, down: bool, o: &mut Out<Self>);
}

/// What the harness counts against a run's bound.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Broker restarts in the whole run.
    pub crashes: u32,
    /// Connections that may break (besides those crashes break) in the whole run.
    pub drops: u8,
}

/// A model the checker runs: a [`System`]'s actors over the harness's network.
pub struct TcpModel<S: System> {
    actors: ActorModel<S::Actor, (), u8>,
    budget: Budget,
    /// The bound and variant.
    pub bound: S::Bound,
    /// What the model keeps beside its bound.
    pub system: S,
    /// Whether messages their receiver will ignore are forgotten (always, but in the tests that
    /// show forgetting them changes nothing an actor can reach).
    pub forget_stale: bool,
    /// Whether to offer only actions that change the state. Random walks need it: Stateright's
    /// simulation redraws after an action that changes nothing, in a way its counterexample
    /// paths cannot replay.
    pub only_effective_actions: bool,
}

impl<S: System> TcpModel<S> {
    /// The model of `brokers`, `controller` and `client`, placed as [`Layout`] says.
    pub fn new(
        bound: S::Bound,
        system: S,
        budget: Budget,
        brokers: impl IntoIterator<Item = S::Actor>,
        controller: S::Actor,
        client: S::Actor,
    ) -> Self {
        // At most one broker is down at a time; `actions` counts restarts against the budget.
        let actors = ActorModel::new((), 0)
            .actors(brokers)
            .actor(controller)
            .actor(client)
            .init_network(Network::new_ordered([]))
            .lossy_network(LossyNetwork::No)
            .max_crashes(if budget.crashes > 0 { 1 } else { 0 });
        TcpModel {
            actors,
            budget,
            bound,
            system,
            forget_stale: true,
            only_effective_actions: false,
        }
    }

    /// Where the actors sit.
    pub fn layout(&self) -> Layout {
        Layout {
            brokers: self.actors.actors.len() - 2,
        }
    }

    /// Broker restarts so far, counting a broker that is down now (it has not counted its
    /// restart in its incarnation yet).
    pub fn restarts(&self, state: &State<S>) -> u32 {
        let (mut crashed, mut incarnations) = (0, 0);
        for (_, broker, down) in brokers::<S>(state) {
            crashed += u32::from(down);
            incarnations += S::incarnation(broker);
        }
        incarnations + crashed
    }

    /// Tells `actor` that its connection to `peer` broke, and applies what it does about it.
    fn notify(&self, state: &mut State<S>, actor: usize, peer: Id, peer_down: bool) {
        if state.crashed[actor] {
            return;
        }
        let mut actor_state = Cow::Borrowed(&*state.actor_states[actor]);
        let mut out = Out::new();
        let peer = self.layout().node(peer);
        self.actors.actors[actor].disconnected(&mut actor_state, peer, peer_down, &mut out);
        if let Cow::Owned(next) = actor_state {
            state.actor_states[actor] = Arc::new(next);
        }
        apply::<S>(Id::from(actor), out, state);
    }

    /// Removes what TCP would have lost with a crashed broker (telling the client of a send it
    /// made to one), and messages that can no longer change their receiver.
    fn tidy(&self, state: &mut State<S>) {
        let client = self.layout().client();
        loop {
            let Network::Ordered(flows) = &mut state.network else {
                return;
            };
            let crashed = &state.crashed;
            let lost: Vec<(Id, Id)> = flows
                .keys()
                .copied()
                .filter(|&(_, dst)| crashed[usize::from(dst)])
                .collect();
            if lost.is_empty() {
                break;
            }
            for flow in &lost {
                flows.remove(flow);
            }
            // Refused: the client is told; it retries only with a newer leader, or gives the
            // record up, so this ends.
            for (src, dst) in lost {
                if src == client {
                    self.notify(state, usize::from(client), dst, true);
                }
            }
        }
        if !self.forget_stale {
            return;
        }
        let layout = self.layout();
        let ActorModelState {
            network,
            actor_states,
            ..
        } = state;
        let Network::Ordered(flows) = network else {
            return;
        };
        flows.retain(|&(src, dst), queue| {
            let receiver = &actor_states[usize::from(dst)];
            let from = layout.node(src);
            queue.retain(|msg| !is_stale::<S>(receiver, from, msg));
            !queue.is_empty()
        });
    }

    /// Breaks the connection between the two ends of `env`: both directions lose what they
    /// carry, and both ends are told.
    fn break_connection(&self, last: &State<S>, env: &Envelope<Message<S>>) -> State<S> {
        let mut next = last.clone();
        next.history += 1;
        if let Network::Ordered(flows) = &mut next.network {
            flows.remove(&(env.src, env.dst));
            flows.remove(&(env.dst, env.src));
        }
        self.notify(&mut next, usize::from(env.src), env.dst, false);
        self.notify(&mut next, usize::from(env.dst), env.src, false);
        next
    }

    /// A connection with something in flight may break, once per pair of live actors. A
    /// request its receiver holds ([`System::held_requests`]) is in flight too: its sender
    /// still waits for the answer.
    fn connection_drops(&self, state: &State<S>, actions: &mut Vec<Action<S>>) {
        if state.history < self.budget.drops
            && let Network::Ordered(flows) = &state.network
        {
            let alive = |id: Id| !state.crashed[usize::from(id)];
            for (&(src, dst), queue) in flows {
                let first_of_pair = src < dst || !flows.contains_key(&(dst, src));
                if alive(src) && alive(dst) && first_of_pair {
                    let msg = queue.front().expect("flows are never empty").clone();
                    actions.push(ActorModelAction::Drop(Envelope { src, dst, msg }));
                }
            }
            for held in S::held_requests(state) {
                let (src, dst) = (held.src, held.dst);
                if alive(src)
                    && alive(dst)
                    && !flows.contains_key(&(src, dst))
                    && !flows.contains_key(&(dst, src))
                {
                    actions.push(ActorModelAction::Drop(held));
                }
            }
        }
    }
}

/// Whether `msg` from `from` can no longer change `receiver`, now or later.
fn is_stale<S: System>(receiver: &ActorState<S>, from: Node, msg: &Message<S>) -> bool {
    match receiver {
        ModelState::Broker(b) => S::broker_ignores(b, from, msg),
        ModelState::Client(c) => S::as_partition_msg(msg).is_none_or(|(p, msg)| c.is_stale(p, msg)),
        ModelState::Controller(_) => false,
    }
}

/// The brokers, with their ids and whether they are down.
pub fn brokers<S: System>(state: &State<S>) -> impl Iterator<Item = (BrokerId, &S::Broker, bool)> {
    state
        .actor_states
        .iter()
        .zip(&state.crashed)
        .enumerate()
        .filter_map(|(i, (actor, &down))| match &**actor {
            ModelState::Broker(b) => Some((i as BrokerId, b, down)),
            _ => None,
        })
}

/// The controller's state.
pub fn controller<S: System>(state: &State<S>) -> &S::Controller {
    match &*state.actor_states[usize::from(Layout::of(state).controller())] {
        ModelState::Controller(c) => c,
        _ => unreachable!("the controller follows the brokers"),
    }
}

/// The client's state.
pub fn client<S: System>(state: &State<S>) -> &ClientState {
    match &*state.actor_states[usize::from(Layout::of(state).client())] {
        ModelState::Client(c) => c,
        _ => unreachable!("the client follows the controller"),
    }
}

/// Applies an actor's commands to the state, as Stateright's actor model does.
fn apply<S: System>(id: Id, out: Out<S::Actor>, state: &mut State<S>) {
    let index = usize::from(id);
    for command in out {
        match command {
            Command::Send(dst, msg) => {
                if let Network::Ordered(flows) = &mut state.network {
                    flows.entry((id, dst)).or_default().push_back(msg);
                }
            }
            Command::SetTimer(timer, _) => {
                state.timers_set[index].set(timer);
            }
            Command::CancelTimer(timer) => {
                state.timers_set[index].cancel(&timer);
            }
            Command::Save(storage) => state.actor_storages[index] = Some(storage),
            Command::ChooseRandom(..) => {}
        }
    }
}

impl<S: System> Model for TcpModel<S> {
    type State = State<S>;
    type Action = Action<S>;

    fn init_states(&self) -> Vec<State<S>> {
        let mut states = self.actors.init_states();
        for state in &mut states {
            self.tidy(state);
        }
        states
    }

    fn actions(&self, state: &State<S>, actions: &mut Vec<Action<S>>) {
        self.actors.actions(state, actions);
        let brokers = self.layout().brokers;
        let may_crash = self.restarts(state) < self.budget.crashes;
        actions.retain(|action| match action {
            ActorModelAction::Crash(id) => may_crash && usize::from(*id) < brokers,
            ActorModelAction::Drop(_) => false,
            _ => true,
        });
        S::refine_actions(self, state, actions);
        self.connection_drops(state, actions);
        if self.only_effective_actions {
            actions.retain(|action| self.next_state(state, action.clone()).is_some());
        }
    }

    fn next_state(&self, last: &State<S>, action: Action<S>) -> Option<State<S>> {
        let mut next = match action {
            ActorModelAction::Drop(env) => self.break_connection(last, &env),
            ActorModelAction::Crash(id) => {
                let mut next = self.actors.next_state(last, action)?;
                for actor in 0..next.actor_states.len() {
                    if Id::from(actor) != id {
                        self.notify(&mut next, actor, id, true);
                    }
                }
                next
            }
            action => self.actors.next_state(last, action)?,
        };
        self.tidy(&mut next);
        Some(next)
    }

    fn format_action(&self, action: &Action<S>) -> String {
        trace::describe_action::<S>(self.layout(), action)
    }

    fn format_step(&self, last: &State<S>, action: Action<S>) -> Option<String> {
        let next = self.next_state(last, action)?;
        Some(S::describe_state(&self.bound, &next))
    }

    fn as_svg(&self, path: Path<State<S>, Action<S>>) -> Option<String> {
        self.actors.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        S::properties()
    }

    fn within_boundary(&self, state: &State<S>) -> bool {
        self.restarts(state) <= self.budget.crashes && S::within_boundary(self, state)
    }
}

/// Panics unless the model at each of `bounds` reaches the same actor states whether it
/// forgets stale messages or keeps them.
pub fn assert_forgetting_stale_hides_nothing<S: System>(
    bounds: impl IntoIterator<Item = S::Bound>,
    into_model: impl Fn(S::Bound) -> TcpModel<S>,
) {
    for bound in bounds {
        let forgetting = actor_states(reachable(&into_model(bound)));
        let mut keeping = into_model(bound);
        keeping.forget_stale = false;
        let keeping = actor_states(reachable(&keeping));
        assert_eq!(forgetting.len(), keeping.len(), "{bound:?}");
        assert!(
            forgetting == keeping,
            "{bound:?}: the same actor states either way"
        );
    }
}

// --- What the models' actors share ----------------------------------------------------------

/// Sends what the client sends.
pub fn client_send<S: System>(layout: Layout, send: Option<Outgoing>, o: &mut Out<S::Actor>) {
    if let Some((leader, p, msg)) = send {
        o.send(layout.id(Node::Broker(leader)), S::partition_msg(p, msg));
    }
}

/// Runs `step` on a copy of the client and sends what it sends; the state changes only if the
/// client did.
pub fn step_client<S: System>(
    layout: Layout,
    state: &mut Cow<ActorState<S>>,
    o: &mut Out<S::Actor>,
    step: impl FnOnce(&mut ClientState) -> Option<Outgoing>,
) {
    let ModelState::Client(before) = state.as_ref() else {
        return;
    };
    let mut client = before.clone();
    let send = step(&mut client);
    let changed = client != *before;
    client_send::<S>(layout, send, o);
    if changed {
        *state.to_mut() = ModelState::Client(client);
    }
}

/// The client's connection to `peer` broke: an attempt it sent there, if any, failed.
pub fn client_disconnected<S: System>(
    layout: Layout,
    state: &mut Cow<ActorState<S>>,
    peer: Node,
    peer_down: bool,
    total: u32,
    o: &mut Out<S::Actor>,
) {
    if let Node::Broker(broker) = peer {
        step_client::<S>(layout, state, o, |client| {
            client.on_disconnect(broker, peer_down, total)
        });
    }
}

/// Keeps a timer that fired set if its step changed nothing (the actor's state was only
/// borrowed, and it sent or set nothing). Stateright removes a timer that fired unless the step
/// sets it again; left set, its firing is no new state to the checker.
pub fn keep_idle_timer<A: Actor>(state: &mut Cow<A::State>, timer: &A::Timer, o: &mut Out<A>) {
    if o.is_empty() && matches!(state, Cow::Borrowed(_)) {
        o.set_timer(timer.clone(), model_timeout());
    }
}
