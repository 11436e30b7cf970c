//! Unit tests of the segment log that need the crate's insides: the full-disk seam, index files.

use bytes::Bytes;
use tempfile::TempDir;

use super::io::fault;
use super::*;
use crate::errors::Errors;
use crate::record::{BatchBuilder, RecordBatch, TimestampType, batches};

/// A producer's batch of `count` records of `value_size` bytes stamped `timestamp`.
pub(crate) fn batch(count: usize, value_size: usize, timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new(0);
    for i in 0..count {
        let value = vec![(i % 251) as u8; value_size];
        b.append(
            timestamp + i as i64,
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    b.build()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn offsets_in(bytes: Bytes) -> Vec<(i64, i64)> {
    batches(bytes)
        .map(|b| {
            let b = b.unwrap();
            (b.base_offset(), b.last_offset())
        })
        .collect()
}

fn all(log: &impl PartitionLog) -> Bytes {
    log.read(log.log_start_offset(), usize::MAX, None).unwrap()
}

#[test]
fn append_assigns_offsets_and_reads_return_stored_bytes() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    let first = log.append_as_leader(batch(3, 10, 100), 7, 1).unwrap();
    assert_eq!((first.first_offset, first.last_offset), (0, 2));
    assert_eq!(first.log_append_time, -1);
    let second = log.append_as_leader(batch(2, 10, 200), 7, 2).unwrap();
    assert_eq!((second.first_offset, second.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);

    let read = log.read(4, 1 << 20, None).unwrap();
    let got = RecordBatch::parse(read).unwrap();
    assert_eq!(
        (got.base_offset(), got.header().partition_leader_epoch),
        (3, 7)
    );
    let mut expected = batch(2, 10, 200).to_vec();
    crate::record::set_base_offset(&mut expected, 3);
    crate::record::set_partition_leader_epoch(&mut expected, 7);
    assert_eq!(got.as_bytes()[..], expected[..]);
    assert_eq!(log.read(5, 100, None).unwrap().len(), 0);
    assert!(matches!(
        log.read(6, 100, None),
        Err(LogError::OffsetOutOfRange { offset: 6, .. })
    ));
}

#[test]
fn reads_honour_max_bytes_but_return_at_least_one_batch_and_stop_at_max_offset() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    for i in 0..100 {
        log.append_as_leader(batch(2, 50, i), 0, i).unwrap();
    }
    assert!(log.segment_base_offsets().len() > 3);
    let one = log.read(10, 1, None).unwrap();
    assert_eq!(offsets_in(one), vec![(10, 11)]);
    let size = batch(2, 50, 0).len();
    let three = log.read(11, 3 * size + size / 2, None).unwrap();
    assert_eq!(offsets_in(three), vec![(10, 11), (12, 13), (14, 15)]);
    let bounded = log.read(0, usize::MAX, Some(7)).unwrap();
    assert_eq!(offsets_in(bounded).last(), Some(&(4, 5)));
    // Reads continue across segment boundaries until max_bytes.
    let everything = offsets_in(all(&log));
    assert_eq!(everything.len(), 100);
    assert!(everything.windows(2).all(|w| w[1].0 == w[0].1 + 1));
}

#[test]
fn index_gets_an_entry_per_interval_and_lookups_use_it() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        index_interval_bytes: 1000,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config, 0).unwrap();
    let size = batch(1, 200, 0).len();
    for i in 0..100 {
        log.append_as_leader(batch(1, 200, i), 0, i).unwrap();
    }
    log.close(0).unwrap();
    let index_len = std::fs::metadata(dir.path().join("00000000000000000000.index"))
        .unwrap()
        .len() as usize;
    // An entry whenever more than 1000 bytes were appended since the last one, plus the seal.
    let per_entry = 1000 / size + 1;
    assert_eq!(index_len / 8, (100 - 1) / per_entry + 1);
    let log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    for target in [0, 1, 37, 38, 99] {
        assert_eq!(
            offsets_in(log.read(target, 1, None).unwrap()),
            vec![(target, target)]
        );
    }
}

#[test]
fn rolls_on_segment_bytes_roll_ms_and_on_demand() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        segment_bytes: 1000,
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config, 0).unwrap();
    let size = batch(1, 100, 0).len();
    let per_segment = 1000 / size;
    for i in 0..per_segment as i64 {
        log.append_as_leader(batch(1, 100, 1_000), 0, i).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0]);
    log.append_as_leader(batch(1, 100, 1_000), 0, 10).unwrap();
    let by_size = per_segment as i64;
    assert_eq!(log.segment_base_offsets(), vec![0, by_size]);
    // Time rolls use record timestamps, as Kafka does.
    log.append_as_leader(batch(1, 100, 1_000 + 60_001), 0, 20)
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, by_size, by_size + 1]);
    log.roll(30).unwrap();
    assert_eq!(log.segment_base_offsets().last(), Some(&(by_size + 2)));
    // Rolling an empty segment is a no-op.
    log.roll(31).unwrap();
    assert_eq!(log.segment_base_offsets().len(), 4);
    assert_eq!(offsets_in(all(&log)).len(), per_segment + 2);
}

#[test]
fn a_full_index_rolls_the_segment() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        max_index_size: 12 * 4, // four time index entries, six offset index entries
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config, 0).unwrap();
    for i in 0..12 {
        log.append_as_leader(batch(1, 10, i), 0, i).unwrap();
    }
    // Timestamps grow with every batch, so the time index fills first: four entries, and the
    // first batch of a segment gets none, so five batches a segment.
    assert_eq!(log.segment_base_offsets(), vec![0, 5, 10]);
}

#[test]
fn bad_batches_are_typed_errors_that_change_nothing() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        max_message_bytes: 500,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config, 0).unwrap();
    log.append_as_leader(batch(2, 10, 0), 0, 0).unwrap();
    let before = all(&log);

    let too_big = batch(1, 600, 0);
    assert!(matches!(
        log.append_as_leader(too_big, 0, 0),
        Err(LogError::MessageTooLarge { max: 500, .. })
    ));
    let mut bad_crc = batch(1, 10, 0).to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    let err = log
        .append_as_leader(Bytes::from(bad_crc), 0, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        LogError::Corrupt(crate::record::BatchError::CrcMismatch { .. })
    ));
    assert_eq!(err.error(), Errors::CorruptMessage);
    let mut bad_magic = batch(1, 10, 0).to_vec();
    bad_magic[16] = 1;
    let err = log
        .append_as_leader(Bytes::from(bad_magic), 0, 0)
        .unwrap_err();
    assert_eq!(err.error(), Errors::InvalidRecord);
    // A good batch followed by a torn one: all or nothing.
    let mut mixed = batch(1, 10, 0).to_vec();
    mixed.extend_from_slice(&batch(1, 10, 0)[..30]);
    assert!(log.append_as_leader(Bytes::from(mixed), 0, 0).is_err());
    assert!(matches!(
        log.append_as_leader(Bytes::new(), 0, 0),
        Err(LogError::InvalidRecord(_))
    ));

    assert_eq!(all(&log), before);
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_the_log_as_it_was() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    log.append_as_leader(batch(3, 20, 0), 0, 0).unwrap();
    let before = all(&log);

    fault::fail_writes_after(10);
    let err = log.append_as_leader(batch(2, 20, 0), 0, 1).unwrap_err();
    fault::clear();
    match &err {
        LogError::Storage { source, .. } => assert_eq!(source.raw_os_error(), Some(28)),
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert_eq!(err.error(), Errors::KafkaStorageError);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(all(&log), before);
    let seg_len = std::fs::metadata(dir.path().join("00000000000000000000.log"))
        .unwrap()
        .len();
    assert_eq!(
        seg_len as usize,
        before.len(),
        "the partial write was cut off"
    );

    // Space comes back: the log carries on, and a reopen after a crash sees both appends.
    log.append_as_leader(batch(2, 20, 0), 0, 2).unwrap();
    drop(log);
    let log = SegmentLog::open(dir.path(), small_segments(), 3).unwrap();
    assert_eq!(offsets_in(all(&log)), vec![(0, 2), (3, 4)]);
}

#[test]
fn writes_after_close_are_refused() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append_as_leader(batch(1, 10, 0), 0, 0).unwrap();
    log.close(1).unwrap();
    assert!(matches!(
        log.append_as_leader(batch(1, 10, 0), 0, 2),
        Err(LogError::Closed)
    ));
    assert!(matches!(log.read(0, 100, None), Err(LogError::Closed)));
    assert!(matches!(log.truncate_to(0), Err(LogError::Closed)));
    log.close(3).unwrap();
    let log = SegmentLog::open(dir.path(), LogConfig::default(), 4).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().segments_recovered, 0);
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn retention_by_time_and_by_bytes_advances_the_log_start() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        segment_bytes: 1000,
        retention_ms: 10_000,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config.clone(), 0).unwrap();
    // Five segments, each holding batches from one second: 1000, 2000, ...
    for s in 1..=5i64 {
        for _ in 0..3 {
            log.append_as_leader(batch(1, 200, s * 1000), 0, s * 1000)
                .unwrap();
        }
        log.roll(s * 1000).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert_eq!(bases.len(), 6);
    let leo = log.log_end_offset();
    // At 12.5 s, segments whose newest record is older than 2.5 s go.
    assert_eq!(log.delete_old_segments(12_500, leo).unwrap(), 2);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert!(matches!(
        log.read(0, 1, None),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // The high-watermark bound keeps what followers may still need.
    assert_eq!(log.delete_old_segments(100_000, bases[3]).unwrap(), 1);
    assert_eq!(log.log_start_offset(), bases[3]);

    let seg_size = log.size_in_bytes() / 2;
    log.update_config(LogConfig {
        retention_ms: -1,
        retention_bytes: seg_size as i64,
        ..config.clone()
    });
    assert_eq!(log.delete_old_segments(100_000, leo).unwrap(), 1);
    assert_eq!(log.log_start_offset(), bases[4]);

    // Everything expired: the active segment rolls so the log keeps its end.
    log.update_config(LogConfig {
        retention_ms: 0,
        ..config.clone()
    });
    log.append_as_leader(batch(1, 10, 1), 0, 100_000).unwrap();
    let leo = log.log_end_offset();
    assert!(log.delete_old_segments(200_000, leo).unwrap() >= 1);
    assert_eq!(log.log_start_offset(), leo);
    assert_eq!(log.segment_base_offsets(), vec![leo]);
    assert_eq!(log.read(leo, 100, None).unwrap().len(), 0);
    drop(log);
    let log = SegmentLog::open(dir.path(), config, 300_000).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (leo, leo));
}

#[test]
fn finds_the_first_offset_at_or_after_a_timestamp() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    // Batches of 3 records with timestamps t, t+1, t+2 for t = 0, 10, 20, ...
    for i in 0..60 {
        log.append_as_leader(batch(3, 30, i * 10), 0, 0).unwrap();
    }
    assert!(log.segment_base_offsets().len() > 2);
    for (ts, expected) in [
        (0, Some((0, 0))),
        (1, Some((1, 1))),
        (3, Some((10, 3))),
        (302, Some((302, 92))),
        (591, Some((591, 178))),
        (593, None),
    ] {
        assert_eq!(
            log.fetch_offset_by_timestamp(ts).unwrap(),
            expected,
            "timestamp {ts}"
        );
    }
    log.close(0).unwrap();
    let log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    assert_eq!(log.fetch_offset_by_timestamp(302).unwrap(), Some((302, 92)));
}

#[test]
fn timestamp_search_finds_the_exact_record_inside_a_compressed_batch() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let mut builder = BatchBuilder::new(0).attributes(crate::record::Attributes {
        compression: crate::record::Compression::Zstd,
        ..crate::record::Attributes::default()
    });
    for i in 0..10 {
        builder.append(100 + i * 10, None, Some(b"compressed"), &[]);
    }
    log.append_as_leader(builder.build(), 0, 0).unwrap();
    assert_eq!(log.fetch_offset_by_timestamp(135).unwrap(), Some((140, 4)));
}

#[test]
fn log_append_time_stamps_batches_with_the_broker_clock() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config, 0).unwrap();
    let info = log.append_as_leader(batch(2, 10, 5), 0, 777).unwrap();
    assert_eq!((info.log_append_time, info.max_timestamp), (777, 777));
    let stored = RecordBatch::parse(all(&log)).unwrap();
    assert!(
        stored
            .records()
            .unwrap()
            .all(|r| r.unwrap().timestamp == 777)
    );
    assert_eq!(log.fetch_offset_by_timestamp(700).unwrap(), Some((777, 0)));
}

#[test]
fn truncation_removes_whole_batches_and_survives_a_crash() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    for i in 0..60 {
        log.append_as_leader(batch(2, 60, i), 0, i).unwrap();
    }
    log.flush(0).unwrap();
    assert!(log.segment_base_offsets().len() > 2);
    log.truncate_to(61).unwrap();
    // Offset 61 is inside the batch 60..=61, which goes entirely.
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(offsets_in(all(&log)).last(), Some(&(58, 59)));
    log.truncate_to(8).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    let info = log.append_as_leader(batch(1, 10, 0), 1, 0).unwrap();
    assert_eq!(info.first_offset, 8);
    drop(log); // a crash: no close
    let log = SegmentLog::open(dir.path(), small_segments(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(
        offsets_in(all(&log)),
        vec![(0, 1), (2, 3), (4, 5), (6, 7), (8, 8)]
    );
}

#[test]
fn follower_appends_keep_offsets_and_reject_going_backwards() {
    let dir = TempDir::new().unwrap();
    let mut leader = MemoryLog::new(LogConfig::default());
    leader.append_as_leader(batch(3, 10, 0), 4, 0).unwrap();
    leader.append_as_leader(batch(2, 10, 0), 5, 0).unwrap();
    let mut follower = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let fetched = leader.read(0, usize::MAX, None).unwrap();
    let info = follower.append_as_follower(fetched.clone(), 0).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 4));
    assert_eq!(all(&follower), fetched);
    assert!(matches!(
        follower.append_as_follower(fetched, 0),
        Err(LogError::UnexpectedAppendOffset {
            first_offset: 0,
            expected_at_least: 5
        })
    ));
}

#[test]
fn a_garbled_index_is_caught_when_used_and_rebuilt_by_the_next_write() {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..50 {
        log.append_as_leader(batch(1, 100, i), 0, i).unwrap();
    }
    // Scribble increasing but wrong entries over the live, mapped index: no structural check
    // can tell, only the batch each entry points at.
    let path = dir.path().join("00000000000000000000.index");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for i in 0..20u32 {
        let mut entry = (i * 3 + 1).to_be_bytes().to_vec();
        entry.extend_from_slice(&(i * 7 + 5).to_be_bytes());
        file.write_all_at(&entry, u64::from(i) * 8).unwrap();
    }
    for target in 0..50 {
        assert_eq!(
            offsets_in(log.read(target, 1, None).unwrap()),
            vec![(target, target)]
        );
    }
    log.append_as_leader(batch(1, 100, 50), 0, 50).unwrap();
    for target in 0..51 {
        assert_eq!(
            offsets_in(log.read(target, 1, None).unwrap()),
            vec![(target, target)]
        );
    }
    log.close(0).unwrap();
    let log = SegmentLog::open(dir.path(), config, 0).unwrap();
    assert_eq!(
        log.recovery_report().indexes_rebuilt,
        0,
        "the rebuilt index was sealed"
    );
}

#[test]
fn a_lookup_reads_at_most_about_one_index_interval_of_log() {
    let dir = TempDir::new().unwrap();
    let config = LogConfig {
        index_interval_bytes: 4096,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(dir.path(), config, 0).unwrap();
    let small = batch(3, 100, 0); // about 400 bytes: ten or so batches per interval
    for i in 0..5_000 {
        log.append_as_leader(batch(3, 100, i), 0, 0).unwrap();
    }
    let bound = 4096 + 2 * crate::record::header::HEADER_SIZE + small.len();
    let mut worst = 0;
    for offset in (0..log.log_end_offset()).step_by(7) {
        super::scan::read_counter::take();
        let got = log.read(offset, 1, None).unwrap();
        assert_eq!(offsets_in(got).len(), 1);
        worst = worst.max(super::scan::read_counter::take());
    }
    assert!(
        worst <= bound,
        "a lookup read {worst} bytes of log headers; bound {bound}"
    );
    assert!(
        worst >= 4096,
        "the bound is tight enough to mean something: {worst}"
    );
}

#[test]
fn negative_offsets_and_unindexable_spans_are_refused() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append_as_leader(batch(2, 10, 0), 0, 0).unwrap();
    assert!(matches!(
        log.truncate_to(-1),
        Err(LogError::OffsetOutOfRange { offset: -1, .. })
    ));
    assert!(log.truncate_fully_and_start_at(-5).is_err());
    let mut memory = MemoryLog::new(LogConfig::default());
    assert!(memory.truncate_to(-1).is_err());

    // Two replicated batches 2^31 offsets apart cannot share a segment.
    let mut far = BatchBuilder::new(2).partition_leader_epoch(0);
    far.append(0, None, Some(b"a"), &[]);
    let mut both = far.build().to_vec();
    let mut farther = BatchBuilder::new(3 + i64::from(i32::MAX)).partition_leader_epoch(0);
    farther.append(0, None, Some(b"b"), &[]);
    both.extend_from_slice(&farther.build());
    assert!(matches!(
        log.append_as_follower(Bytes::from(both), 0),
        Err(LogError::InvalidRecord(_))
    ));
    // Alone, a far batch is fine: it starts a segment of its own.
    let mut far = BatchBuilder::new(3 + i64::from(i32::MAX)).partition_leader_epoch(0);
    far.append(0, None, Some(b"b"), &[]);
    log.append_as_follower(far.build(), 0).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 3 + i64::from(i32::MAX)]);
    assert_eq!(offsets_in(all(&log)).len(), 2);
}

/// Reads the same arguments once by copy and once by the default rule, checks they agree and
/// that each took the path it should, and returns the default rule's bytes.
fn read_both_ways(
    log: &SegmentLog,
    offset: i64,
    max_bytes: usize,
    max_offset: Option<i64>,
    maps: bool,
) -> Bytes {
    use super::segment::read_path;
    read_path::map_from(Some(usize::MAX));
    read_path::take();
    let copied = log.read(offset, max_bytes, max_offset).unwrap();
    let (mapped_reads, _) = read_path::take();
    read_path::map_from(None);
    let got = log.read(offset, max_bytes, max_offset).unwrap();
    let (mapped_now, copied_now) = read_path::take();
    let args = format!("read({offset}, {max_bytes}, {max_offset:?})");
    assert_eq!(mapped_reads, 0, "{args}: forced to copy");
    assert_eq!(
        (mapped_now, copied_now),
        (usize::from(maps), usize::from(!maps && !copied.is_empty())),
        "{args}: path taken"
    );
    assert!(got == copied, "{args}: mapped and copied reads agree");
    got
}

#[test]
fn large_reads_map_the_segment_and_return_what_a_copy_returns() {
    use super::segment::MMAP_MIN_READ;
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    // Two records a batch, so batch i holds offsets 2i and 2i+1. Batch positions fall off page
    // boundaries, and batch 5 alone is past the threshold.
    let values = [
        20_000, 30_000, 25_000, 41_000, 18_000, 90_000, 33_000, 27_000,
    ];
    // The memory log says what the stored batches are, without reading the files under test.
    let mut memory = MemoryLog::new(LogConfig::default());
    for (i, v) in values.iter().enumerate() {
        let info = log.append_as_leader(batch(2, *v, i as i64), 0, 0).unwrap();
        assert_eq!(
            memory
                .append_as_leader(batch(2, *v, i as i64), 0, 0)
                .unwrap(),
            info
        );
    }
    let stored: Vec<Vec<u8>> = memory.batches().map(|b| b.to_vec()).collect();
    assert_eq!(stored.len(), values.len());
    assert!(stored[0].len() < MMAP_MIN_READ && stored[0].len() + stored[1].len() > MMAP_MIN_READ);
    assert!(stored[5].len() > MMAP_MIN_READ);
    let size = |r: std::ops::Range<usize>| stored[r].iter().map(Vec::len).sum::<usize>();
    let cases = [
        // (offset, max_bytes, max_offset, batches expected, mapped)
        (0, size(0..3), None, 0..3, true),
        (3, size(1..3) + stored[3].len() / 2, None, 1..3, true),
        (10, 1, None, 5..6, true),
        (11, size(5..6) + 100, None, 5..6, true),
        (0, usize::MAX, Some(7), 0..3, true),
        (5, usize::MAX, Some(8), 2..4, true),
        (4, usize::MAX, Some(5), 2..2, false),
        (6, usize::MAX, None, 3..8, true),
        (0, MMAP_MIN_READ, None, 0..1, true),
        (0, MMAP_MIN_READ - 1, None, 0..1, false),
        (1, 0, None, 0..1, false),
    ];
    for (offset, max_bytes, max_offset, expected, maps) in cases {
        let got = read_both_ways(&log, offset, max_bytes, max_offset, maps);
        assert!(
            got == stored[expected.clone()].concat(),
            "read({offset}, {max_bytes}, {max_offset:?}) returns batches {expected:?}, not {} bytes",
            got.len()
        );
    }

    // Bytes handed out stay as they were while the log rolls, appends and deletes the segment:
    // only truncation takes the file from under a mapping.
    let held = read_both_ways(&log, 0, usize::MAX, None, true);
    let expected = stored.concat();
    log.roll(1).unwrap();
    for i in 0..4 {
        log.append_as_leader(batch(2, 40_000, 100 + i), 0, 1)
            .unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 16]);
    assert!(held == expected, "held bytes survive a roll and appends");
    let later = read_both_ways(&log, 16, usize::MAX, None, true);
    assert_eq!(
        offsets_in(later),
        vec![(16, 17), (18, 19), (20, 21), (22, 23)]
    );
    let everything = all(&log);
    assert!(everything[..expected.len()] == expected[..]);
    let second_segment = log.size_in_bytes() - expected.len() as u64;
    log.update_config(LogConfig {
        retention_bytes: second_segment as i64,
        ..LogConfig::default()
    });
    assert_eq!(log.delete_old_segments(2, log.log_end_offset()).unwrap(), 1);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    assert!(
        held == expected,
        "held bytes survive the deletion of their file"
    );
    let sliced = held.slice(stored[0].len()..);
    drop(held);
    assert!(sliced[..] == expected[stored[0].len()..]);
}

#[derive(Clone, Debug)]
enum ReadOp {
    Append {
        records: usize,
        value_size: usize,
    },
    Read {
        pick: u16,
        max_bytes: usize,
        bound: Option<u16>,
    },
    Roll,
    Truncate {
        pick: u16,
    },
}

fn read_op() -> impl proptest::strategy::Strategy<Value = ReadOp> {
    use proptest::prelude::*;
    // Batches of up to four records of up to 40 KB, and byte limits from nothing to past a
    // segment, so reads land on both sides of the mapping threshold.
    let value_size = prop_oneof![0usize..300, 8_000usize..40_000];
    let max_bytes = prop_oneof![0usize..3_000, 0usize..400_000, Just(usize::MAX)];
    prop_oneof![
        4 => (1usize..5, value_size)
            .prop_map(|(records, value_size)| ReadOp::Append { records, value_size }),
        6 => (any::<u16>(), max_bytes, proptest::option::of(any::<u16>()))
            .prop_map(|(pick, max_bytes, bound)| ReadOp::Read { pick, max_bytes, bound }),
        1 => Just(ReadOp::Roll),
        1 => any::<u16>().prop_map(|pick| ReadOp::Truncate { pick }),
    ]
}

/// An offset in `[start, end]`, now and then one just outside.
fn pick_in(log: &MemoryLog, pick: u16) -> i64 {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    start - 1 + (u64::from(pick) % (end - start + 3) as u64) as i64
}

fn run_read_ops(config: LogConfig, ops: Vec<ReadOp>) {
    let dir = TempDir::new().unwrap();
    let mut disk = SegmentLog::open(dir.path(), config.clone(), 0).unwrap();
    let mut memory = MemoryLog::new(config);
    // Earlier reads, with copies of what they returned: they must not change under later
    // appends and rolls. A truncation drops them, as it may cut the file under a mapping.
    let mut held: Vec<(Bytes, Vec<u8>)> = Vec::new();
    for (now, op) in (1..).zip(ops) {
        match op {
            ReadOp::Append {
                records,
                value_size,
            } => {
                let bytes = batch(records, value_size, now);
                let info = disk.append_as_leader(bytes.clone(), 0, now).unwrap();
                assert_eq!(memory.append_as_leader(bytes, 0, now).unwrap(), info);
            }
            ReadOp::Read {
                pick,
                max_bytes,
                bound,
            } => {
                let offset = pick_in(&memory, pick);
                let bound = bound.map(|b| pick_in(&memory, b));
                match (
                    disk.read(offset, max_bytes, bound),
                    memory.read(offset, max_bytes, bound),
                ) {
                    (Ok(got), Ok(want)) => {
                        assert!(
                            got == want,
                            "read({offset}, {max_bytes}, {bound:?}): {} bytes, memory log {}",
                            got.len(),
                            want.len()
                        );
                        let copy = got.to_vec();
                        held.push((got, copy));
                        if held.len() > 4 {
                            held.remove(0);
                        }
                    }
                    (
                        Err(LogError::OffsetOutOfRange { .. }),
                        Err(LogError::OffsetOutOfRange { .. }),
                    ) => {}
                    (got, want) => panic!(
                        "read({offset}): disk {:?}, memory {:?}",
                        got.map(|b| b.len()),
                        want.map(|b| b.len())
                    ),
                }
            }
            ReadOp::Roll => disk.roll(now).unwrap(),
            ReadOp::Truncate { pick } => {
                let offset = pick_in(&memory, pick).max(0);
                held.clear();
                disk.truncate_to(offset).unwrap();
                memory.truncate_to(offset).unwrap();
            }
        }
        for (bytes, copy) in &held {
            assert!(bytes == copy, "held bytes changed");
        }
    }
}

/// The segment log's reads, mapped or copied, agree with the memory log's; run across every
/// case, both paths must have been taken.
#[test]
fn reads_on_either_path_match_the_memory_log() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let configs = (
        prop_oneof![300u32..3_000, 100_000u32..1_000_000],
        0u32..600,
        24u32..4_096,
    )
        .prop_map(|(segment_bytes, interval, index_size)| LogConfig {
            segment_bytes,
            index_interval_bytes: interval,
            max_index_size: index_size,
            ..LogConfig::default()
        });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    super::segment::read_path::take();
    TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        ..Config::default()
    })
    .run(
        &(configs, proptest::collection::vec(read_op(), 1..40)),
        |(config, ops)| {
            run_read_ops(config, ops);
            Ok(())
        },
    )
    .unwrap();
    let (mapped, copied) = super::segment::read_path::take();
    assert!(
        mapped > 0 && copied > 0,
        "both paths ran: {mapped} mapped, {copied} copied"
    );
}

/// One produced record for the compaction tests: a key out of a few, a value or a tombstone.
#[derive(Clone, Debug)]
struct Update {
    key: u8,
    value: Option<u16>,
    /// Records per batch boundary: a new batch starts after this record.
    ends_batch: bool,
}

fn compacting(delete_retention_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        delete_retention_ms,
        min_cleanable_ratio_ppm: 0,
        ..LogConfig::default()
    }
}

/// Appends `updates` as batches, record `i` stamped `1000 + i`; returns each record's
/// (offset, key, value).
fn append_updates(log: &mut SegmentLog, updates: &[Update]) -> Vec<(i64, u8, Option<u16>)> {
    let mut written = Vec::new();
    let mut pending: Vec<&Update> = Vec::new();
    let flush = |log: &mut SegmentLog, pending: &mut Vec<&Update>, written: &mut Vec<_>| {
        if pending.is_empty() {
            return;
        }
        let mut b = BatchBuilder::new(0);
        for u in pending.iter() {
            let value = u.value.map(|v| v.to_be_bytes());
            b.append(
                1000 + written.len() as i64,
                Some(&[u.key]),
                value.as_ref().map(|v| &v[..]),
                &[],
            );
            written.push((0, u.key, u.value)); // the offset is known once appended
        }
        let first = log.log_end_offset();
        let info = log.append_as_leader(b.build(), 0, 0).unwrap();
        assert_eq!(info.first_offset, first);
        let n = pending.len();
        let len = written.len();
        for (i, w) in written[len - n..].iter_mut().enumerate() {
            w.0 = first + i as i64;
        }
        pending.clear();
    };
    for u in updates {
        pending.push(u);
        if u.ends_batch {
            flush(log, &mut pending, &mut written);
        }
    }
    flush(log, &mut pending, &mut written);
    written
}

/// Every record of the log, as (offset, key, value), in log order.
fn records_of(log: &SegmentLog) -> Vec<(i64, u8, Option<u16>)> {
    let mut out = Vec::new();
    for b in batches(all(log)) {
        for r in b.unwrap().records().unwrap() {
            let r = r.unwrap();
            let value = r
                .value
                .map(|v| u16::from_be_bytes(v[..].try_into().unwrap()));
            out.push((r.offset, r.key.unwrap()[0], value));
        }
    }
    out
}

#[test]
fn compaction_keeps_the_newest_value_of_each_key_at_its_offset() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), compacting(i64::MAX), 0).unwrap();
    let updates: Vec<Update> = (0..200)
        .map(|i| Update {
            key: (i % 7) as u8,
            value: Some(i as u16),
            ends_batch: i % 3 == 2,
        })
        .collect();
    let written = append_updates(&mut log, &updates);
    let segments_before = log.segment_base_offsets().len();
    assert!(segments_before > 3, "the updates span several segments");
    let active = *log.segment_base_offsets().last().unwrap();
    let report = log.clean(10_000, log.log_end_offset()).unwrap();
    assert!(report.segments_rewritten > 0);
    assert!(report.bytes_after < report.bytes_before);
    let kept = records_of(&log);
    // Below the active segment each key appears at most once, and it is the newest record of
    // its key among the cleaned segments; the active segment is untouched.
    for &(offset, key, value) in kept.iter().filter(|r| r.0 < active) {
        let newest = written
            .iter()
            .filter(|w| w.1 == key && w.0 < active)
            .map(|w| w.0)
            .max()
            .unwrap();
        assert_eq!(offset, newest, "key {key}");
        assert_eq!(written.iter().find(|w| w.0 == offset).unwrap().2, value);
    }
    let tail: Vec<_> = written.iter().filter(|w| w.0 >= active).cloned().collect();
    assert_eq!(
        kept.iter()
            .filter(|r| r.0 >= active)
            .cloned()
            .collect::<Vec<_>>(),
        tail
    );
    // A second cleaning with nothing new changes nothing; the log reopens to the same records.
    assert_eq!(
        log.clean(10_000, log.log_end_offset())
            .unwrap()
            .segments_rewritten,
        0
    );
    let end = log.log_end_offset();
    log.close(10_000).unwrap();
    let log = SegmentLog::open(dir.path(), compacting(i64::MAX), 10_000).unwrap();
    assert_eq!(records_of(&log), kept);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn a_compacted_log_refuses_records_without_keys_and_is_never_deleted_by_age() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), compacting(0), 0).unwrap();
    let mut b = BatchBuilder::new(0);
    b.append(1, None, Some(b"no key"), &[]);
    assert!(matches!(
        log.append_as_leader(b.build(), 0, 0),
        Err(LogError::InvalidRecord(_))
    ));
    log.append_as_leader(batch(40, 20, 1), 0, 0).unwrap();
    log.roll(2).unwrap();
    let config = LogConfig {
        retention_ms: 1,
        ..compacting(0)
    };
    log.update_config(config);
    assert_eq!(
        log.delete_old_segments(1_000_000, log.log_end_offset())
            .unwrap(),
        0
    );
}

#[test]
fn tombstones_go_only_after_delete_retention_and_an_interrupted_cleaning_is_undone() {
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), compacting(5_000), 0).unwrap();
    let mut updates = vec![
        Update {
            key: 1,
            value: Some(1),
            ends_batch: false,
        },
        Update {
            key: 2,
            value: Some(2),
            ends_batch: true,
        },
        Update {
            key: 1,
            value: None,
            ends_batch: true,
        },
    ];
    // Enough later records of another key to push these out of the active segment.
    updates.extend((0..60).map(|i| Update {
        key: 3,
        value: Some(i),
        ends_batch: true,
    }));
    let written = append_updates(&mut log, &updates);
    let tombstone = written[2].0;
    // Records are stamped 1000.., so at 5,500 the tombstone (1002) is younger than 5 s.
    log.clean(5_500, log.log_end_offset()).unwrap();
    let kept = records_of(&log);
    assert!(
        kept.contains(&(tombstone, 1, None)),
        "the delete is still visible"
    );
    assert!(
        !kept.iter().any(|r| r.1 == 1 && r.2.is_some()),
        "the old value is gone"
    );
    assert!(kept.contains(&(written[1].0, 2, Some(2))));
    // Later, it goes too (the log counts as dirty again after any new record).
    append_updates(
        &mut log,
        &[Update {
            key: 4,
            value: Some(4),
            ends_batch: true,
        }],
    );
    let config = LogConfig {
        min_cleanable_ratio_ppm: 0,
        ..compacting(5_000)
    };
    log.update_config(config);
    let mut log_reopened = {
        log.close(20_000).unwrap();
        // A cleaning that died before its rename leaves a `.cleaned` file: opening removes it.
        let stray = dir
            .path()
            .join(format!("{}.cleaned", super::segment::file_name(0, "log")));
        std::fs::write(&stray, b"half a segment").unwrap();
        let log = SegmentLog::open(dir.path(), compacting(5_000), 20_000).unwrap();
        assert!(!stray.exists());
        log
    };
    log_reopened
        .clean(20_000, log_reopened.log_end_offset())
        .unwrap();
    assert!(!records_of(&log_reopened).iter().any(|r| r.1 == 1));
}

#[test]
fn compaction_never_drops_a_newest_value_never_reorders_and_keeps_offsets() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let update = (
        0u8..6,
        proptest::option::weighted(0.85, any::<u16>()),
        any::<bool>(),
    )
        .prop_map(|(key, value, ends_batch)| Update {
            key,
            value,
            ends_batch,
        });
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec(update, 1..250),
                0i64..400,
                any::<bool>(),
            ),
            |(updates, retention, reopen)| {
                let dir = TempDir::new().unwrap();
                let config = compacting(retention);
                let mut log = SegmentLog::open(dir.path(), config.clone(), 0).unwrap();
                let written = append_updates(&mut log, &updates);
                let end = log.log_end_offset();
                let active = *log.segment_base_offsets().last().unwrap();
                let now = 1000 + written.len() as i64;
                let horizon = now - retention;
                log.clean(now, end).unwrap();
                if reopen {
                    log.close(now).unwrap();
                    log = SegmentLog::open(dir.path(), config, now).unwrap();
                }
                let kept = records_of(&log);
                // What is kept is a subsequence of what was written: same offsets, same order.
                let mut it = written.iter();
                for k in &kept {
                    prop_assert!(it.any(|w| w == k), "{k:?} kept out of order or changed");
                }
                // The newest record of every key is kept, unless it is a tombstone that was
                // old enough to go.
                for key in 0u8..6 {
                    let Some(newest) = written.iter().filter(|w| w.1 == key).max_by_key(|w| w.0)
                    else {
                        continue;
                    };
                    let may_go =
                        newest.2.is_none() && newest.0 < active && 1000 + newest.0 < horizon;
                    prop_assert!(may_go || kept.contains(newest), "newest of key {key} lost");
                }
                // The active segment is untouched, and the log's ends do not move.
                let tail: Vec<_> = written.iter().filter(|w| w.0 >= active).cloned().collect();
                let kept_tail: Vec<_> = kept.iter().filter(|w| w.0 >= active).cloned().collect();
                prop_assert_eq!(kept_tail, tail);
                prop_assert_eq!(log.log_end_offset(), end);
                prop_assert_eq!(log.log_start_offset(), 0);
                Ok(())
            },
        )
        .unwrap();
}
