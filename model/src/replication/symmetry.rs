//! Symmetry reduction: brokers are interchangeable, so a state and the same state with its
//! brokers renamed need exploring once.
//!
//! That is only true when nothing depends on a broker's number. Kafka's elections do: they
//! take the first eligible replica in assignment order. With `--elections any` the checker
//! instead tries every eligible replica (every assignment order at once), and then renaming
//! brokers maps every run onto a run; [`representative`] picks one renaming per state for the
//! checker to remember. It must be used only with `Elections::Any` — `Bound::into_checker`
//! refuses otherwise.
//!
//! A renaming must reach every broker id the state holds: the actors' positions, their
//! timers, what each replica knows of the others, the controller's decisions, the client's
//! leader, and every message in flight with its channel.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use stateright::actor::{Id, Network, Timers};
use surety_core::replication::{BrokerId, ControllerTimer};

use super::actor::{BrokerState, ControllerState, ModelState, ModelTimer};
use super::system::State;

/// What a broker is, whatever it is called: its place in the order the representative sorts
/// brokers into.
fn shape(state: &State, index: usize) -> (bool, u64) {
    let mut hasher = DefaultHasher::new();
    if let ModelState::Broker(b) = &*state.actor_states[index] {
        b.replica.durable().hash(&mut hasher);
        b.replica.high_watermark().hash(&mut hasher);
        b.replica.leader_epoch().hash(&mut hasher);
        std::mem::discriminant(b.replica.role()).hash(&mut hasher);
        b.hw_regressed.hash(&mut hasher);
    }
    state.timers_set[index].iter().count().hash(&mut hasher);
    (state.crashed[index], hasher.finish())
}

fn brokers(state: &State) -> usize {
    state
        .actor_states
        .iter()
        .take_while(|a| matches!(&***a, ModelState::Broker(_)))
        .count()
}

/// The state with its brokers renamed so that they are sorted by [`shape`]: equal for a state
/// and its renamings whenever their brokers' shapes differ, and always a renaming of `state`.
pub fn representative(state: &State) -> State {
    let mut order: Vec<usize> = (0..brokers(state)).collect();
    order.sort_by_cached_key(|&i| shape(state, i));
    let mut new_index = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    renamed(state, &new_index)
}

/// The state with broker `b` renamed `new_index[b]` everywhere (`new_index` a permutation of
/// the brokers).
pub fn renamed(state: &State, new_index: &[usize]) -> State {
    let brokers = brokers(state);
    assert_eq!(new_index.len(), brokers, "a renaming names every broker");
    let mut order = vec![0; brokers];
    for (old, &new) in new_index.iter().enumerate() {
        order[new] = old;
    }
    let rename = |b: BrokerId| new_index[b as usize] as BrokerId;
    let rename_id = |id: Id| {
        let index = usize::from(id);
        if index < brokers {
            Id::from(new_index[index])
        } else {
            id
        }
    };
    // Position `new` takes what was at `order[new]`; the controller and client stay put.
    let place = |i: usize| if i < brokers { order[i] } else { i };
    let actors = state.actor_states.len();

    let actor_states = (0..actors)
        .map(|i| {
            Arc::new(match &*state.actor_states[place(i)] {
                ModelState::Broker(b) => ModelState::Broker(BrokerState {
                    replica: b.replica.renamed(&rename),
                    hw_regressed: b.hw_regressed,
                }),
                ModelState::Controller(c) => ModelState::Controller(ControllerState {
                    controller: c.controller.renamed(&rename, true),
                    elected_outside_isr: c.elected_outside_isr,
                }),
                ModelState::Client(c) => {
                    let mut client = c.clone();
                    for (leader, _) in &mut client.leaders {
                        *leader = leader.map(rename);
                    }
                    client.sent_to = client.sent_to.map(rename);
                    ModelState::Client(client)
                }
            })
        })
        .collect();
    let timers_set = (0..actors)
        .map(|i| {
            let mut timers = Timers::new();
            for timer in state.timers_set[place(i)].iter() {
                timers.set(match *timer {
                    ModelTimer::Controller(ControllerTimer::BrokerSession(b)) => {
                        ModelTimer::Controller(ControllerTimer::BrokerSession(rename(b)))
                    }
                    ModelTimer::ExpireFetch(b) => ModelTimer::ExpireFetch(rename(b)),
                    other => other,
                });
            }
            timers
        })
        .collect();
    let network = match &state.network {
        Network::Ordered(flows) => {
            let renamed: BTreeMap<_, _> = flows
                .iter()
                .map(|(&(src, dst), queue)| {
                    let queue = queue.iter().map(|msg| msg.renamed(&rename)).collect();
                    ((rename_id(src), rename_id(dst)), queue)
                })
                .collect();
            Network::Ordered(renamed)
        }
        other => other.clone(),
    };
    State {
        actor_states,
        network,
        timers_set,
        random_choices: (0..actors)
            .map(|i| state.random_choices[place(i)].clone())
            .collect(),
        crashed: (0..actors).map(|i| state.crashed[place(i)]).collect(),
        history: state.history,
        actor_storages: (0..actors)
            .map(|i| state.actor_storages[place(i)].clone())
            .collect(),
    }
}
