//! Topic-level config overrides (`retention.ms`, `segment.bytes`, ...), under Kafka's topic
//! config names, each mapped to the broker setting it overrides.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use surety_core::log::LogConfig;
use surety_core::record::TimestampType;

/// Topic config names and the broker keys whose defaults they override.
pub const TOPIC_CONFIG_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.insync.replicas", "min.insync.replicas"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("segment.ms", "log.roll.ms"),
];

const FILE: &str = "topic.properties";

/// A topic's explicit overrides; everything else follows the broker's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Validates `pairs` (topic config names) against `defaults`.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
        defaults: &LogConfig,
    ) -> Result<Self, String> {
        let mut config = TopicConfig::default();
        for (key, value) in pairs {
            config.overrides.insert(key, value);
        }
        config.try_log_config(defaults)?;
        Ok(config)
    }

    /// The override for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.overrides.get(key).map(String::as_str)
    }

    /// The log settings of this topic: the broker's, with the overrides applied.
    pub fn log_config(&self, defaults: &LogConfig) -> LogConfig {
        self.try_log_config(defaults)
            .expect("overrides were validated when the topic was created")
    }

    fn try_log_config(&self, defaults: &LogConfig) -> Result<LogConfig, String> {
        let mut config = defaults.clone();
        for (key, value) in &self.overrides {
            let broker_key = TOPIC_CONFIG_KEYS
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, b)| *b)
                .ok_or_else(|| format!("unknown topic config '{key}'"))?;
            if broker_key == "min.insync.replicas" {
                parse_min_insync_replicas(value)?;
                continue;
            }
            config
                .set(broker_key, value)
                .map_err(|e| e.to_string().replace(broker_key, key))?;
        }
        Ok(config)
    }

    /// The topic's `min.insync.replicas`: its override, else the broker's.
    pub fn min_insync_replicas(&self, broker_default: usize) -> usize {
        self.get("min.insync.replicas")
            .and_then(|v| parse_min_insync_replicas(v).ok())
            .unwrap_or(broker_default)
    }

    /// Reads the overrides kept in a partition directory (none if the file is absent).
    pub fn read(dir: &Path) -> Result<Self, String> {
        let Ok(text) = fs::read_to_string(dir.join(FILE)) else {
            return Ok(TopicConfig::default());
        };
        let pairs = crate::config::parse_properties(&text)
            .map_err(|line| format!("{}:{line}: expected key=value", dir.join(FILE).display()))?;
        Ok(TopicConfig {
            overrides: pairs.into_iter().collect(),
        })
    }

    /// Writes the overrides into a partition directory, atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        for (key, value) in &self.overrides {
            writeln!(file, "{key}={value}")?;
        }
        file.sync_all()?;
        fs::rename(&tmp, dir.join(FILE))
    }
}

fn parse_min_insync_replicas(value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| (1..=i32::MAX as usize).contains(&n))
        .ok_or_else(|| format!("min.insync.replicas '{value}' is not an integer of at least 1"))
}

/// The effective value of topic config `key` under the log settings `config` and the replica
/// setting `min_insync_replicas`, as Kafka prints it.
pub fn effective_value(
    config: &LogConfig,
    min_insync_replicas: usize,
    key: &str,
) -> Option<String> {
    Some(match key {
        "min.insync.replicas" => min_insync_replicas.to_string(),
        "cleanup.policy" => config.cleanup_policy.name().to_string(),
        "delete.retention.ms" => config.delete_retention_ms.to_string(),
        "min.cleanable.dirty.ratio" => {
            (f64::from(config.min_cleanable_ratio_ppm) / 1_000_000.0).to_string()
        }
        "flush.messages" => config
            .flush_interval_messages
            .min(i64::MAX as u64)
            .to_string(),
        "flush.ms" => config.flush_interval_ms.to_string(),
        "index.interval.bytes" => config.index_interval_bytes.to_string(),
        "max.message.bytes" => config.max_message_bytes.to_string(),
        "message.timestamp.type" => match config.message_timestamp_type {
            TimestampType::CreateTime => "CreateTime".to_string(),
            TimestampType::LogAppendTime => "LogAppendTime".to_string(),
        },
        "retention.bytes" => config.retention_bytes.to_string(),
        "retention.ms" => config.retention_ms.to_string(),
        "segment.bytes" => config.segment_bytes.to_string(),
        "segment.index.bytes" => config.max_index_size.to_string(),
        "segment.ms" => config.segment_ms.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_over_the_broker_defaults_and_survive_a_round_trip() {
        let defaults = LogConfig::default();
        let config = TopicConfig::from_pairs(
            [("retention.ms".to_string(), "1000".to_string())],
            &defaults,
        )
        .unwrap();
        assert_eq!(config.log_config(&defaults).retention_ms, 1000);
        let dir = tempfile::tempdir().unwrap();
        config.write(dir.path()).unwrap();
        assert_eq!(TopicConfig::read(dir.path()).unwrap(), config);
        assert_eq!(
            effective_value(&config.log_config(&defaults), 1, "retention.ms").as_deref(),
            Some("1000")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let defaults = LogConfig::default();
        let e = TopicConfig::from_pairs([("bogus".into(), "1".into())], &defaults).unwrap_err();
        assert!(e.contains("'bogus'"), "{e}");
        let e =
            TopicConfig::from_pairs([("segment.bytes".into(), "x".into())], &defaults).unwrap_err();
        assert!(e.contains("segment.bytes"), "{e}");
        assert!(
            TopicConfig::from_pairs([("cleanup.policy".into(), "shred".into())], &defaults)
                .is_err()
        );
        let compacted =
            TopicConfig::from_pairs([("cleanup.policy".into(), "compact".into())], &defaults)
                .unwrap()
                .log_config(&defaults);
        assert!(compacted.cleanup_policy.compact && !compacted.cleanup_policy.delete);
        assert!(
            TopicConfig::from_pairs([("min.insync.replicas".into(), "0".into())], &defaults)
                .is_err()
        );
        let two = TopicConfig::from_pairs([("min.insync.replicas".into(), "2".into())], &defaults)
            .unwrap();
        assert_eq!(
            (
                two.min_insync_replicas(1),
                TopicConfig::default().min_insync_replicas(3)
            ),
            (2, 3)
        );
        for (key, _) in TOPIC_CONFIG_KEYS {
            assert!(effective_value(&defaults, 1, key).is_some(), "{key}");
        }
    }
}
