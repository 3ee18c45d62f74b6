#!/usr/bin/env bash
# Runs every test of the project on a fresh machine, installing what the tests need first:
# Debian's etcd-server, protobuf-compiler (etcd-client's build), kcat, and zlib / zstd / RapidJSON
# headers (librdkafka's test suite, built from the rdkafka-sys sources), helm-python-sdk and
# kubernetes-validate (the Helm chart test); moto_server (an S3-compatible server) and the Python Kafka
# clients from PyPI; KafkaJS from npm (Debian's nodejs and npm if the machine has no node); Rust
# crates from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# librdkafka's own test suite (compat-tests/librdkafka) is built from source with these headers.
[ -f /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
[ -f /usr/include/zstd.h ] || need_apt+=(libzstd-dev)
[ -f /usr/include/rapidjson/document.h ] || need_apt+=(rapidjson-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# etcd-server may start a system etcd on :2379; the tests start their own on free ports.
$SUDO systemctl stop etcd >/dev/null 2>&1 || true

echo "== installing Python test dependencies"
python3 -m pip install -q --disable-pip-version-check -r compat-tests/requirements.txt
python3 -m pip install -q --disable-pip-version-check -r helm/tests/requirements.txt
echo "== installing KafkaJS (compat-tests/kafkajs, pinned by its package-lock.json)"
npm ci --no-audit --no-fund --prefix compat-tests/kafkajs >/dev/null

export WAL_REQUIRE_SERVERS=1
export CARGO_TERM_COLOR=never

# The client tests (Rust and Python) run the gateway binary: build it first, wherever the
# target directory is.
echo "== formatting and lints"
cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings 2>&1

echo "== gateway binary for the client compatibility tests"
cargo build -p gateway --all-features 2>&1
export GATEWAY_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/gateway"

echo "== cargo test (all crates, etcd feature on)"
cargo test --workspace --all-features --no-fail-fast 2>&1

echo "== Helm chart (rendered and linted by Helm's engine, validated against Kubernetes 1.37 schemas)"
python3 -m pytest -q -p no:cacheprovider helm/tests

echo "== real Kafka clients (compat-tests)"
cd compat-tests
python3 -m pytest -q -p no:cacheprovider
