//! `surety`: the broker and Kafka's command-line tools in one binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use surety::cli;
use surety::config::BrokerConfig;

#[derive(Parser)]
#[command(name = "surety", version, about = "A Kafka-compatible streaming log")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (127.0.0.1:9092, data in ./surety-data unless configured otherwise).
    Serve {
        /// A server.properties file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A setting as key=value, over the file's (repeatable).
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Create, list, describe and delete topics.
    Topics(cli::topics::TopicsArgs),
    /// Produce lines from stdin, one record each.
    Produce(cli::produce::ProduceArgs),
    /// Print records from a topic.
    Consume(cli::consume::ConsumeArgs),
    /// Measure produce throughput and latency, as kafka-producer-perf-test.
    Perf(cli::perf::PerfArgs),
    /// Inspect and manage consumer groups, as kafka-consumer-groups.
    Groups(cli::groups::GroupsArgs),
    /// Run a local cluster: a controller and brokers, each its own process.
    Cluster(cli::cluster::ClusterArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Produce(_) | Command::Perf(_)) {
        surety::alloc::disable_transparent_huge_pages();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(surety::alloc::collect_when_idle)
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { config, overrides } => {
                let config = BrokerConfig::load(config.as_deref(), &overrides)?;
                surety::server::run(config).await
            }
            Command::Topics(args) => cli::topics::run(args).await,
            Command::Produce(args) => cli::produce::run(args).await,
            Command::Consume(args) => cli::consume::run(args).await,
            Command::Perf(args) => cli::perf::run(args).await,
            Command::Groups(args) => cli::groups::run(args).await,
            Command::Cluster(args) => cli::cluster::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
