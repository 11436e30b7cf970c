//! What an actor asks its driver to do.

use super::message::Msg;
use super::types::Node;

/// One thing an actor asks its driver to do after a step. Actors decide; drivers act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<T> {
    /// Deliver `msg` to `to` (over TCP in the broker, into the network in the model).
    Send {
        /// The recipient.
        to: Node,
        /// The message.
        msg: Msg,
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
    /// Durable state (log, leader-epoch cache, high-watermark checkpoint) changed: the broker
    /// writes its checkpoints, the model saves the state that survives a crash.
    Persist,
}

/// The effects of one step, in order.
pub type Effects<T> = Vec<Effect<T>>;
