"""confluent-kafka (librdkafka) reading N records as a new member of a fresh group, measured
as `surety perf consume` measures: from subscribe to the Nth record, and to the first.

usage: librdkafka_group_consume.py BOOTSTRAP TOPIC GROUP N
"""
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
started = time.time()
c.subscribe([topic])
read = 0
first = None
while read < count:
    batch = c.consume(num_messages=10000, timeout=1.0)
    if batch and first is None:
        first = time.time()
    read += len(batch)
elapsed = time.time() - started
print("%d records read, %.1f records/sec, first record after %.1f ms."
      % (read, read / elapsed, (first - started) * 1000))
c.close()
