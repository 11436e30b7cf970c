//! The consumer-group model: at small bounds the sound protocol keeps every property, and each
//! broken variant fails the one it breaks.

use model::check::{self, Options, StopAt, Verdict};
use model::group::{GroupBound, GroupModel, GroupVariant};

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

#[test]
fn the_sound_protocol_keeps_every_property_and_reaches_a_stable_group() {
    let bound = GroupBound {
        heartbeats: 1,
        leaves: 0,
        crashes: 1,
        pauses: 0,
        ..GroupBound::for_variant(GroupVariant::Sound)
    };
    let outcome = check(bound, StopAt::FirstViolation);
    assert!(outcome.passed(), "{bound:?}: {:?}", outcome.verdicts);
    assert!(outcome.exhaustive);
    assert!(
        outcome
            .verdicts
            .contains(&("group_stable_with_every_consumer", Verdict::Reached))
    );
}

#[test]
fn every_broken_variant_fails_the_property_it_breaks() {
    for variant in [
        GroupVariant::AcceptStaleCommits,
        GroupVariant::NoRevokeBeforeRejoin,
        GroupVariant::ResetGenerationWhenEmpty,
        GroupVariant::AssignorDropsPartition,
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
        heartbeats: 0,
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
