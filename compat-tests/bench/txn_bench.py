"""Transactions benchmark (confluent-kafka / librdkafka against one release gateway, same run):
produce throughput of an idempotent producer and of a transactional one (commits every
`--per-txn` messages, with the commit latency), and the end-to-end latency of a read_committed
consumer (from the start of commit_transaction to the record's arrival, one-record
transactions). Prints figures; judges nothing.

    cargo build --release -p gateway
    python3 compat-tests/bench/txn_bench.py [--messages 200000] [--per-txn 1000]
"""
import argparse
import os
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "compat-tests"))
from conftest import Procs  # noqa: E402  (the compat tests' process harness)
from helpers import pct  # noqa: E402

VALUE = b"x" * 1024


def produce(p, topic, n):
    for _ in range(n):
        while True:
            try:
                p.produce(topic, VALUE, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--per-txn", type=int, default=1000)
    ap.add_argument("--latency-txns", type=int, default=300)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/gateway"))
    a = ap.parse_args()
    procs = Procs(tempfile.mkdtemp(prefix="txn-bench-"))
    try:
        bootstrap = procs.gateway(bin=a.bin, log="warn", env={}).bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in ("idem", "txn", "lat")]).values():
            f.result(30)
        base = {"bootstrap.servers": bootstrap, "linger.ms": 10, "acks": "all"}

        p = Producer({**base, "enable.idempotence": True})
        t = time.perf_counter()
        produce(p, "idem", a.messages)
        assert p.flush(120) == 0
        idem = a.messages * len(VALUE) / (time.perf_counter() - t) / 1e6
        print(f"idempotent produce 1 KiB        {idem:7.1f} MB/s", flush=True)

        p = Producer({**base, "transactional.id": "bench"})
        p.init_transactions(30)
        commits = []
        t = time.perf_counter()
        for _ in range(a.messages // a.per_txn):
            p.begin_transaction()
            produce(p, "txn", a.per_txn)
            t0 = time.perf_counter()
            p.commit_transaction(60)
            commits.append(time.perf_counter() - t0)
        txn = a.messages * len(VALUE) / (time.perf_counter() - t) / 1e6
        print(f"transactional produce 1 KiB     {txn:7.1f} MB/s  ({txn / idem:.2f}x idempotent, {a.per_txn} per transaction)  "
              f"commit p50 {pct(commits, 0.5) * 1e3:.1f} ms  p99 {pct(commits, 0.99) * 1e3:.1f} ms", flush=True)

        # read_committed end to end: one-record transactions, timed from commit to arrival
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lat", "isolation.level": "read_committed",
                      "fetch.wait.max.ms": 100, "enable.auto.commit": False})
        c.assign([TopicPartition("lat", 0, 0)])
        arrived = {}
        stop = threading.Event()

        def consume():
            while not stop.is_set():
                m = c.poll(0.05)
                if m is not None and m.error() is None:
                    arrived[int(m.value())] = time.perf_counter()

        th = threading.Thread(target=consume, daemon=True)
        th.start()
        started = {}
        for i in range(a.latency_txns):
            p.begin_transaction()
            p.produce("lat", str(i).encode(), partition=0)
            started[i] = time.perf_counter()
            p.commit_transaction(60)
            time.sleep(0.01)
        deadline = time.monotonic() + 30
        while len(arrived) < a.latency_txns and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        th.join()
        c.close()
        lat = [arrived[i] - started[i] for i in arrived]
        print(f"read_committed end to end       p50 {pct(lat, 0.5) * 1e3:.1f} ms  p99 {pct(lat, 0.99) * 1e3:.1f} ms  "
              f"({len(lat)} of {a.latency_txns} one-record transactions)", flush=True)
    finally:
        procs.close()


if __name__ == "__main__":
    main()
