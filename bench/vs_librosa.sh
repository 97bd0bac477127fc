#!/usr/bin/env bash
# Runs bench/vs_librosa.py with every BLAS/OpenMP pool at one thread, after a release build.
# Needs a Python with librosa and soundfile: set PYTHON, or it makes a venv in /tmp/klio-bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# These two slow current numpy (OpenBLAS then skips its AVX-512 kernels): never set for numpy.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
  VECLIB_MAXIMUM_THREADS=1 NUMEXPR_NUM_THREADS=1
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  venv=/tmp/klio-bench-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q librosa==0.11.0 soundfile numpy
  fi
  PYTHON=$venv/bin/python
fi
cargo build --release --locked -q
exec taskset -c 0 "$PYTHON" bench/vs_librosa.py "$@"
