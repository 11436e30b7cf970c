//! `surety cluster up` as a user runs it: it prints one `bootstrap.servers=` line once the
//! cluster is ready, the cluster takes a topic replicated on all three brokers, and SIGTERM
//! stops every node cleanly and leaves no process behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use surety_tests::{run_with_timeout, surety_binary};

const TOPIC: &str = "replicated";
const NODES: [&str; 4] = ["controller-0", "broker-1", "broker-2", "broker-3"];

/// A running `surety cluster up`. Dropping it (when a test fails) stops it, and kills any node
/// it leaves behind, so that a failure does not leave brokers running.
struct ClusterUp {
    child: Child,
    stderr: PathBuf,
}

impl ClusterUp {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The nodes' pids, from the `started <node> (pid N)` lines on its stderr.
    fn node_pids(&self) -> Vec<(String, u32)> {
        self.stderr()
            .lines()
            .filter_map(|line| {
                let rest = line.split("started ").nth(1)?;
                let (node, rest) = rest.split_once(" (pid ")?;
                let pid = rest.split_once(')')?.0.parse().ok()?;
                Some((node.to_string(), pid))
            })
            .collect()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) only sends a signal; the child has not been waited for, so its pid
        // is still its own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits up to `limit` for it to exit.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for cluster up") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ClusterUp {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            if self.wait(Duration::from_secs(20)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for (_, pid) in self.node_pids() {
            if is_running_surety(pid) {
                // SAFETY: as above; the pid was just seen running a `surety serve`.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) `surety serve` process.
fn is_running_surety(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state != Some('Z') && String::from_utf8_lossy(&cmdline).contains("serve")
}

fn surety(args: &[&str]) -> std::process::Output {
    run_with_timeout(
        Command::new(surety_binary()).args(args),
        None,
        Duration::from_secs(30),
    )
}

/// A partition line of `topics describe`, as (leader, replicas, isr).
fn partition(line: &str) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let field = |name: &str| {
        line.split('\t')
            .find_map(|f| f.trim().strip_prefix(name))
            .map(str::trim)
    };
    let ids = |list: &str| -> Option<Vec<i32>> {
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect()
    };
    Some((
        field("Leader:")?.parse().ok()?,
        ids(field("Replicas:")?)?,
        ids(field("Isr:")?)?,
    ))
}

/// Whether every partition is led by one of its replicas, which are the three brokers, and its
/// ISR holds the leader and only replicas.
fn fully_placed(partitions: &[(i32, Vec<i32>, Vec<i32>)]) -> bool {
    partitions.len() == 3
        && partitions.iter().all(|(leader, replicas, isr)| {
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            sorted == [1, 2, 3]
                && replicas.contains(leader)
                && isr.contains(leader)
                && isr.iter().all(|r| replicas.contains(r))
        })
}

fn read_log(data_dir: &Path, node: &str) -> String {
    let path = data_dir.join(node).join("server.log");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn cluster_up_serves_a_replicated_topic_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("cluster");
    let stderr = dir.path().join("cluster-up.stderr");
    let mut child = Command::new(surety_binary())
        .args(["cluster", "up", "--brokers", "3", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start surety cluster up");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut cluster = ClusterUp { child, stderr };
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // Longer than cluster up's own 60 s, so that its report of what failed is what we see.
    let line = lines
        .recv_timeout(Duration::from_secs(75))
        .unwrap_or_else(|e| {
            panic!(
                "no bootstrap line from cluster up ({e}); its stderr:\n{}",
                cluster.stderr()
            )
        });
    let bootstrap = line
        .strip_prefix("bootstrap.servers=")
        .unwrap_or_else(|| panic!("the first line is the bootstrap line: {line}"))
        .to_string();
    let ports: Vec<u16> = bootstrap
        .split(',')
        .map(|a| {
            a.strip_prefix("127.0.0.1:")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("a loopback address: {a} in {line}"))
        })
        .collect();
    assert_eq!(ports.len(), 3, "three brokers: {line}");
    assert!(
        ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
        "three ports: {line}"
    );
    let pids = cluster.node_pids();
    assert_eq!(
        pids.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["controller 0", "broker 1", "broker 2", "broker 3"],
        "a start line per node on stderr:\n{}",
        cluster.stderr()
    );

    let out = surety(&[
        "topics",
        "--bootstrap-server",
        &bootstrap,
        "create",
        TOPIC,
        "--partitions",
        "3",
        "--replication-factor",
        "3",
    ]);
    assert!(
        out.status.success(),
        "topics create: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Brokers learn the new partitions from the controller: wait until the one answering shows
    // them all placed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = surety(&[
            "topics",
            "--bootstrap-server",
            &bootstrap,
            "describe",
            TOPIC,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let partitions: Vec<_> = text
            .lines()
            .filter(|l| l.contains("Partition:"))
            .map(|l| partition(l).unwrap_or_else(|| panic!("a partition line: {l}")))
            .collect();
        if out.status.success() && fully_placed(&partitions) {
            assert!(text.contains("ReplicationFactor: 3"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 30 s each partition has a leader among three replicas on brokers 1-3; \
             describe printed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The console tools find each partition's leader: lines in, the same lines out.
    let sent: String = (1..=300).map(|i| format!("line-{i}\n")).collect();
    let produced = run_with_timeout(
        Command::new(surety_binary()).args([
            "produce",
            "replicated",
            "--bootstrap-server",
            &bootstrap,
        ]),
        Some(sent.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(
        produced.status.success(),
        "surety produce: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let consumed = surety(&[
        "consume",
        "replicated",
        "--bootstrap-server",
        &bootstrap,
        "--from-beginning",
        "--timeout-ms",
        "2000",
    ]);
    let mut got: Vec<&str> = std::str::from_utf8(&consumed.stdout)
        .unwrap()
        .lines()
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = sent.lines().collect();
    want.sort_unstable();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&consumed.stderr));

    cluster.signal(libc::SIGTERM);
    let status = cluster.wait(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "cluster up exits within 20 s of SIGTERM; its stderr:\n{}",
            cluster.stderr()
        )
    });
    assert!(
        status.success(),
        "cluster up exits 0 on SIGTERM, not {status}; its stderr:\n{}",
        cluster.stderr()
    );
    reader.join().unwrap();
    let more: Vec<String> = lines.try_iter().collect();
    assert!(more.is_empty(), "one line on stdout, then also: {more:?}");
    for (node, pid) in &pids {
        assert!(!is_running_surety(*pid), "{node} (pid {pid}) still runs");
    }
    for node in NODES {
        let log = read_log(&data_dir, node);
        assert!(
            log.contains("shut down cleanly"),
            "{node} logs a clean shutdown; it logged:\n{log}"
        );
    }
}
