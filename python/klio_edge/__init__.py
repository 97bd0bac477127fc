"""klio-edge in Python: the production kernels (klio-dsp) with librosa's API, the binary's
decoder and resampler (klio-decode), and a run's outputs at hand.

    import klio_edge
    y, sr = klio_edge.load("speech.flac", sr=16000)
    S_db = klio_edge.power_to_db(klio_edge.feature.melspectrogram(y=y, sr=sr, n_mels=80))

Every function takes numpy arrays (1-D, or 2-D ``[channels, samples]``; float32 or float64)
and returns float32 in librosa's shapes; a list of signals as ``y`` is computed on all cores.
The computation runs without the GIL.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np

from . import _native, feature
from ._core import Signal, compute, name_of, stft_options, unsupported
from ._run import Item, Run, open_run

__version__ = _native.__version__

__all__ = [
    "feature",
    "load",
    "open_run",
    "power_to_db",
    "stft_magnitude",
    "stft_power",
    "whisper_log_mel",
    "kaldi_fbank",
    "Run",
    "Item",
]


def load(path: Union[str, "os.PathLike[str]"], *, sr: Optional[int] = None, mono: bool = True):
    """Decodes ``path`` exactly as ``klio-edge process`` does (symphonia's demuxers and
    decoders, pure-Rust Opus, mean mixdown, rubato's FFT resampler): ``(y, sr)`` with y
    float32, ``(n,)`` with ``mono`` or ``(channels, n)`` without. ``sr=None`` keeps the file's
    rate (unlike librosa.load, whose default resamples to 22050).

    A file that cannot be read is an ``OSError``; one that cannot be decoded (unknown format,
    truncated, corrupt, too long, ...) a ``ValueError`` saying why."""
    if sr is not None:
        sr = int(sr)
        if sr <= 0:
            raise ValueError(f"sr={sr} must be positive")
    y, rate = _native.load(str(path), sr, bool(mono))
    return (y[0] if mono else y), rate


def power_to_db(S: Any, *, ref: Any = 1.0, amin: float = 1e-10, top_db: Optional[float] = 80.0):
    """librosa.power_to_db over the whole array: ``10 log10(max(S, amin) / ref)``, clamped to
    ``max - top_db``. ``ref`` is a number, ``np.max``, or a callable applied to ``abs(S)``
    (as librosa). float32 out, S's shape."""
    a = np.asarray(S)
    if np.iscomplexobj(a):
        raise ValueError("power_to_db takes real power values; pass np.abs(S) ** 2")
    if ref is np.max or ref is max:
        reference = None
    elif callable(ref):
        reference = float(ref(np.abs(a)))
    else:
        reference = float(ref)
    flat = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    out = _native.power_to_db(flat, reference, float(amin), None if top_db is None else float(top_db))
    return out.reshape(a.shape)


def _stft(feature_name, y, n_fft, hop_length, win_length, window, center, pad_mode, dtype, out):
    if out is not None:
        raise unsupported("out", "<array>", "None")
    if dtype is not None and np.dtype(dtype) != np.float32:
        raise unsupported("dtype", dtype, "float32")
    opts = stft_options(n_fft, hop_length, win_length, window, center, pad_mode)
    return compute(feature_name, y, 22050, **opts)


def stft_magnitude(
    y: Signal,
    *,
    n_fft: int = 2048,
    hop_length: Optional[int] = None,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    dtype: Any = None,
    pad_mode: str = "constant",
    out: Any = None,
):
    """``np.abs(librosa.stft(y, ...))``: (1 + n_fft // 2, frames), float32."""
    return _stft("magnitude", y, n_fft, hop_length, win_length, window, center, pad_mode, dtype, out)


def stft_power(
    y: Signal,
    *,
    n_fft: int = 2048,
    hop_length: Optional[int] = None,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    dtype: Any = None,
    pad_mode: str = "constant",
    out: Any = None,
):
    """``np.abs(librosa.stft(y, ...)) ** 2``: (1 + n_fft // 2, frames), float32."""
    return _stft("power", y, n_fft, hop_length, win_length, window, center, pad_mode, dtype, out)


def whisper_log_mel(y: Signal, *, sr: int = 16000, n_mels: int = 80):
    """Whisper's log-mel front end (openai-whisper's ``log_mel_spectrogram``): 16 kHz, n_fft
    400, hop 160, reflect padding, log10 clamped to ``max - 8`` and scaled ``(x + 4) / 4``.
    (n_mels, frames - 1), float32, as Whisper drops the last frame."""
    if sr != 16000:
        raise unsupported("sr", sr, "16000 (Whisper's rate: resample with load(path, sr=16000))")
    if n_mels not in (80, 128):
        raise unsupported("n_mels", n_mels, "80 or 128 (Whisper's filter banks)")
    opts = stft_options(400, 160, None, "hann", True, "reflect")
    opts.update(n_mels=int(n_mels))
    return compute("whisper_log_mel", y, 16000, **opts)


def kaldi_fbank(
    y: Signal,
    *,
    sr: float = 16000,
    num_mel_bins: int = 23,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    window_type: str = "povey",
    dither: float = 0.0,
    snip_edges: bool = True,
    sample_scale: float = 32768.0,
):
    """Kaldi's log mel filter bank (``compute-fbank-feats``; torchaudio.compliance.kaldi.fbank's
    argument names): ``(frames, num_mel_bins)``, float32, as Kaldi and torchaudio lay it out.
    y in [-1, 1) is multiplied by ``sample_scale`` (32768: Kaldi reads 16-bit PCM as
    integers; pass 1.0 for int16-range y). No dither, edges snipped."""
    if dither != 0.0:
        raise unsupported("dither", dither, "0.0 (deterministic features)")
    if snip_edges is not True:
        raise unsupported("snip_edges", snip_edges, "True")
    fb = dict(
        num_mel_bins=int(num_mel_bins),
        frame_length=float(frame_length),
        frame_shift=float(frame_shift),
        low_freq=float(low_freq),
        high_freq=float(high_freq),
        preemphasis_coefficient=float(preemphasis_coefficient),
        remove_dc_offset=bool(remove_dc_offset),
        round_to_power_of_two=bool(round_to_power_of_two),
        window_type=name_of("window_type", window_type, "'povey' or 'rectangular'"),
        sample_scale=float(sample_scale),
    )
    got = compute("fbank", y, sr, fbank=fb)
    if isinstance(got, list):
        return [np.ascontiguousarray(np.swapaxes(g, -1, -2)) for g in got]
    return np.ascontiguousarray(np.swapaxes(got, -1, -2))
