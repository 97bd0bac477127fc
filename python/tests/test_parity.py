"""Every function against librosa 0.11 on the real corpus, with the Rust parity test's bounds
(tests/it/librosa_parity.rs): librosa computes in float64 from the same samples, klio_edge in
float32."""

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

import klio_edge

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "real"
FIXTURES = ROOT / "tests" / "fixtures" / "librosa"

CASES = {
    "xylofon-16k": dict(
        file="wav_s16_16k_mono_sound-icons-xylofon.wav", mono=True,
        n_fft=400, hop_length=160, n_mels=80, htk=False, norm="slaney", pad_mode="constant",
        fmin=0.0, fmax=None, ref=1.0, top_db=80.0, n_mfcc=13),
    "burp-44k-defaults": dict(
        file="flac_s24_44k1_mono_sonic-pi-misc-burp.flac", mono=True,
        n_fft=2048, hop_length=512, n_mels=128, htk=False, norm="slaney", pad_mode="constant",
        fmin=0.0, fmax=None, ref=1.0, top_db=80.0, n_mfcc=20),
    "shutdown-48k-stereo-htk": dict(
        file="wav_s24_48k_stereo_deepin-system-shutdown.wav", mono=False,
        n_fft=1024, hop_length=256, n_mels=64, htk=True, norm=None, pad_mode="reflect",
        fmin=50.0, fmax=16000.0, ref="max", top_db=60.0, n_mfcc=20),
    "tabla-f32-mixdown": dict(
        file="wav_f32_44k1_stereo_sonic-pi-loop-tabla-f32.wav", mono=True,
        n_fft=2048, hop_length=1024, n_mels=96, htk=False, norm="slaney", pad_mode="constant",
        fmin=0.0, fmax=None, ref=1.0, top_db=None, n_mfcc=30),
}


def load(case):
    y, sr = klio_edge.load(CORPUS / case["file"], mono=case["mono"])
    return y, sr


def close_rel(name, want, got, rel):
    """|diff| <= rel * max|want| (mel, power, mfcc, rms, centroid, bandwidth)."""
    assert got.shape == want.shape, f"{name}: {got.shape} vs {want.shape}"
    assert got.dtype == np.float32, f"{name}: {got.dtype}"
    bound = rel * np.abs(want).max()
    worst = np.abs(got.astype(np.float64) - want).max()
    assert worst <= bound, f"{name}: max |diff| {worst:.3e} > {bound:.3e}"


def close_db(name, want, got, db=1.0):
    """log-mel bounds: <= 1e-3 dB within 60 dB of the maximum, <= 1e-2 dB below; mean 5e-5."""
    assert got.shape == want.shape, f"{name}: {got.shape} vs {want.shape}"
    d = np.abs(got.astype(np.float64) - want)
    loud = want >= want.max() - 60.0 * db
    assert d[loud].max() <= 1e-3 * db, f"{name}: loud max {d[loud].max():.3e}"
    if (~loud).any():
        assert d[~loud].max() <= 1e-2 * db, f"{name}: quiet max {d[~loud].max():.3e}"
    assert d.mean() <= 5e-5 * db, f"{name}: mean {d.mean():.3e}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_mel_log_mel_mfcc_and_power_match_librosa(name):
    c = CASES[name]
    y, sr = load(c)
    y64 = y.astype(np.float64)
    stft = dict(n_fft=c["n_fft"], hop_length=c["hop_length"], pad_mode=c["pad_mode"])
    mel_kw = dict(n_mels=c["n_mels"], fmin=c["fmin"], fmax=c["fmax"], htk=c["htk"], norm=c["norm"])
    want_mel = librosa.feature.melspectrogram(y=y64, sr=sr, **stft, **mel_kw)
    got_mel = klio_edge.feature.melspectrogram(y=y, sr=sr, **stft, **mel_kw)
    close_rel(f"{name}/mel", want_mel, got_mel, 1e-5)

    ref = np.max if c["ref"] == "max" else c["ref"]
    want_db = librosa.power_to_db(want_mel, ref=ref, top_db=c["top_db"])
    # power_to_db alone, on librosa's own mel: the same formula over the whole array.
    close_db(f"{name}/power_to_db", want_db,
             klio_edge.power_to_db(want_mel.astype(np.float32), ref=ref, top_db=c["top_db"]))
    close_db(f"{name}/log_mel", want_db, klio_edge.power_to_db(got_mel, ref=ref, top_db=c["top_db"]))

    if c["ref"] == 1.0 and c["top_db"] == 80.0:
        # mfcc(y=) is mfcc(S=power_to_db(melspectrogram(y))) with power_to_db's defaults.
        # (mfcc's `norm` is the DCT's; the mel filters' is `mel_norm`.)
        kw = dict(mel_kw, mel_norm=mel_kw["norm"])
        del kw["norm"]
        want = librosa.feature.mfcc(y=y64, sr=sr, n_mfcc=c["n_mfcc"], **stft, **kw)
        got = klio_edge.feature.mfcc(y=y, sr=sr, n_mfcc=c["n_mfcc"], **stft, **kw)
        close_rel(f"{name}/mfcc", want, got, 1e-5)

    want_power = np.abs(librosa.stft(y64, **stft)) ** 2
    close_rel(f"{name}/power", want_power, klio_edge.stft_power(y, **stft), 1e-5)
    close_rel(f"{name}/magnitude", np.sqrt(want_power), klio_edge.stft_magnitude(y, **stft), 1e-5)


def test_descriptors_match_librosa():
    y, sr = klio_edge.load(CORPUS / "flac_s24_44k1_mono_sonic-pi-misc-burp.flac")
    y64 = y.astype(np.float64)
    kw = dict(n_fft=2048, hop_length=512)
    for f in ("spectral_centroid", "spectral_bandwidth"):
        want = getattr(librosa.feature, f)(y=y64, sr=sr, **kw)
        close_rel(f, want, getattr(klio_edge.feature, f)(y=y, sr=sr, **kw), 1e-5)
    close_rel("rms", librosa.feature.rms(y=y64, frame_length=2048, hop_length=512),
              klio_edge.feature.rms(y=y, frame_length=2048, hop_length=512), 1e-5)

    want = librosa.feature.zero_crossing_rate(y64, frame_length=2048, hop_length=512)
    got = klio_edge.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want.astype(np.float32))

    want = librosa.feature.spectral_flatness(y=y64, **kw)
    got = klio_edge.feature.spectral_flatness(y=y, **kw)
    assert got.shape == want.shape
    assert (np.abs(got - want) <= 1e-3 * np.abs(want)).all()

    want = librosa.feature.spectral_rolloff(y=y64, sr=sr, **kw)
    got = klio_edge.feature.spectral_rolloff(y=y, sr=sr, **kw)
    assert got.shape == want.shape
    off = np.abs(got - want) > 1e-3 * np.maximum(np.abs(want), 1.0)
    one_bin = np.abs(np.abs(got - want) - sr / 2048) <= 1e-3 * np.maximum(np.abs(want), 1.0)
    assert (one_bin | ~off).all(), "rolloff differs by more than one bin"
    assert off.sum() <= 0.02 * off.size, f"{off.sum()} frames of {off.size} a bin away"


def test_whisper_log_mel_matches_whisper_front_end():
    y, sr = klio_edge.load(CORPUS / "wav_s16_16k_mono_sound-icons-xylofon.wav")
    y64 = y.astype(np.float64)
    stft = librosa.stft(y64, n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, dtype=np.float64) @ (np.abs(stft[..., :-1]) ** 2)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    want = (np.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0
    close_db("whisper_log_mel", want, klio_edge.whisper_log_mel(y, sr=sr), db=1.0 / 40.0)


def test_kaldi_fbank_matches_kaldi_native_fbank():
    # The reference is kaldi-native-fbank's output stored by scripts/make_librosa_fixtures.py
    # ([bins][frames]); klio_edge returns Kaldi's [frames][bins].
    want = np.load(FIXTURES / "congrats-kaldi-fbank" / "fbank.npy").T.astype(np.float64)
    y, sr = klio_edge.load(CORPUS / "wav_s16_16k_mono_asterisk-demo-congrats-g722dec.wav")
    got = klio_edge.kaldi_fbank(y, sr=sr, num_mel_bins=80)
    assert got.shape == want.shape and got.dtype == np.float32
    top = want.max(axis=1, keepdims=True)
    loud = want >= top - 60.0 * np.log(10.0) / 10.0
    d = np.abs(got - want)
    assert d[loud].max() <= 2e-3
    energy = np.abs(np.exp(got.astype(np.float64)) - np.exp(want)) / np.exp(top)
    assert energy[~loud].max(initial=0.0) <= 1e-8


@pytest.mark.parametrize("name", [
    "wav_s16_16k_mono_sound-icons-xylofon.wav",
    "flac_s24_44k1_mono_sonic-pi-misc-burp.flac",
    "wav_s24_48k_stereo_deepin-system-shutdown.wav",
    "wav_f32_44k1_stereo_sonic-pi-loop-tabla-f32.wav",
])
def test_load_gives_the_lossless_files_samples(name):
    want, rate = soundfile.read(CORPUS / name, dtype="float32", always_2d=True)
    y, sr = klio_edge.load(CORPUS / name, mono=False)
    assert sr == rate
    assert y.dtype == np.float32 and y.shape == want.T.shape
    np.testing.assert_array_equal(y, want.T)
    mono, _ = klio_edge.load(CORPUS / name)
    assert mono.shape == (want.shape[0],)
    np.testing.assert_allclose(mono, want.mean(axis=1), atol=1e-6)


def test_resampled_load_is_close_to_librosa_soxr():
    # The Rust test's bound for resampled input (tests/it/librosa_parity.rs): log-mel of the
    # loud values in bands below 0.9 of the lower Nyquist within 0.1 dB, mean within 0.01 dB.
    path = CORPUS / "wav_s24_48k_stereo_deepin-system-shutdown.wav"
    ours, sr = klio_edge.load(path, sr=16000)
    theirs, _ = librosa.load(path, sr=16000, mono=True, dtype=np.float64)
    assert sr == 16000 and abs(len(ours) - len(theirs)) <= 1
    n = min(len(ours), len(theirs))
    kw = dict(sr=16000, n_fft=400, hop_length=160, n_mels=80)
    a = librosa.power_to_db(librosa.feature.melspectrogram(y=theirs[:n], **kw))
    b = klio_edge.power_to_db(klio_edge.feature.melspectrogram(y=ours[:n], **kw))
    centres = librosa.mel_frequencies(n_mels=82, fmax=8000.0)[1:-1]
    low = centres <= 0.9 * 8000.0
    loud = a >= a.max() - 60.0
    d = np.abs(a - b)[low[:, None] & loud]
    assert d.max() <= 0.1 and d.mean() <= 0.01, (d.max(), d.mean())
