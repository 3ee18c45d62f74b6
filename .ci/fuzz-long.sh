#!/usr/bin/env bash
# The property-based fuzz targets, run far longer than in CI (where each runs proptest's
# default 256 cases). PROPTEST_CASES sets the cases per target (default here 20000); a failing
# input is printed minimized by proptest and belongs in a named regression test.
#   .ci/fuzz-long.sh                 # every target, 20000 cases each
#   PROPTEST_CASES=200000 .ci/fuzz-long.sh request_decoding
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
filter="${1:-}"
# target (crate, test-name filter): request framing and decoding, record batches, LogStore wire
# protocol, LogStore journal replay, embedded MetaStore replay, block / index / shared formats
targets=(
  "gateway request_decoding_never_panics"
  "gateway split_never_panics"
  "gateway corrupted_records_never_panic"
  "gateway damaged_compressed_records_never_panic"
  "wal-core logstore::proto"
  "wal-core logstore::replica"
  "wal-core logstore::journal::tests::a_damaged_journal_replays_a_prefix"
  "wal-core meta::embedded::tests::replay_fuzz"
  "wal-core format::"
)
for t in "${targets[@]}"; do
  read -r crate name <<<"$t"
  [[ -z "$filter" || "$name" == *"$filter"* ]] || continue
  echo "== $crate $name ($PROPTEST_CASES cases)"
  cargo test --release -q -p "$crate" --all-features --lib "$name"
done
