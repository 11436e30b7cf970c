//! OffsetsForLeaderEpoch (API 23): where a leader epoch ends in a partition's log, answered by
//! the partition's replica from its leader-epoch cache. A consumer asks it with the epoch of
//! the last record it consumed; an end offset below its position means the log was truncated
//! under it (KIP-320).

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use surety_core::errors::Errors;

use super::Broker;

pub fn handle(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics().get(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition))
                    else {
                        return answer.with_error_code(Errors::UnknownTopicOrPartition.code());
                    };
                    match partition.offset_for_leader_epoch(p.current_leader_epoch, p.leader_epoch)
                    {
                        Ok(end) => answer
                            .with_leader_epoch(end.epoch)
                            .with_end_offset(end.end_offset),
                        Err(error) => answer.with_error_code(error.code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
