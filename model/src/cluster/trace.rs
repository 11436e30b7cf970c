//! The cluster's messages and timers in words, for counterexample traces.

use surety_core::cluster::ClusterTimer;

use super::actor::{ClusterMsg, ModelTimer};
use crate::harness::trace::describe_msg as describe_replication;

/// A message, briefly.
pub fn describe_msg(msg: &ClusterMsg) -> String {
    let leaders = |states: &[surety_core::replication::PartitionState]| {
        let leaders: Vec<String> = states
            .iter()
            .enumerate()
            .map(|(p, s)| format!("p{p} leader {:?} epoch {}", s.leader, s.leader_epoch))
            .collect();
        leaders.join(", ")
    };
    match msg {
        ClusterMsg::Partition(p, msg) => format!("p{p} {}", describe_replication(msg)),
        ClusterMsg::AlterPartition {
            broker_epoch,
            partition,
            msg,
        } => format!(
            "p{partition} {} with broker epoch {broker_epoch}",
            describe_replication(msg)
        ),
        ClusterMsg::Register => "BrokerRegistration".to_string(),
        ClusterMsg::FetchMetadata => "Fetch(metadata log, from offset 0)".to_string(),
        ClusterMsg::Metadata { states } => format!("metadata log ({})", leaders(states)),
        ClusterMsg::Registered {
            broker_epoch,
            states,
        } => format!(
            "registered (broker epoch {broker_epoch}; {})",
            leaders(states)
        ),
        ClusterMsg::Heartbeat { broker_epoch } => {
            format!("BrokerHeartbeat(broker epoch {broker_epoch})")
        }
    }
}

/// A timer, briefly.
pub fn describe_timer(timer: &ModelTimer) -> String {
    match timer {
        ModelTimer::Replica(p, t) => format!("p{p} {t:?}"),
        ModelTimer::ExpireFetch(p, follower) => {
            format!("p{p} held fetch of broker {follower} expires")
        }
        ModelTimer::Heartbeat => "Heartbeat".to_string(),
        ModelTimer::Cluster(ClusterTimer::BrokerSession(b)) => {
            format!("BrokerSession({b}) (broker {b}'s session expires)")
        }
        ModelTimer::Cluster(ClusterTimer::Election(_, p)) => format!("Election(p{p})"),
    }
}
