#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first, so it works on a
# fresh Debian machine as root: cmake (to build the bundled libopus), a Python venv with
# moto's S3 server (the object-store tests start it on loopback and stop it by PID; so do
# the serve tests with nats-server, which .ci/run installs).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# moto_server for tests/stores.rs, in a venv under target/ (made once, then reused).
if [ -z "${KLIO_MOTO_SERVER:-}" ]; then
  venv=target/py-moto
  if [ ! -x "$venv/bin/moto_server" ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "installing python3-venv (apt)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "making $venv with moto[server] (pip)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[s3,server]==5.2.5'
  fi
  KLIO_MOTO_SERVER="$(pwd)/$venv/bin/moto_server"
  export KLIO_MOTO_SERVER
fi

# cloudbox (the Pub/Sub emulator) for tests/serve_pubsub.rs, in its own venv (it declares a
# newer Python than it needs) with two one-line fixes (../shared/notes/ENVIRONMENT.md).
if [ -z "${KLIO_CLOUDBOX:-}" ]; then
  venv=target/py-cloudbox
  if [ ! -x "$venv/bin/cloudbox" ] || [ ! -f "$venv/.patched" ]; then
    echo "making $venv with cloudbox (pip)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --ignore-requires-python 'cloudbox==0.2.3'
    pkg=$("$venv/bin/python" -c 'import cloudbox, os; print(os.path.dirname(cloudbox.__file__))')
    grep -q '^from __future__ import annotations' "$pkg/core/store.py" \
      || sed -i '1i from __future__ import annotations' "$pkg/core/store.py"
    sed -i '/^class SubscriptionModel/,/^    name: str$/ s/^    name: str$/    name: str = ""/' \
      "$pkg/services/pubsub/models.py"
    touch "$venv/.patched"
  fi
  KLIO_CLOUDBOX="$(pwd)/$venv/bin/cloudbox"
  export KLIO_CLOUDBOX
fi

# ONNX Runtime's shared library (the PyPI wheel) for the `backend = "ort"` tests.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  venv=target/py-ort
  if ! ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* >/dev/null 2>&1; then
    echo "making $venv with onnxruntime (pip)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'onnxruntime>=1.20'
  fi
  ORT_DYLIB_PATH="$(ls "$(pwd)"/$venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)"
  export ORT_DYLIB_PATH
fi

if [ ! -d ../shared/corpus/real ]; then
  echo "error: the shared corpus must be at ../shared/corpus (tests read it directly)" >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary (doc tests print 0 last otherwise).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
