//! The producer model: idempotence keeps order and writes once at any in-flight limit up to
//! five; without it, a retry reorders a partition (and can write a batch twice).

use model::check::{self, Options, StopAt, Verdict};
use model::producer::{ProducerBound, ProducerVariant};

fn check(bound: ProducerBound, stop_at: StopAt) -> check::Outcome<model::producer::ProducerModel> {
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
fn idempotence_keeps_order_and_writes_once_with_one_or_five_in_flight() {
    for max_in_flight in [1, 2, 5] {
        let bound = ProducerBound {
            max_in_flight,
            ..ProducerBound::for_variant(ProducerVariant::Idempotent)
        };
        let outcome = check(bound, StopAt::FirstViolation);
        assert!(outcome.passed(), "{bound:?}: {:?}", outcome.verdicts);
        assert!(outcome.exhaustive);
        assert!(
            outcome
                .verdicts
                .contains(&("every_batch_acknowledged", Verdict::Reached))
        );
    }
}

#[test]
fn without_idempotence_one_in_flight_keeps_order_but_a_retry_can_write_twice() {
    let bound = ProducerBound {
        max_in_flight: 1,
        ..ProducerBound::for_variant(ProducerVariant::NoIdempotence)
    };
    let outcome = check(bound, StopAt::Violation("no_duplicates"));
    assert!(outcome.violations().contains(&"no_duplicates"));
    assert!(!outcome.violations().contains(&"partition_order_preserved"));
}

#[test]
fn the_model_checks_exactly_the_properties_the_spec_names() {
    let spec = include_str!("../../specs/producer.md");
    let outcome = check(
        ProducerBound {
            batches: 1,
            ..ProducerBound::for_variant(ProducerVariant::Idempotent)
        },
        StopAt::FirstViolation,
    );
    for (name, _) in &outcome.verdicts {
        assert!(
            spec.contains(&format!("`{name}`")),
            "specs/producer.md names {name}"
        );
    }
}

#[test]
fn the_model_reaches_a_producer_id_reset_and_writes_after_it() {
    let outcome = check(
        ProducerBound::for_variant(ProducerVariant::Idempotent),
        StopAt::FirstViolation,
    );
    assert!(outcome.passed(), "{:?}", outcome.verdicts);
    assert!(
        outcome
            .verdicts
            .contains(&("written_under_a_new_producer_id", Verdict::Reached))
    );
}

#[test]
fn each_broken_variant_fails_the_property_it_is_known_to_break() {
    for variant in [
        ProducerVariant::NoIdempotence,
        ProducerVariant::ResendAfterReset,
        ProducerVariant::DuplicateAtLogEnd,
    ] {
        let bound = ProducerBound::for_variant(variant);
        let property = bound.expected_violation().expect("a broken variant");
        let outcome = check(bound, StopAt::Violation(property));
        assert!(
            outcome.violations().contains(&property),
            "{variant:?} should break {property}: {:?}",
            outcome.verdicts
        );
    }
}
