//! The broker: topics on disk, and a handler per API that turns a decoded request into a
//! response. Handlers decide nothing: every partition is core's `Replica` (driven by
//! [`partition`]), fetch planning is `surety_core::fetch`, log rules are `surety_core::log`;
//! handlers parse, call, and encode.

mod admin;
pub mod cluster;
mod fetch;
pub(crate) mod group;
mod metadata;
mod offsets_for_leader_epoch;
pub mod partition;
mod produce;
mod producer_ids;
pub mod topic_config;
pub mod topics;
pub mod unsupported;

pub use produce::Appended;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::config::BrokerConfig;
use crate::wire::codec::{Request, api_versions_body};
use crate::wire::versions::SERVED_APIS;
use partition::ReplicationSettings;
use producer_ids::ProducerIdAllocator;
use surety_core::errors::Errors;
use topics::{TopicError, Topics};

/// What the connection does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response.
    Respond(Box<ResponseKind>),
    /// Send nothing (Produce with acks=0).
    NoResponse,
    /// Close the connection: how Kafka tells an acks=0 producer that a write failed, since it
    /// reads no response.
    Close,
}

/// One broker and everything it serves.
pub struct Broker {
    config: BrokerConfig,
    topics: Topics,
    producer_ids: ProducerIdAllocator,
    pub(crate) cluster_id: String,
    /// The link to the controller and the other brokers; `None` on a single node.
    pub(crate) cluster: Option<Arc<cluster::ClusterLink>>,
    /// Produce requests answered so far, for `surety.test.produce.response.drop.every`.
    produce_answers: AtomicU64,
    /// Names each produce request, so the replica's delayed answer finds its way back.
    produce_requests: AtomicU64,
    /// When the last heartbeat and the last checkpoint happened.
    schedule: Mutex<(Instant, Instant)>,
    /// When the cleaner last looked for logs to compact.
    last_cleaning: Mutex<Instant>,
    /// When expired offsets were last looked for.
    last_offsets_expiry: Mutex<Instant>,
    /// The consumer groups this broker coordinates.
    groups: group::driver::Groups,
}

/// Milliseconds since the Unix epoch: the clock Kafka stamps records and segments with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Opens the data directory (recovering every partition) and gets ready to serve.
    pub fn open(
        config: BrokerConfig,
        cluster: Option<Arc<cluster::ClusterLink>>,
    ) -> Result<Arc<Self>, TopicError> {
        let now = now_ms();
        let settings = ReplicationSettings {
            broker_id: u32::try_from(config.node_id).unwrap_or(0),
            min_insync_replicas: config.min_insync_replicas,
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
            broker_session_timeout_ms: config.broker_session_timeout_ms,
            replica_fetch_max_bytes: config.cluster.replica_fetch_max_bytes,
            replicas: Vec::new(),
            broken: config.broken_variant,
        };
        let topics = if cluster.is_some() {
            Topics::open_clustered(&config.log_dir, config.log.clone(), settings)?
        } else {
            Topics::open(&config.log_dir, config.log.clone(), settings, now)?
        };
        let cluster_id = read_or_create_cluster_id(&config.log_dir, config.node_id)
            .map_err(|e| TopicError::Storage(format!("meta.properties: {e}")))?;
        let producer_ids = ProducerIdAllocator::open(&config.log_dir)
            .map_err(|e| TopicError::Storage(format!("producer id block: {e}")))?;
        Ok(Arc::new(Broker {
            topics,
            producer_ids,
            cluster_id,
            cluster,
            produce_answers: AtomicU64::new(0),
            produce_requests: AtomicU64::new(0),
            schedule: Mutex::new((Instant::now(), Instant::now())),
            last_cleaning: Mutex::new(Instant::now()),
            last_offsets_expiry: Mutex::new(Instant::now()),
            groups: group::driver::Groups::new(
                config.group.clone(),
                u32::try_from(config.node_id).unwrap_or(0),
            ),
            config,
        }))
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The consumer groups this broker coordinates.
    pub(crate) fn groups(&self) -> &group::driver::Groups {
        &self.groups
    }

    /// Appends a produce request's batches at once and returns what waits for their answers;
    /// any other request comes back untouched. A connection uses this to append its produce
    /// requests in the order they arrive while earlier ones still wait for their followers.
    pub fn append_produce(&self, request: Box<Request>) -> Result<Appended, Box<Request>> {
        match request.body {
            RequestKind::Produce(r) => Ok(produce::append(
                self,
                r,
                request.header.correlation_id,
                request.version,
            )),
            body => Err(Box::new(Request { body, ..*request })),
        }
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, request: Request, peer: SocketAddr) -> Outcome {
        let version = request.version;
        if let Some(link) = &self.cluster {
            let body = request.body;
            let response: ResponseKind = match body {
                RequestKind::Metadata(r) => cluster::metadata::handle(self, link, r, version)
                    .await
                    .into(),
                RequestKind::Fetch(r) if r.replica_id.0 >= 0 => {
                    cluster::follower_fetch::handle(self, link, r).await.into()
                }
                RequestKind::CreateTopics(r) => cluster::forward::create_topics(link, r, version)
                    .await
                    .into(),
                RequestKind::DeleteTopics(r) => cluster::forward::delete_topics(link, r, version)
                    .await
                    .into(),
                RequestKind::CreatePartitions(r) => {
                    cluster::forward::create_partitions(link, r, version)
                        .await
                        .into()
                }
                RequestKind::InitProducerId(r) => producer_ids::init_producer_id_clustered(link, r)
                    .await
                    .into(),
                body => {
                    let request = Request { body, ..request };
                    return self.handle_locally(request, peer).await;
                }
            };
            return Outcome::Respond(Box::new(response));
        }
        self.handle_locally(request, peer).await
    }

    async fn handle_locally(&self, request: Request, peer: SocketAddr) -> Outcome {
        let version = request.version;
        let client_id = request.header.client_id.as_deref();
        let response: ResponseKind = match request.body {
            RequestKind::ApiVersions(_) => api_versions_body(SERVED_APIS).into(),
            RequestKind::Metadata(r) => metadata::handle(self, r, version).into(),
            RequestKind::Produce(r) => {
                return produce::handle(self, r, request.header.correlation_id, version).await;
            }
            RequestKind::Fetch(r) => fetch::handle(self, r, version).await.into(),
            RequestKind::ListOffsets(r) => fetch::list_offsets(self, r, version).into(),
            RequestKind::CreateTopics(r) => admin::create_topics(self, r, version).into(),
            RequestKind::DeleteTopics(r) => admin::delete_topics(self, r, version).into(),
            RequestKind::CreatePartitions(r) => admin::create_partitions(self, r).into(),
            RequestKind::DescribeConfigs(r) => admin::describe_configs(self, r, version).into(),
            RequestKind::InitProducerId(r) => {
                producer_ids::init_producer_id(self, r, version).into()
            }
            RequestKind::OffsetForLeaderEpoch(r) => {
                offsets_for_leader_epoch::handle(self, r, version).into()
            }
            RequestKind::FindCoordinator(r) => group::find_coordinator(self, r, version).into(),
            RequestKind::JoinGroup(r) => group::join_group(self, r, version, client_id, peer)
                .await
                .into(),
            RequestKind::SyncGroup(r) => group::sync_group(self, r, version, client_id, peer)
                .await
                .into(),
            RequestKind::Heartbeat(r) => group::heartbeat(self, r, client_id, peer).await.into(),
            RequestKind::LeaveGroup(r) => group::leave_group(self, r, version, client_id, peer)
                .await
                .into(),
            RequestKind::OffsetCommit(r) => {
                group::offset_commit(self, r, client_id, peer).await.into()
            }
            RequestKind::OffsetFetch(r) => group::offset_fetch(self, r, version).into(),
            RequestKind::DescribeGroups(r) => group::describe_groups(self, r, version).into(),
            RequestKind::ListGroups(r) => group::list_groups(self, r, version).into(),
            RequestKind::DeleteGroups(r) => {
                group::delete_groups(self, r, client_id, peer).await.into()
            }
            RequestKind::OffsetDelete(r) => {
                group::offset_delete(self, r, client_id, peer).await.into()
            }
            _ => {
                // The codec refuses unserved APIs before they get here.
                tracing::error!("no handler for {:?} v{version}", request.api_key);
                return Outcome::Close;
            }
        };
        Outcome::Respond(Box::new(response))
    }

    /// Deletes segments past retention, runs the time-based flush policy, and, every
    /// `log.cleaner.backoff.ms`, compacts the logs whose policy is `compact`, once.
    pub fn maintain(&self) {
        let now = now_ms();
        let expiry_due = {
            let mut last = self
                .last_offsets_expiry
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let every =
                Duration::from_millis(self.config.group.offsets_retention_check_interval_ms);
            let due = last.elapsed() >= every;
            if due {
                *last = Instant::now();
            }
            due
        };
        if expiry_due {
            self.groups.expire_offsets(now);
        }
        let clean = self.config.log_cleaner_enable && {
            let mut last = self.last_cleaning.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.elapsed() >= Duration::from_millis(self.config.log_cleaner_backoff_ms);
            if due {
                *last = Instant::now();
            }
            due
        };
        for topic in self.topics.all() {
            for (index, partition) in topic.hosted() {
                if let Err(e) = partition.apply_retention(now) {
                    tracing::warn!("retention of {}-{index}: {e}", topic.name);
                }
                if let Err(e) = partition.flush_if_due(now) {
                    tracing::warn!("flush of {}-{index}: {e}", topic.name);
                }
                if clean {
                    match partition.clean(now) {
                        Ok(r) if r.segments_rewritten > 0 => tracing::info!(
                            "cleaned {}-{index}: {} segments, {} bytes to {} ({} keys)",
                            topic.name,
                            r.segments_rewritten,
                            r.bytes_before,
                            r.bytes_after,
                            r.keys
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("cleaning {}-{index}: {e}", topic.name),
                    }
                }
            }
        }
    }

    /// Fires the partitions' due actor timers, sends the heartbeat when due
    /// (`broker.heartbeat.interval.ms`), and writes the high-watermark, log-start and
    /// recovery-point checkpoints when due (`replica.high.watermark.checkpoint.interval.ms`).
    /// Returns how long until something is next due, so the caller sleeps exactly that long
    /// (quinn's `poll_timeout`): a broker with nothing due does no work at all, which also lets
    /// the allocator return idle memory (it defers that while the process keeps allocating).
    /// A timer an actor sets meanwhile is fired by the next call, at the latest one heartbeat
    /// interval later; the actors' timers are seconds long, and one set to fire at once fires
    /// within the step that set it.
    pub fn tick(&self) -> Duration {
        let heartbeat_every = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        let checkpoint_every =
            Duration::from_millis(self.config.high_watermark_checkpoint_interval_ms);
        let (heartbeat, checkpoint) = {
            let mut schedule = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
            let heartbeat = schedule.0.elapsed() >= heartbeat_every;
            if heartbeat {
                schedule.0 = Instant::now();
            }
            let checkpoint = schedule.1.elapsed() >= checkpoint_every;
            if checkpoint {
                schedule.1 = Instant::now();
            }
            (heartbeat, checkpoint)
        };
        let next_timer = self.topics.tick(heartbeat, now_ms());
        if checkpoint && let Err(e) = self.topics.checkpoint() {
            tracing::error!("writing the checkpoints: {e}");
        }
        let schedule = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
        let until = |since: Instant, every: Duration| every.saturating_sub(since.elapsed());
        let mut wait = until(schedule.0, heartbeat_every).min(until(schedule.1, checkpoint_every));
        if let Some(next_timer) = next_timer {
            wait = wait.min(next_timer);
        }
        wait.max(Duration::from_millis(1))
    }

    /// Flushes and closes every partition, leaving the clean-shutdown markers.
    pub fn shutdown(&self) {
        self.groups.stop_loading();
        for (partition, e) in self.topics.close_all(now_ms()) {
            tracing::error!("closing {partition}: {e}");
        }
        // Once more, with the recovery points the final flushes reached.
        if let Err(e) = self.topics.checkpoint() {
            tracing::error!("writing the checkpoints: {e}");
        }
    }

    /// How often [`Self::maintain`] should run.
    pub fn maintenance_interval(&self) -> Duration {
        let retention = Duration::from_millis(self.config.retention_check_interval_ms);
        let flush = u64::try_from(self.config.log.flush_interval_ms)
            .map(Duration::from_millis)
            .unwrap_or(Duration::MAX);
        let cleaner = Duration::from_millis(self.config.log_cleaner_backoff_ms);
        let offsets = Duration::from_millis(self.config.group.offsets_retention_check_interval_ms);
        retention
            .min(flush)
            .min(cleaner)
            .min(offsets)
            .max(Duration::from_millis(10))
    }

    fn creates_topics_on_demand(&self) -> bool {
        self.config.auto_create_topics
    }

    /// Whether the test hook `surety.test.produce.response.drop.every` swallows this produce
    /// response (the request has been handled; only its answer is lost).
    fn drops_produce_response(&self) -> bool {
        let every = self.config.drop_produce_response_every;
        every > 0 && (self.produce_answers.fetch_add(1, Ordering::Relaxed) + 1) % every == 0
    }

    fn next_produce_request(&self) -> u64 {
        self.produce_requests.fetch_add(1, Ordering::Relaxed)
    }

    /// The error for a partition this broker does not hold: in a cluster, one that exists
    /// elsewhere is `NOT_LEADER_OR_FOLLOWER` (the client refreshes its metadata and goes to
    /// the leader), as Kafka answers; otherwise it is unknown.
    pub(crate) fn missing_partition_error(&self, topic: &str, index: i32) -> Errors {
        let exists = self.cluster.as_ref().is_some_and(|link| {
            link.image()
                .topic(topic)
                .is_some_and(|t| index >= 0 && (index as usize) < t.partitions.len())
        });
        if exists {
            Errors::NotLeaderOrFollower
        } else {
            Errors::UnknownTopicOrPartition
        }
    }

    /// Wakes long-polling fetches to read again (a topic they wait for may now exist).
    fn notify_fetchers(&self) {
        self.topics.shared().high_watermark_moved().notify_waiters();
    }
}

/// `Some(message)` only where the response version has an error message field.
fn message_if(version: i16, since: i16, message: String) -> Option<StrBytes> {
    (version >= since).then(|| StrBytes::from_string(message))
}

/// Writes `cluster_id` (the controller's) into `meta.properties` on a broker's first start in
/// a cluster; a data directory of another cluster is refused, as Kafka refuses it.
pub(crate) fn adopt_cluster_id(dir: &Path, node_id: i32, cluster_id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("meta.properties");
    if path.exists() {
        let stored = read_or_create_cluster_id(dir, node_id)?;
        if stored != cluster_id {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} belongs to cluster {stored}, but the controller's cluster is {cluster_id} \
                     (INCONSISTENT_CLUSTER_ID)",
                    path.display()
                ),
            ));
        }
        return Ok(());
    }
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The cluster id in `meta.properties`, written on first start (as Kafka's storage format does).
/// A data directory written by another `node.id` is refused, as Kafka refuses it: its
/// checkpoints and leader epochs belong to a different broker.
pub(crate) fn read_or_create_cluster_id(dir: &Path, node_id: i32) -> std::io::Result<String> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some(stored) = text
            .lines()
            .find_map(|l| l.strip_prefix("node.id="))
            .and_then(|id| id.trim().parse::<i32>().ok())
        && stored != node_id
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "stored node.id {stored} in {} does not match node.id {node_id} in the \
                 configuration",
                path.display()
            ),
        ));
    }
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("cluster.id="))
            .map(str::trim)
            .filter(|id| !id.is_empty())
    {
        return Ok(id.to_string());
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!("version=1\ncluster.id={id}\nnode.id={node_id}\n"),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::read_or_create_cluster_id;

    #[test]
    fn meta_properties_keeps_the_cluster_id_and_refuses_another_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = read_or_create_cluster_id(dir.path(), 1).unwrap();
        let text = std::fs::read_to_string(dir.path().join("meta.properties")).unwrap();
        assert_eq!(text, format!("version=1\ncluster.id={id}\nnode.id=1\n"));
        assert_eq!(read_or_create_cluster_id(dir.path(), 1).unwrap(), id);
        let refused = read_or_create_cluster_id(dir.path(), 2).unwrap_err();
        assert!(refused.to_string().contains("node.id 1"), "{refused}");
    }
}
