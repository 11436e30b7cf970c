//! Surety's consumer: Kafka's `KafkaConsumer` for Rust applications, in a group.
//!
//! `subscribe` joins the group through core's `GroupMember` actor (see [`group`]): the same
//! member protocol the model checker explores, revoke-before-rejoin included. `poll` first
//! serves what the member asks (revoke: commit, if auto-commit is on, then the listener's
//! `on_partitions_revoked`, then the member rejoins; assigned: committed offsets, or
//! `auto.offset.reset`, then `on_partitions_assigned`; lost: `on_partitions_lost`, no commit),
//! then fetches from the partitions' leaders and returns at most `max.poll.records` records.
//! Offsets are committed with the member's generation, so a commit from a member the group
//! has moved on from is refused.

pub mod config;
mod group;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::group::{MemberEvent, TopicPartition};
use surety_core::record::batches;

pub use config::{ConsumerConfig, OffsetReset};
use group::Membership;

use crate::client::Connection;

/// A record as `poll` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Its topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Create time or log-append time, as the topic stamps.
    pub timestamp: i64,
    /// `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// Kafka's `ConsumerRebalanceListener`: called from `poll`, in the application's task.
pub trait RebalanceListener: Send {
    /// Before the partitions go (after the auto-commit of what was consumed, if on).
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// After the new generation's partitions arrive, before their records are returned.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// The partitions were already given to another member (this one was fenced): stop, and
    /// do not commit. By default, as revoked.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// A consumer.
pub struct Consumer {
    config: Arc<ConsumerConfig>,
    membership: Option<Membership>,
    listener: Option<Box<dyn RebalanceListener>>,
    assignment: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    paused: HashSet<TopicPartition>,
    buffered: VecDeque<ConsumerRecord>,
    /// Connections to partition leaders, by broker id, and each partition's leader.
    brokers: HashMap<i32, (String, Option<Connection>)>,
    leaders: HashMap<TopicPartition, i32>,
    last_auto_commit: Instant,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

impl Consumer {
    /// A consumer with `config`; nothing is contacted until it subscribes.
    pub fn new(config: ConsumerConfig) -> Self {
        Consumer {
            config: Arc::new(config),
            membership: None,
            listener: None,
            assignment: Vec::new(),
            positions: HashMap::new(),
            paused: HashSet::new(),
            buffered: VecDeque::new(),
            brokers: HashMap::new(),
            leaders: HashMap::new(),
            last_auto_commit: Instant::now(),
        }
    }

    /// Joins `group.id` subscribed to `topics`; partitions arrive through `poll`.
    pub fn subscribe(
        &mut self,
        topics: &[&str],
        listener: Option<Box<dyn RebalanceListener>>,
    ) -> anyhow::Result<()> {
        let Some(group) = self.config.group_id.clone() else {
            bail!("subscribe needs group.id");
        };
        if self.membership.is_some() {
            bail!("already subscribed");
        }
        let topics = topics.iter().map(|t| Arc::from(*t)).collect();
        self.membership = Some(Membership::start(self.config.clone(), group, topics));
        self.listener = listener;
        Ok(())
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// The offset of the next record `poll` returns from `partition`.
    pub fn position(&self, partition: &TopicPartition) -> Option<i64> {
        self.positions.get(partition).copied()
    }

    /// Continues `partition` at `offset`.
    pub fn seek(&mut self, partition: &TopicPartition, offset: i64) {
        if self.assignment.contains(partition) {
            self.positions.insert(partition.clone(), offset);
            self.buffered
                .retain(|r| !(r.partition == partition.partition && r.topic == partition.topic));
        }
    }

    /// Stops fetching from these partitions (they stay assigned).
    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        self.paused.extend(partitions.iter().cloned());
        self.buffered.retain(|r| {
            !partitions
                .iter()
                .any(|p| p.partition == r.partition && p.topic == r.topic)
        });
    }

    /// Fetches from these partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        for p in partitions {
            self.paused.remove(p);
        }
    }

    /// Records, waiting up to `timeout` for some; rebalances are served first.
    pub async fn poll(&mut self, timeout: Duration) -> anyhow::Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = &self.membership {
                m.polled();
            }
            self.serve_events().await?;
            self.maybe_auto_commit().await;
            if !self.buffered.is_empty() {
                return Ok(self.take_buffered());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let fetchable: Vec<TopicPartition> = self
                .assignment
                .iter()
                .filter(|p| !self.paused.contains(*p) && self.positions.contains_key(*p))
                .cloned()
                .collect();
            if fetchable.is_empty() {
                match &self.membership {
                    Some(m) => m.wait_event(left.min(Duration::from_millis(100))).await,
                    None => tokio::time::sleep(left.min(Duration::from_millis(100))).await,
                }
            } else {
                self.fetch(&fetchable, left).await?;
            }
            if !self.buffered.is_empty() {
                return Ok(self.take_buffered());
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffered.len().min(self.config.max_poll_records);
        let out: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
        for r in &out {
            let tp = TopicPartition {
                topic: r.topic.clone(),
                partition: r.partition,
            };
            self.positions.insert(tp, r.offset + 1);
        }
        out
    }

    /// What was consumed, as offsets to commit.
    fn consumed(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        partitions
            .iter()
            .filter_map(|p| Some((p.clone(), *self.positions.get(p)?)))
            .collect()
    }

    /// Commits the positions of every assigned partition and waits for the outcome.
    pub async fn commit_sync(&mut self) -> anyhow::Result<()> {
        let offsets = self.consumed(&self.assignment);
        self.commit_offsets(offsets, true).await
    }

    /// Commits the positions of every assigned partition without waiting.
    pub async fn commit_async(&mut self) -> anyhow::Result<()> {
        let offsets = self.consumed(&self.assignment);
        self.commit_offsets(offsets, false).await
    }

    async fn commit_offsets(
        &mut self,
        offsets: Vec<(TopicPartition, i64)>,
        wait: bool,
    ) -> anyhow::Result<()> {
        let Some(m) = &self.membership else {
            bail!("commit needs a subscription");
        };
        if offsets.is_empty() {
            return Ok(());
        }
        m.commit(offsets, wait)
            .await
            .map_err(|e| anyhow::anyhow!("OffsetCommit: {}", e.name()))
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit
            || self.last_auto_commit.elapsed()
                < Duration::from_millis(self.config.auto_commit_interval_ms)
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        let _ = self.commit_async().await;
    }

    /// Serves what the member asks of the application.
    async fn serve_events(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(event) = self.membership.as_ref().and_then(|m| m.poll_event()) else {
                return Ok(());
            };
            match event {
                MemberEvent::Revoke(partitions) => {
                    // Commit before revoking: the next owner starts where this one stopped.
                    if self.config.enable_auto_commit {
                        let offsets = self.consumed(&partitions);
                        if let Err(e) = self.commit_offsets(offsets, true).await {
                            tracing::warn!("commit before revoking: {e:#}");
                        }
                    }
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_revoked(&partitions);
                    }
                    self.forget(&partitions);
                    if let Some(m) = &self.membership {
                        m.revoked();
                    }
                }
                MemberEvent::Lost(partitions) => {
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_lost(&partitions);
                    }
                    self.forget(&partitions);
                }
                MemberEvent::Fenced => {
                    self.assignment.clear();
                    bail!(
                        "FENCED_INSTANCE_ID: another consumer with group.instance.id {:?} took \
                         this one's place in the group",
                        self.config.group_instance_id.as_deref().unwrap_or_default()
                    );
                }
                MemberEvent::Assigned(partitions) => {
                    // Added to what it keeps (a cooperative member keeps what was not revoked).
                    self.assignment.extend(partitions.iter().cloned());
                    self.initialize_positions(&partitions).await?;
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_assigned(&partitions);
                    }
                }
            }
        }
    }

    fn forget(&mut self, partitions: &[TopicPartition]) {
        self.assignment.retain(|p| !partitions.contains(p));
        for p in partitions {
            self.positions.remove(p);
            self.paused.remove(p);
        }
        self.buffered.retain(|r| {
            !partitions
                .iter()
                .any(|p| p.partition == r.partition && p.topic == r.topic)
        });
    }

    /// Positions of newly assigned partitions: the group's committed offsets, else
    /// `auto.offset.reset`.
    async fn initialize_positions(&mut self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.refresh_leaders(partitions).await?;
        let committed = match &self.membership {
            Some(m) => m.committed(partitions.to_vec()).await?,
            None => Vec::new(),
        };
        let mut missing = Vec::new();
        for p in partitions {
            match committed.iter().find(|(tp, _)| tp == p) {
                Some((_, offset)) if *offset >= 0 => {
                    self.positions.insert(p.clone(), *offset);
                }
                _ => missing.push(p.clone()),
            }
        }
        self.reset_positions(&missing).await
    }

    async fn reset_positions(&mut self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let timestamp = match self.config.auto_offset_reset {
            OffsetReset::Earliest => -2,
            OffsetReset::Latest => -1,
            OffsetReset::None => {
                bail!("no committed offset for {partitions:?} and auto.offset.reset is none")
            }
        };
        let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        for p in partitions {
            let leader = *self.leaders.get(p).context("no leader known")?;
            by_leader.entry(leader).or_default().push(p.clone());
        }
        for (leader, partitions) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(by_topic(&partitions, |topic, ps| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(s(topic.to_string())))
                        .with_partitions(
                            ps.iter()
                                .map(|&p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_timestamp(timestamp)
                                })
                                .collect(),
                        )
                }));
            let response = self.broker(leader).await?.send(request).await?;
            for t in &response.topics {
                for p in &t.partitions {
                    if p.error_code != Errors::None.code() {
                        bail!(
                            "ListOffsets {}-{}: {}",
                            t.name.as_str(),
                            p.partition_index,
                            crate::cli::error_name(p.error_code)
                        );
                    }
                    let tp = TopicPartition {
                        topic: Arc::from(t.name.as_str()),
                        partition: p.partition_index,
                    };
                    self.positions.insert(tp, p.offset);
                }
            }
        }
        Ok(())
    }

    /// Learns the leaders of `partitions` (and the brokers' addresses) from Metadata.
    async fn refresh_leaders(&mut self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        let topics: HashSet<Arc<str>> = partitions.iter().map(|p| p.topic.clone()).collect();
        let mut conn =
            crate::cli::connect(&self.config.bootstrap_servers, &self.config.client_id).await?;
        let response = conn
            .send(
                MetadataRequest::default()
                    .with_topics(Some(
                        topics
                            .iter()
                            .map(|t| {
                                MetadataRequestTopic::default()
                                    .with_name(Some(TopicName(s(t.to_string()))))
                            })
                            .collect(),
                    ))
                    .with_allow_auto_topic_creation(false),
            )
            .await?;
        for b in &response.brokers {
            let address = format!("{}:{}", b.host.as_str(), b.port);
            let entry = self
                .brokers
                .entry(b.node_id.0)
                .or_insert((address.clone(), None));
            if entry.0 != address {
                *entry = (address, None);
            }
        }
        for t in &response.topics {
            let Some(name) = &t.name else { continue };
            for p in &t.partitions {
                let tp = TopicPartition {
                    topic: Arc::from(name.as_str()),
                    partition: p.partition_index,
                };
                self.leaders.insert(tp, p.leader_id.0);
            }
        }
        Ok(())
    }

    async fn broker(&mut self, id: i32) -> anyhow::Result<&mut Connection> {
        let client_id = self.config.client_id.clone();
        let (address, conn) = self
            .brokers
            .get_mut(&id)
            .with_context(|| format!("broker {id} is unknown"))?;
        if conn.is_none() {
            *conn = Some(Connection::connect(address, &client_id).await?);
        }
        Ok(conn.as_mut().expect("connected"))
    }

    /// One fetch from each leader of `partitions`, waiting at most `wait`.
    async fn fetch(&mut self, partitions: &[TopicPartition], wait: Duration) -> anyhow::Result<()> {
        let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        for p in partitions {
            match self.leaders.get(p) {
                Some(&leader) if leader >= 0 => {
                    by_leader.entry(leader).or_default().push(p.clone())
                }
                _ => {}
            }
        }
        if by_leader.is_empty() {
            self.refresh_leaders(partitions).await?;
            tokio::time::sleep(wait.min(Duration::from_millis(self.config.retry_backoff_ms))).await;
            return Ok(());
        }
        let max_wait = (wait.as_millis() as i32).min(self.config.fetch_max_wait_ms);
        let mut out_of_range = Vec::new();
        for (leader, partitions) in by_leader {
            let positions = &self.positions;
            let max_partition = self.config.max_partition_fetch_bytes;
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait)
                .with_min_bytes(self.config.fetch_min_bytes)
                .with_max_bytes(self.config.fetch_max_bytes)
                .with_session_epoch(-1)
                .with_topics(by_topic(&partitions, |topic, ps| {
                    FetchTopic::default()
                        .with_topic(TopicName(s(topic.to_string())))
                        .with_partitions(
                            ps.iter()
                                .map(|&p| {
                                    let tp = TopicPartition {
                                        topic: topic.clone(),
                                        partition: p,
                                    };
                                    FetchPartition::default()
                                        .with_partition(p)
                                        .with_fetch_offset(positions[&tp])
                                        .with_partition_max_bytes(max_partition)
                                })
                                .collect(),
                        )
                }));
            let response = match self.broker(leader).await?.send(request).await {
                Ok(r) => r,
                Err(e) => {
                    // Reconnect on the next poll.
                    if let Some(b) = self.brokers.get_mut(&leader) {
                        b.1 = None;
                    }
                    return Err(e).context("Fetch");
                }
            };
            for t in response.responses {
                let topic: Arc<str> = Arc::from(t.topic.as_str());
                for p in t.partitions {
                    let tp = TopicPartition {
                        topic: topic.clone(),
                        partition: p.partition_index,
                    };
                    match Errors::from_code(p.error_code) {
                        Some(Errors::None) => {}
                        Some(Errors::OffsetOutOfRange) => {
                            out_of_range.push(tp);
                            continue;
                        }
                        Some(Errors::NotLeaderOrFollower | Errors::UnknownTopicOrPartition)
                        | Some(Errors::FencedLeaderEpoch | Errors::UnknownLeaderEpoch) => {
                            self.leaders.remove(&tp);
                            continue;
                        }
                        _ => bail!("Fetch {tp:?}: {}", crate::cli::error_name(p.error_code)),
                    }
                    let Some(&position) = self.positions.get(&tp) else {
                        continue; // revoked meanwhile
                    };
                    for batch in batches(p.records.unwrap_or_default()) {
                        let batch = batch?;
                        for record in batch.records()? {
                            let record = record?;
                            if record.offset < position {
                                continue;
                            }
                            self.buffered.push_back(ConsumerRecord {
                                topic: topic.clone(),
                                partition: tp.partition,
                                offset: record.offset,
                                timestamp: record.timestamp,
                                key: record.key,
                                value: record.value,
                            });
                        }
                    }
                }
            }
        }
        // Out of range (the log start moved past the position): auto.offset.reset.
        for tp in &out_of_range {
            self.positions.remove(tp);
        }
        self.reset_positions(&out_of_range).await
    }

    /// Commits what was consumed (if auto-commit is on), revokes, leaves the group, and
    /// closes.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let assigned = self.assignment.clone();
        if self.config.enable_auto_commit
            && let Err(e) = self.commit_sync().await
        {
            tracing::warn!("commit on close: {e:#}");
        }
        if let Some(l) = self.listener.as_mut() {
            l.on_partitions_revoked(&assigned);
        }
        if let Some(m) = self.membership.take() {
            m.leave().await;
        }
        Ok(())
    }
}

/// Groups partitions by topic and builds one wire element per topic.
fn by_topic<T>(partitions: &[TopicPartition], mut f: impl FnMut(&Arc<str>, &[i32]) -> T) -> Vec<T> {
    let mut topics: BTreeMap<Arc<str>, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        topics.entry(p.topic.clone()).or_default().push(p.partition);
    }
    topics.iter().map(|(t, ps)| f(t, ps)).collect()
}
