//! The consumer's partition assignors, as Kafka's Java client computes them, number for number:
//! the group leader runs one over every member's subscription and sends the result in its
//! SyncGroup. Members are ordered by their member id, as Kafka orders them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::message::TopicPartition;

/// A member's subscription: the topics it wants.
pub type Subscriptions<M> = BTreeMap<M, BTreeSet<Arc<str>>>;

/// Each member's partitions.
pub type Assignment<M> = BTreeMap<M, Vec<TopicPartition>>;

/// `range` (Kafka's `RangeAssignor`, the default before 3.0 and still first in the list): per
/// topic, its partitions in order are cut into as many contiguous ranges as the topic has
/// subscribers, the first `partitions % subscribers` ranges one longer.
pub fn range<M: Ord + Clone>(
    subscriptions: &Subscriptions<M>,
    partitions_per_topic: &BTreeMap<Arc<str>, i32>,
) -> Assignment<M> {
    let mut assignment = nothing_yet(subscriptions);
    for (topic, &count) in partitions_per_topic {
        let members: Vec<&M> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let count = count.max(0) as usize;
        let per = count / members.len();
        let extra = count % members.len();
        for (i, member) in members.into_iter().enumerate() {
            let start = i * per + i.min(extra);
            let len = per + usize::from(i < extra);
            let mine = assignment
                .get_mut(member)
                .expect("every member has an entry");
            mine.extend((start..start + len).map(|p| TopicPartition {
                topic: topic.clone(),
                partition: p as i32,
            }));
        }
    }
    assignment
}

/// `roundrobin` (Kafka's `RoundRobinAssignor`): every subscribed partition, ordered by topic
/// then partition, dealt in turn to the members subscribed to its topic.
pub fn round_robin<M: Ord + Clone>(
    subscriptions: &Subscriptions<M>,
    partitions_per_topic: &BTreeMap<Arc<str>, i32>,
) -> Assignment<M> {
    let mut assignment = nothing_yet(subscriptions);
    let members: Vec<&M> = subscriptions.keys().collect();
    if members.is_empty() {
        return assignment;
    }
    let mut next = 0;
    for (topic, &count) in partitions_per_topic {
        for partition in 0..count.max(0) {
            // The next member in the circle that wants this topic.
            let Some(step) = (0..members.len())
                .find(|s| subscriptions[members[(next + s) % members.len()]].contains(topic))
            else {
                break;
            };
            let member = members[(next + step) % members.len()];
            assignment
                .get_mut(member)
                .expect("every member has an entry")
                .push(TopicPartition {
                    topic: topic.clone(),
                    partition,
                });
            next = (next + step + 1) % members.len();
        }
    }
    assignment
}

/// What a member told the leader for a sticky assignment: the topics it wants, the partitions
/// it owns, and the generation it owns them in (-1 when unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// The topics it subscribes to.
    pub topics: BTreeSet<Arc<str>>,
    /// What it owns now (a cooperative member's; an eager one owns nothing when it joins).
    pub owned: Vec<TopicPartition>,
    /// The generation it owns them in.
    pub generation: i32,
}

/// `cooperative-sticky` (Kafka's `CooperativeStickyAssignor`, KIP-429): a balanced assignment
/// that moves as few partitions as it can, followed by the cooperative rule that a partition
/// changing hands is first given to nobody. Its owner, seeing it gone from its assignment,
/// revokes it and joins again, and only the next rebalance gives it to its new owner: no
/// partition is ever held by two members at once, while every other partition is processed
/// throughout the rebalance.
///
/// The plan differs from Java's in which partitions it moves when several would do (Kafka does
/// not specify that); it keeps what Kafka promises: every subscribed partition has one owner,
/// the counts of members with the same subscription differ by at most one, a member keeps what
/// it owned unless balance needs it elsewhere, and an owned partition never passes straight to
/// another member.
pub fn cooperative_sticky<M: Ord + Clone>(
    members: &BTreeMap<M, Owner>,
    partitions_per_topic: &BTreeMap<Arc<str>, i32>,
) -> Assignment<M> {
    let mut plan = sticky(members, partitions_per_topic);
    // Every partition some member claims, by who claims it (any generation: an older claim
    // may still be processing).
    let mut claimed: BTreeMap<&TopicPartition, Vec<&M>> = BTreeMap::new();
    for (member, owner) in members {
        for tp in &owner.owned {
            claimed.entry(tp).or_default().push(member);
        }
    }
    for (member, partitions) in &mut plan {
        partitions.retain(|tp| {
            claimed
                .get(tp)
                .is_none_or(|owners| owners.iter().all(|&o| o == member))
        });
    }
    plan
}

/// The balanced assignment that keeps what members own: each member keeps the partitions it
/// owns (of a topic it still wants; a partition two members claim goes to the newer
/// generation, or to neither), the rest go one at a time to the least-loaded member that wants
/// them, and then partitions move from the most-loaded to the least-loaded until no move makes
/// the two closer. Each move lowers the sum of squared counts, so this ends.
fn sticky<M: Ord + Clone>(
    members: &BTreeMap<M, Owner>,
    partitions_per_topic: &BTreeMap<Arc<str>, i32>,
) -> Assignment<M> {
    let exists = |tp: &TopicPartition| {
        partitions_per_topic
            .get(&tp.topic)
            .is_some_and(|&count| (0..count).contains(&tp.partition))
    };
    // The claim that stands for each partition: the newest generation's, if only one member
    // makes it.
    let mut holder: BTreeMap<TopicPartition, (i32, Option<&M>)> = BTreeMap::new();
    for (member, owner) in members {
        for tp in owner.owned.iter().filter(|tp| exists(tp)) {
            if !owner.topics.contains(&tp.topic) {
                continue;
            }
            let claim = (owner.generation, Some(member));
            match holder.get_mut(tp) {
                None => {
                    holder.insert(tp.clone(), claim);
                }
                Some(held) if held.0 < owner.generation => *held = claim,
                Some(held) if held.0 == owner.generation && held.1 != Some(member) => held.1 = None,
                Some(_) => {}
            }
        }
    }
    let mut plan: Assignment<M> = members.keys().map(|m| (m.clone(), Vec::new())).collect();
    for (tp, (_, member)) in &holder {
        if let Some(member) = member {
            plan.get_mut(*member)
                .expect("every member has an entry")
                .push(tp.clone());
        }
    }
    let wants = |m: &M, tp: &TopicPartition| members[m].topics.contains(&tp.topic);
    for (topic, &count) in partitions_per_topic {
        for partition in 0..count.max(0) {
            let tp = TopicPartition {
                topic: topic.clone(),
                partition,
            };
            if holder.get(&tp).is_some_and(|(_, m)| m.is_some()) {
                continue;
            }
            let least = plan
                .iter()
                .filter(|(m, _)| wants(m, &tp))
                .min_by_key(|(m, ps)| (ps.len(), (*m).clone()))
                .map(|(m, _)| m.clone());
            if let Some(m) = least {
                plan.get_mut(&m).expect("chosen from the plan").push(tp);
            }
        }
    }
    for partitions in plan.values_mut() {
        partitions.sort();
    }
    while let Some((from, index, to)) = best_move(&plan, &wants) {
        let tp = plan.get_mut(&from).expect("a member").remove(index);
        let to = plan.get_mut(&to).expect("a member");
        let at = to.partition_point(|p| *p < tp);
        to.insert(at, tp);
    }
    plan
}

/// A move that brings two members' counts closer: from the most-loaded member that has a
/// partition some less-loaded member (by two or more) wants, its newest-numbered such partition,
/// to the least-loaded of those.
fn best_move<M: Ord + Clone>(
    plan: &Assignment<M>,
    wants: &impl Fn(&M, &TopicPartition) -> bool,
) -> Option<(M, usize, M)> {
    let mut by_load: Vec<(&M, &Vec<TopicPartition>)> = plan.iter().collect();
    by_load.sort_by_key(|(m, ps)| (std::cmp::Reverse(ps.len()), (*m).clone()));
    for (from, partitions) in &by_load {
        for (index, tp) in partitions.iter().enumerate().rev() {
            let to = by_load
                .iter()
                .filter(|(m, ps)| ps.len() + 1 < partitions.len() && wants(m, tp))
                .min_by_key(|(m, ps)| (ps.len(), (*m).clone()));
            if let Some((to, _)) = to {
                return Some(((*from).clone(), index, (*to).clone()));
            }
        }
    }
    None
}

/// Every member, with no partition yet: a member the plan gives nothing still gets an entry.
fn nothing_yet<M: Ord + Clone>(subscriptions: &Subscriptions<M>) -> Assignment<M> {
    subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }

    fn everyone(members: &[u32], topics: &[&str]) -> Subscriptions<u32> {
        let topics: BTreeSet<Arc<str>> = topics.iter().map(|&t| Arc::from(t)).collect();
        members.iter().map(|&m| (m, topics.clone())).collect()
    }

    #[test]
    fn range_gives_the_first_members_one_more_as_kafka_does() {
        // Kafka's documented example: t0 and t1 with 3 partitions each, consumers C0 and C1.
        let counts = BTreeMap::from([(Arc::from("t0"), 3), (Arc::from("t1"), 3)]);
        let a = range(&everyone(&[0, 1], &["t0", "t1"]), &counts);
        assert_eq!(a[&0], [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]);
        assert_eq!(a[&1], [tp("t0", 2), tp("t1", 2)]);
    }

    #[test]
    fn round_robin_deals_partitions_in_turn_as_kafka_does() {
        let counts = BTreeMap::from([(Arc::from("t0"), 3), (Arc::from("t1"), 3)]);
        let a = round_robin(&everyone(&[0, 1], &["t0", "t1"]), &counts);
        assert_eq!(a[&0], [tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
        assert_eq!(a[&1], [tp("t0", 1), tp("t1", 0), tp("t1", 2)]);
    }

    fn owners(plan: &Assignment<u32>, generation: i32) -> BTreeMap<u32, Owner> {
        let topics: BTreeSet<Arc<str>> = [Arc::from("t")].into();
        plan.iter()
            .map(|(&m, ps)| {
                let owner = Owner {
                    topics: topics.clone(),
                    owned: ps.clone(),
                    generation,
                };
                (m, owner)
            })
            .collect()
    }

    #[test]
    fn cooperative_sticky_moves_a_partition_in_two_rebalances() {
        let counts = BTreeMap::from([(Arc::from("t"), 4)]);
        let first = cooperative_sticky(&owners(&BTreeMap::from([(1, vec![])]), -1), &counts);
        assert_eq!(first[&1].len(), 4);
        // A second member joins: the first keeps two, the two it gives up go to nobody yet.
        let mut joined = owners(&first, 1);
        joined.insert(2, owners(&BTreeMap::from([(2, vec![])]), -1)[&2].clone());
        let second = cooperative_sticky(&joined, &counts);
        assert_eq!(second[&1], [tp("t", 0), tp("t", 1)]);
        assert_eq!(second[&2], []);
        // Having revoked them, it joins again, and they go to the second member.
        let third = cooperative_sticky(&owners(&second, 2), &counts);
        assert_eq!(third[&1], [tp("t", 0), tp("t", 1)]);
        assert_eq!(third[&2], [tp("t", 2), tp("t", 3)]);
    }

    #[test]
    fn a_partition_two_members_claim_goes_to_the_newer_generation() {
        let counts = BTreeMap::from([(Arc::from("t"), 2)]);
        let topics: BTreeSet<Arc<str>> = [Arc::from("t")].into();
        let claim = |owned: Vec<TopicPartition>, generation| Owner {
            topics: topics.clone(),
            owned,
            generation,
        };
        let members = BTreeMap::from([
            (1, claim(vec![tp("t", 0), tp("t", 1)], 3)),
            (2, claim(vec![tp("t", 1)], 4)),
        ]);
        let plan = sticky(&members, &counts);
        assert_eq!(plan[&1], [tp("t", 0)]);
        assert_eq!(plan[&2], [tp("t", 1)]);
        // Cooperatively, the contested partition waits for the older claimant to let go.
        let plan = cooperative_sticky(&members, &counts);
        assert_eq!(plan[&2], []);
    }

    proptest! {
        /// Whatever members own and want, the sticky plan gives every wanted partition one
        /// owner that wants it, balances members that want the same (counts within one), and
        /// lets a member keep as much of what it alone owned as its share allows;
        /// the cooperative plan never gives a member a partition another claims, and once
        /// the members own what it gave them, the next plan is the sticky one whole.
        #[test]
        fn sticky_is_balanced_and_keeps_what_it_can(
            members in proptest::collection::btree_map(0u32..6, (proptest::collection::btree_set(0i32..9, 0..6), 0i32..3), 1..6),
            count in 0i32..9,
        ) {
            let topic: Arc<str> = Arc::from("t");
            let counts = BTreeMap::from([(topic.clone(), count)]);
            let members: BTreeMap<u32, Owner> = members
                .into_iter()
                .map(|(m, (owned, generation))| {
                    let owner = Owner {
                        topics: [topic.clone()].into(),
                        owned: owned.into_iter().map(|p| tp("t", p)).collect(),
                        generation,
                    };
                    (m, owner)
                })
                .collect();
            let plan = sticky(&members, &counts);
            let mut seen = BTreeSet::new();
            for partitions in plan.values() {
                for p in partitions {
                    prop_assert!(p.partition < count && seen.insert(p.clone()), "{p:?}");
                }
            }
            prop_assert_eq!(seen.len(), count as usize);
            let loads: Vec<usize> = plan.values().map(Vec::len).collect();
            let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{loads:?}");
            let share = count as usize / members.len();
            for (m, owner) in &members {
                let uncontested: Vec<&TopicPartition> = owner
                    .owned
                    .iter()
                    .filter(|p| p.partition < count)
                    .filter(|p| members.iter().all(|(o, other)| o == m || !other.owned.contains(p)))
                    .collect();
                let kept = owner.owned.iter().filter(|p| plan[m].contains(p)).count();
                prop_assert!(kept >= uncontested.len().min(share), "{m} kept {kept} of {uncontested:?}");
            }
            let cooperative = cooperative_sticky(&members, &counts);
            for (m, partitions) in &cooperative {
                for p in partitions {
                    prop_assert!(members.iter().all(|(o, other)| o == m || !other.owned.contains(p)));
                }
            }
            let next = owners(&cooperative, 9);
            let settled = cooperative_sticky(&next, &counts);
            prop_assert_eq!(settled.values().map(Vec::len).sum::<usize>(), count as usize);
        }

        /// Whatever the subscriptions, both assignors give every subscribed partition to exactly
        /// one member that subscribed to its topic, and nothing else.
        #[test]
        fn every_subscribed_partition_has_exactly_one_owner(
            subs in proptest::collection::btree_map(0u32..6, proptest::collection::btree_set(0usize..3, 0..3), 0..6),
            counts in proptest::collection::vec(0i32..7, 3),
        ) {
            let names: Vec<Arc<str>> = ["a", "b", "c"].iter().map(|&n| Arc::from(n)).collect();
            let subscriptions: Subscriptions<u32> = subs
                .iter()
                .map(|(&m, ts)| (m, ts.iter().map(|&t| names[t].clone()).collect()))
                .collect();
            let per_topic: BTreeMap<Arc<str>, i32> =
                names.iter().cloned().zip(counts.iter().copied()).collect();
            for assignment in [range(&subscriptions, &per_topic), round_robin(&subscriptions, &per_topic)] {
                let mut owners: BTreeMap<TopicPartition, u32> = BTreeMap::new();
                for (member, partitions) in &assignment {
                    for p in partitions {
                        prop_assert!(subscriptions[member].contains(&p.topic));
                        prop_assert!(owners.insert(p.clone(), *member).is_none(), "{p:?} twice");
                    }
                }
                for (topic, &count) in &per_topic {
                    let wanted = subscriptions.values().any(|ts| ts.contains(topic));
                    for partition in 0..count {
                        let owned = owners.contains_key(&TopicPartition { topic: topic.clone(), partition });
                        prop_assert_eq!(owned, wanted);
                    }
                }
            }
        }
    }
}
