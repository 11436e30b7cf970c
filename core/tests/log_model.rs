//! State-machine property test of the partition logs against a plain model.
//!
//! Random sequences of appends (as leader and as follower, with offset gaps), reads, truncations,
//! rolls, retention, flushes, clean reopens and crashes (optionally tearing the last segment's
//! unflushed tail at a random byte) run against a [`SegmentLog`], and after every step it must
//! agree with a model that is nothing but a list of batches. A second run drives a [`MemoryLog`]
//! beside it through the operations both support (all but retention and torn crashes), so the
//! model checker's log and the broker's cannot drift apart:
//! - every read returns exactly the model's batches from the one holding the offset, in order,
//!   with their offsets, within the byte and offset limits;
//! - after a crash the log is a prefix of what was appended that holds everything flushed.

use bytes::Bytes;
use proptest::prelude::*;
use surety_core::log::{LogConfig, LogError, MemoryLog, PartitionLog, SegmentLog};
use surety_core::record::{BatchBuilder, RecordBatch};
use tempfile::TempDir;

#[derive(Clone, Debug)]
struct ModelBatch {
    base: i64,
    last: i64,
    bytes: Bytes,
    /// (offset, timestamp) of each record.
    records: Vec<(i64, i64)>,
}

/// The reference: batches in offset order, a start and an end.
#[derive(Clone, Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    start: i64,
    end: i64,
    /// Everything below this was flushed and must survive a crash.
    durable: i64,
}

impl Model {
    fn read(&self, offset: i64, max_bytes: usize, max_offset: Option<i64>) -> Vec<u8> {
        let limit = max_offset.unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for (n, b) in self.batches.iter().filter(|b| b.last >= offset).enumerate() {
            if b.last >= limit || (n > 0 && out.len() + b.bytes.len() > max_bytes) {
                break;
            }
            out.extend_from_slice(&b.bytes);
        }
        out
    }

    fn offset_for_timestamp(&self, ts: i64) -> Option<(i64, i64)> {
        self.batches
            .iter()
            .flat_map(|b| b.records.iter())
            .find(|(_, t)| *t >= ts)
            .map(|&(o, t)| (t, o))
    }

    fn truncate_to(&mut self, offset: i64) {
        if offset >= self.end {
            return;
        }
        if offset <= self.start {
            self.batches.clear();
            self.start = offset;
            self.end = offset;
        } else {
            let keep = self.batches.iter().take_while(|b| b.last < offset).count();
            let first_removed = self.batches.get(keep).map_or(i64::MAX, |b| b.base);
            self.batches.truncate(keep);
            self.end = offset.min(first_removed);
        }
        self.durable = self.durable.min(self.end);
    }
}

#[derive(Clone, Debug)]
enum Op {
    AppendLeader {
        timestamps: Vec<i64>,
        value_size: usize,
        epoch: i32,
    },
    AppendFollower {
        gap: i64,
        timestamps: Vec<i64>,
        value_size: usize,
    },
    Read {
        pick: u16,
        max_bytes: usize,
        bound: Option<u16>,
    },
    FindByTimestamp {
        ts: i64,
    },
    Truncate {
        pick: u16,
    },
    Roll,
    Retention {
        keep_bytes: u16,
    },
    Flush,
    Reopen,
    Crash {
        tear: Option<u16>,
    },
    /// Close cleanly, then delete, cut or scribble over one index file, and reopen.
    DamageIndex {
        pick: u16,
        how: u8,
        noise: u64,
    },
}

/// Operations; without `full`, only those a [`MemoryLog`] can follow (retention becomes a flush
/// and a torn crash a plain one).
fn op(full: bool) -> impl Strategy<Value = Op> {
    any_op().prop_map(move |op| match op {
        Op::Retention { .. } if !full => Op::Flush,
        Op::Crash { .. } if !full => Op::Crash { tear: None },
        op => op,
    })
}

fn any_op() -> impl Strategy<Value = Op> {
    let timestamps = proptest::collection::vec(0i64..1000, 1..5);
    prop_oneof![
        6 => (timestamps.clone(), 0usize..200, 0i32..3)
            .prop_map(|(timestamps, value_size, epoch)| Op::AppendLeader { timestamps, value_size, epoch }),
        2 => (0i64..3, timestamps, 0usize..200)
            .prop_map(|(gap, timestamps, value_size)| Op::AppendFollower { gap, timestamps, value_size }),
        4 => (any::<u16>(), 0usize..2000, proptest::option::of(any::<u16>()))
            .prop_map(|(pick, max_bytes, bound)| Op::Read { pick, max_bytes, bound }),
        1 => (0i64..1100).prop_map(|ts| Op::FindByTimestamp { ts }),
        1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
        1 => Just(Op::Roll),
        1 => any::<u16>().prop_map(|keep_bytes| Op::Retention { keep_bytes: keep_bytes % 4000 }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash { tear: None }),
        1 => any::<u16>().prop_map(|tear| Op::Crash { tear: Some(tear) }),
        1 => (any::<u16>(), 0u8..3, any::<u64>())
            .prop_map(|(pick, how, noise)| Op::DamageIndex { pick, how, noise }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (300u32..3000, 0u32..600, 24u32..240).prop_map(|(segment_bytes, interval, index_size)| {
        LogConfig {
            segment_bytes,
            index_interval_bytes: interval,
            max_index_size: index_size,
            ..LogConfig::default()
        }
    })
}

fn build(base: i64, epoch: i32, timestamps: &[i64], value_size: usize) -> Bytes {
    let mut b = BatchBuilder::new(base).partition_leader_epoch(epoch);
    for (i, ts) in timestamps.iter().enumerate() {
        b.append(
            *ts,
            Some(format!("key-{i}").as_bytes()),
            Some(&vec![i as u8; value_size]),
            &[],
        );
    }
    b.build()
}

/// Picks an offset in `[start, end]`, now and then one just outside.
fn pick_offset(model: &Model, pick: u16) -> i64 {
    let span = (model.end - model.start + 3) as u64;
    model.start - 1 + (u64::from(pick) % span) as i64
}

/// Turns stored bytes back into model batches, to resynchronise after a crash lost a tail.
fn model_batches(bytes: Bytes) -> Vec<ModelBatch> {
    surety_core::record::batches(bytes)
        .map(|b| {
            let b: RecordBatch = b.unwrap();
            let records = b
                .records()
                .unwrap()
                .map(|r| {
                    let r = r.unwrap();
                    (r.offset, r.timestamp)
                })
                .collect();
            ModelBatch {
                base: b.base_offset(),
                last: b.last_offset(),
                bytes: b.as_bytes().clone(),
                records,
            }
        })
        .collect()
}

struct Harness {
    dir: TempDir,
    config: LogConfig,
    disk: Option<SegmentLog>,
    /// Driven beside the disk log when the run has no operations it cannot follow.
    memory: Option<MemoryLog>,
    model: Model,
    now: i64,
}

impl Harness {
    fn disk(&mut self) -> &mut SegmentLog {
        self.disk.as_mut().expect("open")
    }

    fn reopen(&mut self) {
        self.disk = Some(SegmentLog::open(self.dir.path(), self.config.clone(), self.now).unwrap());
    }

    fn append(&mut self, bytes: Bytes, as_leader: bool, epoch: i32) {
        let now = self.now;
        let info = if as_leader {
            self.disk().append_as_leader(bytes.clone(), epoch, now)
        } else {
            self.disk().append_as_follower(bytes.clone(), now)
        }
        .unwrap();
        if let Some(memory) = self.memory.as_mut() {
            let memory_info = if as_leader {
                memory.append_as_leader(bytes, epoch, now)
            } else {
                memory.append_as_follower(bytes, now)
            };
            assert_eq!(memory_info.unwrap(), info);
        }
        let stored = self
            .disk()
            .read(info.first_offset, usize::MAX, None)
            .unwrap();
        let mut added = model_batches(stored);
        assert_eq!(added.len(), 1);
        let added = added.pop().unwrap();
        assert_eq!(
            (added.base, added.last),
            (info.first_offset, info.last_offset)
        );
        self.model.end = info.last_offset + 1;
        self.model.batches.push(added);
    }

    fn check_equal(&mut self) {
        let model = self.model.clone();
        let disk = self.disk();
        assert_eq!(disk.log_start_offset(), model.start, "log start");
        assert_eq!(disk.log_end_offset(), model.end, "log end");
        let all = model.read(model.start, usize::MAX, None);
        assert_eq!(
            disk.read(model.start, usize::MAX, None).unwrap()[..],
            all[..]
        );
        if let Some(memory) = &self.memory {
            assert_eq!(memory.log_start_offset(), model.start);
            assert_eq!(memory.log_end_offset(), model.end);
            assert_eq!(
                memory.read(model.start, usize::MAX, None).unwrap()[..],
                all[..]
            );
        }
    }

    fn apply(&mut self, op: Op) {
        self.now += 1;
        match op {
            Op::AppendLeader {
                timestamps,
                value_size,
                epoch,
            } => {
                self.append(build(0, -1, &timestamps, value_size), true, epoch);
            }
            Op::AppendFollower {
                gap,
                timestamps,
                value_size,
            } => {
                let base = self.model.end + gap;
                self.append(build(base, 7, &timestamps, value_size), false, 7);
            }
            Op::Read {
                pick,
                max_bytes,
                bound,
            } => {
                let offset = pick_offset(&self.model, pick);
                let bound = bound.map(|b| pick_offset(&self.model, b));
                let (start, end) = (self.model.start, self.model.end);
                let expected = self.model.read(offset, max_bytes, bound);
                let mut results = vec![self.disk().read(offset, max_bytes, bound)];
                if let Some(memory) = &self.memory {
                    results.push(memory.read(offset, max_bytes, bound));
                }
                for result in results {
                    if offset < start || offset > end {
                        assert!(matches!(result, Err(LogError::OffsetOutOfRange { .. })));
                    } else {
                        assert_eq!(
                            result.unwrap()[..],
                            expected[..],
                            "read {offset} {max_bytes} {bound:?}"
                        );
                    }
                }
            }
            Op::FindByTimestamp { ts } => {
                let expected = self.model.offset_for_timestamp(ts);
                assert_eq!(self.disk().fetch_offset_by_timestamp(ts).unwrap(), expected);
            }
            Op::Truncate { pick } => {
                let offset = pick_offset(&self.model, pick).max(0);
                self.disk().truncate_to(offset).unwrap();
                if let Some(memory) = self.memory.as_mut() {
                    memory.truncate_to(offset).unwrap();
                }
                self.model.truncate_to(offset);
            }
            Op::Roll => {
                let now = self.now;
                self.disk().roll(now).unwrap();
            }
            Op::Retention { keep_bytes } => {
                let now = self.now;
                let end = self.model.end;
                let config = self.config.clone();
                let disk = self.disk();
                disk.update_config(LogConfig {
                    retention_ms: -1,
                    retention_bytes: i64::from(keep_bytes),
                    ..config.clone()
                });
                disk.delete_old_segments(now, end).unwrap();
                disk.update_config(config);
                let start = disk.log_start_offset();
                assert!(start >= self.model.start && start <= end);
                assert!(
                    self.model
                        .batches
                        .iter()
                        .all(|b| b.last < start || b.base >= start),
                    "retention splits no batch"
                );
                self.model.batches.retain(|b| b.base >= start);
                self.model.start = start;
                self.model.durable = self.model.durable.max(start);
            }
            Op::Flush => {
                let now = self.now;
                self.disk().flush(now).unwrap();
                self.model.durable = self.model.end;
            }
            Op::Reopen => {
                let now = self.now;
                self.disk().close(now).unwrap();
                self.reopen();
                assert!(self.disk().recovery_report().clean_shutdown);
            }
            Op::DamageIndex { pick, how, noise } => {
                let now = self.now;
                self.disk().close(now).unwrap();
                let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "index" || e == "timeindex")
                    })
                    .collect();
                files.sort();
                let victim = &files[usize::from(pick) % files.len()];
                let len = std::fs::metadata(victim).unwrap().len();
                match how {
                    0 => std::fs::remove_file(victim).unwrap(),
                    1 => {
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(victim)
                            .unwrap();
                        file.set_len(noise % (len + 1)).unwrap();
                    }
                    _ => {
                        let scribble: Vec<u8> = (0..len.max(16))
                            .map(|i| (noise.rotate_left(i as u32 % 64) ^ i) as u8)
                            .collect();
                        std::fs::write(victim, scribble).unwrap();
                    }
                }
                self.reopen();
            }
            Op::Crash { tear } => {
                let last_base = *self.disk().segment_base_offsets().last().unwrap();
                self.disk = None; // dropped without close: a crash
                if let Some(tear) = tear {
                    // Tear off part of what the last segment holds past the flushed point.
                    let from = self.model.durable.max(last_base);
                    let tearable: usize = self
                        .model
                        .batches
                        .iter()
                        .filter(|b| b.base >= from)
                        .map(|b| b.bytes.len())
                        .sum();
                    let cut = usize::from(tear) % (tearable + 1);
                    let path = self.dir.path().join(format!("{last_base:020}.log"));
                    let len = std::fs::metadata(&path).unwrap().len();
                    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    file.set_len(len - cut as u64).unwrap();
                }
                self.reopen();
                let disk = self.disk.as_ref().unwrap();
                assert!(!disk.recovery_report().clean_shutdown);
                let survived = disk
                    .read(disk.log_start_offset(), usize::MAX, None)
                    .unwrap();
                let survived_batches = model_batches(survived);
                let n = survived_batches.len();
                assert!(n <= self.model.batches.len());
                for (got, want) in survived_batches.iter().zip(&self.model.batches) {
                    assert_eq!(got.bytes, want.bytes, "the survivors are a prefix");
                }
                let end = disk.log_end_offset();
                assert!(
                    end >= self.model.durable,
                    "flushed data survives: {end} < {}",
                    self.model.durable
                );
                if tear.is_none() {
                    assert_eq!(
                        n,
                        self.model.batches.len(),
                        "nothing is lost without a tear"
                    );
                    assert_eq!(end, self.model.end);
                }
                self.model.batches.truncate(n);
                self.model.end = end;
            }
        }
        self.check_equal();
    }
}

fn run(config: LogConfig, ops: Vec<Op>, with_memory: bool) {
    let dir = TempDir::new().unwrap();
    let disk = SegmentLog::open(dir.path(), config.clone(), 0).unwrap();
    let mut h = Harness {
        dir,
        memory: with_memory.then(|| MemoryLog::new(config.clone())),
        config,
        disk: Some(disk),
        model: Model::default(),
        now: 0,
    };
    for op in ops {
        h.apply(op);
    }
}

/// 96 cases by default; set `PROPTEST_CASES` for a deeper run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn segment_log_matches_the_model(config in config(), ops in proptest::collection::vec(op(true), 1..60)) {
        run(config, ops, false);
    }

    #[test]
    fn memory_log_and_segment_log_agree(config in config(), ops in proptest::collection::vec(op(false), 1..60)) {
        run(config, ops, true);
    }
}
