//! The sparse offset index: which file position to start from to find an offset.
//!
//! Each entry is 8 bytes, big-endian: the offset relative to the segment's base (u32), then the
//! file position of the batch that begins at that offset (u32). An entry is added once
//! `log.index.interval.bytes` have been appended since the last, so a lookup reads at most about
//! one interval of log after its binary search.

use std::io;
use std::path::PathBuf;

use super::index_file::IndexFile;

const ENTRY_SIZE: usize = 8;

/// The seal's marker: a relative offset of u32::MAX, which no entry has (relative offsets stay within i32).
const SEAL_MARKER: [u8; ENTRY_SIZE - 4] = [0xff; 4];

pub(crate) struct OffsetIndex {
    file: IndexFile,
    base_offset: i64,
}

/// An index entry: a batch's absolute base offset and its position in the segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetPosition {
    pub offset: i64,
    pub position: u64,
}

impl OffsetIndex {
    pub(crate) fn open(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        Ok(OffsetIndex {
            file: IndexFile::open(path, ENTRY_SIZE)?,
            base_offset,
        })
    }

    pub(crate) fn create(path: PathBuf, base_offset: i64) -> io::Result<Self> {
        Ok(OffsetIndex {
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

    fn decode(&self, entry: &[u8]) -> OffsetPosition {
        let relative = u32::from_be_bytes(entry[0..4].try_into().expect("4 bytes"));
        let position = u32::from_be_bytes(entry[4..8].try_into().expect("4 bytes"));
        OffsetPosition {
            offset: self.base_offset + i64::from(relative),
            position: u64::from(position),
        }
    }

    pub(crate) fn get(&self, i: usize) -> OffsetPosition {
        self.decode(self.file.entry(i))
    }

    pub(crate) fn last(&self) -> Option<OffsetPosition> {
        self.file.entries().checked_sub(1).map(|i| self.get(i))
    }

    /// Records that the batch starting at `offset` lies at `position`.
    pub(crate) fn append(&mut self, offset: i64, position: u64) {
        let mut entry = [0u8; ENTRY_SIZE];
        entry[0..4].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        entry[4..8].copy_from_slice(&(position as u32).to_be_bytes());
        self.file.push(&entry);
    }

    /// The entry with the greatest offset at most `target`.
    pub(crate) fn lookup(&self, target: i64) -> Option<OffsetPosition> {
        let rel = target - self.base_offset;
        self.file
            .last_at_most(rel, |e| {
                i64::from(u32::from_be_bytes(e[0..4].try_into().expect("4")))
            })
            .map(|i| self.get(i))
    }

    /// Drops entries for batches at or after file position `position`.
    pub(crate) fn truncate_to_position(&mut self, position: u64) {
        let keep = self
            .file
            .last_at_most(position as i64 - 1, |e| {
                i64::from(u32::from_be_bytes(e[4..8].try_into().expect("4")))
            })
            .map_or(0, |i| i + 1);
        self.file.truncate_entries(keep);
    }

    /// Whether the entries could describe a segment of `segment_size` bytes: strictly increasing
    /// offsets and positions, every position inside the file. Anything else means the file was
    /// garbled and must be rebuilt.
    pub(crate) fn is_sane(&self, segment_size: u64) -> bool {
        if !self.file.is_aligned() {
            return false;
        }
        let mut prev: Option<OffsetPosition> = None;
        for i in 0..self.file.entries() {
            let e = self.get(i);
            if e.position >= segment_size {
                return false;
            }
            if let Some(p) = prev
                && (e.offset <= p.offset || e.position <= p.position)
            {
                return false;
            }
            prev = Some(e);
        }
        true
    }
}
