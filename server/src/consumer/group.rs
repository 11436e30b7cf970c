//! The consumer's group membership: core's `GroupMember` actor, driven by one task over a
//! connection to the group's coordinator, the way the broker drives its actors. The task
//! carries out the member's effects in order (JoinGroup, SyncGroup, Heartbeat, LeaveGroup on
//! the wire; its timers on the clock), and also sends the consumer's offset commits and
//! fetches, so every request to the coordinator goes over the one connection in order.
//!
//! What the member asks of the application (revoke, assigned, lost) waits in the member until
//! the consumer's `poll` takes it: the listener runs in the application's task, and the member
//! rejoins only once the revocation is done. Heartbeats go on while the application
//! processes records between polls; if it does not poll for `max.poll.interval.ms`, the task
//! leaves the group so that the partitions move to a consumer that makes progress.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::actor::{Effect, Node};
use surety_core::errors::Errors;
use surety_core::group::{
    GroupMember, GroupMsg, MemberConfig, MemberEvent, MemberId, MemberTimer, TopicPartition,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::config::ConsumerConfig;
use crate::client::Connection;

type Effects = Vec<Effect<MemberTimer, GroupMsg>>;

/// What the consumer asks of the membership task.
enum Command {
    /// Carry out the member's effects (after a revocation, or a fresh start).
    Effects(Effects),
    /// Commit these offsets with the member's generation; answer with the first error.
    Commit {
        offsets: Vec<(TopicPartition, i64)>,
        reply: Option<oneshot::Sender<Result<(), Errors>>>,
    },
    /// The committed offsets of these partitions (-1 where there is none).
    Committed {
        partitions: Vec<TopicPartition>,
        reply: oneshot::Sender<anyhow::Result<Vec<(TopicPartition, i64)>>>,
    },
    /// Leave the group and stop.
    Leave(oneshot::Sender<()>),
}

/// The member and what the application and the task share about it.
struct Shared {
    member: GroupMember,
    last_poll: Instant,
    /// The task left the group after `max.poll.interval.ms` without a poll.
    left_for_slowness: bool,
}

/// A consumer's membership in its group.
pub(crate) struct Membership {
    shared: Arc<Mutex<Shared>>,
    member_config: Arc<MemberConfig>,
    commands: mpsc::UnboundedSender<Command>,
    events: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Membership {
    /// Joins `group` subscribed to `topics`.
    pub(crate) fn start(config: Arc<ConsumerConfig>, group: String, topics: Vec<Arc<str>>) -> Self {
        let member_config = Arc::new(MemberConfig {
            assignors: config.assignors.clone(),
            session_timeout_ms: config.session_timeout_ms,
            rebalance_timeout_ms: config.max_poll_interval_ms,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            retry_backoff_ms: config.retry_backoff_ms,
            group_instance_id: config.group_instance_id.as_deref().map(Arc::from),
            ..MemberConfig::new(Node::Broker(0), topics)
        });
        let mut member = GroupMember::new(member_config.clone());
        let first = member.start();
        let shared = Arc::new(Mutex::new(Shared {
            member,
            last_poll: Instant::now(),
            left_for_slowness: false,
        }));
        let (commands, rx) = mpsc::unbounded_channel();
        let events = Arc::new(Notify::new());
        let driver = Driver {
            config,
            group,
            shared: shared.clone(),
            events: events.clone(),
            conn: None,
            names: Names::default(),
            timers: BTreeMap::new(),
        };
        let task = tokio::spawn(driver.run(rx, first));
        Membership {
            shared,
            member_config,
            commands,
            events,
            task,
        }
    }

    /// The application polled: the member is alive. If it was away longer than
    /// `max.poll.interval.ms` and left, it joins again as a new member.
    pub(crate) fn polled(&self) {
        let mut shared = lock(&self.shared);
        shared.last_poll = Instant::now();
        if shared.left_for_slowness {
            shared.left_for_slowness = false;
            shared.member = GroupMember::new(self.member_config.clone());
            let effects = shared.member.start();
            let _ = self.commands.send(Command::Effects(effects));
        }
    }

    /// The next thing the application must do.
    pub(crate) fn poll_event(&self) -> Option<MemberEvent> {
        lock(&self.shared).member.poll_event()
    }

    /// Waits up to `timeout` for the member to have something for the application.
    pub(crate) async fn wait_event(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.events.notified()).await;
    }

    /// The application finished revoking: the member may join again.
    pub(crate) fn revoked(&self) {
        let effects = lock(&self.shared).member.on_revoked();
        let _ = self.commands.send(Command::Effects(effects));
    }

    /// Commits `offsets`; with `wait`, returns the outcome.
    pub(crate) async fn commit(
        &self,
        offsets: Vec<(TopicPartition, i64)>,
        wait: bool,
    ) -> Result<(), Errors> {
        if !wait {
            let _ = self.commands.send(Command::Commit {
                offsets,
                reply: None,
            });
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Commit {
            offsets,
            reply: Some(tx),
        });
        if sent.is_err() {
            return Err(Errors::CoordinatorNotAvailable);
        }
        rx.await.unwrap_or(Err(Errors::CoordinatorNotAvailable))
    }

    /// The group's committed offsets of `partitions`.
    pub(crate) async fn committed(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> anyhow::Result<Vec<(TopicPartition, i64)>> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Committed {
                partitions,
                reply: tx,
            })
            .map_err(|_| anyhow::anyhow!("the consumer is closed"))?;
        rx.await.context("the membership task stopped")?
    }

    /// Leaves the group and stops the task.
    pub(crate) async fn leave(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
        self.task.abort();
    }
}

/// The broker's string member ids, numbered for the actor.
#[derive(Default)]
struct Names {
    ids: HashMap<String, MemberId>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> Option<MemberId> {
        if name.is_empty() {
            return None;
        }
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        let id = self.names.len() as MemberId;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        Some(id)
    }

    fn name(&self, id: Option<MemberId>) -> String {
        id.and_then(|id| self.names.get(id as usize).cloned())
            .unwrap_or_default()
    }
}

struct Driver {
    config: Arc<ConsumerConfig>,
    group: String,
    shared: Arc<Mutex<Shared>>,
    events: Arc<Notify>,
    conn: Option<Connection>,
    names: Names,
    timers: BTreeMap<MemberTimer, Instant>,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, first: Effects) {
        self.execute(first).await;
        loop {
            let next = self.timers.values().min().copied();
            let poll_deadline = {
                let shared = lock(&self.shared);
                shared.last_poll + Duration::from_millis(self.config.max_poll_interval_ms)
            };
            let wake = next.map_or(poll_deadline, |n| n.min(poll_deadline));
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Effects(effects)) => self.execute(effects).await,
                    Some(Command::Commit { offsets, reply }) => {
                        let result = self.commit(offsets).await;
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Some(Command::Committed { partitions, reply }) => {
                        let _ = reply.send(self.fetch_committed(partitions).await);
                    }
                    Some(Command::Leave(done)) => {
                        let effects = lock(&self.shared).member.leave();
                        self.execute(effects).await;
                        let _ = done.send(());
                        return;
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    let due: Vec<MemberTimer> = self
                        .timers
                        .iter()
                        .filter(|&(_, &at)| at <= now)
                        .map(|(&t, _)| t)
                        .collect();
                    for timer in due {
                        self.timers.remove(&timer);
                        let effects = lock(&self.shared).member.on_timer(timer);
                        self.execute(effects).await;
                    }
                    self.leave_if_not_polled().await;
                }
            }
        }
    }

    /// Kafka's `max.poll.interval.ms`: an application stuck between polls gives up its
    /// partitions (it joins again on its next poll).
    async fn leave_if_not_polled(&mut self) {
        let effects = {
            let mut shared = lock(&self.shared);
            let late = shared.last_poll.elapsed()
                > Duration::from_millis(self.config.max_poll_interval_ms);
            if !late || shared.left_for_slowness {
                return;
            }
            tracing::warn!(
                "group {}: no poll for max.poll.interval.ms ({} ms); leaving the group",
                self.group,
                self.config.max_poll_interval_ms
            );
            shared.left_for_slowness = true;
            shared.member.leave()
        };
        self.execute(effects).await;
        self.events.notify_one();
    }

    async fn execute(&mut self, effects: Effects) {
        let mut queue: VecDeque<_> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Send { msg, .. } => match self.exchange(msg).await {
                    Ok(Some(answer)) => {
                        let more = lock(&self.shared).member.on_message(answer);
                        queue.extend(more);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("group {}: coordinator connection: {e:#}", self.group);
                        self.conn = None;
                        tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms))
                            .await;
                        let more = lock(&self.shared).member.on_disconnect();
                        queue.extend(more);
                    }
                },
                Effect::SetTimer { timer, after_ms } => {
                    self.timers
                        .insert(timer, Instant::now() + Duration::from_millis(after_ms));
                }
                Effect::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Effect::Persist(_) => {}
            }
        }
        if lock(&self.shared).member.has_events() {
            self.events.notify_one();
        }
    }

    /// The connection to the group's coordinator, found and opened if needed.
    async fn connection(&mut self) -> anyhow::Result<&mut Connection> {
        if self.conn.is_none() {
            let mut bootstrap =
                crate::cli::connect(&self.config.bootstrap_servers, &self.config.client_id).await?;
            // v4 batches keys (KIP-699); older versions name one.
            let version = bootstrap.version_of::<FindCoordinatorRequest>()?;
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s(self.group.clone())])
            } else {
                FindCoordinatorRequest::default().with_key(s(self.group.clone()))
            };
            let found = bootstrap
                .send_at(request, version)
                .await
                .context("FindCoordinator")?;
            let (error, host, port) = match found.coordinators.first() {
                Some(c) => (c.error_code, c.host.to_string(), c.port),
                None => (found.error_code, found.host.to_string(), found.port),
            };
            if error != Errors::None.code() {
                bail!("FindCoordinator: {}", crate::cli::error_name(error));
            }
            let address = format!("{host}:{port}");
            self.conn = Some(Connection::connect(&address, &self.config.client_id).await?);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// Sends one of the member's messages and turns the answer back into one. A coordinator
    /// that moved or is loading is an error here: the connection is dropped and the member
    /// resends.
    async fn exchange(&mut self, msg: GroupMsg) -> anyhow::Result<Option<GroupMsg>> {
        let group = GroupId(s(self.group.clone()));
        let moved = |code: i16| {
            matches!(
                Errors::from_code(code),
                Some(
                    Errors::NotCoordinator
                        | Errors::CoordinatorNotAvailable
                        | Errors::CoordinatorLoadInProgress
                )
            )
        };
        match msg {
            GroupMsg::JoinGroup {
                correlation_id,
                member_id,
                group_instance_id,
                protocol_type,
                protocols,
                session_timeout_ms,
                rebalance_timeout_ms,
                ..
            } => {
                self.refresh_partition_counts().await?;
                let request = JoinGroupRequest::default()
                    .with_group_id(group)
                    .with_session_timeout_ms(session_timeout_ms as i32)
                    .with_rebalance_timeout_ms(rebalance_timeout_ms as i32)
                    .with_member_id(s(self.names.name(member_id)))
                    .with_group_instance_id(group_instance_id.map(|i| s(i.to_string())))
                    .with_protocol_type(s(protocol_type.to_string()))
                    .with_protocols(
                        protocols
                            .into_iter()
                            .map(|p| {
                                JoinGroupRequestProtocol::default()
                                    .with_name(s(p.name.to_string()))
                                    .with_metadata(p.metadata)
                            })
                            .collect(),
                    );
                let r = self.connection().await?.send(request).await?;
                if moved(r.error_code) {
                    bail!("JoinGroup: {}", crate::cli::error_name(r.error_code));
                }
                let members = r
                    .members
                    .iter()
                    .filter_map(|m| Some((self.names.id(&m.member_id)?, m.metadata.clone())))
                    .collect();
                Ok(Some(GroupMsg::JoinGroupResponse {
                    correlation_id,
                    error: error_of(r.error_code),
                    generation_id: r.generation_id,
                    protocol_name: r.protocol_name.map(|p| Arc::from(p.as_str())),
                    leader: self.names.id(&r.leader),
                    member_id: self.names.id(&r.member_id),
                    members,
                }))
            }
            GroupMsg::SyncGroup {
                correlation_id,
                member_id,
                group_instance_id,
                generation_id,
                assignments,
                ..
            } => {
                let request = SyncGroupRequest::default()
                    .with_group_id(group)
                    .with_generation_id(generation_id)
                    .with_member_id(s(self.names.name(Some(member_id))))
                    .with_group_instance_id(group_instance_id.map(|i| s(i.to_string())))
                    .with_assignments(
                        assignments
                            .into_iter()
                            .map(|(m, a)| {
                                SyncGroupRequestAssignment::default()
                                    .with_member_id(s(self.names.name(Some(m))))
                                    .with_assignment(a)
                            })
                            .collect(),
                    );
                let r = self.connection().await?.send(request).await?;
                if moved(r.error_code) {
                    bail!("SyncGroup: {}", crate::cli::error_name(r.error_code));
                }
                Ok(Some(GroupMsg::SyncGroupResponse {
                    correlation_id,
                    error: error_of(r.error_code),
                    assignment: r.assignment,
                }))
            }
            GroupMsg::Heartbeat {
                correlation_id,
                member_id,
                group_instance_id,
                generation_id,
            } => {
                let request = HeartbeatRequest::default()
                    .with_group_id(group)
                    .with_generation_id(generation_id)
                    .with_member_id(s(self.names.name(Some(member_id))))
                    .with_group_instance_id(group_instance_id.map(|i| s(i.to_string())));
                let r = self.connection().await?.send(request).await?;
                if moved(r.error_code) {
                    bail!("Heartbeat: {}", crate::cli::error_name(r.error_code));
                }
                Ok(Some(GroupMsg::HeartbeatResponse {
                    correlation_id,
                    error: error_of(r.error_code),
                }))
            }
            GroupMsg::LeaveGroup { members, .. } => {
                let identities: Vec<MemberIdentity> = members
                    .iter()
                    .map(|m| {
                        MemberIdentity::default()
                            .with_member_id(s(self.names.name(m.member_id)))
                            .with_group_instance_id(
                                m.group_instance_id.as_ref().map(|i| s(i.to_string())),
                            )
                    })
                    .collect();
                let is_static = self.config.group_instance_id.is_some();
                let conn = self.connection().await?;
                let version = conn.version_of::<LeaveGroupRequest>()?;
                let request = if version >= 3 {
                    LeaveGroupRequest::default()
                        .with_group_id(group)
                        .with_members(identities)
                } else {
                    LeaveGroupRequest::default()
                        .with_group_id(group)
                        .with_member_id(
                            identities
                                .first()
                                .map(|m| m.member_id.clone())
                                .unwrap_or_default(),
                        )
                };
                // A static member does not leave on close (KIP-345): its session keeps its
                // partitions for its next incarnation.
                if !is_static {
                    conn.send_at(request, version).await?;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The subscribed topics' partition counts, which the leader assigns with.
    async fn refresh_partition_counts(&mut self) -> anyhow::Result<()> {
        let topics: Vec<Arc<str>> = {
            let shared = lock(&self.shared);
            shared.member.subscribed_topics().to_vec()
        };
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(s(t.to_string()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let r = self.connection().await?.send(request).await?;
        let counts = r
            .topics
            .iter()
            .filter(|t| t.error_code == Errors::None.code())
            .filter_map(|t| {
                let name = t.name.as_ref()?;
                Some((Arc::from(name.as_str()), t.partitions.len() as i32))
            })
            .collect();
        lock(&self.shared).member.set_partition_counts(counts);
        Ok(())
    }

    async fn commit(&mut self, offsets: Vec<(TopicPartition, i64)>) -> Result<(), Errors> {
        let identity = lock(&self.shared).member.commit_identity();
        let Some((member_id, generation_id)) = identity else {
            return Err(Errors::RebalanceInProgress);
        };
        let mut by_topic: BTreeMap<Arc<str>, Vec<(i32, i64)>> = BTreeMap::new();
        for (tp, offset) in offsets {
            by_topic
                .entry(tp.topic.clone())
                .or_default()
                .push((tp.partition, offset));
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(self.group.clone())))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(s(self.names.name(Some(member_id))))
            .with_group_instance_id(self.config.group_instance_id.clone().map(s))
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s(topic.to_string())))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(p, o)| {
                                        OffsetCommitRequestPartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let sent = match self.connection().await {
            Ok(conn) => conn.send(request).await,
            Err(e) => Err(e),
        };
        let response = match sent {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                return Err(Errors::CoordinatorNotAvailable);
            }
        };
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != Errors::None.code() {
                    return Err(error_of(p.error_code));
                }
            }
        }
        Ok(())
    }

    async fn fetch_committed(
        &mut self,
        partitions: Vec<TopicPartition>,
    ) -> anyhow::Result<Vec<(TopicPartition, i64)>> {
        let mut by_topic: BTreeMap<Arc<str>, Vec<i32>> = BTreeMap::new();
        for tp in &partitions {
            by_topic
                .entry(tp.topic.clone())
                .or_default()
                .push(tp.partition);
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(self.group.clone())))
            .with_topics(Some(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(s(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ));
        // v7: the last version with one group per request, enough for one consumer.
        let conn = self.connection().await?;
        let version = conn.version_of::<OffsetFetchRequest>()?.min(7);
        let response = match conn.send_at(request, version).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        if response.error_code != Errors::None.code() {
            bail!(
                "OffsetFetch: {}",
                crate::cli::error_name(response.error_code)
            );
        }
        Ok(response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        TopicPartition {
                            topic: Arc::from(t.name.as_str()),
                            partition: p.partition_index,
                        },
                        p.committed_offset,
                    )
                })
            })
            .collect())
    }
}

fn error_of(code: i16) -> Errors {
    Errors::from_code(code).unwrap_or(Errors::UnknownServerError)
}
