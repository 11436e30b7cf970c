//! Kafka's command-line tools (`kafka-topics`, `kafka-console-producer`,
//! `kafka-console-consumer`) as subcommands. They speak the wire protocol like any client.

pub mod cluster;
pub mod consume;
pub mod groups;
pub mod perf;
pub mod produce;
pub mod topics;

use anyhow::{Context, bail};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;

use crate::client::Connection;

/// The default `--bootstrap-server`.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Connects to the first reachable of a comma-separated bootstrap list.
pub async fn connect(bootstrap: &str, client_id: &str) -> anyhow::Result<Connection> {
    let mut last = None;
    for address in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Connection::connect(address, client_id).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--bootstrap-server is empty")))
}

/// The topic a tool works on, as `--topic T` (how Kafka's tools and `surety perf` and
/// `surety groups` take it) or as a plain `T`.
#[derive(clap::Args, Clone, Debug)]
pub struct TopicArg {
    /// The topic (or `--topic TOPIC`).
    #[arg(
        value_name = "TOPIC",
        required_unless_present = "topic_flag",
        conflicts_with = "topic_flag"
    )]
    topic: Option<String>,
    /// The topic, as Kafka's tools spell it.
    #[arg(long = "topic", value_name = "TOPIC")]
    topic_flag: Option<String>,
}

impl TopicArg {
    /// The topic, however it was given.
    pub fn name(&self) -> &str {
        // clap requires exactly one of the two before any command runs.
        self.topic
            .as_deref()
            .or(self.topic_flag.as_deref())
            .unwrap_or_default()
    }
}

/// A topic name for the wire.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The metadata of one topic (without creating it) as (partition count, response).
pub async fn topic_metadata(
    conn: &mut Connection,
    topic: &str,
) -> anyhow::Result<(i32, MetadataResponse)> {
    let response = conn
        .send(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
                ]))
                .with_allow_auto_topic_creation(false),
        )
        .await
        .context("Metadata")?;
    let Some(t) = response.topics.first() else {
        bail!("no metadata for topic '{topic}'");
    };
    if t.error_code != Errors::None.code() {
        bail!("topic '{topic}': {}", error_name(t.error_code));
    }
    Ok((t.partitions.len() as i32, response))
}

/// Kafka's name for an error code.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(e) => format!("{e:?} ({code}): {e}"),
    }
}
