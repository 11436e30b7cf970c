//! Counterexample traces in words: one numbered line per step, naming actors and messages, then
//! the final state.

use std::collections::BTreeSet;
use std::fmt::Write;

use stateright::actor::ActorModelAction;
use surety_core::log::MemoryLog;
use surety_core::record::RecordBatch;
use surety_core::replication::{BrokerId, FetchResult, Msg, PartitionState, Replica, Role};

use super::Layout;
use super::client::{record_index, record_of};
use super::properties::records;
use super::system::{Action, State, System, client};

/// The brokers named in a set, as `{0, 1}`.
pub fn brokers(set: &BTreeSet<BrokerId>) -> String {
    let names: Vec<String> = set.iter().map(|b| b.to_string()).collect();
    format!("{{{}}}", names.join(", "))
}

/// A partition's state as the controller decided it.
pub fn describe_partition(state: &PartitionState) -> String {
    format!(
        "leader {:?}, leader epoch {}, isr {}, partition epoch {}",
        state.leader,
        state.leader_epoch,
        brokers(&state.isr),
        state.partition_epoch
    )
}

/// What the client has had acknowledged.
pub fn describe_client<S: System>(state: &State<S>) -> String {
    format!(
        "  client: acked (record → offset) {:?}\n",
        client::<S>(state).acked
    )
}

/// A replica's role.
pub fn describe_role(role: &Role) -> String {
    match role {
        Role::Unattached => "unattached".to_string(),
        Role::Leader(l) => format!(
            "leader of epoch {} (isr {}, pending {})",
            l.leader_epoch,
            brokers(&l.isr),
            l.pending_isr.as_ref().map_or("none".to_string(), brokers)
        ),
        Role::Follower {
            leader,
            leader_epoch,
        } => format!("follower of {leader:?} in epoch {leader_epoch}"),
    }
}

/// A replica's log, as `offset:r<index>`, and its HW.
pub fn describe_log(replica: &Replica<MemoryLog>) -> String {
    let log: Vec<String> = records(replica)
        .iter()
        .map(|(o, i)| format!("{o}:r{i}"))
        .collect();
    format!("log [{}], hw {}", log.join(" "), replica.high_watermark())
}

/// The records a batch buffer holds, as `offset:r<index>@e<epoch>`.
fn describe_records(records: &bytes::Bytes) -> String {
    let mut out = Vec::new();
    for batch in surety_core::record::batches(records.clone()).flatten() {
        let epoch = batch.header().partition_leader_epoch;
        let Ok(parsed) = RecordBatch::parse(batch.into_bytes()) else {
            continue;
        };
        if let Ok(records) = parsed.records() {
            for record in records.flatten() {
                let index = record.value.as_deref().and_then(record_index);
                match index {
                    Some(i) => out.push(format!("{}:r{i}@e{epoch}", record.offset)),
                    None => out.push(format!("{}:?", record.offset)),
                }
            }
        }
    }
    format!("[{}]", out.join(" "))
}

/// A produce attempt: the record and the retries the client had left when it sent it.
fn attempt(correlation_id: u32) -> String {
    format!(
        "r{} try {}",
        record_of(correlation_id),
        correlation_id % 256
    )
}

/// A replication message, briefly.
pub fn describe_msg(msg: &Msg) -> String {
    match msg {
        Msg::Produce {
            correlation_id,
            acks,
            ..
        } => format!("Produce({}, acks={acks:?})", attempt(*correlation_id)),
        Msg::ProduceResponse {
            correlation_id,
            error_code,
            base_offset,
            ..
        } => format!(
            "ProduceResponse({}, {error_code}, offset {base_offset})",
            attempt(*correlation_id)
        ),
        Msg::Fetch {
            current_leader_epoch,
            fetch_offset,
            last_fetched_epoch,
            ..
        } => format!(
            "Fetch(epoch {current_leader_epoch}, offset {fetch_offset}, last epoch {last_fetched_epoch:?})"
        ),
        Msg::FetchResponse {
            leader_epoch,
            fetch_offset,
            result,
        } => {
            let what = match result {
                FetchResult::Records {
                    high_watermark,
                    records,
                } => format!("records {} hw {high_watermark}", describe_records(records)),
                FetchResult::Diverging(end) => {
                    format!("diverging epoch {} ends at {}", end.epoch, end.end_offset)
                }
                FetchResult::Error(error) => error.to_string(),
            };
            format!("FetchResponse(epoch {leader_epoch}, offset {fetch_offset}: {what})")
        }
        Msg::LeaderAndIsr(state) => format!("LeaderAndIsr({})", describe_partition(state)),
        Msg::AlterPartition {
            leader_epoch,
            partition_epoch,
            new_isr,
            ..
        } => format!(
            "AlterPartition(isr {}, leader epoch {leader_epoch}, partition epoch \
             {partition_epoch})",
            brokers(new_isr)
        ),
        Msg::AlterPartitionResponse {
            error_code,
            proposal: (based_on, isr),
            state,
        } => format!(
            "AlterPartitionResponse({error_code} to isr {} on partition epoch {based_on}; now \
             {})",
            brokers(isr),
            describe_partition(state)
        ),
        other => format!("{other:?}"),
    }
}

/// One step.
pub fn describe_action<S: System>(layout: Layout, action: &Action<S>) -> String {
    let name = |id| layout.name(id);
    match action {
        ActorModelAction::Deliver { src, dst, msg } => {
            format!("{} → {}: {}", name(*src), name(*dst), S::describe_msg(msg))
        }
        ActorModelAction::Drop(env) => format!(
            "the connection between {} and {} breaks, losing what was in flight ({} → {}: {}, ...)",
            name(env.src),
            name(env.dst),
            name(env.src),
            name(env.dst),
            S::describe_msg(&env.msg)
        ),
        ActorModelAction::Timeout(id, timer) => {
            format!("{}: timer {} fires", name(*id), S::describe_timer(timer))
        }
        ActorModelAction::Crash(id) => format!("{} crashes", name(*id)),
        ActorModelAction::Recover(id) => format!("{} restarts", name(*id)),
        ActorModelAction::SelectRandom { actor, .. } => format!("{} chooses", name(*actor)),
    }
}

/// A whole counterexample: the steps, then the final state.
pub fn describe_path<S: System>(
    bound: S::Bound,
    steps: Vec<(State<S>, Option<Action<S>>)>,
) -> String {
    let Some((first, _)) = steps.first() else {
        return String::new();
    };
    let layout = Layout::of(first);
    let mut out = String::new();
    let mut last = None;
    for (i, (state, action)) in steps.into_iter().enumerate() {
        if let Some(action) = action {
            let _ = writeln!(
                out,
                "{:3}. {}",
                i + 1,
                describe_action::<S>(layout, &action)
            );
        }
        last = Some(state);
    }
    if let Some(state) = last {
        let _ = writeln!(out, "final state:");
        out.push_str(&S::describe_state(&bound, &state));
    }
    out
}
