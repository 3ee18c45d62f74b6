"""Compacted topics (cleanup.policy=compact) through real clients: librdkafka producers write
keyed records (compressed, in many small segments), the gateway's compactor keeps the latest
record per key at its own offset, and librdkafka (confluent-kafka), kafka-python and kcat read
the compacted batches (offset gaps, batches with fewer records than offsets) back. A tombstone
stays until delete.retention.ms after its segment was first compacted, then goes; a consumer
that starts inside a gap gets the next record; the topic's settings come from CreateTopics and
AlterConfigs as Kafka's.
"""
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kafka import KafkaConsumer, TopicPartition as KpTopicPartition

from helpers import admin, consumer, create_topic, produce_all, producer, unique, wait_futures, watermarks

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
KEYS = 25


@pytest.fixture()
def compacting_gateway(procs, tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("compaction_check_interval_ms = 300\n")
    return procs.gateway("--config", str(cfg))


def metric(gw, name):
    with urllib.request.urlopen(gw.metrics_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if re.match(rf"{name}(\{{| )", l))


def wait_for(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def write_table(bootstrap, topic, rounds, codec, gone=True, filler=100):
    """`rounds` writes of every key k0..k24 (value 'k{i}@{round}'), with key 'gone' written
    first and deleted by a tombstone after; then `filler` records of unique keys, so that every
    overwritten key lies in sealed segments. Each round is flushed on its own (segments roll
    between the WAL's blocks: one burst would be one block). Returns {offset: (key, value)}
    from the delivery reports."""
    p = producer(bootstrap, **{"compression.type": codec, "linger.ms": 5, "batch.num.messages": 20})
    rounds = [[(f"k{i}".encode(), f"k{i}@{r}".encode(), None) for i in range(KEYS)] for r in range(rounds)]
    if gone:
        rounds = [[(b"gone", b"soon deleted", None)]] + rounds + [[(b"gone", None, None)]]
    rounds += [[(unique("f").encode(), b"filler", None) for _ in range(filler // 4)] for _ in range(4)]
    written = {}
    for msgs in rounds:
        d = produce_all(p, topic, msgs)
        assert not d.errors(), d.errors()
        written.update({d.reports[i][2]: (m[0], m[1]) for i, m in enumerate(msgs)})
    return written


def latest(written):
    last = {}
    for off in sorted(written):
        last[written[off][0]] = off
    return last


def read_confluent(bootstrap, topic, start=0):
    """Every record from `start` to the high watermark (the last offset is never compacted away:
    it is in the active segment)."""
    _, hi = watermarks(bootstrap, topic, 0)
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, start)])
        out = {}
        deadline = time.monotonic() + 30
        while hi - 1 not in out and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, f"consumer error: {m.error()}"
                out[m.offset()] = (m.key(), m.value())
        assert hi - 1 in out, f"the last record ({hi - 1}) was not read"
        return out
    finally:
        c.close()


def read_kafka_python(bootstrap, topic, hi):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    tp = KpTopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recs = c.poll(timeout_ms=500)
        for rs in recs.values():
            for m in rs:
                out[m.offset] = (m.key, m.value)
        if c.position(tp) >= hi:
            break
    c.close()
    return out


def compacted(written, read):
    """Whether `read` is `written` compacted: only records written, at their offsets; every
    key's latest record (tombstones aside); one record per overwritten key."""
    if any(written.get(off) != rec for off, rec in read.items()):
        raise AssertionError(f"a record read is not the one written at its offset: {sorted(set(read.items()) - set(written.items()))[:5]}")
    last = latest(written)
    if any(off not in read for off in last.values() if written[off][1] is not None):
        raise AssertionError("the latest record of a key is missing")
    keys = [rec[0] for rec in read.values() if rec[0].startswith(b"k")]
    return len(keys) == len(set(keys))


def compacted_table(gw, segment_bytes, delete_retention_ms, rounds, codec):
    """A compacted topic written by write_table, once the compactor has left one record per key."""
    topic = unique("table")
    create_topic(gw.bootstrap, topic, 1, {"cleanup.policy": "compact", "segment.bytes": str(segment_bytes),
                                          "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": str(delete_retention_ms)})
    written = write_table(gw.bootstrap, topic, rounds, codec)
    wait_for(lambda: compacted(written, read_confluent(gw.bootstrap, topic)), "one record per key")
    return topic, written


def test_compacted_topic_read_by_every_client(compacting_gateway):
    gw = compacting_gateway
    topic, written = compacted_table(gw, 2000, 600000, 20, "lz4")
    read = read_confluent(gw.bootstrap, topic)
    lo, hi = watermarks(gw.bootstrap, topic, 0)
    assert (lo, hi) == (0, len(written)), "offsets never move: the high watermark is the number of writes"
    assert metric(gw, "wal_compaction_records_removed_total") >= 19 * KEYS
    gone = sorted(o for o, rec in written.items() if rec[0] == b"gone")
    assert gone[0] not in read, "the value a tombstone deletes goes on the first pass"
    assert read.get(gone[1]) == (b"gone", None), "the tombstone stays (delete.retention.ms)"
    # kafka-python and kcat decode the same compacted batches
    assert read_kafka_python(gw.bootstrap, topic, hi) == read
    out = subprocess.run([KCAT, "-b", gw.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
                          "-f", "%o\n"], capture_output=True, timeout=60, check=True).stdout.decode()
    assert sorted(int(l) for l in out.split()) == sorted(read), "kcat reads the same records"
    # a consumer starting inside a gap gets the next record
    hole = next(o for o in range(1, hi) if o not in read)
    got = read_confluent(gw.bootstrap, topic, start=hole)
    assert min(got) == min(o for o in read if o > hole)
    # after a restart the compacted log reads the same, and an idempotent producer continues it
    gw.restart()
    assert read_confluent(gw.bootstrap, topic) == read
    d = produce_all(producer(gw.bootstrap, **{"enable.idempotence": True}), topic, [(b"k0", b"after restart", None)])
    assert not d.errors() and d.reports[0][2] == hi


def test_tombstones_go_after_delete_retention(compacting_gateway):
    gw = compacting_gateway
    topic, written = compacted_table(gw, 1500, 5000, 4, "none")
    tomb = max(o for o, rec in written.items() if rec[0] == b"gone")
    assert read_confluent(gw.bootstrap, topic).get(tomb) == (b"gone", None), "kept within delete.retention.ms"
    # with no new data, a pass past the horizon removes it
    wait_for(lambda: tomb not in read_confluent(gw.bootstrap, topic), "the tombstone's delete horizon", timeout=40)
    read = read_confluent(gw.bootstrap, topic)
    assert compacted(written, read) and all(rec[1] is not None for rec in read.values())


def test_compaction_settings_are_topic_configs(compacting_gateway):
    gw = compacting_gateway
    topic = unique("lazy")
    create_topic(gw.bootstrap, topic, 1, {"cleanup.policy": "compact", "segment.bytes": "1500",
                                          "min.compaction.lag.ms": "3600000", "min.cleanable.dirty.ratio": "0.01"})
    written = write_table(gw.bootstrap, topic, 8, "gzip", gone=False)
    time.sleep(2)  # several compactor rounds
    assert read_confluent(gw.bootstrap, topic) == written, "records younger than min.compaction.lag.ms stay"
    # AlterConfigs lifts the lag: the next rounds compact
    a = admin(gw.bootstrap)
    lift = ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)
    wait_futures(a.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[lift])]))
    wait_for(lambda: compacted(written, read_confluent(gw.bootstrap, topic)), "compaction after AlterConfigs")


def test_aborted_transactions_never_win_and_go(compacting_gateway):
    """A transaction that wrote a key and aborted: compaction keeps the key's committed value
    (the aborted record is not the latest), and the aborted record goes; the marker stays."""
    from confluent_kafka import Producer
    gw = compacting_gateway
    topic = unique("txtable")
    create_topic(gw.bootstrap, topic, 1, {"cleanup.policy": "compact", "segment.bytes": "1500",
                                          "min.cleanable.dirty.ratio": "0.01"})
    p = Producer({"bootstrap.servers": gw.bootstrap, "transactional.id": unique("tt"), "linger.ms": 5})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, key=b"solo", value=b"committed", partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    # The aborted record's offset comes from its delivery report: reading it back would race
    # the compactor, which may remove it while the table below is written.
    reports = []
    p.produce(topic, key=b"solo", value=b"aborted", partition=0,
              on_delivery=lambda err, m: reports.append((err, m.offset())))
    p.flush(30)
    p.abort_transaction(30)
    assert len(reports) == 1 and reports[0][0] is None, reports
    aborted_off = reports[0][1]
    assert aborted_off > 0
    written = write_table(gw.bootstrap, topic, 3, "none", gone=False)
    written[0] = (b"solo", b"committed")  # its latest committed write: compaction keeps it
    wait_for(lambda: compacted(written, read_confluent(gw.bootstrap, topic)), "one record per key")
    # the aborted record is gone even for read_uncommitted readers
    c = consumer(gw.bootstrap, **{"isolation.level": "read_uncommitted"})
    c.assign([TopicPartition(topic, 0, 0)])
    seen, deadline = [], time.monotonic() + 10
    _, hi = watermarks(gw.bootstrap, topic, 0)
    while time.monotonic() < deadline and not any(o == hi - 1 for o in seen):
        seen += [m.offset() for m in c.consume(500, 0.5) if m.error() is None]
    c.close()
    assert aborted_off not in seen, "the aborted record was removed by compaction"
