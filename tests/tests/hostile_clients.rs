//! Hostile clients against a live broker process: size prefixes that claim far more than is
//! sent, clients that pipeline fetches and never read the answers, connections that sit idle,
//! and one address opening more connections than it may. Each test measures the broker's
//! resident memory or watches its connections from outside, as an operator would, and checks
//! that well-behaved clients (kcat, or ApiVersions exchanges) are served all the while, so that
//! one misbehaving peer can cost the broker only what Kafka's limits allow
//! (`queued.max.request.bytes`, one response per connection, `connections.max.idle.ms`,
//! `max.connections.per.ip`), never its memory or its other clients.
//!
//! The tests run one at a time: they measure one broker's memory and timing on a small machine,
//! and a neighbouring test's broker would compete for the same cores.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use surety_tests::{
    BrokerProcess, create_topic, kcat_consume_all, kcat_produce_lines, raise_open_files_limit,
};

/// The unit of every memory figure printed and bounded here.
const MB: u64 = 1 << 20;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MB as f64)
}

/// A loopback connection whose every read and write gives up after 5 s.
fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// A request frame: size prefix, header, body.
fn request(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("hostile-clients")))
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let mut frame = (out.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&out);
    frame
}

fn api_versions_request(correlation_id: i32) -> Vec<u8> {
    request(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    )
}

/// Sends an ApiVersions v0 request and reads its answer, which must carry `correlation_id` and
/// error code 0.
fn api_versions(stream: &mut TcpStream, correlation_id: i32) -> Result<(), String> {
    stream
        .write_all(&api_versions_request(correlation_id))
        .map_err(|e| format!("sending ApiVersions: {e}"))?;
    read_api_versions_answer(stream, correlation_id)
}

/// Reads the answer to an ApiVersions v0 request already sent with `correlation_id`.
fn read_api_versions_answer(stream: &mut TcpStream, correlation_id: i32) -> Result<(), String> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| format!("reading the ApiVersions answer: {e}"))?;
    let size = i32::from_be_bytes(size);
    if !(6..=1 << 20).contains(&size) {
        return Err(format!("an ApiVersions answer of {size} bytes"));
    }
    let mut body = vec![0; size as usize];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("reading the ApiVersions answer: {e}"))?;
    let (id, error) = (
        i32::from_be_bytes(body[..4].try_into().unwrap()),
        i16::from_be_bytes(body[4..6].try_into().unwrap()),
    );
    if (id, error) != (correlation_id, 0) {
        return Err(format!(
            "ApiVersions answered with correlation id {id} and error {error}, \
             expected {correlation_id} and 0"
        ));
    }
    Ok(())
}

/// How a connection ended while we only read from it.
enum Ending {
    /// End of stream or a reset, after this long, having received this many bytes.
    Closed { after: Duration, received: usize },
    /// Still open when the time ran out, having received this many bytes.
    Open { received: usize },
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Closed { after, received } => {
                write!(f, "closed after {after:?} with {received} bytes received")
            }
            Ending::Open { received } => write!(f, "still open with {received} bytes received"),
        }
    }
}

fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Ending {
    let start = Instant::now();
    let mut received = 0;
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ending::Open { received };
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => {
                return Ending::Closed {
                    after: start.elapsed(),
                    received,
                };
            }
            Ok(n) => received += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ending::Open { received };
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                return Ending::Closed {
                    after: start.elapsed(),
                    received,
                };
            }
        }
    }
}

/// Reads the broker's resident memory every 100 ms for `period` and returns the highest
/// reading; fails as soon as one reaches `bound`, before a runaway broker can exhaust the
/// machine.
fn watch_resident(
    broker: &BrokerProcess,
    idle: u64,
    bound: u64,
    period: Duration,
    what: &str,
) -> u64 {
    let start = Instant::now();
    let mut peak = 0;
    loop {
        let resident = broker.resident_bytes();
        peak = peak.max(resident);
        assert_resident_below(resident, idle, bound, what);
        if start.elapsed() >= period {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_resident_below(resident: u64, idle: u64, bound: u64, what: &str) {
    assert!(
        resident < bound,
        "{what}, the broker's resident memory is {}: it was {} idle, and the bound is idle + {}",
        mb(resident),
        mb(idle),
        mb(bound - idle)
    );
}

/// Produces `values` (one record each, distinct) to `topic` with kcat, reads the topic back
/// with kcat, and checks that exactly those values came back.
fn kcat_round_trip(broker: &BrokerProcess, topic: &str, values: &[String], what: &str) {
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    kcat_produce_lines(broker, topic, &input, what);
    let out = kcat_consume_all(broker, topic, "%s\n");
    let mut consumed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let mut expected = values.to_vec();
    consumed.sort_unstable();
    expected.sort_unstable();
    if consumed != expected {
        let missing = expected
            .iter()
            .filter(|v| consumed.binary_search(v).is_err())
            .count();
        let foreign = consumed
            .iter()
            .filter(|v| expected.binary_search(v).is_err())
            .count();
        panic!(
            "{what}: produced {} records, kcat read back {}: {missing} missing, {foreign} \
             never produced (or duplicated)",
            expected.len(),
            consumed.len(),
        );
    }
}

#[test]
fn claimed_sizes_cost_only_the_bytes_received() {
    const SILENT: usize = 1_000;
    const SILENT_CLAIM: i32 = 100_000_000;
    const PARTIAL: usize = 100;
    const PARTIAL_CLAIM: i32 = 50_000_000;
    const PARTIAL_SENT: usize = 1_000_000;
    let _serial = one_at_a_time();
    let files = raise_open_files_limit(4096);
    assert!(
        files >= 1_500,
        "this test holds about 1,200 connections; the open-files limit is {files}"
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker, "warm-up", 1);
    create_topic(&broker, "under-attack", 1);
    let warm: Vec<String> = (0..100).map(|i| format!("warm-{i:03}")).collect();
    kcat_round_trip(&broker, "warm-up", &warm, "warming up");
    let idle = broker.resident_bytes();
    let bound = idle + 256 * MB;

    let mut attackers = Vec::with_capacity(SILENT + PARTIAL);
    for i in 1..=SILENT {
        let mut stream = connect(&broker.address);
        stream
            .write_all(&SILENT_CLAIM.to_be_bytes())
            .unwrap_or_else(|e| panic!("size prefix on connection {i}: {e}"));
        attackers.push(stream);
        if i % 50 == 0 {
            assert_resident_below(
                broker.resident_bytes(),
                idle,
                bound,
                &format!(
                    "after {i} connections that each claim {SILENT_CLAIM} bytes and send nothing"
                ),
            );
        }
    }
    let body = vec![0x5a; PARTIAL_SENT];
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 1..=PARTIAL {
        let mut stream = connect(&broker.address);
        stream
            .set_write_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        stream
            .write_all(&PARTIAL_CLAIM.to_be_bytes())
            .and_then(|()| stream.write_all(&body))
            .unwrap_or_else(|e| {
                panic!(
                    "connection {i} of {PARTIAL} could not send its {PARTIAL_SENT} bytes within \
                     15 s for all of them (the broker stopped reading?): {e}"
                )
            });
        attackers.push(stream);
        if i % 10 == 0 {
            assert_resident_below(
                broker.resident_bytes(),
                idle,
                bound,
                &format!(
                    "with {SILENT} silent connections and {i} that each claim {PARTIAL_CLAIM} \
                     bytes and sent {PARTIAL_SENT}"
                ),
            );
        }
    }
    let what = format!(
        "with {SILENT} connections claiming {SILENT_CLAIM} bytes and {PARTIAL} claiming \
         {PARTIAL_CLAIM} bytes having sent {PARTIAL_SENT} (about {} received in all)",
        mb((SILENT * 4 + PARTIAL * (4 + PARTIAL_SENT)) as u64)
    );
    let peak = watch_resident(&broker, idle, bound, Duration::from_secs(2), &what);

    let values: Vec<String> = (0..10_000).map(|i| format!("survivor-{i:05}")).collect();
    kcat_round_trip(&broker, "under-attack", &values, &what);
    let during = broker.resident_bytes();
    assert_resident_below(
        during,
        idle,
        bound,
        &format!("{what}, after kcat's round trip"),
    );

    drop(attackers);
    let settled = broker.wait_for_resident_below(idle + 64 * MB, Duration::from_secs(10));
    assert!(
        settled < idle + 64 * MB,
        "10 s after the attackers closed their connections, the broker's resident memory is {} \
         (idle {}, peak under attack {}): not back within 64 MB of idle",
        mb(settled),
        mb(idle),
        mb(peak.max(during))
    );
    eprintln!(
        "resident memory: idle {}, under attack at most {}, after kcat {}, after close {}",
        mb(idle),
        mb(peak),
        mb(during),
        mb(settled)
    );
}

fn fetch_request(topic: &str, correlation_id: i32) -> Vec<u8> {
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50_000_000)
        .with_isolation_level(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(50_000_000),
                ]),
        ]);
    request(ApiKey::Fetch, 4, correlation_id, &fetch)
}

#[test]
fn a_client_that_never_reads_holds_one_response() {
    const RECORDS: usize = 22_000;
    const RECORD_BYTES: usize = 1_000;
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker, "big", 1);
    let input: String = (0..RECORDS)
        .map(|i| format!("{:0width$}\n", i, width = RECORD_BYTES))
        .collect();
    kcat_produce_lines(
        &broker,
        "big",
        &input,
        &format!("{RECORDS} records of {RECORD_BYTES} bytes"),
    );

    // One fetch read in full: each pipelined fetch below asks for a response this large.
    let mut probe = connect(&broker.address);
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    probe.write_all(&fetch_request("big", 0)).unwrap();
    let mut size = [0u8; 4];
    probe
        .read_exact(&mut size)
        .expect("the answer to one fetch within 10 s");
    let response = u32::from_be_bytes(size) as u64;
    assert!(
        response >= 20 * MB,
        "one fetch of the whole partition answered {}, expected about 22 MB",
        mb(response)
    );
    let mut body = vec![0; response as usize];
    probe
        .read_exact(&mut body)
        .expect("the whole fetch response within 10 s");
    drop((probe, body));

    let idle = broker.resident_bytes();
    let bound = idle + 256 * MB;
    let mut held = Vec::new();
    let mut peak = 0;
    for count in [100, 500] {
        let stream = connect(&broker.address);
        let mut writing = stream.try_clone().unwrap();
        writing
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let requests: Vec<u8> = (1..=count)
            .flat_map(|id| fetch_request("big", id))
            .collect();
        // The kernel's buffers may fill once the broker stops reading: never wait on the write.
        let writer = std::thread::spawn(move || {
            let _ = writing.write_all(&requests);
        });
        let what = format!(
            "while a client that never reads has pipelined {count} fetches each answered with {}",
            mb(response)
        );
        peak = peak.max(watch_resident(
            &broker,
            idle,
            bound,
            Duration::from_secs(3),
            &what,
        ));
        let topic = format!("beside-{count}");
        create_topic(&broker, &topic, 1);
        let values: Vec<String> = (0..1_000).map(|i| format!("beside-{i:04}")).collect();
        kcat_round_trip(&broker, &topic, &values, &what);
        let after = broker.resident_bytes();
        assert_resident_below(
            after,
            idle,
            bound,
            &format!("{what}, after kcat's round trip"),
        );
        peak = peak.max(after);
        held.push((stream, writer));
    }

    for (stream, writer) in held {
        // Shut down the socket itself, which also ends a write still blocked in the thread.
        let _ = stream.shutdown(Shutdown::Both);
        drop(stream);
        writer.join().unwrap();
    }
    let settled = broker.wait_for_resident_below(idle + 64 * MB, Duration::from_secs(10));
    assert!(
        settled < idle + 64 * MB,
        "10 s after the non-reading clients closed their connections, the broker's resident \
         memory is {} (idle {}, peak {}): not back within 64 MB of idle",
        mb(settled),
        mb(idle),
        mb(peak)
    );
    eprintln!(
        "resident memory: idle {} (after one {} fetch), with 600 fetches pipelined at most {}, \
         after close {}",
        mb(idle),
        mb(response),
        mb(peak),
        mb(settled)
    );
}

#[test]
fn idle_connections_are_closed() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["connections.max.idle.ms=2000"]);

    let mut silent = connect(&broker.address);
    let port = silent.local_addr().unwrap().port();
    match read_until_closed(&mut silent, Duration::from_secs(8)) {
        Ending::Closed { after, received: 0 } => assert!(
            after >= Duration::from_millis(1_500),
            "a silent connection was closed after {after:?}, before connections.max.idle.ms=2000"
        ),
        ending => panic!(
            "a silent connection with connections.max.idle.ms=2000, after 8 s: {ending} \
             (expected closed, with nothing received)"
        ),
    }
    let expected = format!("About to close the idle connection from 127.0.0.1:{port}");
    expect_log_line(&broker, &expected);

    // A connection that keeps talking is not idle, however long it lives.
    let mut busy = connect(&broker.address);
    let start = Instant::now();
    let mut correlation_id = 0;
    while start.elapsed() < Duration::from_secs(4) {
        correlation_id += 1;
        api_versions(&mut busy, correlation_id).unwrap_or_else(|e| {
            panic!(
                "a connection sending ApiVersions every 500 ms, request {correlation_id} at \
                 {:?}: {e}",
                start.elapsed()
            )
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(correlation_id >= 8, "only {correlation_id} requests in 4 s");
}

/// Waits up to 5 s for a log line containing `expected`, prints it, or fails with the log.
fn expect_log_line(broker: &BrokerProcess, expected: &str) {
    let line = broker
        .wait_for_log_line(expected, Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "no log line containing {expected:?} within 5 s; the log:\n{}",
                broker.log_lines().join("\n")
            )
        });
    eprintln!("{line}");
}

/// Opens `limit` connections from 127.0.0.1, each answering, checks that one more is closed
/// unanswered and logged, that the first ones still answer, and that closing one makes room.
fn check_per_ip_limit(broker: &BrokerProcess, limit: usize) {
    let mut held = Vec::new();
    for i in 1..=limit {
        let mut stream = connect(&broker.address);
        api_versions(&mut stream, i as i32)
            .unwrap_or_else(|e| panic!("connection {i} of the {limit} allowed: {e}"));
        held.push(stream);
    }

    let mut extra = connect(&broker.address);
    // The broker may close it before or after this request arrives: a failed write is fine.
    let _ = extra.write_all(&api_versions_request(1_000));
    match read_until_closed(&mut extra, Duration::from_secs(5)) {
        Ending::Closed { received: 0, .. } => {}
        ending => panic!(
            "connection {} from 127.0.0.1 with a limit of {limit}, after 5 s: {ending} \
             (expected closed, unanswered)",
            limit + 1
        ),
    }
    let expected = format!(
        "Rejected connection from 127.0.0.1, address already has the configured maximum of \
         {limit} connections."
    );
    expect_log_line(broker, &expected);

    for (i, stream) in held.iter_mut().enumerate() {
        api_versions(stream, 2_000 + i as i32).unwrap_or_else(|e| {
            panic!(
                "connection {} of the {limit} allowed, after one more was refused: {e}",
                i + 1
            )
        });
    }

    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut stream = connect(&broker.address);
        match api_versions(&mut stream, 3_000) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!(
                "5 s after one of the {limit} connections closed, a new one is still refused \
                 ({attempts} attempts): {e}"
            ),
        }
    }
}

#[test]
fn connections_beyond_the_per_ip_limit_are_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["max.connections.per.ip=50"]);
    check_per_ip_limit(&broker, 50);
}

#[test]
fn a_per_ip_override_sets_the_limit_for_that_address() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "max.connections.per.ip=50",
            "max.connections.per.ip.overrides=127.0.0.1:3",
        ],
    );
    check_per_ip_limit(&broker, 3);
}

#[test]
fn at_max_connections_the_broker_waits_for_one_to_close() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["max.connections=3"]);
    let mut held: Vec<TcpStream> = (1..=3)
        .map(|i| {
            let mut stream = connect(&broker.address);
            api_versions(&mut stream, i)
                .unwrap_or_else(|e| panic!("connection {i} of the 3 allowed: {e}"));
            stream
        })
        .collect();
    // The fourth connects (the kernel's backlog takes it) but is not served while three are
    // open: Kafka's acceptor waits for a slot rather than refusing.
    let mut fourth = connect(&broker.address);
    fourth.write_all(&api_versions_request(4)).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut byte = [0u8; 1];
    match fourth.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "a fourth connection with max.connections=3 should get no answer yet, got {other:?}"
        ),
    }
    expect_log_line(&broker, "Waiting for a connection slot");
    // One closes: the fourth is accepted and answered.
    drop(held.pop());
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    read_api_versions_answer(&mut fourth, 4)
        .unwrap_or_else(|e| panic!("the fourth connection, once a slot freed: {e}"));
    for (i, stream) in held.iter_mut().enumerate() {
        api_versions(stream, 10 + i as i32)
            .unwrap_or_else(|e| panic!("connection {} after the fourth joined: {e}", i + 1));
    }
}
