"""librosa.feature's functions on klio-dsp's kernels: the same keyword names, defaults and
shapes, float32 out. Pass a list of signals as ``y`` to compute them all in parallel (a list
comes back). What klio-dsp does not compute (``S=`` input, other windows, DCT types, ...) is
a ``ValueError`` naming the argument, never a silent difference."""

from __future__ import annotations

from typing import Any, Optional

from ._core import Signal, check_mel, compute, name_of, stft_options, unsupported

__all__ = [
    "melspectrogram",
    "mfcc",
    "rms",
    "zero_crossing_rate",
    "spectral_centroid",
    "spectral_bandwidth",
    "spectral_rolloff",
    "spectral_flatness",
]


def _no_s(S: Any) -> None:
    if S is not None:
        raise unsupported("S", "<array>", "pass the signal as y=")


def _mel_options(power, n_mels=128, fmin=0.0, fmax=None, htk=False, norm="slaney", dtype=None, **rest):
    if rest:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(rest))}")
    if norm is not None:
        norm = name_of("norm", norm, "'slaney' or None")
    if dtype is not None and dtype != "float32" and getattr(dtype, "__name__", None) != "float32":
        raise unsupported("dtype", dtype, "float32")
    return dict(
        power=float(power),
        n_mels=int(n_mels),
        fmin=float(fmin),
        fmax=None if fmax is None else float(fmax),
        htk=bool(htk),
        norm=norm,
    )


def melspectrogram(
    *,
    y: Optional[Signal] = None,
    sr: float = 22050,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    power: float = 2.0,
    **kwargs: Any,
):
    """librosa.feature.melspectrogram: (n_mels, frames), float32. ``kwargs``: n_mels, fmin,
    fmax, htk, norm ('slaney' or None), as librosa.filters.mel."""
    _no_s(S)
    check_mel(n_fft)
    opts = stft_options(n_fft, hop_length, win_length, window, center, pad_mode)
    opts.update(_mel_options(power, **kwargs))
    return compute("mel", y, sr, **opts)


def mfcc(
    *,
    y: Optional[Signal] = None,
    sr: float = 22050,
    S: Any = None,
    n_mfcc: int = 20,
    dct_type: int = 2,
    norm: Optional[str] = "ortho",
    lifter: float = 0,
    mel_norm: Optional[str] = "slaney",
    **kwargs: Any,
):
    """librosa.feature.mfcc from y: the DCT-II (ortho) of power_to_db(melspectrogram(y)) with
    power_to_db's defaults (ref 1.0, amin 1e-10, top_db 80). (n_mfcc, frames), float32."""
    _no_s(S)
    if dct_type != 2:
        raise unsupported("dct_type", dct_type, "2")
    if norm != "ortho":
        raise unsupported("norm", norm, "'ortho'")
    if lifter < 0:
        raise ValueError(f"lifter={lifter} must be non-negative")
    # melspectrogram's STFT arguments, at its defaults unless given.
    stft = dict(n_fft=2048, hop_length=512, win_length=None, window="hann", center=True, pad_mode="constant")
    stft.update({k: kwargs.pop(k) for k in list(stft) if k in kwargs})
    power = kwargs.pop("power", 2.0)
    check_mel(stft["n_fft"])
    opts = stft_options(**stft)
    opts.update(_mel_options(power, norm=mel_norm, **kwargs))
    opts.update(n_mfcc=int(n_mfcc), lifter=float(lifter))
    return compute("mfcc", y, sr, **opts)


def _frame_options(frame_length, hop_length, center, pad_mode):
    return stft_options(frame_length, hop_length, None, "hann", center, pad_mode)


def rms(
    *,
    y: Optional[Signal] = None,
    S: Any = None,
    frame_length: int = 2048,
    hop_length: int = 512,
    center: bool = True,
    pad_mode: str = "constant",
    dtype: Any = None,
):
    """librosa.feature.rms from y: (1, frames), float32."""
    _no_s(S)
    if pad_mode != "constant":
        raise unsupported("pad_mode", pad_mode, "'constant' (librosa's default)")
    opts = _frame_options(frame_length, hop_length, center, pad_mode)
    return compute("rms", y, 22050, **opts)


def zero_crossing_rate(
    y: Signal,
    *,
    frame_length: int = 2048,
    hop_length: int = 512,
    center: bool = True,
    **kwargs: Any,
):
    """librosa.feature.zero_crossing_rate with librosa's defaults (threshold 1e-10,
    zero_pos=True, edge padding): (1, frames), float32."""
    for k, v in kwargs.items():
        ok = {"threshold": 1e-10, "ref_magnitude": None, "pad": False, "zero_pos": True, "axis": -1}
        if k not in ok:
            raise TypeError(f"unexpected keyword argument {k!r}")
        if v != ok[k]:
            raise unsupported(k, v, f"{ok[k]!r} (librosa's default)")
    opts = _frame_options(frame_length, hop_length, center, "edge")
    return compute("zero_crossing_rate", y, 22050, **opts)


def _spectral(feature, y, sr, S, freq, n_fft, hop_length, win_length, window, center, pad_mode, **extra):
    _no_s(S)
    if freq is not None:
        raise unsupported("freq", "<array>", "None (the FFT bins' frequencies)")
    opts = stft_options(n_fft, hop_length, win_length, window, center, pad_mode)
    opts.update(extra)
    return compute(feature, y, sr, **opts)


def spectral_centroid(
    *,
    y: Optional[Signal] = None,
    sr: float = 22050,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = 512,
    freq: Any = None,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "constant",
):
    """librosa.feature.spectral_centroid: (1, frames) in Hz, float32."""
    return _spectral("spectral_centroid", y, sr, S, freq, n_fft, hop_length, win_length, window, center, pad_mode)


def spectral_bandwidth(
    *,
    y: Optional[Signal] = None,
    sr: float = 22050,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    freq: Any = None,
    centroid: Any = None,
    norm: bool = True,
    p: float = 2,
):
    """librosa.feature.spectral_bandwidth (p=2, norm=True): (1, frames) in Hz, float32."""
    if centroid is not None:
        raise unsupported("centroid", "<array>", "None (computed from the same frames)")
    if norm is not True:
        raise unsupported("norm", norm, "True")
    if p != 2:
        raise unsupported("p", p, "2")
    return _spectral("spectral_bandwidth", y, sr, S, freq, n_fft, hop_length, win_length, window, center, pad_mode)


def spectral_rolloff(
    *,
    y: Optional[Signal] = None,
    sr: float = 22050,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    freq: Any = None,
    roll_percent: float = 0.85,
):
    """librosa.feature.spectral_rolloff: (1, frames) in Hz, float32."""
    if not 0.0 < roll_percent < 1.0:
        raise ValueError(f"roll_percent={roll_percent} must lie in (0, 1)")
    return _spectral(
        "spectral_rolloff", y, sr, S, freq, n_fft, hop_length, win_length, window, center, pad_mode,
        roll_percent=float(roll_percent),
    )


def spectral_flatness(
    *,
    y: Optional[Signal] = None,
    S: Any = None,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: Optional[int] = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "constant",
    amin: float = 1e-10,
    power: float = 2.0,
):
    """librosa.feature.spectral_flatness (amin 1e-10, power 2): (1, frames), float32."""
    if amin != 1e-10:
        raise unsupported("amin", amin, "1e-10")
    if power != 2.0:
        raise unsupported("power", power, "2.0")
    return _spectral("spectral_flatness", y, 22050, S, None, n_fft, hop_length, win_length, window, center, pad_mode)
