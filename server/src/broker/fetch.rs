//! Fetch (with `max.wait.ms` long-polling) and ListOffsets.
//!
//! Which bytes each partition may return and whether the fetch is answered now or waits are
//! decided by `surety_core::fetch` (KIP-74's first batch, `max_bytes`, `min_bytes`, the isolation
//! level's bound); this handler reads what the partition's replica allows (below its high
//! watermark) and, while the plan says wait, sleeps until some high watermark moves.

use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use surety_core::errors::Errors;
use surety_core::fetch::{FetchBudget, FetchParams, IsolationLevel};
use surety_core::log::LogError;
use surety_core::replication::OffsetSnapshot;

use super::Broker;
use super::partition::ReadError;

pub async fn handle(broker: &Broker, request: FetchRequest, _version: i16) -> FetchResponse {
    let params = FetchParams {
        max_bytes: request.max_bytes,
        min_bytes: request.min_bytes,
        max_wait_ms: request.max_wait_ms,
        isolation: IsolationLevel::from_wire(request.isolation_level),
    }
    .capped(broker.config().fetch_max_bytes);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(params.max_wait_ms());
    loop {
        // Register for wake-ups before reading, so a move between the read and the wait
        // is not missed.
        let moved = broker.topics().shared().high_watermark_moved().notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        let (response, bytes, any_error) = read_all(broker, &request, &params);
        if params.respond_now(bytes, any_error) || tokio::time::Instant::now() >= deadline {
            return response;
        }
        tokio::select! {
            _ = moved => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn read_all(
    broker: &Broker,
    request: &FetchRequest,
    params: &FetchParams,
) -> (FetchResponse, usize, bool) {
    let mut budget = FetchBudget::new(params);
    let mut any_error = false;
    let responses = request
        .topics
        .iter()
        .map(|t| {
            let topic = broker.topics().get(&t.topic);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default().with_partition_index(p.partition);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition))
                    else {
                        any_error = true;
                        let missing = broker.missing_partition_error(&t.topic, p.partition);
                        return data.with_error_code(missing.code());
                    };
                    let with_offsets = |data: PartitionData, o: &OffsetSnapshot| {
                        data.with_high_watermark(o.high_watermark)
                            .with_last_stable_offset(o.last_stable_offset)
                            .with_log_start_offset(o.log_start_offset)
                    };
                    let Some(limit) = budget.limit(p.partition_max_bytes) else {
                        return with_offsets(data, &partition.offsets());
                    };
                    let read = partition.read(
                        p.current_leader_epoch,
                        p.fetch_offset,
                        limit.max_bytes,
                        params.isolation,
                    );
                    match read {
                        Ok(read) => {
                            let records = if budget.take(limit, read.records.len()) {
                                read.records
                            } else {
                                bytes::Bytes::new()
                            };
                            with_offsets(data, &read.offsets).with_records(Some(records))
                        }
                        Err(ReadError::Refused { error, offsets }) => {
                            any_error = true;
                            with_offsets(data, &offsets).with_error_code(error.code())
                        }
                        Err(ReadError::Log { error, offsets }) => {
                            any_error = true;
                            if !matches!(error, LogError::OffsetOutOfRange { .. }) {
                                tracing::warn!("fetch from {}-{}: {error}", &*t.topic, p.partition);
                            }
                            with_offsets(data, &offsets).with_error_code(error.error_code())
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    (
        FetchResponse::default().with_responses(responses),
        budget.taken(),
        any_error,
    )
}

/// ListOffsets: -2 is the log start, -1 what the isolation level may read up to (the high
/// watermark, or the last stable offset), -3 the largest timestamp, a timestamp the first
/// record at or after it. Only the leader answers, after checking the client's epoch.
pub fn list_offsets(
    broker: &Broker,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    const LATEST: i64 = -1;
    const EARLIEST: i64 = -2;
    const MAX_TIMESTAMP: i64 = -3;
    let isolation_level = request.isolation_level;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics().get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let Some(partition) =
                        topic.as_ref().and_then(|t| t.partition(p.partition_index))
                    else {
                        return response.with_error_code(Errors::UnknownTopicOrPartition.code());
                    };
                    let leader_epoch = match partition.validate_client_epoch(p.current_leader_epoch)
                    {
                        Ok(epoch) => epoch,
                        Err(error) => return response.with_error_code(error.code()),
                    };
                    let offsets = partition.offsets();
                    let isolation = IsolationLevel::from_wire(isolation_level);
                    let found = match p.timestamp {
                        LATEST => Ok(Some((-1, offsets.readable_below(isolation)))),
                        EARLIEST => Ok(Some((-1, offsets.log_start_offset))),
                        MAX_TIMESTAMP => partition.offset_of_max_timestamp(),
                        ts if ts >= 0 => partition.offset_for_timestamp(ts),
                        _ => return response.with_error_code(Errors::InvalidRequest.code()),
                    };
                    match found {
                        Ok(Some((timestamp, offset))) => {
                            // KIP-320: the epoch of the record at the offset (the current one
                            // for the log end), so a consumer can later detect truncation.
                            let epoch = if p.timestamp == LATEST {
                                leader_epoch
                            } else {
                                partition.epoch_for_offset(offset)
                            };
                            response
                                .with_timestamp(timestamp)
                                .with_offset(offset)
                                .with_leader_epoch(if version >= 4 { epoch } else { -1 })
                        }
                        Ok(None) => response,
                        Err(e) => response.with_error_code(e.error_code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
