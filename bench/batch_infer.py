#!/usr/bin/env python3
"""Batching chunks in one model call: the same stateless model over the real corpus with
`batch_size = 1` and `batch_size = 32`, same run, `--jobs 1` and `--jobs 2`. Prints the
infer stage's total time (the ledger's `stage_ms.infer`), wall time and the ratios.

The model is made here (Python `onnx` + numpy, random weights, seed 0): an embedding MLP over
log-mel chunks, `x [N, 16, 128] -> 256 -> 64`, 0.5 s chunks (16 frames at hop 512, 16 kHz).

    python bench/batch_infer.py        # needs onnx, numpy; cargo build --release first
"""
import json
import pathlib
import sqlite3
import statistics
import subprocess
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"
BIN = ROOT / "target" / "release" / "klio-edge"


def make_model(path):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((16 * 128, 256)) * 0.02).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(256, np.float32), "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((256, 64)) * 0.05).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 16 * 128], np.int64), "flat")
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        initializer=[w1, b1, w2, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def config(tmp, batch):
    p = tmp / f"b{batch}.toml"
    p.write_text(
        "[decode]\nsample_rate_hz = 16000\n\n[features]\ncompute = [\"log_mel\"]\n\n"
        f"[[model]]\nname = \"emb\"\npath = \"{tmp / 'mlp.onnx'}\"\ninput = \"log_mel\"\n"
        f"window_s = 0.5\noutput = \"embedding\"\nbatch_size = {batch}\n")
    return p


def run(tmp, files, batch, jobs, n):
    walls, infers = [], []
    for i in range(n):
        out = tmp / f"out-{batch}-{jobs}-{i}"
        r = subprocess.run([str(BIN), "process", *map(str, files), "--config",
                            str(config(tmp, batch)), "--out", str(out), "--jobs", str(jobs),
                            "--json", "-q"], capture_output=True, text=True)
        s = json.loads(r.stdout)
        if s["failed"]:
            raise SystemExit(f"batch {batch}: {s['failed']} failed: {r.stderr}")
        walls.append(s["wall_s"])
        with sqlite3.connect(out / "klio-ledger.sqlite") as c:
            infers.append(c.execute(
                "SELECT SUM(json_extract(stage_ms, '$.infer')) FROM items").fetchone()[0] / 1e3)
    return statistics.median(walls), statistics.median(infers)


def main():
    if not BIN.exists():
        raise SystemExit("cargo build --release first")
    exts = {".wav", ".flac", ".ogg", ".oga", ".mp3"}
    files = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix in exts)
    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        make_model(tmp / "mlp.onnx")
        print(f"{len(files)} files; MLP over 0.5 s log-mel chunks; median of 3")
        for jobs in (1, 2):
            one = run(tmp, files, 1, jobs, 3)
            many = run(tmp, files, 32, jobs, 3)
            print(f"--jobs {jobs}: infer stage {one[1]:.3f} s (batch 1) vs {many[1]:.3f} s "
                  f"(batch 32): ratio {one[1] / many[1]:.2f}; wall {one[0]:.2f} s vs "
                  f"{many[0]:.2f} s")


if __name__ == "__main__":
    main()
