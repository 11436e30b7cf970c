//! What can go wrong in a partition log, with the Kafka error code each maps to.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::errors::Errors;
use crate::record::BatchError;

/// A log operation that did not happen. Every variant leaves the log as it was before the call.
#[derive(Debug)]
pub enum LogError {
    /// A read outside `[log start offset, log end offset]`.
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first offset the log holds.
        log_start_offset: i64,
        /// The offset the next append will get.
        log_end_offset: i64,
    },
    /// A batch larger than `message.max.bytes`.
    MessageTooLarge {
        /// The batch's size in bytes.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// Bytes that are not valid record batches: bad CRC, bad length, wrong magic, torn.
    Corrupt(BatchError),
    /// Well-formed batches the log will not take (no batches, or offsets that do not add up).
    InvalidRecord(&'static str),
    /// A replicated batch whose offset is below the log end: the follower's log and the leader's
    /// disagree, and the follower must truncate first.
    UnexpectedAppendOffset {
        /// Base offset of the offending batch.
        first_offset: i64,
        /// Where the log expected to continue.
        expected_at_least: i64,
    },
    /// The log was closed.
    Closed,
    /// The file system refused (full disk, I/O error). The log undid what it could; if it could
    /// not, it refuses further writes until reopened.
    Storage {
        /// What was being done.
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl LogError {
    /// The error a broker answers with, so a client reacts as it would to Kafka's broker.
    pub fn error(&self) -> Errors {
        match self {
            LogError::OffsetOutOfRange { .. } => Errors::OffsetOutOfRange,
            // Invalid, not corrupt: re-sending an old message format cannot help.
            LogError::Corrupt(BatchError::UnsupportedMagic(_)) => Errors::InvalidRecord,
            LogError::Corrupt(_) => Errors::CorruptMessage,
            LogError::MessageTooLarge { .. } => Errors::MessageTooLarge,
            LogError::InvalidRecord(_) => Errors::InvalidRecord,
            LogError::UnexpectedAppendOffset { .. } => Errors::UnknownServerError,
            LogError::Closed | LogError::Storage { .. } => Errors::KafkaStorageError,
        }
    }

    /// [`error`](Self::error) as the number a response carries.
    pub fn error_code(&self) -> i16 {
        self.error().code()
    }

    pub(crate) fn storage(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        LogError::Storage {
            action,
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            } => write!(
                f,
                "offset {offset} is out of range [{log_start_offset}, {log_end_offset}]"
            ),
            LogError::MessageTooLarge { size, max } => write!(
                f,
                "record batch of {size} bytes exceeds message.max.bytes ({max})"
            ),
            LogError::Corrupt(e) => write!(f, "corrupt record batch: {e}"),
            LogError::InvalidRecord(why) => write!(f, "invalid record batch: {why}"),
            LogError::UnexpectedAppendOffset {
                first_offset,
                expected_at_least,
            } => write!(
                f,
                "replicated batch at offset {first_offset} is below the log end {expected_at_least}"
            ),
            LogError::Closed => write!(f, "the log is closed"),
            LogError::Storage {
                action,
                path,
                source,
            } => write!(f, "could not {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Corrupt(e) => Some(e),
            LogError::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<BatchError> for LogError {
    fn from(e: BatchError) -> Self {
        LogError::Corrupt(e)
    }
}
