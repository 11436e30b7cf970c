//! Counterexample traces in words: one numbered line per step, naming actors and messages.

use std::fmt::Write;

use stateright::actor::{ActorModelAction, Id};
use surety_core::record::RecordBatch;
use surety_core::replication::{FetchResult, Msg};

use super::Bound;
use super::actor::ModelTimer;
use super::client::{record_index, record_of};
use super::properties::describe_state;
use super::system::{Action, State};

fn name(bound: Bound, id: Id) -> String {
    let index = usize::from(id);
    if index < bound.brokers {
        format!("broker {index}")
    } else if index == bound.brokers {
        "controller".to_string()
    } else {
        "client".to_string()
    }
}

/// The records a batch buffer holds, as `offset:r<index>` (or the epoch-stamped offsets).
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

/// A message, briefly.
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
        other => format!("{other:?}"),
    }
}

/// One step.
pub fn describe_action(bound: Bound, action: &Action) -> String {
    match action {
        ActorModelAction::Deliver { src, dst, msg } => format!(
            "{} → {}: {}",
            name(bound, *src),
            name(bound, *dst),
            describe_msg(msg)
        ),
        ActorModelAction::Drop(env) => format!(
            "the connection between {} and {} breaks, losing what was in flight ({} → {}: {}, ...)",
            name(bound, env.src),
            name(bound, env.dst),
            name(bound, env.src),
            name(bound, env.dst),
            describe_msg(&env.msg)
        ),
        ActorModelAction::Timeout(id, timer) => {
            let timer = match timer {
                ModelTimer::Replica(t) => format!("{t:?}"),
                ModelTimer::ExpireFetch(follower) => {
                    format!("parked fetch of broker {follower} expires")
                }
                ModelTimer::Controller(t) => format!("{t:?}"),
                ModelTimer::Elect { timer, leader } => {
                    format!("{timer:?}, and its election chooses broker {leader},")
                }
            };
            format!("{}: timer {timer} fires", name(bound, *id))
        }
        ActorModelAction::Crash(id) => format!("{} crashes", name(bound, *id)),
        ActorModelAction::Recover(id) => format!("{} restarts", name(bound, *id)),
        ActorModelAction::SelectRandom { actor, .. } => format!("{} chooses", name(bound, *actor)),
    }
}

/// A whole counterexample: the steps, then the final state.
pub fn describe_path(bound: Bound, steps: Vec<(State, Option<Action>)>) -> String {
    let mut out = String::new();
    let mut last = None;
    for (i, (state, action)) in steps.into_iter().enumerate() {
        if let Some(action) = action {
            let _ = writeln!(out, "{:3}. {}", i + 1, describe_action(bound, &action));
        }
        last = Some(state);
    }
    if let Some(state) = last {
        let _ = writeln!(out, "final state:");
        out.push_str(&describe_state(&state));
    }
    out
}
