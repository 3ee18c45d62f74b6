"""The fault matrix's parts: a fault-injecting HTTP proxy in front of moto_server, the workload
(an idempotent acks=all librdkafka producer and a consumer group committing offsets) and the
checker (in the style of Jepsen's Kafka queue workload).

The checker reads every partition from the beginning and counts, for the values the producer
sent (each unique): acknowledged values lost, values stored twice, acknowledged values stored at
another partition or offset than acknowledged, values read that were never sent, values of one
partition out of the order they were sent in, and committed group offsets that went backwards.
"""
import http.client
import http.server
import socketserver
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

LOOPBACK = "127.0.0.1"


class S3Proxy:
    """An HTTP proxy on a loopback port in front of moto_server whose `mode` decides what
    happens to each request: "ok" forwards; "slow" forwards after `delay_s`; "503" answers
    PUT and POST with 503 SlowDown (GETs still work); "ambiguous" forwards every second PUT,
    then closes the connection without answering (stored, answer lost); "down" closes every
    connection without answering. Counts what it did in `counts`."""

    def __init__(self, target_port, delay_s=0.5):
        self.target = target_port
        self.mode = "ok"
        self.delay_s = delay_s
        self.counts = {}
        self.lock = threading.Lock()
        self._flip = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                try:
                    self._forward()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _forward(self):
                body = self._body()
                action = proxy._decide(self.command)
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "503":
                    msg = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                if action == "slow":
                    time.sleep(proxy.delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(LOOPBACK, proxy.target, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                finally:
                    conn.close()
                if action == "lose-answer":
                    self.close_connection = True
                    return
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", r.getheader("Content-Length") or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self):
        return f"http://{LOOPBACK}:{self.port}"

    def _decide(self, method):
        with self.lock:
            mode = self.mode
            write = method in ("PUT", "POST")
            if mode == "down":
                action = "drop"
            elif mode == "503" and write:
                action = "503"
            elif mode == "slow":
                action = "slow"
            elif mode == "ambiguous" and method == "PUT":
                self._flip += 1
                action = "lose-answer" if self._flip % 2 else "forward"
            else:
                action = "forward"
            self.counts[action] = self.counts.get(action, 0) + 1
            return action

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Workload:
    """An idempotent acks=all producer sending unique values b"v-%08d" (increasing) over the
    topic's partitions, and a one-member consumer group committing what it consumed every
    half second, recording each partition's committed offsets as the coordinator reports them."""

    def __init__(self, bootstrap, topic):
        self.bootstrap, self.topic = bootstrap, topic
        self.acked = {}  # value -> (partition, offset)
        self.acked_at = {}  # value -> time.monotonic() of its acknowledgement
        self.sent = set()
        self.failed = []
        self.commits = {}  # partition -> [committed offsets as read back, in time order]
        self.commit_times = {}  # partition -> [time.monotonic() of each entry of commits]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self._guard, args=(f,), daemon=True) for f in (self._produce, self._consume)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _guard(self, f):
        try:
            f()
        except Exception as e:  # reported by finish()
            self.errors.append(f"{f.__name__}: {e!r}")

    def _produce(self):
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                      "message.timeout.ms": 180000, "topic.metadata.refresh.interval.ms": 1000})

        def cb(err, msg):
            with self.lock:
                if err is None:
                    self.acked[msg.value()] = (msg.partition(), msg.offset())
                    self.acked_at[msg.value()] = time.monotonic()
                else:
                    self.failed.append((msg.value(), str(err)))
        i = 0
        deadline = time.monotonic() + 900
        while not self.stop.is_set() and time.monotonic() < deadline:
            for _ in range(20):
                v = b"v-%08d" % i
                try:
                    p.produce(self.topic, v, key=b"k%d" % (i % 31), on_delivery=cb)
                except BufferError:
                    break
                with self.lock:
                    self.sent.add(v)
                i += 1
            p.poll(0.01)
        left = p.flush(200)
        if left:
            self.errors.append(f"{left} messages neither delivered nor failed")

    def _consume(self):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "matrix", "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 30000, "heartbeat.interval.ms": 1000,
                      "topic.metadata.refresh.interval.ms": 1000})
        c.subscribe([self.topic])
        last = time.monotonic()
        while not self.stop.is_set():
            m = c.poll(0.2)
            if time.monotonic() - last > 0.5:
                last = time.monotonic()
                try:
                    c.commit(asynchronous=False)
                    parts = c.assignment()
                    for tp in c.committed(parts, timeout=10):
                        if tp.offset >= 0:
                            with self.lock:
                                self.commits.setdefault(tp.partition, []).append(tp.offset)
                                self.commit_times.setdefault(tp.partition, []).append(time.monotonic())
                except Exception:
                    pass  # a commit during a fault may fail; the record shows what held
            del m
        c.close()

    def finish(self, timeout=240):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return [t for t in self.threads if t.is_alive()]


def read_back(bootstrap, topic):
    """Every record of every partition with its offset, and each partition's low watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-back-{time.time()}", "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=30)
    lows, ends = {}, {}
    for pid in md.topics[topic].partitions:
        lows[pid], ends[pid] = c.get_watermark_offsets(TopicPartition(topic, pid), timeout=30)
    c.assign([TopicPartition(topic, pid, lows[pid]) for pid in ends])
    got = {pid: [] for pid in ends}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and any((got[p][-1][0] + 1 if got[p] else lows[p]) < ends[p] for p in ends):
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got[m.partition()].append((m.offset(), m.value()))
    c.close()
    return got, lows, ends


# After a topic is re-created, an acknowledgement this much later may still be of a write to the
# deleted incarnation (answered late); only later ones must be in the new topic.
RECREATE_GRACE_S = 5.0


def check(workload, got, lows, ends, recreated=None):
    """The anomaly counts (every one should be 0) and what was checked. `recreated` is the
    (start, end) time.monotonic() window in which the topic was deleted and created again:
    values acknowledged before it belong to the deleted topic and must not come back
    (**resurrected**); values acknowledged within it (plus a grace) may be in either
    incarnation; offsets committed before it do not count against those after."""
    acked, sent = dict(workload.acked), set(workload.sent)
    resurrected = 0
    window = []
    if recreated:
        start, end = recreated
        at = dict(getattr(workload, "acked_at", {}))
        old = {v for v in acked if at.get(v, 0) < start}
        window = [v for v in acked if v not in old and at.get(v, 0) <= end + RECREATE_GRACE_S]
        stored_values = {v for msgs in got.values() for _, v in msgs}
        resurrected = sum(1 for v in old if v in stored_values)
        acked = {v: po for v, po in acked.items() if v not in old}
    stored = {}
    duplicated = unexpected = reordered = short = 0
    for part, msgs in got.items():
        if len(msgs) != ends[part] - lows[part]:
            short += 1
        prev = -1
        for o, v in msgs:
            if v in stored:
                duplicated += 1
            stored[v] = (part, o)
            if v not in sent:
                unexpected += 1
                continue
            seq = int(v.split(b"-")[1])
            if seq < prev:
                reordered += 1
            prev = max(prev, seq)
    # Values below a partition's start were removed on purpose (DeleteRecords, retention).
    maybe_old = set(window)
    lost = sum(1 for v, (p, o) in acked.items()
               if v not in stored and v not in maybe_old and not (o is not None and o < lows[p]))
    misplaced = sum(1 for v, (p, o) in acked.items()
                    if v in stored and (stored[v][0] != p or (o is not None and stored[v][1] != o)))
    regressions = 0
    for part, offs in workload.commits.items():
        times = getattr(workload, "commit_times", {}).get(part, [0] * len(offs))
        for (ta, a), (tb, b) in zip(zip(times, offs), list(zip(times, offs))[1:]):
            crosses = recreated and ta < recreated[1] + RECREATE_GRACE_S and tb >= recreated[0]
            if b < a and not crosses:
                regressions += 1
    out = {"acked": len(acked), "lost": lost, "duplicated": duplicated, "misplaced": misplaced,
           "unexpected": unexpected, "reordered": reordered, "commit_regressions": regressions,
           "unreadable_partitions": short, "failed_deliveries": len(workload.failed)}
    if recreated:
        out["resurrected"] = resurrected
    return out
