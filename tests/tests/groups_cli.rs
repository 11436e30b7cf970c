//! `surety groups`, the kafka-consumer-groups tool, against offsets a real client committed:
//! kcat's balanced consumer reads a 3-partition topic to the end and leaves, then the tool
//! lists the group, describes its offsets and lag, resets them (and shows a dry run changes
//! nothing), and deletes it. Against a group with a running kcat consumer it shows the owner of
//! every partition and refuses to reset offsets or delete the group.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use surety_tests::{
    BrokerProcess, create_topic, kcat, kcat_produce, run_with_timeout, surety_binary,
};

/// Brokers in these tests form groups at once: Kafka's 3 s initial delay only slows a test.
const NO_INITIAL_DELAY: &str = "group.initial.rebalance.delay.ms=0";
const TOPIC: &str = "cli-topic";
const GROUP: &str = "cli-group";
const PER_PARTITION: i64 = 10;

/// Runs `surety groups --bootstrap-server ADDRESS ARGS...`: (success, stdout, stderr).
fn groups(broker: &BrokerProcess, args: &[&str]) -> (bool, String, String) {
    let out = run_with_timeout(
        Command::new(surety_binary())
            .args(["groups", "--bootstrap-server", &broker.address])
            .args(args),
        None,
        Duration::from_secs(30),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn groups_ok(broker: &BrokerProcess, args: &[&str]) -> String {
    let (ok, stdout, stderr) = groups(broker, args);
    assert!(ok, "surety groups {args:?} failed:\n{stderr}\n{stdout}");
    stdout
}

/// A `describe` row, by whitespace: what the assertions read of it.
#[derive(Debug, PartialEq)]
struct Row {
    current: Option<i64>,
    log_end: Option<i64>,
    lag: Option<i64>,
    consumer_id: String,
}

fn describe(broker: &BrokerProcess, group: &str, topic: &str) -> BTreeMap<i32, Row> {
    parse_describe(&groups_ok(broker, &["describe", group]), group, topic)
}

/// `describe`'s rows of `topic` by partition, checking the header and that each row is
/// `group`'s.
fn parse_describe(stdout: &str, group: &str, topic: &str) -> BTreeMap<i32, Row> {
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]
    );
    let number = |s: &str| (s != "-").then(|| s.parse::<i64>().expect("a number or -"));
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[1] == topic)
        .map(|f| {
            assert_eq!(f.len(), 9, "{stdout}");
            assert_eq!(f[0], group, "{stdout}");
            (
                f[2].parse().expect("a partition"),
                Row {
                    current: number(f[3]),
                    log_end: number(f[4]),
                    lag: number(f[5]),
                    consumer_id: f[6].to_string(),
                },
            )
        })
        .collect()
}

fn listed(broker: &BrokerProcess) -> Vec<String> {
    groups_ok(broker, &["list"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// `reset-offsets`' table as partition -> new offset.
fn new_offsets(stdout: &str) -> BTreeMap<i32, i64> {
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]);
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[..2], [GROUP, TOPIC], "{stdout}");
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// Every partition at `current` with the topic's whole end as its log end offset.
fn assert_all_at(rows: &BTreeMap<i32, Row>, current: i64) {
    let expected: BTreeMap<i32, Row> = (0..3)
        .map(|p| {
            (
                p,
                Row {
                    current: Some(current),
                    log_end: Some(PER_PARTITION),
                    lag: Some(PER_PARTITION - current),
                    consumer_id: "-".to_string(),
                },
            )
        })
        .collect();
    assert_eq!(rows, &expected);
}

/// A background process killed (and reaped) when the test ends, however it ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn groups_lists_describes_resets_and_deletes_a_kcat_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    create_topic(&broker, TOPIC, 3);
    // Ten lines into each partition, so every partition has offsets to commit and lag to show.
    for p in 0..3 {
        let lines: String = (0..PER_PARTITION)
            .map(|i| format!("p{p}-{i:02}\n"))
            .collect();
        let partition = p.to_string();
        kcat_produce(&broker, TOPIC, &lines, &["-p", &partition], "ten lines");
    }
    // kcat commits its offsets when it leaves at the end (-e): the group is then Empty.
    let out = run_with_timeout(
        kcat().args([
            "-b",
            &broker.address,
            "-G",
            GROUP,
            "-X",
            "auto.offset.reset=earliest",
            "-e",
            "-q",
            TOPIC,
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "kcat -G: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 30);

    assert!(listed(&broker).contains(&GROUP.to_string()));
    let with_state = groups_ok(&broker, &["list", "--state"]);
    assert!(
        with_state.lines().any(|l| l == format!("{GROUP}\tEmpty")),
        "{with_state}"
    );

    let (ok, _, stderr) = groups(&broker, &["describe", GROUP]);
    assert!(ok);
    assert!(
        stderr.contains(&format!("Consumer group '{GROUP}' is Empty with 0 members")),
        "{stderr}"
    );
    let rows = describe(&broker, GROUP, TOPIC);
    assert_all_at(&rows, PER_PARTITION);
    assert_eq!(rows.values().filter_map(|r| r.current).sum::<i64>(), 30);

    let reset = groups_ok(
        &broker,
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to-earliest",
            "--execute",
        ],
    );
    assert_eq!(
        new_offsets(&reset),
        BTreeMap::from([(0, 0), (1, 0), (2, 0)])
    );
    let rows = describe(&broker, GROUP, TOPIC);
    assert_all_at(&rows, 0);
    assert_eq!(rows.values().filter_map(|r| r.lag).sum::<i64>(), 30);

    // Dry runs (no --execute) print the new offsets, clamped into the log, and commit nothing.
    let (ok, dry, stderr) = groups(
        &broker,
        &["reset-offsets", GROUP, "--topic", TOPIC, "--to-offset", "5"],
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Dry run"), "{stderr}");
    assert_eq!(new_offsets(&dry), BTreeMap::from([(0, 5), (1, 5), (2, 5)]));
    let dry = groups_ok(
        &broker,
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to-offset",
            "50",
        ],
    );
    assert_eq!(
        new_offsets(&dry),
        BTreeMap::from([(0, 10), (1, 10), (2, 10)])
    );
    assert_all_at(&describe(&broker, GROUP, TOPIC), 0);

    let deleted = groups_ok(&broker, &["delete", GROUP]);
    assert_eq!(
        deleted.trim(),
        format!("Deletion of requested consumer groups ('{GROUP}') was successful.")
    );
    assert!(!listed(&broker).contains(&GROUP.to_string()));
    let (ok, _, stderr) = groups(&broker, &["delete", GROUP]);
    assert!(!ok, "a deleted group cannot be deleted again");
    assert!(stderr.contains("GroupIdNotFound"), "{stderr}");

    let (ok, stdout, stderr) = groups(&broker, &["describe", "nope"]);
    assert!(
        !ok,
        "describing a group that does not exist fails: {stdout}"
    );
    assert!(stderr.contains("'nope' does not exist"), "{stderr}");
}

#[test]
fn groups_shows_owners_and_refuses_to_reset_or_delete_an_active_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[NO_INITIAL_DELAY]);
    create_topic(&broker, TOPIC, 3);
    let consumer = Background(
        kcat()
            .args([
                "-b",
                &broker.address,
                "-G",
                GROUP,
                "-X",
                "auto.offset.reset=earliest",
                "-q",
                TOPIC,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kcat"),
    );

    // Wait (bounded) for the consumer to join and own every partition.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let (ok, stdout, stderr) = groups(&broker, &["describe", GROUP]);
        if ok {
            let rows = parse_describe(&stdout, GROUP, TOPIC);
            if rows.len() == 3 && rows.values().all(|r| r.consumer_id != "-") {
                break rows;
            }
        }
        assert!(
            Instant::now() < deadline,
            "kcat did not own the 3 partitions within 30 s:\n{stderr}\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let owners: Vec<&str> = rows.values().map(|r| r.consumer_id.as_str()).collect();
    assert!(
        owners.iter().all(|o| *o == owners[0]),
        "one member: {rows:?}"
    );
    let (_, _, stderr) = groups(&broker, &["describe", GROUP]);
    assert!(stderr.contains("with 1 member."), "{stderr}");

    let (ok, stdout, stderr) = groups(
        &broker,
        &[
            "reset-offsets",
            GROUP,
            "--topic",
            TOPIC,
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(!ok, "resetting an active group's offsets fails: {stdout}");
    assert!(stderr.contains("UnknownMemberId"), "{stderr}");
    assert!(
        stdout.is_empty(),
        "no table for a reset that failed: {stdout}"
    );

    let (ok, _, stderr) = groups(&broker, &["delete", GROUP]);
    assert!(!ok, "deleting an active group fails");
    assert!(stderr.contains("NonEmptyGroup"), "{stderr}");
    drop(consumer);
}
