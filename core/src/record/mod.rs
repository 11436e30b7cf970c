//! Kafka record batches, message format v2 (magic 2), byte for byte as Kafka writes them.
//!
//! Surety stores batches exactly as producers send them. Validating a batch checks its length,
//! magic and CRC-32C; giving it offsets rewrites only the base offset and partition leader epoch,
//! which lie outside the CRC's range (see [`header`]); reading returns the stored bytes. Records are
//! decoded only when someone needs to look inside ([`RecordBatch::records`]), never on the append
//! path. The framing is written here over [`bytes::Bytes`] rather than taken from the
//! `kafka-protocol` crate because that crate decodes and re-encodes every record, which this plan
//! exists to avoid.

mod batch;
mod builder;
pub mod compression;
mod error;
pub mod header;
mod records;
pub mod varint;

pub use batch::{RecordBatch, batches};
pub use builder::BatchBuilder;
pub use error::BatchError;
pub use header::{
    Attributes, BatchHeader, Compression, TimestampType, compute_crc, set_base_offset,
    set_log_append_time, set_partition_leader_epoch, verify_crc,
};
pub use records::{Record, RecordHeader, Records};

#[cfg(test)]
mod tests;
