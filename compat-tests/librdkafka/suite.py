#!/usr/bin/env python3
"""librdkafka's own test suite against the gateway, with a report card.

Builds tests/test-runner from the librdkafka sources the rdkafka-sys crate ships (build.sh),
lists every broker test of the suite (tests/test.c's table, without the broker-less
TEST_F_LOCAL and manual ones), and runs each test number against a fresh gateway configured as
the suite assumes (num.partitions=4, no initial rebalance delay unless REBALANCE_DELAY_MS gives one,
auto-creation on; off for the
"noautocreate" scenario), in quick mode (-Q; --slow for the full mode), one test number at a
time under a time bound. The
outcome of every test is compared with expectations.txt:

    <test name>  pass                     must pass (an allow-listed test)
    <test name>  slow                     must pass in the suite's full mode (--slow); quick mode skips it
    <test name>  excluded  <reason>       not run: needs what the gateway cannot offer here
    <test name>  fails     <reason>       runs, known to fail today, with the reason

and a report card is printed (and written as Markdown with --card). The exit status is 1 when
an allow-listed test did not pass, or a test is missing from expectations.txt.

    suite.py --ci             the allow-listed tests marked ci in expectations.txt (CI)
    suite.py --all            every broker test, excluded ones too (the full card)
    suite.py --tests 0001,0012
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BROKER_VERSION = "3.9.0"  # the feature level the suite gates tests on (classic consumer protocol)
TIME_LIMIT_S = 240
# The suite's broker delays a new group's first rebalance by Kafka's default 3 s
# (group.initial.rebalance.delay.ms; 0113 counts on it); the gateway runs most tests without it,
# which saves those seconds per group. Tests whose consumers must land in one first generation
# get the default: 0118 expects its second consumer to join second, and on a loaded machine its
# JoinGroup could reach the coordinator first and be revoked in an ordinary rebalance.
REBALANCE_DELAY_MS = {"0118": 3000}
# Tests that need SASL run against a gateway whose listener is SASL_PLAINTEXT (PLAIN: the
# suite's librdkafka is built without OpenSSL, so without SCRAM;
# one configured user, sessions of 10 s so 0142 sees re-authentications), the suite's client
# configured to match.
SASL_TESTS = {"0135", "0142"}
SASL_USER, SASL_PASSWORD = "suite", "suite-secret"
SASL_REAUTH_MS = 10000


def build():
    out = subprocess.run([os.path.join(HERE, "build.sh")], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def suite_tests(tests_dir):
    """(name, number, scenario) of every broker test in test.c's table."""
    src = open(os.path.join(tests_dir, "test.c")).read()
    table = src[src.index("struct test tests[] = {"):]
    table = table[:table.index("{NULL}")]
    out = []
    for entry in re.split(r"\n\s*_TEST\(", table)[1:]:
        name = re.match(r"(\w+)", entry).group(1)
        flags = entry.split(",", 2)[1] if "," in entry else ""
        scenario = re.search(r'\.scenario\s*=\s*"([^"]+)"', entry)
        scenario = scenario.group(1).split(",")[0] if scenario else "default"
        num = name[:4]
        if "TEST_F_LOCAL" in flags or "TEST_F_MANUAL" in flags or not num.isdigit() or int(num) >= 8000:
            continue
        out.append((name, num, scenario))
    return out


def expectations():
    exp = {}
    path = os.path.join(HERE, "expectations.txt")
    for line in open(path) if os.path.exists(path) else []:
        if line.lstrip().startswith("#") or not line.strip():
            continue
        parts = line.split(None, 2)
        name, kind = parts[0], parts[1]
        tags = kind.split("+")
        exp[name] = {"kind": tags[0], "ci": "ci" in tags[1:], "reason": parts[2] if len(parts) > 2 else ""}
    return exp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_bin():
    env = os.environ.get("GATEWAY_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "gateway")
        if os.path.exists(path):
            return path
    sys.exit("no gateway binary: cargo build -p gateway (or set GATEWAY_BIN)")


class Gateway:
    def __init__(self, scenario, workdir, rebalance_delay_ms=0, sasl=False):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(dir=workdir)
        security = []
        if sasl:
            cfg = os.path.join(self.dir, "gateway.toml")
            with open(cfg, "w") as f:
                f.write(f'listener_protocol = "SASL_PLAINTEXT"\n[sasl]\nmechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]\n'
                        f'connections_max_reauth_ms = {SASL_REAUTH_MS}\n[sasl.users]\n{SASL_USER} = "{SASL_PASSWORD}"\n')
            security = ["--config", cfg]
        args = [gateway_bin(), "--data-dir", os.path.join(self.dir, "data"), "--listen", f"127.0.0.1:{self.port}",
                "--metrics-listen", f"127.0.0.1:{free_port()}", "--default-partitions", "4",
                "--group-initial-rebalance-delay-ms", str(rebalance_delay_ms), "--log", "warn",
                "--auto-create-topics", "false" if scenario == "noautocreate" else "true", *security]
        self.log = open(os.path.join(self.dir, "gateway.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the gateway did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_number(tests_dir, num, scenario, workdir, quick=True, group_protocol="classic"):
    """Runs one test number; returns {name: (state, seconds, note)}."""
    sasl = num in SASL_TESTS
    gw = Gateway(scenario, workdir, REBALANCE_DELAY_MS.get(num, 0), sasl=sasl)
    report = os.path.join(gw.dir, "report.json")
    conf = os.path.join(gw.dir, "test.conf")
    with open(conf, "w") as f:
        f.write(f"metadata.broker.list=127.0.0.1:{gw.port}\ntest.timeout.multiplier=2\n")
        if sasl:
            f.write(f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                    f"sasl.username={SASL_USER}\nsasl.password={SASL_PASSWORD}\n")
    env = {**os.environ, "TESTS": num, "TEST_REPORT": report, "RDKAFKA_TEST_CONF": conf,
           "TEST_KAFKA_VERSION": BROKER_VERSION if group_protocol == "classic" else "4.0.0",
           "LD_LIBRARY_PATH": "../src:../src-cpp"}
    if group_protocol != "classic":
        env["TEST_CONSUMER_GROUP_PROTOCOL"] = group_protocol
    started = time.monotonic()
    try:
        r = subprocess.run(["./test-runner", "-L", "-p1", "-S", "-s", scenario] + (["-Q"] if quick else []), cwd=tests_dir, env=env,
                           capture_output=True, text=True, timeout=TIME_LIMIT_S)
        output = r.stdout + r.stderr
        timed_out = False
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        timed_out = True
    finally:
        gw.stop()
    with open(os.path.join(workdir, f"{num}-{scenario}.log"), "w") as f:
        f.write(output)
    results = {}
    try:
        data = json.loads(open(report).read())
        for name, t in data.get("tests", {}).items():
            if name.startswith(num):
                results[name] = (t["state"], t.get("duration", 0.0), "")
    except (OSError, ValueError):
        pass
    if timed_out or not results:
        elapsed = time.monotonic() - started
        note = f"no answer within {TIME_LIMIT_S} s" if timed_out else "test-runner wrote no report"
        fails = [line for line in output.splitlines() if "FAIL" in line or "Assert" in line][:3]
        return {None: ("FAILED", elapsed, note + ("; " + " | ".join(fails) if fails else ""))}
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()
    for name, (state, secs, _) in list(results.items()):
        note = ""
        if state == "FAILED":
            at = [i for i, line in enumerate(plain) if f'### Test "{name}' in line and "failed at" in line]
            if at:
                where = plain[at[0]].split("failed at", 1)[1].split(" at ")[0].strip()
                what = plain[at[0] + 1].strip() if at[0] + 1 < len(plain) else ""
                note = f"{what} ({where})"
        elif state == "SKIPPED":
            why = [line.split("SKIPPING TEST:", 1)[1].strip() for line in plain if f"[{name} " in line and "SKIPPING TEST:" in line]
            note = why[0] if why else ""
        results[name] = (state, secs, note[:200])
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ci", action="store_true", help="only the allow-listed tests marked ci")
    ap.add_argument("--all", action="store_true", help="also the excluded tests")
    ap.add_argument("--tests", help="comma-separated test numbers")
    ap.add_argument("--slow", action="store_true", help="the suite's full mode (no -Q): more messages, slow tests")
    ap.add_argument("--group-protocol", default="classic", choices=["classic", "consumer"],
                    help="the consumers' group.protocol (consumer: KIP-848; its outcomes are reported, not checked)")
    ap.add_argument("--card", help="write the report card as Markdown here")
    ap.add_argument("--workdir", help="keep logs here (default: a temporary directory)")
    args = ap.parse_args()

    tests_dir = build()
    exp = expectations()
    tests = suite_tests(tests_dir)
    unlisted = [name for name, _, _ in tests if name not in exp]
    wanted = set(args.tests.split(",")) if args.tests else None

    def selected(name, num):
        e = exp.get(name, {"kind": "pass", "ci": False})
        if wanted is not None:
            return num in wanted
        if args.ci:
            return e["kind"] == "pass" and e["ci"]
        return args.all or e["kind"] != "excluded"

    groups = []
    for name, num, scenario in tests:
        if selected(name, num) and (num, scenario) not in groups:
            groups.append((num, scenario))
    workdir = args.workdir or tempfile.mkdtemp(prefix="librdkafka-suite-")
    os.makedirs(workdir, exist_ok=True)
    got = {}
    for num, scenario in groups:
        res = run_number(tests_dir, num, scenario, workdir, quick=not args.slow, group_protocol=args.group_protocol)
        for name, n, s in tests:
            if n == num and s == scenario and selected(name, num):
                got[name] = res.get(name) or res.get(None) or ("SKIPPED", 0.0, "not run by test-runner")
        line = ", ".join(f"{name} {st}" for name, (st, _, _) in sorted(got.items()) if name.startswith(num))
        print(f"{num} [{scenario}]: {line}", flush=True)

    rows, bad = [], []
    counts = {"passed": 0, "failed": 0, "excluded": 0, "skipped": 0}
    for name, num, scenario in tests:
        e = exp.get(name, {"kind": "unlisted", "ci": False, "reason": ""})
        state, secs, note = got.get(name, (None, 0.0, ""))
        if state is None:
            outcome = "excluded" if e["kind"] == "excluded" else "not run"
        else:
            outcome = {"PASSED": "passed", "FAILED": "failed"}.get(state, "skipped")
        if outcome in counts:
            counts[outcome] += 1
        must = e["kind"] == "pass" or (e["kind"] == "slow" and args.slow)
        if must and state is not None and state != "PASSED" and args.group_protocol == "classic":
            bad.append(f"{name}: allow-listed but {state} {note}")
        rows.append((name, scenario, e["kind"], outcome, f"{secs:.1f}" if state else "", e["reason"] or note))
    if unlisted:
        bad.append("not in expectations.txt: " + ", ".join(unlisted))

    width = max(len(r[0]) for r in rows)
    print(f"\nlibrdkafka test suite against the gateway ({len(tests)} broker tests)")
    print(f"{'test':<{width}}  {'expected':<9} {'outcome':<9} {'secs':>6}  reason")
    for name, scenario, kind, outcome, secs, reason in rows:
        print(f"{name:<{width}}  {kind:<9} {outcome:<9} {secs:>6}  {reason}")
    print(f"\npassed {counts['passed']}, failed {counts['failed']}, skipped by the suite {counts['skipped']}, "
          f"excluded {counts['excluded']}; logs in {workdir}")
    if args.card:
        with open(args.card, "w") as f:
            f.write("| test | expected | outcome | reason |\n|---|---|---|---|\n")
            for name, scenario, kind, outcome, secs, reason in rows:
                f.write(f"| {name} | {kind} | {outcome} | {reason} |\n")
    for b in bad:
        print("FAIL:", b)
    if not args.workdir and not bad:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
