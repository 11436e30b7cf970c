//! The consumer-group APIs: each request is turned into a message for the group's core
//! `GroupCoordinator` (through [`driver::Groups`]) and its answer into the response at the
//! version the client asked for. What a member is told — its generation, its leader, its
//! assignment, whether its commit is fenced — is the coordinator's decision; these handlers
//! only translate names and formats.
//!
//! A group lives on partition `abs(hash(group.id)) % offsets.topic.num.partitions` of
//! `__consumer_offsets`, created on first use. Its requests are answered
//! `COORDINATOR_LOAD_IN_PROGRESS` until that partition has been read back (see [`driver`]).
//!
//! In a cluster, as in Kafka, a group's coordinator is whichever broker leads its partition:
//! FindCoordinator answers that leader from the metadata image, a broker loads the partitions
//! it comes to lead and unloads those it stops leading ([`Broker::load_groups`]), and a group
//! request reaching a broker that does not lead the group's partition is answered
//! `NOT_COORDINATOR`, which sends the client back to FindCoordinator.

mod admin;
pub(crate) mod driver;
mod membership;
mod offsets;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

pub(crate) use admin::{delete_groups, describe_groups, find_coordinator, list_groups};
pub(crate) use membership::{heartbeat, join_group, leave_group, sync_group};
pub(crate) use offsets::{offset_commit, offset_delete, offset_fetch};

use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::group::placement::offsets_partition_for;

use super::cluster::{ClusterLink, error_of};
use super::partition::Partition;
use super::topic_config::TopicConfig;
use super::topics::{Topic, TopicError};
use super::{Broker, now_ms};
use crate::config::GroupSettings;
use driver::{Caller, GroupEntry};

/// Kafka's internal topic of committed offsets and group metadata.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The answer to a request whose group was unloaded before the coordinator answered it (see
/// [`driver::Groups::call`]): Kafka's to a member waiting in a group it unloads, which sends
/// the client to find the group's new coordinator.
const UNANSWERED: Errors = Errors::NotCoordinator;

impl Broker {
    /// `__consumer_offsets`, created with `offsets.topic.*` settings if it does not exist yet.
    pub(crate) fn offsets_topic(&self) -> Result<Arc<Topic>, Errors> {
        if let Some(topic) = self.topics().get(OFFSETS_TOPIC) {
            return Ok(topic);
        }
        if self.cluster.is_some() {
            // In a cluster the controller creates it (see `create_offsets_topic`), and a
            // broker that hosts none of it coordinates no group.
            return Err(Errors::NotCoordinator);
        }
        let settings = self.groups.settings();
        let config =
            TopicConfig::from_pairs(offsets_topic_configs(settings), self.topics().defaults())
                .map_err(|e| {
                    tracing::error!("{OFFSETS_TOPIC}: {e}");
                    Errors::CoordinatorNotAvailable
                })?;
        let partitions = settings.offsets_topic_num_partitions;
        match self
            .topics()
            .create(OFFSETS_TOPIC, partitions, config, false, now_ms())
        {
            Ok(topic) => {
                tracing::info!("created {OFFSETS_TOPIC} with {partitions} partitions");
                self.groups.created(0..partitions);
                Ok(topic)
            }
            Err(TopicError::AlreadyExists) => self
                .topics()
                .get(OFFSETS_TOPIC)
                .ok_or(Errors::CoordinatorNotAvailable),
            Err(e) => {
                tracing::error!("creating {OFFSETS_TOPIC}: {e}");
                Err(Errors::CoordinatorNotAvailable)
            }
        }
    }

    /// The partition of `__consumer_offsets` holding `group`, if this broker leads it: what
    /// FindCoordinator asks on a single node, which Kafka answers whether or not the partition
    /// is loaded yet. The leadership is the partition's replica's own view (in a cluster, the
    /// metadata log's as last handed to it): the replica is what the group's writes go
    /// through, so a broker never coordinates a group whose writes it cannot make.
    fn coordinator_partition(&self, group: &str) -> Result<(i32, Arc<Partition>), Errors> {
        let topic = self.offsets_topic()?;
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let index = offsets_partition_for(group, count);
        // In a cluster the partition may be another broker's, never a replica of this one.
        let partition = topic
            .partition(index)
            .cloned()
            .ok_or(Errors::NotCoordinator)?;
        if partition.leadership().leader != Some(self.node()) {
            return Err(Errors::NotCoordinator);
        }
        Ok((index, partition))
    }

    /// The coordinator of `group` in a cluster, as FindCoordinator answers it: the leader of the
    /// group's `__consumer_offsets` partition in the metadata image, with its advertised
    /// listener. `COORDINATOR_NOT_AVAILABLE` while the topic does not exist (its creation is
    /// requested, as Kafka's first FindCoordinator does) or the partition has no live leader.
    fn cluster_coordinator(
        &self,
        link: &Arc<ClusterLink>,
        group: &str,
    ) -> Result<(i32, String, u16), Errors> {
        let image = link.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            drop(image);
            self.create_offsets_topic(link);
            return Err(Errors::CoordinatorNotAvailable);
        };
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let index = offsets_partition_for(group, count);
        let leader = topic
            .partition(index)
            .and_then(|p| p.state.leader)
            .ok_or(Errors::CoordinatorNotAvailable)?;
        let broker = image
            .broker(leader)
            .filter(|b| !b.fenced)
            .ok_or(Errors::CoordinatorNotAvailable)?;
        Ok((
            i32::try_from(leader).unwrap_or(-1),
            broker.host.clone(),
            broker.port,
        ))
    }

    /// Asks the controller, in the background, to create `__consumer_offsets`; the client
    /// meanwhile hears `COORDINATOR_NOT_AVAILABLE` and asks again, as Kafka's does.
    ///
    /// The replication factor is `offsets.topic.replication.factor` as configured, never
    /// lowered to the brokers there are: Kafka's rule (KIP-115), so that a cluster whose
    /// brokers are still registering does not get a topic with fewer replicas than asked,
    /// which it would keep. Until enough brokers are live the controller refuses with
    /// `INVALID_REPLICATION_FACTOR`; this is logged, and the next FindCoordinator asks again.
    /// A smaller cluster sets `offsets.topic.replication.factor` lower.
    fn create_offsets_topic(&self, link: &Arc<ClusterLink>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.groups.may_create_offsets_topic() {
            return;
        }
        let request = CreateTopicsRequest::default()
            .with_topics(vec![offsets_topic_creation(self.groups.settings())])
            .with_timeout_ms(30_000);
        let (link, groups) = (link.clone(), self.groups.clone());
        let replication = self.groups.settings().offsets_topic_replication_factor;
        runtime.spawn(async move {
            match super::cluster::forward::send(&link, request, 7).await {
                Ok(response) => {
                    for t in &response.topics {
                        match error_of(t.error_code) {
                            Errors::None => tracing::info!("created {OFFSETS_TOPIC}"),
                            Errors::TopicAlreadyExists => {}
                            Errors::InvalidReplicationFactor => tracing::warn!(
                                "cannot create {OFFSETS_TOPIC} yet: \
                                 offsets.topic.replication.factor is {replication} and the \
                                 controller refused ({}); consumer groups wait until enough \
                                 brokers are live",
                                t.error_message.as_deref().unwrap_or_default()
                            ),
                            error => tracing::warn!(
                                "creating {OFFSETS_TOPIC}: {error:?} {}",
                                t.error_message.as_deref().unwrap_or_default()
                            ),
                        }
                    }
                }
                Err(e) => tracing::warn!("creating {OFFSETS_TOPIC}: {e:#}"),
            }
            groups.creation_sent();
        });
    }

    /// The partition of `__consumer_offsets` holding `group` and its index, once it has been
    /// read back: until then `COORDINATOR_LOAD_IN_PROGRESS`, which clients retry.
    fn group_partition(&self, group: &str) -> Result<(i32, Arc<Partition>), Errors> {
        let (index, partition) = self.coordinator_partition(group)?;
        self.groups.loaded(index, &partition)?;
        Ok((index, partition))
    }

    /// The group, created if new, for a request that may create it (a join or a commit).
    fn group_for_write(&self, group: &str) -> Result<Arc<Mutex<GroupEntry>>, Errors> {
        if group.is_empty() {
            return Err(Errors::InvalidGroupId);
        }
        let (index, partition) = self.group_partition(group)?;
        self.groups.get_or_create(group, index, &partition)
    }

    /// The group if it exists, for a request that only reads it.
    fn group_for_read(&self, group: &str) -> Result<Option<Arc<Mutex<GroupEntry>>>, Errors> {
        self.group_partition(group)?;
        Ok(self.groups.get(group))
    }

    /// Brings the groups in memory in line with the leadership of `__consumer_offsets`:
    /// starts reading back, in the background, every partition this broker leads and has not
    /// read yet, and unloads the groups of every partition it no longer leads. Kafka loads a
    /// partition when its broker becomes its leader (for a single broker, at the start or when
    /// the topic is created; in a cluster, whenever the metadata log makes it the leader) and
    /// unloads it on resignation. Whether every led partition has been read.
    pub(crate) fn load_groups(&self) -> bool {
        let node = self.node();
        let led: Vec<(i32, Arc<Partition>)> = self
            .topics()
            .get(OFFSETS_TOPIC)
            .map(|topic| {
                topic
                    .hosted()
                    .filter(|(_, p)| p.leadership().leader == Some(node))
                    .map(|(index, p)| (index, p.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for index in self.groups.held_partitions() {
            if !led.iter().any(|(i, _)| *i == index) {
                self.groups.unload(index);
            }
        }
        self.groups.load(led)
    }

    /// Whether partition `index` of `topic` exists: an offset may be committed for any
    /// partition of the cluster, also one this broker does not host.
    fn partition_exists(&self, topic: &str, index: i32) -> bool {
        match &self.cluster {
            Some(link) => link.image().partition(topic, index).is_some(),
            None => self
                .topics()
                .get(topic)
                .is_some_and(|t| t.partition(index).is_some()),
        }
    }

    fn node(&self) -> u32 {
        u32::try_from(self.config().node_id).unwrap_or(0)
    }
}

/// `__consumer_offsets`'s own configs. Compacted, as Kafka's: a group's newest commit must
/// outlive any retention, and the cleaner keeps exactly that (the newest record per key).
fn offsets_topic_configs(settings: &GroupSettings) -> [(String, String); 2] {
    [
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "segment.bytes".to_string(),
            settings.offsets_topic_segment_bytes.to_string(),
        ),
    ]
}

/// `__consumer_offsets` as a cluster's controller is asked to create it, whichever request
/// (FindCoordinator, or Metadata naming it) brings the creation about.
pub(crate) fn offsets_topic_creation(settings: &GroupSettings) -> CreatableTopic {
    let configs = offsets_topic_configs(settings)
        .into_iter()
        .map(|(name, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(name))
                .with_value(Some(StrBytes::from_string(value)))
        })
        .collect();
    CreatableTopic::default()
        .with_name(kafka_protocol::messages::TopicName(
            StrBytes::from_static_str(OFFSETS_TOPIC),
        ))
        .with_num_partitions(settings.offsets_topic_num_partitions)
        .with_replication_factor(settings.offsets_topic_replication_factor)
        .with_configs(configs)
}

/// The caller of a request, as a member is recorded.
fn caller(client_id: Option<&str>, peer: std::net::SocketAddr, instance: Option<&str>) -> Caller {
    Caller {
        client_id: client_id.unwrap_or_default().to_string(),
        client_host: format!("/{}", peer.ip()),
        group_instance_id: instance.map(str::to_string),
    }
}
