"""KafkaJS (from npm, pinned in kafkajs/package-lock.json) against the gateway: each scenario of
kafkajs/suite.js (idempotent producer, consumer group, admin calls, topic configs, transactions) runs in node
against a fresh gateway and must exit 0. Needs `npm ci --prefix compat-tests/kafkajs` (the test
command runs it); skipped outside CI when node or the package is missing."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "kafkajs")


def available():
    return shutil.which("node") and os.path.isdir(os.path.join(SUITE, "node_modules", "kafkajs"))


@pytest.mark.parametrize("scenario", ["idempotent", "group", "admin", "configs", "transactions"])
def test_kafkajs(gateway, scenario):
    if not available():
        if os.environ.get("CI"):
            pytest.fail("node or kafkajs missing: run npm ci --prefix compat-tests/kafkajs")
        pytest.skip("node or kafkajs missing")
    r = subprocess.run(["node", "suite.js", scenario], cwd=SUITE, env={**os.environ, "BOOTSTRAP": gateway.bootstrap},
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{scenario}:\n{r.stdout}\n{r.stderr}"
