//! The system the checker explores: core's actors, as Stateright's actor model runs them, over a
//! network that behaves as Kafka sees TCP.
//!
//! - **Connections fail, and their ends are told.** A broken connection loses what was in
//!   flight on it in both directions, and both ends learn of it (a reset), as Kafka's network
//!   client does: each core actor's `on_disconnect` decides what to resend. The run's budget of
//!   broken connections is `Bound::drops`; the count so far is the state's `history`.
//! - **A crash breaks every connection of the broker.** What was in flight to it, and what is
//!   sent to it while it is down, is lost (Stateright would keep it for the restarted process;
//!   TCP does not). Every other actor is told its connection to the broker broke; the client
//!   is also told when it sends to a broker that is down (connection refused). Messages *from*
//!   the broker that were already on the wire may still arrive.
//! - **Messages that can no longer matter are forgotten.** A message its receiver's `is_stale`
//!   says it will ignore for the rest of its incarnation would only be delivered and vanish, so
//!   two states that differ only in it behave alike; the checker explores them once. With
//!   `forget_stale: false` every message is kept, and a test shows that the states every actor
//!   reaches are the same either way.

use std::borrow::Cow;
use std::sync::Arc;

use stateright::actor::{
    ActorModel, ActorModelAction, ActorModelState, Command, Envelope, Id, Network, Out,
};
use stateright::{Model, Path, Property};
use surety_core::replication::{Msg, Node, Role};

use super::actor::{Layout, ModelActor, ModelState, ModelTimer, timer_within_bound};
use super::{Bound, Elections, properties, trace};

/// A state of the whole system. Its `history` counts the connections broken so far.
pub type State = ActorModelState<ModelActor, u8>;
/// A step: a delivery, a broken connection (Stateright's `Drop`), a timer, a crash or a
/// restart.
pub type Action = ActorModelAction<Msg, ModelTimer, ()>;

/// The replication model the checker runs.
pub struct ReplicationModel {
    actors: ActorModel<ModelActor, Bound, u8>,
    /// The bound and variant.
    pub bound: Bound,
    /// Whether messages their receiver will ignore are forgotten (always, but in the test that
    /// shows forgetting them changes nothing an actor can reach).
    pub forget_stale: bool,
    /// Whether to offer only actions that change the state. Random walks need it: Stateright's
    /// simulation redraws after an action that changes nothing, in a way its counterexample
    /// paths cannot replay.
    pub only_effective_actions: bool,
}

impl ReplicationModel {
    pub(super) fn new(actors: ActorModel<ModelActor, Bound, u8>, bound: Bound) -> Self {
        ReplicationModel {
            actors,
            bound,
            forget_stale: true,
            only_effective_actions: false,
        }
    }

    fn layout(&self) -> Layout {
        Layout {
            brokers: self.bound.brokers,
        }
    }

    /// Tells `actor` that its connection to `peer` broke, and applies what it does about it.
    fn notify(&self, state: &mut State, actor: usize, peer: Id, peer_down: bool) {
        if state.crashed[actor] {
            return;
        }
        let mut actor_state = Cow::Borrowed(&*state.actor_states[actor]);
        let mut out = Out::new();
        self.actors.actors[actor].on_disconnect(&mut actor_state, peer, peer_down, &mut out);
        if let Cow::Owned(next) = actor_state {
            state.actor_states[actor] = Arc::new(next);
        }
        apply(Id::from(actor), out, state);
    }

    /// Removes what TCP would have lost with a crashed broker (telling the client of a send it
    /// made to one), and messages that can no longer change their receiver.
    fn tidy(&self, state: &mut State) {
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
            queue.retain(|msg| !is_stale(receiver, from, msg));
            !queue.is_empty()
        });
    }

    /// Breaks the connection between the two ends of `env`: both directions lose what they
    /// carry, and both ends are told.
    fn break_connection(&self, last: &State, env: &Envelope<Msg>) -> State {
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
    /// follower's fetch that its leader holds is in flight too: the follower still waits for
    /// its answer.
    fn connection_drops(&self, state: &State, actions: &mut Vec<Action>) {
        if state.history < self.bound.drops
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
            let layout = self.layout();
            for (leader, actor) in state.actor_states.iter().enumerate() {
                let ModelState::Broker(b) = &**actor else {
                    continue;
                };
                let Role::Leader(l) = b.replica.role() else {
                    continue;
                };
                let dst = Id::from(leader);
                for (&follower, progress) in &l.followers {
                    let src = layout.id(Node::Broker(follower));
                    if let Some(fetch) = progress.parked
                        && alive(src)
                        && alive(dst)
                        && !flows.contains_key(&(src, dst))
                        && !flows.contains_key(&(dst, src))
                    {
                        let msg = Msg::Fetch {
                            replica_id: follower,
                            current_leader_epoch: fetch.leader_epoch,
                            fetch_offset: fetch.fetch_offset,
                            last_fetched_epoch: None,
                        };
                        actions.push(ActorModelAction::Drop(Envelope { src, dst, msg }));
                    }
                }
            }
        }
    }
}

/// Applies an actor's commands to the state, as Stateright's actor model does.
fn apply(id: Id, out: Out<ModelActor>, state: &mut State) {
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

fn is_stale(receiver: &ModelState, from: Node, msg: &Msg) -> bool {
    match receiver {
        ModelState::Broker(b) => b.replica.is_stale(from, msg),
        ModelState::Client(c) => c.is_stale(msg),
        ModelState::Controller(_) => false,
    }
}

/// Broker restarts so far, counting a broker that is down now.
pub(super) fn restarts(state: &State, brokers: usize) -> u32 {
    let crashed = state.crashed[..brokers].iter().filter(|&&c| c).count() as u32;
    let incarnations: u32 = state.actor_states[..brokers]
        .iter()
        .map(|s| match &**s {
            ModelState::Broker(b) => b.replica.durable().incarnation,
            _ => 0,
        })
        .sum();
    // A broker that is down has not counted its restart in its incarnation yet.
    incarnations + crashed
}

impl Model for ReplicationModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut states = self.actors.init_states();
        for state in &mut states {
            self.tidy(state);
        }
        states
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.actors.actions(state, actions);
        // Only brokers crash (the controller stands for a replicated quorum; the client's
        // failures are the connections it loses), and only while the budget of restarts lasts.
        let brokers = self.bound.brokers;
        let may_crash = restarts(state, brokers) < self.bound.crashes;
        actions.retain(|action| match action {
            ActorModelAction::Crash(id) => may_crash && usize::from(*id) < brokers,
            ActorModelAction::Drop(_) => false,
            _ => true,
        });
        // With `--elections any`, a controller timer that holds an election is fired once per
        // leader it may choose.
        if self.bound.elections == Elections::Any {
            let controller = self.layout().controller();
            let controller_state = &state.actor_states[usize::from(controller)];
            if let ModelState::Controller(c) = &**controller_state {
                let mut elections = Vec::new();
                actions.retain(|action| {
                    let ActorModelAction::Timeout(id, ModelTimer::Controller(timer)) = action
                    else {
                        return true;
                    };
                    let choices = c.controller.election_choices(*timer);
                    let fires = timer_within_bound(
                        self.bound,
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
        }
        self.connection_drops(state, actions);
        if self.only_effective_actions {
            actions.retain(|action| self.next_state(state, action.clone()).is_some());
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
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

    fn format_action(&self, action: &Action) -> String {
        trace::describe_action(self.bound, action)
    }

    fn format_step(&self, last: &State, action: Action) -> Option<String> {
        let next = self.next_state(last, action)?;
        Some(properties::describe_state(&next))
    }

    fn as_svg(&self, path: Path<State, Action>) -> Option<String> {
        self.actors.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::properties()
    }

    fn within_boundary(&self, state: &State) -> bool {
        properties::within_boundary(&self.bound, state)
    }
}
