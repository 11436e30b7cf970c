//! Log compaction (Kafka's `LogCleaner`) for `cleanup.policy=compact`: a compacted log keeps
//! at least the newest record of every key, so it is a table of the latest values that any
//! consumer can rebuild by reading it from the start.
//!
//! The rules, which decide alone what a cleaning keeps:
//! - Only segments before the active one, and wholly below the high watermark, are cleaned.
//! - The newest offset of every key in the part not yet cleaned (the dirty part) is collected
//!   first ([`OffsetMap`]); a record is dropped if a newer record of its key is in that part.
//!   So the newest record of a key is never dropped.
//! - A tombstone (null value) that is the newest of its key is dropped only once its timestamp
//!   is older than `delete.retention.ms`: until then a consumer that is behind still sees the
//!   delete.
//! - Kept records keep their offsets and order; a batch keeps its producer id, epoch, base
//!   sequence, leader epoch and compression, and a batch left empty disappears.
//! - A log is cleaned again only once its dirty part is at least `min.cleanable.dirty.ratio` of
//!   the cleanable bytes.

use std::collections::HashMap;

use bytes::Bytes;

use crate::record::{BatchBuilder, BatchError, Record, RecordBatch};

/// The newest offset of each key in the dirty part of a log.
#[derive(Clone, Debug, Default)]
pub struct OffsetMap {
    newest: HashMap<Bytes, i64>,
}

impl OffsetMap {
    /// Records every keyed record of `batch`.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<(), BatchError> {
        for record in batch.records()? {
            let record = record?;
            if let Some(key) = record.key {
                let newest = self.newest.entry(key).or_insert(record.offset);
                *newest = (*newest).max(record.offset);
            }
        }
        Ok(())
    }

    /// Keys seen.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether no key was seen.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }
}

/// Whether a cleaning keeps `record`, given the dirty part's newest offsets and the time before
/// which a tombstone may go.
pub fn keeps(map: &OffsetMap, record: &Record, tombstone_horizon_ms: i64) -> bool {
    // A record without a key cannot be compacted; a compacted topic refuses them, and one that
    // predates compaction being switched on is dropped, as Kafka's cleaner drops it.
    let Some(key) = &record.key else {
        return false;
    };
    if map
        .newest
        .get(key)
        .is_some_and(|&newest| record.offset < newest)
    {
        return false;
    }
    !(record.value.is_none() && record.timestamp < tombstone_horizon_ms)
}

/// `batch` with only the records `keep` keeps: the very same bytes if it keeps them all,
/// `None` if it keeps none.
pub fn filter_batch(
    batch: &RecordBatch,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<Option<Bytes>, BatchError> {
    let records: Vec<Record> = batch.records()?.collect::<Result<_, _>>()?;
    let kept: Vec<&Record> = records.iter().filter(|r| keep(r)).collect();
    if kept.len() == records.len() {
        return Ok(Some(batch.as_bytes().clone()));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let h = batch.header();
    let mut builder = BatchBuilder::new(h.base_offset)
        .producer(h.producer_id, h.producer_epoch, h.base_sequence)
        .partition_leader_epoch(h.partition_leader_epoch)
        .attributes(h.attributes);
    for r in kept {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|h| (&h.key[..], h.value.as_deref()))
            .collect();
        let delta = i32::try_from(r.offset - h.base_offset)
            .map_err(|_| BatchError::MalformedRecord("an offset delta beyond 32 bits"))?;
        builder.append_at(
            delta,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
        );
    }
    Ok(Some(builder.build()))
}

/// What a cleaning did, for the broker's log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Segments rewritten (or removed, when nothing in them was kept).
    pub segments_rewritten: usize,
    /// Bytes of the cleanable segments before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// Distinct keys in the dirty part.
    pub keys: usize,
}
