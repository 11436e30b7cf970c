//! OffsetCommit, OffsetFetch and OffsetDelete.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::group::{GroupMsg, TopicPartition};

use super::caller;
use super::driver::Groups;
use crate::broker::{Broker, now_ms};
use surety_core::group::stored::OffsetAndMetadata;

pub(crate) async fn offset_commit(
    broker: &Broker,
    request: OffsetCommitRequest,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> OffsetCommitResponse {
    let now = now_ms();
    // Partitions of topics the broker does not have are refused one by one, as Kafka does; the
    // rest form one commit.
    let mut errors: BTreeMap<(TopicName, i32), Errors> = BTreeMap::new();
    let mut commit = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            if !broker.partition_exists(&topic.name, p.partition_index) {
                errors.insert(
                    (topic.name.clone(), p.partition_index),
                    Errors::UnknownTopicOrPartition,
                );
                continue;
            }
            commit.push((
                TopicPartition {
                    topic: Arc::from(topic.name.as_str()),
                    partition: p.partition_index,
                },
                OffsetAndMetadata {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_deref()
                        .unwrap_or_default()
                        .to_string(),
                    commit_timestamp: now,
                },
            ));
        }
    }
    let outcome = if commit.is_empty() {
        Errors::None
    } else {
        match broker.group_for_write(&request.group_id) {
            Err(error) => error,
            Ok(entry) => {
                let caller = caller(client_id, peer, request.group_instance_id.as_deref());
                let offsets = commit
                    .iter()
                    .map(|(tp, o)| (tp.clone(), o.offset))
                    .collect();
                let member = request.member_id.to_string();
                let generation_id = request.generation_id_or_member_epoch;
                let instance: Option<Arc<str>> = request
                    .group_instance_id
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .map(Arc::from);
                let answer = broker
                    .groups
                    .call(&entry, caller, commit.clone(), |g| GroupMsg::OffsetCommit {
                        correlation_id: 0,
                        member_id: g.member_id(&member),
                        group_instance_id: instance.clone(),
                        generation_id,
                        offsets,
                    })
                    .await;
                match answer.map(|a| a.msg) {
                    Some(GroupMsg::OffsetCommitResponse { error, .. }) => error,
                    _ => super::UNANSWERED,
                }
            }
        }
    };
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = errors
                        .get(&(t.name.clone(), p.partition_index))
                        .copied()
                        .unwrap_or(outcome);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A topic's partitions with their committed offsets (`None`: none committed).
type TopicOffsets = (TopicName, Vec<(i32, Option<OffsetAndMetadata>)>);

/// One group's committed offsets for the partitions asked (`None`: every committed one).
struct Fetched {
    error: Errors,
    topics: Vec<TopicOffsets>,
}

fn fetch_group(broker: &Broker, group: &str, asked: Option<Vec<(TopicName, Vec<i32>)>>) -> Fetched {
    let entry = match broker.group_for_read(group) {
        Ok(entry) => entry,
        Err(error) => {
            return Fetched {
                error,
                topics: Vec::new(),
            };
        }
    };
    let lookup = |topic: &TopicName, partition: i32| {
        let tp = TopicPartition {
            topic: Arc::from(topic.as_str()),
            partition,
        };
        entry
            .as_ref()
            .and_then(|e| Groups::inspect(e, |g| g.committed(&tp)))
    };
    let topics = match asked {
        Some(asked) => asked
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, lookup(&topic, p)))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let all: Vec<TopicPartition> = entry
                .as_ref()
                .map(|e| {
                    Groups::inspect(e, |g| g.coordinator.committed().keys().cloned().collect())
                })
                .unwrap_or_default();
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetAndMetadata>)>> =
                BTreeMap::new();
            for tp in all {
                let name = TopicName(StrBytes::from_string(tp.topic.to_string()));
                let found = lookup(&name, tp.partition);
                by_topic
                    .entry(tp.topic.to_string())
                    .or_default()
                    .push((tp.partition, found));
            }
            by_topic
                .into_iter()
                .map(|(t, p)| (TopicName(StrBytes::from_string(t)), p))
                .collect()
        }
    };
    Fetched {
        error: Errors::None,
        topics,
    }
}

/// The partitions asked, each without a committed offset: what carries an error to a client
/// that reads errors per partition.
fn unanswered(asked: Option<Vec<(TopicName, Vec<i32>)>>) -> Vec<TopicOffsets> {
    asked
        .unwrap_or_default()
        .into_iter()
        .map(|(topic, partitions)| (topic, partitions.into_iter().map(|p| (p, None)).collect()))
        .collect()
}

pub(crate) fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let epoch = |o: &Option<OffsetAndMetadata>| o.as_ref().map_or(-1, |o| o.leader_epoch);
    let offset = |o: &Option<OffsetAndMetadata>| o.as_ref().map_or(-1, |o| o.offset);
    let metadata = |o: &Option<OffsetAndMetadata>| {
        Some(StrBytes::from_string(
            o.as_ref().map(|o| o.metadata.clone()).unwrap_or_default(),
        ))
    };
    if version >= 8 {
        // Batched groups (KIP-709).
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let asked = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let fetched = fetch_group(broker, &g.group_id, asked);
                let topics = fetched
                    .topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(p, o)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset(&o))
                                            .with_committed_leader_epoch(epoch(&o))
                                            .with_metadata(metadata(&o))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
                    .with_error_code(fetched.error.code())
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let asked = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let group: GroupId = request.group_id;
    let mut fetched = fetch_group(broker, &group, asked.clone());
    let partition_error = if version < 2 {
        // v0-1 have no group-level error: Kafka puts it on every partition asked.
        if fetched.error != Errors::None {
            fetched.topics = unanswered(asked);
        }
        fetched.error
    } else {
        Errors::None
    };
    let topics = fetched
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, o)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset(&o))
                                .with_committed_leader_epoch(if version >= 5 {
                                    epoch(&o)
                                } else {
                                    -1
                                })
                                .with_metadata(metadata(&o))
                                .with_error_code(partition_error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(fetched.error.code())
    } else {
        response
    }
}

pub(crate) async fn offset_delete(
    broker: &Broker,
    request: OffsetDeleteRequest,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> OffsetDeleteResponse {
    let refused = |error: Errors| OffsetDeleteResponse::default().with_error_code(error.code());
    let entry = match broker.group_for_read(&request.group_id) {
        Err(error) => return refused(error),
        Ok(None) => return refused(Errors::GroupIdNotFound),
        Ok(Some(entry)) => entry,
    };
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| TopicPartition {
                topic: Arc::from(t.name.as_str()),
                partition: p.partition_index,
            })
        })
        .collect();
    let caller = caller(client_id, peer, None);
    let answer = broker
        .groups
        .call(&entry, caller, Vec::new(), |_| GroupMsg::OffsetDelete {
            correlation_id: 0,
            partitions,
        })
        .await;
    let Some(GroupMsg::OffsetDeleteResponse {
        error, partitions, ..
    }) = answer.map(|a| a.msg)
    else {
        return refused(super::UNANSWERED);
    };
    if error != Errors::None {
        return refused(error);
    }
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let answered = t
                .partitions
                .iter()
                .map(|p| {
                    let error = partitions
                        .iter()
                        .find(|(tp, _)| {
                            &*tp.topic == t.name.as_str() && tp.partition == p.partition_index
                        })
                        .map_or(Errors::None, |(_, e)| *e);
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(answered)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
