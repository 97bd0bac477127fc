#!/bin/bash
# The ONNX Runtime backend on a CUDA GPU: Silero VAD (recurrent state) and a batched tiny model,
# each run with device = "cpu" and device = "cuda" on the same machine; prints both timings, the
# largest difference between the two outputs and whether the VAD segments are identical.
#
#   scripts/cuda-check.sh ORT_DIR [AUDIO_DIR]
#
# ORT_DIR holds libonnxruntime.so.* and libonnxruntime_providers_{shared,cuda}.so from the
# PyPI onnxruntime-gpu wheel (onnxruntime/capi/ inside it; 1.31.1 is built for CUDA 13). The
# CUDA 13 runtime, cuBLAS, cuRAND and cuDNN 9 are looked for under /opt and /usr (PyTorch's
# nvidia-* wheels carry them). KLIO (default target/release/klio-edge) is the binary to test.
# Last run: see README (Models, CUDA).
set -u
ORT=$(cd "${1:?ORT_DIR}" && pwd); A=${2:-examples/audio}; R=$(pwd)
K=${KLIO:-$R/target/release/klio-edge}
nvidia-smi -L || exit 1
LIBS=$(find /opt /usr -xdev \( -name 'libcublas.so.13*' -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcudnn.so.9*' -o -name 'libcublasLt.so.13*' \) 2>/dev/null | xargs -rn1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$ORT:$LIBS${LD_LIBRARY_PATH:-}
export ORT_DYLIB_PATH=$(ls "$ORT"/libonnxruntime.so.* | head -1)
if ldd "$ORT/libonnxruntime_providers_cuda.so" | grep -i "not found"; then exit 1; fi
T=$(mktemp -d)
for d in cpu cuda; do
  sed "s|../../models/|$R/models/|; s|backend = \"tract\"|backend = \"ort\"\ndevice = \"$d\"|" \
    config/examples/vad.toml > "$T/vad-$d.toml"
  printf '[decode]\nsample_rate_hz = 16000\n[features]\ncompute = []\n[[model]]\nname = "m"\npath = "%s"\nbackend = "ort"\ndevice = "%s"\noutput = "tensor"\nwindow_s = 0.032\nhop_s = 0.016\nbatch_size = 32\n' \
    "$R/tests/fixtures/models/batch_mean.onnx" "$d" > "$T/bm-$d.toml"
  for c in vad bm; do
    for i in 1 2; do
      rm -rf "$T/o-$c-$d"
      "$K" process "$A" --config "$T/$c-$d.toml" --out "$T/o-$c-$d" --jobs 1 2> "$T/$c-$d.log"
      grep -E "CUDA|CPU|realtime" "$T/$c-$d.log" | sed "s/^/$c $d: /" | head -3
    done
  done
done
python3 - "$T" <<'PY'
import json, pathlib, sys
import numpy as np
t = pathlib.Path(sys.argv[1])
for c, f in (("vad", "vad_probs.npy"), ("bm", "m.npy")):
    worst, n, same = 0.0, 0, True
    for item in sorted((t / f"o-{c}-cpu").iterdir()):
        if not (item / f).exists():
            continue
        a, b = np.load(item / f), np.load(t / f"o-{c}-cuda" / item.name / f)
        worst, n = max(worst, float(np.abs(a - b).max())), n + a.size
        if c == "vad":
            seg = lambda o: json.load(open(t / o / item.name / "vad.json"))["segments"]
            same &= seg("o-vad-cpu") == seg("o-vad-cuda")
    print(f"{c}: {n} values, max |cpu - cuda| = {worst:.3g}, vad segments identical: {same}")
PY
rm -rf "$T"
