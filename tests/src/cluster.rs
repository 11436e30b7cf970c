//! A cluster of `surety` processes for end-to-end tests: one controller (node 0) and brokers
//! 1..=N, each its own OS process with its own data directory, so that a test can kill -9 one
//! broker and watch the others fail over, then restart it on its data.
//!
//! Ports are chosen once, before any node starts: the controller's address is in every node's
//! `controller.quorum.voters` and brokers are known by address, so a restarted node must come
//! back on the same port with the same `node.id`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataRequest;
use surety::client::Connection;

use crate::BrokerProcess;

/// How long a new cluster may take until Metadata lists every broker.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A controller and N brokers, each a [`BrokerProcess`]. Dropping it kills every node.
pub struct ClusterProcesses {
    /// Node id → process; `None` only while a node restarts.
    nodes: Vec<Option<BrokerProcess>>,
    /// Node id → address.
    addresses: Vec<String>,
    dir: PathBuf,
    overrides: Vec<String>,
}

impl ClusterProcesses {
    /// Starts a controller and `brokers` brokers with data directories in `dir`
    /// (`controller-0`, `broker-1`, ...), every node with `overrides` after the settings that
    /// make it a node of this cluster (which they must not replace: `process.roles`,
    /// `node.id`, `listeners`, `controller.quorum.voters`, `log.dirs`), and waits until
    /// Metadata from broker 1 lists every broker. Panics with the nodes' logs if it does not
    /// within 60 s.
    pub fn start(dir: &Path, brokers: usize, overrides: &[&str]) -> Self {
        assert!(brokers > 0, "a cluster needs a broker");
        let mut cluster = ClusterProcesses {
            nodes: Vec::new(),
            addresses: free_ports(brokers + 1)
                .into_iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect(),
            dir: dir.to_path_buf(),
            overrides: overrides.iter().map(|o| o.to_string()).collect(),
        };
        for id in 0..=brokers as i32 {
            let node = cluster.spawn(id);
            cluster.nodes.push(Some(node));
        }
        let all: Vec<i32> = cluster.broker_ids().collect();
        cluster.wait_for_brokers(1, &all, READY_TIMEOUT);
        cluster
    }

    /// The brokers' addresses, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addresses[1..].join(",")
    }

    /// The brokers' node ids.
    pub fn broker_ids(&self) -> std::ops::Range<i32> {
        1..self.addresses.len() as i32
    }

    /// The address of node `node_id` (0 is the controller).
    pub fn address(&self, node_id: i32) -> &str {
        &self.addresses[index(node_id)]
    }

    /// Node `node_id`'s process (0 is the controller), for its logs and pid.
    pub fn node(&self, node_id: i32) -> &BrokerProcess {
        self.nodes[index(node_id)]
            .as_ref()
            .unwrap_or_else(|| panic!("node {node_id} failed to restart"))
    }

    /// The controller's process.
    pub fn controller(&self) -> &BrokerProcess {
        self.node(0)
    }

    /// Broker `node_id`'s process.
    pub fn broker(&self, node_id: i32) -> &BrokerProcess {
        assert!(
            node_id >= 1,
            "brokers are nodes 1..=N; the controller is node 0"
        );
        self.node(node_id)
    }

    /// Kills node `node_id` with SIGKILL: no flush, no controlled shutdown.
    pub fn kill(&mut self, node_id: i32) {
        if let Some(node) = &mut self.nodes[index(node_id)] {
            node.kill();
        }
    }

    /// Starts node `node_id` again (killing it first if it runs) on its port and data. A
    /// broker is then waited for until its own Metadata lists it, registered and unfenced; the
    /// controller until it listens.
    pub fn restart(&mut self, node_id: i32) {
        let slot = index(node_id);
        if let Some(mut node) = self.nodes[slot].take() {
            node.kill();
        }
        self.nodes[slot] = Some(self.spawn(node_id));
        if node_id > 0 {
            self.wait_for_brokers(node_id, &[node_id], READY_TIMEOUT);
        }
    }

    /// Stops every node with SIGTERM, the brokers first (their controlled shutdown needs the
    /// controller), and returns each node's exit status by node id.
    pub fn terminate_all(&mut self) -> Vec<(i32, ExitStatus)> {
        let mut statuses = Vec::new();
        for id in self.broker_ids().chain([0]) {
            if let Some(node) = &mut self.nodes[index(id)] {
                statuses.push((id, node.terminate()));
            }
        }
        statuses.sort_by_key(|(id, _)| *id);
        statuses
    }

    /// The node ids of the brokers that Metadata from broker `via` lists.
    pub fn listed_brokers(&self, via: i32) -> Result<Vec<i32>, String> {
        listed_brokers(self.address(via))
    }

    /// Waits until Metadata from broker `via` lists every broker of `node_ids`. Panics with
    /// every node's log if that takes longer than `limit`.
    pub fn wait_for_brokers(&self, via: i32, node_ids: &[i32], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let listed = self.listed_brokers(via);
            if let Ok(ids) = &listed
                && node_ids.iter().all(|id| ids.contains(id))
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "Metadata from broker {via} did not list brokers {node_ids:?} within {} s \
                     (last answer: {listed:?}); the nodes logged:\n{}",
                    limit.as_secs(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every node's log so far, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (id, node) in self.nodes.iter().enumerate() {
            text.push_str(&format!("--- node {id}:\n"));
            if let Some(node) = node {
                text.push_str(&node.log_lines().join("\n"));
                text.push('\n');
            }
        }
        text
    }

    fn spawn(&self, node_id: i32) -> BrokerProcess {
        let (role, listener_name) = if node_id == 0 {
            ("controller", "CONTROLLER")
        } else {
            ("broker", "PLAINTEXT")
        };
        let mut overrides = vec![
            format!("process.roles={role}"),
            format!("node.id={node_id}"),
            format!("controller.quorum.voters=0@{}", self.addresses[0]),
        ];
        overrides.extend(self.overrides.iter().cloned());
        BrokerProcess::start_on(
            self.dir.join(format!("{role}-{node_id}")),
            listener_name,
            self.address(node_id),
            &overrides,
        )
    }
}

fn index(node_id: i32) -> usize {
    usize::try_from(node_id).expect("node ids are not negative")
}

/// `count` distinct ports free now. Each probe socket stays bound until all are chosen, so none
/// is chosen twice.
fn free_ports(count: usize) -> Vec<u16> {
    let sockets: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("a bound address").port())
        .collect()
}

/// The node ids of the brokers a broker's Metadata lists, or why there is no answer.
fn listed_brokers(address: &str) -> Result<Vec<i32>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let ask = async {
            let mut conn = Connection::connect(address, "surety-tests-cluster").await?;
            conn.send(
                MetadataRequest::default()
                    .with_topics(Some(Vec::new()))
                    .with_allow_auto_topic_creation(false),
            )
            .await
        };
        match tokio::time::timeout(Duration::from_secs(5), ask).await {
            Ok(Ok(response)) => Ok(response.brokers.iter().map(|b| b.node_id.0).collect()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("{address} did not answer Metadata within 5 s")),
        }
    })
}

/// A partition's leadership as Metadata reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader, -1 when there is none.
    pub leader: i32,
    /// Its epoch.
    pub leader_epoch: i32,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
}

/// Partition `index` of `topic` as the first of `addresses` (comma-separated) that answers
/// Metadata reports it; `None` if none answers or the partition is unknown.
pub async fn leadership(addresses: &str, topic: &str, index: i32) -> Option<Leadership> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    for address in addresses.split(',') {
        let Ok(mut conn) = Connection::connect(address, "surety-tests").await else {
            continue;
        };
        let request = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(surety::cli::topic_name(topic))),
        ]));
        let Ok(response) = conn.send(request).await else {
            continue;
        };
        let p = response
            .topics
            .first()?
            .partitions
            .iter()
            .find(|p| p.partition_index == index)?;
        return Some(Leadership {
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
        });
    }
    None
}

/// Creates `topic` through `surety topics create` at `bootstrap`, panicking with its error.
pub fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i16,
    configs: &[&str],
) {
    let partitions = partitions.to_string();
    let replication = replication.to_string();
    let mut args = vec![
        "topics",
        "--bootstrap-server",
        bootstrap,
        "create",
        topic,
        "--partitions",
        &partitions,
        "--replication-factor",
        &replication,
    ];
    for config in configs {
        args.extend(["--config", config]);
    }
    let out = crate::run_with_timeout(
        std::process::Command::new(crate::surety_binary()).args(&args),
        None,
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "creating {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
