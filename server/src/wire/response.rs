//! An encoded response as a list of byte runs, so that a fetch response's record bytes go to
//! the socket as the log returned them (mapped from the segment file) instead of being copied
//! into the frame: the encoder's bytes and the stored batches leave in one vectored write, and a
//! response waiting for a slow reader holds page-cache pages, not a heap copy.
//!
//! `kafka-protocol` writes a byte field with one `put_slice` of the field's whole value; the
//! writer here recognises the slices it was told are shared (by address and length) and keeps
//! a reference to them in place of a copy.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::time::Duration;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Byte fields shorter than this are copied: an extra run in the write costs more than a copy.
const SHARE_AT_LEAST: usize = 16 * 1024;
/// Runs handed to one `writev` (the kernel takes up to 1024).
const RUNS_PER_WRITE: usize = 64;

/// A whole frame, size prefix included, as byte runs written in order.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    runs: Vec<Bytes>,
}

impl ResponseFrame {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.runs.iter().map(Bytes::len).sum()
    }

    /// The byte runs, in the order they are written.
    pub fn runs(&self) -> &[Bytes] {
        &self.runs
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame in one buffer (for tests and clients; the broker writes the runs).
    pub fn to_bytes(&self) -> Bytes {
        match self.runs.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            runs => {
                let mut all = BytesMut::with_capacity(self.len());
                runs.iter().for_each(|r| all.extend_from_slice(r));
                all.freeze()
            }
        }
    }

    /// Writes the whole frame; waiting more than `idle` for the socket to take a byte fails with
    /// `TimedOut` (`connections.max.idle.ms`: a peer that stopped reading is as idle as one
    /// that stopped writing).
    pub async fn write_to<W: AsyncWrite + Unpin>(
        mut self,
        writer: &mut W,
        idle: Duration,
    ) -> io::Result<()> {
        let mut first = 0;
        while first < self.runs.len() {
            let slices: Vec<IoSlice<'_>> = self.runs[first..]
                .iter()
                .take(RUNS_PER_WRITE)
                .map(|r| IoSlice::new(r))
                .collect();
            let written = tokio::time::timeout(idle, writer.write_vectored(&slices))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))??;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut left = written;
            while left > 0 {
                let run = &mut self.runs[first];
                if left >= run.len() {
                    left -= run.len();
                    // Release what is sent at once: mapped pages or a large header run.
                    *run = Bytes::new();
                    first += 1;
                } else {
                    bytes::Buf::advance(run, left);
                    left = 0;
                }
            }
        }
        Ok(())
    }
}

impl From<BytesMut> for ResponseFrame {
    fn from(frame: BytesMut) -> Self {
        ResponseFrame {
            runs: vec![frame.freeze()],
        }
    }
}

/// A `ByteBufMut` that copies everything but the `shared` byte fields, which it keeps by
/// reference. Its offsets are those of the whole frame, as the encoder expects.
pub struct RunWriter<'a> {
    runs: Vec<Bytes>,
    /// Bytes in `runs`.
    sealed: usize,
    head: BytesMut,
    shared: &'a [Bytes],
}

impl<'a> RunWriter<'a> {
    /// A writer that will keep the byte fields in `shared` by reference.
    pub fn new(shared: &'a [Bytes]) -> Self {
        RunWriter {
            runs: Vec::new(),
            sealed: 0,
            head: BytesMut::with_capacity(256),
            shared,
        }
    }

    /// The frame written.
    pub fn finish(mut self) -> ResponseFrame {
        self.seal();
        ResponseFrame { runs: self.runs }
    }

    fn seal(&mut self) {
        if !self.head.is_empty() {
            self.sealed += self.head.len();
            self.runs.push(self.head.split().freeze());
        }
    }

    /// Copies every run back into one buffer: the answer to a rewrite of sealed bytes, which
    /// no `kafka-protocol` message does today but a future one might.
    fn flatten(&mut self) {
        if self.runs.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.sealed + self.head.len());
        self.runs.drain(..).for_each(|r| all.extend_from_slice(&r));
        all.extend_from_slice(&self.head);
        self.head = all;
        self.sealed = 0;
    }

    fn is_shared(&self, src: &[u8]) -> bool {
        src.len() >= SHARE_AT_LEAST
            && self
                .shared
                .iter()
                .any(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
    }
}

// SAFETY: every method forwards to `head`, a `BytesMut`, whose own implementation upholds the
// trait's contract; `put_slice` either forwards too or appends a whole run without touching
// `head`'s uninitialised capacity.
unsafe impl BufMut for RunWriter<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded with the caller's guarantee about `head`'s chunk.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.is_shared(src) {
            let run = self
                .shared
                .iter()
                .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
                .expect("is_shared found it")
                .clone();
            self.seal();
            self.sealed += run.len();
            self.runs.push(run);
        } else {
            self.head.put_slice(src);
        }
    }
}

impl ByteBufMut for RunWriter<'_> {
    fn offset(&self) -> usize {
        self.sealed + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.sealed {
            self.flatten();
        }
        self.head.resize(offset - self.sealed, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start < self.sealed {
            self.flatten();
        }
        let sealed = self.sealed;
        &mut self.head[r.start - sealed..r.end - sealed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_fields_are_kept_by_reference_and_the_rest_is_copied() {
        let big = Bytes::from(vec![7u8; SHARE_AT_LEAST]);
        let small = Bytes::from_static(b"tiny");
        let shared = [big.clone(), small.clone()];
        let mut w = RunWriter::new(&shared);
        w.put_slice(b"head");
        w.put_slice(&big);
        w.put_slice(&small);
        w.put_slice(&big[1..]);
        assert_eq!(w.offset(), 4 + big.len() + 4 + big.len() - 1);
        let frame = w.finish();
        assert_eq!(frame.runs.len(), 3, "head, the shared run, the copied rest");
        assert_eq!(frame.runs[1].as_ptr(), big.as_ptr());
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"tiny");
        expected.extend_from_slice(&big[1..]);
        assert_eq!(frame.to_bytes().as_ref(), expected.as_slice());
    }

    #[test]
    fn rewriting_sealed_bytes_flattens_the_runs() {
        let big = Bytes::from(vec![1u8; SHARE_AT_LEAST]);
        let shared = [big.clone()];
        let mut w = RunWriter::new(&shared);
        w.put_slice(b"ab");
        w.put_slice(&big);
        w.range(0..2).copy_from_slice(b"xy");
        w.seek(w.offset() + 2);
        let bytes = w.finish().to_bytes();
        assert_eq!(&bytes[..2], b"xy");
        assert_eq!(bytes.len(), 2 + big.len() + 2);
    }

    #[tokio::test]
    async fn a_frame_is_written_whole_through_short_writes() {
        let runs: Vec<Bytes> = (0..200u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let expected: Vec<u8> = runs.iter().flat_map(|r| r.to_vec()).collect();
        let frame = ResponseFrame { runs };
        let (mut client, mut server) = tokio::io::duplex(4096);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut got)
                .await
                .unwrap();
            got
        });
        frame
            .write_to(&mut client, Duration::from_secs(5))
            .await
            .unwrap();
        drop(client);
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out() {
        let frame = ResponseFrame {
            runs: vec![Bytes::from(vec![0u8; 1 << 20])],
        };
        let (mut client, _server) = tokio::io::duplex(4096);
        let e = frame
            .write_to(&mut client, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
