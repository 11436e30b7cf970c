//! Surety's own producer against the broker: 1,000,000 keyed records with acks=all and
//! idempotence, read back by kcat: exactly those records, in order per partition; and the same
//! with the broker dropping produce responses, where idempotence is what keeps the retries from
//! writing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use surety::producer::{Producer, ProducerConfig, ProducerRecord};
use surety_tests::{
    BrokerProcess, assert_same_records_in_order, create_topic, kcat_consume_all, keyed_messages,
    parse_partition_key_value,
};

/// Sends every (key, value) to `topic` with callbacks, closes the producer, and returns how
/// many were acknowledged and how many failed.
async fn produce_all(
    broker: &BrokerProcess,
    topic: &str,
    records: &[(String, String)],
    settings: &[(&str, &str)],
) -> (usize, usize) {
    let config = ProducerConfig::from_pairs(
        [("bootstrap.servers", broker.address.as_str())]
            .into_iter()
            .chain(settings.iter().copied()),
    )
    .unwrap();
    let producer = Producer::new(config).await.unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    for (key, value) in records {
        let (failures, acknowledged) = (failures.clone(), acknowledged.clone());
        producer
            .send_with_callback(
                ProducerRecord {
                    topic,
                    key: Some(key.as_bytes()),
                    value: Some(value.as_bytes()),
                    ..ProducerRecord::default()
                },
                move |result| {
                    let counter = if result.is_ok() {
                        acknowledged
                    } else {
                        failures
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                },
            )
            .await
            .unwrap();
    }
    producer.flush().await;
    producer.close(Duration::from_secs(30)).await;
    // Callbacks run on the sender task: give the last ones a moment.
    for _ in 0..100 {
        if acknowledged.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed) == records.len()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (
        acknowledged.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    )
}

async fn read_back(broker: BrokerProcess, topic: &'static str) -> Vec<(i32, String, String)> {
    let out = tokio::task::spawn_blocking(move || kcat_consume_all(&broker, topic, "%p %k %s\n"))
        .await
        .unwrap();
    parse_partition_key_value(&out.stdout)
}

fn dropped_responses(broker: &BrokerProcess) -> usize {
    broker
        .log_lines()
        .iter()
        .filter(|l| l.contains("dropping a produce response"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_from_our_producer_are_read_back_by_kcat_in_order() {
    const RECORDS: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker, "ours", 3);
    let produced = keyed_messages(RECORDS);
    let settings = [
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
    ];
    let (acknowledged, failures) = produce_all(&broker, "ours", &produced, &settings).await;
    assert_eq!((acknowledged, failures), (RECORDS, 0));
    assert_same_records_in_order(&produced, &read_back(broker, "ours").await);
}

/// Small batches, so there are many produce requests and the broker drops the answer to every
/// fifth; the producer notices each after `request.timeout.ms` and re-sends what was in flight.
const DROPPING: &[&str] = &["surety.test.produce.response.drop.every=5"];
const SMALL_BATCHES: [(&str, &str); 4] = [
    ("acks", "all"),
    ("batch.size", "2048"),
    ("linger.ms", "2"),
    ("request.timeout.ms", "300"),
];
const DROPPED_RECORDS: usize = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_responses_dropped_an_idempotent_producer_writes_each_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), DROPPING);
    create_topic(&broker, "dropped", 3);
    let produced = keyed_messages(DROPPED_RECORDS);
    let mut settings = SMALL_BATCHES.to_vec();
    settings.push(("enable.idempotence", "true"));
    let (acknowledged, failures) = produce_all(&broker, "dropped", &produced, &settings).await;
    assert_eq!((acknowledged, failures), (DROPPED_RECORDS, 0));
    let dropped = dropped_responses(&broker);
    assert!(dropped >= 3, "the broker dropped {dropped} responses");
    assert_same_records_in_order(&produced, &read_back(broker, "dropped").await);
}

/// The other side of the test above: the same faults without idempotence do write records
/// twice, so the hook really loses answers after appending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_responses_dropped_a_producer_without_idempotence_writes_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), DROPPING);
    create_topic(&broker, "dropped", 3);
    let produced = keyed_messages(DROPPED_RECORDS);
    let mut settings = SMALL_BATCHES.to_vec();
    settings.push(("enable.idempotence", "false"));
    let (acknowledged, failures) = produce_all(&broker, "dropped", &produced, &settings).await;
    assert_eq!((acknowledged, failures), (DROPPED_RECORDS, 0));
    assert!(dropped_responses(&broker) >= 3);
    let consumed = read_back(broker, "dropped").await;
    assert!(
        consumed.len() > DROPPED_RECORDS,
        "{} records read back: the retries of dropped answers should have written some twice",
        consumed.len()
    );
}

/// When no answer ever comes, `delivery.timeout.ms` bounds how long a record is retried: every
/// send fails (none hangs), and the producer starts over under a new producer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_response_dropped_records_fail_after_the_delivery_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["surety.test.produce.response.drop.every=1"]);
    create_topic(&broker, "silent", 1);
    let produced = keyed_messages(200);
    let settings = [
        ("acks", "all"),
        ("linger.ms", "0"),
        ("request.timeout.ms", "200"),
        ("retry.backoff.ms", "50"),
        ("delivery.timeout.ms", "1000"),
    ];
    let started = std::time::Instant::now();
    let (acknowledged, failures) = produce_all(&broker, "silent", &produced, &settings).await;
    assert_eq!((acknowledged, failures), (0, produced.len()));
    assert!(started.elapsed() < Duration::from_secs(20));
}
