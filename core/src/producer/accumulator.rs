//! Kafka's `RecordAccumulator`: records from any number of threads are appended to per-partition
//! deques of batches built in memory from the [`BufferPool`]; the sender asks which leaders have
//! something worth sending ([`RecordAccumulator::ready`]) and takes at most one batch per
//! partition per request ([`RecordAccumulator::drain`]), rotating the starting partition so
//! none starves.
//!
//! A batch is sendable when it is full (or another batch follows it), when it has waited
//! `linger.ms`, when the pool has callers waiting for memory, or when a flush or close is under
//! way; a batch being retried waits `retry.backoff.ms` first. A batch still in its deque after
//! `delivery.timeout.ms` is failed ([`RecordAccumulator::expired_batches`]).
//!
//! Each append returns a [`RecordFuture`] that completes once the batch's fate is known: with
//! the record's offset, or with the batch's error. The accumulator decides nothing about the
//! network; the sender drives it with the current time.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::buffer_pool::{AllocateError, BufferPool};
use crate::record::{Attributes, BatchBuilder, Compression};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A topic and partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: std::sync::Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`-`partition`.
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: std::sync::Arc::from(topic),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The producer settings the accumulator applies, under their Kafka names.
#[derive(Clone, Debug)]
pub struct AccumulatorConfig {
    /// `batch.size`: bytes per batch (a larger record gets a batch of its own size).
    pub batch_size: usize,
    /// `linger.ms`: how long a batch that is not full waits for more records.
    pub linger_ms: i64,
    /// `delivery.timeout.ms`: how long a record may take from append to acknowledgement.
    pub delivery_timeout_ms: i64,
    /// `retry.backoff.ms`: how long a batch being retried waits before it is sendable again.
    pub retry_backoff_ms: i64,
    /// `max.block.ms`: how long an append may wait for memory.
    pub max_block: Duration,
    /// `compression.type`: batches are built uncompressed up to `batch.size` and their
    /// records compressed when the batch closes.
    pub compression: Compression,
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        AccumulatorConfig {
            batch_size: 16 * 1024,
            linger_ms: 5,
            delivery_timeout_ms: 120_000,
            retry_backoff_ms: 100,
            max_block: Duration::from_secs(60),
            compression: Compression::None,
        }
    }
}

/// Where a record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Its partition.
    pub topic_partition: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (the broker's, if the topic uses `LogAppendTime`).
    pub timestamp: i64,
}

/// Why a record was not delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryError {
    /// No memory within `max.block.ms`, or a record larger than `buffer.memory`.
    Allocate(AllocateError),
    /// `delivery.timeout.ms` passed before the record was acknowledged.
    Expired {
        /// How long the batch had existed.
        age_ms: i64,
    },
    /// The broker refused the batch with this Kafka error code.
    Broker(i16),
    /// The producer was closed before the record was sent.
    Closed,
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Allocate(e) => write!(f, "{e}"),
            DeliveryError::Expired { age_ms } => write!(
                f,
                "expired after {age_ms} ms: delivery.timeout.ms passed before acknowledgement"
            ),
            DeliveryError::Broker(code) => write!(f, "the broker refused the batch (error {code})"),
            DeliveryError::Closed => write!(f, "the producer was closed"),
        }
    }
}

impl std::error::Error for DeliveryError {}

type Delivery = Result<RecordMetadata, DeliveryError>;

type Callback = Box<dyn FnOnce(Delivery) + Send>;

/// A batch's fate: `(base offset, log append time)` or why it failed.
type BatchResult = Result<(i64, i64), DeliveryError>;

/// One completion slot per batch, shared by its records' futures: appending a record costs a
/// reference count, not an allocation.
struct BatchSlot {
    topic_partition: TopicPartition,
    state: Mutex<BatchSlotState>,
}

#[derive(Default)]
struct BatchSlotState {
    result: Option<BatchResult>,
    wakers: Vec<Waker>,
    /// Each with its record's offset delta and timestamp.
    callbacks: Vec<(i32, i64, Callback)>,
}

impl BatchSlot {
    fn delivery(&self, result: &BatchResult, delta: i32, timestamp: i64) -> Delivery {
        match result {
            Ok((base_offset, log_append_time)) => Ok(RecordMetadata {
                topic_partition: self.topic_partition.clone(),
                offset: base_offset + i64::from(delta),
                timestamp: if *log_append_time >= 0 {
                    *log_append_time
                } else {
                    timestamp
                },
            }),
            Err(e) => Err(e.clone()),
        }
    }

    /// Sets the result once (later calls are ignored), then wakes the awaiting tasks and runs
    /// the callbacks outside the lock.
    fn complete(&self, result: BatchResult) {
        let (wakers, callbacks) = {
            let mut s = lock(&self.state);
            if s.result.is_some() {
                return;
            }
            s.result = Some(result.clone());
            (
                std::mem::take(&mut s.wakers),
                std::mem::take(&mut s.callbacks),
            )
        };
        for w in wakers {
            w.wake();
        }
        for (delta, timestamp, callback) in callbacks {
            callback(self.delivery(&result, delta, timestamp));
        }
    }
}

/// Completed by the accumulator's owner when the record's batch is acknowledged or fails.
pub struct RecordFuture {
    slot: Arc<BatchSlot>,
    delta: i32,
    timestamp: i64,
}

impl RecordFuture {
    /// The outcome, if known yet (for callers that poll instead of awaiting).
    pub fn try_result(&self) -> Option<Delivery> {
        let state = lock(&self.slot.state);
        let result = state.result.as_ref()?;
        Some(self.slot.delivery(result, self.delta, self.timestamp))
    }

    /// Runs `callback` with the outcome when it is known (at once if it already is), on the
    /// thread that completes the batch: Kafka's `send(record, callback)`, without a task per
    /// record.
    pub fn on_complete(self, callback: impl FnOnce(Delivery) + Send + 'static) {
        let mut state = lock(&self.slot.state);
        match &state.result {
            Some(result) => {
                let delivery = self.slot.delivery(result, self.delta, self.timestamp);
                drop(state);
                callback(delivery);
            }
            None => state
                .callbacks
                .push((self.delta, self.timestamp, Box::new(callback))),
        }
    }
}

impl Future for RecordFuture {
    type Output = Delivery;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
        let mut state = lock(&self.slot.state);
        match &state.result {
            Some(result) => Poll::Ready(self.slot.delivery(result, self.delta, self.timestamp)),
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One batch of records for one partition.
pub struct ProducerBatch {
    /// Its partition.
    pub topic_partition: TopicPartition,
    builder: Option<BatchBuilder>,
    built: Option<Bytes>,
    /// Bytes drawn from the pool for it.
    buffer_size: usize,
    capacity: usize,
    /// A record did not fit: the batch takes no more and is ready to go (Kafka's
    /// `closeForRecordAppends`). Without it a batch a few bytes short of `batch.size` would
    /// wait out `linger.ms` while keyless records move on to another partition.
    closed_for_appends: bool,
    created_ms: i64,
    last_attempt_ms: i64,
    /// Times it has been sent.
    pub attempts: u32,
    record_count: usize,
    slot: Arc<BatchSlot>,
}

impl ProducerBatch {
    fn new(
        topic_partition: TopicPartition,
        buffer: Vec<u8>,
        size: usize,
        compression: Compression,
        now_ms: i64,
    ) -> Self {
        let attributes = Attributes {
            compression,
            ..Attributes::default()
        };
        ProducerBatch {
            topic_partition: topic_partition.clone(),
            builder: Some(BatchBuilder::with_buffer(0, buffer).attributes(attributes)),
            built: None,
            buffer_size: size,
            capacity: size,
            closed_for_appends: false,
            created_ms: now_ms,
            last_attempt_ms: now_ms,
            attempts: 0,
            record_count: 0,
            slot: Arc::new(BatchSlot {
                topic_partition,
                state: Mutex::new(BatchSlotState::default()),
            }),
        }
    }

    fn try_append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Option<RecordFuture> {
        if self.closed_for_appends {
            return None;
        }
        let builder = self.builder.as_mut()?;
        let needed = BatchBuilder::record_size_upper_bound(key, value, headers);
        if builder.record_count() > 0 && builder.size_in_bytes() + needed > self.capacity {
            self.closed_for_appends = true;
            return None;
        }
        let delta = builder.append(timestamp, key, value, headers);
        self.record_count += 1;
        Some(RecordFuture {
            slot: self.slot.clone(),
            delta,
            timestamp,
        })
    }

    fn is_full(&self) -> bool {
        self.closed_for_appends
            || self
                .builder
                .as_ref()
                .is_none_or(|b| b.size_in_bytes() + 64 >= self.capacity)
    }

    /// Records in the batch.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Bytes the batch occupies on the wire.
    pub fn size_in_bytes(&self) -> usize {
        match (&self.built, &self.builder) {
            (Some(b), _) => b.len(),
            (None, Some(b)) => b.size_in_bytes(),
            (None, None) => 0,
        }
    }

    /// Closes the batch to appends and returns its bytes, stamping the idempotent producer's
    /// id, epoch and first sequence on the first call (Kafka assigns sequences at drain time).
    pub fn records(&mut self, producer: Option<(i64, i16, i32)>) -> Bytes {
        if let Some(builder) = self.builder.take() {
            let builder = match producer {
                Some((id, epoch, sequence)) => builder.producer(id, epoch, sequence),
                None => builder,
            };
            self.built = Some(builder.build());
        }
        self.built.clone().expect("built above")
    }

    /// Completes every record: with its offset when the broker accepted the batch at
    /// `base_offset`, or with `error`.
    pub fn complete(&self, result: Result<(i64, i64), DeliveryError>) {
        self.slot.complete(result);
    }

    /// The batch's memory, for the pool to hand out again (as Kafka's `BufferPool` reuses
    /// `batch.size` buffers): fresh allocations of that size cost page faults and zeroing at
    /// every batch. Empty when its bytes are still shared (a request still holding them).
    fn into_buffer(self) -> Vec<u8> {
        // A batch never drained (expired, or aborted) gives nothing back: rare, and the pool
        // counts its memory either way.
        self.built
            .and_then(|bytes| bytes.try_into_mut().ok())
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// How long ago the batch was created.
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.created_ms
    }
}

type Deque = Arc<Mutex<VecDeque<ProducerBatch>>>;

/// What [`RecordAccumulator::ready`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadyCheck {
    /// Leaders with at least one sendable batch.
    pub ready_nodes: Vec<i32>,
    /// When to check again if nothing changes (the nearest linger or backoff expiry).
    pub next_check_delay_ms: i64,
    /// Topics with batches but no known leader: refresh their metadata.
    pub unknown_leader_topics: Vec<std::sync::Arc<str>>,
}

/// What an append did.
pub enum AppendOutcome {
    /// The record is in a batch; the future completes with its fate.
    Appended {
        /// The record's future.
        future: RecordFuture,
        /// Whether a new batch was started for it (a sticky partitioner moves on then).
        new_batch: bool,
        /// Whether its partition now has a batch ready to send for being full: the sender
        /// need only be woken then, or for a new batch (Kafka's rule), not for every record.
        batch_full: bool,
    },
    /// `abort_on_new_batch` was set and the record would have needed a new batch: the caller
    /// may choose another partition first (KIP-480) and append again.
    Aborted,
}

/// The producer's per-partition batches.
pub struct RecordAccumulator {
    config: AccumulatorConfig,
    pool: BufferPool,
    /// Read on every append, written once per new partition.
    deques: RwLock<BTreeMap<TopicPartition, Deque>>,
    /// Where each leader's next drain starts in its partition list.
    drain_index: Mutex<BTreeMap<i32, usize>>,
    flushing: AtomicBool,
    closed: AtomicBool,
}

impl RecordAccumulator {
    /// An empty accumulator drawing batch memory from `pool`.
    pub fn new(config: AccumulatorConfig, pool: BufferPool) -> Self {
        RecordAccumulator {
            config,
            pool,
            deques: RwLock::new(BTreeMap::new()),
            drain_index: Mutex::new(BTreeMap::new()),
            flushing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn deque(&self, tp: &TopicPartition) -> Deque {
        if let Some(deque) = self.read_deques().get(tp) {
            return deque.clone();
        }
        self.deques
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(Mutex::new(VecDeque::new())))
            .clone()
    }

    fn read_deques(&self) -> crate::sync::RwLockReadGuard<'_, BTreeMap<TopicPartition, Deque>> {
        self.deques.read().unwrap_or_else(|p| p.into_inner())
    }

    fn all_deques(&self) -> Vec<Deque> {
        self.read_deques().values().cloned().collect()
    }

    /// Appends a record to `tp`'s newest open batch, or to a new one built in memory from the
    /// pool (waiting up to `max.block.ms` for it, outside every lock).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        now_ms: i64,
        abort_on_new_batch: bool,
    ) -> Result<AppendOutcome, DeliveryError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DeliveryError::Closed);
        }
        let deque = self.deque(tp);
        {
            let mut batches = lock(&deque);
            let several = batches.len() > 1;
            if let Some(last) = batches.back_mut()
                && let Some(future) = last.try_append(timestamp, key, value, headers)
            {
                return Ok(AppendOutcome::Appended {
                    future,
                    new_batch: false,
                    batch_full: several || last.is_full(),
                });
            }
        }
        if abort_on_new_batch {
            return Ok(AppendOutcome::Aborted);
        }
        let size = self.config.batch_size.max(
            BatchBuilder::HEADER_SIZE + BatchBuilder::record_size_upper_bound(key, value, headers),
        );
        let buffer = self
            .pool
            .allocate(size, self.config.max_block)
            .map_err(DeliveryError::Allocate)?;
        let mut batches = lock(&deque);
        // Another thread may have started a batch while this one waited for memory.
        let several = batches.len() > 1;
        if let Some(last) = batches.back_mut()
            && let Some(future) = last.try_append(timestamp, key, value, headers)
        {
            let batch_full = several || last.is_full();
            drop(batches);
            self.pool.deallocate(buffer, size);
            return Ok(AppendOutcome::Appended {
                future,
                new_batch: false,
                batch_full,
            });
        }
        let mut batch =
            ProducerBatch::new(tp.clone(), buffer, size, self.config.compression, now_ms);
        let future = batch
            .try_append(timestamp, key, value, headers)
            .expect("an empty batch takes any record it was sized for");
        let batch_full = batch.is_full() || !batches.is_empty();
        batches.push_back(batch);
        Ok(AppendOutcome::Appended {
            future,
            new_batch: true,
            batch_full,
        })
    }

    /// Which leaders have sendable batches, given each partition's leader (`None`: unknown).
    pub fn ready(
        &self,
        now_ms: i64,
        leader_of: impl Fn(&TopicPartition) -> Option<i32>,
    ) -> ReadyCheck {
        let exhausted = self.pool.queued() > 0;
        let forced = self.flushing.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire);
        let mut check = ReadyCheck {
            next_check_delay_ms: i64::MAX,
            ..ReadyCheck::default()
        };
        let deques: Vec<(TopicPartition, Deque)> = self
            .read_deques()
            .iter()
            .map(|(tp, d)| (tp.clone(), d.clone()))
            .collect();
        for (tp, deque) in deques {
            let batches = lock(&deque);
            let Some(first) = batches.front() else {
                continue;
            };
            let Some(leader) = leader_of(&tp) else {
                if !check.unknown_leader_topics.contains(&tp.topic) {
                    check.unknown_leader_topics.push(tp.topic.clone());
                }
                continue;
            };
            if check.ready_nodes.contains(&leader) {
                continue;
            }
            let waited = now_ms - first.last_attempt_ms;
            let backing_off = first.attempts > 0 && waited < self.config.retry_backoff_ms;
            let time_to_wait = if first.attempts > 0 {
                self.config.retry_backoff_ms
            } else {
                self.config.linger_ms
            };
            let full = batches.len() > 1 || first.is_full();
            let sendable = full || waited >= time_to_wait || exhausted || forced;
            if sendable && !backing_off {
                check.ready_nodes.push(leader);
            } else {
                check.next_check_delay_ms = check
                    .next_check_delay_ms
                    .min((time_to_wait - waited).max(0));
            }
        }
        check
    }

    /// Takes at most one batch from each of `partitions` (those `node` leads), up to
    /// `max_request_size` bytes (but at least one batch), starting where the last drain for
    /// `node` left off.
    pub fn drain(
        &self,
        node: i32,
        partitions: &[TopicPartition],
        max_request_size: usize,
        now_ms: i64,
    ) -> Vec<ProducerBatch> {
        if partitions.is_empty() {
            return Vec::new();
        }
        let start = {
            let mut index = lock(&self.drain_index);
            let entry = index.entry(node).or_insert(0);
            let start = *entry % partitions.len();
            *entry = start + 1;
            start
        };
        let mut taken: Vec<ProducerBatch> = Vec::new();
        let mut size = 0;
        for i in 0..partitions.len() {
            let tp = &partitions[(start + i) % partitions.len()];
            let Some(deque) = self.read_deques().get(tp).cloned() else {
                continue;
            };
            let mut batches = lock(&deque);
            let Some(first) = batches.front() else {
                continue;
            };
            if first.attempts > 0 && now_ms - first.last_attempt_ms < self.config.retry_backoff_ms {
                continue;
            }
            if !taken.is_empty() && size + first.size_in_bytes() > max_request_size {
                break;
            }
            let mut batch = batches.pop_front().expect("checked above");
            // Closed to appends from here on, even if it comes back for a retry.
            batch.capacity = 0;
            batch.last_attempt_ms = now_ms;
            size += batch.size_in_bytes();
            taken.push(batch);
        }
        taken
    }

    /// Puts a batch that must be retried back at the front of its deque (ahead of newer
    /// batches, keeping the partition's order); it waits `retry.backoff.ms`.
    pub fn reenqueue(&self, mut batch: ProducerBatch, now_ms: i64) {
        batch.attempts += 1;
        batch.last_attempt_ms = now_ms;
        let deque = self.deque(&batch.topic_partition);
        lock(&deque).push_front(batch);
    }

    /// Removes and returns the batches that have waited in their deques past
    /// `delivery.timeout.ms`; the caller fails them and returns their memory.
    pub fn expired_batches(&self, now_ms: i64) -> Vec<ProducerBatch> {
        let mut expired = Vec::new();
        for deque in self.all_deques() {
            let mut batches = lock(&deque);
            while batches
                .front()
                .is_some_and(|b| b.age_ms(now_ms) >= self.config.delivery_timeout_ms)
            {
                expired.push(batches.pop_front().expect("checked"));
            }
        }
        expired
    }

    /// Completes a batch and returns its memory to the pool.
    pub fn finish(&self, batch: ProducerBatch, result: Result<(i64, i64), DeliveryError>) {
        batch.complete(result);
        let size = batch.buffer_size;
        self.pool.deallocate(batch.into_buffer(), size);
    }

    /// Makes every batch sendable now (`flush()`), until [`end_flush`](Self::end_flush).
    pub fn begin_flush(&self) {
        self.flushing.store(true, Ordering::Release);
    }

    /// Ends a flush.
    pub fn end_flush(&self) {
        self.flushing.store(false, Ordering::Release);
    }

    /// Refuses further appends and makes everything sendable.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether any batch is waiting to be drained.
    pub fn has_undrained(&self) -> bool {
        self.all_deques().iter().any(|d| !lock(d).is_empty())
    }

    /// Fails every batch still waiting (on close without sending).
    pub fn abort_all(&self, error: DeliveryError) {
        for deque in self.all_deques() {
            let drained: Vec<ProducerBatch> = lock(&deque).drain(..).collect();
            for batch in drained {
                self.finish(batch, Err(error.clone()));
            }
        }
    }
}
