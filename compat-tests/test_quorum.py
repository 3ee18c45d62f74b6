"""QuorumBuffer mode end to end: three `gateway logstore` processes, a real etcd, moto_server (S3)
and the gateway with `--buffer quorum`, driven by confluent-kafka (librdkafka).

- one LogStore SIGKILLed while an idempotent acks=all producer runs, later restarted: every
  acknowledged message is consumed exactly once, in order;
- two of three killed: produce fails with a retriable error (never a silent loss); when one
  returns, producing resumes;
- everything reaches object storage: after a graceful gateway stop, every LogStore is wiped
  (killed, restarted empty) and a fresh gateway on a new data directory reads it all back.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import GATEWAY_BIN, free_port

ETCD = shutil.which("etcd")
MOTO = shutil.which("moto_server")
REQUIRE = os.environ.get("WAL_REQUIRE_SERVERS") == "1"


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Proc:
    def __init__(self, args, log_path, env=None):
        self.args, self.log_path, self.env = args, log_path, env
        self.p = None

    def start(self):
        log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  env=dict(os.environ, **(self.env or {})))
        log.close()
        return self

    def kill(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "NO_COLOR": "1"}


class Cluster:
    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.procs = []
        cport, pport = free_port(), free_port()
        self.etcd = Proc([ETCD, "--data-dir", os.path.join(self.tmp, "etcd"),
                          "--listen-client-urls", f"http://127.0.0.1:{cport}",
                          "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                          "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                          "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                          "--initial-cluster", f"default=http://127.0.0.1:{pport}", "--log-level", "error"],
                         os.path.join(self.tmp, "etcd.log")).start()
        self.procs.append(self.etcd)
        sport = free_port()
        self.moto = Proc([MOTO, "-H", "127.0.0.1", "-p", str(sport)], os.path.join(self.tmp, "moto.log")).start()
        self.procs.append(self.moto)
        assert wait_port(cport, 30), "etcd did not start"
        assert wait_port(sport, 30), "moto_server did not start"
        self.common = ["--storage", "s3", "--s3-endpoint", f"http://127.0.0.1:{sport}", "--s3-bucket", "quorum",
                       "--s3-path-style", "true", "--metadata", "etcd",
                       "--etcd-endpoints", f"http://127.0.0.1:{cport}", "--log", "info"]
        self.nodes = {}
        self.gw = None

    def start_node(self, name, journal=False):
        port, mport = free_port(), free_port()
        self.node_metrics = getattr(self, "node_metrics", {})
        self.node_metrics[name] = f"http://127.0.0.1:{mport}/metrics"
        extra = ["--logstore-data-dir", os.path.join(self.tmp, name, "journal")] if journal else []
        p = Proc([GATEWAY_BIN, "logstore", *self.common, "--data-dir", os.path.join(self.tmp, name),
                  "--logstore-listen", f"127.0.0.1:{port}", "--logstore-node-id", name,
                  "--metrics-listen", f"127.0.0.1:{mport}", *extra],
                 os.path.join(self.tmp, f"{name}.log"), ENV).start()
        self.procs.append(p)
        assert wait_port(port, 30), f"{name} did not start"
        self.nodes[name] = p
        return p

    def start_gateway(self, data="gw"):
        self.port, self.mport = free_port(), free_port()
        p = Proc([GATEWAY_BIN, *self.common, "--buffer", "quorum", "--data-dir", os.path.join(self.tmp, data),
                  "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", f"127.0.0.1:{self.mport}"],
                 os.path.join(self.tmp, "gateway.log"), ENV).start()
        self.procs.append(p)
        assert wait_port(self.port, 60), "gateway did not start\n" + self.log_tail("gateway")
        self.gw = p
        return p

    def log_tail(self, name, n=4000):
        try:
            with open(os.path.join(self.tmp, f"{name}.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        for p in reversed(self.procs):
            p.kill()


@pytest.fixture
def cluster(tmp_path):
    if not (ETCD and MOTO):
        if REQUIRE:
            pytest.fail("etcd and moto_server are required (WAL_REQUIRE_SERVERS=1)")
        pytest.skip("etcd or moto_server not installed")
    c = Cluster(tmp_path)
    try:
        for n in ("ls-a", "ls-b", "ls-c"):
            c.start_node(n)
        c.start_gateway()
        yield c
    finally:
        c.close()


def producer(c, **extra):
    conf = {"bootstrap.servers": f"127.0.0.1:{c.port}", "acks": "all", "enable.idempotence": True,
            "linger.ms": 2, "message.timeout.ms": 30000}
    conf.update(extra)
    return Producer(conf)


def produce(p, topic, values, acked, errors, deadline_s=60):
    """Produces values, recording acknowledged (value -> offset) and failed deliveries."""
    def cb(err, msg):
        if err is None:
            acked[msg.value()] = msg.offset()
        else:
            errors.append((msg.value(), err))
    for v in values:
        while True:
            try:
                p.produce(topic, v, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(deadline_s)
    assert left == 0, f"{left} messages neither delivered nor failed within {deadline_s}s"


def consume_all(c, topic, expect):
    cons = Consumer({"bootstrap.servers": f"127.0.0.1:{c.port}", "group.id": f"check-{time.time()}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    cons.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + 60
    while len(out) < expect and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is None or m.error():
            continue
        out.append((m.offset(), m.value()))
    cons.close()
    return out


def check_exactly_once(got, acked):
    offsets = [o for o, _ in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), "offsets increase, none twice"
    values = [v for _, v in got]
    assert len(values) == len(set(values)), "a message was consumed twice"
    by_value = dict((v, o) for o, v in got)
    missing = [v for v in acked if v not in by_value]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    for v, off in acked.items():
        assert by_value[v] == off, f"{v!r} acknowledged at {off}, read at {by_value[v]}"


def test_one_logstore_killed_and_restarted_loses_nothing(cluster):
    c = cluster
    p = producer(c)
    acked, errors = {}, []
    produce(p, "q1", [b"before-%06d" % i for i in range(2000)], acked, errors)
    c.nodes["ls-b"].kill()
    produce(p, "q1", [b"during-%06d" % i for i in range(2000)], acked, errors)
    c.start_node("ls-b")
    produce(p, "q1", [b"after-%06d" % i for i in range(2000)], acked, errors)
    assert not errors, f"{len(errors)} deliveries failed with one node down: {errors[:3]}"
    assert len(acked) == 6000
    check_exactly_once(consume_all(c, "q1", 6000), acked)
    # The dashboard's QuorumBuffer panels have data: the gateway's replication metrics, and the
    # LogStore nodes' own.
    from test_operations import QUORUM_ROW, _dashboard_metrics
    gw_metrics = urllib.request.urlopen(f"http://127.0.0.1:{c.mport}/metrics", timeout=10).read().decode()
    for name in _dashboard_metrics([QUORUM_ROW])[1]:
        assert name in gw_metrics, f"{name} not exported by the quorum gateway"
    texts = [urllib.request.urlopen(u, timeout=10).read().decode() for u in c.node_metrics.values()]
    for name in ("logstore_held_bytes", "logstore_appends_total"):
        # (the restarted node may not be in any segment's replica set yet)
        assert sum(name in t for t in texts) >= 2, f"{name} not exported by the LogStore nodes"
    # the designated uploader of each segment uploads (others only take over late blocks)
    assert any("logstore_uploads_total" in t for t in texts), "no LogStore node reports uploads"


def test_two_logstores_down_refuses_then_resumes(cluster):
    c = cluster
    p = producer(c)
    acked, errors = {}, []
    produce(p, "q2", [b"ok-%04d" % i for i in range(200)], acked, errors)
    assert not errors
    c.nodes["ls-a"].kill()
    c.nodes["ls-b"].kill()
    # No quorum: deliveries fail (retriable NOT_ENOUGH_REPLICAS retried until the timeout).
    short = producer(c, **{"message.timeout.ms": 5000, "enable.idempotence": False, "retries": 1000})
    failed = []
    produce(short, "q2", [b"refused-%02d" % i for i in range(5)], acked, failed, deadline_s=30)
    assert len(failed) == 5, f"produce succeeded with one LogStore up: {failed}"
    c.start_node("ls-a")
    produce(p, "q2", [b"resumed-%04d" % i for i in range(200)], acked, errors)
    assert not errors, f"producing did not resume: {errors[:3]}"
    got = consume_all(c, "q2", len(acked))
    check_exactly_once(got, acked)
    refused_read = [v for _, v in got if v.startswith(b"refused-")]
    assert not refused_read, "a refused message became readable"


def test_everything_reaches_object_storage(cluster):
    c = cluster
    p = producer(c)
    acked, errors = {}, []
    produce(p, "q3", [b"stored-%05d" % i for i in range(3000)], acked, errors)
    assert not errors
    # Graceful stop: the gateway waits until the replicas stored everything, then seals.
    c.gw.stop()
    assert c.gw.p.returncode == 0, c.log_tail("gateway")
    for name in list(c.nodes):
        c.nodes[name].kill()
    for name in ("ls-a", "ls-b", "ls-c"):
        c.start_node(name)  # empty: a new incarnation
    c.start_gateway(data="gw-fresh")
    check_exactly_once(consume_all(c, "q3", 3000), acked)



class S3Cut:
    """A TCP relay in front of moto_server that can cut object storage off: `cut()` drops every
    open connection (a request in flight never arrives) and swallows new ones, `heal()` relays
    again. (SIGSTOP on moto is no cut: the kernel keeps the requests and moto runs them later.)"""

    def __init__(self, target_port):
        import threading
        self.target = target_port
        self.cut_off = False
        self.conns = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(128)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(a)
                if self.cut_off:
                    continue  # held open, never answered
            try:
                b = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                a.close()
                continue
            with self.lock:
                self.conns.append(b)
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, x, y):
        try:
            while True:
                d = x.recv(65536)
                if not d or self.cut_off:
                    break
                y.sendall(d)
        except OSError:
            pass
        for s_ in (x, y):
            try:
                s_.close()
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.cut_off = True
            for s_ in self.conns:
                try:
                    s_.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def heal(self):
        with self.lock:
            self.cut_off = False

    def close(self):
        self.cut()
        self.srv.close()


def test_journaled_logstores_survive_a_crash_of_everything(cluster):
    """With `--logstore-data-dir`, acknowledged data that never reached object storage survives
    SIGKILL of the gateway and of every LogStore (memory-only nodes lose exactly that: see
    test_everything_reaches_object_storage for what they keep)."""
    c = cluster
    # Everything goes through a relay that can cut object storage off; the fixture's gateway and
    # memory-only nodes make way for ones using it (and journaled nodes).
    relay = S3Cut(int(c.common[c.common.index("--s3-endpoint") + 1].rsplit(":", 1)[1]))
    try:
        c.gw.kill()
        for name in list(c.nodes):
            c.nodes[name].kill()
        i = c.common.index("--s3-endpoint") + 1
        c.common[i] = f"http://127.0.0.1:{relay.port}"
        for name in ("ls-a", "ls-b", "ls-c"):
            c.start_node(name, journal=True)
        c.start_gateway(data="gw-relay")
        p = producer(c)
        acked, errors = {}, []
        produce(p, "q4", [b"stored-%05d" % i for i in range(500)], acked, errors)
        # Object storage is cut off: what follows is acknowledged by the replicas' journals only.
        relay.cut()
        produce(p, "q4", [b"journal-%05d" % i for i in range(1500)], acked, errors)
        assert not errors, f"{len(errors)} deliveries failed: {errors[:3]}"
        c.gw.kill()
        for name in list(c.nodes):
            c.nodes[name].kill()
        relay.heal()
        for name in ("ls-a", "ls-b", "ls-c"):
            c.start_node(name, journal=True)
        c.start_gateway(data="gw-relay")
        check_exactly_once(consume_all(c, "q4", len(acked)), acked)
    finally:
        relay.close()
