//! Stateright models of Surety's protocols.
//!
//! This crate will wrap `surety-core`'s sans-IO actors (replication, consumer-group rebalance and
//! the producer's sender) in Stateright `ActorModel`s, name the properties the checker verifies,
//! and provide the `check` / `explore` command line. It drives the very actors the broker runs, so
//! whatever the checker proves is a statement about production code. Nothing lives here yet: the
//! actors it checks arrive with the replication issue.
