//! `__cluster_metadata-0`: the controller's decisions, one record per offset, in Kafka record
//! batches on the same segment log every partition uses (so it recovers from a torn write the
//! same way, cutting at the last whole batch).

use std::path::Path;

use bytes::Bytes;
use surety_core::cluster::MetadataRecord;
use surety_core::log::{LogConfig, LogError, PartitionLog, SegmentLog};
use surety_core::record::{BatchBuilder, batches};

/// The metadata topic's name, as KRaft calls it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The controller's log.
pub struct MetadataLog {
    log: SegmentLog,
}

impl MetadataLog {
    /// Opens (recovering) the log under `log_dir`.
    pub fn open(log_dir: &Path, now_ms: i64) -> anyhow::Result<Self> {
        let dir = log_dir.join(format!("{METADATA_TOPIC}-0"));
        let log = SegmentLog::open(&dir, LogConfig::default(), now_ms)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", dir.display()))?;
        Ok(MetadataLog { log })
    }

    /// Calls `f` on every record in offset order; returns how many. A record that does not
    /// decode stops the start: replaying around it would build a different cluster.
    pub fn replay(&self, mut f: impl FnMut(i64, MetadataRecord)) -> anyhow::Result<usize> {
        let mut offset = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        let mut count = 0;
        while offset < end {
            let chunk = self.log.read(offset, 8 * 1024 * 1024, None)?;
            if chunk.is_empty() {
                break;
            }
            for_each_record(chunk, |at, record| {
                f(at, record);
                count += 1;
                offset = at + 1;
            })?;
        }
        Ok(count)
    }

    /// Appends `records` as one batch and fsyncs it; returns the new log end offset.
    pub fn append(&mut self, records: &[MetadataRecord], now_ms: i64) -> Result<i64, LogError> {
        let mut batch = BatchBuilder::new(0);
        for record in records {
            batch.append(now_ms, None, Some(&record.encode()), &[]);
        }
        self.log.append_as_leader(batch.build(), 0, now_ms)?;
        self.log.flush(now_ms)?;
        Ok(self.log.log_end_offset())
    }

    /// Whole batches from `offset`, at most `max_bytes` (at least one batch), and the log end.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64), LogError> {
        let end = self.log.log_end_offset();
        let bytes = self.log.read(offset, max_bytes, Some(end))?;
        Ok((Bytes::copy_from_slice(&bytes), end))
    }

    /// The offset the next record gets.
    pub fn end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Flushes and closes, leaving the clean-shutdown marker.
    pub fn close(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.log.close(now_ms)
    }
}

/// Decodes every record of `chunk` (whole batches), calling `f` with its offset.
pub fn for_each_record(chunk: Bytes, mut f: impl FnMut(i64, MetadataRecord)) -> anyhow::Result<()> {
    for batch in batches(chunk) {
        let batch = batch.map_err(|e| anyhow::anyhow!("metadata batch: {e}"))?;
        for record in batch
            .records()
            .map_err(|e| anyhow::anyhow!("metadata batch: {e}"))?
        {
            let record = record.map_err(|e| anyhow::anyhow!("metadata record: {e}"))?;
            let value = record.value.as_deref().unwrap_or_default();
            let decoded = MetadataRecord::decode(value)
                .map_err(|e| anyhow::anyhow!("metadata record at {}: {e:?}", record.offset))?;
            f(record.offset, decoded);
        }
    }
    Ok(())
}
