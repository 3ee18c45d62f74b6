"""The Helm chart, rendered with a real Go template engine and sprig (render/main.go, built here
with Debian's golang and sprig packages), asserted object by object. The rendered gateway.toml
is fed to the real gateway binary, which must accept it."""
import os
import subprocess
import tempfile
import tomllib

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(ROOT, "helm", "wal-gateway")
GATEWAY = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "gateway"))


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("render") / "render")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=str(tmp_path_factory.mktemp("gocache")))
    subprocess.run(["go", "build", "-o", out, "."], cwd=os.path.join(HERE, "render"), env=env, check=True)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses duplicate mapping keys, as the Kubernetes API server does."""


def _unique_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {dup}", node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def render(renderer, values=None, notes=False):
    args = [renderer]
    if values is not None:
        f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, f)
        f.close()
        args += ["-f", f.name]
    if notes:
        args.append("-notes")
    r = subprocess.run(args + [CHART], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    if notes:
        return r.stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.load_all(r.stdout, Loader=_UniqueKeyLoader) if d}


def test_default_render(renderer):
    objs = render(renderer)
    kinds = sorted(k for k, _ in objs)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    sts = objs[("StatefulSet", "test-wal-gateway")]
    assert sts["spec"]["serviceName"] == "test-wal-gateway-headless"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "wal-gateway:0.1.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in c["env"]}
    assert env["GATEWAY_ADVERTISED_LISTENER"]["value"] == "$(POD_NAME).test-wal-gateway-headless.$(POD_NAMESPACE).svc.cluster.local:9092"
    assert env["GATEWAY_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert "AWS_ACCESS_KEY_ID" not in env
    assert c["resources"]["limits"]["memory"] == "4Gi"
    headless = objs[("Service", "test-wal-gateway-headless")]
    assert headless["spec"]["clusterIP"] == "None"
    assert objs[("PodDisruptionBudget", "test-wal-gateway")]["spec"]["maxUnavailable"] == 1


def test_config_maps_one_to_one_and_the_binary_accepts_it(renderer, tmp_path):
    values = {"config": {"cluster_id": "prod", "default_partitions": 6, "s3": {"bucket": "b1", "endpoint": "http://minio:9000", "path_style": True},
                         "wal": {"flush_max_age_ms": 50}}}
    objs = render(renderer, values)
    text = objs[("ConfigMap", "test-wal-gateway")]["data"]["gateway.toml"]
    cfg = tomllib.loads(text)
    assert cfg["cluster_id"] == "prod"
    assert cfg["default_partitions"] == 6
    assert cfg["etcd_endpoints"] == ["http://etcd:2379"]
    assert cfg["s3"] == {"bucket": "b1", "endpoint": "http://minio:9000", "path_style": True, "region": "us-east-1"}
    assert cfg["wal"]["flush_max_age_ms"] == 50
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    r = subprocess.run([GATEWAY, "print-config", "--config", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    effective = tomllib.loads(r.stdout)
    assert effective["cluster_id"] == "prod" and effective["s3"]["endpoint"] == "http://minio:9000"
    assert effective["storage"] == "s3" and effective["metadata"] == "etcd"


def test_credentials_monitor_and_scheduling(renderer):
    objs = render(renderer, {"s3Credentials": {"existingSecret": "s3-creds"}, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                             "nodeSelector": {"disk": "none"}, "podDisruptionBudget": {"enabled": False}})
    c = objs[("StatefulSet", "test-wal-gateway")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in c["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_SECRET_ACCESS_KEY"
    assert c["nodeSelector"] == {"disk": "none"}
    sm = objs[("ServiceMonitor", "test-wal-gateway")]
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert ("PodDisruptionBudget", "test-wal-gateway") not in objs


def test_unsupported_settings_are_refused(renderer):
    with pytest.raises(RuntimeError, match="needs config.metadata: etcd"):
        render(renderer, {"replicaCount": 3, "config": {"metadata": "embedded"}})
    with pytest.raises(RuntimeError, match="needs config.wal.buffer: quorum"):
        render(renderer, {"logstore": {"enabled": True}})
    with pytest.raises(RuntimeError, match="needs logstore.enabled"):
        render(renderer, {"config": {"wal": {"buffer": "quorum"}}})
    with pytest.raises(RuntimeError, match="at least 3"):
        render(renderer, {"config": {"wal": {"buffer": "quorum"}}, "logstore": {"enabled": True, "replicaCount": 2}})


def test_notes(renderer):
    notes = render(renderer, notes=True)
    assert "test-wal-gateway.kafka.svc.cluster.local:9092" in notes
    assert "/metrics" in notes


def test_quorum_mode_renders_logstore_nodes(renderer):
    values = {"config": {"wal": {"buffer": "quorum"}}, "logstore": {"enabled": True},
              "s3Credentials": {"existingSecret": "s3-creds"}}
    objs = render(renderer, values)
    sts = objs[("StatefulSet", "test-wal-gateway-logstore")]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "test-wal-gateway-logstore-headless"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["logstore", "--config", "/etc/gateway/gateway.toml"]
    env = {e["name"]: e for e in c["env"]}
    assert env["GATEWAY_LOGSTORE_NODE_ID"]["value"] == "$(POD_NAME)"
    assert env["GATEWAY_LOGSTORE_LISTEN"]["value"] == "0.0.0.0:9700"
    assert env["GATEWAY_LOGSTORE_ADVERTISE"]["value"] == \
        "$(POD_NAME).test-wal-gateway-logstore-headless.$(POD_NAMESPACE).svc.cluster.local:9700"
    assert env["GATEWAY_LOGSTORE_MAX_HELD_BYTES"]["value"] == "1073741824"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"replication": 9700, "metrics": 9644}
    sel = sts["spec"]["selector"]["matchLabels"]
    assert sel["app.kubernetes.io/component"] == "logstore"
    assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "logstore"
    svc = objs[("Service", "test-wal-gateway-logstore-headless")]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "logstore"
    assert objs[("PodDisruptionBudget", "test-wal-gateway-logstore")]["spec"]["maxUnavailable"] == 1
    # The gateway's selector must not pick up LogStore pods.
    gw = objs[("StatefulSet", "test-wal-gateway")]
    gw_sel = gw["spec"]["selector"]["matchLabels"]
    assert gw_sel.get("app.kubernetes.io/component") != "logstore"
    # The shared gateway.toml selects quorum mode, and the real binary accepts it.
    toml_text = objs[("ConfigMap", "test-wal-gateway")]["data"]["gateway.toml"]
    assert tomllib.loads(toml_text)["wal"]["buffer"] == "quorum"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    r = subprocess.run([GATEWAY, "print-config", "--config", f.name], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads(r.stdout)["wal"]["buffer"] == "quorum"
    # Memory-only by default: no journal volume.
    assert "GATEWAY_LOGSTORE_DATA_DIR" not in env
    assert "volumeClaimTemplates" not in sts["spec"]


def test_logstore_journal_gets_a_persistent_volume(renderer):
    values = {"config": {"wal": {"buffer": "quorum"}},
              "logstore": {"enabled": True, "journal": {"enabled": True, "size": "5Gi", "storageClassName": "fast"}}}
    sts = render(renderer, values)[("StatefulSet", "test-wal-gateway-logstore")]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["GATEWAY_LOGSTORE_DATA_DIR"]["value"] == "/var/lib/logstore/journal"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["journal"] == "/var/lib/logstore"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "journal"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_several_gateways_form_a_cluster(renderer):
    objs = render(renderer, {"replicaCount": 3})
    sts = objs[("StatefulSet", "test-wal-gateway")]
    assert sts["spec"]["replicas"] == 3
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    # every pod its own node id (its ordinal) and its own advertised address
    assert env["GATEWAY_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert "$(POD_NAME)" in env["GATEWAY_ADVERTISED_LISTENER"]["value"]
    assert objs[("PodDisruptionBudget", "test-wal-gateway")]["spec"]["maxUnavailable"] == 1
