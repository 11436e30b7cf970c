//! Damage on disk, and what recovery keeps: a flipped byte in the middle of a segment, a segment
//! cut short, deleted or garbled index files, a garbled checkpoint. In every case each valid
//! batch before the damage is kept, byte for byte, and lookups stay right.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use surety_core::log::{LogConfig, PartitionLog, SegmentLog};
use surety_core::record::{BatchBuilder, RecordBatch, batches};
use tempfile::TempDir;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn batch(i: i64) -> Bytes {
    let mut b = BatchBuilder::new(0);
    for r in 0..3 {
        let value = format!("value-{i}-{r}-{}", "x".repeat((i % 50) as usize));
        b.append(
            1_000 + i * 10 + r,
            Some(format!("key-{i}").as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.build()
}

/// A log of `n` batches (3 records each) over several segments, written without a flush and
/// dropped without a close: a crash, so the next open recovers every segment.
fn crashed_log(dir: &Path, n: i64) -> Vec<RecordBatch> {
    let mut log = SegmentLog::open(dir, config(), 0).unwrap();
    for i in 0..n {
        log.append_as_leader(batch(i), 1, i).unwrap();
    }
    let stored = read_all(&log);
    assert!(
        log.segment_base_offsets().len() >= 4,
        "spans several segments"
    );
    stored
}

/// The same log, closed cleanly: the next open trusts the segments.
fn closed_log(dir: &Path, n: i64) -> Vec<RecordBatch> {
    let mut log = SegmentLog::open(dir, config(), 0).unwrap();
    for i in 0..n {
        log.append_as_leader(batch(i), 1, i).unwrap();
    }
    let stored = read_all(&log);
    log.close(n).unwrap();
    stored
}

fn read_all(log: &SegmentLog) -> Vec<RecordBatch> {
    batches(log.read(log.log_start_offset(), usize::MAX, None).unwrap())
        .map(Result::unwrap)
        .collect()
}

fn segment_files(dir: &Path, kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == kind))
        .collect();
    files.sort();
    files
}

/// Every offset the log holds resolves to the batch that holds it, alone.
fn assert_lookups_match(log: &SegmentLog, stored: &[RecordBatch]) {
    for b in stored {
        for offset in b.base_offset()..=b.last_offset() {
            let got = log.read(offset, 1, None).unwrap();
            assert_eq!(&got, b.as_bytes(), "offset {offset}");
        }
    }
}

#[test]
fn a_flipped_byte_mid_segment_keeps_every_batch_before_it() {
    let dir = TempDir::new().unwrap();
    let stored = crashed_log(dir.path(), 200);
    let segments = segment_files(dir.path(), "log");
    let victim = &segments[1];
    let len = fs::metadata(victim).unwrap().len();
    let mut bytes = fs::read(victim).unwrap();
    bytes[(len / 2) as usize] ^= 0x5a;
    fs::write(victim, &bytes).unwrap();

    let log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    let report = log.recovery_report().clone();
    assert!(!report.clean_shutdown);
    assert!(report.bytes_truncated > 0);
    assert_eq!(
        report.segments_deleted,
        segments.len() - 2,
        "what followed the damage"
    );
    let kept = read_all(&log);
    assert!(!kept.is_empty());
    // A prefix of what was written, ending right before the damaged batch.
    assert_eq!(kept[..], stored[..kept.len()]);
    let damaged = &stored[kept.len()];
    let victim_base: i64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(damaged.base_offset() >= victim_base);
    assert_eq!(log.log_end_offset(), damaged.base_offset());
    assert_lookups_match(&log, &kept);
}

#[test]
fn a_segment_cut_short_keeps_every_whole_batch() {
    let dir = TempDir::new().unwrap();
    let stored = crashed_log(dir.path(), 200);
    let last = segment_files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let mut log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    let kept = read_all(&log);
    assert_eq!(kept.len(), stored.len() - 1, "only the torn batch goes");
    assert_eq!(kept[..], stored[..kept.len()]);
    assert_eq!(log.log_end_offset(), stored.last().unwrap().base_offset());
    assert_lookups_match(&log, &kept);
    // The log carries on from there.
    let info = log.append_as_leader(batch(999), 2, 0).unwrap();
    assert_eq!(info.first_offset, stored.last().unwrap().base_offset());
}

#[test]
fn zeros_after_the_last_batch_are_cut() {
    // A file system may extend a file with zeros when a crash interrupts a write.
    let dir = TempDir::new().unwrap();
    let stored = crashed_log(dir.path(), 200);
    let last = segment_files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    assert_eq!(log.recovery_report().bytes_truncated, 4096);
    assert_eq!(read_all(&log), stored);
}

#[test]
fn a_missing_index_is_rebuilt_after_a_clean_shutdown() {
    let dir = TempDir::new().unwrap();
    let stored = closed_log(dir.path(), 200);
    let indexes = segment_files(dir.path(), "index");
    let size_before = fs::metadata(&indexes[1]).unwrap().len();
    assert!(size_before > 0);
    fs::remove_file(&indexes[1]).unwrap();
    fs::remove_file(segment_files(dir.path(), "timeindex")[2].clone()).unwrap();

    let mut log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().indexes_rebuilt, 2);
    assert_eq!(read_all(&log), stored);
    assert_lookups_match(&log, &stored);
    log.close(0).unwrap();
    assert_eq!(
        fs::metadata(&indexes[1]).unwrap().len(),
        size_before,
        "same index as before"
    );
}

#[test]
fn garbled_indexes_are_rebuilt_not_trusted() {
    let dir = TempDir::new().unwrap();
    let stored = closed_log(dir.path(), 200);
    let indexes = segment_files(dir.path(), "index");
    let time_indexes = segment_files(dir.path(), "timeindex");
    // Noise, a torn entry, and decreasing entries.
    fs::write(&indexes[0], [0xabu8; 64]).unwrap();
    let len = fs::metadata(&indexes[1]).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&indexes[1])
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let mut noisy = fs::read(&time_indexes[2]).unwrap();
    noisy.reverse();
    fs::write(&time_indexes[2], noisy).unwrap();

    let log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    assert_eq!(log.recovery_report().indexes_rebuilt, 3);
    assert_eq!(read_all(&log), stored);
    assert_lookups_match(&log, &stored);
    for b in &stored {
        let ts = b.header().base_timestamp;
        assert_eq!(
            log.fetch_offset_by_timestamp(ts).unwrap(),
            Some((ts, b.base_offset()))
        );
    }
}

#[test]
fn a_garbled_checkpoint_means_recovering_everything() {
    let dir = TempDir::new().unwrap();
    let stored = {
        let mut log = SegmentLog::open(dir.path(), config(), 0).unwrap();
        for i in 0..200 {
            log.append_as_leader(batch(i), 1, i).unwrap();
        }
        log.flush(0).unwrap();
        read_all(&log)
    };
    fs::write(
        dir.path().join("recovery-point-offset-checkpoint"),
        "garbage",
    )
    .unwrap();
    // Damage in the first segment, which the lost checkpoint no longer vouches for.
    let first = &segment_files(dir.path(), "log")[0];
    let mut bytes = fs::read(first).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    fs::write(first, &bytes).unwrap();
    let log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.checkpointed_recovery_point, None);
    assert_eq!(
        report.segments_recovered, 1,
        "recovery stopped at the damage"
    );
    let kept = read_all(&log);
    assert_eq!(kept[..], stored[..kept.len()]);
    assert!(kept.len() < stored.len());
}

#[test]
fn recovery_scans_only_from_the_recovery_point() {
    let dir = TempDir::new().unwrap();
    let stored = {
        let mut log = SegmentLog::open(dir.path(), config(), 0).unwrap();
        for i in 0..200 {
            log.append_as_leader(batch(i), 1, i).unwrap();
        }
        log.flush(0).unwrap();
        for i in 200..230 {
            log.append_as_leader(batch(i), 1, i).unwrap();
        }
        read_all(&log)
    };
    let log = SegmentLog::open(dir.path(), config(), 0).unwrap();
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert!(report.segments_recovered >= 1);
    assert!(report.segments_recovered < report.segments_found);
    assert_eq!(read_all(&log), stored);
}
