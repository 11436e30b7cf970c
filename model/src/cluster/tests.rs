//! The cluster model's own evidence: each broken variant fails with the property it is known
//! to break, by its shortest counterexample; the sound controller holds at small bounds and
//! reaches what it should; a scripted run moves a leadership and brings a fenced broker back;
//! and the model's shortcuts (forgetting stale messages, heartbeating only when it matters, an
//! empty hash for saved state) hide nothing.
//!
//! The default bound is checked by `cargo run --release -p model -- check cluster` in CI.

use stateright::Model;
use stateright::actor::{ActorModelAction, Id};
use surety_core::cluster::ClusterTimer;
use surety_core::replication::{Msg, Role};

use super::actor::saved;
use super::system::controller;
use super::*;
use crate::check::{self, Options, StopAt, Verdict, shortest_counterexample};
use crate::harness::ClientState;
use crate::harness::system::assert_forgetting_stale_hides_nothing;
use crate::symmetry::{actor_states, reachable};

fn check(bound: Bound, stop_at: StopAt) -> check::Outcome<ClusterModel> {
    check::run(bound.into_model(), Options::bfs_until(stop_at))
}

fn describe_verdicts(bound: Bound, outcome: &check::Outcome<ClusterModel>) -> String {
    let traces: String = outcome
        .traces
        .iter()
        .map(|(name, t)| format!("{name}:\n{}", describe_path(bound, t.clone())))
        .collect();
    format!("{bound:?}: {:?}\n{traces}", outcome.verdicts)
}

#[test]
fn every_broken_variant_fails_with_the_property_it_breaks() {
    for (variant, steps) in [
        (Variant::RegisterKeepsPartitions, 3),
        (Variant::ElectLiveReplica, 8),
    ] {
        let expected = variant
            .expected_violation()
            .expect("broken variants name one");
        let bound = variant.bound();
        let outcome = check(bound, StopAt::Violation(expected));
        assert!(
            outcome.violations().contains(&expected),
            "{}",
            describe_verdicts(bound, &outcome)
        );
        let shortest = shortest_counterexample(&bound.into_model(), expected)
            .expect("a violation has a counterexample");
        let described = describe_path(bound, shortest.clone());
        assert_eq!(shortest.len(), steps + 1, "{variant:?}:\n{described}");
        assert!(described.contains("final state:"), "{described}");
    }
}

#[test]
fn register_keeps_partitions_leaves_a_restarted_leader_leading() {
    let bound = Variant::RegisterKeepsPartitions.bound();
    let trace = shortest_counterexample(&bound.into_model(), "fenced_broker_leads_nothing")
        .expect("it fails");
    let described = describe_path(bound, trace);
    for step in ["crashes", "restarts", "BrokerRegistration"] {
        assert!(described.contains(step), "{described}");
    }
}

#[test]
fn elect_live_replica_loses_an_acknowledged_record() {
    let bound = Variant::ElectLiveReplica.bound();
    let model = bound.into_model();
    let trace = shortest_counterexample(&model, "acked_records_never_lost").expect("it fails");
    let (last, _) = trace.last().expect("a path");
    let c = controller(last);
    // The partition's leader now is a live replica that was outside the ISR.
    assert!(c.elected_outside_isr);
    assert!(!client_state(last, &bound).acked.is_empty());
}

/// Bounds at which the sound controller is checked exhaustively here; the default one runs in
/// CI.
fn sound_bounds() -> Vec<Bound> {
    let default = Bound::default();
    vec![
        // A restart and an expiry, two partitions sharing broker 1.
        Bound {
            drops: 0,
            ..default
        },
        // A live broker's session expires: a zombie, in both partitions it holds.
        Bound {
            zombies: true,
            crashes: 0,
            drops: 0,
            ..default
        },
        // Two brokers holding both partitions; a restart; the client retries.
        Bound {
            brokers: 2,
            expiries: 0,
            retries: 1,
            drops: 0,
            ..default
        },
    ]
}

#[test]
fn the_sound_controller_holds_and_reaches_every_goal_at_small_bounds() {
    for bound in sound_bounds() {
        let outcome = check(bound, StopAt::FirstViolation);
        assert!(outcome.exhaustive, "{bound:?}: the search ran to the end");
        assert!(
            outcome.violations().is_empty(),
            "{}",
            describe_verdicts(bound, &outcome)
        );
        let unreached: Vec<_> = outcome
            .verdicts
            .iter()
            .filter(|(_, v)| *v == Verdict::NotReached)
            .map(|(name, _)| *name)
            .collect();
        let expected: &[&str] = if bound.expiries == 0 {
            &["broker_fenced_and_unfenced"]
        } else {
            &[]
        };
        assert_eq!(unreached, expected, "{bound:?}");
    }
}

#[test]
fn the_model_checks_exactly_the_properties_the_spec_lists() {
    let spec = include_str!("../../../specs/cluster.md");
    let model = Bound::default().into_model();
    check::assert_checks_what_the_spec_lists(&model, spec, "specs/cluster.md");
}

#[test]
fn the_setup_places_partitions_round_robin_on_registered_brokers() {
    let setup = Bound::default().setup();
    assert_eq!(setup.assignments, [vec![0, 1], vec![1, 2]]);
    assert_eq!(setup.broker_epochs, [0, 1, 2]);
    assert_eq!(setup.initial[0].leader, Some(0));
    assert_eq!(setup.initial[1].leader, Some(1));
    assert!(setup.quorum.image().brokers().all(|(_, b)| !b.fenced));
    let rf3 = Bound {
        replication_factor: 3,
        min_insync_replicas: 2,
        ..Bound::default()
    }
    .setup();
    assert_eq!(rf3.assignments, [vec![0, 1, 2], vec![1, 2, 0]]);
    assert!(
        rf3.replica_configs
            .iter()
            .all(|b| b.iter().all(Option::is_some))
    );
}

// --- A scripted run ---------------------------------------------------------------------------

fn client_state<'a>(s: &'a State, bound: &Bound) -> &'a ClientState {
    match &*s.actor_states[bound.brokers + 1] {
        ModelState::Client(c) => c,
        _ => unreachable!(),
    }
}

fn broker_state(s: &State, b: usize) -> &BrokerState {
    match &*s.actor_states[b] {
        ModelState::Broker(broker) => broker,
        _ => unreachable!(),
    }
}

/// Takes the one enabled action `pick` chooses, checking every `always` property after it.
fn take(model: &ClusterModel, state: &State, what: &str, pick: impl Fn(&Action) -> bool) -> State {
    let mut actions = Vec::new();
    model.actions(state, &mut actions);
    let Some(action) = actions.into_iter().find(|a| pick(a)) else {
        panic!(
            "{what}: not enabled in\n{}",
            describe_state(&model.bound, state)
        );
    };
    let next = model.next_state(state, action).expect(what);
    for p in model.properties() {
        if p.expectation == stateright::Expectation::Always {
            assert!((p.condition)(model, &next), "{what}: {} fails", p.name);
        }
    }
    next
}

fn delivers(src: usize, dst: usize, is: impl Fn(&ClusterMsg) -> bool) -> impl Fn(&Action) -> bool {
    move |action| {
        matches!(action, ActorModelAction::Deliver { src: s, dst: d, msg }
            if *s == Id::from(src) && *d == Id::from(dst) && is(msg))
    }
}

fn holds(model: &ClusterModel, state: &State, property: &str) -> bool {
    let p = model.properties().into_iter().find(|p| p.name == property);
    (p.expect("a property").condition)(model, state)
}

/// A scripted delivery: what it does, from whom, to whom, and which message of partition 0.
type Step = (&'static str, usize, usize, fn(Msg) -> bool);

#[test]
fn a_crashed_leaders_partition_moves_with_its_acked_record_and_the_broker_comes_back() {
    let bound = Bound::default();
    let model = bound.into_model();
    let (controller_id, client) = (3, 4);
    let mut s = model.init_states().remove(0);
    // Partition 0 is on brokers 0 (leader) and 1; the client produces r0 to broker 0, broker 1
    // fetches it, and the fetch past it acknowledges it.
    let partition_0 = |m: &ClusterMsg| match m {
        ClusterMsg::Partition(0, msg) => Some(msg.clone()),
        _ => None,
    };
    let steps: [Step; 5] = [
        ("produce r0", client, 0, |m| {
            matches!(m, Msg::Produce { .. })
        }),
        (
            "broker 1 fetches r0",
            1,
            0,
            |m| matches!(m, Msg::Fetch { fetch_offset, .. } if fetch_offset == 0),
        ),
        ("broker 1 appends r0", 0, 1, |m| {
            matches!(m, Msg::FetchResponse { .. })
        }),
        (
            "broker 1 fetches past r0",
            1,
            0,
            |m| matches!(m, Msg::Fetch { fetch_offset, .. } if fetch_offset == 1),
        ),
        ("r0 is acknowledged", 0, client, |m| {
            matches!(m, Msg::ProduceResponse { .. })
        }),
    ];
    for (what, src, dst, is) in steps {
        let delivered = delivers(src, dst, |m| partition_0(m).is_some_and(is));
        s = take(&model, &s, what, delivered);
    }
    assert_eq!(client_state(&s, &bound).acked.get(&0), Some(&0));

    // Broker 0 crashes; its session expires; partition 0 elects broker 1.
    s = take(
        &model,
        &s,
        "broker 0 crashes",
        |a| matches!(a, ActorModelAction::Crash(id) if *id == Id::from(0)),
    );
    s = take(&model, &s, "broker 0's session expires", |a| {
        matches!(a, ActorModelAction::Timeout(id, ModelTimer::Cluster(ClusterTimer::BrokerSession(0)))
            if *id == Id::from(controller_id))
    });
    let c = controller(&s);
    assert_eq!(c.partition(0).leader, Some(1));
    assert_eq!(c.partition(0).leader_epoch, 1);
    // Broker 1 led partition 1 already; broker 0 was not a replica of it.
    assert_eq!(c.partition(1).leader, Some(1));
    assert!(c.quorum.image().broker(0).unwrap().fenced);
    s = take(
        &model,
        &s,
        "broker 1 learns it leads",
        delivers(
            controller_id,
            1,
            |m| matches!(m, ClusterMsg::Partition(0, Msg::LeaderAndIsr(state)) if state.leader_epoch == 1),
        ),
    );
    assert!(matches!(
        broker_state(&s, 1).replicas[0].as_ref().unwrap().role(),
        Role::Leader(l) if l.leader_epoch == 1
    ));
    assert!(holds(&model, &s, "leader_change_keeps_committed"));

    // Broker 0 restarts, registers again (a new broker epoch), learns it follows broker 1,
    // and its heartbeat unfences it.
    s = take(
        &model,
        &s,
        "broker 0 restarts",
        |a| matches!(a, ActorModelAction::Recover(id) if *id == Id::from(0)),
    );
    assert_eq!(broker_state(&s, 0).broker_epoch, None);
    s = take(
        &model,
        &s,
        "broker 0 registers",
        delivers(0, controller_id, |m| matches!(m, ClusterMsg::Register)),
    );
    s = take(
        &model,
        &s,
        "broker 0 learns its epoch",
        delivers(controller_id, 0, |m| {
            matches!(m, ClusterMsg::Registered { .. })
        }),
    );
    let epoch = broker_state(&s, 0).broker_epoch.expect("registered");
    assert!(epoch > bound.setup().broker_epochs[0]);
    assert!(matches!(
        broker_state(&s, 0).replicas[0].as_ref().unwrap().role(),
        Role::Follower {
            leader: Some(1),
            leader_epoch: 1
        }
    ));
    assert!(heartbeat_unfences(&s, bound.brokers, 0));
    s = take(
        &model,
        &s,
        "broker 0 heartbeats",
        |a| matches!(a, ActorModelAction::Timeout(id, ModelTimer::Heartbeat) if *id == Id::from(0)),
    );
    s = take(
        &model,
        &s,
        "the heartbeat unfences it",
        delivers(0, controller_id, |m| {
            matches!(m, ClusterMsg::Heartbeat { .. })
        }),
    );
    assert!(!controller(&s).quorum.image().broker(0).unwrap().fenced);
    assert!(holds(&model, &s, "broker_fenced_and_unfenced"));
    assert!(
        !heartbeat_unfences(&s, bound.brokers, 0),
        "nothing more to tell"
    );
}

#[test]
fn early_metadata_lets_a_restarted_broker_lead_before_it_registers() {
    let bound = Bound {
        brokers: 2,
        records: 0,
        drops: 0,
        early_metadata: true,
        ..Bound::default()
    };
    let leads_unregistered = |s: &State| {
        (0..bound.brokers).any(|b| {
            let broker = broker_state(s, b);
            !s.crashed[b]
                && broker.broker_epoch.is_none()
                && broker
                    .hosted()
                    .any(|(_, r)| matches!(r.role(), Role::Leader(_)))
        })
    };
    // Surety's broker: a restarted leader may take its old epoch from the log it reads before
    // it registers; Kafka's (the model's default) never acts before its registration.
    assert!(
        reachable(&bound.into_model())
            .iter()
            .any(leads_unregistered)
    );
    let kafka = Bound {
        early_metadata: false,
        ..bound
    };
    assert!(
        !reachable(&kafka.into_model())
            .iter()
            .any(leads_unregistered)
    );
}

// --- The model's shortcuts hide nothing -------------------------------------------------------

/// Small bounds that between them restart, expire, fence a zombie, break a connection, retry
/// and read the metadata log before registering.
fn small_bounds() -> Vec<Bound> {
    let two = Bound {
        brokers: 2,
        drops: 0,
        ..Bound::default()
    };
    vec![
        Bound { records: 0, ..two },
        Bound {
            partitions: 1,
            ..two
        },
        Bound {
            crashes: 0,
            drops: 1,
            retries: 1,
            ..two
        },
        Bound {
            crashes: 0,
            zombies: true,
            records: 0,
            ..two
        },
        Bound {
            early_metadata: true,
            records: 0,
            ..two
        },
    ]
}

#[test]
fn forgetting_stale_messages_changes_no_state_an_actor_can_reach() {
    assert_forgetting_stale_hides_nothing(small_bounds(), Bound::into_model);
}

#[test]
fn heartbeats_that_would_not_unfence_change_no_state_an_actor_can_reach() {
    for bound in small_bounds() {
        let useful = actor_states(reachable(&bound.into_model()));
        let mut every = bound.into_model();
        every.system.useful_heartbeats_only = false;
        let every = actor_states(reachable(&every));
        assert_eq!(useful.len(), every.len(), "{bound:?}");
        assert!(useful == every, "{bound:?}");
    }
}

#[test]
fn what_a_broker_saved_is_what_it_holds() {
    for bound in small_bounds() {
        for state in reachable(&bound.into_model()) {
            for b in 0..bound.brokers {
                let stored = state.actor_storages[b].as_ref().expect("brokers save");
                assert_eq!(*stored, saved(broker_state(&state, b)), "{bound:?}");
            }
        }
    }
}
