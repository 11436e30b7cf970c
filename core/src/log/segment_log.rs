//! The durable partition log: a directory of segments, recovered on open.
//!
//! ```text
//! <dir>/00000000000000000000.log        batches, as stored
//!       00000000000000000000.index      sparse offset → position (mmap)
//!       00000000000000000000.timeindex  sparse max timestamp → offset (mmap)
//!       00000000000000004096.log        the next segment, named by its base offset
//!       ...
//!       recovery-point-offset-checkpoint  everything below this offset was fsynced
//!       .clean-shutdown                   present only between a clean close and the next open
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::checkpoint::{self, OwnFile, RecoveryPointStore};
use super::cleaner;
use super::segment::{self, LogSegment};
use super::validate::{self, PreparedAppend};
use super::{LogAppendInfo, LogConfig, LogError, PartitionLog};

/// What opening the log found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous close was clean, so no segment was scanned for damage.
    pub clean_shutdown: bool,
    /// The recovery point the checkpoint file held, if it was readable.
    pub checkpointed_recovery_point: Option<i64>,
    /// Segments found on disk.
    pub segments_found: usize,
    /// Segments scanned batch by batch (those at or after the recovery point).
    pub segments_recovered: usize,
    /// Trusted segments whose index was missing or garbled and was rebuilt.
    pub indexes_rebuilt: usize,
    /// Bytes cut off torn or corrupt tails.
    pub bytes_truncated: u64,
    /// Segments after a damaged one that were deleted, since their data followed a hole.
    pub segments_deleted: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    /// A write failed and could not be undone; the log refuses writes until reopened, when
    /// recovery cuts whatever the failed write left behind.
    Failed,
}

/// A partition log on disk. See the module docs for the layout and `docs/storage.md` for the
/// design.
pub struct SegmentLog {
    dir: PathBuf,
    recovery_store: Box<dyn RecoveryPointStore>,
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Everything below this offset is fsynced.
    recovery_point: i64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    last_checkpoint_ms: i64,
    /// A segment file was created or deleted since the directory was last fsynced.
    dir_dirty: bool,
    /// Segments below this offset were compacted by the last cleaning (kept in memory only: after
    /// a restart the first cleaning reads everything once more, which changes nothing).
    cleaned_through: i64,
    state: State,
    report: RecoveryReport,
}

impl SegmentLog {
    /// Opens the log in `dir` (creating it if needed) and recovers it: after a clean close the
    /// segments are trusted and only their indexes are checked; otherwise every segment from the
    /// one holding the recovery point on is read batch by batch, cut at the first invalid byte,
    /// and re-indexed.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        let store = OwnFile(dir.as_ref().to_path_buf());
        Self::open_with(dir, config, Box::new(store), now_ms)
    }

    /// [`Self::open`], with the recovery point kept by `recovery_store` (the broker keeps all
    /// of a log directory's in one file at its root).
    pub fn open_with(
        dir: impl AsRef<Path>,
        config: LogConfig,
        recovery_store: Box<dyn RecoveryPointStore>,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| LogError::storage("create", &dir, e))?;
        let clean = checkpoint::has_clean_shutdown_marker(&dir);
        let checkpointed = recovery_store.load();
        let bases = scan_dir(&dir)?;
        let mut report = RecoveryReport {
            clean_shutdown: clean,
            checkpointed_recovery_point: checkpointed,
            segments_found: bases.len(),
            ..RecoveryReport::default()
        };
        // Recovery starts at the segment holding the recovery point (all of them if unknown).
        let recover_from = if clean {
            i64::MAX
        } else {
            checkpointed
                .and_then(|rp| bases.iter().rev().find(|&&b| b <= rp).copied())
                .unwrap_or(i64::MIN)
        };
        let mut segments = BTreeMap::new();
        let mut expected = i64::MIN;
        for (i, &base) in bases.iter().enumerate() {
            let mut seg = LogSegment::open(&dir, base, &config, now_ms)
                .map_err(|e| LogError::storage("open segment", &dir, e))?;
            let in_recovery = base >= recover_from;
            let overlaps = base < expected;
            let cut = if overlaps {
                0
            } else if in_recovery {
                report.segments_recovered += 1;
                seg.recover(expected)?
            } else {
                let (rebuilt, cut) = seg.load(expected)?;
                report.indexes_rebuilt += usize::from(rebuilt);
                cut
            };
            report.bytes_truncated += cut;
            if overlaps || (in_recovery && cut > 0) {
                // Whatever follows damage in the unflushed region is not part of the log.
                if overlaps {
                    seg.delete()?;
                } else {
                    segments.insert(base, seg);
                }
                for &later in &bases[i + 1..] {
                    LogSegment::open(&dir, later, &config, now_ms)
                        .map_err(|e| LogError::storage("open segment", &dir, e))?
                        .delete()?;
                }
                report.segments_deleted += bases.len() - i - 1 + usize::from(overlaps);
                break;
            }
            expected = seg.next_offset();
            segments.insert(base, seg);
        }
        let mut log = SegmentLog {
            dir,
            recovery_store,
            config,
            segments,
            log_start_offset: 0,
            log_end_offset: 0,
            recovery_point: 0,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            last_checkpoint_ms: now_ms,
            dir_dirty: true,
            cleaned_through: 0,
            state: State::Open,
            report,
        };
        if log.segments.is_empty() {
            let seg = LogSegment::create(&log.dir, 0, &log.config, now_ms)
                .map_err(|e| LogError::storage("create segment in", &log.dir, e))?;
            log.segments.insert(0, seg);
        }
        let last = *log.segments.keys().next_back().expect("a segment");
        for (base, seg) in log.segments.iter_mut() {
            if *base == last {
                seg.make_active(&log.config)?;
            } else {
                seg.make_inactive()?;
            }
        }
        log.log_start_offset = *log.segments.keys().next().expect("a segment");
        log.log_end_offset = log.active().next_offset();
        // What recovery kept is valid; make it durable, then move the recovery point past it.
        log.recovery_point = if clean {
            log.log_end_offset
        } else {
            checkpointed
                .unwrap_or(0)
                .clamp(log.log_start_offset, log.log_end_offset)
        };
        log.flush_segments(true)?;
        log.write_checkpoint(now_ms)?;
        checkpoint::remove_clean_shutdown_marker(&log.dir)
            .map_err(|e| LogError::storage("remove the clean-shutdown marker in", &log.dir, e))?;
        Ok(log)
    }

    /// What [`Self::open`] found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings the log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes the settings, as a topic config change does in Kafka. Roll, flush, retention and
    /// size limits apply from the next call; index settings apply to segments created from now on.
    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Everything below this offset has been fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Bytes held in all segments.
    pub fn size_in_bytes(&self) -> u64 {
        self.segments.values().map(LogSegment::size).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    fn active(&self) -> &LogSegment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn check_open(&self) -> Result<(), LogError> {
        match self.state {
            State::Open => Ok(()),
            State::Closed => Err(LogError::Closed),
            State::Failed => Err(LogError::storage(
                "write to",
                &self.dir,
                io::Error::other("the log is offline after a write it could not undo"),
            )),
        }
    }

    /// Offsets name segment files, so a log never moves to a negative one.
    fn check_not_negative(&self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        Ok(())
    }

    /// Checks the log can take a write and repairs any index a read found wrong.
    fn check_writable(&mut self) -> Result<(), LogError> {
        self.check_open()?;
        for seg in self.segments.values_mut() {
            seg.repair_index_if_suspect()?;
        }
        Ok(())
    }

    fn store(&mut self, prepared: PreparedAppend, now_ms: i64) -> Result<LogAppendInfo, LogError> {
        let info = prepared.info;
        let roll = self.active().should_roll(
            &self.config,
            prepared.records.len(),
            info.max_timestamp,
            info.last_offset,
            now_ms,
        );
        if roll {
            self.roll_at(info.first_offset, now_ms)?;
        }
        let active = self.active_mut();
        if let Err(failure) = active.append(&prepared.records, &prepared.batches) {
            let path = self
                .dir
                .join(segment::file_name(self.active().base_offset(), "log"));
            if !failure.rolled_back {
                self.state = State::Failed;
            }
            return Err(LogError::storage("append to", path, failure.error));
        }
        self.log_end_offset = info.last_offset + 1;
        self.unflushed_messages += info.record_count as u64;
        let due_by_count = self.unflushed_messages >= self.config.flush_interval_messages;
        let due_by_time =
            now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_interval_ms;
        if due_by_count || due_by_time {
            self.flush_at(now_ms)?;
        }
        Ok(info)
    }

    /// Starts a new segment at `base`, finishing the active one. An empty active segment at a
    /// lower base is kept: it holds the log start (or the end) in place across a restart, and
    /// retention removes it once a later segment goes.
    fn roll_at(&mut self, base: i64, now_ms: i64) -> Result<(), LogError> {
        let active = self.active_mut();
        if active.size() == 0 && active.base_offset() == base {
            return Ok(());
        }
        active.make_inactive()?;
        let mut seg = LogSegment::create(&self.dir, base, &self.config, now_ms)
            .map_err(|e| LogError::storage("create segment in", &self.dir, e))?;
        seg.make_active(&self.config)?;
        self.segments.insert(base, seg);
        self.dir_dirty = true;
        Ok(())
    }

    /// Starts a new segment at the log end now, whatever the roll settings say.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.check_writable()?;
        self.roll_at(self.log_end_offset, now_ms)
    }

    /// fsyncs segments past the recovery point (with their indexes only if they no longer take
    /// appends, or if `all_indexes`), and the directory if files came or went.
    fn flush_segments(&mut self, all_indexes: bool) -> Result<(), LogError> {
        let result = self.try_flush_segments(all_indexes);
        if result.is_err() {
            // After a failed fsync the kernel may have dropped the dirty pages, so a retry could
            // "succeed" over lost data: stop taking writes, and let recovery decide on reopen.
            self.state = State::Failed;
        }
        result
    }

    fn try_flush_segments(&mut self, all_indexes: bool) -> Result<(), LogError> {
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        let active = self.active().base_offset();
        for (base, seg) in self.segments.range(from..) {
            seg.flush(all_indexes || *base != active)?;
        }
        if self.dir_dirty {
            checkpoint::sync_dir(&self.dir)
                .map_err(|e| LogError::storage("fsync", &self.dir, e))?;
            self.dir_dirty = false;
        }
        self.recovery_point = self.log_end_offset;
        self.unflushed_messages = 0;
        Ok(())
    }

    fn write_checkpoint(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.store_recovery_point(now_ms, false)
    }

    fn store_recovery_point(&mut self, now_ms: i64, must_be_durable: bool) -> Result<(), LogError> {
        self.recovery_store
            .store(self.recovery_point, must_be_durable)
            .map_err(|e| LogError::storage("write the recovery point of", &self.dir, e))?;
        self.last_checkpoint_ms = now_ms;
        Ok(())
    }

    fn flush_at(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.flush_segments(false)?;
        self.last_flush_ms = now_ms;
        if now_ms.saturating_sub(self.last_checkpoint_ms) >= self.config.checkpoint_interval_ms {
            self.write_checkpoint(now_ms)?;
        }
        Ok(())
    }

    /// fsyncs everything appended so far and records the new recovery point.
    pub fn flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.check_open()?;
        self.flush_segments(false)?;
        self.last_flush_ms = now_ms;
        self.write_checkpoint(now_ms)
    }

    /// Applies `log.flush.interval.ms` (and the checkpoint interval): call it periodically.
    /// Returns whether it flushed.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<bool, LogError> {
        self.check_open()?;
        let due = self.recovery_point < self.log_end_offset
            && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_interval_ms;
        if due {
            self.flush_at(now_ms)?;
        } else if now_ms.saturating_sub(self.last_checkpoint_ms)
            >= self.config.checkpoint_interval_ms
        {
            self.write_checkpoint(now_ms)?;
        }
        Ok(due)
    }

    /// Deletes the oldest segments that `log.retention.ms` or `log.retention.bytes` no longer
    /// keep, advancing the log start offset; returns how many went. Only segments that end at or
    /// below `upper_bound_offset` may go (pass the high watermark, so nothing a follower may still
    /// need is deleted; or the log end offset when there are no followers). An expired active
    /// segment is rolled first, so the log always keeps an empty segment at its end.
    pub fn delete_old_segments(
        &mut self,
        now_ms: i64,
        upper_bound_offset: i64,
    ) -> Result<usize, LogError> {
        self.check_writable()?;
        if !self.config.cleanup_policy.delete {
            return Ok(0); // a compacted-only log is bounded by its cleaner, not by age or size
        }
        let mut excess_bytes = if self.config.retention_bytes >= 0 {
            self.size_in_bytes() as i64 - self.config.retention_bytes
        } else {
            -1
        };
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let mut count = 0;
        for (i, base) in bases.iter().enumerate() {
            let seg = &self.segments[base];
            let end = bases.get(i + 1).copied().unwrap_or(self.log_end_offset);
            if end > upper_bound_offset {
                break;
            }
            if seg.size() == 0 {
                // An empty active segment stays; an empty older one holds nothing to keep.
                if i + 1 == bases.len() {
                    break;
                }
                count += 1;
                continue;
            }
            let by_time = self.config.retention_ms >= 0
                && now_ms.saturating_sub(seg.largest_timestamp()) > self.config.retention_ms;
            let by_size = excess_bytes >= seg.size() as i64;
            if !(by_time || by_size) {
                break;
            }
            excess_bytes -= seg.size() as i64;
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        if count == self.segments.len() {
            self.roll_at(self.log_end_offset, now_ms)?;
        }
        for base in &bases[..count] {
            self.segments.remove(base).expect("segment").delete()?;
        }
        self.dir_dirty = true;
        checkpoint::sync_dir(&self.dir).map_err(|e| LogError::storage("fsync", &self.dir, e))?;
        self.dir_dirty = false;
        self.log_start_offset = *self.segments.keys().next().expect("a segment");
        self.recovery_point = self.recovery_point.max(self.log_start_offset);
        Ok(count)
    }

    /// Compacts the segments before the active one that lie wholly below `upper_bound_offset`
    /// (the high watermark), by the rules of [`super::cleaner`], if the log's policy is
    /// `compact` and enough of it is dirty. Each segment is rewritten to a `.cleaned` file,
    /// fsynced, and renamed over the old one (its indexes removed first, so a crash leaves
    /// either file whole and the indexes rebuilt on open).
    pub fn clean(
        &mut self,
        now_ms: i64,
        upper_bound_offset: i64,
    ) -> Result<cleaner::CleanReport, LogError> {
        self.check_writable()?;
        let mut report = cleaner::CleanReport::default();
        if !self.config.cleanup_policy.compact {
            return Ok(report);
        }
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let cleanable: Vec<(i64, i64)> = bases
            .windows(2)
            .map(|w| (w[0], w[1]))
            .take_while(|&(_, end)| end <= upper_bound_offset)
            .collect();
        let Some(&(_, clean_end)) = cleanable.last() else {
            return Ok(report);
        };
        let size = |base: &i64| self.segments[base].size();
        let total: u64 = cleanable.iter().map(|(b, _)| size(b)).sum();
        let dirty: u64 = cleanable
            .iter()
            .filter(|(b, _)| *b >= self.cleaned_through)
            .map(|(b, _)| size(b))
            .sum();
        let ratio = u128::from(self.config.min_cleanable_ratio_ppm);
        if total == 0 || u128::from(dirty) * 1_000_000 < ratio * u128::from(total) {
            return Ok(report);
        }
        let mut map = cleaner::OffsetMap::default();
        for (base, _) in cleanable.iter().filter(|(b, _)| *b >= self.cleaned_through) {
            for batch in crate::record::batches(self.segment_bytes(*base)?) {
                map.add_batch(&batch.map_err(LogError::Corrupt)?)
                    .map_err(LogError::Corrupt)?;
            }
        }
        report.keys = map.len();
        report.bytes_before = total;
        let horizon = now_ms.saturating_sub(self.config.delete_retention_ms);
        let first = bases[0];
        for &(base, _) in &cleanable {
            let original = self.segment_bytes(base)?;
            let mut cleaned = Vec::with_capacity(original.len());
            for batch in crate::record::batches(original.clone()) {
                let batch = batch.map_err(LogError::Corrupt)?;
                if let Some(kept) =
                    cleaner::filter_batch(&batch, |r| cleaner::keeps(&map, r, horizon))
                        .map_err(LogError::Corrupt)?
                {
                    cleaned.extend_from_slice(&kept);
                }
            }
            report.bytes_after += cleaned.len() as u64;
            if cleaned[..] != original[..] {
                report.segments_rewritten += 1;
                // An emptied segment other than the first goes; the first stays, empty, so
                // the log start offset does not move.
                self.replace_segment(base, &cleaned, cleaned.is_empty() && base != first, now_ms)?;
            }
        }
        self.cleaned_through = clean_end;
        Ok(report)
    }

    /// A copy of a whole segment's bytes (a copy: the segment's file is about to be replaced).
    fn segment_bytes(&self, base: i64) -> Result<Bytes, LogError> {
        let read = self.segments[&base].read(base, usize::MAX, i64::MAX, true)?;
        Ok(Bytes::copy_from_slice(&read.bytes))
    }

    fn replace_segment(
        &mut self,
        base: i64,
        bytes: &[u8],
        remove: bool,
        now_ms: i64,
    ) -> Result<(), LogError> {
        use std::io::Write;
        let log_path = self.dir.join(segment::file_name(base, "log"));
        if remove {
            self.segments.remove(&base).expect("a segment").delete()?;
            checkpoint::sync_dir(&self.dir)
                .map_err(|e| LogError::storage("fsync", &self.dir, e))?;
            return Ok(());
        }
        let cleaned_path = self
            .dir
            .join(format!("{}.cleaned", segment::file_name(base, "log")));
        let written = (|| {
            let mut file = fs::File::create(&cleaned_path)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&cleaned_path);
            return Err(LogError::storage("write", &cleaned_path, e));
        }
        drop(self.segments.remove(&base));
        let swapped = (|| {
            for kind in ["index", "timeindex"] {
                match fs::remove_file(self.dir.join(segment::file_name(base, kind))) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&cleaned_path, &log_path)?;
            checkpoint::sync_dir(&self.dir)
        })();
        // Whatever the rename did, the segment file is whole: the old or the cleaned one.
        let mut seg = LogSegment::open(&self.dir, base, &self.config, now_ms)
            .map_err(|e| LogError::storage("open segment", &self.dir, e))?;
        seg.recover(base)?;
        seg.make_inactive()?;
        self.segments.insert(base, seg);
        swapped.map_err(|e| LogError::storage("replace", &log_path, e))
    }

    /// The first record whose timestamp is at or after `timestamp`, as (timestamp, offset), for
    /// ListOffsets by time; `None` if every record is older.
    pub fn fetch_offset_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        self.check_open()?;
        for seg in self.segments.values() {
            if seg.max_timestamp() >= timestamp {
                if let Some(found) = seg.find_offset_by_timestamp(timestamp)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Flushes everything, finishes the active segment's indexes, and leaves the clean-shutdown
    /// marker so the next open can skip recovery. Further calls on the log return
    /// [`LogError::Closed`].
    pub fn close(&mut self, now_ms: i64) -> Result<(), LogError> {
        match self.state {
            State::Closed => return Ok(()),
            State::Failed => {
                self.state = State::Closed;
                return Ok(());
            }
            State::Open => {}
        }
        self.active_mut().make_inactive()?;
        self.flush_segments(true)?;
        self.write_checkpoint(now_ms)?;
        checkpoint::write_clean_shutdown_marker(&self.dir)
            .map_err(|e| LogError::storage("write the clean-shutdown marker in", &self.dir, e))?;
        self.state = State::Closed;
        Ok(())
    }

    /// Lowers the recovery point to `offset` durably: data past it may be rewritten, and a crash
    /// must not mistake the old bytes for flushed ones.
    fn lower_recovery_point(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        if self.recovery_point > offset {
            self.recovery_point = offset;
        }
        self.store_recovery_point(now_ms, true)
    }
}

impl PartitionLog for SegmentLog {
    fn append_as_leader(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        self.check_writable()?;
        let prepared = validate::prepare_leader_append(
            records,
            self.log_end_offset,
            leader_epoch,
            &self.config,
            now_ms,
        )?;
        self.store(prepared, now_ms)
    }

    fn append_as_follower(
        &mut self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        self.check_writable()?;
        let prepared = validate::prepare_follower_append(records, self.log_end_offset)?;
        self.store(prepared, now_ms)
    }

    fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
    ) -> Result<Bytes, LogError> {
        self.check_open()?;
        if fetch_offset < self.log_start_offset || fetch_offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let limit = max_offset.unwrap_or(i64::MAX);
        let first = self
            .segments
            .range(..=fetch_offset)
            .next_back()
            .map_or(self.log_start_offset, |(b, _)| *b);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut total = 0;
        for seg in self.segments.range(first..).map(|(_, s)| s) {
            if !parts.is_empty() && total >= max_bytes {
                break;
            }
            let read = seg.read(
                fetch_offset,
                max_bytes - total.min(max_bytes),
                limit,
                parts.is_empty(),
            )?;
            if !read.bytes.is_empty() {
                total += read.bytes.len();
                parts.push(read.bytes);
            }
            if !read.reached_end {
                break;
            }
        }
        Ok(match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().expect("one part"),
            _ => {
                let mut out = BytesMut::with_capacity(total);
                for p in &parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        })
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_writable()?;
        self.check_not_negative(offset)?;
        if offset >= self.log_end_offset {
            return Ok(());
        }
        if offset <= self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            self.segments.remove(&base).expect("segment").delete()?;
            self.dir_dirty = true;
        }
        let config = self.config.clone();
        let active = self.active_mut();
        let first_removed = active.truncate_to(offset)?;
        active.make_active(&config)?;
        active.flush(false)?;
        self.log_end_offset = first_removed.map_or(offset, |b| b.min(offset));
        if self.active().next_offset() < self.log_end_offset {
            // The cut fell in a gap between batches (compacted data): an empty segment based at
            // the new log end makes that end survive a restart.
            self.roll_at(self.log_end_offset, self.last_flush_ms)?;
        }
        if self.dir_dirty {
            checkpoint::sync_dir(&self.dir)
                .map_err(|e| LogError::storage("fsync", &self.dir, e))?;
            self.dir_dirty = false;
        }
        let now = self.last_flush_ms;
        self.lower_recovery_point(self.log_end_offset, now)
    }

    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.check_writable()?;
        self.check_not_negative(offset)?;
        let now = self.last_flush_ms;
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            self.segments.remove(&base).expect("segment").delete()?;
        }
        let mut seg = LogSegment::create(&self.dir, offset, &self.config, now)
            .map_err(|e| LogError::storage("create segment in", &self.dir, e))?;
        seg.make_active(&self.config)?;
        self.segments.insert(offset, seg);
        checkpoint::sync_dir(&self.dir).map_err(|e| LogError::storage("fsync", &self.dir, e))?;
        self.dir_dirty = false;
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.unflushed_messages = 0;
        self.recovery_point = offset;
        self.store_recovery_point(now, true)
    }

    fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
}

/// Base offsets of the segments in `dir`, sorted. Index files without a log file are leftovers
/// of a deletion that did not finish, and are removed.
fn scan_dir(dir: &Path) -> Result<Vec<i64>, LogError> {
    let entries = fs::read_dir(dir).map_err(|e| LogError::storage("list", dir, e))?;
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::storage("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match segment::parse_file_name(name) {
            Some((base, "log")) => logs.push(base),
            Some((_, "log.cleaned")) => {
                // A cleaning that did not finish; the segment it would have replaced is whole.
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| LogError::storage("remove", &path, e))?;
            }
            Some((base, "index" | "timeindex")) => indexes.push((base, entry.path())),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            fs::remove_file(&path).map_err(|e| LogError::storage("remove", &path, e))?;
        }
    }
    Ok(logs)
}
