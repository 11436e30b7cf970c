//! The group APIs at the oldest versions clients still send, over the wire: JoinGroup v0 (no
//! KIP-394 round trip), SyncGroup v0, Heartbeat v0, OffsetCommit v2, OffsetFetch v1,
//! DescribeGroups v0, LeaveGroup v0. A member is named (its Kafka string id) in every answer
//! that mentions it, including the leader's member list sent in the same step.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety::client::Connection;
use surety_core::errors::Errors;
use surety_tests::{BrokerProcess, create_topic};

const GROUP: &str = "old-clients";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"subscription")),
        ])
}

#[tokio::test]
async fn old_clients_form_a_group_commit_and_leave_at_version_zero() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker, "old", 1);
    let mut first = Connection::connect(&broker.address, "first").await.unwrap();
    let coordinator = first
        .send_at(FindCoordinatorRequest::default().with_key(s(GROUP)), 0)
        .await
        .unwrap();
    assert_eq!(coordinator.error_code, 0);

    // Alone, the first member forms generation 1 at once.
    let joined = first.send_at(join(""), 0).await.unwrap();
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let first_id = joined.member_id.to_string();
    assert!(first_id.starts_with("first-"), "{first_id}");

    // A second member's join is held until the first joins again, which it learns from its
    // heartbeat.
    let address = broker.address.clone();
    let second = tokio::spawn(async move {
        let mut c = Connection::connect(&address, "second").await.unwrap();
        let joined = c.send_at(join(""), 0).await.unwrap();
        (c, joined)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let beat = first
        .send_at(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_generation_id(1)
                .with_member_id(s(&first_id)),
            0,
        )
        .await
        .unwrap();
    assert_eq!(beat.error_code, Errors::RebalanceInProgress.code());
    let rejoined = first.send_at(join(&first_id), 0).await.unwrap();
    let (mut second, second_joined) = second.await.unwrap();
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 2));
    assert_eq!(
        (second_joined.error_code, second_joined.generation_id),
        (0, 2)
    );
    let second_id = second_joined.member_id.to_string();
    assert!(second_id.starts_with("second-"), "{second_id}");
    assert_eq!(rejoined.leader.as_str(), first_id);
    let mut listed: Vec<String> = rejoined
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    listed.sort();
    let mut expected = vec![first_id.clone(), second_id.clone()];
    expected.sort();
    assert_eq!(listed, expected, "the leader learns every member by its id");

    // The leader's plan reaches the other member.
    let sync = |id: &str, plan: Vec<(&str, &'static [u8])>| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_generation_id(2)
            .with_member_id(s(id))
            .with_assignments(
                plan.into_iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::from_static(a))
                    })
                    .collect(),
            )
    };
    let leader_sync = first
        .send_at(
            sync(
                &first_id,
                vec![(&first_id, b"for-first"), (&second_id, b"for-second")],
            ),
            0,
        )
        .await
        .unwrap();
    assert_eq!(leader_sync.assignment, Bytes::from_static(b"for-first"));
    let other_sync = second.send_at(sync(&second_id, vec![]), 0).await.unwrap();
    assert_eq!(
        (other_sync.error_code, other_sync.assignment),
        (0, Bytes::from_static(b"for-second"))
    );

    // OffsetCommit v2 and OffsetFetch v1.
    let committed = second
        .send_at(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_generation_id_or_member_epoch(2)
                .with_member_id(s(&second_id))
                .with_retention_time_ms(-1)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("old")))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(42)
                                .with_committed_metadata(Some(s("note"))),
                        ]),
                ]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let fetched = first
        .send_at(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("old")))
                        .with_partition_indexes(vec![0]),
                ])),
            1,
        )
        .await
        .unwrap();
    let p = &fetched.topics[0].partitions[0];
    assert_eq!(
        (p.committed_offset, p.metadata.as_deref()),
        (42, Some("note"))
    );

    let described = first
        .send_at(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]),
            0,
        )
        .await
        .unwrap();
    let group = &described.groups[0];
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 2);

    // LeaveGroup v0: the group rebalances without the member.
    let left = second
        .send_at(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_member_id(s(&second_id)),
            0,
        )
        .await
        .unwrap();
    assert_eq!(left.error_code, 0);
    let beat = second
        .send_at(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_generation_id(2)
                .with_member_id(s(&second_id)),
            0,
        )
        .await
        .unwrap();
    assert_eq!(beat.error_code, Errors::UnknownMemberId.code());
}
