//! `surety topics create|list|describe|delete`, as `kafka-topics.sh`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;

use super::{DEFAULT_BOOTSTRAP, TopicArg, connect, error_name, topic_name};

/// Arguments of `surety topics`.
#[derive(Args)]
pub struct TopicsArgs {
    /// Brokers to contact, host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, global = true)]
    bootstrap_server: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create a topic.
    Create {
        #[command(flatten)]
        topic: TopicArg,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// A topic config as key=value (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topic names.
    List,
    /// Describe topics (all, or those named).
    Describe {
        /// Topics to describe.
        topics: Vec<String>,
        /// A topic to describe, as Kafka's tools spell it (repeatable).
        #[arg(long = "topic", value_name = "TOPIC")]
        topic_flags: Vec<String>,
    },
    /// Delete a topic.
    Delete {
        #[command(flatten)]
        topic: TopicArg,
    },
    /// Add partitions to a topic (`kafka-topics --alter --partitions N`).
    Alter {
        #[command(flatten)]
        topic: TopicArg,
        /// The new number of partitions (more than it has).
        #[arg(long)]
        partitions: i32,
    },
}

/// Runs `surety topics`.
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let mut conn = connect(&args.bootstrap_server, "surety-topics").await?;
    match args.action {
        Action::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let topic = topic.name();
            let configs = configs
                .iter()
                .map(|c| {
                    let (k, v) = c
                        .split_once('=')
                        .with_context(|| format!("--config {c}: expected key=value"))?;
                    Ok(CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string()))))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let response = conn
                .send(
                    CreateTopicsRequest::default()
                        .with_topics(vec![
                            CreatableTopic::default()
                                .with_name(topic_name(topic))
                                .with_num_partitions(partitions)
                                .with_replication_factor(replication_factor)
                                .with_configs(configs),
                        ])
                        .with_timeout_ms(30_000),
                )
                .await?;
            for t in response.topics {
                if t.error_code != Errors::None.code() {
                    bail!(
                        "cannot create topic '{}': {}{}",
                        &*t.name,
                        error_name(t.error_code),
                        t.error_message
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                }
                println!("Created topic {}.", &*t.name);
            }
        }
        Action::List => {
            let response = conn
                .send(MetadataRequest::default().with_topics(None))
                .await?;
            let mut names: Vec<String> = response
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .collect();
            names.sort();
            for name in names {
                println!("{name}");
            }
        }
        Action::Describe {
            mut topics,
            topic_flags,
        } => {
            topics.extend(topic_flags);
            let request = if topics.is_empty() {
                MetadataRequest::default().with_topics(None)
            } else {
                MetadataRequest::default().with_topics(Some(
                    topics
                        .iter()
                        .map(|t| {
                            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                                .with_name(Some(topic_name(t)))
                        })
                        .collect(),
                ))
            };
            let response = conn
                .send(request.with_allow_auto_topic_creation(false))
                .await?;
            for t in response.topics {
                let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                if t.error_code != Errors::None.code() {
                    println!("Topic: {name}\tError: {}", error_name(t.error_code));
                    continue;
                }
                println!(
                    "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}",
                    t.topic_id,
                    t.partitions.len(),
                    t.partitions.first().map_or(0, |p| p.replica_nodes.len())
                );
                for p in t.partitions {
                    let ids = |v: &[kafka_protocol::messages::BrokerId]| {
                        v.iter()
                            .map(|b| b.0.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    println!(
                        "\tTopic: {name}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                        p.partition_index,
                        p.leader_id.0,
                        ids(&p.replica_nodes),
                        ids(&p.isr_nodes)
                    );
                }
            }
        }
        Action::Alter { topic, partitions } => {
            let topic = topic.name();
            use kafka_protocol::messages::CreatePartitionsRequest;
            use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
            let response = conn
                .send(
                    CreatePartitionsRequest::default()
                        .with_topics(vec![
                            CreatePartitionsTopic::default()
                                .with_name(topic_name(topic))
                                .with_count(partitions),
                        ])
                        .with_timeout_ms(30_000),
                )
                .await?;
            for r in response.results {
                if r.error_code != Errors::None.code() {
                    bail!(
                        "cannot add partitions to '{topic}': {}{}",
                        error_name(r.error_code),
                        r.error_message
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                }
                println!("Topic {topic} now has {partitions} partitions.");
            }
        }
        Action::Delete { topic } => {
            let topic = topic.name();
            let version = conn.version_of::<DeleteTopicsRequest>()?;
            let request = if version >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    DeleteTopicState::default().with_name(Some(topic_name(topic))),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![topic_name(topic)])
            };
            let response = conn.send(request.with_timeout_ms(30_000)).await?;
            for r in response.responses {
                if r.error_code != Errors::None.code() {
                    bail!(
                        "cannot delete topic '{topic}': {}",
                        error_name(r.error_code)
                    );
                }
                println!("Deleted topic {topic}.");
            }
        }
    }
    Ok(())
}
