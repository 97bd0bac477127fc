#!/usr/bin/env python3
"""Takes the Silero VAD ONNX model out of the PyPI wheel `silero-vad` into models/.

    python3 scripts/fetch_silero_vad.py [--version 6.2.3]

It runs `pip download` (PyPI only), extracts `silero_vad_openvino_16k.onnx` (the export tract
can load: fixed [1, 576] input, [2, 1, 128] state, no If nodes) and the wheel's MIT licence,
and prints the SHA-256 that config/examples/vad.toml pins.
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
            lic = next(n for n in z.namelist() if n.endswith("licenses/LICENSE"))
            licence = z.read(lic)
    out = ROOT / "models"
    out.mkdir(exist_ok=True)
    (out / MODEL).write_bytes(data)
    (out / "SILERO-VAD-LICENSE").write_bytes(licence)
    print(f"{MODEL}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()} "
          f"(silero-vad {args.version} from PyPI)")


if __name__ == "__main__":
    main()
