//! What the metadata log says, as every broker (and the controller) reads it: KRaft's
//! `MetadataImage`, built by applying the log's records in order.
//!
//! Brokers apply what they fetch from the controller's log; the controller applies what it
//! writes. Both must arrive at the same image from the same records, so applying is a pure
//! function of the image and the record, and a record that does not fit the image (a change to
//! a partition that does not exist, a fence of an incarnation that has since registered again)
//! changes nothing: a broker must never crash on the log it is told to follow.

use std::collections::BTreeMap;

use super::records::{MetadataRecord, TopicId};
use crate::replication::{BrokerId, PartitionState};

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerImage {
    /// The offset of the broker's latest registration: requests carrying another come from an
    /// earlier incarnation.
    pub broker_epoch: i64,
    /// Where clients and other brokers reach it.
    pub host: String,
    /// The advertised listener's port.
    pub port: u16,
    /// A fenced broker leads nothing and joins no ISR: it has not heartbeated since it
    /// registered, or its session expired.
    pub fenced: bool,
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    /// The brokers holding a copy, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// Leader, epochs and ISR as last decided.
    pub state: PartitionState,
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    /// Unique among live topics.
    pub name: String,
    /// Unique for all time.
    pub topic_id: TopicId,
    /// The overrides of the broker defaults.
    pub configs: Vec<(String, String)>,
    /// By index: partition `p` is `partitions[p]`.
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    /// Partition `p`, if the topic has it (a request may name any number).
    pub fn partition(&self, p: i32) -> Option<&PartitionImage> {
        self.partitions.get(usize::try_from(p).ok()?)
    }
}

/// What a record changed that a broker must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageChange {
    /// A partition was created or its leader, epochs or ISR changed: a broker holding a replica
    /// becomes leader or follower (or stops fetching from an old leader).
    Partition {
        /// The partition's topic.
        topic: String,
        /// The partition's index.
        partition: i32,
    },
    /// A topic was deleted: its replicas' logs are to be removed.
    TopicRemoved {
        /// The name it had, which names its partition directories.
        name: String,
        /// Its id, which tells it apart from a topic created again under the same name.
        topic_id: TopicId,
        /// How many partitions it had.
        partitions: i32,
    },
    /// A broker registered, was fenced or was unfenced: clients' metadata changes.
    Broker(BrokerId),
}

/// The cluster's metadata as of some offset of the metadata log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    brokers: BTreeMap<BrokerId, BrokerImage>,
    topics: BTreeMap<String, TopicImage>,
    topic_names: BTreeMap<TopicId, String>,
    next_offset: i64,
    next_producer_id: i64,
}

impl MetadataImage {
    /// The image of an empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the record at `offset`. A record at an offset already applied is skipped, so a
    /// broker that reads part of the log again after a reconnect does not apply it twice.
    pub fn apply(&mut self, offset: i64, record: &MetadataRecord) -> Vec<ImageChange> {
        if offset < self.next_offset {
            return Vec::new();
        }
        self.next_offset = offset.saturating_add(1);
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                broker_epoch,
                host,
                port,
            } => {
                if self
                    .brokers
                    .get(broker_id)
                    .is_some_and(|b| b.broker_epoch >= *broker_epoch)
                {
                    return Vec::new();
                }
                let broker = BrokerImage {
                    broker_epoch: *broker_epoch,
                    host: host.clone(),
                    port: *port,
                    fenced: true,
                };
                self.brokers.insert(*broker_id, broker);
                vec![ImageChange::Broker(*broker_id)]
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.set_fenced(*broker_id, *broker_epoch, true),
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.set_fenced(*broker_id, *broker_epoch, false),
            MetadataRecord::Topic {
                name,
                topic_id,
                configs,
            } => {
                if self.topics.contains_key(name) || self.topic_names.contains_key(topic_id) {
                    return Vec::new();
                }
                self.topic_names.insert(*topic_id, name.clone());
                let topic = TopicImage {
                    name: name.clone(),
                    topic_id: *topic_id,
                    configs: configs.clone(),
                    partitions: Vec::new(),
                };
                self.topics.insert(name.clone(), topic);
                Vec::new()
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                state,
            } => {
                let Some(topic) = self.topic_mut(topic_id) else {
                    return Vec::new();
                };
                let image = PartitionImage {
                    replicas: replicas.clone(),
                    state: state.clone(),
                };
                // A PartitionRecord for an existing partition replaces it, as in KRaft; one
                // past the end would leave a hole.
                match usize::try_from(*partition) {
                    Ok(p) if p < topic.partitions.len() => topic.partitions[p] = image,
                    Ok(p) if p == topic.partitions.len() => topic.partitions.push(image),
                    _ => return Vec::new(),
                }
                vec![ImageChange::Partition {
                    topic: topic.name.clone(),
                    partition: *partition,
                }]
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                state,
            } => {
                let Some(topic) = self.topic_mut(topic_id) else {
                    return Vec::new();
                };
                let Some(image) = usize::try_from(*partition)
                    .ok()
                    .and_then(|p| topic.partitions.get_mut(p))
                else {
                    return Vec::new();
                };
                image.state = state.clone();
                vec![ImageChange::Partition {
                    topic: topic.name.clone(),
                    partition: *partition,
                }]
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let Some(name) = self.topic_names.remove(topic_id) else {
                    return Vec::new();
                };
                let Some(topic) = self.topics.remove(&name) else {
                    return Vec::new();
                };
                vec![ImageChange::TopicRemoved {
                    name,
                    topic_id: *topic_id,
                    partitions: i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
                }]
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                // Ids below the mark are taken; a record that would lower it could hand them out
                // again.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
                Vec::new()
            }
        }
    }

    fn set_fenced(&mut self, broker_id: BrokerId, epoch: i64, fenced: bool) -> Vec<ImageChange> {
        match self.brokers.get_mut(&broker_id) {
            Some(broker) if broker.broker_epoch == epoch && broker.fenced != fenced => {
                broker.fenced = fenced;
                vec![ImageChange::Broker(broker_id)]
            }
            _ => Vec::new(),
        }
    }

    fn topic_mut(&mut self, topic_id: &TopicId) -> Option<&mut TopicImage> {
        let name = self.topic_names.get(topic_id)?;
        self.topics.get_mut(name)
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl ExactSizeIterator<Item = (BrokerId, &BrokerImage)> {
        self.brokers.iter().map(|(&id, broker)| (id, broker))
    }

    /// Broker `id`, if registered.
    pub fn broker(&self, id: BrokerId) -> Option<&BrokerImage> {
        self.brokers.get(&id)
    }

    /// The brokers that may lead and be placed on, and that clients are told of: registered
    /// and not fenced, sorted by id.
    pub fn live_brokers(&self) -> Vec<(BrokerId, &BrokerImage)> {
        self.brokers().filter(|(_, b)| !b.fenced).collect()
    }

    /// Topic `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// The topic with id `id`, if it exists.
    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicImage> {
        self.topics.get(self.topic_names.get(id)?)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    /// Partition `p` of topic `name`, if both exist.
    pub fn partition(&self, name: &str, p: i32) -> Option<&PartitionImage> {
        self.topic(name)?.partition(p)
    }

    /// Partition `p` of the topic with id `id`, if both exist.
    pub fn partition_by_id(&self, id: &TopicId, p: i32) -> Option<&PartitionImage> {
        self.topic_by_id(id)?.partition(p)
    }

    /// The offset the next record will have: a registration's broker epoch is read here.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The first producer id no broker has been given.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }
}
