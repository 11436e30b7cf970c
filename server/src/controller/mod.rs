//! The controller node (`process.roles=controller`): core's [`QuorumController`] over a
//! metadata log on disk, answering brokers on the controller listener.
//!
//! This is a driver in the `quinn` sense: it turns requests into the actor's calls, appends the
//! records the actor emits to `__cluster_metadata-0` and fsyncs them before any answer leaves
//! (KRaft's rule that a decision takes effect only once committed; with one voter, committed
//! is durable on its disk), keeps the actor's timers, and serves the log to brokers with Fetch,
//! which is how a KRaft broker learns every decision. It decides nothing itself.

mod handlers;
pub mod metadata_log;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use surety_core::actor::Effect;
use surety_core::actor::Node;
use surety_core::cluster::{
    ClusterEffects, ClusterTimer, MetadataRecord, QuorumConfig, QuorumController,
};
use tokio::sync::{Notify, watch};

use crate::broker::{Outcome, now_ms};
use crate::config::BrokerConfig;
use crate::trace::TraceWriter;
use crate::wire::codec::Request;
use metadata_log::MetadataLog;
use surety_core::trace::{QuorumInput, Step};

/// The effects of one step of the quorum controller.
type Out = ClusterEffects;

/// A controller serving its listener.
pub struct ControllerServer {
    config: BrokerConfig,
    cluster_id: String,
    started: Instant,
    state: Mutex<State>,
    /// Woken when records are appended (brokers long-poll the metadata log).
    appended: Notify,
    /// Woken when a timer is set, so the timer task sleeps no longer than it should.
    timers_changed: Notify,
    /// `surety.test.trace.dir`: where every step is recorded.
    trace: Option<TraceWriter>,
}

struct State {
    quorum: QuorumController,
    log: MetadataLog,
    /// Deadlines in ms since `started`.
    timers: BTreeMap<ClusterTimer, u64>,
}

impl ControllerServer {
    /// Opens the metadata log, replays it into the quorum controller, and starts the brokers'
    /// session timers (every registered broker counts as alive until its session expires).
    pub fn open(config: BrokerConfig) -> anyhow::Result<Arc<Self>> {
        let cluster_id = crate::broker::read_or_create_cluster_id(&config.log_dir, config.node_id)
            .map_err(|e| anyhow::anyhow!("meta.properties: {e}"))?;
        let quorum_config = QuorumConfig {
            unclean_leader_election_enable: config.cluster.unclean_leader_election_enable,
            broker_session_timeout_ms: config.broker_session_timeout_ms,
            default_replication_factor: config.default_replication_factor,
            num_partitions: config.num_partitions,
            ..QuorumConfig::default()
        };
        let mut quorum = QuorumController::new(Arc::new(quorum_config.clone()));
        let log = MetadataLog::open(&config.log_dir, now_ms())?;
        let replayed = log.replay(|offset, record| quorum.replay(offset, &record))?;
        let trace = match &config.trace_dir {
            Some(dir) => Some(
                TraceWriter::open(dir, config.node_id)
                    .map_err(|e| anyhow::anyhow!("surety.test.trace.dir: {e}"))?,
            ),
            None => None,
        };
        if let Some(trace) = &trace {
            trace.record(Step::Quorum {
                input: QuorumInput::Open {
                    config: quorum_config,
                    records: replayed as i64,
                },
                answer: String::new(),
                effects: Vec::new(),
            });
        }
        tracing::info!(
            "replayed {replayed} metadata records: {} brokers, {} topics",
            quorum.image().brokers().len(),
            quorum.image().topics().count()
        );
        let server = Arc::new(ControllerServer {
            config,
            cluster_id,
            started: Instant::now(),
            state: Mutex::new(State {
                quorum,
                log,
                timers: BTreeMap::new(),
            }),
            appended: Notify::new(),
            timers_changed: Notify::new(),
            trace,
        });
        server.step(QuorumInput::Start, |quorum| ((), quorum.start()));
        Ok(server)
    }

    /// The node's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster id brokers adopt (DescribeCluster).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Answers one request from a broker (or a tool on the controller listener).
    pub async fn handle(&self, request: Request) -> Outcome {
        handlers::handle(self, request).await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn monotonic_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs one step of the quorum controller and carries out its effects in order: records
    /// are appended and fsynced before this returns (so before the caller answers), timers are
    /// kept. A metadata log that cannot be written stops the controller, as Kafka's does: its
    /// memory would otherwise run ahead of what a restart replays.
    fn step<A: std::fmt::Debug>(
        &self,
        input: QuorumInput,
        f: impl FnOnce(&mut QuorumController) -> (A, Out),
    ) -> A {
        let mut state = self.lock();
        let (answer, out) = f(&mut state.quorum);
        self.record(input, &answer, &out);
        self.apply(&mut state, out);
        answer
    }

    /// Records a step before its effects are carried out (see `surety_core::trace`).
    fn record(&self, input: QuorumInput, answer: &impl std::fmt::Debug, effects: &Out) {
        if let Some(trace) = &self.trace {
            trace.record(Step::Quorum {
                input,
                answer: format!("{answer:?}"),
                effects: effects.clone(),
            });
        }
    }

    /// Runs `f` on a copy of the quorum controller and forgets the copy: what a request with
    /// `validate_only` would get, with nothing written.
    fn validate<A>(&self, f: impl FnOnce(&mut QuorumController) -> (A, Out)) -> A {
        let mut copy = self.lock().quorum.clone();
        f(&mut copy).0
    }

    fn apply(&self, state: &mut State, out: Out) {
        let mut records = Vec::new();
        let mut timers_set = false;
        for effect in out {
            match effect {
                Effect::Send {
                    to: Node::Controller,
                    msg,
                } => records.push(msg),
                Effect::Send { to, msg } => {
                    tracing::error!("the quorum controller addressed {msg:?} to {to:?}");
                }
                Effect::SetTimer { timer, after_ms } => {
                    state.timers.insert(timer, self.monotonic_ms() + after_ms);
                    timers_set = true;
                }
                Effect::CancelTimer(timer) => {
                    state.timers.remove(&timer);
                }
                Effect::Persist(_) => {}
            }
        }
        if !records.is_empty() {
            let expected_end = state.quorum.image().next_offset();
            match state.log.append(&records, now_ms()) {
                Ok(end) if end == expected_end => {}
                Ok(end) => fatal(&format!(
                    "the metadata log ends at {end} but the controller counted {expected_end}"
                )),
                Err(e) => fatal(&format!("cannot write the metadata log: {e}")),
            }
            for record in &records {
                tracing::info!("metadata: {}", describe(record));
            }
            self.appended.notify_waiters();
        }
        if timers_set {
            self.timers_changed.notify_one();
        }
    }

    /// Fires due timers until shutdown.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wait = {
                let mut state = self.lock();
                let now = self.monotonic_ms();
                let due: Vec<ClusterTimer> = state
                    .timers
                    .iter()
                    .filter(|&(_, &at)| at <= now)
                    .map(|(&t, _)| t)
                    .collect();
                for timer in due {
                    state.timers.remove(&timer);
                    let out = state.quorum.on_timer(timer);
                    self.record(QuorumInput::Timer(timer), &(), &out);
                    self.apply(&mut state, out);
                }
                let now = self.monotonic_ms();
                state
                    .timers
                    .values()
                    .min()
                    .map_or(Duration::from_secs(1), |&at| {
                        Duration::from_millis(at.saturating_sub(now))
                    })
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.timers_changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Flushes and closes the metadata log.
    pub fn shutdown(&self) {
        if let Err(e) = self.lock().log.close(now_ms()) {
            tracing::error!("closing the metadata log: {e}");
        }
    }
}

/// One line per record for the controller's log: what operators read to follow elections,
/// with topics named by their id as Kafka prints it.
fn describe(record: &MetadataRecord) -> String {
    let id = |topic_id: &[u8; 16]| uuid::Uuid::from_bytes(*topic_id).to_string();
    match record {
        MetadataRecord::RegisterBroker {
            broker_id,
            broker_epoch,
            host,
            port,
        } => format!("RegisterBroker broker {broker_id} epoch {broker_epoch} at {host}:{port}"),
        MetadataRecord::FenceBroker {
            broker_id,
            broker_epoch,
        } => format!("FenceBroker broker {broker_id} epoch {broker_epoch}"),
        MetadataRecord::UnfenceBroker {
            broker_id,
            broker_epoch,
        } => format!("UnfenceBroker broker {broker_id} epoch {broker_epoch}"),
        MetadataRecord::Topic {
            name,
            topic_id,
            configs,
        } => format!("Topic {name} id {} configs {configs:?}", id(topic_id)),
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas,
            state,
        } => format!(
            "Partition {}-{partition} replicas {replicas:?} leader {:?} epoch {} isr {:?}",
            id(topic_id),
            state.leader,
            state.leader_epoch,
            state.isr
        ),
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            state,
        } => format!(
            "PartitionChange {}-{partition} leader {:?} epoch {} isr {:?} partition epoch {}",
            id(topic_id),
            state.leader,
            state.leader_epoch,
            state.isr,
            state.partition_epoch
        ),
        MetadataRecord::RemoveTopic { topic_id } => format!("RemoveTopic id {}", id(topic_id)),
        MetadataRecord::ProducerIds {
            broker_id,
            next_producer_id,
            ..
        } => format!("ProducerIds broker {broker_id} next {next_producer_id}"),
    }
}

fn fatal(message: &str) -> ! {
    tracing::error!("{message}; stopping the controller");
    std::process::exit(1)
}
