"""Operations: the gateway's /metrics, /healthz and /readyz endpoints, and the Grafana dashboard.

Drives real traffic (produce, a consumer group with commits, a protocol error), scrapes
/metrics, and checks that every metric the dashboard queries is exported with at least one
sample, and that the dashboard only names metrics the binaries declare.
"""
import json
import os
import re
import socket
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer

from conftest import ROOT

DASHBOARD = os.path.join(ROOT, "grafana", "dashboards", "wal-gateway.json")


@pytest.fixture()
def ops_gateway(procs):
    # ready="tcp": /readyz is what test_health_endpoints checks, so it is not waited for
    gw = procs.gateway("--group-initial-rebalance-delay-ms", "100", ready="tcp")
    return gw.bootstrap, gw.metrics_url


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


QUORUM_ROW = "QuorumBuffer (LogStore)"


def _dashboard_metrics(rows=None):
    """Metric names the dashboard queries (only in panels under the given rows, if any)."""
    dash = json.load(open(DASHBOARD))
    exprs, row = [], None
    for p in dash["panels"]:
        if p["type"] == "row":
            row = p["title"]
            continue
        if rows is None or row in rows:
            exprs += [t["expr"] for t in p.get("targets", [])]
    names = set()
    for e in exprs:
        for m in re.findall(r"\b((?:gateway|wal)_[a-z0-9_]+)", e):
            names.add(re.sub(r"_(bucket|sum|count)$", "", m))
    return dash, names


def _drive_traffic(bootstrap):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(200):
        p.produce("ops-topic", f"value-{i}".encode(), key=str(i).encode())
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ops-group", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["ops-topic"])
    got = 0
    deadline = time.time() + 60
    while got < 100 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
    assert got == 100
    c.commit(asynchronous=False)  # committed at 100 of 200: lag 100
    c.close()
    # a protocol error: a frame with an unknown API key closes that connection
    s = socket.create_connection(bootstrap.split(":"), 5)
    s.sendall(b"\x00\x00\x00\x0a\x27\x0f\x00\x00\x00\x00\x00\x01\xff\xff")
    s.settimeout(5)
    try:
        s.recv(16)
    except OSError:
        pass
    s.close()


def test_health_endpoints(ops_gateway):
    _, http = ops_gateway
    assert _get(http + "/healthz") == (200, "ok\n")
    assert _get(http + "/readyz") == (200, "ready\n")
    assert _get(http + "/nope")[0] == 404


def test_every_dashboard_metric_is_exported_with_data(ops_gateway):
    bootstrap, http = ops_gateway
    _drive_traffic(bootstrap)
    status, text = _get(http + "/metrics")
    assert status == 200
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, 1)[0]
            samples.setdefault(re.sub(r"_(bucket|sum|count)$", "", name), []).append(line)
    # QuorumBuffer panels are checked by test_quorum.py against a gateway in that mode.
    dash, _ = _dashboard_metrics()
    rows_here = [p["title"] for p in dash["panels"] if p["type"] == "row" and p["title"] != QUORUM_ROW]
    _, names = _dashboard_metrics(rows_here)
    assert len(names) >= 20, names
    missing = sorted(n for n in names if n not in samples)
    assert not missing, f"dashboard queries metrics without data: {missing}"
    lag = [l for l in samples["gateway_group_lag"] if 'group="ops-group"' in l]
    assert lag and float(lag[0].rsplit(" ", 1)[1]) == 100.0, lag
    # current schema, rows for each area
    assert dash["schemaVersion"] >= 36
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Clients", "Throughput and latency", "WAL and object storage", "Metadata", "Consumer lag", "Cluster", "Object-store cost", "Compaction", "Security", QUORUM_ROW]


def test_dashboard_names_only_declared_metrics():
    """Every metric the dashboard uses is declared in a crate's metrics.rs."""
    declared = set()
    for path in ("gateway/src/metrics.rs", "wal-core/src/metrics.rs"):
        declared |= set(re.findall(r'"((?:gateway|wal)_[a-z0-9_]+)"', open(os.path.join(ROOT, path)).read()))
    _, names = _dashboard_metrics()
    assert names <= declared, sorted(names - declared)
