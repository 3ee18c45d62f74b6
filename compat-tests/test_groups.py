"""Consumer groups against the gateway with real clients.

confluent-kafka (librdkafka) groups with eager and cooperative-sticky rebalancing while members
leave and join under a running producer, static membership (restart without rebalance, fencing
of a duplicate instance), kafka-python and aiokafka group consumers, kcat's balanced-consumer
mode, the AdminClient group APIs (and OffsetDelete through kafka-python), committed offsets and
live members surviving a gateway crash, session expiry of a SIGKILLed member process, and the
session-timeout bounds.

At-least-once is checked exactly: every "session" (one member's continuous ownership of a
partition) must start at the offset last committed before it began and read contiguously from
there; duplicates are therefore only re-reads after a rebalance of what was not yet committed,
and they are counted and printed (pytest -s shows the lines).

Every test starts its own gateway (conftest.py's gateway_factory: fresh data dir, free loopback
ports, --group-initial-rebalance-delay-ms 300) and uses its own topic and group names. Payloads
are checked byte for byte. Consumer threads poll with short timeouts and every wait is bounded.
Run:

    cd compat-tests && python3 -m pytest -q test_groups.py

GATEWAY_BIN overrides the binary (see conftest.py).
"""
import asyncio
import os
import shutil
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

KCAT = shutil.which("kcat") or "/usr/bin/kcat"


# --------------------------------------------------------------------------------------------
# gateway process: conftest.py's gateway_factory (SIGKILL with .kill(), .start(keep_ports=True)
# restarts on the same data dir and ports; its log tail is attached to failing tests); other
# processes through conftest.py's `procs` too


@pytest.fixture()
def groups_gw(gateway_factory):
    return gateway_factory("--group-initial-rebalance-delay-ms", "300")


# --------------------------------------------------------------------------------------------
# helpers


def _uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def payload_for(tag, i):
    """A distinctive payload with arbitrary bytes (NUL, newline, >0x7f) and varying length."""
    head = f"{tag}:{i:06d}:".encode()
    return head + bytes(((i * 131 + j * 7) % 256) for j in range(8 + (i * 37) % 120))


def key_for(i):
    return f"k{i:06d}".encode()


def id_of_key(k):
    return int(k[1:].decode())


def make_admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap, topic, partitions):
    admin = make_admin(bootstrap)
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)
    # wait until the topic is visible with all partitions
    deadline = time.time() + 20
    while time.time() < deadline:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not visible with {partitions} partitions")


def produce(bootstrap, topic, items):
    """items: (partition, id, payload); returns {id: (partition, offset)}; every delivery must succeed."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    done, errors = {}, []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            done[id_of_key(msg.key())] = (msg.partition(), msg.offset())

    for part, i, payload in items:
        p.produce(topic, payload, key=key_for(i), partition=part, on_delivery=cb)
        p.poll(0)
    assert p.flush(30) == 0, "producer did not deliver everything within 30 s"
    assert not errors, f"delivery errors: {errors[:5]}"
    return done


def end_offsets(bootstrap, topic, nparts):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": _uniq("watermarks"), "enable.auto.commit": False})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(nparts)}
    finally:
        c.close()


def committed_offsets(admin, group, topic, nparts):
    """{partition: committed offset}, -1001 (OFFSET_INVALID) where nothing is committed."""
    req = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(nparts)])]
    res = admin.list_consumer_group_offsets(req)[group].result(20)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"offset fetch error for {tp}: {tp.error}"
        out[tp.partition] = tp.offset
    return out


def describe_group(admin, group):
    return admin.describe_consumer_groups([group])[group].result(20)


def wait_for(cond, timeout, what, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


# --------------------------------------------------------------------------------------------
# confluent-kafka group scenario: members in threads, a paced producer, at-least-once accounting


class GroupScenario:
    def __init__(self, bootstrap, topic, group, nparts, total, extra_conf=None):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.nparts, self.total = nparts, total
        self.extra_conf = dict(extra_conf or {})
        self.lock = threading.Lock()
        self.expected = {i: payload_for(topic, i) for i in range(total)}
        self.members = {}
        self.errors = []               # problems seen in member / producer threads
        self.deliveries = []           # (partition, offset, id, member, session)
        self.sessions = {}             # session -> {member, partition, start, revoked}
        self.commit_log = defaultdict(list)  # partition -> [(time, offset, member)] of successful commits
        self.commit_failures = []      # (member, error text)
        self.unconfirmed = defaultdict(set)  # partition -> offsets of commits whose outcome the client did not see as success
        self.callbacks = []            # (time, member, 'assign'|'revoke'|'lost', [partitions])
        self.produced = 0
        self.producer_done = threading.Event()
        self._session_seq = 0
        self.tolerated_codes = set()   # consumer error codes expected in this test (e.g. while the gateway is down)
        self.tolerated = []

    # -- members
    def member_conf(self, extra=None):
        conf = {
            "bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
        }
        conf.update(self.extra_conf)
        conf.update(extra or {})
        return conf

    def start_member(self, name, extra=None, process_delay=0.0):
        m = GroupMember(self, name, self.member_conf(extra), process_delay)
        self.members[name] = m
        m.start()
        wait_for(lambda: m.started.is_set(), 20, f"member {name} subscribed")
        return m

    def stop_member(self, name, timeout=30):
        m = self.members[name]
        m.stop.set()
        m.join(timeout)
        assert not m.is_alive(), f"member {name} did not close within {timeout}s"

    def alive(self):
        return {n: m for n, m in self.members.items() if m.is_alive() and not m.stop.is_set()}

    def wait_balanced(self, names, timeout=45):
        """Until exactly `names` hold all partitions, disjointly, each at least one, and the
        coordinator says Stable with that many members."""
        admin = make_admin(self.bootstrap)

        def ok():
            with self.lock:
                held = {n: set(self.members[n].owned) for n in names}
                others = [n for n, m in self.alive().items() if n not in names and m.owned]
            union = set().union(*held.values())
            if others or union != set(range(self.nparts)) or any(not h for h in held.values()):
                return False
            if sum(len(h) for h in held.values()) != self.nparts:
                return False
            try:
                d = describe_group(admin, self.group)
            except KafkaException:
                return False
            return d.state == ConsumerGroupState.STABLE and len(d.members) == len(names)

        wait_for(ok, timeout, f"group {self.group} balanced over {names}", interval=0.2)
        with self.lock:
            return {n: set(self.members[n].owned) for n in names}

    # -- producer
    def start_producer(self, per_batch=10, pause=0.03):
        def run():
            try:
                p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2})
                errs = []

                def cb(err, msg):
                    if err is not None:
                        errs.append(err)

                for i in range(self.total):
                    p.produce(self.topic, self.expected[i], key=key_for(i), partition=i % self.nparts, on_delivery=cb)
                    p.poll(0)
                    self.produced = i + 1
                    if (i + 1) % per_batch == 0:
                        time.sleep(pause)
                if p.flush(30) != 0:
                    errs.append("flush left messages undelivered")
                if errs:
                    self.errors.append(f"producer: {errs[:5]}")
            except Exception:
                self.errors.append("producer: " + traceback.format_exc())
            finally:
                self.producer_done.set()

        t = threading.Thread(target=run, name="producer", daemon=True)
        t.start()
        return t

    # -- progress
    def distinct_ids(self):
        with self.lock:
            return len({d[2] for d in self.deliveries})

    def wait_distinct(self, n, timeout):
        wait_for(lambda: self.distinct_ids() >= n or self.errors, timeout, f"{n} distinct messages processed")
        assert not self.errors, self.errors

    def wait_all_committed(self, timeout=90):
        assert self.producer_done.wait(timeout), "producer did not finish"
        assert not self.errors, self.errors
        admin = make_admin(self.bootstrap)
        ends = end_offsets(self.bootstrap, self.topic, self.nparts)
        assert sum(ends.values()) == self.total, f"end offsets {ends} do not add up to {self.total}"
        state = {}

        def ok():
            if self.errors:
                return True
            state["committed"] = committed_offsets(admin, self.group, self.topic, self.nparts)
            return self.distinct_ids() == self.total and state["committed"] == ends

        try:
            wait_for(ok, timeout, "every message processed and committed", interval=0.3)
        except AssertionError:
            raise AssertionError(f"not everything processed/committed: distinct {self.distinct_ids()}/{self.total}, "
                                 f"committed {state.get('committed')} end {ends}; errors {self.errors}")
        assert not self.errors, self.errors
        return ends

    def ingest_external(self, name, lines):
        """Adds what a member in another process printed (see EXTERNAL_MEMBER): its assignments,
        deliveries and commits, with time.monotonic() stamps (one clock for all processes)."""
        current = {}
        with self.lock:
            for line in lines:
                f = line.split()
                if not f:
                    continue
                if f[0] in ("A", "R"):
                    parts = [int(x) for x in f[2].split(",")] if len(f) > 2 else []
                    for p in parts:
                        if f[0] == "A":
                            self._session_seq += 1
                            current[p] = self._session_seq
                            self.sessions[self._session_seq] = {"member": name, "partition": p, "start": float(f[1])}
                        else:
                            current.pop(p, None)
                    self.callbacks.append((float(f[1]), name, "assign" if f[0] == "A" else "revoke", parts))
                elif f[0] == "M":
                    p, o, i = int(f[1]), int(f[2]), id_of_key(f[3].encode())
                    if bytes.fromhex(f[4]) != self.expected.get(i):
                        self.errors.append(f"{name}: payload mismatch for id {i} at p{p}@{o}")
                    if p not in current:
                        self.errors.append(f"{name}: message p{p}@{o} for a partition it does not own")
                        continue
                    self.deliveries.append((p, o, i, name, current[p]))
                elif f[0] == "T":
                    self.unconfirmed[int(f[1])].add(int(f[2]))
                elif f[0] == "C":
                    p, o = int(f[2]), int(f[3])
                    self.commit_log[p].append((float(f[1]), o, name))
                    self.unconfirmed[p].discard(o)
                elif f[0] == "F":
                    self.commit_failures.append((name, " ".join(f[3:])))
                elif f[0] == "E":
                    self.errors.append(f"{name}: {line}")

    def stop_all(self):
        for n, m in list(self.members.items()):
            if m.is_alive():
                self.stop_member(n)

    # -- verdict
    def analyze(self, ends):
        """Checks at-least-once exactly: every session (one member's continuous ownership of a
        partition) starts at the offset last committed before it began and then reads the
        partition contiguously; nothing is missing. Returns the number of duplicate deliveries."""
        assert not self.errors, self.errors
        problems = []
        by_session = defaultdict(list)
        seen = Counter()
        for p, o, i, member, sess in self.deliveries:
            by_session[sess].append((p, o, i))
            seen[(p, o)] += 1
        for sess, items in by_session.items():
            info = self.sessions[sess]
            p = info["partition"]
            before = [c for c in sorted(self.commit_log[p]) if c[0] < info["start"]]
            expect_start = before[-1][1] if before else 0
            offs = [o for _, o, _ in items]
            # a commit the client saw fail may still have been applied (e.g. the gateway crashed
            # before answering): starting there is fine, starting anywhere else is not
            if offs[0] != expect_start and offs[0] not in self.unconfirmed[p]:
                problems.append(f"session {sess} ({info['member']} p{p}) started at offset {offs[0]}, "
                                f"last commit before it: {expect_start}")
            for a, b in zip(offs, offs[1:]):
                if b != a + 1:
                    problems.append(f"session {sess} ({info['member']} p{p}) jumped from offset {a} to {b}")
                    break
        for p in range(self.nparts):
            missing = [o for o in range(ends[p]) if seen[(p, o)] == 0]
            if missing:
                problems.append(f"partition {p}: {len(missing)} offsets never delivered, first {missing[:5]}")
            commits = [c[1] for c in sorted(self.commit_log[p])]
            if any(b < a for a, b in zip(commits, commits[1:])):
                problems.append(f"partition {p}: committed offsets went backwards: {commits}")
        ids = {d[2] for d in self.deliveries}
        if ids != set(range(self.total)):
            problems.append(f"ids missing: {sorted(set(range(self.total)) - ids)[:10]}")
        assert not problems, "\n".join(problems[:30])
        dups = sum(n - 1 for n in seen.values())
        return dups


class GroupMember(threading.Thread):
    """One confluent-kafka Consumer, created, polled, committed and closed by this thread only."""

    def __init__(self, sc, name, conf, process_delay=0.0):
        super().__init__(name=f"member-{name}", daemon=True)
        self.process_delay = process_delay
        self.sc, self.name_, self.conf = sc, name, conf
        self.stop = threading.Event()
        self.started = threading.Event()
        self.owned = set()
        self.session = {}     # partition -> session id
        self.pending = {}     # partition -> next offset processed but not committed
        self.memberid = None
        self.consumer = None

    def _record(self, kind, parts):
        self.sc.callbacks.append((time.monotonic(), self.name_, kind, sorted(tp.partition for tp in parts)))

    def _commit(self, parts):
        offs = {p: o for p, o in self.pending.items() if p in parts}
        if not offs:
            return
        tps = [TopicPartition(self.sc.topic, p, o) for p, o in offs.items()]
        try:
            res = self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            with self.sc.lock:
                self.sc.commit_failures.append((self.name_, str(e.args[0])))
                for p, o in offs.items():
                    self.sc.unconfirmed[p].add(o)
            return
        now = time.monotonic()
        with self.sc.lock:
            for tp in res:
                if tp.error is None:
                    self.sc.commit_log[tp.partition].append((now, tp.offset, self.name_))
                    if self.pending.get(tp.partition) == tp.offset:
                        del self.pending[tp.partition]
                else:
                    self.sc.commit_failures.append((self.name_, f"p{tp.partition}: {tp.error}"))
                    self.sc.unconfirmed[tp.partition].add(tp.offset)

    def on_assign(self, consumer, parts):
        self._record("assign", parts)
        self.memberid = consumer.memberid()
        now = time.monotonic()
        with self.sc.lock:
            for tp in parts:
                if tp.partition in self.owned:
                    self.sc.errors.append(f"{self.name_}: assigned p{tp.partition} it already owns")
                self.owned.add(tp.partition)
                self.sc._session_seq += 1
                sid = self.sc._session_seq
                self.session[tp.partition] = sid
                self.sc.sessions[sid] = {"member": self.name_, "partition": tp.partition, "start": now}

    def _drop(self, parts, commit):
        if commit:
            self._commit({tp.partition for tp in parts})
        with self.sc.lock:
            for tp in parts:
                self.owned.discard(tp.partition)
                self.session.pop(tp.partition, None)
                self.pending.pop(tp.partition, None)

    def on_revoke(self, consumer, parts):
        self._record("revoke", parts)
        self._drop(parts, commit=True)

    def on_lost(self, consumer, parts):
        self._record("lost", parts)
        self._drop(parts, commit=False)

    def process(self, msg):
        p, o = msg.partition(), msg.offset()
        i = id_of_key(msg.key())
        if msg.value() != self.sc.expected.get(i):
            self.sc.errors.append(f"{self.name_}: payload mismatch for id {i} at p{p}@{o}")
        if i % self.sc.nparts != p:
            self.sc.errors.append(f"{self.name_}: id {i} read from partition {p}")
        with self.sc.lock:
            sid = self.session.get(p)
            if sid is None:
                self.sc.errors.append(f"{self.name_}: message p{p}@{o} for a partition it does not own")
                return
            self.sc.deliveries.append((p, o, i, self.name_, sid))
            self.pending[p] = o + 1

    def run(self):
        try:
            self.consumer = c = Consumer(self.conf)
            c.subscribe([self.sc.topic], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost)
            self.started.set()
            since_commit = 0
            while not self.stop.is_set():
                msg = c.poll(0.1)
                if msg is None:
                    if self.pending:
                        self._commit(set(self.pending))
                        since_commit = 0
                    continue
                if msg.error():
                    if msg.error().code() in self.sc.tolerated_codes:
                        self.sc.tolerated.append((self.name_, str(msg.error())))
                    elif msg.error().code() != KafkaError._PARTITION_EOF:
                        self.sc.errors.append(f"{self.name_}: consumer error {msg.error()}")
                    continue
                self.process(msg)
                if self.process_delay:
                    time.sleep(self.process_delay)
                since_commit += 1
                if since_commit >= 25:
                    self._commit(set(self.pending))
                    since_commit = 0
            self._commit(set(self.pending))
            c.close()
        except Exception:
            self.sc.errors.append(f"{self.name_}: " + traceback.format_exc())
            self.started.set()


def _report(sc, label, dups):
    cb = Counter((m, k) for _, m, k, parts in sc.callbacks if parts or k == "assign")
    print(f"[{label}] delivered {len(sc.deliveries)} for {sc.total} messages: {dups} duplicate deliveries; "
          f"{sum(len(v) for v in sc.commit_log.values())} partition commits ok, {len(sc.commit_failures)} failed "
          f"{Counter(e for _, e in sc.commit_failures).most_common(3)}; callbacks {dict(cb)}")


def _run_leave_join_scenario(gw, strategy):
    topic, group = _uniq(f"grp-{strategy}"), _uniq(f"g-{strategy}")
    create_topic(gw.bootstrap, topic, 6)
    extra = {"partition.assignment.strategy": strategy}
    sc = GroupScenario(gw.bootstrap, topic, group, 6, 3000, extra)
    try:
        for n in ("A", "B", "C"):
            sc.start_member(n)
        first = sc.wait_balanced(["A", "B", "C"])
        mark0 = len(sc.callbacks)
        sc.start_producer()
        sc.wait_distinct(1000, 60)

        # C leaves (close() sends LeaveGroup); A and B take over all partitions
        mark1 = len(sc.callbacks)
        sc.stop_member("C")
        after_leave = sc.wait_balanced(["A", "B"])
        leave_cbs = [cb for cb in sc.callbacks[mark1:] if cb[1] != "C"]
        sc.wait_distinct(2000, 60)

        # D joins
        mark2 = len(sc.callbacks)
        sc.start_member("D")
        after_join = sc.wait_balanced(["A", "B", "D"])
        join_cbs = sc.callbacks[mark2:]

        ends = sc.wait_all_committed(90)
        sc.stop_all()
        dups = sc.analyze(ends)
        _report(sc, strategy, dups)
        admin = make_admin(gw.bootstrap)
        assert committed_offsets(admin, group, topic, 6) == ends == {p: 500 for p in range(6)}
        print(f"[{strategy}] assignments: start {first}, after C left {after_leave}, after D joined {after_join}")
        return sc, first, after_leave, after_join, leave_cbs, join_cbs, mark0
    finally:
        for m in sc.members.values():
            m.stop.set()
        for m in sc.members.values():
            m.join(30)


# --------------------------------------------------------------------------------------------
# 1. eager rebalancing


def test_groups_eager_leave_and_join_under_load(groups_gw):
    sc, first, after_leave, after_join, leave_cbs, join_cbs, _ = _run_leave_join_scenario(groups_gw, "range")
    # eager: every remaining member gives up everything and gets a fresh assignment
    assert {m for _, m, k, p in leave_cbs if k == "revoke" and p} == {"A", "B"}, leave_cbs
    assert {m for _, m, k, p in join_cbs if k == "revoke" and p} == {"A", "B"}, join_cbs
    assert all(len(v) == 2 for v in after_join.values()) and all(len(v) == 3 for v in after_leave.values())


# --------------------------------------------------------------------------------------------
# 2. cooperative-sticky rebalancing


def test_groups_cooperative_sticky_leave_and_join_under_load(groups_gw):
    sc, first, after_leave, after_join, leave_cbs, join_cbs, _ = _run_leave_join_scenario(groups_gw, "cooperative-sticky")
    # incremental: when C leaves, A and B keep what they had and only gain C's partitions
    leave_revokes = [(m, p) for _, m, k, p in leave_cbs if k in ("revoke", "lost") and p]
    assert not leave_revokes, f"cooperative: partitions revoked from A/B when C left: {leave_revokes}"
    for n in ("A", "B"):
        assert first[n] <= after_leave[n], (n, first, after_leave)
    # when D joins, A and B give up exactly what D receives, and keep the rest
    revoked = set()
    for _, m, k, p in join_cbs:
        if k == "revoke":
            assert m in ("A", "B"), join_cbs
            revoked |= set(p)
        assert k != "lost", join_cbs
    assert revoked == after_join["D"], (revoked, after_join)
    for n in ("A", "B"):
        assert after_join[n] <= after_leave[n], (n, after_leave, after_join)
    assert sorted(len(v) for v in after_join.values()) == [2, 2, 2], after_join


# --------------------------------------------------------------------------------------------
# 3. static membership


def test_groups_static_member_restart_without_rebalance(groups_gw):
    topic, group = _uniq("grp-static"), _uniq("g-static")
    create_topic(groups_gw.bootstrap, topic, 6)
    sc = GroupScenario(groups_gw.bootstrap, topic, group, 6, 1800, {"session.timeout.ms": 15000})
    admin = make_admin(groups_gw.bootstrap)
    try:
        for n in ("s1", "s2", "s3"):
            sc.start_member(n, {"group.instance.id": f"{group}-{n}"})
        first = sc.wait_balanced(["s1", "s2", "s3"])
        d0 = describe_group(admin, group)
        ids0 = {m.group_instance_id: m.member_id for m in d0.members}
        assert set(ids0) == {f"{group}-{n}" for n in ("s1", "s2", "s3")}, ids0
        mark = len(sc.callbacks)
        sc.start_producer()
        sc.wait_distinct(600, 60)

        # s2 closes: a static member does not send LeaveGroup, so the group keeps its slot
        t_close = time.monotonic()
        sc.stop_member("s2")
        time.sleep(1.0)
        d1 = describe_group(admin, group)
        assert d1.state == ConsumerGroupState.STABLE and len(d1.members) == 3, (d1.state, d1.members)
        # restart with the same group.instance.id well within session.timeout.ms (15 s)
        sc.start_member("s2b", {"group.instance.id": f"{group}-s2"})
        wait_for(lambda: sc.members["s2b"].owned == first["s2"], 20, "restarted static member gets its partitions back")
        assert time.monotonic() - t_close < 15, "restart took longer than the session timeout"
        later = sc.wait_balanced(["s1", "s2b", "s3"])
        sc.wait_distinct(1200, 60)
        ends = sc.wait_all_committed(90)

        others = [(m, k, p) for _, m, k, p in sc.callbacks[mark:] if m in ("s1", "s3")]
        assert not others, f"static restart caused a rebalance for the other members: {others}"
        assert later == {"s1": first["s1"], "s2b": first["s2"], "s3": first["s3"]}, (first, later)
        d2 = describe_group(admin, group)
        ids2 = {m.group_instance_id: m.member_id for m in d2.members}
        assert d2.state == ConsumerGroupState.STABLE
        assert set(ids2) == set(ids0)
        assert ids2[f"{group}-s1"] == ids0[f"{group}-s1"] and ids2[f"{group}-s3"] == ids0[f"{group}-s3"]
        assert ids2[f"{group}-s2"] != ids0[f"{group}-s2"], "the rejoined static member should have a new member id"
        assert ids2[f"{group}-s2"] == sc.members["s2b"].memberid, (ids2, sc.members["s2b"].memberid)
        assert ids0[f"{group}-s2"] == sc.members["s2"].memberid, (ids0, sc.members["s2"].memberid)
        sc.stop_all()
        dups = sc.analyze(ends)
        _report(sc, "static", dups)
        assert committed_offsets(admin, group, topic, 6) == ends
    finally:
        for m in sc.members.values():
            m.stop.set()
        for m in sc.members.values():
            m.join(30)


def test_groups_static_duplicate_instance_is_fenced(groups_gw):
    """A second consumer with the same group.instance.id takes the slot over; the first is fenced."""
    topic, group = _uniq("grp-fence"), _uniq("g-fence")
    create_topic(groups_gw.bootstrap, topic, 2)
    conf = {"bootstrap.servers": groups_gw.bootstrap, "group.id": group, "group.instance.id": f"{group}-i1",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "heartbeat.interval.ms": 300}
    admin = make_admin(groups_gw.bootstrap)
    c1 = Consumer(conf)
    c1.subscribe([topic])
    deadline = time.time() + 30
    while len(c1.assignment()) < 2 and time.time() < deadline:
        c1.poll(0.1)
    assert len(c1.assignment()) == 2
    first_id = c1.memberid()
    c2 = Consumer(conf)
    c2.subscribe([topic])
    fenced = None
    deadline = time.time() + 30
    while (fenced is None or len(c2.assignment()) < 2) and time.time() < deadline:
        m = c1.poll(0.05) if fenced is None else None
        if m is not None and m.error() is not None:
            fenced = m.error()
        c2.poll(0.05)
    try:
        assert len(c2.assignment()) == 2, "the new instance did not get the partitions"
        assert fenced is not None, "the old instance was not fenced"
        # librdkafka turns FENCED_INSTANCE_ID into a fatal consumer error
        assert fenced.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID), fenced
        assert "fenced" in fenced.str().lower(), fenced
        d = describe_group(admin, group)
        assert d.state == ConsumerGroupState.STABLE
        assert [(m.group_instance_id, m.member_id) for m in d.members] == [(f"{group}-i1", c2.memberid())]
        assert c2.memberid() != first_id
    finally:
        c2.close()
        c1.close()


# --------------------------------------------------------------------------------------------
# 4. kafka-python


def _kp_consume(consumer, want, timeout):
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for recs in consumer.poll(timeout_ms=200).values():
            got.extend(recs)
    return got


def test_groups_kafka_python_commit_and_resume(groups_gw):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic, group = _uniq("grp-kp"), _uniq("g-kp")
    create_topic(groups_gw.bootstrap, topic, 6)
    produce(groups_gw.bootstrap, topic, [(i % 6, i, payload_for(topic, i)) for i in range(240)])

    def consumer():
        return KafkaConsumer(topic, bootstrap_servers=groups_gw.bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id=_uniq("kp"), request_timeout_ms=30000)

    c = consumer()
    try:
        got = _kp_consume(c, 240, 60)
        got += _kp_consume(c, 1, 1.0)  # nothing else may arrive
        assert sorted(id_of_key(r.key) for r in got) == list(range(240))
        for r in got:
            i = id_of_key(r.key)
            assert r.value == payload_for(topic, i) and r.partition == i % 6 and r.offset == i // 6
        c.commit()
        assert {p: c.committed(KTP(topic, p)) for p in range(6)} == {p: 40 for p in range(6)}
    finally:
        c.close()
    admin = make_admin(groups_gw.bootstrap)
    assert committed_offsets(admin, group, topic, 6) == {p: 40 for p in range(6)}

    # a second run of the group resumes at the committed offsets: only new messages
    produce(groups_gw.bootstrap, topic, [(i % 6, i, payload_for(topic, i)) for i in range(240, 360)])
    c = consumer()
    try:
        got = _kp_consume(c, 120, 60)
        got += _kp_consume(c, 1, 1.5)
        assert sorted(id_of_key(r.key) for r in got) == list(range(240, 360)), "resume did not start at the committed offsets"
        for r in got:
            i = id_of_key(r.key)
            assert r.value == payload_for(topic, i) and r.offset == i // 6
        c.commit()
    finally:
        c.close()
    assert committed_offsets(admin, group, topic, 6) == {p: 60 for p in range(6)}


# --------------------------------------------------------------------------------------------
# 5. aiokafka


def test_groups_aiokafka_two_members_commit_and_resume(groups_gw):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as ATP

    topic, group = _uniq("grp-aio"), _uniq("g-aio")
    create_topic(groups_gw.bootstrap, topic, 6)

    def consumer():
        return AIOKafkaConsumer(topic, bootstrap_servers=groups_gw.bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=500)

    async def until(cond, timeout, what):
        deadline = time.time() + timeout
        while not cond():
            assert time.time() < deadline, f"timed out: {what}"
            await asyncio.sleep(0.1)

    async def drain(c, sink, stop):
        while not stop.is_set():
            batches = await c.getmany(timeout_ms=200)
            for recs in batches.values():
                sink.extend(recs)
            if batches:
                await c.commit()

    async def main():
        c1, c2 = consumer(), consumer()
        await c1.start()
        await c2.start()
        got1, got2, stop = [], [], asyncio.Event()
        tasks = [asyncio.create_task(drain(c1, got1, stop)), asyncio.create_task(drain(c2, got2, stop))]
        try:
            await until(lambda: len(c1.assignment()) == 3 and len(c2.assignment()) == 3 or any(t.done() for t in tasks),
                        30, "two aiokafka members with 3 partitions each")
            a1 = {tp.partition for tp in c1.assignment()}
            a2 = {tp.partition for tp in c2.assignment()}
            assert a1 | a2 == set(range(6)) and not a1 & a2
            await asyncio.to_thread(produce, groups_gw.bootstrap, topic, [(i % 6, i, payload_for(topic, i)) for i in range(300)])
            await until(lambda: len(got1) + len(got2) >= 300 or any(t.done() for t in tasks), 60, "300 messages")
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            assert {r.partition for r in got1} <= a1 and {r.partition for r in got2} <= a2
            recs = got1 + got2
            # the group was stable before anything was produced: exactly once
            assert sorted(id_of_key(r.key) for r in recs) == list(range(300))
            for r in recs:
                i = id_of_key(r.key)
                assert r.value == payload_for(topic, i) and r.partition == i % 6 and r.offset == i // 6
            for c in (c1, c2):
                for tp in c.assignment():
                    assert await c.committed(tp) == 50
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await c1.stop()
            await c2.stop()

        # resume: produce more while the group is empty; a new member reads only those
        await asyncio.to_thread(produce, groups_gw.bootstrap, topic, [(i % 6, i, payload_for(topic, i)) for i in range(300, 360)])
        c3 = consumer()
        await c3.start()
        try:
            got = []
            deadline = time.time() + 60
            while len(got) < 60 and time.time() < deadline:
                for recs in (await c3.getmany(timeout_ms=200)).values():
                    got.extend(recs)
            for recs in (await c3.getmany(timeout_ms=1000)).values():
                got.extend(recs)
            assert sorted(id_of_key(r.key) for r in got) == list(range(300, 360))
            for r in got:
                assert r.value == payload_for(topic, id_of_key(r.key))
            await c3.commit()
            for p in range(6):
                assert await c3.committed(ATP(topic, p)) == 60
        finally:
            await c3.stop()

    asyncio.run(asyncio.wait_for(main(), 150))
    assert committed_offsets(make_admin(groups_gw.bootstrap), group, topic, 6) == {p: 60 for p in range(6)}


# --------------------------------------------------------------------------------------------
# 6. kcat balanced consumer


def _parse_kcat(out):
    """Records printed with -f '%p|%o|%K|%S|%k|%s\\n' (lengths make binary payloads parseable)."""
    recs, pos = [], 0
    while pos < len(out):
        fields = []
        for _ in range(4):
            bar = out.index(b"|", pos)
            fields.append(int(out[pos:bar]))
            pos = bar + 1
        p, o, klen, vlen = fields
        key = out[pos:pos + klen]
        pos += klen
        assert out[pos:pos + 1] == b"|", out[pos - 20:pos + 20]
        pos += 1
        val = out[pos:pos + vlen]
        pos += vlen
        assert out[pos:pos + 1] == b"\n", out[pos - 20:pos + 20]
        pos += 1
        recs.append((p, o, key, val))
    return recs


def test_groups_kcat_balanced_consumer_commits(groups_gw):
    topic, group = _uniq("grp-kcat"), _uniq("g-kcat")
    create_topic(groups_gw.bootstrap, topic, 3)
    produce(groups_gw.bootstrap, topic, [(i % 3, i, payload_for(topic, i)) for i in range(150)])
    # auto.offset.reset: a new group starts at the beginning. kcat -G commits on exit through
    # librdkafka's enable.auto.commit (the default), so no commit settings are passed.
    cmd = [KCAT, "-b", groups_gw.bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", "-e", "-q",
           "-f", "%p|%o|%K|%S|%k|%s\n", topic]
    r = subprocess.run(cmd, capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    recs = _parse_kcat(r.stdout)
    assert sorted(id_of_key(k) for _, _, k, _ in recs) == list(range(150)), r.stderr.decode(errors="replace")
    for p, o, k, v in recs:
        i = id_of_key(k)
        assert (p, o, v) == (i % 3, i // 3, payload_for(topic, i))
    admin = make_admin(groups_gw.bootstrap)
    assert committed_offsets(admin, group, topic, 3) == {p: 50 for p in range(3)}
    listed = admin.list_consumer_groups().result(20)
    assert group in {g.group_id for g in listed.valid}

    # a second kcat run of the same group has nothing left to read
    produce(groups_gw.bootstrap, topic, [(i % 3, i, payload_for(topic, i)) for i in range(150, 156)])
    r = subprocess.run(cmd, capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    recs = _parse_kcat(r.stdout)
    assert sorted(id_of_key(k) for _, _, k, _ in recs) == list(range(150, 156))
    assert committed_offsets(admin, group, topic, 3) == {p: 52 for p in range(3)}


# --------------------------------------------------------------------------------------------
# 7. AdminClient group APIs


def _poll_thread(conf, topic, stop, sink, errors):
    """A group member created, polled (commit after each message) and closed by one thread."""
    def run():
        consumer = Consumer(conf)
        try:
            consumer.subscribe([topic])
            while not stop.is_set():
                m = consumer.poll(0.1)
                if m is not None and m.error() is None:
                    sink.append(m)
                    consumer.commit(message=m, asynchronous=False)
        except Exception:
            errors.append(traceback.format_exc())
        finally:
            consumer.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_groups_admin_client_apis(groups_gw):
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient

    bs = groups_gw.bootstrap
    topic, group, other = _uniq("grp-admin"), _uniq("g-admin"), _uniq("g-admin-simple")
    create_topic(bs, topic, 6)
    produce(bs, topic, [(i % 6, i, payload_for(topic, i)) for i in range(60)])
    admin = make_admin(bs)

    # a "simple" group: only committed offsets, no members -> Empty
    s = Consumer({"bootstrap.servers": bs, "group.id": other, "enable.auto.commit": False})
    s.commit(offsets=[TopicPartition(topic, p, 1) for p in range(6)], asynchronous=False)
    s.close()

    # two active members consume everything
    stop, got, errors = threading.Event(), [], []
    threads = [_poll_thread({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "client.id": f"admin-member-{n}", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
                            topic, stop, got, errors) for n in range(2)]
    try:
        wait_for(lambda: len(got) >= 60 or errors, 60, "60 messages consumed by the group")
        assert not errors, errors

        def stable():
            d = describe_group(admin, group)
            return d if d.state == ConsumerGroupState.STABLE and len(d.members) == 2 else None
        d = wait_for(stable, 30, "group Stable with 2 members")
        assert d.group_id == group and not d.is_simple_consumer_group
        assert d.partition_assignor == "range", d.partition_assignor
        assert sorted(m.client_id for m in d.members) == ["admin-member-0", "admin-member-1"]
        assigned = [tp for m in d.members for tp in m.assignment.topic_partitions]
        assert sorted((tp.topic, tp.partition) for tp in assigned) == [(topic, p) for p in range(6)]
        assert all(len(m.assignment.topic_partitions) == 3 for m in d.members)
        assert all(m.member_id and "127.0.0.1" in m.host for m in d.members), [(m.member_id, m.host) for m in d.members]

        listed = admin.list_consumer_groups().result(20)
        states = {g.group_id: g.state for g in listed.valid}
        assert states.get(group) == ConsumerGroupState.STABLE, states
        assert states.get(other) == ConsumerGroupState.EMPTY, states
        only_stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(20)
        assert group in {g.group_id for g in only_stable.valid} and other not in {g.group_id for g in only_stable.valid}

        wait_for(lambda: committed_offsets(admin, group, topic, 6) == {p: 10 for p in range(6)}, 20, "offsets 10 committed")
        # OffsetFetch for all of the group's partitions (no partitions named)
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(20)
        assert sorted((tp.topic, tp.partition, tp.offset) for tp in res.topic_partitions) == [(topic, p, 10) for p in range(6)]
        assert sorted(id_of_key(m.key()) for m in got) == list(range(60))
        assert all(m.value() == payload_for(topic, id_of_key(m.key())) for m in got)

        # deleting a group with members is refused
        with pytest.raises(KafkaException) as ei:
            admin.delete_consumer_groups([group])[group].result(20)
        assert ei.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, ei.value
        # altering offsets of a group with members is refused too (Kafka: UNKNOWN_MEMBER_ID)
        # (confluent-kafka reports that per partition in the result)
        res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 0)])])[group].result(20)
        assert [(tp.partition, tp.error and tp.error.code()) for tp in res.topic_partitions] == [(0, KafkaError.UNKNOWN_MEMBER_ID)]
        assert committed_offsets(admin, group, topic, 6)[0] == 10
        # OffsetDelete (kafka-python; confluent-kafka has no API for it) is refused while members subscribe to the topic
        kadmin = KafkaAdminClient(bootstrap_servers=bs, client_id=_uniq("kadmin"))
        try:
            res = kadmin.delete_group_offsets(group, [KTP(topic, 0)])
            errs = {tp.partition: err for tp, err in res.items()}
            assert errs[0].__name__ == "GroupSubscribedToTopicError", errs
        finally:
            kadmin.close()
        assert committed_offsets(admin, group, topic, 6)[0] == 10
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors

    # the group is Empty once its members closed (they sent LeaveGroup)
    d = wait_for(lambda: (lambda d: d if d.state == ConsumerGroupState.EMPTY else None)(describe_group(admin, group)), 20, "group Empty")
    assert d.members == []

    # alter offsets of the empty group; a new member starts exactly there
    new = {p: 3 + p for p in range(6)}
    res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in new.items()])])[group].result(20)
    assert all(tp.error is None for tp in res.topic_partitions)
    assert committed_offsets(admin, group, topic, 6) == new
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    msgs = []
    deadline = time.time() + 60
    while len(msgs) < 60 - sum(new.values()) and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            msgs.append(m)
    end = time.time() + 1
    while time.time() < end:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            msgs.append(m)
    c.commit(asynchronous=False)
    c.close()
    expected = sorted((p, o) for p in range(6) for o in range(new[p], 10))
    assert sorted((m.partition(), m.offset()) for m in msgs) == expected
    for m in msgs:
        i = id_of_key(m.key())
        assert (m.partition(), m.offset(), m.value()) == (i % 6, i // 6, payload_for(topic, i))
    assert committed_offsets(admin, group, topic, 6) == {p: 10 for p in range(6)}

    # OffsetDelete on the empty group removes one partition's offset
    kadmin = KafkaAdminClient(bootstrap_servers=bs, client_id=_uniq("kadmin"))
    try:
        res = kadmin.delete_group_offsets(group, [KTP(topic, 0), KTP(topic, 1)])
        assert all(err.__name__ == "NoError" for err in res.values()), res
    finally:
        kadmin.close()
    after = committed_offsets(admin, group, topic, 6)
    assert after[0] < 0 and after[1] < 0 and all(after[p] == 10 for p in range(2, 6)), after

    # deleting the empty group works, then it and its offsets are gone
    admin.delete_consumer_groups([group])[group].result(20)
    listed = admin.list_consumer_groups().result(20)
    assert group not in {g.group_id for g in listed.valid}
    assert all(o < 0 for o in committed_offsets(admin, group, topic, 6).values())
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(20)
    assert all(tp.offset < 0 for tp in res.topic_partitions)
    with pytest.raises(KafkaException) as ei:
        admin.delete_consumer_groups([group])[group].result(20)
    assert ei.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, ei.value
    # the other group is untouched
    assert committed_offsets(admin, other, topic, 6) == {p: 1 for p in range(6)}


# --------------------------------------------------------------------------------------------
# 8. committed offsets survive a gateway crash


def test_groups_committed_offsets_survive_gateway_crash(groups_gw):
    bs = groups_gw.bootstrap
    topic, group = _uniq("grp-crash"), _uniq("g-crash")
    create_topic(bs, topic, 6)
    produce(bs, topic, [(i % 6, i, payload_for(topic, i)) for i in range(600)])

    conf = {"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    c = Consumer(conf)
    c.subscribe([topic])
    processed = {}
    n = 0
    deadline = time.time() + 60
    while n < 300 and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        i = id_of_key(m.key())
        assert (m.partition(), m.offset(), m.value()) == (i % 6, i // 6, payload_for(topic, i))
        processed[m.partition()] = m.offset() + 1
        n += 1
    assert n == 300
    res = c.commit(offsets=[TopicPartition(topic, p, o, metadata=f"meta-{p}-{o}") for p, o in processed.items()], asynchronous=False)
    assert all(tp.error is None for tp in res)
    c.close()
    meta = {p: f"meta-{p}-{o}" for p, o in processed.items()}

    def metadata_now():
        adm = make_admin(bs)  # must outlive the future
        req = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in processed])]
        return {tp.partition: tp.metadata for tp in adm.list_consumer_group_offsets(req)[group].result(20).topic_partitions}
    assert metadata_now() == meta
    start = {p: processed.get(p, 0) for p in range(6)}
    admin = make_admin(bs)
    assert committed_offsets(admin, group, topic, 6) == {p: processed.get(p, -1001) for p in range(6)}

    groups_gw.kill()
    groups_gw.start(keep_ports=True)

    # committed offsets and data survived; more data arrives after the restart
    admin = make_admin(bs)
    assert committed_offsets(admin, group, topic, 6) == {p: processed.get(p, -1001) for p in range(6)}
    assert metadata_now() == meta, "commit metadata lost in the crash"
    produce(bs, topic, [(i % 6, i, payload_for(topic, i)) for i in range(600, 720)])
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    want = sum(120 - start[p] for p in range(6))
    deadline = time.time() + 60
    while len(got) < want and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    end = time.time() + 1.5
    while time.time() < end:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            got.append(m)
    c.commit(asynchronous=False)
    c.close()
    assert sorted((m.partition(), m.offset()) for m in got) == sorted((p, o) for p in range(6) for o in range(start[p], 120)), \
        f"resumed at {sorted({(m.partition(), min(x.offset() for x in got if x.partition() == m.partition())) for m in got})}, committed {start}"
    for m in got:
        i = id_of_key(m.key())
        assert (m.partition(), m.offset(), m.value()) == (i % 6, i // 6, payload_for(topic, i))
    assert committed_offsets(admin, group, topic, 6) == {p: 120 for p in range(6)}


# --------------------------------------------------------------------------------------------
# 8b. live members ride through a gateway crash


def test_groups_live_members_survive_gateway_crash(groups_gw):
    bs = groups_gw.bootstrap
    topic, group = _uniq("grp-crash-live"), _uniq("g-crash-live")
    create_topic(bs, topic, 6)
    sc = GroupScenario(bs, topic, group, 6, 1800)
    # while the gateway is down the client reports connection errors through poll()
    sc.tolerated_codes = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
    produce(bs, topic, [(i % 6, i, sc.expected[i]) for i in range(1200)])
    try:
        for n in ("A", "B"):
            sc.start_member(n, process_delay=0.004)
        sc.wait_balanced(["A", "B"])
        sc.wait_distinct(400, 60)
        assert sc.distinct_ids() < 1100, "consumed too fast to crash mid-stream"
        groups_gw.kill()
        time.sleep(1.0)
        groups_gw.start(keep_ports=True)
        produce(bs, topic, [(i % 6, i, sc.expected[i]) for i in range(1200, 1800)])
        sc.producer_done.set()
        # membership was in memory: both members rejoin the restarted coordinator
        sc.wait_balanced(["A", "B"], timeout=60)
        ends = sc.wait_all_committed(120)
        assert ends == {p: 300 for p in range(6)}
        sc.stop_all()
        dups = sc.analyze(ends)
        _report(sc, "crash-live", dups)
        print(f"[crash-live] tolerated client errors: {Counter(e for _, e in sc.tolerated).most_common(4)}")
    finally:
        for m in sc.members.values():
            m.stop.set()
        for m in sc.members.values():
            m.join(30)


# --------------------------------------------------------------------------------------------
# 9. a member process killed without leaving: the coordinator expires it after session.timeout.ms


EXTERNAL_MEMBER = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition, KafkaException
bs, group, topic, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

def out(*a):
    sys.stdout.write(" ".join(str(x) for x in a) + "\n")
    sys.stdout.flush()

def parts(ps):
    return ",".join(str(tp.partition) for tp in ps)

c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
              "session.timeout.ms": 3000, "heartbeat.interval.ms": 300, "fetch.wait.max.ms": 100})
c.subscribe([topic], on_assign=lambda cons, ps: out("A", time.monotonic(), parts(ps)),
            on_revoke=lambda cons, ps: out("R", time.monotonic(), parts(ps)))
while True:
    m = c.poll(0.1)
    if m is None:
        continue
    if m.error():
        out("E", m.error())
        continue
    out("M", m.partition(), m.offset(), m.key().decode(), m.value().hex())
    time.sleep(delay)
    out("T", m.partition(), m.offset() + 1)
    try:
        res = c.commit(offsets=[TopicPartition(topic, m.partition(), m.offset() + 1)], asynchronous=False)
        if res[0].error is None:
            out("C", time.monotonic(), m.partition(), m.offset() + 1)
        else:
            out("F", m.partition(), m.offset() + 1, res[0].error)
    except KafkaException as e:
        out("F", m.partition(), m.offset() + 1, e)
"""


def test_groups_killed_member_expires_after_session_timeout(groups_gw, procs):
    import sys
    bs = groups_gw.bootstrap
    topic, group = _uniq("grp-expire"), _uniq("g-expire")
    create_topic(bs, topic, 6)
    sc = GroupScenario(bs, topic, group, 6, 1200, {"session.timeout.ms": 3000, "heartbeat.interval.ms": 300})
    script = os.path.join(groups_gw.workdir, "external_member.py")
    with open(script, "w") as f:
        f.write(EXTERNAL_MEMBER)
    z = procs.spawn("external-member", [sys.executable, script, bs, group, topic, "0.005"], stdout=subprocess.PIPE, text=True)
    zlines = []
    reader = threading.Thread(target=lambda: zlines.extend(iter(z.stdout.readline, "")), daemon=True)
    reader.start()
    admin = make_admin(bs)
    try:
        a = sc.start_member("A")

        def balanced():
            if len(a.owned) != 3:
                return False
            d = describe_group(admin, group)
            return d.state == ConsumerGroupState.STABLE and len(d.members) == 2
        wait_for(balanced, 45, "A and the external member hold 3 partitions each")
        z_parts = set(range(6)) - a.owned
        sc.start_producer()
        wait_for(lambda: sum(1 for l in list(zlines) if l.startswith("C ")) >= 60, 60, "external member consuming and committing")
        z.kill()
        t_kill = time.monotonic()
        reader.join(10)
        sc.ingest_external("Z", list(zlines))
        assert not sc.errors, sc.errors
        # no LeaveGroup: A takes over only once the coordinator expired Z's session (3 s)
        wait_for(lambda: a.owned == set(range(6)), 30, "A owns all partitions after Z's session expired")
        takeover = min(t for t, m, k, p in sc.callbacks if m == "A" and k == "assign" and set(p) & z_parts and t > t_kill)
        print(f"[expire] A took over {sorted(z_parts)} {takeover - t_kill:.2f}s after the kill")
        # not before the session could have expired (last heartbeat <= 0.3 s before the kill), not much later
        assert 1.5 < takeover - t_kill < 3 + 10, f"takeover {takeover - t_kill:.1f}s after the kill"
        d = describe_group(admin, group)
        assert len(d.members) == 1 and d.members[0].member_id == a.memberid
        ends = sc.wait_all_committed(90)
        sc.stop_all()
        dups = sc.analyze(ends)
        _report(sc, "expire", dups)
    finally:
        z.kill()
        for m in sc.members.values():
            m.stop.set()
        for m in sc.members.values():
            m.join(30)


# --------------------------------------------------------------------------------------------
# 10. session timeouts outside 1 s .. 30 min are refused


@pytest.mark.parametrize("session_timeout_ms", [500, 1_800_001])
def test_groups_session_timeout_out_of_range_is_refused(groups_gw, session_timeout_ms):
    topic, group = _uniq("grp-sto"), _uniq("g-sto")
    create_topic(groups_gw.bootstrap, topic, 2)
    c = Consumer({"bootstrap.servers": groups_gw.bootstrap, "group.id": group, "session.timeout.ms": session_timeout_ms,
                  "max.poll.interval.ms": max(session_timeout_ms, 300000)})
    c.subscribe([topic])
    err = None
    deadline = time.time() + 20
    try:
        while err is None and time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is not None:
                err = m.error()
        assert err is not None and err.code() == KafkaError.INVALID_SESSION_TIMEOUT, err
        assert c.assignment() == []
    finally:
        c.close()
    admin = make_admin(groups_gw.bootstrap)
    assert describe_group(admin, group).members == []
