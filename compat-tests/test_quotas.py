"""Client quotas (issue 14): AlterClientQuotas / DescribeClientQuotas on the wire (no Python
client has them), and librdkafka producers and consumers held to their byte rate by
throttle_time_ms and channel muting, while a client without a quota is not slowed. Rates are
compared with the quota and with the unlimited client of the same run, never with a fixed time.
"""
import struct
import time

from confluent_kafka import Consumer, Producer, TopicPartition

import wire
from helpers import create_topic, unique

ALTER_CLIENT_QUOTAS, DESCRIBE_CLIENT_QUOTAS = 49, 48


def alter_quota(port, entity, key, value, remove=False):
    """AlterClientQuotas v0 for one entity [(type, name or None)]; returns the error code."""
    ent = wire.array([wire.string(t) + wire.string(n) for t, n in entity])
    op = wire.string(key) + struct.pack(">d", value) + struct.pack(">?", remove)
    body = wire.array([ent + wire.array([op])]) + struct.pack(">?", False)
    with wire.Conn(port) as c:
        r = wire.Reader(c.call(ALTER_CLIENT_QUOTAS, 0, body))
    r.i32()
    assert r.i32() == 1
    return r.i16()


def describe_quotas(port, entity_type, name):
    """DescribeClientQuotas v0 matching one entity exactly: {key: value}."""
    body = wire.array([wire.string(entity_type) + wire.i8(0) + wire.string(name)]) + struct.pack(">?", False)
    with wire.Conn(port) as c:
        r = wire.Reader(c.call(DESCRIBE_CLIENT_QUOTAS, 0, body))
    r.i32()
    assert r.i16() == 0
    r.string()
    values = {}
    for _ in range(r.i32()):
        for _ in range(r.i32()):
            r.string(), r.string()
        for _ in range(r.i32()):
            k = r.string()
            values[k] = struct.unpack(">d", r.take(8))[0]
    return values


def produce_rate(bootstrap, topic, client_id, total_bytes, deadline_s=60):
    """Sends total_bytes in 1 KiB messages and waits for them; returns bytes per second."""
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5, "batch.size": 65536,
                  "queue.buffering.max.kbytes": 4096})
    value = b"q" * 1024
    start = time.monotonic()
    sent = 0
    while sent < total_bytes and time.monotonic() - start < deadline_s:
        try:
            p.produce(topic, value)
            sent += len(value)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    assert p.flush(deadline_s) == 0
    return sent / (time.monotonic() - start)


def test_quotas_are_altered_and_described_on_the_wire(gateway):
    client = unique("tool")
    assert alter_quota(gateway.port, [("client-id", client)], "consumer_byte_rate", 4096.0) == 0
    assert describe_quotas(gateway.port, "client-id", client) == {"consumer_byte_rate": 4096.0}
    assert alter_quota(gateway.port, [("client-id", client)], "no_such_quota", 1.0) == 42, "INVALID_REQUEST"
    assert alter_quota(gateway.port, [("client-id", client)], "producer_byte_rate", -5.0) == 42
    assert alter_quota(gateway.port, [("ip", "1.2.3.4")], "producer_byte_rate", 5.0) == 42
    assert alter_quota(gateway.port, [("client-id", client)], "consumer_byte_rate", 0.0, remove=True) == 0
    assert describe_quotas(gateway.port, "client-id", client) == {}


def test_a_producer_and_a_consumer_are_held_to_their_rate(gateway):
    quota = 256 * 1024
    slow, fast = unique("slow"), unique("fast")
    assert alter_quota(gateway.port, [("client-id", slow)], "producer_byte_rate", float(quota)) == 0
    assert alter_quota(gateway.port, [("client-id", slow)], "consumer_byte_rate", float(quota)) == 0
    topic = unique("quota")
    create_topic(gateway.bootstrap, topic, 1)
    # the quota reaches the gateway's poll (1 s) before traffic starts
    time.sleep(1.5)
    fast_rate = produce_rate(gateway.bootstrap, topic, fast, 6 << 20)
    slow_rate = produce_rate(gateway.bootstrap, topic, slow, 2 << 20)
    print(f"produce: limited {slow_rate / 1024:.0f} KiB/s (quota {quota // 1024}), unlimited {fast_rate / 1024:.0f} KiB/s")
    assert slow_rate < 2 * quota, "the limited producer is held near its quota"
    assert fast_rate > 3 * slow_rate, "the unlimited producer is not slowed"

    def consume_rate(client_id, limit_bytes):
        c = Consumer({"bootstrap.servers": gateway.bootstrap, "group.id": unique("qg"), "client.id": client_id,
                      "enable.auto.commit": False, "max.partition.fetch.bytes": 65536})
        c.assign([TopicPartition(topic, 0, 0)])
        got, start = 0, time.monotonic()
        while got < limit_bytes and time.monotonic() - start < 60:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    got += len(m.value())
        c.close()
        return got / (time.monotonic() - start)

    fast_read = consume_rate(fast, 6 << 20)
    slow_read = consume_rate(slow, 2 << 20)
    print(f"fetch: limited {slow_read / 1024:.0f} KiB/s, unlimited {fast_read / 1024:.0f} KiB/s")
    assert slow_read < 2 * quota
    assert fast_read > 3 * slow_read
