//! Idempotent producers, as a partition leader sees them: which batches it has already appended
//! for each producer id, so a retried batch is answered with its original offsets instead of
//! being written twice, and a gap in sequence numbers is refused instead of silently reordering.
//!
//! This is Kafka's `ProducerStateManager`, reduced to what a partition needs without
//! transactions. Per producer id it keeps the producer's epoch and the metadata of the last
//! [`MAX_CACHED_BATCHES`] batches it appended (the most a client keeps in flight with
//! idempotence on: `max.in.flight.requests.per.connection` ≤ 5). The rules are Kafka's:
//!
//! - a batch from an older epoch than the producer's current one is fenced
//!   ([`SequenceError::InvalidProducerEpoch`]);
//! - a batch from a newer epoch must start at sequence 0;
//! - within an epoch, a batch whose sequence range equals a cached batch's is a duplicate: the
//!   broker appends nothing and answers with the cached offsets;
//! - a batch that starts below the next expected sequence but matches no cached batch is an old
//!   duplicate the cache has forgotten ([`SequenceError::DuplicateSequence`], which clients treat as
//!   already written);
//! - any other sequence that is not the next one is a gap ([`SequenceError::OutOfOrderSequence`]);
//! - a producer the partition has never seen (or whose records retention deleted) may start at
//!   any sequence, since the broker cannot tell what it lost.
//!
//! The state is rebuilt after a restart by replaying the batch headers of the log
//! ([`ProducerStateManager::replay`]), so it survives a crash exactly as far as the log does.
//! Deciding here, in core, keeps the rule testable without a network and shared by every driver.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::errors::Errors;
use crate::log::{LogError, PartitionLog};
use crate::record::BatchHeader;
use crate::record::header::NO_PRODUCER_ID;

/// How many appended batches per producer are remembered for duplicate detection (Kafka's
/// `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`).
pub const MAX_CACHED_BATCHES: usize = 5;

/// Where one appended batch of an idempotent producer landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchMetadata {
    /// Sequence number of the batch's first record.
    pub first_seq: i32,
    /// Sequence number of the batch's last record.
    pub last_seq: i32,
    /// Offset of the batch's first record.
    pub first_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
    /// The batch's max timestamp (or log append time), returned again for a duplicate.
    pub timestamp: i64,
}

/// The identity and sequence range of a batch about to be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer id, or -1 for a non-idempotent producer.
    pub producer_id: i64,
    /// The producer's epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
}

impl ProducerBatch {
    /// The producer fields of a batch header; the last sequence wraps as Kafka's does.
    pub fn from_header(header: &BatchHeader) -> Self {
        let last_seq = if header.base_sequence < 0 {
            header.base_sequence
        } else {
            increment_sequence(header.base_sequence, header.last_offset_delta)
        };
        ProducerBatch {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq,
        }
    }

    /// Whether the batch comes from an idempotent producer at all.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }
}

/// What to do with a batch that passed the sequence check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it, then [`ProducerStateManager::record`] where it landed.
    Append,
    /// It was appended before: answer with these offsets and append nothing.
    Duplicate(BatchMetadata),
}

/// Where an appended batch landed, as [`ProducerStateManager::append`] records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its max timestamp (or the log append time), returned again to a duplicate.
    pub max_timestamp: i64,
}

/// What [`ProducerStateManager::append`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdempotentAppend<T> {
    /// Appended; `T` is what the append returned.
    Appended(T),
    /// Written before, at these offsets: nothing appended.
    Duplicate(BatchMetadata),
}

/// Why [`ProducerStateManager::append`] appended nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError<E> {
    /// The sequence check refused the batch.
    Sequence(SequenceError),
    /// The log refused it.
    Append(E),
}

/// How a duplicate is answered. Only [`DuplicateAnswer::FirstWrite`] is Kafka's; the other is
/// deliberately wrong, so that the producer model can show `check producer` catches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DuplicateAnswer {
    /// With the offsets the batch was first written at.
    #[default]
    FirstWrite,
    /// Broken: with the current log end, as if the retry had been appended there. The producer
    /// then believes its batch sits where a later one does (`duplicate-at-log-end`).
    LogEnd,
}

/// Why a batch was refused; each maps to the Kafka error code a Java broker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceError {
    /// `INVALID_PRODUCER_EPOCH` (47): a newer epoch of this producer id has written.
    InvalidProducerEpoch {
        /// The batch's epoch.
        batch_epoch: i16,
        /// The producer's current epoch.
        current_epoch: i16,
    },
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER` (45): the batch does not continue the producer's sequence.
    OutOfOrderSequence {
        /// The batch's first sequence.
        first_seq: i32,
        /// The sequence the partition expected next, or -1 if the epoch is new.
        expected: i32,
    },
    /// `DUPLICATE_SEQUENCE_NUMBER` (46): an earlier batch that the cache no longer holds.
    DuplicateSequence {
        /// The batch's first sequence.
        first_seq: i32,
    },
}

impl SequenceError {
    /// The error the broker answers with: the producer tells these apart (a duplicate counts as
    /// written, an out-of-order batch may be retried while an earlier one is outstanding).
    pub fn error(&self) -> Errors {
        match self {
            SequenceError::InvalidProducerEpoch { .. } => Errors::InvalidProducerEpoch,
            SequenceError::OutOfOrderSequence { .. } => Errors::OutOfOrderSequenceNumber,
            SequenceError::DuplicateSequence { .. } => Errors::DuplicateSequenceNumber,
        }
    }

    /// [`error`](Self::error) as the number a response carries.
    pub fn error_code(&self) -> i16 {
        self.error().code()
    }
}

impl fmt::Display for SequenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceError::InvalidProducerEpoch {
                batch_epoch,
                current_epoch,
            } => write!(
                f,
                "producer epoch {batch_epoch} is older than the current epoch {current_epoch}"
            ),
            SequenceError::OutOfOrderSequence {
                first_seq,
                expected,
            } => write!(
                f,
                "out of order sequence number {first_seq} (expected {expected})"
            ),
            SequenceError::DuplicateSequence { first_seq } => write!(
                f,
                "sequence number {first_seq} was written before and is no longer cached"
            ),
        }
    }
}

impl std::error::Error for SequenceError {}

/// One producer id's state in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct ProducerStateEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

impl ProducerStateEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn find_duplicate(&self, batch: &ProducerBatch) -> Option<BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
            .copied()
    }

    fn push(&mut self, metadata: BatchMetadata) {
        if self.batches.len() == MAX_CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(metadata);
    }
}

/// The idempotent-producer state of one partition. Hashable, so the producer model can run
/// the very same checks inside its broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerStateEntry>,
}

impl ProducerStateManager {
    /// A partition that has seen no producer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides whether `batch` may be appended. Call with the partition locked, then append and
    /// [`record`](Self::record) under the same lock, so two retries cannot both pass.
    pub fn check(&self, batch: &ProducerBatch) -> Result<SequenceCheck, SequenceError> {
        if !batch.is_idempotent() {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if batch.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidProducerEpoch {
                batch_epoch: batch.producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        if batch.producer_epoch > entry.epoch {
            if batch.first_seq != 0 {
                return Err(SequenceError::OutOfOrderSequence {
                    first_seq: batch.first_seq,
                    expected: -1,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        if let Some(duplicate) = entry.find_duplicate(batch) {
            return Ok(SequenceCheck::Duplicate(duplicate));
        }
        let Some(last_seq) = entry.last_seq() else {
            return Ok(SequenceCheck::Append);
        };
        let expected = increment_sequence(last_seq, 1);
        if batch.first_seq == expected {
            return Ok(SequenceCheck::Append);
        }
        let oldest = entry.batches.front().map_or(last_seq, |b| b.first_seq);
        if batch.first_seq >= 0 && batch.first_seq < oldest && oldest <= last_seq {
            return Err(SequenceError::DuplicateSequence {
                first_seq: batch.first_seq,
            });
        }
        Err(SequenceError::OutOfOrderSequence {
            first_seq: batch.first_seq,
            expected,
        })
    }

    /// Remembers where an appended batch landed.
    pub fn record(&mut self, batch: &ProducerBatch, metadata: BatchMetadata) {
        if !batch.is_idempotent() {
            return;
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerStateEntry {
                epoch: batch.producer_epoch,
                batches: VecDeque::new(),
            });
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        entry.push(metadata);
    }

    /// Kafka's idempotent append as one step: the sequence check, then `append` (which assigns
    /// the batch its offsets and writes it), then recording where it landed. The broker calls it
    /// with the partition locked and the log's append, the producer model with its small log:
    /// the same rule in both, so what `check producer` proves is what the broker does. A
    /// duplicate is answered with the offsets it was first written at and appends nothing.
    ///
    /// `log_end_offset` is only read by the deliberately broken [`DuplicateAnswer::LogEnd`].
    pub fn append<T, E>(
        &mut self,
        batch: &ProducerBatch,
        duplicates: DuplicateAnswer,
        log_end_offset: i64,
        append: impl FnOnce() -> Result<(T, Landed), E>,
    ) -> Result<IdempotentAppend<T>, AppendError<E>> {
        match self.check(batch).map_err(AppendError::Sequence)? {
            SequenceCheck::Duplicate(mut first) => {
                if duplicates == DuplicateAnswer::LogEnd {
                    first.first_offset = log_end_offset;
                }
                Ok(IdempotentAppend::Duplicate(first))
            }
            SequenceCheck::Append => {
                let (appended, landed) = append().map_err(AppendError::Append)?;
                self.record(
                    batch,
                    BatchMetadata {
                        first_seq: batch.first_seq,
                        last_seq: batch.last_seq,
                        first_offset: landed.first_offset,
                        last_offset: landed.last_offset,
                        timestamp: landed.max_timestamp,
                    },
                );
                Ok(IdempotentAppend::Appended(appended))
            }
        }
    }

    /// The state of a partition whose log is `log`, rebuilt by reading every batch header back
    /// (at startup). Headers only: recovery has already checked the CRCs of what it did not
    /// trust, and the records are not needed.
    pub fn rebuild<L: PartitionLog>(log: &L) -> Result<Self, LogError> {
        let mut producers = ProducerStateManager::new();
        crate::log::for_each_batch_header(log, |header| producers.replay(header))?;
        Ok(producers)
    }

    /// Replays one batch read back from the log (at startup) or appended as a follower, as if
    /// it had just been appended as a leader.
    pub fn replay(&mut self, header: &BatchHeader) {
        let batch = ProducerBatch::from_header(header);
        if !batch.is_idempotent() || batch.first_seq < 0 {
            return;
        }
        let metadata = BatchMetadata {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            timestamp: header.max_timestamp,
        };
        if let Some(entry) = self.producers.get(&batch.producer_id)
            && batch.producer_epoch < entry.epoch
        {
            return;
        }
        self.record(&batch, metadata);
    }

    /// Forgets producers whose batches all lie below `log_start_offset` (retention removed
    /// them); they may then start again at any sequence, as in Kafka.
    pub fn remove_below(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, entry| {
            entry
                .batches
                .back()
                .is_some_and(|b| b.last_offset >= log_start_offset)
        });
    }

    /// How many producer ids the partition remembers.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether the partition remembers no producer.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// `sequence + increment`, wrapping from `i32::MAX` to 0 as Kafka's sequences do.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::header::NO_PRODUCER_EPOCH;

    const PID: i64 = 7;

    fn batch(epoch: i16, first_seq: i32, records: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: PID,
            producer_epoch: epoch,
            first_seq,
            last_seq: increment_sequence(first_seq, records - 1),
        }
    }

    /// Checks and, if told to append, records at `offset`; returns the check.
    fn append(
        state: &mut ProducerStateManager,
        b: ProducerBatch,
        offset: i64,
    ) -> Result<SequenceCheck, SequenceError> {
        let check = state.check(&b)?;
        if check == SequenceCheck::Append {
            let count = i64::from(b.last_seq.wrapping_sub(b.first_seq)) + 1;
            state.record(
                &b,
                BatchMetadata {
                    first_seq: b.first_seq,
                    last_seq: b.last_seq,
                    first_offset: offset,
                    last_offset: offset + count - 1,
                    timestamp: 0,
                },
            );
        }
        Ok(check)
    }

    #[test]
    fn the_one_step_append_checks_appends_records_and_answers_duplicates() {
        let mut state = ProducerStateManager::new();
        let mut log: Vec<ProducerBatch> = Vec::new();
        let mut step = |state: &mut ProducerStateManager, b: ProducerBatch, answer| {
            let end = log.len() as i64;
            state.append(&b, answer, end, || {
                log.push(b);
                let landed = Landed {
                    first_offset: end,
                    last_offset: end,
                    max_timestamp: 9,
                };
                Ok::<_, ()>((end, landed))
            })
        };
        let first = batch(0, 0, 1);
        assert_eq!(
            step(&mut state, first, DuplicateAnswer::FirstWrite),
            Ok(IdempotentAppend::Appended(0))
        );
        assert_eq!(
            step(&mut state, batch(0, 1, 1), DuplicateAnswer::FirstWrite),
            Ok(IdempotentAppend::Appended(1))
        );
        // A retry of the first batch appends nothing and gets its first offsets back ...
        let Ok(IdempotentAppend::Duplicate(m)) =
            step(&mut state, first, DuplicateAnswer::FirstWrite)
        else {
            panic!("a duplicate");
        };
        assert_eq!((m.first_offset, m.timestamp), (0, 9));
        // ... unless the broken answer hands it the log end, where another batch will go.
        let Ok(IdempotentAppend::Duplicate(m)) = step(&mut state, first, DuplicateAnswer::LogEnd)
        else {
            panic!("a duplicate");
        };
        assert_eq!(m.first_offset, 2);
        // A gap is refused before the log is touched.
        assert!(matches!(
            step(&mut state, batch(0, 5, 1), DuplicateAnswer::FirstWrite),
            Err(AppendError::Sequence(
                SequenceError::OutOfOrderSequence { .. }
            ))
        ));
        // A failed append records nothing: the same batch may be tried again.
        let failed = state.append(&batch(0, 2, 1), DuplicateAnswer::FirstWrite, 2, || {
            Err::<((), Landed), _>("disk full")
        });
        assert_eq!(failed, Err(AppendError::Append("disk full")));
        assert_eq!(
            step(&mut state, batch(0, 2, 1), DuplicateAnswer::FirstWrite),
            Ok(IdempotentAppend::Appended(2))
        );
    }

    #[test]
    fn a_retried_batch_is_answered_with_its_original_offsets() {
        let mut state = ProducerStateManager::new();
        assert_eq!(
            append(&mut state, batch(0, 0, 3), 10),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            append(&mut state, batch(0, 3, 2), 13),
            Ok(SequenceCheck::Append)
        );
        match append(&mut state, batch(0, 0, 3), 99) {
            Ok(SequenceCheck::Duplicate(m)) => {
                assert_eq!((m.first_offset, m.last_offset), (10, 12))
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn a_gap_in_sequence_numbers_is_out_of_order() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(0, 0, 3), 0).unwrap();
        assert_eq!(
            append(&mut state, batch(0, 4, 1), 3),
            Err(SequenceError::OutOfOrderSequence {
                first_seq: 4,
                expected: 3
            })
        );
    }

    #[test]
    fn an_old_duplicate_the_cache_forgot_is_a_duplicate_sequence() {
        let mut state = ProducerStateManager::new();
        for i in 0..=MAX_CACHED_BATCHES as i32 {
            append(&mut state, batch(0, i, 1), i64::from(i)).unwrap();
        }
        assert_eq!(
            append(&mut state, batch(0, 0, 1), 100),
            Err(SequenceError::DuplicateSequence { first_seq: 0 })
        );
        assert!(matches!(
            append(&mut state, batch(0, 1, 1), 100),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_new_epoch_starts_at_zero() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(1, 0, 2), 0).unwrap();
        assert_eq!(
            append(&mut state, batch(0, 2, 1), 2),
            Err(SequenceError::InvalidProducerEpoch {
                batch_epoch: 0,
                current_epoch: 1
            })
        );
        assert_eq!(
            append(&mut state, batch(2, 5, 1), 2),
            Err(SequenceError::OutOfOrderSequence {
                first_seq: 5,
                expected: -1
            })
        );
        assert_eq!(
            append(&mut state, batch(2, 0, 1), 2),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            append(&mut state, batch(2, 1, 1), 3),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn an_unknown_producer_may_start_anywhere_and_non_idempotent_batches_pass() {
        let mut state = ProducerStateManager::new();
        assert_eq!(
            append(&mut state, batch(0, 42, 1), 0),
            Ok(SequenceCheck::Append)
        );
        let plain = ProducerBatch {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            first_seq: -1,
            last_seq: -1,
        };
        assert_eq!(append(&mut state, plain, 1), Ok(SequenceCheck::Append));
        assert_eq!(append(&mut state, plain, 2), Ok(SequenceCheck::Append));
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn sequences_wrap_from_max_to_zero() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(
            append(&mut state, batch(0, 0, 1), 2),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn retention_forgets_producers_whose_batches_are_gone() {
        let mut state = ProducerStateManager::new();
        append(&mut state, batch(0, 0, 5), 0).unwrap();
        state.remove_below(5);
        assert!(state.is_empty());
        assert_eq!(
            append(&mut state, batch(0, 9, 1), 5),
            Ok(SequenceCheck::Append)
        );
    }
}
