#!/usr/bin/env bash
# The fault matrix, longer than in CI: every cell × mode of test_fault_matrix.py with a longer
# fault and longer calm phases (FAULT_SECONDS, CALM_SECONDS), then the table the README keeps
# (acknowledged count and anomalies per cell). Needs what .ci/test-all.sh installs and the
# gateway binary (GATEWAY_BIN, default target/debug/gateway).
#   compat-tests/run-fault-matrix.sh            # FAULT_SECONDS=20 CALM_SECONDS=10
#   FAULT_SECONDS=60 compat-tests/run-fault-matrix.sh -k memory
set -euo pipefail
cd "$(dirname "$0")"
export GATEWAY_BIN="${GATEWAY_BIN:-$PWD/../target/debug/gateway}"
export FAULT_SECONDS="${FAULT_SECONDS:-20}" CALM_SECONDS="${CALM_SECONDS:-10}"
log="$(mktemp -t fault-matrix.XXXXXX)"
set +e
python3 -m pytest -q -p no:cacheprovider test_fault_matrix.py -s "$@" >"$log" 2>&1
rc=$?
set -e
echo "fault $FAULT_SECONDS s, calm $CALM_SECONDS s before and after (full log: $log)"
echo "| cell | mode | acknowledged | lost | duplicated | misplaced | unexpected | reordered | commit regressions | resurrected |"
echo "|---|---|---|---|---|---|---|---|---|---|"
grep '^FAULT-MATRIX' "$log" | while read -r _ cell mode rest; do
  declare -A f=()
  for kv in $rest; do f["${kv%%=*}"]="${kv#*=}"; done
  echo "| $cell | $mode | ${f[acked]} | ${f[lost]} | ${f[duplicated]} | ${f[misplaced]} | ${f[unexpected]} | ${f[reordered]} | ${f[commit_regressions]} | ${f[resurrected]:--} |"
done
grep -E '^(FAILED|ERROR)|[0-9]+ (passed|failed)' "$log" || true
exit $rc
