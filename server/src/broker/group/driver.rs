//! The driver of the group coordinators this broker runs: one core `GroupCoordinator` per
//! group, driven the way `partition.rs` drives replicas. A request becomes a `GroupMsg`; the
//! effects are carried out in order: an answer goes to the request waiting for it, an
//! `Append` is written to the group's `__consumer_offsets` partition with `acks=all` (its
//! outcome goes back to the coordinator), timers go to one timer task. Member ids are Kafka's
//! strings on the wire and small numbers in the actor; this driver keeps the map.
//!
//! Groups are read back from their partition in the background once the broker leads it (at
//! the start, or when `__consumer_offsets` is created), as Kafka's `GroupMetadataManager`
//! loads a partition when it becomes its leader: their generation and committed offsets
//! return, their members join again. Until a partition is read, its groups' requests are
//! answered `COORDINATOR_LOAD_IN_PROGRESS` (see [`Groups::load`]).
//!
//! In a cluster the leadership of a partition moves; its groups follow it, as Kafka's
//! `onElection` and `onResignation` have them: the new leader reads the partition back, and a
//! broker that stops leading it forgets its groups ([`Groups::unload`]), so that their members,
//! told `NOT_COORDINATOR`, find the new one. Nothing the old broker held in memory is needed:
//! every decision the coordinator answered was first written with `acks=all`, so the new
//! leader's log has it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use surety_core::actor::{Effect, Node};
use surety_core::errors::Errors;
use surety_core::group::{
    GroupConfig, GroupCoordinator, GroupMsg, GroupRecord, GroupState, GroupTimer, LoadedMember,
    MemberId, TopicPartition,
};
use surety_core::log::LogError;
use surety_core::record::{BatchBuilder, batches};
use surety_core::replication::Acks;
use tokio::sync::{Notify, oneshot};

use crate::broker::now_ms;
use crate::broker::partition::{Partition, Produced};
use crate::config::GroupSettings;
use surety_core::group::stored::{
    self as storage, OffsetAndMetadata, ReplayedGroup, StoredGroup, StoredMember, replay,
};

/// The id a member string this coordinator never gave out maps to: the coordinator knows no
/// such member and answers `UNKNOWN_MEMBER_ID`.
pub(crate) const UNKNOWN_MEMBER: MemberId = MemberId::MAX;

/// Produce request ids of the coordinator's own writes, apart from clients' (which count up
/// from 0), so the partition's delayed answers never mix them up.
const FIRST_WRITE_REQUEST: u64 = 1 << 62;

/// Who sent a request, as Kafka records a member.
#[derive(Clone, Debug, Default)]
pub(crate) struct Caller {
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) group_instance_id: Option<String>,
}

/// A member's wire identity.
#[derive(Clone, Debug)]
pub(crate) struct MemberInfo {
    pub(crate) member_id: String,
    pub(crate) caller: Caller,
}

/// The coordinator's answer, with the wire names of the members it mentions.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) msg: GroupMsg,
    pub(crate) names: BTreeMap<MemberId, String>,
}

impl Answer {
    /// The wire id of `id`, or `fallback` for one the coordinator does not know.
    pub(crate) fn name(&self, id: Option<MemberId>, fallback: &str) -> String {
        id.and_then(|id| self.names.get(&id).cloned())
            .unwrap_or_else(|| fallback.to_string())
    }
}

struct Waiter {
    tx: oneshot::Sender<Answer>,
    caller: Caller,
}

/// One group and its driver state.
pub(crate) struct GroupEntry {
    pub(crate) name: String,
    pub(crate) coordinator: GroupCoordinator,
    /// The partition of `__consumer_offsets` the group lives on, and its index.
    partition: Arc<Partition>,
    index: i32,
    /// Set when the broker stopped leading the group's partition: a request that found the
    /// entry before it was forgotten must not wait on it (its timers no longer run).
    unloaded: bool,
    timers: BTreeMap<GroupTimer, Instant>,
    waiting: HashMap<u64, Waiter>,
    members: BTreeMap<MemberId, MemberInfo>,
    by_name: HashMap<String, MemberId>,
    /// What Kafka keeps beside each committed offset (the coordinator decides only the offset).
    offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    /// The commit being handled: its partitions' epochs and metadata, until it is answered.
    committing: HashMap<u64, Vec<(TopicPartition, OffsetAndMetadata)>>,
    current_request: Option<u64>,
    /// Since when the group has had no members (ms since the epoch), for offset retention.
    empty_since: Option<i64>,
    /// The group's last protocol type (the coordinator forgets it when the group empties;
    /// ListGroups and its stored metadata still report it, as Kafka's do).
    stored_protocol_type: String,
    /// The state and generation last logged, so each change is logged once, as Kafka's
    /// coordinator logs its rebalances.
    logged: (GroupState, i32),
}

impl GroupEntry {
    /// The actor's id for the wire member id `name` (`None` for the empty id of a new member).
    pub(crate) fn member_id(&self, name: &str) -> Option<MemberId> {
        if name.is_empty() {
            return None;
        }
        Some(self.by_name.get(name).copied().unwrap_or(UNKNOWN_MEMBER))
    }

    /// A member's wire identity.
    pub(crate) fn member(&self, id: MemberId) -> Option<&MemberInfo> {
        self.members.get(&id)
    }

    /// A committed offset with its epoch and metadata, `None` if there is none.
    pub(crate) fn committed(&self, partition: &TopicPartition) -> Option<OffsetAndMetadata> {
        let offset = *self.coordinator.committed().get(partition)?;
        let mut stored = self
            .offsets
            .get(partition)
            .filter(|o| o.offset == offset)
            .cloned()
            .unwrap_or(OffsetAndMetadata {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: -1,
            });
        stored.offset = offset;
        Some(stored)
    }

    /// The protocol type ListGroups and DescribeGroups report.
    pub(crate) fn protocol_type(&self) -> String {
        match self.coordinator.protocol().0 {
            Some(t) => t.to_string(),
            None => self.stored_protocol_type.clone(),
        }
    }
}

/// How far a partition of `__consumer_offsets` has been read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum LoadState {
    /// Not read, nor queued: the next request for one of its groups queues it.
    #[default]
    NotLoaded,
    /// Queued or being read: its groups' requests are answered `COORDINATOR_LOAD_IN_PROGRESS`.
    Loading,
    /// Its groups are in memory and answer for themselves.
    Loaded,
}

/// The partitions to read back, and the one thread reading them.
#[derive(Default)]
struct Loads {
    state: BTreeMap<i32, LoadState>,
    queue: VecDeque<(i32, Arc<Partition>)>,
    /// How many times each partition has been unloaded: a read that started before the last
    /// unload is stale (the broker may have lost and regained the leadership meanwhile, and
    /// the log it read may have been truncated since), so its groups are thrown away.
    unloads: BTreeMap<i32, u64>,
    /// Whether a loader thread is draining `queue` (it stops once it finds the queue empty).
    running: bool,
    loader: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    config: Arc<GroupConfig>,
    settings: GroupSettings,
    storage: Node,
    groups: Mutex<BTreeMap<String, Arc<Mutex<GroupEntry>>>>,
    loads: Mutex<Loads>,
    /// Set at shutdown: the loader stops before the partitions it reads are closed.
    stopping: AtomicBool,
    /// Whether a request to create `__consumer_offsets` is on its way to the controller, and
    /// when the last one was sent: clients retry FindCoordinator often, and one request at a
    /// time, at most one a second, is enough.
    creation: Mutex<(bool, Option<Instant>)>,
    requests: AtomicU64,
    writes: AtomicU64,
    timers_changed: Notify,
    /// Partitions the loader must not start yet, so a test can see one still loading.
    #[cfg(test)]
    held: (Mutex<std::collections::BTreeSet<i32>>, std::sync::Condvar),
}

/// Every group this broker coordinates.
#[derive(Clone)]
pub(crate) struct Groups {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Groups {
    pub(crate) fn new(settings: GroupSettings, node_id: u32) -> Self {
        let storage = Node::Broker(node_id);
        let config = GroupConfig {
            min_session_timeout_ms: settings.min_session_timeout_ms,
            max_session_timeout_ms: settings.max_session_timeout_ms,
            initial_rebalance_delay_ms: settings.initial_rebalance_delay_ms,
            max_size: settings.max_size,
            ..GroupConfig::new(storage)
        };
        Groups {
            shared: Arc::new(Shared {
                config: Arc::new(config),
                settings,
                storage,
                groups: Mutex::new(BTreeMap::new()),
                loads: Mutex::new(Loads::default()),
                stopping: AtomicBool::new(false),
                creation: Mutex::new((false, None)),
                requests: AtomicU64::new(0),
                writes: AtomicU64::new(FIRST_WRITE_REQUEST),
                timers_changed: Notify::new(),
                #[cfg(test)]
                held: Default::default(),
            }),
        }
    }

    pub(crate) fn settings(&self) -> &GroupSettings {
        &self.shared.settings
    }

    /// Whether every partition in `partitions` has been read back; the ones not read or queued
    /// yet are queued for the loader thread (started if none runs). A request for a group on a
    /// partition not read yet is answered `COORDINATOR_LOAD_IN_PROGRESS`, as Kafka does: its
    /// client retries, and no request waits on the read or sees half of it.
    pub(crate) fn load(&self, partitions: impl IntoIterator<Item = (i32, Arc<Partition>)>) -> bool {
        let mut loads = lock(&self.shared.loads);
        let mut all_loaded = true;
        for (index, partition) in partitions {
            match loads.state.get(&index).copied().unwrap_or_default() {
                LoadState::Loaded => continue,
                LoadState::Loading => {}
                LoadState::NotLoaded => {
                    loads.state.insert(index, LoadState::Loading);
                    loads.queue.push_back((index, partition));
                }
            }
            all_loaded = false;
        }
        if !loads.queue.is_empty() && !loads.running {
            self.start_loader(&mut loads);
        }
        all_loaded
    }

    /// Partitions of a `__consumer_offsets` just created: empty, so there is nothing to read
    /// back, and a fresh group's first JoinGroup is answered at once instead of after a
    /// client's retry.
    pub(crate) fn created(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut loads = lock(&self.shared.loads);
        for index in partitions {
            loads.state.insert(index, LoadState::Loaded);
        }
    }

    /// Partition `index` of `__consumer_offsets` if it has been read back, else
    /// `COORDINATOR_LOAD_IN_PROGRESS` (and its read is queued if it was not).
    pub(crate) fn loaded(&self, index: i32, partition: &Arc<Partition>) -> Result<(), Errors> {
        if self.load([(index, partition.clone())]) {
            Ok(())
        } else {
            Err(Errors::CoordinatorLoadInProgress)
        }
    }

    /// Its own thread, as the ticker has: a read is blocking I/O that may take long, and it
    /// must not hold a runtime worker (nor need a runtime, for a broker driven by a test).
    fn start_loader(&self, loads: &mut Loads) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let groups = self.clone();
        let spawned = std::thread::Builder::new()
            .name("surety-group-loader".into())
            .spawn(move || groups.run_loader());
        match spawned {
            Ok(handle) => {
                loads.running = true;
                loads.loader = Some(handle);
            }
            Err(e) => {
                // Forgotten, so the next request for one of them tries again.
                tracing::error!("cannot start the consumer group loader: {e}");
                for (index, _) in std::mem::take(&mut loads.queue) {
                    loads.state.insert(index, LoadState::NotLoaded);
                }
            }
        }
    }

    /// Reads back the queued partitions one after another, until none is left.
    fn run_loader(&self) {
        let started = Instant::now();
        let mut count = 0usize;
        while let Some((index, partition, unloads)) = self.next_to_load() {
            #[cfg(test)]
            self.wait_while_held(index);
            let result = self.read_partition(index, &partition);
            let mut loads = lock(&self.shared.loads);
            if loads.unloads.get(&index).copied().unwrap_or(0) != unloads {
                // Unloaded while it was read: what was read is not this broker's to serve.
                continue;
            }
            match result {
                Ok(groups) => {
                    self.install(index, &partition, groups);
                    loads.state.insert(index, LoadState::Loaded);
                    count += 1;
                }
                Err(e) => {
                    // The next request for one of its groups queues it again.
                    loads.state.insert(index, LoadState::NotLoaded);
                    drop(loads);
                    if !self.shared.stopping.load(Ordering::Relaxed) {
                        tracing::warn!("loading {}-{index}: {e}", super::OFFSETS_TOPIC);
                    }
                }
            }
        }
        tracing::info!(
            "loaded {count} partitions of {} in {} ms",
            super::OFFSETS_TOPIC,
            started.elapsed().as_millis()
        );
    }

    /// The next partition to read back, with how many times it had been unloaded; `None` (and
    /// the loader is done) when none is left or the broker is stopping.
    fn next_to_load(&self) -> Option<(i32, Arc<Partition>, u64)> {
        let mut loads = lock(&self.shared.loads);
        let next = if self.shared.stopping.load(Ordering::Relaxed) {
            None
        } else {
            loads.queue.pop_front()
        };
        if next.is_none() {
            loads.running = false;
        }
        next.map(|(index, partition)| {
            let unloads = loads.unloads.get(&index).copied().unwrap_or(0);
            (index, partition, unloads)
        })
    }

    /// Stops the loader after the partition it is reading, before the broker closes them.
    pub(crate) fn stop_loading(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        let loader = lock(&self.shared.loads).loader.take();
        if let Some(loader) = loader {
            let _ = loader.join();
        }
    }

    /// Replays partition `index` of `__consumer_offsets`: every group it holds, with its
    /// generation and committed offsets. It reads to the log end, not the high watermark, as
    /// Kafka does: a new leader's log is the one every replica will agree on.
    fn read_partition(
        &self,
        index: i32,
        partition: &Arc<Partition>,
    ) -> Result<BTreeMap<String, ReplayedGroup>, LogError> {
        let started = Instant::now();
        let mut groups = BTreeMap::new();
        let mut offset = partition.offsets().log_start_offset;
        let mut records = 0u64;
        loop {
            if self.shared.stopping.load(Ordering::Relaxed) {
                return Err(LogError::Closed);
            }
            let (bytes, end) = partition.read_to_log_end(offset, 1 << 20)?;
            if offset >= end || bytes.is_empty() {
                break;
            }
            for batch in batches(bytes) {
                let Ok(batch) = batch else { break };
                offset = batch.last_offset() + 1;
                let Ok(iter) = batch.records() else { continue };
                for record in iter.flatten() {
                    let Some(key) = &record.key else { continue };
                    if let Some(r) = storage::decode(key, record.value.as_deref()) {
                        records += 1;
                        replay(&mut groups, r);
                    }
                }
            }
        }
        // Most of the 50 partitions hold nothing: only those that do are worth a line.
        if records > 0 {
            tracing::info!(
                "loaded {} groups from {records} records of __consumer_offsets-{index} in {} ms",
                groups.len(),
                started.elapsed().as_millis()
            );
        }
        Ok(groups)
    }

    /// Puts a partition's replayed groups in memory, all at once, before the caller (holding
    /// the loads' lock) marks the partition loaded, so no request sees part of them. Any entry
    /// of the partition left from before is replaced: the log is the whole truth.
    fn install(
        &self,
        index: i32,
        partition: &Arc<Partition>,
        groups: BTreeMap<String, ReplayedGroup>,
    ) {
        let mut entries = lock(&self.shared.groups);
        forget(take_partition(&mut entries, index));
        for (name, group) in groups {
            let (entry, timers) =
                self.entry_from(name.clone(), index, partition.clone(), Some(group));
            let entry = Arc::new(Mutex::new(entry));
            {
                let mut guard = lock(&entry);
                apply(&self.shared, &entry, &mut guard, timers);
            }
            entries.insert(name, entry);
        }
    }

    /// Forgets the groups of partition `index`, which this broker no longer leads (Kafka's
    /// `onResignation`): a member waiting on one of them is answered `NOT_COORDINATOR` (see
    /// [`Self::call`]), its next request gets the same, and it finds the new coordinator. A
    /// read of the partition under way or queued is dropped.
    pub(crate) fn unload(&self, index: i32) {
        let mut loads = lock(&self.shared.loads);
        *loads.unloads.entry(index).or_default() += 1;
        loads.queue.retain(|(i, _)| *i != index);
        let was = loads.state.insert(index, LoadState::NotLoaded);
        let removed = take_partition(&mut lock(&self.shared.groups), index);
        drop(loads);
        let count = removed.len();
        forget(removed);
        if was.is_some_and(|s| s != LoadState::NotLoaded) {
            tracing::info!(
                "unloaded {count} groups of {}-{index}: this broker no longer leads it",
                super::OFFSETS_TOPIC
            );
        }
    }

    /// The partitions of `__consumer_offsets` loaded or being loaded: the ones to unload when
    /// this broker no longer leads them.
    pub(crate) fn held_partitions(&self) -> Vec<i32> {
        lock(&self.shared.loads)
            .state
            .iter()
            .filter(|&(_, s)| *s != LoadState::NotLoaded)
            .map(|(&index, _)| index)
            .collect()
    }

    /// Whether this broker should ask the controller to create `__consumer_offsets` now; if
    /// so, [`Self::creation_sent`] must follow once the request is answered.
    pub(crate) fn may_create_offsets_topic(&self) -> bool {
        let mut creation = lock(&self.shared.creation);
        let recent = creation
            .1
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if creation.0 || recent {
            return false;
        }
        *creation = (true, Some(Instant::now()));
        true
    }

    pub(crate) fn creation_sent(&self) {
        lock(&self.shared.creation).0 = false;
    }

    /// A group as replayed (or new), with the timers its loaded members' sessions start.
    fn entry_from(
        &self,
        name: String,
        index: i32,
        partition: Arc<Partition>,
        loaded: Option<ReplayedGroup>,
    ) -> (GroupEntry, Vec<Effect<GroupTimer, GroupMsg>>) {
        let loaded = loaded.unwrap_or_default();
        let committed = loaded
            .offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), o.offset))
            .collect();
        // Stored member ids are numbered afresh; their wire names stay, so members that are
        // still there carry on with the ids they have.
        let mut members = BTreeMap::new();
        let mut by_name = HashMap::new();
        let mut stored = surety_core::group::LoadedGroup::default();
        if let Some(m) = &loaded.metadata {
            stored.generation_id = m.generation_id;
            stored.protocol_type =
                (!m.protocol_type.is_empty()).then(|| Arc::from(m.protocol_type.as_str()));
            stored.protocol = m.protocol.as_deref().map(Arc::from);
            for (i, member) in m.members.iter().enumerate() {
                let id = i as MemberId + 1;
                members.insert(
                    id,
                    MemberInfo {
                        member_id: member.member_id.clone(),
                        caller: Caller {
                            client_id: member.client_id.clone(),
                            client_host: member.client_host.clone(),
                            group_instance_id: member.group_instance_id.clone(),
                        },
                    },
                );
                by_name.insert(member.member_id.clone(), id);
                if m.leader.as_deref() == Some(member.member_id.as_str()) {
                    stored.leader = Some(id);
                }
                stored.members.push(LoadedMember {
                    id,
                    group_instance_id: member.group_instance_id.as_deref().map(Arc::from),
                    subscription: member.subscription.clone(),
                    session_timeout_ms: u64::try_from(member.session_timeout_ms).unwrap_or(0),
                    rebalance_timeout_ms: u64::try_from(member.rebalance_timeout_ms).unwrap_or(0),
                    assignment: member.assignment.clone(),
                });
            }
        }
        let (coordinator, timers) =
            GroupCoordinator::loaded(self.shared.config.clone(), stored, committed);
        let entry = GroupEntry {
            name,
            coordinator,
            partition,
            index,
            unloaded: false,
            timers: BTreeMap::new(),
            waiting: HashMap::new(),
            members,
            by_name,
            offsets: loaded.offsets,
            committing: HashMap::new(),
            current_request: None,
            // A loaded group's emptying is not known: retention counts from the load.
            empty_since: None,
            stored_protocol_type: loaded.metadata.map(|m| m.protocol_type).unwrap_or_default(),
            logged: (GroupState::Empty, 0),
        };
        (entry, timers)
    }

    /// The group, if this broker holds it.
    pub(crate) fn get(&self, group: &str) -> Option<Arc<Mutex<GroupEntry>>> {
        lock(&self.shared.groups).get(group).cloned()
    }

    /// The group, created empty if new, on partition `index`. `NOT_COORDINATOR` if the
    /// partition was unloaded since the caller found it loaded: a group created then would
    /// outlive its partition's leadership.
    pub(crate) fn get_or_create(
        &self,
        group: &str,
        index: i32,
        partition: &Arc<Partition>,
    ) -> Result<Arc<Mutex<GroupEntry>>, Errors> {
        let loads = lock(&self.shared.loads);
        if loads.state.get(&index) != Some(&LoadState::Loaded) {
            return Err(Errors::NotCoordinator);
        }
        let mut groups = lock(&self.shared.groups);
        let entry = groups
            .entry(group.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(
                    self.entry_from(group.to_string(), index, partition.clone(), None)
                        .0,
                ))
            })
            .clone();
        drop(loads);
        Ok(entry)
    }

    /// Expires committed offsets past `offsets.retention.minutes` (core decides which), and
    /// forgets the groups that leaves with nothing.
    pub(crate) fn expire_offsets(&self, now: i64) {
        let retention = self.shared.settings.offsets_retention_ms;
        for entry in self.all() {
            let (name, dead) = {
                let mut guard = lock(&entry);
                let g = &mut *guard;
                let empty_since = *g.empty_since.get_or_insert(now);
                let offsets = &g.offsets;
                let Some(msg) = g.coordinator.expiry(now, retention, empty_since, |tp| {
                    offsets.get(tp).map_or(0, |o| o.commit_timestamp)
                }) else {
                    continue;
                };
                if let GroupMsg::ExpireOffsets { partitions } = &msg
                    && !partitions.is_empty()
                {
                    tracing::info!(
                        "group {}: {} committed offsets expired (offsets.retention.minutes)",
                        g.name,
                        partitions.len()
                    );
                }
                let out = g.coordinator.on_message(self.shared.storage, msg);
                apply(&self.shared, &entry, g, out);
                (g.name.clone(), g.coordinator.state() == GroupState::Dead)
            };
            if dead {
                self.remove_if_dead(&name);
            }
        }
    }

    /// Forgets a deleted group, so a later join starts a new one.
    pub(crate) fn remove_if_dead(&self, group: &str) {
        let mut groups = lock(&self.shared.groups);
        let dead = groups
            .get(group)
            .is_some_and(|e| lock(e).coordinator.state() == GroupState::Dead);
        if dead {
            groups.remove(group);
        }
    }

    /// Every group this broker holds.
    pub(crate) fn all(&self) -> Vec<Arc<Mutex<GroupEntry>>> {
        lock(&self.shared.groups).values().cloned().collect()
    }

    /// Reads a group under its lock.
    pub(crate) fn inspect<R>(
        entry: &Arc<Mutex<GroupEntry>>,
        f: impl FnOnce(&GroupEntry) -> R,
    ) -> R {
        f(&lock(entry))
    }

    /// Hands the coordinator a request built by `build` (under the group's lock, so member
    /// names resolve against the current members), and waits for its answer. A commit's
    /// epochs and metadata ride along in `commit`. `None` if the group was unloaded before it
    /// answered: its broker no longer leads the group's partition, and the caller answers
    /// `NOT_COORDINATOR`, as Kafka does a member waiting in a group it unloads.
    pub(crate) async fn call(
        &self,
        entry: &Arc<Mutex<GroupEntry>>,
        caller: Caller,
        commit: Vec<(TopicPartition, OffsetAndMetadata)>,
        build: impl FnOnce(&GroupEntry) -> GroupMsg,
    ) -> Option<Answer> {
        let request = self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut guard = lock(entry);
            let g = &mut *guard;
            if g.unloaded {
                return None;
            }
            let msg = build(g);
            g.waiting.insert(request, Waiter { tx, caller });
            if !commit.is_empty() {
                g.committing.insert(request, commit);
            }
            g.current_request = Some(request);
            let out = g.coordinator.on_message(Node::Client(request), msg);
            apply(&self.shared, entry, g, out);
            g.current_request = None;
            g.committing.remove(&request);
        }
        rx.await.ok()
    }

    /// Fires every due timer; returns when the next is due.
    fn fire_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for entry in self.all() {
            let mut guard = lock(&entry);
            let g = &mut *guard;
            let due: Vec<GroupTimer> = g
                .timers
                .iter()
                .filter(|&(_, &at)| at <= now)
                .map(|(&t, _)| t)
                .collect();
            for timer in due {
                g.timers.remove(&timer);
                let out = g.coordinator.on_timer(timer);
                apply(&self.shared, &entry, g, out);
            }
            if let Some(&at) = g.timers.values().min() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Runs the coordinators' timers until `shutdown` changes: sleeps until the next is due or
    /// a new one is set.
    pub(crate) async fn run_timers(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let next = self.fire_due();
            let sleep = match next {
                Some(at) => tokio::time::sleep_until(at.into()),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.shared.timers_changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// What tests use to watch a partition while it is still loading.
#[cfg(test)]
impl Groups {
    /// Keeps the loader from starting partition `index` until [`Self::release`].
    pub(crate) fn hold(&self, index: i32) {
        lock(&self.shared.held.0).insert(index);
    }

    pub(crate) fn release(&self, index: i32) {
        lock(&self.shared.held.0).remove(&index);
        self.shared.held.1.notify_all();
    }

    fn wait_while_held(&self, index: i32) {
        let (held, released) = &self.shared.held;
        let mut held = lock(held);
        while held.contains(&index) {
            held = released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn load_state(&self, index: i32) -> LoadState {
        lock(&self.shared.loads)
            .state
            .get(&index)
            .copied()
            .unwrap_or_default()
    }

    /// Waits until the loader has read everything queued.
    pub(crate) fn wait_for_loads(&self) {
        let loader = lock(&self.shared.loads).loader.take();
        if let Some(loader) = loader {
            let _ = loader.join();
        }
    }
}

/// Takes the groups of partition `index` out of `entries`.
fn take_partition(
    entries: &mut BTreeMap<String, Arc<Mutex<GroupEntry>>>,
    index: i32,
) -> Vec<Arc<Mutex<GroupEntry>>> {
    let names: Vec<String> = entries
        .iter()
        .filter(|(_, e)| lock(e).index == index)
        .map(|(name, _)| name.clone())
        .collect();
    names
        .iter()
        .filter_map(|name| entries.remove(name))
        .collect()
}

/// Marks groups taken out of memory as unloaded and ends their requests' waits (a dropped
/// waiter is a request answered `NOT_COORDINATOR`): their timers no longer run, so nothing
/// would answer them.
fn forget(removed: Vec<Arc<Mutex<GroupEntry>>>) {
    for entry in removed {
        let mut g = lock(&entry);
        g.unloaded = true;
        g.waiting.clear();
        g.timers.clear();
    }
}

/// Carries out a coordinator's effects in order.
fn apply(
    shared: &Arc<Shared>,
    entry: &Arc<Mutex<GroupEntry>>,
    g: &mut GroupEntry,
    effects: Vec<Effect<GroupTimer, GroupMsg>>,
) {
    let mut queue: std::collections::VecDeque<_> = effects.into();
    let mut timers_changed = false;
    name_new_members(g, &queue);
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Send {
                to: Node::Client(request),
                msg,
            } => deliver(g, request, msg),
            Effect::Send {
                msg: GroupMsg::Append { write_id, records },
                ..
            } => {
                // Names the produce on the partition (apart from clients' and other groups'),
                // so a timed-out write can be forgotten.
                let request = shared.writes.fetch_add(1, Ordering::Relaxed);
                match append(g, request, &records) {
                    Produced::Later(rx) => {
                        let entry = entry.clone();
                        let shared = shared.clone();
                        let partition = g.partition.clone();
                        let timeout =
                            Duration::from_millis(shared.settings.offsets_commit_timeout_ms);
                        tokio::spawn(async move {
                            let error = match tokio::time::timeout(timeout, rx).await {
                                Ok(Ok(answer)) => answer.error,
                                Ok(Err(_)) => Errors::NotLeaderOrFollower,
                                Err(_) => {
                                    partition.forget_delayed(request, 0);
                                    Errors::RequestTimedOut
                                }
                            };
                            let mut guard = lock(&entry);
                            let g = &mut *guard;
                            let out = g.coordinator.on_message(
                                shared.storage,
                                GroupMsg::AppendResult { write_id, error },
                            );
                            apply(&shared, &entry, g, out);
                        });
                    }
                    Produced::Now(answer) => {
                        queue.extend(g.coordinator.on_message(
                            shared.storage,
                            GroupMsg::AppendResult {
                                write_id,
                                error: answer.error,
                            },
                        ));
                        name_new_members(g, &queue);
                    }
                    Produced::Silent => {}
                }
            }
            Effect::Send { to, msg } => {
                tracing::debug!("group {}: unroutable message to {to:?}: {msg:?}", g.name)
            }
            Effect::SetTimer { timer, after_ms } => {
                g.timers
                    .insert(timer, Instant::now() + Duration::from_millis(after_ms));
                timers_changed = true;
            }
            Effect::CancelTimer(timer) => {
                g.timers.remove(&timer);
            }
            Effect::Persist(_) => {}
        }
    }
    if g.coordinator.state() == GroupState::Empty {
        g.empty_since.get_or_insert_with(now_ms);
    } else {
        g.empty_since = None;
    }
    // An emptied group keeps reporting the protocol type it had, as Kafka's does.
    if let Some(t) = g.coordinator.protocol().0
        && **t != *g.stored_protocol_type
    {
        g.stored_protocol_type = t.to_string();
    }
    // Names of members the coordinator no longer knows are forgotten.
    let coordinator = &g.coordinator;
    let name = &g.name;
    g.members.retain(|&id, m| {
        let known = coordinator.knows(id);
        if !known {
            tracing::info!(
                "group {name}: member {} is no longer in the group",
                m.member_id
            );
        }
        known
    });
    log_transition(g);
    let members = &g.members;
    g.by_name.retain(|_, id| members.contains_key(id));
    if timers_changed {
        shared.timers_changed.notify_one();
    }
}

/// Logs the group's state when it or the generation changed (Kafka's "Preparing to
/// rebalance" and "Stabilized group" lines), so an operator can follow a rebalance.
fn log_transition(g: &mut GroupEntry) {
    let now = (g.coordinator.state(), g.coordinator.generation_id());
    if now == g.logged {
        return;
    }
    g.logged = now;
    tracing::info!(
        "group {}: {} at generation {} with {} members",
        g.name,
        now.0.name(),
        now.1,
        g.coordinator.members().len()
    );
}

/// Gives every member a join answer introduces its wire id (Kafka's: the client id and a
/// random UUID), before any answer is sent: the leader's answer lists members whose own answers
/// come after it in the same step.
fn name_new_members(
    g: &mut GroupEntry,
    effects: &std::collections::VecDeque<Effect<GroupTimer, GroupMsg>>,
) {
    for effect in effects {
        let Effect::Send {
            to: Node::Client(request),
            msg:
                GroupMsg::JoinGroupResponse {
                    member_id: Some(id),
                    ..
                },
        } = effect
        else {
            continue;
        };
        if *id == UNKNOWN_MEMBER || g.members.contains_key(id) {
            continue;
        }
        let Some(waiter) = g.waiting.get(request) else {
            continue;
        };
        let name = format!("{}-{}", waiter.caller.client_id, uuid::Uuid::new_v4());
        g.by_name.insert(name.clone(), *id);
        g.members.insert(
            *id,
            MemberInfo {
                member_id: name,
                caller: waiter.caller.clone(),
            },
        );
    }
}

/// Answers the request waiting for `msg`.
fn deliver(g: &mut GroupEntry, request: u64, msg: GroupMsg) {
    let Some(waiter) = g.waiting.remove(&request) else {
        return;
    };
    if let GroupMsg::OffsetCommitResponse {
        error: Errors::None,
        ..
    } = &msg
        && let Some(commit) = g.committing.remove(&request)
    {
        g.offsets.extend(commit);
    }
    let mentioned: Vec<MemberId> = match &msg {
        GroupMsg::JoinGroupResponse {
            member_id,
            leader,
            members,
            ..
        } => member_id
            .iter()
            .chain(leader.iter())
            .copied()
            .chain(members.iter().map(|(m, _)| *m))
            .collect(),
        _ => Vec::new(),
    };
    let names = mentioned
        .into_iter()
        .filter_map(|id| g.members.get(&id).map(|m| (id, m.member_id.clone())))
        .collect();
    let _ = waiter.tx.send(Answer { msg, names });
}

/// Writes `records` to the group's partition with `acks=all`, in Kafka's schemas.
fn append(g: &GroupEntry, request: u64, records: &[GroupRecord]) -> Produced {
    let now = now_ms();
    let mut batch = BatchBuilder::new(0);
    for record in records {
        let (key, value) = match record {
            GroupRecord::Offset { partition, offset } => {
                let stored = g
                    .current_request
                    .and_then(|r| g.committing.get(&r))
                    .and_then(|c| c.iter().find(|(tp, _)| tp == partition))
                    .map(|(_, o)| o.clone())
                    .unwrap_or(OffsetAndMetadata {
                        offset: *offset,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp: now,
                    });
                (
                    storage::offset_key(&g.name, partition),
                    Some(storage::offset_value(&stored)),
                )
            }
            GroupRecord::OffsetDeleted { partition } => {
                (storage::offset_key(&g.name, partition), None)
            }
            GroupRecord::GroupDeleted => (storage::group_key(&g.name), None),
            GroupRecord::Metadata {
                generation_id,
                protocol,
                leader,
                assignments,
            } => {
                let name = |id: MemberId| {
                    g.members
                        .get(&id)
                        .map(|m| m.member_id.clone())
                        .unwrap_or_default()
                };
                let members = assignments
                    .iter()
                    .map(|(id, assignment)| {
                        let protocol = protocol.as_deref().unwrap_or_default();
                        let kept = g.coordinator.members().get(id).map_or_else(
                            || LoadedMember {
                                id: *id,
                                group_instance_id: None,
                                subscription: Bytes::new(),
                                session_timeout_ms: 0,
                                rebalance_timeout_ms: 0,
                                assignment: assignment.clone(),
                            },
                            |m| m.stored(*id, protocol, assignment.clone()),
                        );
                        let info = g.members.get(id);
                        let ms = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
                        StoredMember {
                            member_id: name(*id),
                            group_instance_id: info
                                .and_then(|i| i.caller.group_instance_id.clone()),
                            client_id: info.map(|i| i.caller.client_id.clone()).unwrap_or_default(),
                            client_host: info
                                .map(|i| i.caller.client_host.clone())
                                .unwrap_or_default(),
                            rebalance_timeout_ms: ms(kept.rebalance_timeout_ms),
                            session_timeout_ms: ms(kept.session_timeout_ms),
                            subscription: kept.subscription,
                            assignment: kept.assignment,
                        }
                    })
                    .collect();
                let value = StoredGroup {
                    protocol_type: g.protocol_type(),
                    generation_id: *generation_id,
                    protocol: protocol.as_deref().map(str::to_string),
                    leader: leader.map(name),
                    current_state_timestamp: now,
                    members,
                };
                (
                    storage::group_key(&g.name),
                    Some(storage::group_value(&value)),
                )
            }
        };
        batch.append(now, Some(&key), value.as_deref(), &[]);
    }
    let bytes: Bytes = batch.build();
    g.partition.produce(request, 0, Acks::All, bytes, now)
}
