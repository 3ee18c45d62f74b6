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
    import os
    if os.environ.get("TXN_DEBUG"):
        conf = {"debug": os.environ["TXN_DEBUG"], **conf}
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


def test_an_open_transaction_survives_a_gateway_kill(gateway):
    topic = create_topic(gateway.bootstrap, unique("kill"), partitions=1)
    p = txn_producer(gateway.bootstrap, unique("tid"))
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, f"t{i}".encode(), partition=0)
    p.flush(30)
    gateway.kill()
    gateway.start(keep_ports=True)
    # the new process rebuilt the open transaction from the log: nothing is stable yet
    assert read_all(gateway.bootstrap, topic, "read_committed", timeout=5) == []
    assert len(read_all(gateway.bootstrap, topic, "read_uncommitted", expect=5)) == 5
    # and the coordinator's state from the MetaStore: the producer commits where it was
    p.commit_transaction(60)
    assert read_all(gateway.bootstrap, topic, "read_committed", expect=5) == [f"t{i}".encode() for i in range(5)]


def eos_copy(procs_gateways, src, dst, group, total, kills, kill):
    """The Kafka system test's shape: a consume-transform-produce loop copies `total` records
    from `src` to `dst` in transactions that carry the input offsets, while `kill()` SIGKILLs
    and restarts a gateway `kills` times; on any error the transaction is aborted (or the
    producer recreated) and the consumer rewinds to the committed offsets."""
    bootstrap = procs_gateways
    tid = "eos-" + group

    def consumer():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        c.subscribe([src])
        return c

    # With its only broker gone, librdkafka (2.10+) decommissions it and bootstraps again
    # (KIP-899); its send_offsets_to_transaction then waits forever for the group coordinator
    # it had cached. A cluster of one broker restarting is that case: keep the broker instead.
    keep = {"metadata.recovery.strategy": "none"}
    c, p = consumer(), txn_producer(bootstrap, tid, **keep)
    copied, batches, kill_every = 0, 0, max(1, total // 200 // (kills + 1))
    deadline = time.monotonic() + 120 + total / 100 + 20 * kills
    try:
        while time.monotonic() < deadline:
            committed = c.committed([TopicPartition(src, q) for q in range(12)], 30)
            done = sum(max(tp.offset, 0) for tp in committed)
            if done >= total:
                return
            msgs = [m for m in c.consume(200, 2) if m.error() is None]
            if not msgs:
                continue
            try:
                p.begin_transaction()
                for m in msgs:
                    p.produce(dst, m.value(), key=m.key(), partition=m.partition())
                p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 60)
                if kills and batches % kill_every == kill_every - 1:
                    # inside the transaction: its records and offsets sent, its end not yet
                    kills -= 1
                    kill()
                p.commit_transaction(60)
                copied += len(msgs)
            except KafkaException as e:
                err = e.args[0]
                print(f"{time.monotonic():.1f} transaction failed: {err}", flush=True)
                if err.txn_requires_abort():
                    try:
                        p.abort_transaction(60)
                    except KafkaException:
                        p = txn_producer(bootstrap, tid, **keep)
                else:
                    p = txn_producer(bootstrap, tid, **keep)  # fatal (or unknown): a new incarnation fences the old
                # rewind to what the last committed transaction consumed
                c.close()
                c = consumer()
            batches += 1
        raise AssertionError("the copy did not finish in time")
    finally:
        c.close()


def test_exactly_once_copy_across_gateway_kills(gateway):
    import os
    total = int(os.environ.get("EOS_RECORDS", "20000"))
    kills = int(os.environ.get("EOS_KILLS", "3"))
    src = create_topic(gateway.bootstrap, unique("eos-src"), partitions=4)
    dst = create_topic(gateway.bootstrap, unique("eos-dst"), partitions=4)
    sent = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(total)]
    assert not produce_all(producer(gateway.bootstrap, **{"enable.idempotence": True}), src, sent).errors()

    def kill():
        gateway.kill()
        gateway.start(keep_ports=True)

    eos_copy(gateway.bootstrap, src, dst, unique("eos"), total, kills, kill)
    out = read_all(gateway.bootstrap, dst, "read_committed", partitions=4, timeout=120, expect=total)
    assert len(out) == total and sorted(out) == sorted(v for _, v, _ in sent), \
        f"{len(out)} records copied for {total}: {len(out) - len(set(out))} duplicated, {total - len(set(out))} lost"


def test_aiokafka_transactional_producer_and_read_committed_consumer(gateway):
    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    topic = create_topic(gateway.bootstrap, unique("aio-txn"), partitions=1)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=gateway.bootstrap, transactional_id=unique("aio"), enable_idempotence=True)
        await p.start()
        try:
            async with p.transaction():
                for i in range(5):
                    await p.send(topic, f"kept-{i}".encode(), partition=0)
            try:
                async with p.transaction():
                    await p.send_and_wait(topic, b"dropped", partition=0)
                    raise RuntimeError("abort this one")
            except RuntimeError:
                pass
            async with p.transaction():
                await p.send(topic, b"kept-last", partition=0)
        finally:
            await p.stop()
        got = {}
        for isolation in ("read_committed", "read_uncommitted"):
            c = AIOKafkaConsumer(topic, bootstrap_servers=gateway.bootstrap, isolation_level=isolation,
                                 auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
            await c.start()
            try:
                out = []
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and len(out) < (6 if isolation == "read_committed" else 7):
                    batch = await c.getmany(timeout_ms=500)
                    out += [m.value for msgs in batch.values() for m in msgs]
                got[isolation] = out
            finally:
                await c.stop()
        return got

    got = asyncio.run(asyncio.wait_for(run(), 120))
    assert got["read_committed"] == [f"kept-{i}".encode() for i in range(5)] + [b"kept-last"], got
    assert b"dropped" in got["read_uncommitted"]


def test_exactly_once_copy_on_a_cluster_of_three(procs):
    """The same copy on three gateways (etcd, moto_server): a transaction's partitions, its
    coordinator and its group's coordinator are on different gateways (markers go by
    WriteTxnMarkers), while the gateway leading most output partitions is SIGKILLed inside a
    transaction and restarted."""
    import os
    from conftest import require_servers
    from test_cluster import Gateways, wait_until
    from confluent_kafka.admin import AdminClient, NewTopic
    require_servers()
    c = Gateways(procs, quorum=False)
    for node in (1, 2, 3):
        c.start_gw(node)
    boot = c.bootstrap()
    admin = AdminClient({"bootstrap.servers": boot})
    src, dst = unique("eos-src"), unique("eos-dst")
    for t in (src, dst):
        admin.create_topics([NewTopic(t, 12, 1)])[t].result(30)

    def leaders(topic):
        md = admin.list_topics(topic, timeout=10)
        return {pid: p.leader for pid, p in md.topics[topic].partitions.items()}

    # (ownership is by rendezvous hashing of the names: every partition led, by at least two
    # gateways, so markers cross gateways whatever the names drew)
    wait_until(lambda: -1 not in leaders(dst).values() and len(set(leaders(dst).values())) >= 2, 60,
               "output partitions led by several gateways")
    total = int(os.environ.get("EOS_CLUSTER_RECORDS", "6000"))
    sent = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(total)]
    assert not produce_all(producer(boot, **{"enable.idempotence": True}), src, sent).errors()

    def kill():
        counts = {}
        for leader in leaders(dst).values():
            counts[leader] = counts.get(leader, 0) + 1
        victim = max(counts, key=counts.get)
        c.gws[victim].kill()
        time.sleep(1)
        c.start_gw(victim)

    eos_copy(boot, src, dst, unique("eos"), total, 2, kill)
    out = read_all(boot, dst, "read_committed", partitions=12, timeout=120, expect=total)
    assert len(out) == total and sorted(out) == sorted(v for _, v, _ in sent), \
        f"{len(out)} records copied for {total}: {len(out) - len(set(out))} duplicated, {total - len(set(out))} lost"


def test_kafka_python_transactional_producer_and_read_committed_consumer(gateway):
    from kafka import KafkaConsumer as KpConsumer, KafkaProducer as KpProducer, TopicPartition as KpTp
    topic = create_topic(gateway.bootstrap, unique("kp-txn"), partitions=1)
    p = KpProducer(bootstrap_servers=gateway.bootstrap, transactional_id=unique("kp"))
    p.init_transactions()
    p.begin_transaction()
    for i in range(3):
        p.send(topic, f"kept-{i}".encode(), partition=0)
    p.commit_transaction()
    p.begin_transaction()
    p.send(topic, b"dropped", partition=0)
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.send(topic, b"kept-last", partition=0)
    p.commit_transaction()
    p.close()
    got = {}
    for isolation in ("read_committed", "read_uncommitted"):
        c = KpConsumer(bootstrap_servers=gateway.bootstrap, isolation_level=isolation, enable_auto_commit=False)
        tp = KpTp(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline and len(out) < (4 if isolation == "read_committed" else 5):
            for recs in c.poll(timeout_ms=500).values():
                out += [r.value for r in recs]
        c.close()
        got[isolation] = out
    assert got["read_committed"] == [b"kept-0", b"kept-1", b"kept-2", b"kept-last"], got
    assert b"dropped" in got["read_uncommitted"]
