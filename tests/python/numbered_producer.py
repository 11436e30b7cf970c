"""confluent-kafka writes COUNT numbered records to TOPIC (record i to partition i % 3) with
acks=all and idempotence, printing "acked i" for each delivery report that succeeded.

Usage: numbered_producer.py BOOTSTRAP TOPIC COUNT
"""

import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120000,
        }
    )
    failed = []

    def report(err, msg):
        if err is None:
            sys.stdout.write(f"acked {msg.value().decode()}\n")
        else:
            failed.append(str(err))

    started = time.monotonic()
    for i in range(count):
        if i % 1000 == 0:
            # Paced like the Rust test's producer, so the kills land mid-stream.
            ahead = started + i / 20000.0 - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(
                    topic, value=str(i).encode(), partition=i % 3, on_delivery=report
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(180)
    sys.stdout.flush()
    if failed:
        print(f"{len(failed)} failed, first: {failed[0]}", file=sys.stderr)
    if left:
        print(f"{left} still in flight after 180 s", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
