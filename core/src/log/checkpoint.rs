//! The small files that tell recovery how much to trust: the recovery point and the
//! clean-shutdown marker.
//!
//! Where the recovery point lives is the [`RecoveryPointStore`]'s choice: a log opened on its
//! own keeps it in a file of its directory ([`OwnFile`]); the broker keeps every partition's in
//! one `recovery-point-offset-checkpoint` at the log directory's root, as Kafka does
//! (`checkpoint_file::RecoveryPoints`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Offset below which everything was fsynced; recovery scans only from the segment holding it.
const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Written by a clean close after the final flush; its presence lets open skip recovery.
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const CHECKPOINT_VERSION: &str = "0";

/// Where a log's recovery point (everything below it was fsynced) is kept.
pub trait RecoveryPointStore: Send + Sync {
    /// The last stored recovery point, `None` if unknown ("trust nothing").
    fn load(&self) -> Option<i64>;

    /// Records `offset`. With `must_be_durable` (the point moved down: data past it is about to
    /// be rewritten) it is on disk when this returns; otherwise it may be written later, since a
    /// stale, lower recovery point only makes recovery scan more.
    fn store(&self, offset: i64, must_be_durable: bool) -> io::Result<()>;
}

/// The recovery point in a file of the log's own directory, written on every store.
pub struct OwnFile(pub std::path::PathBuf);

impl RecoveryPointStore for OwnFile {
    fn load(&self) -> Option<i64> {
        read_recovery_point(&self.0)
    }

    fn store(&self, offset: i64, _must_be_durable: bool) -> io::Result<()> {
        write_recovery_point(&self.0, offset)
    }
}

/// Reads the recovery point. A missing or unreadable file yields `None`, which means "trust
/// nothing": a damaged checkpoint can cost a longer recovery, never data.
pub(crate) fn read_recovery_point(dir: &Path) -> Option<i64> {
    let text = fs::read_to_string(dir.join(RECOVERY_POINT_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_VERSION {
        return None;
    }
    lines.next()?.trim().parse().ok().filter(|&o: &i64| o >= 0)
}

/// Replaces the recovery point atomically (write, fsync, rename, fsync the directory), so a
/// crash leaves either the old value or the new one.
pub(crate) fn write_recovery_point(dir: &Path, offset: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{RECOVERY_POINT_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    write!(file, "{CHECKPOINT_VERSION}\n{offset}\n")?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(RECOVERY_POINT_FILE))?;
    sync_dir(dir)
}

pub(crate) fn has_clean_shutdown_marker(dir: &Path) -> bool {
    dir.join(CLEAN_SHUTDOWN_FILE).exists()
}

pub(crate) fn write_clean_shutdown_marker(dir: &Path) -> io::Result<()> {
    File::create(dir.join(CLEAN_SHUTDOWN_FILE))?.sync_all()?;
    sync_dir(dir)
}

/// Removes the marker durably, before the log accepts a write, so that a crash from here on is
/// never mistaken for a clean shutdown.
pub(crate) fn remove_clean_shutdown_marker(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
