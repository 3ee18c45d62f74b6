"""Security benchmark (confluent-kafka / librdkafka against one release gateway, same run):
produce throughput and p50/p99 acknowledgement latency over PLAINTEXT and over SASL_SSL
(SCRAM-SHA-512, TLS 1.3), alternating the two for `--rounds` rounds so both see the same noise.
Prints figures and the SASL_SSL / PLAINTEXT ratios; judges nothing.

    cargo build --release -p gateway
    python3 compat-tests/bench/security_bench.py [--messages 200000] [--rounds 2]
"""
import argparse
import os
import sys
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "compat-tests"))
from certs import CA  # noqa: E402
from conftest import Procs, free_port  # noqa: E402
from helpers import pct  # noqa: E402

VALUE = b"x" * 1024


def run(conf, topic, n, rate=0):
    """(MB/s, p50 ms, p99 ms) of n acks=all messages, as fast as possible or at `rate` per second."""
    lat = []
    p = Producer({**conf, "linger.ms": 5, "acks": "all", "enable.idempotence": True})

    def report(err, msg, sent):
        if err is None:
            lat.append(time.perf_counter() - sent)
    start = time.perf_counter()
    for i in range(n):
        if rate:
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        sent = time.perf_counter()
        while True:
            try:
                p.produce(topic, VALUE, on_delivery=lambda err, msg, s=sent: report(err, msg, s))
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    secs = time.perf_counter() - start
    assert len(lat) == n, f"{n - len(lat)} not delivered"
    return n * len(VALUE) / secs / 1e6, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--paced-rate", type=int, default=2000, help="messages per second of the latency run")
    ap.add_argument("--paced-secs", type=int, default=10)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/gateway"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="security-bench-")
    ca = CA(os.path.join(work, "pki"))
    cert, key = ca.issue("server", [("CN", "localhost")], server=True)
    port = free_port()
    cfg = os.path.join(work, "gateway.toml")
    with open(cfg, "w") as f:
        f.write(f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n[sasl.users]\nbench = "bench-pw"\n'
                f'[[listeners]]\nname = "SASL_SSL"\nlisten = "127.0.0.1:{port}"\nprotocol = "SASL_SSL"\n')
    procs = Procs(work)
    try:
        gw = procs.gateway("--config", cfg, bin=a.bin, log="warn", env={})
        plain = {"bootstrap.servers": gw.bootstrap}
        secure = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                  "sasl.username": "bench", "sasl.password": "bench-pw", "ssl.ca.location": ca.pem}
        admin = AdminClient(plain)
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in ("plain", "secure")]).values():
            f.result(30)
        confs = {"PLAINTEXT": (plain, "plain"), "SASL_SSL": (secure, "secure")}
        for label, n, rate in [("full speed", a.messages, 0), (f"{a.paced_rate} msg/s", a.paced_rate * a.paced_secs, a.paced_rate)]:
            rows = {name: [] for name in confs}
            for _ in range(a.rounds):
                for name, (conf, topic) in confs.items():
                    rows[name].append(run(conf, topic, n, rate))
            print(f"produce {label}, {n} x 1 KiB, acks=all, idempotent, best of {a.rounds} alternating rounds")
            print(f"{'listener':<12} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            best = {}
            for name, rs in rows.items():
                best[name] = max(rs, key=lambda r: r[0]) if not rate else min(rs, key=lambda r: r[2])
                print(f"{name:<12} {best[name][0]:8.1f} {best[name][1]:8.2f} {best[name][2]:8.2f}")
            print(f"SASL_SSL / PLAINTEXT: throughput {best['SASL_SSL'][0] / best['PLAINTEXT'][0]:.2f}, "
                  f"p99 {best['SASL_SSL'][2] / best['PLAINTEXT'][2]:.2f}\n")
    finally:
        procs.close()


if __name__ == "__main__":
    main()
