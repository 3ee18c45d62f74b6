"""Hostile and malformed input on raw sockets (requests encoded by hand in wire.py).

Bad size prefixes, truncated frames, random bytes, unknown API keys and versions, negative and
huge lengths inside request bodies: the offending connection is closed (or answered with an
error), never the process; afterwards the gateway still serves Metadata on a new connection and
its RSS stays below 1 GiB. ApiVersions at an unknown version gets Kafka's v0 fallback
(UNSUPPORTED_VERSION and the API list); a produced batch with a bad CRC gets CORRUPT_MESSAGE and
is not stored. Partially sent frames must not starve other clients.
"""
import random
import socket
import time

import pytest

import wire
from helpers import create_topic, unique

RSS_LIMIT_KIB = 1 << 20  # 1 GiB
MAX_REQUEST_BYTES = 100 << 20  # the gateway's default --max-request-bytes
UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
# The APIs and version ranges this gateway documents.
DOCUMENTED = {
    0: (3, 11), 1: (4, 16), 2: (1, 8), 3: (0, 12), 18: (0, 3), 19: (2, 7), 20: (1, 6), 21: (0, 2),
    22: (0, 4), 32: (1, 4), 33: (0, 2), 37: (0, 3), 44: (0, 1), 60: (0, 1),
}


def assert_healthy(gw):
    """Alive, answers Metadata v1 on a fresh connection, RSS under the limit."""
    assert gw.alive(), f"gateway died (rc={gw.returncode})\n{gw.log_tail()}"
    with wire.Conn(gw.port) as c:
        md = wire.parse_metadata_v1(c.call(wire.METADATA, 1, wire.metadata_v1(), correlation_id=4242))
    assert md["brokers"] == [(0, "127.0.0.1", gw.port, None)]
    rss = gw.rss_kib()
    assert rss < RSS_LIMIT_KIB, f"gateway RSS {rss} KiB"


def send_expect_close(gw, data, half_close=True, timeout=10.0):
    """Sends raw bytes on a new connection, optionally half-closes, and requires the gateway to
    close the connection within `timeout`; returns whatever it answered before closing."""
    with wire.Conn(gw.port) as c:
        try:
            c.send(data)
            if half_close:
                c.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # closed while we were still sending
        closed, got = c.wait_closed(timeout)
    assert closed, f"connection still open {timeout}s after {len(data)} bytes (got {len(got)} bytes back)"
    return got


def responses(data):
    """Splits answered bytes into response frames (correlation id, body); all must be complete."""
    out, pos = [], 0
    while pos < len(data):
        r = wire.Reader(data[pos:])
        size = r.i32()
        assert 4 <= size <= r.remaining(), f"malformed response frame (size {size})"
        body = r.take(size)
        out.append((int.from_bytes(body[:4], "big", signed=True), body[4:]))
        pos += 4 + size
    return out


# ---------------------------------------------------------------- framing


@pytest.mark.parametrize("size,api_key", [
    (0x7FFFFFFF, wire.METADATA),
    (0x7FFFFFFF, wire.PRODUCE),
    (MAX_REQUEST_BYTES + 1, wire.PRODUCE),
    (9 << 20, wire.METADATA),  # above the admin-request limit
    (-1, wire.METADATA),
    (-0x80000000, wire.METADATA),
    (0, wire.METADATA),
    (3, wire.METADATA),
])
def test_bad_size_prefix_closes_the_connection(module_gateway, size, api_key):
    got = send_expect_close(module_gateway, wire.i32(size) + wire.i16(api_key) + wire.i16(1) + wire.i32(1), half_close=False)
    assert got == b"", "answered a frame with an invalid size"
    assert_healthy(module_gateway)


def test_oversized_size_prefix_alone_closes_the_connection(module_gateway):
    """Kafka rejects a frame as soon as it has read the 4-byte size."""
    got = send_expect_close(module_gateway, wire.i32(0x7FFFFFFF), half_close=False)
    assert got == b""
    assert_healthy(module_gateway)


def test_truncated_frames(module_gateway):
    gw = module_gateway
    # size 100, 10 bytes, then gone
    with wire.Conn(gw.port) as c:
        c.send(wire.i32(100) + b"\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff")
    # the same, half-closed: the gateway sees the end of stream inside the frame and closes
    assert send_expect_close(gw, wire.i32(100) + b"\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff") == b""
    # a header cut inside the size or the API key
    assert send_expect_close(gw, b"\x00\x00") == b""
    assert send_expect_close(gw, wire.i32(20) + b"\x00") == b""
    # a complete request followed by a partial one: the first is answered, then the close
    full = wire.request(wire.METADATA, 1, 99, wire.metadata_v1())
    got = responses(send_expect_close(gw, full + full[:9]))
    assert [corr for corr, _ in got] == [99]
    assert_healthy(gw)


def test_random_bytes(module_gateway):
    gw = module_gateway
    rng = random.Random(20261123)
    for _ in range(20):
        send_expect_close(gw, rng.randbytes(rng.randint(1, 64 << 10)))
    # well-framed requests with random headers and bodies for APIs that answer at once
    # (no Fetch/Produce/group APIs: those may legitimately wait or stay silent)
    apis = [2, 3, 18, 19, 20, 21, 22, 32, 33, 37, 44, 60]
    for i in range(300):
        key = rng.choice(apis)
        lo, hi = DOCUMENTED[key]
        version = rng.randint(lo, hi) if i % 4 else rng.randint(-5, 200)
        payload = wire.i16(key) + wire.i16(version) + wire.i32(i) + rng.randbytes(rng.randint(0, 300))
        for corr, _ in responses(send_expect_close(gw, wire.i32(len(payload)) + payload)):
            assert corr == i, "answer with a correlation id that was never sent"
    assert_healthy(gw)


def test_mutated_valid_requests(module_gateway):
    gw = module_gateway
    topic = create_topic(gw.bootstrap, unique("mutate"))
    rng = random.Random(7)
    samples = [
        wire.request(wire.METADATA, 1, 1, wire.metadata_v1([topic])),
        wire.request(wire.LIST_OFFSETS, 1, 2, wire.list_offsets_v1(topic, 0, -1)),
        wire.request(wire.PRODUCE, 3, 3, wire.produce_v3(topic, 0, wire.record_batch([(b"k", b"v", [])]))),
        wire.request(wire.API_VERSIONS, 0, 4, b""),
    ]
    for i in range(400):
        frame = bytearray(samples[i % len(samples)])
        for _ in range(rng.randint(1, 5)):
            frame[rng.randrange(4, len(frame))] = rng.randrange(256)
        responses(send_expect_close(gw, bytes(frame)))
    assert_healthy(gw)


# ---------------------------------------------------------------- API keys and versions


@pytest.mark.parametrize("api_key,version", [(9999, 0), (-1, 0), (75, 0), (wire.METADATA, 99), (wire.PRODUCE, 2), (wire.FETCH, 3)])
def test_unknown_api_or_version_closes_the_connection(module_gateway, api_key, version):
    frame = wire.request(api_key, version, 5, b"\x00" * 16)
    assert send_expect_close(module_gateway, frame, half_close=False) == b""
    assert_healthy(module_gateway)


@pytest.mark.parametrize("version,flexible", [(127, False), (127, True), (4, True)])
def test_api_versions_unsupported_version_gets_the_v0_fallback(module_gateway, version, flexible):
    body = wire.compact_string("compat-tests") + wire.compact_string("1.0") + wire.uvarint(0) if flexible else b""
    with wire.Conn(module_gateway.port) as c:
        c.send(wire.request(wire.API_VERSIONS, version, 31, body, flexible_header=flexible))
        corr, resp = c.recv_response()
        assert corr == 31
        err, keys = wire.parse_api_versions_v0(resp)
        assert err == UNSUPPORTED_VERSION
        assert keys and keys[wire.API_VERSIONS] == (0, 3)
        assert keys[wire.PRODUCE] == DOCUMENTED[wire.PRODUCE]
        # the connection stays usable: the client retries at a version both support
        err, keys = wire.parse_api_versions_v0(c.call(wire.API_VERSIONS, 0, b"", correlation_id=32))
        assert err == 0 and keys[wire.API_VERSIONS] == (0, 3)


def test_api_versions_v3_lists_the_documented_apis(module_gateway):
    body = wire.compact_string("compat-tests") + wire.compact_string("1.0") + wire.uvarint(0)
    with wire.Conn(module_gateway.port) as c:
        err, keys = wire.parse_api_versions_v3(c.call(wire.API_VERSIONS, 3, body, flexible_header=True))
    assert err == 0
    assert {k: keys.get(k) for k in DOCUMENTED} == DOCUMENTED


# ---------------------------------------------------------------- record batches


def test_produce_with_corrupted_crc_is_rejected(module_gateway):
    gw = module_gateway
    topic = create_topic(gw.bootstrap, unique("crc"))
    good1 = wire.record_batch([(b"k1", b"first", [("h", b"1")]), (None, b"second", [])])
    good2 = wire.record_batch([(b"k3", b"third", [])])
    flipped_payload = bytearray(good1)
    flipped_payload[-3] ^= 0x01  # inside the last record's value: covered by the CRC
    flipped_crc = bytearray(good1)
    flipped_crc[17] ^= 0xFF  # the CRC field itself (bytes 17..20)
    truncated = good1[:-5]  # batch length says more than is there

    with wire.Conn(gw.port) as c:
        def produce(records, corr):
            return wire.parse_produce_v3(c.call(wire.PRODUCE, 3, wire.produce_v3(topic, 0, records), correlation_id=corr))[(topic, 0)]

        assert produce(good1, 1) == (0, 0)
        for n, bad in enumerate([bytes(flipped_payload), bytes(flipped_crc)]):
            err, base = produce(bad, 10 + n)
            assert err == CORRUPT_MESSAGE, f"corrupt batch {n}: error {err}"
            assert base == -1
        err, _ = produce(truncated, 20)
        assert err != 0, "a truncated batch was accepted"
        assert produce(good2, 30) == (0, 2), "a rejected batch took offsets"

    batches = wire.fetch_all_batches(gw.port, topic, 0)
    assert [(b["base_offset"], b["count"], b["crc_ok"]) for b in batches] == [(0, 2, True), (2, 1, True)]
    records = [r[1:] for b in batches for r in wire.parse_records(b["records_blob"], b["count"])]
    assert records == [(b"k1", b"first", [("h", b"1")]), (None, b"second", []), (b"k3", b"third", [])]
    assert_healthy(gw)


# ---------------------------------------------------------------- lengths inside bodies


def _hostile_bodies(topic):
    batch = wire.record_batch([(b"k", b"v", [])])
    header = wire.i16(wire.METADATA) + wire.i16(1) + wire.i32(61)

    def framed(payload):
        return wire.i32(len(payload)) + payload

    return {
        "metadata topics count -2": wire.request(wire.METADATA, 1, 61, wire.i32(-2)),
        "metadata topics count 2^31-1": wire.request(wire.METADATA, 1, 61, wire.i32(0x7FFFFFFF)),
        "metadata topic name length -5": wire.request(wire.METADATA, 1, 61, wire.i32(1) + wire.i16(-5)),
        "metadata topic name length 32767": wire.request(wire.METADATA, 1, 61, wire.i32(1) + wire.i16(0x7FFF) + b"abc"),
        "client id length -2": framed(header + wire.i16(-2) + wire.i32(-1)),
        "client id length 32767": framed(header + wire.i16(0x7FFF) + b"x" * 10),
        "produce topics count 2^31-1": wire.request(wire.PRODUCE, 3, 62, wire.string(None) + wire.i16(-1) + wire.i32(1000) + wire.i32(0x7FFFFFFF)),
        "produce records length 2^31-1": wire.request(wire.PRODUCE, 3, 62, wire.string(None) + wire.i16(-1) + wire.i32(1000) + wire.array([wire.string(topic) + wire.array([wire.i32(0) + wire.i32(0x7FFFFFFF) + batch])])),
        "produce records length -7": wire.request(wire.PRODUCE, 3, 62, wire.string(None) + wire.i16(-1) + wire.i32(1000) + wire.array([wire.string(topic) + wire.array([wire.i32(0) + wire.i32(-7) + batch])])),
        "list offsets partitions count 2^31-1": wire.request(wire.LIST_OFFSETS, 1, 63, wire.i32(-1) + wire.array([wire.string(topic) + wire.i32(0x7FFFFFFF)])),
        "create topics count 2^31-1": wire.request(wire.CREATE_TOPICS, 2, 64, wire.i32(0x7FFFFFFF) + wire.i32(1000) + wire.i8(0)),
        "create topics configs count -3": wire.request(wire.CREATE_TOPICS, 2, 64, wire.array([wire.string(unique("neg")) + wire.i32(1) + wire.i16(1) + wire.i32(0) + wire.i32(-3)]) + wire.i32(1000) + wire.i8(0)),
        "api versions v3 compact length 2^32-1": wire.request(wire.API_VERSIONS, 3, 65, b"\xff\xff\xff\xff\x0f", flexible_header=True),
    }


def test_negative_and_huge_lengths_in_bodies(module_gateway):
    gw = module_gateway
    topic = create_topic(gw.bootstrap, unique("lengths"))
    hw_before = watermark(gw, topic)
    for name, frame in _hostile_bodies(topic).items():
        got = responses(send_expect_close(gw, frame))
        assert len(got) <= 1, name
        for corr, _ in got:
            assert corr == int.from_bytes(frame[8:12], "big", signed=True), f"{name}: wrong correlation id"
        assert gw.alive(), f"gateway died on: {name}\n{gw.log_tail()}"
    assert watermark(gw, topic) == hw_before, "a malformed produce request stored data"
    assert_healthy(gw)


def watermark(gw, topic):
    with wire.Conn(gw.port) as c:
        err, _, off = wire.parse_list_offsets_v1(c.call(wire.LIST_OFFSETS, 1, wire.list_offsets_v1(topic, 0, -1)))[(topic, 0)]
    assert err == 0
    return off


# ---------------------------------------------------------------- resources


def test_stalled_partial_frames_do_not_starve_other_clients(gateway):
    """Eight connections each announce a maximal Produce frame and send a few bytes of it: memory
    stays bounded and a Metadata request on another connection is still answered."""
    stalled = []
    try:
        for i in range(8):
            c = wire.Conn(gateway.port)
            c.send(wire.i32(MAX_REQUEST_BYTES) + wire.i16(wire.PRODUCE) + wire.i16(3) + wire.i32(i) + wire.string(None))
            stalled.append(c)
        # let the gateway read those headers (it preallocates: RSS jumps), at most 3 s
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and gateway.rss_kib() < 400 << 10:
            time.sleep(0.05)
        time.sleep(0.2)
        with wire.Conn(gateway.port) as c:
            c.send(wire.request(wire.METADATA, 1, 77, wire.metadata_v1()))
            try:
                corr, _ = c.recv_response(timeout=10)
            except TimeoutError:
                pytest.fail(f"Metadata not answered within 10 s while 8 connections hold partial frames "
                            f"(gateway RSS {gateway.rss_kib()} KiB)")
            assert corr == 77
        assert gateway.rss_kib() < RSS_LIMIT_KIB
    finally:
        for c in stalled:
            c.close()
    assert_healthy(gateway)


def test_module_gateway_survived(module_gateway):
    """Runs last in this module: after everything above, the shared gateway is healthy."""
    assert_healthy(module_gateway)
