//! A follower's Fetch (a request with a replica id), on the leader: each partition becomes the
//! replica's `Msg::Fetch`; the replica answers at once or parks the fetch until it has records
//! (a new high watermark alone does not wake it, as in Kafka). The request is answered when any
//! partition has its answer, or after `max_wait_ms`, when the parked ones are answered with what
//! there is, the high watermark included (the replica decides what,
//! [`Partition::expire_follower_fetch`]).
//!
//! [`Partition::expire_follower_fetch`]: crate::broker::partition::Partition::expire_follower_fetch

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{
    EpochEndOffset as WireEpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use surety_core::errors::Errors;
use surety_core::replication::{BrokerId as NodeId, FetchResult, Msg, Node};
use tokio::sync::mpsc;

use super::ClusterLink;
use crate::broker::{Broker, now_ms};

/// Answers follower `request.replica_id`'s fetch.
pub async fn handle(broker: &Broker, link: &ClusterLink, request: FetchRequest) -> FetchResponse {
    let follower = request.replica_id.0 as NodeId;
    let now = now_ms();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // (topic position, partition) -> its answer, once there is one.
    let mut answers: BTreeMap<(usize, i32), PartitionData> = BTreeMap::new();
    let mut waiting = Vec::new();
    for (position, t) in request.topics.iter().enumerate() {
        let topic = broker.topics().get(&t.topic);
        for p in &t.partitions {
            let Some(partition) = topic
                .as_ref()
                .and_then(|topic| topic.partition(p.partition))
            else {
                answers.insert(
                    (position, p.partition),
                    error_data(p.partition, Errors::NotLeaderOrFollower),
                );
                continue;
            };
            link.wait_for_answer(follower, &t.topic, p.partition, (position, tx.clone()));
            waiting.push((position, p.partition, partition.clone()));
            let msg = Msg::Fetch {
                replica_id: follower,
                current_leader_epoch: p.current_leader_epoch,
                fetch_offset: p.fetch_offset,
                last_fetched_epoch: (p.last_fetched_epoch >= 0).then_some(p.last_fetched_epoch),
            };
            partition.on_peer_message(Node::Broker(follower), msg, now);
        }
    }
    drop(tx);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    // Wait for the first answer (or the deadline), then take every answer there is.
    if answers.is_empty() && !waiting.is_empty() {
        tokio::select! {
            answer = rx.recv() => if let Some((position, index, msg)) = answer {
                answers.insert((position, index), to_wire(index, msg));
            },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    // The rest: the replica answers its parked fetch with what it has now.
    let now = now_ms();
    for (position, index, partition) in &waiting {
        if !answers.contains_key(&(*position, *index)) {
            partition.expire_follower_fetch(follower, now);
        }
    }
    while let Ok(answer) = rx.try_recv() {
        answers.insert((answer.0, answer.1), to_wire(answer.1, answer.2));
    }
    let mut responses: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| FetchableTopicResponse::default().with_topic(t.topic.clone()))
        .collect();
    for (position, t) in request.topics.iter().enumerate() {
        for p in &t.partitions {
            let data = answers.remove(&(position, p.partition)).unwrap_or_else(|| {
                link.forget_answer(follower, &t.topic, p.partition);
                // Neither answered nor parked: a fetch the replica ignored as stale.
                error_data(p.partition, Errors::UnknownLeaderEpoch)
            });
            responses[position].partitions.push(data);
        }
    }
    FetchResponse::default().with_responses(responses)
}

fn to_wire(index: i32, msg: Msg) -> PartitionData {
    let data = PartitionData::default().with_partition_index(index);
    let Msg::FetchResponse { result, .. } = msg else {
        return data.with_error_code(Errors::UnknownServerError.code());
    };
    match result {
        FetchResult::Records {
            high_watermark,
            records,
        } => data
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark)
            .with_records(Some(records)),
        FetchResult::Diverging(end) => data.with_diverging_epoch(
            WireEpochEndOffset::default()
                .with_epoch(end.epoch)
                .with_end_offset(end.end_offset),
        ),
        FetchResult::Error(error) => data.with_error_code(error.code()),
    }
}

fn error_data(index: i32, error: Errors) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
}
