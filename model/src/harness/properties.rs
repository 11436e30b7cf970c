//! Replication's properties over every partition a model's state holds, through the same
//! [`PartitionView`] that `model replay` checks a real cluster's history with. The properties
//! the models share are defined here, once, from what each model lets the harness observe
//! ([`Observe`]); each model adds its own ([`with_shared`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use stateright::{Expectation, Property};
use surety_core::log::MemoryLog;
use surety_core::replication::{BrokerId, PartitionState, Replica};

use super::client::record_index;
use super::system::{State, System, TcpModel, client};
use crate::replication::invariants::{
    PartitionView, ReplicaView, SAFETY_PROPERTIES, records_of, safety,
};

/// Every election chose a member of the partition's ISR (unless unclean election is on).
pub const LEADER_ELECTED_FROM_ISR: &str = "leader_elected_from_isr";
/// Sometimes: a record is acknowledged with `acks=all`.
pub const RECORD_COMMITTED: &str = "record_committed";
/// Sometimes: a partition's leader of a later epoch holds every record acknowledged in it.
pub const LEADER_CHANGE_KEEPS_COMMITTED: &str = "leader_change_keeps_committed";
/// Sometimes: a partition's ISR is whole again after it lost a member.
pub const ISR_SHRINKS_AND_EXPANDS: &str = "isr_shrinks_and_expands";

/// What a model lets the shared properties see of its states.
pub trait Observe: System {
    /// Partitions of the model's topic.
    fn partitions(bound: &Self::Bound) -> u8;
    /// Partition `p`'s replicas: each one's broker, the replica, and whether its broker is
    /// down.
    fn replicas(state: &State<Self>, p: u8) -> Vec<(BrokerId, &Replica<MemoryLog>, bool)>;
    /// Partition `p`'s state as its controller decided it.
    fn decided(state: &State<Self>, p: u8) -> &PartitionState;
    /// Ghost: some election chose a replica outside its partition's ISR.
    fn elected_outside_isr(state: &State<Self>) -> bool;
    /// Whether some partition's ISR is whole again after it lost a member.
    fn isr_shrank_and_expanded(bound: &Self::Bound, state: &State<Self>) -> bool;
}

/// offset → record index, over a replica's whole log.
pub fn records(replica: &Replica<MemoryLog>) -> BTreeMap<i64, u32> {
    records_of(replica.log(), |r| r.value.as_deref().and_then(record_index))
}

/// Partition `p` as the shared properties see it: records are the client's indexes, read only
/// when a property needs them.
pub fn view<S: Observe>(state: &State<S>, p: u8, with_records: bool) -> PartitionView<'_, u32> {
    let replicas = S::replicas(state, p)
        .into_iter()
        .map(|(id, replica, down)| ReplicaView {
            id,
            replica,
            down,
            records: Cow::Owned(if with_records {
                records(replica)
            } else {
                BTreeMap::new()
            }),
        })
        .collect();
    let client = client::<S>(state);
    PartitionView {
        replicas,
        decided: S::decided(state, p),
        acked: client
            .acked
            .iter()
            .filter(|&(&i, _)| client.partition_of(i) == p)
            .map(|(&i, &o)| (i, o))
            .collect(),
    }
}

/// What a property of a harness model checks of a state.
type Condition<S> = fn(&TcpModel<S>, &State<S>) -> bool;

/// Safety property `I` of [`safety`], on every partition.
fn on_every_partition<S: Observe, const I: usize>(m: &TcpModel<S>, s: &State<S>) -> bool {
    let property = &safety::<u32>()[I];
    (0..S::partitions(&m.bound)).all(|p| (property.holds)(&view::<S>(s, p, property.reads_records)))
}

/// Every property the models share, then the model's `own`: safety first, reachability after
/// (the order reports list them in).
pub fn with_shared<S: Observe>(own: Vec<Property<TcpModel<S>>>) -> Vec<Property<TcpModel<S>>> {
    let partition_safety: [Condition<S>; SAFETY_PROPERTIES] = [
        on_every_partition::<S, 0>,
        on_every_partition::<S, 1>,
        on_every_partition::<S, 2>,
        on_every_partition::<S, 3>,
        on_every_partition::<S, 4>,
    ];
    let mut all: Vec<Property<TcpModel<S>>> = safety::<u32>()
        .into_iter()
        .zip(partition_safety)
        .map(|(property, condition)| Property::always(property.name, condition))
        .collect();
    all.push(Property::always(LEADER_ELECTED_FROM_ISR, |_, s| {
        !S::elected_outside_isr(s)
    }));
    let (own_safety, own_goals): (Vec<_>, Vec<_>) = own
        .into_iter()
        .partition(|p| p.expectation == Expectation::Always);
    all.extend(own_safety);
    all.push(Property::sometimes(RECORD_COMMITTED, |_, s| {
        !client::<S>(s).acked.is_empty()
    }));
    all.push(Property::sometimes(
        LEADER_CHANGE_KEEPS_COMMITTED,
        |m, s| {
            !client::<S>(s).acked.is_empty()
                && (0..S::partitions(&m.bound))
                    .any(|p| view::<S>(s, p, true).leader_change_keeps_committed())
        },
    ));
    all.push(Property::sometimes(ISR_SHRINKS_AND_EXPANDS, |m, s| {
        S::isr_shrank_and_expanded(&m.bound, s)
    }));
    all.extend(own_goals);
    all
}
