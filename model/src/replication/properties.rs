//! The properties checked, named as in `specs/replication.md`, and the bound on the search.

use std::collections::BTreeMap;
use std::fmt::Write;

use stateright::Property;
use surety_core::replication::Role;

use super::actor::{BrokerState, ControllerState, ModelState};
use super::client::{ClientState, record_index};
use super::invariants::{PartitionView, ReplicaView, records_of};
use super::system::{State, restarts};
use super::{Bound, ReplicationModel};

/// A record acknowledged with `acks=all` is at its offset in the log of every later leader.
pub const ACKED_RECORDS_NEVER_LOST: &str = "acked_records_never_lost";
/// Every member of the controller's ISR holds what any broker that believes it leads holds
/// below that broker's HW (`StrongIsr`), and any two replicas agree below both their HWs
/// (`LogMatchingProperty`).
pub const COMMITTED_PREFIX_AGREES: &str = "committed_prefix_agrees";
/// No broker that believes it leads has a HW above the log end offset of a member of the ISR it
/// believes in.
pub const HW_NEVER_EXCEEDS_ISR_LEO: &str = "hw_never_exceeds_isr_leo";
/// Within one epoch, a leader's HW never goes down.
pub const LEADER_HW_MONOTONIC: &str = "leader_hw_monotonic";
/// The leader is a member of the ISR, in the controller's state and in its own.
pub const LEADER_IN_ISR: &str = "leader_in_isr";
/// Every election chose an ISR member (unless unclean election is on).
pub const LEADER_ELECTED_FROM_ISR: &str = "leader_elected_from_isr";
/// No two live brokers lead the same epoch.
pub const ONE_LEADER_PER_EPOCH: &str = "one_leader_per_epoch";
/// Sometimes: a record is acknowledged with `acks=all`.
pub const RECORD_COMMITTED: &str = "record_committed";
/// Sometimes: a later leader holds the acknowledged records.
pub const LEADER_CHANGE_KEEPS_COMMITTED: &str = "leader_change_keeps_committed";
/// Sometimes: the ISR has shrunk and grown again.
pub const ISR_SHRINKS_AND_EXPANDS: &str = "isr_shrinks_and_expands";

/// Every property, in the order reports list them.
pub const PROPERTIES: [&str; 10] = [
    ACKED_RECORDS_NEVER_LOST,
    COMMITTED_PREFIX_AGREES,
    HW_NEVER_EXCEEDS_ISR_LEO,
    LEADER_HW_MONOTONIC,
    LEADER_IN_ISR,
    LEADER_ELECTED_FROM_ISR,
    ONE_LEADER_PER_EPOCH,
    RECORD_COMMITTED,
    LEADER_CHANGE_KEEPS_COMMITTED,
    ISR_SHRINKS_AND_EXPANDS,
];

pub(super) fn properties() -> Vec<Property<ReplicationModel>> {
    vec![
        Property::always(ACKED_RECORDS_NEVER_LOST, |_, s| acked_records_never_lost(s)),
        Property::always(COMMITTED_PREFIX_AGREES, |_, s| committed_prefix_agrees(s)),
        Property::always(HW_NEVER_EXCEEDS_ISR_LEO, |_, s| hw_never_exceeds_isr_leo(s)),
        Property::always(LEADER_HW_MONOTONIC, |_, s| {
            brokers(s).all(|(_, b, _)| !b.hw_regressed)
        }),
        Property::always(LEADER_IN_ISR, |_, s| leader_in_isr(s)),
        Property::always(LEADER_ELECTED_FROM_ISR, |_, s| {
            !controller(s).elected_outside_isr
        }),
        Property::always(ONE_LEADER_PER_EPOCH, |_, s| one_leader_per_epoch(s)),
        Property::sometimes(RECORD_COMMITTED, |_, s| !client(s).acked.is_empty()),
        Property::sometimes(LEADER_CHANGE_KEEPS_COMMITTED, |_, s| {
            let acked = &client(s).acked;
            current_leader(s).is_some_and(|(_, leader)| {
                leader_epoch(leader) > 0
                    && !acked.is_empty()
                    && acked
                        .iter()
                        .all(|(&i, &o)| records(leader).get(&o) == Some(&i))
            })
        }),
        Property::sometimes(ISR_SHRINKS_AND_EXPANDS, |m, s| {
            isr_shrank_and_expanded(m, s)
        }),
    ]
}

/// Keeps the search inside the bound: leader changes, ISR changes and restarts. (Actors stop
/// spending a budget once they can see it spent; this catches what they cannot see.)
pub(super) fn within_boundary(bound: &Bound, s: &State) -> bool {
    let partition = controller(s).controller.state();
    partition.leader_epoch <= bound.leader_changes
        && partition.partition_epoch - partition.leader_epoch <= bound.isr_changes
        && restarts(s, bound.brokers) <= bound.crashes
}

/// The ISR is whole again after an accepted ISR change. Every accepted proposal changes the
/// membership and elections only remove members, so a whole ISR after one means it shrank and
/// grew back.
fn isr_shrank_and_expanded(m: &ReplicationModel, s: &State) -> bool {
    let partition = controller(s).controller.state();
    partition.isr.len() == m.bound.brokers && partition.partition_epoch > partition.leader_epoch
}

fn brokers(s: &State) -> impl Iterator<Item = (u32, &BrokerState, bool)> {
    s.actor_states
        .iter()
        .zip(&s.crashed)
        .enumerate()
        .filter_map(|(i, (state, &crashed))| match &**state {
            ModelState::Broker(b) => Some((i as u32, b, crashed)),
            _ => None,
        })
}

fn controller(s: &State) -> &ControllerState {
    s.actor_states
        .iter()
        .find_map(|a| match &**a {
            ModelState::Controller(c) => Some(c),
            _ => None,
        })
        .expect("the model has a controller")
}

fn client(s: &State) -> &ClientState {
    s.actor_states
        .iter()
        .find_map(|a| match &**a {
            ModelState::Client(c) => Some(c),
            _ => None,
        })
        .expect("the model has a client")
}

fn leader_epoch(b: &BrokerState) -> i32 {
    b.replica.leader_epoch().unwrap_or(-1)
}

/// The broker that leads the controller's current epoch and knows it, if any.
fn current_leader(s: &State) -> Option<(u32, &BrokerState)> {
    let id = view(s).current_leader()?.id;
    brokers(s)
        .find(|(i, _, _)| *i == id)
        .map(|(i, b, _)| (i, b))
}

/// offset → record index, over a broker's whole log.
fn records(b: &BrokerState) -> BTreeMap<i64, u32> {
    records_of(b.replica.log(), |r| {
        r.value.as_deref().and_then(record_index)
    })
}

/// The state as the shared properties see it: records are the client's indexes.
fn view(s: &State) -> PartitionView<'_, u32> {
    PartitionView {
        replicas: brokers(s)
            .map(|(id, b, crashed)| ReplicaView {
                id,
                replica: &b.replica,
                down: crashed,
                records: std::borrow::Cow::Owned(records(b)),
            })
            .collect(),
        decided: controller(s).controller.state(),
        acked: client(s).acked.iter().map(|(&i, &o)| (i, o)).collect(),
    }
}

fn acked_records_never_lost(s: &State) -> bool {
    view(s).acked_records_never_lost()
}

fn committed_prefix_agrees(s: &State) -> bool {
    view(s).committed_prefix_agrees()
}

fn hw_never_exceeds_isr_leo(s: &State) -> bool {
    view(s).hw_never_exceeds_isr_leo()
}

fn leader_in_isr(s: &State) -> bool {
    view(s).leader_in_isr()
}

fn one_leader_per_epoch(s: &State) -> bool {
    view(s).one_leader_per_epoch()
}

/// A readable summary of a state: each broker's role, log and HW, the controller's decision,
/// and what the client has had acknowledged.
pub fn describe_state(s: &State) -> String {
    let mut out = String::new();
    for (id, b, crashed) in brokers(s) {
        let role = match b.replica.role() {
            _ if crashed => "down".to_string(),
            Role::Unattached => "restarted, waiting".to_string(),
            Role::Leader(l) => format!(
                "leader of epoch {} (isr {:?}, pending {:?})",
                l.leader_epoch, l.isr, l.pending_isr
            ),
            Role::Follower {
                leader,
                leader_epoch,
            } => format!("follower of {leader:?} in epoch {leader_epoch}"),
        };
        let log: Vec<String> = records(b)
            .iter()
            .map(|(o, i)| format!("{o}:r{i}"))
            .collect();
        let _ = writeln!(
            out,
            "  broker {id}: {role}; log [{}], hw {}, epochs {:?}",
            log.join(" "),
            b.replica.high_watermark(),
            b.replica.epochs().entries()
        );
    }
    let c = controller(s);
    let _ = writeln!(
        out,
        "  controller: {:?}, fenced {:?}",
        c.controller.state(),
        c.controller.fenced()
    );
    let _ = writeln!(
        out,
        "  client: acked (record → offset) {:?}",
        client(s).acked
    );
    out
}
