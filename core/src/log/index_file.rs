//! A memory-mapped file of fixed-size entries: the storage under both segment indexes.
//!
//! The active segment's index files are preallocated to `log.index.size.max.bytes` and mapped
//! whole, so appending an entry is a store into memory. When the segment stops taking appends
//! (it rolls, or the log closes) the file is trimmed to its entries and *sealed*: one more
//! entry-sized trailer holds a marker no real entry can have and the CRC-32C of the entries.
//! An index is only ever trusted when its seal checks out, so a file that was deleted, cut short
//! or scribbled over after it was sealed is rebuilt from its segment rather than believed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    mmap: MmapMut,
    entry_size: usize,
    entries: usize,
    /// Whether the file was there before we opened it; a missing index is always rebuilt.
    existed: bool,
    /// Whether the file held a whole number of entries when opened; a torn or garbled one may not.
    aligned: bool,
}

impl IndexFile {
    /// Opens `path`, creating it if missing, and maps what it holds. Every whole entry in the file
    /// counts as present; [`Self::is_aligned`] says whether the length was a whole number of
    /// entries.
    pub(crate) fn open(path: PathBuf, entry_size: usize) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mmap = map(&file)?;
        let entries = mmap.len() / entry_size;
        let aligned = mmap.len() % entry_size == 0;
        Ok(IndexFile {
            path,
            file,
            mmap,
            entry_size,
            entries,
            existed,
            aligned,
        })
    }

    /// Creates (or empties) the file at `path`.
    pub(crate) fn create(path: PathBuf, entry_size: usize) -> io::Result<Self> {
        File::create(&path)?;
        Self::open(path, entry_size)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn is_aligned(&self) -> bool {
        self.aligned
    }

    /// Forgets every entry, to rebuild the index from its segment.
    pub(crate) fn reset(&mut self) {
        self.entries = 0;
        self.aligned = true;
        self.existed = true;
    }

    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.mmap.len() / self.entry_size
    }

    pub(crate) fn entry(&self, i: usize) -> &[u8] {
        &self.mmap[i * self.entry_size..(i + 1) * self.entry_size]
    }

    /// Appends an entry; a full index drops it (lookups stay correct, only sparser), though the
    /// segment rolls before that happens.
    pub(crate) fn push(&mut self, entry: &[u8]) {
        debug_assert_eq!(entry.len(), self.entry_size);
        if self.is_full() {
            return;
        }
        let at = self.entries * self.entry_size;
        self.mmap[at..at + self.entry_size].copy_from_slice(entry);
        self.entries += 1;
    }

    /// Keeps the first `n` entries.
    pub(crate) fn truncate_entries(&mut self, n: usize) {
        self.entries = self.entries.min(n);
    }

    /// Index of the last entry whose key is at most `target`, by binary search.
    pub(crate) fn last_at_most(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(self.entry(mid)) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// Trims the file to its entries plus a trailer: `marker` (entry size minus 4 bytes, a value
    /// no real entry starts with) and the CRC-32C of the entries.
    pub(crate) fn seal(&mut self, marker: &[u8]) -> io::Result<()> {
        debug_assert_eq!(marker.len() + 4, self.entry_size);
        let body = self.entries * self.entry_size;
        self.set_capacity(body + self.entry_size)?;
        let crc = crc32c::crc32c(&self.mmap[..body]);
        self.mmap[body..body + marker.len()].copy_from_slice(marker);
        self.mmap[body + marker.len()..body + self.entry_size].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Checks and removes the trailer [`Self::seal`] wrote. `false` means the file is not a
    /// sealed index: missing, cut, scribbled over, or never sealed.
    pub(crate) fn unseal(&mut self, marker: &[u8]) -> bool {
        if !self.existed || !self.aligned || self.entries == 0 {
            return false;
        }
        let body = (self.entries - 1) * self.entry_size;
        let trailer = &self.mmap[body..body + self.entry_size];
        let crc = u32::from_be_bytes(trailer[marker.len()..].try_into().expect("4 bytes"));
        if &trailer[..marker.len()] != marker || crc != crc32c::crc32c(&self.mmap[..body]) {
            return false;
        }
        self.entries -= 1;
        true
    }

    /// Resizes the file (and mapping) to hold `capacity_bytes`, rounded down to whole entries but
    /// never below the entries present. Used to preallocate the active segment's index.
    pub(crate) fn set_capacity(&mut self, capacity_bytes: usize) -> io::Result<()> {
        let bytes = (capacity_bytes / self.entry_size).max(self.entries) * self.entry_size;
        if bytes == self.mmap.len() {
            return Ok(());
        }
        // Unmap before shrinking: touching a mapping past the end of its file is SIGBUS.
        self.mmap = MmapMut::map_anon(0)?;
        self.file.set_len(bytes as u64)?;
        self.mmap = map(&self.file)?;
        Ok(())
    }

    /// Writes the mapped entries and the file length to disk.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.mmap.flush()?;
        self.file.sync_all()
    }

    pub(crate) fn delete(self) -> io::Result<()> {
        let path = self.path.clone();
        drop(self);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn map(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the index files belong to this log alone (one process serves a log directory), and
    // the mapping is replaced before the file is ever shrunk, so the memory stays backed by file
    // pages for as long as it is mapped.
    unsafe { MmapMut::map_mut(file) }
}
