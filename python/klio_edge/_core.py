"""What every feature function shares: argument checks, the call into Rust, the shapes."""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from . import _native

Signal = Union[np.ndarray, Sequence[np.ndarray]]

# librosa's defaults, which each wrapper overrides with its own arguments.
_DEFAULTS = dict(
    n_fft=2048,
    hop_length=512,
    win_length=2048,
    window="hann",
    center=True,
    pad_mode="constant",
    power=2.0,
    n_mels=128,
    fmin=0.0,
    fmax=None,
    htk=False,
    norm="slaney",
    n_mfcc=20,
    lifter=0.0,
    reference=1.0,
    amin=1e-10,
    top_db=80.0,
    roll_percent=0.85,
    fbank=None,
)


def unsupported(name: str, value: Any, supported: str) -> ValueError:
    return ValueError(f"{name}={value!r} is not supported by klio_edge: {supported}")


def _as_signal(y: Any, what: str = "y") -> np.ndarray:
    """One signal as a C-contiguous float32 [channels, samples] array, and its leading shape."""
    if y is None:
        raise ValueError(f"{what} is required (klio_edge computes from the signal, not from S=)")
    a = np.asarray(y)
    kind = a.dtype.kind
    if kind == "c":
        raise ValueError(f"{what} must be real audio, not {a.dtype}")
    if kind != "f":
        raise ValueError(
            f"{what} must be floating-point audio (float32 or float64), not {a.dtype}"
        )
    if a.ndim not in (1, 2):
        raise ValueError(
            f"{what} must be 1-D [samples] or 2-D [channels, samples], not {a.ndim}-D {a.shape}"
        )
    if a.shape[-1] == 0:
        raise ValueError(f"{what} holds no samples")
    return a


def name_of(arg: str, value: Any, supported: str) -> str:
    """A name-valued argument (a window, a pad mode, a norm): the Rust side checks which names
    it knows and says so; tuples, arrays and callables stop here."""
    if isinstance(value, str):
        return value
    raise unsupported(arg, value, supported)


def stft_options(n_fft, hop_length, win_length, window, center, pad_mode) -> dict:
    n_fft = int(n_fft)
    win_length = n_fft if win_length is None else int(win_length)
    if hop_length is None:
        hop_length = win_length // 4
    return dict(
        n_fft=n_fft,
        hop_length=int(hop_length),
        win_length=win_length,
        window=name_of("window", window, "'hann', 'hamming' or 'boxcar'"),
        center=bool(center),
        pad_mode=name_of("pad_mode", pad_mode, "'constant', 'reflect' or 'edge'"),
    )


def compute(feature: str, y: Signal, sr: float, **options: Any):
    """`feature` of y (one array) or of each of a list of arrays (computed in parallel).

    One array of shape (n,) gives (dim, frames), (c, n) gives (c, dim, frames), as librosa;
    a list gives a list of those.
    """
    opts = dict(_DEFAULTS)
    opts.update(options)
    batch = isinstance(y, (list, tuple))
    items = list(y) if batch else [y]
    signals = []
    leading = []
    for i, item in enumerate(items):
        a = _as_signal(item, f"y[{i}]" if batch else "y")
        leading.append(a.ndim == 2)
        signals.append(np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=np.float32))
    if not signals:
        return []
    out = _native.compute(signals, feature, float(sr), opts)
    shaped = [o if lead else o[0] for o, lead in zip(out, leading)]
    return shaped if batch else shaped[0]


def check_mel(n_fft: int) -> None:
    if int(n_fft) % 2:
        # librosa's mel filters place bins at rfftfreq (k * sr / n_fft); klio-dsp's at
        # k * (sr/2) / (n_bins - 1): the same for even n_fft only.
        raise unsupported("n_fft", n_fft, "an even FFT size for mel features")
