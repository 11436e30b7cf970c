//! Accumulator tests: behaviour by example, random interleavings of appends, drains,
//! completions, retries and expiries against a plain model (proptest), and appends racing a
//! drain under loom.

use super::*;

fn config(batch_size: usize) -> AccumulatorConfig {
    AccumulatorConfig {
        batch_size,
        linger_ms: 10,
        delivery_timeout_ms: 1_000,
        retry_backoff_ms: 50,
        max_block: std::time::Duration::from_secs(5),
        compression: crate::record::Compression::None,
    }
}

fn appended(outcome: AppendOutcome) -> (RecordFuture, bool) {
    match outcome {
        AppendOutcome::Appended {
            future, new_batch, ..
        } => (future, new_batch),
        AppendOutcome::Aborted => panic!("unexpected abort"),
    }
}

#[cfg(not(loom))]
mod examples {
    use super::*;

    fn value(i: usize) -> Vec<u8> {
        format!("record-{i:04}").into_bytes()
    }

    #[test]
    fn records_fill_a_batch_then_start_another_and_complete_with_their_offsets() {
        let pool = BufferPool::new(1 << 20, 200);
        let acc = RecordAccumulator::new(config(200), pool.clone());
        let tp = TopicPartition::new("t", 0);
        let mut futures = Vec::new();
        let mut new_batches = 0;
        for i in 0..20 {
            let (f, new) = appended(
                acc.append(&tp, 1000, None, Some(&value(i)), &[], 0, false)
                    .unwrap(),
            );
            new_batches += usize::from(new);
            futures.push(f);
        }
        assert!(
            new_batches > 1,
            "200-byte batches hold a few 11-byte records each"
        );
        // Not full and not lingered: only the full batches make the leader ready.
        let ready = acc.ready(0, |_| Some(1));
        assert_eq!(ready.ready_nodes, [1]);
        let mut next_offset = 0;
        let mut rounds = 0;
        while acc.has_undrained() {
            rounds += 1;
            let drained = acc.drain(1, std::slice::from_ref(&tp), 1 << 20, 100);
            assert_eq!(drained.len(), 1, "one batch per partition per request");
            for mut batch in drained {
                let bytes = batch.records(None);
                let count = batch.record_count() as i64;
                assert!(!bytes.is_empty());
                drop(bytes); // as a sent request is
                acc.finish(batch, Ok((next_offset, -1)));
                next_offset += count;
            }
        }
        assert_eq!(rounds, new_batches);
        for (i, f) in futures.iter().enumerate() {
            assert_eq!(f.try_result().unwrap().unwrap().offset, i as i64);
        }
        assert_eq!(
            pool.available_memory(),
            1 << 20,
            "every batch's memory came back"
        );
        assert_eq!(
            pool.unallocated_memory(),
            (1 << 20) - new_batches * 200,
            "as buffers to use again"
        );
    }

    #[test]
    fn a_batch_becomes_ready_after_linger_ms_and_retries_wait_for_the_backoff() {
        let acc = RecordAccumulator::new(config(16 * 1024), BufferPool::new(1 << 20, 16 * 1024));
        let tp = TopicPartition::new("t", 0);
        appended(
            acc.append(&tp, 0, None, Some(b"x"), &[], 100, false)
                .unwrap(),
        );
        let early = acc.ready(105, |_| Some(3));
        assert!(early.ready_nodes.is_empty());
        assert_eq!(early.next_check_delay_ms, 5);
        assert_eq!(acc.ready(110, |_| Some(3)).ready_nodes, [3]);
        let batch = acc
            .drain(3, std::slice::from_ref(&tp), 1 << 20, 110)
            .pop()
            .unwrap();
        acc.reenqueue(batch, 120);
        assert!(
            acc.ready(150, |_| Some(3)).ready_nodes.is_empty(),
            "backing off"
        );
        assert!(
            acc.drain(3, std::slice::from_ref(&tp), 1 << 20, 150)
                .is_empty()
        );
        assert_eq!(acc.ready(170, |_| Some(3)).ready_nodes, [3]);
    }

    #[test]
    fn a_batch_that_refuses_a_record_is_ready_without_lingering() {
        let acc = RecordAccumulator::new(config(300), BufferPool::new(1 << 20, 300));
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let value = [7u8; 150];
        appended(
            acc.append(&a, 0, None, Some(&value), &[], 0, false)
                .unwrap(),
        );
        // Keyless records, as the sticky partitioner sends them: the next one does not fit
        // (though nearly half the batch is free), aborts, and goes to another partition.
        assert!(matches!(
            acc.append(&a, 0, None, Some(&value), &[], 0, true).unwrap(),
            AppendOutcome::Aborted
        ));
        appended(
            acc.append(&b, 0, None, Some(&value), &[], 0, false)
                .unwrap(),
        );
        let ready = acc.ready(0, |tp| Some(tp.partition));
        assert_eq!(
            ready.ready_nodes,
            [0],
            "partition 0's batch goes now, 1's lingers"
        );
        // Closed for good: a smaller record that would fit does not reopen it.
        assert!(matches!(
            acc.append(&a, 0, None, Some(b"x"), &[], 0, true).unwrap(),
            AppendOutcome::Aborted
        ));
    }

    #[test]
    fn unknown_leaders_are_reported_and_flush_makes_everything_ready() {
        let acc = RecordAccumulator::new(config(16 * 1024), BufferPool::new(1 << 20, 16 * 1024));
        let a = TopicPartition::new("a", 0);
        let b = TopicPartition::new("b", 0);
        appended(acc.append(&a, 0, None, Some(b"x"), &[], 0, false).unwrap());
        appended(acc.append(&b, 0, None, Some(b"y"), &[], 0, false).unwrap());
        let check = acc.ready(0, |tp| (&*tp.topic == "a").then_some(1));
        assert!(check.ready_nodes.is_empty());
        assert_eq!(check.unknown_leader_topics.len(), 1);
        acc.begin_flush();
        assert_eq!(acc.ready(0, |_| Some(1)).ready_nodes, [1]);
    }

    #[test]
    fn drains_rotate_across_partitions_so_none_starves() {
        let acc = RecordAccumulator::new(config(16 * 1024), BufferPool::new(1 << 20, 16 * 1024));
        let partitions: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
        for _ in 0..3 {
            for tp in &partitions {
                appended(
                    acc.append(tp, 0, None, Some(&[0; 10_000]), &[], 0, false)
                        .unwrap(),
                );
            }
        }
        // Room for one 10 KB batch per request: each drain starts one partition further on.
        let firsts: Vec<i32> = (0..3)
            .map(|_| {
                acc.drain(1, &partitions, 12_000, 0)[0]
                    .topic_partition
                    .partition
            })
            .collect();
        assert_eq!(firsts, [0, 1, 2]);
    }

    #[test]
    fn batches_past_delivery_timeout_expire_and_abort_on_new_batch_defers_the_choice() {
        let pool = BufferPool::new(1 << 20, 16 * 1024);
        let acc = RecordAccumulator::new(config(16 * 1024), pool.clone());
        let tp = TopicPartition::new("t", 0);
        assert!(matches!(
            acc.append(&tp, 0, None, Some(b"x"), &[], 0, true).unwrap(),
            AppendOutcome::Aborted
        ));
        let (f, new) = appended(acc.append(&tp, 0, None, Some(b"x"), &[], 0, false).unwrap());
        assert!(new);
        assert!(acc.expired_batches(999).is_empty());
        for batch in acc.expired_batches(1_000) {
            let age_ms = batch.age_ms(1_000);
            acc.finish(batch, Err(DeliveryError::Expired { age_ms }));
        }
        assert_eq!(
            f.try_result(),
            Some(Err(DeliveryError::Expired { age_ms: 1_000 }))
        );
        assert_eq!(pool.available_memory(), 1 << 20);
    }
}

#[cfg(not(loom))]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    #[derive(Clone, Debug)]
    enum Op {
        Append { partition: i32, size: usize },
        Drain { max_request: usize },
        Ack { index: usize },
        Retry { index: usize },
        Expire { advance: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3i32, 1..300usize).prop_map(|(partition, size)| Op::Append { partition, size }),
            2 => (100..2_000usize).prop_map(|max_request| Op::Drain { max_request }),
            2 => any::<usize>().prop_map(|index| Op::Ack { index }),
            1 => any::<usize>().prop_map(|index| Op::Retry { index }),
            1 => (0..600i64).prop_map(|advance| Op::Expire { advance }),
        ]
    }

    proptest! {
        /// Every record is completed at most once and, when acknowledged, at an offset that
        /// keeps its partition's append order; the pool's bytes always add up.
        #[test]
        fn appends_drains_acks_retries_and_expiries_lose_duplicate_and_reorder_nothing(
            ops in proptest::collection::vec(op(), 1..120)
        ) {
            let budget = 64 * 1024;
            let pool = BufferPool::new(budget, 512);
            let acc = RecordAccumulator::new(config(512), pool.clone());
            let partitions: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
            let mut now = 0i64;
            // Per partition: the futures in append order (the model), and the next offset.
            let mut appended: BTreeMap<i32, VecDeque<RecordFuture>> = BTreeMap::new();
            let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
            let mut in_flight: Vec<ProducerBatch> = Vec::new();
            let mut appends = 0usize;
            let mut finished = 0usize;
            for op in ops {
                match op {
                    Op::Append { partition, size } => {
                        let tp = &partitions[partition as usize];
                        let (f, _) = appended_(acc.append(tp, now, None, Some(&vec![7; size]), &[], now, false).unwrap());
                        appended.entry(partition).or_default().push_back(f);
                        appends += 1;
                    }
                    Op::Drain { max_request } => {
                        for mut batch in acc.drain(1, &partitions, max_request, now) {
                            batch.records(None);
                            in_flight.push(batch);
                        }
                    }
                    Op::Ack { index } if !in_flight.is_empty() => {
                        // The broker acknowledges a partition's batches in the order sent.
                        let at = index % in_flight.len();
                        let p = in_flight[at].topic_partition.partition;
                        let at = in_flight.iter().position(|b| b.topic_partition.partition == p).unwrap();
                        let batch = in_flight.remove(at);
                        let base = *next_offset.entry(p).or_default();
                        *next_offset.get_mut(&p).unwrap() += batch.record_count() as i64;
                        finished += batch.record_count();
                        acc.finish(batch, Ok((base, -1)));
                    }
                    Op::Retry { index } if !in_flight.is_empty() => {
                        // A batch goes back for a retry only when it is its partition's one
                        // batch in flight (max.in.flight=1 per partition, as ordering needs).
                        let at = index % in_flight.len();
                        let p = in_flight[at].topic_partition.partition;
                        if in_flight.iter().filter(|b| b.topic_partition.partition == p).count() == 1 {
                            acc.reenqueue(in_flight.remove(at), now);
                        }
                    }
                    Op::Expire { advance } => {
                        now += advance;
                        for batch in acc.expired_batches(now) {
                            let age_ms = batch.age_ms(now);
                            finished += batch.record_count();
                            acc.finish(batch, Err(DeliveryError::Expired { age_ms }));
                        }
                    }
                    _ => {}
                }
            }
            // Whatever is still out fails, then every record is checked.
            while let Some(batch) = in_flight.pop() {
                finished += batch.record_count();
                acc.finish(batch, Err(DeliveryError::Closed));
            }
            while acc.has_undrained() {
                for batch in acc.drain(1, &partitions, usize::MAX, now + 1_000_000) {
                    finished += batch.record_count();
                    acc.finish(batch, Err(DeliveryError::Closed));
                }
            }
            prop_assert_eq!(finished, appends, "every record in exactly one batch");
            prop_assert_eq!(pool.available_memory(), budget);
            prop_assert_eq!(pool.accounted(), budget);
            for futures in appended.values() {
                let mut last = -1i64;
                for f in futures {
                    let result = f.try_result();
                    prop_assert!(result.is_some(), "every record's fate is known");
                    if let Some(Ok(meta)) = result {
                        prop_assert!(meta.offset > last, "acknowledged records keep append order");
                        last = meta.offset;
                    }
                }
            }
        }
    }

    fn appended_(outcome: AppendOutcome) -> (RecordFuture, bool) {
        appended(outcome)
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// Two threads append to one partition while a third drains: every record ends up in
    /// exactly one drained batch, and each thread's records keep their order. Interleavings
    /// with up to five preemptions are explored (about 200,000 executions in seconds; every
    /// lock is a scheduling point, and the unbounded search of three threads ran past ten
    /// minutes). Bounding preemptions is loom's own advice: known concurrency bugs need few.
    #[test]
    fn loom_appends_racing_a_drain_lose_duplicate_and_reorder_nothing() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(5);
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        builder.check(|| {
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let acc = crate::sync::Arc::new(RecordAccumulator::new(
                config(100),
                BufferPool::new(1_000, 100),
            ));
            let tp = TopicPartition::new("t", 0);
            let writers: Vec<_> = (0..2u8)
                .map(|w| {
                    let (acc, tp) = (acc.clone(), tp.clone());
                    thread::spawn(move || {
                        for i in 0..2u8 {
                            appended(
                                acc.append(&tp, 0, Some(&[w]), Some(&[i; 30]), &[], 0, false)
                                    .unwrap(),
                            );
                        }
                    })
                })
                .collect();
            let mut drained = acc.drain(1, std::slice::from_ref(&tp), 10_000, 0);
            for w in writers {
                w.join().unwrap();
            }
            while acc.has_undrained() {
                drained.extend(acc.drain(1, std::slice::from_ref(&tp), 10_000, 0));
            }
            let mut seen: Vec<(u8, u8)> = Vec::new();
            for mut batch in drained {
                let bytes = batch.records(None);
                for b in crate::record::batches(bytes) {
                    for r in b.unwrap().records().unwrap() {
                        let r = r.unwrap();
                        seen.push((r.key.unwrap()[0], r.value.unwrap()[0]));
                    }
                }
            }
            assert_eq!(seen.len(), 4, "no record lost or duplicated");
            for w in 0..2u8 {
                let order: Vec<u8> = seen
                    .iter()
                    .filter(|(k, _)| *k == w)
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(order, [0, 1], "writer {w}'s records in order");
            }
        });
        eprintln!(
            "explored {} executions",
            RUNS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
