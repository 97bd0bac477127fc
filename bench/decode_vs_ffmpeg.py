#!/usr/bin/env python3
"""klio-edge's decoders and resampler against ffmpeg and soxr on the same hour, one core.

For each compressed input (44.1 kHz stereo MP3, FLAC and Ogg Vorbis, made from the hour
bench/vs_librosa.py builds), in one run, best of N:

  decode          klio: ledger stage_ms.decode of `process` at the native rate, stereo kept
                        (decode.sample_rate_hz = "native", channels = "keep"; feature: rms)
                  ffmpeg: `ffmpeg -threads 1 -i IN -c:a pcm_f32le -f null -` (wall, start-up
                          included, as klio's CLI is not)
  decode + mono + resample to 16 kHz
                  klio: stage_ms.decode with sample_rate_hz = 16000, channels = "mono"
                  ffmpeg: the same with `-ac 1 -af aresample=16000:resampler=soxr` (soxr at
                          its default quality, HQ, librosa's default res_type)

and the resampler alone on the 44.1 kHz mono PCM hour: klio's decode stage at 16 kHz minus
its decode stage at the native rate (PCM decode is memory speed), against python-soxr
(`soxr.resample(y, 44100, 16000, "HQ")`, what librosa.load calls) on the decoded array.

    taskset -c 0 /tmp/klio-bench-venv/bin/python bench/decode_vs_ffmpeg.py [--repeat 3]

Needs ffmpeg (with libvorbis), numpy, soundfile and soxr (the bench venv has them), and a
release build.
"""

import argparse
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "klio-edge"


def config(work: Path, rate: str, channels: str) -> Path:
    p = work / f"decode-{rate}-{channels}.toml"
    p.write_text(f'[decode]\nsample_rate_hz = {rate}\nchannels = "{channels}"\n'
                 '[features]\ncompute = ["rms"]\n')
    return p


def klio_decode_s(path: Path, cfg: Path, work: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=work) as out:
            r = subprocess.run([str(BIN), "process", str(path), "--config", str(cfg), "--out",
                                out, "--jobs", "1", "--json", "-q"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"klio-edge failed on {path}: {r.stdout} {r.stderr}")
            db = sqlite3.connect(json.loads(r.stdout)["ledger"])
            (stage,) = db.execute("SELECT stage_ms FROM items").fetchone()
            db.close()
            best = min(best, json.loads(stage)["decode"] / 1000.0)
    return best


def ffmpeg_s(path: Path, extra: list, repeat: int) -> float:
    """ffmpeg decoding to interleaved f32 (the pcm_f32le encoder) into its null muxer: no
    pipe, so ffmpeg is not timed writing 1.3 GB to a reader."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                            "-threads", "1", "-i", str(path), *extra, "-c:a", "pcm_f32le",
                            "-f", "null", "-"])
        if r.returncode != 0:
            raise SystemExit(f"ffmpeg failed on {path}")
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/klio-bench"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = args.work
    mp3, flac = work / "hour-44k-stereo.mp3", work / "hour-44k-stereo.flac"
    wav44 = work / "hour-44k.wav"
    for p in (mp3, flac, wav44):
        if not p.exists():
            raise SystemExit(f"{p} is missing: run bench/vs_librosa.sh first")
    ogg = work / "hour-44k-stereo.ogg"
    if not ogg.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(flac),
                        "-c:a", "libvorbis", "-q:a", "5", str(ogg)], check=True)
    native = config(work, '"native"', "keep")
    to16 = config(work, "16000", "mono")
    hour = sf.info(str(wav44)).duration
    rows = []
    for name, path in (("MP3", mp3), ("FLAC", flac), ("Ogg Vorbis", ogg)):
        k_dec = klio_decode_s(path, native, work, args.repeat)
        f_dec = ffmpeg_s(path, [], args.repeat)
        k_all = klio_decode_s(path, to16, work, args.repeat)
        f_all = ffmpeg_s(path, ["-ac", "1", "-af", "aresample=16000:resampler=soxr"],
                         args.repeat)
        rows.append((name, k_dec, f_dec, k_all, f_all))
    k_pcm = klio_decode_s(wav44, config(work, '"native"', "mono"), work, args.repeat)
    k_res = klio_decode_s(wav44, to16, work, args.repeat) - k_pcm
    y, _ = sf.read(str(wav44), dtype="float32")
    s_res = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        soxr.resample(y, 44100, 16000, "HQ")
        s_res = min(s_res, time.perf_counter() - t)

    x = lambda s: f"{hour / s:,.0f}x"
    print(f"one hour of 44.1 kHz stereo audio; one core; best of {args.repeat}; "
          f"{subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.split(chr(10))[0]}")
    print()
    print("| input | decode: klio | ffmpeg | ratio | + mono + 16 kHz: klio | ffmpeg (soxr) "
          "| ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, k_dec, f_dec, k_all, f_all in rows:
        print(f"| {name} | {k_dec * 1000:,.0f} ms ({x(k_dec)}) | {f_dec * 1000:,.0f} ms | "
              f"{f_dec / k_dec:.2f} | {k_all * 1000:,.0f} ms ({x(k_all)}) | "
              f"{f_all * 1000:,.0f} ms | {f_all / k_all:.2f} |")
    print()
    print(f"resampler alone, 44.1 -> 16 kHz mono: klio {k_res * 1000:,.0f} ms ({x(k_res)}), "
          f"python-soxr HQ {s_res * 1000:,.0f} ms ({x(s_res)}): ratio {s_res / k_res:.2f}; "
          f"klio's PCM decode of the same WAV {k_pcm * 1000:,.0f} ms")
    print("(ratio > 1: klio is faster)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
