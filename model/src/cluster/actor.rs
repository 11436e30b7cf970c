//! Core's actors as one Stateright actor type: the cluster controller, brokers holding one
//! replica per partition placed on them, and the client. Each step hands a message or timer to
//! the core actor and turns its effects into Stateright commands; what the broker adds is
//! routing (which partition, and the broker epoch on an ISR proposal), as the server's
//! `ClusterLink` does, and deciding nothing.
//!
//! Ghost fields (never read by an actor, only by properties) record what a state cannot show:
//! whether an election chose outside the ISR, whether a broker epoch went back, which brokers'
//! sessions expired and whether one came back, which partitions' ISRs shrank.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use stateright::actor::{Actor, Id, Out, model_timeout};
use surety_core::actor::Effect as CoreEffect;
use surety_core::cluster::{ClusterEffects, ClusterTimer, MetadataRecord, QuorumController};
use surety_core::log::{LogConfig, MemoryLog};
use surety_core::replication::{
    BrokerId, Durable, Effect, Msg, Node, PartitionState, Replica, ReplicaTimer, Role,
};

use super::system::Cluster;
use super::{Bound, Setup, TOPIC_ID};
use crate::harness::fetch_expiry::{expirable, timer_changes};
use crate::harness::system::{client_disconnected, client_send, keep_idle_timer, step_client};
use crate::harness::{self, ClientState, Disconnected, Layout};

/// The partition log of a modelled broker.
pub type Log = MemoryLog;

/// A value shared between states until it changes, hashed once per change. The checker hashes
/// every state it generates; a broker's replicas and the controller carry logs, maps and
/// configurations, and most steps change one replica of one broker: each is hashed when it
/// changes, and a state's hash covers the digests.
#[derive(Clone)]
pub struct Sealed<T> {
    value: Arc<T>,
    digest: u64,
}

impl<T: Hash> Sealed<T> {
    /// Seals `value`.
    pub fn new(value: T) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        value.hash(&mut hasher);
        Sealed {
            value: Arc::new(value),
            digest: hasher.finish(),
        }
    }

    /// Changes the value (copying it first if another state shares it), and hashes it again.
    pub fn update<R>(&mut self, change: impl FnOnce(&mut T) -> R) -> R
    where
        T: Clone,
    {
        let result = change(Arc::make_mut(&mut self.value));
        let mut hasher = std::hash::DefaultHasher::new();
        self.value.hash(&mut hasher);
        self.digest = hasher.finish();
        result
    }
}

impl<T> std::ops::Deref for Sealed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Hash for Sealed<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

impl<T: PartialEq> PartialEq for Sealed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
            && (Arc::ptr_eq(&self.value, &other.value) || self.value == other.value)
    }
}

impl<T: Eq> Eq for Sealed<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Sealed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

/// What travels between the actors.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterMsg {
    /// One partition's replication message: Produce and its answer (client and leader), Fetch
    /// and its answer (follower and leader), `LeaderAndIsr` (the metadata log's partition
    /// records, controller to brokers and client) and AlterPartitionResponse.
    Partition(u8, Msg),
    /// AlterPartition: a leader's ISR proposal (`Msg::AlterPartition`), with the broker epoch of
    /// its broker's registration.
    AlterPartition {
        /// The proposing broker's epoch.
        broker_epoch: i64,
        /// The partition.
        partition: u8,
        /// The proposal.
        msg: Msg,
    },
    /// BrokerRegistration: a broker (re)starts.
    Register,
    /// The registration's answer: the new broker epoch, and every partition's state as the
    /// metadata log says once the registration is in it (the broker has caught up).
    Registered {
        /// The epoch of this registration.
        broker_epoch: i64,
        /// Each partition's state.
        states: Vec<PartitionState>,
    },
    /// A restarted broker reads the metadata log before it registers (`--early-metadata`, as
    /// Surety's broker does): a Fetch of the whole log.
    FetchMetadata,
    /// Its answer: every partition's state as the log says now.
    Metadata {
        /// Each partition's state.
        states: Vec<PartitionState>,
    },
    /// BrokerHeartbeat, from a broker that has caught up with the log (`want_fence` false).
    Heartbeat {
        /// The registration it heartbeats for.
        broker_epoch: i64,
    },
}

/// Every actor of the model.
#[derive(Clone, Debug)]
pub enum ModelActor {
    /// A broker.
    Broker {
        /// Its `node.id`.
        id: BrokerId,
        /// The cluster as it starts.
        setup: Arc<Setup>,
        /// The run's bound.
        bound: Bound,
    },
    /// The cluster controller.
    Controller {
        /// The cluster as it starts.
        setup: Arc<Setup>,
        /// The run's bound.
        bound: Bound,
    },
    /// The producing client.
    Client {
        /// The cluster as it starts.
        setup: Arc<Setup>,
        /// The run's bound.
        bound: Bound,
    },
}

/// A modelled broker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrokerState {
    /// Starts so far (0 for the first); kept with what it saved, to count restarts.
    pub incarnation: u32,
    /// The epoch of its registration; `None` from a restart until the registration's answer.
    pub broker_epoch: Option<i64>,
    /// Its replica of each partition (`None` where it holds none).
    pub replicas: Vec<Option<Sealed<Replica<Log>>>>,
}

impl BrokerState {
    /// The replicas it holds, with their partitions.
    pub fn hosted(&self) -> impl Iterator<Item = (u8, &Replica<Log>)> {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(p, r)| Some((p as u8, &**r.as_ref()?)))
    }
}

/// The modelled controller and its ghosts.
#[derive(Clone, Debug)]
pub struct ControllerState {
    /// Core's cluster controller.
    pub quorum: QuorumController,
    /// Sessions expired so far (each one fenced a broker).
    pub expiries: u8,
    /// Ghost: brokers (as bits) whose session expired.
    pub expired: u32,
    /// Ghost: a broker whose session expired was unfenced again.
    pub unfenced_after_expiry: bool,
    /// Ghost: partitions (as bits) whose ISR lost a member.
    pub shrunk: u32,
    /// Ghost: an election chose a replica outside the partition's ISR.
    pub elected_outside_isr: bool,
    /// Ghost: a broker's registration epoch went down in the image.
    pub epoch_regressed: bool,
}

impl ControllerState {
    /// Partition `p`'s state as its controller decided it.
    pub fn partition(&self, p: u8) -> &PartitionState {
        self.quorum
            .partition_state(&TOPIC_ID, i32::from(p))
            .expect("the model's partitions exist")
    }

    fn ghosts(&self) -> (u8, u32, bool, u32, bool, bool) {
        (
            self.expiries,
            self.expired,
            self.unfenced_after_expiry,
            self.shrunk,
            self.elected_outside_isr,
            self.epoch_regressed,
        )
    }
}

/// Only what the controller decides on is compared and hashed: each broker's epoch and
/// fencing, the log's next offset (where the next broker epoch comes from), and each
/// partition's controller (state, fenced brokers, incarnations). Hosts, ports and the topic's
/// name and configs never change, and the image's partition states are the controllers'.
impl Hash for ControllerState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let image = self.quorum.image();
        for (id, broker) in image.brokers() {
            (id, broker.broker_epoch, broker.fenced).hash(h);
        }
        image.next_offset().hash(h);
        for p in 0.. {
            match self.quorum.partition_controller(&TOPIC_ID, p) {
                Some(controller) => controller.hash(h),
                None => break,
            }
        }
        self.ghosts().hash(h);
    }
}

impl PartialEq for ControllerState {
    fn eq(&self, other: &Self) -> bool {
        self.ghosts() == other.ghosts()
            && self.quorum.image() == other.quorum.image()
            && (0..).find_map(|p| {
                let (a, b) = (
                    self.quorum.partition_controller(&TOPIC_ID, p),
                    other.quorum.partition_controller(&TOPIC_ID, p),
                );
                match (a, b) {
                    (None, None) => Some(true),
                    (a, b) if a != b => Some(false),
                    _ => None,
                }
            }) == Some(true)
    }
}

impl Eq for ControllerState {}

/// What a broker saved to disk: each replica's durable state as of its last step, and the
/// broker's starts so far (which only the model reads: its budget of restarts). Like the
/// replication model's `Saved`, it always equals what the broker holds (up, or frozen while
/// down), so its hash is empty; equality compares it in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// The broker's starts so far.
    pub incarnation: u32,
    /// Each replica's durable state.
    pub replicas: Arc<Vec<Option<Durable<Log>>>>,
}

impl Hash for Saved {
    fn hash<H: Hasher>(&self, _state: &mut H) {}
}

/// An actor's state.
pub type ModelState = harness::ModelState<BrokerState, Sealed<ControllerState>>;

/// Every actor's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelTimer {
    /// A replica's (the leader's lag check), by partition.
    Replica(u8, ReplicaTimer),
    /// A leader's held fetch from this follower expiring, by partition (see
    /// [`harness::fetch_expiry`]).
    ExpireFetch(u8, BrokerId),
    /// A broker's heartbeat (`broker.heartbeat.interval.ms`).
    Heartbeat,
    /// The controller's: a broker's session, a partition's election.
    Cluster(ClusterTimer),
}

impl ModelActor {
    fn bound(&self) -> Bound {
        match self {
            ModelActor::Broker { bound, .. }
            | ModelActor::Controller { bound, .. }
            | ModelActor::Client { bound, .. } => *bound,
        }
    }

    fn setup(&self) -> &Setup {
        match self {
            ModelActor::Broker { setup, .. }
            | ModelActor::Controller { setup, .. }
            | ModelActor::Client { setup, .. } => setup,
        }
    }

    fn layout(&self) -> Layout {
        Layout {
            brokers: self.bound().brokers,
        }
    }

    /// Records the client produces in the whole run.
    fn total_records(&self) -> u32 {
        let bound = self.bound();
        bound.records * bound.partitions as u32
    }
}

// --- Brokers ------------------------------------------------------------------------------------

/// One replica's effects, routed: to the controller an ISR proposal goes with the broker
/// epoch, and a replica's own `BrokerHeartbeat` is dropped (the broker's registration and
/// heartbeats stand for it, as in the server).
fn route_replica(
    layout: Layout,
    broker_epoch: Option<i64>,
    p: u8,
    effects: Vec<Effect<ReplicaTimer>>,
    persist: &mut bool,
    o: &mut Out<ModelActor>,
) {
    for effect in effects {
        match effect {
            Effect::Send {
                to: Node::Controller,
                msg: msg @ Msg::AlterPartition { .. },
            } => {
                // Before its registration is answered a broker has no epoch: Surety's sends
                // -1, which the controller refuses as stale. (Only a replica that acted on
                // metadata before registering can propose then.)
                let broker_epoch = broker_epoch.unwrap_or(-1);
                o.send(
                    layout.controller(),
                    ClusterMsg::AlterPartition {
                        broker_epoch,
                        partition: p,
                        msg,
                    },
                );
            }
            Effect::Send {
                to: Node::Controller,
                ..
            } => {}
            Effect::Send { to, msg } => o.send(layout.id(to), ClusterMsg::Partition(p, msg)),
            Effect::SetTimer { timer, .. } => {
                o.set_timer(ModelTimer::Replica(p, timer), model_timeout())
            }
            Effect::CancelTimer(timer) => o.cancel_timer(ModelTimer::Replica(p, timer)),
            Effect::Persist(_) => *persist = true,
        }
    }
}

/// What `broker` saves.
pub fn saved(broker: &BrokerState) -> Saved {
    let replicas = broker
        .replicas
        .iter()
        .map(|r| r.as_ref().map(|r| r.durable().clone()))
        .collect();
    Saved {
        incarnation: broker.incarnation,
        replicas: Arc::new(replicas),
    }
}

fn durable_changed(before: &BrokerState, after: &BrokerState) -> bool {
    before
        .replicas
        .iter()
        .zip(&after.replicas)
        .any(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => a.durable() != b.durable(),
            _ => false,
        })
}

/// Runs `step` on a copy of the broker; it returns each touched replica's effects. Saves the
/// durable state if a replica asked to and it changed.
fn step_broker(
    layout: Layout,
    state: &mut Cow<ModelState>,
    o: &mut Out<ModelActor>,
    step: impl FnOnce(&mut BrokerState) -> Vec<(u8, Vec<Effect<ReplicaTimer>>)>,
) {
    let ModelState::Broker(before) = state.as_ref() else {
        return;
    };
    let mut broker = before.clone();
    let effects = step(&mut broker);
    if broker == *before && effects.iter().all(|(_, e)| e.is_empty()) {
        return;
    }
    let mut persist = false;
    for (p, effects) in effects {
        route_replica(layout, broker.broker_epoch, p, effects, &mut persist, o);
    }
    for (p, (was, is)) in before.replicas.iter().zip(&broker.replicas).enumerate() {
        let expirable = |r: &Option<Sealed<Replica<Log>>>| r.as_ref().map_or(0, |r| expirable(r));
        for (follower, set) in timer_changes(expirable(was), expirable(is)) {
            let timer = ModelTimer::ExpireFetch(p as u8, follower);
            match set {
                true => o.set_timer(timer, model_timeout()),
                false => o.cancel_timer(timer),
            }
        }
    }
    if persist && durable_changed(before, &broker) {
        o.save(saved(&broker));
    }
    if broker != *before {
        *state.to_mut() = ModelState::Broker(broker);
    }
}

/// Hands each replica of `broker` its partition's state from the metadata log.
fn learn(
    broker: &mut BrokerState,
    states: &[PartitionState],
) -> Vec<(u8, Vec<Effect<ReplicaTimer>>)> {
    let mut effects = Vec::new();
    for (p, replica) in broker.replicas.iter_mut().enumerate() {
        if let Some(replica) = replica {
            let msg = Msg::LeaderAndIsr(states[p].clone());
            effects.push((
                p as u8,
                replica.update(|r| r.on_message(Node::Controller, msg, 0)),
            ));
        }
    }
    effects
}

/// Whether a replica's timer may fire within the bound: a leader's lag check only while its
/// own view shows fewer ISR changes than the bound allows (as in the replication model).
fn lag_check_within_bound(bound: Bound, replica: &Replica<Log>) -> bool {
    match replica.role() {
        Role::Leader(l) => l.partition_epoch - l.leader_epoch < bound.isr_changes,
        _ => true,
    }
}

// --- The controller -----------------------------------------------------------------------------

/// Sends what the controller's records say to those who read them: every partition record's
/// state, as `LeaderAndIsr`, to the partition's replicas (but `skip`, which learns it from its
/// registration's answer) and to the client. Timers become the controller's.
fn publish(
    layout: Layout,
    setup: &Setup,
    effects: ClusterEffects,
    skip: Option<BrokerId>,
    o: &mut Out<ModelActor>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for effect in effects {
        match effect {
            CoreEffect::Send { msg: record, .. } => {
                if let MetadataRecord::PartitionChange {
                    partition, state, ..
                }
                | MetadataRecord::Partition {
                    partition, state, ..
                } = &record
                {
                    let p = *partition as u8;
                    for &b in &setup.assignments[usize::from(p)] {
                        if Some(b) != skip {
                            let msg = ClusterMsg::Partition(p, Msg::LeaderAndIsr(state.clone()));
                            o.send(layout.id(Node::Broker(b)), msg);
                        }
                    }
                    let msg = ClusterMsg::Partition(p, Msg::LeaderAndIsr(state.clone()));
                    o.send(layout.client(), msg);
                }
                records.push(record);
            }
            CoreEffect::SetTimer { timer, .. } => {
                o.set_timer(ModelTimer::Cluster(timer), model_timeout());
            }
            CoreEffect::CancelTimer(timer) => o.cancel_timer(ModelTimer::Cluster(timer)),
            CoreEffect::Persist(_) => {}
        }
    }
    records
}

/// Brings the ghosts up to date after a step from `before` to `after` that wrote `records`.
fn update_ghosts(
    before: &ControllerState,
    after: &mut ControllerState,
    records: &[MetadataRecord],
    partitions: usize,
) {
    for p in 0..partitions as u8 {
        let (old, new) = (before.partition(p), after.partition(p));
        let outside = new.leader_epoch > old.leader_epoch
            && new.leader.is_some_and(|leader| !old.isr.contains(&leader));
        let shrank = !new.isr.is_superset(&old.isr);
        after.elected_outside_isr |= outside;
        if shrank {
            after.shrunk |= 1 << p;
        }
    }
    let image = after.quorum.image();
    for (id, broker) in before.quorum.image().brokers() {
        if image
            .broker(id)
            .is_none_or(|now| now.broker_epoch < broker.broker_epoch)
        {
            after.epoch_regressed = true;
        }
    }
    for record in records {
        if let MetadataRecord::UnfenceBroker { broker_id, .. } = record
            && after.expired & (1 << broker_id) != 0
        {
            after.unfenced_after_expiry = true;
        }
    }
}

/// Runs `step` on a copy of the controller: it returns the step's effects, the answer to send
/// first (to whom, what) and the broker that learns the step's partition records otherwise.
fn step_controller(
    actor: &ModelActor,
    state: &mut Cow<ModelState>,
    o: &mut Out<ModelActor>,
    step: impl FnOnce(
        &mut ControllerState,
    ) -> (ClusterEffects, Option<(Id, ClusterMsg)>, Option<BrokerId>),
) -> Vec<MetadataRecord> {
    let ModelState::Controller(before) = state.as_ref() else {
        return Vec::new();
    };
    let mut next = (**before).clone();
    let (effects, answer, skip) = step(&mut next);
    if effects.is_empty() && answer.is_none() && next == **before {
        return Vec::new();
    }
    if let Some((to, msg)) = answer {
        o.send(to, msg);
    }
    let records = publish(actor.layout(), actor.setup(), effects, skip, o);
    update_ghosts(before, &mut next, &records, actor.bound().partitions);
    if next != **before {
        *state.to_mut() = ModelState::Controller(Sealed::new(next));
    }
    records
}

fn current_states(c: &ControllerState, partitions: usize) -> Vec<PartitionState> {
    (0..partitions as u8)
        .map(|p| c.partition(p).clone())
        .collect()
}

impl Disconnected for ModelActor {
    fn disconnected(&self, state: &mut Cow<ModelState>, peer: Node, down: bool, o: &mut Out<Self>) {
        let layout = self.layout();
        match self {
            ModelActor::Broker { .. } => {
                // A registration still unanswered is sent again (after reading the log again,
                // with early metadata).
                if let ModelState::Broker(broker) = state.as_ref()
                    && peer == Node::Controller
                    && broker.broker_epoch.is_none()
                {
                    if self.bound().early_metadata {
                        o.send(layout.controller(), ClusterMsg::FetchMetadata);
                    }
                    o.send(layout.controller(), ClusterMsg::Register);
                }
                step_broker(layout, state, o, |broker| {
                    let mut effects = Vec::new();
                    for (p, replica) in broker.replicas.iter_mut().enumerate() {
                        if let Some(replica) = replica {
                            effects.push((p as u8, replica.update(|r| r.on_disconnect(peer))));
                        }
                    }
                    effects
                })
            }
            ModelActor::Controller { setup, bound } => {
                // A broker (or the client) that was cut off reads the log again from where it
                // stopped: it is sent each of its partitions' current state. One that is down
                // learns it with its registration.
                if down {
                    return;
                }
                let ModelState::Controller(c) = state.as_ref() else {
                    return;
                };
                for p in 0..bound.partitions as u8 {
                    let reads = match peer {
                        Node::Broker(b) => setup.hosts(b, usize::from(p)),
                        Node::Client(_) => true,
                        Node::Controller => false,
                    };
                    if reads {
                        let msg =
                            ClusterMsg::Partition(p, Msg::LeaderAndIsr(c.partition(p).clone()));
                        o.send(layout.id(peer), msg);
                    }
                }
            }
            ModelActor::Client { .. } => {
                let total = self.total_records();
                client_disconnected::<Cluster>(layout, state, peer, down, total, o);
            }
        }
    }
}

impl Actor for ModelActor {
    type Msg = ClusterMsg;
    type State = ModelState;
    type Timer = ModelTimer;
    type Random = ();
    type Storage = Saved;

    fn on_start(&self, _id: Id, storage: &Option<Saved>, o: &mut Out<Self>) -> ModelState {
        let layout = self.layout();
        match self {
            ModelActor::Broker { id, setup, .. } => {
                o.set_timer(ModelTimer::Heartbeat, model_timeout());
                let configs = &setup.replica_configs[*id as usize];
                let mut persist = false;
                match storage {
                    None => {
                        // A new partition: the controller's first decision is already known.
                        let mut replicas = Vec::new();
                        let mut all = Vec::new();
                        for (p, config) in configs.iter().enumerate() {
                            let replica = config.as_ref().map(|config| {
                                let log = MemoryLog::new(LogConfig::default());
                                let mut replica = Replica::new(config.clone(), log);
                                let msg = Msg::LeaderAndIsr(setup.initial[p].clone());
                                all.push((p as u8, replica.on_message(Node::Controller, msg, 0)));
                                Sealed::new(replica)
                            });
                            replicas.push(replica);
                        }
                        let broker = BrokerState {
                            incarnation: 0,
                            broker_epoch: Some(setup.broker_epochs[*id as usize]),
                            replicas,
                        };
                        for (p, effects) in all {
                            route_replica(layout, broker.broker_epoch, p, effects, &mut persist, o);
                        }
                        o.save(saved(&broker));
                        ModelState::Broker(broker)
                    }
                    Some(storage) => {
                        // A restart: each replica recovers from what it saved, and the broker
                        // registers again. Its replicas wait, unattached, for the answer.
                        let mut replicas = Vec::new();
                        let mut all = Vec::new();
                        for (config, durable) in configs.iter().zip(storage.replicas.iter()) {
                            let replica = match (config, durable) {
                                (Some(config), Some(durable)) => {
                                    let (replica, effects) =
                                        Replica::recover(config.clone(), durable.clone())
                                            .expect("a memory log always reads back");
                                    all.push(effects);
                                    Some(Sealed::new(replica))
                                }
                                _ => None,
                            };
                            replicas.push(replica);
                        }
                        let broker = BrokerState {
                            incarnation: storage.incarnation + 1,
                            broker_epoch: None,
                            replicas,
                        };
                        for (p, effects) in all.into_iter().enumerate() {
                            route_replica(layout, None, p as u8, effects, &mut persist, o);
                        }
                        o.save(saved(&broker));
                        if self.bound().early_metadata {
                            o.send(layout.controller(), ClusterMsg::FetchMetadata);
                        }
                        o.send(layout.controller(), ClusterMsg::Register);
                        ModelState::Broker(broker)
                    }
                }
            }
            ModelActor::Controller { setup, .. } => {
                for (b, _) in setup.quorum.image().live_brokers() {
                    let timer = ClusterTimer::BrokerSession(b);
                    o.set_timer(ModelTimer::Cluster(timer), model_timeout());
                }
                ModelState::Controller(Sealed::new(ControllerState {
                    quorum: setup.quorum.clone(),
                    expiries: 0,
                    expired: 0,
                    unfenced_after_expiry: false,
                    shrunk: 0,
                    elected_outside_isr: false,
                    epoch_regressed: false,
                }))
            }
            ModelActor::Client { setup, bound } => {
                let (client, send) =
                    ClientState::new(&setup.initial, bound.retries, self.total_records());
                client_send::<Cluster>(layout, send, o);
                ModelState::Client(client)
            }
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<ModelState>,
        src: Id,
        msg: ClusterMsg,
        o: &mut Out<Self>,
    ) {
        let layout = self.layout();
        let from = layout.node(src);
        match self {
            ModelActor::Broker { bound, .. } => {
                let early_metadata = bound.early_metadata;
                step_broker(layout, state, o, |broker| match (from, msg) {
                    (
                        Node::Controller,
                        ClusterMsg::Registered {
                            broker_epoch,
                            states,
                        },
                    ) => {
                        if broker.broker_epoch.is_some_and(|e| e >= broker_epoch) {
                            return Vec::new();
                        }
                        broker.broker_epoch = Some(broker_epoch);
                        learn(broker, &states)
                    }
                    (Node::Controller, ClusterMsg::Metadata { states }) => learn(broker, &states),
                    // Metadata is acted on only once the broker is registered (and caught up),
                    // unless it reads the log before registering.
                    (Node::Controller, ClusterMsg::Partition(..))
                        if broker.broker_epoch.is_none() && !early_metadata =>
                    {
                        Vec::new()
                    }
                    (from, ClusterMsg::Partition(p, msg)) => {
                        match broker.replicas.get_mut(usize::from(p)) {
                            Some(Some(replica)) => {
                                vec![(p, replica.update(|r| r.on_message(from, msg, 0)))]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                })
            }
            ModelActor::Controller { bound, .. } => {
                let Node::Broker(b) = from else {
                    return;
                };
                let partitions = bound.partitions;
                step_controller(self, state, o, |c| match msg {
                    ClusterMsg::Register => {
                        let (epoch, effects) =
                            c.quorum.register_broker(b, "localhost", 9092 + b as u16);
                        let Ok(broker_epoch) = epoch else {
                            return (effects, None, None);
                        };
                        let states = current_states(c, partitions);
                        let answer = ClusterMsg::Registered {
                            broker_epoch,
                            states,
                        };
                        (effects, Some((src, answer)), Some(b))
                    }
                    ClusterMsg::Heartbeat { broker_epoch } => {
                        let (_, effects) = c.quorum.heartbeat(b, broker_epoch, false);
                        (effects, None, None)
                    }
                    ClusterMsg::FetchMetadata => {
                        let states = current_states(c, partitions);
                        let answer = ClusterMsg::Metadata { states };
                        (Vec::new(), Some((src, answer)), None)
                    }
                    ClusterMsg::AlterPartition {
                        broker_epoch,
                        partition,
                        msg:
                            Msg::AlterPartition {
                                leader_epoch,
                                partition_epoch,
                                new_isr,
                                ..
                            },
                    } => {
                        let (answer, effects) = c.quorum.alter_partition(
                            b,
                            broker_epoch,
                            TOPIC_ID,
                            i32::from(partition),
                            leader_epoch,
                            partition_epoch,
                            new_isr,
                        );
                        let answer = ClusterMsg::Partition(partition, answer);
                        (effects, Some((src, answer)), None)
                    }
                    _ => (Vec::new(), None, None),
                });
            }
            ModelActor::Client { .. } => {
                let total = self.total_records();
                step_client::<Cluster>(layout, state, o, |client| match msg {
                    ClusterMsg::Partition(p, msg) => client.on_msg(p, msg, total),
                    _ => None,
                });
            }
        }
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<ModelState>,
        timer: &ModelTimer,
        o: &mut Out<Self>,
    ) {
        let layout = self.layout();
        let bound = self.bound();
        match (self, *timer) {
            (ModelActor::Broker { .. }, ModelTimer::Replica(p, t)) => {
                step_broker(layout, state, o, |broker| {
                    match broker.replicas.get_mut(usize::from(p)) {
                        Some(Some(replica)) if lag_check_within_bound(bound, replica) => {
                            // A timer firing means its whole interval has passed.
                            vec![(p, replica.update(|r| r.on_timer(t, i64::MAX)))]
                        }
                        _ => Vec::new(),
                    }
                });
            }
            (ModelActor::Broker { .. }, ModelTimer::ExpireFetch(p, follower)) => {
                step_broker(layout, state, o, |broker| {
                    match broker.replicas.get_mut(usize::from(p)) {
                        Some(Some(replica)) => {
                            vec![(p, replica.update(|r| r.expire_parked_fetch(follower)))]
                        }
                        _ => Vec::new(),
                    }
                });
            }
            (ModelActor::Broker { .. }, ModelTimer::Heartbeat) => {
                // Heartbeats go on every interval; the system offers this timer only when the
                // heartbeat would unfence the broker (see `system.rs`).
                if let ModelState::Broker(broker) = state.as_ref()
                    && let Some(broker_epoch) = broker.broker_epoch
                {
                    o.send(layout.controller(), ClusterMsg::Heartbeat { broker_epoch });
                }
                o.set_timer(ModelTimer::Heartbeat, model_timeout());
                return;
            }
            (ModelActor::Controller { .. }, ModelTimer::Cluster(t)) => {
                step_controller(self, state, o, |c| {
                    let ClusterTimer::BrokerSession(b) = t else {
                        return (c.quorum.on_timer(t), None, None);
                    };
                    // Sessions expire while the run's budget lasts.
                    if c.expiries >= bound.expiries {
                        return (Vec::new(), None, None);
                    }
                    let effects = c.quorum.on_timer(t);
                    if effects.iter().any(|e| matches!(e, CoreEffect::Send { .. })) {
                        c.expiries += 1;
                        c.expired |= 1 << b;
                    }
                    (effects, None, None)
                });
            }
            _ => {}
        }
        keep_idle_timer(state, timer, o);
    }
}
