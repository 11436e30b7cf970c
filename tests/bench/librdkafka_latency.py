"""librdkafka's producer latency, measured as `surety perf produce` measures its own: N records
of S bytes at R records/s (confluent-kafka, so librdkafka does the producing), latency from
produce() to the delivery report, then the same summary lines as kafka-producer-perf-test.

usage: librdkafka_latency.py BOOTSTRAP TOPIC N SIZE RATE [key=value ...]
"""

import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, n, size, rate = sys.argv[1:6]
    n, size, rate = int(n), int(size), float(rate)
    config = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    config.update(kv.split("=", 1) for kv in sys.argv[6:])
    producer = Producer(config)
    value = b"x" * size
    latencies = []
    failures = [0]

    def report(sent_at):
        def on_delivery(err, _msg):
            if err is None:
                latencies.append(time.perf_counter() - sent_at)
            else:
                failures[0] += 1

        return on_delivery

    started = time.perf_counter()
    for i in range(n):
        due = started + i / rate
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            producer.poll(min(due - now, 0.001))
        producer.produce(topic, value, on_delivery=report(time.perf_counter()))
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - started
    if failures[0] or not latencies:
        sys.exit(f"{failures[0]} records failed")
    lat = sorted(latencies)
    pct = lambda p: lat[min(int(len(lat) * p), len(lat) - 1)] * 1000
    print(
        f"{len(lat)} records sent, {len(lat) / elapsed:.1f} records/sec "
        f"({len(lat) * size / elapsed / 1e6:.2f} MB/sec), "
        f"{sum(lat) / len(lat) * 1000:.2f} ms avg latency, {lat[-1] * 1000:.2f} ms max latency."
    )
    print(
        f"{pct(0.50):.2f} ms 50th, {pct(0.95):.2f} ms 95th, "
        f"{pct(0.99):.2f} ms 99th, {pct(0.999):.2f} ms 99.9th."
    )


if __name__ == "__main__":
    main()
