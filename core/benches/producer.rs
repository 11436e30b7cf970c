//! Producer benchmarks, each beside a naive baseline measured in the same run:
//!
//! - `pool/buffer_pool` vs `pool/mutex_vecdeque`: allocate-and-free pairs of 16 KiB buffers
//!   through the [`BufferPool`] against a `Mutex<VecDeque<Vec<u8>>>` free list;
//! - `append/accumulator_{1,2}_threads` vs `append/mutex_vecdeque_{1,2}_threads`: 100-byte
//!   records appended to one partition by one or two threads, through the
//!   [`RecordAccumulator`] (building Kafka batches) against pushing each record's bytes onto a
//!   `Mutex<VecDeque<Vec<u8>>>`.
//!
//! After the run the ratios of criterion's estimates are printed.
//! `cargo bench -p surety-core --bench producer`.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{criterion_dir, estimate};
use criterion::{Criterion, Throughput};
use surety_core::producer::{AccumulatorConfig, BufferPool, RecordAccumulator, TopicPartition};

const BUFFER: usize = 16 * 1024;
const RECORDS: usize = 10_000;

fn pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let pool = BufferPool::new(32 << 20, BUFFER);
    group.bench_function("buffer_pool", |b| {
        b.iter(|| {
            let buffer = pool.allocate(BUFFER, Duration::from_secs(1)).unwrap();
            pool.deallocate(std::hint::black_box(buffer), BUFFER);
        })
    });
    let naive: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());
    group.bench_function("mutex_vecdeque", |b| {
        b.iter(|| {
            let buffer = naive
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Vec::with_capacity(BUFFER));
            naive
                .lock()
                .unwrap()
                .push_back(std::hint::black_box(buffer));
        })
    });
    group.finish();
}

/// Appends `RECORDS` records split over `threads` threads, then drains everything (untimed
/// for the drain's share is negligible) so memory returns to the pool.
fn accumulator_run(threads: usize) -> Duration {
    let acc = Arc::new(RecordAccumulator::new(
        AccumulatorConfig::default(),
        BufferPool::new(32 << 20, BUFFER),
    ));
    let tp = TopicPartition::new("bench", 0);
    let value = [b'x'; 100];
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (acc, tp) = (acc.clone(), tp.clone());
            thread::spawn(move || {
                for _ in 0..RECORDS / threads {
                    let _ = acc
                        .append(&tp, 0, None, Some(&value), &[], 0, false)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    while acc.has_undrained() {
        for batch in acc.drain(1, std::slice::from_ref(&tp), usize::MAX, 0) {
            acc.finish(batch, Ok((0, -1)));
        }
    }
    elapsed
}

fn naive_run(threads: usize) -> Duration {
    let queue: Arc<Mutex<VecDeque<Vec<u8>>>> = Arc::new(Mutex::new(VecDeque::new()));
    let value = [b'x'; 100];
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let queue = queue.clone();
            thread::spawn(move || {
                for _ in 0..RECORDS / threads {
                    queue.lock().unwrap().push_back(value.to_vec());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for threads in [1, 2] {
        group.bench_function(format!("accumulator_{threads}_threads"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| accumulator_run(threads)).sum())
        });
        group.bench_function(format!("mutex_vecdeque_{threads}_threads"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| naive_run(threads)).sum())
        });
    }
    group.finish();
}

fn print_ratios() {
    println!();
    if let (Some(ours), Some(base)) = (
        estimate("pool/buffer_pool"),
        estimate("pool/mutex_vecdeque"),
    ) {
        println!(
            "pool:   {:.1} M allocate/free pairs/s, {:.2}x the Mutex<VecDeque> free list",
            1e-6 / ours,
            base / ours
        );
    }
    for threads in [1, 2] {
        let ours = estimate(&format!("append/accumulator_{threads}_threads"));
        let base = estimate(&format!("append/mutex_vecdeque_{threads}_threads"));
        if let (Some(ours), Some(base)) = (ours, base) {
            println!(
                "append: {threads} thread(s): {:.2} M records/s, {:.2}x the Mutex<VecDeque> of record copies",
                RECORDS as f64 / ours / 1e6,
                base / ours
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    pool(&mut c);
    append(&mut c);
    c.final_summary();
    print_ratios();
}
