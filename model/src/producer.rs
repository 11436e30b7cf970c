//! The producer's ordering and idempotence, model-checked: core's [`Sender`] actor sends a
//! few one-record batches to a broker over one connection; the broker appends them with core's
//! idempotent append ([`ProducerStateManager::append`], the step the real broker runs) and may
//! fail a batch with `REQUEST_TIMED_OUT` before or after appending it, answer twice, or lose the
//! connection with requests and answers in flight. Time is two instants: before and after the
//! `delivery.timeout.ms` of the first batches has passed; late batches are created at the
//! second, and a sender whose sequenced batch failed asks for a new producer id.
//!
//! Properties (`specs/producer.md`):
//! - `no_duplicates`: no batch is in the log twice.
//! - `partition_order_preserved`: each partition's log holds its batches in the order they were
//!   produced.
//! - `acknowledged_batches_are_written`: a batch acknowledged with an offset is in the log there.
//! - `every_batch_acknowledged` (sometimes): a run where every batch is written and acknowledged.
//! - `written_under_a_new_producer_id` (sometimes): a run where the sender gave up its producer
//!   id and a later batch was then written and acknowledged.
//!
//! With idempotence on, the safety properties hold for any `max.in.flight` up to 5. The broken
//! variants must each break one: `no-idempotence` (Kafka's behaviour with
//! `enable.idempotence=false` and two requests in flight) `partition_order_preserved`, as a
//! batch that timed out is retried after its successor was written; `resend-after-reset`
//! `no_duplicates`; `duplicate-at-log-end` `acknowledged_batches_are_written`.

use std::collections::{BTreeMap, VecDeque};

use clap::ValueEnum;
use stateright::{Model, Property};
use surety_core::errors::Errors;
use surety_core::producer::sender::{BatchOutcome, PartitionResult};
use surety_core::producer::{BatchId, BrokenSender, SendRequest, Sender, SenderConfig};
use surety_core::producer_state::{
    AppendError, DuplicateAnswer, IdempotentAppend, Landed, ProducerBatch, ProducerStateManager,
};

/// The producer id the broker hands out.
const PRODUCER_ID: i64 = 1000;
/// The one broker's id: it leads every partition.
const BROKER: i32 = 1;

/// Which producer to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum ProducerVariant {
    /// `enable.idempotence=true` (Kafka's default since 3.0).
    Idempotent,
    /// `enable.idempotence=false`: retries may reorder (with more than one request in flight)
    /// and duplicate. Must fail `partition_order_preserved`.
    NoIdempotence,
    /// A sender that, after giving up its producer id, re-sends batches it had sent before
    /// under the new id. Must fail `no_duplicates`.
    ResendAfterReset,
    /// A broker that answers a re-sent batch it already holds with its log end offset instead
    /// of the batch's own. Must fail `acknowledged_batches_are_written`.
    DuplicateAtLogEnd,
}

/// The bound of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProducerBound {
    /// The producer.
    pub variant: ProducerVariant,
    /// `max.in.flight.requests.per.connection`.
    pub max_in_flight: usize,
    /// One-record batches produced, spread over the partitions in turn.
    pub batches: u8,
    /// Partitions.
    pub partitions: u8,
    /// `retries` per batch.
    pub retries: u32,
    /// Batches the broker may fail with `REQUEST_TIMED_OUT` (before or after appending).
    pub timeouts: u8,
    /// Times the connection may break.
    pub disconnects: u8,
    /// Answers the broker may deliver twice.
    pub duplicate_answers: u8,
    /// Batches created after the first batches' `delivery.timeout.ms` has passed (0: time
    /// never passes in the run).
    pub late_batches: u8,
}

impl ProducerBound {
    /// The default bound for a variant: idempotent with 5 in flight, or the smallest bound at
    /// which the broken variant fails.
    pub fn for_variant(variant: ProducerVariant) -> Self {
        // Two batches to one partition, two in flight, one time-out: where a retry can
        // overtake or repeat.
        let small = ProducerBound {
            variant,
            max_in_flight: 2,
            batches: 2,
            partitions: 1,
            retries: 1,
            timeouts: 1,
            disconnects: 0,
            duplicate_answers: 0,
            late_batches: 0,
        };
        match variant {
            ProducerVariant::Idempotent => ProducerBound {
                variant,
                max_in_flight: 5,
                batches: 5,
                partitions: 2,
                retries: 3,
                timeouts: 2,
                disconnects: 2,
                duplicate_answers: 1,
                late_batches: 1,
            },
            ProducerVariant::NoIdempotence | ProducerVariant::DuplicateAtLogEnd => small,
            ProducerVariant::ResendAfterReset => ProducerBound {
                retries: 2,
                timeouts: 2,
                late_batches: 1,
                ..small
            },
        }
    }

    /// The property the variant must break, if it is a broken one.
    pub fn expected_violation(&self) -> Option<&'static str> {
        match self.variant {
            ProducerVariant::Idempotent => None,
            ProducerVariant::NoIdempotence => Some("partition_order_preserved"),
            ProducerVariant::ResendAfterReset => Some("no_duplicates"),
            ProducerVariant::DuplicateAtLogEnd => Some("acknowledged_batches_are_written"),
        }
    }
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProducerState {
    sender: Sender<u8>,
    /// Requests on the wire to the broker, in order (one TCP connection).
    requests: VecDeque<SendRequest<u8>>,
    /// Answers on the wire to the producer, in order.
    answers: VecDeque<(u64, Vec<(BatchId, PartitionResult)>)>,
    /// Each partition's log: batch ids in offset order.
    logs: BTreeMap<u8, Vec<BatchId>>,
    /// The broker's idempotent-producer state per partition.
    producer_states: BTreeMap<u8, ProducerStateManager>,
    /// What the producer learned of each batch.
    outcomes: BTreeMap<BatchId, BatchOutcome>,
    timeouts_left: u8,
    disconnects_left: u8,
    duplicates_left: u8,
    /// Whether the first batches' `delivery.timeout.ms` has passed (the clock reads 1).
    late: bool,
    /// Producer ids handed out after the first.
    resets: u8,
}

/// What can happen next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProducerAction {
    /// The sender puts its next request on the wire.
    Send,
    /// The broker handles the oldest request; `timeout` makes it fail the first batch with
    /// `REQUEST_TIMED_OUT` (`Some(true)`: after appending it, `Some(false)`: before).
    Handle {
        /// The injected time-out, if any.
        timeout: Option<bool>,
    },
    /// The producer reads the oldest answer (twice, if `duplicate`).
    Answer {
        /// Whether the broker sent it twice.
        duplicate: bool,
    },
    /// The connection breaks: everything in flight both ways is lost.
    Disconnect,
    /// The first batches' `delivery.timeout.ms` passes; the late batches are created.
    DeliveryTimeoutPasses,
    /// The sender, having given up its producer id, gets a new one from the broker.
    InitProducerId,
}

impl ProducerState {
    /// The time the sender is told: 0, or 1 once the first batches' delivery timeout passed.
    fn clock(&self) -> i64 {
        i64::from(self.late)
    }
}

/// The model.
pub struct ProducerModel {
    /// Its bound.
    pub bound: ProducerBound,
}

impl ProducerBound {
    /// The model of this bound.
    pub fn into_model(self) -> ProducerModel {
        ProducerModel { bound: self }
    }

    fn partition_of(&self, batch: BatchId) -> u8 {
        (batch % u64::from(self.partitions.max(1))) as u8
    }
}

impl ProducerModel {
    fn handle(&self, state: &mut ProducerState, timeout: Option<bool>) {
        let request = state.requests.pop_front().expect("a request to handle");
        let mut results = Vec::new();
        for (i, batch) in request.batches.iter().enumerate() {
            let injected = if i == 0 { timeout } else { None };
            if injected == Some(false) {
                results.push((batch.id, Err(Errors::RequestTimedOut.code())));
                continue;
            }
            let log = state.logs.entry(batch.partition).or_default();
            let producers = state.producer_states.entry(batch.partition).or_default();
            let identity = match batch.producer {
                Some((id, epoch, sequence)) => ProducerBatch {
                    producer_id: id,
                    producer_epoch: epoch,
                    first_seq: sequence,
                    last_seq: sequence,
                },
                None => ProducerBatch {
                    producer_id: -1,
                    producer_epoch: -1,
                    first_seq: -1,
                    last_seq: -1,
                },
            };
            // The broker's own step (core's), so the model checks what the broker runs; the
            // broken variant is that step's deliberately wrong duplicate answer.
            let duplicates = if self.bound.variant == ProducerVariant::DuplicateAtLogEnd {
                DuplicateAnswer::LogEnd
            } else {
                DuplicateAnswer::FirstWrite
            };
            let log_end = log.len() as i64;
            let result = match producers.append(&identity, duplicates, log_end, || {
                log.push(batch.id);
                let landed = Landed {
                    first_offset: log_end,
                    last_offset: log_end,
                    max_timestamp: 0,
                };
                Ok::<_, std::convert::Infallible>((log_end, landed))
            }) {
                Ok(IdempotentAppend::Appended(offset)) => Ok(offset),
                Ok(IdempotentAppend::Duplicate(first)) => Ok(first.first_offset),
                Err(AppendError::Sequence(e)) => Err(e.error_code()),
                Err(AppendError::Append(never)) => match never {},
            };
            results.push((
                batch.id,
                if injected == Some(true) {
                    Err(Errors::RequestTimedOut.code())
                } else {
                    result
                },
            ));
        }
        state.answers.push_back((request.request_id, results));
    }
}

impl Model for ProducerModel {
    type State = ProducerState;
    type Action = ProducerAction;

    fn init_states(&self) -> Vec<ProducerState> {
        let b = self.bound;
        let mut sender = Sender::new(SenderConfig {
            delivery_timeout_ms: 1,
            retry_backoff_ms: 0,
            broken: (b.variant == ProducerVariant::ResendAfterReset)
                .then_some(BrokenSender::ResendAfterReset),
            ..SenderConfig::new(
                b.max_in_flight,
                b.variant != ProducerVariant::NoIdempotence,
                b.retries,
            )
        });
        if sender.needs_producer_id() {
            sender.on_producer_id(PRODUCER_ID, 0);
        }
        for id in 0..u64::from(b.batches) {
            sender.enqueue(b.partition_of(id), id, 1, 0);
        }
        vec![ProducerState {
            sender,
            requests: VecDeque::new(),
            answers: VecDeque::new(),
            logs: BTreeMap::new(),
            producer_states: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            timeouts_left: b.timeouts,
            disconnects_left: b.disconnects,
            duplicates_left: b.duplicate_answers,
            late: false,
            resets: 0,
        }]
    }

    fn actions(&self, state: &ProducerState, actions: &mut Vec<ProducerAction>) {
        if state
            .sender
            .clone()
            .poll_send(BROKER, |_| true, state.clock())
            .is_some()
        {
            actions.push(ProducerAction::Send);
        }
        if !state.late && self.bound.late_batches > 0 {
            actions.push(ProducerAction::DeliveryTimeoutPasses);
        }
        if state.sender.needs_producer_id() {
            actions.push(ProducerAction::InitProducerId);
        }
        if !state.requests.is_empty() {
            actions.push(ProducerAction::Handle { timeout: None });
            if state.timeouts_left > 0 {
                actions.push(ProducerAction::Handle {
                    timeout: Some(true),
                });
                actions.push(ProducerAction::Handle {
                    timeout: Some(false),
                });
            }
        }
        if !state.answers.is_empty() {
            actions.push(ProducerAction::Answer { duplicate: false });
            if state.duplicates_left > 0 {
                actions.push(ProducerAction::Answer { duplicate: true });
            }
        }
        if state.disconnects_left > 0
            && (!state.requests.is_empty() || state.sender.in_flight() > 0)
        {
            actions.push(ProducerAction::Disconnect);
        }
    }

    fn next_state(&self, last: &ProducerState, action: ProducerAction) -> Option<ProducerState> {
        let mut state = last.clone();
        fn record(state: &mut ProducerState, done: Vec<surety_core::producer::Completion>) {
            for c in done {
                state.outcomes.insert(c.id, c.outcome);
            }
        }
        match action {
            ProducerAction::Send => {
                let request = state.sender.poll_send(BROKER, |_| true, state.clock())?;
                state.requests.push_back(request);
            }
            ProducerAction::DeliveryTimeoutPasses => {
                state.late = true;
                let b = self.bound;
                for id in u64::from(b.batches)..u64::from(b.batches + b.late_batches) {
                    state.sender.enqueue(b.partition_of(id), id, 1, 1);
                }
                let done = state.sender.expire(1);
                record(&mut state, done);
            }
            ProducerAction::InitProducerId => {
                state.resets += 1;
                state
                    .sender
                    .on_producer_id(PRODUCER_ID + i64::from(state.resets), 0);
            }
            ProducerAction::Handle { timeout } => {
                if timeout.is_some() {
                    state.timeouts_left -= 1;
                }
                self.handle(&mut state, timeout);
            }
            ProducerAction::Answer { duplicate } => {
                let (request_id, results) = state.answers.pop_front()?;
                let now = state.clock();
                let done = state.sender.on_response(request_id, &results, now);
                record(&mut state, done);
                if duplicate {
                    state.duplicates_left -= 1;
                    let again = state.sender.on_response(request_id, &results, now);
                    record(&mut state, again);
                }
            }
            ProducerAction::Disconnect => {
                state.disconnects_left -= 1;
                state.requests.clear();
                state.answers.clear();
                let done = state.sender.on_disconnect(BROKER, state.clock());
                record(&mut state, done);
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no_duplicates", |_, s: &ProducerState| {
                s.logs.values().all(|log| {
                    let mut seen = log.clone();
                    seen.sort_unstable();
                    seen.windows(2).all(|w| w[0] != w[1])
                })
            }),
            Property::always("partition_order_preserved", |_, s: &ProducerState| {
                s.logs.values().all(|log| {
                    // First occurrences in production order (duplicates are the other property).
                    let mut firsts: Vec<BatchId> = Vec::new();
                    for id in log {
                        if !firsts.contains(id) {
                            firsts.push(*id);
                        }
                    }
                    firsts.windows(2).all(|w| w[0] < w[1])
                })
            }),
            Property::always(
                "acknowledged_batches_are_written",
                |m: &ProducerModel, s: &ProducerState| {
                    s.outcomes.iter().all(|(id, outcome)| match outcome {
                        BatchOutcome::Written(offset) if *offset >= 0 => {
                            s.logs
                                .get(&m.bound.partition_of(*id))
                                .and_then(|log| log.get(*offset as usize))
                                == Some(id)
                        }
                        _ => true,
                    })
                },
            ),
            Property::sometimes(
                "written_under_a_new_producer_id",
                |m: &ProducerModel, s: &ProducerState| {
                    s.resets > 0
                        && s.outcomes.iter().any(|(id, o)| {
                            *id >= u64::from(m.bound.batches)
                                && matches!(o, BatchOutcome::Written(_))
                        })
                },
            ),
            Property::sometimes(
                "every_batch_acknowledged",
                |m: &ProducerModel, s: &ProducerState| {
                    s.outcomes.len() == usize::from(m.bound.batches + m.bound.late_batches)
                        && s.outcomes
                            .values()
                            .all(|o| matches!(o, BatchOutcome::Written(_)))
                },
            ),
        ]
    }
}

/// A counterexample, one line per step, with the logs after it.
pub fn describe_path(path: &[(ProducerState, Option<ProducerAction>)]) -> String {
    let mut out = String::new();
    for (i, window) in path.windows(2).enumerate() {
        let (_, action) = &window[0];
        let (after, _) = &window[1];
        if let Some(action) = action {
            out.push_str(&format!(
                "{:>3}. {action:?}\n     logs {:?}, outcomes {:?}\n",
                i + 1,
                after.logs,
                after.outcomes
            ));
        }
    }
    out
}
