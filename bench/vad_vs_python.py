#!/usr/bin/env python3
"""Silero VAD over the real corpus: klio-edge (--jobs 1, both backends: tract, and ONNX Runtime
through `backend = "ort"` with one thread) against Python (librosa.load at 16 kHz +
onnxruntime with one thread, the same ONNX file, Silero's chunking), same run. Prints the
realtime factors and the ratios.

    OMP_NUM_THREADS=1 python bench/vad_vs_python.py     # needs librosa, onnxruntime

klio-edge's ort backend loads the library of the same `onnxruntime` package Python imports.
"""
import json
import os
import pathlib
import subprocess
import tempfile
import time

import librosa
import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"
BIN = ROOT / "target" / "release" / "klio-edge"
MODEL = ROOT / "models" / "silero_vad_openvino_16k.onnx"


def python_vad(files):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
    audio = 0.0
    for f in files:
        y, _ = librosa.load(f, sr=16000, mono=True)
        audio += len(y) / 16000
        state = np.zeros((2, 1, 128), np.float32)
        ctx = np.zeros((1, 64), np.float32)
        for i in range(0, len(y), 512):
            c = y[i:i + 512]
            if len(c) < 512:
                c = np.pad(c, (0, 512 - len(c)))
            x = np.concatenate([ctx, c[None, :]], axis=1).astype(np.float32)
            _, state = s.run(None, {"input": x, "state": state})
            ctx = x[:, -64:]
    return audio


def main():
    if not BIN.exists():
        raise SystemExit("cargo build --release first")
    # The formats librosa reads without ffmpeg (soundfile/libsndfile), so both sides get all.
    exts = {".wav", ".flac", ".ogg", ".oga", ".mp3"}
    files = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix in exts)
    # Warm-up, not timed: imports, numba's compile of librosa's resampler, the first session.
    python_vad(files[:1])
    t = time.perf_counter()
    audio = python_vad(files)
    py = time.perf_counter() - t
    capi = pathlib.Path(ort.__file__).parent / "capi"
    lib = next(capi.glob("libonnxruntime.so*"))
    env = dict(os.environ, ORT_DYLIB_PATH=str(lib))
    text = (ROOT / "config/examples/vad.toml").read_text().replace(
        "../../models/", str(ROOT / "models") + "/")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("tract", "ort"):
            cfg = pathlib.Path(tmp) / f"{backend}.toml"
            cfg.write_text(text.replace('backend = "tract"', f'backend = "{backend}"'))
            out = pathlib.Path(tmp) / f"out-{backend}"
            t = time.perf_counter()
            r = subprocess.run([str(BIN), "process", *map(str, files), "--config", str(cfg),
                                "--out", str(out), "--jobs", "1", "--json", "-q"],
                               capture_output=True, text=True, env=env)
            times[backend] = time.perf_counter() - t
            s = json.loads(r.stdout)
            if s["failed"]:
                raise SystemExit(f"{backend}: {s['failed']} failed: {r.stderr}")
    print(f"{len(files)} files, {audio:.0f} s of audio; onnxruntime {ort.__version__}")
    print(f"python (librosa + onnxruntime, 1 thread): {audio / py:7.0f}x realtime")
    for backend, kl in times.items():
        print(f"klio-edge ({backend:5}, --jobs 1):              {audio / kl:7.0f}x realtime"
              f"   ratio {py / kl:.2f}")


if __name__ == "__main__":
    main()
