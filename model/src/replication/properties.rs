//! The properties checked, named as in `specs/replication.md`, and the bound on the search.
//! All but one are shared with the cluster model (`harness::properties`); the replication
//! model's own is that a leader's HW never goes back within its epoch, for which its brokers
//! keep a ghost.

use std::fmt::Write;

use stateright::Property;

use super::system::{Replication, State};
use super::{Bound, ReplicationModel};
use crate::harness::properties::with_shared;
use crate::harness::system::{brokers, controller};
use crate::harness::trace::{describe_client, describe_log, describe_role};

/// Within one epoch, a leader's HW never goes down.
pub const LEADER_HW_MONOTONIC: &str = "leader_hw_monotonic";

/// Every property: replication's, shared with the cluster model, and the model's own.
pub(super) fn properties() -> Vec<Property<ReplicationModel>> {
    with_shared(vec![Property::always(LEADER_HW_MONOTONIC, |_, s| {
        brokers::<Replication>(s).all(|(_, b, _)| !b.hw_regressed)
    })])
}

/// Keeps the search inside the bound's leader and ISR changes. (Actors stop spending a budget
/// once they can see it spent; this catches what they cannot see.)
pub(super) fn within_boundary(bound: &Bound, s: &State) -> bool {
    let partition = controller::<Replication>(s).controller.state();
    partition.leader_epoch <= bound.leader_changes
        && partition.partition_epoch - partition.leader_epoch <= bound.isr_changes
}

/// The ISR is whole again after an accepted ISR change. Every accepted proposal changes the
/// membership and elections only remove members, so a whole ISR after one means it shrank and
/// grew back.
pub(super) fn isr_shrank_and_expanded(bound: &Bound, s: &State) -> bool {
    let partition = controller::<Replication>(s).controller.state();
    partition.isr.len() == bound.brokers && partition.partition_epoch > partition.leader_epoch
}

/// A readable summary of a state: each broker's role, log and HW, the controller's decision,
/// and what the client has had acknowledged.
pub fn describe_state(s: &State) -> String {
    let mut out = String::new();
    for (id, b, crashed) in brokers::<Replication>(s) {
        let role = match crashed {
            true => "down".to_string(),
            false => describe_role(b.replica.role()),
        };
        let _ = writeln!(
            out,
            "  broker {id}: {role}; {}, epochs {:?}",
            describe_log(&b.replica),
            b.replica.epochs().entries()
        );
    }
    let c = controller::<Replication>(s);
    let _ = writeln!(
        out,
        "  controller: {:?}, fenced {:?}",
        c.controller.state(),
        c.controller.fenced()
    );
    out.push_str(&describe_client::<Replication>(s));
    out
}
