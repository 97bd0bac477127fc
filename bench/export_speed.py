#!/usr/bin/env python3
"""How fast `klio-edge export` writes a dataset, against `cp -r` of the same output folder in
the same run, on the same pinned core.

Makes one hour of 16 kHz audio as 360 clips of 10 s, runs `klio-edge process` on it (log-mel
80 bands and MFCC 20, the 16 kHz example config), then, best of N each, with the folder warm
in the page cache for every contender:

- `cp -r OUT DEST` (what copying the outputs costs: reads and writes, no fsync);
- `cp -r OUT DEST && sync` (the same, made durable, as export's files are: each is fsynced
  before its rename);
- `klio-edge export --format parquet|webdataset|jsonl`.

MB/s is the bytes of the outputs' files (the `.npy` and `meta.json` export reads, the ledger
left out) over wall time. Prints a table; `--json` prints the rows as JSON.

    taskset -c 0 python3 bench/export_speed.py [--work /tmp/klio-export-bench] [--repeat 3]

Needs only the standard library and a release build (`cargo build --release`).
"""

import argparse
import json
import os
import shutil
import subprocess
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "klio-edge"
CONFIG = ROOT / "config" / "examples" / "logmel-16k.toml"


def make_corpus(work: Path) -> Path:
    clips = work / "clips-10s"
    if (clips / "clip-359.wav").exists():
        return clips
    clips.mkdir(parents=True, exist_ok=True)
    for i in range(360):
        with wave.open(str(clips / f"clip-{i:03}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            # White noise at -12 dBFS or so: the features are what is exported, any will do.
            raw = bytearray(os.urandom(2 * 16000 * 10))
            for j in range(1, len(raw), 2):
                raw[j] = (raw[j] & 0x1F) | (0xE0 if raw[j] & 0x10 else 0)
            w.writeframes(bytes(raw))
    return clips


def outputs_bytes(out: Path) -> int:
    total = 0
    for d in out.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            total += sum(f.stat().st_size for f in d.iterdir() if f.is_file())
    return total


def warm(out: Path):
    for d in out.iterdir():
        if d.is_dir():
            for f in d.iterdir():
                if f.is_file():
                    f.read_bytes()


def best(repeat, fn):
    times = []
    for _ in range(repeat):
        t = fn()
        times.append(t)
    return min(times)


def timed(cmd, dest: Path):
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, shell=isinstance(cmd, str))
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/klio-export-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not BIN.exists():
        raise SystemExit(f"{BIN} is missing: cargo build --release")
    work = Path(a.work)
    clips = make_corpus(work)
    out = work / "out"
    if not (out / "klio-ledger.sqlite").exists():
        subprocess.run(
            [str(BIN), "process", "-q", str(clips), "--config", str(CONFIG), "--out", str(out),
             "--set", 'features.compute=["log_mel","mfcc"]'],
            check=True)
    size = outputs_bytes(out)
    dest = work / "dest"
    rows = []

    def row(name, seconds, written=None):
        rows.append({"what": name, "s": round(seconds, 4), "MB/s": round(size / 1e6 / seconds, 1),
                     "written_MB": None if written is None else round(written / 1e6, 1)})

    warm(out)
    row("cp -r", best(a.repeat, lambda: timed(["cp", "-r", str(out), str(dest)], dest)))
    warm(out)
    row("cp -r && sync", best(a.repeat, lambda: timed(
        f"cp -r '{out}' '{dest}' && sync", dest)))
    for fmt in ("parquet", "webdataset", "jsonl"):
        summary = {}

        def run():
            if dest.exists():
                shutil.rmtree(dest)
            subprocess.run(["sync"], check=True)
            t = time.perf_counter()
            p = subprocess.run([str(BIN), "export", "-q", "--json", "--out", str(out),
                                "--format", fmt, "--to", str(dest)],
                               check=True, capture_output=True, text=True)
            elapsed = time.perf_counter() - t
            summary.update(json.loads(p.stdout))
            return elapsed

        warm(out)
        row(f"export {fmt}", best(a.repeat, run), summary["bytes"])
    if dest.exists():
        shutil.rmtree(dest)
    if a.json:
        print(json.dumps({"outputs_MB": round(size / 1e6, 1), "rows": rows}))
        return
    print(f"one hour as 360 clips of 10 s; outputs (log_mel 80 + mfcc 20, meta.json): "
          f"{size / 1e6:.1f} MB; best of {a.repeat}")
    print(f"{'':<20} {'s':>8} {'MB/s':>8} {'written MB':>11}")
    for r in rows:
        w = "" if r["written_MB"] is None else f"{r['written_MB']:.1f}"
        print(f"{r['what']:<20} {r['s']:>8.3f} {r['MB/s']:>8.1f} {w:>11}")


if __name__ == "__main__":
    main()
