//! Stateright models over `surety-core`'s protocol actors.
//!
//! Each model runs the very actors the broker runs, under a checker that explores every
//! interleaving of message deliveries, drops, timer firings, crashes and restarts within a bound,
//! and checks named properties (see `specs/`). Deliberately broken variants show that the
//! properties can fail.

pub mod check;
pub mod cluster;
pub mod group;
pub mod harness;
pub mod producer;
pub mod replay;
pub mod replication;
pub mod symmetry;
