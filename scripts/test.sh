#!/usr/bin/env bash
# Runs every test of the workspace: `scripts/test.sh [cargo test args...]` (the arguments go to
# `cargo test --workspace --locked --no-fail-fast`); without arguments it then builds the Python
# package (`pip install ./python`, the dev profile's artifacts reused) into a venv with librosa
# and runs `pytest python/tests`. On a fresh Debian machine with rustup and a C compiler it installs what the
# tests need first, as root or as a normal user (sudo only for the Debian packages, and only
# when one is missing):
#   Debian packages  nats-server (the broker the serve tests start on loopback),
#                    opus-tools (opusdec: libopus, the reference the Opus decoder is checked
#                    against), ffmpeg (the shipped exec-ffmpeg.toml example is validated),
#                    python3-venv (for the venvs below), chromium and chromium-driver
#                    (headless Chromium, which tests/it/pictures.rs opens the report in)
#   Python venvs     under target/, made once: py-moto (moto's S3 server), py-cloudbox (the
#                    Pub/Sub emulator, with two one-line fixes), py-ort (the onnxruntime wheel,
#                    whose library the `backend = "ort"` tests load), py-export (pyarrow,
#                    datasets, webdataset: the readers export's formats are checked with),
#                    py-klio (librosa, soundfile, pytest, and the klio_edge package built
#                    from python/: what the Python package is checked against),
#                    py-browser (Selenium, which drives Chromium for tests/it/pictures.rs)
# What it cannot install (Rust, a C compiler, apt, sudo) is checked before any slow step, and
# everything missing is named at once. The tests fail, never skip, when a tool is missing.
# Set KLIO_MOTO_SERVER, KLIO_CLOUDBOX, ORT_DYLIB_PATH, KLIO_EXPORT_PYTHON or
# KLIO_BROWSER_PYTHON to use your own instead of a venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python extension (python/, a workspace member) is built as an extension module, which
# leaves libpython's symbols to the interpreter that loads it: the workspace build needs no
# libpython, and maturin's build (which sets the same) reuses its artifacts.
export PYO3_BUILD_EXTENSION_MODULE=1

say() { printf 'test.sh: %s\n' "$*" >&2; }

# --- 1. What this script needs and cannot install: all of it checked first. ---------------
missing=()
command -v cargo >/dev/null 2>&1 \
  || missing+=("cargo: install Rust with rustup (https://rustup.rs), then open a new shell")
command -v cc >/dev/null 2>&1 \
  || missing+=("a C compiler (cc) for SQLite: apt-get install gcc (or build-essential)")
[ -f tests/corpus/MANIFEST.tsv ] \
  || missing+=("tests/corpus/MANIFEST.tsv: the test corpus is part of the repository; is this a full clone?")

# Debian packages the tests need, by the command or module that shows they are there.
need_apt=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ] \
  || need_apt+=(nats-server)
command -v opusdec >/dev/null 2>&1 || need_apt+=(opus-tools)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
venvs_needed=0
{ [ -n "${KLIO_MOTO_SERVER:-}" ] && [ -n "${KLIO_CLOUDBOX:-}" ] && [ -n "${ORT_DYLIB_PATH:-}" ] \
  && [ -n "${KLIO_EXPORT_PYTHON:-}" ] && [ -n "${KLIO_BROWSER_PYTHON:-}" ]; } \
  || venvs_needed=1
if [ "$venvs_needed" = 1 ]; then
  if ! command -v python3 >/dev/null 2>&1; then
    need_apt+=(python3 python3-venv)
  elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_apt+=(python3-venv)
  fi
fi

as_root=()
if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    missing+=("Debian packages ${need_apt[*]} (or their equivalents): this is not a Debian machine, install them by hand")
  elif [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      as_root=(sudo)
    else
      missing+=("Debian packages ${need_apt[*]}: run as root: apt-get install ${need_apt[*]} (no sudo here)")
    fi
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  say "cannot run the tests; missing:"
  for m in "${missing[@]}"; do printf '  - %s\n' "$m" >&2; done
  exit 2
fi

# --- 2. Install (the slow steps). -----------------------------------------------------------
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} (apt-get${as_root:+, with sudo})"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A venv under target/ with the given pip requirements, made once; a marker file records
# what it was made with so that a changed requirement rebuilds it.
venv() {
  local dir=$1; shift
  local want="$*"
  if [ ! -f "$dir/.made-with" ] || [ "$(cat "$dir/.made-with")" != "$want" ]; then
    say "making $dir with $want (pip)"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    printf '%s' "$want" > "$dir/.made-with"
  fi
}

# moto_server for tests/it/stores.rs.
if [ -z "${KLIO_MOTO_SERVER:-}" ]; then
  venv target/py-moto 'moto[s3,server]==5.2.5'
  KLIO_MOTO_SERVER="$(pwd)/target/py-moto/bin/moto_server"
  export KLIO_MOTO_SERVER
fi

# cloudbox (the Pub/Sub emulator) for tests/it/serve_pubsub.rs, in its own venv: it declares a
# newer Python than it needs, and 0.2.3 needs two one-line fixes on Python 3.11 (postponed
# annotations in core/store.py; a default for SubscriptionModel.name).
if [ -z "${KLIO_CLOUDBOX:-}" ]; then
  dir=target/py-cloudbox
  venv "$dir" --ignore-requires-python 'cloudbox==0.2.3'
  if [ ! -f "$dir/.patched" ]; then
    pkg=$("$dir/bin/python" -c 'import cloudbox, os; print(os.path.dirname(cloudbox.__file__))')
    grep -q '^from __future__ import annotations' "$pkg/core/store.py" \
      || sed -i '1i from __future__ import annotations' "$pkg/core/store.py"
    sed -i '/^class SubscriptionModel/,/^    name: str$/ s/^    name: str$/    name: str = ""/' \
      "$pkg/services/pubsub/models.py"
    touch "$dir/.patched"
  fi
  KLIO_CLOUDBOX="$(pwd)/$dir/bin/cloudbox"
  export KLIO_CLOUDBOX
fi

# The readers `klio-edge export`'s output is checked with (tests/it/export.rs): pyarrow,
# Hugging Face datasets, webdataset, numpy, pandas.
if [ -z "${KLIO_EXPORT_PYTHON:-}" ]; then
  venv target/py-export 'pyarrow==26.0.1' 'datasets==5.2.0' 'webdataset==1.0.2' 'numpy==2.4.6' 'pandas==3.1.1'
  KLIO_EXPORT_PYTHON="$(pwd)/target/py-export/bin/python"
  export KLIO_EXPORT_PYTHON
fi

# Selenium for tests/it/pictures.rs (it drives Debian's chromium through chromedriver).
if [ -z "${KLIO_BROWSER_PYTHON:-}" ]; then
  venv target/py-browser 'selenium==4.51.0'
  KLIO_BROWSER_PYTHON="$(pwd)/target/py-browser/bin/python"
  export KLIO_BROWSER_PYTHON
fi

# librosa and friends for pytest python/tests (the full run only).
if [ "$#" = 0 ]; then
  venv target/py-klio 'librosa==0.11.0' 'soundfile==0.14.0' 'pytest==9.2.0' 'numpy==2.4.6'
fi

# ONNX Runtime's shared library (the PyPI wheel) for the `backend = "ort"` tests.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  venv target/py-ort 'onnxruntime>=1.20'
  ORT_DYLIB_PATH="$(ls "$(pwd)"/target/py-ort/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)"
  export ORT_DYLIB_PATH
fi

# --- 3. The tests. --------------------------------------------------------------------------
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# --no-fail-fast: every test binary runs, so one failure does not hide the others.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals over every test binary (doc tests print 0 last otherwise).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

# --- 4. The Python package (the full run only). ------------------------------------------------
if [ "$#" = 0 ]; then
  say "pip install ./python (maturin, dev profile) into target/py-klio, then pytest python/tests"
  set +e
  MATURIN_PEP517_ARGS="--profile dev" target/py-klio/bin/pip install -q --disable-pip-version-check \
    --force-reinstall --no-deps ./python \
    && KLIO_EDGE_BIN="$(pwd)/target/debug/klio-edge" \
      target/py-klio/bin/python -m pytest -q -p no:cacheprovider python/tests
  py_status=$?
  set -e
  [ "$py_status" = 0 ] || status=$py_status
fi
exit "$status"
