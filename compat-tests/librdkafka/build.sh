#!/usr/bin/env bash
# Builds librdkafka's own test suite (tests/test-runner) from the librdkafka sources that the
# rdkafka-sys crate ships (found with `cargo metadata`; nothing is downloaded) into
# $CARGO_TARGET_DIR/librdkafka-suite (default target/). Needs gcc/g++ and make, zlib and zstd
# headers and RapidJSON (the statistics tests parse JSON with it): Debian's zlib1g-dev,
# libzstd-dev and rapidjson-dev, installed here when missing. Prints the directory
# holding test-runner. Rebuilds only when the sources or this script changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/librdkafka-suite"

src="$(cd "$root/compat-tests/rust" && cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "rdkafka-sys":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "librdkafka"))
        break
')"
[ -f "$src/tests/test.c" ] || { echo "librdkafka sources not found (rdkafka-sys: $src)" >&2; exit 1; }

stamp="$src $(sha256sum "$0" | cut -c1-16)"
if [ -x "$out/tests/test-runner" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out/tests"
  exit 0
fi

need=()
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
[ -f /usr/include/rapidjson/document.h ] || need+=(rapidjson-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  echo "== installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

rm -rf "$out"
mkdir -p "$out"
cp -a "$src/." "$out/"
chmod -R u+w "$out"
cd "$out"
{
  # No SSL, SASL/GSSAPI or HTTP: the gateway has no such listener yet (issue 14).
  ./configure --disable-ssl --disable-gssapi --disable-curl --enable-zlib --enable-zstd
  make -j"$(nproc)" libs
  make -C tests -j"$(nproc)" test-runner
} > "$out/build.log" 2>&1 || { tail -40 "$out/build.log" >&2; exit 1; }
echo "$stamp" > "$out/.stamp"
echo "$out/tests"
