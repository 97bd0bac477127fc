#!/usr/bin/env python3
"""Generate the librosa parity fixtures in tests/fixtures/librosa/.

Each case decodes one file of tests/corpus/real with librosa (soundfile; no resampling, except
for the cases of tests/fixtures/librosa-resampled/, loaded with `librosa.load(sr=...)`, whose
default resampler is soxr HQ),
computes features with the parameters of its config.toml, and saves them as float32 .npy in
the shape librosa returns. tests/it/librosa_parity.rs runs klio-edge with the same config.toml on
the same file and compares.

    python3 -m venv /tmp/lr && /tmp/lr/bin/pip install librosa==0.11.0 soundfile numpy \
        kaldi-native-fbank
    /tmp/lr/bin/python scripts/make_librosa_fixtures.py

Only lossless sources (WAV, FLAC) are used, so both sides see bit-identical PCM. librosa runs
in float64 (the audio is loaded as float64), so the fixtures are the float64 result rounded to
float32. Whisper's log-mel is computed here with numpy exactly as openai-whisper's
`log_mel_spectrogram` does (its mel filters are librosa's); Kaldi fbank comes from
kaldi-native-fbank (a reimplementation of Kaldi's compute-fbank-feats, dither off).
"""
import json
import pathlib

import kaldi_native_fbank as knf
import librosa
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "real"
OUT = ROOT / "tests" / "fixtures" / "librosa"
# Cases decoded with librosa.load(sr=...): its default resampler, soxr HQ.
OUT_RESAMPLED = ROOT / "tests" / "fixtures" / "librosa-resampled"

CASES = {
    # Whisper-style framing, Slaney mel, 16 kHz mono speech-like material.
    "xylofon-16k-whisper": dict(
        file="wav_s16_16k_mono_sound-icons-xylofon.wav", mono=True,
        n_fft=400, hop_length=160, n_mels=80, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=13, features=["log_mel", "mfcc"]),
    # librosa defaults on a 24-bit FLAC.
    "burp-44k-defaults": dict(
        file="flac_s24_44k1_mono_sonic-pi-misc-burp.flac", mono=True,
        n_fft=2048, hop_length=512, n_mels=128, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=20, features=["log_mel", "mfcc", "power"]),
    # Channels kept, HTK scale without norm, reflect padding, ref=max, fmin/fmax set.
    "shutdown-48k-stereo-htk": dict(
        file="wav_s24_48k_stereo_deepin-system-shutdown.wav", mono=False,
        n_fft=1024, hop_length=256, n_mels=64, htk=True, norm=None, pad_mode="reflect",
        fmin=50.0, fmax=16000.0, ref="max", top_db=60.0, n_mfcc=20, features=["mel", "log_mel"]),
    # f32 WAV mixed down to mono, no top_db clamp.
    "tabla-f32-mixdown": dict(
        file="wav_f32_44k1_stereo_sonic-pi-loop-tabla-f32.wav", mono=True,
        n_fft=2048, hop_length=1024, n_mels=96, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=None, n_mfcc=30, features=["log_mel", "mfcc"]),
    # Whisper's front end: reflect padding, last frame dropped, log10 clamp to max - 8.
    "xylofon-whisper-log-mel": dict(
        file="wav_s16_16k_mono_sound-icons-xylofon.wav", mono=True,
        n_fft=400, hop_length=160, n_mels=80, htk=False, norm="slaney", pad_mode="reflect",
        ref=1.0, top_db=80.0, n_mfcc=13, features=["whisper_log_mel"]),
    # Frame-level descriptors with librosa's defaults (n_fft 2048, hop 512).
    "burp-descriptors": dict(
        file="flac_s24_44k1_mono_sonic-pi-misc-burp.flac", mono=True,
        n_fft=2048, hop_length=512, n_mels=128, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=20,
        features=["rms", "zero_crossing_rate", "spectral_centroid", "spectral_bandwidth",
                  "spectral_rolloff", "spectral_flatness"]),
    # Kaldi fbank, 80 bins, on 16 kHz speech.
    "congrats-kaldi-fbank": dict(
        file="wav_s16_16k_mono_asterisk-demo-congrats-g722dec.wav", mono=True,
        n_fft=400, hop_length=160, n_mels=80, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=13, features=["fbank"], fbank_bins=80),
}


RESAMPLED = {
    # librosa's defaults at its default rate: 44.1 kHz FLAC to 22.05 kHz.
    "burp-44k-to-22k": dict(
        file="flac_s24_44k1_mono_sonic-pi-misc-burp.flac", mono=True, sr=22050,
        n_fft=2048, hop_length=512, n_mels=128, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=20, features=["log_mel", "mfcc"]),
    # 48 kHz stereo to 16 kHz mono speech framing.
    "shutdown-48k-to-16k": dict(
        file="wav_s24_48k_stereo_deepin-system-shutdown.wav", mono=True, sr=16000,
        n_fft=400, hop_length=160, n_mels=80, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=13, features=["log_mel"]),
    # 8 kHz telephone speech up to 16 kHz.
    "instruct-8k-to-16k": dict(
        file="wav_s16_8k_mono_asterisk-demo-instruct.wav", mono=True, sr=16000,
        n_fft=400, hop_length=160, n_mels=80, htk=False, norm="slaney", pad_mode="constant",
        ref=1.0, top_db=80.0, n_mfcc=13, features=["log_mel"]),
}


def whisper_log_mel(y, sr, n_fft, hop, n_mels):
    stft = librosa.stft(y, n_fft=n_fft, hop_length=hop, window="hann", center=True,
                        pad_mode="reflect")
    magnitudes = np.abs(stft[..., :-1]) ** 2
    filters = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float64)
    mel = filters @ magnitudes
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def kaldi_fbank(y, sr, bins):
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = sr
    opts.mel_opts.num_bins = bins
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(sr, (y * 32768.0).tolist())
    fb.input_finished()
    frames = [fb.get_frame(i) for i in range(fb.num_frames_ready)]
    return np.array(frames).T


def descriptors(y, sr, n_fft, hop):
    kw = dict(n_fft=n_fft, hop_length=hop)
    return {
        "rms": librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop),
        "zero_crossing_rate": librosa.feature.zero_crossing_rate(
            y, frame_length=n_fft, hop_length=hop),
        "spectral_centroid": librosa.feature.spectral_centroid(y=y, sr=sr, **kw),
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=sr, **kw),
        "spectral_rolloff": librosa.feature.spectral_rolloff(y=y, sr=sr, **kw),
        "spectral_flatness": librosa.feature.spectral_flatness(y=y, **kw),
    }


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def main():
    cases = [(OUT, n, c) for n, c in CASES.items()]
    cases += [(OUT_RESAMPLED, n, c) for n, c in RESAMPLED.items()]
    for out, name, c in cases:
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        y, sr = librosa.load(CORPUS / c["file"], sr=c.get("sr"), mono=c["mono"],
                             dtype=np.float64)
        fmin, fmax = c.get("fmin", 0.0), c.get("fmax")
        power = np.abs(librosa.stft(y, n_fft=c["n_fft"], hop_length=c["hop_length"],
                                    pad_mode=c["pad_mode"])) ** 2
        mel = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=c["n_fft"], hop_length=c["hop_length"], pad_mode=c["pad_mode"],
            n_mels=c["n_mels"], fmin=fmin, fmax=fmax, htk=c["htk"], norm=c["norm"])
        ref = np.max if c["ref"] == "max" else c["ref"]
        log_mel = librosa.power_to_db(mel, ref=ref, amin=1e-10, top_db=c["top_db"])
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=c["n_mfcc"])
        arrays = {"power": power, "mel": mel, "log_mel": log_mel, "mfcc": mfcc}
        if "whisper_log_mel" in c["features"]:
            arrays["whisper_log_mel"] = whisper_log_mel(
                y, sr, c["n_fft"], c["hop_length"], c["n_mels"])
        if "fbank" in c["features"]:
            arrays["fbank"] = kaldi_fbank(y, sr, c["fbank_bins"])
        if "rms" in c["features"]:
            arrays.update(descriptors(y, sr, c["n_fft"], c["hop_length"]))
        for f in c["features"]:
            # C order: librosa returns Fortran-ordered STFT views, np.save would keep that.
            np.save(d / f"{f}.npy", np.ascontiguousarray(arrays[f], dtype=np.float32))
        lines = [
            f"# librosa {librosa.__version__} parity case {name}: generated by",
            "# scripts/make_librosa_fixtures.py; source file: tests/corpus/real/" + c["file"]
            + (f" (librosa.load(sr={c['sr']}): soxr_hq)" if "sr" in c else ""),
            "[decode]",
            f'sample_rate_hz = {c["sr"]}' if "sr" in c else 'sample_rate_hz = "native"',
            f'channels = {toml_value("mono" if c["mono"] else "keep")}',
            "",
            "[features]",
            f"compute = {toml_value(c['features'])}",
            f"n_fft = {c['n_fft']}",
            f"hop_length = {c['hop_length']}",
            f'pad_mode = {toml_value(c["pad_mode"])}',
            f"n_mels = {c['n_mels']}",
            f"fmin_hz = {float(fmin)!r}",
        ]
        if fmax is not None:
            lines.append(f"fmax_hz = {float(fmax)!r}")
        lines += [
            f'mel_scale = {toml_value("htk" if c["htk"] else "slaney")}',
            f'mel_norm = {toml_value(c["norm"] or "none")}',
            f"db_ref = {toml_value(c['ref'] if c['ref'] == 'max' else float(c['ref']))}",
            f"top_db = {toml_value(c['top_db'] if c['top_db'] is not None else False)}",
            f"n_mfcc = {c['n_mfcc']}",
        ]
        if "fbank_bins" in c:
            lines += ["", "[features.fbank]", f"n_mels = {c['fbank_bins']}"]
        (d / "config.toml").write_text("\n".join(lines) + "\n")
        (d / "source.txt").write_text(c["file"] + "\n")
        print(name, sr, y.shape, {f: arrays[f].shape for f in c["features"]})


if __name__ == "__main__":
    main()
