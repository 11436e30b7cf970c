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

    proptest! {
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
