"""Client-side helpers shared by the test modules (confluent-kafka based).

Consumers never join a group: they assign() explicit partitions and offsets and commit nothing.
Every wait is bounded.
"""
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ADMIN_TIMEOUT_S = 30.0


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_futures(futures, timeout=ADMIN_TIMEOUT_S):
    """Resolves a dict of admin futures; returns {key: result or KafkaError}. The AdminClient
    that made them must stay referenced meanwhile (a destroyed client fails them with _DESTROY)."""
    out = {}
    for key, fut in futures.items():
        try:
            out[key] = fut.result(timeout=timeout)
        except KafkaException as e:
            out[key] = e.args[0]
    return out


def create_topic(bootstrap, name, partitions=1, config=None):
    a = admin(bootstrap)  # kept referenced until the futures resolve
    res = wait_futures(a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S))
    assert res[name] is None, f"create_topics({name}) failed: {res[name]}"
    return name


def producer(bootstrap, **conf):
    base = {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 30000}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base)


class Deliveries:
    """Collects delivery reports: reports[i] = (error, partition, offset) for message i."""

    def __init__(self):
        self.reports = {}

    def callback(self, i):
        def cb(err, msg):
            self.reports[i] = (err, msg.partition(), msg.offset())
        return cb

    def errors(self):
        return {i: r[0] for i, r in self.reports.items() if r[0] is not None}


def produce_all(p, topic, messages, partition=None, flush_timeout=60.0):
    """messages: list of (key, value, headers); returns Deliveries after a bounded flush."""
    d = Deliveries()
    for i, (key, value, headers) in enumerate(messages):
        kw = {"key": key, "value": value, "headers": headers, "on_delivery": d.callback(i)}
        if partition is not None:
            kw["partition"] = partition
        for _ in range(1000):  # bounded retry on a full local queue
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        else:
            raise AssertionError("local producer queue stayed full")
        p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} messages still undelivered after {flush_timeout}s"
    assert len(d.reports) == len(messages), f"{len(d.reports)} delivery reports for {len(messages)} messages"
    return d


def consumer(bootstrap, **conf):
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": unique("compat-unused"),  # required by the client; never joined (assign only)
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "error",
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(base)


def consume(bootstrap, topic, partition, count, start=OFFSET_BEGINNING, timeout=60.0, settle=0.5, **conf):
    """Reads `count` messages of one partition from `start`, then keeps polling for `settle`
    seconds so that extra (duplicate) messages would be seen too. Returns confluent Messages."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, f"consumer error: {m.error()}"
                got.append(m)
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            for m in c.consume(num_messages=1000, timeout=0.1):
                assert m.error() is None, f"consumer error: {m.error()}"
                got.append(m)
        return got
    finally:
        c.close()


def watermarks(bootstrap, topic, partition):
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def headers_of(msg):
    return [(k, v) for k, v in (msg.headers() or [])]


def is_error(value, code):
    return isinstance(value, KafkaError) and value.code() == code


def pct(values, p):
    """The p-quantile (0..1) of values by nearest rank; NaN for none (the benchmarks' figures)."""
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round((len(values) - 1) * p)))]
