//! `model replay DIR`: a real cluster's history, checked by the model.
//!
//! Every node run with `surety.test.trace.dir=DIR` wrote each step its actors took (input,
//! time, effects; see `surety_core::trace`). The replay merges the nodes' steps by their time
//! stamps, feeds each input to the same core actor (replicas over an in-memory log, the
//! cluster controller), and requires the very effects the node recorded: the running code and
//! the checked code did the same thing. After every step it evaluates the replication model's
//! safety properties ([`crate::replication::invariants`]) on the partition it touched, with
//! the records clients had acknowledged with `acks=all`. The first mismatch or violated
//! property ends the replay, named.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use surety_core::actor::{Effect, Node};
use surety_core::cluster::{MetadataRecord, QuorumController};
use surety_core::errors::Errors;
use surety_core::log::{LogConfig, MemoryLog, PartitionLog};
use surety_core::record::batches;
use surety_core::replication::{Acks, Durable, LeaderEpochCache, Msg, Replica, ReplicaTimer, Role};
use surety_core::trace::{QuorumInput, ReplicaInput, Step, TraceStep};

use crate::replication::invariants::{PartitionView, ReplicaView, safety};

/// A record's identity in the properties: its key and value.
type RecordId = (Option<Bytes>, Option<Bytes>);

/// Why a replay failed.
#[derive(Debug)]
pub struct Failure {
    /// Where: the trace file and line of the step.
    pub at: String,
    /// What.
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// What a successful replay went through.
#[derive(Debug, Default)]
pub struct Report {
    /// Trace files read.
    pub files: usize,
    /// Steps replayed.
    pub steps: usize,
    /// Replica steps among them.
    pub replica_steps: usize,
    /// Controller steps among them.
    pub controller_steps: usize,
    /// Records acknowledged with acks=all whose survival was checked.
    pub acked_records: usize,
    /// Property evaluations.
    pub checks: usize,
}

/// A replica being replayed, with what the properties need of it kept up to date.
struct Slot {
    replica: Replica<MemoryLog>,
    records: BTreeMap<i64, RecordId>,
    /// The leader epoch and HW after its last step while leading, for `leader_hw_monotonic`.
    led: Option<(i32, i64)>,
}

/// A produce waiting for its answer: its records, by offset once answered.
struct PendingProduce {
    records: Bytes,
}

#[derive(Default)]
struct Replay {
    /// (node, topic, partition) → replica.
    slots: BTreeMap<(i32, String, i32), Slot>,
    /// Controller node → its quorum controller and the records it committed.
    quorums: HashMap<i32, (QuorumController, Vec<MetadataRecord>)>,
    /// (node, topic, partition, client, correlation) → an acks=all produce in flight.
    produces: HashMap<(i32, String, i32, u64, u32), PendingProduce>,
    /// (topic, partition) → acknowledged records.
    acked: BTreeMap<(String, i32), Vec<(RecordId, i64)>>,
    /// (topic id, partition) → the controller's last decision, for `leader_elected_from_isr`.
    decisions:
        HashMap<(surety_core::cluster::TopicId, i32), surety_core::replication::PartitionState>,
    /// Whether the cluster allows unclean elections.
    unclean: bool,
    report: Report,
}

/// Reads every `*.trace` file in `dir` and replays them.
pub fn replay_dir(dir: &Path) -> Result<Report, Failure> {
    let steps = read_dir(dir)?;
    let mut replay = Replay::default();
    replay.report.files = steps
        .iter()
        .map(|(at, _)| at.0.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    for ((file, line), step) in steps {
        let at = format!("{}:{line}", file.display());
        replay.step(step).map_err(|what| Failure { at, what })?;
        replay.report.steps += 1;
    }
    replay.report.acked_records = replay.acked.values().map(Vec::len).sum();
    Ok(replay.report)
}

type Located = ((PathBuf, usize), TraceStep);

fn read_dir(dir: &Path) -> Result<Vec<Located>, Failure> {
    let fail = |at: &Path, what: String| Failure {
        at: at.display().to_string(),
        what,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, format!("cannot read: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fail(dir, "no *.trace files".to_string()));
    }
    let mut steps = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| fail(&file, format!("cannot read: {e}")))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let step: TraceStep = serde_json::from_str(line).map_err(|e| Failure {
                at: format!("{}:{}", file.display(), i + 1),
                what: format!("not a trace step: {e}"),
            })?;
            steps.push(((file.clone(), i + 1), step));
        }
    }
    // Each actor's steps are stamped under its lock, so this order keeps every actor's own
    // order and puts every receipt after its send.
    steps.sort_by(|a, b| (a.1.at_ns, &a.0).cmp(&(b.1.at_ns, &b.0)));
    Ok(steps)
}

impl Replay {
    fn step(&mut self, step: TraceStep) -> Result<(), String> {
        let node = step.node;
        match step.step {
            Step::Replica {
                topic,
                partition,
                input,
                effects,
            } => {
                self.report.replica_steps += 1;
                self.replica_step(node, &topic, partition, input, &effects)?;
                self.check(&topic, partition)
            }
            Step::Quorum {
                input,
                answer,
                effects,
            } => {
                self.report.controller_steps += 1;
                let touched = self.quorum_step(node, input, &answer, &effects)?;
                for (topic, partition) in touched {
                    self.check(&topic, partition)?;
                }
                Ok(())
            }
        }
    }

    fn replica_step(
        &mut self,
        node: i32,
        topic: &str,
        partition: i32,
        input: ReplicaInput,
        recorded: &[Effect<ReplicaTimer, Msg>],
    ) -> Result<(), String> {
        let key = (node, topic.to_string(), partition);
        let name = format!("node {node}, replica of {topic}-{partition}");
        let actual = match input {
            ReplicaInput::Create { config } => {
                let log = MemoryLog::new(LogConfig::default());
                let replica = Replica::new(Arc::new(config), log);
                self.slots.insert(
                    key.clone(),
                    Slot {
                        replica,
                        records: BTreeMap::new(),
                        led: None,
                    },
                );
                Vec::new()
            }
            ReplicaInput::Recover {
                config,
                log_end_offset,
                high_watermark,
                epochs,
                incarnation,
            } => {
                let Some(slot) = self.slots.get(&key) else {
                    return Err(format!(
                        "{name}: recovered, but the trace never created it (record from the \
                         cluster's first start)"
                    ));
                };
                let mut log = slot.replica.log().clone();
                let kept = log.log_end_offset();
                if log_end_offset > kept {
                    return Err(format!(
                        "{name}: recovered a log ending at {log_end_offset}, but only {kept} \
                         offsets were ever appended to it"
                    ));
                }
                log.truncate_to(log_end_offset)
                    .map_err(|e| format!("{name}: {e}"))?;
                let durable = Durable {
                    epochs: LeaderEpochCache::recovered(epochs, log_end_offset),
                    log,
                    high_watermark,
                    incarnation,
                };
                let (replica, out) = Replica::recover(Arc::new(config), durable)
                    .map_err(|e| format!("{name}: {e}"))?;
                let slot = self.slots.get_mut(&key).expect("checked above");
                slot.replica = replica;
                slot.records.retain(|&o, _| o < log_end_offset);
                slot.led = None;
                out
            }
            input => {
                let Some(slot) = self.slots.get_mut(&key) else {
                    return Err(format!("{name}: a step before the replica was created"));
                };
                if let ReplicaInput::Message {
                    from: Node::Client(client),
                    msg:
                        Msg::Produce {
                            correlation_id,
                            acks: Acks::All,
                            records,
                        },
                    ..
                } = &input
                {
                    self.produces.insert(
                        (node, topic.to_string(), partition, *client, *correlation_id),
                        PendingProduce {
                            records: records.clone(),
                        },
                    );
                }
                let replica = &mut slot.replica;
                match input {
                    ReplicaInput::Message { from, msg, now_ms } => {
                        replica.on_message(from, msg, now_ms)
                    }
                    ReplicaInput::Timer { timer, now_ms } => replica.on_timer(timer, now_ms),
                    ReplicaInput::Disconnect { peer } => replica.on_disconnect(peer),
                    ReplicaInput::ExpireFetch { follower } => replica.expire_parked_fetch(follower),
                    ReplicaInput::Create { .. } | ReplicaInput::Recover { .. } => {
                        unreachable!("handled above")
                    }
                }
            }
        };
        if actual != recorded {
            return Err(format!(
                "{name}: the actor's effects differ from the node's: {}",
                first_difference(&actual, recorded)
            ));
        }
        let slot = self.slots.get_mut(&key).expect("created above");
        refresh_records(slot);
        if let Role::Leader(l) = slot.replica.role() {
            let hw = slot.replica.high_watermark();
            if let Some((epoch, before)) = slot.led
                && epoch == l.leader_epoch
                && hw < before
            {
                return Err(format!(
                    "leader_hw_monotonic violated: {name} leads epoch {epoch} and its high \
                     watermark went from {before} to {hw}"
                ));
            }
            slot.led = Some((l.leader_epoch, hw));
        }
        // Acknowledged acks=all produces: their records, at the offsets the answer names.
        for effect in recorded {
            if let Effect::Send {
                to: Node::Client(client),
                msg:
                    Msg::ProduceResponse {
                        correlation_id,
                        error_code: Errors::None,
                        base_offset,
                        ..
                    },
            } = effect
            {
                let produce_key = (node, topic.to_string(), partition, *client, *correlation_id);
                if let Some(produce) = self.produces.remove(&produce_key) {
                    let acked = self
                        .acked
                        .entry((topic.to_string(), partition))
                        .or_default();
                    for (i, record) in records_in(&produce.records).into_iter().enumerate() {
                        acked.push((record, base_offset + i as i64));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs one controller step; returns the partitions whose state it changed.
    fn quorum_step(
        &mut self,
        node: i32,
        input: QuorumInput,
        answer: &str,
        recorded: &[Effect<surety_core::cluster::ClusterTimer, MetadataRecord>],
    ) -> Result<Vec<(String, i32)>, String> {
        let name = format!("controller {node}");
        if let QuorumInput::Open { config, records } = &input {
            let committed = self
                .quorums
                .remove(&node)
                .map(|(_, committed)| committed)
                .unwrap_or_default();
            let records = usize::try_from(*records).unwrap_or(usize::MAX);
            if records > committed.len() {
                return Err(format!(
                    "{name}: opened over {records} metadata records, but the trace committed \
                     only {}",
                    committed.len()
                ));
            }
            self.unclean |= config.unclean_leader_election_enable;
            let mut quorum = QuorumController::new(Arc::new(config.clone()));
            for (offset, record) in committed[..records].iter().enumerate() {
                quorum.replay(offset as i64, record);
            }
            self.quorums
                .insert(node, (quorum, committed[..records].to_vec()));
            return Ok(Vec::new());
        }
        let Some((quorum, committed)) = self.quorums.get_mut(&node) else {
            return Err(format!("{name}: a step before it was opened"));
        };
        let (actual_answer, actual) = match input {
            QuorumInput::Open { .. } => unreachable!("handled above"),
            QuorumInput::Start => (format!("{:?}", ()), quorum.start()),
            QuorumInput::RegisterBroker {
                broker_id,
                host,
                port,
            } => {
                let (a, out) = quorum.register_broker(broker_id, host, port);
                (format!("{a:?}"), out)
            }
            QuorumInput::Heartbeat {
                broker_id,
                broker_epoch,
                want_fence,
            } => {
                let (a, out) = quorum.heartbeat(broker_id, broker_epoch, want_fence);
                (format!("{a:?}"), out)
            }
            QuorumInput::AlterPartition {
                broker_id,
                broker_epoch,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => {
                let (a, out) = quorum.alter_partition(
                    broker_id,
                    broker_epoch,
                    topic_id,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    new_isr,
                );
                (format!("{a:?}"), out)
            }
            QuorumInput::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => {
                let (a, out) = quorum.allocate_producer_ids(broker_id, broker_epoch);
                (format!("{a:?}"), out)
            }
            QuorumInput::CreateTopics(topics) => {
                let (a, out) = quorum.create_topics(&topics);
                (format!("{a:?}"), out)
            }
            QuorumInput::CreatePartitions { name, count } => {
                let (a, out) = quorum.create_partitions(&name, count);
                (format!("{a:?}"), out)
            }
            QuorumInput::DeleteTopics(names) => {
                let (a, out) = quorum.delete_topics(&names);
                (format!("{a:?}"), out)
            }
            QuorumInput::Timer(timer) => (format!("{:?}", ()), quorum.on_timer(timer)),
        };
        if actual != recorded {
            return Err(format!(
                "{name}: the actor's effects differ from the node's: {}",
                first_difference(&actual, recorded)
            ));
        }
        if actual_answer != answer {
            return Err(format!(
                "{name}: the actor answered {actual_answer}, the node recorded {answer}"
            ));
        }
        let mut touched = Vec::new();
        let unclean = self.unclean || quorum_allows_unclean(committed);
        for effect in recorded {
            if let Effect::Send { msg: record, .. } = effect {
                if let MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    state,
                } = record
                    && let Some(before) = self.decisions.get(&(*topic_id, *partition))
                    && state.leader_epoch > before.leader_epoch
                    && let Some(leader) = state.leader
                    && !before.isr.contains(&leader)
                    && !unclean
                {
                    return Err(format!(
                        "leader_elected_from_isr violated: {name} elected broker {leader} \
                         for partition {partition}, outside the ISR {:?}",
                        before.isr
                    ));
                }
                if let MetadataRecord::Partition {
                    topic_id,
                    partition,
                    state,
                    ..
                }
                | MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    state,
                } = record
                {
                    self.decisions
                        .insert((*topic_id, *partition), state.clone());
                }
                committed.push(record.clone());
                match record {
                    MetadataRecord::Partition {
                        topic_id,
                        partition,
                        ..
                    }
                    | MetadataRecord::PartitionChange {
                        topic_id,
                        partition,
                        ..
                    } => {
                        if let Some(topic) = quorum.image().topic_by_id(topic_id) {
                            let key = (topic.name.clone(), *partition);
                            if matches!(record, MetadataRecord::Partition { .. }) {
                                // A new topic (perhaps a name used before): nothing acked yet.
                                self.acked.remove(&key);
                            }
                            touched.push(key);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(touched)
    }

    /// Evaluates the safety properties on `topic`-`partition` as it is now.
    fn check(&mut self, topic: &str, partition: i32) -> Result<(), String> {
        let decided = self.quorums.values().find_map(|(q, _)| {
            q.image()
                .partition(topic, partition)
                .map(|p| p.state.clone())
        });
        let Some(decided) = decided else {
            return Ok(());
        };
        let replicas: Vec<ReplicaView<'_, RecordId>> = self
            .slots
            .iter()
            .filter(|((_, t, p), _)| t == topic && *p == partition)
            .map(|((node, _, _), slot)| ReplicaView {
                id: *node as u32,
                replica: &slot.replica,
                down: false,
                records: Cow::Borrowed(&slot.records),
            })
            .collect();
        let view = PartitionView {
            replicas,
            decided: &decided,
            acked: self
                .acked
                .get(&(topic.to_string(), partition))
                .cloned()
                .unwrap_or_default(),
        };
        self.report.checks += 1;
        for property in safety::<RecordId>() {
            if !(property.holds)(&view) {
                return Err(format!(
                    "{} violated on {topic}-{partition}: controller {decided:?}; {}",
                    property.name,
                    describe(&view)
                ));
            }
        }
        Ok(())
    }
}

/// Brings a slot's record map level with its log: drops what was cut, parses what was added.
fn refresh_records(slot: &mut Slot) {
    let log = slot.replica.log();
    let end = log.log_end_offset();
    slot.records.retain(|&o, _| o < end);
    let from = slot
        .records
        .keys()
        .next_back()
        .map_or(log.log_start_offset(), |o| o + 1);
    if from >= end {
        return;
    }
    let Ok(bytes) = log.read(from, usize::MAX, None) else {
        return;
    };
    for batch in batches(bytes).flatten() {
        let Ok(records) = batch.records() else {
            continue;
        };
        for record in records.flatten() {
            if record.offset >= from {
                slot.records
                    .insert(record.offset, (record.key.clone(), record.value.clone()));
            }
        }
    }
}

/// The records of a produced batch, in order.
fn records_in(bytes: &Bytes) -> Vec<RecordId> {
    let mut out = Vec::new();
    for batch in batches(bytes.clone()).flatten() {
        if let Ok(records) = batch.records() {
            out.extend(records.flatten().map(|r| (r.key, r.value)));
        }
    }
    out
}

/// Whether an unclean election could be legitimate: some topic enables it (the cluster-wide
/// setting is checked at `Open`). Conservative: any topic override turns the check off.
fn quorum_allows_unclean(committed: &[MetadataRecord]) -> bool {
    committed.iter().any(|r| {
        matches!(r, MetadataRecord::Topic { configs, .. }
            if configs.iter().any(|(k, v)| k == "unclean.leader.election.enable" && v == "true"))
    })
}

fn describe(view: &PartitionView<'_, RecordId>) -> String {
    view.replicas
        .iter()
        .map(|r| {
            let role = match r.replica.role() {
                Role::Leader(l) => format!("leader of epoch {} isr {:?}", l.leader_epoch, l.isr),
                Role::Follower {
                    leader,
                    leader_epoch,
                } => format!("follower of {leader:?} in epoch {leader_epoch}"),
                Role::Unattached => "unattached".to_string(),
            };
            format!(
                "broker {}: {role}, log end {}, hw {}",
                r.id,
                r.replica.log().log_end_offset(),
                r.replica.high_watermark()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn first_difference<T: fmt::Debug + PartialEq>(actual: &[T], recorded: &[T]) -> String {
    for (i, (a, r)) in actual.iter().zip(recorded).enumerate() {
        if a != r {
            return format!("effect {i}: recorded {r:?}, replayed {a:?}");
        }
    }
    format!(
        "recorded {} effects, replayed {} (recorded {:?}, replayed {:?})",
        recorded.len(),
        actual.len(),
        recorded.get(actual.len()),
        actual.get(recorded.len())
    )
}
