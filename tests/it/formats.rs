//! WAV sample formats the test corpus lacks (u8, s32), written by the test itself: each must
//! decode to the same signal as its 16-bit twin, so their features agree.

use crate::common::*;

/// A canonical PCM WAV of `samples` (in [-1, 1]) at 16 kHz mono with `bits` per sample.
fn wav(samples: &[f64], bits: u16) -> Vec<u8> {
    crate::common::wav::pcm(samples, 16000, bits)
}

#[test]
fn u8_and_s32_wav_decode_like_s16() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let x: Vec<f64> = (0..16000)
        .map(|i| 0.5 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16000.0).sin())
        .collect();
    for bits in [8u16, 16, 32] {
        std::fs::write(d.join(format!("tone{bits}.wav")), wav(&x, bits)).unwrap();
    }
    std::fs::write(
        d.join("c.toml"),
        "[decode]\nsample_rate_hz = \"native\"\n[features]\ncompute = [\"mel\"]\nn_fft = 512\nhop_length = 256\nn_mels = 40\n",
    )
    .unwrap();
    let (code, s) = process(
        d,
        &[
            "tone8.wav",
            "tone16.wav",
            "tone32.wav",
            "--out",
            "out",
            "--config",
            "c.toml",
        ],
    );
    assert_eq!((code, count(&s, "done")), (0, 3), "{s}");
    let mel = |bits: u16| {
        let item = item_dirs(&d.join("out"))
            .into_iter()
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("tone{bits}-"))
            })
            .unwrap();
        let meta = read_json(&item.join("meta.json"));
        assert_eq!(meta["bits_per_sample"], bits, "{meta}");
        assert!((meta["duration_s"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        read_npy(&item.join("mel.npy"))
    };
    let (shape16, m16) = mel(16);
    assert_eq!(shape16, vec![40, 1 + 16000 / 256]);
    let peak = m16.iter().cloned().fold(0f32, f32::max);
    for (bits, tol) in [(32u16, 1e-3f32), (8, 2e-2)] {
        let (shape, m) = mel(bits);
        assert_eq!(shape, shape16);
        let worst = m
            .iter()
            .zip(&m16)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= tol * peak,
            "{bits}-bit: max diff {worst} vs peak {peak}"
        );
    }
}

/// Decodes `path` strictly (damage is an error) at its own rate: the samples of channel 0.
fn decode_strict(path: &std::path::Path) -> Result<Vec<f32>, String> {
    use klio_edge::stage::decode::{AudioStream, DecodeConfig, SampleRate};
    let cfg = DecodeConfig {
        sample_rate_hz: SampleRate::Native,
        ..DecodeConfig::default()
    };
    let mut s = AudioStream::open(path, &cfg).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(b) = s.next_block().map_err(|e| e.to_string())? {
        out.extend_from_slice(&b[0]);
    }
    Ok(out)
}

/// WAVs written as streams (`ffmpeg ... -f wav -`: 0xFFFFFFFF as the RIFF and data sizes)
/// decode to their end, not as `truncated` or `too_long`; a WAV whose declared size is
/// really more than it holds is still `truncated`.
#[test]
fn streaming_wavs_are_read_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let x: Vec<f64> = (0..16000).map(|i| (i as f64 * 0.03).sin() * 0.5).collect();
    let plain = wav(&x, 16);
    std::fs::write(d.join("plain.wav"), &plain).unwrap();
    let mut streamed = plain.clone();
    streamed[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(d.join("streamed.wav"), &streamed).unwrap();
    let want = decode_strict(&d.join("plain.wav")).unwrap();
    assert_eq!(want.len(), 16000);
    assert_eq!(decode_strict(&d.join("streamed.wav")).unwrap(), want);
    // What ffmpeg itself writes to a pipe.
    let real = crate::common::real("wav_s16_16k_mono_sound-icons-xylofon.wav");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&real)
        .args(["-c:a", "pcm_s16le", "-f", "wav", "-"])
        .output()
        .expect("ffmpeg (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        &out.stdout[4..8],
        &u32::MAX.to_le_bytes(),
        "ffmpeg wrote a streaming WAV"
    );
    std::fs::write(d.join("ffmpeg.wav"), &out.stdout).unwrap();
    assert_eq!(
        decode_strict(&d.join("ffmpeg.wav")).unwrap(),
        decode_strict(&real).unwrap()
    );
    // A real size that promises more than the file holds is still truncated.
    let mut short = plain.clone();
    short.truncate(44 + 2 * 8000);
    std::fs::write(d.join("short.wav"), &short).unwrap();
    let err = decode_strict(&d.join("short.wav")).unwrap_err();
    assert!(
        err.contains("declares") || err.contains("ends inside"),
        "{err}"
    );
}

/// Every channel of a file as klio-edge decodes it: native rate, channels kept, a damaged
/// stream decoded as far as it goes.
fn decode_all(path: &std::path::Path) -> (u32, Vec<Vec<f32>>) {
    use klio_edge::stage::decode::{Channels, Damaged, DecodeConfig, SampleRate};
    let cfg = DecodeConfig {
        sample_rate_hz: SampleRate::Native,
        channels: Channels::Keep,
        on_damaged: Damaged::Partial,
        ..DecodeConfig::default()
    };
    let mut s = klio_edge::stage::decode::AudioStream::open(path, &cfg)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rate = s.info().sample_rate_hz;
    let mut out: Vec<Vec<f32>> = Vec::new();
    while let Some(block) = s.next_block().unwrap() {
        out.resize(block.len(), Vec::new());
        for (o, b) in out.iter_mut().zip(block) {
            o.extend_from_slice(b);
        }
    }
    (rate, out)
}

/// Gapless decoding: MP4 edit lists (AAC priming and padding) and MP3 LAME delay/padding are
/// applied, so every M4A and MP3 of the corpus decodes to exactly the samples ffmpeg's
/// default decode gives (its count, and its values to within the decoders' rounding).
#[test]
fn m4a_and_mp3_decode_to_ffmpegs_samples() {
    let corpus = crate::common::corpus().join("real");
    let mut names: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".m4a") || n.ends_with(".mp3"))
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n.ends_with(".m4a")), "{names:?}");
    for name in names {
        let path = corpus.join(&name);
        let (_, ours) = decode_all(&path);
        let o = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "f32le", "-c:a", "pcm_f32le", "-"])
            .output()
            .expect("ffmpeg (scripts/test.sh installs it)");
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let theirs: Vec<f32> = o
            .stdout
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let ch = ours.len();
        assert_eq!(
            ours[0].len(),
            theirs.len() / ch,
            "{name}: samples per channel, klio-edge vs ffmpeg"
        );
        let (mut signal, mut noise) = (0f64, 0f64);
        for (c, samples) in ours.iter().enumerate() {
            for (i, &v) in samples.iter().enumerate() {
                let t = theirs[i * ch + c];
                signal += f64::from(t) * f64::from(t);
                noise += f64::from(v - t) * f64::from(v - t);
            }
        }
        let snr = 10.0 * (signal / noise.max(1e-30)).log10();
        assert!(
            snr > 60.0,
            "{name}: SNR {snr:.1} dB against ffmpeg (misaligned?)"
        );
    }
}

/// The pure-Rust Opus decoder against libopus (`opusdec` of Debian's opus-tools, float
/// output at 48 kHz, which applies the same pre-skip and end trimming) on every Opus file of
/// the corpus, the truncated one included: the same number of samples, and the difference
/// far below what anyone hears.
#[test]
fn opus_decodes_like_libopus_on_every_opus_file_of_the_corpus() {
    let opusdec = ["opusdec", "/usr/bin/opusdec"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("opusdec (Debian's opus-tools, libopus) is needed: scripts/test.sh installs it");
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<std::path::PathBuf> = ["real", "bad"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(corpus().join(sub)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "opus"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        let wav = dir.path().join("ref.wav");
        let o = std::process::Command::new(opusdec)
            .args(["--quiet", "--float", "--rate", "48000"])
            .arg(f)
            .arg(&wav)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "opusdec {}: {}",
            f.display(),
            stderr(&o)
        );
        let (rate, ours) = decode_all(f);
        let (ref_rate, reference) = decode_all(&wav);
        assert_eq!(
            (rate, ours.len()),
            (ref_rate, reference.len()),
            "{}",
            f.display()
        );
        // Both decode in float: samples past full scale (loud masters) are compared as they are.
        let (mut signal, mut noise, mut worst, mut clipped) = (0f64, 0f64, 0f32, 0usize);
        let (mut frames, mut poor) = (0usize, 0usize);
        for (a, b) in ours.iter().zip(&reference) {
            assert_eq!(a.len(), b.len(), "{}: samples per channel", f.display());
            clipped += b.iter().filter(|y| y.abs() > 1.0).count();
            // 20 ms frames whose own SNR is under 40 dB.
            for (fa, fb) in a.chunks(960).zip(b.chunks(960)) {
                let s: f64 = fb.iter().map(|y| (*y as f64).powi(2)).sum();
                let n: f64 = fa
                    .iter()
                    .zip(fb)
                    .map(|(x, y)| ((x - *y) as f64).powi(2))
                    .sum();
                frames += 1;
                poor += usize::from(n > 1e-4 * s.max(1e-12));
                signal += s;
                noise += n;
            }
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - *y).abs());
            }
        }
        let snr_db = 10.0 * (signal / noise.max(1e-30)).log10();
        eprintln!(
            "{}: {} samples x {} channels; SNR vs libopus {snr_db:.1} dB, max |diff| {worst:.1e}, \
             {poor} of {frames} 20 ms frames under 40 dB, {clipped} reference samples past full scale",
            f.file_name().unwrap().to_string_lossy(),
            ours[0].len(),
            ours.len()
        );
        assert!(
            snr_db > 100.0 && worst < 1e-5 && poor == 0,
            "{}: SNR {snr_db:.1} dB, max diff {worst}, {poor} of {frames} frames under 40 dB",
            f.display()
        );
    }
}
