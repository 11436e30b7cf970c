//! Kill -9 mid-stream: every message acknowledged with acks=1 before the kill is there after a
//! restart when `log.flush.interval.messages=1`, and the log is recovered (not trusted) because
//! the kill left no clean-shutdown marker.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use surety_tests::{BrokerProcess, create_topic, kcat_consume_all, python, python_scripts};

#[test]
fn nothing_acknowledged_is_lost_when_the_broker_is_killed_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["log.flush.interval.messages=1"]);
    create_topic(&broker, "crash", 1);

    let mut producer = python()
        .arg(python_scripts().join("ack_logger.py"))
        .args([&broker.address, "crash", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the producer");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(producer.stdout.take().unwrap()).lines();
    let started = Instant::now();
    while acked.len() < 3000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too slow: {} acks",
            acked.len()
        );
        acked.push(lines.next().expect("the producer is running").unwrap());
    }
    // Mid-stream: the producer keeps sending while the broker dies.
    let mut broker = broker;
    broker.kill();
    // Everything the producer learned was acknowledged before it noticed the broker's death.
    for line in lines.map_while(Result::ok) {
        acked.push(line);
    }
    let _ = producer.wait();

    let broker = broker.restart();
    let out = kcat_consume_all(&broker, "crash", "%s\n");
    let stored: std::collections::HashSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|m| !stored.contains(*m)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, first {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
    let log = broker.log_lines().join("\n");
    assert!(
        log.contains("recovered"),
        "the restart recovered the log:\n{log}"
    );
}
