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
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

pub mod cluster;
pub use cluster::ClusterProcesses;

/// A broker process on a free loopback port with its own data directory.
pub struct BrokerProcess {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// The data directory (kept across restarts of this broker).
    pub data_dir: PathBuf,
    /// The listener's name in `listeners` (`PLAINTEXT`, or `CONTROLLER` for a controller).
    listener_name: String,
    overrides: Vec<String>,
    startup_log: Vec<String>,
    lines: mpsc::Receiver<String>,
    /// Every line received after startup, and how many of them `log_lines` has returned.
    received: Mutex<(Vec<String>, usize)>,
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
        Self::spawn(
            data_dir,
            overrides,
            "PLAINTEXT".to_string(),
            "127.0.0.1:0".to_string(),
        )
    }

    /// Starts a node listening on `listener_name://address` with its data in `data_dir`. A
    /// cluster's nodes know each other by address, so a node of one needs its port fixed
    /// before it starts, and the same one on every restart.
    pub fn start_on(
        data_dir: PathBuf,
        listener_name: &str,
        address: &str,
        overrides: &[String],
    ) -> Self {
        Self::spawn(
            data_dir,
            overrides.to_vec(),
            listener_name.to_string(),
            address.to_string(),
        )
    }

    fn spawn(
        data_dir: PathBuf,
        overrides: Vec<String>,
        listener_name: String,
        listen: String,
    ) -> Self {
        let mut command = Command::new(surety_binary());
        command
            .arg("serve")
            .arg("--override")
            .arg(format!("log.dirs={}", data_dir.display()))
            .arg("--override")
            .arg(format!("listeners={listener_name}://{listen}"));
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
                .unwrap_or_else(|e| {
                    panic!(
                        "the broker logs where it listens within 30 s ({e}); it logged:\n{}",
                        startup_log.join("\n")
                    )
                });
            // `host:port`, also when logged as `NAME://host:port`.
            let address = line.split("listening on ").nth(1).map(|rest| {
                let logged = rest.split_whitespace().next().expect("an address");
                logged.rsplit("://").next().unwrap_or(logged).to_string()
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
            listener_name,
            overrides,
            startup_log,
            lines,
            received: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Kills the broker with SIGKILL: no flush, no clean-shutdown marker.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // A process already waited for may have a successor with its pid.
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
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
        let listener_name = std::mem::take(&mut self.listener_name);
        let listen = self.address.clone();
        drop(self);
        Self::spawn(data_dir, overrides, listener_name, listen)
    }

    /// The broker's startup lines, then the lines logged since the previous call.
    pub fn log_lines(&self) -> Vec<String> {
        let mut received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let (lines, returned) = &mut *received;
        lines.extend(self.lines.try_iter());
        let mut all = self.startup_log.clone();
        all.extend_from_slice(&lines[*returned..]);
        *returned = lines.len();
        all
    }

    /// Waits up to `limit` for a log line containing `text` (logged at any time since the
    /// broker started) and returns it, or `None` if none appeared in time. Lines it reads are
    /// still returned by the next [`BrokerProcess::log_lines`].
    pub fn wait_for_log_line(&self, text: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let lines = &mut received.0;
        if let Some(line) = self
            .startup_log
            .iter()
            .chain(lines.iter())
            .find(|l| l.contains(text))
        {
            return Some(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let found = line.contains(text);
            lines.push(line);
            if found {
                return lines.last().cloned();
            }
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's resident memory (`VmRSS` in `/proc/<pid>/status`), in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {path} (has the broker exited?): {e}"));
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS line in {path}:\n{status}"));
        kib * 1024
    }

    /// Polls the broker's resident memory every 100 ms until it is below `bound` bytes or
    /// `limit` has passed, and returns the last reading (below `bound` unless time ran out).
    pub fn wait_for_resident_below(&self, bound: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let resident = self.resident_bytes();
            if resident < bound || Instant::now() >= deadline {
                return resident;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to at least `wanted`, as
/// far as the hard limit allows, and returns the soft limit now in force. Tests that hold
/// thousands of connections need more than the common default of 1,024.
pub fn raise_open_files_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit: {}", std::io::Error::last_os_error());
    // `rlim_t` is `u64` on Linux, the only platform these tests run on (they read `/proc`).
    if limit.rlim_cur < wanted {
        limit.rlim_cur = limit.rlim_max.min(wanted);
        // SAFETY: `limit` is a valid rlimit whose soft value does not exceed its hard value.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }
    limit.rlim_cur
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

/// Sends `signal` to each of `pids` (processes a test started): SIGSTOP freezes a node without
/// closing its sockets, SIGCONT thaws it.
pub fn send_signal(pids: &[u32], signal: i32) {
    for &pid in pids {
        // SAFETY: kill(2) takes integers only and has no memory effects.
        let result = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
    }
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
    create_topic_with_configs(broker, topic, partitions, &[]);
}

/// Creates a topic with the `surety topics` tool and topic config overrides (`key=value`).
pub fn create_topic_with_configs(
    broker: &BrokerProcess,
    topic: &str,
    partitions: i32,
    configs: &[&str],
) {
    let partitions = partitions.to_string();
    let mut args = vec![
        "topics",
        "--bootstrap-server",
        &broker.address,
        "create",
        topic,
        "--partitions",
        &partitions,
    ];
    for config in configs {
        args.extend(["--config", config]);
    }
    let out = run_with_timeout(
        Command::new(surety_binary()).args(args),
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

/// Produces `lines` (one record per line) to `topic` with kcat and `acks=all`, failing the test
/// with kcat's stderr and `what` if kcat does not succeed within 30 s.
pub fn kcat_produce_lines(broker: &BrokerProcess, topic: &str, lines: &str, what: &str) {
    kcat_produce(broker, topic, lines, &[], what);
}

/// [`kcat_produce_lines`] with more kcat arguments: `-K:` for `key:value` lines, `-p N` for
/// one partition. Allows two minutes, for large inputs.
pub fn kcat_produce(broker: &BrokerProcess, topic: &str, lines: &str, args: &[&str], what: &str) {
    let out = run_with_timeout(
        kcat()
            .args(["-b", &broker.address, "-P", "-t", topic, "-X", "acks=all"])
            .args(args),
        Some(lines.as_bytes()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{what}: kcat -P {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
