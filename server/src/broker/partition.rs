//! One partition as the broker serves it: core's [`Replica`] over the on-disk log, driven the way
//! `quinn` drives `quinn-proto`. Requests become the actor's messages; its effects are carried
//! out in the order it lists them (sends, timers, persists, see `surety_core::replication`'s
//! `effect` module). The driver holds no protocol rule: offsets, the high watermark, the leader
//! epoch, when `acks=all` is answered and what a client may read all come from the actor.
//!
//! A single broker is a cluster of one: it also runs core's [`Controller`] for the partition
//! (a combined `process.roles=broker,controller` node), and messages between the two are
//! delivered in-process. Adding brokers adds followers and a controller connection to this
//! driver, not decisions.
//!
//! Restart semantics, as on a one-node KRaft cluster: the controller's last leader epoch is the
//! newest one in `leader-epoch-checkpoint`; the restarted replica announces a new incarnation,
//! the controller sees that its leader restarted and elects again, so each start bumps the
//! leader epoch a client sees in Metadata, and the new epoch is checkpointed before anything is
//! appended in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use surety_core::errors::Errors;
use surety_core::fetch::IsolationLevel;
use surety_core::log::checkpoint_file::{read_leader_epochs, write_leader_epochs};
use surety_core::log::{LogConfig, LogError, PartitionLog, RecoveryPointStore, SegmentLog};
use surety_core::record::{RecordBatch, batches};
use surety_core::replication::{
    Acks, BrokerId, Controller, ControllerConfig, ControllerTimer, Durability, Durable, Effect,
    EpochEndOffset, LeaderEpochCache, Msg, Node, OffsetSnapshot, PartitionState, Replica,
    ReplicaConfig, ReplicaTimer, Role,
};
use surety_core::trace::{ReplicaInput, Step};
use tokio::sync::oneshot;

/// The broker settings a partition's actors run with.
#[derive(Clone, Debug)]
pub struct ReplicationSettings {
    /// `node.id`.
    pub broker_id: BrokerId,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// `replica.fetch.max.bytes`.
    pub replica_fetch_max_bytes: usize,
    /// The partition's assigned replicas in a cluster (the metadata log's assignment);
    /// empty on a single node, which is a cluster of one running its own controller.
    pub replicas: Vec<BrokerId>,
    /// `surety.test.broken.variant`: `None` but in tests of the trace checker.
    pub broken: Option<surety_core::replication::BrokenVariant>,
}

impl ReplicationSettings {
    /// The same settings for a partition assigned to `replicas`.
    pub fn assigned(&self, replicas: Vec<BrokerId>) -> Self {
        ReplicationSettings {
            replicas,
            ..self.clone()
        }
    }

    fn clustered(&self) -> bool {
        !self.replicas.is_empty()
    }
}

/// Where a clustered partition's messages to other nodes go: the broker's network side
/// (replica fetchers, the answers to followers' fetches, AlterPartition to the controller).
/// Called with the partition locked, so it must only queue, never call back.
pub trait Router: Send + Sync {
    /// Delivers `msg` from partition `index` of `topic` to `to`.
    fn send(&self, topic: &str, index: i32, to: Node, msg: Msg);
}

impl ReplicationSettings {
    /// The settings for a topic's partitions: the broker's, with the topic's overrides.
    pub fn for_topic(&self, topic: &super::topic_config::TopicConfig) -> Self {
        ReplicationSettings {
            min_insync_replicas: topic.min_insync_replicas(self.min_insync_replicas),
            ..self.clone()
        }
    }
}

/// The partition part of a ProduceResponse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceAnswer {
    /// `None` on success.
    pub error: Errors,
    /// Offset of the first record, or -1.
    pub base_offset: i64,
    /// The batch's `LogAppendTime`, or -1.
    pub log_append_time: i64,
    /// The log start offset when answered.
    pub log_start_offset: i64,
}

/// When a produce is answered.
#[derive(Debug)]
pub enum Produced {
    /// Now.
    Now(ProduceAnswer),
    /// Later, when the replica decides (`acks=all` waiting for the high watermark): Kafka's
    /// `DelayedProduce`.
    Later(oneshot::Receiver<ProduceAnswer>),
    /// Never: `acks=0` and it succeeded.
    Silent,
}

/// What a consumer fetch read.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole stored batches, as written.
    pub records: Bytes,
    /// The partition's offsets at the read.
    pub offsets: OffsetSnapshot,
}

/// Who leads the partition, as Metadata reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader, `None` while there is none.
    pub leader: Option<BrokerId>,
    /// Its epoch (-1 when unknown).
    pub leader_epoch: i32,
    /// The assigned replicas.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    Replica(ReplicaTimer),
    Controller(ControllerTimer),
}

struct State {
    replica: Replica<SegmentLog>,
    /// The partition's own controller on a single node; `None` in a cluster, where the
    /// controller node decides and its decisions arrive through the metadata log.
    controller: Option<Controller>,
    /// Deadlines on the monotonic clock, in ms since the broker started.
    timers: BTreeMap<Timer, u64>,
    /// Produces the replica will answer in a later step, by (request, correlation id).
    delayed: HashMap<(u64, u32), oneshot::Sender<ProduceAnswer>>,
    /// The leader-epoch entries last written to `leader-epoch-checkpoint`.
    epochs_written: Vec<(i32, i64)>,
}

/// A partition: its actors and their driver.
pub struct Partition {
    dir: PathBuf,
    name: String,
    topic: String,
    index: i32,
    shared: Arc<Shared>,
    state: Mutex<State>,
}

/// What every partition of a broker shares with its driver: the monotonic clock actor timers
/// run on, and the signal that a high watermark moved (what long-polling fetches wait for:
/// records become readable when the replica says they are committed, not when they are
/// appended).
#[derive(Debug)]
pub struct Shared {
    started: Instant,
    high_watermark_moved: tokio::sync::Notify,
    router: std::sync::OnceLock<Arc<dyn Router>>,
    trace: std::sync::OnceLock<Arc<crate::trace::TraceWriter>>,
}

impl std::fmt::Debug for dyn Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            started: Instant::now(),
            high_watermark_moved: tokio::sync::Notify::new(),
            router: std::sync::OnceLock::new(),
            trace: std::sync::OnceLock::new(),
        }
    }
}

impl Shared {
    fn monotonic_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Woken whenever a partition's high watermark moves.
    pub fn high_watermark_moved(&self) -> &tokio::sync::Notify {
        &self.high_watermark_moved
    }

    /// Records every clustered replica's steps to `trace` (`surety.test.trace.dir`).
    pub fn set_trace(&self, trace: Arc<crate::trace::TraceWriter>) {
        let _ = self.trace.set(trace);
    }

    /// Sets where clustered partitions send their messages (once, at start).
    pub fn set_router(&self, router: Arc<dyn Router>) {
        let _ = self.router.set(router);
    }
}

impl Partition {
    /// A new, empty partition in `dir` (which exists): this broker leads it in epoch 0.
    pub fn create(
        dir: &Path,
        config: LogConfig,
        recovery_point: Box<dyn RecoveryPointStore>,
        settings: &ReplicationSettings,
        shared: Arc<Shared>,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let log = SegmentLog::open_with(dir, config, recovery_point, now_ms)?;
        let (replica_config, controller_config) = actor_configs(settings);
        let replica = Replica::new(replica_config.clone(), log);
        if settings.clustered() {
            // Unattached until the metadata log's state for it is delivered.
            let partition = Partition::new(dir, replica, None, shared);
            partition.record(
                ReplicaInput::Create {
                    config: (*replica_config).clone(),
                },
                &[],
            );
            return Ok(partition);
        }
        let initial = PartitionState {
            leader: Some(settings.broker_id),
            leader_epoch: 0,
            isr: BTreeSet::from([settings.broker_id]),
            partition_epoch: 0,
        };
        let (controller, controller_out) = Controller::new(controller_config, initial);
        let announce = controller.announce();
        let partition = Partition::new(dir, replica, Some(controller), shared);
        {
            let mut state = partition.lock();
            let mut answers = Vec::new();
            partition.apply_controller(&mut state, controller_out, now_ms, &mut answers);
            partition.apply_controller(&mut state, announce, now_ms, &mut answers);
        }
        Ok(partition)
    }

    /// Opens (recovering if needed) the partition in `dir` after a restart, with the high
    /// watermark from `replication-offset-checkpoint`.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        recovery_point: Box<dyn RecoveryPointStore>,
        settings: &ReplicationSettings,
        high_watermark: Option<i64>,
        shared: Arc<Shared>,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let name = dir_name(dir);
        let log = SegmentLog::open_with(dir, config, recovery_point, now_ms)?;
        let report = log.recovery_report();
        let log_end = log.log_end_offset();
        if !report.clean_shutdown && report.segments_found > 0 {
            tracing::info!(
                "{name}: recovered after an unclean shutdown: {} segments scanned, {} bytes of \
                 torn or unflushed data truncated, log end offset {log_end}",
                report.segments_recovered,
                report.bytes_truncated,
            );
        }
        let checkpointed = match read_leader_epochs(dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("{name}: {e}; rebuilding the leader-epoch cache from the log");
                None
            }
        };
        let (epochs, last_epoch) = match checkpointed {
            Some(entries) => {
                let last = entries.iter().map(|&(epoch, _)| epoch).max();
                (LeaderEpochCache::recovered(entries, log_end), last)
            }
            None => {
                let epochs = LeaderEpochCache::rebuild(&log)?;
                let last = epochs.latest_epoch();
                (epochs, last)
            }
        };
        tracing::info!(
            "{name}: loaded with log end offset {log_end}, high watermark checkpoint {}, \
             leader epochs {:?}",
            high_watermark.map_or("none".to_string(), |hw| hw.to_string()),
            epochs.entries()
        );
        let durable = Durable {
            log,
            epochs,
            high_watermark: high_watermark.unwrap_or(0),
            incarnation: 0,
        };
        let (replica_config, controller_config) = actor_configs(settings);
        let recovered = ReplicaInput::Recover {
            config: (*replica_config).clone(),
            log_end_offset: durable.log.log_end_offset(),
            high_watermark: durable.high_watermark,
            epochs: durable.epochs.entries().to_vec(),
            incarnation: durable.incarnation,
        };
        let (replica, replica_out) = Replica::recover(replica_config, durable)?;
        let clustered = settings.clustered();
        if replica.producer_count() > 0 {
            tracing::info!(
                "{name}: rebuilt the state of {} idempotent producers from the log (log end \
                 offset {log_end})",
                replica.producer_count()
            );
        }
        if clustered {
            let written = replica.epochs().entries().to_vec();
            let partition = Partition::new(dir, replica, None, shared);
            partition.record(recovered, &replica_out);
            {
                let mut state = partition.lock();
                state.epochs_written = written;
                let mut answers = Vec::new();
                partition.apply_replica(&mut state, replica_out, now_ms, &mut answers);
            }
            return Ok(partition);
        }
        // The controller of a cluster of one remembers the last epoch through the checkpoint
        // (a KRaft controller keeps it in its metadata log); never reuse one.
        let last_epoch = last_epoch.unwrap_or(0);
        let initial = PartitionState {
            leader: Some(settings.broker_id),
            leader_epoch: last_epoch,
            isr: BTreeSet::from([settings.broker_id]),
            partition_epoch: last_epoch,
        };
        let (controller, controller_out) = Controller::new(controller_config, initial);
        // The recovered cache counts as written: recovery may have dropped an epoch that starts
        // at the log end, and rewriting the file without it before the election below is
        // recorded would let a crash in between make the controller reuse that epoch. The
        // file keeps it until the new epoch replaces it; the next recovery drops it again.
        let written = replica.epochs().entries().to_vec();
        let partition = Partition::new(dir, replica, Some(controller), shared);
        partition.lock().epochs_written = written;
        {
            let mut state = partition.lock();
            let mut answers = Vec::new();
            partition.apply_controller(&mut state, controller_out, now_ms, &mut answers);
            partition.apply_replica(&mut state, replica_out, now_ms, &mut answers);
        }
        Ok(partition)
    }

    fn new(
        dir: &Path,
        replica: Replica<SegmentLog>,
        controller: Option<Controller>,
        shared: Arc<Shared>,
    ) -> Self {
        let name = dir_name(dir);
        let (topic, index) = name
            .rsplit_once('-')
            .and_then(|(t, i)| Some((t.to_string(), i.parse().ok()?)))
            .unwrap_or_else(|| (name.clone(), 0));
        Partition {
            dir: dir.to_path_buf(),
            name,
            topic,
            index,
            shared,
            state: Mutex::new(State {
                replica,
                controller,
                timers: BTreeMap::new(),
                delayed: HashMap::new(),
                epochs_written: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the log as consistent as a crash would, and
        // every log operation checks its own state; serving on is what Kafka would do.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a client's batch to the replica. `request` names the request uniquely on this
    /// broker, so a delayed answer finds its way back.
    pub fn produce(
        &self,
        request: u64,
        correlation_id: u32,
        acks: Acks,
        records: Bytes,
        now_ms: i64,
    ) -> Produced {
        let mut state = self.lock();
        let client = Node::Client(request);
        let msg = Msg::Produce {
            correlation_id,
            acks,
            records,
        };
        let high_watermark = state.replica.high_watermark();
        let input = self.traced().then(|| msg.clone());
        let out = state.replica.on_message(client, msg, now_ms);
        if let Some(msg) = input {
            let from = client;
            self.record_locked(&state, ReplicaInput::Message { from, msg, now_ms }, &out);
        }
        let mut answers = Vec::new();
        self.apply_replica(&mut state, out, now_ms, &mut answers);
        self.signal_if_moved(&state, high_watermark);
        let mut mine = None;
        for (to, answer) in answers {
            if to == (request, correlation_id) {
                mine = Some(answer);
            } else {
                deliver(&mut state, to, answer);
            }
        }
        match mine {
            Some(answer) => Produced::Now(answer),
            None if acks == Acks::None => Produced::Silent,
            None => {
                let (tx, rx) = oneshot::channel();
                state.delayed.insert((request, correlation_id), tx);
                Produced::Later(rx)
            }
        }
    }

    /// Hands the replica a message from another node (the metadata log's decision, a
    /// follower's fetch, a leader's answer, the controller's answer).
    pub fn on_peer_message(&self, from: Node, msg: Msg, now_ms: i64) {
        let input = self.traced().then(|| ReplicaInput::Message {
            from,
            msg: msg.clone(),
            now_ms,
        });
        self.drive(now_ms, input, |replica| {
            replica.on_message(from, msg, now_ms)
        });
    }

    /// Tells the replica its connection to `peer` was lost.
    pub fn on_peer_disconnect(&self, peer: Node, now_ms: i64) {
        let input = ReplicaInput::Disconnect { peer };
        self.drive(now_ms, Some(input), |replica| replica.on_disconnect(peer));
    }

    /// Answers `follower`'s parked fetch now (`replica.fetch.wait.max.ms` passed).
    pub fn expire_follower_fetch(&self, follower: BrokerId, now_ms: i64) {
        let input = ReplicaInput::ExpireFetch { follower };
        self.drive(now_ms, Some(input), |replica| {
            replica.expire_parked_fetch(follower)
        });
    }

    fn drive(
        &self,
        now_ms: i64,
        input: Option<ReplicaInput>,
        step: impl FnOnce(&mut Replica<SegmentLog>) -> Vec<Effect<ReplicaTimer>>,
    ) {
        let mut state = self.lock();
        let high_watermark = state.replica.high_watermark();
        let out = step(&mut state.replica);
        if let Some(input) = input {
            self.record_locked(&state, input, &out);
        }
        let mut answers = Vec::new();
        self.apply_replica(&mut state, out, now_ms, &mut answers);
        self.signal_if_moved(&state, high_watermark);
        for (to, answer) in answers {
            deliver(&mut state, to, answer);
        }
    }

    /// Forgets a delayed produce whose request timed out.
    pub fn forget_delayed(&self, request: u64, correlation_id: u32) {
        self.lock().delayed.remove(&(request, correlation_id));
    }

    /// Reads for a consumer: whole batches from `fetch_offset`, at most `max_bytes` (but at
    /// least one batch), below what `isolation` may see, after checking the client's epoch.
    pub fn read(
        &self,
        current_leader_epoch: i32,
        fetch_offset: i64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<ReadResult, ReadError> {
        let state = self.lock();
        let replica = &state.replica;
        let offsets = replica.offset_snapshot();
        replica
            .validate_client_epoch(current_leader_epoch)
            .map_err(|error| ReadError::Refused { error, offsets })?;
        let records = replica
            .read_for_consumer(fetch_offset, max_bytes, isolation)
            .map_err(|error| ReadError::Log { error, offsets })?;
        Ok(ReadResult { records, offsets })
    }

    /// Reads whole batches from `offset` to the log's end, committed or not: how a group
    /// coordinator replays its `__consumer_offsets` partition (Kafka's loader also reads to the
    /// log end offset). Returns the batches and the log end offset.
    pub fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64), LogError> {
        let state = self.lock();
        let log = state.replica.log();
        let end = log.log_end_offset();
        // Copied under the lock: the read may map the file, which a later truncation could cut.
        let bytes = Bytes::copy_from_slice(&log.read(offset, max_bytes, Some(end))?);
        Ok((bytes, end))
    }

    /// The partition's offsets as a client sees them.
    pub fn offsets(&self) -> OffsetSnapshot {
        self.lock().replica.offset_snapshot()
    }

    /// Checks a leader-only client request's epoch; returns the current leader epoch.
    pub fn validate_client_epoch(&self, current_leader_epoch: i32) -> Result<i32, Errors> {
        self.lock()
            .replica
            .validate_client_epoch(current_leader_epoch)
    }

    /// OffsetsForLeaderEpoch for a client.
    pub fn offset_for_leader_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<EpochEndOffset, Errors> {
        self.lock()
            .replica
            .offset_for_leader_epoch(current_leader_epoch, leader_epoch)
    }

    /// The epoch of the batch holding `offset` (-1 if unknown).
    pub fn epoch_for_offset(&self, offset: i64) -> i32 {
        self.lock()
            .replica
            .epochs()
            .epoch_for_offset(offset)
            .unwrap_or(-1)
    }

    /// Who leads, as Metadata reports it.
    pub fn leadership(&self) -> Leadership {
        let state = self.lock();
        let replica = &state.replica;
        let leader = match replica.role() {
            Role::Leader(_) => Some(replica.config().broker_id),
            Role::Follower { leader, .. } => *leader,
            Role::Unattached => None,
        };
        Leadership {
            leader,
            leader_epoch: replica.leader_epoch().unwrap_or(-1),
            replicas: replica.config().replicas.clone(),
            isr: replica.isr().into_iter().collect(),
        }
    }

    /// The high watermark and log start offset, for the broker's checkpoints.
    pub fn checkpoint_offsets(&self) -> (i64, i64) {
        let offsets = self.offsets();
        (offsets.high_watermark, offsets.log_start_offset)
    }

    /// Fires due timers, and with `heartbeat` tells the controller this broker is alive.
    /// Returns how long until the next timer is due.
    pub fn tick(&self, heartbeat: bool, now_ms: i64) -> Option<Duration> {
        let mut state = self.lock();
        let high_watermark = state.replica.high_watermark();
        let mut answers = Vec::new();
        if heartbeat && state.controller.is_some() {
            let msg = Msg::BrokerHeartbeat {
                broker_id: state.replica.config().broker_id,
                incarnation: state.replica.durable().incarnation,
            };
            let from = Node::Broker(state.replica.config().broker_id);
            if let Some(controller) = state.controller.as_mut() {
                let out = controller.on_message(from, msg);
                self.apply_controller(&mut state, out, now_ms, &mut answers);
            }
        }
        self.fire_due_timers(&mut state, now_ms, &mut answers);
        for (to, answer) in answers {
            deliver(&mut state, to, answer);
        }
        self.signal_if_moved(&state, high_watermark);
        let now = self.shared.monotonic_ms();
        let next = state.timers.values().min()?;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    /// The first offset at or after `timestamp`, as (timestamp, offset).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.lock()
            .replica
            .log()
            .fetch_offset_by_timestamp(timestamp)
    }

    /// The record with the largest timestamp, as (timestamp, offset) (ListOffsets -3, KIP-734);
    /// the first such record if several share it. Scans the log: an admin query, not a hot path.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let state = self.lock();
        let mut best: Option<(i64, RecordBatch)> = None;
        for_each_batch(state.replica.log(), |batch| {
            let ts = batch.header().max_timestamp;
            if best.as_ref().is_none_or(|(t, _)| ts > *t) {
                best = Some((ts, batch));
            }
        })?;
        Ok(best.map(|(ts, batch)| {
            let exact = batch.records().ok().and_then(|records| {
                records
                    .filter_map(Result::ok)
                    .find(|r| r.timestamp == ts)
                    .map(|r| r.offset)
            });
            (ts, exact.unwrap_or_else(|| batch.last_offset()))
        }))
    }

    /// The log's settings.
    pub fn config(&self) -> LogConfig {
        self.lock().replica.log().config().clone()
    }

    /// Runs the time-based flush policy (`log.flush.interval.ms`).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        self.lock().replica.log_mut().flush_if_due(now_ms)
    }

    /// Deletes segments past retention, never at or above the high watermark; returns how many.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.lock()
            .replica
            .remove_log_prefix(|log, high_watermark| {
                log.delete_old_segments(now_ms, high_watermark)
            })
    }

    /// Compacts the log below its high watermark if its policy is `compact` and enough of it is
    /// dirty (`surety_core::log::cleaner` decides what is kept).
    pub fn clean(&self, now_ms: i64) -> Result<surety_core::log::cleaner::CleanReport, LogError> {
        let mut state = self.lock();
        let high_watermark = state.replica.high_watermark();
        state.replica.log_mut().clean(now_ms, high_watermark)
    }

    /// Flushes and closes the log, leaving the clean-shutdown marker.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.lock().replica.log_mut().close(now_ms)
    }

    fn apply_replica(
        &self,
        state: &mut State,
        effects: Vec<Effect<ReplicaTimer>>,
        now_ms: i64,
        answers: &mut Vec<((u64, u32), ProduceAnswer)>,
    ) {
        for effect in effects {
            match effect {
                Effect::Send {
                    to: Node::Controller,
                    msg,
                } if state.controller.is_some() => {
                    let from = Node::Broker(state.replica.config().broker_id);
                    if let Some(controller) = state.controller.as_mut() {
                        let out = controller.on_message(from, msg);
                        self.apply_controller(state, out, now_ms, answers);
                    }
                }
                // In a cluster the broker heartbeats as a whole (BrokerHeartbeat), not per
                // partition.
                Effect::Send {
                    to: Node::Controller,
                    msg: Msg::BrokerHeartbeat { .. },
                } => {}
                Effect::Send {
                    to: Node::Client(request),
                    msg:
                        Msg::ProduceResponse {
                            correlation_id,
                            error_code,
                            base_offset,
                            log_append_time,
                        },
                } => {
                    let answer = ProduceAnswer {
                        error: error_code,
                        base_offset,
                        log_append_time,
                        log_start_offset: state.replica.log().log_start_offset(),
                    };
                    answers.push(((request, correlation_id), answer));
                }
                Effect::Send { to, msg } => match self.shared.router.get() {
                    Some(router) => router.send(&self.topic, self.index, to, msg),
                    None => tracing::debug!("{}: no route to {to:?} for {msg:?}", self.name),
                },
                Effect::SetTimer { timer, after_ms } => {
                    let at = self.shared.monotonic_ms() + after_ms;
                    state.timers.insert(Timer::Replica(timer), at);
                }
                Effect::CancelTimer(timer) => {
                    state.timers.remove(&Timer::Replica(timer));
                }
                Effect::Persist(Durability::BeforeSends) => self.write_leader_epochs(state),
                // The broker checkpoints high watermarks on its own schedule.
                Effect::Persist(Durability::Lazily) => {}
            }
        }
        self.fire_due_timers(state, now_ms, answers);
    }

    fn apply_controller(
        &self,
        state: &mut State,
        effects: Vec<Effect<ControllerTimer>>,
        now_ms: i64,
        answers: &mut Vec<((u64, u32), ProduceAnswer)>,
    ) {
        let me = Node::Broker(state.replica.config().broker_id);
        for effect in effects {
            match effect {
                Effect::Send { to, msg } if to == me => {
                    let out = state.replica.on_message(Node::Controller, msg, now_ms);
                    self.apply_replica(state, out, now_ms, answers);
                }
                Effect::Send { to, msg } => {
                    tracing::debug!("{}: no route to {to:?} for {msg:?}", self.name);
                }
                Effect::SetTimer { timer, after_ms } => {
                    let at = self.shared.monotonic_ms() + after_ms;
                    state.timers.insert(Timer::Controller(timer), at);
                }
                Effect::CancelTimer(timer) => {
                    state.timers.remove(&Timer::Controller(timer));
                }
                Effect::Persist(_) => {}
            }
        }
        self.fire_due_timers(state, now_ms, answers);
    }

    fn fire_due_timers(
        &self,
        state: &mut State,
        now_ms: i64,
        answers: &mut Vec<((u64, u32), ProduceAnswer)>,
    ) {
        let now = self.shared.monotonic_ms();
        while let Some((&timer, _)) = state.timers.iter().find(|&(_, &at)| at <= now) {
            state.timers.remove(&timer);
            match timer {
                Timer::Replica(t) => {
                    let out = state.replica.on_timer(t, now_ms);
                    let input = ReplicaInput::Timer { timer: t, now_ms };
                    self.record_locked(state, input, &out);
                    self.apply_replica(state, out, now_ms, answers);
                }
                Timer::Controller(t) => {
                    if let Some(controller) = state.controller.as_mut() {
                        let out = controller.on_timer(t);
                        self.apply_controller(state, out, now_ms, answers);
                    }
                }
            }
        }
    }

    /// Whether this partition's steps are recorded: a clustered one, with a trace directory.
    fn traced(&self) -> bool {
        self.shared.trace.get().is_some()
    }

    fn record(&self, input: ReplicaInput, effects: &[Effect<ReplicaTimer>]) {
        let state = self.lock();
        self.record_locked(&state, input, effects);
    }

    /// Records a step of a clustered replica before its effects are carried out (so before any
    /// message it sends can be received and recorded elsewhere).
    fn record_locked(&self, state: &State, input: ReplicaInput, effects: &[Effect<ReplicaTimer>]) {
        if state.controller.is_some() {
            return;
        }
        if let Some(trace) = self.shared.trace.get() {
            trace.record(Step::Replica {
                topic: self.topic.clone(),
                partition: self.index,
                input,
                effects: effects.to_vec(),
            });
        }
    }

    fn signal_if_moved(&self, state: &State, high_watermark_before: i64) {
        if state.replica.high_watermark() != high_watermark_before {
            self.shared.high_watermark_moved.notify_waiters();
        }
    }

    /// Writes `leader-epoch-checkpoint` if the cache changed, before any later send leaves. A
    /// failed write is logged; the next change writes the file again.
    fn write_leader_epochs(&self, state: &mut State) {
        let entries = state.replica.epochs().entries();
        if entries == state.epochs_written.as_slice() {
            return;
        }
        match write_leader_epochs(&self.dir, entries) {
            Ok(()) => state.epochs_written = entries.to_vec(),
            Err(e) => tracing::error!("{}: writing the leader-epoch checkpoint: {e}", self.name),
        }
    }
}

/// Why a consumer read found nothing to return; both carry the offsets for the response.
#[derive(Debug)]
pub enum ReadError {
    /// The replica refused the request (epoch, leadership).
    Refused {
        /// Why.
        error: Errors,
        /// The partition's offsets.
        offsets: OffsetSnapshot,
    },
    /// The log could not serve the offset.
    Log {
        /// Why.
        error: LogError,
        /// The partition's offsets.
        offsets: OffsetSnapshot,
    },
}

fn deliver(state: &mut State, to: (u64, u32), answer: ProduceAnswer) {
    if let Some(tx) = state.delayed.remove(&to) {
        let _ = tx.send(answer);
    }
}

fn actor_configs(settings: &ReplicationSettings) -> (Arc<ReplicaConfig>, Arc<ControllerConfig>) {
    let replicas = if settings.clustered() {
        settings.replicas.clone()
    } else {
        vec![settings.broker_id]
    };
    let mut replica = ReplicaConfig::new(settings.broker_id, replicas.clone());
    replica.min_insync_replicas = settings.min_insync_replicas;
    replica.replica_lag_time_max_ms = settings.replica_lag_time_max_ms;
    replica.replica_fetch_max_bytes = settings.replica_fetch_max_bytes;
    replica.broken = settings.broken;
    let mut controller = ControllerConfig::new(replicas);
    controller.broker_session_timeout_ms = settings.broker_session_timeout_ms;
    (Arc::new(replica), Arc::new(controller))
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Calls `f` on every batch of the log, in offset order.
fn for_each_batch(log: &SegmentLog, mut f: impl FnMut(RecordBatch)) -> Result<(), LogError> {
    const CHUNK: usize = 8 * 1024 * 1024;
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let chunk = log.read(offset, CHUNK, None)?;
        if chunk.is_empty() {
            break;
        }
        for batch in batches(chunk) {
            let batch = batch.map_err(LogError::Corrupt)?;
            offset = offset.max(batch.header().next_offset());
            f(batch);
        }
    }
    Ok(())
}
