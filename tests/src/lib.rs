//! End-to-end tests of Surety: real `surety` broker processes on loopback with temporary data
//! directories, driven by real third-party Kafka clients (kcat, kafka-python, confluent-kafka),
//! including kill -9 and restart, so that compatibility and durability claims are shown against
//! the binary users run rather than against in-process stand-ins.
//!
//! The harness finds the broker binary in `SURETY_BIN`, else in the workspace's
//! `target/release` or `target/debug` (`scripts/test` builds it first), and the Python with the
//! client libraries in `SURETY_PYTHON` (default `python3`). A missing binary or client fails
//! the test that needs it: nothing is skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A broker process on a free loopback port with its own data directory.
pub struct BrokerProcess {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// The data directory (kept across restarts of this broker).
    pub data_dir: PathBuf,
    overrides: Vec<String>,
    startup_log: Vec<String>,
    lines: mpsc::Receiver<String>,
}

/// The `surety` binary under test.
pub fn surety_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SURETY_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    for profile in ["release", "debug"] {
        let bin = root.join(profile).join("surety");
        if bin.exists() {
            return bin;
        }
    }
    panic!("no surety binary: run `cargo build --release -p surety` or set SURETY_BIN");
}

impl BrokerProcess {
    /// Starts a broker with a fresh data directory inside `dir`.
    pub fn start(dir: &Path, overrides: &[&str]) -> Self {
        let data_dir = dir.join("data");
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir, overrides, "127.0.0.1:0".to_string())
    }

    fn spawn(data_dir: PathBuf, overrides: Vec<String>, listen: String) -> Self {
        let mut command = Command::new(surety_binary());
        command
            .arg("serve")
            .arg("--override")
            .arg(format!("log.dirs={}", data_dir.display()))
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://{listen}"));
        for o in &overrides {
            command.arg("--override").arg(o);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the surety binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup_log = Vec::new();
        let address = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the broker logs where it listens within 30 s");
            let address = line.split("listening on ").nth(1).map(|rest| {
                rest.split_whitespace()
                    .next()
                    .expect("an address")
                    .to_string()
            });
            startup_log.push(line);
            if let Some(address) = address {
                break address;
            }
        };
        BrokerProcess {
            child,
            address,
            data_dir,
            overrides,
            startup_log,
            lines,
        }
    }

    /// Kills the broker with SIGKILL: no flush, no clean-shutdown marker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for the broker")
    }

    /// Starts the broker again on the same data directory and port.
    pub fn restart(mut self) -> Self {
        self.kill();
        let data_dir = self.data_dir.clone();
        let overrides = std::mem::take(&mut self.overrides);
        let listen = self.address.clone();
        drop(self);
        Self::spawn(data_dir, overrides, listen)
    }

    /// The broker's log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        let mut all = self.startup_log.clone();
        all.extend(self.lines.try_iter());
        all
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion with a time limit, returning its output.
pub fn run_with_timeout(command: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let id = child.id();
    let (done, finished) = mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(id.to_string())
                .status();
        }
    });
    let output = child.wait_with_output().expect("wait for the command");
    let _ = done.send(());
    let _ = watchdog.join();
    output
}

/// The kcat binary (Debian's package: `kcat`, formerly `kafkacat`).
pub fn kcat() -> Command {
    for name in ["kcat", "kafkacat"] {
        if Command::new(name).arg("-V").output().is_ok() {
            return Command::new(name);
        }
    }
    panic!("kcat is not installed: scripts/test installs Debian's kcat package");
}

/// The Python interpreter that has kafka-python and confluent-kafka.
pub fn python() -> Command {
    let python = std::env::var_os("SURETY_PYTHON").unwrap_or_else(|| "python3".into());
    Command::new(python)
}

/// The directory of the Python client scripts.
pub fn python_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Creates a topic with the `surety topics` tool.
pub fn create_topic(broker: &BrokerProcess, topic: &str, partitions: i32) {
    let out = run_with_timeout(
        Command::new(surety_binary()).args([
            "topics",
            "--bootstrap-server",
            &broker.address,
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ]),
        None,
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "topics create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `consumed` (partition, key, value) lines hold exactly the `produced` (key,
/// value) pairs, each key in one partition, and each partition's values in production order.
pub fn assert_same_records_in_order(
    produced: &[(String, String)],
    consumed: &[(i32, String, String)],
) {
    use std::collections::{HashMap, HashSet};
    assert_eq!(consumed.len(), produced.len(), "record count");
    let position: HashMap<&str, usize> = produced
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (v.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut partition_of_key: HashMap<&str, i32> = HashMap::new();
    let mut last_in_partition: HashMap<i32, usize> = HashMap::new();
    for (partition, key, value) in consumed {
        let at = *position
            .get(value.as_str())
            .unwrap_or_else(|| panic!("consumed a record never produced: {value}"));
        assert!(seen.insert(at), "consumed twice: {value}");
        assert_eq!(&produced[at].0, key, "key of {value}");
        let p = *partition_of_key.entry(key.as_str()).or_insert(*partition);
        assert_eq!(p, *partition, "key {key} in two partitions");
        if let Some(&last) = last_in_partition.get(partition) {
            assert!(
                last < at,
                "partition {partition}: {value} came after a later record"
            );
        }
        last_in_partition.insert(*partition, at);
    }
}

/// The keyed messages every round-trip test produces: 97 keys, values numbered in order.
pub fn keyed_messages(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("key-{}", i % 97), format!("value-{i:05}")))
        .collect()
}

/// Parses `partition key value` lines (kcat's `%p %k %s`, or the Python scripts' output).
pub fn parse_partition_key_value(stdout: &[u8]) -> Vec<(i32, String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// Consumes a whole topic with kcat, from the beginning to the current end, printing each
/// record with `format`.
pub fn kcat_consume_all(broker: &BrokerProcess, topic: &str, format: &str) -> Output {
    let out = run_with_timeout(
        kcat().args([
            "-b",
            &broker.address,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-f",
            format,
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "kcat -C: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
