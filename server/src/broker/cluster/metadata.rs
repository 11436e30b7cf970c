//! The metadata log as a broker reads it, and the Metadata answers it gives from it.

use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::cluster::{MetadataImage, TopicImage};
use surety_core::errors::Errors;

use super::{ClusterLink, error_of};
use crate::broker::Broker;
use crate::client::Connection;
use crate::controller::metadata_log::{METADATA_TOPIC, for_each_record};

/// One Fetch of the metadata log from where the image ends; applies what it returns.
pub async fn fetch_and_apply(link: &ClusterLink, conn: &mut Connection) -> anyhow::Result<()> {
    let from = link.image().next_offset();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(8 * 1024 * 1024)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(from)
                        .with_partition_max_bytes(8 * 1024 * 1024),
                ]),
        ]);
    let response = tokio::time::timeout(Duration::from_secs(30), conn.send_at(request, 12))
        .await
        .map_err(|_| anyhow::anyhow!("no answer"))??;
    let error = error_of(response.error_code);
    if error != Errors::None {
        anyhow::bail!("{error:?}");
    }
    let Some(data) = response
        .responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == 0)
    else {
        anyhow::bail!("no metadata partition in the answer");
    };
    let error = error_of(data.error_code);
    if error != Errors::None {
        anyhow::bail!("{error:?}");
    }
    let mut records = Vec::new();
    if let Some(bytes) = data.records {
        for_each_record(bytes, |offset, record| records.push((offset, record)))?;
    }
    let changes = {
        let mut image = link.image.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        for (offset, record) in records {
            if offset < image.next_offset() {
                continue;
            }
            changes.extend(image.apply(offset, &record));
        }
        changes
    };
    let caught_up = link.image().next_offset() >= data.high_watermark;
    link.act_on(changes);
    if caught_up
        && !link
            .caught_up
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        tracing::info!(
            "caught up with the metadata log at offset {}",
            data.high_watermark
        );
    }
    Ok(())
}

/// Metadata from the image: every live broker, each partition's leader, replicas, ISR and
/// leader epoch as the controller last recorded them. Unknown topics are created through the
/// controller when allowed, as a KRaft broker forwards the creation.
pub async fn handle(
    broker: &Broker,
    link: &ClusterLink,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let auto_create =
        (version < 4 || request.allow_auto_topic_creation) && broker.config().auto_create_topics;
    let wanted: Option<Vec<TopicName>> = match &request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list.iter().filter_map(|t| t.name.clone()).collect()),
    };
    if auto_create && let Some(names) = &wanted {
        let missing: Vec<TopicName> = names
            .iter()
            .filter(|n| link.image().topic(n).is_none())
            .cloned()
            .collect();
        if !missing.is_empty() {
            create_on_demand(broker, link, &missing).await;
        }
    }
    let image = link.image();
    let topics = match &request.topics {
        None => image.topics().map(describe).collect(),
        Some(list) if list.is_empty() && version == 0 => image.topics().map(describe).collect(),
        Some(list) => list
            .iter()
            .map(|t| {
                let found = match &t.name {
                    Some(name) => image.topic(name),
                    None => image.topic_by_id(t.topic_id.as_bytes()),
                };
                match found {
                    Some(topic) => describe(topic),
                    None => MetadataResponseTopic::default()
                        .with_error_code(if t.name.is_some() {
                            Errors::UnknownTopicOrPartition.code()
                        } else {
                            Errors::UnknownTopicId.code()
                        })
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers(&image))
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(
            broker
                .config()
                .cluster
                .voters
                .first()
                .map_or(-1, |(id, _, _)| *id),
        ))
        .with_topics(topics)
}

fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .live_brokers()
        .into_iter()
        .map(|(id, b)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id as i32))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect()
}

fn describe(topic: &TopicImage) -> MetadataResponseTopic {
    let nodes = |ids: &mut dyn Iterator<Item = u32>| ids.map(|id| BrokerId(id as i32)).collect();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let answer = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_epoch(p.state.leader_epoch)
                .with_replica_nodes(nodes(&mut p.replicas.iter().copied()))
                .with_isr_nodes(nodes(&mut p.state.isr.iter().copied()));
            match p.state.leader {
                Some(leader) => answer.with_leader_id(BrokerId(leader as i32)),
                None => answer
                    .with_leader_id(BrokerId(-1))
                    .with_error_code(Errors::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(uuid::Uuid::from_bytes(topic.topic_id))
        .with_is_internal(topic.name == crate::broker::group::OFFSETS_TOPIC)
        .with_partitions(partitions)
}

/// Asks the controller to create `names` with the broker's defaults, then waits briefly for
/// the metadata log to show them (a client that still finds nothing retries).
async fn create_on_demand(broker: &Broker, link: &ClusterLink, names: &[TopicName]) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let config = broker.config();
    let topics = names
        .iter()
        .map(|name| {
            // Asked for by name, `__consumer_offsets` is created as FindCoordinator creates
            // it: its own partition count, replication factor and configs.
            if name.as_str() == crate::broker::group::OFFSETS_TOPIC {
                return crate::broker::group::offsets_topic_creation(&config.group);
            }
            CreatableTopic::default()
                .with_name(name.clone())
                .with_num_partitions(config.num_partitions)
                .with_replication_factor(config.default_replication_factor)
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(30_000);
    match super::forward::send(link, request, 7).await {
        Ok(response) => {
            for t in &response.topics {
                if t.error_code == 0 {
                    tracing::info!("auto-created topic '{}'", t.name.as_str());
                }
            }
        }
        Err(e) => tracing::warn!("auto-creating topics: {e:#}"),
    }
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    link.wait_for(Duration::from_secs(2), |image| {
        names.iter().all(|n| {
            image
                .topic(n)
                .is_none_or(|t| t.partitions.iter().all(|p| p.state.leader.is_some()))
        })
    })
    .await;
}
