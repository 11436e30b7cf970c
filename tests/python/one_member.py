"""One confluent-kafka consumer in a group, for mixing with other clients' members: polls
until the file named by the last argument exists, printing its assignment as a JSON line each
time it changes, then the offsets it read per partition.

With a STRATEGY (partition.assignment.strategy, e.g. cooperative-sticky) it also prints each
revocation as {"revoked": [...]}.

usage: one_member.py BOOTSTRAP TOPIC GROUP STOP_FILE [STRATEGY]
"""
import json
import os
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, group, stop = sys.argv[1:5]
config = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": "confluent",
          "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
          "heartbeat.interval.ms": 500}
if len(sys.argv) > 5:
    config["partition.assignment.strategy"] = sys.argv[5]


def on_revoke(consumer, partitions):
    print(json.dumps({"revoked": sorted(tp.partition for tp in partitions)}), flush=True)


c = Consumer(config)
c.subscribe([topic], on_revoke=on_revoke)
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
