//! Runs a Stateright checker over a model and reports as the CLI prints it: states explored,
//! unique states, depth, time, rate, each property's verdict, and a counterexample trace.

use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};

use stateright::report::{ReportData, ReportDiscovery, Reporter};
use stateright::{Checker, Expectation, HasDiscoveries, Model, Path, UniformChooser};

/// How to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Breadth-first and exhaustive: shortest counterexamples.
    Bfs,
    /// Depth-first and exhaustive: less memory, for larger bounds.
    Dfs,
    /// Random walks for this long, far past the exhaustive bound.
    Simulate {
        /// Wall-clock budget.
        seconds: u64,
        /// Seed of the first walk.
        seed: u64,
    },
}

/// When a search may stop before it has seen every state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// At the first property violated: enough to fail a check and show why.
    FirstViolation,
    /// Once this property is violated (a broken variant's expected failure), or never.
    Violation(&'static str),
}

/// Search options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The search strategy.
    pub strategy: Strategy,
    /// Worker threads.
    pub threads: usize,
    /// Stop at this depth, if set.
    pub depth: Option<usize>,
    /// When to stop early.
    pub stop_at: StopAt,
    /// Whether to print progress to standard error as the search goes.
    pub progress: bool,
}

impl Options {
    /// A breadth-first search on every core that stops at the first violation.
    pub fn bfs() -> Self {
        Options::bfs_until(StopAt::FirstViolation)
    }

    /// A breadth-first search on every core that stops as `stop_at` says.
    pub fn bfs_until(stop_at: StopAt) -> Self {
        Options {
            strategy: Strategy::Bfs,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            depth: None,
            stop_at,
            progress: false,
        }
    }
}

/// The properties a spec lists: the backquoted name that opens each item of its
/// `## Properties` section.
pub fn spec_properties(spec: &str) -> BTreeSet<&str> {
    let section = spec
        .split("\n## ")
        .find(|section| section.starts_with("Properties\n"))
        .unwrap_or_default();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("- `")?.split('`').next())
        .collect()
}

/// Panics unless `model` checks exactly the properties its spec lists (`spec` is the text of
/// the spec at `path`): a property renamed, added or dropped in one place and not the other
/// fails a test.
pub fn assert_checks_what_the_spec_lists<M: Model>(model: &M, spec: &str, path: &str) {
    let checked: BTreeSet<&str> = model.properties().iter().map(|p| p.name).collect();
    assert_eq!(
        checked,
        spec_properties(spec),
        "{path} lists what the model checks"
    );
}

/// Waits for a search to end, printing its progress if asked.
fn finish<M, C>(checker: C, progress: bool) -> Box<dyn Checker<M>>
where
    M: Model,
    M::State: Debug + Hash + Clone + PartialEq,
    M::Action: Debug + Clone + PartialEq,
    C: Checker<M> + Send + Sync + 'static,
{
    if progress {
        Box::new(checker.report(&mut Progress {
            printed: Duration::ZERO,
        }))
    } else {
        Box::new(checker.join())
    }
}

/// Prints how far a long search has got, every ten seconds, to standard error.
struct Progress {
    printed: Duration,
}

impl<M: Model> Reporter<M> for Progress {
    fn report_checking(&mut self, data: ReportData) {
        if data.done || data.duration < self.printed + Duration::from_secs(10) {
            return;
        }
        self.printed = data.duration;
        let secs = data.duration.as_secs_f64();
        eprintln!(
            "  ... {} states, {} unique, depth {}, {:.0} s, {:.0} states/s",
            data.total_states,
            data.unique_states,
            data.max_depth,
            secs,
            data.total_states as f64 / secs
        );
    }

    fn report_discoveries(
        &mut self,
        _model: &M,
        _discoveries: BTreeMap<&'static str, ReportDiscovery<M>>,
    ) where
        M::Action: Debug + PartialEq,
        M::State: Debug + Hash + PartialEq,
    {
    }

    fn delay(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// Maps a state to the one of its equivalents the search remembers (symmetry reduction).
pub type Representative<M> = fn(&<M as Model>::State) -> <M as Model>::State;

/// A run of the model: each state with the action taken from it (none after the last).
pub type Trace<M> = Vec<(<M as Model>::State, Option<<M as Model>::Action>)>;

/// Cuts a counterexample at the first state that violates `condition`. The checker records
/// the last violating path it met in a block of work, which may run on past the violation.
fn trim<M: Model>(
    model: &M,
    condition: fn(&M, &M::State) -> bool,
    path: Path<M::State, M::Action>,
) -> Trace<M> {
    let mut steps = path.into_vec();
    match steps.iter().position(|(state, _)| !condition(model, state)) {
        Some(first) => {
            steps.truncate(first + 1);
            steps[first].1 = None;
        }
        // Seen with several threads on tiny models: the recorded path stops short.
        None => eprintln!(
            "note: the checker's recorded path does not reach the violation; \
             rerun with --threads 1 for a complete counterexample"
        ),
    }
    steps
}

/// A shortest path from an initial state to one that violates `property`, within the model's
/// boundary; `None` if no reachable state violates it or the model has no such property.
///
/// Stateright's breadth-first checker reports, for a violated `always` property, the last
/// violating path it met in a block of work, which may be longer than need be. This search
/// stops at the first state that violates the property, so the path to it is as short as any:
/// what a reader of a broken variant's trace wants.
pub fn shortest_counterexample<M>(model: &M, property: &str) -> Option<Trace<M>>
where
    M: Model,
    M::State: Hash + Clone,
    M::Action: Clone,
{
    let fingerprint = |state: &M::State| {
        let mut hasher = DefaultHasher::new();
        state.hash(&mut hasher);
        hasher.finish()
    };
    let condition = model
        .properties()
        .into_iter()
        .find(|p| p.name == property)?
        .condition;
    // Every state reached, and the index of the state each was reached from, and how.
    let mut states: Vec<M::State> = Vec::new();
    let mut parents: Vec<Option<(usize, M::Action)>> = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::new();
    let mut found = None;
    for state in model.init_states() {
        if seen.insert(fingerprint(&state)) {
            queue.push_back(states.len());
            states.push(state);
            parents.push(None);
        }
    }
    let mut actions = Vec::new();
    'search: while let Some(index) = queue.pop_front() {
        if !condition(model, &states[index]) {
            found = Some(index);
            break;
        }
        model.actions(&states[index], &mut actions);
        for action in actions.drain(..) {
            let Some(next) = model.next_state(&states[index], action.clone()) else {
                continue;
            };
            if !model.within_boundary(&next) || !seen.insert(fingerprint(&next)) {
                continue;
            }
            let violates = !condition(model, &next);
            states.push(next);
            parents.push(Some((index, action)));
            if violates {
                found = Some(states.len() - 1);
                break 'search;
            }
            queue.push_back(states.len() - 1);
        }
    }
    let mut at = found?;
    let mut path = vec![(states[at].clone(), None)];
    while let Some((parent, action)) = parents[at].clone() {
        path.push((states[parent].clone(), Some(action)));
        at = parent;
    }
    path.reverse();
    Some(path)
}

/// The fate of one property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An `always` property held in every state explored.
    Holds,
    /// An `always` property failed; the counterexample is in [`Outcome::traces`].
    Violated,
    /// A `sometimes` property was reached.
    Reached,
    /// A `sometimes` property was never reached.
    NotReached,
}

/// What a check found.
pub struct Outcome<M: Model> {
    /// States generated, with repeats.
    pub states: usize,
    /// Distinct states.
    pub unique_states: usize,
    /// Deepest path explored.
    pub max_depth: usize,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Each property, in the model's order.
    pub verdicts: Vec<(&'static str, Verdict)>,
    /// Counterexamples of violated properties, each ending at the first state that violates.
    pub traces: Vec<(&'static str, Trace<M>)>,
    /// Whether the search saw every state within the bound (so an unreached `sometimes` is a
    /// failure): an exhaustive strategy that stopped at no violation.
    pub exhaustive: bool,
}

impl<M: Model> Outcome<M> {
    /// Names of violated properties.
    pub fn violations(&self) -> Vec<&'static str> {
        self.verdicts
            .iter()
            .filter(|(_, v)| *v == Verdict::Violated)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Whether the check passed: every `always` holds and, when exhaustive, every `sometimes`
    /// was reached (an unreachable goal means the model cannot do what it is meant to).
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|(_, v)| match v {
            Verdict::Violated => false,
            Verdict::NotReached => !self.exhaustive,
            Verdict::Holds | Verdict::Reached => true,
        })
    }
}

/// Runs the search to completion.
pub fn run<M>(model: M, options: Options) -> Outcome<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Send + Sync + Hash + Clone + PartialEq + Debug + 'static,
    M::Action: Clone + PartialEq + Debug,
{
    run_reduced(model, options, None)
}

/// Runs the search with symmetry reduction: states with the same `representative` are
/// explored once. Only the depth-first search uses it (Stateright's breadth-first search
/// ignores symmetry), and `representative` must map every state to one the model treats
/// alike.
pub fn run_reduced<M>(
    model: M,
    options: Options,
    representative: Option<Representative<M>>,
) -> Outcome<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Send + Sync + Hash + Clone + PartialEq + Debug + 'static,
    M::Action: Clone + PartialEq + Debug,
{
    let properties = model.properties();
    let finish_when = match options.stop_at {
        StopAt::FirstViolation => HasDiscoveries::AnyFailures,
        StopAt::Violation(name) => HasDiscoveries::AnyOf(BTreeSet::from([name])),
    };
    let mut builder = model
        .checker()
        .threads(options.threads.max(1))
        .finish_when(finish_when);
    if let Some(depth) = options.depth {
        builder = builder.target_max_depth(depth);
    }
    if let Some(representative) = representative {
        assert_ne!(
            options.strategy,
            Strategy::Bfs,
            "breadth-first search ignores symmetry"
        );
        builder = builder.symmetry_fn(representative);
    }
    let started = Instant::now();
    let progress = options.progress;
    let (checker, exhaustive): (Box<dyn Checker<M>>, bool) = match options.strategy {
        Strategy::Bfs => (finish(builder.spawn_bfs(), progress), true),
        Strategy::Dfs => (finish(builder.spawn_dfs(), progress), true),
        Strategy::Simulate { seconds, seed } => {
            let builder = builder.timeout(Duration::from_secs(seconds));
            let checker = builder.spawn_simulation(seed, UniformChooser);
            (finish(checker, progress), false)
        }
    };
    let elapsed = started.elapsed();
    let discoveries = checker.discoveries();
    let mut verdicts = Vec::new();
    let mut traces = Vec::new();
    for property in properties {
        let name = property.name;
        let verdict = match (&property.expectation, discoveries.get(name)) {
            (Expectation::Sometimes, Some(_)) => Verdict::Reached,
            (Expectation::Sometimes, None) => Verdict::NotReached,
            (_, Some(path)) => {
                traces.push((
                    name,
                    trim(checker.model(), property.condition, path.clone()),
                ));
                Verdict::Violated
            }
            (_, None) => Verdict::Holds,
        };
        verdicts.push((name, verdict));
    }
    let stopped_early = !traces.is_empty();
    Outcome {
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        elapsed,
        verdicts,
        traces,
        exhaustive: exhaustive && options.depth.is_none() && !stopped_early,
    }
}

/// Prints the statistics and verdicts.
pub fn print_summary<M: Model>(outcome: &Outcome<M>) {
    let secs = outcome.elapsed.as_secs_f64();
    println!(
        "states explored: {}, unique states: {}, max depth: {}, time: {:.1} s, {:.0} states/s",
        outcome.states,
        outcome.unique_states,
        outcome.max_depth,
        secs,
        outcome.states as f64 / secs.max(1e-9)
    );
    for (name, verdict) in &outcome.verdicts {
        let text = match verdict {
            Verdict::Holds => "holds",
            Verdict::Violated => "VIOLATED",
            Verdict::Reached => "reached",
            Verdict::NotReached if outcome.exhaustive => "NOT REACHED",
            Verdict::NotReached => "not reached (the search stopped before the end)",
        };
        println!("  {name}: {text}");
    }
}
