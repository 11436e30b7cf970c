//! The broker's configuration, under Kafka's names, from a properties file and `--override`s.
//!
//! Operators already know `server.properties`; keeping its names and its file format means an
//! existing file works unchanged for every key Surety implements, and a key it does not implement
//! is refused by name instead of being silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use surety_core::log::{ConfigError, LOG_CONFIG_KEYS, LogConfig};

use crate::network::quotas::ConnectionLimits;

/// `queued.max.request.bytes` unless set: Kafka's default is no bound at all; 128 MiB holds a
/// request of the largest size `socket.request.max.bytes` allows, with room for small ones.
pub const DEFAULT_QUEUED_MAX_REQUEST_BYTES: usize = 128 * 1024 * 1024;

/// One broker config key: its Kafka name, its default as Kafka prints it, and what it does.
#[derive(Clone, Copy, Debug)]
pub struct ConfigKey {
    /// Kafka's name for the setting.
    pub name: &'static str,
    /// The default, as it would appear in `server.properties`.
    pub default: &'static str,
    /// One line for `docs/operations.md` and `--help`.
    pub doc: &'static str,
}

/// Every key the broker accepts. `docs/operations.md` lists the same table.
pub const BROKER_CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "process.roles",
        default: "broker,controller",
        doc: "`broker`, `controller` or both. Both without `controller.quorum.voters` is a \
              single node that is its own cluster (the default).",
    },
    ConfigKey {
        name: "node.id",
        default: "1",
        doc: "This node's id, in Metadata and among the voters (`broker.id` is accepted too).",
    },
    ConfigKey {
        name: "controller.quorum.voters",
        default: "(none)",
        doc: "The controller as `id@host:port`: exactly one voter for now. Set on every node \
              of a cluster; a broker registers with it and reads the metadata log from it.",
    },
    ConfigKey {
        name: "controller.listener.names",
        default: "CONTROLLER",
        doc: "Which of `listeners` the controller serves (brokers, not clients, talk to it).",
    },
    ConfigKey {
        name: "listeners",
        default: "PLAINTEXT://127.0.0.1:9092",
        doc: "Where the node listens: `NAME://ip:port`, comma-separated; one listener for \
              clients and brokers, plus the controller's on a controller.",
    },
    ConfigKey {
        name: "advertised.listeners",
        default: "(the listener)",
        doc: "The address clients and other brokers are told to connect to.",
    },
    ConfigKey {
        name: "inter.broker.listener.name",
        default: "PLAINTEXT",
        doc: "The listener followers fetch from; the same one clients use.",
    },
    ConfigKey {
        name: "listener.security.protocol.map",
        default: "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        doc: "Accepted when every listener maps to PLAINTEXT (the only protocol served).",
    },
    ConfigKey {
        name: "log.dirs",
        default: "./surety-data",
        doc: "The data directory (`log.dir` is accepted too; one directory).",
    },
    ConfigKey {
        name: "num.partitions",
        default: "1",
        doc: "Partitions of an auto-created topic, and of CreateTopics with -1.",
    },
    ConfigKey {
        name: "default.replication.factor",
        default: "1",
        doc: "Replication factor of auto-created topics and of CreateTopics with -1.",
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        default: "false",
        doc: "Elect a replica outside the ISR when no ISR member is alive, losing what only \
              the ISR had. Off, as in Kafka.",
    },
    ConfigKey {
        name: "auto.create.topics.enable",
        default: "true",
        doc: "Create a topic when a client asks for its metadata or produces to it.",
    },
    ConfigKey {
        name: "socket.request.max.bytes",
        default: "104857600",
        doc: "The largest request frame; a larger one closes the connection.",
    },
    ConfigKey {
        name: "queued.max.request.bytes",
        default: "134217728",
        doc: "Request bytes held in memory, broker-wide; when spent, sockets are not read \
              until requests complete. -1: no bound (Kafka's default).",
    },
    ConfigKey {
        name: "queued.max.requests",
        default: "500",
        doc: "Accepted for compatibility, no effect: a connection has one request in flight \
              and request memory is bounded by `queued.max.request.bytes`.",
    },
    ConfigKey {
        name: "fetch.max.bytes",
        default: "57671680",
        doc: "The most a fetch response carries, whatever the client asks (KIP-541); the \
              first batch may exceed it (KIP-74).",
    },
    ConfigKey {
        name: "min.insync.replicas",
        default: "1",
        doc: "In-sync replicas a produce with acks=all needs; with fewer it fails with \
              NOT_ENOUGH_REPLICAS (a single broker has one).",
    },
    ConfigKey {
        name: "replica.lag.time.max.ms",
        default: "30000",
        doc: "How long a follower may go without catching up before the leader drops it from \
              the ISR.",
    },
    ConfigKey {
        name: "replica.fetch.max.bytes",
        default: "1048576",
        doc: "The most a follower's fetch asks for per partition (at least one batch).",
    },
    ConfigKey {
        name: "replica.fetch.wait.max.ms",
        default: "500",
        doc: "How long a leader holds a follower's fetch that finds nothing new.",
    },
    ConfigKey {
        name: "replica.fetch.backoff.ms",
        default: "1000",
        doc: "How long a follower waits after a failed fetch before fetching again.",
    },
    ConfigKey {
        name: "replica.high.watermark.checkpoint.interval.ms",
        default: "5000",
        doc: "How often high watermarks (and log start offsets) are checkpointed to the log \
              directory's root; also on shutdown.",
    },
    ConfigKey {
        name: "broker.heartbeat.interval.ms",
        default: "2000",
        doc: "How often the broker tells the controller it is alive.",
    },
    ConfigKey {
        name: "broker.session.timeout.ms",
        default: "9000",
        doc: "A broker the controller has not heard from for this long is fenced, and the \
              partitions it leads elect another leader.",
    },
    ConfigKey {
        name: "group.min.session.timeout.ms",
        default: "6000",
        doc: "The shortest session.timeout.ms a group member may ask for; a shorter one fails \
              its JoinGroup with INVALID_SESSION_TIMEOUT.",
    },
    ConfigKey {
        name: "group.max.session.timeout.ms",
        default: "1800000",
        doc: "The longest session.timeout.ms a group member may ask for.",
    },
    ConfigKey {
        name: "group.initial.rebalance.delay.ms",
        default: "3000",
        doc: "How long a new group's first rebalance waits for more members, so consumers \
              starting together are assigned once.",
    },
    ConfigKey {
        name: "group.max.size",
        default: "2147483647",
        doc: "Members a group may hold; one more fails its JoinGroup with GROUP_MAX_SIZE_REACHED.",
    },
    ConfigKey {
        name: "offsets.topic.num.partitions",
        default: "50",
        doc: "Partitions of __consumer_offsets, created on first use; a group lives on \
              partition abs(hash(group.id)) % this. Fixed once the topic exists.",
    },
    ConfigKey {
        name: "offsets.topic.replication.factor",
        default: "3",
        doc: "Replication factor of __consumer_offsets in a cluster (its creation fails until \
              that many brokers are registered, as Kafka's); a single node holds one replica.",
    },
    ConfigKey {
        name: "offsets.topic.segment.bytes",
        default: "104857600",
        doc: "Segment size of __consumer_offsets.",
    },
    ConfigKey {
        name: "offsets.retention.minutes",
        default: "10080",
        doc: "How long a group without members keeps its committed offsets (counted from the \
              later of the commit and the group emptying).",
    },
    ConfigKey {
        name: "offsets.retention.check.interval.ms",
        default: "600000",
        doc: "How often expired offsets are looked for.",
    },
    ConfigKey {
        name: "offsets.commit.timeout.ms",
        default: "5000",
        doc: "How long an offset commit or a group's assignment waits to be stored before the \
              member is told REQUEST_TIMED_OUT and retries.",
    },
    ConfigKey {
        name: "connections.max.idle.ms",
        default: "600000",
        doc: "Close a connection that moved no byte (read or written) for this long.",
    },
    ConfigKey {
        name: "max.connections",
        default: "2147483647",
        doc: "Connections the broker holds at once; at the limit it stops accepting.",
    },
    ConfigKey {
        name: "max.connections.per.ip",
        default: "2147483647",
        doc: "Connections from one address; one over the limit is closed when accepted.",
    },
    ConfigKey {
        name: "max.connections.per.ip.overrides",
        default: "(none)",
        doc: "Per-address limits as `host:count,host:count` (IP addresses or host names).",
    },
    ConfigKey {
        name: "max.connection.creation.rate",
        default: "2147483647",
        doc: "New connections a second the broker accepts; past it the acceptor waits.",
    },
    ConfigKey {
        name: "log.retention.check.interval.ms",
        default: "300000",
        doc: "How often retention deletes old segments.",
    },
    ConfigKey {
        name: "log.segment.bytes",
        default: "1073741824",
        doc: "A segment rolls before it would grow past this.",
    },
    ConfigKey {
        name: "log.roll.ms",
        default: "604800000",
        doc: "A segment rolls once its first batch is this old (`log.roll.hours` too).",
    },
    ConfigKey {
        name: "log.index.interval.bytes",
        default: "4096",
        doc: "Log bytes between sparse offset-index entries.",
    },
    ConfigKey {
        name: "log.index.size.max.bytes",
        default: "10485760",
        doc: "Index files are preallocated to this; a full index rolls the segment.",
    },
    ConfigKey {
        name: "log.flush.interval.messages",
        default: "9223372036854775807",
        doc: "fsync after this many unflushed records (1: every append is durable).",
    },
    ConfigKey {
        name: "log.flush.interval.ms",
        default: "9223372036854775807",
        doc: "fsync once the oldest unflushed write is this old.",
    },
    ConfigKey {
        name: "log.flush.offset.checkpoint.interval.ms",
        default: "60000",
        doc: "How often a partition's recovery point is brought up to date after its flushes.",
    },
    ConfigKey {
        name: "log.retention.ms",
        default: "604800000",
        doc: "Delete segments older than this; -1 keeps them (`.minutes`, `.hours` too).",
    },
    ConfigKey {
        name: "log.retention.bytes",
        default: "-1",
        doc: "Delete the oldest segments while a partition exceeds this; -1: no limit.",
    },
    ConfigKey {
        name: "message.max.bytes",
        default: "1048588",
        doc: "The largest record batch a producer may send.",
    },
    ConfigKey {
        name: "log.message.timestamp.type",
        default: "CreateTime",
        doc: "CreateTime keeps producers' timestamps; LogAppendTime stamps the broker's.",
    },
    ConfigKey {
        name: "log.cleanup.policy",
        default: "delete",
        doc: "delete (retention by age and size), compact (keep the newest record per key), \
              or compact,delete.",
    },
    ConfigKey {
        name: "log.cleaner.enable",
        default: "true",
        doc: "Run the cleaner that compacts logs whose cleanup.policy includes compact.",
    },
    ConfigKey {
        name: "log.cleaner.backoff.ms",
        default: "15000",
        doc: "How often the cleaner looks for logs to compact.",
    },
    ConfigKey {
        name: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        doc: "The share of a compacted log written since its last cleaning that starts the next.",
    },
    ConfigKey {
        name: "log.cleaner.delete.retention.ms",
        default: "86400000",
        doc: "How long a tombstone stays readable after the cleaning that could remove it.",
    },
    ConfigKey {
        name: "surety.test.trace.dir",
        default: "(none)",
        doc: "Test hook: in a cluster, append every replica and controller step this node \
              takes to `node-<id>.trace` in this directory, for `model replay`.",
    },
    ConfigKey {
        name: "surety.test.broken.variant",
        default: "(none)",
        doc: "Test hook, never for data you keep: run the replicas with one of the model's \
              deliberately broken rules (e.g. `acks-leader-only`), to show `model replay` \
              catching it.",
    },
    ConfigKey {
        name: "surety.test.produce.response.drop.every",
        default: "0",
        doc: "Test hook, not for production: append every produce request but drop the \
              response of every Nth (acks 1/all), as a lost network answer; 0 is off.",
    },
];

/// Keys accepted under a second, older name.
const ALIASES: &[(&str, &str)] = &[("broker.id", "node.id"), ("log.dir", "log.dirs")];

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug)]
pub enum BrokerConfigError {
    /// A key Surety does not implement.
    UnknownKey(String),
    /// A value of the wrong form.
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A line of the properties file that is not `key=value`.
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The properties file could not be read.
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for BrokerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerConfigError::UnknownKey(key) => write!(
                f,
                "unknown config key '{key}' (docs/operations.md lists the supported keys)"
            ),
            BrokerConfigError::InvalidValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "invalid value '{value}' for '{key}': expected {expected}"
            ),
            BrokerConfigError::Syntax { file, line } => {
                write!(f, "{}:{line}: expected key=value", file.display())
            }
            BrokerConfigError::Io(file, e) => write!(f, "cannot read {}: {e}", file.display()),
        }
    }
}

impl std::error::Error for BrokerConfigError {}

impl From<ConfigError> for BrokerConfigError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::UnknownKey(key) => BrokerConfigError::UnknownKey(key),
            ConfigError::InvalidValue {
                key,
                value,
                expected,
            } => BrokerConfigError::InvalidValue {
                key,
                value,
                expected: expected.to_string(),
            },
        }
    }
}

/// The broker's settings, each field under the Kafka key it reads.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `listeners`: the address clients and brokers connect to (a broker's listener).
    pub listener: SocketAddr,
    /// The KRaft settings: roles, the controller, its listener, replica fetching.
    pub cluster: ClusterSettings,
    /// `advertised.listeners`: host and port clients are told to use.
    pub advertised: (String, u16),
    /// `node.id`.
    pub node_id: i32,
    /// `log.dirs`.
    pub log_dir: PathBuf,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: the request memory pool; `None` is Kafka's -1 (no bound).
    pub queued_max_request_bytes: Option<usize>,
    /// `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// `fetch.max.bytes`: the broker's cap on a fetch response.
    pub fetch_max_bytes: i32,
    /// `max.connections`, `max.connections.per.ip` (+ overrides), `max.connection.creation.rate`.
    pub connection_limits: ConnectionLimits,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub high_watermark_checkpoint_interval_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// The group coordinator's `group.*` and `offsets.*` settings.
    pub group: GroupSettings,
    /// `log.cleaner.enable`.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`.
    pub log_cleaner_backoff_ms: u64,
    /// The log settings every partition starts from.
    pub log: LogConfig,
    /// `surety.test.produce.response.drop.every`: a fault-injection hook for end-to-end tests
    /// of producer retries (0: off, the default).
    pub drop_produce_response_every: u64,
    /// `surety.test.trace.dir`.
    pub trace_dir: Option<PathBuf>,
    /// `surety.test.broken.variant`.
    pub broken_variant: Option<surety_core::replication::BrokenVariant>,
    /// Every key set explicitly, as given (DescribeConfigs reports these as non-default).
    pub explicit: BTreeMap<String, String>,
}

/// What a node is and how it finds the rest of its cluster, under KRaft's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `process.roles` includes `broker`.
    pub broker: bool,
    /// `process.roles` includes `controller`.
    pub controller: bool,
    /// `controller.quorum.voters`: (node id, host, port) of each voter.
    pub voters: Vec<(i32, String, u16)>,
    /// `controller.listener.names`.
    pub controller_listener_names: Vec<String>,
    /// The listener named in `controller.listener.names`, on a controller.
    pub controller_listener: Option<SocketAddr>,
    /// `inter.broker.listener.name`.
    pub inter_broker_listener_name: String,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election_enable: bool,
    /// `replica.fetch.max.bytes`.
    pub replica_fetch_max_bytes: usize,
    /// `replica.fetch.wait.max.ms`.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.backoff.ms`.
    pub replica_fetch_backoff_ms: u64,
    /// The listener names `listener.security.protocol.map` maps to PLAINTEXT.
    pub plaintext_listeners: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            broker: true,
            controller: true,
            voters: Vec::new(),
            controller_listener_names: vec!["CONTROLLER".to_string()],
            controller_listener: None,
            inter_broker_listener_name: "PLAINTEXT".to_string(),
            unclean_leader_election_enable: false,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 1_000,
            plaintext_listeners: vec!["CONTROLLER".to_string(), "PLAINTEXT".to_string()],
        }
    }
}

impl ClusterSettings {
    /// Whether this node belongs to a cluster with a separate controller quorum; without
    /// voters a node is a cluster of one that runs its partitions' controllers in-process.
    pub fn is_clustered(&self) -> bool {
        !self.voters.is_empty()
    }

    /// The controller's address (`controller.quorum.voters`' one voter).
    pub fn controller_address(&self) -> Option<String> {
        self.voters
            .first()
            .map(|(_, host, port)| format!("{host}:{port}"))
    }
}

/// The group coordinator's settings, under Kafka's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSettings {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: u64,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`.
    pub max_size: usize,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: Kafka's default is 3; a topic is created with at
    /// most as many replicas as there are brokers (a cluster of one gets 1).
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: u32,
    /// `offsets.commit.timeout.ms`.
    pub offsets_commit_timeout_ms: u64,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            offsets_topic_num_partitions:
                surety_core::group::placement::OFFSETS_TOPIC_NUM_PARTITIONS,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_commit_timeout_ms: 5_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listener: SocketAddr::from(([127, 0, 0, 1], 9092)),
            cluster: ClusterSettings::default(),
            advertised: ("127.0.0.1".to_string(), 9092),
            node_id: 1,
            log_dir: PathBuf::from("./surety-data"),
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            socket_request_max_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: Some(DEFAULT_QUEUED_MAX_REQUEST_BYTES),
            connections_max_idle_ms: 600_000,
            fetch_max_bytes: 55 * 1024 * 1024,
            connection_limits: ConnectionLimits::default(),
            retention_check_interval_ms: 300_000,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            high_watermark_checkpoint_interval_ms: 5_000,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            group: GroupSettings::default(),
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log: LogConfig::default(),
            drop_produce_response_every: 0,
            trace_dir: None,
            broken_variant: None,
            explicit: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Builds the configuration from an optional properties file, then `overrides` in order
    /// (later wins), as `kafka-server-start.sh server.properties --override k=v` does.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, BrokerConfigError> {
        let mut pairs = Vec::new();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| BrokerConfigError::Io(file.to_path_buf(), e))?;
            pairs.extend(
                parse_properties(&text).map_err(|line| BrokerConfigError::Syntax {
                    file: file.to_path_buf(),
                    line,
                })?,
            );
        }
        for o in overrides {
            let (key, value) =
                o.split_once('=')
                    .ok_or_else(|| BrokerConfigError::InvalidValue {
                        key: o.clone(),
                        value: String::new(),
                        expected: "--override key=value".to_string(),
                    })?;
            pairs.push((key.trim().to_string(), value.trim().to_string()));
        }
        Self::from_pairs(pairs)
    }

    /// Applies `key=value` pairs in order over the defaults.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, BrokerConfigError> {
        let mut config = BrokerConfig::default();
        let mut listeners = vec![("PLAINTEXT".to_string(), "127.0.0.1".to_string(), 9092)];
        let mut advertised = None;
        for (key, value) in pairs {
            let key = ALIASES
                .iter()
                .find(|(alias, _)| *alias == key)
                .map_or(key.as_str(), |(_, name)| name)
                .to_string();
            config.set(&key, &value, &mut listeners, &mut advertised)?;
            config.explicit.insert(key, value);
        }
        config.resolve_listeners(&listeners, advertised)?;
        // Kafka's rule: a pool smaller than the largest request could never hold it.
        if let Some(pool) = config.queued_max_request_bytes
            && pool < config.socket_request_max_bytes
        {
            return Err(BrokerConfigError::InvalidValue {
                key: "queued.max.request.bytes".to_string(),
                value: pool.to_string(),
                expected: format!(
                    "-1 or at least socket.request.max.bytes ({})",
                    config.socket_request_max_bytes
                ),
            });
        }
        if config.explicit.contains_key("queued.max.requests") {
            tracing::info!(
                "queued.max.requests has no effect: each connection has one request in flight, \
                 and request memory is bounded by queued.max.request.bytes"
            );
        }
        Ok(config)
    }

    /// Sorts `listeners` into the broker's and the controller's and checks the roles against
    /// the voters, with Kafka's rules: a controller serves a listener named in
    /// `controller.listener.names` and is a voter; a broker alone is not a voter and needs one.
    fn resolve_listeners(
        &mut self,
        listeners: &[(String, String, u16)],
        advertised: Option<Vec<(String, String, u16)>>,
    ) -> Result<(), BrokerConfigError> {
        let invalid = |key: &str, value: String, expected: &str| BrokerConfigError::InvalidValue {
            key: key.to_string(),
            value,
            expected: expected.to_string(),
        };
        let cluster = &mut self.cluster;
        let is_controller_listener =
            |name: &str| cluster.controller_listener_names.iter().any(|n| n == name);
        let socket = |host: &str, port: u16| -> Result<SocketAddr, BrokerConfigError> {
            format!("{host}:{port}")
                .parse()
                .or_else(|_| format!("[{host}]:{port}").parse())
                .map_err(|_| {
                    invalid(
                        "listeners",
                        format!("{host}:{port}"),
                        "NAME://ip:port with an IP address",
                    )
                })
        };
        let mut broker_listener = None;
        let mut controller_listener = None;
        for (name, host, port) in listeners {
            if !cluster.plaintext_listeners.contains(name) {
                return Err(invalid(
                    "listeners",
                    name.clone(),
                    "a listener that listener.security.protocol.map maps to PLAINTEXT \
                     (the only protocol served)",
                ));
            }
            if is_controller_listener(name) {
                controller_listener.get_or_insert(socket(host, *port)?);
            } else {
                if broker_listener.is_some() {
                    return Err(invalid(
                        "listeners",
                        name.clone(),
                        "one listener for clients and brokers (plus the controller's)",
                    ));
                }
                broker_listener = Some((name.clone(), socket(host, *port)?));
            }
        }
        let voters = &cluster.voters;
        if voters.len() > 1 {
            return Err(invalid(
                "controller.quorum.voters",
                format!("{} voters", voters.len()),
                "exactly one voter (a quorum of several controllers is not supported yet)",
            ));
        }
        let is_voter = voters.iter().any(|(id, _, _)| *id == self.node_id);
        if !voters.is_empty() {
            if cluster.controller && !is_voter {
                return Err(invalid(
                    "controller.quorum.voters",
                    format!("node.id {}", self.node_id),
                    "a controller's node.id among the voters",
                ));
            }
            if !cluster.controller && is_voter {
                return Err(invalid(
                    "controller.quorum.voters",
                    format!("node.id {}", self.node_id),
                    "a broker-only node.id that is not a voter",
                ));
            }
            if cluster.controller && controller_listener.is_none() {
                return Err(invalid(
                    "listeners",
                    "(no controller listener)".to_string(),
                    "a listener named in controller.listener.names",
                ));
            }
        } else if !(cluster.broker && cluster.controller) {
            return Err(invalid(
                "controller.quorum.voters",
                String::new(),
                "id@host:port of the controller (needed unless process.roles is \
                 broker,controller on a single node)",
            ));
        }
        cluster.controller_listener = controller_listener;
        if cluster.broker {
            let Some((name, address)) = broker_listener else {
                return Err(invalid(
                    "listeners",
                    "(no broker listener)".to_string(),
                    "a listener for clients and brokers",
                ));
            };
            if cluster.is_clustered() && name != cluster.inter_broker_listener_name {
                return Err(invalid(
                    "inter.broker.listener.name",
                    cluster.inter_broker_listener_name.clone(),
                    &format!("the name of the broker listener ({name})"),
                ));
            }
            self.listener = address;
        }
        self.advertised = advertised
            .and_then(|list| {
                list.into_iter()
                    .find(|(name, _, _)| !is_controller_listener(name))
            })
            .map_or_else(
                || (self.listener.ip().to_string(), self.listener.port()),
                |(_, host, port)| (host, port),
            );
        Ok(())
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        listeners: &mut Vec<(String, String, u16)>,
        advertised: &mut Option<Vec<(String, String, u16)>>,
    ) -> Result<(), BrokerConfigError> {
        let invalid = |expected: &str| BrokerConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let int = |min: i64, max: i64| {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| invalid(&format!("an integer from {min} to {max}")))
        };
        match key {
            "listeners" => {
                *listeners = parse_listeners(value)
                    .ok_or_else(|| invalid("NAME://ip:port, comma-separated"))?;
            }
            "advertised.listeners" => {
                let parsed = parse_listeners(value)
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| invalid("NAME://host:port, comma-separated"))?;
                *advertised = Some(parsed);
            }
            "process.roles" => {
                let roles: Vec<&str> = value.split(',').map(str::trim).collect();
                let known = roles.iter().all(|r| matches!(*r, "broker" | "controller"));
                if !known || roles.is_empty() {
                    return Err(invalid("broker, controller, or broker,controller"));
                }
                self.cluster.broker = roles.contains(&"broker");
                self.cluster.controller = roles.contains(&"controller");
            }
            "controller.quorum.voters" => {
                self.cluster.voters =
                    parse_voters(value).ok_or_else(|| invalid("id@host:port, comma-separated"))?;
            }
            "controller.listener.names" => {
                self.cluster.controller_listener_names = value
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
                if self.cluster.controller_listener_names.is_empty() {
                    return Err(invalid("one or more listener names"));
                }
            }
            "inter.broker.listener.name" => {
                self.cluster.inter_broker_listener_name = value.trim().to_string()
            }
            "listener.security.protocol.map" => {
                let mut map = Vec::new();
                for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match pair.split_once(':') {
                        Some((name, "PLAINTEXT")) => map.push(name.trim().to_string()),
                        _ => {
                            return Err(invalid("NAME:PLAINTEXT pairs (only PLAINTEXT is served)"));
                        }
                    }
                }
                self.cluster.plaintext_listeners = map;
            }
            "unclean.leader.election.enable" => {
                self.cluster.unclean_leader_election_enable = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("true or false")),
                }
            }
            "replica.fetch.max.bytes" => {
                self.cluster.replica_fetch_max_bytes = int(1, i32::MAX as i64)? as usize
            }
            "replica.fetch.wait.max.ms" => {
                self.cluster.replica_fetch_wait_max_ms = int(0, i32::MAX as i64)? as u64
            }
            "replica.fetch.backoff.ms" => {
                self.cluster.replica_fetch_backoff_ms = int(0, i32::MAX as i64)? as u64
            }
            "node.id" => self.node_id = int(0, i32::MAX as i64)? as i32,
            "log.dirs" => {
                if value.contains(',') {
                    return Err(invalid("one directory"));
                }
                self.log_dir = PathBuf::from(value.trim());
            }
            "num.partitions" => self.num_partitions = int(1, 1_000_000)? as i32,
            "default.replication.factor" => {
                self.default_replication_factor = int(1, i16::MAX as i64)? as i16;
            }
            "auto.create.topics.enable" => {
                self.auto_create_topics = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("true or false")),
                }
            }
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = int(1, i32::MAX as i64)? as usize
            }
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = match int(-1, i64::MAX)? {
                    -1 => None,
                    0 => return Err(invalid("-1 (no bound) or a positive integer")),
                    n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                }
            }
            "queued.max.requests" => {
                int(1, i32::MAX as i64)?;
            }
            "fetch.max.bytes" => self.fetch_max_bytes = int(1024, i32::MAX as i64)? as i32,
            "connections.max.idle.ms" => {
                self.connections_max_idle_ms = int(1, i64::MAX)? as u64;
            }
            "max.connections" => {
                self.connection_limits.max_connections = int(0, i32::MAX as i64)? as usize
            }
            "max.connections.per.ip" => {
                self.connection_limits.max_per_ip = int(0, i32::MAX as i64)? as usize
            }
            "max.connections.per.ip.overrides" => {
                self.connection_limits.per_ip_overrides = parse_per_ip_overrides(value)
                    .map_err(|e| invalid(&format!("host:count,host:count ({e})")))?
            }
            "max.connection.creation.rate" => {
                self.connection_limits.max_creation_rate = int(0, i32::MAX as i64)? as u32
            }
            "min.insync.replicas" => self.min_insync_replicas = int(1, i32::MAX as i64)? as usize,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = int(1, i64::MAX)? as u64,
            "replica.high.watermark.checkpoint.interval.ms" => {
                self.high_watermark_checkpoint_interval_ms = int(1, i64::MAX)? as u64
            }
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = int(1, i64::MAX)? as u64
            }
            "broker.session.timeout.ms" => {
                self.broker_session_timeout_ms = int(1, i64::MAX)? as u64
            }
            "log.cleaner.enable" => {
                self.log_cleaner_enable = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("true or false")),
                }
            }
            "log.cleaner.backoff.ms" => self.log_cleaner_backoff_ms = int(1, i64::MAX)? as u64,
            "group.min.session.timeout.ms" => {
                self.group.min_session_timeout_ms = int(0, i32::MAX as i64)? as u64
            }
            "group.max.session.timeout.ms" => {
                self.group.max_session_timeout_ms = int(0, i32::MAX as i64)? as u64
            }
            "group.initial.rebalance.delay.ms" => {
                self.group.initial_rebalance_delay_ms = int(0, i32::MAX as i64)? as u64
            }
            "group.max.size" => self.group.max_size = int(1, i32::MAX as i64)? as usize,
            "offsets.topic.num.partitions" => {
                self.group.offsets_topic_num_partitions = int(1, i32::MAX as i64)? as i32
            }
            "offsets.topic.replication.factor" => {
                self.group.offsets_topic_replication_factor = int(1, i16::MAX as i64)? as i16
            }
            "offsets.topic.segment.bytes" => {
                self.group.offsets_topic_segment_bytes = int(1, i32::MAX as i64)? as u32
            }
            "offsets.retention.minutes" => {
                self.group.offsets_retention_ms = int(1, i32::MAX as i64)? * 60_000
            }
            "offsets.retention.check.interval.ms" => {
                self.group.offsets_retention_check_interval_ms = int(1, i64::MAX)? as u64
            }
            "offsets.commit.timeout.ms" => {
                self.group.offsets_commit_timeout_ms = int(1, i32::MAX as i64)? as u64
            }
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = int(1, i64::MAX)? as u64
            }
            "surety.test.trace.dir" => self.trace_dir = Some(PathBuf::from(value.trim())),
            "surety.test.broken.variant" => {
                use surety_core::replication::BrokenVariant;
                self.broken_variant = Some(match value.trim() {
                    "acks-leader-only" => BrokenVariant::AcksLeaderOnly,
                    "hw-truncation" => BrokenVariant::HwTruncation,
                    "hw-ignores-followers" => BrokenVariant::HwIgnoresFollowers,
                    _ => {
                        return Err(invalid(
                            "acks-leader-only, hw-truncation or hw-ignores-followers",
                        ));
                    }
                })
            }
            "surety.test.produce.response.drop.every" => {
                self.drop_produce_response_every = int(0, i64::MAX)? as u64
            }
            _ if LOG_CONFIG_KEYS.contains(&key) => self.log.set(key, value)?,
            _ => return Err(BrokerConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }
}

/// Parses `max.connections.per.ip.overrides`: `host:count` pairs, comma-separated, where a host
/// is an IP address or a name resolved now (as Kafka resolves it when the config is loaded).
fn parse_per_ip_overrides(value: &str) -> Result<HashMap<IpAddr, usize>, String> {
    let mut overrides = HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("'{entry}' has no ':count'"))?;
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("'{count}' is not a count"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => (host, 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
                .ok_or_else(|| format!("cannot resolve '{host}'"))?,
        };
        overrides.insert(ip, count);
    }
    Ok(overrides)
}

/// Parses `NAME://host:port` entries, comma-separated (a bare `host:port` is `PLAINTEXT`),
/// into (name, host, port).
fn parse_listeners(value: &str) -> Option<Vec<(String, String, u16)>> {
    let mut parsed = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
        let (host, port) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        if name.is_empty() || parsed.iter().any(|(n, _, _)| n == name) {
            return None;
        }
        parsed.push((name.to_string(), host.to_string(), port.parse().ok()?));
    }
    Some(parsed)
}

/// Parses `controller.quorum.voters`: `id@host:port`, comma-separated.
fn parse_voters(value: &str) -> Option<Vec<(i32, String, u16)>> {
    let mut voters = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry.split_once('@')?;
        let (host, port) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        voters.push((
            id.trim().parse().ok()?,
            host.to_string(),
            port.parse().ok()?,
        ));
    }
    Some(voters)
}

/// Parses Java properties text into `(key, value)` pairs: `key=value` or `key: value` lines,
/// `#` and `!` comments, blank lines, and trailing-backslash continuations. On a line with no
/// separator returns its 1-based number.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut pairs = Vec::new();
    let mut pending = String::new();
    let mut pending_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            pending_line = i + 1;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let at = entry.find(['=', ':']).ok_or(pending_line)?;
        let (key, value) = (entry[..at].trim(), entry[at + 1..].trim());
        if key.is_empty() {
            return Err(pending_line);
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    if !pending.is_empty() {
        return Err(pending_line);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_listen_on_loopback_9092_with_an_embedded_data_dir() {
        let c = BrokerConfig::from_pairs(Vec::new()).unwrap();
        assert_eq!(c.listener.to_string(), "127.0.0.1:9092");
        assert_eq!(c.advertised, ("127.0.0.1".to_string(), 9092));
        assert_eq!(c.log_dir, PathBuf::from("./surety-data"));
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics);
    }

    #[test]
    fn every_documented_key_is_accepted_with_its_default() {
        for key in BROKER_CONFIG_KEYS {
            if key.default.starts_with('(') {
                continue;
            }
            BrokerConfig::from_pairs(pairs(&[(key.name, key.default)]))
                .unwrap_or_else(|e| panic!("{}: {e}", key.name));
        }
    }

    #[test]
    fn docs_operations_lists_every_key_with_its_default() {
        let doc = include_str!("../../docs/operations.md");
        for key in BROKER_CONFIG_KEYS {
            let row = if key.default.starts_with('(') {
                format!("| `{}` | {} |", key.name, key.default)
            } else {
                format!("| `{}` | `{}` |", key.name, key.default)
            };
            assert!(doc.contains(&row), "docs/operations.md lacks the row {row}");
        }
    }

    #[test]
    fn the_request_pool_must_hold_the_largest_request_or_be_unbounded() {
        let e =
            BrokerConfig::from_pairs(pairs(&[("queued.max.request.bytes", "1000")])).unwrap_err();
        assert!(e.to_string().contains("socket.request.max.bytes"), "{e}");
        let ok = BrokerConfig::from_pairs(pairs(&[
            ("socket.request.max.bytes", "1000"),
            ("queued.max.request.bytes", "1000"),
        ]))
        .unwrap();
        assert_eq!(ok.queued_max_request_bytes, Some(1000));
        let unbounded =
            BrokerConfig::from_pairs(pairs(&[("queued.max.request.bytes", "-1")])).unwrap();
        assert_eq!(unbounded.queued_max_request_bytes, None);
        assert!(BrokerConfig::from_pairs(pairs(&[("queued.max.request.bytes", "0")])).is_err());
    }

    #[test]
    fn connection_limits_take_kafkas_names_and_override_syntax() {
        let c = BrokerConfig::from_pairs(pairs(&[
            ("max.connections", "100"),
            ("max.connections.per.ip", "50"),
            (
                "max.connections.per.ip.overrides",
                "127.0.0.1:3, [::1]:4,localhost:5",
            ),
            ("max.connection.creation.rate", "20"),
            ("connections.max.idle.ms", "2000"),
        ]))
        .unwrap();
        let l = &c.connection_limits;
        assert_eq!(
            (l.max_connections, l.max_per_ip, l.max_creation_rate),
            (100, 50, 20)
        );
        assert_eq!(l.per_ip_overrides[&"::1".parse::<IpAddr>().unwrap()], 4);
        // `localhost` resolves to a loopback address, which now has 5 (named last).
        assert!(l.per_ip_overrides.values().any(|&n| n == 5));
        assert_eq!(c.connections_max_idle_ms, 2000);
        for bad in ["127.0.0.1", "127.0.0.1:x", "no-such-host.invalid:3"] {
            assert!(
                BrokerConfig::from_pairs(pairs(&[("max.connections.per.ip.overrides", bad)]))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let e = BrokerConfig::from_pairs(pairs(&[("log.cleaner.threads", "2")])).unwrap_err();
        assert!(e.to_string().contains("'log.cleaner.threads'"), "{e}");
    }

    #[test]
    fn listeners_and_advertised_listeners_are_parsed() {
        let c = BrokerConfig::from_pairs(pairs(&[
            ("listeners", "PLAINTEXT://127.0.0.1:19092"),
            ("advertised.listeners", "PLAINTEXT://localhost:29092"),
            ("broker.id", "3"),
            ("log.flush.interval.messages", "1"),
        ]))
        .unwrap();
        assert_eq!(c.listener.port(), 19092);
        assert_eq!(c.advertised, ("localhost".to_string(), 29092));
        assert_eq!(c.node_id, 3);
        assert_eq!(c.log.flush_interval_messages, 1);
        let e = BrokerConfig::from_pairs(pairs(&[("listeners", "SSL://0.0.0.0:9093")]));
        assert!(e.is_err());
    }

    #[test]
    fn kraft_roles_voters_and_listeners_follow_kafkas_rules() {
        let voters = ("controller.quorum.voters", "0@127.0.0.1:9093");
        let controller = BrokerConfig::from_pairs(pairs(&[
            ("process.roles", "controller"),
            ("node.id", "0"),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
            voters,
        ]))
        .unwrap();
        assert!(controller.cluster.controller && !controller.cluster.broker);
        assert_eq!(
            controller.cluster.controller_listener,
            Some("127.0.0.1:9093".parse().unwrap())
        );
        assert_eq!(
            controller.cluster.controller_address().as_deref(),
            Some("127.0.0.1:9093")
        );
        let broker = BrokerConfig::from_pairs(pairs(&[
            ("process.roles", "broker"),
            ("node.id", "2"),
            ("listeners", "PLAINTEXT://127.0.0.1:9094"),
            voters,
        ]))
        .unwrap();
        assert!(broker.cluster.is_clustered() && broker.cluster.broker);
        assert_eq!(broker.listener.port(), 9094);
        let refused = |p: &[(&str, &str)], why: &str| {
            let e = BrokerConfig::from_pairs(pairs(p)).unwrap_err().to_string();
            assert!(e.contains(why), "{e} should mention {why}");
        };
        refused(&[("process.roles", "broker")], "controller.quorum.voters");
        refused(
            &[("process.roles", "broker"), ("node.id", "0"), voters],
            "not a voter",
        );
        refused(
            &[
                ("process.roles", "controller"),
                ("node.id", "0"),
                ("listeners", "PLAINTEXT://127.0.0.1:9092"),
                voters,
            ],
            "controller.listener.names",
        );
        refused(
            &[
                ("controller.quorum.voters", "0@a:1,1@b:2"),
                ("node.id", "0"),
            ],
            "exactly one voter",
        );
        refused(&[("process.roles", "zookeeper")], "broker, controller");
        refused(
            &[("listener.security.protocol.map", "PLAINTEXT:SSL")],
            "only PLAINTEXT",
        );
    }

    #[test]
    fn properties_files_take_comments_colons_and_continuations() {
        let text = "# a comment\n! another\n\nnum.partitions = 3\nlog.dirs: /data\nlisteners=PLAINTEXT://\\\n  127.0.0.1:9092\n";
        assert_eq!(
            parse_properties(text).unwrap(),
            pairs(&[
                ("num.partitions", "3"),
                ("log.dirs", "/data"),
                ("listeners", "PLAINTEXT://127.0.0.1:9092"),
            ])
        );
        assert_eq!(parse_properties("a=1\nnot a pair\n"), Err(2));
    }
}
