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
