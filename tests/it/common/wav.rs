//! WAV files written by the tests (formats the corpus lacks, tones of any length): the one
//! WAV writer of the test suite.

use std::path::Path;

/// A canonical WAV (44-byte header): mono, `format` 1 (PCM) or 3 (IEEE float).
fn wav(format: u16, bits: u16, rate: u32, data: &[u8]) -> Vec<u8> {
    let bytes_per = u32::from(bits / 8);
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * bytes_per).to_le_bytes());
    out.extend_from_slice(&(bytes_per as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Integer PCM of `samples` (in [-1, 1]) with 8 (unsigned), 16 or 32 bits per sample.
pub fn pcm(samples: &[f64], rate: u32, bits: u16) -> Vec<u8> {
    let mut data = Vec::with_capacity(samples.len() * usize::from(bits / 8));
    for &x in samples {
        match bits {
            8 => data.push(((x * 127.0).round() + 128.0) as u8),
            16 => data.extend_from_slice(&((x * 32767.0).round() as i16).to_le_bytes()),
            32 => data.extend_from_slice(&((x * 2147483647.0).round() as i32).to_le_bytes()),
            _ => panic!("{bits} bits per sample: 8, 16 or 32"),
        }
    }
    wav(1, bits, rate, &data)
}

/// 32-bit float samples, as they are (NaN and infinities included).
pub fn float32(samples: &[f32], rate: u32) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav(3, 32, rate, &data)
}

/// `seconds` of a tone at 0.3 of full scale whose pitch depends on `seed`.
pub fn tone(seconds: f64, rate: u32, seed: u32) -> Vec<f64> {
    let n = (seconds * f64::from(rate)) as u32;
    let f = 200.0 + 10.0 * f64::from(seed % 100);
    (0..n)
        .map(|i| 0.3 * (2.0 * std::f64::consts::PI * f * f64::from(i) / f64::from(rate)).sin())
        .collect()
}

/// Writes a 16-bit mono WAV of `seconds` of a tone whose pitch depends on `seed`.
pub fn write_wav(path: &Path, seconds: f64, rate: u32, seed: u32) {
    std::fs::write(path, pcm(&tone(seconds, rate, seed), rate, 16)).unwrap();
}
