//! Metadata: this broker, the topics asked for (auto-creating unknown ones when allowed, as
//! Kafka does on a Metadata request), and each partition led by this broker.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;

use super::topic_config::TopicConfig;
use super::topics::{Topic, TopicError};
use super::{Broker, now_ms};

pub fn handle(broker: &Broker, request: MetadataRequest, version: i16) -> MetadataResponse {
    let config = broker.config();
    let node = BrokerId(config.node_id);
    let topics = match request.topics {
        // v0 has no null: an empty list means every topic.
        None => all_topics(broker),
        Some(list) if list.is_empty() && version == 0 => all_topics(broker),
        Some(list) => list
            .into_iter()
            .map(|t| {
                let auto_create = version < 4 || request.allow_auto_topic_creation;
                match t.name {
                    Some(name) => lookup(broker, &name, auto_create),
                    None => match broker
                        .topics()
                        .all()
                        .into_iter()
                        .find(|x| x.id == t.topic_id)
                    {
                        Some(topic) => describe(broker, &topic),
                        None => MetadataResponseTopic::default()
                            .with_error_code(Errors::UnknownTopicId.code())
                            .with_name(None)
                            .with_topic_id(t.topic_id),
                    },
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(node)
                .with_host(StrBytes::from_string(config.advertised.0.clone()))
                .with_port(i32::from(config.advertised.1)),
        ])
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
}

fn all_topics(broker: &Broker) -> Vec<MetadataResponseTopic> {
    broker
        .topics()
        .all()
        .iter()
        .map(|t| describe(broker, t))
        .collect()
}

fn lookup(broker: &Broker, name: &TopicName, auto_create: bool) -> MetadataResponseTopic {
    if let Some(topic) = broker.topics().get(name) {
        return describe(broker, &topic);
    }
    let unknown = |error: Errors| {
        MetadataResponseTopic::default()
            .with_error_code(error.code())
            .with_name(Some(name.clone()))
    };
    if !(auto_create && broker.creates_topics_on_demand()) {
        return unknown(Errors::UnknownTopicOrPartition);
    }
    if name.as_str() == super::group::OFFSETS_TOPIC {
        // Created as the group coordinator needs it, never with the defaults of a user topic.
        return match broker.offsets_topic() {
            Ok(topic) => describe(broker, &topic),
            Err(error) => unknown(error),
        };
    }
    let partitions = broker.config().num_partitions;
    match broker
        .topics()
        .create(name, partitions, TopicConfig::default(), false, now_ms())
    {
        Ok(topic) => {
            broker.notify_fetchers();
            tracing::info!(
                "auto-created topic '{}' with {partitions} partitions",
                &**name
            );
            describe(broker, &topic)
        }
        // Another request created it first.
        Err(TopicError::AlreadyExists) => match broker.topics().get(name) {
            Some(topic) => describe(broker, &topic),
            // Deleted meanwhile; the client retries.
            None => unknown(Errors::LeaderNotAvailable),
        },
        Err(e) => unknown(e.error()),
    }
}

fn describe(_broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let nodes = |ids: &[u32]| {
        ids.iter()
            .map(|&id| BrokerId(id as i32))
            .collect::<Vec<_>>()
    };
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == super::group::OFFSETS_TOPIC)
        .with_partitions(
            topic
                .hosted()
                .map(|(index, partition)| {
                    // Who leads, in which epoch, and with which ISR: the replica's view.
                    let leadership = partition.leadership();
                    let answer = MetadataResponsePartition::default()
                        .with_partition_index(index)
                        .with_leader_epoch(leadership.leader_epoch)
                        .with_replica_nodes(nodes(&leadership.replicas))
                        .with_isr_nodes(nodes(&leadership.isr));
                    match leadership.leader {
                        Some(leader) => answer.with_leader_id(BrokerId(leader as i32)),
                        None => answer
                            .with_leader_id(BrokerId(-1))
                            .with_error_code(Errors::LeaderNotAvailable.code()),
                    }
                })
                .collect(),
        )
}
