//! One partition as the broker serves it: the durable segment log and the idempotent-producer
//! state, behind one lock so that the sequence check, the offset assignment and the append
//! happen as one step (two retries of a batch can never both pass the check).
//!
//! A single broker is the partition's only replica, so its high watermark is its log end
//! offset. Replication (a later step) replaces this with core's `Replica` actor.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use surety_core::errors::Errors;
use surety_core::fetch::IsolationLevel;
use surety_core::log::{LogConfig, LogError, PartitionLog, SegmentLog};
use surety_core::producer_state::{
    AppendError, DuplicateAnswer, IdempotentAppend, Landed, ProducerBatch, ProducerStateManager,
    SequenceError,
};
use surety_core::record::{BatchHeader, RecordBatch, batches};

/// Where a produced batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of its first record.
    pub base_offset: i64,
    /// The broker's timestamp if the topic uses `LogAppendTime`, else -1.
    pub log_append_time: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
    /// Whether the batch had been appended before (an idempotent retry) and was not written again.
    pub duplicate: bool,
    /// Records appended (0 for a duplicate).
    pub records: i64,
}

/// Why a produced batch was not appended; each carries a Kafka error.
#[derive(Debug)]
pub enum ProduceError {
    /// The log refused it (corrupt, too large, storage failure).
    Log(LogError),
    /// The idempotent-producer check refused it.
    Sequence(SequenceError),
    /// Produce v3+ carries exactly one record batch per partition.
    NotOneBatch,
}

impl ProduceError {
    /// The error the produce response carries for the batch's partition.
    pub fn error(&self) -> Errors {
        match self {
            ProduceError::Log(e) => e.error(),
            ProduceError::Sequence(e) => e.error(),
            ProduceError::NotOneBatch => Errors::InvalidRecord,
        }
    }
}

impl std::fmt::Display for ProduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProduceError::Log(e) => write!(f, "{e}"),
            ProduceError::Sequence(e) => write!(f, "{e}"),
            ProduceError::NotOneBatch => {
                write!(
                    f,
                    "a produce request must carry exactly one record batch per partition"
                )
            }
        }
    }
}

/// What a fetch read.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole stored batches, as written.
    pub records: Bytes,
    /// The high watermark (the log end offset on a single broker).
    pub high_watermark: i64,
    /// The last stable offset (the high watermark, with no transactions).
    pub last_stable_offset: i64,
    /// The first offset the log holds.
    pub log_start_offset: i64,
}

struct State {
    log: SegmentLog,
    producers: ProducerStateManager,
}

/// A partition's log and producer state.
pub struct Partition {
    state: Mutex<State>,
}

impl Partition {
    /// Opens (recovering if needed) the log in `dir` and rebuilds producer state from it.
    pub fn open(dir: &std::path::Path, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        let log = SegmentLog::open(dir, config, now_ms)?;
        let report = log.recovery_report();
        if !report.clean_shutdown && report.segments_found > 0 {
            tracing::info!(
                "{}: recovered after an unclean shutdown: {} segments scanned, {} bytes of torn \
                 or unflushed data truncated, log end offset {}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                report.segments_recovered,
                report.bytes_truncated,
                log.log_end_offset()
            );
        }
        let producers = ProducerStateManager::rebuild(&log)?;
        if !producers.is_empty() {
            tracing::info!(
                "{}: rebuilt the state of {} idempotent producers from the log (log end offset {})",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                producers.len(),
                log.log_end_offset()
            );
        }
        Ok(Partition {
            state: Mutex::new(State { log, producers }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the log as consistent as a crash would, and
        // every log operation checks its own state; serving on is what Kafka would do.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one producer batch, assigning offsets, unless it is a retry of one already
    /// appended (then answers with that batch's offsets).
    pub fn append(&self, records: Bytes, now_ms: i64) -> Result<Appended, ProduceError> {
        let header =
            BatchHeader::parse(&records).map_err(|e| ProduceError::Log(LogError::Corrupt(e)))?;
        if header.size_in_bytes() < records.len() {
            return Err(ProduceError::NotOneBatch);
        }
        let batch = ProducerBatch::from_header(&header);
        let mut guard = self.lock();
        let state = &mut *guard;
        let log_end = state.log.log_end_offset();
        let log = &mut state.log;
        let done = state
            .producers
            .append(&batch, DuplicateAnswer::FirstWrite, log_end, || {
                let info = log.append_as_leader(records, 0, now_ms)?;
                let landed = Landed {
                    first_offset: info.first_offset,
                    last_offset: info.last_offset,
                    max_timestamp: info.max_timestamp,
                };
                Ok((info, landed))
            })
            .map_err(|e| match e {
                AppendError::Sequence(e) => ProduceError::Sequence(e),
                AppendError::Append(e) => ProduceError::Log(e),
            })?;
        let log_start_offset = state.log.log_start_offset();
        Ok(match done {
            IdempotentAppend::Duplicate(first) => Appended {
                base_offset: first.first_offset,
                log_append_time: -1,
                log_start_offset,
                duplicate: true,
                records: 0,
            },
            IdempotentAppend::Appended(info) => Appended {
                base_offset: info.first_offset,
                log_append_time: info.log_append_time,
                log_start_offset,
                duplicate: false,
                records: info.record_count,
            },
        })
    }

    /// Reads whole batches from `fetch_offset` on, at most `max_bytes` (but at least one batch),
    /// and none at or past what `isolation` lets a consumer see.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<ReadResult, LogError> {
        let state = self.lock();
        // A single broker with no transactions: HW = LSO = log end offset.
        let high_watermark = state.log.log_end_offset();
        let last_stable_offset = high_watermark;
        let bound = isolation.upper_bound(high_watermark, last_stable_offset);
        let records = state.log.read(fetch_offset, max_bytes, Some(bound))?;
        Ok(ReadResult {
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset: state.log.log_start_offset(),
        })
    }

    /// `(log start offset, log end offset)`.
    pub fn offsets(&self) -> (i64, i64) {
        let state = self.lock();
        (state.log.log_start_offset(), state.log.log_end_offset())
    }

    /// The first record at or after `timestamp`, as (timestamp, offset).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.lock().log.fetch_offset_by_timestamp(timestamp)
    }

    /// The record with the largest timestamp, as (timestamp, offset) (ListOffsets -3, KIP-734);
    /// the first such record if several share it. Scans the log: an admin query, not a hot path.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let state = self.lock();
        let mut best: Option<(i64, RecordBatch)> = None;
        for_each_batch(&state.log, |batch| {
            let ts = batch.header().max_timestamp;
            if best.as_ref().is_none_or(|(t, _)| ts > *t) {
                best = Some((ts, batch));
            }
        })?;
        Ok(best.map(|(ts, batch)| {
            let exact = batch.records().ok().and_then(|records| {
                records
                    .filter_map(Result::ok)
                    .find(|r| r.timestamp == ts)
                    .map(|r| r.offset)
            });
            (ts, exact.unwrap_or_else(|| batch.last_offset()))
        }))
    }

    /// The log's settings.
    pub fn config(&self) -> LogConfig {
        self.lock().log.config().clone()
    }

    /// Runs the time-based flush policy (`log.flush.interval.ms`).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        self.lock().log.flush_if_due(now_ms)
    }

    /// Deletes segments past retention; returns how many.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let mut state = self.lock();
        let end = state.log.log_end_offset();
        let deleted = state.log.delete_old_segments(now_ms, end)?;
        if deleted > 0 {
            let start = state.log.log_start_offset();
            state.producers.remove_below(start);
        }
        Ok(deleted)
    }

    /// Flushes and closes the log, leaving the clean-shutdown marker.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.lock().log.close(now_ms)
    }
}

/// Calls `f` on every batch of the log, in offset order.
fn for_each_batch(log: &SegmentLog, mut f: impl FnMut(RecordBatch)) -> Result<(), LogError> {
    const CHUNK: usize = 8 * 1024 * 1024;
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let chunk = log.read(offset, CHUNK, None)?;
        if chunk.is_empty() {
            break;
        }
        for batch in batches(chunk) {
            let batch = batch.map_err(LogError::Corrupt)?;
            offset = offset.max(batch.header().next_offset());
            f(batch);
        }
    }
    Ok(())
}
