//! Trace conformance: a three-broker cluster records every actor step it takes
//! (`surety.test.trace.dir`) while its producer writes with `acks=all` and a partition's leader
//! is SIGKILLed and restarted; `model replay` runs those steps through core's actors, finds
//! the same effects, and the replication properties hold on every state the cluster went
//! through. The same replay fails on the trace with one effect changed, and on a trace of
//! brokers running a deliberately broken rule.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use surety::producer::{Producer, ProducerConfig, ProducerRecord};
use surety_tests::cluster::{create_topic, leadership};
use surety_tests::{ClusterProcesses, send_signal};

const TOPIC: &str = "traced";

fn overrides(trace: &Path, extra: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = [
        "broker.heartbeat.interval.ms=250",
        "broker.session.timeout.ms=2000",
        "replica.lag.time.max.ms=2000",
        "replica.fetch.backoff.ms=100",
        "min.insync.replicas=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(format!("surety.test.trace.dir={}", trace.display()));
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

/// What happens to the cluster a third of the way through.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL partition 0's leader, restart it half a second later.
    KillLeader,
    /// Freeze partition 0's followers (SIGSTOP) for a second of writes, SIGKILL the leader,
    /// thaw the followers: whatever the leader acknowledged meanwhile only it had.
    IsolateThenKillLeader,
}

/// Starts a traced cluster with a 3-partition RF 3 topic, writes `records` numbered records
/// with acks=all (idempotent), injects `fault` after a third of them, then stops every node.
/// Returns the acknowledged count.
async fn traced_run(
    dir: &Path,
    trace: &Path,
    extra: &[&str],
    records: usize,
    fault: Fault,
) -> usize {
    let overrides = overrides(trace, extra);
    let (dir_owned, overrides_owned) = (dir.to_path_buf(), overrides.clone());
    let cluster = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = overrides_owned.iter().map(String::as_str).collect();
        let cluster = ClusterProcesses::start(&dir_owned, 3, &refs);
        create_topic(&cluster.bootstrap(), TOPIC, 3, 3, &[]);
        cluster
    })
    .await
    .unwrap();
    let bootstrap = cluster.bootstrap();
    let cluster = Arc::new(std::sync::Mutex::new(cluster));
    let config = ProducerConfig::from_pairs([
        ("bootstrap.servers", bootstrap.as_str()),
        ("acks", "all"),
        ("linger.ms", "2"),
        ("retry.backoff.ms", "50"),
        ("delivery.timeout.ms", "30000"),
    ])
    .unwrap();
    let producer = Producer::new(config).await.unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let mut isolated_until: Option<(tokio::time::Instant, i32, Vec<u32>)> = None;
    for i in 0..records {
        if i % 500 == 0 {
            // About 5,000 records a second: the kill lands mid-stream.
            tokio::time::sleep_until(started + Duration::from_millis(i as u64 / 5)).await;
        }
        if i == records / 3 {
            let victim = leadership(&bootstrap, TOPIC, 0)
                .await
                .map(|l| l.leader)
                .filter(|&l| l >= 0)
                .expect("partition 0 has a leader");
            let cluster = cluster.clone();
            match fault {
                Fault::KillLeader => tokio::task::spawn_blocking(move || {
                    let mut cluster = cluster.lock().unwrap();
                    cluster.kill(victim);
                    std::thread::sleep(Duration::from_millis(500));
                    cluster.restart(victim);
                })
                .await
                .unwrap(),
                Fault::IsolateThenKillLeader => {
                    let followers: Vec<u32> = {
                        let cluster = cluster.lock().unwrap();
                        (1..=3)
                            .filter(|&b| b != victim)
                            .map(|b| cluster.broker(b).pid())
                            .collect()
                    };
                    send_signal(&followers, libc::SIGSTOP);
                    // Keep writing while they are frozen (less than the lag and session
                    // limits, so they are still in the ISR when the leader dies).
                    isolated_until = Some((
                        tokio::time::Instant::now() + Duration::from_millis(1_000),
                        victim,
                        followers,
                    ));
                }
            }
        }
        if let Some((until, victim, followers)) = &isolated_until
            && tokio::time::Instant::now() >= *until
        {
            let (victim, followers) = (*victim, followers.clone());
            isolated_until = None;
            let cluster = cluster.clone();
            tokio::task::spawn_blocking(move || cluster.lock().unwrap().kill(victim))
                .await
                .unwrap();
            send_signal(&followers, libc::SIGCONT);
        }
        let value = i.to_string();
        let acked = acked.clone();
        producer
            .send_with_callback(
                ProducerRecord {
                    topic: TOPIC,
                    partition: Some((i % 3) as i32),
                    key: None,
                    value: Some(value.as_bytes()),
                },
                move |result| {
                    if result.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                },
            )
            .await
            .unwrap();
    }
    producer.flush().await;
    producer.close(Duration::from_secs(30)).await;
    tokio::task::spawn_blocking(move || {
        cluster.lock().unwrap().terminate_all();
    })
    .await
    .unwrap();
    acked.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_run_replays_through_the_model_and_a_tampered_trace_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let acked = traced_run(dir.path(), &trace, &[], 15_000, Fault::KillLeader).await;
    assert!(acked > 10_000, "only {acked} acknowledged");
    let report = model::replay::replay_dir(&trace).unwrap_or_else(|e| panic!("replay: {e}"));
    eprintln!("{report:?}");
    assert_eq!(report.files, 4, "a trace per node");
    assert!(
        report.acked_records >= acked,
        "every acknowledged record was checked: {} < {acked}",
        report.acked_records
    );
    assert!(report.controller_steps > 0 && report.replica_steps > 200);

    // One effect changed: the high watermark a leader sent a follower, in one step.
    let tampered = dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    let mut changed = false;
    let field = "\"Records\":{\"high_watermark\":";
    for entry in std::fs::read_dir(&trace).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for line in lines.iter_mut().skip(100) {
            if changed {
                break;
            }
            let Some(effects) = line.find("\"effects\":") else {
                continue;
            };
            let Some(at) = line[effects..].find(field).map(|a| a + effects) else {
                continue;
            };
            let digits = at + field.len();
            let end = digits + line[digits..].find(|c: char| !c.is_ascii_digit()).unwrap();
            let hw: i64 = line[digits..end].parse().unwrap();
            line.replace_range(digits..end, &(hw + 1).to_string());
            changed = true;
        }
        std::fs::write(tampered.join(path.file_name().unwrap()), lines.join("\n")).unwrap();
    }
    assert!(changed, "no high watermark sent in the trace");
    let failure = model::replay::replay_dir(&tampered).expect_err("a tampered trace must fail");
    eprintln!("tampered: {failure}");
    assert!(failure.what.contains("effects differ"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_fails_on_a_trace_of_brokers_that_ack_before_replicating() {
    // acks=all answered as soon as the leader has appended (the model's `acks-leader-only`):
    // records the leader acknowledged while its followers were frozen are gone from the new
    // leader. Timing could still save them (the followers thaw before the leader dies), so
    // a few tries.
    for attempt in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace");
        traced_run(
            dir.path(),
            &trace,
            &["surety.test.broken.variant=acks-leader-only"],
            15_000,
            Fault::IsolateThenKillLeader,
        )
        .await;
        match model::replay::replay_dir(&trace) {
            Err(failure) => {
                eprintln!("attempt {attempt}: {failure}");
                assert!(
                    failure.what.contains("acked_records_never_lost"),
                    "the broken rule's property: {failure}"
                );
                return;
            }
            Ok(report) => eprintln!("attempt {attempt}: no loss this time: {report:?}"),
        }
    }
    panic!("three runs of brokers acking before replication and no acknowledged record lost");
}
