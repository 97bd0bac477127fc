#!/usr/bin/env python3
"""Load test for `klio-edge serve` on NATS JetStream (fleet throughput).

Starts a nats-server on loopback, copies N short real recordings from tests/corpus/real,
publishes them, and runs one `serve --until-idle` process (2 cores, --jobs 2). From its JSON
logs it reports sustained items/s, p50/p99 event-to-ack latency, and the overhead klio-edge adds
per item on top of the pipeline stages: the ledger's share (claim + commit, thread hand-off) and
the ack. In the same run, `process --jobs 2` over the same files gives the reference rate
without a queue.

    python3 bench/serve_load.py [--items 1000] [--bin target/release/klio-edge]

Needs nats-server (apt-get install nats-server) and a release build (cargo build --release).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def short_recordings(limit_s):
    out = []
    for p in sorted(CORPUS.glob("*.wav")):
        try:
            with wave.open(str(p)) as w:
                d = w.getnframes() / w.getframerate()
        except Exception:
            continue
        if d <= limit_s:
            out.append((p, d))
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ts(line):
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--bin", default=str(ROOT / "target/release/klio-edge"))
    ap.add_argument("--jobs", type=int, default=2, help="serve --jobs (and process --jobs)")
    ap.add_argument("--fetch-batch", type=int, default=1, help="serve.nats.fetch_batch")
    ap.add_argument("--max-seconds", type=float, default=12.0, help="longest recording used")
    a = ap.parse_args()
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(nats_bin):
        sys.exit("nats-server not found: apt-get install nats-server")
    recs = short_recordings(a.max_seconds)
    if not recs:
        sys.exit(f"no WAV recordings under {a.max_seconds} s in {CORPUS}")
    tmp = Path(tempfile.mkdtemp(prefix="klio-load-"))
    port = free_port()
    nats = subprocess.Popen([nats_bin, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        items = tmp / "items"
        items.mkdir()
        audio_s = 0.0
        for i in range(a.items):
            src, d = recs[i % len(recs)]
            shutil.copy(src, items / f"{i:05d}-{src.name}")
            audio_s += d
        cfg = tmp / "serve.toml"
        cfg.write_text((ROOT / "config/examples/serve-nats.toml").read_text()
                       .replace('http = "127.0.0.1:9464"', 'http = ""')
                       .replace("fetch_batch = 1", f"fetch_batch = {a.fetch_batch}")
                       .replace('allow_paths = ["corpus"]', f'allow_paths = ["{items}"]'))
        env = dict(os.environ, NATS_URL=f"nats://127.0.0.1:{port}", KLIO_LOG_FORMAT="json",
                   KLIO_LOG="info,klio_edge=debug")
        t = time.time()
        subprocess.run([a.bin, "publish", "--config", str(cfg), str(items)], env=env, check=True,
                       stderr=subprocess.DEVNULL)
        publish_s = time.time() - t
        log = tmp / "serve.log"
        t = time.time()
        with open(log, "w") as f:
            subprocess.run(["taskset", "-c", "0,1", a.bin, "serve", "--config", str(cfg), "--out",
                            str(tmp / "out"), "--jobs", str(a.jobs), "--until-idle"], env=env, check=True,
                           stderr=f)
        serve_wall = time.time() - t
        lines = [json.loads(l) for l in log.read_text().splitlines() if l.startswith("{")]
        settled = [l for l in lines if l.get("message") == "settled"]
        if len(settled) != a.items:
            sys.exit(f"expected {a.items} settled items, got {len(settled)}; see {log}")
        first = min(ts(l) - l["event_to_ack_ms"] / 1e3 for l in settled)
        last = max(ts(l) for l in settled)
        rate = a.items / (last - first)
        e2a = [l["event_to_ack_ms"] for l in settled]
        ledger = [l["work_ms"] - l["stages_ms"] for l in settled]
        ledger_only = [l.get("ledger_ms", 0.0) for l in settled]
        ack = [l["settle_ms"] for l in settled]
        overhead = [x + y for x, y in zip(ledger, ack)]
        # Reference: the same files through `process` (no queue), same cores, same jobs.
        t = time.time()
        subprocess.run(["taskset", "-c", "0,1", a.bin, "process", "--config", str(cfg), "-q",
                        "--out", str(tmp / "out-process"), "--jobs", str(a.jobs), str(items)],
                       env=env, check=True)
        process_s = time.time() - t
        print(f"serve on NATS JetStream, 1 process, --jobs {a.jobs}, fetch_batch {a.fetch_batch}, 2 cores; {a.items} items "
              f"({audio_s / a.items:.1f} s of audio each on average, {len(recs)} distinct WAVs)")
        print(f"  publish:                 {a.items / publish_s:8.0f} items/s")
        print(f"  serve sustained:         {rate:8.1f} items/s  (wall incl. start and idle check {serve_wall:.1f} s)")
        print(f"  process, same files:     {a.items / process_s:8.1f} items/s  (serve/process = {rate / (a.items / process_s):.2f})")
        print(f"  event-to-ack latency:    p50 {pct(e2a, 0.5):6.1f} ms   p99 {pct(e2a, 0.99):6.1f} ms")
        print(f"  overhead per item:       mean {statistics.mean(overhead):5.2f} ms  p50 {pct(overhead, 0.5):5.2f}  p99 {pct(overhead, 0.99):5.2f}  (target < 2 ms)")
        print(f"    ledger + hand-off:     mean {statistics.mean(ledger):5.2f} ms   ack: mean {statistics.mean(ack):5.2f} ms")
        print(f"    of which the ledger:   mean {statistics.mean(ledger_only):5.2f} ms  p50 {pct(ledger_only, 0.5):5.2f}  p99 {pct(ledger_only, 0.99):5.2f}  (lock wait + SQL)")
    finally:
        nats.terminate()
        nats.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
