//! The one shape every core actor has: a message or a timer in, [`Effect`]s out, addressed to
//! [`Node`]s. Replication's replica and controller and the group coordinator all answer this
//! way, so the broker and the model checker drive them alike.
//!
//! What an actor asks its driver to do, and in which order the driver must do it.
//!
//! The order rule (raft-rs states the same for its `Ready`): effects are carried out in the
//! order listed, except that a driver may defer a [`Durability::Lazily`] persist. A
//! [`Durability::BeforeSends`] persist must be durable before any `Send` that follows it in the
//! same step leaves the broker: a follower that truncated, or a leader that started an epoch,
//! must not be heard acting on it and then forget it in a crash.
//!
//! What each kind covers on a Kafka broker:
//! - `BeforeSends`: the leader-epoch cache (`leader-epoch-checkpoint`), which Kafka also writes
//!   and fsyncs on every change, before the append or the fetch that follows.
//! - `Lazily`: the high watermark (`replication-offset-checkpoint`), which Kafka checkpoints every
//!   `replica.high.watermark.checkpoint.interval.ms`. A stale one is safe: a restarted replica
//!   never truncates to it (it finds divergence by epochs), and a leader recomputes its HW from
//!   the ISR's log ends. Log appends follow the flush policy (`log.flush.*`), as in Kafka:
//!   durability comes from replication, not from an fsync per append.
//!
//! The model checker saves every persist at once, whatever its kind, which explores the same
//! interleavings: a deferred write is one the model saved at a later step, and the protocol's
//! safety never rests on a lazily persisted value being current.

/// Whether later sends of the same step must wait for a [`Effect::Persist`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum Durability {
    /// Durable before any later `Send` of the step leaves (the leader-epoch cache changed).
    BeforeSends,
    /// Checkpointed when the driver next checkpoints (only the high watermark or log moved).
    Lazily,
}

/// One thing an actor asks its driver to do after a step. Actors decide; drivers act.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum Effect<T, M> {
    /// Deliver `msg` to `to` (over TCP in the broker, into the network in the model).
    Send {
        /// The recipient.
        to: Node,
        /// The message.
        msg: M,
    },
    /// Fire `timer` after `after_ms`, replacing any pending timer of the same kind.
    SetTimer {
        /// Which timer.
        timer: T,
        /// When, in milliseconds from now. The model checker fires timers at any moment.
        after_ms: u64,
    },
    /// Forget a pending timer.
    CancelTimer(T),
    /// Durable state (log, leader-epoch cache, high watermark) changed: the broker writes its
    /// checkpoints as the [`Durability`] says, the model saves the state that survives a crash.
    Persist(Durability),
}

/// The effects of one step, in order.
pub type Effects<T, M> = Vec<Effect<T, M>>;

/// Who sends or receives an actor's message. Clients are named by their connection (or, in
/// the broker, by their request), since a broker answers where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub enum Node {
    /// A broker, by `node.id`.
    Broker(u32),
    /// The controller (one, linearizable).
    Controller,
    /// A client connection.
    Client(u64),
}
