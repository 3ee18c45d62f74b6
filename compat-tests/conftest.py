"""The process harness of the compat tests, and the fixtures built on it.

Every child process (the gateway binary, its `logstore` subcommand, etcd, moto_server, a client
script) is a `Proc`, started through a `Procs` group that belongs to a test (fixture `procs`) or
a module, and closes everything it started when that ends:

- ports: a Proc has named loopback ports, picked by `free_port()` outside the kernel's ephemeral
  range (where client connections take their local ports and port-0 binds land) and never handed
  out twice in a session. Another program can still take one between the pick and the child's
  bind: a child that exits at start-up saying its address is in use is spawned again, on fresh
  ports (the ones passed in, or kept with keep_ports, are retried as they are);
- log: stdout and stderr (or only stderr, when a test reads stdout) are appended to a log file,
  one header line per start; `log_tail()` for messages, and the tails of every process of the
  test are attached to a failing test's report;
- ready: the wait after a spawn ends when every named port accepts TCP connections and is held
  by the child itself (not by whoever might have taken it), and the Proc's probe (an HTTP check,
  for instance) passes; a child that exits for any other reason fails at once, with its log;
- signals: kill() (SIGKILL, a crash), stop() (SIGTERM, returns the exit code; fails if the
  process does not exit in time), pause() / resume() (SIGSTOP / SIGCONT);
- cleanup: at the end of its group every Proc is SIGKILLed and reaped, and a process that died
  without the test asking for it (kill, stop or a failed start) fails the test.

`Relay` (an in-process TCP relay that can cut a connection off) is closed by its group as well.

Fixtures: `procs` (a Procs for one test), `gateway` (a fresh gateway, default flags), and
`gateway_factory("--flag", "value")`, both in that test's group, and `module_gateway` (one gateway
shared by a module's tests). `Gateway` adds .bootstrap, .port, .mport, .metrics_url, .data_dir,
.workdir, .restart() (same data dir and ports) and .rss_kib(). The binary comes from $GATEWAY_BIN
(default: target/debug/gateway of this repository).

The scripts in bench/ import this module too (it needs pytest importable, nothing else).
"""
import atexit
import os
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GATEWAY_BIN = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "gateway"))
ETCD = shutil.which("etcd")
MOTO = shutil.which("moto_server")
REQUIRE_SERVERS = os.environ.get("WAL_REQUIRE_SERVERS") == "1"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
KILL_WAIT_S = 10.0
START_ATTEMPTS = 5
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")
# what the gateway (Rust), etcd (Go) and moto_server (werkzeug) print when a port is taken
_PORT_TAKEN = re.compile(rb"address already in use|in use by another program|os error 98|EADDRINUSE", re.I)


# ------------------------------------------------------------------------------------ ports


def _port_range():
    """The larger stretch of ports above 10000 outside the ephemeral range, or None."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    best = max((10000, lo), (hi + 1, 65536), key=lambda r: r[1] - r[0])
    return best if best[1] - best[0] >= 2000 else None


_PORTS = _port_range()
_RANDOM = random.Random(os.getpid() ^ time.time_ns())  # concurrent sessions pick differently
_HANDED_OUT = set()
_PORT_LOCK = threading.Lock()


def _bindable(port):
    with socket.socket() as s:  # no SO_REUSEADDR: a port with lingering connections is skipped
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def free_port():
    """A loopback port nobody is bound to, not handed out before in this session."""
    with _PORT_LOCK:
        for _ in range(1000):
            if _PORTS:
                port = _RANDOM.randrange(*_PORTS)
            else:
                with socket.socket() as s:
                    s.bind((LOOPBACK, 0))
                    port = s.getsockname()[1]
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError("no free loopback port found")


def _listening_inodes(ports):
    """{port: inodes of the TCP sockets listening on it} for `ports`."""
    try:
        return _listening_inodes_sock_diag(ports)
    except OSError:
        return _listening_inodes_proc(ports)


def _listening_inodes_sock_diag(ports):
    """Asks the kernel (netlink sock_diag) for its listening IPv4 and IPv6 TCP sockets only: fast
    however many connections exist (reading /proc/net/tcp takes longer the more there are)."""
    found = {p: set() for p in ports}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as s:  # NETLINK_SOCK_DIAG
        s.settimeout(2)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            # inet_diag_req_v2: family, protocol, ext, pad, states (1 << TCP_LISTEN), an empty sockid
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
            # nlmsghdr: length, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, pid
            s.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, seq, 0) + req)
            done = False
            while not done:
                data = s.recv(1 << 16)
                off = 0
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    if kind == 3:  # NLMSG_DONE
                        done = True
                        break
                    if kind == 2 or length < 16:  # NLMSG_ERROR
                        raise OSError("sock_diag refused the request")
                    # inet_diag_msg: 4 bytes, sockid (sport first, big-endian; 48 bytes), 4 x u32, inode
                    sport = struct.unpack_from("!H", data, off + 16 + 4)[0]
                    if sport in found:
                        found[sport].add(str(struct.unpack_from("=I", data, off + 16 + 68)[0]))
                    off += (length + 3) & ~3
    return found


def _listening_inodes_proc(ports):
    found = {p: set() for p in ports}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A":  # LISTEN
                port = int(f[1].rsplit(":", 1)[1], 16)
                if port in found:
                    found[port].add(f[9])
    return found


def _descendants(pid):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _holds_listeners(pid, ports):
    """Whether process `pid` (or a descendant) listens on every one of `ports`; True when /proc
    cannot tell."""
    if not ports or not os.path.exists("/proc/net/tcp"):
        return True
    inodes = _listening_inodes(ports)
    if not all(inodes.values()):
        return False
    wanted = {port: {f"socket:[{i}]" for i in found} for port, found in inodes.items()}

    def fds_of(p):
        links = set()
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            return links
        for fd in fds:
            try:
                links.add(os.readlink(f"/proc/{p}/fd/{fd}"))
            except OSError:
                pass
        return links
    held = fds_of(pid)
    if not all(w & held for w in wanted.values()):
        for p in _descendants(pid):
            held |= fds_of(p)
    return all(w & held for w in wanted.values())


# ------------------------------------------------------------------------------------ processes


class StartError(AssertionError):
    """A process did not start: exited, not ready in time, or kept losing its ports."""


def http_ok(port_name, path):
    """A probe: GET http://127.0.0.1:<port>/<path> answers 200."""
    def probe(proc):
        try:
            with urllib.request.urlopen(proc.url(port_name, path), timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False
    return probe


class Proc:
    """One child process. `argv` is a list, or a callable taking the Proc (for its ports: argv is
    built again for every spawn). `ports`: names (each gets a free port) or {name: port or None};
    a port given here is kept on retries. `probe(proc) -> bool`: readiness beyond the ports.
    `env` is added to os.environ. stdout=subprocess.PIPE leaves stdout to the test (.stdout)."""

    def __init__(self, name, argv, log_path, *, ports=(), env=None, probe=None, ready_timeout=READY_TIMEOUT_S,
                 stdout=None, text=False):
        self.name = name
        self._argv = argv
        self.log_path = str(log_path)
        given = dict(ports) if isinstance(ports, dict) else dict.fromkeys(ports)
        self._pinned = {k for k, v in given.items() if v is not None}
        self.ports = {k: v if v is not None else free_port() for k, v in given.items()}
        self.env = dict(env or {})
        self.probe = probe
        self.ready_timeout = ready_timeout
        self._stdout, self._text = stdout, text
        self.popen = None
        self.starts = 0
        self.deliberately_down = False
        self.paused = False
        self._log_from = 0

    def __repr__(self):
        return f"<Proc {self.name} pid={self.popen.pid if self.popen else None} ports={self.ports}>"

    # ---------------------------------------------------------------- addresses

    def addr(self, port_name):
        return f"{LOOPBACK}:{self.ports[port_name]}"

    def url(self, port_name, path=""):
        return f"http://{LOOPBACK}:{self.ports[port_name]}{path}"

    # ---------------------------------------------------------------- lifecycle

    def argv(self):
        return [str(a) for a in (self._argv(self) if callable(self._argv) else self._argv)]

    def spawn(self):
        """Starts the process without waiting (see wait_ready)."""
        assert not self.alive(), f"{self.name} already running"
        argv = self.argv()
        self.starts += 1
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== compat-tests: {self.name} start #{self.starts}: {shlex.join(argv)} =====\n".encode())
            log.flush()
            self._log_from = log.tell()
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stdout or log, stderr=log,
                                          text=self._text, env=dict(os.environ, **self.env))
        self.deliberately_down = False
        self.paused = False
        return self

    def wait_ready(self, keep_ports=False):
        """Waits until ready. A child that exits because a port is taken is spawned again, on fresh
        ports unless keep_ports (ports given to the constructor are always kept)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            if self._await_ready():
                return self
            if attempt == START_ATTEMPTS:
                break
            time.sleep(0.5 * attempt)
            if not keep_ports:
                for k in self.ports:
                    if k not in self._pinned:
                        self.ports[k] = free_port()
            self.spawn()
        self._failed(f"{self.name} lost its ports {START_ATTEMPTS} times (address already in use)")

    def start(self, keep_ports=False):
        return self.spawn().wait_ready(keep_ports)

    def _await_ready(self):
        """True once ready; False if the process exited because a port was taken."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            rc = self.popen.poll()
            if rc is not None:
                if self._port_taken():
                    return False
                self._failed(f"{self.name} exited during startup (rc={rc})")
            if time.monotonic() >= deadline:
                self._failed(f"{self.name} not ready after {self.ready_timeout:.0f}s")
            if self._ready_now():
                return True
            time.sleep(0.05)

    def _ready_now(self):
        for port in self.ports.values():
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            except OSError:
                return False
        if self.probe is not None and not self.probe(self):
            return False
        # someone else may be listening on a port this process failed to bind (it exits soon)
        if not _holds_listeners(self.popen.pid, list(self.ports.values())):
            return False
        return self.popen.poll() is None

    def _port_taken(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_from)
                return bool(_PORT_TAKEN.search(f.read()))
        except OSError:
            return False

    def _failed(self, what):
        self.kill()
        raise StartError(f"{what} (log: {self.log_path})\n{self.log_tail()}")

    # ---------------------------------------------------------------- signals

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.poll() if self.popen else None

    @property
    def stdout(self):
        return self.popen.stdout

    def send_signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self, timeout=KILL_WAIT_S):
        """SIGKILL (a crash), then reap."""
        self.deliberately_down = True
        if self.popen is None:
            return
        self.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=timeout)
        self.paused = False

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then wait; returns the exit code. Fails (after a SIGKILL) if it does not exit."""
        self.deliberately_down = True
        if self.paused:
            self.resume()
        self.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")

    def pause(self):
        """SIGSTOP; returns once every thread is stopped."""
        self.send_signal(signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.alive() and self._state() not in ("T", "t"):
            time.sleep(0.001)

    def resume(self):
        """SIGCONT."""
        self.send_signal(signal.SIGCONT)
        self.paused = False

    def _state(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    def died_unexpectedly(self):
        return self.popen is not None and not self.deliberately_down and self.popen.poll() is not None

    def close(self):
        """SIGKILL if running (SIGCONT first if paused) and reap; never raises."""
        if self.popen is None:
            return
        try:
            if self.alive():
                if self.paused:
                    self.popen.send_signal(signal.SIGCONT)
                self.popen.kill()
            self.popen.wait(timeout=KILL_WAIT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.popen.stdout is not None:
            try:
                self.popen.stdout.close()
            except OSError:
                pass

    # ---------------------------------------------------------------- inspection

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


class Gateway(Proc):
    """The gateway binary with a data dir and log under `workdir`, on ports kafka and metrics.
    ready="readyz" waits for /readyz to say 200 as well, ready="tcp" only for the listeners."""

    def __init__(self, workdir, extra_args=(), *, bin=None, log="info", ready="readyz", env=None,
                 ready_timeout=READY_TIMEOUT_S, name="gateway"):
        self.workdir = str(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.bin = bin or GATEWAY_BIN
        self.extra_args = list(extra_args)
        self.log_level = log
        assert ready in ("readyz", "tcp"), ready
        super().__init__(name, Gateway._build_argv, os.path.join(self.workdir, "gateway.log"), ports=("kafka", "metrics"),
                         env={"NO_COLOR": "1", "RUST_BACKTRACE": "1"} if env is None else env,
                         probe=http_ok("metrics", "/readyz") if ready == "readyz" else None, ready_timeout=ready_timeout)

    def _build_argv(self):
        log = ["--log", self.log_level] if self.log_level else []
        return [self.bin, "--data-dir", self.data_dir, "--listen", self.bootstrap, "--metrics-listen", self.addr("metrics"),
                *log, *self.extra_args]

    @property
    def port(self):
        return self.ports["kafka"]

    @property
    def mport(self):
        return self.ports["metrics"]

    @property
    def bootstrap(self):
        return self.addr("kafka")

    @property
    def metrics_url(self):
        return self.url("metrics")

    def restart(self):
        """Starts again on the same data dir and ports (stopping gracefully first if running)."""
        if self.alive():
            self.stop()
        return self.start(keep_ports=True)


class Relay:
    """A TCP relay on a loopback port in front of `target_port` that can cut the connection off:
    `cut()` drops every open connection (a request in flight never arrives) and swallows new ones,
    `heal()` relays again. (SIGSTOP on a server is no cut: the kernel keeps the requests and the
    server runs them later.)"""

    def __init__(self, target_port):
        self.target = target_port
        self.cut_off = False
        self.conns = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((LOOPBACK, 0))  # bound and kept: no race
        self.srv.listen(128)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
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
                b = socket.create_connection((LOOPBACK, self.target), timeout=5)
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


_OPEN_GROUPS = []


class Procs:
    """The processes (and relays) of one test or module, with logs under `workdir`."""

    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.items = []
        _OPEN_GROUPS.append(self)

    @property
    def procs(self):
        return [i for i in self.items if isinstance(i, Proc)]

    def add(self, item):
        self.items.append(item)
        return item

    def spawn(self, name, argv, *, log=None, **kw):
        """A Proc (see there for the arguments) spawned without waiting; log: <dir>/<name>.log."""
        return self.add(Proc(name, argv, log or os.path.join(self.dir, f"{name}.log"), **kw)).spawn()

    def start(self, name, argv, **kw):
        """spawn(), then wait until ready."""
        return self.spawn(name, argv, **kw).wait_ready()

    def gateway(self, *extra_args, workdir=None, **kw):
        """A started Gateway (keyword arguments: see Gateway) in <dir>/gwN unless workdir."""
        bin_ = kw.get("bin") or GATEWAY_BIN
        if not os.access(bin_, os.X_OK):
            raise StartError(f"gateway binary not found or not executable: {bin_} (set GATEWAY_BIN)")
        n = sum(isinstance(p, Gateway) for p in self.items)
        gw = self.add(Gateway(workdir or os.path.join(self.dir, f"gw{n}"), extra_args, **kw))
        return gw.start()

    def etcd(self, name="etcd", wait=True):
        """etcd on ports client and peer; data in <dir>/<name>."""
        def argv(p):
            client, peer = p.url("client"), p.url("peer")
            return [ETCD, "--data-dir", os.path.join(self.dir, name), "--listen-client-urls", client,
                    "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"default={peer}", "--log-level", "error"]
        p = self.spawn(name, argv, ports=("client", "peer"))
        return p.wait_ready() if wait else p

    def moto(self, name="moto", wait=True):
        """moto_server (S3) on port s3."""
        p = self.spawn(name, lambda p: [MOTO, "-H", LOOPBACK, "-p", p.ports["s3"]], ports=("s3",))
        return p.wait_ready() if wait else p

    def relay(self, target_port):
        return self.add(Relay(target_port))

    def unexpected_deaths(self):
        return [f"{p.name} died during the test (rc={p.returncode})\n{p.log_tail()}" for p in self.procs if p.died_unexpectedly()]

    def close(self, term_timeout=None):
        """Every process SIGKILLed (after a SIGTERM and up to term_timeout s, if given) and reaped,
        every relay closed, last started first."""
        if self in _OPEN_GROUPS:
            _OPEN_GROUPS.remove(self)
        if term_timeout is not None:
            for p in self.procs:
                if p.alive():
                    p.resume()
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + term_timeout
            for p in self.procs:
                try:
                    p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                except (subprocess.TimeoutExpired, AttributeError):
                    pass
        for item in reversed(self.items):
            try:
                item.close()
            except Exception:
                pass


@atexit.register
def _close_leftovers():
    for group in list(_OPEN_GROUPS):
        group.close()


def require_servers():
    """Skips the test when etcd or moto_server is missing (fails with WAL_REQUIRE_SERVERS=1)."""
    if not (ETCD and MOTO):
        if REQUIRE_SERVERS:
            pytest.fail("etcd and moto_server are required (WAL_REQUIRE_SERVERS=1)")
        pytest.skip("etcd or moto_server not installed")


# ------------------------------------------------------------------------------------ fixtures


def _finish(group):
    try:
        dead = group.unexpected_deaths()
    finally:
        group.close()
    if dead:
        pytest.fail("\n\n".join(dead), pytrace=False)


@pytest.fixture()
def procs(tmp_path):
    """The test's process group: everything started through it is closed when the test ends."""
    group = Procs(tmp_path)
    yield group
    _finish(group)


@pytest.fixture()
def gateway(procs):
    """A fresh gateway (default flags) for one test."""
    return procs.gateway()


@pytest.fixture()
def gateway_factory(procs):
    """Starts gateways with extra flags: gateway_factory("--auto-create-topics", "false")."""
    return procs.gateway


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory):
    """One gateway shared by the tests of a module (they must not need a pristine broker)."""
    group = Procs(tmp_path_factory.mktemp("gw"))
    try:
        gw = group.gateway()
    except BaseException:
        group.close()
        raise
    yield gw
    _finish(group)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for group in _OPEN_GROUPS:  # the groups of this test and of its module
        for p in group.procs:
            if p.popen is not None:
                rep.sections.append((f"{p.name} log tail ({p.log_path})", p.log_tail()))


def pytest_configure(config):
    # kafka-python loads its protocol schemas with deprecated importlib.resources calls
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")
