"""The group admin APIs through confluent-kafka's AdminClient (and kafka-python's for OffsetDelete): ListGroups, DescribeGroups,
OffsetFetch, DeleteGroups (refused while the group has a member), OffsetDelete.

usage: group_admin.py BOOTSTRAP TOPIC GROUP
Prints one JSON line per step; the test checks them.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka import ConsumerGroupTopicPartitions

bootstrap, topic, group = sys.argv[1:4]
admin = AdminClient({"bootstrap.servers": bootstrap})


def step(name, **values):
    print(json.dumps(dict(step=name, **values)), flush=True)


def groups():
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=20)
    return {g.group_id: str(g.state).split(".")[-1] for g in listed.valid}


def offsets():
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request)[group].result(timeout=20)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def delete():
    try:
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=20)
        return "NONE"
    except Exception as e:
        return e.args[0].name() if e.args and hasattr(e.args[0], "name") else repr(e)


p = Producer({"bootstrap.servers": bootstrap})
for i in range(30):
    p.produce(topic, value=b"v%d" % i, partition=i % 3)
p.flush(30)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "admin-test",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
read = 0
deadline = time.time() + 60
while read < 30 and time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        read += 1
c.commit(asynchronous=False)
step("consumed", read=read)
step("listed-active", groups=groups())
described = admin.describe_consumer_groups([group])[group].result(timeout=20)
step("described", state=str(described.state).split(".")[-1],
     assignor=described.partition_assignor,
     members=[{"client_id": m.client_id, "host": m.host,
               "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions)}
              for m in described.members])
step("delete-active", error=delete())
c.close()
step("listed-closed", groups=groups())
step("offsets", offsets=offsets())
# OffsetDelete for one partition of an empty group (confluent-kafka's Python AdminClient has
# no call for it; kafka-python's has).
from kafka import KafkaAdminClient  # noqa: E402
from kafka import TopicPartition as KafkaTopicPartition  # noqa: E402

kafka_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
deleted = kafka_admin.delete_group_offsets(group, [KafkaTopicPartition(topic, 0)])
step("offset-delete", result=repr(deleted))
kafka_admin.close()
step("offsets-after-delete", offsets=offsets())
step("delete-closed", error=delete())
step("listed-deleted", groups=groups())
step("delete-again", error=delete())
