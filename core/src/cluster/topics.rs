//! CreateTopics, CreatePartitions and DeleteTopics on the cluster controller, with Kafka's
//! rules and messages (`ReplicationControlManager`). Placement is in [`super::placement`].

use std::collections::BTreeSet;

use super::placement;
use super::quorum::{
    ClusterEffects, CreatedTopic, MAX_RECORDS_PER_USER_OP, NewTopic, QuorumController, Refusal,
};
use super::records::{MAX_STRING_LEN, MetadataRecord, TopicId};
use crate::errors::Errors;
use crate::replication::{BrokerId, PartitionState};

/// Kafka's message when a request would write more than [`MAX_RECORDS_PER_USER_OP`] records.
const TOO_LARGE: &str = "Unable to perform excessively large batch operation.";

impl QuorumController {
    /// CreateTopics: each topic is created or refused on its own, in request order (a name
    /// repeated in the request exists by the time its second entry is checked).
    pub fn create_topics(
        &mut self,
        topics: &[NewTopic],
    ) -> (Vec<Result<CreatedTopic, Refusal>>, ClusterEffects) {
        let mut out = Vec::new();
        let mut budget = MAX_RECORDS_PER_USER_OP;
        let results = topics
            .iter()
            .map(|topic| self.create_topic(topic, &mut budget, &mut out))
            .collect();
        (results, out)
    }

    /// CreatePartitions: grows topic `name` to `new_total` partitions, placed as round robin
    /// continues from the topic's existing ones, with the topic's replication factor.
    pub fn create_partitions(
        &mut self,
        name: &str,
        new_total: i32,
    ) -> (Result<(), Refusal>, ClusterEffects) {
        let mut out = Vec::new();
        let result = self.grow_topic(name, new_total, &mut out);
        (result, out)
    }

    /// DeleteTopics: each named topic that exists is removed with all its partitions.
    pub fn delete_topics(
        &mut self,
        names: &[String],
    ) -> (Vec<Result<TopicId, Errors>>, ClusterEffects) {
        let mut out = Vec::new();
        let results = names
            .iter()
            .map(|name| {
                let topic_id = self
                    .image
                    .topic(name)
                    .ok_or(Errors::UnknownTopicOrPartition)?
                    .topic_id;
                self.append(MetadataRecord::RemoveTopic { topic_id }, &mut out);
                self.drop_partitions(&topic_id);
                Ok(topic_id)
            })
            .collect();
        (results, out)
    }

    fn create_topic(
        &mut self,
        topic: &NewTopic,
        budget: &mut usize,
        out: &mut ClusterEffects,
    ) -> Result<CreatedTopic, Refusal> {
        let name = &topic.name;
        if self.image.topic(name).is_some() {
            return Err((
                Errors::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        self.check_recordable(topic)?;
        let assignments = if topic.assignments.is_empty() {
            self.place(topic, *budget)?
        } else {
            self.check_assignments(topic, *budget)?
        };
        let mut partitions = Vec::with_capacity(assignments.len());
        for (p, replicas) in assignments.into_iter().enumerate() {
            // Kafka's ISR at creation: the live replicas, in assignment order; the first leads.
            let live: Vec<BrokerId> = replicas
                .iter()
                .copied()
                .filter(|&b| self.image.broker(b).is_some_and(|b| !b.fenced))
                .collect();
            let Some(&leader) = live.first() else {
                return Err((
                    Errors::InvalidReplicaAssignment,
                    format!(
                        "All brokers specified in the manual partition assignment for partition \
                         {p} are fenced or in controlled shutdown."
                    ),
                ));
            };
            let state = PartitionState {
                leader: Some(leader),
                leader_epoch: 0,
                isr: live.into_iter().collect(),
                partition_epoch: 0,
            };
            partitions.push((replicas, state));
        }
        let replication_factor = i16::try_from(partitions[0].0.len()).unwrap_or(i16::MAX);
        *budget -= 1 + partitions.len();
        self.append(
            MetadataRecord::Topic {
                name: name.clone(),
                topic_id: topic.topic_id,
                configs: topic.configs.clone(),
            },
            out,
        );
        let num_partitions = self.add_partitions(topic.topic_id, 0, partitions, out);
        Ok(CreatedTopic {
            topic_id: topic.topic_id,
            num_partitions,
            replication_factor,
        })
    }

    /// What Kafka's naming and config checks (done by the broker) leave open: strings that do
    /// not fit a record, and an id that is taken or is Kafka's "no id".
    fn check_recordable(&self, topic: &NewTopic) -> Result<(), Refusal> {
        if topic.name.len() > MAX_STRING_LEN {
            return Err((
                Errors::InvalidTopicException,
                format!("Topic name is illegal, it can't be longer than {MAX_STRING_LEN} bytes."),
            ));
        }
        if let Some((key, _)) = topic
            .configs
            .iter()
            .find(|(k, v)| k.len() > MAX_STRING_LEN || v.len() > MAX_STRING_LEN)
        {
            return Err((
                Errors::InvalidConfig,
                format!("Config '{key}' is longer than {MAX_STRING_LEN} bytes."),
            ));
        }
        if topic.topic_id == [0; 16] || self.image.topic_by_id(&topic.topic_id).is_some() {
            return Err((
                Errors::InvalidRequest,
                format!("Topic id {} is not available.", hex(&topic.topic_id)),
            ));
        }
        Ok(())
    }

    /// Automatic placement, with the defaults applied.
    fn place(&self, topic: &NewTopic, budget: usize) -> Result<Vec<Vec<BrokerId>>, Refusal> {
        if topic.replication_factor < -1 || topic.replication_factor == 0 {
            return Err((
                Errors::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        let invalid_partitions = || {
            Err((
                Errors::InvalidPartitions,
                "Number of partitions was set to an invalid non-positive value.".into(),
            ))
        };
        if topic.num_partitions < -1 || topic.num_partitions == 0 {
            return invalid_partitions();
        }
        let num_partitions = match topic.num_partitions {
            -1 => self.config.num_partitions,
            n => n,
        };
        let replication_factor = match topic.replication_factor {
            -1 => self.config.default_replication_factor,
            n => n,
        };
        if num_partitions < 1 {
            return invalid_partitions();
        }
        let rf = placement::check_replication_factor(&self.image, replication_factor).map_err(
            |why| {
                (
                    Errors::InvalidReplicationFactor,
                    format!(
                        "Unable to replicate the partition {replication_factor} time(s): {why}"
                    ),
                )
            },
        )?;
        if usize::try_from(num_partitions).map_or(true, |n| n >= budget) {
            return Err((Errors::PolicyViolation, TOO_LARGE.into()));
        }
        let live = placement::live_ids(&self.image);
        let start = placement::start(&topic.topic_id, live.len());
        Ok(placement::round_robin(&live, start, 0, num_partitions, rf))
    }

    /// A manual assignment, checked as Kafka does.
    fn check_assignments(
        &self,
        topic: &NewTopic,
        budget: usize,
    ) -> Result<Vec<Vec<BrokerId>>, Refusal> {
        if topic.replication_factor != -1 {
            return Err((
                Errors::InvalidRequest,
                "A manual partition assignment was specified, but replication factor was not \
                 set to -1."
                    .into(),
            ));
        }
        if topic.num_partitions != -1 {
            return Err((
                Errors::InvalidRequest,
                "A manual partition assignment was specified, but numPartitions was not set to \
                 -1."
                .into(),
            ));
        }
        let mut replication_factor = None;
        for replicas in &topic.assignments {
            placement::check_manual(&self.image, replicas, replication_factor)?;
            replication_factor = Some(replicas.len());
        }
        if topic.assignments.len() >= budget {
            return Err((Errors::PolicyViolation, TOO_LARGE.into()));
        }
        Ok(topic.assignments.clone())
    }

    fn grow_topic(
        &mut self,
        name: &str,
        new_total: i32,
        out: &mut ClusterEffects,
    ) -> Result<(), Refusal> {
        let Some(topic) = self.image.topic(name) else {
            return Err((
                Errors::UnknownTopicOrPartition,
                "This server does not host this topic-partition.".into(),
            ));
        };
        let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if new_total == current {
            return Err((
                Errors::InvalidPartitions,
                format!("Topic already has {current} partition(s)."),
            ));
        }
        if new_total < current {
            return Err((
                Errors::InvalidPartitions,
                format!(
                    "The topic {name} currently has {current} partition(s); {new_total} would \
                     not be an increase."
                ),
            ));
        }
        let additional = new_total - current;
        if usize::try_from(additional).map_or(true, |n| n > MAX_RECORDS_PER_USER_OP) {
            return Err((Errors::PolicyViolation, TOO_LARGE.into()));
        }
        let Some(first) = topic.partitions.first() else {
            return Err((
                Errors::UnknownServerError,
                format!("Invalid state: topic {name} appears to have no partitions."),
            ));
        };
        let replication_factor = i16::try_from(first.replicas.len()).unwrap_or(i16::MAX);
        let rf = placement::check_replication_factor(&self.image, replication_factor)
            .map_err(|why| (Errors::InvalidReplicationFactor, why))?;
        let topic_id = topic.topic_id;
        let live = placement::live_ids(&self.image);
        let start = placement::start(&topic_id, live.len());
        let partitions = placement::round_robin(&live, start, current, additional, rf)
            .into_iter()
            .map(|replicas| {
                let state = PartitionState {
                    leader: replicas.first().copied(),
                    leader_epoch: 0,
                    isr: replicas.iter().copied().collect::<BTreeSet<_>>(),
                    partition_epoch: 0,
                };
                (replicas, state)
            })
            .collect();
        self.add_partitions(topic_id, current, partitions, out);
        Ok(())
    }

    /// Records partitions `first..` of a topic and starts their controllers. Returns how many
    /// partitions the topic has now.
    fn add_partitions(
        &mut self,
        topic_id: TopicId,
        first: i32,
        partitions: Vec<(Vec<BrokerId>, PartitionState)>,
        out: &mut ClusterEffects,
    ) -> i32 {
        let mut partition = first;
        for (replicas, state) in partitions {
            self.append(
                MetadataRecord::Partition {
                    topic_id,
                    partition,
                    replicas,
                    state,
                },
                out,
            );
            self.rebuild((topic_id, partition), &BTreeSet::new());
            partition += 1;
        }
        partition
    }
}

/// A topic id for a message, in hex.
fn hex(id: &TopicId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
