//! `surety cluster up`: a local cluster of one controller and N brokers from one command.
//!
//! Trying replication, failover or a client against several brokers otherwise means writing a
//! configuration per node and starting each by hand. Each node here is its own OS process (this
//! binary's `serve`), so one broker can be killed (`kill -9 <pid>`, the pids are logged) while
//! the rest of the cluster keeps running, as in production: `cluster up` only reports the exit.
//!
//! The nodes and their ports are written to `<data-dir>/cluster.properties`, and a later
//! `cluster up` over the same directory reads them back: brokers are known to the controller
//! and to clients by node id and address, so a cluster restarted over its data must come back
//! with the same ones. Each node keeps its data in `<data-dir>/<role>-<node.id>` and its log
//! (stdout and stderr, appended across runs) in `server.log` there.
//!
//! Stdout holds one line, `bootstrap.servers=...`, once every broker is registered and
//! unfenced, so a script can wait for it; what happens to the nodes goes to stderr.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::MetadataRequest;
use tokio::time::Instant;

use crate::client::Connection;

/// Arguments of `surety cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start a controller and N brokers, each its own process, and run them until Ctrl-C or
    /// SIGTERM; prints `bootstrap.servers=...` once all brokers are registered.
    Up(UpArgs),
}

#[derive(Args)]
struct UpArgs {
    /// Brokers to start (node ids 1..=N; the controller is node 0).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    brokers: u32,
    /// The cluster's directory: cluster.properties and one data directory per node. Reusing it
    /// restarts the same cluster (same node ids and ports) over its data.
    #[arg(long)]
    data_dir: PathBuf,
    /// A setting as key=value for every node (repeatable), as `surety serve --override`.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// Where the nodes of the cluster in a directory are remembered.
const CLUSTER_FILE: &str = "cluster.properties";
/// Every node listens on loopback: this is a cluster for one machine.
const HOST: &str = "127.0.0.1";
/// The controller's node id.
const CONTROLLER_ID: i32 = 0;
/// How long the cluster may take to list every broker.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines shown for a node that failed.
const TAIL_LINES: usize = 20;

/// Settings `cluster up` gives each node itself: an override of one of them would give every
/// node the same node id, port or data directory, or take it off the cluster's listeners.
const MANAGED_KEYS: &[&str] = &[
    "process.roles",
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "controller.listener.names",
    "inter.broker.listener.name",
    "log.dirs",
    "log.dir",
];

/// Runs `surety cluster`.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Up(args) => up(args).await,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Controller,
    Broker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Broker => "broker",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    role: Role,
    id: i32,
    port: u16,
}

impl Node {
    fn address(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The directory name, also the key in `cluster.properties`.
    fn dir_name(&self) -> String {
        format!("{}-{}", self.role.as_str(), self.id)
    }

    /// The `serve` overrides that make this process this node of the cluster.
    fn overrides(&self, controller: &Node, data_dir: &Path) -> Vec<String> {
        let listener = match self.role {
            Role::Controller => "CONTROLLER",
            Role::Broker => "PLAINTEXT",
        };
        vec![
            format!("process.roles={}", self.role.as_str()),
            format!("node.id={}", self.id),
            format!("listeners={listener}://{}", self.address()),
            format!(
                "controller.quorum.voters={}@{}",
                controller.id,
                controller.address()
            ),
            format!("log.dirs={}", data_dir.join(self.dir_name()).display()),
        ]
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role.as_str(), self.id)
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    check_overrides(&args.overrides)?;
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let nodes = plan_nodes(&data_dir, args.brokers as usize)?;
    let exe = std::env::current_exe().context("cannot find the surety binary")?;
    // Before any child exists, so that a signal during startup stops them too.
    let mut signals = Signals::new()?;

    let mut cluster = Cluster::default();
    for node in &nodes {
        match spawn(&exe, node, &nodes[0], &data_dir, &args.overrides) {
            Ok(running) => {
                tracing::info!(
                    "started {node} (pid {}) on {}, log in {}",
                    running.child.id(),
                    node.address(),
                    running.log.display()
                );
                cluster.nodes.push(running);
            }
            Err(e) => {
                cluster.stop().await;
                return Err(e.context(format!("cannot start {node}")));
            }
        }
    }

    let brokers: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Broker).collect();
    match wait_until_ready(&mut cluster, &mut signals, &brokers).await {
        Startup::Ready => {}
        Startup::Interrupted => {
            cluster.stop().await;
            bail!("interrupted before the cluster was ready");
        }
        Startup::Failed(e) => {
            cluster.stop().await;
            return Err(e);
        }
    }
    let bootstrap: Vec<String> = brokers.iter().map(|n| n.address()).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "bootstrap.servers={}", bootstrap.join(","))?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!("the cluster is ready; Ctrl-C or SIGTERM stops it");

    let result = supervise(&mut cluster, &mut signals).await;
    cluster.stop().await;
    result
}

/// Refuses malformed overrides and those of settings `cluster up` gives each node.
fn check_overrides(overrides: &[String]) -> anyhow::Result<()> {
    for o in overrides {
        let Some((key, _)) = o.split_once('=') else {
            bail!("--override {o}: expected KEY=VALUE");
        };
        let key = key.trim();
        if MANAGED_KEYS.contains(&key) {
            bail!(
                "--override {key}: `cluster up` sets it for each node (node ids and ports are in \
                 the data directory's {CLUSTER_FILE})"
            );
        }
    }
    Ok(())
}

/// The cluster's nodes, controller first: those of `cluster.properties` if the directory holds
/// a cluster (plus new brokers if more are asked for), else new ones on free ports. Writes them
/// back, so the next run finds them.
fn plan_nodes(data_dir: &Path, brokers: usize) -> anyhow::Result<Vec<Node>> {
    let path = data_dir.join(CLUSTER_FILE);
    let mut nodes = match std::fs::read_to_string(&path) {
        Ok(text) => parse_cluster_file(&text).with_context(|| format!("{}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", path.display()))),
    };
    let stored = nodes.iter().filter(|n| n.role == Role::Broker).count();
    if brokers < stored {
        // The controller would still count the others as the replicas of their partitions.
        bail!(
            "{} holds a cluster of {stored} brokers: start it with --brokers {stored} (or more), \
             or use another --data-dir",
            data_dir.display()
        );
    }
    let taken: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let missing = usize::from(nodes.is_empty()) + brokers - stored;
    let mut ports = free_ports(missing, &taken)?.into_iter();
    if nodes.is_empty() {
        nodes.push(Node {
            role: Role::Controller,
            id: CONTROLLER_ID,
            port: ports.next().expect("a port per new node"),
        });
    }
    let first_new = nodes.iter().map(|n| n.id).max().unwrap_or(CONTROLLER_ID) + 1;
    for (id, port) in (first_new..).zip(ports) {
        nodes.push(Node {
            role: Role::Broker,
            id,
            port,
        });
    }
    std::fs::write(&path, cluster_file(&nodes))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(nodes)
}

fn cluster_file(nodes: &[Node]) -> String {
    let mut text = String::from(
        "# The nodes of this cluster, as <role>.<node.id>=<host>:<port>. `surety cluster up`\n\
         # wrote it and starts the same nodes on the same ports when run over this directory.\n",
    );
    for node in nodes {
        text.push_str(&format!(
            "{}.{}={}\n",
            node.role.as_str(),
            node.id,
            node.address()
        ));
    }
    text
}

/// Reads `cluster.properties`; the controller comes first in the result.
fn parse_cluster_file(text: &str) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once('=').and_then(|(key, address)| {
            let (role, id) = key.trim().split_once('.')?;
            let role = match role {
                "controller" => Role::Controller,
                "broker" => Role::Broker,
                _ => return None,
            };
            let id = id.parse().ok()?;
            let port = address.trim().rsplit_once(':')?.1.parse().ok()?;
            Some(Node { role, id, port })
        });
        nodes.push(parsed.with_context(|| {
            format!("unexpected line '{line}' (expected <controller|broker>.<node.id>=host:port)")
        })?);
    }
    let controllers = nodes.iter().filter(|n| n.role == Role::Controller).count();
    if controllers != 1 {
        bail!("expected one controller, found {controllers}");
    }
    let ids: BTreeSet<i32> = nodes.iter().map(|n| n.id).collect();
    if ids.len() != nodes.len() {
        bail!("a node id appears twice");
    }
    nodes.sort_by_key(|n| (n.role != Role::Controller, n.id));
    Ok(nodes)
}

/// `count` ports that are free now and not in `taken` (the ports of nodes not yet running).
/// Every probe socket stays bound until all are chosen, so no port is chosen twice; another
/// program could still take one before its node binds it, and that node then fails to start.
fn free_ports(count: usize, taken: &[u16]) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let socket =
            TcpListener::bind((HOST, 0)).with_context(|| format!("cannot bind {HOST}:0"))?;
        let port = socket.local_addr()?.port();
        if !taken.contains(&port) {
            ports.push(port);
        }
        held.push(socket);
    }
    Ok(ports)
}

/// A node's process.
struct Running {
    node: Node,
    child: Child,
    log: PathBuf,
    /// Set once its exit has been seen.
    exited: Option<ExitStatus>,
}

impl Running {
    /// Whether it has exited, noting the exit the first time.
    fn has_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }
}

fn spawn(
    exe: &Path,
    node: &Node,
    controller: &Node,
    data_dir: &Path,
    user_overrides: &[String],
) -> anyhow::Result<Running> {
    let dir = data_dir.join(node.dir_name());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = dir.join("server.log");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut command = Command::new(exe);
    command.arg("serve");
    for o in node
        .overrides(controller, data_dir)
        .iter()
        .chain(user_overrides)
    {
        command.arg("--override").arg(o);
    }
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // Its own process group: Ctrl-C in the terminal reaches only `cluster up`, which stops the
    // brokers before the controller they need for a controlled shutdown.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    Ok(Running {
        node: node.clone(),
        child,
        log,
        exited: None,
    })
}

#[derive(Default)]
struct Cluster {
    nodes: Vec<Running>,
}

impl Cluster {
    /// Stops the brokers, then the controller: a broker's controlled shutdown asks the
    /// controller to move its partitions' leadership away.
    async fn stop(&mut self) {
        for role in [Role::Broker, Role::Controller] {
            stop_all(self.nodes.iter_mut().filter(|r| r.node.role == role)).await;
        }
    }
}

/// Sends SIGTERM to each running node, waits up to [`STOP_TIMEOUT`] for them all, and kills
/// those still running.
async fn stop_all<'a>(nodes: impl Iterator<Item = &'a mut Running>) {
    let mut stopping: Vec<&mut Running> = Vec::new();
    for r in nodes {
        if r.has_exited().is_none() {
            terminate(&mut r.child);
            stopping.push(r);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let mut running = 0;
        for r in &mut stopping {
            running += usize::from(r.has_exited().is_none());
        }
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in stopping {
        match r.has_exited() {
            Some(status) if status.success() => tracing::info!("{} stopped", r.node),
            Some(status) => tracing::warn!(
                "{} stopped with {status}; its log is {}",
                r.node,
                r.log.display()
            ),
            None => {
                tracing::warn!(
                    "{} did not stop within {} s of SIGTERM: killing it",
                    r.node,
                    STOP_TIMEOUT.as_secs()
                );
                let _ = r.child.kill();
                r.exited = r.child.wait().ok();
            }
        }
    }
}

/// Asks a child to stop cleanly.
#[cfg(unix)]
fn terminate(child: &mut Child) {
    // SAFETY: kill(2) only sends a signal. The pid is a child not yet waited for, so it cannot
    // have been reused by another process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(not(unix))]
fn terminate(child: &mut Child) {
    let _ = child.kill();
}

enum Startup {
    Ready,
    Interrupted,
    Failed(anyhow::Error),
}

/// Polls Metadata on the first broker until it lists every broker (each registered with the
/// controller and unfenced), a node exits, a signal arrives or [`READY_TIMEOUT`] passes. On
/// failure prints the logs of the nodes that are to blame.
async fn wait_until_ready(
    cluster: &mut Cluster,
    signals: &mut Signals,
    brokers: &[&Node],
) -> Startup {
    let wanted: BTreeSet<i32> = brokers.iter().map(|n| n.id).collect();
    let first = brokers[0];
    let deadline = Instant::now() + READY_TIMEOUT;
    let last = loop {
        for r in &mut cluster.nodes {
            if let Some(status) = r.has_exited() {
                print_tail(r);
                return Startup::Failed(anyhow!(
                    "{} (pid {}) exited before the cluster was ready, with {status}",
                    r.node,
                    r.child.id()
                ));
            }
        }
        let listed = match tokio::time::timeout(Duration::from_secs(2), listed_brokers(first)).await
        {
            Ok(listed) => listed,
            Err(_) => Err(anyhow!("no answer within 2 s")),
        };
        if let Ok(listed) = &listed
            && listed.is_superset(&wanted)
        {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            break listed;
        }
        tokio::select! {
            _ = signals.recv() => return Startup::Interrupted,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    };
    // The brokers missing from Metadata (or the first, if it did not answer) and the controller
    // they register with.
    let (problem, blamed): (String, BTreeSet<i32>) = match last {
        Ok(listed) => (
            format!(
                "Metadata from {first} lists brokers {listed:?}, not all of {wanted:?}",
                listed = listed.iter().collect::<Vec<_>>(),
                wanted = wanted.iter().collect::<Vec<_>>(),
            ),
            wanted.difference(&listed).copied().collect(),
        ),
        Err(e) => (
            format!(
                "{first} at {} does not answer Metadata: {e:#}",
                first.address()
            ),
            BTreeSet::from([first.id]),
        ),
    };
    for r in &cluster.nodes {
        if r.node.role == Role::Controller || blamed.contains(&r.node.id) {
            print_tail(r);
        }
    }
    Startup::Failed(anyhow!(
        "the cluster was not ready within {} s: {problem}",
        READY_TIMEOUT.as_secs()
    ))
}

/// The ids of the brokers a broker's Metadata lists.
async fn listed_brokers(broker: &Node) -> anyhow::Result<BTreeSet<i32>> {
    let mut conn = Connection::connect(&broker.address(), "surety-cluster").await?;
    let response = conn
        .send(
            MetadataRequest::default()
                .with_topics(Some(Vec::new()))
                .with_allow_auto_topic_creation(false),
        )
        .await
        .context("Metadata")?;
    Ok(response.brokers.iter().map(|b| b.node_id.0).collect())
}

/// Runs until a signal, reporting each node that exits meanwhile. Fails only if every node has
/// exited: nothing is left to run.
async fn supervise(cluster: &mut Cluster, signals: &mut Signals) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = signals.recv() => {
                tracing::info!("stopping the cluster");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let mut running = 0;
        for r in &mut cluster.nodes {
            let seen = r.exited.is_some();
            match r.has_exited() {
                None => running += 1,
                Some(status) if !seen => tracing::warn!(
                    "{} (pid {}) exited with {status}; the other nodes keep running. Its log is {}",
                    r.node,
                    r.child.id(),
                    r.log.display()
                ),
                Some(_) => {}
            }
        }
        if running == 0 {
            bail!("every node of the cluster has exited");
        }
    }
}

/// Prints the end of a node's log to stderr.
fn print_tail(r: &Running) {
    eprintln!("--- the last lines of {} ({}):", r.node, r.log.display());
    match log_tail(&r.log, TAIL_LINES) {
        Ok(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
        }
        Err(e) => eprintln!("(cannot read it: {e})"),
    }
    eprintln!("---");
}

/// The last `count` lines of a file, reading no more than its last 64 KiB.
fn log_tail(path: &Path, count: usize) -> std::io::Result<Vec<String>> {
    const WINDOW: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let start = file.metadata()?.len().saturating_sub(WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The window may begin inside a line.
        lines.remove(0);
    }
    let from = lines.len().saturating_sub(count);
    Ok(lines[from..].iter().map(|l| l.to_string()).collect())
}

/// Ctrl-C and SIGTERM, registered once so that none is missed between waits.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("SIGTERM handler")?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> anyhow::Result<Self> {
        Ok(Signals {})
    }

    #[cfg(unix)]
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_file_round_trips_with_the_controller_first() {
        let nodes = vec![
            Node {
                role: Role::Controller,
                id: 0,
                port: 4000,
            },
            Node {
                role: Role::Broker,
                id: 1,
                port: 4001,
            },
            Node {
                role: Role::Broker,
                id: 2,
                port: 4002,
            },
        ];
        let text = cluster_file(&nodes);
        assert_eq!(parse_cluster_file(&text).unwrap(), nodes);
        let reordered =
            "broker.2=127.0.0.1:4002\ncontroller.0=127.0.0.1:4000\nbroker.1=127.0.0.1:4001\n";
        assert_eq!(parse_cluster_file(reordered).unwrap(), nodes);
    }

    #[test]
    fn a_damaged_cluster_file_is_refused() {
        for bad in [
            "broker.1=127.0.0.1:4001\n",
            "controller.0=127.0.0.1:4000\ncontroller.1=127.0.0.1:4001\n",
            "controller.0=127.0.0.1:4000\nbroker.0=127.0.0.1:4001\n",
            "controller.0=127.0.0.1:port\n",
            "voter.0=127.0.0.1:4000\n",
        ] {
            assert!(parse_cluster_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_second_run_reuses_the_nodes_and_may_add_brokers() {
        let dir = tempfile::tempdir().unwrap();
        let first = plan_nodes(dir.path(), 2).unwrap();
        assert_eq!(
            first.iter().map(|n| (n.role, n.id)).collect::<Vec<_>>(),
            [(Role::Controller, 0), (Role::Broker, 1), (Role::Broker, 2)]
        );
        let ports: BTreeSet<u16> = first.iter().map(|n| n.port).collect();
        assert_eq!(ports.len(), 3, "distinct ports");
        assert_eq!(plan_nodes(dir.path(), 2).unwrap(), first);
        let grown = plan_nodes(dir.path(), 3).unwrap();
        assert_eq!(grown[..3], first[..]);
        assert_eq!((grown[3].role, grown[3].id), (Role::Broker, 3));
        assert!(!ports.contains(&grown[3].port));
        assert!(
            plan_nodes(dir.path(), 2).is_err(),
            "fewer brokers than stored"
        );
    }

    #[test]
    fn overrides_of_what_each_node_is_given_are_refused() {
        assert!(check_overrides(&["num.partitions=3".into()]).is_ok());
        assert!(check_overrides(&["node.id=4".into()]).is_err());
        assert!(check_overrides(&[" log.dirs = /x".into()]).is_err());
        assert!(check_overrides(&["no-equals".into()]).is_err());
    }
}
