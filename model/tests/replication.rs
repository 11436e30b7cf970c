//! The replication model's own evidence: the sound protocol holds where each broken variant
//! fails, each broken variant fails with the property it is known to break, and the model's
//! shortcuts (forgetting stale messages, an empty hash for saved state) hide nothing.
//!
//! The default bound is checked by `cargo run --release -p model -- check replication` in CI:
//! it takes over a minute even in release mode.

use std::collections::HashSet;

use model::check::{self, Options, StopAt, Verdict};
use model::harness::system::assert_forgetting_stale_hides_nothing;
use model::replication::{
    Bound, Elections, ModelState, ReplicationModel, State, Variant, describe_path, renamed,
    representative,
};
use model::symmetry::{assert_symmetric, permutations, reachable};
use stateright::Model;

fn check(bound: Bound, stop_at: StopAt) -> check::Outcome<ReplicationModel> {
    check::run(bound.into_model(), Options::bfs_until(stop_at))
}

#[test]
fn every_broken_variant_fails_with_the_property_it_breaks() {
    for variant in Variant::BROKEN {
        let expected = variant
            .expected_violation()
            .expect("broken variants name one");
        let bound = variant.smallest_bound();
        let outcome = check(bound, StopAt::Violation(expected));
        assert!(
            outcome.violations().contains(&expected),
            "{variant:?} at {bound:?} should violate {expected}, found {:?}",
            outcome.verdicts
        );
        let (_, trace) = outcome
            .traces
            .iter()
            .find(|(name, _)| *name == expected)
            .expect("a violation has a counterexample");
        let described = describe_path(bound, trace.clone());
        assert!(described.contains("final state:"), "{described}");
    }
}

#[test]
fn an_unclean_election_is_caught_as_one() {
    let bound = Variant::UncleanElection.smallest_bound();
    let outcome = check(bound, StopAt::Violation("leader_elected_from_isr"));
    assert!(
        outcome.violations().contains(&"leader_elected_from_isr"),
        "{:?}",
        outcome.verdicts
    );
}

#[test]
fn the_sound_protocol_holds_at_every_bound_a_variant_fails_at() {
    for variant in Variant::BROKEN {
        let bound = Bound {
            variant: Variant::Sound,
            ..variant.smallest_bound()
        };
        let outcome = check(bound, StopAt::FirstViolation);
        assert!(outcome.exhaustive, "{bound:?}: the search ran to the end");
        assert!(
            outcome.violations().is_empty(),
            "{bound:?}: {:?}\n{}",
            outcome.violations(),
            outcome
                .traces
                .iter()
                .map(|(_, t)| describe_path(bound, t.clone()))
                .collect::<String>()
        );
    }
}

#[test]
fn the_model_checks_exactly_the_properties_the_spec_lists() {
    let spec = include_str!("../../specs/replication.md");
    let model = Bound::default().into_model();
    check::assert_checks_what_the_spec_lists(&model, spec, "specs/replication.md");
}

/// Small bounds that between them crash, restart, elect, shrink and grow the ISR, retry and
/// break connections.
fn small_bounds() -> Vec<Bound> {
    let base = Bound {
        brokers: 2,
        min_insync_replicas: 1,
        records: 1,
        crashes: 1,
        leader_changes: 1,
        isr_changes: 1,
        retries: 1,
        drops: 1,
        elections: Elections::Preferred,
        variant: Variant::Sound,
    };
    vec![
        base,
        Bound {
            records: 2,
            crashes: 0,
            isr_changes: 2,
            drops: 0,
            ..base
        },
        Bound {
            brokers: 3,
            min_insync_replicas: 2,
            crashes: 0,
            isr_changes: 0,
            retries: 0,
            drops: 0,
            ..base
        },
    ]
}

#[test]
fn forgetting_stale_messages_changes_no_state_an_actor_can_reach() {
    assert_forgetting_stale_hides_nothing(small_bounds(), Bound::into_model);
}

#[test]
fn what_a_broker_saved_is_what_its_replica_holds() {
    for bound in small_bounds() {
        for state in reachable(&bound.into_model()) {
            for (index, actor) in state.actor_states.iter().enumerate() {
                if let ModelState::Broker(broker) = &**actor {
                    let saved = state.actor_storages[index].as_ref().expect("brokers save");
                    assert_eq!(*saved.0, *broker.replica.durable(), "{bound:?}");
                }
            }
        }
    }
}

#[test]
fn an_exhaustive_check_reports_every_verdict() {
    let bound = Bound {
        variant: Variant::Sound,
        ..Variant::AcksLeaderOnly.smallest_bound()
    };
    let outcome = check(bound, StopAt::FirstViolation);
    assert_eq!(
        outcome.verdicts.len(),
        bound.into_model().properties().len()
    );
    assert!(
        outcome
            .verdicts
            .iter()
            .any(|(name, v)| *name == "record_committed" && *v == Verdict::Reached)
    );
}

#[test]
fn renaming_brokers_is_a_symmetry_when_elections_may_choose_anyone() {
    let bounds = [
        Bound {
            elections: Elections::Any,
            isr_changes: 0,
            ..small_bounds()[0]
        },
        Bound {
            elections: Elections::Any,
            ..small_bounds()[2]
        },
    ];
    for bound in bounds {
        let model = bound.into_model();
        for state in reachable(&model) {
            assert_symmetric(&model, &state, bound.brokers, renamed, representative);
        }
    }
}

#[test]
fn kafkas_preferred_elections_are_not_symmetric() {
    // Why symmetry reduction needs `Elections::Any`: with Kafka's preferred order, some state
    // steps differently once its brokers are renamed.
    let bound = Bound {
        elections: Elections::Preferred,
        ..small_bounds()[2]
    };
    let model = bound.into_model();
    let asymmetric = reachable(&model).into_iter().any(|state| {
        permutations(bound.brokers).iter().any(|rename| {
            let then_renamed: HashSet<State> = model
                .next_states(&state)
                .iter()
                .map(|next| renamed(next, rename))
                .collect();
            let renamed_then: HashSet<State> = model
                .next_states(&renamed(&state, rename))
                .into_iter()
                .collect();
            then_renamed != renamed_then
        })
    });
    assert!(asymmetric);
}
