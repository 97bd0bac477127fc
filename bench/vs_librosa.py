#!/usr/bin/env python3
"""klio-edge against librosa on the same hour of real audio, single-threaded, in one run.

Builds (once, cached in --work) one hour of audio by concatenating every recording of
tests/corpus/real (resampled to each target rate), then times, in this order:

  log-mel 16 kHz/400/160/80   librosa: melspectrogram + power_to_db on the in-memory signal
                              klio:    the features stage of `klio-edge process` (ledger
                                       stage_ms.features: framing, FFT, mel, dB, sink frames)
  log-mel 44.1 kHz/2048/512/128   the same
  MFCC 22.05 kHz (librosa defaults)   librosa.feature.mfcc vs klio's features stage
  decode+mono+resample+log-mel from MP3 / FLAC (44.1 kHz stereo -> 16 kHz)
                              librosa: librosa.load(sr=16000) + melspectrogram + power_to_db
                              klio:    wall time of `klio-edge process --jobs 1`
  whole process, 16 kHz WAV   librosa: soundfile.read + melspectrogram + power_to_db + np.save
                              klio:    wall time of `klio-edge process --jobs 1` (start-up,
                                       decode, ledger, .npy write and fsync included)

and prints each as realtime factors and the ratio klio / librosa. librosa runs with
OMP/OPENBLAS/MKL/NUMBA threads = 1 (bench/vs_librosa.sh sets them before Python starts).

    bench/vs_librosa.sh [--minutes 60] [--repeat 3]
"""
import argparse
import json
import os
import pathlib
import platform
import sqlite3
import subprocess
import tempfile
import time

import librosa
import numpy as np
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"
BIN = ROOT / "target" / "release" / "klio-edge"
EXAMPLES = ROOT / "config" / "examples"


def hour_of_audio(sr, seconds, channels=1):
    """Every real recording at `sr`, concatenated and repeated to `seconds`."""
    parts = []
    for f in sorted(CORPUS.iterdir()):
        if f.suffix in (".wav", ".flac", ".ogg", ".oga", ".mp3"):
            try:
                y, _ = librosa.load(f, sr=sr, mono=(channels == 1))
            except Exception:
                continue
            if y.ndim == 1 and channels == 2:
                y = np.stack([y, y])
            if y.ndim == 2 and channels == 1:
                y = y.mean(axis=0)
            parts.append(y)
    y = np.concatenate(parts, axis=-1)
    n = int(sr * seconds)
    reps = -(-n // y.shape[-1])
    y = np.concatenate([y] * reps, axis=-1)[..., :n]
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def make_inputs(work, seconds):
    work.mkdir(parents=True, exist_ok=True)
    files = {
        "wav16k": (work / "hour-16k.wav", 16000, 1, "PCM_16"),
        "wav44k": (work / "hour-44k.wav", 44100, 1, "PCM_16"),
        "wav22k": (work / "hour-22k.wav", 22050, 1, "PCM_16"),
        "mp3": (work / "hour-44k-stereo.mp3", 44100, 2, "MPEG_LAYER_III"),
        "flac": (work / "hour-44k-stereo.flac", 44100, 2, "PCM_16"),
    }
    for key, (path, sr, ch, subtype) in files.items():
        stamp = path.with_suffix(path.suffix + ".seconds")
        if path.exists() and stamp.exists() and stamp.read_text() == str(seconds):
            continue
        print(f"making {path.name} ({seconds:.0f} s)", flush=True)
        y = hour_of_audio(sr, seconds, ch)
        sf.write(path, y.T if ch == 2 else y, sr, subtype=subtype)
        stamp.write_text(str(seconds))
    return {k: v[0] for k, v in files.items()}


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def librosa_log_mel(y, sr, n_fft, hop, n_mels):
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    return librosa.power_to_db(mel)


def klio(path, config, repeat):
    """Best wall time, best features-stage time and the stage times (ms) of the fastest run
    of `klio-edge process --jobs 1`."""
    walls, feats, stages = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=path.parent) as out:
            t = time.perf_counter()
            r = subprocess.run([str(BIN), "process", str(path), "--config", str(config),
                                "--out", out, "--jobs", "1", "--json", "-q"],
                               capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            if r.returncode != 0:
                raise SystemExit(f"klio-edge failed: {r.stdout} {r.stderr}")
            summary = json.loads(r.stdout)
            db = sqlite3.connect(summary["ledger"])
            (stage,) = db.execute("SELECT stage_ms FROM items").fetchone()
            db.close()
            stages.append(json.loads(stage))
            feats.append(stages[-1]["features"] / 1000.0)
    return min(walls), min(feats), stages[walls.index(min(walls))]


STAGES = ("fetch", "decode", "features", "sink")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/klio-bench"))
    args = ap.parse_args()
    seconds = args.minutes * 60.0
    if not BIN.exists():
        raise SystemExit(f"{BIN} missing: run `cargo build --release` first")
    files = make_inputs(args.work, seconds)
    cfg = args.work / "configs"
    cfg.mkdir(exist_ok=True)
    # MP3/FLAC at 44.1 kHz stereo decoded to 16 kHz mono: the 16 kHz log-mel config.
    configs = {
        "16k": EXAMPLES / "logmel-16k.toml",
        "44k": EXAMPLES / "logmel-44k.toml",
        "mfcc": EXAMPLES / "mfcc.toml",
    }
    rows = []
    breakdown = []  # (input, wall s, stage_ms) of the whole-process runs

    def row(name, lib_s, klio_s):
        rows.append((name, seconds / lib_s, seconds / klio_s, lib_s / klio_s))
        print(f"{name:<44} librosa {seconds / lib_s:8.0f}x  klio {seconds / klio_s:8.0f}x"
              f"  ratio {lib_s / klio_s:5.1f}", flush=True)

    y16, _ = sf.read(files["wav16k"], dtype="float32")
    lib = best(lambda: librosa_log_mel(y16, 16000, 400, 160, 80), args.repeat)
    _, feat, _ = klio(files["wav16k"], configs["16k"], args.repeat)
    row("log-mel 16 kHz/400/160/80 (DSP)", lib, feat)

    y44, _ = sf.read(files["wav44k"], dtype="float32")
    lib = best(lambda: librosa_log_mel(y44, 44100, 2048, 512, 128), args.repeat)
    _, feat, _ = klio(files["wav44k"], configs["44k"], args.repeat)
    row("log-mel 44.1 kHz/2048/512/128 (DSP)", lib, feat)

    y22, _ = sf.read(files["wav22k"], dtype="float32")
    lib = best(lambda: librosa.feature.mfcc(y=y22, sr=22050), args.repeat)
    _, feat, _ = klio(files["wav22k"], configs["mfcc"], args.repeat)
    row("MFCC 22.05 kHz, librosa defaults (DSP)", lib, feat)

    for key, label in (("mp3", "MP3"), ("flac", "FLAC")):
        path = files[key]

        def lib_run():
            y, _ = librosa.load(path, sr=16000, mono=True)
            librosa_log_mel(y, 16000, 400, 160, 80)

        lib = best(lib_run, max(1, args.repeat - 1))
        wall, _, st = klio(path, configs["16k"], max(1, args.repeat - 1))
        row(f"decode+mono+resample+log-mel, {label} 44.1k st", lib, wall)
        breakdown.append((f"{label} 44.1 kHz stereo -> 16 kHz", wall, st))

    def lib_whole():
        y, _ = sf.read(files["wav16k"], dtype="float32")
        np.save(args.work / "librosa-whole.npy", librosa_log_mel(y, 16000, 400, 160, 80))

    lib = best(lib_whole, args.repeat)
    wall, _, st = klio(files["wav16k"], configs["16k"], args.repeat)
    row("whole process, 16 kHz WAV (klio: CLI wall)", lib, wall)
    breakdown.append(("16 kHz WAV", wall, st))

    isa = subprocess.run([str(BIN), "--version"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"CPU: {cpu_name()}; {args.minutes:.0f} min of audio; best of {args.repeat}; "
          f"librosa {librosa.__version__}, numpy {np.__version__}; {isa}")
    print()
    print("| workload (one thread) | librosa (x realtime) | klio-edge (x realtime) | ratio |")
    print("|---|---:|---:|---:|")
    for name, a, b, r in rows:
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {r:.1f} |")
    print()
    print("Where the whole-process runs spend their time (ledger stage_ms of the fastest run):")
    print()
    print("| input | CLI wall (ms) | " + " | ".join(STAGES) + " |")
    print("|---|---:|" + "---:|" * len(STAGES))
    for name, wall, st in breakdown:
        cells = " | ".join(f"{st[k]:,.0f}" if k in st else "-" for k in STAGES)
        print(f"| {name} | {wall * 1000:,.0f} | {cells} |")


if __name__ == "__main__":
    main()
