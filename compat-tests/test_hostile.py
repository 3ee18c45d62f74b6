"""A catalogue of hostile and abusive inputs against the real binary (issue 13).

Each entry is named and says what must happen: the connection is closed ("closed"), or the
answer carries a given Kafka error code, or an abusive-but-valid request is answered within its
bound. The gateway runs with its address space limited to 8 GiB (`prlimit --as`, so no
preallocation can succeed by mapping memory it never touches) and low request limits; while the
catalogue runs, a well-behaved client on its own connection keeps sending ApiVersions and its
worst latency is reported and bounded, and the gateway's RSS is sampled and bounded throughout.
"""
import gzip
import socket
import struct
import subprocess
import threading
import time

import pytest

import wire
from helpers import create_topic, unique

ADDRESS_SPACE = 8 << 30
RSS_LIMIT_KIB = 768 << 10  # 768 MiB
WELL_BEHAVED_P_MAX_S = 2.0  # worst ApiVersions round trip of the bystander while the catalogue runs
MAX_REQUEST = 100 << 20  # the default max_request_bytes
MAX_ADMIN = 8 << 20  # the default max_admin_request_bytes

# Kafka error codes
CORRUPT_MESSAGE, UNKNOWN_TOPIC, MESSAGE_TOO_LARGE, INVALID_REQUIRED_ACKS = 2, 3, 10, 21
INVALID_SESSION_TIMEOUT, INVALID_TIMESTAMP, UNSUPPORTED_FOR_MESSAGE_FORMAT = 26, 32, 43
INVALID_RECORD, INVALID_GROUP_ID, UNSUPPORTED_COMPRESSION_TYPE = 87, 24, 76
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53

JOIN_GROUP, OFFSET_FETCH, FETCH = 11, 9, 1


def framed(payload):
    return wire.i32(len(payload)) + payload


def header(api, version, corr=1, client_id="hostile"):
    return wire.i16(api) + wire.i16(version) + wire.i32(corr) + wire.string(client_id)


def varint_record(ts_delta=0, offset_delta=0, key=None, value=b"v", headers=(), raw_tail=b""):
    r = wire.i8(0) + wire.varint(ts_delta) + wire.varint(offset_delta)
    r += wire.varint(-1) if key is None else wire.varint(len(key)) + key
    r += wire.varint(-1) if value is None else wire.varint(len(value)) + value
    r += wire.varint(len(headers))
    for k, v in headers:
        r += wire.varint(len(k)) + k + (wire.varint(-1) if v is None else wire.varint(len(v)) + v)
    r += raw_tail
    return wire.varint(len(r)) + r


def raw_batch(records_blob, count, last_delta=None, attributes=0, base_ts=None, max_ts=None, pid=-1, epoch=-1, seq=-1):
    """A magic-2 batch around already encoded records, CRC computed (so only what we break is broken)."""
    ts = int(time.time() * 1000) if base_ts is None else base_ts
    after_crc = (wire.i16(attributes) + wire.i32(count - 1 if last_delta is None else last_delta) + wire.i64(ts)
                 + wire.i64(ts if max_ts is None else max_ts) + wire.i64(pid) + wire.i16(epoch) + wire.i32(seq)
                 + wire.i32(count) + records_blob)
    return (wire.i64(0) + wire.i32(4 + 1 + 4 + len(after_crc)) + wire.i32(-1) + wire.i8(2)
            + struct.pack(">I", wire.crc32c(after_crc)) + after_crc)


def produce(topic, records, acks=-1, partition=0):
    return wire.request(wire.PRODUCE, 3, 41, wire.produce_v3(topic, partition, records, acks=acks))


def join_group_v1(group, session_ms, rebalance_ms=30_000, protocols=(("range", b""),)):
    body = (wire.string(group) + wire.i32(session_ms) + wire.i32(rebalance_ms) + wire.string("") + wire.string("consumer")
            + wire.array([wire.string(n) + wire.kbytes(m) for n, m in protocols]))
    return wire.request(JOIN_GROUP, 1, 42, body)


def offset_fetch_v1(group, topic, copies=1):
    return wire.request(OFFSET_FETCH, 1, 43, wire.string(group) + wire.array([wire.string(topic) + wire.array([wire.i32(0)])] * copies))


def fetch_v4_many(topic, copies, partition_max=1 << 20, max_bytes=0x7FFFFFFF):
    parts = [wire.i32(0) + wire.i64(0) + wire.i32(partition_max)] * copies
    body = wire.i32(-1) + wire.i32(0) + wire.i32(1) + wire.i32(max_bytes) + wire.i8(0) + wire.array([wire.string(topic) + wire.array(parts)])
    return wire.request(wire.FETCH, 4, 44, body)


def produce_error(expected):
    def check(topic, body):
        errs = {err for (t, _), (err, _) in wire.parse_produce_v3(body).items()}
        assert errs == {expected}, f"produce answered {errs}, expected {expected}"
    check.__doc__ = f"produce error {expected}"
    return check


def join_error(expected):
    def check(topic, body):
        r = wire.Reader(body)
        err = r.i16()
        assert err == expected, f"join answered {err}, expected {expected}"
    check.__doc__ = f"join error {expected}"
    return check


def fetch_once_within(limit):
    def check(topic, body):
        got = wire.parse_fetch_v4(body)
        assert list(got) == [(topic, 0)], f"partitions answered: {len(got)}"
        err, _, records = got[(topic, 0)]
        assert err == 0 and 0 < len(records) <= limit, (err, len(records))
    check.__doc__ = f"one partition, at most {limit} record bytes"
    return check


def metadata_once(topic, body):
    md = wire.parse_metadata_v1(body)
    assert [t["name"] for t in md["topics"]] == [topic], f"{len(md['topics'])} topics answered"


def metadata_creates_at_most(n):
    def check(topic, body):
        md = wire.parse_metadata_v1(body)
        created = [t for t in md["topics"] if t["error"] == 0]
        later = [t for t in md["topics"] if t["error"] == UNKNOWN_TOPIC]
        assert len(created) == n and len(created) + len(later) == len(md["topics"]), (len(created), len(later))
    check.__doc__ = f"{n} topics created, the rest UNKNOWN_TOPIC_OR_PARTITION"
    return check


def offset_fetch_once(topic, body):
    r = wire.Reader(body)
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i64(), r.string(), r.i16()))))
    assert [(name, len(p)) for name, p in topics] == [(topic, 1)], f"{len(topics)} topics answered"


CLOSED = "closed"


def catalogue(topic):
    """name -> (frame bytes, expected: CLOSED or a check(topic, response body))."""
    now = int(time.time() * 1000)
    good = varint_record()
    two = varint_record(offset_delta=0) + varint_record(offset_delta=1)
    big_metadata = "x" * 200
    c = {}
    # ---- framing
    for size in (-1, -0x80000000, 0, 3, 7):
        c[f"frame size {size}"] = (wire.i32(size) + wire.i16(3) + wire.i16(1) + wire.i32(1), CLOSED)
    c["frame size 2^31-1 alone"] = (wire.i32(0x7FFFFFFF), CLOSED)
    c["produce frame past max_request_bytes"] = (wire.i32(MAX_REQUEST + 1) + wire.i16(0) + wire.i16(3), CLOSED)
    c["metadata frame past max_admin_request_bytes"] = (wire.i32(MAX_ADMIN + 1) + wire.i16(3) + wire.i16(1), CLOSED)
    c["frame cut inside the size"] = (b"\x00\x00", CLOSED)
    c["frame cut inside the api key"] = (wire.i32(20) + b"\x00", CLOSED)
    c["frame cut inside the body"] = (wire.i32(100) + header(3, 1)[:8], CLOSED)
    c["unknown api key 9999"] = (framed(header(9999, 0) + b"\x00" * 8), CLOSED)
    c["api key -1"] = (framed(header(-1, 0) + b"\x00" * 8), CLOSED)
    c["unimplemented api key 75"] = (framed(header(75, 0) + b"\x00" * 8), CLOSED)
    c["metadata version 99"] = (framed(header(3, 99) + b"\x00" * 8), CLOSED)
    c["metadata version -1"] = (framed(header(3, -1) + b"\x00" * 8), CLOSED)
    c["produce version 2"] = (framed(header(0, 2) + b"\x00" * 8), CLOSED)
    c["fetch version 3"] = (framed(header(1, 3) + b"\x00" * 8), CLOSED)
    c["client id length -2"] = (framed(wire.i16(3) + wire.i16(1) + wire.i32(1) + wire.i16(-2) + wire.i32(-1)), CLOSED)
    c["client id longer than the frame"] = (framed(wire.i16(3) + wire.i16(1) + wire.i32(1) + wire.i16(0x7FFF) + b"abc"), CLOSED)
    c["flexible header tag count 2^32-1"] = (framed(header(3, 12) + b"\xff\xff\xff\xff\x0f"), CLOSED)
    c["flexible header tag longer than the frame"] = (framed(header(3, 12) + wire.uvarint(1) + wire.uvarint(0) + wire.uvarint(1 << 20)), CLOSED)
    c["random bytes, 64 KiB"] = (bytes((i * 7919 + 13) % 256 for i in range(64 << 10)), CLOSED)
    # ---- lying lengths and counts in bodies
    c["metadata topics count -2"] = (wire.request(3, 1, 2, wire.i32(-2)), CLOSED)
    c["metadata topics count 2^31-1"] = (wire.request(3, 1, 2, wire.i32(0x7FFFFFFF)), CLOSED)
    c["metadata v12 compact topics count 2^32-1"] = (wire.request(3, 12, 2, b"\xff\xff\xff\xff\x0f", flexible_header=True), CLOSED)
    c["metadata v9 compact topics count 2^31"] = (wire.request(3, 9, 2, b"\x81\x80\x80\x80\x08", flexible_header=True), CLOSED)
    c["metadata topic name length -5"] = (wire.request(3, 1, 2, wire.i32(1) + wire.i16(-5)), CLOSED)
    c["metadata topic name length 32767"] = (wire.request(3, 1, 2, wire.i32(1) + wire.i16(0x7FFF) + b"abc"), CLOSED)
    c["produce topics count 2^31-1"] = (wire.request(0, 3, 3, wire.string(None) + wire.i16(-1) + wire.i32(1000) + wire.i32(0x7FFFFFFF)), CLOSED)
    c["produce partitions count 2^31-1"] = (wire.request(0, 3, 3, wire.string(None) + wire.i16(-1) + wire.i32(1000) + wire.i32(1) + wire.string(topic) + wire.i32(0x7FFFFFFF)), CLOSED)
    c["produce records length 2^31-1"] = (wire.request(0, 3, 3, wire.string(None) + wire.i16(-1) + wire.i32(1000) + wire.array([wire.string(topic) + wire.array([wire.i32(0) + wire.i32(0x7FFFFFFF)])])), CLOSED)
    c["fetch topics count 2^31-1"] = (wire.request(1, 4, 4, wire.i32(-1) + wire.i32(0) + wire.i32(1) + wire.i32(1 << 20) + wire.i8(0) + wire.i32(0x7FFFFFFF)), CLOSED)
    c["list offsets partitions count 2^31-1"] = (wire.request(2, 1, 5, wire.i32(-1) + wire.array([wire.string(topic) + wire.i32(0x7FFFFFFF)])), CLOSED)
    c["create topics count 2^31-1"] = (wire.request(19, 2, 6, wire.i32(0x7FFFFFFF) + wire.i32(1000) + wire.i8(0)), CLOSED)
    c["join group protocols count 2^31-1"] = (wire.request(JOIN_GROUP, 1, 7, wire.string("g") + wire.i32(10_000) + wire.i32(10_000) + wire.string("") + wire.string("consumer") + wire.i32(0x7FFFFFFF)), CLOSED)
    c["join group protocol metadata length 2^31-1"] = (wire.request(JOIN_GROUP, 1, 7, wire.string("g") + wire.i32(10_000) + wire.i32(10_000) + wire.string("") + wire.string("consumer") + wire.i32(1) + wire.string("range") + wire.i32(0x7FFFFFFF)), CLOSED)
    c["offset fetch topics count 2^31-1"] = (wire.request(OFFSET_FETCH, 1, 8, wire.string("g") + wire.i32(0x7FFFFFFF)), CLOSED)
    c["api versions v3 compact client name 2^32-1"] = (wire.request(18, 3, 9, b"\xff\xff\xff\xff\x0f", flexible_header=True), CLOSED)
    c["init producer id transactional id length 32767"] = (wire.request(22, 0, 10, wire.i16(0x7FFF) + b"t"), CLOSED)
    # ---- record batches (answered with an error, nothing stored)
    c["null records"] = (produce(topic, None), produce_error(CORRUPT_MESSAGE))
    c["empty records"] = (produce(topic, b""), produce_error(CORRUPT_MESSAGE))
    c["batch CRC flipped"] = (produce(topic, bytearray_flip(raw_batch(good, 1), 17)), produce_error(CORRUPT_MESSAGE))
    c["batch payload flipped under the CRC"] = (produce(topic, bytearray_flip(raw_batch(good, 1), -2)), produce_error(CORRUPT_MESSAGE))
    c["batch magic 1"] = (produce(topic, set_byte(raw_batch(good, 1), 16, 1)), produce_error(UNSUPPORTED_FOR_MESSAGE_FORMAT))
    c["batch truncated"] = (produce(topic, raw_batch(good, 1)[:-3]), produce_error(CORRUPT_MESSAGE))
    c["batch length smaller than a header"] = (produce(topic, wire.i64(0) + wire.i32(10) + b"\x00" * 60), produce_error(CORRUPT_MESSAGE))
    c["batch of zero records"] = (produce(topic, raw_batch(b"", 0, last_delta=0)), produce_error(CORRUPT_MESSAGE))
    c["record count disagrees with last offset delta"] = (produce(topic, raw_batch(two, 2, last_delta=5)), produce_error(CORRUPT_MESSAGE))
    c["offset deltas skip"] = (produce(topic, raw_batch(varint_record(offset_delta=0) + varint_record(offset_delta=2), 2)), produce_error(INVALID_RECORD))
    c["offset deltas repeat"] = (produce(topic, raw_batch(varint_record() + varint_record(), 2)), produce_error(INVALID_RECORD))
    c["fewer records than the count"] = (produce(topic, raw_batch(good, 2)), produce_error(INVALID_RECORD))
    c["bytes after the last record"] = (produce(topic, raw_batch(good + b"\x00", 1)), produce_error(INVALID_RECORD))
    c["record length past the batch"] = (produce(topic, raw_batch(wire.varint(500) + good[1:], 1)), produce_error(INVALID_RECORD))
    c["record fields shorter than its length"] = (produce(topic, raw_batch(varint_record(raw_tail=b"\x00\x00"), 1)), produce_error(INVALID_RECORD))
    c["record key length -2"] = (produce(topic, raw_batch(wire.varint(6) + wire.i8(0) + wire.varint(0) + wire.varint(0) + wire.varint(-2) + wire.varint(-1) + wire.varint(0), 1)), produce_error(INVALID_RECORD))
    c["record header count -1"] = (produce(topic, raw_batch(wire.varint(6) + wire.i8(0) + wire.varint(0) + wire.varint(0) + wire.varint(-1) + wire.varint(-1) + wire.varint(-1), 1)), produce_error(INVALID_RECORD))
    c["record header key null"] = (produce(topic, raw_batch(wire.varint(8) + wire.i8(0) + wire.varint(0) + wire.varint(0) + wire.varint(-1) + wire.varint(-1) + wire.varint(1) + wire.varint(-1) + wire.varint(-1), 1)), produce_error(INVALID_RECORD))
    c["record varint of 11 bytes"] = (produce(topic, raw_batch(wire.varint(14) + wire.i8(0) + b"\xff" * 10 + b"\x01" + b"\x00\x01\x01", 1)), produce_error(INVALID_RECORD))
    c["CreateTime two hours ahead"] = (produce(topic, raw_batch(good, 1, base_ts=now + 2 * 3_600_000)), produce_error(INVALID_TIMESTAMP))
    c["compressed batch max timestamp two hours ahead"] = (produce(topic, raw_batch(b"\x00" * 20, 1, attributes=1, max_ts=now + 2 * 3_600_000)), produce_error(INVALID_TIMESTAMP))
    c["gzip batch of garbage"] = (produce(topic, raw_batch(b"\x1f\x8b" + b"\x00" * 30, 1, attributes=1)), produce_error(CORRUPT_MESSAGE))
    c["gzip batch whose records skip an offset delta"] = (produce(topic, raw_batch(gzip.compress(varint_record(offset_delta=0) + varint_record(offset_delta=2)), 2, attributes=1)), produce_error(INVALID_RECORD))
    c["gzip batch with fewer records than counted"] = (produce(topic, raw_batch(gzip.compress(good), 3, attributes=1)), produce_error(INVALID_RECORD))
    c["batch of compression codec 6"] = (produce(topic, raw_batch(gzip.compress(good), 1, attributes=6)), produce_error(UNSUPPORTED_COMPRESSION_TYPE))
    c["transactional batch without a transactional id"] = (produce(topic, raw_batch(good, 1, attributes=0x10, pid=1, epoch=0, seq=0)), produce_error(TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    c["control batch"] = (produce(topic, raw_batch(good, 1, attributes=0x20)), produce_error(INVALID_RECORD))
    c["acks 2"] = (produce(topic, raw_batch(good, 1), acks=2), produce_error(INVALID_REQUIRED_ACKS))
    c["partition -1"] = (produce(topic, raw_batch(good, 1), partition=-1), produce_error(UNKNOWN_TOPIC))
    c["partition 2^31-1"] = (produce(topic, raw_batch(good, 1), partition=0x7FFFFFFF), produce_error(UNKNOWN_TOPIC))
    c["batch past max.message.bytes"] = (produce(topic, raw_batch(varint_record(value=b"v" * (1100 << 10)), 1)), produce_error(MESSAGE_TOO_LARGE))
    # ---- abusive but valid: answered within the bounds
    c["fetch naming one partition 5,000 times"] = (fetch_v4_many(topic, 5000), fetch_once_within(1 << 20))
    c["fetch asking 2^31-1 bytes"] = (fetch_v4_many(topic, 1, partition_max=0x7FFFFFFF), fetch_once_within(1 << 20))
    c["metadata naming one topic 20,000 times"] = (wire.request(3, 1, 11, wire.metadata_v1([topic] * 20_000)), metadata_once)
    c["metadata auto-creating 300 topics"] = (wire.request(3, 1, 12, wire.metadata_v1([unique("auto") for _ in range(300)])), metadata_creates_at_most(100))
    c["offset fetch naming one topic 20,000 times"] = (offset_fetch_v1(unique("g"), topic, copies=20_000), offset_fetch_once)
    c["join group session timeout 10 ms"] = (join_group_v1(unique("g"), 10), join_error(INVALID_SESSION_TIMEOUT))
    c["join group session timeout 2 hours"] = (join_group_v1(unique("g"), 7_200_000), join_error(INVALID_SESSION_TIMEOUT))
    c["join group with an empty group id"] = (join_group_v1("", 10_000), join_error(INVALID_GROUP_ID))
    c["join group with 2,000 protocols of 200-byte metadata"] = (join_group_v1(unique("g"), 10_000, protocols=[(f"p{i}", big_metadata.encode()) for i in range(2000)]), join_error(0))
    return c


def bytearray_flip(b, at):
    b = bytearray(b)
    b[at] ^= 0xFF
    return bytes(b)


def set_byte(b, at, v):
    b = bytearray(b)
    b[at] = v
    return bytes(b)


class Bystander(threading.Thread):
    """A well-behaved client: ApiVersions every 50 ms on its own connection; records latencies."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.latencies, self.errors = port, threading.Event(), [], []

    def run(self):
        with wire.Conn(self.port) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                t = time.monotonic()
                try:
                    c.call(wire.API_VERSIONS, 0, b"", correlation_id=n)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    self.errors.append(repr(e))
                    return
                self.latencies.append(time.monotonic() - t)
                time.sleep(0.05)


class RssWatch(threading.Thread):
    def __init__(self, gw):
        super().__init__(daemon=True)
        self.gw, self.stop, self.peak = gw, threading.Event(), 0

    def run(self):
        while not self.stop.is_set() and self.gw.alive():
            self.peak = max(self.peak, self.gw.rss_kib())
            time.sleep(0.05)


@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory):
    from conftest import Procs, _finish
    group = Procs(tmp_path_factory.mktemp("hostile"))
    gw = group.gateway(log="warn")
    subprocess.run(["prlimit", f"--pid={gw.pid}", f"--as={ADDRESS_SPACE}"], check=True)
    yield gw
    _finish(group)


def test_the_catalogue(limited_gateway):
    gw = limited_gateway
    topic = create_topic(gw.bootstrap, unique("hostile"), config={"max.message.bytes": str(1 << 20)})
    # something to fetch
    with wire.Conn(gw.port) as c:
        err, _ = wire.parse_produce_v3(c.call(wire.PRODUCE, 3, wire.produce_v3(topic, 0, wire.record_batch([(None, b"x" * 1000, [])] * 50))))[(topic, 0)]
    assert err == 0
    entries = catalogue(topic)
    assert len(entries) >= 60, len(entries)
    bystander, rss = Bystander(gw.port), RssWatch(gw)
    bystander.start()
    rss.start()
    failures = []
    try:
        for name, (frame, expected) in entries.items():
            with wire.Conn(gw.port, timeout=15) as c:
                try:
                    c.send(frame)
                except (BrokenPipeError, ConnectionResetError):
                    if expected is not CLOSED:
                        failures.append(f"{name}: closed while sending")
                    continue
                if expected is CLOSED:
                    try:
                        c.sock.shutdown(socket.SHUT_WR)  # a frame cut short ends here
                    except OSError:
                        pass
                    closed, got = c.wait_closed(10)
                    if not closed:
                        failures.append(f"{name}: connection still open 10 s later")
                    elif got:
                        failures.append(f"{name}: answered {len(got)} bytes before closing")
                else:
                    try:
                        corr, body = c.recv_response(timeout=15)
                        expected(topic, body)
                    except (AssertionError, TimeoutError, ConnectionError) as e:
                        failures.append(f"{name}: {expected.__doc__ or expected.__name__}: {e}")
            if not gw.alive():
                failures.append(f"{name}: the gateway died\n{gw.log_tail()}")
                break
    finally:
        bystander.stop.set()
        rss.stop.set()
        bystander.join(10)
        rss.join(10)
    lat = sorted(bystander.latencies)
    worst = lat[-1] if lat else float("inf")
    p50 = lat[len(lat) // 2] if lat else float("inf")
    print(f"\n{len(entries)} hostile inputs; bystander ApiVersions p50 {p50 * 1000:.1f} ms, worst {worst * 1000:.1f} ms "
          f"over {len(lat)} calls; gateway peak RSS {rss.peak // 1024} MiB (address space {ADDRESS_SPACE >> 30} GiB)")
    assert not failures, "\n".join(failures)
    assert not bystander.errors, bystander.errors
    assert worst < WELL_BEHAVED_P_MAX_S, f"a well-behaved client waited {worst:.2f} s"
    assert rss.peak < RSS_LIMIT_KIB, f"peak RSS {rss.peak} KiB"
    # nothing of the rejected batches was stored: offsets 0..49 are the first batch only
    batches = wire.fetch_all_batches(gw.port, topic, 0)
    assert [(b["base_offset"], b["count"]) for b in batches] == [(0, 50)]
