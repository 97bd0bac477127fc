//! The feature set of one item: which features, with which parameters, computed block by
//! block over a (possibly multi-channel) signal.
//!
//! Frame-local work (framing, window, FFT, spectrum, mel projection) happens as samples
//! arrive. Work that librosa defines over the whole array (`power_to_db` with `ref=max` and its
//! `top_db` clamp, and the MFCCs computed from it) happens in [`FeatureStream::finish`], on the
//! mel frames kept so far, so streamed results equal whole-signal results exactly.

use std::sync::Arc;

use crate::db::{power_to_db_in_place, DbConfig};
use crate::dct::DctPlan;
use crate::error::{invalid, DspError};
use crate::mel::{MelConfig, MelNorm, MelPlan, MelScale};
use crate::stft::{Framer, SpectrumKind, StftConfig, StftPlan, StftScratch};

/// A feature that can be written for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// `|STFT|`, shape `(1 + n_fft/2, frames)`.
    Magnitude,
    /// `|STFT|^2`, shape `(1 + n_fft/2, frames)`.
    Power,
    /// Mel spectrogram (librosa `melspectrogram`), shape `(n_mels, frames)`.
    Mel,
    /// `power_to_db(mel)`, shape `(n_mels, frames)`.
    LogMel,
    /// MFCC from the log-mel frames, shape `(n_mfcc, frames)`.
    Mfcc,
}

impl Feature {
    /// Every feature, in output order.
    pub const ALL: [Feature; 5] = [
        Feature::Magnitude,
        Feature::Power,
        Feature::Mel,
        Feature::LogMel,
        Feature::Mfcc,
    ];

    /// The name used in configuration and as the output file stem.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Magnitude => "magnitude",
            Feature::Power => "power",
            Feature::Mel => "mel",
            Feature::LogMel => "log_mel",
            Feature::Mfcc => "mfcc",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Everything that determines the features of an item.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureConfig {
    /// Sample rate of the signal in Hz.
    pub sample_rate_hz: f64,
    /// Features to produce (at least one).
    pub features: Vec<Feature>,
    /// STFT parameters.
    pub stft: StftConfig,
    /// Spectrum the mel bands integrate: power (librosa `power=2`, default) or magnitude (`power=1`).
    pub mel_spectrum: SpectrumKind,
    /// Number of mel bands. Default 128.
    pub n_mels: usize,
    /// Lowest mel edge in Hz. Default 0.
    pub fmin_hz: f64,
    /// Highest mel edge in Hz; `None` = Nyquist.
    pub fmax_hz: Option<f64>,
    /// Mel scale. Default Slaney.
    pub mel_scale: MelScale,
    /// Mel normalisation. Default Slaney.
    pub mel_norm: MelNorm,
    /// dB conversion for `log_mel` and `mfcc`.
    pub db: DbConfig,
    /// Number of MFCCs. Default 20.
    pub n_mfcc: usize,
    /// Cepstral liftering (0 = off). Default 0.
    pub lifter: f64,
}

impl FeatureConfig {
    /// librosa's defaults at `sample_rate_hz`, producing log-mel and MFCC.
    pub fn librosa_defaults(sample_rate_hz: f64) -> Self {
        FeatureConfig {
            sample_rate_hz,
            features: vec![Feature::LogMel, Feature::Mfcc],
            stft: StftConfig::default(),
            mel_spectrum: SpectrumKind::Power,
            n_mels: 128,
            fmin_hz: 0.0,
            fmax_hz: None,
            mel_scale: MelScale::Slaney,
            mel_norm: MelNorm::Slaney,
            db: DbConfig::default(),
            n_mfcc: 20,
            lifter: 0.0,
        }
    }

    fn wants(&self, f: Feature) -> bool {
        self.features.contains(&f)
    }
}

/// Precomputed state for a [`FeatureConfig`]; share it across workers with `Arc`.
#[derive(Debug)]
pub struct FeaturePlan {
    cfg: FeatureConfig,
    stft: StftPlan,
    mel: Option<MelPlan>,
    dct: Option<DctPlan>,
}

impl FeaturePlan {
    /// Validates the configuration and builds every plan it needs.
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key at fault.
    pub fn new(cfg: &FeatureConfig) -> Result<Self, DspError> {
        if cfg.features.is_empty() {
            return Err(invalid("features", "at least one feature is needed"));
        }
        let stft = StftPlan::new(&cfg.stft)?;
        let needs_mel =
            cfg.wants(Feature::Mel) || cfg.wants(Feature::LogMel) || cfg.wants(Feature::Mfcc);
        let mel = if needs_mel {
            Some(MelPlan::new(&MelConfig {
                sample_rate_hz: cfg.sample_rate_hz,
                n_fft: cfg.stft.n_fft,
                n_mels: cfg.n_mels,
                fmin_hz: cfg.fmin_hz,
                fmax_hz: cfg.fmax_hz,
                scale: cfg.mel_scale,
                norm: cfg.mel_norm,
            })?)
        } else {
            None
        };
        if !(cfg.db.amin > 0.0 && cfg.db.amin.is_finite()) {
            return Err(invalid("amin", format!("{} must be > 0", cfg.db.amin)));
        }
        if let Some(t) = cfg.db.top_db {
            if t.is_nan() || t < 0.0 {
                return Err(invalid("top_db", format!("{t} must be >= 0")));
            }
        }
        let dct = if cfg.wants(Feature::Mfcc) {
            Some(DctPlan::new(cfg.n_mels, cfg.n_mfcc, cfg.lifter)?)
        } else {
            None
        };
        Ok(FeaturePlan {
            cfg: cfg.clone(),
            stft,
            mel,
            dct,
        })
    }

    /// The configuration this plan was built from.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// Mel bands that receive no FFT bin (a sign of too many mels for `n_fft`).
    pub fn empty_mel_bands(&self) -> usize {
        self.mel.as_ref().map_or(0, MelPlan::empty_bands)
    }

    /// Size of one frame of `feature`.
    pub fn dim(&self, feature: Feature) -> usize {
        match feature {
            Feature::Magnitude | Feature::Power => self.cfg.stft.n_bins(),
            Feature::Mel | Feature::LogMel => self.cfg.n_mels,
            Feature::Mfcc => self.cfg.n_mfcc,
        }
    }
}

/// One computed feature: per channel, `frames x dim` values, frame-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureOutput {
    /// Which feature.
    pub feature: Feature,
    /// Values per frame.
    pub dim: usize,
    /// Frames per channel.
    pub frames: usize,
    /// One frame-major buffer (`frames * dim`) per channel.
    pub channels: Vec<Vec<f32>>,
}

impl FeatureOutput {
    /// The shape librosa returns: `(dim, frames)` for one channel, `(channels, dim, frames)`
    /// otherwise.
    pub fn shape(&self) -> Vec<usize> {
        if self.channels.len() == 1 {
            vec![self.dim, self.frames]
        } else {
            vec![self.channels.len(), self.dim, self.frames]
        }
    }

    /// The values in C order for [`Self::shape`] (a transposed copy).
    pub fn to_c_order(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.channels.len() * self.dim * self.frames);
        self.for_each_c_order(|v| out.push(v));
        out
    }

    /// Visits the values in C order for [`Self::shape`] without copying.
    pub fn for_each_c_order(&self, mut f: impl FnMut(f32)) {
        for ch in &self.channels {
            for d in 0..self.dim {
                for t in 0..self.frames {
                    f(ch[t * self.dim + d]);
                }
            }
        }
    }
}

struct ChannelState {
    framer: Framer,
    magnitude: Vec<f32>,
    power: Vec<f32>,
    mel: Vec<f32>,
}

/// Computes the features of one signal fed in blocks.
pub struct FeatureStream {
    plan: Arc<FeaturePlan>,
    channels: Vec<ChannelState>,
    scratch: StftScratch,
    spectrum: Vec<f32>,
    mel_frame: Vec<f32>,
    samples_in: u64,
}

impl FeatureStream {
    /// A stream over `n_channels` channels (each becomes its own feature plane).
    ///
    /// # Panics
    /// If `n_channels` is 0.
    pub fn new(plan: Arc<FeaturePlan>, n_channels: usize) -> Self {
        assert!(n_channels > 0, "at least one channel");
        let channels = (0..n_channels)
            .map(|_| ChannelState {
                framer: Framer::new(&plan.cfg.stft),
                magnitude: Vec::new(),
                power: Vec::new(),
                mel: Vec::new(),
            })
            .collect();
        FeatureStream {
            scratch: plan.stft.make_scratch(),
            spectrum: vec![0.0; plan.cfg.stft.n_bins()],
            mel_frame: vec![0.0; plan.cfg.n_mels],
            channels,
            plan,
            samples_in: 0,
        }
    }

    /// Samples received per channel.
    pub fn samples_in(&self) -> u64 {
        self.samples_in
    }

    /// Feeds one block: a slice per channel, all of the same length.
    ///
    /// # Errors
    /// [`DspError::NonFinite`] if a sample is NaN or infinite.
    ///
    /// # Panics
    /// If the number of slices differs from the channel count or their lengths differ.
    pub fn push(&mut self, block: &[&[f32]]) -> Result<(), DspError> {
        assert_eq!(block.len(), self.channels.len(), "one slice per channel");
        let n = block[0].len();
        for ch in block {
            assert_eq!(ch.len(), n, "channel blocks of equal length");
            if let Some(i) = ch.iter().position(|v| !v.is_finite()) {
                return Err(DspError::NonFinite {
                    index: self.samples_in + i as u64,
                });
            }
        }
        self.samples_in += n as u64;
        let FeatureStream {
            plan,
            channels,
            scratch,
            spectrum,
            mel_frame,
            ..
        } = self;
        for (state, samples) in channels.iter_mut().zip(block) {
            let ChannelState {
                framer,
                magnitude,
                power,
                mel,
            } = state;
            framer.push(samples, |frame| {
                process_frame(
                    plan, frame, scratch, spectrum, mel_frame, magnitude, power, mel,
                )
            });
        }
        Ok(())
    }

    /// Ends the signal and returns the requested features, in configuration order.
    ///
    /// # Errors
    /// [`DspError::TooShort`] if the signal gives no frame.
    pub fn finish(mut self) -> Result<Vec<FeatureOutput>, DspError> {
        let plan = Arc::clone(&self.plan);
        let cfg = &plan.cfg;
        let mut frames = 0u64;
        for state in &mut self.channels {
            let ChannelState {
                framer,
                magnitude,
                power,
                mel,
            } = state;
            frames = framer.finish(|frame| {
                process_frame(
                    &plan,
                    frame,
                    &mut self.scratch,
                    &mut self.spectrum,
                    &mut self.mel_frame,
                    magnitude,
                    power,
                    mel,
                )
            });
        }
        if frames == 0 {
            return Err(DspError::TooShort {
                samples: self.samples_in,
                n_fft: cfg.stft.n_fft,
                center: cfg.stft.center,
            });
        }
        let frames = frames as usize;
        let take = |f: fn(&mut ChannelState) -> Vec<f32>, chans: &mut Vec<ChannelState>| {
            chans.iter_mut().map(f).collect::<Vec<_>>()
        };
        let mut magnitude = Some(take(
            |c| std::mem::take(&mut c.magnitude),
            &mut self.channels,
        ));
        let mut power = Some(take(|c| std::mem::take(&mut c.power), &mut self.channels));
        let mel = take(|c| std::mem::take(&mut c.mel), &mut self.channels);

        let needs_db = cfg.wants(Feature::LogMel) || cfg.wants(Feature::Mfcc);
        let log_mel = if needs_db {
            // librosa takes ref=max and the top_db clamp over the whole array (all channels).
            let mut all: Vec<f32> = mel.concat();
            power_to_db_in_place(&mut all, &cfg.db);
            let per = frames * cfg.n_mels;
            Some(
                all.chunks_exact(per)
                    .map(<[f32]>::to_vec)
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let mfcc = match (&plan.dct, &log_mel) {
            (Some(dct), Some(lm)) => Some(
                lm.iter()
                    .map(|ch| {
                        let mut out = vec![0.0; frames * dct.n_out()];
                        for (src, dst) in ch
                            .chunks_exact(cfg.n_mels)
                            .zip(out.chunks_exact_mut(dct.n_out()))
                        {
                            dct.process(src, dst);
                        }
                        out
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let mut mel = Some(mel);
        let mut log_mel = log_mel;
        let mut mfcc = mfcc;
        let mut outputs = Vec::with_capacity(cfg.features.len());
        for &feature in &cfg.features {
            let data = match feature {
                Feature::Magnitude => magnitude.take(),
                Feature::Power => power.take(),
                Feature::Mel => mel.take(),
                Feature::LogMel => log_mel.take(),
                Feature::Mfcc => mfcc.take(),
            };
            // A feature listed twice is produced once.
            if let Some(channels) = data {
                outputs.push(FeatureOutput {
                    feature,
                    dim: plan.dim(feature),
                    frames,
                    channels,
                });
            }
        }
        Ok(outputs)
    }
}

#[allow(clippy::too_many_arguments)]
fn process_frame(
    plan: &FeaturePlan,
    frame: &[f32],
    scratch: &mut StftScratch,
    spectrum: &mut [f32],
    mel_frame: &mut [f32],
    magnitude: &mut Vec<f32>,
    power: &mut Vec<f32>,
    mel: &mut Vec<f32>,
) {
    let cfg = &plan.cfg;
    if cfg.wants(Feature::Magnitude) {
        plan.stft
            .spectrum(frame, SpectrumKind::Magnitude, spectrum, scratch);
        magnitude.extend_from_slice(spectrum);
    }
    if cfg.wants(Feature::Power) {
        plan.stft
            .spectrum(frame, SpectrumKind::Power, spectrum, scratch);
        power.extend_from_slice(spectrum);
    }
    if let Some(mel_plan) = &plan.mel {
        plan.stft
            .spectrum(frame, cfg.mel_spectrum, spectrum, scratch);
        mel_plan.project(spectrum, mel_frame);
        mel.extend_from_slice(mel_frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 16000.0;
                (2.0 * std::f32::consts::PI * 440.0 * t).sin() * 0.5
                    + ((i * 7919) % 101) as f32 / 1000.0
            })
            .collect()
    }

    #[test]
    fn block_size_does_not_change_results() {
        let mut cfg = FeatureConfig::librosa_defaults(16000.0);
        cfg.features = Feature::ALL.to_vec();
        cfg.stft.n_fft = 400;
        cfg.stft.win_length = 400;
        cfg.stft.hop_length = 160;
        cfg.n_mels = 40;
        cfg.db.reference = crate::DbReference::Max;
        let plan = Arc::new(FeaturePlan::new(&cfg).unwrap());
        let x = signal(16000);
        let y: Vec<f32> = x.iter().map(|v| -v * 0.3).collect();
        let run = |block: usize| {
            let mut s = FeatureStream::new(Arc::clone(&plan), 2);
            for (a, b) in x.chunks(block).zip(y.chunks(block)) {
                s.push(&[a, b]).unwrap();
            }
            s.finish().unwrap()
        };
        let whole = run(x.len());
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[3].shape(), vec![2, 40, 101]);
        for block in [1, 159, 1024] {
            assert_eq!(run(block), whole, "block {block}");
        }
    }

    #[test]
    fn nan_and_empty_are_errors() {
        let plan = Arc::new(FeaturePlan::new(&FeatureConfig::librosa_defaults(22050.0)).unwrap());
        let mut s = FeatureStream::new(Arc::clone(&plan), 1);
        assert!(matches!(
            s.push(&[&[0.0, f32::NAN]]),
            Err(DspError::NonFinite { index: 1 })
        ));
        let s = FeatureStream::new(plan, 1);
        assert!(matches!(
            s.finish(),
            Err(DspError::TooShort { samples: 0, .. })
        ));
    }

    #[test]
    fn mfcc_is_dct_of_log_mel() {
        let mut cfg = FeatureConfig::librosa_defaults(16000.0);
        cfg.n_mels = 64;
        cfg.features = vec![Feature::LogMel, Feature::Mfcc];
        let plan = Arc::new(FeaturePlan::new(&cfg).unwrap());
        let mut s = FeatureStream::new(plan, 1);
        s.push(&[&signal(8000)]).unwrap();
        let out = s.finish().unwrap();
        let (lm, mf) = (&out[0], &out[1]);
        assert_eq!(mf.shape(), vec![20, 16]);
        let t = 5;
        let frame = &lm.channels[0][t * 64..(t + 1) * 64];
        let c0: f64 = frame.iter().map(|&v| v as f64).sum::<f64>() / (64f64).sqrt();
        assert!((mf.channels[0][t * 20] as f64 - c0).abs() < 1e-3 * c0.abs().max(1.0));
    }
}
