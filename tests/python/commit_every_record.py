"""A confluent-kafka consumer that commits synchronously after every record.

usage: commit_every_record.py BOOTSTRAP TOPIC GROUP N
    reads N records of TOPIC (one partition) in GROUP, committing after each
usage: commit_every_record.py BOOTSTRAP TOPIC GROUP committed
    prints the group's committed offset of partition 0
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, group, what = sys.argv[1:5]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
if what == "committed":
    print(c.committed([TopicPartition(topic, 0)], timeout=30)[0].offset)
    c.close()
    sys.exit(0)
c.subscribe([topic])
read = 0
deadline = time.time() + 150
while read < int(what):
    if time.time() > deadline:
        sys.exit("read only %d records" % read)
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    read += 1
    c.commit(message=m, asynchronous=False)
c.close()
