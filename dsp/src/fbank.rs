//! Kaldi-style filterbank features, as `compute-fbank-feats` (and torchaudio's
//! `compliance.kaldi.fbank`) compute them with dithering off: frames cut without centre
//! padding ("snip edges"), DC offset removed, pre-emphasis, Povey window, zero-padded to a
//! power of two, power spectrum, triangular bands on Kaldi's mel scale (`1127 ln(1 + f/700)`,
//! triangles in the mel domain), natural log with a floor.

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{invalid, DspError};
use crate::kernels::{Kernels, Span, SparseRows};
use crate::stft::{complex_as_f32, PadMode, StftConfig};
use crate::window::{window, WindowKind};

/// Kaldi fbank options; defaults are Kaldi's, except that dithering is always off and samples
/// in [-1, 1) are scaled by 32768 first, so 16-bit audio gives Kaldi's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct FbankConfig {
    /// Frame length in milliseconds. Default 25.
    pub frame_length_ms: f64,
    /// Frame shift in milliseconds. Default 10.
    pub frame_shift_ms: f64,
    /// Number of triangular bins. Default 23 (Kaldi's; ASR front ends often use 80).
    pub n_mels: usize,
    /// Lowest band edge in Hz. Default 20.
    pub low_freq_hz: f64,
    /// Highest band edge in Hz; zero or negative counts down from the Nyquist frequency.
    /// Default 0.
    pub high_freq_hz: f64,
    /// Pre-emphasis coefficient. Default 0.97.
    pub preemphasis: f32,
    /// Subtract each frame's mean first. Default true.
    pub remove_dc_offset: bool,
    /// Window. Default Povey.
    pub window: WindowKind,
    /// Zero-pad frames to the next power of two before the FFT. Default true.
    pub round_to_power_of_two: bool,
    /// Factor applied to samples first. Default 32768 (Kaldi reads 16-bit PCM as integers).
    pub sample_scale: f32,
    /// Floor applied before the log. Default `f32::EPSILON` (Kaldi's).
    pub log_floor: f32,
}

impl Default for FbankConfig {
    fn default() -> Self {
        FbankConfig {
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            n_mels: 23,
            low_freq_hz: 20.0,
            high_freq_hz: 0.0,
            preemphasis: 0.97,
            remove_dc_offset: true,
            window: WindowKind::Povey,
            round_to_power_of_two: true,
            sample_scale: 32768.0,
            log_floor: f32::EPSILON,
        }
    }
}

fn kaldi_mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// Precomputed window, FFT and bands for one sample rate.
pub struct FbankPlan {
    cfg: FbankConfig,
    frame_length: usize,
    frame_shift: usize,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    rows: SparseRows,
    n_bins: usize,
    k: Kernels,
}

impl std::fmt::Debug for FbankPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FbankPlan").field("cfg", &self.cfg).finish()
    }
}

/// Per-worker buffers for [`FbankPlan::process`].
pub struct FbankScratch {
    frame: Vec<f32>,
    spectrum: Vec<Complex32>,
    fft: Vec<Complex32>,
    power: Vec<f32>,
}

impl FbankPlan {
    /// Validates `cfg` for audio at `sample_rate_hz` and builds the plan.
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key at fault (keys are prefixed `fbank.`).
    pub fn new(cfg: &FbankConfig, sample_rate_hz: f64, k: Kernels) -> Result<Self, DspError> {
        // Kaldi truncates: static_cast<int32>(samp_freq * 0.001 * frame_length_ms).
        let samples = |ms: f64| (sample_rate_hz * 0.001 * ms + 1e-9).floor();
        let frame_length = samples(cfg.frame_length_ms);
        let frame_shift = samples(cfg.frame_shift_ms);
        if !(2.0..=1_048_576.0).contains(&frame_length) {
            return Err(invalid(
                "fbank.frame_length_ms",
                format!("{} ms gives {frame_length} samples", cfg.frame_length_ms),
            ));
        }
        if !(1.0..=1_048_576.0).contains(&frame_shift) {
            return Err(invalid(
                "fbank.frame_shift_ms",
                format!("{} ms gives {frame_shift} samples", cfg.frame_shift_ms),
            ));
        }
        let (frame_length, frame_shift) = (frame_length as usize, frame_shift as usize);
        if cfg.n_mels < 3 || cfg.n_mels > 4096 {
            return Err(invalid(
                "fbank.n_mels",
                format!("{} is not in 3..=4096", cfg.n_mels),
            ));
        }
        if !(cfg.preemphasis.is_finite() && (0.0..=1.0).contains(&cfg.preemphasis)) {
            return Err(invalid("fbank.preemphasis", "must be in 0..=1"));
        }
        if !(cfg.sample_scale.is_finite() && cfg.sample_scale > 0.0) {
            return Err(invalid("fbank.sample_scale", "must be > 0"));
        }
        if !(cfg.log_floor.is_normal() && cfg.log_floor > 0.0) {
            return Err(invalid(
                "fbank.log_floor",
                "must be a positive normal number",
            ));
        }
        let nyquist = sample_rate_hz / 2.0;
        let high = if cfg.high_freq_hz > 0.0 {
            cfg.high_freq_hz
        } else {
            nyquist + cfg.high_freq_hz
        };
        if !(cfg.low_freq_hz >= 0.0 && high > cfg.low_freq_hz && high <= nyquist + 1e-9) {
            return Err(invalid(
                "fbank.high_freq_hz",
                format!(
                    "bands {} Hz .. {high} Hz must satisfy 0 <= low < high <= Nyquist ({nyquist} Hz)",
                    cfg.low_freq_hz
                ),
            ));
        }
        let padded = if cfg.round_to_power_of_two {
            frame_length.next_power_of_two()
        } else {
            frame_length
        };
        let n_fft_bins = padded / 2;
        let bin_width = sample_rate_hz / padded as f64;
        let (mel_low, mel_high) = (kaldi_mel(cfg.low_freq_hz), kaldi_mel(high));
        let delta = (mel_high - mel_low) / (cfg.n_mels + 1) as f64;
        let mut spans = Vec::with_capacity(cfg.n_mels);
        let mut weights = Vec::new();
        for b in 0..cfg.n_mels {
            let left = mel_low + b as f64 * delta;
            let centre = left + delta;
            let right = centre + delta;
            let mut start = None;
            let mut w = Vec::new();
            for i in 0..n_fft_bins {
                let mel = kaldi_mel(bin_width * i as f64);
                if mel > left && mel < right {
                    let weight = if mel <= centre {
                        (mel - left) / (centre - left)
                    } else {
                        (right - mel) / (right - centre)
                    };
                    let s = *start.get_or_insert(i);
                    w.resize(i - s, 0.0);
                    w.push(weight as f32);
                }
            }
            spans.push(Span {
                start: start.unwrap_or(0),
                len: w.len(),
                offset: weights.len(),
            });
            weights.extend_from_slice(&w);
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(padded);
        Ok(FbankPlan {
            window: window(cfg.window, frame_length, frame_length),
            cfg: cfg.clone(),
            frame_length,
            frame_shift,
            fft,
            rows: SparseRows::new(spans, weights),
            n_bins: padded / 2 + 1,
            k,
        })
    }

    /// Number of bins per frame.
    pub fn n_mels(&self) -> usize {
        self.cfg.n_mels
    }

    /// The framing: `frame_length` samples every `frame_shift`, no centre padding.
    pub fn framing(&self) -> StftConfig {
        StftConfig {
            n_fft: self.frame_length,
            hop_length: self.frame_shift,
            win_length: self.frame_length,
            window: WindowKind::Rectangular,
            center: false,
            pad_mode: PadMode::Constant,
        }
    }

    /// Buffers sized for this plan.
    pub fn make_scratch(&self) -> FbankScratch {
        FbankScratch {
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
            power: vec![0.0; self.n_bins],
        }
    }

    /// Computes the log filterbank energies of one frame of `frame_length` samples.
    ///
    /// # Panics
    /// If the slice lengths do not match the plan.
    pub fn process(&self, frame: &[f32], out: &mut [f32], s: &mut FbankScratch) {
        assert_eq!(frame.len(), self.frame_length);
        assert_eq!(out.len(), self.cfg.n_mels);
        let n = self.frame_length;
        let buf = &mut s.frame[..n];
        let scale = self.cfg.sample_scale;
        if self.cfg.remove_dc_offset {
            let mean = self.k.sum(frame) / n as f32;
            for (d, &x) in buf.iter_mut().zip(frame) {
                *d = (x - mean) * scale;
            }
        } else {
            for (d, &x) in buf.iter_mut().zip(frame) {
                *d = x * scale;
            }
        }
        let p = self.cfg.preemphasis;
        if p != 0.0 {
            for i in (1..n).rev() {
                buf[i] -= p * buf[i - 1];
            }
            buf[0] -= p * buf[0];
        }
        for (d, &w) in buf.iter_mut().zip(&self.window) {
            *d *= w;
        }
        s.frame[n..].fill(0.0);
        self.fft
            .process_with_scratch(&mut s.frame, &mut s.spectrum, &mut s.fft)
            .expect("buffer sizes come from the plan");
        self.k.power(complex_as_f32(&s.spectrum), &mut s.power);
        self.k.band_dots(&s.power, &self.rows, out);
        self.k.log_scaled(out, self.cfg.log_floor, 1.0, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaldi_framing_and_bands() {
        let plan = FbankPlan::new(&FbankConfig::default(), 16000.0, Kernels::scalar()).unwrap();
        let f = plan.framing();
        assert_eq!((f.n_fft, f.hop_length, f.center), (400, 160, false));
        assert_eq!(f.n_frames(16000), 98); // 1 + (16000 - 400) / 160
        assert_eq!(plan.n_bins, 257);
        assert!(plan.rows.spans().iter().all(|s| s.len > 0));
        // A band's weights rise then fall, peaking below 1.
        let w = plan.rows.row(10);
        let peak = w.iter().copied().fold(0.0, f32::max);
        assert!(peak > 0.5 && peak <= 1.0);
    }

    #[test]
    fn silence_hits_the_log_floor_and_tone_peaks_in_its_band() {
        let plan = FbankPlan::new(&FbankConfig::default(), 16000.0, Kernels::scalar()).unwrap();
        let mut s = plan.make_scratch();
        let mut out = vec![0.0; 23];
        plan.process(&[0.0; 400], &mut out, &mut s);
        assert!(out.iter().all(|&v| (v - f32::EPSILON.ln()).abs() < 1e-5));
        let tone: Vec<f32> = (0..400)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * 0.5)
            .collect();
        plan.process(&tone, &mut out, &mut s);
        let best = (0..23).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
        let centre_hz = |b: usize| {
            let (lo, hi) = (kaldi_mel(20.0), kaldi_mel(8000.0));
            let m = lo + (b + 1) as f64 * (hi - lo) / 24.0;
            700.0 * ((m / 1127.0).exp() - 1.0)
        };
        assert!((centre_hz(best) - 1000.0).abs() < 200.0, "band {best}");
    }

    #[test]
    fn bad_options_name_their_key() {
        let cfg = FbankConfig {
            high_freq_hz: 9000.0,
            ..FbankConfig::default()
        };
        let err = FbankPlan::new(&cfg, 16000.0, Kernels::scalar()).unwrap_err();
        assert!(matches!(
            err,
            DspError::InvalidConfig {
                key: "fbank.high_freq_hz",
                ..
            }
        ));
    }
}
