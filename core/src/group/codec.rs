//! Kafka's fixed-width big-endian encodings of its older schemas (int16-length strings,
//! int32-length bytes and arrays), shared by the consumer protocol's bytes and the records of
//! `__consumer_offsets`. Reads of bytes from the outside fail cleanly on a short or hostile
//! length, never allocate by a length before checking the bytes are there.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

/// Why bytes do not follow the schema they were read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedError;

impl std::fmt::Display for MalformedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed group protocol bytes")
    }
}

impl std::error::Error for MalformedError {}

/// Reads one schema's fields in order.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedError> {
        if self.0.len() < n {
            return Err(MalformedError);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, MalformedError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, MalformedError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, MalformedError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// An array length: never negative here.
    pub(crate) fn len(&mut self) -> Result<usize, MalformedError> {
        usize::try_from(self.i32()?).map_err(|_| MalformedError)
    }

    pub(crate) fn nullable_string(&mut self) -> Result<Option<Arc<str>>, MalformedError> {
        let Ok(n) = usize::try_from(self.i16()?) else {
            return Ok(None);
        };
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(|s| Some(Arc::from(s)))
            .map_err(|_| MalformedError)
    }

    pub(crate) fn string(&mut self) -> Result<Arc<str>, MalformedError> {
        self.nullable_string()?.ok_or(MalformedError)
    }

    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<Bytes>, MalformedError> {
        let Ok(n) = usize::try_from(self.i32()?) else {
            return Ok(None);
        };
        Ok(Some(Bytes::copy_from_slice(self.take(n)?)))
    }
}

pub(crate) fn put_string(out: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(&s.as_bytes()[..len]);
}

pub(crate) fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

pub(crate) fn put_nullable_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.put_i32(b.len() as i32);
            out.put_slice(b);
        }
        None => out.put_i32(-1),
    }
}
