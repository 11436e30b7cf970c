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
//! cargo run --release -p model -- check cluster
//! cargo run --release -p model -- check cluster --variant register-keeps-partitions
//! ```

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use model::check::{self, Options, StopAt, Strategy};
use model::cluster::{self, ClusterVariant};
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
        #[command(flatten)]
        search: SearchArgs,
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

/// How to search, whatever the model.
#[derive(Args)]
struct SearchArgs {
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
}

impl SearchArgs {
    /// The search options, reporting progress as it goes: on `--threads`, or all cores.
    fn options(&self, strategy: Strategy, stop_at: StopAt) -> Options {
        Options {
            strategy,
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            depth: self.depth,
            stop_at,
            progress: true,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// Partition replication: ISR, LEO, high watermark, leader epochs.
    Replication,
    /// The producer's sender: in-flight requests, retries, idempotence.
    Producer,
    /// Consumer groups: joins, generations, assignment, heartbeats, fenced commits.
    Group,
    /// The cluster controller over several partitions: shared broker sessions, registration
    /// and broker epochs, fencing, AlterPartition routing, the metadata log.
    Cluster,
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
    let cluster = ClusterVariant::value_variants()
        .iter()
        .filter(|&&v| v != ClusterVariant::Sound)
        .filter_map(ValueEnum::to_possible_value);
    PossibleValuesParser::new(replication.chain(producer).chain(group).chain(cluster))
}

#[derive(Args)]
struct BoundArgs {
    /// The protocol variant; the broken ones must fail.
    #[arg(long, default_value = "sound", value_parser = variant_names())]
    variant: String,
    /// Producer: max.in.flight.requests.per.connection.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Producer: partitions the batches are spread over. Group: partitions of the topic.
    /// Cluster: partitions of the topic.
    #[arg(long)]
    partitions: Option<u8>,
    /// Cluster: replicas of each partition (placed round robin).
    #[arg(long)]
    replication_factor: Option<usize>,
    /// Cluster: broker sessions that may expire in the whole run.
    #[arg(long)]
    expiries: Option<u8>,
    /// Cluster: the session of a broker that heartbeats may expire too (a zombie: a long GC
    /// pause, a partition from the controller).
    #[arg(long)]
    zombies: bool,
    /// Cluster: a restarted broker acts on the metadata log before it registers, as Surety's
    /// broker does.
    #[arg(long)]
    early_metadata: bool,
    /// Producer: batches the broker may time out.
    #[arg(long)]
    timeouts: Option<u8>,
    /// Producer: batches created after the first ones' delivery.timeout.ms passed.
    #[arg(long)]
    late_batches: Option<u8>,
    /// Brokers (replication: = replication factor). Default: 3, or the variant's smallest
    /// exposing bound.
    #[arg(long)]
    brokers: Option<usize>,
    /// min.insync.replicas.
    #[arg(long)]
    min_isr: Option<usize>,
    /// Records produced with acks=all (cluster: to each partition).
    #[arg(long)]
    records: Option<u32>,
    /// Broker restarts in the whole run.
    #[arg(long)]
    crashes: Option<u32>,
    /// Leader elections after the first.
    #[arg(long)]
    leader_changes: Option<i32>,
    /// ISR changes besides elections (cluster: by leaders' lag checks, per partition).
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

/// Copies each flag given onto the bound's field of the same name.
macro_rules! apply_flags {
    ($args:ident => $bound:ident: $($field:ident),+) => {
        $(if let Some(v) = $args.$field {
            $bound.$field = v;
        })+
    };
}

impl BoundArgs {
    /// The cluster bound: the variant's, with the cluster's flags applied (`--records` is per
    /// partition).
    fn cluster_bound(&self) -> Result<cluster::Bound, String> {
        let variant =
            ClusterVariant::from_str(&self.variant, false).map_err(|_| wrong("cluster"))?;
        let mut bound = variant.bound();
        if let Some(v) = self.brokers {
            bound.brokers = v;
            bound.replication_factor = bound.replication_factor.min(v);
            bound.min_insync_replicas = bound.min_insync_replicas.min(bound.replication_factor);
        }
        if let Some(v) = self.partitions {
            bound.partitions = usize::from(v);
        }
        if let Some(v) = self.replication_factor {
            bound.replication_factor = v;
            bound.min_insync_replicas = bound.min_insync_replicas.min(v);
        }
        if let Some(v) = self.min_isr {
            bound.min_insync_replicas = v;
        }
        apply_flags!(self => bound: records, crashes, expiries, isr_changes, retries, drops);
        bound.zombies |= self.zombies;
        bound.early_metadata |= self.early_metadata;
        // The ghosts keep brokers and partitions as bits of a `u32`.
        if bound.brokers == 0 || bound.brokers > 32 {
            Err("the cluster model takes 1 to 32 brokers".into())
        } else if bound.partitions == 0 || bound.partitions > 32 {
            Err("the cluster model takes 1 to 32 partitions".into())
        } else if bound.replication_factor == 0 || bound.replication_factor > bound.brokers {
            Err("the replication factor must be between 1 and the number of brokers".into())
        } else {
            Ok(bound)
        }
    }

    /// The group bound: the variant's, with the group's flags applied.
    fn group_bound(&self) -> Result<GroupBound, String> {
        let variant = GroupVariant::from_str(&self.variant, false).map_err(|_| wrong("group"))?;
        let mut bound = GroupBound::for_variant(variant);
        if let Some(v) = self.partitions {
            bound.partitions = i32::from(v);
        }
        if let Some(v) = self.crashes {
            bound.crashes = v.min(u32::from(u8::MAX)) as u8;
        }
        apply_flags!(self => bound: consumers, commits, leaves, pauses, assignor, moves);
        apply_flags!(self => bound: failures, restarts);
        bound.statics |= self.statics;
        Ok(bound)
    }

    /// The producer bound: `--records` batches, `--retries` per batch, `--drops` broken
    /// connections, and the producer's own flags.
    fn producer_bound(&self) -> Result<ProducerBound, String> {
        let variant = match self.variant.as_str() {
            "sound" => ProducerVariant::Idempotent,
            name => ProducerVariant::from_str(name, false).map_err(|_| wrong("producer"))?,
        };
        let mut bound = ProducerBound::for_variant(variant);
        apply_flags!(self => bound: max_in_flight, partitions, timeouts, late_batches);
        if let Some(v) = self.records {
            bound.batches = v.min(u32::from(u8::MAX)) as u8;
        }
        if let Some(v) = self.retries {
            bound.retries = u32::from(v);
        }
        if let Some(v) = self.drops {
            bound.disconnects = v;
        }
        Ok(bound)
    }

    /// The replication bound: the nightly one, the one for random walks, or the variant's
    /// smallest exposing one, with the replication flags applied.
    fn bound(&self, deep: bool, simulate: bool) -> Result<Bound, String> {
        let variant = Variant::from_str(&self.variant, false).map_err(|_| wrong("replication"))?;
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
        apply_flags!(self => bound: records, crashes, leader_changes, isr_changes, retries);
        apply_flags!(self => bound: drops, elections);
        Ok(bound)
    }
}

/// Why a `--variant` was refused.
fn wrong(model: &str) -> String {
    format!("that variant is not one of the {model} model's")
}

fn main() -> ExitCode {
    let run = match Cli::parse().command {
        Command::Replay { dir } => return replay(&dir),
        Command::Check {
            model,
            bound,
            search,
        } => match model {
            Which::Replication => check_replication(&bound, &search),
            Which::Producer => check_producer(&bound, &search),
            Which::Group => check_group(&bound, &search),
            Which::Cluster => check_cluster(&bound, &search),
        },
        Command::Explore { model, bound, addr } => match model {
            Which::Replication => bound
                .bound(false, false)
                .map(|b| explore("replication", b, b.into_model(), &addr)),
            Which::Producer => bound
                .producer_bound()
                .map(|b| explore("producer", b, b.into_model(), &addr)),
            Which::Group => bound
                .group_bound()
                .map(|b| explore("group", b, b.into_model(), &addr)),
            Which::Cluster => bound
                .cluster_bound()
                .map(|b| explore("cluster", b, b.into_model(), &addr)),
        },
    };
    run.unwrap_or_else(|why| {
        eprintln!("{why}");
        ExitCode::from(2)
    })
}

fn replay(dir: &std::path::Path) -> ExitCode {
    match model::replay::replay_dir(dir) {
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
    }
}

fn check_replication(bound: &BoundArgs, search: &SearchArgs) -> Result<ExitCode, String> {
    let bound = bound.bound(search.deep, search.simulate)?;
    let strategy = if search.simulate {
        Strategy::Simulate {
            seconds: search.seconds,
            seed: search.seed,
        }
    } else if search.deep || search.dfs {
        Strategy::Dfs
    } else {
        Strategy::Bfs
    };
    println!("checking replication ({strategy:?}) at {bound:?}");
    let options = search.options(strategy, StopAt::FirstViolation);
    // Symmetry needs interchangeable brokers: elections that may choose any of them.
    let symmetry = (strategy == Strategy::Dfs && bound.elections == Elections::Any)
        .then_some(replication::representative as fn(&replication::State) -> _);
    if symmetry.is_some() {
        println!("with symmetry reduction (brokers are interchangeable)");
    }
    let mut model = bound.into_model();
    model.only_effective_actions = search.simulate;
    model.forget_stale = !search.keep_stale;
    let outcome = check::run_reduced(model, options, symmetry);
    Ok(report(&outcome, |path| {
        replication::describe_path(bound, path.clone())
    }))
}

fn check_producer(bound: &BoundArgs, search: &SearchArgs) -> Result<ExitCode, String> {
    let bound = bound.producer_bound()?;
    println!("checking producer (Bfs) at {bound:?}");
    let options = Options {
        // Small enough for one thread, which also keeps counterexamples whole.
        threads: search.threads.unwrap_or(1),
        ..search.options(Strategy::Bfs, StopAt::FirstViolation)
    };
    let outcome = check::run(bound.into_model(), options);
    Ok(report(&outcome, |path| producer::describe_path(path)))
}

fn check_group(bound: &BoundArgs, search: &SearchArgs) -> Result<ExitCode, String> {
    let heartbeats = bound.heartbeats;
    let bound = bound.group_bound()?;
    let strategy = if bound.variant == GroupVariant::Sound {
        Strategy::Dfs
    } else {
        Strategy::Bfs
    };
    println!("checking group ({strategy:?}) at {bound:?}");
    let options = search.options(strategy, StopAt::FirstViolation);
    // Consumers are interchangeable; only the depth-first search can use that.
    let symmetry = (strategy == Strategy::Dfs && !search.no_symmetry)
        .then_some(group::representative as fn(&group::GroupSystem) -> _);
    if symmetry.is_some() {
        println!("with symmetry reduction (consumers are interchangeable)");
    }
    if let Some(n) = heartbeats {
        println!("with {n} heartbeats per consumer, on every timer");
    }
    let mut model = bound.into_model();
    model.forget_ignored = !search.keep_stale;
    model.heartbeat_budget = heartbeats;
    let outcome = check::run_reduced(model, options, symmetry);
    Ok(report(&outcome, |path| group::describe_path(path)))
}

fn check_cluster(bound: &BoundArgs, search: &SearchArgs) -> Result<ExitCode, String> {
    let bound = bound.cluster_bound()?;
    // A broken variant is searched breadth-first, for its shortest counterexample.
    let strategy = if search.dfs && bound.variant == ClusterVariant::Sound {
        Strategy::Dfs
    } else {
        Strategy::Bfs
    };
    println!("checking cluster ({strategy:?}) at {bound:?}");
    // A broken variant searches on until it breaks the property it is known to break (it may
    // break another on the way, as an unclean election breaks `leader_elected_from_isr` before
    // it loses a record); its search is small, and one thread reports its counterexample
    // whole.
    let options = match bound.variant.expected_violation() {
        Some(property) => Options {
            threads: search.threads.unwrap_or(1),
            ..search.options(strategy, StopAt::Violation(property))
        },
        None => search.options(strategy, StopAt::FirstViolation),
    };
    let model = || {
        let mut model = bound.into_model();
        model.forget_stale = !search.keep_stale;
        model
    };
    let mut outcome = check::run(model(), options);
    // Stateright reports the last violating path of a block of work; a search of our own
    // finds a shortest one.
    for (name, trace) in &mut outcome.traces {
        if let Some(shortest) = check::shortest_counterexample(&model(), name) {
            *trace = shortest;
        }
    }
    Ok(report(&outcome, |path| {
        cluster::describe_path(bound, path.clone())
    }))
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

/// Serves Stateright's web explorer for `model` (the `name` model at `bound`) on `addr` until
/// the process is stopped.
fn explore<M>(name: &str, bound: impl std::fmt::Debug, model: M, addr: &str) -> ExitCode
where
    M: stateright::Model + Send + Sync + 'static,
    M::State: std::fmt::Debug + std::hash::Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: std::fmt::Debug + Send + Sync + Clone + PartialEq + 'static,
{
    println!("exploring {name} at {bound:?} on http://{addr}");
    if let Err(e) = std::net::TcpListener::bind(addr) {
        eprintln!("cannot listen on {addr}: {e}");
        return ExitCode::from(2);
    }
    let _explorer = model.checker().serve(addr);
    loop {
        std::thread::park();
    }
}
