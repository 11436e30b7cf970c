//! A broker driven in process while one `__consumer_offsets` partition is still loading: every
//! request for a group on it is answered `COORDINATOR_LOAD_IN_PROGRESS` (FindCoordinator
//! excepted), and once it is read the same requests get their usual answers, committed offsets
//! included after a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety_core::errors::Errors;
use surety_core::group::placement::offsets_partition_for;

use super::driver::LoadState;
use crate::broker::topic_config::TopicConfig;
use crate::broker::{Broker, now_ms};
use crate::config::BrokerConfig;

const GROUP: &str = "loading-group";
const TOPIC: &str = "orders";
const OFFSETS_PARTITIONS: i32 = 3;
const LOADING: i16 = Errors::CoordinatorLoadInProgress.code();
const NONE: i16 = Errors::None.code();

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50000))
}

/// A broker on `dir` with its group timers running (until the sender is dropped).
fn open(dir: &std::path::Path) -> (Arc<Broker>, tokio::sync::watch::Sender<bool>) {
    let config = BrokerConfig::from_pairs(
        [
            ("log.dirs", dir.to_str().unwrap()),
            ("offsets.topic.num.partitions", "3"),
            ("group.initial.rebalance.delay.ms", "0"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap();
    let broker = Broker::open(config, None).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let timers = broker.groups().clone();
    tokio::spawn(async move { timers.run_timers(stopped).await });
    (broker, stop)
}

/// The `__consumer_offsets` partition of `GROUP`.
fn group_partition() -> i32 {
    offsets_partition_for(GROUP, OFFSETS_PARTITIONS)
}

async fn find_coordinator(broker: &Broker) -> i16 {
    let request = FindCoordinatorRequest::default().with_key(s(GROUP));
    super::find_coordinator(broker, request, 3).error_code
}

async fn join(broker: &Broker) -> (i16, String) {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"subscription")),
        ]);
    let r = super::join_group(broker, request, 3, Some("test"), peer()).await;
    (r.error_code, r.member_id.to_string())
}

async fn commit(broker: &Broker, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ]);
    let r = super::offset_commit(broker, request, Some("test"), peer()).await;
    r.topics[0].partitions[0].error_code
}

/// OffsetFetch v8 (errors per group): the group's error and its committed offset.
fn fetch_v8(broker: &Broker) -> (i16, Option<i64>) {
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(vec![0]),
            ])),
    ]);
    let r = super::offset_fetch(broker, request, 8);
    let g = &r.groups[0];
    let offset = g
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.committed_offset);
    (g.error_code, offset)
}

/// OffsetFetch at an older `version`: the top-level error (v2+) and the partition's error
/// (where v0-1 carry it).
fn fetch_old(broker: &Broker, version: i16) -> (i16, Option<i16>) {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partition_indexes(vec![0]),
        ]));
    let r = super::offset_fetch(broker, request, version);
    let partition = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.error_code);
    (r.error_code, partition)
}

fn describe(broker: &Broker) -> i16 {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]);
    super::describe_groups(broker, request, 5).groups[0].error_code
}

fn list(broker: &Broker) -> i16 {
    super::list_groups(broker, ListGroupsRequest::default(), 4).error_code
}

/// Every request a group on a loading partition answers; FindCoordinator answers as usual.
async fn assert_loading(broker: &Broker) {
    assert_eq!(find_coordinator(broker).await, NONE);
    assert_eq!(join(broker).await.0, LOADING, "JoinGroup");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s("m"));
    let sync = super::sync_group(broker, sync, 3, None, peer()).await;
    assert_eq!(sync.error_code, LOADING, "SyncGroup");
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s("m"));
    let heartbeat = super::heartbeat(broker, heartbeat, None, peer()).await;
    assert_eq!(heartbeat.error_code, LOADING, "Heartbeat");
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s("m"));
    let leave = super::leave_group(broker, leave, 0, None, peer()).await;
    assert_eq!(leave.error_code, LOADING, "LeaveGroup");
    assert_eq!(commit(broker, 7).await, LOADING, "OffsetCommit");
    assert_eq!(fetch_v8(broker).0, LOADING, "OffsetFetch v8");
    assert_eq!(fetch_old(broker, 7).0, LOADING, "OffsetFetch v7");
    assert_eq!(fetch_old(broker, 1).1, Some(LOADING), "OffsetFetch v1");
    assert_eq!(describe(broker), LOADING, "DescribeGroups");
    assert_eq!(list(broker), LOADING, "ListGroups");
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(GROUP))]);
    let delete = super::delete_groups(broker, delete, None, peer()).await;
    assert_eq!(delete.results[0].error_code, LOADING, "DeleteGroups");
    let offset_delete = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let offset_delete = super::offset_delete(broker, offset_delete, None, peer()).await;
    assert_eq!(offset_delete.error_code, LOADING, "OffsetDelete");
    assert_eq!(
        broker.groups().load_state(group_partition()),
        LoadState::Loading
    );
}

/// Lets the held partition load, and waits until it has.
fn release(broker: &Broker) {
    broker.groups().release(group_partition());
    broker.groups().wait_for_loads();
    assert_eq!(
        broker.groups().load_state(group_partition()),
        LoadState::Loaded
    );
}

#[tokio::test]
async fn group_requests_answer_load_in_progress_until_their_partition_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, stop) = open(dir.path());
    broker
        .topics()
        .create(TOPIC, 1, TopicConfig::default(), false, now_ms())
        .unwrap();

    // `__consumer_offsets`, created by the group's first request, is empty: there is nothing
    // to read back, so a fresh group is answered at once.
    broker.groups().hold(group_partition());
    assert!(
        broker.load_groups(),
        "nothing to load before the topic exists"
    );
    assert_eq!(commit(&broker, 42).await, NONE);
    assert_eq!(
        broker.groups().load_state(group_partition()),
        LoadState::Loaded
    );
    assert_eq!(list(&broker), NONE);
    broker.groups().release(group_partition());
    assert_eq!(fetch_v8(&broker), (NONE, Some(42)));
    broker.shutdown();
    drop((broker, stop));

    // After a restart the commit is read back, and nothing is answered until it is.
    let (broker, _stop) = open(dir.path());
    broker.groups().hold(group_partition());
    assert!(!broker.load_groups());
    assert_loading(&broker).await;
    release(&broker);
    assert!(broker.load_groups());
    assert_eq!(fetch_v8(&broker), (NONE, Some(42)));
    assert_eq!(fetch_old(&broker, 7), (NONE, Some(NONE)));
    assert_eq!(describe(&broker), NONE);
    let (error, member) = join(&broker).await;
    assert_eq!(error, NONE);
    assert!(member.starts_with("test-"), "{member}");
    broker.shutdown();
}

/// What a broker does when it stops leading a group's partition (Kafka's `onResignation`): a
/// member waiting in the group is answered `NOT_COORDINATOR`, and the group is forgotten
/// until the partition is read back, commits included, when the broker leads it again.
#[tokio::test]
async fn an_unloaded_group_sends_its_waiting_member_away_and_is_read_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _stop) = open(dir.path());
    broker
        .topics()
        .create(TOPIC, 1, TopicConfig::default(), false, now_ms())
        .unwrap();
    assert_eq!(commit(&broker, 42).await, NONE);
    let (error, _) = join(&broker).await;
    assert_eq!(error, NONE);
    // A second member's join waits for the first to join again.
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move { join(&broker).await })
    };
    let entry = broker.groups().get(GROUP).unwrap();
    while super::driver::Groups::inspect(&entry, |g| g.coordinator.state())
        != surety_core::group::GroupState::PreparingRebalance
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    broker.groups().unload(group_partition());
    let (error, _) = waiting.await.unwrap();
    assert_eq!(
        error,
        Errors::NotCoordinator.code(),
        "the waiting JoinGroup"
    );
    assert!(
        broker.groups().get(GROUP).is_none(),
        "the group is forgotten"
    );
    assert_eq!(
        broker.groups().load_state(group_partition()),
        LoadState::NotLoaded
    );

    // Leading the partition still (a single node always does), the broker reads it back.
    assert!(!broker.load_groups());
    broker.groups().wait_for_loads();
    assert_eq!(fetch_v8(&broker), (NONE, Some(42)));
    assert_eq!(describe(&broker), NONE);
    broker.shutdown();
}
