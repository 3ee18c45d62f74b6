"""kafka-python (a pure-Python client with its own protocol code) against the gateway.

KafkaProducer with acks=all, and with gzip compression; KafkaConsumer without a group
(assign + seek_to_beginning) reading everything back byte for byte at the offsets the producer's
futures reported; KafkaAdminClient creating (duplicate: TopicAlreadyExistsError), listing and
deleting topics.
"""
import random
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from helpers import create_topic, unique


def make_messages(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 11 == 4 else b"kp-%d" % i
        value = b"" if i % 13 == 2 else rng.randbytes(rng.randint(1, 500))
        headers = [] if i % 2 else [("idx", b"%d" % i), ("blob", rng.randbytes(7))]
        out.append((key, value, headers))
    return out


def produce(bootstrap, topic, messages, **conf):
    p = KafkaProducer(bootstrap_servers=bootstrap, **conf)
    try:
        futures = [p.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in messages]
        p.flush(timeout=60)
        return [f.get(timeout=60) for f in futures]
    finally:
        p.close(timeout=10)


def consume_all(bootstrap, topic, count, timeout=60.0):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="none", max_partition_fetch_bytes=1 << 20)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(records)
        for _ in range(3):  # anything beyond `count` would be a duplicate
            for records in c.poll(timeout_ms=200).values():
                got.extend(records)
        return got
    finally:
        c.close()


def check(records, metas, sent):
    assert len(records) == len(sent), f"consumed {len(records)}, sent {len(sent)}"
    assert [r.offset for r in records] == list(range(len(sent)))
    assert [(m.partition, m.offset) for m in metas] == [(0, i) for i in range(len(sent))]
    for r, (key, value, headers) in zip(records, sent):
        assert (r.key, r.value) == (key, value), f"offset {r.offset} differs"
        assert [(k, v) for k, v in r.headers] == headers, f"offset {r.offset}: headers {r.headers}"


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_produce_acks_all_and_consume(gateway, compression):
    topic = create_topic(gateway.bootstrap, unique(f"kp-{compression}"))
    sent = make_messages(400, seed=11 if compression else 12)
    metas = produce(gateway.bootstrap, topic, sent, acks="all", compression_type=compression, linger_ms=20)
    check(consume_all(gateway.bootstrap, topic, len(sent)), metas, sent)


def test_admin_create_list_delete(gateway):
    a = KafkaAdminClient(bootstrap_servers=gateway.bootstrap, request_timeout_ms=30000)
    try:
        t1, t2 = unique("kp-admin"), unique("kp-admin")
        resp = a.create_topics([NewTopic(t1, num_partitions=3, replication_factor=1, topic_configs={"retention.ms": "3600000"}),
                                NewTopic(t2, num_partitions=1, replication_factor=1)])
        created = {t["name"]: t for t in resp["topics"]}
        assert {n: (t["error_code"], t["num_partitions"]) for n, t in created.items()} == {t1: (0, 3), t2: (0, 1)}
        assert created[t1]["configs"]["retention.ms"]["value"] == "3600000"
        assert created[t2]["configs"]["retention.ms"]["value"] == "604800000"
        assert {t1, t2} <= set(a.list_topics())
        described = {t["name"]: t for t in a.describe_topics([t1, t2])}
        assert {n: [p["partition_index"] for p in t["partitions"]] for n, t in described.items()} == {t1: [0, 1, 2], t2: [0]}
        assert all(p["leader_id"] == 0 for t in described.values() for p in t["partitions"])
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic(t1, num_partitions=1, replication_factor=1)])

        # the new topic is usable by the other clients of this module
        sent = make_messages(5, seed=13)
        check(consume_all(gateway.bootstrap, t2, 0, timeout=1), [], [])
        metas = produce(gateway.bootstrap, t2, sent, acks="all")
        check(consume_all(gateway.bootstrap, t2, len(sent)), metas, sent)

        a.delete_topics([t1, t2])
        left = set(a.list_topics())
        assert t1 not in left and t2 not in left
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([t1])
    finally:
        a.close()
