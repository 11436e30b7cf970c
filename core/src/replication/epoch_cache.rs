//! The leader-epoch cache: where each leader epoch's records start in the log (KIP-101).

/// The last offset (exclusive) a replica holds for an epoch: what OffsetsForLeaderEpoch and a
/// fetch's diverging epoch report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// Kafka's `endOffsetFor`: the largest epoch at or below `epoch`, and where it ends.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> EpochEndOffset {
        let later = self.entries.partition_point(|&(e, _)| e <= epoch);
        if later == 0 {
            return EpochEndOffset::UNDEFINED;
        }
        let (found, _) = self.entries[later - 1];
        let end_offset = self
            .entries
            .get(later)
            .map_or(log_end_offset, |&(_, start)| start);
        EpochEndOffset {
            epoch: found,
            end_offset,
        }
    }

    /// Forgets epochs that start at or after `end_offset`, after the log was truncated there.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|&(_, start)| start < end_offset);
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }
}
