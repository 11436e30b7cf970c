//! A Kafka producer for Rust services: records are partitioned (murmur2 for keys, sticky for
//! the rest), appended to core's [`RecordAccumulator`], and a background task drains ready
//! batches into produce requests under core's [`Sender`] actor, which decides in-flight limits,
//! retries and idempotent sequences. It speaks only the public protocol, so it works against
//! any Kafka broker.

mod config;
mod wake_timer;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, MetadataRequest, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use surety_core::errors::Errors;
use surety_core::partitioner::StickyPartitioner;
use surety_core::producer::sender::{BatchOutcome, PartitionResult};
use surety_core::producer::{
    AccumulatorConfig, AppendOutcome, BatchId, BufferPool, DeliveryError, ProducerBatch,
    RecordAccumulator, RecordFuture, RecordMetadata, Sender, SenderConfig, TopicPartition,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, Notify, mpsc, watch};

pub use config::ProducerConfig;

use crate::broker::now_ms;
use crate::client::Connection;
use crate::wire::frame::{finish_frame, read_frame, start_frame};

/// The Produce version this client sends (Kafka 2.1+ brokers serve it; topics by name).
const PRODUCE_VERSION: i16 = 7;

/// A record to send. It borrows its bytes: they are copied once, into the batch, before
/// `send` returns, so a caller needs no owned copy per record.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// A fixed partition, or `None` for the partitioner's choice.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: Option<&'a [u8]>,
}

#[derive(Default)]
struct Metadata {
    /// Broker id → host:port.
    nodes: HashMap<i32, String>,
    /// Topic → its partitions and their leaders.
    topics: HashMap<String, Arc<TopicInfo>>,
}

/// What a send needs to know of a topic, shared so the per-record path takes a reference
/// count instead of copying.
struct TopicInfo {
    /// Each partition's leader (-1: none known).
    leaders: Vec<i32>,
    /// Each partition's name, made once.
    partitions: Vec<TopicPartition>,
}

struct Shared {
    config: ProducerConfig,
    accumulator: RecordAccumulator,
    partitioner: StickyPartitioner,
    metadata: std::sync::Mutex<Metadata>,
    bootstrap: Mutex<Connection>,
    wake: Arc<Notify>,
    closing: AtomicBool,
    /// Batches drained but not yet finished, published by the sender task.
    outstanding: watch::Receiver<usize>,
}

/// The producer. Cheap to share behind an `Arc`; `close` ends it.
pub struct Producer {
    shared: Arc<Shared>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Producer {
    /// Connects to `bootstrap.servers`, obtains a producer id if idempotent, and starts the
    /// sender task.
    pub async fn new(config: ProducerConfig) -> anyhow::Result<Self> {
        // A struct built in code states its idempotence explicitly: a conflict is an error, as
        // for an explicit `enable.idempotence=true` (`ProducerConfig::from_pairs` resolves the
        // unset case).
        if config.enable_idempotence
            && let Some(conflict) = config.idempotence_conflict()
        {
            anyhow::bail!(
                "enable.idempotence=true requires acks=all and \
                 max.in.flight.requests.per.connection <= 5, but {conflict}"
            );
        }
        let bootstrap = crate::cli::connect(&config.bootstrap_servers, &config.client_id).await?;
        let accumulator = RecordAccumulator::new(
            AccumulatorConfig {
                batch_size: config.batch_size,
                linger_ms: config.linger_ms,
                delivery_timeout_ms: config.delivery_timeout_ms,
                retry_backoff_ms: config.retry_backoff_ms,
                max_block: config.max_block,
                compression: config.compression,
            },
            BufferPool::new(config.buffer_memory, config.batch_size),
        );
        let (outstanding_tx, outstanding) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            config,
            accumulator,
            partitioner: StickyPartitioner::default(),
            metadata: std::sync::Mutex::new(Metadata::default()),
            bootstrap: Mutex::new(bootstrap),
            wake: Arc::new(Notify::new()),
            closing: AtomicBool::new(false),
            outstanding,
        });
        let producer_id = if shared.config.enable_idempotence {
            Some(shared.init_producer_id().await?)
        } else {
            None
        };
        let task = tokio::spawn(run_sender(shared.clone(), producer_id, outstanding_tx));
        Ok(Producer {
            shared,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Partitions and appends `record`, waiting for metadata (and memory) if needed; the
    /// returned future completes with the record's offset once the broker acknowledges it.
    pub async fn enqueue(&self, record: ProducerRecord<'_>) -> anyhow::Result<RecordFuture> {
        let shared = &self.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(anyhow!("the producer is closed"));
        }
        let info = match shared.topic(record.topic) {
            Some(info) => info,
            None => shared.wait_for_topic(record.topic).await?,
        };
        let partitions = info.partitions.len() as i32;
        let key = record.key;
        let mut partition = match record.partition {
            Some(p) if (0..partitions).contains(&p) => p,
            Some(p) => {
                return Err(anyhow!(
                    "partition {p} of '{}' does not exist ({partitions} partitions)",
                    record.topic
                ));
            }
            None => shared.partitioner.partition(record.topic, key, partitions),
        };
        let sticky = record.partition.is_none() && key.is_none();
        let now = now_ms();
        let mut abort = sticky;
        loop {
            let tp = &info.partitions[partition as usize];
            let outcome = shared
                .accumulator
                .append(tp, now, key, record.value, &[], now, abort)
                .map_err(|e| anyhow!("{e}"))?;
            match outcome {
                AppendOutcome::Appended {
                    future,
                    new_batch,
                    batch_full,
                } => {
                    // As Kafka's producer: the sender is woken for a new or a full batch; a
                    // lingering one it finds by its own clock.
                    if new_batch || batch_full {
                        shared.wake.notify_one();
                    }
                    return Ok(future);
                }
                AppendOutcome::Aborted => {
                    partition =
                        shared
                            .partitioner
                            .on_new_batch(record.topic, partitions, partition);
                    abort = false;
                }
            }
        }
    }

    /// Sends `record` and waits for its acknowledgement.
    pub async fn send(&self, record: ProducerRecord<'_>) -> anyhow::Result<RecordMetadata> {
        let future = self.enqueue(record).await?;
        future.await.map_err(|e| anyhow!("{e}"))
    }

    /// Sends `record`; `callback` runs with its fate once known, on the producer's sender task
    /// (keep it short). Returns once the record is queued, so a caller can send many in order
    /// without waiting for each.
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord<'_>,
        callback: impl FnOnce(Result<RecordMetadata, DeliveryError>) + Send + 'static,
    ) -> anyhow::Result<()> {
        self.enqueue(record).await?.on_complete(callback);
        Ok(())
    }

    /// Sends everything queued now and waits until every batch has its answer.
    pub async fn flush(&self) {
        let shared = &self.shared;
        shared.accumulator.begin_flush();
        shared.wake.notify_one();
        let mut outstanding = shared.outstanding.clone();
        loop {
            if !shared.accumulator.has_undrained() && *outstanding.borrow_and_update() == 0 {
                break;
            }
            shared.wake.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(10), outstanding.changed()).await;
        }
        shared.accumulator.end_flush();
    }

    /// Flushes, then stops the sender task (waiting at most `timeout`); records still queued
    /// after that fail with [`DeliveryError::Closed`].
    pub async fn close(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.flush()).await;
        self.shared.closing.store(true, Ordering::Release);
        self.shared.accumulator.close();
        self.shared.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(timeout, task).await;
        }
        self.shared.accumulator.abort_all(DeliveryError::Closed);
    }
}

impl Shared {
    /// A producer id and epoch for idempotent produce, from InitProducerId.
    async fn init_producer_id(&self) -> anyhow::Result<(i64, i16)> {
        let r = self
            .bootstrap
            .lock()
            .await
            .send(InitProducerIdRequest::default().with_transactional_id(None))
            .await
            .context("InitProducerId")?;
        if r.error_code != Errors::None.code() {
            return Err(anyhow!("InitProducerId failed with error {}", r.error_code));
        }
        Ok((r.producer_id.0, r.producer_epoch))
    }

    /// The topic's partitions, if its metadata is known.
    fn topic(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        metadata
            .topics
            .get(topic)
            .filter(|t| !t.partitions.is_empty())
            .cloned()
    }

    /// Asks for the topic's metadata until it is known, for at most `max.block.ms`.
    async fn wait_for_topic(&self, topic: &str) -> anyhow::Result<Arc<TopicInfo>> {
        let deadline = tokio::time::Instant::now() + self.config.max_block;
        loop {
            self.refresh_metadata(&[topic.to_string()]).await?;
            if let Some(info) = self.topic(topic) {
                return Ok(info);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(anyhow!(
                    "topic '{topic}' not present in metadata after max.block.ms"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn refresh_metadata(&self, topics: &[String]) -> anyhow::Result<()> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            ));
        let response = {
            let mut conn = self.bootstrap.lock().await;
            match conn.send(request.clone()).await {
                Ok(response) => response,
                Err(e) => {
                    // The broker asked is gone: ask another, the bootstrap list first, then
                    // every broker the metadata named (Kafka's least-loaded node).
                    tracing::debug!("metadata request failed: {e:#}; trying other brokers");
                    let known: Vec<String> = self
                        .metadata
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .nodes
                        .values()
                        .cloned()
                        .collect();
                    let candidates = std::iter::once(self.config.bootstrap_servers.clone())
                        .chain(known)
                        .collect::<Vec<_>>()
                        .join(",");
                    *conn = crate::cli::connect(&candidates, &self.config.client_id).await?;
                    conn.send(request).await?
                }
            }
        };
        let mut metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        for b in &response.brokers {
            metadata
                .nodes
                .insert(b.node_id.0, format!("{}:{}", &*b.host, b.port));
        }
        for t in &response.topics {
            let Some(name) = &t.name else { continue };
            if t.error_code != Errors::None.code() {
                continue;
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                    *slot = p.leader_id.0;
                }
            }
            let partitions = (0..leaders.len() as i32)
                .map(|p| TopicPartition::new(name, p))
                .collect();
            let info = TopicInfo {
                leaders,
                partitions,
            };
            metadata.topics.insert(name.to_string(), Arc::new(info));
        }
        Ok(())
    }

    /// Forgets the leaders of every topic `node` led: a broker that cannot be reached may
    /// have lost its leadership, so the next round asks for fresh metadata (Kafka's client
    /// requests a metadata update on every disconnection).
    fn forget_leader(&self, node: i32) {
        let mut metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        metadata
            .topics
            .retain(|_, info| !info.leaders.contains(&node));
    }

    /// The partitions `node` leads, by the metadata cached now.
    fn partitions_led_by(&self, node: i32) -> Vec<TopicPartition> {
        let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        metadata
            .topics
            .values()
            .flat_map(|info| {
                info.leaders
                    .iter()
                    .zip(&info.partitions)
                    .filter(|(l, _)| **l == node)
                    .map(|(_, tp)| tp.clone())
            })
            .collect()
    }

    fn leader_of(&self, tp: &TopicPartition) -> Option<i32> {
        let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        metadata
            .topics
            .get(&*tp.topic)?
            .leaders
            .get(tp.partition as usize)
            .copied()
            .filter(|l| *l >= 0)
    }
}

/// One connection to a broker: the write half, and a task reading response frames into the
/// sender's channel (stopped when the connection is dropped).
struct NodeConnection {
    /// Tells this connection's events from those of an earlier one to the same broker.
    generation: u64,
    writer: OwnedWriteHalf,
    reader: tokio::task::JoinHandle<()>,
    correlation_id: i32,
    /// correlation id → (request id, when it was written, batches by topic/partition).
    pending: HashMap<i32, PendingRequest>,
}

struct PendingRequest {
    request_id: u64,
    written: tokio::time::Instant,
    batches: Vec<(TopicPartition, BatchId)>,
}

impl NodeConnection {
    /// Whether a request has waited longer than `request.timeout.ms` for its answer.
    fn timed_out(&self, timeout: Duration) -> bool {
        self.pending
            .values()
            .any(|p| p.written.elapsed() >= timeout)
    }
}

impl Drop for NodeConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

enum Event {
    Response {
        node: i32,
        generation: u64,
        frame: Bytes,
    },
    Closed {
        node: i32,
        generation: u64,
    },
}

async fn connect(
    node: i32,
    address: &str,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<NodeConnection> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to broker {node} at {address}"))?;
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let reader = tokio::spawn(async move {
        loop {
            match read_frame(&mut reader, 256 * 1024 * 1024).await {
                Ok(Some(frame)) => {
                    let event = Event::Response {
                        node,
                        generation,
                        frame,
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
                _ => {
                    let _ = events.send(Event::Closed { node, generation });
                    return;
                }
            }
        }
    });
    Ok(NodeConnection {
        generation,
        writer,
        reader,
        correlation_id: 0,
        pending: HashMap::new(),
    })
}

/// The sender task: drains ready batches into core's [`Sender`] actor, which decides what goes
/// to which broker and when, writes the produce requests it asks for, and applies the answers.
async fn run_sender(
    shared: Arc<Shared>,
    producer_id: Option<(i64, i16)>,
    outstanding: watch::Sender<usize>,
) {
    let config = shared.config.clone();
    let mut actor: Sender<TopicPartition> = Sender::new(SenderConfig {
        max_in_flight: config.max_in_flight,
        idempotence: config.enable_idempotence,
        retries: config.retries,
        delivery_timeout_ms: config.delivery_timeout_ms,
        retry_backoff_ms: config.retry_backoff_ms,
        broken: None,
    });
    if let Some((id, epoch)) = producer_id {
        actor.on_producer_id(id, epoch);
    }
    let mut connections: HashMap<i32, NodeConnection> = HashMap::new();
    let mut batches: HashMap<BatchId, ProducerBatch> = HashMap::new();
    let mut next_id: BatchId = 0;
    let mut generations = 0u64;
    let request_timeout = Duration::from_millis(config.request_timeout_ms as u64);
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    // Without its thread (none could be started) the sender falls back on tokio's timer.
    let timer = wake_timer::WakeTimer::start(shared.wake.clone())
        .inspect_err(|e| tracing::warn!("no producer timer thread: {e}"))
        .ok();
    let mut last_refresh: Option<tokio::time::Instant> = None;
    loop {
        let now_us = now_micros();
        let now = now_us / 1000;
        for batch in shared.accumulator.expired_batches(now) {
            let age_ms = batch.age_ms(now);
            shared
                .accumulator
                .finish(batch, Err(DeliveryError::Expired { age_ms }));
        }
        let ready = shared.accumulator.ready(now, |tp| shared.leader_of(tp));
        // Topics with queued or retried batches but no known leader: ask again.
        let mut leaderless: BTreeSet<String> = ready
            .unknown_leader_topics
            .iter()
            .map(|t| t.to_string())
            .collect();
        leaderless.extend(
            actor
                .waiting_partitions()
                .filter(|tp| shared.leader_of(tp).is_none())
                .map(|tp| tp.topic.to_string()),
        );
        // At most one metadata request per `retry.backoff.ms` (Kafka's metadata refresh
        // back-off): a leader that is gone for seconds must not cost a request a millisecond.
        let refresh_backoff = Duration::from_millis(config.retry_backoff_ms.max(1) as u64);
        let mut refresh_wait_ms = i64::MAX;
        if !leaderless.is_empty() {
            let due =
                last_refresh.is_none_or(|at: tokio::time::Instant| at.elapsed() >= refresh_backoff);
            if due {
                last_refresh = Some(tokio::time::Instant::now());
                let topics: Vec<String> = leaderless.into_iter().collect();
                if let Err(e) = shared.refresh_metadata(&topics).await {
                    tracing::warn!("metadata refresh failed: {e:#}");
                }
            }
            if let Some(at) = last_refresh {
                let left = refresh_backoff.saturating_sub(at.elapsed());
                refresh_wait_ms = left.as_millis() as i64;
            }
        }
        for node in &ready.ready_nodes {
            let partitions = shared.partitions_led_by(*node);
            for batch in shared
                .accumulator
                .drain(*node, &partitions, config.max_request_size, now)
            {
                let id = next_id;
                next_id += 1;
                actor.enqueue(
                    batch.topic_partition.clone(),
                    id,
                    batch.record_count() as i32,
                    now - batch.age_ms(now),
                );
                batches.insert(id, batch);
            }
        }
        let done = actor.expire(now);
        complete(&shared, &mut batches, done);
        if actor.needs_producer_id() {
            // A batch sent with a sequence failed: start over under a new producer id.
            match shared.init_producer_id().await {
                Ok((id, epoch)) => {
                    tracing::info!("continuing as producer id {id}");
                    actor.on_producer_id(id, epoch);
                }
                Err(e) => tracing::warn!("InitProducerId failed: {e:#}"),
            }
        }
        let nodes: BTreeSet<i32> = actor
            .waiting_partitions()
            .filter_map(|tp| shared.leader_of(tp))
            .collect();
        for node in nodes {
            let leads = |tp: &TopicPartition| shared.leader_of(tp) == Some(node);
            while let Some(request) = actor.poll_send(node, leads, now) {
                if let Entry::Vacant(slot) = connections.entry(node) {
                    let address = shared
                        .metadata
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .nodes
                        .get(&node)
                        .cloned();
                    let connected = match address {
                        Some(a) => {
                            generations += 1;
                            connect(node, &a, generations, events_tx.clone()).await
                        }
                        None => Err(anyhow!("no address for broker {node}")),
                    };
                    match connected {
                        Ok(c) => {
                            slot.insert(c);
                        }
                        Err(e) => {
                            tracing::warn!("{e:#}");
                            shared.forget_leader(node);
                            let lost = Err(Errors::NetworkException.code());
                            let pending: Vec<(BatchId, PartitionResult)> =
                                request.batches.iter().map(|b| (b.id, lost)).collect();
                            let done = actor.on_response(request.request_id, &pending, now);
                            complete(&shared, &mut batches, done);
                            break;
                        }
                    }
                }
                let conn = connections.get_mut(&node).expect("connected above");
                let (frame, sent) = produce_frame(conn, &request, &mut batches, &config);
                if config.acks != 0 {
                    let pending = PendingRequest {
                        request_id: request.request_id,
                        written: tokio::time::Instant::now(),
                        batches: sent.clone(),
                    };
                    conn.pending.insert(conn.correlation_id, pending);
                }
                let written = match frame {
                    Ok(frame) => conn.writer.write_all(&frame).await.map_err(Into::into),
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::warn!("writing to broker {node}: {e:#}");
                    connections.remove(&node);
                    let done = actor.on_disconnect(node, now);
                    complete(&shared, &mut batches, done);
                    break;
                }
                if config.acks == 0 {
                    let results: Vec<(BatchId, PartitionResult)> =
                        sent.iter().map(|(_, id)| (*id, Ok(-1))).collect();
                    let done = actor.on_response(request.request_id, &results, now);
                    complete(&shared, &mut batches, done);
                }
            }
        }
        // An answer that never came: close the connection, as Kafka's client does, so every
        // request still in flight on it is retried (idempotence makes that safe).
        let timed_out: Vec<i32> = connections
            .iter()
            .filter(|(_, c)| c.timed_out(request_timeout))
            .map(|(node, _)| *node)
            .collect();
        for node in timed_out {
            tracing::warn!(
                "broker {node}: no answer within request.timeout.ms={}; reconnecting",
                config.request_timeout_ms
            );
            connections.remove(&node);
            let done = actor.on_disconnect(node, now);
            complete(&shared, &mut batches, done);
        }
        let _ = outstanding.send(batches.len());
        if shared.closing.load(Ordering::Acquire)
            && batches.is_empty()
            && !shared.accumulator.has_undrained()
        {
            return;
        }
        let next_retry = actor.next_retry_ms().map_or(i64::MAX, |at| at - now);
        // Times are whole milliseconds: wake at the start of the millisecond in which the
        // nearest linger or back-off ends.
        // Batches whose leader is unknown wait for the next metadata refresh, not a tick.
        let next_check = if refresh_wait_ms < i64::MAX && ready.ready_nodes.is_empty() {
            ready.next_check_delay_ms.max(refresh_wait_ms)
        } else {
            ready.next_check_delay_ms
        };
        let wait_ms = next_check.min(next_retry).clamp(1, 100);
        let wait = Duration::from_micros((wait_ms * 1000 - now_us % 1000) as u64);
        // tokio's own timer stays as a safety net, a few ticks behind the precise one.
        let mut fallback = wait;
        if let Some(timer) = &timer {
            timer.wake_at(std::time::Instant::now() + wait);
            fallback += Duration::from_millis(3);
        }
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                handle_event(&shared, event, &mut actor, &mut connections, &mut batches);
                // Take whatever else has arrived before deciding again.
                while let Ok(event) = events.try_recv() {
                    handle_event(&shared, event, &mut actor, &mut connections, &mut batches);
                }
            }
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(fallback) => {}
        }
    }
}

/// The produce request for `request` on `conn` (numbered with the connection's next
/// correlation id), and the (partition, batch) pairs it carries.
fn produce_frame(
    conn: &mut NodeConnection,
    request: &surety_core::producer::SendRequest<TopicPartition>,
    batches: &mut HashMap<BatchId, ProducerBatch>,
    config: &ProducerConfig,
) -> (anyhow::Result<BytesMut>, Vec<(TopicPartition, BatchId)>) {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    let mut sent = Vec::new();
    for b in &request.batches {
        let Some(batch) = batches.get_mut(&b.id) else {
            continue;
        };
        let records = batch.records(b.producer);
        let name = TopicName(StrBytes::from_string(b.partition.topic.to_string()));
        let data = PartitionProduceData::default()
            .with_index(b.partition.partition)
            .with_records(Some(records));
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(name)
                    .with_partition_data(vec![data]),
            ),
        }
        sent.push((b.partition.clone(), b.id));
    }
    let produce = ProduceRequest::default()
        .with_acks(config.acks)
        .with_timeout_ms(config.request_timeout_ms as i32)
        .with_topic_data(topics);
    conn.correlation_id = conn.correlation_id.wrapping_add(1);
    let frame = encode_produce(&produce, conn.correlation_id, &config.client_id);
    (frame, sent)
}

fn handle_event(
    shared: &Shared,
    event: Event,
    actor: &mut Sender<TopicPartition>,
    connections: &mut HashMap<i32, NodeConnection>,
    batches: &mut HashMap<BatchId, ProducerBatch>,
) {
    match event {
        Event::Response {
            node,
            generation,
            mut frame,
        } => {
            let Some(conn) = connections
                .get_mut(&node)
                .filter(|c| c.generation == generation)
            else {
                return;
            };
            let header_version = ApiKey::Produce.response_header_version(PRODUCE_VERSION);
            let Ok(header) = ResponseHeader::decode(&mut frame, header_version) else {
                return;
            };
            let Some(PendingRequest {
                request_id,
                batches: sent,
                ..
            }) = conn.pending.remove(&header.correlation_id)
            else {
                return;
            };
            let results: Vec<(BatchId, PartitionResult)> =
                match ProduceResponse::decode(&mut frame, PRODUCE_VERSION) {
                    Ok(response) => sent
                        .iter()
                        .map(|(tp, id)| {
                            let answer = response
                                .responses
                                .iter()
                                .filter(|t| *t.name == *tp.topic)
                                .flat_map(|t| &t.partition_responses)
                                .find(|p| p.index == tp.partition);
                            let result = match answer {
                                Some(p) if p.error_code == Errors::None.code() => Ok(p.base_offset),
                                Some(p) => Err(p.error_code),
                                None => Err(Errors::NetworkException.code()),
                            };
                            (*id, result)
                        })
                        .collect(),
                    Err(_) => sent
                        .iter()
                        .map(|(_, id)| (*id, Err(Errors::CorruptMessage.code())))
                        .collect(),
                };
            let done = actor.on_response(request_id, &results, now_ms());
            complete(shared, batches, done);
            // The actor names the partitions whose leader it learned is stale: forget their
            // topics' leaders, so the next round asks for fresh metadata before the retries go.
            let stale = actor.take_stale_leaders();
            if !stale.is_empty() {
                let mut metadata = shared.metadata.lock().unwrap_or_else(|p| p.into_inner());
                for tp in stale {
                    metadata.topics.remove(&*tp.topic);
                }
            }
        }
        Event::Closed { node, generation } => {
            if connections
                .get(&node)
                .is_none_or(|c| c.generation != generation)
            {
                return;
            }
            connections.remove(&node);
            shared.forget_leader(node);
            let done = actor.on_disconnect(node, now_ms());
            complete(shared, batches, done);
        }
    }
}

fn complete(
    shared: &Shared,
    batches: &mut HashMap<BatchId, ProducerBatch>,
    done: Vec<surety_core::producer::Completion>,
) {
    for c in done {
        let Some(batch) = batches.remove(&c.id) else {
            continue;
        };
        let result = match c.outcome {
            BatchOutcome::Written(offset) => Ok((offset, -1)),
            BatchOutcome::Failed(code) => Err(DeliveryError::Broker(code)),
            BatchOutcome::Expired => Err(DeliveryError::Expired {
                age_ms: batch.age_ms(now_ms()),
            }),
        };
        shared.accumulator.finish(batch, result);
    }
}

/// Microseconds since the Unix epoch (the same clock as [`now_ms`], finer).
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn encode_produce(
    request: &ProduceRequest,
    correlation_id: i32,
    client_id: &str,
) -> anyhow::Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut out = BytesMut::new();
    let at = start_frame(&mut out);
    header.encode(
        &mut out,
        ApiKey::Produce.request_header_version(PRODUCE_VERSION),
    )?;
    request.encode(&mut out, PRODUCE_VERSION)?;
    finish_frame(&mut out, at);
    Ok(out)
}
