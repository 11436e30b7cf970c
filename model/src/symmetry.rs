//! What the models' tests share to show a reduction is sound: every reachable state, every
//! permutation of interchangeable actors, and the check that a permutation is a symmetry.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use stateright::Model;
use stateright::actor::{Actor, ActorModelState};

/// Every state `model` reaches within its boundary, breadth-first, without any reduction.
pub fn reachable<M>(model: &M) -> Vec<M::State>
where
    M: Model,
    M::State: Hash + Eq + Clone,
{
    let mut seen = HashSet::new();
    let mut states = Vec::new();
    let mut queue: VecDeque<M::State> = model.init_states().into();
    let mut actions = Vec::new();
    while let Some(state) = queue.pop_front() {
        if !seen.insert(state.clone()) {
            continue;
        }
        model.actions(&state, &mut actions);
        for action in actions.drain(..) {
            if let Some(next) = model.next_state(&state, action)
                && model.within_boundary(&next)
                && !seen.contains(&next)
            {
                queue.push_back(next);
            }
        }
        states.push(state);
    }
    states
}

/// Every permutation of `n` actors, as `new_index` vectors (actor `i` goes to `p[i]`).
pub fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for smaller in permutations(n - 1) {
        for at in 0..n {
            let mut p = smaller.clone();
            p.insert(at, n - 1);
            all.push(p);
        }
    }
    all
}

/// Panics unless permuting `state`'s `n` actors (`apply`) is a symmetry: every property
/// agrees on the permuted state, the permuted state's steps are the permuted steps, and
/// `representative` is one of the permutations.
pub fn assert_symmetric<M>(
    model: &M,
    state: &M::State,
    n: usize,
    apply: impl Fn(&M::State, &[usize]) -> M::State,
    representative: impl Fn(&M::State) -> M::State,
) where
    M: Model,
    M::State: Hash + Eq + Clone,
{
    let properties = model.properties();
    for order in permutations(n) {
        let moved = apply(state, &order);
        for p in &properties {
            assert_eq!(
                (p.condition)(model, state),
                (p.condition)(model, &moved),
                "{} is blind to the actors' order",
                p.name
            );
        }
        let then_moved: HashSet<M::State> = model
            .next_states(state)
            .iter()
            .map(|next| apply(next, &order))
            .collect();
        let moved_then: HashSet<M::State> = model.next_states(&moved).into_iter().collect();
        assert!(
            then_moved == moved_then,
            "the steps from a permuted state are the permuted steps"
        );
    }
    let rep = representative(state);
    assert!(
        permutations(n).iter().any(|p| apply(state, p) == rep),
        "the representative is a permutation"
    );
}

/// What every actor holds, and which actors are down, in each of `states`: the network and the
/// timers aside. A reduction that forgets messages or skips timers no actor would act on must
/// leave this set as it is.
pub fn actor_states<A, H>(states: Vec<ActorModelState<A, H>>) -> HashSet<(Vec<A::State>, Vec<bool>)>
where
    A: Actor<State: Eq>,
{
    states
        .into_iter()
        .map(|s| {
            let actors = s.actor_states.iter().map(|a| (**a).clone()).collect();
            (actors, s.crashed)
        })
        .collect()
}
