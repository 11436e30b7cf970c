//! A KRaft-style cluster's deterministic core: the records of the metadata log, the image every
//! broker builds from them, and the cluster controller that writes them.
//!
//! In KRaft one controller holds the **metadata log**; every change to the cluster is a record
//! appended to it (a broker registered, a topic created, a partition's leader elected), and
//! brokers learn the cluster by reading the log in order:
//!
//! - [`records`]: the log's [`MetadataRecord`]s and their bytes.
//! - [`MetadataImage`]: the log applied, as brokers and the controller read it. Applying a
//!   record tells the broker what to act on ([`ImageChange`]).
//! - [`QuorumController`]: the controller as a sans-IO actor. Brokers register (each
//!   registration is a new **broker epoch**, the record's offset, which fences requests from
//!   earlier incarnations) and heartbeat; a broker whose session expires is fenced, and a
//!   fenced broker leads nothing. Topics are created with Kafka's checks and round-robin
//!   placement. Each partition is run by replication's [`Controller`](crate::replication::Controller),
//!   whose elections and ISR changes become `PartitionChange` records.
//!
//! Nothing here does I/O, reads a clock or draws a random number: the driver appends the
//! records, fires the timers and passes fresh topic ids in.

mod image;
mod placement;
mod quorum;
pub mod records;
mod topics;

pub use image::{BrokerImage, ImageChange, MetadataImage, PartitionImage, TopicImage};
pub use quorum::{
    ClusterEffects, ClusterTimer, CreatedTopic, HeartbeatAnswer, MAX_RECORDS_PER_USER_OP, NewTopic,
    QuorumBrokenVariant, QuorumConfig, QuorumController, Refusal,
};
pub use records::{MetadataDecodeError, MetadataRecord, TopicId};

#[cfg(test)]
mod tests;
