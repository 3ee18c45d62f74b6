#!/usr/bin/env bash
# The exactly-once copies of test_transactions.py at full size (CI runs them with 20,000 /
# 6,000 records): 100,000 records through one gateway SIGKILLed 10 times inside transactions,
# then 100,000 through a cluster of three gateways on etcd and moto_server with kills of the
# main output leader. Needs what .ci/test-all.sh installs and the gateway binary (GATEWAY_BIN,
# default target/debug/gateway).
#   compat-tests/run-eos-long.sh
#   EOS_RECORDS=500000 EOS_KILLS=20 compat-tests/run-eos-long.sh
set -euo pipefail
cd "$(dirname "$0")"
export GATEWAY_BIN="${GATEWAY_BIN:-$PWD/../target/debug/gateway}"
export EOS_RECORDS="${EOS_RECORDS:-100000}" EOS_KILLS="${EOS_KILLS:-10}" EOS_CLUSTER_RECORDS="${EOS_CLUSTER_RECORDS:-100000}"
export WAL_REQUIRE_SERVERS=1
exec python3 -m pytest -q -p no:cacheprovider test_transactions.py -k "exactly_once" "$@"
