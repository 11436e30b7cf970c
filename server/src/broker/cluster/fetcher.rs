//! The replica fetcher: one task per leader this broker follows, turning its replicas'
//! `Msg::Fetch` into Kafka Fetch requests with this broker's replica id (one request for every
//! partition waiting, as Kafka's fetcher thread does), and each partition of the answer back
//! into the `Msg::FetchResponse` the replica expects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::replication::{BrokerId as NodeId, EpochEndOffset, FetchResult, Msg, Node};
use tokio::sync::mpsc;

use super::{ClusterLink, error_of};
use crate::broker::now_ms;
use crate::client::Connection;

/// What the fetcher is asked to do.
pub enum Command {
    /// A replica's fetch for its partition.
    Fetch {
        /// The topic.
        topic: String,
        /// The partition.
        index: i32,
        /// The replica's `Msg::Fetch`.
        msg: Msg,
    },
}

/// The fetch the replica asked for, as it goes on the wire.
#[derive(Clone, Copy)]
struct Wanted {
    current_leader_epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: Option<i32>,
}

/// Runs the fetcher for `leader` until the link goes away.
pub async fn run(
    link: Arc<ClusterLink>,
    leader: NodeId,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut pending: BTreeMap<(String, i32), Wanted> = BTreeMap::new();
    let mut conn: Option<Connection> = None;
    loop {
        if pending.is_empty() {
            match commands.recv().await {
                Some(command) => take(&mut pending, command),
                None => return,
            }
        }
        while let Ok(command) = commands.try_recv() {
            take(&mut pending, command);
        }
        let in_flight = std::mem::take(&mut pending);
        match fetch(&link, leader, &mut conn, &in_flight).await {
            Ok(response) => {
                if deliver(&link, leader, &in_flight, response, &mut pending) {
                    // An epoch the leader does not know yet: give it a moment.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err(e) => {
                tracing::debug!("fetching from broker {leader}: {e:#}");
                conn = None;
                tokio::time::sleep(link.backoff()).await;
                // Whatever was in flight is lost: each replica resends what it still needs.
                for (topic, index) in in_flight.keys() {
                    if let Some(p) = link.partition(topic, *index) {
                        p.on_peer_disconnect(Node::Broker(leader), now_ms());
                    }
                }
            }
        }
    }
}

fn take(pending: &mut BTreeMap<(String, i32), Wanted>, command: Command) {
    let Command::Fetch { topic, index, msg } = command;
    if let Msg::Fetch {
        current_leader_epoch,
        fetch_offset,
        last_fetched_epoch,
        ..
    } = msg
    {
        pending.insert(
            (topic, index),
            Wanted {
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            },
        );
    }
}

async fn fetch(
    link: &ClusterLink,
    leader: NodeId,
    conn: &mut Option<Connection>,
    wanted: &BTreeMap<(String, i32), Wanted>,
) -> anyhow::Result<FetchResponse> {
    if conn.is_none() {
        let address = link
            .image()
            .broker(leader)
            .map(|b| format!("{}:{}", b.host, b.port))
            .ok_or_else(|| anyhow::anyhow!("broker {leader} is not registered"))?;
        *conn = Some(Connection::connect(&address, &format!("replica-fetcher-{}", link.me)).await?);
    }
    let conn = conn.as_mut().expect("connected above");
    let settings = &link.config.cluster;
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, index), w) in wanted {
        topics.entry(topic).or_default().push(
            FetchPartition::default()
                .with_partition(*index)
                .with_current_leader_epoch(w.current_leader_epoch)
                .with_fetch_offset(w.fetch_offset)
                .with_last_fetched_epoch(w.last_fetched_epoch.unwrap_or(-1))
                .with_partition_max_bytes(settings.replica_fetch_max_bytes as i32),
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(link.me as i32))
        .with_max_wait_ms(settings.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let wait = Duration::from_millis(settings.replica_fetch_wait_max_ms) + Duration::from_secs(30);
    tokio::time::timeout(wait, conn.send_at(request, 12))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {wait:?}"))?
}

/// Hands each partition's answer to its replica; a partition the leader did not answer is
/// asked for again. Returns whether any partition had an error.
fn deliver(
    link: &ClusterLink,
    leader: NodeId,
    in_flight: &BTreeMap<(String, i32), Wanted>,
    response: FetchResponse,
    pending: &mut BTreeMap<(String, i32), Wanted>,
) -> bool {
    let mut any_error = false;
    let now = now_ms();
    let mut answered = std::collections::BTreeSet::new();
    for topic in response.responses {
        for p in topic.partitions {
            let key = (topic.topic.to_string(), p.partition_index);
            let Some(wanted) = in_flight.get(&key) else {
                continue;
            };
            answered.insert(key.clone());
            let error = error_of(p.error_code);
            any_error |= error != Errors::None;
            let result = if error != Errors::None {
                FetchResult::Error(error)
            } else if p.diverging_epoch.epoch >= 0 {
                FetchResult::Diverging(EpochEndOffset {
                    epoch: p.diverging_epoch.epoch,
                    end_offset: p.diverging_epoch.end_offset,
                })
            } else {
                FetchResult::Records {
                    high_watermark: p.high_watermark,
                    records: p.records.unwrap_or_default(),
                }
            };
            let Some(partition) = link.partition(&key.0, key.1) else {
                continue;
            };
            let retry = matches!(result, FetchResult::Error(e)
                if !matches!(e, Errors::FencedLeaderEpoch | Errors::UnknownLeaderEpoch));
            partition.on_peer_message(
                Node::Broker(leader),
                Msg::FetchResponse {
                    leader_epoch: wanted.current_leader_epoch,
                    fetch_offset: wanted.fetch_offset,
                    result,
                },
                now,
            );
            if retry {
                // Not leader (yet), unknown partition: the leader may not have read the
                // metadata this follower has; ask again after a back-off, as Kafka's fetcher.
                let link_partition = partition.clone();
                let backoff = link.backoff();
                link.runtime.spawn(async move {
                    tokio::time::sleep(backoff).await;
                    link_partition.on_peer_disconnect(Node::Broker(leader), now_ms());
                });
            }
        }
    }
    for (key, wanted) in in_flight {
        if !answered.contains(key) {
            pending.entry(key.clone()).or_insert(*wanted);
        }
    }
    any_error
}
