"""kcat (the librdkafka command-line client) against the gateway.

Metadata listing (-L, -L -J), producing keyed binary messages with headers (-P -K -D -H) and
whole files, consuming them back (-C -e -f with lengths, so keys and values can be compared byte
for byte), offset selection (-o, -c), and kcat reading what confluent-kafka wrote and vice versa.
"""
import json
import random
import shutil
import subprocess

import pytest

from helpers import consume, create_topic, headers_of, produce_all, producer, unique

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
KCAT_TIMEOUT_S = 60
MSG_DELIM, KEY_DELIM = 0x1E, 0x1F  # the only bytes the generated keys and values avoid
FORMAT = "%p,%o,%K,%S,%T,%h;%k%s\\n"  # lengths first: the payload bytes can be anything else

pytestmark = pytest.mark.skipif(not shutil.which(KCAT), reason="kcat not installed")


def kcat(bootstrap, *args, stdin=b""):
    r = subprocess.run([KCAT, "-b", bootstrap, "-q", *args], input=stdin, capture_output=True, timeout=KCAT_TIMEOUT_S)
    assert r.returncode == 0, f"kcat {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r.stdout


def parse(out):
    """Parses FORMAT output into dicts with partition, offset, key, value, timestamp, headers."""
    msgs = []
    pos = 0
    for _ in range(1_000_000):
        if pos >= len(out):
            return msgs
        semi = out.index(b";", pos)
        p, o, klen, vlen, ts, headers = out[pos:semi].split(b",", 5)
        pos = semi + 1
        klen, vlen = int(klen), int(vlen)
        key = None if klen < 0 else out[pos:pos + klen]
        pos += max(klen, 0)
        value = None if vlen < 0 else out[pos:pos + vlen]
        pos += max(vlen, 0)
        assert out[pos:pos + 1] == b"\n", f"bad kcat output framing at byte {pos}"
        pos += 1
        msgs.append({"partition": int(p), "offset": int(o), "key": key, "value": value, "timestamp": int(ts),
                     "headers": headers.decode()})
    raise AssertionError("runaway parse")


def binary(rng, lo, hi):
    """Random bytes of every value except the two delimiters."""
    alphabet = [b for b in range(256) if b not in (MSG_DELIM, KEY_DELIM)]
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def test_metadata_listing_text_and_json(gateway):
    t3 = create_topic(gateway.bootstrap, unique("kcat-md3"), partitions=3)
    t1 = create_topic(gateway.bootstrap, unique("kcat-md1"))
    text = kcat(gateway.bootstrap, "-L").decode()
    assert " 1 brokers:" in text
    assert f"broker 0 at 127.0.0.1:{gateway.port} (controller)" in text
    assert f'topic "{t3}" with 3 partitions:' in text
    assert f'topic "{t1}" with 1 partitions:' in text
    assert "partition 2, leader 0, replicas: 0, isrs: 0" in text

    md = json.loads(kcat(gateway.bootstrap, "-L", "-J"))
    assert md["brokers"] == [{"id": 0, "name": f"127.0.0.1:{gateway.port}"}]
    assert md["controllerid"] == 0
    topics = {t["topic"]: t for t in md["topics"]}
    assert {t1, t3} <= set(topics)
    for name, count in ((t1, 1), (t3, 3)):
        parts = sorted(topics[name]["partitions"], key=lambda p: p["partition"])
        assert [p["partition"] for p in parts] == list(range(count))
        for p in parts:
            assert (p["leader"], p["replicas"], p["isrs"]) == (0, [{"id": 0}], [{"id": 0}])
            assert "error" not in p and "error" not in topics[name]

    one = json.loads(kcat(gateway.bootstrap, "-L", "-J", "-t", t3))
    assert [t["topic"] for t in one["topics"]] == [t3]


def test_produce_keyed_binary_messages_and_consume(gateway):
    topic = create_topic(gateway.bootstrap, unique("kcat-keys"))
    rng = random.Random(1)
    sent = [(b"" if i == 7 else binary(rng, 1, 40), binary(rng, 1, 600)) for i in range(200)]
    stdin = b"".join(k + bytes([KEY_DELIM]) + v + bytes([MSG_DELIM]) for k, v in sent)
    kcat(gateway.bootstrap, "-P", "-t", topic, "-p", "0", "-K", "\\x1f", "-D", "\\x1e",
         "-H", "source=kcat", "-H", "run=1", stdin=stdin)

    got = parse(kcat(gateway.bootstrap, "-C", "-t", topic, "-e", "-f", FORMAT))
    assert [m["offset"] for m in got] == list(range(len(sent)))
    for m, (key, value) in zip(got, sent):
        assert m["partition"] == 0
        assert m["key"] == key, f"offset {m['offset']}: key differs"
        assert m["value"] == value, f"offset {m['offset']}: value differs"
        assert m["headers"] == "source=kcat,run=1"
        assert m["timestamp"] > 0

    # offset selection: absolute with a count, and relative to the end
    part = parse(kcat(gateway.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "50", "-c", "10", "-f", FORMAT))
    assert [(m["offset"], m["value"]) for m in part] == [(50 + i, sent[50 + i][1]) for i in range(10)]
    tail = parse(kcat(gateway.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "-5", "-e", "-f", FORMAT))
    assert [m["offset"] for m in tail] == [195, 196, 197, 198, 199]

    # what another client sees: the same keys, values and real headers
    msgs = consume(gateway.bootstrap, topic, 0, len(sent))
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == [(i, k, v) for i, (k, v) in enumerate(sent)]
    assert headers_of(msgs[0]) == [("source", b"kcat"), ("run", b"1")]


def test_produce_whole_files_as_messages(gateway, tmp_path):
    topic = create_topic(gateway.bootstrap, unique("kcat-files"), partitions=2)
    payloads = [bytes(range(256)) * 4, random.Random(2).randbytes(100_000), b"\n\x00\n"]
    files = []
    for i, data in enumerate(payloads):
        f = tmp_path / f"msg{i}.bin"
        f.write_bytes(data)
        files.append(str(f))
    kcat(gateway.bootstrap, "-P", "-t", topic, "-p", "1", *files)
    got = parse(kcat(gateway.bootstrap, "-C", "-t", topic, "-p", "1", "-e", "-f", FORMAT))
    assert [(m["partition"], m["offset"], m["key"], m["value"]) for m in got] == \
        [(1, i, None, data) for i, data in enumerate(payloads)]
    assert parse(kcat(gateway.bootstrap, "-C", "-t", topic, "-p", "0", "-e", "-f", FORMAT)) == []


def test_kcat_reads_what_confluent_wrote(gateway):
    topic = create_topic(gateway.bootstrap, unique("kcat-cross"))
    rng = random.Random(3)
    sent = [(None if i % 5 == 0 else b"k%d" % i, rng.randbytes(rng.randint(1, 300)), [("n", b"%d" % i)])
            for i in range(100)]
    d = produce_all(producer(gateway.bootstrap, acks="all"), topic, sent)
    assert not d.errors()
    got = parse(kcat(gateway.bootstrap, "-C", "-t", topic, "-e", "-f", FORMAT))
    assert [(m["offset"], m["key"], m["value"], m["headers"]) for m in got] == \
        [(i, k, v, f"n={i}") for i, (k, v, _) in enumerate(sent)]
    assert [d.reports[i][2] for i in range(len(sent))] == list(range(len(sent)))
