"""Consumer-group benchmark (confluent-kafka / librdkafka against the gateway): OffsetCommit
throughput and latency for one group committing 100 partitions per request, and the time a
3-member group takes to rebalance after a member leaves. Prints figures; judges nothing.

    cargo build --release -p gateway
    python3 compat-tests/bench/group_bench.py [--commits 2000]
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "compat-tests"))
from conftest import Procs  # noqa: E402  (the compat tests' process harness)
from helpers import pct  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/gateway"))
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="group-bench-")
    procs = Procs(data)
    try:
        bootstrap = procs.gateway("--group-initial-rebalance-delay-ms", "0", bin=a.bin, log="warn", env={}).bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic("commits", 100, 1), NewTopic("rebalance", 6, 1)]).values():
            f.result(30)

        # OffsetCommit: one group, 100 partitions per commit, synchronous.
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "committer", "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition("commits", p, 0) for p in range(100)], asynchronous=False)  # warm-up
        lat = []
        t = time.perf_counter()
        for i in range(a.commits):
            t0 = time.perf_counter()
            c.commit(offsets=[TopicPartition("commits", p, i + 1) for p in range(100)], asynchronous=False)
            lat.append(time.perf_counter() - t0)
        secs = time.perf_counter() - t
        c.close()
        print(f"offset commit, 100 partitions/request: {a.commits / secs:8.0f} commits/s  {a.commits * 100 / secs:9.0f} partition offsets/s  "
              f"p50 {pct(lat, 0.5) * 1e3:.2f} ms  p99 {pct(lat, 0.99) * 1e3:.2f} ms", flush=True)

        # Rebalance: 3 members; one leaves; time until both others hold all 6 partitions again.
        state = {}
        lock = threading.Lock()
        stop = threading.Event()
        leave = threading.Event()

        def member(name):
            def on_assign(cons, parts):
                with lock:
                    state[name] = (time.perf_counter(), len(parts))

            def on_revoke(cons, parts):
                with lock:
                    state[name] = (time.perf_counter(), 0)

            cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "rebalancer", "session.timeout.ms": 10000,
                             "heartbeat.interval.ms": 500, "enable.auto.commit": False})
            cons.subscribe(["rebalance"], on_assign=on_assign, on_revoke=on_revoke)
            deadline = time.time() + 120
            while not stop.is_set() and time.time() < deadline:
                cons.poll(0.05)
                if name == "m3" and leave.is_set():
                    break
            cons.close()
            with lock:
                state.pop(name, None)

        threads = [threading.Thread(target=member, args=(f"m{i}",)) for i in (1, 2, 3)]
        for th in threads:
            th.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            with lock:
                if len(state) == 3 and sum(n for _, n in state.values()) == 6:
                    break
            time.sleep(0.05)
        else:
            raise SystemExit("group never stabilised with 3 members")
        t_leave = time.perf_counter()
        leave.set()
        deadline = time.time() + 60
        while time.time() < deadline:
            with lock:
                live = {k: v for k, v in state.items() if k != "m3"}
                if len(live) == 2 and sum(n for _, n in live.values()) == 6 and all(ts > t_leave for ts, _ in live.values()):
                    done = max(ts for ts, _ in live.values())
                    break
            time.sleep(0.01)
        else:
            raise SystemExit("group never rebalanced after the leave")
        print(f"rebalance after a member leaves (3 -> 2 members, 6 partitions): {(done - t_leave) * 1e3:.0f} ms", flush=True)
        stop.set()
        for th in threads:
            th.join(30)
    finally:
        procs.close(term_timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
