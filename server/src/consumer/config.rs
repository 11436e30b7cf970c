//! The consumer's configuration under Kafka's names and with Kafka's defaults.

use surety_core::group::AssignorKind;

/// `auto.offset.reset`: where a partition without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The log end: only records produced from now on.
    Latest,
    /// Fail: the application must seek.
    None,
}

/// Consumer settings; each field names the Kafka key it reads.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `group.id`: required to subscribe and to commit.
    pub group_id: Option<String>,
    /// `group.instance.id`: a static member (KIP-345), which keeps its partitions across a
    /// restart within `session.timeout.ms`.
    pub group_instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// `enable.auto.commit`. Default true.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`. Default 5000.
    pub auto_commit_interval_ms: u64,
    /// `auto.offset.reset`. Default latest.
    pub auto_offset_reset: OffsetReset,
    /// `session.timeout.ms`. Default 45000 (Kafka 3.0+).
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms`. Default 3000.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`: a consumer that does not poll for this long leaves its group,
    /// so its partitions go to one that makes progress. Default 300000.
    pub max_poll_interval_ms: u64,
    /// `max.poll.records`. Default 500.
    pub max_poll_records: usize,
    /// `fetch.min.bytes`. Default 1.
    pub fetch_min_bytes: i32,
    /// `fetch.max.wait.ms`. Default 500.
    pub fetch_max_wait_ms: i32,
    /// `fetch.max.bytes`. Default 52428800.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`. Default 1048576.
    pub max_partition_fetch_bytes: i32,
    /// `partition.assignment.strategy`, preferred first. Default range.
    pub assignors: Vec<AssignorKind>,
    /// `retry.backoff.ms`. Default 100.
    pub retry_backoff_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            group_id: None,
            group_instance_id: None,
            client_id: "surety-consumer".to_string(),
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            auto_offset_reset: OffsetReset::Latest,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            max_poll_records: 500,
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            // Kafka's default since 3.0: range, with cooperative-sticky listed so a group can
            // move to it by a rolling restart that drops range.
            assignors: vec![AssignorKind::Range, AssignorKind::CooperativeSticky],
            retry_backoff_ms: 100,
        }
    }
}

impl ConsumerConfig {
    /// Applies `key=value` settings by their Kafka names; an unknown key or a bad value is an
    /// error naming it.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut c = ConsumerConfig::default();
        for (key, value) in pairs {
            let value = value.trim();
            let bad = |expected: &str| format!("invalid value '{value}' for '{key}': {expected}");
            let int = |min: i64| {
                value
                    .parse::<i64>()
                    .ok()
                    .filter(|v| *v >= min && *v <= i64::from(i32::MAX))
                    .ok_or_else(|| bad(&format!("an integer from {min} to {}", i32::MAX)))
            };
            match key {
                "bootstrap.servers" => c.bootstrap_servers = value.to_string(),
                "group.id" => c.group_id = Some(value.to_string()).filter(|g| !g.is_empty()),
                "group.instance.id" => {
                    c.group_instance_id = Some(value.to_string()).filter(|g| !g.is_empty())
                }
                "client.id" => c.client_id = value.to_string(),
                "enable.auto.commit" => {
                    c.enable_auto_commit = value.parse().map_err(|_| bad("true or false"))?
                }
                "auto.commit.interval.ms" => c.auto_commit_interval_ms = int(0)? as u64,
                "auto.offset.reset" => {
                    c.auto_offset_reset = match value {
                        "earliest" => OffsetReset::Earliest,
                        "latest" => OffsetReset::Latest,
                        "none" => OffsetReset::None,
                        _ => return Err(bad("earliest, latest or none")),
                    }
                }
                "session.timeout.ms" => c.session_timeout_ms = int(1)? as u64,
                "heartbeat.interval.ms" => c.heartbeat_interval_ms = int(1)? as u64,
                "max.poll.interval.ms" => c.max_poll_interval_ms = int(1)? as u64,
                "max.poll.records" => c.max_poll_records = int(1)? as usize,
                "fetch.min.bytes" => c.fetch_min_bytes = int(0)? as i32,
                "fetch.max.wait.ms" => c.fetch_max_wait_ms = int(0)? as i32,
                "fetch.max.bytes" => c.fetch_max_bytes = int(0)? as i32,
                "max.partition.fetch.bytes" => c.max_partition_fetch_bytes = int(0)? as i32,
                "retry.backoff.ms" => c.retry_backoff_ms = int(0)? as u64,
                "partition.assignment.strategy" => {
                    c.assignors = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            AssignorKind::from_name(s)
                                .ok_or_else(|| bad("range, roundrobin or cooperative-sticky"))
                        })
                        .collect::<Result<_, _>>()?;
                    if c.assignors.is_empty() {
                        return Err(bad("at least one assignor"));
                    }
                }
                _ => return Err(format!("unknown consumer config '{key}'")),
            }
        }
        if c.heartbeat_interval_ms >= c.session_timeout_ms {
            return Err("heartbeat.interval.ms must be lower than session.timeout.ms".to_string());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_and_defaults() {
        let c = ConsumerConfig::from_pairs([
            ("group.id", "g"),
            ("auto.offset.reset", "earliest"),
            (
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.RoundRobinAssignor,range",
            ),
        ])
        .unwrap();
        assert_eq!(c.group_id.as_deref(), Some("g"));
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(c.assignors, [AssignorKind::RoundRobin, AssignorKind::Range]);
        let c = ConsumerConfig::from_pairs([(
            "partition.assignment.strategy",
            "class org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
        )])
        .unwrap();
        assert_eq!(c.assignors, [AssignorKind::CooperativeSticky]);
        let c = ConsumerConfig::from_pairs([("group.id", "g")]).unwrap();
        assert_eq!(
            c.assignors,
            [AssignorKind::Range, AssignorKind::CooperativeSticky]
        );
        assert!(c.enable_auto_commit);
        assert_eq!(c.session_timeout_ms, 45_000);
        let e = ConsumerConfig::from_pairs([("group.idd", "g")]).unwrap_err();
        assert!(e.contains("group.idd"));
        let e = ConsumerConfig::from_pairs([("auto.offset.reset", "smallest")]).unwrap_err();
        assert!(e.contains("auto.offset.reset"));
    }
}
