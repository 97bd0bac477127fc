//! Features stage: `[features]` ([`FeaturesConfig`]) and its klio-dsp plans (one per sample
//! rate, built once and shared by all workers), run over decoded blocks.

use crate::pipeline::ErrorKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use klio_dsp::{
    DbConfig, DbReference, DspError, FbankConfig, Feature, FeatureConfig, FeaturePlan, MelNorm,
    MelScale, PadMode, SpectrumKind, StftConfig, WindowKind,
};
use serde::{Deserialize, Serialize};

/// Why features could not be computed for an item.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The configuration does not fit this item (e.g. `fmax_hz` above its Nyquist frequency).
    #[error("features config does not fit this audio ({rate} Hz): {source}")]
    Config {
        /// The item's sample rate.
        rate: u32,
        /// The DSP error.
        source: DspError,
    },
    /// The signal itself is unusable (too short, NaN).
    #[error("{0}")]
    Signal(DspError),
}

impl FeatureError {
    /// The ledger's `error_kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FeatureError::Config { .. } => ErrorKind::FeatureConfig,
            FeatureError::Signal(DspError::TooShort { .. }) => ErrorKind::TooShort,
            FeatureError::Signal(DspError::NonFinite { .. }) => ErrorKind::NonFinite,
            FeatureError::Signal(_) => ErrorKind::Features,
        }
    }
}

/// Plans per sample rate.
pub struct FeatureStage {
    cfg: FeaturesConfig,
    plans: Mutex<HashMap<u32, Arc<FeaturePlan>>>,
}

impl FeatureStage {
    /// A stage for `cfg` (validated by `Config::validate`).
    pub fn new(cfg: &FeaturesConfig) -> Self {
        FeatureStage {
            cfg: cfg.clone(),
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The plan for audio at `rate` Hz, built on first use.
    ///
    /// # Errors
    /// [`FeatureError::Config`] when the settings do not fit this rate.
    pub fn plan(&self, rate: u32) -> Result<Arc<FeaturePlan>, FeatureError> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plans.get(&rate) {
            return Ok(Arc::clone(p));
        }
        let dsp = self
            .cfg
            .to_dsp(rate as f64)
            .map_err(|e| FeatureError::Config {
                rate,
                source: DspError::InvalidConfig {
                    key: "features",
                    reason: format!("{e:#}"),
                },
            })?;
        let plan = Arc::new(
            FeaturePlan::new(&dsp).map_err(|source| FeatureError::Config { rate, source })?,
        );
        plans.insert(rate, Arc::clone(&plan));
        Ok(plan)
    }
}

/// `db_ref`: a number or `"max"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DbRef {
    /// Fixed reference power.
    Value(f64),
    /// The array's maximum.
    Max,
}

impl Serialize for DbRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DbRef::Max => s.serialize_str("max"),
            DbRef::Value(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for DbRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Str(s) if s == "max" => Ok(DbRef::Max),
            Raw::Num(v) if v > 0.0 && v.is_finite() => Ok(DbRef::Value(v)),
            Raw::Int(v) if v > 0 => Ok(DbRef::Value(v as f64)),
            _ => Err(serde::de::Error::custom(
                "expected a positive number or \"max\"",
            )),
        }
    }
}

/// `top_db`: a number of dB or `false`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopDb(pub Option<f64>);

impl Serialize for TopDb {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_bool(false),
            Some(v) => s.serialize_f64(v),
        }
    }
}

impl<'de> Deserialize<'de> for TopDb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Int(i64),
            Bool(bool),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(TopDb(None)),
            Raw::Num(v) if v >= 0.0 && v.is_finite() => Ok(TopDb(Some(v))),
            Raw::Int(v) if v >= 0 => Ok(TopDb(Some(v as f64))),
            _ => Err(serde::de::Error::custom(
                "expected a non-negative number of dB, or false",
            )),
        }
    }
}

/// Window names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowName {
    /// Periodic Hann.
    Hann,
    /// Periodic Hamming.
    Hamming,
    /// All ones.
    Rectangular,
    /// Kaldi's Povey window (symmetric Hann to the power 0.85).
    Povey,
}

/// Padding names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadName {
    /// Zeros.
    Constant,
    /// Mirror.
    Reflect,
    /// Repeat the edge sample.
    Edge,
}

/// Mel scale names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleName {
    /// Slaney.
    Slaney,
    /// HTK.
    Htk,
}

/// Mel norm names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormName {
    /// Slaney area normalisation.
    Slaney,
    /// None.
    None,
}

/// `[features]`: what is computed from the PCM. Defaults are librosa's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Features to write, each as `<name>.npy`: `magnitude`, `power`, `mel`, `log_mel`, `mfcc`.
    /// Default `["log_mel", "mfcc"]`.
    pub compute: Vec<String>,
    /// Default 2048.
    pub n_fft: usize,
    /// Default 512.
    pub hop_length: usize,
    /// Default `n_fft`.
    pub win_length: Option<usize>,
    /// Default `"hann"`.
    pub window: WindowName,
    /// Default true.
    pub center: bool,
    /// Default `"constant"`.
    pub pad_mode: PadName,
    /// Exponent of the spectrum the mel bands integrate: 2.0 (power, default) or 1.0.
    pub mel_power: f64,
    /// Default 128.
    pub n_mels: usize,
    /// Default 0.
    pub fmin_hz: f64,
    /// Default: the Nyquist frequency.
    pub fmax_hz: Option<f64>,
    /// Default `"slaney"`.
    pub mel_scale: ScaleName,
    /// Default `"slaney"`.
    pub mel_norm: NormName,
    /// Reference for `power_to_db`: a number or `"max"`. Default 1.0.
    pub db_ref: DbRef,
    /// Default 1e-10.
    pub amin: f64,
    /// Default 80; `false` disables the clamp.
    pub top_db: TopDb,
    /// Default 20.
    pub n_mfcc: usize,
    /// Default 0 (off).
    pub lifter: f64,
    /// Share of the spectral energy below `spectral_rolloff`. Default 0.85.
    pub rolloff_percent: f64,
    /// `[features.fbank]`: Kaldi fbank options (its own framing).
    pub fbank: FbankSettings,
}

/// `[features.fbank]`: Kaldi-style filterbank options. Defaults are Kaldi's (no dither).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FbankSettings {
    /// Default 25.
    pub frame_length_ms: f64,
    /// Default 10.
    pub frame_shift_ms: f64,
    /// Default 23 (Kaldi's; ASR front ends often use 80).
    pub n_mels: usize,
    /// Default 20.
    pub low_freq_hz: f64,
    /// Default 0 (the Nyquist frequency; negative counts down from it).
    pub high_freq_hz: f64,
    /// Default 0.97.
    pub preemphasis: f64,
    /// Default true.
    pub remove_dc_offset: bool,
    /// Samples are multiplied by this first. Default 32768 (Kaldi reads 16-bit PCM as integers).
    pub sample_scale: f64,
    /// Floor before the natural log. Default 1.1920929e-7 (f32 epsilon, Kaldi's).
    pub log_floor: f64,
}

impl Default for FbankSettings {
    fn default() -> Self {
        let d = FbankConfig::default();
        FbankSettings {
            frame_length_ms: d.frame_length_ms,
            frame_shift_ms: d.frame_shift_ms,
            n_mels: d.n_mels,
            low_freq_hz: d.low_freq_hz,
            high_freq_hz: d.high_freq_hz,
            preemphasis: 0.97,
            remove_dc_offset: d.remove_dc_offset,
            sample_scale: d.sample_scale as f64,
            log_floor: d.log_floor as f64,
        }
    }
}

impl FbankSettings {
    fn to_dsp(&self) -> FbankConfig {
        FbankConfig {
            frame_length_ms: self.frame_length_ms,
            frame_shift_ms: self.frame_shift_ms,
            n_mels: self.n_mels,
            low_freq_hz: self.low_freq_hz,
            high_freq_hz: self.high_freq_hz,
            preemphasis: self.preemphasis as f32,
            remove_dc_offset: self.remove_dc_offset,
            window: WindowKind::Povey,
            round_to_power_of_two: true,
            sample_scale: self.sample_scale as f32,
            log_floor: self.log_floor as f32,
        }
    }
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            compute: vec!["log_mel".into(), "mfcc".into()],
            n_fft: 2048,
            hop_length: 512,
            win_length: None,
            window: WindowName::Hann,
            center: true,
            pad_mode: PadName::Constant,
            mel_power: 2.0,
            n_mels: 128,
            fmin_hz: 0.0,
            fmax_hz: None,
            mel_scale: ScaleName::Slaney,
            mel_norm: NormName::Slaney,
            db_ref: DbRef::Value(1.0),
            amin: 1e-10,
            top_db: TopDb(Some(80.0)),
            n_mfcc: 20,
            lifter: 0.0,
            rolloff_percent: 0.85,
            fbank: FbankSettings::default(),
        }
    }
}

impl FeaturesConfig {
    /// The klio-dsp configuration for audio at `sample_rate_hz`.
    ///
    /// # Errors
    /// An unknown feature name or an unsupported `mel_power`, naming the key.
    pub fn to_dsp(&self, sample_rate_hz: f64) -> Result<FeatureConfig> {
        let mut features = Vec::new();
        for name in &self.compute {
            let f = Feature::from_name(name).with_context(|| {
                let known: Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "features.compute: unknown feature {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
            if !features.contains(&f) {
                features.push(f);
            }
        }
        let mel_spectrum = if self.mel_power == 2.0 {
            SpectrumKind::Power
        } else if self.mel_power == 1.0 {
            SpectrumKind::Magnitude
        } else {
            bail!(
                "features.mel_power: {} is not supported (1.0 or 2.0)",
                self.mel_power
            );
        };
        Ok(FeatureConfig {
            sample_rate_hz,
            features,
            stft: StftConfig {
                n_fft: self.n_fft,
                hop_length: self.hop_length,
                win_length: self.win_length.unwrap_or(self.n_fft),
                window: match self.window {
                    WindowName::Hann => WindowKind::Hann,
                    WindowName::Hamming => WindowKind::Hamming,
                    WindowName::Rectangular => WindowKind::Rectangular,
                    WindowName::Povey => WindowKind::Povey,
                },
                center: self.center,
                pad_mode: match self.pad_mode {
                    PadName::Constant => PadMode::Constant,
                    PadName::Reflect => PadMode::Reflect,
                    PadName::Edge => PadMode::Edge,
                },
            },
            mel_spectrum,
            n_mels: self.n_mels,
            fmin_hz: self.fmin_hz,
            fmax_hz: self.fmax_hz,
            mel_scale: match self.mel_scale {
                ScaleName::Slaney => MelScale::Slaney,
                ScaleName::Htk => MelScale::Htk,
            },
            mel_norm: match self.mel_norm {
                NormName::Slaney => MelNorm::Slaney,
                NormName::None => MelNorm::None,
            },
            db: DbConfig {
                reference: match self.db_ref {
                    DbRef::Max => DbReference::Max,
                    DbRef::Value(v) => DbReference::Value(v as f32),
                },
                amin: self.amin as f32,
                top_db: self.top_db.0.map(|v| v as f32),
            },
            n_mfcc: self.n_mfcc,
            lifter: self.lifter,
            fbank: self.fbank.to_dsp(),
            rolloff_percent: self.rolloff_percent,
        })
    }
}
