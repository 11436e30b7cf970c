//! Produce: each partition's record batch goes to the partition's replica, which appends it
//! (offsets assigned in place, never re-encoded; the idempotent-producer check included) and
//! decides when it is answered: at once for `acks=1`, once the high watermark passes it for
//! `acks=all` (Kafka's `DelayedProduce`, bounded here by the request's `timeout_ms`), and for
//! `acks=0` only if it failed, which closes the connection, as Kafka does, so the producer
//! notices.

use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
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

/// A produce request whose batches have been handed to their replicas: all that is left is
/// to wait for the answers. Appending is synchronous and answering is not, so that a connection
/// can append its next produce request while this one waits for its followers, in the order the
/// client sent them.
pub struct Appended(State);

enum State {
    /// Answered at once: `acks=0`, `acks=1`, or a request refused as a whole.
    Answered(Outcome),
    /// Each partition's answer, or where it will come from.
    Waiting {
        acks: Acks,
        request_id: u64,
        correlation: u32,
        deadline: tokio::time::Instant,
        topics: Vec<(TopicName, Vec<(i32, Pending)>)>,
    },
}

/// Appends a produce request and waits for its answer.
pub async fn handle(
    broker: &Broker,
    request: ProduceRequest,
    correlation_id: i32,
    version: i16,
) -> Outcome {
    append(broker, request, correlation_id, version)
        .answer(broker)
        .await
}

/// Hands each partition's batch to its replica, without waiting for any answer.
pub fn append(
    broker: &Broker,
    request: ProduceRequest,
    correlation_id: i32,
    version: i16,
) -> Appended {
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
        return Appended(State::Answered(respond(broker, Acks::Leader, responses)));
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
    // acks=0 and acks=1 (and a request refused as a whole) are answered here, in the order
    // the connection appended them; only acks=all waits.
    let waits = topics.iter().any(|(_, partitions)| {
        partitions
            .iter()
            .any(|(_, p)| matches!(p, Pending::Waiting(..)))
    });
    if !waits {
        let answered = topics
            .into_iter()
            .map(|(name, partitions)| {
                let answers = partitions
                    .into_iter()
                    .map(|(index, pending)| match pending {
                        Pending::Ready(answer) => (index, answer),
                        _ => (index, silent()),
                    })
                    .collect();
                (name, answers)
            })
            .collect();
        return Appended(State::Answered(respond(broker, acks, responses(answered))));
    }
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    Appended(State::Waiting {
        acks,
        request_id,
        correlation,
        deadline: tokio::time::Instant::now() + timeout,
        topics,
    })
}

impl Appended {
    /// Whether the answer is to close the connection (an `acks=0` write failed): the
    /// connection then reads nothing more.
    pub fn closes(&self) -> bool {
        matches!(self.0, State::Answered(Outcome::Close))
    }

    /// Waits (until the request's `timeout_ms`) for every partition's answer.
    pub async fn answer(self, broker: &Broker) -> Outcome {
        let (acks, request_id, correlation, deadline, topics) = match self.0 {
            State::Answered(outcome) => return outcome,
            State::Waiting {
                acks,
                request_id,
                correlation,
                deadline,
                topics,
            } => (acks, request_id, correlation, deadline, topics),
        };
        let mut answered = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut answers = Vec::with_capacity(partitions.len());
            for (index, pending) in partitions {
                let answer = match pending {
                    Pending::Ready(answer) => answer,
                    Pending::Silent => silent(),
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
                answers.push((index, answer));
            }
            answered.push((name, answers));
        }
        respond(broker, acks, responses(answered))
    }
}

fn responses(answered: Vec<(TopicName, Vec<(i32, ProduceAnswer)>)>) -> Vec<TopicProduceResponse> {
    answered
        .into_iter()
        .map(|(name, answers)| {
            let partitions = answers
                .into_iter()
                .map(|(index, answer)| {
                    if answer.error != Errors::None {
                        tracing::debug!("produce to {}-{index}: {}", &*name, answer.error.name());
                    }
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(answer.error.code())
                        .with_base_offset(answer.base_offset)
                        .with_log_append_time_ms(answer.log_append_time)
                        .with_log_start_offset(answer.log_start_offset)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partitions)
        })
        .collect()
}

/// An `acks=0` partition's answer: nothing is sent for it unless the request failed elsewhere.
fn silent() -> ProduceAnswer {
    ProduceAnswer {
        error: Errors::None,
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
    }
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
