//! The replica of one partition on one broker: leader or follower, as the controller says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;

use super::effect::{Effect, Effects};
use super::epoch_cache::{EpochEndOffset, LeaderEpochCache};
use super::message::{FetchResult, Msg};
use super::types::{Acks, BrokerId, Node, PartitionState};
use crate::actor::Durability;
use crate::errors::Errors;
use crate::fetch::IsolationLevel;
use crate::log::{LogError, PartitionLog};
use crate::producer_state::{
    AppendError, DuplicateAnswer, IdempotentAppend, Landed, ProducerBatch, ProducerStateManager,
};
use crate::record::{BatchHeader, batches};

/// Deliberately broken protocols. They exist only so the model checker can show that it catches
/// what they break; nothing outside `model/` sets one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum BrokenVariant {
    /// Kafka before KIP-101: on restart and on becoming a follower, truncate the log to the high
    /// watermark checkpoint, and fetch without leader epochs (so no divergence is ever found).
    HwTruncation,
    /// Answer `acks=all` as soon as the leader has appended, as if it were `acks=1`.
    AcksLeaderOnly,
    /// Advance the HW to the leader's own log end, ignoring the followers.
    HwIgnoresFollowers,
    /// Let a follower back into the ISR before it reaches the HW, and recompute the HW from
    /// the ISR even when that moves it down.
    IsrExpandBelowHw,
    /// The controller elects a new leader without bumping the leader epoch, and a follower
    /// named leader in the epoch it already follows takes the lead.
    NoEpochBump,
}

/// What a replica needs to know about its partition; the names are Kafka's configs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub struct ReplicaConfig {
    /// This broker's `node.id`.
    pub broker_id: BrokerId,
    /// The partition's assigned replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// `min.insync.replicas`: the ISR size below which `acks=all` is refused.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: how long a follower may go without catching up before the
    /// leader proposes to drop it from the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: the most a fetch response carries (at least one batch).
    pub replica_fetch_max_bytes: usize,
    /// `None` in every real deployment.
    pub broken: Option<BrokenVariant>,
}

impl ReplicaConfig {
    /// Kafka's defaults for a broker and partition.
    pub fn new(broker_id: BrokerId, replicas: Vec<BrokerId>) -> Self {
        ReplicaConfig {
            broker_id,
            replicas,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1024 * 1024,
            broken: None,
        }
    }
}

/// What survives a broker restart: the log, the leader-epoch cache, the high-watermark
/// checkpoint, and the incarnation (a new one per start, which tells the controller the broker
/// restarted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Durable<L> {
    /// The partition log.
    pub log: L,
    /// `leader-epoch-checkpoint`.
    pub epochs: LeaderEpochCache,
    /// `replication-offset-checkpoint`.
    pub high_watermark: i64,
    /// Starts of this broker so far.
    pub incarnation: u32,
}

/// Timers a replica sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum ReplicaTimer {
    /// Every `replica.lag.time.max.ms` the leader drops followers that have not caught up
    /// within that time.
    LagCheck,
}

/// A follower as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FollowerProgress {
    /// The follower's log end offset as of its last fetch; `None` until it fetches in this epoch.
    pub log_end_offset: Option<i64>,
    /// When it last fetched up to the leader's log end (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up_ms: i64,
    /// The high watermark the last answer to it carried: an expiry that would carry the same
    /// one tells it nothing.
    pub high_watermark_sent: Option<i64>,
    /// A fetch that found nothing new, held until there is (Kafka's delayed fetch).
    pub parked: Option<ParkedFetch>,
}

/// A follower's fetch the leader holds until it has records to send (or the driver expires it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParkedFetch {
    /// Where to answer.
    pub from: Node,
    /// The request's leader epoch.
    pub leader_epoch: i32,
    /// The request's fetch offset.
    pub fetch_offset: i64,
}

/// A produce waiting for the high watermark (`acks=all`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingAck {
    /// Who to answer.
    pub client: Node,
    /// Their request.
    pub correlation_id: u32,
    /// The first offset appended.
    pub base_offset: i64,
    /// The batch's `LogAppendTime`, or -1.
    pub log_append_time: i64,
}

/// The leader's view of its partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaderState {
    /// The epoch this broker leads.
    pub leader_epoch: i32,
    /// The partition epoch of `isr`.
    pub partition_epoch: i32,
    /// The committed ISR, as the controller last confirmed it.
    pub isr: BTreeSet<BrokerId>,
    /// An ISR proposal sent to the controller and not yet answered.
    pub pending_isr: Option<BTreeSet<BrokerId>>,
    /// Each follower's progress.
    pub followers: BTreeMap<BrokerId, FollowerProgress>,
    /// `acks=all` produces by the last offset they wait for, then by who asked (an idempotent
    /// retry waits for the same offset as the request it repeats, and both are answered).
    pub pending_acks: BTreeMap<(i64, Node, u32), PendingAck>,
}

impl LeaderState {
    /// The pending ISR proposal, as the AlterPartition request that carries it.
    fn proposal(&self, me: BrokerId) -> Option<Effect<ReplicaTimer>> {
        let new_isr = self.pending_isr.clone()?;
        Some(Effect::Send {
            to: Node::Controller,
            msg: Msg::AlterPartition {
                broker_id: me,
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
                new_isr,
            },
        })
    }

    /// The ISR the high watermark is computed over: the committed ISR plus any replica a pending
    /// proposal adds. A pending removal still counts until the controller confirms it.
    pub fn maximal_isr(&self) -> BTreeSet<BrokerId> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending_isr {
            isr.extend(pending.iter().copied());
        }
        isr
    }
}

/// What a replica currently is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Just started: waiting for the controller to say who leads.
    Unattached,
    /// Leading `leader_epoch`.
    Leader(LeaderState),
    /// Following `leader` (none while the partition is offline) in `leader_epoch`.
    Follower {
        /// The leader to fetch from.
        leader: Option<BrokerId>,
        /// Its epoch.
        leader_epoch: i32,
    },
}

/// What a client may see of the partition right now (Kafka's `LogOffsetSnapshot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetSnapshot {
    /// The first offset the log holds.
    pub log_start_offset: i64,
    /// Consumers read below it; `acks=all` produces below it are answered.
    pub high_watermark: i64,
    /// What `read_committed` consumers may read below: the high watermark, as this broker has
    /// no transactions.
    pub last_stable_offset: i64,
    /// The next offset the log will assign.
    pub log_end_offset: i64,
}

impl OffsetSnapshot {
    /// The offset below which `isolation` lets a consumer read.
    pub fn readable_below(&self, isolation: IsolationLevel) -> i64 {
        isolation.upper_bound(self.high_watermark, self.last_stable_offset)
    }
}

/// Whether the controller's answer says the proposal was not applied and the partition state
/// it was based on is still current, so the leader may propose again (Kafka resets on these).
fn refuses_unchanged(error: Errors) -> bool {
    matches!(error, Errors::IneligibleReplica | Errors::InvalidRequest)
}

/// One broker's replica of one partition, generic over where its log lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Replica<L> {
    config: Arc<ReplicaConfig>,
    durable: Durable<L>,
    role: Role,
    /// The idempotent producers' last batches, rebuilt from the log on recovery (Kafka also
    /// snapshots them; the log is the source of truth either way).
    producers: ProducerStateManager,
}

type Out = Effects<ReplicaTimer>;

impl<L: PartitionLog> Replica<L> {
    /// A replica of a new partition with an empty `log`. It waits for `LeaderAndIsr`.
    pub fn new(config: Arc<ReplicaConfig>, log: L) -> Self {
        Replica {
            config,
            durable: Durable {
                log,
                epochs: LeaderEpochCache::default(),
                high_watermark: 0,
                incarnation: 0,
            },
            role: Role::Unattached,
            producers: ProducerStateManager::new(),
        }
    }

    /// The replica after a restart, from what was on disk. It announces its new incarnation to
    /// the controller and waits to be told its role. It does not truncate: where its log and the
    /// leader's part is found by leader epochs once it fetches.
    ///
    /// Fails only if the log cannot be read back to rebuild the idempotent producers' state.
    pub fn recover(
        config: Arc<ReplicaConfig>,
        mut durable: Durable<L>,
    ) -> Result<(Self, Out), LogError> {
        durable.incarnation += 1;
        durable.high_watermark = durable.high_watermark.min(durable.log.log_end_offset());
        let producers = ProducerStateManager::rebuild(&durable.log)?;
        let mut replica = Replica {
            config,
            durable,
            role: Role::Unattached,
            producers,
        };
        if replica.config.broken == Some(BrokenVariant::HwTruncation) {
            let hw = replica.durable.high_watermark;
            replica.truncate_to(hw);
        }
        let out = vec![
            Effect::Persist(Durability::BeforeSends),
            replica.heartbeat(),
        ];
        Ok((replica, out))
    }

    /// Handles one message. `now_ms` stamps `LogAppendTime` batches; nothing else reads time.
    pub fn on_message(&mut self, from: Node, msg: Msg, now_ms: i64) -> Out {
        let mut out = Vec::new();
        match msg {
            Msg::LeaderAndIsr(state) => self.on_leader_and_isr(state, now_ms, &mut out),
            Msg::Produce {
                correlation_id,
                acks,
                records,
            } => self.on_produce(from, correlation_id, acks, records, now_ms, &mut out),
            Msg::Fetch {
                replica_id,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => {
                let fetch = ParkedFetch {
                    from,
                    leader_epoch: current_leader_epoch,
                    fetch_offset,
                };
                self.on_fetch(replica_id, fetch, last_fetched_epoch, now_ms, &mut out)
            }
            Msg::FetchResponse {
                leader_epoch,
                fetch_offset,
                result,
            } => self.on_fetch_response(from, leader_epoch, fetch_offset, result, now_ms, &mut out),
            Msg::AlterPartitionResponse {
                error_code,
                proposal,
                state,
            } => self.on_alter_partition_response(error_code, proposal, state, &mut out),
            Msg::ProduceResponse { .. }
            | Msg::AlterPartition { .. }
            | Msg::BrokerHeartbeat { .. } => {}
        }
        out
    }

    /// Handles the loss of the connection to `peer` (a reset, a timeout, or the peer's crash):
    /// whatever was in flight on it is gone, and this replica resends what it still needs, as
    /// Kafka's fetcher and AlterPartition manager do. Resending to a peer that is down is
    /// harmless: the driver loses it too, and the next LeaderAndIsr sets the replica going again.
    pub fn on_disconnect(&mut self, peer: Node) -> Out {
        let mut out = Vec::new();
        let me = self.me();
        match (peer, &mut self.role) {
            (
                Node::Broker(b),
                Role::Follower {
                    leader: Some(leader),
                    ..
                },
            ) if b == *leader => {
                self.send_fetch(&mut out);
            }
            (Node::Broker(b), Role::Leader(leader)) => {
                if let Some(progress) = leader.followers.get_mut(&b) {
                    progress.parked = None;
                }
            }
            (Node::Controller, Role::Leader(leader)) => out.extend(leader.proposal(me)),
            (Node::Controller, Role::Unattached) if self.durable.incarnation > 0 => {
                out.push(self.heartbeat());
            }
            _ => {}
        }
        out
    }

    /// Answers `follower`'s parked fetch now with what there is (Kafka's `DelayedFetch`
    /// expiring after `replica.fetch.wait.max.ms`): possibly no records, and the current high
    /// watermark. Nothing if no fetch of its is parked.
    pub fn expire_parked_fetch(&mut self, follower: BrokerId) -> Out {
        let mut out = Vec::new();
        let hw = self.durable.high_watermark;
        let max_bytes = self.config.replica_fetch_max_bytes;
        let Role::Leader(leader) = &mut self.role else {
            return out;
        };
        let Some(progress) = leader.followers.get_mut(&follower) else {
            return out;
        };
        let Some(fetch) = progress.parked.take() else {
            return out;
        };
        let records = self
            .durable
            .log
            .read(fetch.fetch_offset, max_bytes, None)
            .unwrap_or_default();
        progress.high_watermark_sent = Some(hw);
        out.push(Effect::Send {
            to: fetch.from,
            msg: Msg::FetchResponse {
                leader_epoch: fetch.leader_epoch,
                fetch_offset: fetch.fetch_offset,
                result: FetchResult::Records {
                    high_watermark: hw,
                    records,
                },
            },
        });
        out
    }

    /// Handles a timer that fired at `now_ms`.
    pub fn on_timer(&mut self, timer: ReplicaTimer, now_ms: i64) -> Out {
        let mut out = Vec::new();
        match timer {
            ReplicaTimer::LagCheck => self.check_lagging_followers(now_ms, &mut out),
        }
        out
    }

    /// The partition log.
    pub fn log(&self) -> &L {
        &self.durable.log
    }

    /// Everything that survives a restart.
    pub fn durable(&self) -> &Durable<L> {
        &self.durable
    }

    /// The high watermark: the offset below which records are committed.
    pub fn high_watermark(&self) -> i64 {
        self.durable.high_watermark
    }

    /// The leader-epoch cache.
    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.durable.epochs
    }

    /// Leader, follower, or waiting.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The leader epoch this replica knows, if any.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &self.role {
            Role::Unattached => None,
            Role::Leader(leader) => Some(leader.leader_epoch),
            Role::Follower { leader_epoch, .. } => Some(*leader_epoch),
        }
    }

    /// The partition's offsets as a client sees them.
    pub fn offset_snapshot(&self) -> OffsetSnapshot {
        let log = &self.durable.log;
        OffsetSnapshot {
            log_start_offset: log.log_start_offset(),
            high_watermark: self.durable.high_watermark,
            last_stable_offset: self.durable.high_watermark,
            log_end_offset: log.log_end_offset(),
        }
    }

    /// Checks a client request that only the leader serves (consumer Fetch, ListOffsets,
    /// OffsetsForLeaderEpoch) against the leader epoch the client believes current (KIP-320;
    /// -1 when it does not say), and returns the epoch this replica leads. Kafka's order: a
    /// client ahead of this broker is told `UNKNOWN_LEADER_EPOCH` (this broker has not heard
    /// of the election yet; retry), one behind `FENCED_LEADER_EPOCH` (refresh metadata), and
    /// one that is current but asked a non-leader `NOT_LEADER_OR_FOLLOWER`.
    pub fn validate_client_epoch(&self, current_leader_epoch: i32) -> Result<i32, Errors> {
        let known = self.leader_epoch().ok_or(Errors::NotLeaderOrFollower)?;
        if current_leader_epoch >= 0 && current_leader_epoch > known {
            return Err(Errors::UnknownLeaderEpoch);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < known {
            return Err(Errors::FencedLeaderEpoch);
        }
        match self.role {
            Role::Leader(_) => Ok(known),
            _ => Err(Errors::NotLeaderOrFollower),
        }
    }

    /// Whole batches for a consumer from `fetch_offset`, at most `max_bytes` (but at least one
    /// batch, KIP-74), and none at or past what `isolation` lets it read.
    pub fn read_for_consumer(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<Bytes, LogError> {
        let bound = self.offset_snapshot().readable_below(isolation);
        self.durable.log.read(fetch_offset, max_bytes, Some(bound))
    }

    /// OffsetsForLeaderEpoch (API 23) as the leader answers it: where `leader_epoch` ends in
    /// this log, after checking the client's `current_leader_epoch`. Consumers compare the
    /// answer with their position to detect a truncated log (KIP-320).
    pub fn offset_for_leader_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<EpochEndOffset, Errors> {
        self.validate_client_epoch(current_leader_epoch)?;
        Ok(self
            .durable
            .epochs
            .end_offset_for(leader_epoch, self.log_end_offset()))
    }

    /// The in-sync replicas as this replica knows them: the leader's committed ISR; empty on a
    /// replica that does not lead.
    pub fn isr(&self) -> BTreeSet<BrokerId> {
        match &self.role {
            Role::Leader(leader) => leader.isr.clone(),
            _ => BTreeSet::new(),
        }
    }

    /// The log, for storage upkeep that changes no offset the protocol tracks: flushing,
    /// closing.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.durable.log
    }

    /// Removes a prefix of the log with `remove` (retention), which is handed the high
    /// watermark: nothing at or above it may go, since a follower or a consumer may still need
    /// it. Producer state and leader epochs below the new log start are forgotten, as Kafka
    /// does when it deletes segments.
    pub fn remove_log_prefix<R>(
        &mut self,
        remove: impl FnOnce(&mut L, i64) -> Result<R, LogError>,
    ) -> Result<R, LogError> {
        let removed = remove(&mut self.durable.log, self.durable.high_watermark)?;
        let start = self.durable.log.log_start_offset();
        self.producers.remove_below(start);
        self.durable.epochs.truncate_from_start(start);
        Ok(removed)
    }

    /// How many idempotent producers this partition remembers.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The same replica with every broker renamed by `rename`, its own identity included
    /// (see [`PartitionState::renamed`]).
    pub fn renamed(&self, rename: &impl Fn(BrokerId) -> BrokerId) -> Self
    where
        L: Clone,
    {
        let mut config = (*self.config).clone();
        config.broker_id = rename(config.broker_id);
        config.replicas = config.replicas.iter().map(|&b| rename(b)).collect();
        config.replicas.sort_unstable();
        let set = |isr: &BTreeSet<BrokerId>| isr.iter().map(|&b| rename(b)).collect();
        let role = match &self.role {
            Role::Unattached => Role::Unattached,
            Role::Follower {
                leader,
                leader_epoch,
            } => Role::Follower {
                leader: leader.map(rename),
                leader_epoch: *leader_epoch,
            },
            Role::Leader(leader) => Role::Leader(LeaderState {
                leader_epoch: leader.leader_epoch,
                partition_epoch: leader.partition_epoch,
                isr: set(&leader.isr),
                pending_isr: leader.pending_isr.as_ref().map(set),
                followers: leader
                    .followers
                    .iter()
                    .map(|(&b, progress)| {
                        let mut progress = progress.clone();
                        if let Some(parked) = &mut progress.parked {
                            parked.from = parked.from.renamed(rename);
                        }
                        (rename(b), progress)
                    })
                    .collect(),
                pending_acks: leader.pending_acks.clone(),
            }),
        };
        Replica {
            config: Arc::new(config),
            durable: self.durable.clone(),
            role,
            producers: self.producers.clone(),
        }
    }

    /// Whether `msg` from `from` is inert for the rest of this incarnation: handling it now or
    /// at any later point changes nothing here, and the only thing it could make this replica
    /// send is an error answer its receiver ignores. A driver may discard such a message
    /// unread; the model checker does, so that states differing only in messages that can no
    /// longer matter are explored once.
    ///
    /// It rests on three facts of the handlers and one of the controller: the leader epoch a
    /// replica knows only grows until it restarts; a replica that follows (or leads) epoch `e`
    /// never leads (or follows) `e`, nor changes the leader it follows within `e`; a leader's
    /// partition epoch only grows within its epoch; and the controller names one leader per
    /// epoch. An unattached replica (just restarted) may yet take any epoch, so nothing
    /// addressed to it is inert but what no replica ever reads.
    pub fn is_stale(&self, from: Node, msg: &Msg) -> bool {
        match msg {
            // Nothing a replica reads.
            Msg::ProduceResponse { .. }
            | Msg::AlterPartition { .. }
            | Msg::BrokerHeartbeat { .. } => {
                return true;
            }
            // Only the leader the answer names, in the epoch it names, reads it; the controller
            // names one leader per epoch, so an answer naming another broker is never read here.
            Msg::AlterPartitionResponse { state, .. } if state.leader != Some(self.me()) => {
                return true;
            }
            _ => {}
        }
        let Some(known) = self.leader_epoch() else {
            return false;
        };
        match msg {
            Msg::LeaderAndIsr(state) => match &self.role {
                Role::Leader(leader) if state.leader_epoch == known => {
                    state.partition_epoch <= leader.partition_epoch
                }
                _ if self.config.broken == Some(BrokenVariant::NoEpochBump)
                    && state.leader == Some(self.me()) =>
                {
                    state.leader_epoch < known
                }
                _ => state.leader_epoch <= known,
            },
            // Answered with FENCED_LEADER_EPOCH or NOT_LEADER_OR_FOLLOWER, which a follower
            // ignores; only the leader of the fetch's epoch serves it.
            Msg::Fetch {
                current_leader_epoch,
                ..
            } => {
                *current_leader_epoch < known
                    || (*current_leader_epoch == known && !matches!(self.role, Role::Leader(_)))
            }
            Msg::FetchResponse {
                leader_epoch,
                result,
                ..
            } => {
                let ignored_error = matches!(result, FetchResult::Error(error)
                    if *error != Errors::UnknownLeaderEpoch);
                let follows_sender_in_epoch = matches!(self.role,
                    Role::Follower { leader: Some(leader), leader_epoch: epoch }
                        if epoch == *leader_epoch && from == Node::Broker(leader));
                ignored_error
                    || *leader_epoch < known
                    || (*leader_epoch == known && !follows_sender_in_epoch)
            }
            // Read by the leader of its epoch: as newer metadata, or as a refusal of the
            // pending proposal when nothing changed since.
            Msg::AlterPartitionResponse {
                error_code, state, ..
            } => match &self.role {
                Role::Leader(leader) if state.leader_epoch == known => {
                    state.partition_epoch < leader.partition_epoch
                        || (state.partition_epoch == leader.partition_epoch
                            && !refuses_unchanged(*error_code))
                }
                _ => state.leader_epoch <= known,
            },
            Msg::Produce { .. }
            | Msg::ProduceResponse { .. }
            | Msg::AlterPartition { .. }
            | Msg::BrokerHeartbeat { .. } => false,
        }
    }

    fn me(&self) -> BrokerId {
        self.config.broker_id
    }

    fn log_end_offset(&self) -> i64 {
        self.durable.log.log_end_offset()
    }

    fn on_leader_and_isr(&mut self, state: PartitionState, now_ms: i64, out: &mut Out) {
        let known = self.leader_epoch();
        if known.is_some_and(|epoch| state.leader_epoch < epoch) {
            return;
        }
        let trusts_same_epoch_election = self.config.broken == Some(BrokenVariant::NoEpochBump)
            && state.leader == Some(self.me())
            && !matches!(self.role, Role::Leader(_));
        if known == Some(state.leader_epoch) && !trusts_same_epoch_election {
            // Same epoch: only the leader cares, about a newer ISR.
            if let Role::Leader(leader) = &mut self.role
                && state.partition_epoch > leader.partition_epoch
            {
                leader.isr = state.isr;
                leader.partition_epoch = state.partition_epoch;
                leader.pending_isr = None;
                self.maybe_advance_high_watermark(out);
            }
            return;
        }
        if state.leader == Some(self.me()) {
            self.become_leader(state, now_ms, out);
        } else {
            self.become_follower(state, out);
        }
    }

    fn become_leader(&mut self, state: PartitionState, now_ms: i64, out: &mut Out) {
        self.fail_pending_acks(out);
        let leo = self.log_end_offset();
        self.durable.epochs.assign(state.leader_epoch, leo);
        let followers = self
            .config
            .replicas
            .iter()
            .filter(|&&r| r != self.me())
            .map(|&r| {
                let progress = FollowerProgress {
                    log_end_offset: None,
                    last_caught_up_ms: now_ms,
                    high_watermark_sent: None,
                    parked: None,
                };
                (r, progress)
            })
            .collect();
        self.role = Role::Leader(LeaderState {
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr: state.isr,
            pending_isr: None,
            followers,
            pending_acks: BTreeMap::new(),
        });
        out.push(Effect::Persist(Durability::BeforeSends));
        out.push(Effect::SetTimer {
            timer: ReplicaTimer::LagCheck,
            after_ms: self.config.replica_lag_time_max_ms,
        });
        self.maybe_advance_high_watermark(out);
    }

    fn become_follower(&mut self, state: PartitionState, out: &mut Out) {
        if matches!(self.role, Role::Leader(_)) {
            self.fail_pending_acks(out);
            out.push(Effect::CancelTimer(ReplicaTimer::LagCheck));
        }
        self.role = Role::Follower {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        };
        if self.config.broken == Some(BrokenVariant::HwTruncation) {
            let hw = self.durable.high_watermark;
            self.truncate_to(hw);
            out.push(Effect::Persist(Durability::BeforeSends));
        }
        self.send_fetch(out);
    }

    fn fail_pending_acks(&mut self, out: &mut Out) {
        if let Role::Leader(leader) = &mut self.role {
            for (_, ack) in std::mem::take(&mut leader.pending_acks) {
                out.push(Effect::Send {
                    to: ack.client,
                    msg: Msg::ProduceResponse {
                        correlation_id: ack.correlation_id,
                        error_code: Errors::NotLeaderOrFollower,
                        base_offset: -1,
                        log_append_time: -1,
                    },
                });
            }
        }
    }

    fn on_produce(
        &mut self,
        client: Node,
        correlation_id: u32,
        acks: Acks,
        records: Bytes,
        now_ms: i64,
        out: &mut Out,
    ) {
        // With `acks=0` the client reads no answer: only a failure is sent, and the broker
        // tells the client by closing its connection (Kafka's rule).
        let respond = |out: &mut Out, error_code: Errors, base_offset: i64, log_append_time| {
            if acks != Acks::None || error_code != Errors::None {
                out.push(Effect::Send {
                    to: client,
                    msg: Msg::ProduceResponse {
                        correlation_id,
                        error_code,
                        base_offset,
                        log_append_time,
                    },
                });
            }
        };
        let Role::Leader(leader) = &self.role else {
            return respond(out, Errors::NotLeaderOrFollower, -1, -1);
        };
        if acks == Acks::All && leader.isr.len() < self.config.min_insync_replicas {
            return respond(out, Errors::NotEnoughReplicas, -1, -1);
        }
        // Produce v3+ carries exactly one batch per partition; its header names the producer.
        let header = match BatchHeader::parse(&records) {
            Ok(header) => header,
            Err(_) => return respond(out, Errors::CorruptMessage, -1, -1),
        };
        if header.size_in_bytes() < records.len() {
            return respond(out, Errors::InvalidRecord, -1, -1);
        }
        let batch = ProducerBatch::from_header(&header);
        let epoch = leader.leader_epoch;
        let log_end = self.log_end_offset();
        let log = &mut self.durable.log;
        let appended: Result<_, AppendError<LogError>> =
            self.producers
                .append(&batch, DuplicateAnswer::FirstWrite, log_end, || {
                    let info = log.append_as_leader(records, epoch, now_ms)?;
                    let landed = Landed {
                        first_offset: info.first_offset,
                        last_offset: info.last_offset,
                        max_timestamp: info.max_timestamp,
                    };
                    Ok((info, landed))
                });
        let (first_offset, last_offset, log_append_time) = match appended {
            Ok(IdempotentAppend::Appended(info)) => {
                out.push(Effect::Persist(Durability::Lazily));
                (info.first_offset, info.last_offset, info.log_append_time)
            }
            // A retry of a batch already written: nothing is appended, and it is answered as
            // the first write is (at once if committed, else when the HW passes it).
            Ok(IdempotentAppend::Duplicate(first)) => (first.first_offset, first.last_offset, -1),
            Err(AppendError::Sequence(e)) => return respond(out, e.error(), -1, -1),
            Err(AppendError::Append(e)) => return respond(out, e.error(), -1, -1),
        };
        let acked_on_append = acks == Acks::Leader
            || (acks == Acks::All && self.config.broken == Some(BrokenVariant::AcksLeaderOnly))
            || (acks == Acks::All && last_offset < self.durable.high_watermark);
        if acked_on_append {
            respond(out, Errors::None, first_offset, log_append_time);
        } else if acks == Acks::All
            && let Role::Leader(leader) = &mut self.role
        {
            leader.pending_acks.insert(
                (last_offset, client, correlation_id),
                PendingAck {
                    client,
                    correlation_id,
                    base_offset: first_offset,
                    log_append_time,
                },
            );
        }
        self.maybe_advance_high_watermark(out);
        self.answer_parked_fetches(out);
    }

    fn on_fetch(
        &mut self,
        follower: BrokerId,
        fetch: ParkedFetch,
        last_fetched_epoch: Option<i32>,
        now_ms: i64,
        out: &mut Out,
    ) {
        let reply = |out: &mut Out, result: FetchResult| {
            out.push(Effect::Send {
                to: fetch.from,
                msg: Msg::FetchResponse {
                    leader_epoch: fetch.leader_epoch,
                    fetch_offset: fetch.fetch_offset,
                    result,
                },
            });
        };
        let requested = fetch.leader_epoch;
        let error = match self.leader_epoch() {
            None => Some(Errors::NotLeaderOrFollower),
            Some(epoch) if requested > epoch => Some(Errors::UnknownLeaderEpoch),
            Some(epoch) if requested < epoch => Some(Errors::FencedLeaderEpoch),
            Some(_) if !matches!(self.role, Role::Leader(_)) => Some(Errors::NotLeaderOrFollower),
            Some(_) if !self.config.replicas.contains(&follower) || follower == self.me() => {
                Some(Errors::NotLeaderOrFollower)
            }
            Some(_) => None,
        };
        if let Some(error) = error {
            return reply(out, FetchResult::Error(error));
        }
        let leo = self.log_end_offset();
        if let Some(last_epoch) = last_fetched_epoch {
            let end = self.durable.epochs.end_offset_for(last_epoch, leo);
            if end.epoch != last_epoch || end.end_offset < fetch.fetch_offset {
                return reply(out, FetchResult::Diverging(end));
            }
        }
        if fetch.fetch_offset < self.durable.log.log_start_offset() || fetch.fetch_offset > leo {
            return reply(out, FetchResult::Error(Errors::OffsetOutOfRange));
        }
        let hw = self.durable.high_watermark;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let progress = leader
            .followers
            .get_mut(&follower)
            .expect("followers hold every assigned replica but the leader");
        progress.log_end_offset = Some(fetch.fetch_offset);
        progress.parked = Some(fetch);
        if fetch.fetch_offset >= leo {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        }
        let epoch_start = self
            .durable
            .epochs
            .start_offset_of(leader.leader_epoch)
            .unwrap_or(0);
        let below_hw_allowed = self.config.broken == Some(BrokenVariant::IsrExpandBelowHw);
        let rejoins = !leader.maximal_isr().contains(&follower)
            && leader.pending_isr.is_none()
            && (fetch.fetch_offset >= hw || below_hw_allowed)
            && fetch.fetch_offset >= epoch_start;
        if rejoins {
            let mut new_isr = leader.isr.clone();
            new_isr.insert(follower);
            self.propose_isr(new_isr, out);
        }
        self.maybe_advance_high_watermark(out);
        self.answer_parked_fetches(out);
    }

    /// Answers every parked fetch that has records to receive; the rest stay parked until
    /// records arrive or the driver expires them ([`expire_parked_fetch`](Self::expire_parked_fetch)).
    /// A new high watermark alone wakes no follower, as in Kafka (a follower's `DelayedFetch`
    /// completes on bytes, not on the watermark): followers learn it with the next records, and
    /// waking them for it would double the requests behind every `acks=all` batch.
    fn answer_parked_fetches(&mut self, out: &mut Out) {
        let leo = self.log_end_offset();
        let hw = self.durable.high_watermark;
        let max_bytes = self.config.replica_fetch_max_bytes;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        for progress in leader.followers.values_mut() {
            let Some(fetch) = progress.parked else {
                continue;
            };
            if fetch.fetch_offset >= leo {
                continue;
            }
            let records = self
                .durable
                .log
                .read(fetch.fetch_offset, max_bytes, None)
                .unwrap_or_default();
            progress.parked = None;
            progress.high_watermark_sent = Some(hw);
            out.push(Effect::Send {
                to: fetch.from,
                msg: Msg::FetchResponse {
                    leader_epoch: fetch.leader_epoch,
                    fetch_offset: fetch.fetch_offset,
                    result: FetchResult::Records {
                        high_watermark: hw,
                        records,
                    },
                },
            });
        }
    }

    fn on_fetch_response(
        &mut self,
        from: Node,
        leader_epoch: i32,
        fetch_offset: i64,
        result: FetchResult,
        now_ms: i64,
        out: &mut Out,
    ) {
        let Role::Follower {
            leader: Some(leader),
            leader_epoch: epoch,
        } = self.role
        else {
            return;
        };
        if from != Node::Broker(leader)
            || leader_epoch != epoch
            || fetch_offset != self.log_end_offset()
        {
            return; // a late answer to an earlier fetch
        }
        match result {
            FetchResult::Records {
                high_watermark,
                records,
            } => {
                let epochs_before = self.durable.epochs.latest_epoch();
                if !records.is_empty() {
                    if self
                        .durable
                        .log
                        .append_as_follower(records.clone(), now_ms)
                        .is_err()
                    {
                        return;
                    }
                    for batch in batches(records).flatten() {
                        let header = batch.header();
                        self.durable
                            .epochs
                            .assign(header.partition_leader_epoch, header.base_offset);
                        // A follower keeps the idempotent producers' state as the leader
                        // does: once it leads, a retry of a batch it replicated is a
                        // duplicate, not a new write (Kafka's followers append the same way).
                        self.producers.replay(header);
                    }
                }
                let hw = high_watermark.min(self.log_end_offset());
                self.durable.high_watermark = hw;
                let durability = if self.durable.epochs.latest_epoch() == epochs_before {
                    Durability::Lazily
                } else {
                    Durability::BeforeSends
                };
                out.push(Effect::Persist(durability));
                self.send_fetch(out);
            }
            FetchResult::Diverging(leader_end) => {
                let leo = self.log_end_offset();
                let mine = self.durable.epochs.end_offset_for(leader_end.epoch, leo);
                let target = if leader_end.epoch < 0 || mine.epoch < 0 {
                    self.durable.log.log_start_offset()
                } else {
                    leader_end.end_offset.min(mine.end_offset)
                };
                self.truncate_to(target);
                out.push(Effect::Persist(Durability::BeforeSends));
                self.send_fetch(out);
            }
            FetchResult::Error(Errors::UnknownLeaderEpoch) => self.send_fetch(out),
            FetchResult::Error(_) => {}
        }
    }

    /// The controller's answer to an ISR proposal. Its state is adopted only when it is newer
    /// than what this leader knows (a metadata update: any proposal based on the older state is
    /// moot). A refusal clears the pending proposal only if it answers that very proposal and
    /// nothing changed since: an answer to an earlier proposal — a resend after a lost
    /// connection, say — must not settle a later one, or the leader could drop from its HW a
    /// replica the controller has just admitted (Kafka matches answers to requests alike).
    fn on_alter_partition_response(
        &mut self,
        error: Errors,
        (proposal_epoch, proposed_isr): (i32, BTreeSet<BrokerId>),
        state: PartitionState,
        out: &mut Out,
    ) {
        let me = self.me();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        if state.leader != Some(me) || state.leader_epoch != leader.leader_epoch {
            return; // LeaderAndIsr will say what changed
        }
        if state.partition_epoch > leader.partition_epoch {
            leader.isr = state.isr;
            leader.partition_epoch = state.partition_epoch;
            leader.pending_isr = None;
        } else if refuses_unchanged(error)
            && state.partition_epoch == leader.partition_epoch
            && proposal_epoch == leader.partition_epoch
            && leader.pending_isr.as_ref() == Some(&proposed_isr)
        {
            leader.pending_isr = None;
        } else {
            return;
        }
        self.maybe_advance_high_watermark(out);
    }

    /// Kafka's rule: a follower is out of sync when its log end differs from the leader's and
    /// it last caught up more than `replica.lag.time.max.ms` ago.
    fn check_lagging_followers(&mut self, now_ms: i64, out: &mut Out) {
        let me = self.me();
        let leo = self.log_end_offset();
        let lag_ms = self.config.replica_lag_time_max_ms as i64;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        out.push(Effect::SetTimer {
            timer: ReplicaTimer::LagCheck,
            after_ms: lag_ms as u64,
        });
        let out_of_sync = |r: &BrokerId| {
            leader.followers.get(r).is_none_or(|f| {
                f.log_end_offset != Some(leo) && now_ms.saturating_sub(f.last_caught_up_ms) > lag_ms
            })
        };
        let lagging: BTreeSet<BrokerId> = leader
            .isr
            .iter()
            .copied()
            .filter(|&r| r != me && out_of_sync(&r))
            .collect();
        if !lagging.is_empty() && leader.pending_isr.is_none() {
            let new_isr = leader.isr.difference(&lagging).copied().collect();
            self.propose_isr(new_isr, out);
        }
    }

    fn propose_isr(&mut self, new_isr: BTreeSet<BrokerId>, out: &mut Out) {
        let me = self.me();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        leader.pending_isr = Some(new_isr);
        out.extend(leader.proposal(me));
    }

    /// Tells the controller this broker is up, in this incarnation.
    fn heartbeat(&self) -> Effect<ReplicaTimer> {
        Effect::Send {
            to: Node::Controller,
            msg: Msg::BrokerHeartbeat {
                broker_id: self.me(),
                incarnation: self.durable.incarnation,
            },
        }
    }

    /// Moves the HW to the smallest LEO over the maximal ISR, and answers the `acks=all`
    /// produces it passes.
    fn maybe_advance_high_watermark(&mut self, out: &mut Out) {
        let me = self.me();
        let leo = self.log_end_offset();
        let min_isr = self.config.min_insync_replicas;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let mut new_hw = leo;
        let broken = self.config.broken;
        for replica in leader.maximal_isr() {
            if replica == me || broken == Some(BrokenVariant::HwIgnoresFollowers) {
                continue;
            }
            match leader
                .followers
                .get(&replica)
                .and_then(|f| f.log_end_offset)
            {
                Some(follower_leo) => new_hw = new_hw.min(follower_leo),
                None => return,
            }
        }
        if new_hw < self.durable.high_watermark && broken == Some(BrokenVariant::IsrExpandBelowHw) {
            self.durable.high_watermark = new_hw;
            out.push(Effect::Persist(Durability::Lazily));
            return;
        }
        if new_hw <= self.durable.high_watermark {
            return;
        }
        self.durable.high_watermark = new_hw;
        out.push(Effect::Persist(Durability::Lazily));
        let still = leader.pending_acks.split_off(&(new_hw, Node::Broker(0), 0));
        let done = std::mem::replace(&mut leader.pending_acks, still);
        let error_code = if leader.isr.len() < min_isr {
            Errors::NotEnoughReplicasAfterAppend
        } else {
            Errors::None
        };
        for ack in done.into_values() {
            let base_offset = if error_code == Errors::None {
                ack.base_offset
            } else {
                -1
            };
            out.push(Effect::Send {
                to: ack.client,
                msg: Msg::ProduceResponse {
                    correlation_id: ack.correlation_id,
                    error_code,
                    base_offset,
                    log_append_time: if error_code == Errors::None {
                        ack.log_append_time
                    } else {
                        -1
                    },
                },
            });
        }
        self.answer_parked_fetches(out);
    }

    fn send_fetch(&self, out: &mut Out) {
        let Role::Follower {
            leader: Some(leader),
            leader_epoch,
        } = self.role
        else {
            return;
        };
        let last_fetched_epoch = match self.config.broken {
            Some(BrokenVariant::HwTruncation) => None,
            _ => self.durable.epochs.latest_epoch(),
        };
        out.push(Effect::Send {
            to: Node::Broker(leader),
            msg: Msg::Fetch {
                replica_id: self.me(),
                current_leader_epoch: leader_epoch,
                fetch_offset: self.log_end_offset(),
                last_fetched_epoch,
            },
        });
    }

    fn truncate_to(&mut self, offset: i64) {
        // A failed truncation leaves the log longer, never shorter, than asked: the next
        // divergence check finds the rest.
        let _ = self.durable.log.truncate_to(offset);
        let leo = self.log_end_offset();
        self.durable.epochs.truncate_from_end(leo);
        self.durable.high_watermark = self.durable.high_watermark.min(leo);
        // The producers' state must forget the batches cut off, or a retry of one would be
        // taken for a duplicate and never written again. Rebuilt from what is left (Kafka
        // reloads it from its snapshot before the truncation point).
        if let Ok(producers) = ProducerStateManager::rebuild(&self.durable.log) {
            self.producers = producers;
        }
    }
}
