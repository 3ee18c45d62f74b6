"""Fixtures: a real gateway process per test (or per module) on free loopback ports.

`gateway` yields a Gateway with .bootstrap, .metrics_url, .data_dir, .kill() (SIGKILL),
.stop() (SIGTERM), .restart() (same data dir and ports), .pid and .rss_kib(). The binary comes
from $GATEWAY_BIN (default: target/debug/gateway of this repository). The gateway's stderr goes
to a file next to the data dir; when a test fails its tail is attached to the report, and a
gateway that died without the test asking for it fails the test at teardown.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GATEWAY_BIN = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "gateway"))
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, workdir, extra_args=()):
        self.workdir = str(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        self.log_path = os.path.join(self.workdir, "gateway.log")
        os.makedirs(self.data_dir, exist_ok=True)
        self.extra_args = list(extra_args)
        self.proc = None
        self.deliberately_down = False
        self.starts = 0
        self._pick_ports()

    def _pick_ports(self):
        self.port = free_port()
        self.mport = free_port()
        while self.mport == self.port:
            self.mport = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.mport}"

    # ------------------------------------------------------------ lifecycle

    def _spawn(self):
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== compat-tests: start #{self.starts} on {self.bootstrap} =====\n".encode())
            log.flush()
            env = dict(os.environ, NO_COLOR="1", RUST_BACKTRACE="1")
            self.proc = subprocess.Popen(
                [GATEWAY_BIN, "--data-dir", self.data_dir, "--listen", self.bootstrap,
                 "--metrics-listen", f"127.0.0.1:{self.mport}", "--log", "info", *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        self.deliberately_down = False

    def _wait_ready(self, timeout=READY_TIMEOUT_S):
        """True once the Kafka port accepts and /readyz says 200; False if the process exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                with urllib.request.urlopen(self.metrics_url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway on {self.bootstrap} not ready after {timeout:.0f}s\n{self.log_tail()}")

    def start(self, keep_ports=False):
        """Starts the process; retries a few times if it exits at once (a port taken meanwhile)."""
        assert not self.alive(), "gateway already running"
        for attempt in range(5):
            self._spawn()
            if self._wait_ready():
                return self
            if not keep_ports:
                self._pick_ports()
            time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"gateway exited during startup (rc={self.proc.returncode})\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        """SIGKILL: a crash."""
        self.deliberately_down = True
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then wait; returns the exit code. Fails (after a SIGKILL) if it does not exit."""
        self.deliberately_down = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError(f"gateway did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")

    def restart(self):
        """Starts again on the same data dir and ports (stopping gracefully first if running)."""
        if self.alive():
            self.stop()
        return self.start(keep_ports=True)

    def close(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass

    # ------------------------------------------------------------ inspection

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return _ANSI.sub(b"", f.read()).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def died_unexpectedly(self):
        return self.proc is not None and not self.deliberately_down and self.proc.poll() is not None


def _gateway(workdir, extra_args=()):
    if not os.access(GATEWAY_BIN, os.X_OK):
        pytest.fail(f"gateway binary not found or not executable: {GATEWAY_BIN} (set GATEWAY_BIN)")
    gw = Gateway(workdir, extra_args)
    try:
        gw.start()
    except Exception:
        gw.close()
        raise
    return gw


def _teardown(gw):
    try:
        if gw.died_unexpectedly():
            pytest.fail(f"the gateway died during the test (rc={gw.proc.returncode})\n{gw.log_tail()}")
    finally:
        gw.close()


@pytest.fixture()
def gateway(tmp_path):
    """A fresh gateway (default flags) for one test."""
    gw = _gateway(tmp_path)
    yield gw
    _teardown(gw)


class GatewayFactory:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started = []

    def __call__(self, *extra_args):
        gw = _gateway(self.tmp_path / f"gw{len(self.started)}", extra_args)
        self.started.append(gw)
        return gw


@pytest.fixture()
def gateway_factory(tmp_path):
    """Starts gateways with extra flags: gateway_factory("--auto-create-topics", "false")."""
    factory = GatewayFactory(tmp_path)
    yield factory
    errors = []
    for gw in factory.started:
        try:
            _teardown(gw)
        except BaseException as e:  # close every gateway, then report the first problem
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory):
    """One gateway shared by the tests of a module (they must not need a pristine broker)."""
    gw = _gateway(tmp_path_factory.mktemp("gw"))
    yield gw
    _teardown(gw)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        gws = [value] if isinstance(value, Gateway) else value.started if isinstance(value, GatewayFactory) else []
        for gw in gws:
            rep.sections.append((f"gateway log tail ({gw.log_path})", gw.log_tail()))


def pytest_configure(config):
    # kafka-python loads its protocol schemas with deprecated importlib.resources calls
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")
