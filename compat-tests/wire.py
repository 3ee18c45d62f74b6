"""Hand-made Kafka wire protocol: just enough to build requests byte by byte and read the answers.

Used by the raw-socket tests (test_bad_input.py) and to look at the stored record batches as a
client would receive them (codec bits, CRC32C, producer ids) in test_confluent.py. Everything is
big-endian `struct.pack`; only the request/response versions used by the tests are covered.
"""
import socket
import struct
import time

# API keys
PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, CREATE_TOPICS, INIT_PRODUCER_ID = 0, 1, 2, 3, 18, 19, 22

# ---------------------------------------------------------------- primitives


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    """int16-length string; None is the null string (-1)."""
    if s is None:
        return i16(-1)
    b = s.encode() if isinstance(s, str) else s
    return i16(len(b)) + b


def kbytes(b):
    """int32-length bytes; None is null (-1)."""
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items):
    """int32 count followed by already-encoded items; None is the null array (-1)."""
    if items is None:
        return i32(-1)
    return i32(len(items)) + b"".join(items)


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v):
    """zig-zag signed varint (record fields)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


# ---------------------------------------------------------------- CRC32C (Castagnoli)

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------- record batch v2


def record_batch(records, base_timestamp=None, producer_id=-1, producer_epoch=-1, base_sequence=-1):
    """An uncompressed magic-2 batch; records are (key, value, [(hkey, hvalue)]) tuples. The
    timestamp defaults to now (an old one would make the data subject to retention.ms)."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    body = b""
    for i, (key, value, headers) in enumerate(records):
        r = i8(0) + varint(0) + varint(i)  # attributes, timestamp delta, offset delta
        r += varint(-1) if key is None else varint(len(key)) + key
        r += varint(-1) if value is None else varint(len(value)) + value
        r += varint(len(headers))
        for hk, hv in headers:
            hk = hk.encode()
            r += varint(len(hk)) + hk + varint(len(hv)) + hv
        body += varint(len(r)) + r
    after_crc = (
        i16(0)  # attributes: no compression, CreateTime, not transactional
        + i32(len(records) - 1)  # last offset delta
        + i64(base_timestamp)
        + i64(base_timestamp)
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(len(records))
        + body
    )
    crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # partition leader epoch, magic, crc, rest
    return i64(0) + i32(batch_length) + i32(-1) + i8(2) + struct.pack(">I", crc) + after_crc


class Reader:
    """Sequential big-endian reader over a response body."""

    def __init__(self, buf):
        self.buf = bytes(buf)
        self.pos = 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"short read: want {n} at {self.pos} of {len(self.buf)}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def kbytes(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def array(self, item):
        n = self.i32()
        return None if n < 0 else [item(self) for _ in range(n)]

    def uvarint(self):
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def varint(self):
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def compact_array(self, item):
        n = self.uvarint() - 1
        return None if n < 0 else [item(self) for _ in range(n)]

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def remaining(self):
        return len(self.buf) - self.pos


def parse_batches(data):
    """Splits a records blob into batch headers (a trailing partial batch is ignored, as Kafka
    clients do). Each batch dict carries `crc_ok` (CRC32C over attributes..end)."""
    out = []
    pos = 0
    while len(data) - pos >= 12:
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if length < 0 or pos + 12 + length > len(data):
            break
        raw = data[pos:pos + 12 + length]
        r = Reader(raw)
        b = {"base_offset": r.i64(), "length": r.i32(), "leader_epoch": r.i32(), "magic": r.i8(), "crc": r.u32()}
        crc_start = r.pos
        b.update(attributes=r.i16(), last_offset_delta=r.i32(), first_timestamp=r.i64(), max_timestamp=r.i64(),
                 producer_id=r.i64(), producer_epoch=r.i16(), base_sequence=r.i32(), count=r.i32())
        b["records_blob"] = raw[r.pos:]
        b["crc_ok"] = crc32c(raw[crc_start:]) == b["crc"]
        out.append(b)
        pos += 12 + length
    return out


def parse_records(blob, count):
    """Decodes the records of an uncompressed batch: [(offset_delta, key, value, headers)]."""
    r = Reader(blob)
    out = []
    for _ in range(count):
        length = r.varint()
        rec = Reader(r.take(length))
        rec.i8()
        rec.varint()  # timestamp delta
        delta = rec.varint()
        klen = rec.varint()
        key = None if klen < 0 else rec.take(klen)
        vlen = rec.varint()
        value = None if vlen < 0 else rec.take(vlen)
        headers = []
        for _ in range(rec.varint()):
            hk = rec.take(rec.varint()).decode()
            hvlen = rec.varint()
            headers.append((hk, None if hvlen < 0 else rec.take(hvlen)))
        out.append((delta, key, value, headers))
    return out


# ---------------------------------------------------------------- requests


def request(api_key, version, correlation_id, body, client_id="compat-tests", flexible_header=False):
    """A framed request: int32 size, header v1 (v2 with an empty tag buffer if flexible_header), body."""
    header = i16(api_key) + i16(version) + i32(correlation_id) + string(client_id)
    if flexible_header:
        header += uvarint(0)
    payload = header + body
    return i32(len(payload)) + payload


def metadata_v1(topics=None):
    return array(None if topics is None else [string(t) for t in topics])


def produce_v3(topic, partition, records, acks=-1, timeout_ms=10_000):
    return string(None) + i16(acks) + i32(timeout_ms) + array([string(topic) + array([i32(partition) + kbytes(records)])])


def fetch_v4(topic, partition, offset, max_bytes=8 << 20, max_wait_ms=100):
    return (i32(-1) + i32(max_wait_ms) + i32(1) + i32(max_bytes) + i8(0)
            + array([string(topic) + array([i32(partition) + i64(offset) + i32(max_bytes)])]))


def init_producer_id_v0():
    return string(None) + i32(60_000)  # no transactional id, transaction timeout


def list_offsets_v1(topic, partition, timestamp):
    return i32(-1) + array([string(topic) + array([i32(partition) + i64(timestamp)])])


# ---------------------------------------------------------------- responses


def parse_metadata_v1(body):
    r = Reader(body)
    brokers = r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string()))
    controller = r.i32()
    topics = r.array(lambda r: {
        "error": r.i16(), "name": r.string(), "internal": r.i8(),
        "partitions": r.array(lambda r: (r.i16(), r.i32(), r.i32(), r.array(Reader.i32), r.array(Reader.i32))),
    })
    return {"brokers": brokers, "controller": controller, "topics": topics}


def parse_produce_v3(body):
    """{(topic, partition): (error_code, base_offset)}"""
    r = Reader(body)
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            p, err, base, _log_append = r.i32(), r.i16(), r.i64(), r.i64()
            out[(name, p)] = (err, base)
    r.i32()  # throttle
    return out


def parse_fetch_v4(body):
    """{(topic, partition): (error_code, high_watermark, records bytes)}"""
    r = Reader(body)
    r.i32()  # throttle
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            p, err, hw, _lso = r.i32(), r.i16(), r.i64(), r.i64()
            r.array(lambda r: (r.i64(), r.i64()))  # aborted transactions
            out[(name, p)] = (err, hw, r.kbytes() or b"")
    return out


def parse_init_producer_id_v0(body):
    """(error_code, producer_id, producer_epoch)"""
    r = Reader(body)
    r.i32()  # throttle
    return r.i16(), r.i64(), r.i16()


def parse_list_offsets_v1(body):
    r = Reader(body)
    out = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            p, err, ts, off = r.i32(), r.i16(), r.i64(), r.i64()
            out[(name, p)] = (err, ts, off)
    return out


def parse_api_versions_v0(body):
    r = Reader(body)
    err = r.i16()
    keys = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
    return err, {k: (lo, hi) for k, lo, hi in keys}


def parse_api_versions_v3(body):
    r = Reader(body)
    err = r.i16()

    def item(r):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        r.skip_tags()
        return k, lo, hi

    keys = r.compact_array(item)
    r.i32()  # throttle
    r.skip_tags()
    return err, {k: (lo, hi) for k, lo, hi in keys}


# ---------------------------------------------------------------- connection


class Conn:
    """A blocking loopback connection with bounded reads."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _exact(self, n, deadline):
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"read {len(buf)} of {n} bytes")
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_response(self, timeout=None):
        """Reads one response frame; returns (correlation_id, rest of the body after a v0 header)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        size = struct.unpack(">i", self._exact(4, deadline))[0]
        assert 4 <= size <= 64 << 20, f"implausible response size {size}"
        body = self._exact(size, deadline)
        return struct.unpack(">i", body[:4])[0], body[4:]

    def call(self, api_key, version, body, correlation_id=7, **kw):
        self.send(request(api_key, version, correlation_id, body, **kw))
        corr, resp = self.recv_response()
        assert corr == correlation_id, f"correlation id {corr}, expected {correlation_id}"
        return resp

    def wait_closed(self, timeout=10.0):
        """True once the peer closed (EOF or reset) within `timeout`, draining any data first;
        returns (closed, bytes received before the close)."""
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(got)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return False, bytes(got)
            except (ConnectionResetError, BrokenPipeError):
                return True, bytes(got)
            if not chunk:
                return True, bytes(got)
            got += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fetch_all_batches(port, topic, partition, start=0, max_rounds=1000):
    """Every stored batch of a partition from `start` to the high watermark, via raw Fetch v4."""
    batches = []
    offset = start
    with Conn(port) as c:
        for _ in range(max_rounds):
            resp = parse_fetch_v4(c.call(FETCH, 4, fetch_v4(topic, partition, offset)))
            err, hw, records = resp[(topic, partition)]
            assert err == 0, f"fetch {topic}/{partition}@{offset}: error {err}"
            if offset >= hw:
                return batches
            got = [b for b in parse_batches(records) if b["base_offset"] + b["last_offset_delta"] >= offset]
            assert got, f"fetch at {offset} below high watermark {hw} returned no complete batch"
            batches.extend(got)
            offset = got[-1]["base_offset"] + got[-1]["last_offset_delta"] + 1
    raise AssertionError(f"more than {max_rounds} fetch rounds")
