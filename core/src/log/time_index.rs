//! The sparse time index: which offset to start from to find the first record at or after a
//! timestamp (ListOffsets by time).
//!
//! Each entry is 12 bytes, big-endian: the largest timestamp seen in the segment so far (i64),
//! then the offset, relative to the segment base (u32), of the batch where it was first reached.
//! Entries are added alongside offset index entries when the maximum has grown, and once more
//! when the segment rolls or closes, so the last entry holds the segment's largest timestamp.

use std::io;
use std::path::PathBuf;

use super::index_file::IndexFile;

const ENTRY_SIZE: usize = 12;

/// The seal's marker: a timestamp of i64::MIN, which no entry has (the running maximum starts at -1).
const SEAL_MARKER: [u8; ENTRY_SIZE - 4] = [0x80, 0, 0, 0, 0, 0, 0, 0];

pub(crate) struct TimeIndex {
    file: IndexFile,
    base_offset: i64,
}

/// An index entry: every batch up to and including the one at `offset` has timestamps at most
/// `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

impl TimeIndex {
    pub(crate) fn open(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        Ok(TimeIndex {
            file: IndexFile::open(path, ENTRY_SIZE)?,
            base_offset,
        })
    }

    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        Ok(TimeIndex {
            file: IndexFile::create(path, ENTRY_SIZE)?,
            base_offset,
        })
    }

    pub(crate) fn file(&self) -> &IndexFile {
        &self.file
    }

    pub(crate) fn file_mut(&mut self) -> &mut IndexFile {
        &mut self.file
    }

    pub(crate) fn into_file(self) -> IndexFile {
        self.file
    }

    /// Trims and seals the index once its segment takes no more appends.
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        self.file.seal(&SEAL_MARKER)
    }

    /// Whether the index was sealed and is intact; strips the seal if so.
    pub(crate) fn unseal(&mut self) -> bool {
        self.file.unseal(&SEAL_MARKER)
    }

    fn get(&self, i: usize) -> TimestampOffset {
        let e = self.file.entry(i);
        TimestampOffset {
            timestamp: i64::from_be_bytes(e[0..8].try_into().expect("8 bytes")),
            offset: self.base_offset
                + i64::from(u32::from_be_bytes(e[8..12].try_into().expect("4 bytes"))),
        }
    }

    pub(crate) fn last(&self) -> Option<TimestampOffset> {
        self.file.entries().checked_sub(1).map(|i| self.get(i))
    }

    /// Adds an entry if `timestamp` is larger than the last one's.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if self.last().is_some_and(|l| timestamp <= l.timestamp) {
            return;
        }
        let mut entry = [0u8; ENTRY_SIZE];
        entry[0..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..12].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.file.push(&entry);
    }

    /// The last entry whose timestamp is strictly below `target`: every record up to its offset
    /// is older than `target`, so a search may start after it.
    pub(crate) fn lookup_before(&self, target: i64) -> Option<TimestampOffset> {
        self.file
            .last_at_most(target.saturating_sub(1), |e| {
                i64::from_be_bytes(e[0..8].try_into().expect("8"))
            })
            .map(|i| self.get(i))
    }

    /// Drops entries that point at `offset` or later.
    pub(crate) fn truncate_to_offset(&mut self, offset: i64) {
        let rel = offset - self.base_offset;
        let keep = self
            .file
            .last_at_most(rel - 1, |e| {
                i64::from(u32::from_be_bytes(e[8..12].try_into().expect("4")))
            })
            .map_or(0, |i| i + 1);
        self.file.truncate_entries(keep);
    }

    /// Whether entries have strictly increasing timestamps, non-decreasing offsets, and offsets
    /// below `next_offset`.
    pub(crate) fn is_sane(&self, next_offset: i64) -> bool {
        if !self.file.is_aligned() {
            return false;
        }
        let mut prev: Option<TimestampOffset> = None;
        for i in 0..self.file.entries() {
            let e = self.get(i);
            if e.offset >= next_offset {
                return false;
            }
            if let Some(p) = prev
                && (e.timestamp <= p.timestamp || e.offset < p.offset)
            {
                return false;
            }
            prev = Some(e);
        }
        true
    }
}
