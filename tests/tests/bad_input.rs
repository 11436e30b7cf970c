//! Bad input against a live broker process: each malformed or refused request gets the Kafka
//! error code a Java broker sends, or a closed connection where Kafka closes it, and the broker
//! keeps serving everyone else with nothing lost.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, ProduceRequest, ProduceResponse, RequestHeader,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use surety::client::Connection;
use surety_core::record::BatchBuilder;
use surety_tests::{BrokerProcess, create_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn topic(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(name.to_string()))
}

fn batch(value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new(0);
    // Today's time: older records would be due for retention (7 days) as soon as it runs.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    b.append(now, None, Some(value), &[]);
    b.build()
}

fn produce(topic_name: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic(topic_name))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

fn error_of(response: &ProduceResponse) -> i16 {
    response.responses[0].partition_responses[0].error_code
}

/// Sends raw bytes on a fresh connection and returns what came back before the broker closed
/// the connection (or `None` if it kept it open for a second).
async fn raw_exchange(address: &str, bytes: &[u8], close_write: bool) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(bytes).await;
    if close_write {
        let _ = stream.shutdown().await;
    }
    let mut received = Vec::new();
    match tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut received)).await {
        Ok(_) => Some(received),
        Err(_) => None,
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn header(key: i16, version: i16, correlation_id: i32) -> BytesMut {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")))
        .encode(
            &mut out,
            ApiKey::try_from(key).map_or(1, |k| k.request_header_version(version)),
        )
        .unwrap();
    out
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test]
async fn malformed_and_refused_requests_get_kafka_errors_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "auto.create.topics.enable=false",
            "message.max.bytes=2000",
            "socket.request.max.bytes=65536",
        ],
    );
    create_topic(&broker, "kept", 1);
    let address = broker.address.clone();
    let mut client = Connection::connect(&address, "bad-input").await.unwrap();
    let ok = client
        .send(produce("kept", batch(b"precious")))
        .await
        .unwrap();
    assert_eq!(error_of(&ok), 0);

    // A frame over socket.request.max.bytes: the connection is closed, nothing is answered.
    let mut big = (1_000_000i32).to_be_bytes().to_vec();
    big.extend_from_slice(&[0; 64]);
    assert_eq!(raw_exchange(&address, &big, false).await, Some(Vec::new()));
    // A truncated frame: closed.
    let mut torn = (100i32).to_be_bytes().to_vec();
    torn.extend_from_slice(&[0, 3, 0, 4]);
    assert_eq!(raw_exchange(&address, &torn, true).await, Some(Vec::new()));
    // An unknown API key: closed.
    let unknown = frame(&header(0, 9, 1)[..])
        .iter()
        .enumerate()
        .map(|(i, b)| if i == 4 { 0x3f } else { *b })
        .collect::<Vec<_>>();
    assert_eq!(
        raw_exchange(&address, &unknown, false).await,
        Some(Vec::new())
    );
    // A version we do not serve (Produce v2): closed, never a garbled answer.
    let old = frame(&header(0, 2, 1)[..]);
    assert_eq!(raw_exchange(&address, &old, false).await, Some(Vec::new()));
    // A served API at a newer version than served: UNSUPPORTED_VERSION in the format asked for.
    let newer = client
        .send_at(kafka_protocol::messages::MetadataRequest::default(), 13)
        .await
        .unwrap();
    assert_eq!(newer.error_code, 35, "UNSUPPORTED_VERSION");
    let newer = client
        .send_at(produce("kept", batch(b"from the future")), 12)
        .await
        .unwrap();
    assert_eq!(error_of(&newer), 35, "UNSUPPORTED_VERSION");
    // A malformed body: closed.
    let mut garbled = header(3, 4, 1);
    garbled.put_slice(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
    assert_eq!(
        raw_exchange(&address, &frame(&garbled), false).await,
        Some(Vec::new())
    );
    // ApiVersions at a version from the future: the v0-format UNSUPPORTED_VERSION reply with
    // our ApiVersions range, and the connection stays open for the retry (KIP-511).
    let mut future = header(18, 42, 7);
    future.put_slice(b"whatever the future holds");
    let reply = raw_exchange(&address, &frame(&future), false).await;
    assert_eq!(reply, None, "the connection stays open");
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(&frame(&future)).await.unwrap();
    let mut reply = vec![0; 20];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(
        reply,
        [
            0, 0, 0, 16, 0, 0, 0, 7, 0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, 3
        ]
    );

    // A batch with a bad CRC: CORRUPT_MESSAGE.
    let mut corrupt = BytesMut::from(&batch(b"flipped")[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let r = client
        .send(produce("kept", corrupt.freeze()))
        .await
        .unwrap();
    assert_eq!(error_of(&r), 2, "CORRUPT_MESSAGE");
    // Over message.max.bytes: MESSAGE_TOO_LARGE.
    let r = client
        .send(produce("kept", batch(&[7u8; 4000])))
        .await
        .unwrap();
    assert_eq!(error_of(&r), 10, "MESSAGE_TOO_LARGE");
    // An unknown topic with auto-create off: UNKNOWN_TOPIC_OR_PARTITION.
    let r = client
        .send(produce("nowhere", batch(b"lost")))
        .await
        .unwrap();
    assert_eq!(error_of(&r), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    // The same with acks=0: no response to carry the error, so the connection is closed.
    let mut silent = header(0, 7, 9);
    produce("nowhere", batch(b"lost"))
        .with_acks(0)
        .encode(&mut silent, 7)
        .unwrap();
    assert_eq!(
        raw_exchange(&address, &frame(&silent), false).await,
        Some(Vec::new())
    );
    // A fetch beyond the log end: OFFSET_OUT_OF_RANGE.
    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic("kept"))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let r = client.send(fetch(1000)).await.unwrap();
    assert_eq!(
        r.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );

    // Random and truncated frames, each on its own connection.
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let valid = frame(&{
        let mut h = header(3, 9, 1);
        h.put_slice(&[0, 0, 0, 0]);
        h
    });
    for i in 0..300 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next() % 120) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if body.len() >= 4 {
                // Mostly APIs we serve, at versions near the served ranges.
                body[0] = 0;
                body[1] = [0, 1, 2, 3, 18, 19, 20, 22, 32][(rng.next() % 9) as usize];
                body[2] = 0;
                body[3] = (rng.next() % 14) as u8;
            }
            frame(&body)
        } else {
            let cut = (rng.next() as usize) % valid.len();
            valid[..cut].to_vec()
        };
        raw_exchange(&address, &bytes, true).await;
    }

    // Still serving, and nothing was lost.
    let mut fresh = Connection::connect(&address, "after").await.unwrap();
    let r = fresh.send(fetch(0)).await.unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 1));
    let stored = p.records.clone().unwrap();
    let record = surety_core::record::batches(stored)
        .next()
        .unwrap()
        .unwrap()
        .records()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(record.value.as_deref(), Some(&b"precious"[..]));
}
