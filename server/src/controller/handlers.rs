//! The controller listener's requests: each is parsed, handed to the quorum controller as one
//! step, and its answer encoded.

use std::time::Duration;

use kafka_protocol::messages::alter_partition_response::{
    PartitionData as AlterPartitionData, TopicData as AlterTopicData,
};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterPartitionRequest,
    AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId,
    BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterResponse, FetchRequest, FetchResponse, RequestKind,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::cluster::NewTopic;
use surety_core::errors::Errors;
use surety_core::replication::Msg;
use surety_core::trace::QuorumInput;

use super::ControllerServer;
use super::metadata_log::METADATA_TOPIC;
use crate::broker::Outcome;
use crate::wire::codec::{Request, api_versions_body};
use crate::wire::versions::CONTROLLER_APIS;

pub async fn handle(server: &ControllerServer, request: Request) -> Outcome {
    let version = request.version;
    let response: ResponseKind = match request.body {
        RequestKind::ApiVersions(_) => api_versions_body(CONTROLLER_APIS).into(),
        RequestKind::BrokerRegistration(r) => register(server, r).into(),
        RequestKind::BrokerHeartbeat(r) => heartbeat(server, r).into(),
        RequestKind::AlterPartition(r) => alter_partition(server, r).into(),
        RequestKind::AllocateProducerIds(r) => allocate_producer_ids(server, r).into(),
        RequestKind::CreateTopics(r) => create_topics(server, r, version).into(),
        RequestKind::DeleteTopics(r) => delete_topics(server, r).into(),
        RequestKind::CreatePartitions(r) => create_partitions(server, r).into(),
        RequestKind::Fetch(r) => fetch_metadata(server, r).await.into(),
        RequestKind::DescribeCluster(_) => describe_cluster(server).into(),
        _ => {
            tracing::error!("no controller handler for {:?} v{version}", request.api_key);
            return Outcome::Close;
        }
    };
    Outcome::Respond(Box::new(response))
}

fn register(server: &ControllerServer, r: BrokerRegistrationRequest) -> BrokerRegistrationResponse {
    let response = BrokerRegistrationResponse::default();
    if r.cluster_id.as_str() != server.cluster_id() {
        return response
            .with_error_code(Errors::InvalidRequest.code())
            .with_broker_epoch(-1);
    }
    let wanted = &server.config().cluster.inter_broker_listener_name;
    let Some(listener) = r
        .listeners
        .iter()
        .find(|l| l.name.as_str() == wanted.as_str())
        .or_else(|| r.listeners.first())
    else {
        return response
            .with_error_code(Errors::InvalidRequest.code())
            .with_broker_epoch(-1);
    };
    let (host, port) = (listener.host.to_string(), listener.port);
    let Ok(broker_id) = u32::try_from(r.broker_id.0) else {
        return response
            .with_error_code(Errors::InvalidRequest.code())
            .with_broker_epoch(-1);
    };
    match server.step(
        QuorumInput::RegisterBroker {
            broker_id,
            host: host.clone(),
            port,
        },
        |q| q.register_broker(broker_id, &host, port),
    ) {
        Ok(epoch) => response.with_broker_epoch(epoch),
        Err(error) => response.with_error_code(error.code()).with_broker_epoch(-1),
    }
}

fn heartbeat(server: &ControllerServer, r: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
    let response = BrokerHeartbeatResponse::default();
    let Ok(broker_id) = u32::try_from(r.broker_id.0) else {
        return response.with_error_code(Errors::InvalidRequest.code());
    };
    match server.step(
        QuorumInput::Heartbeat {
            broker_id,
            broker_epoch: r.broker_epoch,
            want_fence: r.want_fence,
        },
        |q| q.heartbeat(broker_id, r.broker_epoch, r.want_fence),
    ) {
        Ok(answer) => response
            .with_is_caught_up(!r.want_fence)
            .with_is_fenced(answer.is_fenced),
        Err(error) => response.with_error_code(error.code()).with_is_fenced(true),
    }
}

fn alter_partition(server: &ControllerServer, r: AlterPartitionRequest) -> AlterPartitionResponse {
    let Ok(broker_id) = u32::try_from(r.broker_id.0) else {
        return AlterPartitionResponse::default().with_error_code(Errors::InvalidRequest.code());
    };
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let topic_id = *t.topic_id.as_bytes();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let new_isr: std::collections::BTreeSet<u32> = p
                        .new_isr_with_epochs
                        .iter()
                        .map(|b| b.broker_id.0)
                        .chain(p.new_isr.iter().map(|b| b.0))
                        .filter_map(|b| u32::try_from(b).ok())
                        .collect();
                    let input = QuorumInput::AlterPartition {
                        broker_id,
                        broker_epoch: r.broker_epoch,
                        topic_id,
                        partition: p.partition_index,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        new_isr: new_isr.clone(),
                    };
                    let answer = server.step(input, |q| {
                        q.alter_partition(
                            broker_id,
                            r.broker_epoch,
                            topic_id,
                            p.partition_index,
                            p.leader_epoch,
                            p.partition_epoch,
                            new_isr,
                        )
                    });
                    let data =
                        AlterPartitionData::default().with_partition_index(p.partition_index);
                    match answer {
                        Msg::AlterPartitionResponse {
                            error_code, state, ..
                        } => data
                            .with_error_code(error_code.code())
                            .with_leader_id(BrokerId(state.leader.map_or(-1, |l| l as i32)))
                            .with_leader_epoch(state.leader_epoch)
                            .with_isr(state.isr.iter().map(|&b| BrokerId(b as i32)).collect())
                            .with_partition_epoch(state.partition_epoch),
                        _ => data.with_error_code(Errors::UnknownServerError.code()),
                    }
                })
                .collect();
            AlterTopicData::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionResponse::default().with_topics(topics)
}

fn allocate_producer_ids(
    server: &ControllerServer,
    r: AllocateProducerIdsRequest,
) -> AllocateProducerIdsResponse {
    let response = AllocateProducerIdsResponse::default();
    let Ok(broker_id) = u32::try_from(r.broker_id.0) else {
        return response.with_error_code(Errors::InvalidRequest.code());
    };
    match server.step(
        QuorumInput::AllocateProducerIds {
            broker_id,
            broker_epoch: r.broker_epoch,
        },
        |q| q.allocate_producer_ids(broker_id, r.broker_epoch),
    ) {
        Ok((first, count)) => response
            .with_producer_id_start(kafka_protocol::messages::ProducerId(first))
            .with_producer_id_len(count as i32),
        Err(error) => response.with_error_code(error.code()),
    }
}

fn create_topics(
    server: &ControllerServer,
    r: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let new: Vec<NewTopic> = r
        .topics
        .iter()
        .map(|t| NewTopic {
            name: t.name.to_string(),
            topic_id: *uuid::Uuid::new_v4().as_bytes(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    a.broker_ids
                        .iter()
                        .map(|b| u32::try_from(b.0).unwrap_or(u32::MAX))
                        .collect()
                })
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_deref().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        })
        .collect();
    let results = if r.validate_only {
        server.validate(|q| q.create_topics(&new))
    } else {
        server.step(QuorumInput::CreateTopics(new.clone()), |q| {
            q.create_topics(&new)
        })
    };
    let topics = new
        .iter()
        .zip(results)
        .map(|(t, result)| {
            let name = TopicName(StrBytes::from_string(t.name.clone()));
            let out = CreatableTopicResult::default().with_name(name);
            match result {
                Ok(created) => out
                    .with_topic_id(uuid::Uuid::from_bytes(created.topic_id))
                    .with_num_partitions(created.num_partitions)
                    .with_replication_factor(created.replication_factor),
                Err((error, message)) => out
                    .with_error_code(error.code())
                    .with_error_message((version >= 1).then(|| StrBytes::from_string(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn delete_topics(server: &ControllerServer, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut names: Vec<String> = r.topic_names.iter().map(|n| n.to_string()).collect();
    let image_names: Vec<Option<String>> = {
        let state = server.lock();
        r.topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => Some(name.to_string()),
                None => state
                    .quorum
                    .image()
                    .topic_by_id(t.topic_id.as_bytes())
                    .map(|topic| topic.name.clone()),
            })
            .collect()
    };
    names.extend(image_names.iter().flatten().cloned());
    let results = server.step(QuorumInput::DeleteTopics(names.clone()), |q| {
        q.delete_topics(&names)
    });
    let responses = names
        .iter()
        .zip(results)
        .map(|(name, result)| {
            let out = DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            match result {
                Ok(id) => out.with_topic_id(uuid::Uuid::from_bytes(id)),
                Err(error) => out.with_error_code(error.code()),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

fn create_partitions(
    server: &ControllerServer,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = r
        .topics
        .iter()
        .map(|t| {
            let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let result = if r.validate_only {
                server.validate(|q| q.create_partitions(&t.name, t.count))
            } else {
                let input = QuorumInput::CreatePartitions {
                    name: t.name.to_string(),
                    count: t.count,
                };
                server.step(input, |q| q.create_partitions(&t.name, t.count))
            };
            match result {
                Ok(()) => out,
                Err((error, message)) => out
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// Fetch of `__cluster_metadata`: what a KRaft broker reads to learn every decision. Records
/// are committed as soon as they are on the single voter's disk, so the high watermark is the
/// log end. Long-polls up to `max_wait_ms` when there is nothing new.
async fn fetch_metadata(server: &ControllerServer, r: FetchRequest) -> FetchResponse {
    let wanted = r.topics.iter().find_map(|t| {
        (t.topic.as_str() == METADATA_TOPIC)
            .then(|| t.partitions.iter().find(|p| p.partition == 0))
            .flatten()
    });
    let Some(wanted) = wanted else {
        return FetchResponse::default().with_error_code(Errors::UnknownTopicOrPartition.code());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let max_bytes = wanted.partition_max_bytes.max(1) as usize;
    loop {
        let appended = server.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let read = server.lock().log.read(wanted.fetch_offset, max_bytes);
        let data = PartitionData::default().with_partition_index(0);
        let data = match read {
            Ok((records, end))
                if !records.is_empty() || tokio::time::Instant::now() >= deadline =>
            {
                data.with_high_watermark(end)
                    .with_last_stable_offset(end)
                    .with_records(Some(records))
            }
            Ok(_) => {
                tokio::select! {
                    _ = appended => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                continue;
            }
            Err(e) => data.with_error_code(e.error().code()),
        };
        let topic = FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![data]);
        return FetchResponse::default().with_responses(vec![topic]);
    }
}

/// DescribeCluster on the controller listener (KIP-919): how a broker learns the cluster id it
/// must register with before it has any metadata.
fn describe_cluster(server: &ControllerServer) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(server.cluster_id().to_string()))
        .with_controller_id(BrokerId(server.config().node_id))
}
