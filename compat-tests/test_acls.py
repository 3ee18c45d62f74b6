"""ACLs with real clients (issue 14): with the authorizer on, a principal without ACLs cannot
read, write, describe, commit, create or delete; ACLs made with confluent-kafka's
create_acls grant exactly what they name (prefixed patterns, groups, DENY beating ALLOW),
describe_acls lists them, delete_acls takes them away again within one poll; the super user may
do everything; plaintext clients are ANONYMOUS and get nothing; a second gateway on the same
etcd enforces the same ACLs.
"""
import os
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType)

from conftest import free_port
from helpers import unique
from test_security import write_config

USERS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"}


def write_acl_config(path, port):
    return write_config(path, {"SASL_PLAINTEXT": ("SASL_PLAINTEXT", port)}, super_users=["User:admin"],
                        acl={"authorizer": True, "poll_ms": 200}, sasl={"failed_authentication_delay_ms": 20, "users": USERS})


@pytest.fixture(scope="module")
def acl_gw(tmp_path_factory):
    from conftest import Gateway
    work = str(tmp_path_factory.mktemp("acl-gw"))
    port = free_port()
    gw = Gateway(work, ["--config", write_acl_config(os.path.join(work, "gateway.toml"), port)])
    gw.start()
    gw.sasl_port = port
    yield gw
    gw.stop()


def conf(gw, user):
    return {"bootstrap.servers": f"127.0.0.1:{gw.sasl_port}", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": user, "sasl.password": USERS[user]}


def produce_one(c, topic, value=b"x", timeout=15):
    """The delivery error code of one message (None: delivered)."""
    out = []
    p = Producer({**c, "message.timeout.ms": timeout * 1000, "retries": 0})
    p.produce(topic, value, on_delivery=lambda err, msg: out.append(err))
    p.flush(timeout + 5)
    assert out, "no delivery report"
    return out[0].code() if out[0] else None


def read(c, topic, group, n=1, timeout=15, commit=False):
    """(messages, errors) of a subscribed consumer."""
    cons = Consumer({**c, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    cons.subscribe([topic])
    got, errs = [], []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = cons.poll(0.5)
            if m is None:
                continue
            if m.error():
                errs.append(m.error().code())
                if m.error().code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED):
                    break
                continue
            got.append(m.value())
        if commit and got:
            cons.commit(asynchronous=False)
    except KafkaException as e:
        errs.append(e.args[0].code())
    finally:
        cons.close()
    return got, errs


def acl(rtype, name, principal, op, perm=AclPermissionType.ALLOW, pattern=ResourcePatternType.LITERAL):
    return AclBinding(rtype, name, pattern, principal, "*", op, perm)


def wait_for(what, check, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        r = check()
        if r:
            return r
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_without_acls_nothing_is_allowed(acl_gw):
    admin = AdminClient(conf(acl_gw, "admin"))
    topic = unique("noacl")
    for f in admin.create_topics([NewTopic(topic, 1)]).values():
        f.result(15)
    assert produce_one(conf(acl_gw, "admin"), topic) is None, "the super user writes"
    alice = conf(acl_gw, "alice")
    assert produce_one(alice, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    got, errs = read(alice, topic, unique("g"), timeout=8)
    assert not got and errs, "alice reads nothing"
    md = AdminClient(alice).list_topics(timeout=10)
    assert topic not in md.topics, "Metadata lists only topics the principal may describe"
    a = AdminClient(alice)
    with pytest.raises(KafkaException) as e:
        list(a.create_topics([NewTopic(unique("alice-new"), 1)]).values())[0].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        list(a.delete_topics([topic]).values())[0].result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # DescribeAcls answers CLUSTER_AUTHORIZATION_FAILED at the top level, which librdkafka drops
    # (it parses the code and returns the empty list): alice sees no ACLs, not even her own
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
    for f in admin.create_acls([acl(ResourceType.GROUP, unique("g"), "User:bob", AclOperation.READ)]).values():
        f.result(15)
    assert admin.describe_acls(everything).result(15), "the super user sees the ACLs"
    assert a.describe_acls(everything).result(15) == []
    # plaintext clients are ANONYMOUS: nothing either
    assert produce_one({"bootstrap.servers": acl_gw.bootstrap}, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acls_grant_what_they_name_and_deny_wins(acl_gw):
    admin = AdminClient(conf(acl_gw, "admin"))
    prefix = unique("orders") + "-"
    topic, secret, other = prefix + "eu", prefix + "secret", unique("payments")
    group = unique("alice-g")
    for f in admin.create_topics([NewTopic(t, 1) for t in (topic, secret, other)]).values():
        f.result(15)
    bindings = [
        acl(ResourceType.TOPIC, prefix, "User:alice", AclOperation.WRITE, pattern=ResourcePatternType.PREFIXED),
        acl(ResourceType.TOPIC, prefix, "User:alice", AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
        acl(ResourceType.TOPIC, secret, "User:alice", AclOperation.READ, perm=AclPermissionType.DENY),
        acl(ResourceType.GROUP, group, "User:alice", AclOperation.READ),
    ]
    for f in admin.create_acls(bindings).values():
        f.result(15)
    described = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
                                                     AclOperation.ANY, AclPermissionType.ANY)).result(15)
    assert sorted(map(str, described)) == sorted(map(str, bindings))
    alice = conf(acl_gw, "alice")
    wait_for("alice's grants", lambda: produce_one(alice, topic, b"a1") is None)
    assert produce_one(alice, secret, b"s1") is None, "WRITE on the prefix covers the secret topic"
    assert produce_one(alice, other) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    got, errs = read(alice, topic, group, commit=True)
    assert got == [b"a1"], errs
    committed = Consumer({**alice, "group.id": group}).committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 1
    got, errs = read(alice, secret, group, timeout=8)
    assert not got and KafkaError.TOPIC_AUTHORIZATION_FAILED in errs, "DENY READ beats the prefixed ALLOW"
    got, errs = read(alice, topic, unique("not-her-group"), timeout=8)
    assert not got and KafkaError.GROUP_AUTHORIZATION_FAILED in errs
    md = AdminClient(alice).list_topics(timeout=10)
    assert topic in md.topics and other not in md.topics, "READ/WRITE imply DESCRIBE"
    # bob has no ACLs at all
    assert produce_one(conf(acl_gw, "bob"), topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # delete_acls takes the grants away (within one poll on every gateway)
    deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, "User:alice", None,
                                                  AclOperation.ANY, AclPermissionType.ANY)])
    gone = list(deleted.values())[0].result(15)
    assert len(gone) == 2
    wait_for("alice to lose WRITE", lambda: produce_one(alice, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED)


def test_a_second_gateway_enforces_the_same_acls(procs, tmp_path):
    """Two gateways on one etcd and one object store: an ACL created through one gateway lets
    alice write through the other."""
    etcd, moto = procs.etcd(wait=False), procs.moto(wait=False)
    etcd, moto = etcd.wait_ready(), moto.wait_ready()
    common = ["--storage", "s3", "--s3-endpoint", moto.url("s3"), "--s3-bucket", "acls", "--s3-path-style", "true",
              "--metadata", "etcd", "--etcd-endpoints", etcd.url("client")]
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "NO_COLOR": "1"}
    gws = []
    for i in range(2):
        port = free_port()
        cfg = write_acl_config(str(tmp_path / f"gw{i}.toml"), port)
        gws.append(procs.gateway("--config", cfg, "--node-id", str(i), *common, workdir=str(tmp_path / f"gw{i}"), env=env))
        gws[-1].sasl_port = port
    topic = unique("shared")
    admin0 = AdminClient(conf(gws[0], "admin"))
    for f in admin0.create_topics([NewTopic(topic, 2)]).values():
        f.result(20)
    alice1 = conf(gws[1], "alice")
    assert produce_one(alice1, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    for f in admin0.create_acls([acl(ResourceType.TOPIC, topic, "User:alice", AclOperation.WRITE)]).values():
        f.result(15)
    wait_for("gateway 1 to enforce gateway 0's ACL", lambda: produce_one(alice1, topic) is None, timeout=20)
