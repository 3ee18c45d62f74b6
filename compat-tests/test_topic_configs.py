"""Kafka 4's topic configs through real clients (confluent-kafka's AdminClient, librdkafka
producers and consumers, kafka-python's consumer).

Every Kafka 4 topic config is accepted with a valid non-default value and described back with
its source (invalid values and unknown names: test_confluent's invalid-config cases); configs
Kafka 4 removed are dropped. What the configs do is checked from outside: compression.type recompresses the stored
batches (read raw with Fetch v4, and consumed by librdkafka and kafka-python), LogAppendTime
stamps the gateway's clock, timestamp bounds refuse records with INVALID_TIMESTAMP, a compacted
topic refuses keyless records with INVALID_RECORD. DescribeConfigs gives synonyms and broker
configs as Kafka does.
"""
import time

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType
from kafka import KafkaConsumer, TopicPartition as KpTopicPartition

import wire
from helpers import admin, consume, create_topic, is_error, produce_all, producer, unique, wait_futures

# A valid value other than the default for every Kafka 4 topic config.
EVERY_CONFIG = {
    "cleanup.policy": "compact,delete",
    "compression.gzip.level": "5",
    "compression.lz4.level": "4",
    "compression.type": "lz4",
    "compression.zstd.level": "9",
    "delete.retention.ms": "3600000",
    "file.delete.delay.ms": "1000",
    "flush.messages": "1000",
    "flush.ms": "1000",
    "follower.replication.throttled.replicas": "0:0",
    "index.interval.bytes": "8192",
    "leader.replication.throttled.replicas": "*",
    "local.retention.bytes": "1000000",
    "local.retention.ms": "60000",
    "max.compaction.lag.ms": "86400000",
    "max.message.bytes": "2000000",
    "message.timestamp.after.max.ms": "7200000",
    "message.timestamp.before.max.ms": "86400000000",
    "message.timestamp.type": "LogAppendTime",
    "min.cleanable.dirty.ratio": "0.25",
    "min.compaction.lag.ms": "1000",
    "min.insync.replicas": "2",
    "preallocate": "true",
    "remote.log.copy.disable": "true",
    "remote.log.delete.on.disable": "true",
    "remote.storage.enable": "true",
    "retention.bytes": "1000000000",
    "retention.ms": "86400000",
    "segment.bytes": "10485760",
    "segment.index.bytes": "1048576",
    "segment.jitter.ms": "1000",
    "segment.ms": "3600000",
    "unclean.leader.election.enable": "true",
}

CODEC_IDS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def describe(bootstrap, resource_type, name):
    res = ConfigResource(resource_type, name)
    a = admin(bootstrap)  # kept referenced until the futures resolve
    return wait_futures(a.describe_configs([res], request_timeout=30))[res]


def test_every_kafka_4_topic_config_is_accepted_and_described(gateway):
    topic = create_topic(gateway.bootstrap, unique("allcfg"), config=EVERY_CONFIG)
    entries = describe(gateway.bootstrap, ResourceType.TOPIC, topic)
    for name, value in EVERY_CONFIG.items():
        assert entries[name].value == value, name
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
        assert not entries[name].is_read_only and not entries[name].is_sensitive, name


def test_configs_removed_in_kafka_4_are_dropped(gateway):
    removed = {"message.format.version": "2.8", "message.downconversion.enable": "false",
               "message.timestamp.difference.max.ms": "1000"}
    topic = create_topic(gateway.bootstrap, unique("removed"), config={**removed, "retention.ms": "1000000"})
    entries = describe(gateway.bootstrap, ResourceType.TOPIC, topic)
    assert not set(removed) & set(entries), "removed configs are not described"
    assert entries["retention.ms"].value == "1000000"


def test_describe_gives_synonyms_and_broker_configs(gateway):
    topic = create_topic(gateway.bootstrap, unique("syn"), config={"retention.ms": "1000000"})
    entries = describe(gateway.bootstrap, ResourceType.TOPIC, topic)
    syn = entries["retention.ms"].synonyms
    assert syn["retention.ms"].value == "1000000"
    assert syn["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert syn["log.retention.ms"].value == "604800000"
    assert syn["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["message.timestamp.after.max.ms"].value == "3600000", "Kafka 4's default"
    broker = describe(gateway.bootstrap, ResourceType.BROKER, "0")
    assert broker["num.partitions"].is_read_only
    assert broker["broker.id"].value == "0"
    assert broker["log.retention.ms"].value == "604800000"
    assert broker["log.cleanup.policy"].value == "delete"


def compressible(n):
    return [(b"k%d" % i, (b"record %d of a compressible stream; " % i) * 20, []) for i in range(n)]


@pytest.mark.parametrize("target", sorted(CODEC_IDS))
def test_compression_type_recompresses_what_is_stored(gateway, target):
    topic = create_topic(gateway.bootstrap, unique(f"ct-{target}"), config={"compression.type": target})
    sent = compressible(300)
    sent_codec = "gzip" if target == "uncompressed" else "none"
    p = producer(gateway.bootstrap, acks="all", linger_ms=50, batch_num_messages=100, **{"compression.type": sent_codec})
    assert not produce_all(p, topic, sent).errors()
    batches = wire.fetch_all_batches(gateway.port, topic, 0)
    assert sum(b["count"] for b in batches) == len(sent)
    for b in batches:
        assert b["crc_ok"], f"batch at {b['base_offset']}: CRC32C does not match"
        assert b["attributes"] & 0x7 == CODEC_IDS[target], f"batch at {b['base_offset']}: attributes {b['attributes']:#x}"
    got = consume(gateway.bootstrap, topic, 0, len(sent))
    assert [(m.offset(), m.key(), m.value()) for m in got] == [(i, k, v) for i, (k, v, _) in enumerate(sent)]
    # kafka-python decodes every codec itself (not librdkafka)
    c = KafkaConsumer(bootstrap_servers=gateway.bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        tp = KpTopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        values = [(r.key, r.value) for r in c]
    finally:
        c.close()
    assert values == [(k, v) for k, v, _ in sent]


def test_log_append_time_stamps_the_gateway_clock(gateway):
    topic = create_topic(gateway.bootstrap, unique("lat"), config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    p = producer(gateway.bootstrap, acks="all")
    p.produce(topic, key=b"k", value=b"old", partition=0, timestamp=before - 86_400_000)
    assert p.flush(30) == 0
    (m,) = consume(gateway.bootstrap, topic, 0, 1)
    kind, ts = m.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 5000 <= ts <= int(time.time() * 1000) + 5000, ts


def produce_one(bootstrap, topic, key, ts=0):
    """The delivery error of one record (None: stored); `ts` 0 means now."""
    p = producer(bootstrap, acks="all", message_send_max_retries=0)
    errs = []
    p.produce(topic, key=key, value=b"v", partition=0, timestamp=ts, on_delivery=lambda e, m: errs.append(e))
    assert p.flush(30) == 0
    return errs[0]


def test_timestamp_bounds_refuse_records(gateway):
    topic = create_topic(gateway.bootstrap, unique("tsb"), config={
        "message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "60000"})
    now = int(time.time() * 1000)
    for ts, ok in [(now, True), (now - 3_600_000, False), (now + 3_600_000, False)]:
        err = produce_one(gateway.bootstrap, topic, b"k", ts)
        if ok:
            assert err is None, (ts, err)
        else:
            assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP, (ts, err)


def test_a_compacted_topic_refuses_keyless_records(gateway):
    topic = create_topic(gateway.bootstrap, unique("compact"), config={"cleanup.policy": "compact"})
    err = produce_one(gateway.bootstrap, topic, None)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    assert produce_one(gateway.bootstrap, topic, b"key") is None
    (m,) = consume(gateway.bootstrap, topic, 0, 1)
    assert (m.offset(), m.key()) == (0, b"key")


def test_incremental_append_and_subtract_on_list_configs(gateway):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    topic = create_topic(gateway.bootstrap, unique("append"))
    a = admin(gateway.bootstrap)

    def alter(op, name, value):
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
        return list(wait_futures(a.incremental_alter_configs([res])).values())[0]

    assert alter(AlterConfigOpType.APPEND, "cleanup.policy", "compact") is None
    assert describe(gateway.bootstrap, ResourceType.TOPIC, topic)["cleanup.policy"].value == "delete,compact"
    assert alter(AlterConfigOpType.APPEND, "cleanup.policy", "compact") is None, "appending a present item"
    assert alter(AlterConfigOpType.SUBTRACT, "cleanup.policy", "delete") is None
    assert describe(gateway.bootstrap, ResourceType.TOPIC, topic)["cleanup.policy"].value == "compact"
    # only list configs take APPEND / SUBTRACT
    assert is_error(alter(AlterConfigOpType.APPEND, "retention.ms", "5"), KafkaError.INVALID_CONFIG)
    # subtracting every item leaves an empty list, which cleanup.policy refuses
    assert is_error(alter(AlterConfigOpType.SUBTRACT, "cleanup.policy", "compact"), KafkaError.INVALID_CONFIG)
