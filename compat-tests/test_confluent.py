"""confluent-kafka (librdkafka) against the gateway.

Produce with acks 0/1/all, every compression codec and the idempotent producer; consume with
assign() and compare every message byte for byte (key, value, headers) with what was sent, the
offsets dense and in order and equal to the delivery reports. The stored batches are also read
raw (Fetch v4) to check that they are kept as the producer sent them: codec bits, a valid CRC32C,
producer id and contiguous sequences. AdminClient: create (configs, validate_only, duplicate,
invalid), list, describe and alter configs (legacy and incremental), create partitions, delete
topics, delete records, list offsets, describe cluster. Size limits: max.message.bytes.
"""
import random
import time

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewPartitions,
                                   NewTopic, OffsetSpec, ResourceType)

import wire
from helpers import (admin, consume, consumer, create_topic, headers_of, is_error, produce_all, producer, unique,
                     wait_futures, watermarks)

CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
DEFAULTS = {
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "max.message.bytes": "1048588",
    "cleanup.policy": "delete",
    "message.timestamp.type": "CreateTime",
    "compression.type": "producer",
    "min.insync.replicas": "1",
}


def make_messages(n, seed, compressible=False):
    """Distinct messages with null/empty keys and values and headers (some with null values)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 17 == 5 else b"key-%d-" % i + rng.randbytes(rng.randint(0, 8))
        if i % 19 == 3:
            value = b""
        elif i % 23 == 7:
            value = None
        elif compressible:
            value = (b"message %d of a compressible stream; " % i) * rng.randint(5, 30)
        else:
            value = b"value-%d-" % i + rng.randbytes(rng.randint(0, 400))
        if i % 3 == 0:
            headers = []
        else:
            headers = [("h1", rng.randbytes(rng.randint(0, 10))), ("index", str(i).encode()), ("nil", None)]
        out.append((key, value, headers))
    return out


def assert_same_messages(consumed, sent, partition=0, first_offset=0):
    assert len(consumed) == len(sent), f"consumed {len(consumed)} messages, sent {len(sent)}"
    for j, (m, (key, value, headers)) in enumerate(zip(consumed, sent)):
        assert m.partition() == partition
        assert m.offset() == first_offset + j, f"message {j}: offset {m.offset()}, expected {first_offset + j}"
        assert m.key() == key, f"offset {m.offset()}: key {m.key()!r} != {key!r}"
        assert m.value() == value, f"offset {m.offset()}: value differs ({len(m.value() or b'')} vs {len(value or b'')} bytes)"
        assert headers_of(m) == headers, f"offset {m.offset()}: headers {headers_of(m)!r} != {headers!r}"


def assert_reports_match(deliveries, consumed, partition=0):
    assert not deliveries.errors(), f"delivery errors: {deliveries.errors()}"
    for i, m in enumerate(consumed):
        err, p, off = deliveries.reports[i]
        assert (p, off) == (partition, m.offset()), f"message {i}: delivered at {p}/{off}, stored at {partition}/{m.offset()}"


# ---------------------------------------------------------------- produce / consume


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_and_consume_with_acks(gateway, acks):
    topic = create_topic(gateway.bootstrap, unique(f"acks{acks}"))
    sent = make_messages(500, seed=int(acks == "all") * 2 + int(acks == "1"))
    d = produce_all(producer(gateway.bootstrap, acks=acks), topic, sent)
    got = consume(gateway.bootstrap, topic, 0, len(sent))
    assert_same_messages(got, sent)
    if acks == "0":
        # no response, so librdkafka reports success without an offset
        assert not d.errors(), d.errors()
        assert all(off is None or off < 0 for _, _, off in d.reports.values())
    else:
        assert_reports_match(d, got)
    assert watermarks(gateway.bootstrap, topic, 0) == (0, len(sent))


@pytest.mark.parametrize("codec", sorted(CODEC_IDS))
def test_compression_codec_round_trip_and_stored_as_sent(gateway, codec):
    topic = create_topic(gateway.bootstrap, unique(codec))
    sent = make_messages(400, seed=CODEC_IDS[codec], compressible=True)
    p = producer(gateway.bootstrap, acks="all", linger_ms=50, batch_num_messages=100, **{"compression.type": codec})
    d = produce_all(p, topic, sent)
    got = consume(gateway.bootstrap, topic, 0, len(sent))
    assert_same_messages(got, sent)
    assert_reports_match(d, got)

    batches = wire.fetch_all_batches(gateway.port, topic, 0)
    assert sum(b["count"] for b in batches) == len(sent)
    expected_next = 0
    for b in batches:
        assert b["magic"] == 2
        assert b["crc_ok"], f"batch at {b['base_offset']}: CRC32C does not match its contents"
        assert b["attributes"] & 0x7 == CODEC_IDS[codec], f"batch at {b['base_offset']}: attributes {b['attributes']:#x}"
        assert b["base_offset"] == expected_next, "batches are not contiguous"
        assert b["last_offset_delta"] == b["count"] - 1
        expected_next = b["base_offset"] + b["count"]
    assert any(b["count"] > 1 for b in batches), "the producer never batched: the codec test would be vacuous"
    raw_sizes = sum(len(v or b"") for _, v, _ in sent)
    assert sum(b["length"] for b in batches) < raw_sizes, "stored batches are not smaller than the raw values"
    # a consumer positioned inside a compressed batch starts exactly there
    assert_same_messages(consume(gateway.bootstrap, topic, 0, len(sent) - 123, start=123), sent[123:], first_offset=123)


def test_idempotent_producer_three_partitions(gateway):
    topic = create_topic(gateway.bootstrap, unique("idem"), partitions=3)
    p = producer(gateway.bootstrap, enable_idempotence=True, acks="all", linger_ms=2, batch_num_messages=50,
                 max_in_flight_requests_per_connection=5)
    per_partition = {q: make_messages(600, seed=100 + q) for q in range(3)}
    deliveries = {}
    for q in range(3):
        deliveries[q] = produce_all(p, topic, per_partition[q], partition=q)
    for q in range(3):
        got = consume(gateway.bootstrap, topic, q, len(per_partition[q]))
        assert_same_messages(got, per_partition[q], partition=q)
        assert_reports_match(deliveries[q], got, partition=q)
        batches = wire.fetch_all_batches(gateway.port, topic, q)
        pids = {b["producer_id"] for b in batches}
        assert len(pids) == 1 and min(pids) >= 0, f"producer ids {pids}"
        assert all(b["producer_epoch"] >= 0 and b["crc_ok"] for b in batches)
        seq = 0
        for b in batches:
            assert b["base_sequence"] == seq, f"partition {q}: batch at {b['base_offset']} has sequence {b['base_sequence']}, expected {seq}"
            seq += b["count"]
        assert seq == len(per_partition[q])


def test_auto_created_topic_gets_default_partitions(gateway_factory):
    gw = gateway_factory("--default-partitions", "3")
    topic = unique("auto")
    d = produce_all(producer(gw.bootstrap, acks="all"), topic, [(b"k", b"v", [])])
    assert not d.errors()
    md = admin(gw.bootstrap).list_topics(timeout=10)
    assert topic in md.topics and len(md.topics[topic].partitions) == 3


def test_auto_create_disabled(gateway_factory):
    gw = gateway_factory("--auto-create-topics", "false")
    topic = unique("noauto")
    p = producer(gw.bootstrap, acks="all", message_timeout_ms=3000)
    d = produce_all(p, topic, [(b"k", b"v", [])], flush_timeout=20)
    err = d.reports[0][0]
    assert err is not None and err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._MSG_TIMED_OUT), err
    assert topic not in admin(gw.bootstrap).list_topics(timeout=10).topics


# ---------------------------------------------------------------- admin: topics and configs


def describe(bootstrap, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = admin(bootstrap)
    return wait_futures(a.describe_configs([res], request_timeout=30))[res]


def test_create_topic_with_configs_list_and_describe(gateway):
    topic = unique("cfg")
    configs = {"retention.ms": "3600000", "max.message.bytes": "2000000", "segment.bytes": "10485760"}
    create_topic(gateway.bootstrap, topic, partitions=3, config=configs)

    md = admin(gateway.bootstrap).list_topics(timeout=10)
    assert [b.id for b in md.brokers.values()] == [0]
    assert (md.brokers[0].host, md.brokers[0].port) == ("127.0.0.1", gateway.port)
    t = md.topics[topic]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    for part in t.partitions.values():
        assert (part.leader, part.replicas, part.isrs) == (0, [0], [0])

    entries = describe(gateway.bootstrap, topic)
    for name, value in configs.items():
        assert entries[name].value == value
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert not entries[name].is_default
    for name, value in DEFAULTS.items():
        if name not in configs:
            assert entries[name].value == value, f"{name}={entries[name].value}"
            assert entries[name].source == ConfigSource.DEFAULT_CONFIG.value
            assert entries[name].is_default


def test_create_topics_validate_only(gateway):
    a = admin(gateway.bootstrap)
    topic = unique("validate")
    res = wait_futures(a.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "1000"})], validate_only=True))
    assert res[topic] is None
    assert topic not in a.list_topics(timeout=10).topics, "validate_only created the topic"
    res = wait_futures(a.create_topics([NewTopic(topic, 2, 1, config={"no.such.config": "1"})], validate_only=True))
    assert is_error(res[topic], KafkaError.INVALID_CONFIG), res[topic]
    create_topic(gateway.bootstrap, topic, partitions=2)
    assert len(a.list_topics(timeout=10).topics[topic].partitions) == 2


def test_create_duplicate_topic_fails(gateway):
    topic = create_topic(gateway.bootstrap, unique("dup"))
    a = admin(gateway.bootstrap)
    res = wait_futures(a.create_topics([NewTopic(topic, 1, 1)]))
    assert is_error(res[topic], KafkaError.TOPIC_ALREADY_EXISTS), res[topic]
    res = wait_futures(a.create_topics([NewTopic(topic, 1, 1)], validate_only=True))
    assert is_error(res[topic], KafkaError.TOPIC_ALREADY_EXISTS), res[topic]


@pytest.mark.parametrize("config", [
    {"no.such.config": "1"},
    {"retention.ms": "not-a-number"},
    {"retention.ms": "-2"},
    {"cleanup.policy": "lru"},
    {"cleanup.policy": "compact,nope"},
    {"message.timestamp.type": "WallClockTime"},
    {"message.timestamp.type": "logappendtime"},
    {"compression.type": "brotli"},
    {"min.cleanable.dirty.ratio": "1.5"},
    {"max.message.bytes": "3000000000"},
    {"preallocate": "yes"},
])
def test_create_topic_with_invalid_config_fails(gateway, config):
    a = admin(gateway.bootstrap)
    topic = unique("badcfg")
    res = wait_futures(a.create_topics([NewTopic(topic, 1, 1, config=config)]))
    assert is_error(res[topic], KafkaError.INVALID_CONFIG), res[topic]
    assert topic not in a.list_topics(timeout=10).topics


def test_create_topic_invalid_partitions_and_name(gateway):
    a = admin(gateway.bootstrap)
    res = wait_futures(a.create_topics([NewTopic(unique("zero"), 0, 1)]))
    assert all(is_error(v, KafkaError.INVALID_PARTITIONS) for v in res.values()), res
    res = wait_futures(a.create_topics([NewTopic("bad/name", 1, 1)]))
    assert is_error(res["bad/name"], KafkaError.TOPIC_EXCEPTION), res


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_alter_configs_replaces_the_whole_set(gateway):
    topic = create_topic(gateway.bootstrap, unique("alter"), config={"max.message.bytes": "2000000"})
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "1234567"})
    a = admin(gateway.bootstrap)
    out = wait_futures(a.alter_configs([res]))
    assert list(out.values()) == [None], out
    entries = describe(gateway.bootstrap, topic)
    assert entries["retention.ms"].value == "1234567"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # AlterConfigs sets the full config: what is not given reverts to its default
    assert entries["max.message.bytes"].value == DEFAULTS["max.message.bytes"]
    assert entries["max.message.bytes"].is_default


def test_incremental_alter_configs_set_and_delete(gateway):
    topic = create_topic(gateway.bootstrap, unique("incr"), config={"max.message.bytes": "2000000"})
    a = admin(gateway.bootstrap)

    def incr(*entries):
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
        return list(wait_futures(a.incremental_alter_configs([res])).values())[0]

    assert incr(ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)) is None
    entries = describe(gateway.bootstrap, topic)
    assert entries["retention.ms"].value == "7200000"
    assert entries["max.message.bytes"].value == "2000000", "incremental SET must keep the other configs"

    assert incr(ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)) is None
    entries = describe(gateway.bootstrap, topic)
    assert entries["retention.bytes"].value == "1048576"
    assert entries["retention.ms"].value == DEFAULTS["retention.ms"] and entries["retention.ms"].is_default
    assert entries["max.message.bytes"].value == "2000000"


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_alter_configs_rejects_invalid_configs(gateway):
    topic = create_topic(gateway.bootstrap, unique("alterbad"), config={"retention.ms": "5000000"})
    a = admin(gateway.bootstrap)
    cases = [
        ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)]),
        ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", "-7", incremental_operation=AlterConfigOpType.SET)]),
    ]
    for res in cases:
        out = list(wait_futures(a.incremental_alter_configs([res])).values())[0]
        assert is_error(out, KafkaError.INVALID_CONFIG), out
    legacy = ConfigResource(ResourceType.TOPIC, topic, set_config={"no.such.config": "1"})
    out = list(wait_futures(a.alter_configs([legacy])).values())[0]
    assert is_error(out, KafkaError.INVALID_CONFIG), out
    assert describe(gateway.bootstrap, topic)["retention.ms"].value == "5000000", "a rejected change was applied"
    missing = ConfigResource(ResourceType.TOPIC, unique("missing"))
    out = wait_futures(a.describe_configs([missing]))[missing]
    assert is_error(out, KafkaError.UNKNOWN_TOPIC_OR_PART), out


def test_create_partitions_grows_only(gateway):
    topic = create_topic(gateway.bootstrap, unique("grow"), partitions=1)
    a = admin(gateway.bootstrap)
    assert wait_futures(a.create_partitions([NewPartitions(topic, 4)]))[topic] is None
    # served when the call returns: an immediate ListOffsets of the new partitions (KafkaJS's
    # fetchTopicOffsets does this) is answered, not NOT_LEADER_OR_FOLLOWER
    for spec in (OffsetSpec.latest(), OffsetSpec.earliest()):
        got = wait_futures(a.list_offsets({TopicPartition(topic, i): spec for i in (1, 2, 3)}, request_timeout=30))
        assert all(not isinstance(r, KafkaError) and r.offset == 0 for r in got.values()), got
    assert sorted(a.list_topics(timeout=10).topics[topic].partitions) == [0, 1, 2, 3]
    for count in (2, 4):
        out = wait_futures(a.create_partitions([NewPartitions(topic, count)]))[topic]
        assert is_error(out, KafkaError.INVALID_PARTITIONS), (count, out)
    out = wait_futures(a.create_partitions([NewPartitions(unique("nope"), 3)]))
    assert all(is_error(v, KafkaError.UNKNOWN_TOPIC_OR_PART) for v in out.values()), out
    # the new partition works end to end
    sent = make_messages(20, seed=4)
    d = produce_all(producer(gateway.bootstrap, acks="all"), topic, sent, partition=3)
    got = consume(gateway.bootstrap, topic, 3, len(sent))
    assert_same_messages(got, sent, partition=3)
    assert_reports_match(d, got, partition=3)


def test_delete_topics(gateway):
    topic = create_topic(gateway.bootstrap, unique("del"))
    p = producer(gateway.bootstrap, acks="all")
    produce_all(p, topic, make_messages(10, seed=5))
    del p
    a = admin(gateway.bootstrap)
    assert wait_futures(a.delete_topics([topic], operation_timeout=30))[topic] is None
    assert topic not in a.list_topics(timeout=10).topics
    out = wait_futures(a.delete_topics([topic], operation_timeout=30))[topic]
    assert is_error(out, KafkaError.UNKNOWN_TOPIC_OR_PART), out
    res = ConfigResource(ResourceType.TOPIC, topic)
    assert is_error(wait_futures(a.describe_configs([res]))[res], KafkaError.UNKNOWN_TOPIC_OR_PART)
    # a topic created again under the same name starts empty
    create_topic(gateway.bootstrap, topic)
    assert watermarks(gateway.bootstrap, topic, 0) == (0, 0)
    sent = make_messages(3, seed=6)
    produce_all(producer(gateway.bootstrap, acks="all"), topic, sent)
    assert_same_messages(consume(gateway.bootstrap, topic, 0, 3), sent)


def test_describe_cluster(gateway):
    a = admin(gateway.bootstrap)
    desc = a.describe_cluster(request_timeout=30).result(timeout=30)
    assert desc.cluster_id
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, "127.0.0.1", gateway.port)]
    assert desc.controller is not None and desc.controller.id == 0


# ---------------------------------------------------------------- records and offsets


def test_delete_records_moves_the_low_watermark(gateway):
    topic = create_topic(gateway.bootstrap, unique("delrec"))
    sent = make_messages(100, seed=7)
    produce_all(producer(gateway.bootstrap, acks="all", linger_ms=0), topic, sent)
    a = admin(gateway.bootstrap)
    out = wait_futures(a.delete_records([TopicPartition(topic, 0, 40)], request_timeout=30))
    (result,) = out.values()
    assert not isinstance(result, KafkaError), result
    assert result.low_watermark == 40
    assert watermarks(gateway.bootstrap, topic, 0) == (40, 100)
    earliest = wait_futures(a.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()}))
    assert [r.offset for r in earliest.values()] == [40]

    got = consume(gateway.bootstrap, topic, 0, 60)
    assert_same_messages(got, sent[40:], first_offset=40)
    # below the log start: OFFSET_OUT_OF_RANGE (1), not data
    with wire.Conn(gateway.port) as c:
        err, hw, records = wire.parse_fetch_v4(c.call(wire.FETCH, 4, wire.fetch_v4(topic, 0, 10)))[(topic, 0)]
    assert (err, records) == (1, b"")
    # beyond the high watermark: OFFSET_OUT_OF_RANGE; OFFSET_END: up to the high watermark
    out = wait_futures(a.delete_records([TopicPartition(topic, 0, 101)]))
    assert is_error(list(out.values())[0], KafkaError.OFFSET_OUT_OF_RANGE), out
    out = wait_futures(a.delete_records([TopicPartition(topic, 0, OFFSET_END)]))
    assert list(out.values())[0].low_watermark == 100
    assert watermarks(gateway.bootstrap, topic, 0) == (100, 100)


def test_list_offsets_earliest_latest_max_and_by_timestamp(gateway):
    topic = create_topic(gateway.bootstrap, unique("offsets"))
    base = int(time.time() * 1000) - 3_600_000
    stamps = [base + i * 1000 for i in range(10)]
    stamps[6] = base + 100_000  # the maximum sits in the middle
    p = producer(gateway.bootstrap, acks="all", linger_ms=0)
    for i, ts in enumerate(stamps):  # one message per batch: lookups are then exact
        p.produce(topic, value=b"m%d" % i, partition=0, timestamp=ts)
        assert p.flush(30) == 0
    tp = TopicPartition(topic, 0)
    a = admin(gateway.bootstrap)

    def lookup(spec):
        (r,) = wait_futures(a.list_offsets({tp: spec}, request_timeout=30)).values()
        assert not isinstance(r, KafkaError), r
        return r.offset, r.timestamp

    assert lookup(OffsetSpec.earliest())[0] == 0
    assert lookup(OffsetSpec.latest())[0] == 10
    assert lookup(OffsetSpec.max_timestamp()) == (6, base + 100_000)
    assert lookup(OffsetSpec.for_timestamp(base - 5))[0] == 0
    assert lookup(OffsetSpec.for_timestamp(base + 3500)) == (4, base + 4000)
    assert lookup(OffsetSpec.for_timestamp(base + 6500))[0] == 6
    assert lookup(OffsetSpec.for_timestamp(base + 100_001))[0] == -1

    c = consumer(gateway.bootstrap)
    try:
        found = c.offsets_for_times([TopicPartition(topic, 0, base + 3500)], timeout=10)
        assert [x.offset for x in found] == [4]
        found = c.offsets_for_times([TopicPartition(topic, 0, base + 200_000)], timeout=10)
        assert [x.offset for x in found] == [-1]  # OFFSET_END: no such record
        assert c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 10)
    finally:
        c.close()
    got = consume(gateway.bootstrap, topic, 0, 10)
    assert [m.timestamp()[1] for m in got] == stamps


def test_large_message_near_max_message_bytes(gateway):
    topic = create_topic(gateway.bootstrap, unique("large"))
    value = random.Random(8).randbytes(900 * 1024)
    d = produce_all(producer(gateway.bootstrap, acks="all"), topic, [(b"big", value, [("h", b"x")])])
    assert not d.errors(), d.errors()
    got = consume(gateway.bootstrap, topic, 0, 1)
    assert len(got) == 1 and got[0].offset() == 0 and got[0].key() == b"big"
    assert got[0].value() == value


def test_message_above_topic_max_message_bytes_is_rejected(gateway):
    topic = create_topic(gateway.bootstrap, unique("toolarge"), config={"max.message.bytes": "102400"})
    p = producer(gateway.bootstrap, acks="all", message_send_max_retries=0)
    d = produce_all(p, topic, [(b"big", random.Random(9).randbytes(200 * 1024), [])])
    err = d.reports[0][0]
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert watermarks(gateway.bootstrap, topic, 0) == (0, 0), "the rejected message was stored"
    small = [(b"small", random.Random(10).randbytes(50 * 1024), [])]
    d = produce_all(p, topic, small)
    assert not d.errors() and d.reports[0][1:] == (0, 0)
    assert_same_messages(consume(gateway.bootstrap, topic, 0, 1), small)


def test_list_offsets_by_timestamp_with_batching(gateway):
    """With several records per batch a lookup answers the record itself, as Kafka does: the
    first one timestamped at or after the target (its own offset and timestamp), not the base
    offset of the batch holding it; timestamps that go back inside a batch are handled."""
    topic = create_topic(gateway.bootstrap, unique("offsets-batched"))
    base = int(time.time() * 1000) - 3_600_000
    stamps = [base + i * 10 for i in range(200)]
    stamps[57] = base + 5  # older than the records around it
    p = producer(gateway.bootstrap, acks="all", linger_ms=100, batch_num_messages=40)
    for i, ts in enumerate(stamps):
        p.produce(topic, value=b"m%d" % i, partition=0, timestamp=ts)
    assert p.flush(30) == 0
    batches = wire.fetch_all_batches(gateway.port, topic, 0)
    assert len(batches) > 1 and max(b["count"] for b in batches) > 1, "no multi-record batches to test with"
    assert all(b["count"] > 1 for b in batches if b["base_offset"] <= 56 <= b["base_offset"] + b["last_offset_delta"]), \
        "record 56 must sit inside a batch for the lookups to mean something"

    a = admin(gateway.bootstrap)
    tp = TopicPartition(topic, 0)
    c = consumer(gateway.bootstrap)
    try:
        for target, expected in [(base - 1, 0), (base + 5, 1), (base + 400, 40), (base + 555, 56), (base + 565, 58),
                                 (base + 1990, 199)]:
            (r,) = wait_futures(a.list_offsets({tp: OffsetSpec.for_timestamp(target)})).values()
            assert (r.offset, r.timestamp) == (expected, stamps[expected]), f"ts {target}: {(r.offset, r.timestamp)}"
            (found,) = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            assert found.offset == expected
        (r,) = wait_futures(a.list_offsets({tp: OffsetSpec.for_timestamp(base + 1991)})).values()
        assert r.offset == -1
        (r,) = wait_futures(a.list_offsets({tp: OffsetSpec.max_timestamp()})).values()
        assert (r.offset, r.timestamp) == (199, base + 1990)
    finally:
        c.close()
    # a consumer positioned inside a batch starts exactly there
    got = consume(gateway.bootstrap, topic, 0, 200 - 123, start=123)
    assert [(m.offset(), m.value()) for m in got] == [(i, b"m%d" % i) for i in range(123, 200)]


def test_async_commits_then_committed_returns_the_last(gateway):
    """librdkafka test 0030's shape (issue 16): 300 async commits of increasing offsets from one
    consumer, then committed(). The commits travel pipelined on one connection; before the
    gateway kept a connection's requests in order, committed() returned 299 or 297 (5 of 5
    tries), so a restarted consumer would re-read records."""
    topic = create_topic(gateway.bootstrap, unique("async-commits"))
    produce_all(producer(gateway.bootstrap), topic, [(b"k", b"v", None)] * 5)
    for attempt in range(3):
        results = []
        c = Consumer({"bootstrap.servers": gateway.bootstrap, "group.id": unique("async-commits"),
                      "enable.auto.commit": False, "on_commit": lambda err, parts: results.append(err)})
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            for offset in range(1, 301):
                c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=True)
            deadline = time.monotonic() + 30
            while len(results) < 300 and time.monotonic() < deadline:
                c.poll(0.1)
            assert len(results) == 300 and all(e is None for e in results), f"commit results: {len(results)}, {results[:3]}"
            got = c.committed([TopicPartition(topic, 0)], timeout=30)
            assert got[0].offset == 300, f"attempt {attempt}: committed() answered {got[0].offset}, not the last commit 300"
        finally:
            c.close()
