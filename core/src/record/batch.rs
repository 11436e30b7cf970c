use std::fmt;

use bytes::Bytes;

use super::{BatchError, BatchHeader, Records, header};

/// One whole, CRC-checked record batch: its decoded header and the exact bytes it was stored as.
///
/// Cloning is cheap (the bytes are reference counted), and equality and hashing cover the bytes,
/// so the in-memory log built from these can sit inside model-checker state.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates `bytes` as exactly one batch: header, length and CRC.
    pub fn parse(bytes: Bytes) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        let size = header.size_in_bytes();
        if bytes.len() != size {
            return Err(BatchError::Truncated {
                needed: size,
                available: bytes.len(),
            });
        }
        header::verify_crc(&bytes, &header)?;
        Ok(RecordBatch { header, bytes })
    }

    /// The decoded fixed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// The stored bytes, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives up the stored bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Size of the batch on disk and on the wire.
    pub fn size_in_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Decodes the records one at a time, sharing the batch's memory for keys and values.
    pub fn records(&self) -> Result<Records, BatchError> {
        Records::new(&self.header, self.bytes.clone())
    }
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("header", &self.header)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// Splits a buffer of concatenated batches (a produce request's or fetch response's records)
/// into CRC-checked batches. The first error ends the iteration, so a torn tail is reported once.
pub fn batches(buf: Bytes) -> Batches {
    Batches {
        rest: buf,
        failed: false,
    }
}

/// Iterator returned by [`batches`].
pub struct Batches {
    rest: Bytes,
    failed: bool,
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = BatchHeader::parse(&self.rest).and_then(|h| {
            let size = h.size_in_bytes();
            if size > self.rest.len() {
                return Err(BatchError::Truncated {
                    needed: size,
                    available: self.rest.len(),
                });
            }
            RecordBatch::parse(self.rest.split_to(size))
        });
        self.failed = result.is_err();
        Some(result)
    }
}
