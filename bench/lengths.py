#!/usr/bin/env python3
"""Whether the cost per second of audio stays the same from short clips to long files.

Runs `klio-edge process --jobs 1` (the 16 kHz log-mel example config) on the same audio cut
three ways: 360 clips of 10 s (one hour), one hour, and three hours in one file (past the
256 MiB feature memory budget, so its frames spill to disk), each best of N on one pinned
core. Prints, per input: CLI wall time, ms per hour of audio, x realtime, the summed ledger
stage times per hour, and the peak RSS of the process.

    taskset -c 0 python3 bench/lengths.py [--work /tmp/klio-bench] [--repeat 3]

Needs only the standard library and a release build (`cargo build --release`); it cuts its
inputs from `<work>/hour-16k.wav`, which bench/vs_librosa.py makes.
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "klio-edge"
CONFIG = ROOT / "config" / "examples" / "logmel-16k.toml"


def cut_inputs(work: Path):
    hour = work / "hour-16k.wav"
    if not hour.exists():
        raise SystemExit(f"{hour} is missing: run bench/vs_librosa.sh first")
    with wave.open(str(hour)) as w:
        params = w.getparams()
        pcm = w.readframes(w.getnframes())
    clips = work / "clips-10s"
    if not (clips / "clip-359.wav").exists():
        clips.mkdir(exist_ok=True)
        step = 10 * params.framerate * params.sampwidth * params.nchannels
        for i in range(360):
            with wave.open(str(clips / f"clip-{i:03}.wav"), "wb") as o:
                o.setparams(params)
                o.writeframes(pcm[i * step:(i + 1) * step])
    three = work / "hours3-16k.wav"
    if not three.exists():
        with wave.open(str(three), "wb") as o:
            o.setparams(params)
            for _ in range(3):
                o.writeframes(pcm)
    return [("360 clips of 10 s (1 h)", clips, 3600.0), ("1 file of 1 h", hour, 3600.0),
            ("1 file of 3 h (spills)", three, 10800.0)]


def run_once(path: Path, work: Path):
    out = Path(tempfile.mkdtemp(dir=work))
    try:
        t = time.perf_counter()
        proc = subprocess.Popen([str(BIN), "process", str(path), "--config", str(CONFIG),
                                 "--out", str(out), "--jobs", "1", "--json", "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        stdout = proc.stdout.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"klio-edge failed: {stdout} {proc.stderr.read().decode()}")
        summary = json.loads(stdout)
        db = sqlite3.connect(summary["ledger"])
        stages = {}
        for (st,) in db.execute("SELECT stage_ms FROM items WHERE state = 'done'"):
            for k, v in json.loads(st).items():
                stages[k] = stages.get(k, 0.0) + v
        db.close()
        return wall, stages, usage.ru_maxrss / 1024.0, summary["done"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/klio-bench"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name, path, seconds in cut_inputs(args.work):
        best = min((run_once(path, args.work) for _ in range(args.repeat)), key=lambda r: r[0])
        wall, stages, rss, done = best
        per_hour = lambda ms: ms * 3600.0 / seconds
        rows.append((name, done, wall * 1000 * 3600.0 / seconds, seconds / wall,
                     {k: per_hour(v) for k, v in stages.items()}, rss))
    print("| input | items | CLI wall per hour of audio (ms) | x realtime | fetch | decode "
          "| features | sink | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, done, ms, rt, st, rss in rows:
        cells = " | ".join(f"{st.get(k, 0.0):,.0f}" for k in ("fetch", "decode", "features",
                                                                 "sink"))
        print(f"| {name} | {done} | {ms:,.0f} | {rt:,.0f} | {cells} | {rss:,.0f} |")
    print()
    print(f"best of {args.repeat}, `process --jobs 1`, {CONFIG.name}; stage columns: ledger "
          "stage_ms summed over the items, per hour of audio")


if __name__ == "__main__":
    main()
