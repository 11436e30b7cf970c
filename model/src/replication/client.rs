//! The model's producer: sends a bounded number of one-record batches with `acks=all`, one at a
//! time, and remembers what was acknowledged.
//!
//! It retries as Kafka's producer does, but only when an attempt is known to have failed: an
//! error answer, or a lost connection. A retry goes out at once when the failure says nothing
//! about who leads (`NOT_ENOUGH_REPLICAS`, a connection reset) and otherwise waits for metadata
//! naming a newer leader, which stands for Kafka's retries with backoff and metadata refresh
//! while the cluster elects one (retries that could only fail again are not modelled, nor are
//! they counted). With no retries left the record is given up and the next one is sent.
//! A retry may duplicate a record the leader had already appended: that is where duplicates
//! come from, as the network never duplicates.

use std::collections::BTreeMap;

use bytes::Bytes;
use surety_core::errors::Errors;
use surety_core::record::BatchBuilder;
use surety_core::replication::{Acks, BrokerId, Msg, PartitionState};

/// The client's state: what it is sending, where, and what came back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// The leader it believes current.
    pub leader: Option<BrokerId>,
    /// The epoch of `leader`.
    pub leader_epoch: i32,
    /// Index of the record being sent; `records` when done.
    pub next: u32,
    /// Where the current attempt went; `None` while the record waits for a leader to send to.
    pub sent_to: Option<BrokerId>,
    /// Retries left for the whole run.
    pub retries_left: u8,
    /// Records acknowledged with `acks=all`: record index → offset.
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

/// A message the client sends: to whom, and what.
pub type Send = (BrokerId, Msg);

impl ClientState {
    /// Starts sending record 0 to the initial leader.
    pub fn new(initial: &PartitionState, retries: u8, records: u32) -> (Self, Option<Send>) {
        let mut client = ClientState {
            leader: initial.leader,
            leader_epoch: initial.leader_epoch,
            next: 0,
            sent_to: None,
            retries_left: retries,
            acked: BTreeMap::new(),
        };
        let send = client.send(records);
        (client, send)
    }

    /// Whether there is a record outstanding.
    pub fn busy(&self, records: u32) -> bool {
        self.next < records
    }

    /// The correlation id of the current attempt: the record and the retries left, so that a
    /// late answer to an earlier attempt is never taken for the current one's.
    pub fn correlation_id(&self) -> u32 {
        self.next * 256 + u32::from(self.retries_left)
    }

    /// Sends the current record to the leader it knows, if it knows one.
    fn send(&mut self, records: u32) -> Option<Send> {
        if !self.busy(records) {
            return None;
        }
        let leader = self.leader?;
        self.sent_to = Some(leader);
        let msg = Msg::Produce {
            correlation_id: self.correlation_id(),
            acks: Acks::All,
            records: record_batch(self.next),
        };
        Some((leader, msg))
    }

    /// Gives the current record up or moves on after its acknowledgement.
    fn advance(&mut self, records: u32) -> Option<Send> {
        self.next += 1;
        self.sent_to = None;
        self.send(records)
    }

    /// The current attempt failed. `resend_now` when the leader it knows is worth trying
    /// again; otherwise the record waits for newer metadata.
    fn attempt_failed(&mut self, resend_now: bool, records: u32) -> Option<Send> {
        if self.retries_left == 0 {
            return self.advance(records);
        }
        self.retries_left -= 1;
        self.sent_to = None;
        if resend_now { self.send(records) } else { None }
    }

    /// Learns a leader from metadata; a record waiting for one is sent there.
    pub fn on_metadata(&mut self, state: &PartitionState, records: u32) -> Option<Send> {
        if state.leader_epoch <= self.leader_epoch {
            return None;
        }
        self.leader = state.leader;
        self.leader_epoch = state.leader_epoch;
        if self.sent_to.is_none() {
            return self.send(records);
        }
        None
    }

    /// Handles a ProduceResponse: records an acknowledgement (even a late one: the record is
    /// then in the log, whatever the client thought of the attempt), moves on, or retries.
    pub fn on_response(
        &mut self,
        correlation_id: u32,
        error: Errors,
        base_offset: i64,
        records: u32,
    ) -> Option<Send> {
        let record = record_of(correlation_id);
        if error == Errors::None {
            self.acked.entry(record).or_insert(base_offset);
            return if record == self.next {
                self.advance(records)
            } else {
                None
            };
        }
        if correlation_id != self.correlation_id() || self.sent_to.is_none() {
            return None; // an earlier attempt's failure, already dealt with
        }
        match error {
            Errors::NotEnoughReplicas | Errors::NotEnoughReplicasAfterAppend => {
                self.attempt_failed(true, records)
            }
            _ => self.attempt_failed(false, records),
        }
    }

    /// The connection to `broker` was lost; `broker_down` when it crashed or refused the
    /// connection, so only a new leader is worth trying.
    pub fn on_disconnect(
        &mut self,
        broker: BrokerId,
        broker_down: bool,
        records: u32,
    ) -> Option<Send> {
        if !self.busy(records) || self.sent_to != Some(broker) {
            return None;
        }
        self.attempt_failed(!broker_down, records)
    }

    /// Whether `msg` can no longer change the client, now or later: an answer about a record it
    /// has moved past that is an error or repeats a recorded acknowledgement, or metadata no
    /// newer than what it knows. (`next`, `acked` and `leader_epoch` only grow, and an
    /// attempt's correlation id is never used again.)
    pub fn is_stale(&self, msg: &Msg) -> bool {
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
            Msg::LeaderAndIsr(state) => state.leader_epoch <= self.leader_epoch,
            _ => true,
        }
    }
}
