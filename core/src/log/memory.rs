//! A partition log held in memory: the model checker's log.

use bytes::{Bytes, BytesMut};

use super::validate::{self, PreparedAppend};
use super::{LogAppendInfo, LogConfig, LogError, PartitionLog};

/// The [`PartitionLog`] contract without a disk. Cloning shares batch bytes, and equality and
/// hashing cover every stored byte, so a model checker can keep whole logs in its states.
/// Nothing survives the value: durability is the segment log's job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemoryLog {
    config: LogConfig,
    batches: Vec<StoredBatch>,
    log_start_offset: i64,
    log_end_offset: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    bytes: Bytes,
}

impl MemoryLog {
    /// An empty log starting at offset 0.
    pub fn new(config: LogConfig) -> Self {
        MemoryLog {
            config,
            ..MemoryLog::default()
        }
    }

    /// The stored batches' bytes, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &Bytes> {
        self.batches.iter().map(|b| &b.bytes)
    }

    fn store(&mut self, prepared: PreparedAppend) -> LogAppendInfo {
        for meta in &prepared.batches {
            self.batches.push(StoredBatch {
                base_offset: meta.base_offset,
                last_offset: meta.last_offset,
                bytes: prepared
                    .records
                    .slice(meta.position..meta.position + meta.size),
            });
        }
        self.log_end_offset = prepared.info.last_offset + 1;
        prepared.info
    }
}

impl PartitionLog for MemoryLog {
    fn append_as_leader(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        let prepared = validate::prepare_leader_append(
            records,
            self.log_end_offset,
            leader_epoch,
            &self.config,
            now_ms,
        )?;
        Ok(self.store(prepared))
    }

    fn append_as_follower(
        &mut self,
        records: Bytes,
        _now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        let prepared = validate::prepare_follower_append(records, self.log_end_offset)?;
        Ok(self.store(prepared))
    }

    fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
    ) -> Result<Bytes, LogError> {
        if fetch_offset < self.log_start_offset || fetch_offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let first = self
            .batches
            .partition_point(|b| b.last_offset < fetch_offset);
        let limit = max_offset.unwrap_or(i64::MAX);
        let mut chosen = Vec::new();
        let mut total = 0;
        for batch in &self.batches[first..] {
            let fits = chosen.is_empty() || total + batch.bytes.len() <= max_bytes;
            if batch.last_offset >= limit || !fits {
                break;
            }
            total += batch.bytes.len();
            chosen.push(&batch.bytes);
        }
        Ok(match chosen.as_slice() {
            [] => Bytes::new(),
            [one] => (*one).clone(),
            many => {
                let mut out = BytesMut::with_capacity(total);
                for b in many {
                    out.extend_from_slice(b);
                }
                out.freeze()
            }
        })
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        let keep = self.batches.partition_point(|b| b.last_offset < offset);
        let first_removed = self.batches.get(keep).map_or(i64::MAX, |b| b.base_offset);
        self.batches.truncate(keep);
        self.log_end_offset = offset.min(first_removed);
        Ok(())
    }

    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        self.batches.clear();
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        Ok(())
    }

    fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
}
