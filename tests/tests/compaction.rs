//! Log compaction end to end: 100,000 updates over 1,000 keys to a `cleanup.policy=compact`
//! topic, the cleaner left to run, and a reader gets exactly the newest value of each key.
//! A record without a key is refused. And `__consumer_offsets`, compacted, stays bounded under
//! a consumer that commits after every record.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use surety_tests::{
    BrokerProcess, create_topic_with_configs, kcat, kcat_consume_all, kcat_produce,
    kcat_produce_lines, python, python_scripts, run_with_timeout,
};

const KEYS: usize = 1_000;
const UPDATES: usize = 100_000;

/// The newest value of each key as read back, and how many records were read.
fn read_table(broker: &BrokerProcess, topic: &str) -> (BTreeMap<String, String>, usize) {
    let out = kcat_consume_all(broker, topic, "%k=%s\\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut table = BTreeMap::new();
    let mut count = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (k, v) = line.split_once('=').expect("key=value");
        table.insert(k.to_string(), v.to_string());
        count += 1;
    }
    (table, count)
}

#[test]
fn a_compacted_topic_keeps_exactly_the_newest_value_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["log.cleaner.backoff.ms=200"]);
    create_topic_with_configs(
        &broker,
        "table",
        1,
        &[
            "cleanup.policy=compact",
            "segment.bytes=65536",
            "segment.ms=1000",
            "min.cleanable.dirty.ratio=0.01",
        ],
    );
    let lines: String = (0..UPDATES)
        .map(|j| format!("key-{:04}:value-{j:06}\n", j % KEYS))
        .collect();
    kcat_produce(&broker, "table", &lines, &["-K:"], "100,000 updates");
    let expected: BTreeMap<String, String> = (0..KEYS)
        .map(|k| {
            let newest = UPDATES - KEYS + k;
            (format!("key-{k:04}"), format!("value-{newest:06}"))
        })
        .collect();

    // The active segment is never cleaned: once segment.ms passes, one more record rolls it.
    std::thread::sleep(Duration::from_millis(1_100));
    kcat_produce(
        &broker,
        "table",
        "roll:over\n",
        &["-K:"],
        "the record that rolls",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (table, count) = loop {
        let (table, count) = read_table(&broker, "table");
        if count == KEYS + 1 || Instant::now() > deadline {
            break (table, count);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(count, KEYS + 1, "one record per key once cleaned");
    let mut without_roll = table.clone();
    without_roll.remove("roll");
    assert_eq!(without_roll, expected, "the newest value of every key");
    assert!(
        broker
            .log_lines()
            .iter()
            .any(|l| l.contains("cleaned table-0")),
        "the cleaner logs what it did"
    );

    // A record without a key is refused (INVALID_RECORD), as Kafka refuses it.
    let out = run_with_timeout(
        kcat().args(["-b", &broker.address, "-P", "-t", "table", "-X", "acks=all"]),
        Some(b"no key\n"),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Broker failed to validate record"),
        "kcat: {stderr}"
    );
    // The table survives a restart unchanged.
    let broker = broker.restart();
    assert_eq!(read_table(&broker, "table"), (table, KEYS + 1));
}

/// Bytes of every segment file of a partition directory.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn consumer_offsets_stay_bounded_under_a_consumer_that_commits_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.segment.bytes=16384",
            "log.cleaner.backoff.ms=200",
        ],
    );
    let records = 3_000;
    let lines: String = (0..records).map(|i| format!("r{i}\n")).collect();
    kcat_produce_lines(&broker, "commits", &lines, "records to consume");
    let out = run_with_timeout(
        python()
            .arg(python_scripts().join("commit_every_record.py"))
            .args([
                &broker.address,
                "commits",
                "committer",
                &records.to_string(),
            ]),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "commit_every_record.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let partition = surety_core::group::placement::offsets_partition_for("committer", 50);
    let pdir = broker
        .data_dir
        .join(format!("__consumer_offsets-{partition}"));
    // Each commit record is ~100 bytes: uncompacted, 3,000 of them are ~300 KB.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut size = log_bytes(&pdir);
    while size > 40_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        size = log_bytes(&pdir);
    }
    assert!(
        size <= 40_000,
        "__consumer_offsets-{partition} holds {size} bytes"
    );
    // And the group's offset is still the last one committed, after a restart too.
    let broker = broker.restart();
    let out = run_with_timeout(
        python()
            .arg(python_scripts().join("commit_every_record.py"))
            .args([&broker.address, "commits", "committer", "committed"]),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        records.to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
