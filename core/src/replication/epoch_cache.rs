//! The leader-epoch cache: where each leader epoch's records start in the log (KIP-101).

use crate::log::{LogError, PartitionLog, for_each_batch_header};

/// The last offset (exclusive) a replica holds for an epoch: what OffsetsForLeaderEpoch and a
/// fetch's diverging epoch report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "trace", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochEndOffset {
    /// The largest epoch at or below the one asked for, or -1 when there is none.
    pub epoch: i32,
    /// Where that epoch's records end: the start of the next epoch, or the log end offset for
    /// the latest. -1 when `epoch` is -1.
    pub end_offset: i64,
}

impl EpochEndOffset {
    /// Kafka's `UNDEFINED_EPOCH` / `UNDEFINED_EPOCH_OFFSET` answer.
    pub const UNDEFINED: EpochEndOffset = EpochEndOffset {
        epoch: -1,
        end_offset: -1,
    };
}

/// `(epoch, start offset)` pairs, epochs and offsets both increasing. Persisted beside the log
/// (`leader-epoch-checkpoint`); it is what lets a follower find where its log and a new
/// leader's part, without trusting its high watermark.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// The cache as a restart finds it: the checkpointed `entries`, less any epoch that starts
    /// at or past the recovered log end (recovery cut off its batches), as Kafka's log loading
    /// does.
    pub fn recovered(entries: impl IntoIterator<Item = (i32, i64)>, log_end_offset: i64) -> Self {
        let mut cache = LeaderEpochCache::default();
        for (epoch, start) in entries {
            cache.assign(epoch, start);
        }
        cache.truncate_from_end(log_end_offset);
        cache
    }

    /// The cache rebuilt from the epochs stamped on the log's batches, for when its checkpoint
    /// is missing or damaged.
    pub fn rebuild<L: PartitionLog>(log: &L) -> Result<Self, LogError> {
        let mut cache = LeaderEpochCache::default();
        for_each_batch_header(log, |header| {
            cache.assign(header.partition_leader_epoch, header.base_offset)
        })?;
        Ok(cache)
    }

    /// Records that `epoch` starts at `start_offset`. A known or older epoch is ignored; entries
    /// that the new one contradicts (starting at or after it) are dropped, as Kafka does.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| latest >= epoch) {
            return;
        }
        self.entries.retain(|&(_, start)| start < start_offset);
        self.entries.push((epoch, start_offset));
    }

    /// The epoch of the newest batch the log holds (the follower's `last_fetched_epoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// The first offset of `epoch`, if the cache knows it.
    pub fn start_offset_of(&self, epoch: i32) -> Option<i64> {
        self.entries
            .iter()
            .find(|&&(e, _)| e == epoch)
            .map(|&(_, start)| start)
    }

    /// Kafka's `endOffsetFor` (what OffsetsForLeaderEpoch answers, and what a leader checks a
    /// follower's last fetched epoch against):
    /// - the latest epoch ends at the log end offset;
    /// - an older one ends where the next known epoch starts, and is reported as the largest
    ///   known epoch at or below it;
    /// - one older than every known epoch is reported as itself, ending where the first known
    ///   epoch starts (nothing of it is here);
    /// - a negative epoch, or one newer than every known epoch, is [`EpochEndOffset::UNDEFINED`].
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> EpochEndOffset {
        if epoch < 0 {
            return EpochEndOffset::UNDEFINED;
        }
        if self.latest_epoch() == Some(epoch) {
            return EpochEndOffset {
                epoch,
                end_offset: log_end_offset,
            };
        }
        let later = self.entries.partition_point(|&(e, _)| e <= epoch);
        let Some(&(_, next_start)) = self.entries.get(later) else {
            return EpochEndOffset::UNDEFINED;
        };
        let found = match later {
            0 => epoch,
            _ => self.entries[later - 1].0,
        };
        EpochEndOffset {
            epoch: found,
            end_offset: next_start,
        }
    }

    /// The epoch of the batch holding `offset`, if the cache knows one (what ListOffsets
    /// reports beside an offset, KIP-320).
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let holding = self.entries.partition_point(|&(_, start)| start <= offset);
        holding.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// Forgets epochs that start at or after `end_offset`, after the log was truncated there.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|&(_, start)| start < end_offset);
    }

    /// Forgets epochs wholly below `start_offset`, after the log's start moved there: the
    /// epoch holding the new start is kept and now starts there (Kafka's `truncateFromStart`).
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let holding = self
            .entries
            .partition_point(|&(_, start)| start <= start_offset);
        if holding == 0 {
            return;
        }
        self.entries.drain(..holding - 1);
        self.entries[0].1 = start_offset;
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }
}
