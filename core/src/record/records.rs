use bytes::Bytes;

use super::header::HEADER_SIZE;
use super::varint::{get_varint, get_varlong};
use super::{BatchError, BatchHeader, Compression, TimestampType};

/// One record of a batch, with absolute offset and timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The batch's base offset plus the record's offset delta.
    pub offset: i64,
    /// Create time (base timestamp plus delta), or the batch's log append time.
    pub timestamp: i64,
    /// `None` is Kafka's null key (length -1), distinct from an empty key.
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Record headers in the order written.
    pub headers: Vec<RecordHeader>,
}

/// A record header: a UTF-8 key (kept as bytes; not checked here) and an optional value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    /// Header key.
    pub key: Bytes,
    /// Header value; `None` is null.
    pub value: Option<Bytes>,
}

/// Iterator over the records of one batch (decompressed first if it is compressed). It checks that the batch holds exactly
/// `recordCount` records and nothing after them, as Kafka's reader does.
#[derive(Debug)]
pub struct Records {
    body: Bytes,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    remaining: i32,
    failed: bool,
}

impl Records {
    pub(super) fn new(header: &BatchHeader, batch: Bytes) -> Result<Self, BatchError> {
        let compression = header.attributes.compression;
        let body = match compression {
            Compression::None => batch.slice(HEADER_SIZE..),
            _ => Bytes::from(compression.decompress(&batch[HEADER_SIZE..])?),
        };
        Ok(Records {
            body,
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            log_append_time: (header.attributes.timestamp_type == TimestampType::LogAppendTime)
                .then_some(header.max_timestamp),
            remaining: header.record_count,
            failed: false,
        })
    }

    fn decode_next(&mut self) -> Result<Record, BatchError> {
        let mut cursor = Cursor {
            buf: &self.body,
            pos: 0,
        };
        let length = cursor.varint()?;
        if length < 0 {
            return Err(BatchError::MalformedRecord("negative record length"));
        }
        let start = cursor.pos;
        let end = start
            .checked_add(length as usize)
            .filter(|&end| end <= self.body.len())
            .ok_or(BatchError::MalformedRecord(
                "record runs past the end of the batch",
            ))?;
        let mut cursor = Cursor {
            buf: &self.body[..end],
            pos: start,
        };
        let _attributes = cursor.byte()?;
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = cursor.varint()?;
        let key = cursor.nullable_bytes(&self.body)?;
        let value = cursor.nullable_bytes(&self.body)?;
        let header_count = cursor.varint()?;
        if header_count < 0 {
            return Err(BatchError::MalformedRecord("negative header count"));
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(64));
        for _ in 0..header_count {
            let key = cursor
                .nullable_bytes(&self.body)?
                .ok_or(BatchError::MalformedRecord("null header key"))?;
            let value = cursor.nullable_bytes(&self.body)?;
            headers.push(RecordHeader { key, value });
        }
        if cursor.pos != end {
            return Err(BatchError::MalformedRecord(
                "record length does not match its fields",
            ));
        }
        let record = Record {
            offset: self.base_offset + i64::from(offset_delta),
            timestamp: self
                .log_append_time
                .unwrap_or(self.base_timestamp.wrapping_add(timestamp_delta)),
            key,
            value,
            headers,
        };
        let _ = self.body.split_to(end);
        Ok(record)
    }
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.body.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(BatchError::MalformedRecord(
                "bytes remain after the last record",
            )));
        }
        self.remaining -= 1;
        let result = self.decode_next();
        self.failed = result.is_err();
        Some(result)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, BatchError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(BatchError::MalformedRecord("record ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let (v, len) = get_varint(&self.buf[self.pos..])?;
        self.pos += len;
        Ok(v)
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        let (v, len) = get_varlong(&self.buf[self.pos..])?;
        self.pos += len;
        Ok(v)
    }

    /// A varint length then that many bytes, sliced from `whole` without copying; -1 is null.
    fn nullable_bytes(&mut self, whole: &Bytes) -> Result<Option<Bytes>, BatchError> {
        let len = self.varint()?;
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(BatchError::MalformedRecord("negative length"))
            };
        }
        let end = self
            .pos
            .checked_add(len as usize)
            .filter(|&end| end <= self.buf.len())
            .ok_or(BatchError::MalformedRecord(
                "field runs past the end of the record",
            ))?;
        let bytes = whole.slice(self.pos..end);
        self.pos = end;
        Ok(Some(bytes))
    }
}
