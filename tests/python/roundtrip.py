"""Produce N keyed messages to a 3-partition topic with one client library and consume them
back with the same library; print one line per consumed record: partition, key, value.

usage: roundtrip.py kafka-python|confluent-kafka BOOTSTRAP TOPIC N
"""
import sys
import time

library, bootstrap, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
messages = [("key-%d" % (i % 97), "value-%05d" % i) for i in range(count)]
out = []

if library == "kafka-python":
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    KafkaAdminClient(bootstrap_servers=bootstrap).create_topics([NewTopic(topic, 3, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [producer.send(topic, key=k.encode(), value=v.encode()) for k, v in messages]
    producer.flush()
    for f in futures:
        f.get(timeout=30)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(3)])
    consumer.seek_to_beginning()
    deadline = time.time() + 60
    for m in consumer:
        out.append((m.partition, m.key.decode(), m.value.decode()))
        if len(out) >= count or time.time() > deadline:
            break
elif library == "confluent-kafka":
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        f.result()
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for k, v in messages:
        producer.produce(topic, key=k.encode(), value=v.encode(),
                         on_delivery=lambda err, msg: err and errors.append(err))
        producer.poll(0)
    producer.flush(30)
    if errors:
        sys.exit("delivery failed: %s" % errors[0])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "roundtrip",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    deadline = time.time() + 60
    while len(out) < count and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            sys.exit("consume failed: %s" % m.error())
        out.append((m.partition(), m.key().decode(), m.value().decode()))
    consumer.close()
else:
    sys.exit("unknown library " + library)

for p, k, v in out:
    print(p, k, v)
