use bytes::Bytes;

use super::header::{
    self, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE, NO_TIMESTAMP,
};
use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use super::{Attributes, BatchHeader, Compression};

/// Builds a v2 batch the way Kafka's Java producer lays it out: the first record's
/// timestamp is the base timestamp, each record stores deltas, and the CRC is computed last.
///
/// With a compression codec in its attributes, the records are compressed as one stream when
/// the batch is built. Tests, benchmarks and the producer use this; the broker never re-encodes.
pub struct BatchBuilder {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: Attributes,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    record_count: i32,
    last_offset_delta: Option<i32>,
    buf: Vec<u8>,
}

impl BatchBuilder {
    /// A batch whose first record will have offset `base_offset` (producers send 0; the broker
    /// assigns the real offset on append).
    pub fn new(base_offset: i64) -> Self {
        BatchBuilder {
            base_offset,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            attributes: Attributes::default(),
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            base_timestamp: None,
            max_timestamp: NO_TIMESTAMP,
            record_count: 0,
            last_offset_delta: None,
            buf: vec![0; HEADER_SIZE],
        }
    }

    /// Like [`new`](Self::new), building into `buffer` (cleared first), so a producer can build
    /// batches in memory drawn from its `buffer.memory` budget.
    pub fn with_buffer(base_offset: i64, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        buffer.resize(HEADER_SIZE, 0);
        BatchBuilder {
            buf: buffer,
            ..BatchBuilder::new(base_offset)
        }
    }

    /// The most bytes one record can add to a batch, whatever its offset and timestamp deltas:
    /// what a producer checks against the room left in a batch before appending.
    pub fn record_size_upper_bound(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> usize {
        // length varint, attributes, timestamp delta (varlong), offset delta (varint)
        let fixed = 5 + 1 + 10 + 5;
        let headers_len: usize = varint_len(headers.len() as i32)
            + headers
                .iter()
                .map(|(k, v)| nullable_len(Some(k)) + nullable_len(*v))
                .sum::<usize>();
        fixed + nullable_len(key) + nullable_len(value) + headers_len
    }

    /// The batch header's size: a batch of `batch.size` bytes holds this much less record data.
    pub const HEADER_SIZE: usize = HEADER_SIZE;

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the partition leader epoch field.
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets the attribute flags. The records are written uncompressed whatever codec is named, so
    /// naming one is only useful to test how readers treat such batches.
    pub fn attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Appends a record at the next offset and returns its offset delta.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> i32 {
        let delta = self.last_offset_delta.map_or(0, |d| d + 1);
        self.append_at(delta, timestamp, key, value, headers);
        delta
    }

    /// Appends a record at a chosen offset delta, leaving gaps as a compacted batch has.
    ///
    /// # Panics
    /// If `offset_delta` does not exceed the previous record's: a caller bug, not bad input.
    pub fn append_at(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        assert!(
            self.last_offset_delta
                .is_none_or(|last| offset_delta > last),
            "offset deltas must increase"
        );
        let base_timestamp = *self.base_timestamp.get_or_insert(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(base_timestamp);
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varint_len(offset_delta)
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(headers.len() as i32)
            + headers
                .iter()
                .map(|(k, v)| nullable_len(Some(k)) + nullable_len(*v))
                .sum::<usize>();
        put_varint(&mut self.buf, body_len as i32);
        self.buf.push(0); // record attributes: unused by Kafka
        put_varlong(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_nullable(&mut self.buf, key);
        put_nullable(&mut self.buf, value);
        put_varint(&mut self.buf, headers.len() as i32);
        for (k, v) in headers {
            put_nullable(&mut self.buf, Some(k));
            put_nullable(&mut self.buf, *v);
        }
        self.record_count += 1;
        self.last_offset_delta = Some(offset_delta);
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Number of records appended so far.
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Size the built batch will have.
    pub fn size_in_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes the header and CRC and returns the finished batch.
    pub fn build(mut self) -> Bytes {
        let mut header = BatchHeader {
            base_offset: self.base_offset,
            batch_length: (self.buf.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC_V2,
            crc: 0,
            attributes: self.attributes,
            last_offset_delta: self.last_offset_delta.unwrap_or(0),
            base_timestamp: self.base_timestamp.unwrap_or(NO_TIMESTAMP),
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.record_count,
        };
        if self.attributes.compression != Compression::None {
            let records = self
                .attributes
                .compression
                .compress(&self.buf[HEADER_SIZE..]);
            self.buf.truncate(HEADER_SIZE);
            self.buf.extend_from_slice(&records);
            header.batch_length = (self.buf.len() - LOG_OVERHEAD) as i32;
        }
        header.write_to(&mut self.buf);
        let crc = header::compute_crc(&self.buf);
        self.buf[header::CRC_POS..header::CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(self.buf)
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}
