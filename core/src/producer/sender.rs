//! The producer's sender logic as a deterministic actor: which drained batches go into the next
//! produce request, how many requests may be in flight on the connection
//! (`max.in.flight.requests.per.connection`), and what happens to a batch when its answer comes
//! back, fails, or never comes (the connection broke). The client's network loop and the
//! `check producer` model drive this same code.
//!
//! Batches are known here by id, partition and record count only; the driver keeps their bytes.
//!
//! The rules are Kafka's:
//! - A batch is retried (up to `retries` times) after a retriable error or a broken connection;
//!   other errors fail it.
//! - Without idempotence a retried batch simply goes back to the front of its partition's queue:
//!   if a later batch of the partition was already in flight and succeeds, the partition's order
//!   is lost, and a batch the broker appended before its answer was lost is appended again. This
//!   is Kafka's documented behaviour, and the model shows both.
//! - With idempotence (`enable.idempotence`) every batch gets a sequence number the first time
//!   it is sent (after the producer id is known), keeps it across retries, and retried batches
//!   are re-queued in sequence order. A batch that already has a sequence is only re-sent when no
//!   other batch of its partition is in flight, so it reaches the broker before its successors;
//!   the broker (`crate::producer_state`) answers a re-sent batch it already holds with its
//!   original offset, and a successor that overtook a failed batch with
//!   `OUT_OF_ORDER_SEQUENCE_NUMBER`, which is retriable while an earlier batch is outstanding.
//!   `DUPLICATE_SEQUENCE_NUMBER` means the batch was written before: success without an offset.

use std::collections::{BTreeMap, VecDeque};

use super::BatchId;

/// Kafka error codes the sender distinguishes.
pub mod codes {
    /// `NOT_LEADER_OR_FOLLOWER`.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// `REQUEST_TIMED_OUT`.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// `NETWORK_EXCEPTION`: the connection broke with the request in flight.
    pub const NETWORK_EXCEPTION: i16 = 13;
    /// `NOT_ENOUGH_REPLICAS`.
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`.
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// `DUPLICATE_SEQUENCE_NUMBER`.
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
}

/// The sender's settings, under Kafka's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SenderConfig {
    /// `max.in.flight.requests.per.connection` (at most 5 with idempotence, as in Kafka).
    pub max_in_flight: usize,
    /// `enable.idempotence`.
    pub idempotence: bool,
    /// `retries`: how many times one batch may be re-sent.
    pub retries: u32,
}

/// One batch in a produce request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutgoingBatch<P> {
    /// Its partition.
    pub partition: P,
    /// Its id.
    pub id: BatchId,
    /// Producer id, epoch and first sequence to stamp on it, with idempotence.
    pub producer: Option<(i64, i16, i32)>,
}

/// A produce request the driver must send.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SendRequest<P> {
    /// Ties the response to the request.
    pub request_id: u64,
    /// At most one batch per partition.
    pub batches: Vec<OutgoingBatch<P>>,
}

/// The final fate of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchOutcome {
    /// Written at this base offset (-1: written earlier, offset unknown, as after
    /// `DUPLICATE_SEQUENCE_NUMBER`).
    Written(i64),
    /// Failed with this Kafka error code.
    Failed(i16),
}

/// A batch whose fate is known: the driver completes its records' futures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Completion {
    /// The batch.
    pub id: BatchId,
    /// What happened to it.
    pub outcome: BatchOutcome,
}

/// A batch's answer in a produce response: `Ok(base offset)` or `Err(error code)`.
pub type PartitionResult = Result<i64, i16>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Pending {
    id: BatchId,
    records: i32,
    sequence: Option<i32>,
    attempts: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct PartitionQueue {
    next_sequence: i32,
    waiting: VecDeque<Pending>,
    in_flight: usize,
}

/// The sender's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sender<P: Ord> {
    config: SenderConfig,
    producer: Option<(i64, i16)>,
    partitions: BTreeMap<P, PartitionQueue>,
    in_flight: BTreeMap<u64, Vec<(P, Pending)>>,
    next_request_id: u64,
}

impl<P: Ord + Clone> Sender<P> {
    /// A sender with nothing to send. With idempotence it sends nothing until
    /// [`on_producer_id`](Self::on_producer_id).
    pub fn new(config: SenderConfig) -> Self {
        Sender {
            config,
            producer: None,
            partitions: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_request_id: 0,
        }
    }

    /// Whether the driver must obtain a producer id (InitProducerId) first.
    pub fn needs_producer_id(&self) -> bool {
        self.config.idempotence && self.producer.is_none()
    }

    /// The producer id and epoch from InitProducerId.
    pub fn on_producer_id(&mut self, producer_id: i64, epoch: i16) {
        self.producer = Some((producer_id, epoch));
    }

    /// A batch drained from the accumulator, queued behind its partition's earlier batches.
    pub fn enqueue(&mut self, partition: P, id: BatchId, records: i32) {
        self.partitions
            .entry(partition)
            .or_default()
            .waiting
            .push_back(Pending {
                id,
                records,
                sequence: None,
                attempts: 0,
            });
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.partitions.values().all(|q| q.waiting.is_empty())
    }

    /// The next produce request, if the in-flight limit allows one and a batch may go: at most
    /// one batch per partition, each partition's first sendable batch.
    pub fn poll_send(&mut self) -> Option<SendRequest<P>> {
        if self.in_flight.len() >= self.config.max_in_flight.max(1) || self.needs_producer_id() {
            return None;
        }
        let idempotence = self.config.idempotence;
        let producer = self.producer;
        let mut batches = Vec::new();
        let mut sent = Vec::new();
        for (partition, queue) in self.partitions.iter_mut() {
            let Some(front) = queue.waiting.front() else {
                continue;
            };
            // A re-sent batch must reach the broker before its successors: it waits until
            // nothing of its partition is in flight.
            if idempotence && front.sequence.is_some() && queue.in_flight > 0 {
                continue;
            }
            let mut pending = queue.waiting.pop_front().expect("checked");
            if idempotence && pending.sequence.is_none() {
                pending.sequence = Some(queue.next_sequence);
                queue.next_sequence =
                    crate::producer_state::increment_sequence(queue.next_sequence, pending.records);
            }
            queue.in_flight += 1;
            batches.push(OutgoingBatch {
                partition: partition.clone(),
                id: pending.id,
                producer: match (producer, pending.sequence) {
                    (Some((id, epoch)), Some(sequence)) => Some((id, epoch, sequence)),
                    _ => None,
                },
            });
            sent.push((partition.clone(), pending));
        }
        if batches.is_empty() {
            return None;
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.in_flight.insert(request_id, sent);
        Some(SendRequest {
            request_id,
            batches,
        })
    }

    /// The broker's answer to a request: one result per batch, by batch id. An answer to a
    /// request not in flight (a duplicate, or one after the connection broke) is ignored.
    pub fn on_response(
        &mut self,
        request_id: u64,
        results: &[(BatchId, PartitionResult)],
    ) -> Vec<Completion> {
        let Some(sent) = self.in_flight.remove(&request_id) else {
            return Vec::new();
        };
        let mut completions = Vec::new();
        for (partition, pending) in sent {
            if let Some(queue) = self.partitions.get_mut(&partition) {
                queue.in_flight -= 1;
            }
            let result = results
                .iter()
                .find(|(id, _)| *id == pending.id)
                .map_or(Err(codes::NETWORK_EXCEPTION), |(_, r)| *r);
            match result {
                Ok(base_offset) => completions.push(Completion {
                    id: pending.id,
                    outcome: BatchOutcome::Written(base_offset),
                }),
                Err(codes::DUPLICATE_SEQUENCE_NUMBER) if self.config.idempotence => completions
                    .push(Completion {
                        id: pending.id,
                        outcome: BatchOutcome::Written(-1),
                    }),
                Err(code) => completions.extend(self.retry_or_fail(partition, pending, code)),
            }
        }
        completions
    }

    /// The connection broke: every request in flight is lost (the broker may or may not have
    /// written its batches). Each batch is retried or failed.
    pub fn on_disconnect(&mut self) -> Vec<Completion> {
        let lost: Vec<(P, Pending)> = std::mem::take(&mut self.in_flight)
            .into_values()
            .flatten()
            .collect();
        let mut completions = Vec::new();
        // Oldest requests first, so re-queued batches keep their order.
        for (partition, pending) in lost {
            if let Some(queue) = self.partitions.get_mut(&partition) {
                queue.in_flight -= 1;
            }
            completions.extend(self.retry_or_fail(partition, pending, codes::NETWORK_EXCEPTION));
        }
        completions
    }

    fn retry_or_fail(
        &mut self,
        partition: P,
        mut pending: Pending,
        code: i16,
    ) -> Option<Completion> {
        let retriable = matches!(
            code,
            codes::NOT_LEADER_OR_FOLLOWER
                | codes::REQUEST_TIMED_OUT
                | codes::NETWORK_EXCEPTION
                | codes::NOT_ENOUGH_REPLICAS
                | codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | codes::UNKNOWN_TOPIC_OR_PARTITION
        ) || (code == codes::OUT_OF_ORDER_SEQUENCE_NUMBER
            && self.config.idempotence
            && self.has_earlier_outstanding(&partition, &pending));
        if !retriable || pending.attempts >= self.config.retries {
            return Some(Completion {
                id: pending.id,
                outcome: BatchOutcome::Failed(code),
            });
        }
        pending.attempts += 1;
        let idempotence = self.config.idempotence;
        let queue = self.partitions.entry(partition).or_default();
        if idempotence {
            // Back among the waiting batches in sequence order (fresh ones have none yet and
            // come after every re-sent one).
            let at = queue
                .waiting
                .iter()
                .position(|w| w.sequence.is_none_or(|s| Some(s) > pending.sequence))
                .unwrap_or(queue.waiting.len());
            queue.waiting.insert(at, pending);
        } else {
            queue.waiting.push_front(pending);
        }
        None
    }

    /// Whether a batch of `partition` with a lower sequence than `pending` is still waiting or
    /// in flight: then an out-of-order answer only means `pending` overtook it.
    fn has_earlier_outstanding(&self, partition: &P, pending: &Pending) -> bool {
        let Some(sequence) = pending.sequence else {
            return false;
        };
        let earlier = |p: &Pending| p.sequence.is_some_and(|s| s < sequence);
        self.partitions
            .get(partition)
            .is_some_and(|q| q.waiting.iter().any(earlier))
            || self
                .in_flight
                .values()
                .flatten()
                .any(|(p, other)| p == partition && earlier(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(idempotence: bool, max_in_flight: usize) -> SenderConfig {
        SenderConfig {
            max_in_flight,
            idempotence,
            retries: 3,
        }
    }

    #[test]
    fn the_in_flight_limit_and_one_batch_per_partition_per_request_hold() {
        let mut s = Sender::new(config(false, 2));
        for id in 0..3 {
            s.enqueue(0u8, id, 1);
        }
        s.enqueue(1u8, 9, 1);
        let first = s.poll_send().unwrap();
        assert_eq!(first.batches.len(), 2, "one from each partition");
        assert!(s.poll_send().is_some());
        assert!(s.poll_send().is_none(), "two requests in flight");
        let done = s.on_response(first.request_id, &[(0, Ok(10)), (9, Ok(0))]);
        assert_eq!(done.len(), 2);
        assert!(s.poll_send().is_some());
    }

    #[test]
    fn idempotent_batches_get_sequences_and_keep_them_across_retries() {
        let mut s = Sender::new(config(true, 5));
        s.enqueue(0u8, 1, 3);
        s.enqueue(0u8, 2, 2);
        assert!(s.poll_send().is_none(), "no producer id yet");
        s.on_producer_id(7, 0);
        let a = s.poll_send().unwrap();
        let b = s.poll_send().unwrap();
        assert_eq!(a.batches[0].producer, Some((7, 0, 0)));
        assert_eq!(b.batches[0].producer, Some((7, 0, 3)));
        // The first times out; the second overtook it and is refused as out of order.
        assert!(
            s.on_response(a.request_id, &[(1, Err(codes::REQUEST_TIMED_OUT))])
                .is_empty()
        );
        assert!(
            s.on_response(
                b.request_id,
                &[(2, Err(codes::OUT_OF_ORDER_SEQUENCE_NUMBER))]
            )
            .is_empty(),
            "retriable: an earlier batch is outstanding"
        );
        let again = s.poll_send().unwrap();
        assert_eq!(again.batches[0].producer, Some((7, 0, 0)));
        assert!(
            s.poll_send().is_none(),
            "the successor waits for the re-sent batch"
        );
        s.on_response(again.request_id, &[(1, Ok(0))]);
        let last = s.poll_send().unwrap();
        assert_eq!(last.batches[0].producer, Some((7, 0, 3)));
        let done = s.on_response(last.request_id, &[(2, Ok(3))]);
        assert_eq!(done[0].outcome, BatchOutcome::Written(3));
        assert!(s.is_idle());
    }

    #[test]
    fn a_broken_connection_retries_everything_in_flight_and_ignores_late_answers() {
        let mut s = Sender::new(SenderConfig {
            retries: 0,
            ..config(false, 5)
        });
        s.enqueue(0u8, 1, 1);
        let r = s.poll_send().unwrap();
        let failed = s.on_disconnect();
        assert_eq!(
            failed[0].outcome,
            BatchOutcome::Failed(codes::NETWORK_EXCEPTION)
        );
        assert!(s.on_response(r.request_id, &[(1, Ok(0))]).is_empty());
    }
}
