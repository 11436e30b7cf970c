//! The partition log: an ordered, offset-addressed sequence of record batches.
//!
//! [`PartitionLog`] is the small contract the replication actors need. Two implementations keep
//! it: [`SegmentLog`], the durable directory of segments the broker runs on, and [`MemoryLog`],
//! a cheap, hashable copy of the same behaviour for the model checker. Both validate and assign
//! offsets through the same code ([`validate`]), so they cannot drift apart on what they accept.
//!
//! The log knows nothing of high watermarks or clocks: callers pass the current time and any
//! upper bound on what may be read, so the same decisions replay identically under the checker.

mod checkpoint;
pub mod checkpoint_file;
pub mod cleaner;
mod config;
mod error;
mod index_file;
mod io;
mod memory;
mod offset_index;
mod scan;
mod segment;
mod segment_log;
mod time_index;
mod validate;

use bytes::Bytes;

pub use checkpoint::{OwnFile, RecoveryPointStore};
pub use config::{CleanupPolicy, ConfigError, LOG_CONFIG_KEYS, LogConfig};
pub use error::LogError;
pub use memory::MemoryLog;
pub use segment_log::{RecoveryReport, SegmentLog};

#[cfg(test)]
mod tests;

/// What an append did: the offsets it assigned and the timestamps Kafka reports back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogAppendInfo {
    /// Offset of the first record appended.
    pub first_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The largest record timestamp appended.
    pub max_timestamp: i64,
    /// The broker's clock stamped on the batches with `LogAppendTime`, else -1 (as in a
    /// ProduceResponse).
    pub log_append_time: i64,
    /// Records appended, summed over the batch headers.
    pub record_count: i64,
    /// Batches appended.
    pub batch_count: usize,
    /// Bytes appended.
    pub size_in_bytes: usize,
}

/// The operations a partition replica needs from its log, whichever medium holds it.
pub trait PartitionLog {
    /// Appends a producer's batches: validates them (length, magic, CRC, `message.max.bytes`,
    /// record counts), gives them consecutive offsets from the log end and stamps `leader_epoch`,
    /// all in place. Fails without changing the log if any batch is bad.
    fn append_as_leader(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError>;

    /// Appends batches fetched from the leader, keeping their offsets and epochs. Offsets must
    /// start at or after the log end and increase; gaps (from compaction) are allowed.
    fn append_as_follower(
        &mut self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError>;

    /// Whole stored batches from the one containing `fetch_offset` on, up to `max_bytes` (but at
    /// least one batch, so a consumer can always make progress) and only batches that end before
    /// `max_offset` when one is given (a high watermark, say). Reading at the log end returns
    /// nothing; outside `[log start, log end]` is [`LogError::OffsetOutOfRange`].
    ///
    /// A [`SegmentLog`] may return a memory map of its files rather than a copy, so the bytes
    /// are only as good as the file under them: a later truncation of the log can cut them off,
    /// and touching a cut-off mapped page in user space raises SIGBUS. Read them in user space
    /// only while the log cannot be truncated (under the lock the read took); past that, only
    /// hand them to the kernel (`write`, `writev`), which fails with `EFAULT` instead.
    fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
    ) -> Result<Bytes, LogError>;

    /// Removes every batch holding an offset at or past `offset`. The log end becomes the
    /// smaller of `offset` and the first removed batch's base offset. Below the log start, the
    /// log is emptied and restarts at `offset`.
    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError>;

    /// Empties the log and restarts it at `offset`, for a follower whose position the leader no
    /// longer holds.
    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError>;

    /// The first offset the log still holds.
    fn log_start_offset(&self) -> i64;

    /// The offset the next appended record will get.
    fn log_end_offset(&self) -> i64;
}

/// Calls `f` with the header of every batch of `log`, in offset order: how state kept beside the
/// log (idempotent producers, the leader-epoch cache) is rebuilt from it at startup.
pub fn for_each_batch_header<L: PartitionLog>(
    log: &L,
    mut f: impl FnMut(&crate::record::BatchHeader),
) -> Result<(), LogError> {
    const CHUNK: usize = 8 * 1024 * 1024;
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let chunk = log.read(offset, CHUNK, None)?;
        let mut rest: &[u8] = &chunk;
        let before = offset;
        while let Ok(header) = crate::record::BatchHeader::parse(rest) {
            let size = header.size_in_bytes();
            if size > rest.len() {
                break;
            }
            f(&header);
            offset = offset.max(header.next_offset());
            rest = &rest[size..];
        }
        if offset == before {
            break;
        }
    }
    Ok(())
}
