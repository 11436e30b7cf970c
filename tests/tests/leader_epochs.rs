//! The broker runs core's replica: the leader epoch, the high watermark and `acks=all` come
//! from it. These tests watch that from outside, over the wire with `kafka-protocol`'s request
//! types: the epoch a client sees in Metadata is checkpointed, survives restarts and bumps on
//! each one; OffsetsForLeaderEpoch answers for current and past epochs; stale epochs are fenced;
//! and `min.insync.replicas` (the broker's or a topic's) is enforced by the replica.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest,
    ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety::client::Connection;
use surety_core::errors::Errors;
use surety_core::record::BatchBuilder;
use surety_tests::{BrokerProcess, create_topic, create_topic_with_configs};

const TOPIC: &str = "epochs";

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

async fn connect(broker: &BrokerProcess) -> Connection {
    Connection::connect(&broker.address, "epochs")
        .await
        .unwrap()
}

/// The partition's leader epoch as Metadata reports it.
async fn metadata_epoch(c: &mut Connection) -> i32 {
    let r = c
        .send(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name(TOPIC))),
                ]))
                .with_allow_auto_topic_creation(false),
        )
        .await
        .unwrap();
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{r:?}");
    assert_eq!(
        p.isr_nodes,
        vec![p.leader_id],
        "a single broker is the whole ISR"
    );
    p.leader_epoch
}

/// Produces `values` as one batch; returns (error code, base offset).
async fn produce(c: &mut Connection, acks: i16, values: &[&str]) -> (i16, i64) {
    // Today's timestamps: records from 1970 would be past retention at the next start.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut builder = BatchBuilder::new(0);
    for v in values {
        builder.append(now, None, Some(v.as_bytes()), &[]);
    }
    let records: Bytes = builder.build();
    let r = c
        .send(
            ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(5000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(name(TOPIC))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(records)),
                        ]),
                ]),
        )
        .await
        .unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// OffsetsForLeaderEpoch for partition 0: (error, epoch, end offset).
async fn end_of_epoch(c: &mut Connection, current: i32, epoch: i32) -> (i16, i32, i64) {
    let r = c
        .send(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    OffsetForLeaderTopic::default()
                        .with_topic(name(TOPIC))
                        .with_partitions(vec![
                            OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(current)
                                .with_leader_epoch(epoch),
                        ]),
                ]),
        )
        .await
        .unwrap();
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// A consumer fetch from offset 0 naming `current` as the leader epoch: (error, high watermark).
async fn fetch(c: &mut Connection, current: i32) -> (i16, i64) {
    let r = c
        .send(
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(name(TOPIC))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(current)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]),
        )
        .await
        .unwrap();
    let p = &r.responses[0].partitions[0];
    (p.error_code, p.high_watermark)
}

/// ListOffsets earliest and latest: ((offset, epoch), (offset, epoch)).
async fn earliest_and_latest(c: &mut Connection) -> ((i64, i32), (i64, i32)) {
    let query = |timestamp| {
        ListOffsetsPartition::default()
            .with_partition_index(0)
            .with_current_leader_epoch(-1)
            .with_timestamp(timestamp)
    };
    let r = c
        .send(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(name(TOPIC))
                        .with_partitions(vec![query(-2), query(-1)]),
                ]),
        )
        .await
        .unwrap();
    let p = &r.topics[0].partitions;
    assert_eq!((p[0].error_code, p[1].error_code), (0, 0), "{r:?}");
    (
        (p[0].offset, p[0].leader_epoch),
        (p[1].offset, p[1].leader_epoch),
    )
}

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn leader_epochs_are_checkpointed_survive_restarts_and_bump_on_each() {
    let dir = tempfile::tempdir().unwrap();
    let fast_checkpoints = ["replica.high.watermark.checkpoint.interval.ms=100"];
    let mut broker = BrokerProcess::start(dir.path(), &fast_checkpoints);
    create_topic(&broker, TOPIC, 1);
    let data = broker.data_dir.clone();
    let partition_dir = data.join(format!("{TOPIC}-0"));
    let mut c = connect(&broker).await;

    // A new partition is led in epoch 0, checkpointed before anything is appended in it.
    assert_eq!(metadata_epoch(&mut c).await, 0);
    assert_eq!(
        read(partition_dir.join("leader-epoch-checkpoint")),
        "0\n1\n0 0\n"
    );
    assert_eq!(produce(&mut c, -1, &["a", "b", "c"]).await, (0, 0));
    assert_eq!(end_of_epoch(&mut c, 0, 0).await, (0, 0, 3));

    // A clean stop writes the high watermarks in Kafka's format, at the data directory's root.
    assert!(broker.terminate().success());
    let hw_checkpoint = read(data.join("replication-offset-checkpoint"));
    assert_eq!(hw_checkpoint, format!("0\n1\n{TOPIC} 0 3\n"));
    assert_eq!(
        read(data.join("log-start-offset-checkpoint")),
        format!("0\n1\n{TOPIC} 0 0\n")
    );
    assert_eq!(
        read(data.join("recovery-point-offset-checkpoint")),
        format!("0\n1\n{TOPIC} 0 3\n"),
        "the final flush reached the log end"
    );
    assert!(
        !partition_dir
            .join("recovery-point-offset-checkpoint")
            .exists()
    );

    // The restart reads both checkpoints back, and the controller elects again: epoch 1.
    let broker = broker.restart();
    let loaded = broker
        .wait_for_log_line(
            "epochs-0: loaded with log end offset 3, high watermark checkpoint 3, leader epochs [(0, 0)]",
            Duration::from_secs(10),
        )
        .is_some();
    assert!(loaded, "{:#?}", broker.log_lines());
    let mut c = connect(&broker).await;
    assert_eq!(metadata_epoch(&mut c).await, 1);
    assert_eq!(produce(&mut c, -1, &["d", "e"]).await, (0, 3));
    assert_eq!(
        read(partition_dir.join("leader-epoch-checkpoint")),
        "0\n2\n0 0\n1 3\n"
    );

    // OffsetsForLeaderEpoch: a past epoch ends where the next starts, the current one at the
    // log end, one this broker never had is undefined.
    assert_eq!(end_of_epoch(&mut c, 1, 0).await, (0, 0, 3));
    assert_eq!(end_of_epoch(&mut c, 1, 1).await, (0, 1, 5));
    assert_eq!(
        end_of_epoch(&mut c, -1, 1).await,
        (0, 1, 5),
        "no epoch to check"
    );
    assert_eq!(end_of_epoch(&mut c, 1, 7).await, (0, -1, -1));
    // A client behind the leader's epoch is fenced; one ahead of it is told to retry.
    let fenced = Errors::FencedLeaderEpoch.code();
    let unknown = Errors::UnknownLeaderEpoch.code();
    assert_eq!(end_of_epoch(&mut c, 0, 0).await.0, fenced);
    assert_eq!(end_of_epoch(&mut c, 2, 0).await.0, unknown);
    assert_eq!(fetch(&mut c, 0).await.0, fenced);
    assert_eq!(fetch(&mut c, 2).await.0, unknown);
    assert_eq!(fetch(&mut c, 1).await, (0, 5));
    // ListOffsets reports the epoch of the record at the offset (the log end's: the current).
    assert_eq!(earliest_and_latest(&mut c).await, ((0, 0), (5, 1)));

    // A crash (kill -9) too: the checkpoints written so far are read back, the epoch bumps
    // again, and nothing acknowledged is lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read(data.join("replication-offset-checkpoint")) != format!("0\n1\n{TOPIC} 0 5\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "the HW checkpoint never reached 5"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let broker = broker.restart();
    let mut c = connect(&broker).await;
    assert_eq!(metadata_epoch(&mut c).await, 2, "{:#?}", broker.log_lines());
    assert_eq!(fetch(&mut c, 2).await, (0, 5), "{:#?}", broker.log_lines());
    assert_eq!(end_of_epoch(&mut c, 2, 1).await, (0, 1, 5));
    assert_eq!(end_of_epoch(&mut c, 2, 2).await, (0, 2, 5));
}

#[tokio::test]
async fn acks_all_needs_min_insync_replicas_in_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["min.insync.replicas=2"]);
    create_topic(&broker, TOPIC, 1);
    let mut c = connect(&broker).await;
    // The ISR is this broker alone: acks=all is refused and nothing is appended; acks=1 is not
    // bound by min.insync.replicas, as in Kafka.
    let refused = produce(&mut c, -1, &["x"]).await;
    assert_eq!(refused, (Errors::NotEnoughReplicas.code(), -1));
    assert_eq!(produce(&mut c, 1, &["y"]).await, (0, 0));
}

#[tokio::test]
async fn a_topic_may_raise_min_insync_replicas_over_the_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic_with_configs(&broker, TOPIC, 1, &["min.insync.replicas=2"]);
    let mut c = connect(&broker).await;
    let refused = produce(&mut c, -1, &["x"]).await;
    assert_eq!(refused, (Errors::NotEnoughReplicas.code(), -1));
    // The override survives a restart (it lives in the partition's topic.properties).
    let broker = broker.restart();
    let mut c = connect(&broker).await;
    let _ = metadata_epoch(&mut c).await;
    let refused = produce(&mut c, -1, &["x"]).await;
    assert_eq!(refused, (Errors::NotEnoughReplicas.code(), -1));
    assert_eq!(produce(&mut c, 1, &["y"]).await, (0, 0));
}
