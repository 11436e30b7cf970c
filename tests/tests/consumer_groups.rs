//! Consumer groups with real clients: confluent-kafka's and kafka-python's group consumers on a
//! 6-partition topic. Three consumers share the partitions, a fourth joins, the first leaves;
//! after each rebalance every partition has exactly one owner and every message is consumed.
//! The broker is then killed (SIGKILL) and restarted: the committed offsets are still there, and
//! a consumer of the same group resumes from them, reading only what was produced since.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use surety_tests::{
    BrokerProcess, create_topic, kcat, kcat_produce_lines, python, python_scripts, run_with_timeout,
};

const MESSAGES: usize = 3_000;
const EXTRA: usize = 20;
const PARTITIONS: i64 = 6;

/// Brokers in these tests form groups at once: Kafka's 3 s initial delay only slows a test.
const NO_INITIAL_DELAY: &str = "group.initial.rebalance.delay.ms=0";

/// Runs the script against `broker` (its address is one of `args`); a failure shows the
/// broker's log beside the script's output, so a rebalance that never ended can be read.
fn run_script(broker: &BrokerProcess, args: &[&str]) -> Vec<Value> {
    let out = run_with_timeout(
        python()
            .arg(python_scripts().join("group_consumers.py"))
            .args(args),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "group_consumers.py {args:?} failed: {}\n{}\nthe broker logged:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        broker.log_lines().join("\n")
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every partition owned by exactly one consumer, and every consumer owning some.
fn assert_one_owner_per_partition(phase: &Value) {
    let assignments = phase["assignments"].as_array().expect("assignments");
    let mut owned = Vec::new();
    for a in assignments {
        let partitions: Vec<i64> = a
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect();
        assert!(!partitions.is_empty(), "a consumer owns nothing: {phase}");
        owned.extend(partitions);
    }
    owned.sort();
    assert_eq!(owned, (0..PARTITIONS).collect::<Vec<_>>(), "{phase}");
}

fn group_flow(library: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    let topic = format!("{library}-group");
    let group = format!("{library}-readers");
    create_topic(&broker, &topic, PARTITIONS as i32);
    let messages = MESSAGES.to_string();
    let lines = run_script(
        &broker,
        &[
            "rebalance",
            library,
            &broker.address,
            &topic,
            &group,
            &messages,
        ],
    );
    let phases: Vec<&str> = lines.iter().filter_map(|l| l["phase"].as_str()).collect();
    assert_eq!(phases, ["three", "four", "after-leave"]);
    for (line, consumers) in lines.iter().zip([3, 4, 3]) {
        assert_eq!(line["assignments"].as_array().unwrap().len(), consumers);
        assert_one_owner_per_partition(line);
    }
    let last = lines.last().unwrap();
    assert_eq!(last["consumed"].as_u64(), Some(MESSAGES as u64), "{last}");
    let ends = last["ends"].clone();
    for p in 0..PARTITIONS {
        let key = p.to_string();
        assert_eq!(
            last["committed"][&key], ends[&key],
            "partition {p}: committed offset once every consumer closed; {last}"
        );
    }

    // kill -9 and start again on the same data directory.
    let broker = broker.restart();
    let extra = EXTRA.to_string();
    let lines = run_script(
        &broker,
        &["resume", library, &broker.address, &topic, &group, &extra],
    );
    let resumed = &lines[0];
    for p in 0..PARTITIONS {
        let key = p.to_string();
        assert_eq!(
            resumed["committed"][&key], ends[&key],
            "partition {p}: committed offset after the restart; {resumed}"
        );
    }
    let values: BTreeSet<&str> = resumed["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..EXTRA).map(|i| format!("extra-{i:06}")).collect();
    assert_eq!(
        values,
        expected.iter().map(String::as_str).collect(),
        "the resumed group reads exactly what was produced after its commits"
    );
    assert_eq!(resumed["values"].as_array().unwrap().len(), EXTRA);
}

#[test]
fn confluent_kafka_group_shares_partitions_and_resumes_after_kill_9() {
    group_flow("confluent-kafka");
}

#[test]
fn kafka_python_group_shares_partitions_and_resumes_after_kill_9() {
    group_flow("kafka-python");
}

/// `kcat -G GROUP`: librdkafka's balanced consumer as kcat runs it, to the end (`-e`).
fn kcat_group_read(broker: &BrokerProcess, group: &str, topic: &str) -> Vec<String> {
    let out = run_with_timeout(
        kcat().args([
            "-b",
            &broker.address,
            "-G",
            group,
            "-X",
            "auto.offset.reset=earliest",
            "-e",
            "-q",
            "-f",
            "%s\\n",
            topic,
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "kcat -G failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    values.sort();
    values
}

#[test]
fn kcat_balanced_consumer_commits_and_resumes_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    create_topic(&broker, "kcat-group", 3);
    let first: Vec<String> = (0..300).map(|i| format!("first-{i:04}")).collect();
    kcat_produce_lines(&broker, "kcat-group", &(first.join("\n") + "\n"), "first");
    assert_eq!(
        kcat_group_read(&broker, "kcat-readers", "kcat-group"),
        first
    );

    let broker = broker.restart();
    let second: Vec<String> = (0..7).map(|i| format!("second-{i:04}")).collect();
    kcat_produce_lines(&broker, "kcat-group", &(second.join("\n") + "\n"), "second");
    assert_eq!(
        kcat_group_read(&broker, "kcat-readers", "kcat-group"),
        second,
        "the group resumes from its commits: only what was produced since"
    );
    // Another group has its own offsets.
    let mut all = [first, second].concat();
    all.sort();
    assert_eq!(kcat_group_read(&broker, "kcat-others", "kcat-group"), all);
}

/// ListGroups, DescribeGroups, OffsetFetch, DeleteGroups and OffsetDelete through the client
/// libraries' admin clients.
#[test]
fn admin_clients_list_describe_and_delete_groups_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    create_topic(&broker, "admin-topic", 3);
    let out = run_with_timeout(
        python().arg(python_scripts().join("group_admin.py")).args([
            &broker.address,
            "admin-topic",
            "admin-group",
        ]),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "group_admin.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let steps: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let step = |name: &str| -> &Value {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {steps:?}"))
    };
    assert_eq!(step("consumed")["read"], 30);
    assert_eq!(step("listed-active")["groups"]["admin-group"], "STABLE");
    let described = step("described");
    assert_eq!(described["state"], "STABLE");
    assert_eq!(described["assignor"], "range");
    assert_eq!(
        described["members"],
        serde_json::json!([{"client_id": "admin-test", "host": "/127.0.0.1", "partitions": [0, 1, 2]}])
    );
    assert_eq!(step("delete-active")["error"], "NON_EMPTY_GROUP");
    assert_eq!(step("listed-closed")["groups"]["admin-group"], "EMPTY");
    assert_eq!(
        step("offsets")["offsets"],
        serde_json::json!({"0": 10, "1": 10, "2": 10})
    );
    assert_eq!(
        step("offsets-after-delete")["offsets"],
        serde_json::json!({"1": 10, "2": 10})
    );
    assert_eq!(step("delete-closed")["error"], "NONE");
    assert!(
        step("listed-deleted")["groups"]
            .get("admin-group")
            .is_none()
    );
    assert_eq!(step("delete-again")["error"], "GROUP_ID_NOT_FOUND");
}

/// The coordinator's broker is killed (SIGKILL) while a third consumer joins: once it is back,
/// the group converges again, every partition with one owner, and no committed offset is lost.
#[test]
fn a_group_converges_after_its_coordinator_is_killed_during_a_rebalance() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    create_topic(&broker, "crash-topic", PARTITIONS as i32);
    let signal = dir.path().join("restarted");
    let mut child = python()
        .arg(python_scripts().join("group_consumers.py"))
        .args([
            "crash",
            "confluent-kafka",
            &broker.address,
            "crash-topic",
            "crash-group",
            "600",
        ])
        .arg(&signal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| -> Value {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no {what} line from the script: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let before = next("committed");
    assert_eq!(before["step"], "committed");
    let total: i64 = (0..PARTITIONS)
        .map(|p| before["committed"][p.to_string()].as_i64().unwrap())
        .sum();
    assert_eq!(
        total, 600,
        "both consumers committed every message: {before}"
    );
    assert_eq!(next("rebalancing")["step"], "rebalancing");
    let broker = broker.restart();
    std::fs::write(&signal, b"").unwrap();
    let converged = next("after-restart");
    assert_eq!(converged["phase"], "after-restart", "{converged}");
    assert_one_owner_per_partition(&converged);
    let after = next("restarted");
    assert_eq!(
        after["committed"], before["committed"],
        "no committed offset is lost"
    );
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.success(), "the script failed: {stderr}");
    drop(broker);
}

/// Static membership (KIP-345) with confluent-kafka: a member with a `group.instance.id`
/// restarts within its session and gets its partitions back; the other member sees no
/// rebalance at all.
#[test]
fn a_static_member_restarts_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    create_topic(&broker, "static-topic", PARTITIONS as i32);
    let lines = run_script(
        &broker,
        &[
            "static",
            "confluent-kafka",
            &broker.address,
            "static-topic",
            "static-group",
            "0",
        ],
    );
    let result = &lines[0];
    assert_eq!(result["after"], result["before"], "{result}");
    assert_one_owner_per_partition(&serde_json::json!({
        "assignments": [result["after"]["a"], result["after"]["b"]]
    }));
    assert_eq!(
        result["b_events_after"], result["b_events_before"],
        "the other member was not rebalanced: {result}"
    );
}

/// `offsets.retention.minutes`: a group without members forgets its committed offsets once the
/// retention has passed, and then the group itself. (One minute, the smallest value Kafka's
/// setting takes.)
#[test]
fn an_empty_groups_offsets_expire_after_offsets_retention_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            NO_INITIAL_DELAY,
            "offsets.retention.minutes=1",
            "offsets.retention.check.interval.ms=500",
        ],
    );
    create_topic(&broker, "expiring", 1);
    kcat_produce_lines(&broker, "expiring", "a\nb\nc\n", "three records");
    assert_eq!(kcat_group_read(&broker, "forgetful", "expiring").len(), 3);
    let committed_at = std::time::Instant::now();
    // Still there before the minute is up: a second read gets nothing new.
    assert!(kcat_group_read(&broker, "forgetful", "expiring").is_empty());
    let listed = || {
        let out = run_with_timeout(
            std::process::Command::new(surety_tests::surety_binary()).args([
                "groups",
                "list",
                "--bootstrap-server",
                &broker.address,
            ]),
            None,
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&out.stdout).contains("forgetful")
    };
    assert!(listed());
    while committed_at.elapsed() < Duration::from_secs(80) && listed() {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!listed(), "the group is forgotten once its offsets expired");
    assert!(
        committed_at.elapsed() >= Duration::from_secs(55),
        "not before the retention"
    );
    assert!(
        broker
            .log_lines()
            .iter()
            .any(|l| l.contains("committed offsets expired")),
        "the expiry is logged"
    );
    // A new member of the group starts over, from auto.offset.reset.
    assert_eq!(kcat_group_read(&broker, "forgetful", "expiring").len(), 3);
}
