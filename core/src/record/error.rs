use std::fmt;

/// Why bytes are not a valid v2 record batch. Every malformed input ends here, never in a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the batch needs: a torn write or a cut-off request.
    Truncated {
        /// Bytes the batch claims or the header needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// A magic byte other than 2 (message formats v0 and v1 are not accepted).
    UnsupportedMagic(i8),
    /// A `batchLength` too small to hold the header.
    InvalidLength(i32),
    /// Compression bits 5–7, which name no codec.
    UnknownCompression(u8),
    /// A negative record count or last offset delta.
    InvalidRecordCount {
        /// The header's `recordCount`.
        record_count: i32,
        /// The header's `lastOffsetDelta`.
        last_offset_delta: i32,
    },
    /// The stored CRC does not match the bytes: corruption in flight or at rest.
    CrcMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A record inside the batch does not parse.
    MalformedRecord(&'static str),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(
                    f,
                    "record batch truncated: needs {needed} bytes, has {available}"
                )
            }
            BatchError::UnsupportedMagic(m) => {
                write!(
                    f,
                    "record batch has magic {m}; only message format v2 is supported"
                )
            }
            BatchError::InvalidLength(l) => write!(f, "record batch length {l} is too small"),
            BatchError::UnknownCompression(c) => write!(f, "unknown compression codec {c}"),
            BatchError::InvalidRecordCount {
                record_count,
                last_offset_delta,
            } => write!(
                f,
                "record batch has {record_count} records and last offset delta {last_offset_delta}"
            ),
            BatchError::CrcMismatch { stored, computed } => write!(
                f,
                "record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            BatchError::MalformedRecord(why) => write!(f, "malformed record: {why}"),
        }
    }
}

impl std::error::Error for BatchError {}
