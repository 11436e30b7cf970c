//! The consumer-group APIs: each request is turned into a message for the group's core
//! `GroupCoordinator` (through [`driver::Groups`]) and its answer into the response at the
//! version the client asked for. What a member is told — its generation, its leader, its
//! assignment, whether its commit is fenced — is the coordinator's decision; these handlers
//! only translate names and formats.
//!
//! A group lives on partition `abs(hash(group.id)) % offsets.topic.num.partitions` of
//! `__consumer_offsets`, created on first use. Its requests are answered
//! `COORDINATOR_LOAD_IN_PROGRESS` until that partition has been read back (see [`driver`]).

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

use surety_core::errors::Errors;
use surety_core::group::placement::offsets_partition_for;

use super::topic_config::TopicConfig;
use super::topics::{Topic, TopicError};
use super::{Broker, now_ms};
use driver::{Caller, GroupEntry};

/// Kafka's internal topic of committed offsets and group metadata.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

impl Broker {
    /// `__consumer_offsets`, created with `offsets.topic.*` settings if it does not exist yet.
    pub(crate) fn offsets_topic(&self) -> Result<Arc<Topic>, Errors> {
        if let Some(topic) = self.topics().get(OFFSETS_TOPIC) {
            return Ok(topic);
        }
        if self.cluster.is_some() {
            // In a cluster the controller creates it; group coordination across brokers is
            // not served yet.
            return Err(Errors::CoordinatorNotAvailable);
        }
        let settings = self.groups.settings();
        // Compacted, as Kafka's: a group's newest commit must outlive any retention, and the
        // cleaner keeps exactly that (the newest record per key).
        let config = TopicConfig::from_pairs(
            [
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "segment.bytes".to_string(),
                    settings.offsets_topic_segment_bytes.to_string(),
                ),
            ],
            self.topics().defaults(),
        )
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
    /// FindCoordinator asks, which Kafka answers whether or not the partition is loaded yet.
    fn coordinator_partition(
        &self,
        group: &str,
    ) -> Result<(i32, Arc<super::partition::Partition>), Errors> {
        let topic = self.offsets_topic()?;
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let index = offsets_partition_for(group, count);
        let partition = topic
            .partition(index)
            .cloned()
            .ok_or(Errors::CoordinatorNotAvailable)?;
        if partition.leadership().leader != Some(self.node()) {
            return Err(Errors::NotCoordinator);
        }
        Ok((index, partition))
    }

    /// The partition of `__consumer_offsets` holding `group`, once it has been read back:
    /// until then `COORDINATOR_LOAD_IN_PROGRESS`, which clients retry.
    fn group_partition(&self, group: &str) -> Result<Arc<super::partition::Partition>, Errors> {
        let (index, partition) = self.coordinator_partition(group)?;
        self.groups.loaded(index, &partition)?;
        Ok(partition)
    }

    /// The group, created if new, for a request that may create it (a join or a commit).
    fn group_for_write(&self, group: &str) -> Result<Arc<Mutex<GroupEntry>>, Errors> {
        if group.is_empty() {
            return Err(Errors::InvalidGroupId);
        }
        let partition = self.group_partition(group)?;
        Ok(self.groups.get_or_create(group, &partition))
    }

    /// The group if it exists, for a request that only reads it.
    fn group_for_read(&self, group: &str) -> Result<Option<Arc<Mutex<GroupEntry>>>, Errors> {
        self.group_partition(group)?;
        Ok(self.groups.get(group))
    }

    /// Starts reading back, in the background, every partition of `__consumer_offsets` this
    /// broker leads and has not read yet: Kafka loads a partition when its broker becomes its
    /// leader, which for a single broker is at the start (or when the topic is created).
    /// Whether all of them have been read.
    pub(crate) fn load_groups(&self) -> bool {
        let Some(topic) = self.topics().get(OFFSETS_TOPIC) else {
            return true;
        };
        let node = self.node();
        let led = topic
            .hosted()
            .filter(|(_, p)| p.leadership().leader == Some(node))
            .map(|(index, p)| (index, p.clone()))
            .collect::<Vec<_>>()
            .into_iter();
        self.groups.load(led)
    }

    fn node(&self) -> u32 {
        u32::try_from(self.config().node_id).unwrap_or(0)
    }
}

/// The caller of a request, as a member is recorded.
fn caller(client_id: Option<&str>, peer: std::net::SocketAddr, instance: Option<&str>) -> Caller {
    Caller {
        client_id: client_id.unwrap_or_default().to_string(),
        client_host: format!("/{}", peer.ip()),
        group_instance_id: instance.map(str::to_string),
    }
}
