//! Trace conformance: what a running node records of every step its actors take, so the model
//! can replay the real history through the same actors and check it (`model replay DIR`).
//!
//! A driver records, for each step, the input it gave an actor and the effects the actor
//! returned, under the actor's lock and stamped with the wall clock. Merging every node's
//! steps by that stamp orders each message after its send (the nodes share one machine's
//! clock in tests), which is all the model's properties need of an order: they are evaluated
//! on states that each node really was in, in an order consistent with causality.
//!
//! Only what the actors need to run again is kept: a replica's configuration when it is
//! created, its durable state's summary when it recovers (the replay keeps the log itself),
//! and each message, timer and lost connection with its time.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::actor::{Effect, Node};
use crate::cluster::{ClusterTimer, MetadataRecord, NewTopic, QuorumConfig, TopicId};
use crate::replication::{BrokerId, Msg, ReplicaConfig, ReplicaTimer};

/// One step of one actor on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    /// Nanoseconds since the Unix epoch, taken under the actor's lock.
    pub at_ns: u64,
    /// The node that took it (`node.id`).
    pub node: i32,
    /// The actor and what happened to it.
    pub step: Step,
}

/// Which actor stepped, on what input, with which effects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// A partition's replica on a broker.
    Replica {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What the driver gave it.
        input: ReplicaInput,
        /// What it returned.
        effects: Vec<Effect<ReplicaTimer, Msg>>,
    },
    /// The cluster controller.
    Quorum {
        /// What the driver gave it.
        input: QuorumInput,
        /// Its answer to the request, as text (compared, not interpreted).
        answer: String,
        /// What it returned: records to append, timers.
        effects: Vec<Effect<ClusterTimer, MetadataRecord>>,
    },
}

/// A replica's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaInput {
    /// Created empty (`Replica::new`).
    Create {
        /// Its configuration.
        config: ReplicaConfig,
    },
    /// Opened after a restart (`Replica::recover`) over the log the node had kept: the replay
    /// cuts its own copy of the log to `log_end_offset`.
    Recover {
        /// Its configuration.
        config: ReplicaConfig,
        /// The recovered log's end.
        log_end_offset: i64,
        /// The high-watermark checkpoint read back.
        high_watermark: i64,
        /// The leader-epoch cache read back.
        epochs: Vec<(i32, i64)>,
        /// The incarnation before this start.
        incarnation: u32,
    },
    /// A message (`Replica::on_message`).
    Message {
        /// Its sender.
        from: Node,
        /// The message.
        msg: Msg,
        /// The driver's clock.
        now_ms: i64,
    },
    /// A timer (`Replica::on_timer`).
    Timer {
        /// Which.
        timer: ReplicaTimer,
        /// The driver's clock.
        now_ms: i64,
    },
    /// A lost connection (`Replica::on_disconnect`).
    Disconnect {
        /// To whom.
        peer: Node,
    },
    /// A follower's parked fetch expired (`Replica::expire_parked_fetch`).
    ExpireFetch {
        /// The follower.
        follower: BrokerId,
    },
}

/// The cluster controller's input: one per `QuorumController` method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QuorumInput {
    /// Opened over a metadata log of `records` records (replayed from the trace's own).
    Open {
        /// Its configuration.
        config: QuorumConfig,
        /// How many records its log held.
        records: i64,
    },
    /// `start`.
    Start,
    /// `register_broker`.
    RegisterBroker {
        /// The broker.
        broker_id: BrokerId,
        /// Its host.
        host: String,
        /// Its port.
        port: u16,
    },
    /// `heartbeat`.
    Heartbeat {
        /// The broker.
        broker_id: BrokerId,
        /// Its registration's epoch.
        broker_epoch: i64,
        /// Whether it asks to stay fenced.
        want_fence: bool,
    },
    /// `alter_partition`.
    AlterPartition {
        /// The proposing leader.
        broker_id: BrokerId,
        /// Its registration's epoch.
        broker_epoch: i64,
        /// The topic.
        topic_id: TopicId,
        /// The partition.
        partition: i32,
        /// The leader's epoch.
        leader_epoch: i32,
        /// The partition epoch the proposal is based on.
        partition_epoch: i32,
        /// The proposed ISR.
        new_isr: BTreeSet<BrokerId>,
    },
    /// `allocate_producer_ids`.
    AllocateProducerIds {
        /// The broker.
        broker_id: BrokerId,
        /// Its registration's epoch.
        broker_epoch: i64,
    },
    /// `create_topics`.
    CreateTopics(Vec<NewTopic>),
    /// `create_partitions`.
    CreatePartitions {
        /// The topic.
        name: String,
        /// The new total.
        count: i32,
    },
    /// `delete_topics`.
    DeleteTopics(Vec<String>),
    /// `on_timer`.
    Timer(ClusterTimer),
}
