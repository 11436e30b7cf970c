//! Reading batches back from a segment file: a forward cursor over a positional-read buffer.
//!
//! Lookups walk batch headers from an index position; recovery walks whole batches and checks
//! their CRCs. Both read the file in large chunks, so a scan costs a few system calls rather than
//! one per batch.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::record::BatchError;
use crate::record::header::{self, BatchHeader, HEADER_SIZE};

/// Bytes read per refill when the caller has no better idea.
pub(crate) const DEFAULT_CHUNK: usize = 64 * 1024;

/// What lies at a position of a segment file.
#[derive(Debug)]
pub(crate) enum Found {
    /// A batch whose header parses and whose bytes are all present (and, from
    /// [`SegmentReader::batch_at`], whose CRC matches).
    Batch(BatchHeader),
    /// The position is the end of the file.
    End,
    /// Fewer bytes remain than the header or the batch needs: a torn write.
    Torn,
    /// The bytes are not a batch.
    Invalid(BatchError),
}

/// A cursor over the first `len` bytes of a segment file.
pub(crate) struct SegmentReader<'f> {
    file: &'f File,
    len: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'f> SegmentReader<'f> {
    pub(crate) fn new(file: &'f File, len: u64, chunk: usize) -> Self {
        SegmentReader {
            file,
            len,
            chunk: chunk.max(HEADER_SIZE),
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The bytes `[pos, pos + n)`, reading them if they are not buffered. The caller guarantees
    /// they lie within the file.
    fn bytes(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let buffered =
            pos >= self.buf_start && pos + n as u64 <= self.buf_start + self.buf.len() as u64;
        if !buffered {
            let want = (n.max(self.chunk) as u64).min(self.len - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            #[cfg(test)]
            read_counter::add(want);
            self.buf_start = pos;
        }
        let from = (pos - self.buf_start) as usize;
        Ok(&self.buf[from..from + n])
    }

    /// The batch header at `pos`, checking that the whole batch fits in the file.
    pub(crate) fn header_at(&mut self, pos: u64) -> io::Result<Found> {
        if pos == self.len {
            return Ok(Found::End);
        }
        if self.len - pos < HEADER_SIZE as u64 {
            return Ok(Found::Torn);
        }
        let header = match BatchHeader::parse(self.bytes(pos, HEADER_SIZE)?) {
            Ok(h) => h,
            Err(e) => return Ok(Found::Invalid(e)),
        };
        if header.size_in_bytes() as u64 > self.len - pos {
            return Ok(Found::Torn);
        }
        Ok(Found::Batch(header))
    }

    /// Like [`Self::header_at`], but also reads the whole batch and checks its CRC.
    pub(crate) fn batch_at(&mut self, pos: u64) -> io::Result<Found> {
        let header = match self.header_at(pos)? {
            Found::Batch(h) => h,
            other => return Ok(other),
        };
        let bytes = self.bytes(pos, header.size_in_bytes())?;
        Ok(match header::verify_crc(bytes, &header) {
            Ok(()) => Found::Batch(header),
            Err(e) => Found::Invalid(e),
        })
    }

    /// The whole batch at `pos`, which [`Self::header_at`] has already found.
    pub(crate) fn batch_bytes(&mut self, pos: u64, header: &BatchHeader) -> io::Result<&[u8]> {
        self.bytes(pos, header.size_in_bytes())
    }
}

/// Bytes this thread's readers have read, so tests can bound what a lookup touches.
#[cfg(test)]
pub(crate) mod read_counter {
    use std::cell::Cell;

    thread_local! {
        static BYTES: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn add(n: usize) {
        BYTES.with(|b| b.set(b.get() + n));
    }

    /// Returns the bytes read since the last call.
    pub(crate) fn take() -> usize {
        BYTES.with(|b| b.replace(0))
    }
}
