//! A broker in a cluster: its link to the controller and to the other brokers.
//!
//! What a KRaft broker does besides serving clients, as a driver of core's actors:
//! - registers with the controller (BrokerRegistration) and heartbeats (BrokerHeartbeat);
//! - reads the metadata log with Fetch and applies it to a [`MetadataImage`]; every partition
//!   state the log records is handed to the partition's replica as `LeaderAndIsr` (hosting the
//!   partition first, if the assignment names this broker);
//! - carries its replicas' messages: a follower's `Msg::Fetch` becomes a Kafka Fetch with a
//!   replica id ([`fetcher`]), a leader's answer to it goes back on the follower's request
//!   ([`follower_fetch`]), an ISR proposal becomes AlterPartition to the controller.
//!
//! Every decision (who leads, the ISR, what a follower truncates, when acks=all is answered)
//! is core's: the controller's in `QuorumController`, the partition's in `Replica`.

pub mod fetcher;
pub mod follower_fetch;
pub mod forward;
pub mod metadata;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use kafka_protocol::messages::alter_partition_request::{PartitionData, TopicData};
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterPartitionRequest, BrokerHeartbeatRequest, BrokerId,
    BrokerRegistrationRequest, DescribeClusterRequest,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::cluster::{ImageChange, MetadataImage};
use surety_core::errors::Errors;
use surety_core::replication::{BrokerId as NodeId, Msg, Node};
use tokio::sync::{mpsc, watch};

use super::partition::Router;
use super::{Broker, now_ms};
use crate::client::Connection;
use crate::config::BrokerConfig;

/// A partition of a follower's fetch: (follower, topic, index).
type PartitionOf = (NodeId, String, i32);

/// Where a follower's fetch request collects its partitions' answers.
type Answers = mpsc::UnboundedSender<(usize, i32, Msg)>;

/// The broker's side of the cluster.
pub struct ClusterLink {
    me: NodeId,
    config: BrokerConfig,
    controller: String,
    image: RwLock<MetadataImage>,
    /// The epoch the controller gave this broker's registration; -1 until registered.
    broker_epoch: AtomicI64,
    /// Whether the metadata log has been read to its end once since the start.
    caught_up: AtomicBool,
    broker: OnceLock<Weak<Broker>>,
    runtime: tokio::runtime::Handle,
    fetchers: Mutex<HashMap<NodeId, mpsc::UnboundedSender<fetcher::Command>>>,
    /// Followers' fetches waiting for their partition's answer, by (follower, topic, index).
    waiters: Mutex<HashMap<PartitionOf, (usize, Answers)>>,
    proposals: mpsc::UnboundedSender<(String, i32, Msg)>,
    proposals_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, i32, Msg)>>>,
    /// The producer-id block being handed out: [next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// Woken whenever metadata records are applied.
    applied: tokio::sync::Notify,
}

impl ClusterLink {
    /// A link for the broker configured by `config` (which names the controller).
    pub fn new(config: &BrokerConfig) -> Arc<Self> {
        let (proposals, proposals_rx) = mpsc::unbounded_channel();
        Arc::new(ClusterLink {
            me: u32::try_from(config.node_id).unwrap_or(0),
            config: config.clone(),
            controller: config.cluster.controller_address().unwrap_or_default(),
            image: RwLock::new(MetadataImage::new()),
            broker_epoch: AtomicI64::new(-1),
            caught_up: AtomicBool::new(false),
            broker: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            fetchers: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            proposals,
            proposals_rx: Mutex::new(Some(proposals_rx)),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            applied: tokio::sync::Notify::new(),
        })
    }

    /// Asks the controller for the cluster id (DescribeCluster), retrying until it answers:
    /// a broker must know which cluster it joins before it opens its data.
    pub async fn cluster_id(&self) -> String {
        loop {
            match self.describe_cluster().await {
                Ok(id) => return id,
                Err(e) => {
                    tracing::info!("waiting for the controller at {}: {e:#}", self.controller);
                    tokio::time::sleep(self.backoff()).await;
                }
            }
        }
    }

    async fn describe_cluster(&self) -> anyhow::Result<String> {
        let mut conn = self.connect().await?;
        let response = conn.send(DescribeClusterRequest::default()).await?;
        Ok(response.cluster_id.to_string())
    }

    /// Starts the link's tasks for `broker`: registration and heartbeats, the metadata log
    /// reader, and the AlterPartition sender.
    pub fn start(self: &Arc<Self>, broker: &Arc<Broker>, shutdown: watch::Receiver<bool>) {
        let _ = self.broker.set(Arc::downgrade(broker));
        broker
            .topics()
            .shared()
            .set_router(self.clone() as Arc<dyn Router>);
        let link = self.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move { link.run_lifecycle(signal).await });
        let link = self.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move { link.run_metadata(signal).await });
        let link = self.clone();
        let receiver = self
            .proposals_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(async move { link.run_proposals(receiver, shutdown).await });
        }
    }

    /// The metadata image as read so far.
    pub fn image(&self) -> std::sync::RwLockReadGuard<'_, MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner())
    }

    /// This broker's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Waits (at most `limit`) until `ready` holds of the image.
    pub async fn wait_for(&self, limit: Duration, ready: impl Fn(&MetadataImage) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let applied = self.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if ready(&self.image()) {
                return true;
            }
            tokio::select! {
                _ = applied => {}
                _ = tokio::time::sleep_until(deadline) => return ready(&self.image()),
            }
        }
    }

    fn backoff(&self) -> Duration {
        Duration::from_millis(self.config.cluster.replica_fetch_backoff_ms.max(50))
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::connect(&self.controller, &format!("broker-{}", self.me)).await
    }

    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.get()?.upgrade()
    }

    /// Registers, then heartbeats every `broker.heartbeat.interval.ms`; registers again when
    /// the controller no longer knows this registration.
    async fn run_lifecycle(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        let mut conn: Option<Connection> = None;
        loop {
            let result = self.lifecycle_step(&mut conn).await;
            if let Err(e) = result {
                tracing::info!("controller {}: {e:#}", self.controller);
                conn = None;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn lifecycle_step(&self, conn: &mut Option<Connection>) -> anyhow::Result<()> {
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let conn = conn.as_mut().expect("connected above");
        if self.broker_epoch.load(Ordering::Acquire) < 0 {
            let cluster_id = self
                .broker()
                .map(|b| b.cluster_id.clone())
                .unwrap_or_default();
            let (host, port) = &self.config.advertised;
            let listener = Listener::default()
                .with_name(StrBytes::from_string(
                    self.config.cluster.inter_broker_listener_name.clone(),
                ))
                .with_host(StrBytes::from_string(host.clone()))
                .with_port(*port);
            let request = BrokerRegistrationRequest::default()
                .with_broker_id(BrokerId(self.me as i32))
                .with_cluster_id(StrBytes::from_string(cluster_id))
                .with_incarnation_id(uuid::Uuid::new_v4())
                .with_listeners(vec![listener]);
            let response = conn.send(request).await?;
            let error = error_of(response.error_code);
            if error != Errors::None {
                anyhow::bail!("registration refused: {error:?}");
            }
            tracing::info!("registered with broker epoch {}", response.broker_epoch);
            self.broker_epoch
                .store(response.broker_epoch, Ordering::Release);
        }
        let epoch = self.broker_epoch.load(Ordering::Acquire);
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(self.me as i32))
            .with_broker_epoch(epoch)
            .with_current_metadata_offset(self.image().next_offset() - 1)
            .with_want_fence(!self.caught_up.load(Ordering::Acquire));
        let response = conn.send(request).await?;
        match error_of(response.error_code) {
            Errors::None => Ok(()),
            error @ (Errors::StaleBrokerEpoch | Errors::BrokerIdNotRegistered) => {
                self.broker_epoch.store(-1, Ordering::Release);
                anyhow::bail!("heartbeat refused ({error:?}): registering again")
            }
            error => anyhow::bail!("heartbeat refused: {error:?}"),
        }
    }

    /// Reads the metadata log from the controller and applies it, as a KRaft broker's
    /// metadata listener does.
    async fn run_metadata(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut conn: Option<Connection> = None;
        loop {
            let step = async {
                if conn.is_none() {
                    conn = Some(self.connect().await?);
                }
                let conn = conn.as_mut().expect("connected above");
                metadata::fetch_and_apply(&self, conn).await
            };
            let result = tokio::select! {
                result = step => result,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = result {
                tracing::info!("reading the metadata log from {}: {e:#}", self.controller);
                conn = None;
                tokio::time::sleep(self.backoff()).await;
            }
        }
    }

    /// Carries out what applying metadata records changed: hosts newly assigned partitions,
    /// hands every recorded partition state to its replica, drops deleted topics.
    fn act_on(&self, changes: Vec<ImageChange>) {
        let Some(broker) = self.broker() else {
            return;
        };
        let now = now_ms();
        for change in changes {
            match change {
                ImageChange::Partition { topic, partition } => {
                    let (replicas, state, topic_id, configs, count) = {
                        let image = self.image();
                        let Some(t) = image.topic(&topic) else {
                            continue;
                        };
                        let Some(p) = t.partitions.get(partition as usize) else {
                            continue;
                        };
                        (
                            p.replicas.clone(),
                            p.state.clone(),
                            t.topic_id,
                            t.configs.clone(),
                            t.partitions.len() as i32,
                        )
                    };
                    if !replicas.contains(&self.me) {
                        continue;
                    }
                    let hosted = broker.topics().host(
                        &topic,
                        uuid::Uuid::from_bytes(topic_id),
                        &configs,
                        count,
                        partition,
                        replicas,
                        now,
                    );
                    match hosted {
                        Ok(p) => p.on_peer_message(Node::Controller, Msg::LeaderAndIsr(state), now),
                        Err(e) => tracing::error!("hosting {topic}-{partition}: {e}"),
                    }
                    if topic == super::group::OFFSETS_TOPIC {
                        broker.load_groups();
                    }
                }
                ImageChange::TopicRemoved { name, .. } => {
                    if let Err(e) = broker.topics().delete(&name, now) {
                        if !matches!(e, super::topics::TopicError::Unknown) {
                            tracing::error!("deleting {name}: {e}");
                        }
                    }
                }
                ImageChange::Broker(_) => {}
            }
        }
        broker.notify_fetchers();
        self.applied.notify_waiters();
    }

    /// Sends the replicas' ISR proposals to the controller, one at a time, and hands each
    /// answer back. A proposal that gets no answer is retried by the replica (told that the
    /// connection was lost) after a back-off.
    async fn run_proposals(
        self: Arc<Self>,
        mut proposals: mpsc::UnboundedReceiver<(String, i32, Msg)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut conn: Option<Connection> = None;
        loop {
            let next = tokio::select! {
                next = proposals.recv() => next,
                _ = shutdown.changed() => return,
            };
            let Some((topic, index, msg)) = next else {
                return;
            };
            match self.propose(&mut conn, &topic, index, msg).await {
                Ok(answer) => {
                    if let Some(p) = self.partition(&topic, index) {
                        p.on_peer_message(Node::Controller, answer, now_ms());
                    }
                }
                Err(e) => {
                    tracing::info!("AlterPartition for {topic}-{index}: {e:#}");
                    conn = None;
                    tokio::time::sleep(self.backoff()).await;
                    if let Some(p) = self.partition(&topic, index) {
                        p.on_peer_disconnect(Node::Controller, now_ms());
                    }
                }
            }
        }
    }

    async fn propose(
        &self,
        conn: &mut Option<Connection>,
        topic: &str,
        index: i32,
        msg: Msg,
    ) -> anyhow::Result<Msg> {
        let Msg::AlterPartition {
            leader_epoch,
            partition_epoch,
            new_isr,
            ..
        } = msg
        else {
            anyhow::bail!("not a proposal: {msg:?}");
        };
        let topic_id = self
            .image()
            .topic(topic)
            .map(|t| t.topic_id)
            .ok_or_else(|| anyhow::anyhow!("unknown topic"))?;
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let conn = conn.as_mut().expect("connected above");
        let partition = PartitionData::default()
            .with_partition_index(index)
            .with_leader_epoch(leader_epoch)
            .with_partition_epoch(partition_epoch)
            .with_new_isr_with_epochs(
                new_isr
                    .iter()
                    .map(|&b| {
                        kafka_protocol::messages::alter_partition_request::BrokerState::default()
                            .with_broker_id(BrokerId(b as i32))
                            .with_broker_epoch(-1)
                    })
                    .collect(),
            );
        let request = AlterPartitionRequest::default()
            .with_broker_id(BrokerId(self.me as i32))
            .with_broker_epoch(self.broker_epoch.load(Ordering::Acquire))
            .with_topics(vec![
                TopicData::default()
                    .with_topic_id(uuid::Uuid::from_bytes(topic_id))
                    .with_partitions(vec![partition]),
            ]);
        let response = conn.send(request).await?;
        if response.error_code != 0 {
            anyhow::bail!("refused: {:?}", error_of(response.error_code));
        }
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == index)
            .ok_or_else(|| anyhow::anyhow!("no answer for the partition"))?;
        let state = surety_core::replication::PartitionState {
            leader: u32::try_from(answer.leader_id.0).ok(),
            leader_epoch: answer.leader_epoch,
            isr: answer
                .isr
                .iter()
                .filter_map(|b| u32::try_from(b.0).ok())
                .collect(),
            partition_epoch: answer.partition_epoch,
        };
        Ok(Msg::AlterPartitionResponse {
            error_code: error_of(answer.error_code),
            proposal: (partition_epoch, new_isr),
            state,
        })
    }

    fn partition(&self, topic: &str, index: i32) -> Option<Arc<super::partition::Partition>> {
        self.broker()?
            .topics()
            .get(topic)?
            .partition(index)
            .cloned()
    }

    /// A follower's fetch waits for its partition's answer on `answer`, tagged with the
    /// topic's position in the request.
    fn wait_for_answer(&self, follower: NodeId, topic: &str, index: i32, answer: (usize, Answers)) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((follower, topic.to_string(), index), answer);
    }

    fn forget_answer(&self, follower: NodeId, topic: &str, index: i32) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(follower, topic.to_string(), index));
    }

    /// The next producer id, from the block the controller handed this broker
    /// (AllocateProducerIds), taking a new block when this one is spent: ids are unique
    /// across the cluster because only the controller hands out blocks.
    pub async fn next_producer_id(&self) -> Result<i64, Errors> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let mut conn = self
                .connect()
                .await
                .map_err(|_| Errors::CoordinatorNotAvailable)?;
            let request = AllocateProducerIdsRequest::default()
                .with_broker_id(BrokerId(self.me as i32))
                .with_broker_epoch(self.broker_epoch.load(Ordering::Acquire));
            let response = conn
                .send(request)
                .await
                .map_err(|_| Errors::CoordinatorNotAvailable)?;
            let error = error_of(response.error_code);
            if error != Errors::None {
                return Err(error);
            }
            let start = response.producer_id_start.0;
            *block = (start, start + i64::from(response.producer_id_len));
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Where this broker's listener is, and every live broker's, as Metadata reports them.
    pub fn live_brokers(&self) -> Vec<(NodeId, String, u16)> {
        let image = self.image();
        image
            .live_brokers()
            .into_iter()
            .map(|(id, b)| (id, b.host.clone(), b.port))
            .collect()
    }
}

impl Router for ClusterLink {
    fn send(&self, topic: &str, index: i32, to: Node, msg: Msg) {
        match (to, msg) {
            (Node::Broker(leader), msg @ Msg::Fetch { .. }) => {
                let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
                let sender = fetchers.entry(leader).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let link = self.broker().and_then(|b| b.cluster.clone());
                    if let Some(link) = link {
                        self.runtime.spawn(fetcher::run(link, leader, rx));
                    }
                    tx
                });
                let _ = sender.send(fetcher::Command::Fetch {
                    topic: topic.to_string(),
                    index,
                    msg,
                });
            }
            (Node::Broker(follower), msg @ Msg::FetchResponse { .. }) => {
                let waiter = self
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(follower, topic.to_string(), index));
                if let Some((position, answers)) = waiter {
                    let _ = answers.send((position, index, msg));
                }
            }
            (Node::Controller, msg @ Msg::AlterPartition { .. }) => {
                let _ = self.proposals.send((topic.to_string(), index, msg));
            }
            (to, msg) => tracing::debug!("{topic}-{index}: no route to {to:?} for {msg:?}"),
        }
    }
}

/// The error a response's code names; an unknown code is an unknown server error.
pub fn error_of(code: i16) -> Errors {
    Errors::from_code(code).unwrap_or(Errors::UnknownServerError)
}
