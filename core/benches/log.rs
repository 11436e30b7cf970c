//! Storage benchmarks, each beside a plain-file baseline measured in the same run:
//!
//! - `append/segment_log` vs `append/plain_write`: 16 KiB batches appended to a [`SegmentLog`]
//!   against `write_all` of the same bytes to a file (target: the log at 0.8× or better);
//! - `read/segment_log` vs `read/plain_pread`: sequential 1 MiB fetches through the log against
//!   positional reads of the same file;
//! - `lookup/random_offset`: one-record reads at random offsets of a 1 GiB log of small batches,
//!   an index search plus at most one index interval of log each.
//!
//! Neither side fsyncs (the log's default flush policy leaves that to the OS, as Kafka's does).
//! After the run the ratios of criterion's estimates are printed.
//! `cargo bench -p surety-core --bench log`.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{criterion_dir, estimate};
use criterion::{BatchSize, Criterion, Throughput};
use surety_core::log::{LogConfig, PartitionLog, SegmentLog};
use surety_core::record::BatchBuilder;
use tempfile::TempDir;

const BATCH_BYTES: usize = 16 * 1024;

/// A producer batch of about `size` bytes: records of 100-byte values, as a perf test sends.
fn batch_of(size: usize) -> Bytes {
    let mut b = BatchBuilder::new(0);
    let value = [b'x'; 100];
    let mut i = 0;
    while b.size_in_bytes() + 110 < size {
        b.append(1_700_000_000_000 + i, None, Some(&value), &[]);
        i += 1;
    }
    b.build()
}

fn append(c: &mut Criterion) {
    let template = batch_of(BATCH_BYTES).to_vec();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(template.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));

    group.bench_function("plain_write", |b| {
        b.iter_custom(|iters| {
            let dir = TempDir::new().unwrap();
            let mut file = File::create(dir.path().join("plain")).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&template).unwrap();
            }
            start.elapsed()
        })
    });

    group.bench_function("segment_log", |b| {
        b.iter_custom(|iters| {
            let dir = TempDir::new().unwrap();
            let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                // A fresh buffer per append, as each produce request brings its own; making it
                // is not timed.
                let batch = Bytes::from(template.clone());
                let start = Instant::now();
                log.append_as_leader(batch, 0, 0).unwrap();
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    const LOG_BYTES: usize = 256 * 1024 * 1024;
    const FETCH_BYTES: usize = 1024 * 1024;
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let template = batch_of(BATCH_BYTES);
    while (log.size_in_bytes() as usize) < LOG_BYTES {
        log.append_as_leader(Bytes::from(template.to_vec()), 0, 0)
            .unwrap();
    }
    let end = log.log_end_offset();
    let segment = File::open(dir.path().join("00000000000000000000.log")).unwrap();
    let size = log.size_in_bytes();
    let records_per_batch = i64::from(
        surety_core::record::BatchHeader::parse(&template)
            .unwrap()
            .record_count,
    );

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(FETCH_BYTES as u64));
    group.sample_size(20);
    group.bench_function("plain_pread", |b| {
        let mut pos = 0u64;
        let mut buf = vec![0u8; FETCH_BYTES];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                if pos + FETCH_BYTES as u64 > size {
                    pos = 0;
                }
                segment.read_exact_at(&mut buf, pos).unwrap();
                pos += FETCH_BYTES as u64;
            }
            start.elapsed()
        })
    });
    group.bench_function("segment_log", |b| {
        let mut offset = 0;
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let got = log.read(offset, FETCH_BYTES, None).unwrap();
                // Every batch is the template, so the bytes read tell how far to move.
                offset += (got.len() / template.len()) as i64 * records_per_batch;
                if offset >= end {
                    offset = 0;
                }
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    const LOG_BYTES: u64 = 1024 * 1024 * 1024;
    let dir = TempDir::new().unwrap();
    let mut log = SegmentLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    // Small batches (about 1 KiB, 9 records) so that an index interval spans several of them.
    let template = batch_of(1024);
    while log.size_in_bytes() < LOG_BYTES {
        log.append_as_leader(Bytes::from(template.to_vec()), 0, 0)
            .unwrap();
    }
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("lookup");
    group.sample_size(30);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    group.bench_function("random_offset", |b| {
        b.iter_batched(
            || {
                // xorshift: a cheap, reproducible spread of offsets.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % end as u64) as i64
            },
            |offset| log.read(offset, 1, None).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn print_ratios() {
    let ratio = |ours: &str, base: &str| Some(estimate(base)? / estimate(ours)?);
    println!();
    if let Some(r) = ratio("append/segment_log", "append/plain_write") {
        println!("append: segment log throughput = {r:.2}x plain write (target >= 0.80x)");
    }
    if let Some(r) = ratio("read/segment_log", "read/plain_pread") {
        println!("read:   segment log throughput = {r:.2}x plain pread");
    }
    if let Some(t) = estimate("lookup/random_offset") {
        println!("lookup: {:.2} us per random offset in a 1 GiB log", t * 1e6);
    }
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    append(&mut c);
    read(&mut c);
    lookup(&mut c);
    c.final_summary();
    print_ratios();
}
