//! `model`: check or explore Surety's protocol models.
//!
//! ```text
//! cargo run --release -p model -- check replication
//! cargo run --release -p model -- check replication --variant hw-truncation
//! cargo run --release -p model -- check replication --deep
//! cargo run --release -p model -- check replication --simulate --seconds 60
//! cargo run -p model -- explore replication --addr 127.0.0.1:3000
//! cargo run --release -p model -- check producer
//! cargo run --release -p model -- check producer --variant no-idempotence
//! cargo run --release -p model -- check group
//! cargo run --release -p model -- check group --variant accept-stale-commits
//! ```

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use model::check::{self, Options, StopAt, Strategy};
use model::group::{self, GroupAssignor, GroupBound, GroupVariant};
use model::producer::{self, ProducerBound, ProducerVariant};
use model::replication::{self, Bound, Elections, Variant};

#[derive(Parser)]
#[command(about = "Model-check Surety's protocols with Stateright")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Explore a model exhaustively (or by random walks) and check its properties.
    Check {
        /// Which protocol.
        #[arg(value_enum, default_value = "replication")]
        model: Which,
        #[command(flatten)]
        bound: BoundArgs,
        /// Stop at this depth.
        #[arg(long)]
        depth: Option<usize>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// The nightly bound, searched depth-first with symmetry reduction.
        #[arg(long, conflicts_with = "simulate")]
        deep: bool,
        /// Search depth-first (less memory; with `--elections any`, symmetry reduction too).
        #[arg(long, conflicts_with = "simulate")]
        dfs: bool,
        /// Random walks instead of an exhaustive search, at a bound far past the exhaustive one.
        #[arg(long)]
        simulate: bool,
        /// How long to walk, with --simulate.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seed for --simulate.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep messages their receiver will ignore (slower; only to measure what forgetting
        /// them saves).
        #[arg(long)]
        keep_stale: bool,
        /// Group: explore every ordering of the consumers (slower; only to measure what
        /// symmetry reduction saves).
        #[arg(long)]
        no_symmetry: bool,
    },
    /// Replay a real cluster's actor steps (recorded with `surety.test.trace.dir`) through
    /// core's actors: the effects must match what the nodes recorded, and the replication
    /// properties must hold on every state the cluster went through. Exits 1 naming the
    /// first mismatch or violated property.
    Replay {
        /// The directory the nodes wrote their `node-<id>.trace` files to.
        dir: std::path::PathBuf,
    },
    /// Serve Stateright's web explorer for a model.
    Explore {
        /// Which protocol.
        #[arg(value_enum, default_value = "replication")]
        model: Which,
        #[command(flatten)]
        bound: BoundArgs,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// Partition replication: ISR, LEO, high watermark, leader epochs.
    Replication,
    /// The producer's sender: in-flight requests, retries, idempotence.
    Producer,
    /// Consumer groups: joins, generations, assignment, heartbeats, fenced commits.
    Group,
}

/// `--variant`: any replication or producer variant by its name; each model then takes only
/// its own (and `sound` means the producer's `idempotent`).
fn variant_names() -> PossibleValuesParser {
    let replication = Variant::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value);
    let producer = ProducerVariant::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value);
    let group = GroupVariant::value_variants()
        .iter()
        .filter(|&&v| v != GroupVariant::Sound)
        .filter_map(ValueEnum::to_possible_value);
    PossibleValuesParser::new(replication.chain(producer).chain(group))
}

#[derive(Args)]
struct BoundArgs {
    /// The protocol variant; the broken ones must fail.
    #[arg(long, default_value = "sound", value_parser = variant_names())]
    variant: String,
    /// Producer: max.in.flight.requests.per.connection.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Producer: partitions the batches are spread over.
    #[arg(long)]
    partitions: Option<u8>,
    /// Producer: batches the broker may time out.
    #[arg(long)]
    timeouts: Option<u8>,
    /// Producer: batches created after the first ones' delivery.timeout.ms passed.
    #[arg(long)]
    late_batches: Option<u8>,
    /// Brokers (= replication factor). Default: 3, or the variant's smallest exposing bound.
    #[arg(long)]
    brokers: Option<usize>,
    /// min.insync.replicas.
    #[arg(long)]
    min_isr: Option<usize>,
    /// Records produced with acks=all.
    #[arg(long)]
    records: Option<u32>,
    /// Broker restarts in the whole run.
    #[arg(long)]
    crashes: Option<u32>,
    /// Leader elections after the first.
    #[arg(long)]
    leader_changes: Option<i32>,
    /// ISR changes besides elections.
    #[arg(long)]
    isr_changes: Option<i32>,
    /// Client retries in the whole run.
    #[arg(long)]
    retries: Option<u8>,
    /// Connections that may break (besides those crashes break) in the whole run.
    #[arg(long)]
    drops: Option<u8>,
    /// How elections choose: Kafka's preferred order, or any eligible replica (every order).
    #[arg(long, value_enum)]
    elections: Option<Elections>,
    /// Group: consumers.
    #[arg(long)]
    consumers: Option<usize>,
    /// Group: heartbeat whenever the timer fires, this many times per consumer, rather than
    /// whenever a heartbeat would tell the member something (slower; only to measure what
    /// that saves).
    #[arg(long)]
    heartbeats: Option<u8>,
    /// Group: offset commits in the whole run.
    #[arg(long)]
    commits: Option<u8>,
    /// Group: consumers that may leave.
    #[arg(long)]
    leaves: Option<u8>,
    /// Group: consumers that may pause past their session.
    #[arg(long)]
    pauses: Option<u8>,
    /// Group: times the coordinator moves (a new one loads the group from its partition).
    #[arg(long)]
    moves: Option<u8>,
    /// Group: stores to the coordinator's partition that fail.
    #[arg(long)]
    failures: Option<u8>,
    /// Group: static members (each consumer with its own group.instance.id, KIP-345).
    #[arg(long)]
    statics: bool,
    /// Group: crashed consumers that start again.
    #[arg(long)]
    restarts: Option<u8>,
    /// Group: the consumers' partition.assignment.strategy (cooperative-sticky is KIP-429's
    /// incremental protocol).
    #[arg(long, value_enum)]
    assignor: Option<GroupAssignor>,
}

impl BoundArgs {
    /// The group bound: the variant's, with the group's flags applied.
    fn group_bound(&self) -> Option<GroupBound> {
        let variant = GroupVariant::from_str(&self.variant, false).ok()?;
        let mut bound = GroupBound::for_variant(variant);
        if let Some(v) = self.consumers {
            bound.consumers = v;
        }
        if let Some(v) = self.partitions {
            bound.partitions = i32::from(v);
        }
        if let Some(v) = self.commits {
            bound.commits = v;
        }
        if let Some(v) = self.leaves {
            bound.leaves = v;
        }
        if let Some(v) = self.crashes {
            bound.crashes = v.min(u32::from(u8::MAX)) as u8;
        }
        if let Some(v) = self.pauses {
            bound.pauses = v;
        }
        if let Some(v) = self.assignor {
            bound.assignor = v;
        }
        if let Some(v) = self.moves {
            bound.moves = v;
        }
        if let Some(v) = self.failures {
            bound.failures = v;
        }
        if self.statics {
            bound.statics = true;
        }
        if let Some(v) = self.restarts {
            bound.restarts = v;
        }
        Some(bound)
    }

    /// The producer bound: `--records` batches, `--retries` per batch, `--drops` broken
    /// connections, and the producer's own flags.
    fn producer_bound(&self) -> Option<ProducerBound> {
        let variant = match self.variant.as_str() {
            "sound" => ProducerVariant::Idempotent,
            name => ProducerVariant::from_str(name, false).ok()?,
        };
        let mut bound = ProducerBound::for_variant(variant);
        if let Some(v) = self.max_in_flight {
            bound.max_in_flight = v;
        }
        if let Some(v) = self.partitions {
            bound.partitions = v;
        }
        if let Some(v) = self.timeouts {
            bound.timeouts = v;
        }
        if let Some(v) = self.late_batches {
            bound.late_batches = v;
        }
        if let Some(v) = self.records {
            bound.batches = v.min(u32::from(u8::MAX)) as u8;
        }
        if let Some(v) = self.retries {
            bound.retries = u32::from(v);
        }
        if let Some(v) = self.drops {
            bound.disconnects = v;
        }
        Some(bound)
    }

    fn bound(&self, deep: bool, simulate: bool) -> Option<Bound> {
        let variant = Variant::from_str(&self.variant, false).ok()?;
        let mut bound = if deep {
            Bound::deep()
        } else if simulate && variant == Variant::Sound {
            Bound::walks()
        } else {
            variant.smallest_bound()
        };
        bound.variant = variant;
        if let Some(v) = self.brokers {
            bound.brokers = v;
            bound.min_insync_replicas = bound.min_insync_replicas.min(v);
        }
        if let Some(v) = self.min_isr {
            bound.min_insync_replicas = v;
        }
        if let Some(v) = self.records {
            bound.records = v;
        }
        if let Some(v) = self.crashes {
            bound.crashes = v;
        }
        if let Some(v) = self.leader_changes {
            bound.leader_changes = v;
        }
        if let Some(v) = self.isr_changes {
            bound.isr_changes = v;
        }
        if let Some(v) = self.retries {
            bound.retries = v;
        }
        if let Some(v) = self.drops {
            bound.drops = v;
        }
        if let Some(v) = self.elections {
            bound.elections = v;
        }
        Some(bound)
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay { dir } => match model::replay::replay_dir(&dir) {
            Ok(report) => {
                println!(
                    "replayed {} steps from {} traces ({} replica, {} controller): effects \
                     match; {} acknowledged records checked; properties held at {} states",
                    report.steps,
                    report.files,
                    report.replica_steps,
                    report.controller_steps,
                    report.acked_records,
                    report.checks
                );
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("replay failed: {failure}");
                ExitCode::FAILURE
            }
        },
        Command::Check {
            model: Which::Replication,
            bound,
            depth,
            threads,
            deep,
            dfs,
            simulate,
            seconds,
            seed,
            keep_stale,
            ..
        } => {
            let Some(bound) = bound.bound(deep, simulate) else {
                return wrong_variant("replication");
            };
            let strategy = if simulate {
                Strategy::Simulate { seconds, seed }
            } else if deep || dfs {
                Strategy::Dfs
            } else {
                Strategy::Bfs
            };
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            println!("checking replication ({strategy:?}) at {bound:?}");
            let options = Options {
                strategy,
                threads,
                depth,
                stop_at: StopAt::FirstViolation,
                progress: true,
            };
            // Symmetry needs interchangeable brokers: elections that may choose any of them.
            let symmetry = (strategy == Strategy::Dfs && bound.elections == Elections::Any)
                .then_some(replication::representative as fn(&replication::State) -> _);
            if symmetry.is_some() {
                println!("with symmetry reduction (brokers are interchangeable)");
            }
            let mut model = bound.into_model();
            model.only_effective_actions = simulate;
            model.forget_stale = !keep_stale;
            let outcome = check::run_reduced(model, options, symmetry);
            report(&outcome, |path| {
                replication::describe_path(bound, path.clone())
            })
        }
        Command::Explore {
            model: Which::Replication,
            bound,
            addr,
        } => {
            let Some(bound) = bound.bound(false, false) else {
                return wrong_variant("replication");
            };
            println!("exploring replication at {bound:?} on http://{addr}");
            explore(bound.into_model(), &addr)
        }
        Command::Check {
            model: Which::Producer,
            bound,
            depth,
            threads,
            ..
        } => {
            let Some(bound) = bound.producer_bound() else {
                return wrong_variant("producer");
            };
            println!("checking producer (Bfs) at {bound:?}");
            let options = Options {
                // Small enough for one thread, which also keeps counterexamples whole.
                threads: threads.unwrap_or(1),
                depth,
                progress: true,
                ..Options::bfs()
            };
            let outcome = check::run(bound.into_model(), options);
            report(&outcome, |path| producer::describe_path(path))
        }
        Command::Check {
            model: Which::Group,
            bound,
            depth,
            threads,
            keep_stale,
            no_symmetry,
            ..
        } => {
            let heartbeats = bound.heartbeats;
            let Some(bound) = bound.group_bound() else {
                return wrong_variant("group");
            };
            let strategy = if bound.variant == GroupVariant::Sound {
                Strategy::Dfs
            } else {
                Strategy::Bfs
            };
            println!("checking group ({strategy:?}) at {bound:?}");
            let options = Options {
                strategy,
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                depth,
                stop_at: StopAt::FirstViolation,
                progress: true,
            };
            // Consumers are interchangeable; only the depth-first search can use that.
            let symmetry = (strategy == Strategy::Dfs && !no_symmetry)
                .then_some(group::representative as fn(&group::GroupSystem) -> _);
            if symmetry.is_some() {
                println!("with symmetry reduction (consumers are interchangeable)");
            }
            if let Some(n) = heartbeats {
                println!("with {n} heartbeats per consumer, on every timer");
            }
            let mut model = bound.into_model();
            model.forget_ignored = !keep_stale;
            model.heartbeat_budget = heartbeats;
            let outcome = check::run_reduced(model, options, symmetry);
            report(&outcome, |path| group::describe_path(path))
        }
        Command::Explore {
            model: Which::Group,
            bound,
            addr,
        } => {
            let Some(bound) = bound.group_bound() else {
                return wrong_variant("group");
            };
            println!("exploring group at {bound:?} on http://{addr}");
            explore(bound.into_model(), &addr)
        }
        Command::Explore {
            model: Which::Producer,
            bound,
            addr,
        } => {
            let Some(bound) = bound.producer_bound() else {
                return wrong_variant("producer");
            };
            println!("exploring producer at {bound:?} on http://{addr}");
            explore(bound.into_model(), &addr)
        }
    }
}

/// Prints a check's figures, verdicts and counterexamples; exit 1 if it failed.
fn report<M: stateright::Model>(
    outcome: &check::Outcome<M>,
    describe: impl Fn(&check::Trace<M>) -> String,
) -> ExitCode {
    check::print_summary(outcome);
    for (name, path) in &outcome.traces {
        println!("\ncounterexample to {name}:");
        print!("{}", describe(path));
    }
    if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Serves Stateright's web explorer for `model` on `addr` until the process is stopped.
fn explore<M>(model: M, addr: &str) -> ExitCode
where
    M: stateright::Model + Send + Sync + 'static,
    M::State: std::fmt::Debug + std::hash::Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: std::fmt::Debug + Send + Sync + Clone + PartialEq + 'static,
{
    if let Err(e) = std::net::TcpListener::bind(addr) {
        eprintln!("cannot listen on {addr}: {e}");
        return ExitCode::from(2);
    }
    let _explorer = model.checker().serve(addr);
    loop {
        std::thread::park();
    }
}

fn wrong_variant(model: &str) -> ExitCode {
    eprintln!("that variant is not one of the {model} model's");
    ExitCode::from(2)
}
