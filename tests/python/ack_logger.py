"""Produce numbered messages with acks=1 until the broker goes away, printing the number of each
message as soon as its acknowledgement arrives (flushing, so a test can kill the broker at any
moment and know exactly what was acknowledged before).

usage: ack_logger.py BOOTSTRAP TOPIC MAX
"""
import sys

from confluent_kafka import Producer

bootstrap, topic, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 1,
                     "enable.idempotence": False, "message.timeout.ms": 5000,
                     "retries": 0})


failed = []


def delivered(err, msg):
    if err is None:
        sys.stdout.write(msg.value().decode() + "\n")
        sys.stdout.flush()
    else:
        failed.append(err)


for i in range(limit):
    if failed:
        break  # the broker is gone: stop sending, report what is still in flight
    while not failed:
        try:
            producer.produce(topic, value=("m-%07d" % i).encode(), on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.01)
    producer.poll(0)
producer.flush(10)
