//! Replication's effects: the actor shape of [`crate::actor`], carrying replication messages.

use super::message::Msg;

/// One thing a replication actor asks its driver to do (see [`crate::actor::Effect`]).
pub type Effect<T> = crate::actor::Effect<T, Msg>;

/// The effects of one step, in order.
pub type Effects<T> = Vec<Effect<T>>;
