//! `UNSUPPORTED_VERSION` answers for requests at versions newer than the broker serves: the
//! client gets the error code in the response format it asked for, never a garbled answer.
//! Responses with no place for an error code get a closed connection instead, as Kafka does for
//! any request it cannot serve.

use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdResponse, ListOffsetsResponse, MetadataResponse, ProduceResponse, RequestKind,
    ResponseKind,
};
use surety_core::errors::Errors;

const UNSUPPORTED_VERSION: i16 = Errors::UnsupportedVersion.code();

/// The error response to `body` at `version`, or `None` where the response format has no
/// error code to carry it.
pub fn response(body: &RequestKind, version: i16) -> Option<ResponseKind> {
    Some(match body {
        RequestKind::Produce(r) => ProduceResponse::default()
            .with_responses(
                r.topic_data
                    .iter()
                    .map(|t| {
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partition_responses(
                                t.partition_data
                                    .iter()
                                    .map(|p| {
                                        PartitionProduceResponse::default()
                                            .with_index(p.index)
                                            .with_error_code(UNSUPPORTED_VERSION)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .into(),
        RequestKind::Fetch(_) if version >= 7 => FetchResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .into(),
        RequestKind::ListOffsets(r) => ListOffsetsResponse::default()
            .with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(UNSUPPORTED_VERSION)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .into(),
        RequestKind::Metadata(_) if version >= 13 => MetadataResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .into(),
        RequestKind::InitProducerId(_) => InitProducerIdResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .into(),
        _ => return None,
    })
}
