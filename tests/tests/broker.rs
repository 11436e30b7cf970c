//! The broker binary's own behaviour: configuration, clean shutdown and restart, the CLI tools,
//! idempotent produce over the wire, ListOffsets and DescribeConfigs.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, DescribeConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use surety::client::Connection;
use surety_core::record::BatchBuilder;
use surety_tests::{BrokerProcess, create_topic, run_with_timeout, surety_binary};

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn surety(args: &[&str], input: Option<&[u8]>) -> (bool, String, String) {
    let out = run_with_timeout(
        Command::new(surety_binary()).args(args),
        input,
        Duration::from_secs(60),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_config_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.properties");
    std::fs::write(&file, "num.partitions=2\nlog.cleaner.threads=4\n").unwrap();
    let (ok, _, stderr) = surety(&["serve", "--config", file.to_str().unwrap()], None);
    assert!(!ok);
    assert!(stderr.contains("'log.cleaner.threads'"), "{stderr}");
}

#[test]
fn perf_produce_takes_bootstrap_server_and_resolves_idempotence_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let perf = |props: &[&str]| {
        let mut args = vec![
            "perf",
            "produce",
            "--bootstrap-server",
            &broker.address,
            "--topic",
            "perf",
            "--num-records",
            "2000",
            "--record-size",
            "20",
        ];
        if !props.is_empty() {
            args.push("--producer-props");
            args.extend_from_slice(props);
        }
        surety(&args, None)
    };
    // acks=1 with enable.idempotence left unset: idempotence is turned off, with Kafka's log line.
    let (ok, out, err) = perf(&["acks=1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2000 records sent"), "{out}");
    assert!(
        err.contains("Idempotence will be disabled because acks is set to 1"),
        "{err}"
    );
    // Set explicitly, the same conflict is a configuration error naming the setting.
    let (ok, _, err) = perf(&["acks=1", "enable.idempotence=true"]);
    assert!(!ok);
    assert!(err.contains("acks is set to 1"), "{err}");
    // The default (acks=all, idempotent) through --bootstrap-server alone.
    let (ok, out, err) = perf(&[]);
    assert!(ok && out.contains("2000 records sent"), "{out}{err}");
    assert!(!err.contains("Idempotence will be disabled"), "{err}");
}

/// Each tool takes its topic as `T` or, as Kafka's tools do, as `--topic T`.
#[test]
fn the_cli_tools_create_produce_consume_describe_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["node.id=7"]);
    let b = broker.address.clone();
    let (ok, out, err) = surety(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "create",
            "cli",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("Created topic cli."), "{out}");
    let (ok, out, _) = surety(&["topics", "--bootstrap-server", &b, "list"], None);
    assert!(ok && out.lines().any(|l| l == "cli"), "{out}");
    let (ok, out, _) = surety(
        &[
            "topics",
            "--bootstrap-server",
            &b,
            "describe",
            "--topic",
            "cli",
        ],
        None,
    );
    assert!(
        ok && out.contains("PartitionCount: 3") && out.contains("Leader: 7"),
        "{out}"
    );

    let input: String = (0..100).map(|i| format!("k{}:v{i}\n", i % 5)).collect();
    let (ok, _, err) = surety(
        &[
            "produce",
            "--topic",
            "cli",
            "--bootstrap-server",
            &b,
            "--key-separator",
            ":",
        ],
        Some(input.as_bytes()),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = surety(
        &[
            "consume",
            "cli",
            "--bootstrap-server",
            &b,
            "--from-beginning",
            "--max-messages",
            "100",
            "--print-key",
            "--key-separator",
            ":",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = (0..100).map(|i| format!("k{}:v{i}", i % 5)).collect();
    expected.sort_unstable();
    assert_eq!(lines, expected);

    // A clean stop, then a restart that trusts the clean-shutdown markers and serves it all.
    assert!(broker.terminate().success());
    let broker = broker.restart();
    assert!(
        !broker
            .log_lines()
            .iter()
            .any(|l| l.contains("recovered after an unclean")),
        "a clean shutdown needs no recovery"
    );
    let (ok, out, _) = surety(
        &[
            "consume",
            "cli",
            "--bootstrap-server",
            &broker.address,
            "--from-beginning",
            "--max-messages",
            "100",
        ],
        None,
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 100);

    let (ok, out, err) = surety(
        &[
            "topics",
            "--bootstrap-server",
            &broker.address,
            "delete",
            "--topic",
            "cli",
        ],
        None,
    );
    assert!(ok && out.contains("Deleted topic cli."), "{err}");
    let (_, out, _) = surety(
        &["topics", "--bootstrap-server", &broker.address, "list"],
        None,
    );
    assert!(!out.lines().any(|l| l == "cli"), "{out}");
}

/// A fixed timestamp from today: records older than `log.retention.ms` (7 days) would be
/// deleted by the broker's first retention pass after a restart, taking the producer state with
/// them, as in Kafka.
fn today() -> i64 {
    static TODAY: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *TODAY.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    })
}

fn idempotent_batch(producer_id: i64, sequence: i32, value: &str) -> Bytes {
    let mut b = BatchBuilder::new(0).producer(producer_id, 0, sequence);
    b.append(today(), None, Some(value.as_bytes()), &[]);
    b.build()
}

/// Sends one idempotent record to `idem` and returns (error code, base offset).
async fn send_idempotent(c: &mut Connection, pid: i64, sequence: i32, value: &str) -> (i16, i64) {
    let r = c
        .send(produce("idem", idempotent_batch(pid, sequence, value)))
        .await
        .unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

#[tokio::test]
async fn idempotent_retries_are_not_written_twice_and_gaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker, "idem", 1);
    let mut c = Connection::connect(&broker.address, "idem").await.unwrap();
    let init = c
        .send(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )
        .await
        .unwrap();
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let first = send_idempotent(&mut c, pid, 0, "a").await;
    assert_eq!(first, (0, 0));
    let second = send_idempotent(&mut c, pid, 1, "b").await;
    assert_eq!(second, (0, 1));
    // A retry of the first batch: answered with its original offset, not appended again.
    let retry = send_idempotent(&mut c, pid, 0, "a").await;
    assert_eq!(retry, (0, 0));
    // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER.
    let gap = send_idempotent(&mut c, pid, 5, "f").await;
    assert_eq!(gap.0, 45);

    // The log holds exactly a and b, and ListOffsets agrees: earliest 0, latest 2, and the
    // first record at or after a timestamp.
    let query = |timestamp: i64| {
        ListOffsetsPartition::default()
            .with_partition_index(0)
            .with_timestamp(timestamp)
    };
    let list = c
        .send(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(name("idem"))
                        .with_partitions(vec![query(-2), query(-1), query(today())]),
                ]),
        )
        .await
        .unwrap();
    let parts = &list.topics[0].partitions;
    assert_eq!(parts[0].offset, 0, "earliest");
    assert_eq!(parts[1].offset, 2, "latest");
    assert_eq!(
        (parts[2].offset, parts[2].timestamp),
        (0, today()),
        "by timestamp"
    );

    // After a restart (kill -9), the producer state is rebuilt from the log: the retry is
    // still recognised.
    let broker = broker.restart();
    let mut c = Connection::connect(&broker.address, "idem").await.unwrap();
    let retry = send_idempotent(&mut c, pid, 1, "b").await;
    assert_eq!(retry, (0, 1), "{:#?}", broker.log_lines());
    let next = send_idempotent(&mut c, pid, 2, "c").await;
    assert_eq!(next, (0, 2));
}

#[tokio::test]
async fn describe_configs_reports_topic_overrides_and_broker_settings() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["log.retention.bytes=123456"]);
    let (ok, _, err) = surety(
        &[
            "topics",
            "--bootstrap-server",
            &broker.address,
            "create",
            "cfg",
            "--config",
            "retention.ms=1000",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut c = Connection::connect(&broker.address, "cfg").await.unwrap();
    let r = c
        .send(
            DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("cfg")),
                ]),
        )
        .await
        .unwrap();
    let result = &r.results[0];
    assert_eq!(result.error_code, 0);
    let get = |key: &str| {
        result
            .configs
            .iter()
            .find(|c| &*c.name == key)
            .map(|c| {
                (
                    c.value.as_deref().unwrap_or("").to_string(),
                    c.config_source,
                )
            })
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert_eq!(
        get("retention.ms"),
        ("1000".to_string(), 1),
        "a topic override"
    );
    assert_eq!(
        get("retention.bytes"),
        ("123456".to_string(), 4),
        "a static broker setting"
    );
    assert_eq!(
        get("segment.bytes"),
        ("1073741824".to_string(), 5),
        "a default"
    );
}
