#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first (today: cmake, to
# build the bundled libopus), so it works on a fresh Debian machine as root.
# Later issues add their servers here (started in the background, stopped by PID on exit).
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

if [ ! -d ../shared/corpus/real ]; then
  echo "error: the shared corpus must be at ../shared/corpus (tests read it directly)" >&2
  exit 1
fi

cargo test --workspace --locked "$@"

# The scalar path is the only path until the SIMD issue lands; then this runs the suite again
# with KLIO_DSP_FORCE_SCALAR=1.
