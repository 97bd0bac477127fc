#!/usr/bin/env bash
# Cross-builds klio-dsp for aarch64 and runs its unit tests (every kernel on NEON and scalar
# against the f64 references) under qemu-user. Installs what it needs when it can (rustup
# target, Debian's qemu-user and aarch64 gcc); if any of it cannot be had, says so and exits 0,
# so CI on a machine without them still passes with a clear message.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
skip() { echo "aarch64 check SKIPPED: $*"; exit 0; }

rustup target list --installed 2>/dev/null | grep -qx "$target" \
  || rustup target add "$target" >/dev/null 2>&1 \
  || skip "rustup cannot add $target"
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu \
      libc6-dev-arm64-cross >/dev/null 2>&1 || skip "apt cannot install qemu-user/gcc-aarch64-linux-gnu"
  else
    skip "qemu-aarch64 or aarch64-linux-gnu-gcc missing (and not root to install them)"
  fi
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
echo "== klio-dsp on $target (NEON) under qemu-aarch64"
cargo test -p klio-dsp --lib --locked --target "$target"
