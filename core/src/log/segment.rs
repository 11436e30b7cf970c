//! One segment: a `.log` file of batches and its `.index` and `.timeindex`, named by the
//! segment's base offset (`00000000000000000000.log`).
//!
//! The segment owns the rules that tie the three files together: which batch gets an index entry,
//! how a lookup uses and double-checks the index, how a torn or corrupt tail is found and cut off.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use super::config::LogConfig;
use super::error::LogError;
use super::io::write_all_at;
use super::offset_index::OffsetIndex;
use super::scan::{DEFAULT_CHUNK, Found, SegmentReader};
use super::time_index::TimeIndex;
use super::validate::BatchMeta;
use crate::record::header::{BatchHeader, HEADER_SIZE};
use crate::record::{RecordBatch, TimestampType};

/// File name of a segment's `kind` file ("log", "index" or "timeindex").
pub(crate) fn file_name(base_offset: i64, kind: &str) -> String {
    format!("{base_offset:020}.{kind}")
}

/// The base offset a segment file's name encodes, if it is one of ours.
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, kind) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// Reads of at least this many bytes come from a memory map of the segment file, smaller ones
/// from a copy (see [`LogSegment::read`]).
pub(crate) const MMAP_MIN_READ: usize = 64 * 1024;

fn mmap_min_read() -> usize {
    #[cfg(test)]
    if let Some(min) = read_path::forced_min() {
        return min;
    }
    MMAP_MIN_READ
}

/// What a read from one segment produced.
pub(crate) struct SegmentRead {
    pub bytes: Bytes,
    /// The read took everything from its start to the end of the segment, so a caller wanting
    /// more may go on to the next segment.
    pub reached_end: bool,
}

/// A write that failed; `rolled_back` says whether the file is as it was before.
pub(crate) struct AppendFailure {
    pub error: io::Error,
    pub rolled_back: bool,
}

pub(crate) struct LogSegment {
    base_offset: i64,
    log_path: PathBuf,
    log: File,
    /// Bytes of valid batches; the file is never longer once the segment is loaded.
    size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    index_interval: usize,
    max_index_size: usize,
    /// Whether the segment takes appends (its index files are preallocated).
    active: bool,
    bytes_since_last_index_entry: usize,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    next_offset: i64,
    first_batch_timestamp: Option<i64>,
    created_ms: i64,
    /// Set by a read that found an index entry pointing at the wrong bytes; the next write
    /// rebuilds the index.
    index_suspect: AtomicBool,
}

impl LogSegment {
    /// Creates empty files for a new segment at `base_offset`.
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> io::Result<Self> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = open_rw(&log_path, true)?;
        let offset_index =
            OffsetIndex::create(dir.join(file_name(base_offset, "index")), base_offset)?;
        let time_index =
            TimeIndex::create(dir.join(file_name(base_offset, "timeindex")), base_offset)?;
        Ok(Self::new(
            log_path,
            log,
            0,
            offset_index,
            time_index,
            base_offset,
            config,
            now_ms,
        ))
    }

    /// Opens an existing segment's files as they are; the caller must then [`Self::recover`] or
    /// [`Self::load`] it before use.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> io::Result<Self> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = open_rw(&log_path, false)?;
        let size = log.metadata()?.len();
        let offset_index =
            OffsetIndex::open(dir.join(file_name(base_offset, "index")), base_offset)?;
        let time_index =
            TimeIndex::open(dir.join(file_name(base_offset, "timeindex")), base_offset)?;
        Ok(Self::new(
            log_path,
            log,
            size,
            offset_index,
            time_index,
            base_offset,
            config,
            now_ms,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        log_path: PathBuf,
        log: File,
        size: u64,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Self {
        LogSegment {
            base_offset,
            log_path,
            log,
            size,
            offset_index,
            time_index,
            index_interval: config.index_interval_bytes as usize,
            max_index_size: config.max_index_size as usize,
            active: false,
            bytes_since_last_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            next_offset: base_offset,
            first_batch_timestamp: None,
            created_ms: now_ms,
            index_suspect: AtomicBool::new(false),
        }
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The offset after the segment's last batch (its base offset when empty).
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The newest timestamp in the segment, which time-based retention compares; a segment
    /// without timestamps counts from when this process created or opened it.
    pub(crate) fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.created_ms
        }
    }

    fn storage_error(&self, action: &'static str, e: io::Error) -> LogError {
        LogError::storage(action, &self.log_path, e)
    }

    fn lookup_chunk(&self) -> usize {
        (self.index_interval + 2 * HEADER_SIZE).min(DEFAULT_CHUNK)
    }

    /// Updates the in-memory state and indexes for a batch stored at `position`: the one rule
    /// append, recovery and rebuild share, so an index is the same however it was made.
    fn index_batch(&mut self, position: u64, meta: &BatchMeta) {
        if meta.max_timestamp > self.max_timestamp {
            self.max_timestamp = meta.max_timestamp;
            self.offset_of_max_timestamp = meta.base_offset;
        }
        if self.bytes_since_last_index_entry > self.index_interval {
            self.offset_index.append(meta.base_offset, position);
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += meta.size;
        self.next_offset = meta.last_offset + 1;
        self.first_batch_timestamp.get_or_insert(meta.max_timestamp);
    }

    /// Forgets the indexes and in-memory state before a rebuild, making room for a full index.
    fn reset_state(&mut self) -> Result<(), LogError> {
        self.offset_index.file_mut().reset();
        self.time_index.file_mut().reset();
        self.preallocate_indexes()?;
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.next_offset = self.base_offset;
        self.first_batch_timestamp = None;
        self.index_suspect.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn preallocate_indexes(&mut self) -> Result<(), LogError> {
        let max = self.max_index_size;
        self.offset_index
            .file_mut()
            .set_capacity(max)
            .and_then(|()| self.time_index.file_mut().set_capacity(max))
            .map_err(|e| self.storage_error("preallocate the indexes of", e))
    }

    fn seal_indexes(&mut self) -> Result<(), LogError> {
        self.offset_index
            .seal()
            .and_then(|()| self.time_index.seal())
            .map_err(|e| self.storage_error("seal the indexes of", e))
    }

    /// After a rebuild, an inactive segment's indexes are trimmed and sealed again.
    fn finish_rebuild(&mut self) -> Result<(), LogError> {
        if self.active {
            Ok(())
        } else {
            self.seal_indexes()
        }
    }

    fn truncate_file(&mut self, position: u64) -> Result<(), LogError> {
        self.log
            .set_len(position)
            .map_err(|e| self.storage_error("truncate", e))?;
        self.size = position;
        Ok(())
    }

    /// Rebuilds both indexes by reading every batch and checking its CRC, and cuts the file at
    /// the first byte that is not a valid batch continuing the offsets (at or after
    /// `min_offset`). Returns how many bytes were cut.
    pub(crate) fn recover(&mut self, min_offset: i64) -> Result<u64, LogError> {
        self.reset_state()?;
        let file_len = self
            .log
            .metadata()
            .map_err(|e| self.storage_error("read metadata of", e))?
            .len();
        let mut expected = min_offset.max(self.base_offset);
        let mut pos = 0u64;
        let mut valid = Vec::new();
        {
            let mut reader = SegmentReader::new(&self.log, file_len, 1024 * 1024);
            while let Found::Batch(h) = reader
                .batch_at(pos)
                .map_err(|e| LogError::storage("read", &self.log_path, e))?
            {
                let fits = h.base_offset >= expected
                    && h.last_offset() - self.base_offset <= i64::from(i32::MAX);
                if !fits {
                    break;
                }
                valid.push((pos, meta_of(&h)));
                pos += h.size_in_bytes() as u64;
                expected = h.next_offset();
            }
        }
        for (position, meta) in &valid {
            self.index_batch(*position, meta);
        }
        self.size = file_len;
        if pos < file_len {
            self.truncate_file(pos)?;
        }
        self.finish_rebuild()?;
        Ok(file_len - pos)
    }

    /// Loads a segment that was flushed before a clean shutdown or lies below the recovery point:
    /// checks both indexes and rebuilds them (by [`Self::recover`]) if either is missing or
    /// garbled, then reads the batches after the last index entry, checking their CRCs and
    /// cutting off an invalid tail. Returns (whether the indexes were rebuilt, bytes cut).
    pub(crate) fn load(&mut self, min_offset: i64) -> Result<(bool, u64), LogError> {
        // Both seals must check out (which also proves the files were not cut or scribbled on),
        // and the entries must make sense for this segment.
        let sealed = self.offset_index.unseal() & self.time_index.unseal();
        let sane =
            sealed && self.offset_index.is_sane(self.size) && self.time_index.is_sane(i64::MAX);
        if !sane {
            return Ok((true, self.recover(min_offset)?));
        }
        match self.reload_tail(true)? {
            Tail::Ok => Ok((false, 0)),
            Tail::IndexMismatch => Ok((true, self.recover(min_offset)?)),
            Tail::InvalidAt(pos) => {
                let cut = self.size - pos;
                self.truncate_file(pos)?;
                self.reload_tail(false)?;
                Ok((false, cut))
            }
        }
    }

    /// Recomputes the in-memory state (next offset, max timestamp, bytes since the last index
    /// entry) from the last index entries and the batches after the last offset index entry.
    fn reload_tail(&mut self, check_crc: bool) -> Result<Tail, LogError> {
        let last_entry = self.offset_index.last();
        let start = last_entry.map_or(0, |e| e.position);
        let (max_ts, max_ts_offset) = self
            .time_index
            .last()
            .map_or((-1, self.base_offset), |t| (t.timestamp, t.offset));
        self.max_timestamp = max_ts;
        self.offset_of_max_timestamp = max_ts_offset;
        self.next_offset = self.base_offset;
        self.first_batch_timestamp = None;
        let mut tail = Vec::new();
        let outcome = {
            let mut reader = SegmentReader::new(&self.log, self.size, DEFAULT_CHUNK);
            if self.size > 0 {
                match reader
                    .header_at(0)
                    .map_err(|e| self.storage_error("read", e))?
                {
                    Found::Batch(h) => self.first_batch_timestamp = Some(h.max_timestamp),
                    _ if start == 0 => {}
                    _ => return Ok(Tail::IndexMismatch),
                }
            }
            let mut pos = start;
            loop {
                let found = if check_crc {
                    reader.batch_at(pos)
                } else {
                    reader.header_at(pos)
                }
                .map_err(|e| LogError::storage("read", &self.log_path, e))?;
                match found {
                    Found::Batch(h) => {
                        if pos == start && last_entry.is_some_and(|e| e.offset != h.base_offset) {
                            break Tail::IndexMismatch;
                        }
                        tail.push(meta_of(&h));
                        pos += h.size_in_bytes() as u64;
                    }
                    Found::End => break Tail::Ok,
                    Found::Torn | Found::Invalid(_) if pos == start && last_entry.is_some() => {
                        break Tail::IndexMismatch;
                    }
                    Found::Torn | Found::Invalid(_) => break Tail::InvalidAt(pos),
                }
            }
        };
        self.bytes_since_last_index_entry = tail.iter().map(|m| m.size).sum();
        for meta in &tail {
            if meta.max_timestamp > self.max_timestamp {
                self.max_timestamp = meta.max_timestamp;
                self.offset_of_max_timestamp = meta.base_offset;
            }
        }
        if let Some(last) = tail.last() {
            self.next_offset = last.last_offset + 1;
        }
        Ok(outcome)
    }

    /// Rebuilds the indexes from the batch headers if a read found them pointing at the wrong
    /// bytes. The data itself is not touched: it passed validation when the segment was loaded.
    pub(crate) fn repair_index_if_suspect(&mut self) -> Result<(), LogError> {
        if !self.index_suspect.load(Ordering::Relaxed) {
            return Ok(());
        }
        let next = self.next_offset;
        self.reset_state()?;
        let mut metas = Vec::new();
        {
            let mut reader = SegmentReader::new(&self.log, self.size, DEFAULT_CHUNK);
            let mut pos = 0;
            while let Found::Batch(h) = reader
                .header_at(pos)
                .map_err(|e| LogError::storage("read", &self.log_path, e))?
            {
                metas.push((pos, meta_of(&h)));
                pos += h.size_in_bytes() as u64;
            }
        }
        for (pos, meta) in &metas {
            self.index_batch(*pos, meta);
        }
        self.next_offset = self.next_offset.max(next);
        self.finish_rebuild()
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Writes prepared batches at the end of the file and indexes them. On failure the file is
    /// cut back to its previous length, so a partial write never becomes part of the log.
    pub(crate) fn append(
        &mut self,
        records: &[u8],
        batches: &[BatchMeta],
    ) -> Result<(), AppendFailure> {
        if let Err(error) = write_all_at(&self.log, records, self.size) {
            let rolled_back = self.log.set_len(self.size).is_ok();
            return Err(AppendFailure { error, rolled_back });
        }
        let start = self.size;
        for meta in batches {
            self.index_batch(start + meta.position as u64, meta);
        }
        self.size += records.len() as u64;
        Ok(())
    }

    /// The file position and header of the first batch whose last offset is at least `target`,
    /// or `None` if every batch in the segment ends before it. The index entry used is checked
    /// against the batch it points at; a mismatch falls back to a scan from the start.
    pub(crate) fn translate_offset(
        &self,
        target: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut reader = SegmentReader::new(&self.log, self.size, self.lookup_chunk());
        let mut pos = 0;
        if let Some(entry) = self.offset_index.lookup(target) {
            let found = reader
                .header_at(entry.position)
                .map_err(|e| self.storage_error("read", e))?;
            match found {
                Found::Batch(h) if h.base_offset == entry.offset => pos = entry.position,
                _ => self.index_suspect.store(true, Ordering::Relaxed),
            }
        }
        loop {
            match reader
                .header_at(pos)
                .map_err(|e| self.storage_error("read", e))?
            {
                Found::Batch(h) if h.last_offset() >= target => return Ok(Some((pos, h))),
                Found::Batch(h) => pos += h.size_in_bytes() as u64,
                Found::End => return Ok(None),
                Found::Torn => {
                    return Err(LogError::Corrupt(crate::record::BatchError::Truncated {
                        needed: HEADER_SIZE,
                        available: (self.size - pos) as usize,
                    }));
                }
                Found::Invalid(e) => return Err(LogError::Corrupt(e)),
            }
        }
    }

    /// Whole batches from the one holding `offset` on, within `max_bytes` (or the first batch
    /// alone if `min_one` and it is larger), and only those ending before `max_offset`.
    ///
    /// A read of [`MMAP_MIN_READ`] bytes or more returns a read-only mapping of the file rather
    /// than a copy. The broker writes fetched bytes to the socket as they are, so the kernel's copy
    /// into the socket is then the only one, and a response waiting for a slow client holds
    /// page-cache pages, which every reader of the file shares and the kernel can reclaim, rather
    /// than anonymous memory. Smaller reads are copied: a short `pread` costs less than `mmap`
    /// and `munmap`. If the mapping fails (a filesystem without `mmap`, or the process out of
    /// mappings under `vm.max_map_count`), the read is copied too, rather than failing.
    ///
    /// The hazard: mapped bytes are only as good as the file under them. Reading them in user
    /// space after the file was truncated below them raises SIGBUS (the process dies), and once
    /// the log grows back over the cut they show the new batches. A segment file shrinks only
    /// - in [`Self::truncate_to`], under `&mut SegmentLog`, so never while a read under the same
    ///   lock runs (this scan of the mapped headers included);
    /// - in [`Self::recover`] and [`Self::load`], from `SegmentLog::open`, before the log hands
    ///   out any bytes (but a previous instance's bytes may still map the file);
    /// - when a failed append is cut back to the old size, above every byte a read returned.
    ///
    /// Deleting segments (retention, `truncate_fully_and_start_at`) only unlinks files, which
    /// leaves mappings intact. So whoever holds returned bytes past the log's lock (the broker's
    /// network layer, with a response queued for a client) must only hand them to the kernel:
    /// `write` and `writev` fail with `EFAULT` over a truncated page instead of raising a signal,
    /// and the connection should then be closed, since the response cannot be completed.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<SegmentRead, LogError> {
        let nothing = |reached_end| SegmentRead {
            bytes: Bytes::new(),
            reached_end,
        };
        let Some((pos, first)) = self.translate_offset(offset)? else {
            return Ok(nothing(true));
        };
        if first.last_offset() >= max_offset {
            return Ok(nothing(false));
        }
        let available = self.size - pos;
        let first_size = first.size_in_bytes();
        let budget = if min_one {
            max_bytes.max(first_size)
        } else {
            max_bytes
        };
        let want = (budget as u64).min(available) as usize;
        if want < first_size {
            return Ok(nothing(false));
        }
        let mapped = if want >= mmap_min_read() {
            self.map_range(pos, want)
        } else {
            None
        };
        let (bytes, stopped) = match mapped {
            Some(map) => {
                let (keep, stopped) = whole_batches(&map, max_offset)?;
                (Bytes::from_owner(map).slice(..keep), stopped)
            }
            None => {
                let mut buf = vec![0u8; want];
                read_exact_at(&self.log, &mut buf, pos)
                    .map_err(|e| self.storage_error("read", e))?;
                #[cfg(test)]
                read_path::count(false);
                let (keep, stopped) = whole_batches(&buf, max_offset)?;
                buf.truncate(keep);
                (Bytes::from(buf), stopped)
            }
        };
        Ok(SegmentRead {
            reached_end: !stopped && pos + bytes.len() as u64 == self.size,
            bytes,
        })
    }

    /// The file's bytes `[pos, pos + len)`, mapped read-only and paged in, or `None` if the
    /// mapping failed (see [`Self::read`] for why that is not an error).
    fn map_range(&self, pos: u64, len: usize) -> Option<Mmap> {
        // SAFETY: the range lies within `self.size`. Appends write past it, and the file is cut
        // below it only under `&mut self`, so the bytes stay put while this `&self` borrow lives
        // (`read` scans the headers within it). The bytes outlive the borrow, though, which is
        // why `read` requires holders past the log's lock to hand them only to the kernel. One
        // process serves a log directory, so nothing else changes the file.
        let map = unsafe {
            MmapOptions::new()
                .offset(pos)
                .len(len)
                .populate()
                .map(&self.log)
        }
        .ok()?;
        #[cfg(test)]
        read_path::count(true);
        Some(map)
    }

    /// The first record at or after `timestamp`, as (its timestamp, its offset). For compressed
    /// batches, which are not decoded yet, the batch's base offset and max timestamp are returned:
    /// that never skips a matching record.
    pub(crate) fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let mut pos = 0;
        if let Some(entry) = self.time_index.lookup_before(timestamp) {
            // The entry claims every batch up to `entry.offset` is older than `timestamp`.
            match self.translate_offset(entry.offset)? {
                Some((p, h))
                    if h.base_offset == entry.offset && h.max_timestamp <= entry.timestamp =>
                {
                    pos = p
                }
                _ => self.index_suspect.store(true, Ordering::Relaxed),
            }
        }
        let mut reader = SegmentReader::new(&self.log, self.size, DEFAULT_CHUNK);
        loop {
            let h = match reader
                .header_at(pos)
                .map_err(|e| self.storage_error("read", e))?
            {
                Found::Batch(h) => h,
                Found::End => return Ok(None),
                Found::Torn => {
                    return Err(LogError::Corrupt(crate::record::BatchError::Truncated {
                        needed: HEADER_SIZE,
                        available: (self.size - pos) as usize,
                    }));
                }
                Found::Invalid(e) => return Err(LogError::Corrupt(e)),
            };
            if h.max_timestamp < timestamp {
                pos += h.size_in_bytes() as u64;
                continue;
            }
            // Compressed batches are decompressed too, as Kafka does, to find the exact record.
            if h.attributes.timestamp_type != TimestampType::CreateTime {
                return Ok(Some((h.max_timestamp, h.base_offset)));
            }
            let bytes = reader
                .batch_bytes(pos, &h)
                .map_err(|e| self.storage_error("read", e))?;
            let batch = RecordBatch::parse(Bytes::copy_from_slice(bytes))?;
            for record in batch.records()? {
                let record = record?;
                if record.timestamp >= timestamp {
                    return Ok(Some((record.timestamp, record.offset)));
                }
            }
            pos += h.size_in_bytes() as u64;
        }
    }

    /// Removes every batch whose last offset is at least `offset`, returning the base offset of
    /// the first batch removed (if any was).
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<Option<i64>, LogError> {
        let Some((pos, first_removed)) = self.translate_offset(offset)? else {
            return Ok(None);
        };
        self.truncate_file(pos)?;
        self.offset_index.truncate_to_position(pos);
        self.time_index
            .truncate_to_offset(first_removed.base_offset);
        self.reload_tail(false)?;
        Ok(Some(first_removed.base_offset))
    }

    /// Whether appending these batches should first start a new segment (Kafka's `shouldRoll`):
    /// the segment would pass `log.segment.bytes`, is older than `log.roll.ms`, has a full index,
    /// or cannot express the offsets relative to its base.
    pub(crate) fn should_roll(
        &self,
        config: &LogConfig,
        append_size: usize,
        append_max_timestamp: i64,
        append_last_offset: i64,
        now_ms: i64,
    ) -> bool {
        let relative_overflow = append_last_offset - self.base_offset > i64::from(i32::MAX);
        if self.size == 0 {
            return relative_overflow;
        }
        let waited = match self.first_batch_timestamp {
            Some(t) if t >= 0 && append_max_timestamp >= 0 => append_max_timestamp - t,
            _ => now_ms - self.created_ms,
        };
        relative_overflow
            || self.size + append_size as u64 > u64::from(config.segment_bytes)
            || waited > config.segment_ms
            || self.offset_index.file().is_full()
            || self.time_index.file().is_full()
    }

    /// Prepares the segment to take appends: index files preallocated to their maximum size.
    pub(crate) fn make_active(&mut self, config: &LogConfig) -> Result<(), LogError> {
        self.max_index_size = config.max_index_size as usize;
        self.active = true;
        self.preallocate_indexes()
    }

    /// Finishes a segment that will take no more appends (it rolled, or the log is closing): the
    /// time index gets a final entry for the segment's largest timestamp and both indexes are
    /// trimmed to their entries and sealed.
    pub(crate) fn make_inactive(&mut self) -> Result<(), LogError> {
        self.active = false;
        if self.max_timestamp >= 0 {
            let ti = self.time_index.file_mut();
            if ti.is_full() {
                ti.set_capacity((ti.entries() + 1) * 12)
                    .map_err(|e| LogError::storage("grow", &self.log_path, e))?;
            }
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        }
        self.seal_indexes()
    }

    /// fsyncs the log file, and the indexes too if `with_indexes`. The active segment's indexes
    /// need no fsync until it rolls or closes: after a crash the segment holding the recovery
    /// point has its indexes rebuilt, never read.
    pub(crate) fn flush(&self, with_indexes: bool) -> Result<(), LogError> {
        self.log
            .sync_data()
            .map_err(|e| self.storage_error("fsync", e))?;
        if !with_indexes {
            return Ok(());
        }
        self.offset_index
            .file()
            .flush()
            .map_err(|e| LogError::storage("fsync", self.offset_index.file().path(), e))?;
        self.time_index
            .file()
            .flush()
            .map_err(|e| LogError::storage("fsync", self.time_index.file().path(), e))
    }

    /// Removes the segment's three files.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        let LogSegment {
            log_path,
            log,
            offset_index,
            time_index,
            ..
        } = self;
        drop(log);
        fs::remove_file(&log_path).map_err(|e| LogError::storage("delete", &log_path, e))?;
        for index in [offset_index.into_file(), time_index.into_file()] {
            let path = index.path().to_path_buf();
            index
                .delete()
                .map_err(|e| LogError::storage("delete", &path, e))?;
        }
        Ok(())
    }
}

enum Tail {
    Ok,
    IndexMismatch,
    InvalidAt(u64),
}

fn meta_of(h: &BatchHeader) -> BatchMeta {
    BatchMeta {
        position: 0,
        size: h.size_in_bytes(),
        base_offset: h.base_offset,
        last_offset: h.last_offset(),
        max_timestamp: h.max_timestamp,
    }
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)
}

/// How many leading bytes of `buf` (read from a batch's start) are whole batches ending before
/// `max_offset`, and whether the scan stopped before the end of `buf` at a batch it could not
/// take. The first header must parse: the caller found a batch there.
fn whole_batches(buf: &[u8], max_offset: i64) -> Result<(usize, bool), LogError> {
    let mut keep = 0;
    while keep + HEADER_SIZE <= buf.len() {
        let h = match BatchHeader::parse(&buf[keep..]) {
            Ok(h) => h,
            Err(e) if keep == 0 => return Err(LogError::Corrupt(e)),
            Err(_) => return Ok((keep, true)),
        };
        if keep + h.size_in_bytes() > buf.len() || h.last_offset() >= max_offset {
            return Ok((keep, true));
        }
        keep += h.size_in_bytes();
    }
    Ok((keep, false))
}

fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, pos)
}

/// Lets unit tests pick the read path for this thread and see which one ran, so the two can be
/// compared on the same arguments.
#[cfg(test)]
pub(crate) mod read_path {
    use std::cell::Cell;

    thread_local! {
        static MIN: Cell<Option<usize>> = const { Cell::new(None) };
        /// (reads served from a mapping, reads served from a copy)
        static COUNTS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }

    /// From now on this thread's reads map when they are at least `min` bytes (`usize::MAX`:
    /// never; `None`: from [`super::MMAP_MIN_READ`] on again).
    pub(crate) fn map_from(min: Option<usize>) {
        MIN.with(|m| m.set(min));
    }

    pub(super) fn forced_min() -> Option<usize> {
        MIN.with(Cell::get)
    }

    pub(super) fn count(mapped: bool) {
        COUNTS.with(|c| {
            let (m, p) = c.get();
            c.set(if mapped { (m + 1, p) } else { (m, p + 1) });
        });
    }

    /// (mapped, copied): this thread's segment reads by path since the last call.
    pub(crate) fn take() -> (usize, usize) {
        COUNTS.with(|c| c.replace((0, 0)))
    }
}
