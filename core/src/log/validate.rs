//! Append validation and offset assignment, shared by every [`super::PartitionLog`].
//!
//! Batches are checked on the bytes as received, then patched in place: base offset and leader
//! epoch (outside the CRC), and for `LogAppendTime` topics the timestamp fields and CRC. Records
//! are never decoded or re-encoded here.

use bytes::{Bytes, BytesMut};

use super::{LogAppendInfo, LogConfig, LogError};
use crate::record::header::{self, BatchHeader};
use crate::record::{BatchError, TimestampType};

/// One batch of a prepared append, as the storage layer needs it for indexing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    /// Where the batch starts within the appended buffer.
    pub position: usize,
    /// Its size in bytes.
    pub size: usize,
    /// Its (assigned) base offset.
    pub base_offset: i64,
    /// Its last offset.
    pub last_offset: i64,
    /// Its max timestamp (after any log-append-time stamping).
    pub max_timestamp: i64,
}

/// Validated, offset-assigned bytes ready to be stored.
#[derive(Debug)]
pub(crate) struct PreparedAppend {
    pub records: Bytes,
    pub batches: Vec<BatchMeta>,
    pub info: LogAppendInfo,
}

/// Walks the batches of `records`, checking framing and CRC of each.
fn scan(records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, LogError> {
    if records.is_empty() {
        return Err(LogError::InvalidRecord("no record batches"));
    }
    let mut batches = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        let header = BatchHeader::parse(rest)?;
        let size = header.size_in_bytes();
        if size > rest.len() {
            return Err(BatchError::Truncated {
                needed: size,
                available: rest.len(),
            }
            .into());
        }
        header::verify_crc(&rest[..size], &header)?;
        batches.push((pos, header));
        pos += size;
    }
    Ok(batches)
}

fn into_mut(records: Bytes) -> BytesMut {
    // Zero-copy when the caller holds the only reference, as a broker does for a request buffer.
    records
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

/// Prepares a producer's append at `next_offset` under `leader_epoch`.
pub(crate) fn prepare_leader_append(
    records: Bytes,
    next_offset: i64,
    leader_epoch: i32,
    config: &LogConfig,
    now_ms: i64,
) -> Result<PreparedAppend, LogError> {
    let scanned = scan(&records)?;
    for (_, h) in &scanned {
        if h.size_in_bytes() > config.max_message_bytes as usize {
            return Err(LogError::MessageTooLarge {
                size: h.size_in_bytes(),
                max: config.max_message_bytes,
            });
        }
        // Producers write dense batches: offset deltas 0..count. Anything else would give the
        // records offsets that other batches also claim.
        if h.record_count < 1 || h.last_offset_delta != h.record_count - 1 {
            return Err(LogError::InvalidRecord(
                "a produced batch must hold records at offset deltas 0 to count-1",
            ));
        }
    }
    if config.cleanup_policy.compact {
        // The cleaner keeps the newest record per key: a record without one could never be
        // kept or replaced. Kafka refuses it the same way.
        for (pos, h) in &scanned {
            let batch =
                crate::record::RecordBatch::parse(records.slice(*pos..*pos + h.size_in_bytes()))
                    .map_err(LogError::Corrupt)?;
            for record in batch.records().map_err(LogError::Corrupt)? {
                if record.map_err(LogError::Corrupt)?.key.is_none() {
                    return Err(LogError::InvalidRecord(
                        "a compacted topic takes only records with keys",
                    ));
                }
            }
        }
    }
    let log_append_time = config.message_timestamp_type == TimestampType::LogAppendTime;
    let mut buf = into_mut(records);
    let mut batches = Vec::with_capacity(scanned.len());
    let mut offset = next_offset;
    let mut max_timestamp = -1;
    let mut record_count = 0;
    for (pos, h) in &scanned {
        let batch = &mut buf[*pos..*pos + h.size_in_bytes()];
        header::set_base_offset(batch, offset);
        header::set_partition_leader_epoch(batch, leader_epoch);
        if log_append_time {
            header::set_log_append_time(batch, now_ms);
        }
        let batch_max = if log_append_time {
            now_ms
        } else {
            h.max_timestamp
        };
        max_timestamp = max_timestamp.max(batch_max);
        record_count += i64::from(h.record_count);
        let last_offset = offset + i64::from(h.last_offset_delta);
        batches.push(BatchMeta {
            position: *pos,
            size: h.size_in_bytes(),
            base_offset: offset,
            last_offset,
            max_timestamp: batch_max,
        });
        offset = last_offset + 1;
    }
    let size_in_bytes = buf.len();
    Ok(PreparedAppend {
        records: buf.freeze(),
        info: LogAppendInfo {
            first_offset: next_offset,
            last_offset: offset - 1,
            max_timestamp,
            log_append_time: if log_append_time { now_ms } else { -1 },
            record_count,
            batch_count: batches.len(),
            size_in_bytes,
        },
        batches,
    })
}

/// Prepares a replicated append to a log that ends at `log_end_offset`.
pub(crate) fn prepare_follower_append(
    records: Bytes,
    log_end_offset: i64,
) -> Result<PreparedAppend, LogError> {
    let scanned = scan(&records)?;
    let mut batches = Vec::with_capacity(scanned.len());
    let mut expected = log_end_offset;
    let mut max_timestamp = -1;
    let mut record_count = 0;
    for (pos, h) in &scanned {
        if h.base_offset < expected {
            return Err(LogError::UnexpectedAppendOffset {
                first_offset: h.base_offset,
                expected_at_least: expected,
            });
        }
        max_timestamp = max_timestamp.max(h.max_timestamp);
        record_count += i64::from(h.record_count);
        batches.push(BatchMeta {
            position: *pos,
            size: h.size_in_bytes(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
        expected = h.next_offset();
    }
    let first = scanned[0].1;
    if expected - 1 - first.base_offset > i64::from(i32::MAX) {
        // One append lands in one segment, whose index holds offsets relative to its base.
        return Err(LogError::InvalidRecord(
            "replicated batches span more offsets than one segment can index",
        ));
    }
    Ok(PreparedAppend {
        info: LogAppendInfo {
            first_offset: first.base_offset,
            last_offset: expected - 1,
            max_timestamp,
            log_append_time: -1,
            record_count,
            batch_count: batches.len(),
            size_in_bytes: records.len(),
        },
        records,
        batches,
    })
}
