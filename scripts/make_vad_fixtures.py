#!/usr/bin/env python3
"""VAD parity fixtures: Python onnxruntime on the same model and input as klio-edge.

For each 16 kHz recording below (native rate, so both sides see the same PCM), runs
models/silero_vad_openvino_16k.onnx with onnxruntime exactly as silero-vad's OnnxWrapper
does (512-sample chunks, 64 samples of context, state carried, last chunk zero-padded), and
saves the per-chunk probabilities and Silero's own get_speech_timestamps segments:

    tests/fixtures/vad/<case>/{source.txt, probs.npy, segments.json}

    pip install onnxruntime soundfile numpy && pip install --no-deps silero-vad
    python scripts/make_vad_fixtures.py
"""
import ast
import importlib.util
import json
import pathlib
import typing

import numpy as np
import onnxruntime as ort
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"
OUT = ROOT / "tests" / "fixtures" / "vad"
MODEL = ROOT / "models" / "silero_vad_openvino_16k.onnx"
CASES = {
    "congrats-speech": "wav_s16_16k_mono_asterisk-demo-congrats-g722dec.wav",
    "xylofon-no-speech": "wav_s16_16k_mono_sound-icons-xylofon.wav",
}


def silero_segments_function():
    """Silero's own get_speech_timestamps_from_probs, taken from the installed silero_vad
    package without importing it (its module imports torch, which the function never uses)."""
    spec = importlib.util.find_spec("silero_vad")
    src = (pathlib.Path(spec.origin).parent / "utils_vad.py").read_text()
    fn = next(n for n in ast.parse(src).body
              if isinstance(n, ast.FunctionDef) and n.name == "get_speech_timestamps_from_probs")
    ns = {"List": typing.List, "Callable": typing.Callable}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "utils_vad.py", "exec"), ns)
    return ns["get_speech_timestamps_from_probs"]


def probabilities(session, y):
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, 64), dtype=np.float32)
    probs = []
    for start in range(0, len(y), 512):
        chunk = y[start:start + 512]
        if len(chunk) < 512:
            chunk = np.pad(chunk, (0, 512 - len(chunk)))
        x = np.concatenate([context, chunk[None, :].astype(np.float32)], axis=1)
        out, state = session.run(None, {"input": x, "state": state})
        probs.append(float(out[0, 0]))
        context = x[:, -64:]
    return np.array(probs, dtype=np.float32)


def main():
    get_speech_timestamps_from_probs = silero_segments_function()
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    for name, file in CASES.items():
        y, sr = sf.read(CORPUS / file, dtype="float32")
        assert sr == 16000 and y.ndim == 1
        probs = probabilities(session, y)
        segs = get_speech_timestamps_from_probs(
            [float(p) for p in probs], sampling_rate=16000, audio_length_samples=len(y))
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "probs.npy", probs)
        (d / "segments.json").write_text(json.dumps(
            {"samples": len(y), "segments": segs}, indent=1) + "\n")
        (d / "source.txt").write_text(file + "\n")
        print(name, len(probs), "chunks", segs)


if __name__ == "__main__":
    main()
