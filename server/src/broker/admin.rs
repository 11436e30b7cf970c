//! CreateTopics, DeleteTopics and DescribeConfigs.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;

use super::topic_config::{TOPIC_CONFIG_KEYS, TopicConfig, effective_value};
use super::topics::TopicError;
use super::{Broker, message_if, now_ms};
use crate::config::BROKER_CONFIG_KEYS;

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// The STRING config type: every value is reported as Kafka prints it.
const TYPE_STRING: i8 = 2;

pub fn create_topics(
    broker: &Broker,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let config = broker.config();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = if t.num_partitions == -1 {
                config.num_partitions
            } else {
                t.num_partitions
            };
            let replication = if t.replication_factor == -1 {
                config.default_replication_factor
            } else {
                t.replication_factor
            };
            let result = (|| {
                if replication != 1 {
                    return Err(TopicError::InvalidReplicationFactor(replication));
                }
                if t.assignments
                    .iter()
                    .any(|a| a.broker_ids.iter().any(|b| b.0 != config.node_id))
                {
                    return Err(TopicError::InvalidConfig(
                        "replica assignments may name only this broker".into(),
                    ));
                }
                let partitions = if t.assignments.is_empty() {
                    partitions
                } else {
                    t.assignments.len() as i32
                };
                let pairs = t.configs.iter().map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_deref().unwrap_or_default().to_string(),
                    )
                });
                let topic_config = TopicConfig::from_pairs(pairs, broker.topics().defaults())
                    .map_err(TopicError::InvalidConfig)?;
                broker.topics().create(
                    &t.name,
                    partitions,
                    topic_config,
                    request.validate_only,
                    now_ms(),
                )
            })();
            let base = CreatableTopicResult::default().with_name(t.name.clone());
            match result {
                Ok(topic) => {
                    if !request.validate_only {
                        tracing::info!(
                            "created topic '{}' with {partitions} partitions",
                            topic.name
                        );
                    }
                    let base = base.with_topic_id(topic.id);
                    if version < 5 {
                        return base;
                    }
                    let log_config = topic.config.log_config(broker.topics().defaults());
                    let min_isr = topic
                        .config
                        .min_insync_replicas(broker.config().min_insync_replicas);
                    base.with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(
                            TOPIC_CONFIG_KEYS
                                .iter()
                                .map(|(key, _)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(key))
                                        .with_value(
                                            effective_value(&log_config, min_isr, key)
                                                .map(StrBytes::from_string),
                                        )
                                        .with_config_source(if topic.config.get(key).is_some() {
                                            SOURCE_TOPIC
                                        } else {
                                            SOURCE_DEFAULT
                                        })
                                })
                                .collect(),
                        ))
                }
                Err(e) => base
                    .with_error_code(e.error().code())
                    .with_error_message(message_if(version, 1, e.to_string())),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// CreatePartitions on a single node: the topic grows to the requested count.
pub fn create_partitions(
    broker: &Broker,
    request: kafka_protocol::messages::CreatePartitionsRequest,
) -> kafka_protocol::messages::CreatePartitionsResponse {
    use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
    let results = request
        .topics
        .iter()
        .map(|t| {
            let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let current = broker
                .topics()
                .get(&t.name)
                .map(|topic| topic.partitions.len());
            let result = if !t.assignments.as_ref().is_none_or(|a| {
                a.iter()
                    .all(|p| p.broker_ids.iter().all(|b| b.0 == broker.config().node_id))
            }) {
                Err((
                    Errors::InvalidReplicaAssignment,
                    "replica assignments may name only this broker".to_string(),
                ))
            } else if request.validate_only {
                match current {
                    Some(n) if t.count as usize > n => Ok(()),
                    Some(n) => Err((
                        Errors::InvalidPartitions,
                        format!(
                            "Topic currently has {n} partitions, which is higher than the \
                             requested {}.",
                            t.count
                        ),
                    )),
                    None => Err((Errors::UnknownTopicOrPartition, String::new())),
                }
            } else {
                broker
                    .topics()
                    .add_partitions(&t.name, t.count, now_ms())
                    .map(|_| broker.notify_fetchers())
                    .map_err(|e| {
                        let message = match (&e, current) {
                            (TopicError::InvalidPartitions(_), Some(n)) => format!(
                                "Topic currently has {n} partitions, which is higher than the \
                                 requested {}.",
                                t.count
                            ),
                            _ => e.to_string(),
                        };
                        (e.error(), message)
                    })
            };
            match result {
                Ok(()) => out,
                Err((error, message)) => out
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    kafka_protocol::messages::CreatePartitionsResponse::default().with_results(results)
}

pub fn delete_topics(
    broker: &Broker,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut names: Vec<(Option<TopicName>, uuid::Uuid)> = request
        .topic_names
        .into_iter()
        .map(|n| (Some(n), uuid::Uuid::nil()))
        .collect();
    names.extend(request.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let responses = names
        .into_iter()
        .map(|(name, id)| {
            let name = name.or_else(|| {
                broker
                    .topics()
                    .all()
                    .into_iter()
                    .find(|t| t.id == id)
                    .map(|t| TopicName(StrBytes::from_string(t.name.clone())))
            });
            let base = DeletableTopicResult::default()
                .with_name(name.clone())
                .with_topic_id(id);
            let Some(name) = name else {
                return base.with_error_code(Errors::UnknownTopicId.code());
            };
            if name.as_str() == super::group::OFFSETS_TOPIC {
                // Its groups' coordinators write to it; deleting it would lose every group.
                return base
                    .with_error_code(Errors::InvalidTopicException.code())
                    .with_error_message(message_if(
                        version,
                        5,
                        format!("the internal topic {} cannot be deleted", &*name),
                    ));
            }
            match broker.topics().delete(&name, now_ms()) {
                Ok(topic) => {
                    tracing::info!("deleted topic '{}'", topic.name);
                    base.with_topic_id(if version >= 6 { topic.id } else { id })
                }
                Err(e) => base
                    .with_error_code(e.error().code())
                    .with_error_message(message_if(version, 5, e.to_string())),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn describe_configs(
    broker: &Broker,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            // Null or empty: every config (an empty filter would ask for nothing at all).
            let wanted = |key: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| &**k == key))
            };
            let entry =
                |name: &str, value: String, source: i8, synonyms: Vec<(String, String, i8)>| {
                    let mut e = DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(name.to_string()))
                        .with_value(Some(StrBytes::from_string(value)))
                        .with_config_source(source)
                        .with_read_only(r.resource_type == RESOURCE_BROKER);
                    if version >= 3 {
                        e = e.with_config_type(TYPE_STRING);
                    }
                    if version >= 1 && request.include_synonyms {
                        e = e.with_synonyms(
                            synonyms
                                .into_iter()
                                .map(|(n, v, s)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(StrBytes::from_string(n))
                                        .with_value(Some(StrBytes::from_string(v)))
                                        .with_source(s)
                                })
                                .collect(),
                        );
                    }
                    e
                };
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = broker.topics().get(&r.resource_name) else {
                        return base
                            .with_error_code(Errors::UnknownTopicOrPartition.code())
                            .with_error_message(Some(StrBytes::from_static_str("unknown topic")));
                    };
                    let log_config = topic.config.log_config(broker.topics().defaults());
                    let configs = TOPIC_CONFIG_KEYS
                        .iter()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, broker_key)| {
                            let broker_min_isr = broker.config().min_insync_replicas;
                            let min_isr = topic.config.min_insync_replicas(broker_min_isr);
                            let value =
                                effective_value(&log_config, min_isr, key).unwrap_or_default();
                            let defaults = broker.topics().defaults();
                            let broker_value =
                                effective_value(defaults, broker_min_isr, key).unwrap_or_default();
                            let broker_source =
                                if broker.config().explicit.contains_key(*broker_key) {
                                    SOURCE_STATIC_BROKER
                                } else {
                                    SOURCE_DEFAULT
                                };
                            let mut synonyms = Vec::new();
                            let source = match topic.config.get(key) {
                                Some(v) => {
                                    synonyms.push((key.to_string(), v.to_string(), SOURCE_TOPIC));
                                    SOURCE_TOPIC
                                }
                                None => broker_source,
                            };
                            synonyms.push((broker_key.to_string(), broker_value, broker_source));
                            entry(key, value, source, synonyms)
                        })
                        .collect();
                    base.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    if *r.resource_name != broker.config().node_id.to_string()
                        && !r.resource_name.is_empty()
                    {
                        return base
                            .with_error_code(Errors::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "not this broker's id",
                            )));
                    }
                    let configs = BROKER_CONFIG_KEYS
                        .iter()
                        .filter(|k| wanted(k.name))
                        .map(|k| match broker.config().explicit.get(k.name) {
                            Some(v) => entry(k.name, v.clone(), SOURCE_STATIC_BROKER, Vec::new()),
                            None => {
                                entry(k.name, k.default.to_string(), SOURCE_DEFAULT, Vec::new())
                            }
                        })
                        .collect();
                    base.with_configs(configs)
                }
                other => base
                    .with_error_code(Errors::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
