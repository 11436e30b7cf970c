//! The properties checked, named as in `specs/replication.md`, and the bound on the search.

use std::collections::BTreeMap;
use std::fmt::Write;

use stateright::Property;
use surety_core::log::PartitionLog;
use surety_core::record::RecordBatch;
use surety_core::replication::{LeaderState, Role};

use super::actor::{BrokerState, ControllerState, ModelState};
use super::client::{ClientState, record_index};
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
    let partition = controller(s).controller.state();
    let id = partition.leader?;
    let (_, b, crashed) = brokers(s).find(|(i, _, _)| *i == id)?;
    let leads =
        matches!(b.replica.role(), Role::Leader(l) if l.leader_epoch == partition.leader_epoch);
    (leads && !crashed).then_some((id, b))
}

/// offset → record index, over a broker's whole log.
fn records(b: &BrokerState) -> BTreeMap<i64, u32> {
    let mut out = BTreeMap::new();
    for bytes in b.replica.log().batches() {
        let Ok(batch) = RecordBatch::parse(bytes.clone()) else {
            continue;
        };
        let Ok(records) = batch.records() else {
            continue;
        };
        for record in records.flatten() {
            if let Some(index) = record.value.as_deref().and_then(record_index) {
                out.insert(record.offset, index);
            }
        }
    }
    out
}

fn acked_records_never_lost(s: &State) -> bool {
    let Some((_, leader)) = current_leader(s) else {
        return true;
    };
    let log = records(leader);
    client(s)
        .acked
        .iter()
        .all(|(index, offset)| log.get(offset) == Some(index))
}

/// Brokers that are up and believe they lead some epoch (zombies included).
fn presumed_leaders(s: &State) -> impl Iterator<Item = (&BrokerState, &LeaderState)> {
    brokers(s)
        .filter(|(_, _, crashed)| !crashed)
        .filter_map(|(_, b, _)| match b.replica.role() {
            Role::Leader(l) => Some((b, l)),
            _ => None,
        })
}

/// StrongIsr (every member of the controller's ISR holds what any presumed leader has below its
/// HW) and LogMatchingProperty (any two replicas agree below the smaller of their HWs).
fn committed_prefix_agrees(s: &State) -> bool {
    let logs: Vec<(u32, BTreeMap<i64, u32>, i64)> = brokers(s)
        .map(|(id, b, _)| (id, records(b), b.replica.high_watermark()))
        .collect();
    let isr = &controller(s).controller.state().isr;
    let strong_isr = presumed_leaders(s).all(|(leader, _)| {
        let log = records(leader);
        let hw = leader.replica.high_watermark();
        logs.iter()
            .filter(|(id, _, _)| isr.contains(id))
            .all(|(_, theirs, _)| (0..hw).all(|o| theirs.get(&o) == log.get(&o)))
    });
    let log_matching = logs.iter().enumerate().all(|(i, (_, a, hw_a))| {
        logs[i + 1..]
            .iter()
            .all(|(_, b, hw_b)| (0..*hw_a.min(hw_b)).all(|o| a.get(&o) == b.get(&o)))
    });
    strong_isr && log_matching
}

/// A presumed leader's HW is never above the LEO of a member of the ISR it believes in.
fn hw_never_exceeds_isr_leo(s: &State) -> bool {
    presumed_leaders(s).all(|(leader, state)| {
        let hw = leader.replica.high_watermark();
        brokers(s)
            .filter(|(id, _, _)| state.isr.contains(id))
            .all(|(_, b, _)| hw <= b.replica.log().log_end_offset())
    })
}

fn leader_in_isr(s: &State) -> bool {
    let partition = controller(s).controller.state();
    let controller_ok = partition.leader.is_none_or(|l| partition.isr.contains(&l));
    controller_ok
        && brokers(s).all(|(id, b, crashed)| match b.replica.role() {
            Role::Leader(l) => crashed || l.isr.contains(&id),
            _ => true,
        })
}

fn one_leader_per_epoch(s: &State) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    brokers(s)
        .filter(|(_, _, crashed)| !crashed)
        .filter_map(|(_, b, _)| match b.replica.role() {
            Role::Leader(l) => Some(l.leader_epoch),
            _ => None,
        })
        .all(|epoch| seen.insert(epoch))
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
