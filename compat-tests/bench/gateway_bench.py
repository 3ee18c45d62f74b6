"""End-to-end benchmark: a real librdkafka producer and consumer (confluent-kafka) against the
gateway (release build, MemoryBuffer over a local directory), beside the wal-core benchmark on
the same directory, in the same run. Prints figures; judges nothing.

    cargo build --release -p gateway -p wal-core --examples
    python3 compat-tests/bench/gateway_bench.py [--mib 256] [--dir /tmp/gw-bench]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "compat-tests"))
from conftest import Procs  # noqa: E402  (the compat tests' process harness)
from helpers import pct  # noqa: E402


def produce(bootstrap, topic, size, total_bytes, extra=None):
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
            "queue.buffering.max.kbytes": 1048576, "queue.buffering.max.messages": 1000000}
    conf.update(extra or {})
    p = Producer(conf)
    payload = os.urandom(size)
    n = max(1, total_bytes // size)
    lat = []
    errors = []

    def done(err, msg, t0):
        if err is not None:
            errors.append(err)
        else:
            lat.append(time.perf_counter() - t0)

    t = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        while True:
            try:
                p.produce(topic, payload, on_delivery=lambda e, m, t0=t0: done(e, m, t0))
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    secs = time.perf_counter() - t
    if errors:
        raise SystemExit(f"{len(errors)} delivery errors, first: {errors[0]}")
    return n, secs, lat


def consume(bootstrap, topic, expect):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    nbytes = 0
    t = time.perf_counter()
    deadline = time.time() + 300
    while got < expect and time.time() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error() is None:
                got += 1
                nbytes += len(m.value())
    secs = time.perf_counter() - t
    c.close()
    return got, nbytes, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--dir", default="/tmp/gw-bench")
    a = ap.parse_args()
    total = a.mib << 20
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)

    print(f"== wal-core on {a.dir} ({a.mib} MiB per case)", flush=True)
    subprocess.run([os.path.join(ROOT, "target/release/examples/bench"), "--dir", os.path.join(a.dir, "wal"),
                    "--mib-per-case", str(a.mib)], check=True)

    print(f"== gateway end to end (librdkafka {__import__('confluent_kafka').libversion()[0]}, acks=all, idempotent)", flush=True)
    procs = Procs(a.dir)
    try:
        bootstrap = procs.gateway(workdir=os.path.join(a.dir, "gw"), bin=os.path.join(ROOT, "target/release/gateway"),
                                  log="warn", env={}).bootstrap
        n, secs, lat = produce(bootstrap, "bench-1k", 1024, total)
        print(f"{'produce 1 KiB':<28} {n * 1024 / secs / 1e6:>10.1f} MB/s {n / secs:>12.0f} msg/s  "
              f"p50 {pct(lat, 0.5) * 1e3:.2f} ms  p99 {pct(lat, 0.99) * 1e3:.2f} ms", flush=True)
        n100, secs100, lat100 = produce(bootstrap, "bench-100b", 100, total // 8)
        print(f"{'produce 100 B':<28} {n100 * 100 / secs100 / 1e6:>10.1f} MB/s {n100 / secs100:>12.0f} msg/s  "
              f"p50 {pct(lat100, 0.5) * 1e3:.2f} ms  p99 {pct(lat100, 0.99) * 1e3:.2f} ms", flush=True)
        got, nbytes, csecs = consume(bootstrap, "bench-1k", n)
        print(f"{'consumer catch-up 1 KiB':<28} {nbytes / csecs / 1e6:>10.1f} MB/s {got / csecs:>12.0f} msg/s  ({got}/{n} messages)", flush=True)
        if got != n:
            raise SystemExit("consumer did not read back every message")
    finally:
        procs.close(term_timeout=30)
    shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
