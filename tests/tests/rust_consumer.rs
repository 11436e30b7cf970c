//! Surety's own consumer in a group: two of them share a topic's partitions and read every
//! record once between them, a restarted one resumes from the group's commits, and one shares
//! a group with a confluent-kafka (librdkafka) member, eagerly and cooperatively (KIP-429).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use surety::consumer::{Consumer, ConsumerConfig, ConsumerRecord, RebalanceListener};
use surety_core::group::TopicPartition;
use surety_tests::{BrokerProcess, create_topic, kcat_produce_lines, python, python_scripts};

fn consumer(broker: &BrokerProcess, group: &str, client: &str) -> Consumer {
    consumer_with(broker, group, client, "range")
}

fn consumer_with(broker: &BrokerProcess, group: &str, client: &str, strategy: &str) -> Consumer {
    let config = ConsumerConfig::from_pairs([
        ("bootstrap.servers", broker.address.as_str()),
        ("group.id", group),
        ("client.id", client),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "500"),
        ("partition.assignment.strategy", strategy),
    ])
    .unwrap();
    Consumer::new(config)
}

/// What a listener was told: "revoked" or "assigned", and the partitions.
type Calls = Vec<(&'static str, Vec<i32>)>;

/// Records what the listener is told.
#[derive(Clone, Default)]
struct Told(std::sync::Arc<std::sync::Mutex<Calls>>);

impl RebalanceListener for Told {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        let p = partitions.iter().map(|tp| tp.partition).collect();
        self.0.lock().unwrap().push(("revoked", p));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let p = partitions.iter().map(|tp| tp.partition).collect();
        self.0.lock().unwrap().push(("assigned", p));
    }
}

/// Polls until `done` says so (or a minute passes); returns what was read.
async fn poll_until(
    c: &mut Consumer,
    mut done: impl FnMut(&Consumer, &[ConsumerRecord]) -> bool,
) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = Vec::new();
    while !done(c, &read) {
        assert!(Instant::now() < deadline, "timed out; read {}", read.len());
        read.extend(c.poll(Duration::from_millis(100)).await.unwrap());
    }
    read
}

/// A confluent-kafka member of `group` (tests/python/one_member.py, with `extra` arguments)
/// until `stop` exists, and the lines it prints.
fn confluent_member(
    broker: &BrokerProcess,
    topic: &str,
    group: &str,
    stop: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = python()
        .arg(python_scripts().join("one_member.py"))
        .args([&broker.address, topic, group])
        .arg(stop)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

fn partitions(c: &Consumer) -> Vec<i32> {
    let mut p: Vec<i32> = c.assignment().iter().map(|tp| tp.partition).collect();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_consumers_share_a_topic_and_a_restarted_one_resumes_from_commits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker, "shared", 4);
    let lines: String = (0..400).map(|i| format!("record-{i:03}\n")).collect();
    kcat_produce_lines(&broker, "shared", &lines, "400 records");

    let mut a = consumer(&broker, "rust-group", "a");
    a.subscribe(&["shared"], None).unwrap();
    let mut b = consumer(&broker, "rust-group", "b");
    b.subscribe(&["shared"], None).unwrap();
    // Each in its own task, as an application would run them; both stop once they share the
    // partitions and every record was read by one of them.
    let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run = |mut c: Consumer| {
        let total = total.clone();
        tokio::spawn(async move {
            let mut counted = 0;
            let read = poll_until(&mut c, |c, read| {
                total.fetch_add(read.len() - counted, std::sync::atomic::Ordering::SeqCst);
                counted = read.len();
                c.assignment().len() == 2 && total.load(std::sync::atomic::Ordering::SeqCst) >= 400
            })
            .await;
            let owned = partitions(&c);
            c.commit_sync().await.unwrap();
            (c, owned, read)
        })
    };
    let (ta, tb) = (run(a), run(b));
    let (a, owned_a, read_a) = ta.await.unwrap();
    let (b, owned_b, read_b) = tb.await.unwrap();
    let mut owned: Vec<i32> = owned_a.iter().chain(&owned_b).copied().collect();
    owned.sort();
    assert_eq!(owned, [0, 1, 2, 3], "{owned_a:?} and {owned_b:?}");
    let values: BTreeSet<Vec<u8>> = read_a
        .iter()
        .chain(&read_b)
        .map(|r| r.value.clone().unwrap().to_vec())
        .collect();
    assert_eq!(values.len(), 400, "every record between them");
    assert_eq!(read_a.len() + read_b.len(), 400, "and none twice");
    a.close().await.unwrap();
    b.close().await.unwrap();

    // A new member of the group starts at the commits: it reads only what comes after.
    let more: String = (0..8).map(|i| format!("later-{i}\n")).collect();
    kcat_produce_lines(&broker, "shared", &more, "8 more");
    let mut c = consumer(&broker, "rust-group", "c");
    c.subscribe(&["shared"], None).unwrap();
    let read = poll_until(&mut c, |_, read| read.len() >= 8).await;
    // Anything older would have arrived in the same fetches.
    let read: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).to_string())
        .collect();
    assert!(read.iter().all(|v| v.starts_with("later-")), "{read:?}");
    assert_eq!(read.len(), 8);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_consumer_and_a_confluent_kafka_consumer_share_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker, "mixed", 4);
    let lines: String = (0..200).map(|i| format!("m-{i}\n")).collect();
    kcat_produce_lines(&broker, "mixed", &lines, "200 records");
    let stop = dir.path().join("stop");
    let (mut child, lines) = confluent_member(&broker, "mixed", "mixed-group", &stop, &[]);
    // The confluent member gets everything first.
    let first = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    let mut last = first;
    while last != r#"{"assignment": [0, 1, 2, 3]}"# {
        last = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    let mut rust = consumer(&broker, "mixed-group", "rust");
    rust.subscribe(&["mixed"], None).unwrap();
    poll_until(&mut rust, |c, _| c.assignment().len() == 2).await;
    let theirs = loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap();
        if line.contains("assignment") && line != r#"{"assignment": []}"# {
            break line;
        }
    };
    let mine = partitions(&rust);
    let all: Vec<i32> = (0..4).filter(|p| !mine.contains(p)).collect();
    assert_eq!(
        theirs,
        format!(
            r#"{{"assignment": [{}]}}"#,
            all.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "librdkafka's member owns exactly the partitions the Rust member does not"
    );
    rust.close().await.unwrap();
    std::fs::write(&stop, b"").unwrap();
    assert!(child.wait().unwrap().success());
}

/// Incremental rebalancing (KIP-429) across clients: our consumer leads with
/// `cooperative-sticky`, a librdkafka member joins, and only the two partitions that move are
/// revoked (by us, never all four), after which each owns two; then librdkafka leads, ours
/// leaves and rejoins, and librdkafka gives up only what moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_members_of_two_clients_revoke_only_what_moves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker, "coop", 4);
    let lines: String = (0..200).map(|i| format!("c-{i}\n")).collect();
    kcat_produce_lines(&broker, "coop", &lines, "200 records");

    let told = Told::default();
    let mut rust = consumer_with(&broker, "coop-group", "rust", "cooperative-sticky");
    rust.subscribe(&["coop"], Some(Box::new(told.clone())))
        .unwrap();
    poll_until(&mut rust, |c, _| c.assignment().len() == 4).await;

    let stop = dir.path().join("stop");
    let (mut child, lines) = confluent_member(
        &broker,
        "coop",
        "coop-group",
        &stop,
        &["cooperative-sticky"],
    );
    // Ours keeps polling (and processing what it keeps) until it owns two.
    poll_until(&mut rust, |c, _| c.assignment().len() == 2).await;
    let mine = partitions(&rust);
    let theirs: Vec<i32> = (0..4).filter(|p| !mine.contains(p)).collect();
    let expected = format!(
        r#"{{"assignment": [{}]}}"#,
        theirs
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Keep ours polling (heartbeats and rebalances run beside it, but records wait).
        rust.poll(Duration::from_millis(50)).await.unwrap();
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) if line == expected => break,
            Ok(line) => assert!(
                !line.contains("revoked") || line == r#"{"revoked": []}"#,
                "librdkafka revoked: {line}"
            ),
            Err(_) => assert!(Instant::now() < deadline, "librdkafka never got {expected}"),
        }
    }
    let said = told.0.lock().unwrap().clone();
    let revoked: Vec<i32> = said
        .iter()
        .filter(|(what, _)| *what == "revoked")
        .flat_map(|(_, p)| p.clone())
        .collect();
    let mut revoked_sorted = revoked.clone();
    revoked_sorted.sort();
    assert_eq!(
        revoked_sorted, theirs,
        "ours revoked only what moved: {said:?}"
    );
    assert_eq!(partitions(&rust), mine, "and kept the rest throughout");

    // Ours leaves: librdkafka, now alone, is given the other two and revokes nothing.
    rust.close().await.unwrap();
    let expected = r#"{"assignment": [0, 1, 2, 3]}"#;
    loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(
            !line.contains("revoked") || line == r#"{"revoked": []}"#,
            "{line}"
        );
        if line == expected {
            break;
        }
    }
    // Ours joins again, now led by librdkafka's assignor: it gives up two, ours gets them.
    let mut rust = consumer_with(&broker, "coop-group", "rust-again", "cooperative-sticky");
    rust.subscribe(&["coop"], None).unwrap();
    poll_until(&mut rust, |c, _| c.assignment().len() == 2).await;
    let mine = partitions(&rust);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut given_up = Vec::new();
    while given_up.len() < 2 {
        rust.poll(Duration::from_millis(50)).await.unwrap();
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(50))
            && let Some(list) = line.strip_prefix(r#"{"revoked": ["#)
        {
            given_up.extend(
                list.trim_end_matches("]}")
                    .split(", ")
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse::<i32>().unwrap()),
            );
        }
        assert!(Instant::now() < deadline, "librdkafka revoked {given_up:?}");
    }
    given_up.sort();
    assert_eq!(
        given_up, mine,
        "librdkafka revoked exactly what ours now owns"
    );
    rust.close().await.unwrap();
    std::fs::write(&stop, b"").unwrap();
    assert!(child.wait().unwrap().success());
}
