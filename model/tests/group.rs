//! The consumer-group model: at small bounds the sound protocol keeps every property, and each
//! broken variant fails the one it breaks; the model's reductions lose nothing.

use std::collections::HashSet;

use model::check::{self, Options, StopAt, Verdict};
use model::group::{
    GroupAssignor, GroupBound, GroupModel, GroupSystem, GroupVariant, Observed, reordered,
    representative,
};
use model::symmetry::{assert_symmetric, reachable};

fn check(bound: GroupBound, stop_at: StopAt) -> check::Outcome<GroupModel> {
    check::run(
        bound.into_model(),
        Options {
            stop_at,
            progress: false,
            ..Options::bfs()
        },
    )
}

/// Small sound bounds that between them join late, commit, leave, crash, pause, move the
/// coordinator, fail a store and restart a static member.
fn small_bounds() -> Vec<GroupBound> {
    let two = GroupBound {
        consumers: 2,
        commits: 1,
        leaves: 0,
        crashes: 0,
        pauses: 0,
        ..GroupBound::for_variant(GroupVariant::Sound)
    };
    vec![
        two,
        GroupBound {
            partitions: 1,
            pauses: 1,
            ..two
        },
        GroupBound {
            commits: 0,
            leaves: 1,
            crashes: 1,
            ..two
        },
        GroupBound {
            commits: 0,
            moves: 1,
            ..two
        },
        GroupBound { failures: 1, ..two },
        GroupBound {
            commits: 0,
            crashes: 1,
            restarts: 1,
            statics: true,
            ..two
        },
    ]
}

#[test]
fn the_sound_protocol_keeps_every_property_and_reaches_a_stable_group() {
    // The default bound is `check group`'s; here, two consumers with a pause as well (a
    // zombie, whose commit must be fenced), eager and cooperative, with a coordinator move
    // and a failed store, static members one of which restarts, and three that only join and
    // commit.
    for bound in [
        GroupBound {
            consumers: 2,
            pauses: 1,
            ..GroupBound::for_variant(GroupVariant::Sound)
        },
        GroupBound {
            leaves: 0,
            crashes: 0,
            ..GroupBound::for_variant(GroupVariant::Sound)
        },
        GroupBound {
            assignor: GroupAssignor::CooperativeSticky,
            consumers: 2,
            pauses: 1,
            ..GroupBound::for_variant(GroupVariant::Sound)
        },
        GroupBound {
            consumers: 2,
            moves: 1,
            failures: 1,
            ..GroupBound::for_variant(GroupVariant::Sound)
        },
        GroupBound {
            consumers: 2,
            statics: true,
            restarts: 1,
            ..GroupBound::for_variant(GroupVariant::Sound)
        },
    ] {
        let outcome = check(bound, StopAt::FirstViolation);
        assert!(outcome.passed(), "{bound:?}: {:?}", outcome.verdicts);
        assert!(outcome.exhaustive);
        assert!(
            outcome
                .verdicts
                .contains(&("group_stable_with_every_consumer", Verdict::Reached))
        );
    }
}

#[test]
fn every_broken_variant_fails_the_property_it_breaks() {
    for variant in [
        GroupVariant::AcceptStaleCommits,
        GroupVariant::NoRevokeBeforeRejoin,
        GroupVariant::ResetGenerationWhenEmpty,
        GroupVariant::AssignorDropsPartition,
        GroupVariant::CooperativeTransfersOwned,
        GroupVariant::ForgetGenerationOnLoad,
        GroupVariant::StaticReplaceKeepsAssigning,
    ] {
        let bound = GroupBound::for_variant(variant);
        let expected = bound.expected_violation().unwrap();
        let outcome = check(bound, StopAt::Violation(expected));
        assert!(
            outcome.violations().contains(&expected),
            "{variant:?}: {:?}",
            outcome.verdicts
        );
    }
}

#[test]
fn the_model_checks_exactly_the_properties_the_spec_names() {
    let spec = include_str!("../../specs/group.md");
    let bound = GroupBound {
        consumers: 2,
        commits: 0,
        leaves: 0,
        crashes: 0,
        pauses: 0,
        ..GroupBound::for_variant(GroupVariant::Sound)
    };
    let outcome = check(bound, StopAt::FirstViolation);
    for (name, _) in &outcome.verdicts {
        assert!(
            spec.contains(&format!("`{name}`")),
            "specs/group.md names {name}"
        );
    }
}

#[test]
fn the_reductions_lose_no_state_anyone_reads() {
    // Forgetting what no one reads, and heartbeating only when that tells the member
    // something, against keeping everything and heartbeating on every timer (twice each).
    for bound in small_bounds() {
        let observed = |model: &GroupModel| -> HashSet<Observed> {
            reachable(model).iter().map(GroupSystem::observed).collect()
        };
        let reduced = observed(&bound.into_model());
        let mut exact = bound.into_model();
        exact.forget_ignored = false;
        exact.heartbeat_budget = Some(2);
        let exact = observed(&exact);
        let missed = exact.difference(&reduced).count();
        assert_eq!(missed, 0, "{bound:?}: reduced, the model misses no state");
        let extra = reduced.difference(&exact).count();
        assert_eq!(
            extra, 0,
            "{bound:?}: and reaches none the exact model does not"
        );
    }
}

#[test]
fn consumers_are_interchangeable() {
    let three = GroupBound {
        commits: 0,
        leaves: 0,
        crashes: 0,
        pauses: 0,
        ..GroupBound::for_variant(GroupVariant::Sound)
    };
    for bound in small_bounds().into_iter().chain([three]) {
        let model = bound.into_model();
        for state in reachable(&model) {
            assert_symmetric(&model, &state, bound.consumers, reordered, representative);
        }
    }
}

#[test]
fn a_consumer_commits_while_it_revokes_and_the_commit_is_stored() {
    // Kafka's commit before revoking: the commit carries the generation being left, and the
    // coordinator, preparing the next one, stores it (`stale_commit_rejected` holds throughout).
    for assignor in [GroupAssignor::Range, GroupAssignor::CooperativeSticky] {
        let bound = GroupBound {
            assignor,
            consumers: 2,
            leaves: 0,
            crashes: 0,
            ..GroupBound::for_variant(GroupVariant::Sound)
        };
        let states = reachable(&bound.into_model());
        assert!(
            states
                .iter()
                .any(GroupSystem::stores_a_commit_made_while_revoking),
            "{assignor:?}"
        );
    }
}
