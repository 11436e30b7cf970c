//! Topic administration in a cluster, through the controller: CreatePartitions grows a
//! replicated topic on every broker, DeleteTopics removes it from every broker's disk; and
//! CreatePartitions on a single node.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use surety_tests::{BrokerProcess, ClusterProcesses, run_with_timeout, surety_binary};

fn surety(bootstrap: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["topics", "--bootstrap-server", bootstrap];
    all.extend_from_slice(args);
    let out = run_with_timeout(
        Command::new(surety_binary()).args(&all),
        None,
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls `describe` until `done` holds of its output (at most 20 s).
fn wait_for_describe(bootstrap: &str, topic: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = surety(bootstrap, &["describe", topic]);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "describe never satisfied: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn partition_dirs(data: &Path, topic: &str) -> Vec<String> {
    std::fs::read_dir(data)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{topic}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_replicated_topic_grows_on_every_broker_and_deletion_removes_it_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterProcesses::start(dir.path(), 3, &[]);
    let bootstrap = cluster.bootstrap();
    let (ok, text) = surety(
        &bootstrap,
        &[
            "create",
            "grow",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = surety(&bootstrap, &["alter", "grow", "--partitions", "5"]);
    assert!(ok, "{text}");
    let (ok, text) = surety(&bootstrap, &["alter", "grow", "--partitions", "4"]);
    assert!(
        !ok && text.contains("InvalidPartitions"),
        "shrinking: {text}"
    );
    wait_for_describe(&bootstrap, "grow", |text| {
        text.contains("PartitionCount: 5")
            && text
                .lines()
                .filter(|l| l.contains("Partition: ") && l.contains("Isr: "))
                .filter(|l| {
                    let isr = l.split("Isr: ").nth(1).unwrap_or("");
                    isr.split(',').count() == 3 && !l.contains("Leader: -1")
                })
                .count()
                == 5
    });
    for broker in 1..=3 {
        let data = &cluster.broker(broker).data_dir;
        let mut dirs = partition_dirs(data, "grow");
        dirs.sort();
        assert_eq!(dirs.len(), 5, "broker {broker} holds {dirs:?}");
    }
    let (ok, text) = surety(&bootstrap, &["delete", "grow"]);
    assert!(ok, "{text}");
    wait_for_describe(&bootstrap, "grow", |text| {
        text.contains("UnknownTopicOrPartition")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    for broker in 1..=3 {
        let data = cluster.broker(broker).data_dir.clone();
        while !partition_dirs(&data, "grow").is_empty() {
            assert!(
                Instant::now() < deadline,
                "broker {broker} still holds {:?}",
                partition_dirs(&data, "grow")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_single_node_adds_partitions_too() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let (ok, text) = surety(&broker.address, &["create", "solo", "--partitions", "1"]);
    assert!(ok, "{text}");
    let (ok, text) = surety(&broker.address, &["alter", "solo", "--partitions", "3"]);
    assert!(ok, "{text}");
    let text = wait_for_describe(&broker.address, "solo", |t| t.contains("PartitionCount: 3"));
    assert_eq!(text.matches("Leader: 1").count(), 3, "{text}");
    let (ok, text) = surety(&broker.address, &["alter", "solo", "--partitions", "2"]);
    assert!(!ok && text.contains("InvalidPartitions"), "{text}");
}
