//! Produce: each partition's record batch goes to the partition's replica, which appends it
//! (offsets assigned in place, never re-encoded; the idempotent-producer check included) and
//! decides when it is answered: at once for `acks=1`, once the high watermark passes it for
//! `acks=all` (Kafka's `DelayedProduce`, bounded here by the request's `timeout_ms`), and for
//! `acks=0` only if it failed, which closes the connection, as Kafka does, so the producer
//! notices.

use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use surety_core::errors::Errors;
use surety_core::replication::Acks;

use super::partition::{Partition, ProduceAnswer, Produced};
use super::{Broker, Outcome, message_if, now_ms};

/// Where a partition's answer comes from.
enum Pending {
    Ready(ProduceAnswer),
    Waiting(
        std::sync::Arc<Partition>,
        tokio::sync::oneshot::Receiver<ProduceAnswer>,
    ),
    Silent,
}

pub async fn handle(
    broker: &Broker,
    request: ProduceRequest,
    correlation_id: i32,
    version: i16,
) -> Outcome {
    let Some(acks) = Acks::from_wire(request.acks) else {
        let error = Errors::InvalidRequiredAcks;
        let message = format!("acks={} is not -1, 0 or 1", request.acks);
        let responses = request
            .topic_data
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partition_data
                    .iter()
                    .map(|p| {
                        failed(p.index, error).with_error_message(message_if(
                            version,
                            8,
                            message.clone(),
                        ))
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_partition_responses(partitions)
            })
            .collect();
        return respond(broker, Acks::Leader, responses);
    };
    let request_id = broker.next_produce_request();
    let correlation = correlation_id as u32;
    let now = now_ms();
    let mut topics = Vec::new();
    for topic_data in request.topic_data {
        let topic = broker.topics().get(&topic_data.name);
        let mut partitions = Vec::new();
        // Kafka's rule: only the group coordinator writes its internal topic.
        let internal = topic_data.name.as_str() == super::group::OFFSETS_TOPIC;
        for p in topic_data.partition_data {
            if internal {
                partitions.push((
                    p.index,
                    Pending::Ready(error(Errors::InvalidTopicException)),
                ));
                continue;
            }
            let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.index)) else {
                let missing = broker.missing_partition_error(&topic_data.name, p.index);
                partitions.push((p.index, Pending::Ready(error(missing))));
                continue;
            };
            let Some(records) = p.records.filter(|r| !r.is_empty()) else {
                partitions.push((p.index, Pending::Ready(error(Errors::InvalidRecord))));
                continue;
            };
            // Each partition of one request is its own produce to its replica; answers are
            // matched by (request, correlation id), the same for every partition of it.
            let pending = match partition.produce(request_id, correlation, acks, records, now) {
                Produced::Now(answer) => Pending::Ready(answer),
                Produced::Later(rx) => Pending::Waiting(partition.clone(), rx),
                Produced::Silent => Pending::Silent,
            };
            partitions.push((p.index, pending));
        }
        topics.push((topic_data.name, partitions));
    }
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut responses = Vec::new();
    for (name, partitions) in topics {
        let mut answered = Vec::new();
        for (index, pending) in partitions {
            let answer = match pending {
                Pending::Ready(answer) => answer,
                Pending::Silent => ProduceAnswer {
                    error: Errors::None,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                },
                Pending::Waiting(partition, rx) => {
                    match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(_)) => error(Errors::NotLeaderOrFollower),
                        Err(_) => {
                            partition.forget_delayed(request_id, correlation);
                            error(Errors::RequestTimedOut)
                        }
                    }
                }
            };
            if answer.error != Errors::None {
                tracing::debug!("produce to {}-{index}: {}", &*name, answer.error.name());
            }
            answered.push(
                PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(answer.error.code())
                    .with_base_offset(answer.base_offset)
                    .with_log_append_time_ms(answer.log_append_time)
                    .with_log_start_offset(answer.log_start_offset),
            );
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(answered),
        );
    }
    respond(broker, acks, responses)
}

fn error(error: Errors) -> ProduceAnswer {
    ProduceAnswer {
        error,
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
    }
}

fn failed(index: i32, error: Errors) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

fn respond(broker: &Broker, acks: Acks, responses: Vec<TopicProduceResponse>) -> Outcome {
    if acks != Acks::None {
        if broker.drops_produce_response() {
            tracing::info!("test hook: dropping a produce response");
            return Outcome::NoResponse;
        }
        return Outcome::Respond(Box::new(
            ProduceResponse::default().with_responses(responses).into(),
        ));
    }
    let failed = responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .any(|p| p.error_code != Errors::None.code());
    if failed {
        Outcome::Close
    } else {
        Outcome::NoResponse
    }
}
