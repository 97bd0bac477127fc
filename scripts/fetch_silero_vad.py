#!/usr/bin/env python3
"""Takes the Silero VAD ONNX model out of the PyPI wheel `silero-vad` into models/.

    python3 scripts/fetch_silero_vad.py [--version 6.2.3]

It runs `pip download` (PyPI only), extracts `silero_vad_openvino_16k.onnx` (the export tract
can load: fixed [1, 576] input, [2, 1, 128] state, no If nodes) and the wheel's MIT licence,
and prints the SHA-256 that config/examples/vad.toml pins.

It also derives `silero_vad_16k_batch.onnx` from the wheel's `silero_vad_16k_op15.onnx`
(free batch axis: input [batch, 576], state [2, batch, 128]) by turning its `sr` input into a
constant 16000, so that the model takes klio-edge's two inputs (config/examples/
vad-batched.toml; ONNX Runtime only: tract cannot type its If nodes). That needs the `onnx`
package (pip install onnx). Its probabilities equal the openvino export's (Python
onnxruntime, max difference 0.0 on a corpus recording).
"""
import argparse
import hashlib
import pathlib
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = "silero_vad_openvino_16k.onnx"
BATCH_FROM = "silero_vad_16k_op15.onnx"
BATCH = "silero_vad_16k_batch.onnx"


def fold_sr(data):
    """The op15 export with its `sr` input replaced by the constant 16000."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    sr = next(i for i in m.graph.input if i.name == "sr")
    m.graph.input.remove(sr)
    m.graph.initializer.append(numpy_helper.from_array(np.array(16000, np.int64), "sr"))
    onnx.checker.check_model(m)
    return m.SerializeToString()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="6.2.3")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"silero-vad=={args.version}", "-d", tmp], check=True)
        wheel = next(pathlib.Path(tmp).glob("silero_vad-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            data = z.read(f"silero_vad/data/{MODEL}")
            batch = fold_sr(z.read(f"silero_vad/data/{BATCH_FROM}"))
            lic = next(n for n in z.namelist() if n.endswith("licenses/LICENSE"))
            licence = z.read(lic)
    out = ROOT / "models"
    out.mkdir(exist_ok=True)
    (out / MODEL).write_bytes(data)
    (out / BATCH).write_bytes(batch)
    (out / "SILERO-VAD-LICENSE").write_bytes(licence)
    print(f"{MODEL}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()} "
          f"(silero-vad {args.version} from PyPI)")
    print(f"{BATCH}: {len(batch)} bytes, sha256 {hashlib.sha256(batch).hexdigest()} "
          f"(derived from {BATCH_FROM}: sr fixed to 16000)")


if __name__ == "__main__":
    main()
