//! A controller and three brokers, each its own process, a topic of 3 partitions with
//! replication factor 3 and `min.insync.replicas=2`: producers write numbered records with
//! `acks=all` and idempotence while the test SIGKILLs the leader of a partition, restarts it,
//! then kills another broker and restarts it. Read back, every partition holds every
//! acknowledged record exactly once, in order. Each kill schedule comes from a seed, printed
//! so a failure can be rerun (`SURETY_TEST_SEED=<seed>`). Further tests: acks=all refused with
//! two brokers down, a follower's and a stale epoch's refusals, a controller restart, and a
//! connection's pipelined produce requests appended while the first waits for its followers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use surety::client::Connection;
use surety::producer::{Producer, ProducerConfig, ProducerRecord};
use surety_tests::cluster::{create_topic, leadership};
use surety_tests::{ClusterProcesses, kcat, python, python_scripts, run_with_timeout, send_signal};

const TOPIC: &str = "numbers";
const PARTITIONS: i32 = 3;
/// The pace of the producers: 200,000 records take about ten seconds.
const RECORDS_PER_SECOND: f64 = 20_000.0;

/// Fast failure detection, so a kill is noticed within a test's time.
const OVERRIDES: &[&str] = &[
    "broker.heartbeat.interval.ms=250",
    "broker.session.timeout.ms=2000",
    "replica.lag.time.max.ms=2000",
    "replica.fetch.backoff.ms=100",
    "default.replication.factor=3",
    "min.insync.replicas=2",
];

/// A small deterministic generator (splitmix64): the schedule is the seed's, whatever the
/// platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a seed does: when (in acknowledged records) to kill the leader of which partition,
/// how long it stays down, and when to kill which other broker.
#[derive(Debug)]
struct Schedule {
    first_after: usize,
    partition: i32,
    first_down: Duration,
    second_after: usize,
    second_pick: u64,
    second_down: Duration,
}

impl Schedule {
    fn from_seed(seed: u64, records: usize) -> Self {
        let mut rng = Rng(seed);
        Schedule {
            first_after: records / 10 + rng.below(records as u64 / 5) as usize,
            partition: rng.below(PARTITIONS as u64) as i32,
            first_down: Duration::from_millis(300 + rng.below(2_000)),
            second_after: records / 2 + rng.below(records as u64 / 5) as usize,
            second_pick: rng.below(2),
            second_down: Duration::from_millis(300 + rng.below(2_000)),
        }
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("SURETY_TEST_SEED") {
        Ok(seed) => vec![seed.parse().expect("SURETY_TEST_SEED is a number")],
        Err(_) => vec![1, 2, 3, 4, 5],
    }
}

/// Starts the cluster and creates the topic (blocking work, off the runtime's threads).
async fn start_cluster(dir: &std::path::Path) -> ClusterProcesses {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let cluster = ClusterProcesses::start(&dir, 3, OVERRIDES);
        create_topic(&cluster.bootstrap(), TOPIC, PARTITIONS, 3, &[]);
        cluster
    })
    .await
    .unwrap()
}

/// A started cluster with the topic, shared with the tasks that kill and restart its nodes,
/// and its directory (kept while the test runs).
async fn shared_cluster() -> (tempfile::TempDir, String, Arc<Mutex<ClusterProcesses>>) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path()).await;
    let bootstrap = cluster.bootstrap();
    (dir, bootstrap, Arc::new(Mutex::new(cluster)))
}

/// Waits (at most 30 s) until partition 0 has a leader other than `old` in an epoch after
/// `epoch`; returns it and its epoch.
async fn wait_for_new_leader(bootstrap: &str, old: i32, epoch: i32) -> (i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = leadership(bootstrap, TOPIC, 0).await
            && l.leader >= 0
            && l.leader != old
            && l.leader_epoch > epoch
        {
            return (l.leader, l.leader_epoch);
        }
        assert!(Instant::now() < deadline, "no new leader within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the kill schedule while `acked` grows; returns what it did, for the failure message.
async fn run_schedule(
    cluster: Arc<Mutex<ClusterProcesses>>,
    schedule: Schedule,
    acked: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut log = Vec::new();
    let wait_for = |count: usize| {
        let (acked, done) = (acked.clone(), done.clone());
        async move {
            while acked.load(Ordering::Relaxed) < count && done.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let bootstrap = cluster.lock().unwrap().bootstrap();
    wait_for(schedule.first_after).await;
    let victim = leadership(&bootstrap, TOPIC, schedule.partition)
        .await
        .map(|l| l.leader)
        .filter(|&l| l >= 0);
    let Some(victim) = victim else {
        log.push("no leader found for the first kill".to_string());
        return log;
    };
    kill(&cluster, victim).await;
    log.push(format!(
        "killed broker {victim} (leader of {TOPIC}-{}) after {} acks",
        schedule.partition,
        acked.load(Ordering::Relaxed)
    ));
    tokio::time::sleep(schedule.first_down).await;
    restart(&cluster, victim).await;
    log.push(format!("restarted broker {victim}"));
    wait_for(schedule.second_after).await;
    let others: Vec<i32> = (1..=3).filter(|&b| b != victim).collect();
    let second = others[schedule.second_pick as usize % others.len()];
    kill(&cluster, second).await;
    log.push(format!(
        "killed broker {second} after {} acks",
        acked.load(Ordering::Relaxed)
    ));
    tokio::time::sleep(schedule.second_down).await;
    restart(&cluster, second).await;
    log.push(format!("restarted broker {second}"));
    log
}

async fn kill(cluster: &Arc<Mutex<ClusterProcesses>>, node: i32) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || cluster.lock().unwrap().kill(node))
        .await
        .unwrap();
}

async fn restart(cluster: &Arc<Mutex<ClusterProcesses>>, node: i32) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || cluster.lock().unwrap().restart(node))
        .await
        .unwrap();
}

/// Reads every partition with kcat (no group): `partition value` per record.
fn read_all(bootstrap: &str) -> Vec<Vec<u64>> {
    let out = run_with_timeout(
        kcat().args([
            "-b",
            bootstrap,
            "-C",
            "-t",
            TOPIC,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p %s\n",
        ]),
        None,
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut partitions = vec![Vec::new(); PARTITIONS as usize];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (p, value) = line.split_once(' ').expect("partition and value");
        partitions[p.parse::<usize>().unwrap()].push(value.parse::<u64>().unwrap());
    }
    partitions
}

/// Every acknowledged record is in its partition exactly once, and each partition holds its
/// records in the order sent (which, for one producer, is increasing).
fn check(partitions: &[Vec<u64>], acked: &BTreeSet<u64>, what: &str) {
    for (p, values) in partitions.iter().enumerate() {
        for pair in values.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{what}: partition {p} holds {} then {} (a duplicate or a reordering)",
                pair[0],
                pair[1]
            );
        }
        for v in values {
            assert_eq!(
                *v % PARTITIONS as u64,
                p as u64,
                "{what}: {v} in partition {p}"
            );
        }
    }
    let stored: BTreeSet<u64> = partitions.iter().flatten().copied().collect();
    let lost: Vec<&u64> = acked.difference(&stored).take(10).collect();
    assert!(
        lost.is_empty(),
        "{what}: {} acknowledged records are missing, e.g. {lost:?}",
        acked.difference(&stored).count()
    );
}

async fn our_producer_under_a_schedule(seed: u64, records: usize) {
    let schedule = Schedule::from_seed(seed, records);
    let what = format!("seed {seed} ({schedule:?})");
    eprintln!("kill schedule: {what}");
    let (_dir, bootstrap, cluster) = shared_cluster().await;
    let config = ProducerConfig::from_pairs([
        ("bootstrap.servers", bootstrap.as_str()),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
        ("retry.backoff.ms", "50"),
    ])
    .unwrap();
    let producer = Producer::new(config).await.unwrap();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let killer = tokio::spawn(run_schedule(
        cluster.clone(),
        schedule,
        acked_count.clone(),
        done.clone(),
    ));
    let started = Instant::now();
    for i in 0..records as u64 {
        // Paced, so that the schedule's kills land while records are still being written.
        if i % 1_000 == 0 {
            let due = started + Duration::from_secs_f64(i as f64 / RECORDS_PER_SECOND);
            tokio::time::sleep_until(due.into()).await;
        }
        let value = i.to_string();
        let (acked, acked_count, failed) = (acked.clone(), acked_count.clone(), failed.clone());
        producer
            .send_with_callback(
                ProducerRecord {
                    topic: TOPIC,
                    partition: Some((i % PARTITIONS as u64) as i32),
                    key: None,
                    value: Some(value.as_bytes()),
                },
                move |result| {
                    if result.is_ok() {
                        acked.lock().unwrap().insert(i);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                },
            )
            .await
            .unwrap();
    }
    producer.flush().await;
    done.store(1, Ordering::Relaxed);
    producer.close(Duration::from_secs(30)).await;
    let log = killer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{what}: {} acknowledged, {} failed in {:?}; {log:?}",
        acked.len(),
        failed.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(
        log.len() == 4,
        "{what}: the schedule did not run to its end: {log:?}"
    );
    let partitions = tokio::task::spawn_blocking(move || read_all(&bootstrap))
        .await
        .unwrap();
    check(&partitions, &acked, &what);
    assert!(
        acked.len() > records / 2,
        "{what}: only {} of {records} acknowledged",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_idempotent_producer_loses_nothing_acknowledged_when_leaders_are_killed() {
    for seed in seeds() {
        our_producer_under_a_schedule(seed, 200_000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_loses_nothing_acknowledged_when_a_leader_is_killed() {
    let seed = seeds()[0];
    let records = 50_000;
    let schedule = Schedule::from_seed(seed, records);
    let what = format!("confluent-kafka, seed {seed} ({schedule:?})");
    eprintln!("kill schedule: {what}");
    let (_dir, bootstrap, cluster) = shared_cluster().await;
    let acked_count = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // The script prints "acked N" for every delivery report; the schedule follows the count.
    let mut child = python()
        .arg(python_scripts().join("numbered_producer.py"))
        .args([bootstrap.as_str(), TOPIC, &records.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python with confluent-kafka");
    let stdout = child.stdout.take().unwrap();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let reader = {
        let (acked, acked_count) = (acked.clone(), acked_count.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("acked ") {
                    acked
                        .lock()
                        .unwrap()
                        .insert(n.trim().parse::<u64>().unwrap());
                    acked_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let killer = tokio::spawn(run_schedule(
        cluster.clone(),
        schedule,
        acked_count.clone(),
        done.clone(),
    ));
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the confluent-kafka producer did not finish within 240 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    done.store(1, Ordering::Relaxed);
    reader.join().unwrap();
    let log = killer.await.unwrap();
    assert!(status.success(), "{what}: the producer failed");
    let acked = acked.lock().unwrap().clone();
    eprintln!("{what}: {} acknowledged; {log:?}", acked.len());
    let partitions = tokio::task::spawn_blocking(move || read_all(&bootstrap))
        .await
        .unwrap();
    check(&partitions, &acked, &what);
    assert!(
        acked.len() > records / 2,
        "{what}: only {} acknowledged",
        acked.len()
    );
}

async fn wait_for_isr(bootstrap: &str, size: usize, limit: Duration) -> (i32, Vec<i32>) {
    let deadline = Instant::now() + limit;
    loop {
        let state = leadership(bootstrap, TOPIC, 0).await;
        if let Some(state) = &state
            && state.isr.len() == size
            && state.leader >= 0
        {
            return (state.leader, state.isr.clone());
        }
        assert!(
            Instant::now() < deadline,
            "the ISR of {TOPIC}-0 did not reach {size} members within {limit:?}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An acks=all produce of one record to partition 0.
fn produce_request(value: &str) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut batch = surety_core::record::BatchBuilder::new(0);
    batch.append(0, None, Some(value.as_bytes()), &[]);
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(surety::cli::topic_name(TOPIC))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.build())),
                ]),
        ])
}

/// One acks=all produce of one record to partition 0 at `leader`; the partition's error code
/// and the log end offset the leader reports afterwards.
async fn produce_one(address: &str, value: &str) -> (i16, i64) {
    use kafka_protocol::messages::ListOffsetsRequest;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut conn = Connection::connect(address, "failover-test").await.unwrap();
    let response = conn.send(produce_request(value)).await.unwrap();
    let error = response.responses[0].partition_responses[0].error_code;
    let offsets = conn
        .send(
            ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(surety::cli::topic_name(TOPIC))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1),
                        ]),
                ]),
        )
        .await
        .unwrap();
    (error, offsets.topics[0].partitions[0].offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_brokers_down_acks_all_is_refused_and_nothing_is_written() {
    let (_dir, bootstrap, cluster) = shared_cluster().await;
    let (leader, _) = wait_for_isr(&bootstrap, 3, Duration::from_secs(30)).await;
    let address = cluster.lock().unwrap().address(leader).to_string();
    let (error, end) = produce_one(&address, "first").await;
    assert_eq!((error, end), (0, 1), "a produce with the whole ISR up");
    let others: Vec<i32> = (1..=3).filter(|&b| b != leader).collect();
    for &b in &others {
        kill(&cluster, b).await;
    }
    // The leader drops them (replica.lag.time.max.ms), the controller fences them.
    wait_for_isr(&address, 1, Duration::from_secs(30)).await;
    let (error, end) = produce_one(&address, "refused").await;
    assert_eq!(
        error,
        surety_core::errors::Errors::NotEnoughReplicas.code(),
        "acks=all with the ISR below min.insync.replicas"
    );
    assert_eq!(end, 1, "nothing written for a refused produce");
    for &b in &others {
        restart(&cluster, b).await;
    }
    wait_for_isr(&bootstrap, 3, Duration::from_secs(30)).await;
    let (error, end) = produce_one(&address, "again").await;
    assert_eq!(
        (error, end),
        (0, 2),
        "writes succeed once the ISR expands again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_produce_and_a_new_leader_fences_a_stale_epoch() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest};
    let (_dir, bootstrap, cluster) = shared_cluster().await;
    let (leader, isr) = wait_for_isr(&bootstrap, 3, Duration::from_secs(30)).await;
    let follower = *isr.iter().find(|&&b| b != leader).unwrap();
    let follower_address = cluster.lock().unwrap().address(follower).to_string();
    let (error, _) = produce_one(&follower_address, "to a follower").await;
    assert_eq!(
        error,
        surety_core::errors::Errors::NotLeaderOrFollower.code(),
        "produce to a follower"
    );
    let (_, old_epoch) = leadership(&bootstrap, TOPIC, 0)
        .await
        .map(|l| (l.leader, l.leader_epoch))
        .unwrap();
    kill(&cluster, leader).await;
    let (new_leader, new_epoch) = wait_for_new_leader(&bootstrap, leader, old_epoch).await;
    let address = cluster.lock().unwrap().address(new_leader).to_string();
    let mut conn = Connection::connect(&address, "failover-test")
        .await
        .unwrap();
    let fetch = |epoch: i32| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(surety::cli::topic_name(TOPIC))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(epoch)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let stale = conn.send(fetch(old_epoch)).await.unwrap();
    assert_eq!(
        stale.responses[0].partitions[0].error_code,
        surety_core::errors::Errors::FencedLeaderEpoch.code(),
        "a consumer fetch naming epoch {old_epoch} at the leader of epoch {new_epoch}"
    );
    let current = conn.send(fetch(new_epoch)).await.unwrap();
    assert_eq!(current.responses[0].partitions[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_the_cluster_and_still_elects() {
    let (_dir, bootstrap, cluster) = shared_cluster().await;
    let (leader, _) = wait_for_isr(&bootstrap, 3, Duration::from_secs(30)).await;
    let (_, epoch) = leadership(&bootstrap, TOPIC, 0)
        .await
        .map(|l| (l.leader, l.leader_epoch))
        .unwrap();
    // The controller dies and comes back on its metadata log: nothing is re-decided.
    kill(&cluster, 0).await;
    restart(&cluster, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        leadership(&bootstrap, TOPIC, 0)
            .await
            .map(|l| (l.leader, l.leader_epoch)),
        Some((leader, epoch)),
        "the same leader in the same epoch after the controller's restart"
    );
    let address = cluster.lock().unwrap().address(leader).to_string();
    let (error, _) = produce_one(&address, "after the controller's restart").await;
    assert_eq!(error, 0);
    // It still fences and elects.
    kill(&cluster, leader).await;
    wait_for_new_leader(&bootstrap, leader, epoch).await;
}

/// Where partition 0's log ends at `address` (OffsetsForLeaderEpoch for the current epoch: the
/// leader's log end offset, committed or not).
async fn log_end_offset(address: &str, epoch: i32) -> i64 {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{BrokerId, OffsetForLeaderEpochRequest};
    let mut conn = Connection::connect(address, "failover-test").await.unwrap();
    let response = conn
        .send(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    OffsetForLeaderTopic::default()
                        .with_topic(surety::cli::topic_name(TOPIC))
                        .with_partitions(vec![
                            OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(epoch)
                                .with_leader_epoch(epoch),
                        ]),
                ]),
        )
        .await
        .unwrap();
    let partition = &response.topics[0].partitions[0];
    assert_eq!(
        partition.error_code, 0,
        "OffsetsForLeaderEpoch at the leader"
    );
    partition.end_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produce_requests_are_appended_before_the_first_is_acknowledged() {
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest};
    let (_dir, bootstrap, cluster) = shared_cluster().await;
    let (leader, isr) = wait_for_isr(&bootstrap, 3, Duration::from_secs(30)).await;
    let epoch = leadership(&bootstrap, TOPIC, 0).await.unwrap().leader_epoch;
    let (address, followers) = {
        let cluster = cluster.lock().unwrap();
        let followers: Vec<u32> = isr
            .iter()
            .filter(|&&b| b != leader)
            .map(|&b| cluster.node(b).pid())
            .collect();
        (cluster.address(leader).to_string(), followers)
    };
    let start = log_end_offset(&address, epoch).await;
    let mut conn = Connection::connect(&address, "failover-test")
        .await
        .unwrap();
    // Frozen followers fetch nothing, so no acks=all write is committed until they thaw (well
    // within replica.lag.time.max.ms and the broker session, 2 s each).
    send_signal(&followers, libc::SIGSTOP);
    let mut sent = Vec::new();
    for value in ["one", "two", "three"] {
        sent.push(conn.send_pipelined(produce_request(value)).await.unwrap());
    }
    let metadata = conn
        .send_pipelined(MetadataRequest::default().with_topics(Some(vec![])))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(800);
    let mut end = log_end_offset(&address, epoch).await;
    while end < start + 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        end = log_end_offset(&address, epoch).await;
    }
    send_signal(&followers, libc::SIGCONT);
    assert_eq!(
        end,
        start + 3,
        "all three pipelined requests appended while the first waited for its followers"
    );
    for (i, in_flight) in sent.into_iter().enumerate() {
        let response = conn.receive::<ProduceRequest>(in_flight).await.unwrap();
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(
            (partition.error_code, partition.base_offset),
            (0, start + i as i64),
            "produce {i}, answered in the order sent, at the offset of its place in that order"
        );
    }
    // Anything else waits for the produce answers before it: its answer comes last.
    conn.receive::<MetadataRequest>(metadata).await.unwrap();
}
