"""QuorumBuffer mode end to end: three `gateway logstore` processes, a real etcd, moto_server (S3)
and the gateway with `--buffer quorum`, driven by confluent-kafka (librdkafka).

- one LogStore SIGKILLed while an idempotent acks=all producer runs, later restarted: every
  acknowledged message is consumed exactly once, in order;
- two of three killed: produce fails with a retriable error (never a silent loss); when one
  returns, producing resumes;
- everything reaches object storage: after a graceful gateway stop, every LogStore is wiped
  (killed, restarted empty) and a fresh gateway on a new data directory reads it all back;
- SIGTERM with S3 and etcd gone: the gateway exits once its shutdown timeout has passed.
"""
import os
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import GATEWAY_BIN, require_servers

ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "NO_COLOR": "1"}


class Cluster:
    """etcd, moto_server, LogStores and a QuorumBuffer gateway, as processes of `procs` (the
    conftest harness: it closes them when the test ends)."""

    def __init__(self, procs):
        self.procs = procs
        self.tmp = procs.dir
        etcd, moto = procs.etcd(wait=False), procs.moto(wait=False)
        self.etcd, self.moto = etcd.wait_ready(), moto.wait_ready()
        self.common = ["--storage", "s3", "--s3-endpoint", self.moto.url("s3"), "--s3-bucket", "quorum",
                       "--s3-path-style", "true", "--metadata", "etcd",
                       "--etcd-endpoints", self.etcd.url("client"), "--log", "info"]
        self.nodes = {}
        self.node_metrics = {}
        self.gw = None

    def start_node(self, name, journal=False):
        common = list(self.common)
        extra = ["--logstore-data-dir", os.path.join(self.tmp, name, "journal")] if journal else []
        p = self.procs.start(name, lambda p: [GATEWAY_BIN, "logstore", *common, "--data-dir", os.path.join(self.tmp, name),
                                              "--logstore-listen", p.addr("logstore"), "--logstore-node-id", name,
                                              "--metrics-listen", p.addr("metrics"), *extra],
                             ports=("logstore", "metrics"), env=ENV)
        self.node_metrics[name] = p.url("metrics", "/metrics")
        self.nodes[name] = p
        return p

    def start_gateway(self, data="gw", extra=()):
        common = list(self.common)
        p = self.procs.start("gateway", lambda p: [GATEWAY_BIN, *common, "--buffer", "quorum",
                                                   "--data-dir", os.path.join(self.tmp, data),
                                                   "--listen", p.addr("kafka"), "--metrics-listen", p.addr("metrics"),
                                                   *extra],
                             ports=("kafka", "metrics"), env=ENV, ready_timeout=60)
        self.port, self.mport = p.ports["kafka"], p.ports["metrics"]
        self.gw = p
        return p


@pytest.fixture
def cluster(procs):
    require_servers()
    c = Cluster(procs)
    for n in ("ls-a", "ls-b", "ls-c"):
        c.start_node(n)
    c.start_gateway()
    return c


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
    c.gw.stop(timeout=60)
    assert c.gw.returncode == 0, c.gw.log_tail()
    for name in list(c.nodes):
        c.nodes[name].kill()
    for name in ("ls-a", "ls-b", "ls-c"):
        c.start_node(name)  # empty: a new incarnation
    c.start_gateway(data="gw-fresh")
    check_exactly_once(consume_all(c, "q3", 3000), acked)


def test_sigterm_with_object_store_and_etcd_gone_exits_after_the_shutdown_timeout(procs):
    """The handover after SIGTERM waits for the LogStores to store blocks in S3 and commits to
    etcd: with both gone it cannot finish, and the gateway exits (status 1) once
    --shutdown-timeout-ms has passed, instead of retrying for minutes."""
    require_servers()
    c = Cluster(procs)
    for n in ("ls-a", "ls-b", "ls-c"):
        c.start_node(n)
    c.start_gateway(extra=["--shutdown-timeout-ms", "3000"])
    p = producer(c)
    acked, errors = {}, []
    produce(p, "bye", [b"before-%04d" % i for i in range(200)], acked, errors)
    assert not errors and len(acked) == 200
    c.moto.kill()
    c.etcd.kill()
    for i in range(200):  # acknowledged by the LogStores, never stored
        p.produce("bye", b"after-%04d" % i)
    p.poll(1.0)
    started = time.monotonic()
    rc = c.gw.stop(timeout=30)
    took = time.monotonic() - started
    print(f"SIGTERM with the backends gone: exited with {rc} after {took:.1f} s (timeout 3 s)")
    assert rc == 1, f"an unfinished handover exits with status 1, got {rc}\n{c.gw.log_tail()}"
    assert "shutdown did not finish in time" in c.gw.log_tail(), c.gw.log_tail()


def test_journaled_logstores_survive_a_crash_of_everything(cluster):
    """With `--logstore-data-dir`, acknowledged data that never reached object storage survives
    SIGKILL of the gateway and of every LogStore (memory-only nodes lose exactly that: see
    test_everything_reaches_object_storage for what they keep)."""
    c = cluster
    # Everything goes through a relay that can cut object storage off (conftest.Relay); the
    # fixture's gateway and memory-only nodes make way for ones using it (and journaled nodes).
    relay = c.procs.relay(c.moto.ports["s3"])
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

