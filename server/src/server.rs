//! Starting a broker, running it until a signal, and stopping it cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::network;

/// A broker serving on a socket.
pub struct RunningBroker {
    /// Where it listens (the real port when `listeners` asked for port 0).
    pub addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ticker: Ticker,
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

/// Opens the data directory, binds the listener and starts serving.
pub async fn start(mut config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let listener = TcpListener::bind(config.listener)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listener))?;
    let addr = listener.local_addr()?;
    // Port 0 asks the OS for a free port: clients must be told the real one.
    if config.advertised.1 == 0 {
        config.advertised.1 = addr.port();
    }
    if matches!(config.advertised.0.as_str(), "0.0.0.0" | "::") {
        tracing::warn!(
            "listening on all interfaces without advertised.listeners: advertising 127.0.0.1"
        );
        config.advertised.0 = "127.0.0.1".to_string();
    }
    let broker = Broker::open(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    broker.load_groups();
    let (shutdown, signal) = watch::channel(false);

    let serving = {
        let broker = broker.clone();
        let signal = signal.clone();
        tokio::spawn(async move {
            if let Err(e) = network::serve(listener, broker, signal).await {
                tracing::error!("listener failed: {e}");
            }
        })
    };
    let group_timers = {
        let broker = broker.clone();
        let signal = signal.clone();
        tokio::spawn(async move { broker.groups().run_timers(signal).await })
    };
    let ticker = Ticker::start(broker.clone())?;
    let maintaining = every(broker.maintenance_interval(), broker.clone(), signal, |b| {
        b.maintain()
    });
    Ok(RunningBroker {
        addr,
        broker,
        shutdown,
        tasks: vec![serving, maintaining, group_timers],
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
    /// The broker itself.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, lets each connection finish the request it is handling, then flushes
    /// and closes every log, leaving the clean-shutdown markers.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let ticker = self.ticker;
        let _ = tokio::task::spawn_blocking(move || ticker.stop()).await;
        // Connections notice the signal between requests; give in-flight ones a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.broker) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let broker = self.broker;
        let _ = tokio::task::spawn_blocking(move || broker.shutdown()).await;
    }
}

/// Runs a broker until Ctrl-C or SIGTERM, then stops it cleanly.
pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    raise_open_file_limit();
    let log_dir = config.log_dir.clone();
    let running = start(config).await?;
    tracing::info!(
        "Surety broker listening on {} with data in {}",
        running.addr,
        log_dir.display()
    );
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
