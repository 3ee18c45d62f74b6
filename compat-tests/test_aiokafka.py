"""aiokafka (asyncio client) against the gateway: produce with acks=all (plain and gzip), then
consume without a group (assign + seek_to_beginning), byte for byte at the acknowledged offsets.
"""
import asyncio
import random

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from helpers import create_topic, unique


async def round_trip(bootstrap, topic, sent, compression):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=compression, linger_ms=10)
    await p.start()
    try:
        futures = [await p.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h in sent]
        metas = [await asyncio.wait_for(f, 60) for f in futures]
    finally:
        await p.stop()

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="none")
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got = []
        for _ in range(120):  # at most ~60 s
            batch = await c.getmany(tp, timeout_ms=500)
            got.extend(batch.get(tp, []))
            if len(got) >= len(sent):
                break
        got.extend((await c.getmany(tp, timeout_ms=300)).get(tp, []))  # duplicates would show here
        return metas, got
    finally:
        await c.stop()


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_aiokafka_produce_and_consume(gateway, compression):
    topic = create_topic(gateway.bootstrap, unique(f"aio-{compression}"))
    rng = random.Random(21)
    sent = [(None if i % 9 == 0 else b"ak%d" % i, rng.randbytes(rng.randint(0, 300)), [("i", b"%d" % i)]) for i in range(300)]
    metas, got = asyncio.run(asyncio.wait_for(round_trip(gateway.bootstrap, topic, sent, compression), 120))
    assert [(m.partition, m.offset) for m in metas] == [(0, i) for i in range(len(sent))]
    assert [r.offset for r in got] == list(range(len(sent)))
    for r, (k, v, h) in zip(got, sent):
        assert (r.key, r.value, list(r.headers)) == (k, v, h), f"offset {r.offset} differs"
