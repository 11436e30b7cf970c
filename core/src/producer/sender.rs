//! The producer's sender logic as a deterministic actor: which queued batches go into the next
//! produce request to a broker (those of the partitions it leads now, so a retry follows a
//! leader that moved), how many requests may be in flight on each connection
//! (`max.in.flight.requests.per.connection`), and what happens to a batch when its answer comes
//! back, fails, or never comes (the connection broke). The client's network loop and the
//! `check producer` model drive this same code.
//!
//! Batches are known here by id, partition and record count only; the driver keeps their bytes.
//!
//! The rules are Kafka's:
//! - A batch is retried (up to `retries` times) after a retriable error
//!   ([`Errors::is_retriable`]) or a broken connection; other errors fail it.
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
//! - Time: a retried batch waits `retry.backoff.ms` (and holds back its partition meanwhile, so
//!   order is kept), and a batch is never retried once `delivery.timeout.ms` has passed since
//!   it was created; [`Sender::expire`] fails the ones waiting past it. Time enters only as the
//!   `now_ms` the driver passes in.
//! - When a batch that was sent with a sequence fails (expired, out of retries, or refused for
//!   good), the partition's next sequence is unknown to the producer: whether the broker holds
//!   that batch cannot be told. As Kafka does, the producer then starts over with a new producer
//!   id (the broker knows no sequences for it): once nothing is in flight the sender drops its
//!   producer id ([`Sender::needs_producer_id`] turns true), and the driver asks for a new one.
//!   Batches that were sent before but not acknowledged fail then too (re-sending them under the
//!   new id could write them twice); batches never sent get fresh sequences.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::BatchId;
use crate::errors::Errors;

/// The sender's settings, under Kafka's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SenderConfig {
    /// `max.in.flight.requests.per.connection` (at most 5 with idempotence, as in Kafka).
    pub max_in_flight: usize,
    /// `enable.idempotence`.
    pub idempotence: bool,
    /// `retries`: how many times one batch may be re-sent.
    pub retries: u32,
    /// `delivery.timeout.ms`: a batch is not retried once this long after its creation.
    pub delivery_timeout_ms: i64,
    /// `retry.backoff.ms`: the wait before a batch is re-sent.
    pub retry_backoff_ms: i64,
    /// A deliberately wrong rule, for showing that `check producer` catches it; `None` in
    /// production.
    pub broken: Option<BrokenSender>,
}

/// Deliberately wrong sender rules the model checker must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BrokenSender {
    /// After giving up the producer id, re-send the batches that were sent before (perhaps
    /// written) under the new id, instead of failing them: breaks `no_duplicates`.
    ResendAfterReset,
}

impl SenderConfig {
    /// Kafka's defaults for the timing settings, with the given limits.
    pub fn new(max_in_flight: usize, idempotence: bool, retries: u32) -> Self {
        SenderConfig {
            max_in_flight,
            idempotence,
            retries,
            delivery_timeout_ms: 120_000,
            retry_backoff_ms: 100,
            broken: None,
        }
    }
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
    /// Failed because `delivery.timeout.ms` passed before it was acknowledged (it may or may not
    /// have been written, if it was ever sent).
    Expired,
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
    /// Created + `delivery.timeout.ms`.
    deadline_ms: i64,
    /// Not to be sent again before this (`retry.backoff.ms` after a failure).
    retry_at_ms: i64,
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
    /// Requests in flight: the broker each went to, and its batches.
    in_flight: BTreeMap<u64, (i32, Vec<(P, Pending)>)>,
    next_request_id: u64,
    /// A batch sent with a sequence failed: the producer id is given up once nothing is in
    /// flight, and this is the error the unacknowledged re-sent batches then fail with.
    reset_cause: Option<BatchOutcome>,
    /// Partitions whose leader, as the driver knows it, proved wrong.
    stale_leaders: BTreeSet<P>,
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
            reset_cause: None,
            stale_leaders: BTreeSet::new(),
        }
    }

    /// The partitions an answer showed the driver's metadata to be wrong about
    /// (`NOT_LEADER_OR_FOLLOWER`, `UNKNOWN_TOPIC_OR_PARTITION`): refresh their metadata before
    /// their batches are re-sent. Each is named once.
    pub fn take_stale_leaders(&mut self) -> BTreeSet<P> {
        std::mem::take(&mut self.stale_leaders)
    }

    /// Whether the driver must obtain a producer id (InitProducerId) first.
    pub fn needs_producer_id(&self) -> bool {
        self.config.idempotence && self.producer.is_none()
    }

    /// The producer id and epoch from InitProducerId.
    pub fn on_producer_id(&mut self, producer_id: i64, epoch: i16) {
        self.producer = Some((producer_id, epoch));
    }

    /// A batch drained from the accumulator (created at `created_ms`), queued behind its
    /// partition's earlier batches.
    pub fn enqueue(&mut self, partition: P, id: BatchId, records: i32, created_ms: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .waiting
            .push_back(Pending {
                id,
                records,
                sequence: None,
                attempts: 0,
                deadline_ms: created_ms.saturating_add(self.config.delivery_timeout_ms),
                retry_at_ms: i64::MIN,
            });
    }

    /// Fails every waiting batch whose `delivery.timeout.ms` has passed. (A batch in flight
    /// is judged when its answer comes, or its connection is given up.)
    pub fn expire(&mut self, now_ms: i64) -> Vec<Completion> {
        let mut completions = Vec::new();
        let mut sequenced_failed = false;
        for queue in self.partitions.values_mut() {
            queue.waiting.retain(|p| {
                if now_ms < p.deadline_ms {
                    return true;
                }
                sequenced_failed |= p.sequence.is_some();
                completions.push(Completion {
                    id: p.id,
                    outcome: BatchOutcome::Expired,
                });
                false
            });
        }
        if sequenced_failed && self.config.idempotence {
            self.reset_cause.get_or_insert(BatchOutcome::Expired);
        }
        self.settle_reset(&mut completions);
        completions
    }

    /// The earliest time a batch waiting out its `retry.backoff.ms` may go, if one is.
    pub fn next_retry_ms(&self) -> Option<i64> {
        self.partitions
            .values()
            .filter_map(|q| q.waiting.front())
            .map(|p| p.retry_at_ms)
            .filter(|t| *t > i64::MIN)
            .min()
    }

    /// Requests in flight, to every broker.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Requests in flight to `node`.
    pub fn in_flight_to(&self, node: i32) -> usize {
        self.in_flight.values().filter(|(n, _)| *n == node).count()
    }

    /// Partitions with batches waiting to be sent (whose leader the driver must know).
    pub fn waiting_partitions(&self) -> impl Iterator<Item = &P> {
        self.partitions
            .iter()
            .filter(|(_, q)| !q.waiting.is_empty())
            .map(|(p, _)| p)
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.partitions.values().all(|q| q.waiting.is_empty())
    }

    /// The next produce request to broker `node`, if its connection's in-flight limit allows
    /// one and a batch may go: at most one batch per partition, each partition's first
    /// sendable batch, of the partitions `node` leads now. A batch being retried goes to its
    /// partition's leader at the time, so a retry follows a leader that moved.
    pub fn poll_send(
        &mut self,
        node: i32,
        leads: impl Fn(&P) -> bool,
        now_ms: i64,
    ) -> Option<SendRequest<P>> {
        if self.in_flight_to(node) >= self.config.max_in_flight.max(1)
            || self.needs_producer_id()
            || self.reset_cause.is_some()
        {
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
            if !leads(partition) {
                continue;
            }
            // Backing off holds back the partition, so nothing overtakes the retried batch.
            if front.retry_at_ms > now_ms {
                continue;
            }
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
        self.in_flight.insert(request_id, (node, sent));
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
        now_ms: i64,
    ) -> Vec<Completion> {
        let Some((_, sent)) = self.in_flight.remove(&request_id) else {
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
                .map_or(Err(Errors::NetworkException.code()), |(_, r)| *r);
            match result {
                Ok(base_offset) => completions.push(Completion {
                    id: pending.id,
                    outcome: BatchOutcome::Written(base_offset),
                }),
                Err(code)
                    if code == Errors::DuplicateSequenceNumber.code()
                        && self.config.idempotence =>
                {
                    completions.push(Completion {
                        id: pending.id,
                        outcome: BatchOutcome::Written(-1),
                    })
                }
                Err(code) => {
                    completions.extend(self.retry_or_fail(partition, pending, code, now_ms))
                }
            }
        }
        self.settle_reset(&mut completions);
        completions
    }

    /// The connection to `node` broke: every request in flight on it is lost (the broker may
    /// or may not have written its batches). Each batch is retried or failed.
    pub fn on_disconnect(&mut self, node: i32, now_ms: i64) -> Vec<Completion> {
        let lost_ids: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(id, _)| *id)
            .collect();
        let lost: Vec<(P, Pending)> = lost_ids
            .into_iter()
            .filter_map(|id| self.in_flight.remove(&id))
            .flat_map(|(_, batches)| batches)
            .collect();
        let mut completions = Vec::new();
        // Oldest requests first, so re-queued batches keep their order.
        for (partition, pending) in lost {
            if let Some(queue) = self.partitions.get_mut(&partition) {
                queue.in_flight -= 1;
            }
            completions.extend(self.retry_or_fail(
                partition,
                pending,
                Errors::NetworkException.code(),
                now_ms,
            ));
        }
        self.settle_reset(&mut completions);
        completions
    }

    /// Gives up the producer id once a sequenced batch has failed and nothing is in flight:
    /// every batch sent before and still unacknowledged fails, every sequence starts over.
    fn settle_reset(&mut self, completions: &mut Vec<Completion>) {
        let Some(cause) = self.reset_cause else {
            return;
        };
        if !self.in_flight.is_empty() {
            return;
        }
        let resend = self.config.broken == Some(BrokenSender::ResendAfterReset);
        for queue in self.partitions.values_mut() {
            queue.next_sequence = 0;
            queue.waiting.retain_mut(|p| {
                if resend {
                    p.sequence = None;
                }
                if p.sequence.is_none() {
                    return true;
                }
                completions.push(Completion {
                    id: p.id,
                    outcome: cause,
                });
                false
            });
        }
        self.producer = None;
        self.reset_cause = None;
    }

    fn retry_or_fail(
        &mut self,
        partition: P,
        mut pending: Pending,
        code: i16,
        now_ms: i64,
    ) -> Option<Completion> {
        let error = Errors::from_code(code);
        if matches!(
            error,
            Some(Errors::NotLeaderOrFollower | Errors::UnknownTopicOrPartition)
        ) {
            self.stale_leaders.insert(partition.clone());
        }
        // Kafka's retriable errors; a code missing from the table is not retried, as Kafka's
        // client takes a code it does not know for UNKNOWN_SERVER_ERROR.
        let retriable = error.is_some_and(Errors::is_retriable)
            || (error == Some(Errors::OutOfOrderSequenceNumber)
                && self.config.idempotence
                && self.has_earlier_outstanding(&partition, &pending));
        let outcome = if now_ms >= pending.deadline_ms {
            Some(BatchOutcome::Expired)
        } else if !retriable || pending.attempts >= self.config.retries {
            Some(BatchOutcome::Failed(code))
        } else {
            None
        };
        if let Some(outcome) = outcome {
            if self.config.idempotence && pending.sequence.is_some() {
                self.reset_cause.get_or_insert(outcome);
            }
            return Some(Completion {
                id: pending.id,
                outcome,
            });
        }
        pending.attempts += 1;
        pending.retry_at_ms = now_ms.saturating_add(self.config.retry_backoff_ms);
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
                .flat_map(|(_, batches)| batches)
                .any(|(p, other)| p == partition && earlier(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(idempotence: bool, max_in_flight: usize) -> SenderConfig {
        SenderConfig {
            retry_backoff_ms: 0,
            ..SenderConfig::new(max_in_flight, idempotence, 3)
        }
    }

    #[test]
    fn the_in_flight_limit_and_one_batch_per_partition_per_request_hold() {
        let mut s = Sender::new(config(false, 2));
        for id in 0..3 {
            s.enqueue(0u8, id, 1, 0);
        }
        s.enqueue(1u8, 9, 1, 0);
        let first = s.poll_send(0, |_| true, 0).unwrap();
        assert_eq!(first.batches.len(), 2, "one from each partition");
        assert!(s.poll_send(0, |_| true, 0).is_some());
        assert!(
            s.poll_send(0, |_| true, 0).is_none(),
            "two requests in flight"
        );
        let done = s.on_response(first.request_id, &[(0, Ok(10)), (9, Ok(0))], 0);
        assert_eq!(done.len(), 2);
        assert!(s.poll_send(0, |_| true, 0).is_some());
    }

    #[test]
    fn idempotent_batches_get_sequences_and_keep_them_across_retries() {
        let mut s = Sender::new(config(true, 5));
        s.enqueue(0u8, 1, 3, 0);
        s.enqueue(0u8, 2, 2, 0);
        assert!(s.poll_send(0, |_| true, 0).is_none(), "no producer id yet");
        s.on_producer_id(7, 0);
        let a = s.poll_send(0, |_| true, 0).unwrap();
        let b = s.poll_send(0, |_| true, 0).unwrap();
        assert_eq!(a.batches[0].producer, Some((7, 0, 0)));
        assert_eq!(b.batches[0].producer, Some((7, 0, 3)));
        // The first times out; the second overtook it and is refused as out of order.
        assert!(
            s.on_response(a.request_id, &[(1, Err(Errors::RequestTimedOut.code()))], 0)
                .is_empty()
        );
        assert!(
            s.on_response(
                b.request_id,
                &[(2, Err(Errors::OutOfOrderSequenceNumber.code()))],
                0
            )
            .is_empty(),
            "retriable: an earlier batch is outstanding"
        );
        let again = s.poll_send(0, |_| true, 0).unwrap();
        assert_eq!(again.batches[0].producer, Some((7, 0, 0)));
        assert!(
            s.poll_send(0, |_| true, 0).is_none(),
            "the successor waits for the re-sent batch"
        );
        s.on_response(again.request_id, &[(1, Ok(0))], 0);
        let last = s.poll_send(0, |_| true, 0).unwrap();
        assert_eq!(last.batches[0].producer, Some((7, 0, 3)));
        let done = s.on_response(last.request_id, &[(2, Ok(3))], 0);
        assert_eq!(done[0].outcome, BatchOutcome::Written(3));
        assert!(s.is_idle());
    }

    #[test]
    fn a_broken_connection_retries_everything_in_flight_and_ignores_late_answers() {
        let mut s = Sender::new(SenderConfig {
            retries: 0,
            ..config(false, 5)
        });
        s.enqueue(0u8, 1, 1, 0);
        let r = s.poll_send(0, |_| true, 0).unwrap();
        let failed = s.on_disconnect(0, 0);
        assert_eq!(
            failed[0].outcome,
            BatchOutcome::Failed(Errors::NetworkException.code())
        );
        assert!(s.on_response(r.request_id, &[(1, Ok(0))], 0).is_empty());
    }

    #[test]
    fn a_retried_batch_waits_out_the_backoff_and_holds_back_its_partition() {
        let mut s = Sender::new(SenderConfig {
            retry_backoff_ms: 100,
            ..config(false, 1)
        });
        s.enqueue(0u8, 1, 1, 0);
        s.enqueue(0u8, 2, 1, 0);
        let r = s.poll_send(0, |_| true, 0).unwrap();
        s.on_response(
            r.request_id,
            &[(1, Err(Errors::RequestTimedOut.code()))],
            10,
        );
        assert_eq!(s.next_retry_ms(), Some(110));
        assert!(
            s.poll_send(0, |_| true, 109).is_none(),
            "batch 2 must not overtake batch 1"
        );
        assert_eq!(s.poll_send(0, |_| true, 110).unwrap().batches[0].id, 1);
    }

    #[test]
    fn delivery_timeout_ends_retries_and_expires_waiting_batches() {
        let mut s = Sender::new(SenderConfig {
            delivery_timeout_ms: 1_000,
            ..config(false, 5)
        });
        s.enqueue(0u8, 1, 1, 0);
        s.enqueue(1u8, 2, 1, 500);
        let r = s.poll_send(0, |_| true, 0).unwrap();
        let done = s.on_response(
            r.request_id,
            &[
                (1, Err(Errors::RequestTimedOut.code())),
                (2, Err(Errors::RequestTimedOut.code())),
            ],
            1_000,
        );
        assert_eq!(
            done,
            vec![Completion {
                id: 1,
                outcome: BatchOutcome::Expired
            }],
            "batch 1 is past its deadline; batch 2 is retried"
        );
        assert!(s.expire(1_499).is_empty());
        assert_eq!(s.expire(1_500)[0].id, 2);
        assert!(s.is_idle());
    }

    #[test]
    fn a_failed_sequenced_batch_gives_up_the_producer_id_once_nothing_is_in_flight() {
        let mut s = Sender::new(config(true, 5));
        s.on_producer_id(7, 0);
        s.enqueue(0u8, 1, 1, 0);
        s.enqueue(0u8, 2, 1, 0);
        let a = s.poll_send(0, |_| true, 0).unwrap();
        let b = s.poll_send(0, |_| true, 0).unwrap();
        s.enqueue(0u8, 3, 1, 0);
        // Batch 1 is refused for good while batch 2 is still in flight.
        let done = s.on_response(a.request_id, &[(1, Err(87))], 0);
        assert_eq!(done[0].outcome, BatchOutcome::Failed(87));
        assert!(
            s.poll_send(0, |_| true, 0).is_none(),
            "nothing goes until the reset"
        );
        assert!(!s.needs_producer_id(), "batch 2 is still in flight");
        // Batch 2 overtook the failed one: out of order, with nothing earlier outstanding.
        let done = s.on_response(
            b.request_id,
            &[(2, Err(Errors::OutOfOrderSequenceNumber.code()))],
            0,
        );
        assert_eq!(
            done[0].outcome,
            BatchOutcome::Failed(Errors::OutOfOrderSequenceNumber.code())
        );
        assert!(s.needs_producer_id());
        s.on_producer_id(8, 0);
        let c = s.poll_send(0, |_| true, 0).unwrap();
        assert_eq!(
            c.batches[0].producer,
            Some((8, 0, 0)),
            "a batch never sent starts the new producer id at sequence 0"
        );
    }

    #[test]
    fn after_a_reset_a_batch_sent_before_fails_rather_than_risk_a_second_copy() {
        let mut s = Sender::new(SenderConfig {
            delivery_timeout_ms: 1_000,
            ..config(true, 5)
        });
        s.on_producer_id(7, 0);
        s.enqueue(0u8, 1, 1, 0);
        s.enqueue(1u8, 2, 1, 900);
        let r = s.poll_send(0, |_| true, 0).unwrap();
        // Both time out (maybe after being written); batch 1 is past its deadline.
        let done = s.on_response(
            r.request_id,
            &[
                (1, Err(Errors::RequestTimedOut.code())),
                (2, Err(Errors::RequestTimedOut.code())),
            ],
            1_000,
        );
        let outcomes: Vec<_> = done.iter().map(|c| (c.id, c.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![(1, BatchOutcome::Expired), (2, BatchOutcome::Expired)],
            "batch 2 may be in the log under the old id: it fails with the reset"
        );
        assert!(s.needs_producer_id());
    }

    #[test]
    fn a_retry_follows_its_partition_to_a_new_leader_and_limits_are_per_connection() {
        let mut s = Sender::new(config(true, 1));
        s.on_producer_id(7, 0);
        s.enqueue(0u8, 1, 1, 0);
        s.enqueue(1u8, 2, 1, 0);
        let on_node = |node: i32| move |p: &u8| i32::from(*p) + 1 == node;
        let to_1 = s.poll_send(1, on_node(1), 0).unwrap();
        assert!(
            s.poll_send(1, on_node(1), 0).is_none(),
            "one in flight to node 1"
        );
        let to_2 = s.poll_send(2, on_node(2), 0).unwrap();
        assert_eq!((to_1.batches[0].id, to_2.batches[0].id), (1, 2));
        // Partition 0's leader moves from node 1 to node 2.
        s.on_response(
            to_1.request_id,
            &[(1, Err(Errors::NotLeaderOrFollower.code()))],
            0,
        );
        assert!(s.poll_send(1, |_| false, 0).is_none());
        s.on_response(to_2.request_id, &[(2, Ok(0))], 0);
        let again = s.poll_send(2, |_| true, 0).unwrap();
        assert_eq!(
            again.batches[0].producer,
            Some((7, 0, 0)),
            "the same batch, the same sequence, to the new leader"
        );
        // A broken connection to node 1 touches nothing in flight to node 2.
        assert!(s.on_disconnect(1, 0).is_empty());
        assert_eq!(s.in_flight_to(2), 1);
    }
}
