//! Topic administration in a cluster: the controller decides, so a broker forwards the
//! request it received (at the client's version) and relays the answer, as a KRaft broker
//! does. It then waits briefly for the metadata log to show the change, so a client that
//! creates a topic and produces to it at once finds it.

use std::time::Duration;

use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};
use surety_core::errors::Errors;

use super::ClusterLink;
use crate::client::Connection;

/// Sends `request` to the controller at `version`.
pub async fn send<R>(link: &ClusterLink, request: R, version: i16) -> anyhow::Result<R::Response>
where
    R: Request + Encodable + HeaderVersion,
    R::Response: Decodable + HeaderVersion,
{
    let mut conn = Connection::connect(&link.controller, &format!("broker-{}", link.me)).await?;
    tokio::time::timeout(Duration::from_secs(30), conn.send_at(request, version))
        .await
        .map_err(|_| anyhow::anyhow!("the controller did not answer"))?
}

/// CreateTopics through the controller.
pub async fn create_topics(
    link: &ClusterLink,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let names: Vec<String> = request.topics.iter().map(|t| t.name.to_string()).collect();
    let validate_only = request.validate_only;
    match send(link, request.clone(), version).await {
        Ok(response) => {
            if !validate_only {
                let created: Vec<String> = response
                    .topics
                    .iter()
                    .filter(|t| t.error_code == 0)
                    .map(|t| t.name.to_string())
                    .collect();
                link.wait_for(Duration::from_secs(5), |image| {
                    created.iter().all(|n| {
                        image
                            .topic(n)
                            .is_some_and(|t| t.partitions.iter().all(|p| p.state.leader.is_some()))
                    })
                })
                .await;
            }
            response
        }
        Err(e) => {
            tracing::warn!("forwarding CreateTopics: {e:#}");
            let topics = names
                .into_iter()
                .map(|name| {
                    kafka_protocol::messages::create_topics_response::CreatableTopicResult::default(
                    )
                    .with_name(kafka_protocol::messages::TopicName(
                        kafka_protocol::protocol::StrBytes::from_string(name),
                    ))
                    .with_error_code(Errors::RequestTimedOut.code())
                })
                .collect();
            CreateTopicsResponse::default().with_topics(topics)
        }
    }
}

/// DeleteTopics through the controller.
pub async fn delete_topics(
    link: &ClusterLink,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    match send(link, request, version).await {
        Ok(response) => {
            let deleted: Vec<String> = response
                .responses
                .iter()
                .filter(|t| t.error_code == 0)
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .collect();
            link.wait_for(Duration::from_secs(5), |image| {
                deleted.iter().all(|n| image.topic(n).is_none())
            })
            .await;
            response
        }
        Err(e) => {
            tracing::warn!("forwarding DeleteTopics: {e:#}");
            DeleteTopicsResponse::default()
        }
    }
}

/// CreatePartitions through the controller.
pub async fn create_partitions(
    link: &ClusterLink,
    request: CreatePartitionsRequest,
    version: i16,
) -> CreatePartitionsResponse {
    match send(link, request, version).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!("forwarding CreatePartitions: {e:#}");
            CreatePartitionsResponse::default()
        }
    }
}
