"""The Helm chart, rendered by Helm itself and asserted object by object.

Every values variant is rendered by Helm v4's own engine (the helm-python-sdk package: Helm's Go
SDK behind a C ABI, bundled in its wheel; no helm binary, no Go toolchain) through the install
action in client-only dry-run mode, which is what `helm template` / `helm install --dry-run=client`
do: no cluster is contacted and nothing is downloaded. Each variant that renders is then
  - linted by Helm's linter (`helm lint --strict` with the same values, for the Kubernetes version
    below): no warning or error may come back;
  - parsed with duplicate mapping keys refused (as the API server does), and every manifest is
    validated with kubernetes-validate against the strict schemas (unknown fields refused) of the
    newest Kubernetes version the package ships.
Custom resources (the prometheus-operator ServiceMonitor) have no schema in kubernetes-validate;
they are listed in CUSTOM_KINDS and checked by the assertions of the tests alone. Any other kind
without a schema fails the test.

Helm's lint runs templates in lint mode, where `fail` only logs: the chart's refusals of
unsupported settings are therefore checked on the install (render) action, which raises.

The rendered gateway.toml is fed to the real gateway binary (GATEWAY_BIN, default
target/debug/gateway), which must accept it.

This replaced a home-made Go text/template + sprig renderer (helm/tests/render): Helm's engine
renders, lints and refuses here fully offline, so nothing of that renderer was kept.
"""
import os
import shutil
import subprocess
import tempfile
import tomllib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(ROOT, "helm", "wal-gateway")
GATEWAY = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "gateway"))
RELEASE, NAMESPACE = "test", "kafka"

# The newest Kubernetes whose schemas kubernetes-validate ships (1.37 with kubernetes-validate 1.37).
KUBE_VERSION = kubernetes_validate.latest_version()
# Custom resources the chart renders, which kubernetes-validate has no schema for.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# An empty kubeconfig: the client-only dry run never talks to a cluster, and none on this machine
# (KUBECONFIG, ~/.kube/config) is picked up either.
EMPTY_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"


def test_schemas_are_of_a_current_kubernetes():
    assert tuple(int(p) for p in KUBE_VERSION.split(".")[:2]) >= (1, 30), KUBE_VERSION


@pytest.fixture(scope="module")
def helm_config():
    cfg = helm.Config(namespace=NAMESPACE, storage_driver="memory", kubeconfig_content=EMPTY_KUBECONFIG)
    yield cfg
    cfg.close()


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses duplicate mapping keys, as the Kubernetes API server does."""


def _unique_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {dup}", node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def lint_problems(chart, values=None):
    """Helm's linter (strict) on the chart with these values: every warning and error it reports."""
    report = helm.lint(chart, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["total_charts_linted"] == 1, report
    # severity: 1 info ("icon is recommended"), 2 warning, 3 error
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])


def schema_problems(doc):
    """kubernetes-validate's verdict on one manifest (strict schemas), or None when it passes."""
    if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS:
        return None
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    return None


def manifests(manifest_text):
    """The documents of a rendered release: (kind, name) -> object, each name once per kind."""
    objs = {}
    for d in yaml.load_all(manifest_text, Loader=_UniqueKeyLoader):
        if not d:
            continue
        key = (d["kind"], d["metadata"]["name"])
        assert key not in objs, f"{key} rendered twice"
        objs[key] = d
    return objs


def install(cfg, values=None, chart=CHART):
    """Helm's install action, client-only dry run: the release, with its manifest and notes.
    Raises helm.HelmError when the chart refuses the values or a template does not render."""
    return cfg.install(chart, RELEASE, values, namespace=NAMESPACE, dry_run="client")


def render(cfg, values=None, notes=False):
    """Renders the chart with Helm, lints it and validates every manifest; returns the objects
    ((kind, name) -> object), or the rendered NOTES.txt."""
    release = install(cfg, values)
    assert release["name"] == RELEASE and release["namespace"] == NAMESPACE
    objs = manifests(release["manifest"])
    assert not lint_problems(CHART, values), lint_problems(CHART, values)
    problems = [p for p in map(schema_problems, objs.values()) if p]
    assert not problems, problems
    if notes:
        return release["notes"]
    return objs


def test_default_render(helm_config):
    objs = render(helm_config)
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


def test_config_maps_one_to_one_and_the_binary_accepts_it(helm_config, tmp_path):
    values = {"config": {"cluster_id": "prod", "default_partitions": 6, "s3": {"bucket": "b1", "endpoint": "http://minio:9000", "path_style": True},
                         "wal": {"flush_max_age_ms": 50}}}
    objs = render(helm_config, values)
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


def test_credentials_monitor_and_scheduling(helm_config):
    objs = render(helm_config, {"s3Credentials": {"existingSecret": "s3-creds"}, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                                "nodeSelector": {"disk": "none"}, "podDisruptionBudget": {"enabled": False}})
    c = objs[("StatefulSet", "test-wal-gateway")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in c["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_SECRET_ACCESS_KEY"
    assert c["nodeSelector"] == {"disk": "none"}
    sm = objs[("ServiceMonitor", "test-wal-gateway")]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert ("PodDisruptionBudget", "test-wal-gateway") not in objs


def test_unsupported_settings_are_refused(helm_config):
    with pytest.raises(helm.HelmError, match="needs config.metadata: etcd"):
        render(helm_config, {"replicaCount": 3, "config": {"metadata": "embedded"}})
    with pytest.raises(helm.HelmError, match="needs config.wal.buffer: quorum"):
        render(helm_config, {"logstore": {"enabled": True}})
    with pytest.raises(helm.HelmError, match="needs logstore.enabled"):
        render(helm_config, {"config": {"wal": {"buffer": "quorum"}}})
    with pytest.raises(helm.HelmError, match="at least 3"):
        render(helm_config, {"config": {"wal": {"buffer": "quorum"}}, "logstore": {"enabled": True, "replicaCount": 2}})


def test_security_listeners_tls_and_sasl_secrets(helm_config, tmp_path):
    values = {"security": {"listeners": [{"name": "SASL_SSL", "port": 9093, "protocol": "SASL_SSL"}],
                           "tls": {"existingSecret": "gw-tls", "clientAuth": "requested",
                                   "principalMappingRules": "RULE:^CN=([^,]*),.*$/$1/,DEFAULT"},
                           "sasl": {"usersSecret": "gw-users", "connectionsMaxReauthMs": 3600000},
                           "superUsers": ["User:admin"], "acl": {"authorizer": True}}}
    objs = render(helm_config, values)
    text = objs[("ConfigMap", "test-wal-gateway")]["data"]["gateway.toml"]
    cfg = tomllib.loads(text)
    assert cfg["listener_protocol"] == "PLAINTEXT" and cfg["super_users"] == ["User:admin"]
    assert cfg["listeners"] == [{"name": "SASL_SSL", "listen": "0.0.0.0:9093", "protocol": "SASL_SSL",
                                 "advertised": "${POD_NAME}.test-wal-gateway-headless.${POD_NAMESPACE}.svc.cluster.local:9093"}]
    assert cfg["tls"]["cert_file"] == "/etc/gateway/tls/tls.crt" and cfg["tls"]["ca_file"] == "/etc/gateway/tls/ca.crt"
    assert cfg["tls"]["client_auth"] == "requested"
    assert cfg["sasl"]["users_file"] == "/etc/gateway/sasl/users.toml" and cfg["sasl"]["connections_max_reauth_ms"] == 3600000
    assert cfg["acl"]["authorizer"] is True
    spec = objs[("StatefulSet", "test-wal-gateway")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "gw-tls", "a whole Secret volume: rotations land in place"
    assert volumes["sasl-users"]["secret"]["items"] == [{"key": "users.toml", "path": "users.toml"}]
    ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
    assert ports["sasl-ssl"] == 9093
    for svc in ("test-wal-gateway", "test-wal-gateway-headless"):
        assert {"name": "sasl-ssl", "port": 9093, "targetPort": "sasl-ssl"} in objs[("Service", svc)]["spec"]["ports"]
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    r = subprocess.run([GATEWAY, "print-config", "--config", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(helm.HelmError, match="needs security.tls.existingSecret"):
        render(helm_config, {"security": {"listeners": [{"name": "SSL", "port": 9094, "protocol": "SSL"}]}})


def test_notes(helm_config):
    notes = render(helm_config, notes=True)
    assert "test-wal-gateway.kafka.svc.cluster.local:9092" in notes
    assert "/metrics" in notes


def test_quorum_mode_renders_logstore_nodes(helm_config):
    values = {"config": {"wal": {"buffer": "quorum"}}, "logstore": {"enabled": True},
              "s3Credentials": {"existingSecret": "s3-creds"}}
    objs = render(helm_config, values)
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
    assert env["GATEWAY_LOGSTORE_PUT_BUDGET_PER_SEC"]["value"] == "0", "0: the process's wal.put_budget_per_sec"
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


def test_logstore_journal_gets_a_persistent_volume(helm_config):
    values = {"config": {"wal": {"buffer": "quorum"}},
              "logstore": {"enabled": True, "journal": {"enabled": True, "size": "5Gi", "storageClassName": "fast"}}}
    sts = render(helm_config, values)[("StatefulSet", "test-wal-gateway-logstore")]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["GATEWAY_LOGSTORE_DATA_DIR"]["value"] == "/var/lib/logstore/journal"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["journal"] == "/var/lib/logstore"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "journal"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_several_gateways_form_a_cluster(helm_config):
    objs = render(helm_config, {"replicaCount": 3})
    sts = objs[("StatefulSet", "test-wal-gateway")]
    assert sts["spec"]["replicas"] == 3
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    # every pod its own node id (its ordinal) and its own advertised address
    assert env["GATEWAY_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert "$(POD_NAME)" in env["GATEWAY_ADVERTISED_LISTENER"]["value"]
    assert objs[("PodDisruptionBudget", "test-wal-gateway")]["spec"]["maxUnavailable"] == 1


# The checks themselves: each must turn a broken chart or bad values into a failure.


def _broken_chart(tmp_path, template, old, new):
    chart = tmp_path / "wal-gateway"
    shutil.copytree(CHART, chart)
    path = chart / "templates" / template
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return str(chart)


def test_schema_validation_refuses_a_wrong_type(helm_config):
    objs = manifests(install(helm_config, {"replicaCount": "three"})["manifest"])
    assert "'three' is not of type 'integer'" in schema_problems(objs[("StatefulSet", "test-wal-gateway")])


def test_strict_schema_validation_refuses_an_unknown_field(helm_config, tmp_path):
    chart = _broken_chart(tmp_path, "statefulset.yaml", "podManagementPolicy:", "podManagmentPolicy:")
    objs = manifests(install(helm_config, chart=chart)["manifest"])
    assert "podManagmentPolicy" in schema_problems(objs[("StatefulSet", "test-wal-gateway")])


def test_lint_and_render_refuse_broken_yaml(helm_config, tmp_path):
    chart = _broken_chart(tmp_path, "services.yaml", "  clusterIP: None", "    clusterIP: None")
    problems = lint_problems(chart)
    assert any("services.yaml" in p for p in problems), problems
    with pytest.raises(helm.HelmError, match="services.yaml"):
        install(helm_config, chart=chart)


def test_lint_refuses_a_broken_template(tmp_path):
    chart = _broken_chart(tmp_path, "configmap.yaml", "{{ include \"wal-gateway.fullname\" . }}", "{{ include \"wal-gateway.fullname\" . }")
    problems = lint_problems(chart)
    assert any("configmap.yaml" in p for p in problems), problems


def test_duplicate_keys_are_refused():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate keys"):
        manifests("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n")
