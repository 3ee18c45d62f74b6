"""The fault matrix: every cell runs the workload of `faults.py` (an idempotent acks=all
librdkafka producer, a consumer group committing offsets) against a gateway on etcd and
moto_server, lets a nemesis act, heals, and checks everything back: no acknowledged value lost,
none stored twice or elsewhere than acknowledged, none read that was never sent, each
partition in the order sent, no committed offset going backwards. Each cell runs in
MemoryBuffer and QuorumBuffer mode (three LogStores).

The object store is reached through `faults.S3Proxy` (slow, 503, ambiguous PUT, down) and etcd
through a TCP relay (cut) or paused with SIGSTOP; the gateway and a LogStore are killed or
paused; the topic is deleted and created again under load (topic-recreate: values of the deleted
topic must not come back, values acknowledged after the re-creation must all be there). CI runs
every cell with a short fault (FAULT_SECONDS, default 4 s);
`compat-tests/run-fault-matrix.sh` runs it longer and prints the table the README keeps.
The three-gateway SIGKILL/SIGSTOP cells are `test_cluster.py`.
"""
import os
import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import GATEWAY_BIN, require_servers
from faults import S3Proxy, Workload, check, read_back
from test_quorum import ENV

FAULT_S = float(os.environ.get("FAULT_SECONDS", "4"))
# Each cell's load runs before and after the fault for this long.
CALM_S = float(os.environ.get("CALM_SECONDS", "2"))
TOPIC = "matrix"
PARTITIONS = 3

CELLS = ["gateway-sigkill", "gateway-sigstop", "s3-down", "s3-slow", "s3-503", "s3-ambiguous", "etcd-cut",
         "etcd-pause", "logstore-kill", "delete-records", "topic-recreate"]


class Rig:
    """etcd (behind a relay), moto_server (behind the S3 proxy), LogStores in quorum mode, and
    one gateway, all on loopback."""

    def __init__(self, procs, quorum):
        require_servers()
        self.procs, self.quorum = procs, quorum
        self.etcd = procs.etcd()
        self.moto = procs.moto()
        self.s3 = S3Proxy(self.moto.ports["s3"])
        procs.add(self.s3)
        self.etcd_relay = procs.relay(self.etcd.ports["client"])
        self.common = ["--storage", "s3", "--s3-endpoint", self.s3.url(), "--s3-bucket", "matrix", "--s3-path-style", "true",
                       "--metadata", "etcd", "--etcd-endpoints", f"http://127.0.0.1:{self.etcd_relay.port}", "--log", "info",
                       # the cells create their topic; a deleted one must not come back with 1 partition
                       "--auto-create-topics", "false"]
        self.nodes = {}
        if quorum:
            for n in ("ls-a", "ls-b", "ls-c"):
                self.start_node(n)
        self.gw = procs.start("gateway", lambda p: [GATEWAY_BIN, *self.common, *(["--buffer", "quorum"] if quorum else []),
                                                    "--data-dir", os.path.join(procs.dir, "gw"), "--listen", p.addr("kafka"),
                                                    "--metrics-listen", p.addr("metrics")],
                              ports=("kafka", "metrics"), env=ENV, ready_timeout=60)
        self.bootstrap = f"127.0.0.1:{self.gw.ports['kafka']}"

    def start_node(self, name):
        self.nodes[name] = self.procs.start(
            name, lambda p: [GATEWAY_BIN, "logstore", *self.common, "--data-dir", os.path.join(self.procs.dir, name),
                             "--logstore-listen", p.addr("logstore"), "--logstore-node-id", name,
                             "--metrics-listen", p.addr("metrics")],
            ports=("logstore", "metrics"), env=ENV)

    def restart(self, p):
        p.spawn()
        p.wait_ready(keep_ports=True)


def nemesis(rig, cell, seconds):
    """Applies the cell's fault for `seconds`, then heals it."""
    if cell == "gateway-sigkill":
        rig.gw.kill()
        time.sleep(seconds)
        rig.restart(rig.gw)
    elif cell == "gateway-sigstop":
        rig.gw.pause()
        time.sleep(seconds)
        rig.gw.resume()
    elif cell.startswith("s3-"):
        rig.s3.mode = cell[3:]
        time.sleep(seconds)
        rig.s3.mode = "ok"
    elif cell == "etcd-cut":
        rig.etcd_relay.cut()
        time.sleep(seconds)
        rig.etcd_relay.heal()
    elif cell == "etcd-pause":
        rig.etcd.pause()
        time.sleep(seconds)
        rig.etcd.resume()
    elif cell == "logstore-kill":
        rig.nodes["ls-a"].kill()
        time.sleep(seconds)
        rig.restart(rig.nodes["ls-a"])
    elif cell == "delete-records":
        admin = AdminClient({"bootstrap.servers": rig.bootstrap})
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            tps = []
            for pid in range(PARTITIONS):
                from confluent_kafka import Consumer
                c = Consumer({"bootstrap.servers": rig.bootstrap, "group.id": "wm"})
                lo, hi = c.get_watermark_offsets(TopicPartition(TOPIC, pid), timeout=10)
                c.close()
                tps.append(TopicPartition(TOPIC, pid, (lo + hi) // 2))
            for f in admin.delete_records(tps).values():
                f.result(30)
            time.sleep(0.5)
    elif cell == "topic-recreate":
        # Deleted under load, absent for the fault's length, created again with its partitions.
        admin = AdminClient({"bootstrap.servers": rig.bootstrap})
        start = time.monotonic()
        admin.delete_topics([TOPIC])[TOPIC].result(30)
        time.sleep(seconds)
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
        return start, time.monotonic()
    else:
        raise AssertionError(f"unknown cell {cell}")
    return None


def run_cell(procs, cell, quorum, fault_s=FAULT_S, calm_s=CALM_S):
    rig = Rig(procs, quorum)
    admin = AdminClient({"bootstrap.servers": rig.bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
    w = Workload(rig.bootstrap, TOPIC).start()
    deadline = time.monotonic() + 60
    while len(w.acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(w.acked) >= 200, f"the load did not start: {w.errors}"
    time.sleep(calm_s)
    recreated = nemesis(rig, cell, fault_s)
    # After the heal, producing resumes.
    n = len(w.acked)
    deadline = time.monotonic() + 120
    while len(w.acked) < n + 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(calm_s)
    stuck = w.finish()
    assert not stuck and not w.errors, f"workload: {w.errors} (stuck threads: {stuck})\n{rig.gw.log_tail()}"
    got, lows, ends = read_back(rig.bootstrap, TOPIC)
    result = check(w, got, lows, ends, recreated)
    mode = "quorum" if quorum else "memory"
    print(f"\nFAULT-MATRIX {cell} {mode} " + " ".join(f"{k}={v}" for k, v in result.items()) + f" s3={rig.s3.counts}")
    anomalies = {k: v for k, v in result.items() if k not in ("acked", "failed_deliveries") and v}
    assert not anomalies, f"{cell} ({mode}): {anomalies} of {result['acked']} acknowledged"
    assert len(w.acked) > n, "nothing acknowledged after the fault healed"
    return result


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("quorum", [False, True], ids=["memory", "quorum"])
def test_fault_matrix(procs, cell, quorum):
    if cell == "logstore-kill" and not quorum:
        pytest.skip("MemoryBuffer mode has no LogStores")
    run_cell(procs, cell, quorum)


def test_the_checker_judges_a_recreated_topic_by_incarnation():
    """Values acknowledged before the deletion must not come back; those after the window must
    all be there; in the window either; commits may restart with the new topic."""
    class W:
        pass
    w = W()
    w.sent = {b"v-%08d" % i for i in range(6)}
    w.acked = {b"v-00000000": (0, 0), b"v-00000001": (0, 1), b"v-00000002": (0, 2), b"v-00000003": (0, 0),
               b"v-00000004": (0, 1)}
    w.acked_at = {b"v-00000000": 1, b"v-00000001": 2, b"v-00000002": 11, b"v-00000003": 30, b"v-00000004": 31}
    w.failed, w.commits, w.commit_times = [], {0: [2, 0, 1]}, {0: [5, 20, 32]}
    clean = {0: [(0, b"v-00000003"), (1, b"v-00000004")]}
    r = check(w, clean, {0: 0}, {0: 2}, recreated=(10, 12))
    assert {k: v for k, v in r.items() if v and k != "acked"} == {}, r
    back = {0: [(0, b"v-00000000"), (1, b"v-00000004")]}  # an old value resurrected, v-3 lost
    w.commits, w.commit_times = {0: [2, 0, 1, 0]}, {0: [5, 20, 32, 33]}
    r = check(w, back, {0: 0}, {0: 2}, recreated=(10, 12))
    assert (r["resurrected"], r["lost"], r["misplaced"], r["commit_regressions"]) == (1, 1, 0, 1), r


def test_the_checker_counts_every_kind_of_anomaly():
    """The checker itself, on made-up histories: each anomaly is counted, a clean one is clean."""
    class W:
        pass
    w = W()
    w.sent = {b"v-%08d" % i for i in range(6)}
    w.acked = {b"v-00000000": (0, 0), b"v-00000001": (0, 1), b"v-00000002": (1, 0), b"v-00000003": (1, 1),
               b"v-00000004": (1, None)}
    w.failed, w.commits = [], {0: [1, 2, 2], 1: [2]}
    clean = {0: [(0, b"v-00000000"), (1, b"v-00000001")], 1: [(0, b"v-00000002"), (1, b"v-00000003"), (2, b"v-00000004")]}
    r = check(w, clean, {0: 0, 1: 0}, {0: 2, 1: 3})
    assert {k: v for k, v in r.items() if v and k != "acked"} == {}, r
    bad = {0: [(0, b"v-00000001"), (1, b"v-00000000"), (2, b"v-00000009")],  # reordered, misplaced x2, unexpected
           1: [(0, b"v-00000002"), (1, b"v-00000002")]}  # duplicated; 3 and 4 lost
    w.commits = {0: [5, 3]}
    r = check(w, bad, {0: 0, 1: 0}, {0: 3, 1: 2})
    assert (r["lost"], r["duplicated"], r["misplaced"], r["unexpected"], r["reordered"], r["commit_regressions"]) == \
        (2, 1, 3, 1, 1, 1), r
    # Below the low watermark (DeleteRecords) a missing value is no loss.
    r = check(w, {0: [], 1: [(1, b"v-00000003")]}, {0: 2, 1: 1}, {0: 2, 1: 2})
    assert r["lost"] == 1, r  # only v-00000004 (offset unknown) counts
