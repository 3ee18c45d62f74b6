"""librdkafka's own test suite (built from the sources the rdkafka-sys crate ships) against the
gateway: the allow-listed tests marked ci in librdkafka/expectations.txt must pass. The whole
suite and its report card: `python3 compat-tests/librdkafka/suite.py --all` (README: "librdkafka's
test suite")."""
import os
import subprocess
import sys

from conftest import GATEWAY_BIN

HERE = os.path.dirname(os.path.abspath(__file__))


def test_librdkafka_suite_allow_listed_tests_pass():
    r = subprocess.run([sys.executable, os.path.join(HERE, "librdkafka", "suite.py"), "--ci"],
                       env={**os.environ, "GATEWAY_BIN": GATEWAY_BIN}, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
