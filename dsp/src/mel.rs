//! Mel filterbanks as librosa's `filters.mel` builds them, stored as sparse triangular bands.

use crate::error::{invalid, DspError};
use crate::kernels::{Kernels, Span, SparseRows};

/// The Hz <-> mel mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    /// Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above (librosa default).
    Slaney,
    /// HTK: `2595 log10(1 + f / 700)`.
    Htk,
}

/// Filter normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelNorm {
    /// Each triangle divided by its width in Hz (`2 / (f[i+2] - f[i])`): constant energy per band.
    Slaney,
    /// Peak 1.0.
    None,
}

/// Mel filterbank parameters; defaults are librosa's.
#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    /// Sample rate of the signal in Hz. No default: it comes from the decoded audio.
    pub sample_rate_hz: f64,
    /// FFT length the filterbank applies to. Default 2048.
    pub n_fft: usize,
    /// Number of mel bands. Default 128.
    pub n_mels: usize,
    /// Lowest band edge in Hz. Default 0.
    pub fmin_hz: f64,
    /// Highest band edge in Hz; `None` means `sample_rate_hz / 2`. Default `None`.
    pub fmax_hz: Option<f64>,
    /// Scale. Default Slaney.
    pub scale: MelScale,
    /// Normalisation. Default Slaney.
    pub norm: MelNorm,
}

/// Hz to mel on the given scale (librosa `hz_to_mel`).
pub fn hz_to_mel(f: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if f >= min_log_hz {
                min_log_mel + (f / min_log_hz).ln() / logstep
            } else {
                f / f_sp
            }
        }
    }
}

/// Mel to Hz on the given scale (librosa `mel_to_hz`).
pub fn mel_to_hz(m: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(m / 2595.0) - 1.0),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if m >= min_log_mel {
                min_log_hz * (logstep * (m - min_log_mel)).exp()
            } else {
                f_sp * m
            }
        }
    }
}

/// A precomputed filterbank.
#[derive(Debug, Clone)]
pub struct MelPlan {
    cfg: MelConfig,
    rows: SparseRows,
    n_bins: usize,
    k: Kernels,
}

impl MelPlan {
    /// Validates `cfg` and computes the weights (in f64, rounded to f32 as librosa does).
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key that is out of range.
    pub fn new(cfg: &MelConfig) -> Result<Self, DspError> {
        let sr = cfg.sample_rate_hz;
        if !(sr.is_finite() && sr > 0.0) {
            return Err(invalid(
                "sample_rate_hz",
                format!("{sr} is not a positive rate"),
            ));
        }
        if cfg.n_mels == 0 || cfg.n_mels > 4096 {
            return Err(invalid(
                "n_mels",
                format!("{} is not in 1..=4096", cfg.n_mels),
            ));
        }
        let fmax = cfg.fmax_hz.unwrap_or(sr / 2.0);
        if !(cfg.fmin_hz >= 0.0 && cfg.fmin_hz < fmax) {
            return Err(invalid(
                "fmin_hz",
                format!("fmin {} must be >= 0 and below fmax {fmax}", cfg.fmin_hz),
            ));
        }
        if fmax > sr / 2.0 + 1e-9 {
            return Err(invalid(
                "fmax_hz",
                format!("{fmax} Hz is above the Nyquist frequency {} Hz", sr / 2.0),
            ));
        }
        let n_bins = cfg.n_fft / 2 + 1;
        let fftfreqs: Vec<f64> = (0..n_bins)
            .map(|k| k as f64 * (sr / 2.0) / (n_bins - 1) as f64)
            .collect();
        let (mmin, mmax) = (
            hz_to_mel(cfg.fmin_hz, cfg.scale),
            hz_to_mel(fmax, cfg.scale),
        );
        let n_pts = cfg.n_mels + 2;
        let mel_f: Vec<f64> = (0..n_pts)
            .map(|i| {
                mel_to_hz(
                    mmin + (mmax - mmin) * i as f64 / (n_pts - 1) as f64,
                    cfg.scale,
                )
            })
            .collect();
        let mut spans = Vec::with_capacity(cfg.n_mels);
        let mut all_weights = Vec::new();
        for i in 0..cfg.n_mels {
            let (lo, mid, hi) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
            let enorm = match cfg.norm {
                MelNorm::Slaney => 2.0 / (hi - lo),
                MelNorm::None => 1.0,
            };
            let mut start = None;
            let mut weights = Vec::new();
            for (k, &f) in fftfreqs.iter().enumerate() {
                let lower = (f - lo) / (mid - lo);
                let upper = (hi - f) / (hi - mid);
                // Rounded twice, as librosa does: triangle to f32, then scaled in f64.
                let tri = lower.min(upper).max(0.0) as f32;
                let w = (tri as f64 * enorm) as f32;
                if w > 0.0 {
                    if start.is_none() {
                        start = Some(k);
                    }
                    let s = start.unwrap_or(k);
                    weights.resize(k - s, 0.0);
                    weights.push(w);
                }
            }
            spans.push(Span {
                start: start.unwrap_or(0),
                len: weights.len(),
                offset: all_weights.len(),
            });
            all_weights.extend_from_slice(&weights);
        }
        Ok(MelPlan {
            cfg: cfg.clone(),
            rows: SparseRows::new(spans, all_weights),
            n_bins,
            k: Kernels::active(),
        })
    }

    /// The same plan computing with the given kernels.
    pub fn with_kernels(mut self, k: Kernels) -> Self {
        self.k = k;
        self
    }

    /// The configuration this plan was built from.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Number of bands that received no FFT bin (librosa warns about these: too many mels for
    /// the FFT size).
    pub fn empty_bands(&self) -> usize {
        self.rows.spans().iter().filter(|s| s.len == 0).count()
    }

    /// The dense `n_mels x n_bins` weight matrix, row-major (for tests and inspection).
    pub fn dense(&self) -> Vec<f32> {
        let spans = self.rows.spans();
        let mut m = vec![0.0; spans.len() * self.n_bins];
        for (i, s) in spans.iter().enumerate() {
            m[i * self.n_bins + s.start..i * self.n_bins + s.start + s.len]
                .copy_from_slice(self.rows.row(i));
        }
        m
    }

    /// The filter bank as sparse rows over the bins.
    pub fn rows(&self) -> &SparseRows {
        &self.rows
    }

    /// Projects one spectrum (`n_bins` values) onto the bands, writing `n_mels` values.
    ///
    /// # Panics
    /// If the slice lengths do not match the plan.
    pub fn project(&self, spectrum: &[f32], out: &mut [f32]) {
        assert_eq!(spectrum.len(), self.n_bins);
        self.k.band_dots(spectrum, &self.rows, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_round_trip() {
        for scale in [MelScale::Slaney, MelScale::Htk] {
            for f in [0.0, 100.0, 999.0, 1000.0, 4000.0, 22050.0] {
                let back = mel_to_hz(hz_to_mel(f, scale), scale);
                assert!(
                    (back - f).abs() < 1e-6 * (1.0 + f),
                    "{scale:?} {f} -> {back}"
                );
            }
        }
        // Known values from librosa.
        assert!((hz_to_mel(1000.0, MelScale::Slaney) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(1000.0, MelScale::Htk) - 999.9855371396243).abs() < 1e-9);
    }

    #[test]
    fn sparse_projection_equals_dense_sum() {
        let cfg = MelConfig {
            sample_rate_hz: 16000.0,
            n_fft: 400,
            n_mels: 80,
            fmin_hz: 0.0,
            fmax_hz: None,
            scale: MelScale::Slaney,
            norm: MelNorm::Slaney,
        };
        let plan = MelPlan::new(&cfg).unwrap();
        let dense = plan.dense();
        let spec: Vec<f32> = (0..201).map(|k| ((k * 37) % 11) as f32 + 0.5).collect();
        let mut out = vec![f32::NAN; 80];
        plan.project(&spec, &mut out);
        for i in 0..80 {
            let want: f64 = (0..201)
                .map(|k| dense[i * 201 + k] as f64 * spec[k] as f64)
                .sum();
            assert!((out[i] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
        }
        assert_eq!(plan.empty_bands(), 0);
    }

    #[test]
    fn fmax_above_nyquist_is_an_error() {
        let cfg = MelConfig {
            sample_rate_hz: 8000.0,
            n_fft: 512,
            n_mels: 40,
            fmin_hz: 0.0,
            fmax_hz: Some(8000.0),
            scale: MelScale::Htk,
            norm: MelNorm::None,
        };
        assert!(matches!(
            MelPlan::new(&cfg),
            Err(DspError::InvalidConfig { key: "fmax_hz", .. })
        ));
    }
}
