//! WAV sample formats the shared corpus lacks (u8, s32), written by the test itself: each must
//! decode to the same signal as its 16-bit twin, so their features agree.

mod common;

use common::*;

/// A canonical PCM WAV of `samples` (in [-1, 1]) at 16 kHz mono with `bits` per sample.
fn wav(samples: &[f64], bits: u16) -> Vec<u8> {
    let bytes_per = (bits / 8) as usize;
    let mut data = Vec::with_capacity(samples.len() * bytes_per);
    for &x in samples {
        match bits {
            8 => data.push(((x * 127.0).round() + 128.0) as u8),
            16 => data.extend_from_slice(&((x * 32767.0).round() as i16).to_le_bytes()),
            32 => data.extend_from_slice(&((x * 2147483647.0).round() as i32).to_le_bytes()),
            _ => unreachable!(),
        }
    }
    let rate = 16000u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * bytes_per as u32).to_le_bytes());
    out.extend_from_slice(&(bytes_per as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
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
