//! Produce: append each partition's record batch as sent (offsets are assigned in place, never
//! re-encoded), with the idempotent-producer check, and answer with the base offsets.
//!
//! A single broker is every partition's only in-sync replica, so `acks=all` is satisfied by the
//! append itself, as on a Kafka broker whose ISR is just the leader (with
//! `min.insync.replicas=1`). With `acks=0` nothing is sent back, and a failed write closes
//! the connection, as Kafka does, so the producer notices.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use surety_core::errors::Errors;

use super::partition::ProduceError;
use super::{Broker, Outcome, message_if, now_ms};

pub fn handle(broker: &Broker, request: ProduceRequest, version: i16) -> Outcome {
    let acks = request.acks;
    let bad_acks = !matches!(acks, -1..=1);
    let now = now_ms();
    let mut appended_any = false;
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic_data| {
            let topic = broker.topics().get(&topic_data.name);
            let partition_responses = topic_data
                .partition_data
                .into_iter()
                .map(|p| {
                    let response = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    let error = |error: Errors, message: String| {
                        tracing::debug!("produce to {}-{}: {message}", &*topic_data.name, p.index);
                        response
                            .clone()
                            .with_error_code(error.code())
                            .with_error_message(message_if(version, 8, message))
                    };
                    if bad_acks {
                        return error(
                            Errors::InvalidRequiredAcks,
                            format!("acks={acks} is not -1, 0 or 1"),
                        );
                    }
                    let Some(partition) = topic
                        .as_ref()
                        .and_then(|t| t.partitions.get(usize::try_from(p.index).ok()?))
                    else {
                        return error(
                            Errors::UnknownTopicOrPartition,
                            "this server does not host this topic-partition".into(),
                        );
                    };
                    let Some(records) = p.records.filter(|r| !r.is_empty()) else {
                        return error(Errors::InvalidRecord, "no record batch".into());
                    };
                    match partition.append(records, now) {
                        Ok(a) => {
                            appended_any |= !a.duplicate;
                            response
                                .with_base_offset(a.base_offset)
                                .with_log_append_time_ms(a.log_append_time)
                                .with_log_start_offset(a.log_start_offset)
                        }
                        Err(e @ ProduceError::Log(_)) if e.error() == Errors::KafkaStorageError => {
                            tracing::error!("produce to {}-{}: {e}", &*topic_data.name, p.index);
                            error(e.error(), e.to_string())
                        }
                        Err(e) => error(e.error(), e.to_string()),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    if appended_any {
        broker.notify_appended();
    }
    if acks != 0 {
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
