//! kcat (librdkafka, Debian's package) against a real broker process: 10,000 keyed messages to a
//! 3-partition topic and back, contents and per-partition order compared.

use std::time::Duration;

use surety_tests::{
    BrokerProcess, assert_same_records_in_order, create_topic, kcat, kcat_consume_all,
    kcat_produce, keyed_messages, parse_partition_key_value, run_with_timeout,
};

const MESSAGES: usize = 10_000;

#[test]
fn kcat_produces_and_consumes_ten_thousand_keyed_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker, "kcat-orders", 3);

    // Metadata and ApiVersions first: librdkafka 2.0.2 must parse our ApiVersions reply.
    let meta = run_with_timeout(
        kcat().args(["-b", &broker.address, "-L", "-t", "kcat-orders"]),
        None,
        Duration::from_secs(30),
    );
    let listing = String::from_utf8_lossy(&meta.stdout);
    assert!(
        meta.status.success(),
        "kcat -L: {}",
        String::from_utf8_lossy(&meta.stderr)
    );
    assert!(listing.contains("3 partitions"), "{listing}");

    let produced = keyed_messages(MESSAGES);
    let input: String = produced.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    kcat_produce(&broker, "kcat-orders", &input, &["-K:"], "keyed messages");

    let out = kcat_consume_all(&broker, "kcat-orders", "%p %k %s\n");
    let consumed = parse_partition_key_value(&out.stdout);
    assert_same_records_in_order(&produced, &consumed);
}
