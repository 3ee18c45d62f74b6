"""Security with real clients (issue 14, first part): named listeners that advertise their own
addresses; TLS (server certificates generated here, rotated on disk without a restart, client
certificates with the principal mapped from the subject); SASL PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512 over SASL_PLAINTEXT and SASL_SSL with librdkafka (confluent-kafka, kcat),
kafka-python and aiokafka; SCRAM credentials managed with AlterUserScramCredentials /
DescribeUserScramCredentials; the refusals (wrong password, unknown user, untrusted or missing
certificate, plaintext to a TLS port, TLS to a plaintext port, requests before authentication)
each answered with Kafka's error or a closed connection, never a crash; re-authentication
(KIP-368) and the v0 raw-token framing on the wire.
"""
import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

import wire
from certs import CA, subject_cn
from conftest import free_port
from helpers import consume, produce_all, unique

ADMIN, ADMIN_PW = "admin", "admin-secret"


def toml_value(v):
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def toml_table(name, values):
    """[name] with its plain keys, then a [name.key] table for each dict value."""
    lines = [f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for k, v in values.items():
        if isinstance(v, dict):
            lines += toml_table(f"{name}.{k}", v)
    return lines


def write_config(path, listeners, *, super_users=(), **tables):
    """A gateway config file: top-level keys first, then one table per keyword (tls={...},
    sasl={..., "users": {...}}, acl={...}; nested dicts become subtables), then the listeners
    {name: (protocol, port)}."""
    lines = [f"super_users = {toml_value(list(super_users))}"] if super_users else []
    for name, values in tables.items():
        lines += toml_table(name, values)
    for name, (proto, port) in listeners.items():
        lines += ["[[listeners]]", f'name = "{name}"', f'listen = "127.0.0.1:{port}"', f'protocol = "{proto}"']
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(os.path.join(d, "ca"))
    other = CA(os.path.join(d, "other"), name="other-ca")
    return {
        "dir": d,
        "ca": ca,
        "server": ca.issue("server", [("CN", "localhost")], server=True),
        "alice": ca.issue("alice", [("CN", "alice"), ("OU", "eng"), ("O", "Example")]),
        "bob": ca.issue("bob", [("CN", "bob"), ("OU", "ops"), ("O", "Example")]),
        "mallory": other.issue("mallory", [("CN", "mallory"), ("O", "Example")]),
    }


@pytest.fixture(scope="module")
def secure(pki, tmp_path_factory):
    """One gateway: PLAINTEXT (main), SSL, SASL_PLAINTEXT and SASL_SSL listeners."""
    from conftest import Gateway
    work = str(tmp_path_factory.mktemp("secure-gw"))
    cert, key = pki["server"]
    ports = {"SSL": ("SSL", free_port()), "SASL_PLAINTEXT": ("SASL_PLAINTEXT", free_port()), "SASL_SSL": ("SASL_SSL", free_port())}
    cfg = write_config(os.path.join(work, "gateway.toml"), ports,
                       tls={"cert_file": cert, "key_file": key, "reload_check_ms": 200},
                       sasl={"users": {ADMIN: ADMIN_PW, "dave": "dave-pw"}, "failed_authentication_delay_ms": 50}, super_users=[f"User:{ADMIN}"])
    gw = Gateway(work, ["--config", cfg])
    gw.start()
    gw.listener = {name: port for name, (_, port) in ports.items()}
    yield gw
    gw.stop()


def sasl_conf(gw, protocol, mechanism, user=ADMIN, password=ADMIN_PW, pki=None):
    conf = {"bootstrap.servers": f"127.0.0.1:{gw.listener[protocol]}", "security.protocol": protocol,
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
    if protocol == "SASL_SSL":
        conf["ssl.ca.location"] = pki["ca"].pem
    return conf


def refused(conf, timeout=8):
    """The client's errors while asking for metadata (empty: it was let in)."""
    errors = []
    a = AdminClient({**conf, "error_cb": errors.append, "reconnect.backoff.max.ms": 1000})
    try:
        a.list_topics(timeout=timeout)
        return []
    except KafkaException as e:
        a.poll(0.5)  # error_cb runs from poll
        return errors or [e.args[0]]


def round_trip(conf, topic, n=20):
    p = Producer({**conf, "linger.ms": 5})
    produce_all(p, topic, [(None, f"v{i}".encode(), None) for i in range(n)])
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({**conf, "group.id": unique("rt"), "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        got += [m.value() for m in c.consume(100, 0.5) if m.error() is None]
    c.close()
    assert got == [f"v{i}".encode() for i in range(n)]


def test_every_listener_advertises_its_own_address(secure, pki):
    for name, conf in [("PLAINTEXT", {"bootstrap.servers": secure.bootstrap}),
                       ("SSL", {"bootstrap.servers": f"127.0.0.1:{secure.listener['SSL']}", "security.protocol": "SSL",
                                "ssl.ca.location": pki["ca"].pem}),
                       ("SASL_PLAINTEXT", sasl_conf(secure, "SASL_PLAINTEXT", "PLAIN")),
                       ("SASL_SSL", sasl_conf(secure, "SASL_SSL", "SCRAM-SHA-256", pki=pki))]:
        md = AdminClient(conf).list_topics(timeout=15)
        ports = {b.port for b in md.brokers.values()}
        want = secure.port if name == "PLAINTEXT" else secure.listener[name]
        assert ports == {want}, f"{name}: metadata names {ports}, the client came in on {want}"


@pytest.mark.parametrize("protocol,mechanism", [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
                                                ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")])
def test_librdkafka_produces_and_consumes_over_sasl(secure, pki, protocol, mechanism):
    topic = unique("sasl")
    round_trip(sasl_conf(secure, protocol, mechanism, pki=pki), topic)


def test_tls_round_trip_and_the_refused_connections(secure, pki):
    ssl_conf = {"bootstrap.servers": f"127.0.0.1:{secure.listener['SSL']}", "security.protocol": "SSL", "ssl.ca.location": pki["ca"].pem}
    round_trip(ssl_conf, unique("tls"))
    # a client that does not trust the server's CA
    assert refused({**ssl_conf, "ssl.ca.location": pki["mallory"][0]})
    # plaintext to the TLS port, TLS to the plaintext port
    assert refused({"bootstrap.servers": f"127.0.0.1:{secure.listener['SSL']}"})
    assert refused({"bootstrap.servers": secure.bootstrap, "security.protocol": "SSL", "ssl.ca.location": pki["ca"].pem})
    # raw garbage at the TLS port closes that connection only
    with wire.Conn(secure.listener["SSL"]) as c:
        c.send(wire.request(wire.METADATA, 1, 1, wire.metadata_v1([])))
        closed, _ = c.wait_closed(5)
        assert closed
    assert secure.alive()
    round_trip(ssl_conf, unique("tls-after"))


def test_sasl_refusals_answer_with_kafkas_error(secure, pki):
    for conf in [sasl_conf(secure, "SASL_PLAINTEXT", "PLAIN", password="wrong"),
                 sasl_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256", password="wrong"),
                 sasl_conf(secure, "SASL_SSL", "SCRAM-SHA-512", user="nobody", pki=pki),
                 sasl_conf(secure, "SASL_PLAINTEXT", "PLAIN", user="nobody")]:
        errs = refused(conf)
        assert errs, f"{conf['sasl.mechanism']} {conf['sasl.username']}: let in"
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errs), errs
        assert not any(ADMIN_PW in str(e) or "wrong" in str(e) for e in errs), "no credential in an error"
    # a SASL client at the plaintext port gets no session either
    assert refused({**sasl_conf(secure, "SASL_PLAINTEXT", "PLAIN"), "bootstrap.servers": secure.bootstrap})
    assert secure.alive()
    assert "wrong" not in secure.log_text() and ADMIN_PW not in secure.log_text()


def scram_admin(secure):
    return AdminClient(sasl_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256"))


def test_scram_users_are_managed_with_kafkas_apis(secure, pki):
    a = scram_admin(secure)
    user = unique("carol").replace("-", "_")
    up = [UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"carol-pw"),
          UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-pw")]
    for f in a.alter_user_scram_credentials(up).values():
        f.result(15)
    desc = a.describe_user_scram_credentials([user])[user].result(15)
    assert sorted((i.mechanism, i.iterations) for i in desc.scram_credential_infos) == \
        [(ScramMechanism.SCRAM_SHA_256, 8192), (ScramMechanism.SCRAM_SHA_512, 4096)]
    # the new user logs in with both mechanisms, and with PLAIN against its SCRAM credential
    round_trip(sasl_conf(secure, "SASL_SSL", "SCRAM-SHA-512", user=user, password="carol-pw", pki=pki), unique("carol"))
    assert not refused(sasl_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256", user=user, password="carol-pw"))
    assert not refused(sasl_conf(secure, "SASL_PLAINTEXT", "PLAIN", user=user, password="carol-pw"))
    assert refused(sasl_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256", user=user, password="carol-pw2"))
    # Kafka's checks: too few iterations, deleting what does not exist
    bad = a.alter_user_scram_credentials([UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 10), b"x")])
    with pytest.raises(KafkaException) as e:
        bad[user].result(15)
    assert e.value.args[0].code() == KafkaError.UNACCEPTABLE_CREDENTIAL
    gone = a.alter_user_scram_credentials([UserScramCredentialDeletion("nobody-at-all", ScramMechanism.SCRAM_SHA_256)])
    with pytest.raises(KafkaException) as e:
        gone["nobody-at-all"].result(15)
    assert e.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    # a user who is not a super user may not manage credentials (Describe's refusal is a
    # top-level error, which librdkafka 2.x crashes on: test_describe_needs_a_super_user has it)
    carol_admin = AdminClient(sasl_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-256", user=user, password="carol-pw"))
    up = [UserScramCredentialUpsertion("eve", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"eve-pw")]
    with pytest.raises(KafkaException) as e:
        carol_admin.alter_user_scram_credentials(up)["eve"].result(15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # deleting the credentials locks the user out
    dels = [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256), UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)]
    for f in a.alter_user_scram_credentials(dels).values():
        f.result(15)
    assert refused(sasl_conf(secure, "SASL_PLAINTEXT", "SCRAM-SHA-512", user=user, password="carol-pw"))


def test_kafka_python_aiokafka_and_kcat_over_sasl_ssl(secure, pki):
    from kafka import KafkaConsumer, KafkaProducer
    topic = unique("py-sasl")
    port = secure.listener["SASL_SSL"]
    common = dict(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                  sasl_plain_username=ADMIN, sasl_plain_password=ADMIN_PW, ssl_cafile=pki["ca"].pem)
    p = KafkaProducer(**common)
    for i in range(10):
        p.send(topic, f"kp{i}".encode())
    p.flush(30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=15000, group_id=unique("g"), **common)
    assert [m.value for m in c][:10] == [f"kp{i}".encode() for i in range(10)]
    c.close()

    async def aio():
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.helpers import create_ssl_context
        ctx = create_ssl_context(cafile=pki["ca"].pem)
        kw = dict(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                  sasl_plain_username=ADMIN, sasl_plain_password=ADMIN_PW, ssl_context=ctx)
        prod = AIOKafkaProducer(**kw)
        await prod.start()
        try:
            for i in range(10):
                await prod.send_and_wait(topic, f"aio{i}".encode())
        finally:
            await prod.stop()
        cons = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **kw)
        await cons.start()
        try:
            got = []
            deadline = time.monotonic() + 20
            while len(got) < 20 and time.monotonic() < deadline:
                for recs in (await cons.getmany(timeout_ms=500)).values():
                    got += [r.value for r in recs]
            return got
        finally:
            await cons.stop()
    got = asyncio.run(aio())
    assert got[10:20] == [f"aio{i}".encode() for i in range(10)]

    kcat = shutil.which("kcat")
    if kcat:
        args = [kcat, "-b", f"127.0.0.1:{port}", "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=PLAIN",
                "-X", f"sasl.username={ADMIN}", "-X", f"sasl.password={ADMIN_PW}", "-X", f"ssl.ca.location={pki['ca'].pem}"]
        subprocess.run(args + ["-P", "-t", topic], input=b"kcat-line\n", check=True, timeout=30)
        out = subprocess.run(args + ["-C", "-t", topic, "-o", "-1", "-c", "1", "-e"], capture_output=True, check=True, timeout=30)
        assert out.stdout.strip() == b"kcat-line"


def test_a_rotated_certificate_is_served_without_a_restart(secure, pki):
    cert, key = pki["server"]

    def served_cn():
        ctx = ssl.create_default_context(cafile=pki["ca"].pem)
        with socket.create_connection(("127.0.0.1", secure.listener["SSL"]), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return subject_cn(s.getpeercert(binary_form=True))

    assert served_cn() == "localhost"
    new_cert, new_key = pki["ca"].issue("rotated", [("CN", "rotated.localhost")], server=True)
    backup = (open(cert, "rb").read(), open(key, "rb").read())
    try:
        # written in place, the key first, as a Secret update lands
        shutil.copyfile(new_key, key)
        shutil.copyfile(new_cert, cert)
        deadline = time.monotonic() + 10
        while served_cn() != "rotated.localhost":
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.2)
        assert secure.alive()
    finally:
        open(key, "wb").write(backup[1])
        open(cert, "wb").write(backup[0])
    deadline = time.monotonic() + 10
    while served_cn() != "localhost":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_client_certificates_give_the_principal(pki, tmp_path):
    """mTLS with client_auth = required: the principal is the mapped subject (alice is a super
    user, bob is not: only alice may describe SCRAM credentials); no certificate, or one from
    another CA, is refused at the handshake."""
    from conftest import Gateway
    cert, key = pki["server"]
    port = free_port()
    cfg = write_config(str(tmp_path / "mtls.toml"), {"MTLS": ("SSL", port)},
                       tls={"cert_file": cert, "key_file": key, "ca_file": pki["ca"].pem, "client_auth": "required",
                            "principal_mapping_rules": "RULE:^CN=([^,]*),OU=eng,.*$/$1/L,DEFAULT"},
                       super_users=["User:alice"])
    gw = Gateway(str(tmp_path / "gw"), ["--config", cfg])
    gw.start()
    try:
        def conf(who):
            c = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SSL", "ssl.ca.location": pki["ca"].pem}
            if who:
                c.update({"ssl.certificate.location": pki[who][0], "ssl.key.location": pki[who][1]})
            return c
        round_trip(conf("alice"), unique("mtls"))
        alice, bob = AdminClient(conf("alice")), AdminClient(conf("bob"))
        up = [UserScramCredentialUpsertion("frank", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"frank-pw")]
        alice.alter_user_scram_credentials(up)["frank"].result(15)
        with pytest.raises(KafkaException) as e:
            bob.alter_user_scram_credentials(up)["frank"].result(15)
        assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, "bob's principal is CN=bob,OU=ops,O=Example"
        assert refused(conf(None)), "no client certificate"
        assert refused(conf("mallory")), "a certificate of another CA"
        assert gw.alive()
        metrics = open_metrics(gw)
        assert 'gateway_tls_handshake_failures_total{listener="MTLS"}' in metrics
    finally:
        gw.stop()


def open_metrics(gw):
    import urllib.request
    return urllib.request.urlopen(gw.metrics_url + "/metrics", timeout=5).read().decode()


# ------------------------------------------------------------------ the wire, by hand

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36


def handshake(c, mechanism, version):
    r = wire.Reader(c.call(SASL_HANDSHAKE, version, wire.string(mechanism)))
    return r.i16()


def test_v0_framing_raw_tokens(secure):
    port = secure.listener["SASL_PLAINTEXT"]
    with wire.Conn(port) as c:
        assert handshake(c, "PLAIN", 0) == 0
        token = b"\0" + ADMIN.encode() + b"\0" + ADMIN_PW.encode()
        c.send(struct.pack(">i", len(token)) + token)
        size = struct.unpack(">i", c._exact(4, time.monotonic() + 5))[0]
        assert size == 0, "PLAIN's raw answer is an empty token"
        wire.parse_metadata_v1(c.call(wire.METADATA, 1, wire.metadata_v1([])))
    with wire.Conn(port) as c:
        assert handshake(c, "PLAIN", 0) == 0
        token = b"\0" + ADMIN.encode() + b"\0nope"
        c.send(struct.pack(">i", len(token)) + token)
        closed, got = c.wait_closed(5)
        assert closed and got == b"", "a refused v0 client is closed without an answer"


def test_requests_before_authentication_and_bad_exchanges_close_the_connection(secure):
    port = secure.listener["SASL_PLAINTEXT"]
    with wire.Conn(port) as c:
        # ApiVersions is allowed before authenticating; Metadata is not
        c.call(wire.API_VERSIONS, 0, b"")
        c.send(wire.request(wire.METADATA, 1, 2, wire.metadata_v1([])))
        assert c.wait_closed(5)[0]
    with wire.Conn(port) as c:
        assert handshake(c, "GSSAPI", 1) == 33, "UNSUPPORTED_SASL_MECHANISM"
        assert c.wait_closed(5)[0]
    with wire.Conn(port) as c:
        body = c.call(SASL_AUTHENTICATE, 1, wire.kbytes(b"\0a\0b"))
        assert wire.Reader(body).i16() == 34, "ILLEGAL_SASL_STATE without a handshake"
        assert c.wait_closed(5)[0]
    with wire.Conn(port) as c:
        assert handshake(c, "SCRAM-SHA-256", 1) == 0
        body = c.call(SASL_AUTHENTICATE, 1, wire.kbytes(b"\xff\xfe garbage"))
        assert wire.Reader(body).i16() == 58, "SASL_AUTHENTICATION_FAILED"
        assert c.wait_closed(5)[0]
    with wire.Conn(secure.port) as c:
        assert handshake(c, "PLAIN", 1) == 34, "a plaintext listener has no SASL: ILLEGAL_SASL_STATE"
    assert secure.alive()


def plain_login(c, user, password):
    assert handshake(c, "PLAIN", 1) == 0
    r = wire.Reader(c.call(SASL_AUTHENTICATE, 1, wire.kbytes(f"\0{user}\0{password}".encode())))
    assert r.i16() == 0


def describe_scram_error(c):
    """DescribeUserScramCredentials v0 (flexible) for all users: the top-level error code."""
    body = c.call(50, 0, wire.uvarint(0) + wire.uvarint(0), flexible_header=True)
    r = wire.Reader(body)
    r.skip_tags()  # response header v1
    r.i32()  # throttle
    return r.i16()


def test_describe_needs_a_super_user(secure):
    port = secure.listener["SASL_PLAINTEXT"]
    with wire.Conn(port) as c:
        plain_login(c, "dave", "dave-pw")
        assert describe_scram_error(c) == 31, "CLUSTER_AUTHORIZATION_FAILED"
    with wire.Conn(port) as c:
        plain_login(c, ADMIN, ADMIN_PW)
        assert describe_scram_error(c) == 0


def test_sessions_expire_and_librdkafka_reauthenticates(pki, tmp_path):
    """connections_max_reauth_ms = 2 s: SaslAuthenticate tells the session lifetime; a client
    that does not re-authenticate is closed at its next request after it; librdkafka
    re-authenticates on the same connection and keeps producing."""
    from conftest import Gateway
    port = free_port()
    cfg = write_config(str(tmp_path / "reauth.toml"), {"SASL_PLAINTEXT": ("SASL_PLAINTEXT", port)},
                       sasl={"users": {ADMIN: ADMIN_PW}, "connections_max_reauth_ms": 2000})
    gw = Gateway(str(tmp_path / "gw"), ["--config", cfg])
    gw.start()
    try:
        with wire.Conn(port) as c:
            assert handshake(c, "PLAIN", 1) == 0
            r = wire.Reader(c.call(SASL_AUTHENTICATE, 1, wire.kbytes(b"\0" + ADMIN.encode() + b"\0" + ADMIN_PW.encode())))
            assert r.i16() == 0
            r.string()
            r.kbytes()
            assert r.i64() == 2000, "the session lifetime"
            wire.parse_metadata_v1(c.call(wire.METADATA, 1, wire.metadata_v1([])))
            time.sleep(2.3)
            c.send(wire.request(wire.METADATA, 1, 9, wire.metadata_v1([])))
            assert c.wait_closed(5)[0], "an expired session is closed"
        conf = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": ADMIN, "sasl.password": ADMIN_PW}
        topic = unique("reauth")
        p = Producer({**conf, "linger.ms": 5})
        deadline = time.monotonic() + 7
        sent = 0
        while time.monotonic() < deadline:
            produce_all(p, topic, [(None, f"r{sent}".encode(), None)])
            sent += 1
            time.sleep(0.1)
        ok = [l for l in open_metrics(gw).splitlines() if l.startswith("gateway_authentications_total") and 'result="ok"' in l]
        count = sum(float(l.rsplit(" ", 1)[1]) for l in ok)
        assert count >= 4, f"re-authentications: {ok}"
        got = consume(conf["bootstrap.servers"], topic, 0, sent, timeout=30, **{k: v for k, v in conf.items() if k != "bootstrap.servers"})
        assert len(got) == sent
    finally:
        gw.stop()


def jwt(claims, *, secret=None, rsa_key=None):
    import base64
    import hashlib
    import hmac
    import json

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    alg = "HS256" if secret else "RS256"
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signed = f"{head}.{body}".encode()
    if secret:
        sig = hmac.new(secret, signed, hashlib.sha256).digest()
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        sig = rsa_key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


def test_oauthbearer_validates_jwts(tmp_path):
    """OAUTHBEARER with confluent-kafka's oauth_cb: HS256 and RS256 tokens from the configured
    issuer for the configured audience are accepted (the principal is their sub); expired,
    forged, other-audience and alg=none tokens are refused."""
    import base64
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from conftest import Gateway
    secret = b"oauth-shared-secret-0123456789"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "jwt.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    port = free_port()
    oauth = {"hmac_secrets": [base64.b64encode(secret).decode()], "public_key_files": [str(pub)], "issuer": "https://idp.test",
             "audience": "kafka"}
    cfg = write_config(str(tmp_path / "oauth.toml"), {"SASL_PLAINTEXT": ("SASL_PLAINTEXT", port)}, super_users=["User:svc-admin"],
                       sasl={"mechanisms": ["OAUTHBEARER", "PLAIN"], "failed_authentication_delay_ms": 20, "oauthbearer": oauth})
    gw = Gateway(str(tmp_path / "gw"), ["--config", cfg])
    gw.start()
    try:
        def conf(token):
            return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
                    "oauth_cb": lambda _cfg: (token, time.time() + 300)}
        now = int(time.time())
        good = {"sub": "svc-admin", "iss": "https://idp.test", "aud": "kafka", "exp": now + 300, "iat": now}
        round_trip(conf(jwt(good, secret=secret)), unique("oauth-hs"))
        round_trip(conf(jwt({**good, "sub": "svc-rs"}, rsa_key=key)), unique("oauth-rs"))
        # the principal is the sub: only svc-admin is a super user
        up = [UserScramCredentialUpsertion("zed", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"zed-pw")]
        admin = AdminClient(conf(jwt(good, secret=secret)))
        admin.alter_user_scram_credentials(up)["zed"].result(15)
        other = AdminClient(conf(jwt({**good, "sub": "svc-rs"}, rsa_key=key)))
        with pytest.raises(KafkaException) as e:
            other.alter_user_scram_credentials(up)["zed"].result(15)
        assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
        for bad in [jwt({**good, "exp": now - 3600}, secret=secret), jwt(good, secret=b"guessed"), jwt({**good, "aud": "other"}, secret=secret),
                    jwt({**good, "iss": "https://evil"}, rsa_key=key)]:
            errs = refused(conf(bad))
            assert errs and any(e.code() == KafkaError._AUTHENTICATION for e in errs), errs
        assert gw.alive()
    finally:
        gw.stop()
