#!/usr/bin/env bash
# Builds the single static klio-edge binary: x86_64 musl, the `dist` profile (fat LTO, one
# codegen unit, unwinding panics, stripped), tract and Opus (the pure-Rust decoder), without the `ort` feature (it loads a shared library). Installs the
# rustup target and musl-tools when it can. Prints the binary's path as its last line.
#
#   scripts/build-static.sh            # build
#   scripts/build-static.sh --check    # build, then run `process` on examples/audio with the
#                                      # binary copied to an empty folder and an empty environment
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" >&2
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi
# C code (SQLite) is compiled with musl-gcc so the whole binary links statically.
export CC_x86_64_unknown_linux_musl=musl-gcc
export CXX_x86_64_unknown_linux_musl=g++
cargo build --locked --profile dist --target "$target" --no-default-features --features opus >&2
bin="$PWD/target/$target/dist/klio-edge"

if [ "${1:-}" = "--check" ]; then
  if ldd "$bin" 2>&1 | grep -q "=>"; then
    echo "error: $bin links shared libraries:" >&2
    ldd "$bin" >&2
    exit 1
  fi
  empty=$(mktemp -d)
  trap 'rm -rf "$empty"' EXIT
  cp "$bin" "$empty/klio-edge"
  cp -r examples/audio "$empty/audio"
  (cd "$empty" && env -i ./klio-edge process audio --out out --json -q) > "$empty/summary.json"
  echo "static binary: $(du -h "$bin" | cut -f1) ($(stat -c %s "$bin") bytes); process in an empty environment:" >&2
  cat "$empty/summary.json" >&2
  grep -q '"failed":0' "$empty/summary.json"
fi
echo "$bin"
