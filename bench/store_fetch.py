#!/usr/bin/env python3
"""Object-store fetch bench: items/s processing the corpus from moto's S3 server on
loopback against the same files from local disk, in the same run.

Starts moto_server, uploads every recording of tests/corpus/real (repeated --copies times
under distinct keys, so there is enough work), then alternates, --reps times each:
  local:  klio-edge process <local folder>      --out <tmp> (fresh ledger)
  s3:     klio-edge process s3://bench/corpus/  --out <tmp> (fresh ledger)
Both write local outputs, so the difference is fetching (HEAD + streamed GET + hash) versus
reading a local file. Reports the median items/s of each and the ratio s3/local.

    python3 bench/store_fetch.py [--bin target/release/klio-edge] [--copies 4] [--reps 3]

Needs moto_server ($KLIO_MOTO_SERVER, else target/py-moto/bin/moto_server, which
scripts/test.sh makes) and a release build (cargo build --release).
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"
CONFIG = """[decode]
sample_rate_hz = 16000
channels = "mono"
[features]
compute = ["log_mel"]
n_fft = 400
hop_length = 160
n_mels = 80
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def put(endpoint, path, data=b""):
    # urllib would say application/x-www-form-urlencoded, which makes moto parse the body.
    req = urllib.request.Request(endpoint + path, data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, r.status


def run(binary, args, env, cwd):
    t = time.perf_counter()
    out = subprocess.run(
        [binary, "process", "--json", "-q", "--jobs", "2", *args],
        env=env, cwd=cwd, capture_output=True, text=True,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"klio-edge failed ({out.returncode}): {out.stderr}")
    s = json.loads(out.stdout)
    return s["done"] / wall, s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/klio-edge"))
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    moto = os.environ.get("KLIO_MOTO_SERVER") or str(ROOT / "target/py-moto/bin/moto_server")
    if not Path(moto).is_file():
        sys.exit(f"moto_server not found at {moto}: run scripts/test.sh once, or set KLIO_MOTO_SERVER")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix="klio-store-bench-"))
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        put(endpoint, "/bench")
        local = tmp / "corpus"
        local.mkdir()
        files = sorted(p for p in CORPUS.iterdir() if p.is_file())
        n_bytes = 0
        for c in range(a.copies):
            for f in files:
                name = f"{c}-{f.name}"
                data = f.read_bytes()
                n_bytes += len(data)
                (local / name).write_bytes(data)
                put(endpoint, f"/bench/corpus/{name}", data)
        (tmp / "klio.toml").write_text(CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLIO_")}
        env.update({
            "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
        })
        rates = {"local": [], "s3": []}
        items = None
        for rep in range(a.reps):
            for kind, src in (("local", str(local)), ("s3", "s3://bench/corpus/")):
                out = tmp / f"out-{kind}-{rep}"
                r, s = run(a.bin, ["--config", "klio.toml", src, "--out", str(out)], env, tmp)
                rates[kind].append(r)
                items = s["items"]
                shutil.rmtree(out)
        lo, s3 = statistics.median(rates["local"]), statistics.median(rates["s3"])
        print(f"corpus: {items} items ({a.copies} copies of {len(files)} recordings), "
              f"{n_bytes / 1e6:.1f} MB; --jobs 2; median of {a.reps} runs each")
        print(f"local disk : {lo:7.1f} items/s  (runs: {', '.join(f'{x:.1f}' for x in rates['local'])})")
        print(f"s3 (moto)  : {s3:7.1f} items/s  (runs: {', '.join(f'{x:.1f}' for x in rates['s3'])})")
        print(f"ratio s3/local: {s3 / lo:.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
