//! Surety's own producer against the broker: 1,000,000 keyed records with acks=all and
//! idempotence, read back by kcat: exactly those records, in order per partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use surety::producer::{Producer, ProducerConfig, ProducerRecord};
use surety_tests::{
    BrokerProcess, assert_same_records_in_order, create_topic, kcat_consume_all, keyed_messages,
    parse_partition_key_value,
};

const RECORDS: usize = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_records_from_our_producer_are_read_back_by_kcat_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker, "ours", 3);
    let config = ProducerConfig::from_pairs([
        ("bootstrap.servers", broker.address.as_str()),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
    ])
    .unwrap();
    let producer = Producer::new(config).await.unwrap();
    let produced = keyed_messages(RECORDS);
    let failures = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    for (key, value) in &produced {
        let (failures, acknowledged) = (failures.clone(), acknowledged.clone());
        producer
            .send_with_callback(
                ProducerRecord {
                    topic: "ours".into(),
                    key: Some(key.as_bytes().to_vec()),
                    value: Some(value.as_bytes().to_vec()),
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
    // Callbacks run on their own tasks: give the last ones a moment.
    for _ in 0..100 {
        if acknowledged.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed) == RECORDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(acknowledged.load(Ordering::Relaxed), RECORDS);

    let out = tokio::task::spawn_blocking(move || kcat_consume_all(&broker, "ours", "%p %k %s\n"))
        .await
        .unwrap();
    let consumed = parse_partition_key_value(&out.stdout);
    assert_same_records_in_order(&produced, &consumed);
}
