"""One confluent-kafka consumer in a group, for mixing with other clients' members: polls
until the file named by the last argument exists, printing its assignment as a JSON line each
time it changes, then the offsets it read per partition.

usage: one_member.py BOOTSTRAP TOPIC GROUP STOP_FILE
"""
import json
import os
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, group, stop = sys.argv[1:5]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "confluent",
              "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
              "heartbeat.interval.ms": 500})
c.subscribe([topic])
seen = None
read = {}
deadline = time.time() + 120
while not os.path.exists(stop) and time.time() < deadline:
    m = c.poll(0.1)
    if m is not None and not m.error():
        read.setdefault(m.partition(), []).append(m.offset())
    now = sorted(tp.partition for tp in c.assignment())
    if now != seen:
        seen = now
        print(json.dumps({"assignment": now}), flush=True)
c.close()
print(json.dumps({"read": {str(p): len(o) for p, o in read.items()}}), flush=True)
