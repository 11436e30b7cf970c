//! Kafka's checkpoint files, byte for byte: a version line, a count line, then one entry per
//! line. An operator (or Kafka's own tools) can read them, and they are written the one safe
//! way (temp file, fsync, rename, fsync the directory), so a crash leaves the old file or the
//! new one, never a torn one.
//!
//! - In each log directory's root, one file for all its partitions, entries
//!   `topic partition offset`: [`REPLICATION_OFFSET_CHECKPOINT`] (high watermarks),
//!   [`RECOVERY_POINT_OFFSET_CHECKPOINT`] and [`LOG_START_OFFSET_CHECKPOINT`].
//! - In each partition directory, [`LEADER_EPOCH_CHECKPOINT`], entries `epoch start_offset`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::checkpoint::{RecoveryPointStore, sync_dir};

/// High watermarks, per partition, in the log directory's root.
pub const REPLICATION_OFFSET_CHECKPOINT: &str = "replication-offset-checkpoint";
/// Recovery points, per partition, in the log directory's root.
pub const RECOVERY_POINT_OFFSET_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Log start offsets, per partition, in the log directory's root.
pub const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// The leader-epoch cache, in each partition directory.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// The format version Kafka writes for all four files.
const VERSION: u32 = 0;

/// Per-partition offsets, keyed by `(topic, partition)`.
pub type PartitionOffsets = BTreeMap<(String, i32), i64>;

/// Replaces `path` atomically with Kafka's layout of `entries`.
fn write_lines(path: &Path, entries: &[String]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!("{name}.tmp"));
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for entry in entries {
        text.push_str(entry);
        text.push('\n');
    }
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// The entry lines of `path`, `None` if it does not exist. A file whose header or entry count
/// does not add up is an error, as in Kafka: callers fall back to what they can rebuild.
fn read_lines(path: &Path) -> io::Result<Option<Vec<String>>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let malformed = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed checkpoint {}: {why}", path.display()),
        )
    };
    let mut lines = text.lines();
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| malformed("no version line"))?;
    if version != VERSION {
        return Err(malformed(&format!("unknown version {version}")));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| malformed("no entry count"))?;
    let entries: Vec<String> = lines.map(str::to_string).collect();
    if entries.len() != count {
        return Err(malformed(&format!(
            "{} entries where the header says {count}",
            entries.len()
        )));
    }
    Ok(Some(entries))
}

/// Writes a per-partition offsets file (`topic partition offset` lines).
pub fn write_partition_offsets(path: &Path, offsets: &PartitionOffsets) -> io::Result<()> {
    let entries: Vec<String> = offsets
        .iter()
        .map(|((topic, partition), offset)| format!("{topic} {partition} {offset}"))
        .collect();
    write_lines(path, &entries)
}

/// Reads a per-partition offsets file; a missing one is empty.
pub fn read_partition_offsets(path: &Path) -> io::Result<PartitionOffsets> {
    let mut offsets = PartitionOffsets::new();
    for line in read_lines(path)?.unwrap_or_default() {
        let mut fields = line.split(' ');
        let parsed = (|| {
            let topic = fields.next()?.to_string();
            let partition = fields.next()?.parse().ok()?;
            let offset = fields.next()?.parse().ok()?;
            fields
                .next()
                .is_none()
                .then_some(((topic, partition), offset))
        })();
        let (key, offset) = parsed.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed line in {}: {line:?}", path.display()),
            )
        })?;
        offsets.insert(key, offset);
    }
    Ok(offsets)
}

/// Writes a partition's leader-epoch checkpoint (`epoch start_offset` lines).
pub fn write_leader_epochs(dir: &Path, entries: &[(i32, i64)]) -> io::Result<()> {
    let lines: Vec<String> = entries
        .iter()
        .map(|(epoch, start)| format!("{epoch} {start}"))
        .collect();
    write_lines(&dir.join(LEADER_EPOCH_CHECKPOINT), &lines)
}

/// Reads a partition's leader-epoch checkpoint, `None` if there is none.
pub fn read_leader_epochs(dir: &Path) -> io::Result<Option<Vec<(i32, i64)>>> {
    let path = dir.join(LEADER_EPOCH_CHECKPOINT);
    let Some(lines) = read_lines(&path)? else {
        return Ok(None);
    };
    lines
        .iter()
        .map(|line| {
            let (epoch, start) = line.split_once(' ').unwrap_or((line, ""));
            match (epoch.parse(), start.parse()) {
                (Ok(epoch), Ok(start)) => Ok((epoch, start)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed line in {}: {line:?}", path.display()),
                )),
            }
        })
        .collect::<io::Result<_>>()
        .map(Some)
}

/// Every partition's recovery point, kept in one [`RECOVERY_POINT_OFFSET_CHECKPOINT`] at a log
/// directory's root. A point that moved down is written at once (the log is about to rewrite
/// what lies past it); one that moved up waits for the next [`RecoveryPoints::write`], which the
/// broker calls on its checkpoint schedule and at shutdown.
pub struct RecoveryPoints {
    path: PathBuf,
    points: Mutex<PartitionOffsets>,
}

impl RecoveryPoints {
    /// The recovery points of the log directory `dir`, as last written. A damaged file is an
    /// error; [`RecoveryPoints::empty`] then trusts nothing, which costs a longer recovery.
    pub fn open(dir: &Path) -> io::Result<Arc<Self>> {
        let path = dir.join(RECOVERY_POINT_OFFSET_CHECKPOINT);
        let points = read_partition_offsets(&path)?;
        Ok(Arc::new(RecoveryPoints {
            path,
            points: Mutex::new(points),
        }))
    }

    /// No recovery point known for any partition of `dir`.
    pub fn empty(dir: &Path) -> Arc<Self> {
        Arc::new(RecoveryPoints {
            path: dir.join(RECOVERY_POINT_OFFSET_CHECKPOINT),
            points: Mutex::new(PartitionOffsets::new()),
        })
    }

    /// The store a partition's log keeps its recovery point in.
    pub fn for_partition(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
    ) -> Box<dyn RecoveryPointStore> {
        Box::new(PartitionRecoveryPoint {
            points: self.clone(),
            key: (topic.to_string(), partition),
        })
    }

    /// Forgets a deleted partition.
    pub fn forget(&self, topic: &str, partition: i32) {
        self.lock().remove(&(topic.to_string(), partition));
    }

    /// Writes the file with every partition's current point.
    pub fn write(&self) -> io::Result<()> {
        let points = self.lock();
        write_partition_offsets(&self.path, &points)
    }

    fn lock(&self) -> MutexGuard<'_, PartitionOffsets> {
        self.points.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct PartitionRecoveryPoint {
    points: Arc<RecoveryPoints>,
    key: (String, i32),
}

impl RecoveryPointStore for PartitionRecoveryPoint {
    fn load(&self) -> Option<i64> {
        self.points.lock().get(&self.key).copied()
    }

    fn store(&self, offset: i64, must_be_durable: bool) -> io::Result<()> {
        let mut points = self.points.lock();
        points.insert(self.key.clone(), offset);
        if must_be_durable {
            write_partition_offsets(&self.points.path, &points)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kafkas_text_format_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPLICATION_OFFSET_CHECKPOINT);
        assert!(read_partition_offsets(&path).unwrap().is_empty());
        let offsets = PartitionOffsets::from([
            (("orders".to_string(), 0), 42),
            (("orders".to_string(), 1), 7),
        ]);
        write_partition_offsets(&path, &offsets).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "0\n2\norders 0 42\norders 1 7\n"
        );
        assert_eq!(read_partition_offsets(&path).unwrap(), offsets);

        assert_eq!(read_leader_epochs(dir.path()).unwrap(), None);
        write_leader_epochs(dir.path(), &[(0, 0), (3, 120)]).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT)).unwrap(),
            "0\n2\n0 0\n3 120\n"
        );
        assert_eq!(
            read_leader_epochs(dir.path()).unwrap(),
            Some(vec![(0, 0), (3, 120)])
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPLICATION_OFFSET_CHECKPOINT);
        for bad in ["", "1\n0\n", "0\n2\norders 0 1\n", "0\n1\norders x 1\n"] {
            fs::write(&path, bad).unwrap();
            assert!(read_partition_offsets(&path).is_err(), "{bad:?}");
        }
        fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT), "0\n1\n3\n").unwrap();
        assert!(read_leader_epochs(dir.path()).is_err());
    }

    #[test]
    fn recovery_points_share_one_root_file_and_a_lowered_point_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let points = RecoveryPoints::open(dir.path()).unwrap();
        let a = points.for_partition("t", 0);
        let b = points.for_partition("t", 1);
        a.store(10, false).unwrap();
        b.store(20, false).unwrap();
        let path = dir.path().join(RECOVERY_POINT_OFFSET_CHECKPOINT);
        assert!(!path.exists(), "a raised point waits for the next write");
        points.write().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n2\nt 0 10\nt 1 20\n");
        a.store(4, true).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n2\nt 0 4\nt 1 20\n");
        let reopened = RecoveryPoints::open(dir.path()).unwrap();
        assert_eq!(reopened.for_partition("t", 1).load(), Some(20));
        assert_eq!(reopened.for_partition("t", 2).load(), None);
        reopened.forget("t", 0);
        reopened.write().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n1\nt 1 20\n");
    }
}
