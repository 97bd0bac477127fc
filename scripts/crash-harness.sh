#!/usr/bin/env bash
# Crash-consistency harness (tests/it/crash.rs) with more kills than CI runs:
#   scripts/crash-harness.sh [--kills N] [--seed S]     (defaults: 1000 kills, seed 7)
# SIGKILLs `process` N times and `serve` (inbox) N/3 times at random moments, then checks that
# every item is done exactly once, outputs are complete, and the ledger agrees with them.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=1000 seed=7
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--kills N] [--seed S]" >&2; exit 2 ;;
  esac
done
KLIO_CRASH_KILLS=$kills KLIO_CRASH_SEED=$seed cargo test --locked --test it crash:: -- --nocapture
