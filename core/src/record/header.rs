//! The fixed 61-byte header of a v2 record batch, and the few fields the broker rewrites in place.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset              ┐ outside the CRC: the broker assigns these
//!      8     4  batchLength             │ (bytes after this field)
//!     12     4  partitionLeaderEpoch    ┘
//!     16     1  magic (2)
//!     17     4  crc (CRC-32C of bytes 21..end)
//!     21     2  attributes
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordCount
//!     61     …  records
//! ```
//! All integers are big-endian. Because base offset, length and leader epoch precede the CRC's
//! range, the broker can give a batch its offsets without touching — or re-checksumming — the
//! producer's bytes.

use super::BatchError;

/// Byte position of `baseOffset`.
pub const BASE_OFFSET_POS: usize = 0;
/// Byte position of `batchLength`.
pub const LENGTH_POS: usize = 8;
/// Byte position of `partitionLeaderEpoch`.
pub const PARTITION_LEADER_EPOCH_POS: usize = 12;
/// Byte position of `magic`.
pub const MAGIC_POS: usize = 16;
/// Byte position of `crc`.
pub const CRC_POS: usize = 17;
/// Byte position of `attributes`, where the CRC's range begins.
pub const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
/// Byte position of `maxTimestamp`.
pub const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORDS_COUNT_POS: usize = 57;

/// Bytes before `batchLength` counts: the base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole fixed header; records start here.
pub const HEADER_SIZE: usize = 61;
/// The only message format Surety reads and writes.
pub const MAGIC_V2: i8 = 2;
/// `producerId` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` before a leader has stamped the batch.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// A timestamp Kafka uses for "none".
pub const NO_TIMESTAMP: i64 = -1;

/// The compression codec named by the low three attribute bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `compression.type=none`
    None,
    /// `compression.type=gzip`
    Gzip,
    /// `compression.type=snappy`
    Snappy,
    /// `compression.type=lz4`
    Lz4,
    /// `compression.type=zstd`
    Zstd,
}

impl Compression {
    fn from_bits(bits: i16) -> Result<Self, BatchError> {
        Ok(match bits & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other as u8)),
        })
    }

    fn bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Whether a batch's timestamps were set by the producer or by the broker on append
/// (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// `CreateTime`: the producer's clock.
    #[default]
    CreateTime,
    /// `LogAppendTime`: the broker overwrites `maxTimestamp` with its clock, and every record's
    /// timestamp reads as that.
    LogAppendTime,
}

/// The batch `attributes` field, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Codec of the records section.
    pub compression: Compression,
    /// Bit 3.
    pub timestamp_type: TimestampType,
    /// Bit 4: part of a transaction.
    pub is_transactional: bool,
    /// Bit 5: a transaction marker rather than user data.
    pub is_control: bool,
    /// Bit 6: the batch's base timestamp is a delete horizon set by the log cleaner (KIP-534).
    pub has_delete_horizon: bool,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            is_transactional: false,
            is_control: false,
            has_delete_horizon: false,
        }
    }
}

const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

impl Attributes {
    /// Decodes the 16-bit field, rejecting unknown codecs.
    pub fn from_bits(bits: i16) -> Result<Self, BatchError> {
        Ok(Attributes {
            compression: Compression::from_bits(bits)?,
            timestamp_type: if bits & TIMESTAMP_TYPE_BIT != 0 {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            is_transactional: bits & TRANSACTIONAL_BIT != 0,
            is_control: bits & CONTROL_BIT != 0,
            has_delete_horizon: bits & DELETE_HORIZON_BIT != 0,
        })
    }

    /// Encodes the field as Kafka writes it.
    pub fn bits(self) -> i16 {
        let mut bits = self.compression.bits();
        if self.timestamp_type == TimestampType::LogAppendTime {
            bits |= TIMESTAMP_TYPE_BIT;
        }
        if self.is_transactional {
            bits |= TRANSACTIONAL_BIT;
        }
        if self.is_control {
            bits |= CONTROL_BIT;
        }
        if self.has_delete_horizon {
            bits |= DELETE_HORIZON_BIT;
        }
        bits
    }
}

/// The decoded fixed header of one batch.
///
/// Parsing a header checks only what can be checked without the records: the magic byte and a
/// plausible length. [`super::verify_crc`] checks the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field; the batch occupies `LOG_OVERHEAD + batch_length` bytes.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Always 2.
    pub magic: i8,
    /// The stored CRC-32C.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control flags.
    pub attributes: Attributes,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (or the delete horizon).
    pub base_timestamp: i64,
    /// Largest record timestamp, or the log append time.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the records section.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the front of `buf`, which must hold at least [`HEADER_SIZE`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_SIZE {
            return Err(BatchError::Truncated {
                needed: HEADER_SIZE,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_POS] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let batch_length = get_i32(buf, LENGTH_POS);
        if batch_length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength(batch_length));
        }
        let header = BatchHeader {
            base_offset: get_i64(buf, BASE_OFFSET_POS),
            batch_length,
            partition_leader_epoch: get_i32(buf, PARTITION_LEADER_EPOCH_POS),
            magic,
            crc: get_i32(buf, CRC_POS) as u32,
            attributes: Attributes::from_bits(get_i16(buf, ATTRIBUTES_POS))?,
            last_offset_delta: get_i32(buf, LAST_OFFSET_DELTA_POS),
            base_timestamp: get_i64(buf, BASE_TIMESTAMP_POS),
            max_timestamp: get_i64(buf, MAX_TIMESTAMP_POS),
            producer_id: get_i64(buf, PRODUCER_ID_POS),
            producer_epoch: get_i16(buf, PRODUCER_EPOCH_POS),
            base_sequence: get_i32(buf, BASE_SEQUENCE_POS),
            record_count: get_i32(buf, RECORDS_COUNT_POS),
        };
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(BatchError::InvalidRecordCount {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Bytes the whole batch occupies, header included.
    pub fn size_in_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record the batch was written with (compaction may have removed it).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Writes the header into the first [`HEADER_SIZE`] bytes of `out`; the CRC is written as is.
    pub fn write_to(&self, out: &mut [u8]) {
        out[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[LENGTH_POS..LENGTH_POS + 4].copy_from_slice(&self.batch_length.to_be_bytes());
        out[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out[MAGIC_POS] = self.magic as u8;
        out[CRC_POS..CRC_POS + 4].copy_from_slice(&self.crc.to_be_bytes());
        out[ATTRIBUTES_POS..ATTRIBUTES_POS + 2]
            .copy_from_slice(&self.attributes.bits().to_be_bytes());
        out[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[BASE_TIMESTAMP_POS..BASE_TIMESTAMP_POS + 8]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[PRODUCER_ID_POS..PRODUCER_ID_POS + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        out[PRODUCER_EPOCH_POS..PRODUCER_EPOCH_POS + 2]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        out[RECORDS_COUNT_POS..RECORDS_COUNT_POS + 4]
            .copy_from_slice(&self.record_count.to_be_bytes());
    }
}

/// CRC-32C of a whole batch's checksummed range (attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_POS..])
}

/// Checks that `batch` (exactly one whole batch) carries the CRC of its contents.
pub fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let computed = compute_crc(batch);
    if computed == header.crc {
        Ok(())
    } else {
        Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        })
    }
}

/// Gives a batch its offset: rewrites `baseOffset` in place (outside the CRC's range).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the leader epoch in place (outside the CRC's range).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks a batch as `LogAppendTime` stamped at `now_ms`, as Kafka does for topics with
/// `message.timestamp.type=LogAppendTime`: only the attributes, `maxTimestamp` and the CRC change;
/// the records are not re-encoded.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let bits = get_i16(batch, ATTRIBUTES_POS) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&bits.to_be_bytes());
    batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

fn get_i16(buf: &[u8], pos: usize) -> i16 {
    i16::from_be_bytes([buf[pos], buf[pos + 1]])
}

fn get_i32(buf: &[u8], pos: usize) -> i32 {
    i32::from_be_bytes(buf[pos..pos + 4].try_into().expect("4 bytes"))
}

fn get_i64(buf: &[u8], pos: usize) -> i64 {
    i64::from_be_bytes(buf[pos..pos + 8].try_into().expect("8 bytes"))
}
