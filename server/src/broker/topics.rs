//! The topics a broker holds, on disk as Kafka lays them out: one directory per partition,
//! named `<topic>-<partition>`, under `log.dirs`. Each partition directory also holds
//! `partition.metadata` (the topic id, as Kafka writes it) and `topic.properties` (the topic's
//! config overrides), so a restarted broker finds its topics by listing the directory.
//!
//! Deleting a topic renames its directories to `<topic>-<partition>.<id>-delete` first (one
//! atomic step per directory), then removes them; a crash in between leaves only `-delete`
//! directories, which the next start removes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use surety_core::errors::Errors;
use surety_core::log::checkpoint_file::{
    LOG_START_OFFSET_CHECKPOINT, PartitionOffsets, REPLICATION_OFFSET_CHECKPOINT, RecoveryPoints,
    read_partition_offsets, write_partition_offsets,
};
use surety_core::log::{LogConfig, LogError};
use uuid::Uuid;

use super::partition::{Partition, ReplicationSettings, Shared};
use super::topic_config::TopicConfig;

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic and its partitions.
pub struct Topic {
    /// The name.
    pub name: String,
    /// The id Metadata v10+ reports.
    pub id: Uuid,
    /// The topic's config overrides.
    pub config: TopicConfig,
    /// Partitions by index; in a cluster, `None` for those another broker holds.
    pub partitions: Vec<Option<Arc<Partition>>>,
}

impl Topic {
    /// Partition `index`, if this broker holds it (a request may name any number).
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions.get(usize::try_from(index).ok()?)?.as_ref()
    }

    /// The partitions this broker holds, with their indexes.
    pub fn hosted(&self) -> impl Iterator<Item = (i32, &Arc<Partition>)> {
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i as i32, p.as_ref()?)))
    }
}

/// Why a topic could not be created or deleted; each maps to a Kafka error.
#[derive(Debug)]
pub enum TopicError {
    /// `INVALID_TOPIC_EXCEPTION`.
    InvalidName(String),
    /// `TOPIC_ALREADY_EXISTS`.
    AlreadyExists,
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    Unknown,
    /// `INVALID_PARTITIONS`.
    InvalidPartitions(i32),
    /// `INVALID_REPLICATION_FACTOR`.
    InvalidReplicationFactor(i16),
    /// `INVALID_CONFIG`.
    InvalidConfig(String),
    /// `KAFKA_STORAGE_ERROR`.
    Storage(String),
}

impl TopicError {
    /// The error CreateTopics, DeleteTopics and Metadata answer with.
    pub fn error(&self) -> Errors {
        match self {
            TopicError::InvalidName(_) => Errors::InvalidTopicException,
            TopicError::AlreadyExists => Errors::TopicAlreadyExists,
            TopicError::Unknown => Errors::UnknownTopicOrPartition,
            TopicError::InvalidPartitions(_) => Errors::InvalidPartitions,
            TopicError::InvalidReplicationFactor(_) => Errors::InvalidReplicationFactor,
            TopicError::InvalidConfig(_) => Errors::InvalidConfig,
            TopicError::Storage(_) => Errors::KafkaStorageError,
        }
    }
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicError::InvalidName(why) => write!(f, "invalid topic name: {why}"),
            TopicError::AlreadyExists => write!(f, "topic already exists"),
            TopicError::Unknown => write!(f, "unknown topic"),
            TopicError::InvalidPartitions(n) => write!(f, "number of partitions {n} is below 1"),
            TopicError::InvalidReplicationFactor(n) => write!(
                f,
                "replication factor {n} is not 1, the number of brokers in this cluster"
            ),
            TopicError::InvalidConfig(why) => write!(f, "{why}"),
            TopicError::Storage(why) => write!(f, "{why}"),
        }
    }
}

/// Checks a topic name as Kafka does: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::InvalidName("the empty string".into()));
    }
    if name == "." || name == ".." {
        return Err(TopicError::InvalidName(format!("'{name}' is not allowed")));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicError::InvalidName(format!(
            "longer than {MAX_TOPIC_NAME_LEN} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicError::InvalidName(format!(
            "'{name}' contains '{c}'; only ASCII letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Every topic on this broker.
pub struct Topics {
    dir: PathBuf,
    defaults: LogConfig,
    settings: ReplicationSettings,
    shared: Arc<Shared>,
    recovery_points: Arc<RecoveryPoints>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// In a cluster, the high watermarks checkpointed before the start, for partitions the
    /// metadata log has not assigned again yet.
    checkpointed: std::sync::Mutex<PartitionOffsets>,
}

impl Topics {
    /// Opens `dir` for a broker of a cluster: no partition is opened until the metadata log
    /// assigns it to this broker ([`Topics::host`]).
    pub fn open_clustered(
        dir: &Path,
        defaults: LogConfig,
        settings: ReplicationSettings,
    ) -> Result<Self, TopicError> {
        fs::create_dir_all(dir).map_err(|e| storage("create", dir, e))?;
        let high_watermarks = read_partition_offsets(&dir.join(REPLICATION_OFFSET_CHECKPOINT))
            .unwrap_or_else(|e| {
                tracing::warn!("{e}; high watermarks start from 0");
                PartitionOffsets::new()
            });
        let recovery_points = RecoveryPoints::open(dir).unwrap_or_else(|e| {
            tracing::warn!("{e}; recovering every partition from its first segment");
            RecoveryPoints::empty(dir)
        });
        Ok(Topics {
            dir: dir.to_path_buf(),
            defaults,
            settings,
            shared: Arc::new(Shared::default()),
            recovery_points,
            topics: RwLock::new(HashMap::new()),
            checkpointed: std::sync::Mutex::new(high_watermarks),
        })
    }

    /// Hosts partition `index` of `name` (of `count`), assigned to `replicas`: opens its log
    /// if this broker has one (recovering it), else creates it. Returns the partition, which
    /// stays a follower-in-waiting until its state from the metadata log is delivered.
    #[allow(clippy::too_many_arguments)]
    pub fn host(
        &self,
        name: &str,
        id: Uuid,
        configs: &[(String, String)],
        count: i32,
        index: i32,
        replicas: Vec<u32>,
        now_ms: i64,
    ) -> Result<Arc<Partition>, TopicError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let existing = topics.get(name).filter(|t| t.id == id).cloned();
        if let Some(topic) = &existing
            && let Some(partition) = topic.partition(index)
        {
            return Ok(partition.clone());
        }
        let config = TopicConfig::from_pairs(configs.iter().cloned(), &self.defaults)
            .map_err(TopicError::InvalidConfig)?;
        let pdir = partition_dir(&self.dir, name, index);
        let settings = self.settings.for_topic(&config).assigned(replicas);
        let recovery_point = self.recovery_points.for_partition(name, index);
        let log_config = config.log_config(&self.defaults);
        let partition = if read_topic_id(&pdir) == Some(id) {
            let hw = self
                .checkpointed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(name.to_string(), index))
                .copied();
            Partition::open(
                &pdir,
                log_config,
                recovery_point,
                &settings,
                hw,
                self.shared.clone(),
                now_ms,
            )
            .map_err(log_error)?
        } else {
            if pdir.exists() {
                // A log of an earlier topic of the same name, deleted while this broker was down.
                fs::remove_dir_all(&pdir).map_err(|e| storage("delete", &pdir, e))?;
            }
            fs::create_dir_all(&pdir).map_err(|e| storage("create", &pdir, e))?;
            write_topic_id(&pdir, id).map_err(|e| storage("write", &pdir, e))?;
            config
                .write(&pdir)
                .map_err(|e| storage("write", &pdir, e))?;
            Partition::create(
                &pdir,
                log_config,
                recovery_point,
                &settings,
                self.shared.clone(),
                now_ms,
            )
            .map_err(log_error)?
        };
        let partition = Arc::new(partition);
        let mut partitions = existing.map(|t| t.partitions.clone()).unwrap_or_default();
        let count = usize::try_from(count.max(index + 1)).unwrap_or(0);
        if partitions.len() < count {
            partitions.resize(count, None);
        }
        partitions[index as usize] = Some(partition.clone());
        topics.insert(
            name.to_string(),
            Arc::new(Topic {
                name: name.to_string(),
                id,
                config,
                partitions,
            }),
        );
        Ok(partition)
    }

    /// Opens `dir`, recovering every partition found there.
    pub fn open(
        dir: &Path,
        defaults: LogConfig,
        settings: ReplicationSettings,
        now_ms: i64,
    ) -> Result<Self, TopicError> {
        fs::create_dir_all(dir).map_err(|e| storage("create", dir, e))?;
        let shared = Arc::new(Shared::default());
        let hw_path = dir.join(REPLICATION_OFFSET_CHECKPOINT);
        // A damaged checkpoint costs nothing but a lower HW until the leader recomputes it.
        let high_watermarks = read_partition_offsets(&hw_path).unwrap_or_else(|e| {
            tracing::warn!("{e}; high watermarks start from 0");
            PartitionOffsets::new()
        });
        let recovery_points = RecoveryPoints::open(dir).unwrap_or_else(|e| {
            tracing::warn!("{e}; recovering every partition from its first segment");
            RecoveryPoints::empty(dir)
        });
        let mut found: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| storage("list", dir, e))? {
            let entry = entry.map_err(|e| storage("list", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() {
                continue;
            }
            if name.ends_with("-delete") {
                fs::remove_dir_all(entry.path())
                    .map_err(|e| storage("delete", &entry.path(), e))?;
                continue;
            }
            if let Some((topic, index)) = name.rsplit_once('-')
                && let Ok(index) = index.parse::<i32>()
                && validate_topic_name(topic).is_ok()
            {
                found.entry(topic.to_string()).or_default().push(index);
            }
        }
        let mut topics = HashMap::new();
        for (name, mut indexes) in found {
            indexes.sort_unstable();
            let count = indexes.len() as i32;
            if indexes != (0..count).collect::<Vec<_>>() {
                return Err(TopicError::Storage(format!(
                    "topic '{name}' has partition directories {indexes:?}, not 0..{count}"
                )));
            }
            let first = partition_dir(dir, &name, 0);
            let id = read_topic_id(&first).unwrap_or_else(Uuid::new_v4);
            let config = TopicConfig::read(&first).map_err(TopicError::InvalidConfig)?;
            let log_config = config.log_config(&defaults);
            let mut partitions = Vec::new();
            for index in 0..count {
                let pdir = partition_dir(dir, &name, index);
                let hw = high_watermarks.get(&(name.clone(), index)).copied();
                let partition = Partition::open(
                    &pdir,
                    log_config.clone(),
                    recovery_points.for_partition(&name, index),
                    &settings.for_topic(&config),
                    hw,
                    shared.clone(),
                    now_ms,
                )
                .map_err(log_error)?;
                partitions.push(Some(Arc::new(partition)));
            }
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name,
                    id,
                    config,
                    partitions,
                }),
            );
        }
        Ok(Topics {
            dir: dir.to_path_buf(),
            defaults,
            settings,
            shared,
            recovery_points,
            topics: RwLock::new(topics),
            checkpointed: std::sync::Mutex::new(PartitionOffsets::new()),
        })
    }

    /// What the partitions share: the signal that a high watermark moved, among others.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The broker-wide log settings topics start from.
    pub fn defaults(&self) -> &LogConfig {
        &self.defaults
    }

    /// The topic called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    /// Every topic, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be created).
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
        validate_only: bool,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(name) {
            return Err(TopicError::AlreadyExists);
        }
        let id = Uuid::new_v4();
        let topic = Topic {
            name: name.to_string(),
            id,
            config,
            partitions: Vec::new(),
        };
        if validate_only {
            return Ok(Arc::new(topic));
        }
        let log_config = topic.config.log_config(&self.defaults);
        let mut opened = Vec::new();
        for index in 0..partitions {
            let pdir = partition_dir(&self.dir, name, index);
            let result = (|| {
                fs::create_dir_all(&pdir).map_err(|e| storage("create", &pdir, e))?;
                write_topic_id(&pdir, id).map_err(|e| storage("write", &pdir, e))?;
                topic
                    .config
                    .write(&pdir)
                    .map_err(|e| storage("write", &pdir, e))?;
                Partition::create(
                    &pdir,
                    log_config.clone(),
                    self.recovery_points.for_partition(name, index),
                    &self.settings.for_topic(&topic.config),
                    self.shared.clone(),
                    now_ms,
                )
                .map_err(log_error)
            })();
            match result {
                Ok(p) => opened.push(Some(Arc::new(p))),
                Err(e) => {
                    for index in 0..=index {
                        let _ = fs::remove_dir_all(partition_dir(&self.dir, name, index));
                    }
                    return Err(e);
                }
            }
        }
        let topic = Arc::new(Topic {
            partitions: opened,
            ..topic
        });
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Adds partitions to a topic so it has `count` (CreatePartitions on a single node).
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        now_ms: i64,
    ) -> Result<Arc<Topic>, TopicError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let topic = topics.get(name).cloned().ok_or(TopicError::Unknown)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(TopicError::InvalidPartitions(count));
        }
        let log_config = topic.config.log_config(&self.defaults);
        let mut partitions = topic.partitions.clone();
        for index in current..count {
            let pdir = partition_dir(&self.dir, name, index);
            fs::create_dir_all(&pdir).map_err(|e| storage("create", &pdir, e))?;
            write_topic_id(&pdir, topic.id).map_err(|e| storage("write", &pdir, e))?;
            topic
                .config
                .write(&pdir)
                .map_err(|e| storage("write", &pdir, e))?;
            let partition = Partition::create(
                &pdir,
                log_config.clone(),
                self.recovery_points.for_partition(name, index),
                &self.settings.for_topic(&topic.config),
                self.shared.clone(),
                now_ms,
            )
            .map_err(log_error)?;
            partitions.push(Some(Arc::new(partition)));
        }
        let grown = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            config: topic.config.clone(),
            partitions,
        });
        topics.insert(name.to_string(), grown.clone());
        Ok(grown)
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str, now_ms: i64) -> Result<Arc<Topic>, TopicError> {
        let topic = {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            topics.remove(name).ok_or(TopicError::Unknown)?
        };
        for (index, partition) in topic.hosted() {
            let _ = partition.close(now_ms);
            self.recovery_points.forget(name, index);
            let from = partition_dir(&self.dir, name, index);
            let to = self
                .dir
                .join(format!("{name}-{index}.{}-delete", topic.id.simple()));
            fs::rename(&from, &to).map_err(|e| storage("rename", &from, e))?;
            fs::remove_dir_all(&to).map_err(|e| storage("delete", &to, e))?;
        }
        Ok(topic)
    }

    /// Writes the log directory's per-partition checkpoints (`replication-offset-checkpoint`,
    /// `log-start-offset-checkpoint`, `recovery-point-offset-checkpoint`) from every
    /// partition's current offsets.
    pub fn checkpoint(&self) -> std::io::Result<()> {
        let mut high_watermarks = PartitionOffsets::new();
        let mut log_starts = PartitionOffsets::new();
        for topic in self.all() {
            for (index, partition) in topic.hosted() {
                let key = (topic.name.clone(), index);
                let (hw, start) = partition.checkpoint_offsets();
                high_watermarks.insert(key.clone(), hw);
                log_starts.insert(key, start);
            }
        }
        write_partition_offsets(
            &self.dir.join(REPLICATION_OFFSET_CHECKPOINT),
            &high_watermarks,
        )?;
        write_partition_offsets(&self.dir.join(LOG_START_OFFSET_CHECKPOINT), &log_starts)?;
        self.recovery_points.write()
    }

    /// Fires every partition's due timers; with `heartbeat`, tells each partition's
    /// controller this broker is alive. Returns how long until the next timer is due.
    pub fn tick(&self, heartbeat: bool, now_ms: i64) -> Option<std::time::Duration> {
        let mut next = None;
        for topic in self.all() {
            for (_, partition) in topic.hosted() {
                if let Some(due) = partition.tick(heartbeat, now_ms) {
                    next = Some(next.map_or(due, |n: std::time::Duration| n.min(due)));
                }
            }
        }
        next
    }

    /// Closes every partition cleanly (flush, clean-shutdown marker).
    pub fn close_all(&self, now_ms: i64) -> Vec<(String, LogError)> {
        let mut failures = Vec::new();
        for topic in self.all() {
            for (index, partition) in topic.hosted() {
                if let Err(e) = partition.close(now_ms) {
                    failures.push((format!("{}-{index}", topic.name), e));
                }
            }
        }
        failures
    }
}

/// `<dir>/<topic>-<index>`.
pub fn partition_dir(dir: &Path, topic: &str, index: i32) -> PathBuf {
    dir.join(format!("{topic}-{index}"))
}

const PARTITION_METADATA: &str = "partition.metadata";

fn write_topic_id(dir: &Path, id: Uuid) -> std::io::Result<()> {
    let path = dir.join(PARTITION_METADATA);
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    writeln!(file, "version: 0")?;
    writeln!(file, "topic_id: {}", id.simple())?;
    file.sync_all()?;
    fs::rename(&tmp, &path)
}

fn read_topic_id(dir: &Path) -> Option<Uuid> {
    let text = fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

fn storage(action: &str, path: &Path, e: std::io::Error) -> TopicError {
    TopicError::Storage(format!("could not {action} {}: {e}", path.display()))
}

fn log_error(e: LogError) -> TopicError {
    TopicError::Storage(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ReplicationSettings {
        ReplicationSettings {
            broker_id: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            broker_session_timeout_ms: 9_000,
            replica_fetch_max_bytes: 1024 * 1024,
            replicas: Vec::new(),
            broken: None,
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v2_eu-1").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn topics_survive_a_restart_and_deleted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::open(dir.path(), LogConfig::default(), settings(), 0).unwrap();
        let created = topics
            .create("orders", 3, TopicConfig::default(), false, 0)
            .unwrap();
        topics
            .create("gone", 1, TopicConfig::default(), false, 0)
            .unwrap();
        assert!(matches!(
            topics.create("orders", 1, TopicConfig::default(), false, 0),
            Err(TopicError::AlreadyExists)
        ));
        topics.delete("gone", 0).unwrap();
        assert!(topics.close_all(0).is_empty());
        drop(topics);
        let reopened = Topics::open(dir.path(), LogConfig::default(), settings(), 0).unwrap();
        let names: Vec<_> = reopened.all().iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["orders"]);
        let orders = reopened.get("orders").unwrap();
        assert_eq!(orders.partitions.len(), 3);
        assert_eq!(orders.id, created.id);
    }
}
