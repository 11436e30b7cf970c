//! Starting a broker, running it until a signal, and stopping it cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::broker::cluster::ClusterLink;
use crate::config::BrokerConfig;
use crate::controller::ControllerServer;
use crate::network;

/// A node serving on its sockets: a broker, a controller, or both.
pub struct RunningBroker {
    /// Where the broker listens (the real port when `listeners` asked for port 0); the
    /// controller's listener on a controller-only node.
    pub addr: SocketAddr,
    broker: Option<Arc<Broker>>,
    controller: Option<Arc<ControllerServer>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ticker: Option<Ticker>,
}

/// The thread that fires the partitions' actor timers and writes the checkpoints, sleeping
/// until the next is due (Kafka's `kafka-scheduler` thread). Its own thread, not a tokio task:
/// the runtime's workers then do nothing at all while no client is active, which lets the
/// allocator return the memory a burst left behind.
struct Ticker {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn start(broker: Arc<Broker>) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("surety-ticker".into())
            .spawn(move || {
                loop {
                    let wait = broker.tick();
                    match stopped.recv_timeout(wait) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(Ticker { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Opens the data directory, binds the listeners and starts serving, as `process.roles` says.
pub async fn start(mut config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let (shutdown, signal) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut addr = None;
    let controller = if config.cluster.controller && config.cluster.is_clustered() {
        let bind = config
            .cluster
            .controller_listener
            .ok_or_else(|| anyhow::anyhow!("no controller listener"))?;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
        let local = listener.local_addr()?;
        let mut controller_config = config.clone();
        controller_config.log_dir = config.log_dir.join("controller");
        std::fs::create_dir_all(&controller_config.log_dir)?;
        let controller = ControllerServer::open(controller_config)?;
        tracing::info!("Surety controller listening on {local}");
        let service = network::Service::Controller(controller.clone());
        let serving_signal = signal.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = network::serve(listener, service, serving_signal).await {
                tracing::error!("controller listener failed: {e}");
            }
        }));
        tasks.push(tokio::spawn(controller.clone().run_timers(signal.clone())));
        addr = Some(local);
        Some(controller)
    } else {
        None
    };
    let mut ticker = None;
    let broker = if config.cluster.broker {
        let listener = TcpListener::bind(config.listener)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listener))?;
        let local = listener.local_addr()?;
        // Port 0 asks the OS for a free port: clients must be told the real one.
        if config.advertised.1 == 0 {
            config.advertised.1 = local.port();
        }
        if matches!(config.advertised.0.as_str(), "0.0.0.0" | "::") {
            tracing::warn!(
                "listening on all interfaces without advertised.listeners: advertising 127.0.0.1"
            );
            config.advertised.0 = "127.0.0.1".to_string();
        }
        let link = if config.cluster.is_clustered() {
            let link = ClusterLink::new(&config);
            let cluster_id = link.cluster_id().await;
            crate::broker::adopt_cluster_id(&config.log_dir, config.node_id, &cluster_id)
                .map_err(|e| anyhow::anyhow!("meta.properties: {e}"))?;
            Some(link)
        } else {
            None
        };
        let broker = Broker::open(config, link.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        if link.is_some()
            && let Some(dir) = &broker.config().trace_dir
        {
            let writer = crate::trace::TraceWriter::open(dir, broker.config().node_id)
                .map_err(|e| anyhow::anyhow!("surety.test.trace.dir: {e}"))?;
            broker.topics().shared().set_trace(Arc::new(writer));
        }
        match &link {
            Some(link) => link.start(&broker, signal.clone()),
            None => {
                broker.load_groups();
            }
        }
        let serving = {
            let broker = broker.clone();
            let signal = signal.clone();
            tokio::spawn(async move {
                let service = network::Service::Broker(broker);
                if let Err(e) = network::serve(listener, service, signal).await {
                    tracing::error!("listener failed: {e}");
                }
            })
        };
        let group_timers = {
            let broker = broker.clone();
            let signal = signal.clone();
            tokio::spawn(async move { broker.groups().run_timers(signal).await })
        };
        ticker = Some(Ticker::start(broker.clone())?);
        let maintaining = every(broker.maintenance_interval(), broker.clone(), signal, |b| {
            b.maintain()
        });
        tasks.extend([serving, maintaining, group_timers]);
        addr = Some(local);
        Some(broker)
    } else {
        None
    };
    Ok(RunningBroker {
        addr: addr.ok_or_else(|| anyhow::anyhow!("process.roles names no role"))?,
        broker,
        controller,
        shutdown,
        tasks,
        ticker,
    })
}

/// Runs `work` on the blocking pool every `period` until the shutdown signal, never two at once
/// (a slow run delays the next tick rather than piling up).
fn every(
    period: Duration,
    broker: Arc<Broker>,
    mut signal: watch::Receiver<bool>,
    work: fn(&Broker),
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let broker = broker.clone();
                    let _ = tokio::task::spawn_blocking(move || work(&broker)).await;
                }
                _ = signal.changed() => return,
            }
        }
    })
}

impl RunningBroker {
    /// The broker, unless this node is a controller only.
    pub fn broker(&self) -> Option<&Arc<Broker>> {
        self.broker.as_ref()
    }

    /// Stops accepting, lets each connection finish the request it is handling, then flushes
    /// and closes every log, leaving the clean-shutdown markers.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(ticker) = self.ticker {
            let _ = tokio::task::spawn_blocking(move || ticker.stop()).await;
        }
        if let Some(broker) = self.broker {
            // Connections notice the signal between requests; give in-flight ones a moment.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&broker) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
        }
        if let Some(controller) = self.controller {
            let _ = tokio::task::spawn_blocking(move || controller.shutdown()).await;
        }
    }
}

/// Runs a broker until Ctrl-C or SIGTERM, then stops it cleanly.
pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    raise_open_file_limit();
    let log_dir = config.log_dir.clone();
    let running = start(config).await?;
    if running.broker().is_some() {
        tracing::info!(
            "Surety broker listening on {} with data in {}",
            running.addr,
            log_dir.display()
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Raises the soft open-file limit to the hard one: every connection is a descriptor, and the
/// usual soft default of 1024 would refuse clients long before the connection quotas do.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!("cannot raise the open-file limit from {soft}");
            }
        }
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}
