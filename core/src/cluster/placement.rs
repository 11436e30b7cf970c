//! Where a new partition's replicas go, and Kafka's checks of a requested assignment, with
//! Kafka's error messages (`ReplicationControlManager`, `StripedReplicaPlacer`).
//!
//! Automatic placement is round robin over the live brokers sorted by id, starting at a broker
//! the topic id picks: partition `p` gets `brokers[(start + p + j) % n]` for `j` in
//! `0..replication_factor`, so leaders (the first replica) spread over the brokers and the
//! replicas of one partition are distinct. The topic id is random, so the start is Kafka's
//! random start, and partitions added later continue the same pattern.
//!
//! Kafka's `StripedReplicaPlacer` does more, which we do not: it spreads replicas over racks
//! first (`broker.rack`), it reshuffles brokers and racks once every live broker has led one
//! partition (so large topics do not repeat one pattern), and it places followers on fenced
//! brokers when the live ones are too few (only the leader must be live), where we refuse.

use crate::errors::Errors;
use crate::replication::BrokerId;

use super::image::MetadataImage;
use super::quorum::Refusal;

/// The replicas of partitions `first..first + count`, round robin over `live` (sorted by id)
/// from `start`.
pub fn round_robin(
    live: &[BrokerId],
    start: usize,
    first: i32,
    count: i32,
    replication_factor: usize,
) -> Vec<Vec<BrokerId>> {
    let n = live.len();
    (first..first.saturating_add(count))
        .map(|p| {
            let p = usize::try_from(p).unwrap_or(0);
            (0..replication_factor)
                .map(|j| live[(start + p + j) % n])
                .collect()
        })
        .collect()
}

/// The live brokers' ids, sorted: what round robin goes over.
pub fn live_ids(image: &MetadataImage) -> Vec<BrokerId> {
    image.live_brokers().into_iter().map(|(id, _)| id).collect()
}

/// Where round robin starts for a topic: the topic id is random, so its first byte is.
pub fn start(topic_id: &[u8; 16], live: usize) -> usize {
    usize::from(topic_id[0]) % live.max(1)
}

/// Whether `replication_factor` replicas fit on the cluster, with the message Kafka's placer
/// gives when they do not (the caller adds Kafka's prefix where Kafka does).
pub fn check_replication_factor(
    image: &MetadataImage,
    replication_factor: i16,
) -> Result<usize, String> {
    let Ok(rf) = usize::try_from(replication_factor) else {
        return Err(format!(
            "Invalid replication factor {replication_factor}: the replication factor must be \
             positive."
        ));
    };
    let registered = image.brokers().len();
    let live = image.live_brokers().len();
    if rf == 0 {
        Err(format!(
            "Invalid replication factor {rf}: the replication factor must be positive."
        ))
    } else if rf > registered {
        Err(format!(
            "The target replication factor of {rf} cannot be reached because only {registered} \
             broker(s) are registered."
        ))
    } else if live == 0 {
        Err("All brokers are currently fenced.".to_string())
    } else if rf > live {
        // Kafka would place the missing followers on fenced brokers; we place on live ones only.
        Err(format!(
            "The target replication factor of {rf} cannot be reached because only {live} \
             broker(s) are registered and unfenced."
        ))
    } else {
        Ok(rf)
    }
}

/// Kafka's `validateManualPartitionAssignment`: a non-empty list of distinct registered
/// brokers, as long as the partitions before it (`replication_factor`, once there are some).
pub fn check_manual(
    image: &MetadataImage,
    replicas: &[BrokerId],
    replication_factor: Option<usize>,
) -> Result<(), Refusal> {
    let refuse = |message: String| Err((Errors::InvalidReplicaAssignment, message));
    if replicas.is_empty() {
        return refuse("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, &broker) in sorted.iter().enumerate() {
        if image.broker(broker).is_none() {
            return refuse(format!(
                "The manual partition assignment includes broker {broker}, but no such broker \
                 is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == broker {
            return refuse(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            ));
        }
    }
    match replication_factor {
        Some(rf) if rf != sorted.len() => refuse(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this \
             is not consistent with previous partitions, which have {rf} replica(s).",
            sorted.len()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_spreads_leaders_and_keeps_replicas_distinct() {
        let live = [1, 2, 3];
        assert_eq!(
            round_robin(&live, 1, 0, 4, 2),
            vec![vec![2, 3], vec![3, 1], vec![1, 2], vec![2, 3]]
        );
        // Partitions added later continue where the first ones stopped.
        assert_eq!(round_robin(&live, 1, 4, 1, 2), vec![vec![3, 1]]);
    }
}
