//! Compressed batches both ways between Surety and librdkafka: Surety's producer writes each
//! codec and kcat reads the records back; kcat writes each codec and `surety consume` reads them
//! back. The stored batches carry the codec (the broker keeps batches as sent).

use std::process::Command;
use std::time::Duration;

use surety::producer::{Producer, ProducerConfig, ProducerRecord};
use surety_core::record::{Compression, batches};
use surety_tests::{
    BrokerProcess, assert_same_records_in_order, create_topic, kcat, kcat_consume_all,
    keyed_messages, parse_partition_key_value, run_with_timeout, surety_binary,
};

const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];
/// The codecs librdkafka 2.0.2 will write to this broker. It switches lz4 on only for brokers
/// that serve FindCoordinator (its sign of Kafka 0.9 or later), which arrives with consumer
/// groups; until then it sends lz4 batches uncompressed, so that direction of lz4 is checked
/// with our own producer's lz4 (read back by kcat above) and the codec's unit tests.
const KCAT_CODECS: [&str; 3] = ["gzip", "snappy", "zstd"];
const RECORDS: usize = 5_000;

/// Every batch stored in partition 0 of `topic`, by codec.
fn stored_codecs(broker: &BrokerProcess, topic: &str) -> Vec<Compression> {
    let log = broker
        .data_dir
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let bytes = std::fs::read(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    batches(bytes.into())
        .map(|b| b.unwrap().header().attributes.compression)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_producer_compresses_with_every_codec_and_kcat_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let produced = keyed_messages(RECORDS);
    for codec in CODECS {
        let topic = format!("ours-{codec}");
        create_topic(&broker, &topic, 1);
        let config = ProducerConfig::from_pairs([
            ("bootstrap.servers", broker.address.as_str()),
            ("compression.type", codec),
        ])
        .unwrap();
        let producer = Producer::new(config).await.unwrap();
        let mut futures = Vec::new();
        for (key, value) in &produced {
            let record = ProducerRecord {
                topic: &topic,
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
                ..ProducerRecord::default()
            };
            futures.push(producer.enqueue(record).await.unwrap());
        }
        for f in futures {
            f.await.unwrap();
        }
        producer.close(Duration::from_secs(10)).await;
        let codecs = stored_codecs(&broker, &topic);
        assert!(!codecs.is_empty());
        assert!(
            codecs.iter().all(|c| c.name() == codec),
            "{codec}: stored {codecs:?}"
        );
        let out = kcat_consume_all(&broker, &topic, "%p %k %s\n");
        assert_same_records_in_order(&produced, &parse_partition_key_value(&out.stdout));
    }
}

#[test]
fn kcat_compresses_with_every_codec_and_surety_consume_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let produced = keyed_messages(RECORDS);
    let input: String = produced.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    for codec in KCAT_CODECS {
        let topic = format!("kcat-{codec}");
        create_topic(&broker, &topic, 1);
        let out = run_with_timeout(
            kcat().args([
                "-b",
                &broker.address,
                "-P",
                "-t",
                &topic,
                "-K:",
                "-z",
                codec,
            ]),
            Some(input.as_bytes()),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "kcat -z {codec}");
        let codecs = stored_codecs(&broker, &topic);
        assert!(
            codecs.iter().all(|c| c.name() == codec),
            "{codec}: stored {codecs:?}"
        );
        let out = run_with_timeout(
            Command::new(surety_binary()).args([
                "consume",
                &topic,
                "--bootstrap-server",
                &broker.address,
                "--from-beginning",
                "--max-messages",
                &RECORDS.to_string(),
                "--print-key",
                "--key-separator",
                " ",
            ]),
            None,
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "surety consume {codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let consumed: Vec<(i32, String, String)> = stdout
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (0, k.to_string(), v.to_string())
            })
            .collect();
        assert_same_records_in_order(&produced, &consumed);
    }
}
