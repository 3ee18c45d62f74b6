"""KIP-848 consumer groups (group.protocol=consumer) with librdkafka (confluent-kafka).

Two members of one group split a 4-partition topic by ConsumerGroupHeartbeat with the server's
assignor; every record is read, no partition is ever assigned to both members at once (checked
at every poll), commits carry the member epoch and a restarted member resumes from them; one
member leaving hands its partitions to the other; AdminClient sees the group as a consumer-type
group (ListGroups types, ConsumerGroupDescribe); a classic consumer cannot join the group while
it has members, and takes it over once it is empty. Subscription by regex. A static member
(group.instance.id) that closes and comes back keeps its partitions, and the other member never
gets them meanwhile.
"""
import time

from confluent_kafka import Consumer, ConsumerGroupType, KafkaError
from confluent_kafka.admin import AdminClient

from helpers import admin, create_topic, produce_all, producer, unique, wait_futures


def member(bootstrap, group, **conf):
    base = {"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    base.update(conf)
    return Consumer(base)


def fill(bootstrap, topic, n):
    sent = [(b"k%d" % i, b"v%d" % i, []) for i in range(n)]
    assert not produce_all(producer(bootstrap, acks="all"), topic, sent).errors()


def poll_all(consumers, want, timeout=60):
    """Polls every consumer until `want` distinct (partition, offset) were read; checks at each
    step that no partition is assigned to two members."""
    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        for i, c in enumerate(consumers):
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                seen[(m.partition(), m.offset())] = i
            owned = [set((tp.topic, tp.partition) for tp in c.assignment()) for c in consumers]
            for a in range(len(owned)):
                for b in range(a + 1, len(owned)):
                    assert not owned[a] & owned[b], f"partitions {owned[a] & owned[b]} assigned to two members"
    return seen


def test_two_members_split_commit_and_resume(gateway):
    topic = create_topic(gateway.bootstrap, unique("kip848"), partitions=4)
    group = unique("g848")
    fill(gateway.bootstrap, topic, 400)
    c1, c2 = member(gateway.bootstrap, group), member(gateway.bootstrap, group)
    for c in (c1, c2):
        c.subscribe([topic])
    try:
        seen = poll_all([c1, c2], 400)
        assert len(seen) == 400, f"the group read {len(seen)} of 400"
        # both members end up with partitions, all four between them
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            a1, a2 = ({tp.partition for tp in c.assignment()} for c in (c1, c2))
            if a1 and a2 and a1 | a2 == {0, 1, 2, 3}:
                break
            for c in (c1, c2):
                c.poll(0.2)
        assert a1 and a2 and a1 | a2 == {0, 1, 2, 3} and not a1 & a2, (a1, a2)
        for c in (c1, c2):
            c.commit(asynchronous=False)

        a = admin(gateway.bootstrap)
        listed = wait_futures({"l": a.list_consumer_groups(types={ConsumerGroupType.CONSUMER}, request_timeout=30)})["l"]
        assert group in [g.group_id for g in listed.valid], listed.valid
        (desc,) = wait_futures(a.describe_consumer_groups([group], request_timeout=30)).values()
        assert desc.type == ConsumerGroupType.CONSUMER, desc.type
        assert len(desc.members) == 2
        assigned = sorted(tp.partition for m in desc.members for tp in m.assignment.topic_partitions)
        assert assigned == [0, 1, 2, 3], assigned
        # a classic consumer cannot join while the group has members
        classic = Consumer({"bootstrap.servers": gateway.bootstrap, "group.id": group, "session.timeout.ms": 6000})
        classic.subscribe([topic])
        err = None
        deadline = time.monotonic() + 20
        while err is None and time.monotonic() < deadline:
            m = classic.poll(0.5)
            if m is not None and m.error() is not None:
                err = m.error()
        classic.close()
        assert err is not None and err.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL, err

        # c2 leaves: c1 takes everything
        c2.close()
        c2 = None
        deadline = time.monotonic() + 30
        while {tp.partition for tp in c1.assignment()} != {0, 1, 2, 3} and time.monotonic() < deadline:
            c1.poll(0.2)
        assert {tp.partition for tp in c1.assignment()} == {0, 1, 2, 3}
    finally:
        c1.close()
        if c2 is not None:
            c2.close()
    # restarted: nothing before the commits is read again
    fill(gateway.bootstrap, topic, 8)
    c3 = member(gateway.bootstrap, group)
    c3.subscribe([topic])
    try:
        seen = poll_all([c3], 8, timeout=30)
        extra = poll_all([c3], 1, timeout=2)
        assert len(seen) == 8 and not set(extra) - set(seen), "a restarted member re-read committed records"
    finally:
        c3.close()
    # empty now: a classic consumer takes the group over
    classic = Consumer({"bootstrap.servers": gateway.bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    classic.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while not classic.assignment() and time.monotonic() < deadline:
            m = classic.poll(0.5)
            assert m is None or m.error() is None, m.error()
        assert classic.assignment(), "the classic consumer never joined the emptied group"
    finally:
        classic.close()


def test_regex_subscription(gateway):
    prefix = unique("rx")
    topics = [create_topic(gateway.bootstrap, f"{prefix}-{i}", partitions=2) for i in range(2)]
    create_topic(gateway.bootstrap, unique("other"), partitions=1)
    for t in topics:
        fill(gateway.bootstrap, t, 10)
    c = member(gateway.bootstrap, unique("grx"))
    c.subscribe([f"^{prefix}-.*"])
    try:
        deadline = time.monotonic() + 40
        got = set()
        while len(got) < 20 and time.monotonic() < deadline:
            m = c.poll(0.3)
            if m is not None and m.error() is None:
                got.add((m.topic(), m.partition(), m.offset()))
        assert len(got) == 20, f"read {len(got)} of 20 through the regex"
        assert {t for t, _, _ in got} == set(topics)
    finally:
        c.close()


def test_a_static_member_restarting_keeps_its_partitions(procs, tmp_path):
    # members heartbeat every 300 ms: a dynamic leave would move the partitions within a second
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("group_consumer_heartbeat_interval_ms = 300\n")
    gateway = procs.gateway("--config", str(cfg))
    topic = create_topic(gateway.bootstrap, unique("static848"), partitions=4)
    group = unique("gs848")
    fill(gateway.bootstrap, topic, 40)
    s1 = member(gateway.bootstrap, group, **{"group.instance.id": "host-1"})
    other = member(gateway.bootstrap, group)
    for c in (s1, other):
        c.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for c in (s1, other):
                c.poll(0.2)
            mine, theirs = ({tp.partition for tp in c.assignment()} for c in (s1, other))
            if len(mine) == 2 and len(theirs) == 2:
                break
        assert len(mine) == 2 and len(theirs) == 2, (mine, theirs)
        s1.close()  # a static member leaves with epoch -2: its partitions wait for it
        until = time.monotonic() + 3
        while time.monotonic() < until:
            other.poll(0.2)
            assert {tp.partition for tp in other.assignment()} == theirs, "the other member took the static member's partitions"
        s1 = member(gateway.bootstrap, group, **{"group.instance.id": "host-1"})
        s1.subscribe([topic])
        deadline = time.monotonic() + 30
        back = set()
        while time.monotonic() < deadline and back != mine:
            s1.poll(0.2)
            other.poll(0.2)
            back = {tp.partition for tp in s1.assignment()}
        assert back == mine, f"the new incarnation got {back}, its predecessor had {mine}"
        assert {tp.partition for tp in other.assignment()} == theirs
    finally:
        for c in (s1, other):
            try:
                c.close()
            except Exception:
                pass
