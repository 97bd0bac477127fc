#!/usr/bin/env python3
"""klio_edge (the Python package) against librosa, single-threaded, in one process and one run.

Per workload, two timings for each library:

  per 1 s clip   the mean time of one call on a 1 s clip (200 different clips, best of
                 --repeat passes): what a notebook or a data loader calling per item pays,
                 where librosa's fixed cost of a few milliseconds per call dominates;
  the hour       one call on an hour of real audio (every recording of tests/corpus/real
                 concatenated, as bench/vs_librosa.py), best of --repeat.

Workloads: log-mel (melspectrogram + power_to_db) at 16 kHz/400/160/80 and at 44.1 kHz with
librosa's defaults (2048/512/128), MFCC with librosa's defaults at 22.05 kHz. Both libraries
get the same float32 signal; both warm (one untimed call first).

    python3 -m venv /tmp/kb && /tmp/kb/bin/pip install ./python librosa==0.11.0 soundfile
    taskset -c 0 /tmp/kb/bin/python bench/python_vs_librosa.py [--repeat 3] [--json]

`pip install ./python` builds the release profile. OMP/OpenBLAS/MKL/numba threads are set to
1, and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, before numpy loads.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402

import klio_edge  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_librosa import hour_of_audio  # noqa: E402

WORKLOADS = {
    "log-mel 16 kHz/400/160/80": (
        16000,
        lambda y, sr: librosa.power_to_db(librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80)),
        lambda y, sr: klio_edge.power_to_db(klio_edge.feature.melspectrogram(
            y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80)),
    ),
    "log-mel 44.1 kHz/2048/512/128": (
        44100,
        lambda y, sr: librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr)),
        lambda y, sr: klio_edge.power_to_db(klio_edge.feature.melspectrogram(y=y, sr=sr)),
    ),
    "MFCC 22.05 kHz, librosa defaults": (
        22050,
        lambda y, sr: librosa.feature.mfcc(y=y, sr=sr),
        lambda y, sr: klio_edge.feature.mfcc(y=y, sr=sr),
    ),
}


def per_clip(fn, clips, sr, repeat):
    fn(clips[0], sr)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for c in clips:
            fn(c, sr)
        best = min(best, (time.perf_counter() - t) / len(clips))
    return best


def whole(fn, y, sr, repeat):
    fn(y[: sr * 10], sr)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(y, sr)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for name, (sr, lib, ours) in WORKLOADS.items():
        y = np.ascontiguousarray(hour_of_audio(sr, a.minutes * 60), dtype=np.float32)
        clips = [y[i * sr:(i + 1) * sr] for i in range(200)]
        lc, kc = per_clip(lib, clips, sr, a.repeat), per_clip(ours, clips, sr, a.repeat)
        lh, kh = whole(lib, y, sr, a.repeat), whole(ours, y, sr, a.repeat)
        seconds = len(y) / sr
        rows.append(dict(workload=name, librosa_clip_ms=lc * 1e3, klio_clip_ms=kc * 1e3,
                         clip_ratio=lc / kc, librosa_hour_x_realtime=seconds / lh,
                         klio_hour_x_realtime=seconds / kh, hour_ratio=lh / kh))
    if a.json:
        print(json.dumps(rows))
        return
    print(f"librosa {librosa.__version__}, numpy {np.__version__}, klio_edge "
          f"{klio_edge.__version__}, {platform.processor() or platform.machine()}; one thread, "
          f"best of {a.repeat}; {a.minutes:g} min of audio")
    print("| workload | librosa ms per 1 s clip | klio_edge ms per 1 s clip | ratio "
          "| librosa, hour (x realtime) | klio_edge, hour (x realtime) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['librosa_clip_ms']:.3f} | {r['klio_clip_ms']:.3f} | "
              f"{r['clip_ratio']:.1f} | {r['librosa_hour_x_realtime']:,.0f} | "
              f"{r['klio_hour_x_realtime']:,.0f} | {r['hour_ratio']:.1f} |")


if __name__ == "__main__":
    main()
