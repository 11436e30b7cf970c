//! Replication's safety properties as functions of one partition: its replicas, the
//! controller's decision, and the records clients had acknowledged. The model checker
//! evaluates them on every state it explores; `model replay` on every state a real cluster
//! went through. One definition, two histories.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use surety_core::log::MemoryLog;
use surety_core::record::{Record, RecordBatch};
use surety_core::replication::{BrokerId, PartitionState, Replica, Role};

/// A record acknowledged with `acks=all` is at its offset in the log of its partition's
/// current leader.
pub const ACKED_RECORDS_NEVER_LOST: &str = "acked_records_never_lost";
/// Every member of the controller's ISR holds what any broker that believes it leads holds
/// below that broker's HW (`StrongIsr`), and any two replicas agree below both their HWs
/// (`LogMatchingProperty`).
pub const COMMITTED_PREFIX_AGREES: &str = "committed_prefix_agrees";
/// No broker that believes it leads has a HW above the log end offset of a member of the ISR it
/// believes in.
pub const HW_NEVER_EXCEEDS_ISR_LEO: &str = "hw_never_exceeds_isr_leo";
/// The leader is a member of the ISR, in the controller's state and in its own.
pub const LEADER_IN_ISR: &str = "leader_in_isr";
/// No two live brokers lead the same epoch.
pub const ONE_LEADER_PER_EPOCH: &str = "one_leader_per_epoch";

/// One safety property of a partition.
pub struct Safety<K: Clone> {
    /// Its name, as the specs give it.
    pub name: &'static str,
    /// Whether it reads the replicas' records (building them costs more than the rest).
    pub reads_records: bool,
    /// Whether the partition satisfies it.
    pub holds: fn(&PartitionView<'_, K>) -> bool,
}

impl<K: Clone> Safety<K> {
    const fn new(
        name: &'static str,
        reads_records: bool,
        holds: fn(&PartitionView<'_, K>) -> bool,
    ) -> Self {
        Safety {
            name,
            reads_records,
            holds,
        }
    }
}

/// How many safety properties a partition has.
pub const SAFETY_PROPERTIES: usize = 5;

/// Every safety property of a partition, in the order reports list them.
pub fn safety<K: Eq + Clone>() -> [Safety<K>; SAFETY_PROPERTIES] {
    [
        Safety::new(ACKED_RECORDS_NEVER_LOST, true, |v| {
            v.acked_records_never_lost()
        }),
        Safety::new(COMMITTED_PREFIX_AGREES, true, |v| {
            v.committed_prefix_agrees()
        }),
        Safety::new(HW_NEVER_EXCEEDS_ISR_LEO, false, |v| {
            v.hw_never_exceeds_isr_leo()
        }),
        Safety::new(LEADER_IN_ISR, false, |v| v.leader_in_isr()),
        Safety::new(ONE_LEADER_PER_EPOCH, false, |v| v.one_leader_per_epoch()),
    ]
}

/// One replica as the properties see it.
pub struct ReplicaView<'a, K: Clone> {
    /// Its broker.
    pub id: BrokerId,
    /// The core replica.
    pub replica: &'a Replica<MemoryLog>,
    /// Whether its broker is down (crashed and not yet restarted).
    pub down: bool,
    /// offset → the record's identity, over its whole log (borrowed when the caller keeps
    /// it up to date itself, as the replay does).
    pub records: Cow<'a, BTreeMap<i64, K>>,
}

/// A partition as the properties see it.
pub struct PartitionView<'a, K: Clone> {
    /// Every replica.
    pub replicas: Vec<ReplicaView<'a, K>>,
    /// The controller's current decision.
    pub decided: &'a PartitionState,
    /// Records acknowledged with `acks=all`: (identity, offset).
    pub acked: Vec<(K, i64)>,
}

/// offset → `key(record)` for every record of `log` for which `key` gives one.
pub fn records_of<K>(log: &MemoryLog, key: impl Fn(&Record) -> Option<K>) -> BTreeMap<i64, K> {
    let mut out = BTreeMap::new();
    for bytes in log.batches() {
        let Ok(batch) = RecordBatch::parse(bytes.clone()) else {
            continue;
        };
        let Ok(records) = batch.records() else {
            continue;
        };
        for record in records.flatten() {
            if let Some(k) = key(&record) {
                out.insert(record.offset, k);
            }
        }
    }
    out
}

impl<K: Eq + Clone> PartitionView<'_, K> {
    /// The replica that leads the controller's current epoch and knows it, if it is up.
    pub fn current_leader(&self) -> Option<&ReplicaView<'_, K>> {
        let id = self.decided.leader?;
        let r = self.replicas.iter().find(|r| r.id == id)?;
        let leads = matches!(r.replica.role(),
            Role::Leader(l) if l.leader_epoch == self.decided.leader_epoch);
        (leads && !r.down).then_some(r)
    }

    /// `acked_records_never_lost`: every acknowledged record is at its offset in the current
    /// leader's log.
    pub fn acked_records_never_lost(&self) -> bool {
        let Some(leader) = self.current_leader() else {
            return true;
        };
        self.acked
            .iter()
            .all(|(k, offset)| leader.records.get(offset) == Some(k))
    }

    /// Whether a leader of a later epoch than the first holds every record acknowledged so far
    /// (and there is one): a leadership moved without losing what was committed.
    pub fn leader_change_keeps_committed(&self) -> bool {
        self.current_leader().is_some_and(|leader| {
            self.decided.leader_epoch > 0
                && !self.acked.is_empty()
                && self
                    .acked
                    .iter()
                    .all(|(k, offset)| leader.records.get(offset) == Some(k))
        })
    }

    /// Replicas that are up and believe they lead some epoch (zombies included).
    fn presumed_leaders(&self) -> impl Iterator<Item = (&ReplicaView<'_, K>, BTreeSet<BrokerId>)> {
        self.replicas
            .iter()
            .filter(|r| !r.down)
            .filter_map(|r| match r.replica.role() {
                Role::Leader(l) => Some((r, l.isr.clone())),
                _ => None,
            })
    }

    /// `committed_prefix_agrees`: every member of the controller's ISR holds what any presumed
    /// leader has below its HW (StrongIsr), and any two replicas agree below both their HWs
    /// (LogMatchingProperty).
    pub fn committed_prefix_agrees(&self) -> bool {
        let isr = &self.decided.isr;
        let strong_isr = self.presumed_leaders().all(|(leader, _)| {
            let hw = leader.replica.high_watermark();
            self.replicas
                .iter()
                .filter(|r| isr.contains(&r.id))
                .all(|r| (0..hw).all(|o| r.records.get(&o) == leader.records.get(&o)))
        });
        let log_matching = self.replicas.iter().enumerate().all(|(i, a)| {
            let hw_a = a.replica.high_watermark();
            self.replicas[i + 1..].iter().all(|b| {
                let below = hw_a.min(b.replica.high_watermark());
                (0..below).all(|o| a.records.get(&o) == b.records.get(&o))
            })
        });
        strong_isr && log_matching
    }

    /// `hw_never_exceeds_isr_leo`: a presumed leader's HW is never above the log end of a
    /// member of the ISR it believes in.
    pub fn hw_never_exceeds_isr_leo(&self) -> bool {
        self.presumed_leaders().all(|(leader, isr)| {
            let hw = leader.replica.high_watermark();
            self.replicas
                .iter()
                .filter(|r| isr.contains(&r.id))
                .all(|r| hw <= surety_core::log::PartitionLog::log_end_offset(r.replica.log()))
        })
    }

    /// `leader_in_isr`: the leader is in the ISR, in the controller's state and in its own.
    pub fn leader_in_isr(&self) -> bool {
        let decided = self.decided;
        let controller_ok = decided.leader.is_none_or(|l| decided.isr.contains(&l));
        controller_ok
            && self.replicas.iter().all(|r| match r.replica.role() {
                Role::Leader(l) => r.down || l.isr.contains(&r.id),
                _ => true,
            })
    }

    /// `one_leader_per_epoch`: no two live replicas lead the same epoch.
    pub fn one_leader_per_epoch(&self) -> bool {
        let mut seen = BTreeSet::new();
        self.replicas
            .iter()
            .filter(|r| !r.down)
            .filter_map(|r| match r.replica.role() {
                Role::Leader(l) => Some(l.leader_epoch),
                _ => None,
            })
            .all(|epoch| seen.insert(epoch))
    }
}
