//! kafka-python and confluent-kafka against a real broker process: each creates a 3-partition
//! topic, produces 10,000 keyed messages with acks=all (confluent-kafka idempotently) and reads
//! them back; contents and per-partition order are compared.

use std::time::Duration;

use surety_tests::{
    BrokerProcess, assert_same_records_in_order, keyed_messages, parse_partition_key_value, python,
    python_scripts, run_with_timeout,
};

const MESSAGES: usize = 10_000;

fn roundtrip(library: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let topic = format!("{library}-orders");
    let out = run_with_timeout(
        python().arg(python_scripts().join("roundtrip.py")).args([
            library,
            &broker.address,
            &topic,
            &MESSAGES.to_string(),
        ]),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "{library} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let produced = keyed_messages(MESSAGES);
    let consumed = parse_partition_key_value(&out.stdout);
    assert_same_records_in_order(&produced, &consumed);
}

#[test]
fn kafka_python_produces_and_consumes_ten_thousand_keyed_messages_in_order() {
    roundtrip("kafka-python");
}

#[test]
fn confluent_kafka_produces_and_consumes_ten_thousand_keyed_messages_in_order() {
    roundtrip("confluent-kafka");
}
