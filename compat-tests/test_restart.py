"""Durability across restarts of the gateway process.

SIGKILL while an idempotent acks=all producer is writing: after a restart on the same data dir
every acknowledged message is present exactly once, in order, at the offset of its delivery
report, the log has no holes, and the same producer carries on. SIGTERM and SIGKILL restarts
keep topics, partition counts, configs (in effect, not only displayed) and deletions.
"""
import random
import time

from confluent_kafka import KafkaError
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, ResourceType

import wire
from helpers import (admin, consume, create_topic, headers_of, produce_all, producer, unique, wait_futures,
                     watermarks)

PARTITIONS = 2
WAVE1 = 2000


def payload(i):
    return b"msg-%07d-" % i + random.Random(i).randbytes(64 + i % 200)


def describe(bootstrap, topic):
    a = admin(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in wait_futures(a.describe_configs([res]))[res].items()}


def test_sigkill_while_producing_loses_no_acknowledged_message(gateway):
    topic = create_topic(gateway.bootstrap, unique("crash"), partitions=PARTITIONS)
    p = producer(gateway.bootstrap, enable_idempotence=True, acks="all", linger_ms=5, message_timeout_ms=120000,
                 reconnect_backoff_ms=50, reconnect_backoff_max_ms=500)
    reports = {}  # index -> (error, partition, offset)

    def send(i):
        def cb(err, msg):
            reports[i] = (err, msg.partition(), msg.offset())
        for _ in range(1000):
            try:
                p.produce(topic, key=b"k%d" % i, value=payload(i), partition=i % PARTITIONS,
                          headers=[("i", b"%d" % i)], on_delivery=cb)
                return
            except BufferError:
                p.poll(0.05)
        raise AssertionError("local queue stayed full")

    # wave 1: fully acknowledged before the crash
    for i in range(WAVE1):
        send(i)
    assert p.flush(60) == 0
    assert len(reports) == WAVE1 and all(r[0] is None for r in reports.values()), "wave 1 not acknowledged"

    # wave 2: SIGKILL once a few hundred more are acknowledged, with more in flight
    i = WAVE1
    deadline = time.monotonic() + 60
    while sum(1 for k in reports if k >= WAVE1) < 300:
        assert time.monotonic() < deadline and i < WAVE1 + 200_000, "wave 2 made no progress"
        for _ in range(50):
            send(i)
            i += 1
        p.poll(0.005)
    for _ in range(500):  # a burst on its way (or queued) when the process dies
        send(i)
        i += 1
    time.sleep(0.01)
    gateway.kill()
    sent_at_kill, acked_at_kill = i, len(reports)  # callbacks only run in poll(): none since the burst
    for _ in range(500):  # queued while the gateway is down
        send(i)
        i += 1
    total = i
    p.poll(0.5)
    gateway.restart()
    assert p.flush(150) == 0, "producer did not finish after the restart"
    # the same producer goes on after the restart
    send(total)
    total += 1
    assert p.flush(60) == 0
    assert len(reports) == total
    last_err = reports[total - 1][0]
    assert last_err is None, f"produce after the restart failed: {last_err}"

    acked = {k: r for k, r in reports.items() if r[0] is None}
    failed = {k: r[0] for k, r in reports.items() if r[0] is not None}
    print(f"sent {total}, acknowledged {len(acked)} ({acked_at_kill} before the crash, {sent_at_kill} sent by then), "
          f"failed {len(failed)}: {sorted({str(e) for e in failed.values()})[:3]}")

    for part in range(PARTITIONS):
        low, high = watermarks(gateway.bootstrap, topic, part)
        assert low == 0
        msgs = consume(gateway.bootstrap, topic, part, high, settle=1.0)
        assert [m.offset() for m in msgs] == list(range(high)), f"partition {part}: offsets not dense 0..{high - 1}"
        indices = []
        for m in msgs:
            idx = int(m.key()[1:])
            assert m.value() == payload(idx) and headers_of(m) == [("i", b"%d" % idx)], f"offset {m.offset()} corrupt"
            assert idx % PARTITIONS == part
            indices.append(idx)
        assert indices == sorted(set(indices)), f"partition {part}: duplicates or reordering in the log"
        stored_at = {idx: m.offset() for idx, m in zip(indices, msgs)}
        mine = sorted(k for k in acked if k % PARTITIONS == part)
        missing = [k for k in mine if k not in stored_at]
        assert not missing, f"partition {part}: {len(missing)} acknowledged messages lost, first {missing[:5]}"
        moved = [(k, acked[k][2], stored_at[k]) for k in mine if (acked[k][1], acked[k][2]) != (part, stored_at[k])]
        assert not moved, f"partition {part}: (index, reported, stored) differ: {moved[:5]}"


def test_idempotent_retries_are_deduplicated_across_restarts(gateway):
    """Raw idempotent batches (InitProducerId + Produce v3): a retried batch gets its original
    offset and is stored once, before and after a SIGKILL and a SIGTERM restart; a sequence gap
    gets OUT_OF_ORDER_SEQUENCE_NUMBER (45)."""
    topic = create_topic(gateway.bootstrap, unique("dedup"))
    with wire.Conn(gateway.port) as c:
        err, pid, epoch = wire.parse_init_producer_id_v0(c.call(wire.INIT_PRODUCER_ID, 0, wire.init_producer_id_v0()))
    assert err == 0 and pid >= 0 and epoch >= 0

    def produce(seq, n):
        records = [(b"s%d" % (seq + j), b"value-%d" % (seq + j), []) for j in range(n)]
        batch = wire.record_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
        with wire.Conn(gateway.port) as c:
            resp = c.call(wire.PRODUCE, 3, wire.produce_v3(topic, 0, batch))
        return wire.parse_produce_v3(resp)[(topic, 0)]

    assert produce(0, 3) == (0, 0)
    assert produce(3, 2) == (0, 3)
    assert produce(3, 2) == (0, 3), "retry of the last batch"
    assert produce(0, 3) == (0, 0), "retry of an earlier batch"
    gateway.kill()
    gateway.restart()
    assert produce(3, 2) == (0, 3), "retry after a crash"
    assert produce(0, 3) == (0, 0), "retry of an earlier batch after a crash"
    assert produce(5, 1) == (0, 5)
    assert produce(9, 1)[0] == 45, "a sequence gap was accepted"
    assert gateway.stop() == 0
    gateway.restart()
    assert produce(5, 1) == (0, 5), "retry after a graceful restart"
    assert produce(6, 1) == (0, 6)

    batches = wire.fetch_all_batches(gateway.port, topic, 0)
    assert [(b["base_offset"], b["count"], b["base_sequence"], b["producer_id"]) for b in batches] == \
        [(0, 3, 0, pid), (3, 2, 3, pid), (5, 1, 5, pid), (6, 1, 6, pid)]
    values = [r[2] for b in batches for r in wire.parse_records(b["records_blob"], b["count"])]
    assert values == [b"value-%d" % i for i in range(7)]


def test_sigterm_restart_keeps_topics_configs_and_data(gateway):
    bs = gateway.bootstrap
    topic = create_topic(bs, unique("term"), partitions=3, config={"retention.ms": "7200000", "max.message.bytes": "500000"})
    gone = create_topic(bs, unique("term-gone"))
    a = admin(bs)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET)])
    assert list(wait_futures(a.incremental_alter_configs([res])).values()) == [None]
    assert wait_futures(a.delete_topics([gone], operation_timeout=30))[gone] is None
    sent = [(b"k%d" % i, random.Random(i).randbytes(100), []) for i in range(100)]
    d = produce_all(producer(bs, acks="all"), topic, sent, partition=1)
    assert not d.errors()
    before = describe(bs, topic)
    del a

    assert gateway.stop() == 0, f"SIGTERM exit code non-zero\n{gateway.log_tail()}"
    gateway.restart()

    md = admin(bs).list_topics(timeout=10)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]
    assert gone not in md.topics, "a deleted topic came back"
    after = describe(bs, topic)
    assert after == before
    assert (after["retention.ms"], after["max.message.bytes"], after["segment.ms"]) == ("7200000", "500000", "600000")
    msgs = consume(bs, topic, 1, 100)
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == [(i, k, v) for i, (k, v, _) in enumerate(sent)]
    p = producer(bs, acks="all", message_send_max_retries=0)
    d = produce_all(p, topic, [(b"next", b"v", [])], partition=1)
    assert d.reports[0] == (None, 1, 100)
    # max.message.bytes is still enforced, not only displayed
    d = produce_all(p, topic, [(b"big", random.Random(5).randbytes(600_000), [])], partition=1)
    err = d.reports[0][0]
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err


def test_sigkill_right_after_admin_changes_keeps_them(gateway):
    bs = gateway.bootstrap
    topic = create_topic(bs, unique("killadm"), config={"retention.bytes": "123456789"})
    a = admin(bs)
    assert wait_futures(a.create_partitions([NewPartitions(topic, 5)]))[topic] is None
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
    assert list(wait_futures(a.incremental_alter_configs([res])).values()) == [None]
    d = produce_all(producer(bs, acks="all"), topic, [(b"k", b"v%d" % i, []) for i in range(10)], partition=4)
    assert not d.errors()
    del a
    gateway.kill()
    gateway.restart()
    assert sorted(admin(bs).list_topics(timeout=10).topics[topic].partitions) == [0, 1, 2, 3, 4]
    cfg = describe(bs, topic)
    assert (cfg["retention.bytes"], cfg["retention.ms"]) == ("123456789", "86400000")
    assert watermarks(bs, topic, 4) == (0, 10)
    assert [m.value() for m in consume(bs, topic, 4, 10)] == [b"v%d" % i for i in range(10)]
