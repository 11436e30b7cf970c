//! The models' producer: sends a bounded number of one-record batches with `acks=all`, one at a
//! time, to the partitions in turn (record `i` goes to partition `i % partitions`), each to the
//! leader metadata last named for its partition, and remembers what was acknowledged.
//!
//! It retries as Kafka's producer does, but only when an attempt is known to have failed: an
//! error answer, or a lost connection. A retry goes out at once when the failure says nothing
//! about who leads (`NOT_ENOUGH_REPLICAS`, a connection reset) and otherwise waits for metadata
//! naming a newer leader of the record's partition, which stands for Kafka's retries with
//! backoff and metadata refresh while the cluster elects one (retries that could only fail
//! again are not modelled, nor are they counted). With no retries left the record is given up
//! and the next one is sent. A retry may duplicate a record the leader had already appended:
//! that is where duplicates come from, as the network never duplicates.

use std::collections::BTreeMap;

use bytes::Bytes;
use surety_core::errors::Errors;
use surety_core::record::BatchBuilder;
use surety_core::replication::{Acks, BrokerId, Msg, PartitionState};

/// The client's state: whom it believes leads each partition, what it is sending, and what
/// came back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Each partition's leader and its epoch, as metadata last said.
    pub leaders: Vec<(Option<BrokerId>, i32)>,
    /// Index of the record being sent; the total when done.
    pub next: u32,
    /// Where the current attempt went; `None` while the record waits for a leader to send to.
    pub sent_to: Option<BrokerId>,
    /// Retries left for the whole run.
    pub retries_left: u8,
    /// Records acknowledged with `acks=all`: record index → offset in its partition.
    pub acked: BTreeMap<u32, i64>,
}

/// The one-record batch whose value is the record's index: what the properties look for.
pub fn record_batch(index: u32) -> Bytes {
    let mut batch = BatchBuilder::new(0);
    batch.append(0, None, Some(&index.to_be_bytes()), &[]);
    batch.build()
}

/// The value `record_batch(index)` carries, decoded.
pub fn record_index(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// The record an attempt's correlation id names.
pub fn record_of(correlation_id: u32) -> u32 {
    correlation_id / 256
}

/// A message the client sends: to whom, for which partition, what.
pub type Outgoing = (BrokerId, u8, Msg);

impl ClientState {
    /// Starts sending record 0 to its partition's leader (`total` records in the whole run).
    pub fn new(initial: &[PartitionState], retries: u8, total: u32) -> (Self, Option<Outgoing>) {
        let mut client = ClientState {
            leaders: initial.iter().map(|s| (s.leader, s.leader_epoch)).collect(),
            next: 0,
            sent_to: None,
            retries_left: retries,
            acked: BTreeMap::new(),
        };
        let send = client.send(total);
        (client, send)
    }

    /// The partition record `index` goes to.
    pub fn partition_of(&self, index: u32) -> u8 {
        (index % self.leaders.len() as u32) as u8
    }

    /// The correlation id of the current attempt: the record and the retries left, so that a
    /// late answer to an earlier attempt is never taken for the current one's.
    pub fn correlation_id(&self) -> u32 {
        self.next * 256 + u32::from(self.retries_left)
    }

    /// Sends the current record to the leader it knows for its partition, if it knows one.
    fn send(&mut self, total: u32) -> Option<Outgoing> {
        if self.next >= total {
            return None;
        }
        let p = self.partition_of(self.next);
        let leader = self.leaders[usize::from(p)].0?;
        self.sent_to = Some(leader);
        let msg = Msg::Produce {
            correlation_id: self.correlation_id(),
            acks: Acks::All,
            records: record_batch(self.next),
        };
        Some((leader, p, msg))
    }

    /// Gives the current record up or moves on after its acknowledgement.
    fn advance(&mut self, total: u32) -> Option<Outgoing> {
        self.next += 1;
        self.sent_to = None;
        self.send(total)
    }

    /// The current attempt failed. `resend_now` when the leader it knows is worth trying
    /// again; otherwise the record waits for newer metadata.
    fn attempt_failed(&mut self, resend_now: bool, total: u32) -> Option<Outgoing> {
        if self.retries_left == 0 {
            return self.advance(total);
        }
        self.retries_left -= 1;
        self.sent_to = None;
        if resend_now { self.send(total) } else { None }
    }

    /// A message of partition `p`: metadata or an answer to a produce.
    pub fn on_msg(&mut self, p: u8, msg: Msg, total: u32) -> Option<Outgoing> {
        match msg {
            Msg::ProduceResponse {
                correlation_id,
                error_code,
                base_offset,
                ..
            } => self.on_response(correlation_id, error_code, base_offset, total),
            Msg::LeaderAndIsr(state) => self.on_metadata(p, &state, total),
            _ => None,
        }
    }

    /// Learns partition `p`'s leader from metadata; a record of `p` waiting for one is sent.
    fn on_metadata(&mut self, p: u8, state: &PartitionState, total: u32) -> Option<Outgoing> {
        let known = &mut self.leaders[usize::from(p)];
        if state.leader_epoch <= known.1 {
            return None;
        }
        *known = (state.leader, state.leader_epoch);
        if self.sent_to.is_none() && self.next < total && self.partition_of(self.next) == p {
            return self.send(total);
        }
        None
    }

    /// Handles a ProduceResponse: records an acknowledgement (even a late one: the record is
    /// then in the log, whatever the client thought of the attempt), moves on, or retries.
    fn on_response(
        &mut self,
        correlation_id: u32,
        error: Errors,
        base_offset: i64,
        total: u32,
    ) -> Option<Outgoing> {
        let record = record_of(correlation_id);
        if error == Errors::None {
            self.acked.entry(record).or_insert(base_offset);
            return if record == self.next {
                self.advance(total)
            } else {
                None
            };
        }
        if correlation_id != self.correlation_id() || self.sent_to.is_none() {
            return None; // an earlier attempt's failure, already dealt with
        }
        match error {
            Errors::NotEnoughReplicas | Errors::NotEnoughReplicasAfterAppend => {
                self.attempt_failed(true, total)
            }
            _ => self.attempt_failed(false, total),
        }
    }

    /// The connection to `broker` was lost; `broker_down` when it crashed or refused the
    /// connection, so only a new leader is worth trying.
    pub fn on_disconnect(
        &mut self,
        broker: BrokerId,
        broker_down: bool,
        total: u32,
    ) -> Option<Outgoing> {
        if self.next >= total || self.sent_to != Some(broker) {
            return None;
        }
        self.attempt_failed(!broker_down, total)
    }

    /// Whether `msg` (of partition `p`) can no longer change the client, now or later: an
    /// answer about a record it has moved past that is an error or repeats a recorded
    /// acknowledgement, or metadata no newer than what it knows. (`next`, `acked` and each
    /// leader epoch only grow, and an attempt's correlation id is never used again.)
    pub fn is_stale(&self, p: u8, msg: &Msg) -> bool {
        match msg {
            Msg::ProduceResponse {
                correlation_id,
                error_code,
                ..
            } => {
                let record = record_of(*correlation_id);
                if *error_code == Errors::None {
                    record < self.next && self.acked.contains_key(&record)
                } else {
                    *correlation_id != self.correlation_id()
                }
            }
            Msg::LeaderAndIsr(state) => state.leader_epoch <= self.leaders[usize::from(p)].1,
            _ => true,
        }
    }
}
