"""Shapes, dtypes, batches, errors, and open_run over a real klio-edge run."""

import os
import shutil
import subprocess
import threading
from pathlib import Path

import librosa
import numpy as np
import pytest

import klio_edge

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "real"


def tone(seconds=1.0, sr=22050, f=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_shapes_and_dtypes_follow_librosa():
    y = tone()
    stereo = np.stack([y, tone(f=660.0)])
    for fn, kw in [
        (klio_edge.feature.melspectrogram, dict(sr=22050)),
        (klio_edge.feature.mfcc, dict(sr=22050)),
        (klio_edge.feature.rms, {}),
        (klio_edge.feature.spectral_centroid, dict(sr=22050)),
        (klio_edge.feature.spectral_rolloff, dict(sr=22050)),
    ]:
        name = fn.__name__
        want = getattr(librosa.feature, name)(y=y.astype(np.float64), **kw)
        got = fn(y=y, **kw)
        assert got.shape == want.shape and got.dtype == np.float32, name
        # float64 in, float32 out; [channels, samples] in, a leading channel axis out.
        assert fn(y=y.astype(np.float64), **kw).dtype == np.float32, name
        want2 = getattr(librosa.feature, name)(y=stereo.astype(np.float64), **kw)
        assert fn(y=stereo, **kw).shape == want2.shape, name
        assert fn(y=stereo[:1], **kw).shape == (1,) + want.shape, name
    assert klio_edge.stft_power(y).shape == librosa.stft(y).shape
    assert klio_edge.power_to_db(np.ones((3, 4, 5))).shape == (3, 4, 5)


def test_a_list_of_signals_is_a_batch_equal_to_one_by_one():
    ys = [tone(0.5 + 0.1 * i, f=200.0 + 50 * i) for i in range(9)]
    batch = klio_edge.feature.melspectrogram(y=ys, sr=22050, n_mels=64)
    assert isinstance(batch, list) and len(batch) == 9
    for y, got in zip(ys, batch):
        np.testing.assert_array_equal(got, klio_edge.feature.melspectrogram(y=y, sr=22050, n_mels=64))
    assert klio_edge.feature.mfcc(y=[], sr=22050) == []


def test_the_gil_is_released_while_computing():
    # A Python thread keeps counting while a long computation runs in another thread.
    y = np.random.default_rng(0).standard_normal(22050 * 120).astype(np.float32) * 0.1
    counts = []
    done = threading.Event()

    def count():
        n = 0
        while not done.is_set():
            n += 1
        counts.append(n)

    t = threading.Thread(target=count)
    t.start()
    try:
        for _ in range(3):
            klio_edge.feature.melspectrogram(y=y, sr=22050)
    finally:
        done.set()
        t.join()
    assert counts[0] > 1000


@pytest.mark.parametrize("call, message", [
    (lambda: klio_edge.feature.melspectrogram(y=tone(), sr=22050, window="blackman"), "window"),
    (lambda: klio_edge.feature.melspectrogram(y=tone(), sr=22050, pad_mode="wrap"), "pad_mode"),
    (lambda: klio_edge.feature.melspectrogram(y=tone(), sr=22050, power=3.0), "power"),
    (lambda: klio_edge.feature.melspectrogram(y=tone(), sr=22050, norm=2.0), "norm"),
    (lambda: klio_edge.feature.melspectrogram(S=np.ones((1025, 4)), sr=22050), "S"),
    (lambda: klio_edge.feature.melspectrogram(y=tone(), sr=22050, n_fft=2047), "n_fft"),
    (lambda: klio_edge.feature.melspectrogram(y=tone(), sr=22050, fmax=20000.0), "fmax"),
    (lambda: klio_edge.feature.mfcc(y=tone(), sr=22050, dct_type=3), "dct_type"),
    (lambda: klio_edge.feature.melspectrogram(y=np.zeros((2, 2, 100), np.float32), sr=22050), "2-D"),
    (lambda: klio_edge.feature.melspectrogram(y=np.arange(100), sr=22050), "floating"),
    (lambda: klio_edge.feature.melspectrogram(y=np.zeros(0, np.float32), sr=22050), "no samples"),
    (lambda: klio_edge.feature.melspectrogram(y=np.array([0.0, np.nan] * 100), sr=22050), "non-finite"),
    (lambda: klio_edge.feature.spectral_rolloff(y=tone(), sr=22050, roll_percent=1.5), "roll_percent"),
    (lambda: klio_edge.power_to_db(np.ones(4), amin=0.0), "amin"),
    (lambda: klio_edge.kaldi_fbank(tone(sr=16000), dither=1.0), "dither"),
    (lambda: klio_edge.whisper_log_mel(tone(), sr=22050), "sr"),
])
def test_what_is_not_supported_is_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_load_refuses_bad_files_clearly(tmp_path):
    with pytest.raises(OSError):
        klio_edge.load(tmp_path / "missing.wav")
    bad = sorted((ROOT / "tests" / "corpus" / "bad").iterdir())
    assert bad
    refused = 0
    for f in bad:
        if f.suffix in (".txt", ".md", ".tsv"):
            continue
        try:
            klio_edge.load(f)
        except ValueError as e:
            assert str(f) in str(e)
            refused += 1
    assert refused >= 3


def klio_binary():
    exe = os.environ.get("KLIO_EDGE_BIN") or shutil.which("klio-edge")
    assert exe, "set KLIO_EDGE_BIN to a klio-edge binary (scripts/test.sh does)"
    return exe


def test_open_run_iterates_a_real_runs_outputs(tmp_path):
    files = ["wav_s16_16k_mono_sound-icons-xylofon.wav", "wav_s16_8k_mono_asterisk-demo-instruct.wav"]
    cfg = tmp_path / "klio.toml"
    cfg.write_text('[decode]\nsample_rate_hz = 16000\n[features]\ncompute = ["log_mel", "mfcc"]\n'
                   "n_fft = 400\nhop_length = 160\nn_mels = 80\n")
    out = tmp_path / "features"
    subprocess.run([klio_binary(), "process", "-q", *[str(CORPUS / f) for f in files],
                    "--config", str(cfg), "--out", str(out)], check=True)
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    run = klio_edge.open_run(out)
    assert len(run) == 2
    assert run.elements == sorted(run.elements)
    seen = []
    for item in run:
        assert sorted(item.names()) == ["log_mel", "mfcc"]
        x = item["log_mel"]
        assert isinstance(x, np.memmap) and x.dtype == np.float32 and x.shape[0] == 80
        assert item.meta["sample_rate_hz"] == 16000
        assert item.ledger["state"] == "done"
        # The arrays are the binary's: equal to computing them here from the same decode.
        y, sr = klio_edge.load(item.source, sr=16000)
        S = klio_edge.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80)
        np.testing.assert_allclose(x, klio_edge.power_to_db(S), atol=1e-3)
        seen.append(item.element)
    assert seen == run.elements
    assert run[seen[1]].element == seen[1]
    with pytest.raises(KeyError):
        run[0]["nope"]
    # Reading changed nothing.
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    with pytest.raises(FileNotFoundError, match="no ledger"):
        klio_edge.open_run(tmp_path)
