//! The properties checked, named as in `specs/cluster.md`: replication's, on every partition,
//! as the replication model checks them (`harness::properties`), and the cluster's own.

use std::fmt::Write;

use stateright::Property;

use super::actor::ControllerState;
use super::system::{Cluster, State, controller};
use super::{Bound, ClusterModel};
use crate::harness::properties::with_shared;
use crate::harness::system::brokers;
use crate::harness::trace::{describe_client, describe_log, describe_partition, describe_role};

/// No partition's decided leader is a broker the controller has fenced.
pub const FENCED_BROKER_LEADS_NOTHING: &str = "fenced_broker_leads_nothing";
/// A fenced broker is in no ISR, but as the last member of a partition left without a leader.
pub const FENCED_BROKER_OUT_OF_ISR: &str = "fenced_broker_out_of_isr";
/// A broker's registration epoch only grows, and no broker holds one the controller did not
/// give its current registration or an earlier one.
pub const BROKER_EPOCHS_INCREASE: &str = "broker_epochs_increase";
/// Sometimes: a broker whose session expired is unfenced again.
pub const BROKER_FENCED_AND_UNFENCED: &str = "broker_fenced_and_unfenced";

/// Every property: replication's on every partition, shared with the replication model, and
/// the cluster's own.
pub(super) fn properties() -> Vec<Property<ClusterModel>> {
    with_shared(vec![
        Property::always(FENCED_BROKER_LEADS_NOTHING, |m, s| {
            fenced_broker_leads_nothing(&m.bound, controller(s))
        }),
        Property::always(FENCED_BROKER_OUT_OF_ISR, |m, s| {
            fenced_broker_out_of_isr(&m.bound, controller(s))
        }),
        Property::always(BROKER_EPOCHS_INCREASE, |_, s| broker_epochs_increase(s)),
        Property::sometimes(BROKER_FENCED_AND_UNFENCED, |_, s| {
            controller(s).unfenced_after_expiry
        }),
    ])
}

fn fenced(c: &ControllerState, broker: u32) -> bool {
    c.quorum.image().broker(broker).is_none_or(|b| b.fenced)
}

fn fenced_broker_leads_nothing(bound: &Bound, c: &ControllerState) -> bool {
    (0..bound.partitions as u8).all(|p| c.partition(p).leader.is_none_or(|l| !fenced(c, l)))
}

fn fenced_broker_out_of_isr(bound: &Bound, c: &ControllerState) -> bool {
    (0..bound.partitions as u8).all(|p| {
        let state = c.partition(p);
        let last_of_offline = state.leader.is_none() && state.isr.len() == 1;
        last_of_offline || state.isr.iter().all(|&b| !fenced(c, b))
    })
}

fn broker_epochs_increase(s: &State) -> bool {
    let c = controller(s);
    let image = c.quorum.image();
    !c.epoch_regressed
        && brokers::<Cluster>(s).all(|(id, b, _)| {
            b.broker_epoch
                .is_none_or(|e| image.broker(id).is_some_and(|i| e <= i.broker_epoch))
        })
}

/// A readable summary of a state: each broker's registration and replicas (role, log, HW),
/// the controller's image and partitions, and the client's acknowledgements.
pub fn describe_state(bound: &Bound, s: &State) -> String {
    let mut out = String::new();
    for (id, b, crashed) in brokers::<Cluster>(s) {
        let epoch = match (crashed, b.broker_epoch) {
            (true, _) => "down".to_string(),
            (false, Some(e)) => format!("broker epoch {e}"),
            (false, None) => "registering".to_string(),
        };
        let _ = writeln!(out, "  broker {id}: {epoch}");
        for (p, replica) in b.hosted() {
            let role = describe_role(replica.role());
            let _ = writeln!(out, "    p{p}: {role}; {}", describe_log(replica));
        }
    }
    let c = controller(s);
    let brokers: Vec<String> = c
        .quorum
        .image()
        .brokers()
        .map(|(id, b)| {
            let fenced = if b.fenced { ", fenced" } else { "" };
            format!("{id} (epoch {}{fenced})", b.broker_epoch)
        })
        .collect();
    let _ = writeln!(out, "  controller: brokers {}", brokers.join(", "));
    for p in 0..bound.partitions as u8 {
        let _ = writeln!(out, "    p{p}: {}", describe_partition(c.partition(p)));
    }
    out.push_str(&describe_client::<Cluster>(s));
    out
}
