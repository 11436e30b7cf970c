"""Consumer groups with a real client library: each consumer runs in its own thread, as an
application's would, and the main thread watches their assignments.

usage:
  group_consumers.py rebalance LIB BOOTSTRAP TOPIC GROUP COUNT
      Produces COUNT messages to TOPIC (which must exist), starts three consumers in GROUP,
      waits until they share the partitions, adds a fourth, closes the first, and consumes
      until every message was seen and each owner has read its partitions to the end; each
      commits (again after a rebalance refused it), then all close. Prints one JSON line per phase with each live consumer's assignment, then
      {"consumed": unique records seen, "ends": end offset per partition, "committed": the
      group's committed offsets}.
  group_consumers.py resume LIB BOOTSTRAP TOPIC GROUP EXTRA
      Prints the group's committed offsets, produces EXTRA new messages, and consumes with one
      consumer of GROUP until it has EXTRA messages; prints {"committed": ..., "values": [...]}
      (the values it read, which should be only the new ones).

  group_consumers.py crash LIB BOOTSTRAP TOPIC GROUP COUNT SIGNAL_FILE
      Two consumers read COUNT messages and commit; a third joins, and while the group
      rebalances the test kills and restarts the broker, then creates SIGNAL_FILE. The three
      must then share the partitions; prints the committed offsets before and after.

  group_consumers.py static LIB BOOTSTRAP TOPIC GROUP 0
      Two static members (group.instance.id) share the partitions; one closes and a new
      process with its instance id takes its place. Prints both assignments before and after
      and the other member's rebalance callbacks.

LIB is confluent-kafka or kafka-python.
"""
import collections
import json
import logging
import sys
import threading
import time

mode, library, bootstrap, topic, group, count = sys.argv[1:7]
count = int(count)
DEADLINE = time.time() + 60


# The client library's own log, kept in memory and shown only on failure: it says what the
# client was waiting for (a coordinator, metadata, a join) when a deadline passed.
CLIENT_LOG = collections.deque(maxlen=2000)


class _Remember(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("need_rejoin"):
            return  # logged on every poll
        CLIENT_LOG.append("%.3f %s %s %s" % (record.created, record.threadName, record.name,
                                             record.getMessage()))


logging.getLogger().addHandler(_Remember())
logging.getLogger().setLevel(logging.DEBUG)


def fail(message):
    print(message, file=sys.stderr)
    print("the client logged (last %d lines):" % len(CLIENT_LOG), file=sys.stderr)
    for line in list(CLIENT_LOG):
        print(line, file=sys.stderr)
    sys.exit(1)


class Client:
    """One consumer in its own thread: polls, records what it read and its assignment."""

    def __init__(self, name, instance=None):
        self.name = name
        self.instance = instance
        self.events = []
        self.records = []
        self.assignment = []
        self.positions = {}
        self.stop = threading.Event()
        self.closed = threading.Event()
        self.commit_requested = threading.Event()
        self.committed = threading.Event()
        self.commit_error = None
        self.error = None
        ALL.append(self)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            consumer = make_consumer(self)
            while not self.stop.is_set():
                for partition, offset, value in poll(consumer):
                    self.records.append((partition, offset, value))
                self.assignment = sorted(assignment(consumer))
                self.positions = positions(consumer)
                if self.commit_requested.is_set() and not self.committed.is_set():
                    # A commit racing a rebalance is refused (REBALANCE_IN_PROGRESS); the
                    # application tries again, as Kafka's clients leave it to.
                    try:
                        commit(consumer)
                        self.committed.set()
                    except Exception as e:
                        self.commit_error = repr(e)
            consumer.close()
        except Exception as e:  # reported by the main thread
            self.error = repr(e)
        finally:
            self.closed.set()

    def close(self):
        self.stop.set()
        self.closed.wait(60)
        if self.error:
            fail("%s: %s" % (self.name, self.error))


if library == "confluent-kafka":
    from confluent_kafka import Consumer, Producer, TopicPartition

    def make_consumer(client):
        config = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": client.name,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
        if client.instance:
            config["group.instance.id"] = client.instance
        c = Consumer(config)

        def on_assign(_, partitions):
            client.events.append(("assign", sorted(p.partition for p in partitions)))

        def on_revoke(_, partitions):
            client.events.append(("revoke", sorted(p.partition for p in partitions)))

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        return c

    def poll(c):
        out = []
        for m in c.consume(num_messages=500, timeout=0.1):
            if m.error():
                raise RuntimeError(str(m.error()))
            out.append((m.partition(), m.offset(), m.value().decode()))
        return out

    def assignment(c):
        return [tp.partition for tp in c.assignment()]

    def positions(c):
        # Before it reads anything from a partition, librdkafka has no position: it will
        # start at the committed offset.
        known = c.position(c.assignment())
        unknown = [tp for tp in known if tp.offset < 0]
        if unknown:
            known = [tp for tp in known if tp.offset >= 0] + c.committed(unknown, timeout=5)
        return {tp.partition: tp.offset for tp in known}

    def commit(c):
        if not c.assignment():
            return
        try:
            done = c.commit(asynchronous=False)
        except Exception as e:
            if "NO_OFFSET" in str(e):
                return  # nothing read since the last commit
            raise
        failed = [tp for tp in done or [] if tp.error]
        if failed:
            raise RuntimeError("commit failed: %s" % failed)

    def produce(values):
        """Produces `values`; returns each partition's end offset after them."""
        ends = {}

        def delivered(err, m):
            if err:
                fail("delivery failed: %s" % err)
            ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)

        p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i, v in enumerate(values):
            p.produce(topic, key=str(i).encode(), value=v.encode(), on_delivery=delivered)
        if p.flush(30) != 0:
            fail("produce did not finish")
        return ends

    def committed():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        c.close()
        return {tp.partition: tp.offset for tp in got}

elif library == "kafka-python":
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    def make_consumer(client):
        if client.instance:
            raise RuntimeError("static members are tested with confluent-kafka")
        c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                          client_id=client.name,
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          session_timeout_ms=10000, heartbeat_interval_ms=500)
        # kafka-python 3.0 joins before it has the topic's metadata: as leader it assigns
        # nothing, then rejoins when the metadata arrives. If that rejoin is still in flight
        # when poll() returns, kafka-python never applies its answer (its assignment snapshot
        # already matches, so it stops asking to rejoin): the member keeps no partitions and
        # stops heartbeating, whatever the broker does. Learning the topic's partitions first,
        # as an application listing them would, makes the first join assign them.
        if not c.partitions_for_topic(topic):
            raise RuntimeError("no partitions for %s" % topic)
        return c

    def poll(c):
        out = []
        for tp, messages in c.poll(timeout_ms=100).items():
            for m in messages:
                out.append((tp.partition, m.offset, m.value.decode()))
        return out

    def assignment(c):
        return [tp.partition for tp in c.assignment()]

    def positions(c):
        out = {}
        for tp in c.assignment():
            pos = c.position(tp, timeout_ms=100)
            out[tp.partition] = -1 if pos is None else getattr(pos, "offset", pos)
        return out

    def commit(c):
        if c.assignment():
            c.commit()

    def produce(values):
        """Produces `values`; returns each partition's end offset after them."""
        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        futures = [p.send(topic, key=str(i).encode(), value=v.encode())
                   for i, v in enumerate(values)]
        p.flush()
        ends = {}
        for f in futures:
            m = f.get(timeout=30)
            ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
        p.close()
        return ends

    def committed():
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        parts = c.partitions_for_topic(topic) or set()
        out = {p: c.committed(TopicPartition(topic, p)) for p in parts}
        c.close()
        return {p: (-1 if o is None else o) for p, o in out.items()}
else:
    fail("unknown library " + library)


ALL = []


def state():
    """Each consumer's assignment and the last offset it read per partition, for failures."""
    out = []
    for c in ALL:
        read = {}
        for p, o, _ in list(c.records):
            read[p] = max(read.get(p, -1), o)
        out.append({"name": c.name, "assignment": c.assignment, "read": read,
                    "positions": c.positions, "commit_error": c.commit_error,
                    "closed": c.closed.is_set(), "error": c.error})
    return json.dumps(out)


def wait_until(what, condition):
    while not condition():
        if time.time() > DEADLINE:
            fail("timed out waiting until %s: %s" % (what, state()))
        time.sleep(0.1)


def shared_out(clients, partitions):
    """Every partition owned by exactly one live consumer, and every consumer owning some."""
    owned = [p for c in clients for p in c.assignment]
    return sorted(owned) == partitions and all(c.assignment for c in clients)


def report(phase, clients):
    print(json.dumps({"phase": phase, "assignments": [c.assignment for c in clients]}),
          flush=True)


def caught_up(clients, ends):
    """Every live consumer's position is the end of each partition it owns, so what it commits
    is the end."""
    return all(c.positions.get(p, -1) == ends.get(p, 0) for c in clients for p in c.assignment)


if mode == "rebalance":
    ends = produce(["value-%06d" % i for i in range(count)])
    partitions = list(range(6))
    clients = [Client("c%d" % i) for i in range(3)]
    wait_until("three consumers share the partitions", lambda: shared_out(clients, partitions))
    report("three", clients)
    clients.append(Client("c3"))
    wait_until("four consumers share the partitions", lambda: shared_out(clients, partitions))
    report("four", clients)
    first = clients.pop(0)
    first.close()
    wait_until("three remaining consumers share the partitions",
               lambda: shared_out(clients, partitions))
    report("after-leave", clients)
    seen = lambda: {(p, o) for c in clients + [first] for p, o, _ in c.records}
    wait_until("every message is consumed", lambda: len(seen()) >= count)
    wait_until("each owner has read its partitions to the end",
               lambda: caught_up(clients, ends))
    for c in clients:
        c.commit_requested.set()
    wait_until("every consumer has committed", lambda: all(c.committed.is_set() for c in clients))
    for c in clients:
        c.close()
    print(json.dumps({"consumed": len(seen()), "ends": ends, "committed": committed()}),
          flush=True)
elif mode == "static":
    # Static members (group.instance.id): one restarts within its session and takes its
    # partitions back without the other noticing a rebalance.
    partitions = list(range(6))
    a, b = Client("a", instance="instance-a"), Client("b", instance="instance-b")
    wait_until("two static members share the partitions", lambda: shared_out([a, b], partitions))
    before = {"a": a.assignment, "b": b.assignment}
    b_events = list(b.events)
    a.close()  # a static member does not leave on close
    a2 = Client("a2", instance="instance-a")
    wait_until("the restarted member has its partitions back",
               lambda: shared_out([a2, b], partitions))
    time.sleep(1)  # a rebalance it caused would show up in b's events by now
    after = {"a": a2.assignment, "b": b.assignment}
    b_events_after = list(b.events)
    for c in (a2, b):
        c.close()
    print(json.dumps({"step": "static", "before": before, "after": after,
                      "b_events_before": b_events, "b_events_after": b_events_after}),
          flush=True)
elif mode == "crash":
    # The broker is killed while a third consumer joins; the test restarts it and then
    # creates the file named by the last argument.
    signal = sys.argv[7]
    import os

    ends = produce(["value-%06d" % i for i in range(count)])
    partitions = list(range(6))
    clients = [Client("c%d" % i) for i in range(2)]
    wait_until("two consumers share the partitions", lambda: shared_out(clients, partitions))
    wait_until("each owner has read its partitions to the end",
               lambda: caught_up(clients, ends))
    for c in clients:
        c.commit_requested.set()
    wait_until("both consumers have committed", lambda: all(c.committed.is_set() for c in clients))
    print(json.dumps({"step": "committed", "committed": committed()}), flush=True)
    clients.append(Client("c2"))
    wait_until("the third consumer is joining", lambda: any(
        not c.assignment for c in clients[:2]) or clients[2].assignment)
    print(json.dumps({"step": "rebalancing"}), flush=True)
    wait_until("the broker is restarted", lambda: os.path.exists(signal))
    DEADLINE = time.time() + 90
    wait_until("three consumers share the partitions after the restart",
               lambda: shared_out(clients, partitions))
    report("after-restart", clients)
    for c in clients:
        c.close()
    print(json.dumps({"step": "restarted", "committed": committed()}), flush=True)
elif mode == "resume":
    before = committed()
    values = ["extra-%06d" % i for i in range(count)]
    client = Client("resumed")
    wait_until("the consumer is assigned every partition", lambda: len(client.assignment) == 6)
    produce(values)
    wait_until("the new messages are consumed", lambda: len(client.records) >= count)
    time.sleep(1)  # anything older arriving late would show up here
    client.commit_requested.set()
    wait_until("the consumer has committed", client.committed.is_set)
    client.close()
    print(json.dumps({"committed": before, "values": [v for _, _, v in client.records]}),
          flush=True)
else:
    fail("unknown mode " + mode)
