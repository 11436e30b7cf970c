//! A consumer group in a cluster follows the leadership of its `__consumer_offsets` partition,
//! as Kafka's does. A controller and three brokers, a topic of 3 partitions with replication
//! factor 3, and a confluent-kafka consumer that commits after every batch it reads. Once it
//! has committed the first batch the test SIGKILLs the broker leading the group's offsets
//! partition (its coordinator). Then:
//! - the group's committed offsets are read back from the new leader, unchanged: a commit was
//!   answered only once the offsets partition's replicas had it;
//! - the running consumer finds the new coordinator, reads on from its committed offsets
//!   (nothing below them again) and commits what follows, losing no record;
//! - a new member of the group joins at the new coordinator and starts where the first left.
//!
//! A second test stops the coordinator with SIGSTOP instead: when it runs again it learns from
//! the metadata log that it no longer leads the partition and forgets the group; led again
//! later, it reads the partition back and serves the commits made meanwhile at the other
//! coordinator, not the ones it had in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;
use surety::client::Connection;
use surety::producer::{Producer, ProducerConfig, ProducerRecord};
use surety_core::group::placement::offsets_partition_for;
use surety_tests::cluster::{create_topic, leadership};
use surety_tests::{ClusterProcesses, python, run_with_timeout, send_signal};

const TOPIC: &str = "orders";
const GROUP: &str = "follows-its-partition";
const OFFSETS_TOPIC: &str = "__consumer_offsets";
const PARTITIONS: i32 = 3;
const OFFSETS_PARTITIONS: i32 = 3;
/// Records per batch; batch `b` holds the values `b * BATCH .. (b + 1) * BATCH`, value `v` in
/// partition `v % PARTITIONS`.
const BATCH: u64 = 600;

/// Fast failure detection, so that the coordinator's death is noticed within the test's time.
const OVERRIDES: &[&str] = &[
    "broker.heartbeat.interval.ms=250",
    "broker.session.timeout.ms=2000",
    "replica.lag.time.max.ms=2000",
    "replica.fetch.backoff.ms=100",
    "default.replication.factor=3",
    "group.initial.rebalance.delay.ms=0",
    "offsets.topic.num.partitions=3",
    "offsets.topic.replication.factor=3",
];

/// A confluent-kafka consumer, run as `python -c SCRIPT MODE BOOTSTRAP TOPIC GROUP ARG`.
///
/// `consume STOP_FILE`: reads in the group until STOP_FILE exists, printing
/// `{"read": [partition, offset, value]}` per record and `{"committed": {partition: offset}}`
/// after each synchronous commit; a commit that fails (the coordinator moving) is printed as
/// `{"commit_error": ...}` and tried again.
///
/// `committed PARTITIONS`: prints the group's committed offsets once OffsetFetch answers,
/// without joining the group.
const CONSUMER: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer, KafkaException, TopicPartition

mode, bootstrap, topic, group, arg = sys.argv[1:6]
config = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": "cluster-groups",
          "auto.offset.reset": "earliest", "enable.auto.commit": False,
          "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
          "topic.metadata.refresh.interval.ms": 1000}

def out(**kw):
    print(json.dumps(kw), flush=True)

c = Consumer(config)
deadline = time.time() + 150
if mode == "committed":
    while True:
        try:
            got = c.committed([TopicPartition(topic, p) for p in range(int(arg))], timeout=5)
            out(committed={str(tp.partition): tp.offset for tp in got})
            break
        except KafkaException as e:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    c.close()
    sys.exit(0)

c.subscribe([topic])
dirty = False
while not os.path.exists(arg) and time.time() < deadline:
    for m in c.consume(num_messages=50, timeout=0.2):
        if m.error():
            continue
        out(read=[m.partition(), m.offset(), int(m.value())])
        dirty = True
    if dirty:
        try:
            done = c.commit(asynchronous=False)
            out(committed={str(tp.partition): tp.offset for tp in done
                           if tp.error is None and tp.offset >= 0})
            dirty = False
        except KafkaException as e:
            out(commit_error=str(e))
            time.sleep(0.1)
c.close()
"#;

/// A running `consume` member and what it printed so far.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stop: std::path::PathBuf,
}

impl Member {
    fn start(bootstrap: &str, stop: &Path) -> Self {
        let mut child = python()
            .args(["-c", CONSUMER, "consume", bootstrap, TOPIC, GROUP])
            .arg(stop)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python with confluent-kafka");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str(&line) {
                        Ok(value) => lines.lock().unwrap().push(value),
                        Err(_) => eprintln!("consumer: {line}"),
                    }
                }
            })
        };
        Member {
            child,
            lines,
            reader: Some(reader),
            stop: stop.to_path_buf(),
        }
    }

    fn printed(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The offsets of its last successful commit that covered each partition.
    fn committed(&self) -> BTreeMap<i32, i64> {
        committed_in(&self.lines.lock().unwrap())
    }

    /// Waits until its commits reach `ends`; panics with what it printed if they do not within
    /// `limit`.
    fn wait_for_commits(&self, ends: &BTreeMap<i32, i64>, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while self.committed() != *ends {
            assert!(
                Instant::now() < deadline,
                "{what}: commits did not reach {ends:?} within {limit:?}; last {:?}, errors: {:?}",
                self.committed(),
                commit_errors(&self.lines.lock().unwrap()),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks it to leave the group, and returns everything it printed.
    fn stop(mut self) -> Vec<Value> {
        std::fs::write(&self.stop, b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the consumer exited with {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the consumer did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn committed_in(lines: &[Value]) -> BTreeMap<i32, i64> {
    let mut committed = BTreeMap::new();
    for line in lines {
        if let Some(offsets) = line.get("committed").and_then(Value::as_object) {
            for (p, o) in offsets {
                committed.insert(p.parse().unwrap(), o.as_i64().unwrap());
            }
        }
    }
    committed
}

fn commit_errors(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.get("commit_error").map(Value::to_string))
        .collect()
}

/// The records a member read: (partition, offset, value).
fn reads(lines: &[Value]) -> Vec<(i32, i64, u64)> {
    lines
        .iter()
        .filter_map(|l| l.get("read").and_then(Value::as_array))
        .map(|r| {
            (
                r[0].as_i64().unwrap() as i32,
                r[1].as_i64().unwrap(),
                r[2].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The group's committed offsets, as a consumer outside the group fetches them.
fn fetch_committed(bootstrap: &str) -> BTreeMap<i32, i64> {
    let out = run_with_timeout(
        python().args([
            "-c",
            CONSUMER,
            "committed",
            bootstrap,
            TOPIC,
            GROUP,
            &PARTITIONS.to_string(),
        ]),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "fetching committed offsets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    committed_in(&lines)
}

/// Writes batch `batch` with `acks=all`; returns each partition's end offset after it.
async fn produce(bootstrap: &str, batch: u64) -> BTreeMap<i32, i64> {
    let config = ProducerConfig::from_pairs([
        ("bootstrap.servers", bootstrap),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
        ("retry.backoff.ms", "50"),
    ])
    .unwrap();
    let producer = Producer::new(config).await.unwrap();
    let mut pending = Vec::new();
    for v in batch * BATCH..(batch + 1) * BATCH {
        let value = v.to_string();
        let record = ProducerRecord {
            topic: TOPIC,
            partition: Some((v % PARTITIONS as u64) as i32),
            key: None,
            value: Some(value.as_bytes()),
        };
        pending.push(producer.enqueue(record).await.unwrap());
    }
    let mut ends = BTreeMap::new();
    for future in pending {
        let metadata = future.await.expect("an acknowledged record");
        let end = ends.entry(metadata.topic_partition.partition).or_insert(0);
        *end = (*end).max(metadata.offset + 1);
    }
    producer.close(Duration::from_secs(30)).await;
    ends
}

/// The leader of the group's `__consumer_offsets` partition, as broker `address` reports it.
async fn offsets_leader(address: &str) -> Option<i32> {
    let index = offsets_partition_for(GROUP, OFFSETS_PARTITIONS);
    leadership(address, OFFSETS_TOPIC, index)
        .await
        .map(|l| l.leader)
        .filter(|&l| l >= 0)
}

/// Waits until `ready` holds (polled every 100 ms); panics naming `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The addresses of every broker but `except`, for `bootstrap.servers`.
fn bootstrap_without(cluster: &ClusterProcesses, except: &[i32]) -> String {
    cluster
        .broker_ids()
        .filter(|b| !except.contains(b))
        .map(|b| cluster.address(b).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A cluster with the topic, one at a time: two clusters of four processes and their clients
/// at once would make the timings of two-core machines the test's subject.
fn start_cluster(dir: &Path) -> (ClusterProcesses, std::sync::MutexGuard<'static, ()>) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cluster = ClusterProcesses::start(dir, 3, OVERRIDES);
    create_topic(&cluster.bootstrap(), TOPIC, PARTITIONS, 3, &[]);
    (cluster, guard)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// FindCoordinator for the group, asked of broker `address`: the coordinator's node id.
async fn coordinator(address: &str) -> Option<i32> {
    let mut conn = Connection::connect(address, "cluster-groups-test")
        .await
        .ok()?;
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str(GROUP));
    let response = conn.send_at(request, 3).await.ok()?;
    (response.error_code == 0).then_some(response.node_id.0)
}

#[test]
fn the_group_coordinator_follows_its_offsets_partition_when_its_leader_is_killed() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, _one) = start_cluster(dir.path());
    let bootstrap = cluster.bootstrap();
    let first = cluster.address(1).to_string();

    let ends1 = runtime.block_on(produce(&bootstrap, 0));
    let member = Member::start(&bootstrap, &dir.path().join("stop-first"));
    member.wait_for_commits(&ends1, Duration::from_secs(90), "first batch");

    // The coordinator FindCoordinator names is the leader of the group's offsets partition.
    let (old, leader) =
        runtime.block_on(async { (coordinator(&first).await, offsets_leader(&first).await) });
    let old = old.expect("a coordinator");
    assert_eq!(
        Some(old),
        leader,
        "the coordinator leads the group's partition"
    );
    cluster.kill(old);
    let read_before_kill = member.printed();
    eprintln!("killed broker {old}, the coordinator of {GROUP}");

    // The new leader read the partition back: the commits answered before the kill are there.
    let survivor = cluster
        .broker_ids()
        .find(|&b| b != old)
        .map(|b| cluster.address(b).to_string())
        .unwrap();
    let bootstrap_alive = bootstrap_without(&cluster, &[old]);
    assert_eq!(
        fetch_committed(&bootstrap_alive),
        ends1,
        "committed offsets after the coordinator moved"
    );
    let new = runtime
        .block_on(coordinator(&survivor))
        .expect("a new coordinator");
    assert_ne!(new, old, "the coordinator moved off the killed broker");

    // The running member reads on from its commits and commits through the new coordinator.
    let ends2 = runtime.block_on(produce(&bootstrap_alive, 1));
    member.wait_for_commits(&ends2, Duration::from_secs(90), "second batch");
    let lines = member.stop();
    let read = reads(&lines);
    let values: BTreeSet<u64> = read.iter().map(|&(_, _, v)| v).collect();
    let missing: Vec<u64> = (0..2 * BATCH).filter(|v| !values.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "records never read: {} (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for &(p, offset, value) in &reads(&lines[read_before_kill..]) {
        assert!(
            offset >= ends1[&p],
            "after the kill the member read partition {p} offset {offset} (value {value}) \
             again, below its committed offset {}",
            ends1[&p]
        );
    }
    assert_eq!(fetch_committed(&bootstrap_alive), ends2);

    // A new member joins at the new coordinator and starts at the committed offsets.
    let ends3 = runtime.block_on(produce(&bootstrap_alive, 2));
    let second = Member::start(&bootstrap_alive, &dir.path().join("stop-second"));
    second.wait_for_commits(&ends3, Duration::from_secs(90), "third batch");
    let read = reads(&second.stop());
    for &(p, offset, value) in &read {
        assert!(
            offset >= ends2[&p],
            "the new member read partition {p} offset {offset} (value {value}), below the \
             committed {}",
            ends2[&p]
        );
    }
    let values: BTreeSet<u64> = read.iter().map(|&(_, _, v)| v).collect();
    assert!(
        (2 * BATCH..3 * BATCH).all(|v| values.contains(&v)),
        "the new member missed records of the third batch"
    );
    drop(cluster);
}

#[test]
fn a_coordinator_that_lost_its_partition_forgets_the_group_and_reads_it_back_when_it_leads_again() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, _one) = start_cluster(dir.path());
    let bootstrap = cluster.bootstrap();
    let first = cluster.address(1).to_string();

    let ends1 = runtime.block_on(produce(&bootstrap, 0));
    let member = Member::start(&bootstrap, &dir.path().join("stop-first"));
    member.wait_for_commits(&ends1, Duration::from_secs(90), "first batch");
    member.stop();
    let old = runtime
        .block_on(coordinator(&first))
        .expect("a coordinator");

    // Stopped, the coordinator is fenced and another broker leads the group's partition.
    send_signal(&[cluster.broker(old).pid()], libc::SIGSTOP);
    let others = bootstrap_without(&cluster, &[old]);
    let other = others.split(',').next().unwrap().to_string();
    let mut new = None;
    wait_until("another coordinator", Duration::from_secs(60), || {
        new = runtime.block_on(coordinator(&other)).filter(|&c| c != old);
        new.is_some()
    });
    let new = new.unwrap();
    assert_eq!(fetch_committed(&others), ends1);
    let ends2 = runtime.block_on(produce(&others, 1));
    let member = Member::start(&others, &dir.path().join("stop-second"));
    member.wait_for_commits(&ends2, Duration::from_secs(90), "second batch");
    member.stop();

    // Running again, the old coordinator follows the partition, and forgets the group.
    send_signal(&[cluster.broker(old).pid()], libc::SIGCONT);
    let old_address = cluster.address(old).to_string();
    let index = offsets_partition_for(GROUP, OFFSETS_PARTITIONS);
    wait_until(
        "the old coordinator back in the partition's ISR",
        Duration::from_secs(60),
        || {
            runtime
                .block_on(leadership(&old_address, OFFSETS_TOPIC, index))
                .is_some_and(|l| l.leader == new && l.isr.contains(&old))
        },
    );
    assert!(
        cluster
            .broker(old)
            .wait_for_log_line("unloaded 1 groups", Duration::from_secs(30))
            .is_some(),
        "broker {old} did not unload the group"
    );

    // Led by it again (the two others killed), it serves the commits made without it.
    let third = cluster
        .broker_ids()
        .find(|&b| b != old && b != new)
        .unwrap();
    cluster.kill(new);
    cluster.kill(third);
    wait_until(
        "the old coordinator leading again",
        Duration::from_secs(60),
        || runtime.block_on(coordinator(&old_address)) == Some(old),
    );
    assert_eq!(
        fetch_committed(&old_address),
        ends2,
        "committed offsets at broker {old}, leading the group's partition again"
    );
}
