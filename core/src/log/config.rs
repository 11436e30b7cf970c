//! Per-partition log settings under Kafka's broker config names.

use std::fmt;

use crate::record::TimestampType;

const HOUR_MS: i64 = 60 * 60 * 1000;

/// How a partition log rolls, indexes, flushes and retains data. Field docs name the Kafka
/// broker setting each one reads, and its default is Kafka's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogConfig {
    /// `log.segment.bytes`: a segment rolls before it would grow past this. Default 1 GiB.
    pub segment_bytes: u32,
    /// `log.roll.ms` (or `log.roll.hours`): a segment rolls once its first batch is this old.
    /// Default 7 days.
    pub segment_ms: i64,
    /// `log.index.interval.bytes`: log bytes between offset index entries. Default 4096.
    pub index_interval_bytes: u32,
    /// `log.index.size.max.bytes`: each index file is preallocated to this; a full index rolls
    /// the segment. Default 10 MiB.
    pub max_index_size: u32,
    /// `log.flush.interval.messages`: fsync after this many unflushed records. Default: never.
    pub flush_interval_messages: u64,
    /// `log.flush.interval.ms`: fsync once the oldest unflushed write is this old. Default: never.
    pub flush_interval_ms: i64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often a flush also rewrites the
    /// recovery-point checkpoint. A stale checkpoint only makes recovery scan more. Default 60 s.
    pub checkpoint_interval_ms: i64,
    /// `log.retention.ms` (or `.minutes`, `.hours`): delete segments whose newest record is older
    /// than this; -1 keeps them forever. Default 7 days.
    pub retention_ms: i64,
    /// `log.retention.bytes`: delete the oldest segments while the log exceeds this; -1 means no
    /// limit. Default -1.
    pub retention_bytes: i64,
    /// `message.max.bytes`: the largest batch a producer may append. Default 1048588.
    pub max_message_bytes: u32,
    /// `log.message.timestamp.type`: `CreateTime` keeps producers' timestamps; `LogAppendTime`
    /// stamps each batch with the broker's clock on append. Default `CreateTime`.
    pub message_timestamp_type: TimestampType,
    /// `log.cleanup.policy`: `delete` (retention by time and size), `compact` (keep the newest
    /// record per key), or both. Default `delete`.
    pub cleanup_policy: CleanupPolicy,
    /// `log.cleaner.delete.retention.ms`: how long a tombstone outlives the cleaning that could
    /// remove it, so a consumer that is behind still sees the delete. Default 1 day.
    pub delete_retention_ms: i64,
    /// `log.cleaner.min.cleanable.ratio`, in millionths: the share of a compacted log that must
    /// be new since the last cleaning before it is cleaned again. Default 0.5.
    pub min_cleanable_ratio_ppm: u32,
}

/// `cleanup.policy`: which of Kafka's two ways of bounding a log apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CleanupPolicy {
    /// Old segments are deleted by `retention.ms` and `retention.bytes`.
    pub delete: bool,
    /// The cleaner keeps only the newest record of each key (and drops old tombstones).
    pub compact: bool,
}

impl CleanupPolicy {
    /// Parses Kafka's list form: `delete`, `compact`, `compact,delete` (any order).
    pub fn parse(value: &str) -> Option<Self> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return None,
            }
        }
        (policy.delete || policy.compact).then_some(policy)
    }

    /// Kafka's spelling.
    pub fn name(self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 168 * HOUR_MS,
            index_interval_bytes: 4096,
            max_index_size: 10 * 1024 * 1024,
            flush_interval_messages: i64::MAX as u64,
            flush_interval_ms: i64::MAX,
            checkpoint_interval_ms: 60_000,
            retention_ms: 168 * HOUR_MS,
            retention_bytes: -1,
            max_message_bytes: 1024 * 1024 + 12,
            message_timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy {
                delete: true,
                compact: false,
            },
            delete_retention_ms: 24 * HOUR_MS,
            min_cleanable_ratio_ppm: 500_000,
        }
    }
}

/// The config keys [`LogConfig::set`] understands, for help texts and error messages.
pub const LOG_CONFIG_KEYS: &[&str] = &[
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.flush.offset.checkpoint.interval.ms",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "message.max.bytes",
    "log.message.timestamp.type",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.cleanable.ratio",
];

/// A config key or value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a log setting.
    UnknownKey(String),
    /// A value outside the setting's range or of the wrong form.
    InvalidValue {
        /// The setting.
        key: String,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(key) => write!(f, "unknown log config key '{key}'"),
            ConfigError::InvalidValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "invalid value '{value}' for '{key}': expected {expected}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl LogConfig {
    /// Sets one setting by its Kafka name. Later calls win, so apply `*.hours` before `*.ms`
    /// if both are given (Kafka prefers the finer unit).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |expected| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let int = |min: i64, max: i64, expected| {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| invalid(expected))
        };
        match key {
            "log.segment.bytes" => {
                self.segment_bytes =
                    int(14, i32::MAX as i64, "an integer from 14 to 2147483647")? as u32
            }
            "log.roll.ms" => self.segment_ms = int(1, i64::MAX, "a positive integer")?,
            "log.roll.hours" => {
                self.segment_ms = int(1, i64::MAX / HOUR_MS, "a positive integer")? * HOUR_MS
            }
            "log.index.interval.bytes" => {
                self.index_interval_bytes =
                    int(0, i32::MAX as i64, "a non-negative integer")? as u32
            }
            "log.index.size.max.bytes" => {
                self.max_index_size = int(4, i32::MAX as i64, "an integer of at least 4")? as u32
            }
            "log.flush.interval.messages" => {
                self.flush_interval_messages = int(1, i64::MAX, "a positive integer")? as u64
            }
            "log.flush.interval.ms" => {
                self.flush_interval_ms = int(0, i64::MAX, "a non-negative integer")?
            }
            "log.flush.offset.checkpoint.interval.ms" => {
                self.checkpoint_interval_ms = int(0, i64::MAX, "a non-negative integer")?
            }
            "log.retention.ms" => self.retention_ms = int(-1, i64::MAX, "-1 or more")?,
            "log.retention.minutes" => {
                self.retention_ms = scale(int(-1, i64::MAX / 60_000, "-1 or more")?, 60_000)
            }
            "log.retention.hours" => {
                self.retention_ms = scale(int(-1, i64::MAX / HOUR_MS, "-1 or more")?, HOUR_MS)
            }
            "log.retention.bytes" => self.retention_bytes = int(-1, i64::MAX, "-1 or more")?,
            "message.max.bytes" => {
                self.max_message_bytes = int(0, i32::MAX as i64, "a non-negative integer")? as u32
            }
            "log.message.timestamp.type" => {
                self.message_timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid("CreateTime or LogAppendTime")),
                }
            }
            "log.cleanup.policy" => {
                self.cleanup_policy = CleanupPolicy::parse(value)
                    .ok_or_else(|| invalid("delete, compact or compact,delete"))?
            }
            "log.cleaner.delete.retention.ms" => {
                self.delete_retention_ms = int(0, i64::MAX, "a non-negative integer")?
            }
            "log.cleaner.min.cleanable.ratio" => {
                let ratio = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| invalid("a number from 0 to 1"))?;
                self.min_cleanable_ratio_ppm = (ratio * 1_000_000.0).round() as u32;
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }
}

/// Scales a duration, keeping -1 (forever) as -1.
fn scale(value: i64, unit_ms: i64) -> i64 {
    if value < 0 { -1 } else { value * unit_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1_073_741_824);
        assert_eq!(c.index_interval_bytes, 4096);
        assert_eq!(c.max_index_size, 10_485_760);
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.max_message_bytes, 1_048_588);
    }

    #[test]
    fn every_listed_key_is_accepted_and_others_are_named_in_the_error() {
        for key in LOG_CONFIG_KEYS {
            let value = if key.ends_with("type") {
                "LogAppendTime"
            } else if key.ends_with("policy") {
                "compact,delete"
            } else if key.ends_with("ratio") {
                "0.25"
            } else {
                "100"
            };
            LogConfig::default().set(key, value).unwrap();
        }
        let err = LogConfig::default()
            .set("log.segmnet.bytes", "1")
            .unwrap_err();
        assert!(err.to_string().contains("log.segmnet.bytes"));
        let err = LogConfig::default()
            .set("log.segment.bytes", "-5")
            .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }));
    }

    #[test]
    fn coarse_units_scale_and_keep_forever() {
        let mut c = LogConfig::default();
        c.set("log.retention.hours", "2").unwrap();
        assert_eq!(c.retention_ms, 2 * HOUR_MS);
        c.set("log.retention.minutes", "-1").unwrap();
        assert_eq!(c.retention_ms, -1);
    }
}
