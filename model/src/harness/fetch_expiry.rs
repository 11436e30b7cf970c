//! A leader's held follower fetches, as both models see them: the server expires a held fetch
//! after `replica.fetch.wait.max.ms` (`Replica::expire_parked_fetch`), so each model offers
//! that expiry as a timer, and a held fetch is a request in flight whose connection may break.
//!
//! The expiry timer is set only while the answer would tell the follower a high watermark it
//! was not sent: any other expiry only sends the follower back to where it was.

use surety_core::log::MemoryLog;
use surety_core::replication::{BrokerId, Msg, Replica, Role};

/// The followers whose held fetch an expiry would tell something new, one bit each.
pub fn expirable(replica: &Replica<MemoryLog>) -> u64 {
    let hw = Some(replica.high_watermark());
    match replica.role() {
        Role::Leader(leader) => leader
            .followers
            .iter()
            .filter(|(_, p)| p.parked.is_some() && p.high_watermark_sent != hw)
            .fold(0, |bits, (follower, _)| bits | 1 << follower),
        _ => 0,
    }
}

/// The expiry timers a step from `before` to `after` (bits from [`expirable`]) sets (`true`)
/// or cancels (`false`), by follower.
pub fn timer_changes(before: u64, after: u64) -> impl Iterator<Item = (BrokerId, bool)> {
    (0..u64::BITS)
        .filter(move |f| (before ^ after) & (1 << f) != 0)
        .map(move |f| (f, after & (1 << f) != 0))
}

/// The fetches a leader holds, as the requests their followers sent: (follower, request).
pub fn held(replica: &Replica<MemoryLog>) -> Vec<(BrokerId, Msg)> {
    let Role::Leader(leader) = replica.role() else {
        return Vec::new();
    };
    leader
        .followers
        .iter()
        .filter_map(|(&follower, progress)| {
            let fetch = progress.parked?;
            let msg = Msg::Fetch {
                replica_id: follower,
                current_leader_epoch: fetch.leader_epoch,
                fetch_offset: fetch.fetch_offset,
                last_fetched_epoch: None,
            };
            Some((follower, msg))
        })
        .collect()
}
