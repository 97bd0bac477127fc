//! Resolved, validated settings. One TOML file (every key optional, every default documented
//! in README.md), then command-line flags on top. Unknown keys are errors that name the key.
//!
//! This module only reads and checks settings; it does no processing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use klio_dsp::{
    DbConfig, DbReference, FbankConfig, Feature, FeatureConfig, FeaturePlan, MelNorm, MelScale,
    PadMode, SpectrumKind, StftConfig, WindowKind,
};
use serde::{Deserialize, Serialize};

use crate::exec::ExecConfig;
use crate::infer::ModelConfig;

/// Bump when a change to decoding or feature numerics must invalidate every finished item.
/// 2: SIMD kernels (vector log), streamed sink.
pub const ALGORITHM_VERSION: u32 = 2;

/// The name of the config file looked up in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "klio-edge.toml";

/// Every setting, as read from the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[decode]`
    pub decode: DecodeConfig,
    /// `[features]`
    pub features: FeaturesConfig,
    /// `[run]`
    pub run: RunConfig,
    /// `[output]`
    pub output: OutputConfig,
    /// `[[exec]]`: external programs run on each item, in order.
    pub exec: Vec<ExecConfig>,
    /// `[[model]]`: ONNX models run on each item's waveform.
    pub model: Vec<ModelConfig>,
    /// `[serve]`: the service (`klio-edge serve` and `publish`); does not affect outputs.
    pub serve: crate::source::settings::ServeConfig,
    /// `[store]`: object stores (`s3://`, `gs://`, `https://`); does not affect outputs.
    pub store: crate::store::StoreConfig,
    /// `[infer]`: settings shared by the `[[model]]`s (the ONNX Runtime library).
    pub infer: crate::infer::InferConfig,
}

/// A target sample rate, or the file's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleRate {
    /// Keep the file's rate (no resampling).
    Native,
    /// Resample to this rate in Hz.
    Hz(u32),
}

impl Serialize for SampleRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SampleRate::Native => s.serialize_str("native"),
            SampleRate::Hz(hz) => s.serialize_u32(*hz),
        }
    }
}

impl<'de> Deserialize<'de> for SampleRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Str(s) if s == "native" => Ok(SampleRate::Native),
            Raw::Int(hz) if (1..=768_000).contains(&hz) => Ok(SampleRate::Hz(hz as u32)),
            _ => Err(serde::de::Error::custom(
                "expected a rate in Hz between 1 and 768000, or \"native\"",
            )),
        }
    }
}

/// Channel handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Average all channels into one (librosa's `to_mono`).
    Mono,
    /// Keep every channel; features get a leading channel axis.
    Keep,
}

/// What to do with a truncated or partly corrupt file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Damaged {
    /// Fail the item with the reason (the default).
    Fail,
    /// Keep what decodes; meta.json lists the warnings.
    Partial,
}

/// What to do when the content is a different format from the one the file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mismatch {
    /// Fail the item, naming both formats (the default).
    Fail,
    /// Decode by content; meta.json records a warning.
    Warn,
}

/// `[decode]`: how files become PCM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Decode items as audio (and compute `[features]`). `false` makes items plain binary
    /// files for `[[exec]]` programs. Default true.
    pub enabled: bool,
    /// Output rate in Hz, or `"native"`. Default 22050 (librosa's).
    pub sample_rate_hz: SampleRate,
    /// `"mono"` (default) or `"keep"`.
    pub channels: Channels,
    /// Truncated or corrupt streams: `"fail"` (default) or `"partial"`.
    pub on_damaged: Damaged,
    /// Content/extension disagreement: `"fail"` (default) or `"warn"`.
    pub extension_mismatch: Mismatch,
    /// Refuse audio longer than this many seconds (declared or decoded). Default 21600 (6 h).
    pub max_duration_s: f64,
    /// Refuse streams with more channels than this. Default 64.
    pub max_channels: usize,
    /// Refuse streams with a higher sample rate than this, in Hz. Default 768000.
    pub max_sample_rate_hz: u32,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            enabled: true,
            sample_rate_hz: SampleRate::Hz(22050),
            channels: Channels::Mono,
            on_damaged: Damaged::Fail,
            extension_mismatch: Mismatch::Fail,
            max_duration_s: 21600.0,
            max_channels: 64,
            max_sample_rate_hz: 768_000,
        }
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

/// `[run]`: how a corpus run behaves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Items processed in parallel; 0 means one per CPU core. Default 0.
    pub jobs: usize,
    /// A failed item is retried on later runs until it has failed this many times. Default 3.
    pub max_attempts: u32,
    /// Feature frames of one item held in memory before they spill to a temp file beside the
    /// outputs, in MiB. Default 256.
    pub feature_memory_mb: u64,
    /// Refuse input files larger than this many bytes (before reading them). Default 16 GiB.
    pub max_input_bytes: u64,
    /// Give up on an item (kind `timeout`) once it has run this many seconds; checked between
    /// decoded blocks. Default 3600.
    pub item_timeout_s: f64,
    /// File extensions a folder (or bucket prefix) input takes when decode is on (`--ext`
    /// overrides); with `decode.enabled = false` every file is taken. A file or glob named
    /// on the command line is always taken. Default: the audio extensions klio-edge decodes.
    pub extensions: Vec<String>,
}

/// `run.extensions` by default: the containers the decoder reads.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "mp2", "ogg", "oga", "opus", "m4a", "mp4", "m4b", "aac", "aif",
    "aiff", "aifc", "caf", "mka", "mkv", "webm",
];

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            jobs: 0,
            max_attempts: 3,
            feature_memory_mb: 256,
            max_input_bytes: 16 << 30,
            item_timeout_s: 3600.0,
            extensions: AUDIO_EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }
    }
}

/// `[output]`: where results go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Output folder (`--out`). Default `features`.
    pub dir: PathBuf,
    /// Ledger file (`--ledger`). Default `<dir>/klio-ledger.sqlite`; required when `dir` is
    /// an object store.
    pub ledger: Option<PathBuf>,
    /// Klio's output-exists check: before fetching an item that this ledger has not finished,
    /// look for its complete outputs (`<dir>/<element>/meta.json` with the same config hash
    /// and input size) and, if found, record it as done instead of recomputing it. `auto`
    /// (default): on when `dir` is an object store; `on`; `off`. `--force` skips the check.
    pub check_existing: CheckExisting,
}

/// `output.check_existing`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckExisting {
    /// On for object-store outputs, off for local folders.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("features"),
            ledger: None,
            check_existing: CheckExisting::Auto,
        }
    }
}

/// Where the config came from, for `config show` and logs.
#[derive(Debug, Clone)]
pub enum Source {
    /// Built-in defaults only.
    Defaults,
    /// A file.
    File(PathBuf),
}

impl Config {
    /// Finds and loads the config: `explicit`, else `$KLIO_CONFIG`, else `./klio-edge.toml` if
    /// present, else the built-in defaults; `${VAR}` and `${VAR:-default}` in the file are
    /// expanded from the environment, then each `--set KEY=VALUE` of `sets` is applied. The
    /// result is validated.
    ///
    /// # Errors
    /// An unreadable file, bad TOML, an unset variable, a bad `--set`, an unknown key or an
    /// invalid value (naming the key).
    pub fn load(explicit: Option<&Path>, sets: &[String]) -> Result<(Config, Source)> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => match std::env::var_os("KLIO_CONFIG") {
                Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
                _ => {
                    let local = PathBuf::from(DEFAULT_CONFIG_FILE);
                    local.is_file().then_some(local)
                }
            },
        };
        let (text, source) = match &path {
            None => (String::new(), Source::Defaults),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let text = expand_env(&text, |v| std::env::var(v).ok())
                    .with_context(|| format!("invalid config file {}", p.display()))?;
                (text, Source::File(p.clone()))
            }
        };
        let mut cfg = if sets.is_empty() {
            Config::from_toml(&text)
        } else {
            Config::from_toml_with_sets(&text, sets)
        }
        .with_context(|| match &path {
            Some(p) => format!("invalid config file {}", p.display()),
            None => "invalid config (built-in defaults with --set)".to_string(),
        })?;
        if let Some(p) = &path {
            // Model files are named relative to the config file.
            let dir = p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            });
            for m in &mut cfg.model {
                m.path = crate::infer::resolve_path(&m.path, dir);
                if let Some(l) = &m.labels {
                    m.labels = Some(crate::infer::resolve_path(l, dir));
                }
            }
        }
        cfg.validate()?;
        Ok((cfg, source))
    }

    /// Parses TOML text and applies `--set KEY=VALUE` overrides: KEY is a dotted path
    /// (`features.n_mels`, `model.0.batch_size` for the first `[[model]]`), VALUE a TOML value
    /// (`4`, `true`, `"text"`, `["log_mel"]`); a VALUE that is not TOML is taken as a string.
    ///
    /// # Errors
    /// Bad TOML, a `--set` without `=` or with a path through a non-table, then what
    /// [`Self::from_toml`] rejects.
    pub fn from_toml_with_sets(text: &str, sets: &[String]) -> Result<Config> {
        let mut root = toml::Value::Table(toml::from_str(text)?);
        for set in sets {
            apply_set(&mut root, set).with_context(|| format!("--set {set}"))?;
        }
        let cfg: Config = root.try_into().context("after the --set overrides")?;
        Ok(cfg)
    }

    /// Parses TOML text (no validation beyond types and key names).
    ///
    /// # Errors
    /// Bad TOML, unknown keys, values of the wrong type.
    pub fn from_toml(text: &str) -> Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Checks every value that can be checked without audio.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<()> {
        let d = &self.decode;
        if !(d.max_duration_s > 0.0 && d.max_duration_s.is_finite()) {
            bail!(
                "decode.max_duration_s: {} must be a positive number of seconds",
                d.max_duration_s
            );
        }
        if d.max_channels == 0 {
            bail!("decode.max_channels: must be at least 1");
        }
        if self.run.max_attempts == 0 {
            bail!("run.max_attempts: must be at least 1");
        }
        if d.max_sample_rate_hz == 0 {
            bail!("decode.max_sample_rate_hz: must be at least 1");
        }
        if let Some(e) = self
            .run
            .extensions
            .iter()
            .find(|e| e.is_empty() || e.contains(['/', '*']))
        {
            bail!("run.extensions: {e:?} is not a file extension (write \"wav\", not \"*.wav\")");
        }
        if self.run.max_input_bytes == 0 {
            bail!("run.max_input_bytes: must be at least 1");
        }
        if !(self.run.item_timeout_s > 0.0 && self.run.item_timeout_s.is_finite()) {
            bail!(
                "run.item_timeout_s: {} must be a positive number of seconds",
                self.run.item_timeout_s
            );
        }
        self.serve.validate()?;
        self.store.validate()?;
        let mut names: Vec<String> = Vec::new();
        for e in &self.exec {
            e.validate()?;
            if self.exec.iter().filter(|o| o.name == e.name).count() > 1 {
                bail!("exec.name: {:?} is used twice", e.name);
            }
            for n in e.outputs.iter().chain(e.stdout.iter()) {
                let clash = names.contains(n)
                    || (self.decode.enabled
                        && self
                            .features
                            .compute
                            .iter()
                            .any(|f| format!("{f}.npy") == *n));
                if clash {
                    bail!("exec {:?}: output {n:?} is produced twice", e.name);
                }
                names.push(n.clone());
            }
        }
        for m in &self.model {
            m.validate()?;
            if self.model.iter().filter(|o| o.name == m.name).count() > 1 {
                bail!("model.name: {:?} is used twice", m.name);
            }
            if !self.decode.enabled {
                bail!(
                    "model {:?}: models need decoded audio (decode.enabled = true)",
                    m.name
                );
            }
            if m.input != "waveform" {
                if !self.features.compute.contains(&m.input) {
                    bail!(
                        "model.input of {:?}: {:?} is neither \"waveform\" nor a feature in \
                         features.compute ({:?})",
                        m.name,
                        m.input,
                        self.features.compute
                    );
                }
                if self.decode.channels != Channels::Mono {
                    bail!(
                        "model.input of {:?}: a feature input needs decode.channels = \"mono\"",
                        m.name
                    );
                }
            }
            if let SampleRate::Hz(hz) = self.decode.sample_rate_hz {
                if hz != m.sample_rate_hz {
                    bail!(
                        "model {:?} needs {} Hz audio but decode.sample_rate_hz is {hz}",
                        m.name,
                        m.sample_rate_hz
                    );
                }
            }
        }
        if !self.decode.enabled {
            if self.exec.is_empty() {
                bail!("decode.enabled = false: nothing to do without an [[exec]] stage");
            }
            return Ok(());
        }
        if self.features.compute.is_empty() && self.exec.is_empty() && self.model.is_empty() {
            bail!("features.compute: at least one feature is needed (or a [[model]] or [[exec]])");
        }
        if self.features.compute.is_empty() {
            return Ok(());
        }
        // Build a plan at the configured rate (or a typical one for "native") so every DSP
        // parameter is checked now, not per item.
        let rate = match d.sample_rate_hz {
            SampleRate::Hz(hz) => hz as f64,
            SampleRate::Native => 2.0 * self.features.fmax_hz.unwrap_or(11025.0).max(1.0),
        };
        let dsp = self.features.to_dsp(rate)?;
        FeaturePlan::new(&dsp).map_err(|e| anyhow::anyhow!("features: {e}"))?;
        Ok(())
    }

    /// The resolved configuration as TOML (defaults filled in).
    pub fn to_toml(&self) -> String {
        let mut resolved = self.clone();
        resolved.features.win_length =
            Some(self.features.win_length.unwrap_or(self.features.n_fft));
        toml::to_string_pretty(&resolved).expect("config serialises")
    }

    /// Hash of everything that determines an item's outputs (decode and feature settings and
    /// [`ALGORITHM_VERSION`]); a change reprocesses finished items.
    pub fn output_hash(&self) -> String {
        self.output_hash_with("")
    }

    /// [`Self::output_hash`] plus `tools`: the identity (path and version or file hash) of
    /// every exec program, so a changed tool reprocesses.
    pub fn output_hash_with(&self, tools: &str) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            algorithm: u32,
            decode: &'a DecodeConfig,
            features: Option<&'a FeaturesConfig>,
            exec: &'a [ExecConfig],
            models: Vec<ModelConfig>,
            tools: &'a str,
        }
        let mut features = self.features.clone();
        features.win_length = Some(features.win_length.unwrap_or(features.n_fft));
        // Binary items (no decode) do not depend on the feature settings.
        let json = crate::infer::for_hash(|| {
            serde_json::to_string(&Hashed {
                algorithm: ALGORITHM_VERSION,
                decode: &self.decode,
                features: self.decode.enabled.then_some(&features),
                exec: &self.exec,
                // The file is identified by its hash (in `tools`), not by where it lies.
                models: self
                    .model
                    .iter()
                    .map(|m| ModelConfig {
                        path: PathBuf::new(),
                        ..m.clone()
                    })
                    .collect(),
                tools,
            })
        })
        .expect("config serialises");
        blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
    }
}

/// Expands `${VAR}` and `${VAR:-default}` with `lookup` (the environment); `$` elsewhere is
/// kept, and so is everything on comment lines.
///
/// # Errors
/// An unset variable without a default, or an unclosed `${`.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                bail!("line {}: `${{` without a closing `}}`", n + 1);
            };
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((name, d)) => (name, Some(d)),
                None => (body, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                bail!("line {}: `${{{body}}}` is not a variable name", n + 1);
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => bail!(
                    "line {}: ${{{name}}} is not set (set it, or write ${{{name}:-default}})",
                    n + 1
                ),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Applies one `KEY=VALUE` to a TOML table (see [`Config::from_toml_with_sets`]).
fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let Some((key, value)) = set.split_once('=') else {
        bail!("expected KEY=VALUE, e.g. --set run.jobs=4");
    };
    let key = key.trim();
    let value = value.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").expect("parsed v"),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("{key:?} is not a dotted key such as features.n_mels");
    }
    let (last, path) = parts.split_last().expect("non-empty");
    let mut here = root;
    for (i, part) in path.iter().enumerate() {
        let so_far = parts[..=i].join(".");
        here = match here {
            toml::Value::Table(t) => t
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default())),
            toml::Value::Array(a) => {
                let idx: usize = part.parse().map_err(|_| {
                    anyhow::anyhow!("{so_far}: an array needs an index (0, 1, ...)")
                })?;
                let len = a.len();
                a.get_mut(idx).ok_or_else(|| {
                    anyhow::anyhow!("{so_far}: index {idx} is past the {len} entries")
                })?
            }
            _ => bail!("{so_far}: not a table"),
        };
    }
    match here {
        toml::Value::Table(t) => {
            t.insert(last.to_string(), value);
        }
        toml::Value::Array(a) => {
            let idx: usize = last
                .parse()
                .map_err(|_| anyhow::anyhow!("{key}: an array needs an index (0, 1, ...)"))?;
            let len = a.len();
            *a.get_mut(idx)
                .ok_or_else(|| anyhow::anyhow!("{key}: index {idx} is past the {len} entries"))? =
                value;
        }
        _ => bail!("{}: not a table", path.join(".")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_variables_expand_with_defaults_and_an_unset_one_is_named() {
        let env = |v: &str| (v == "OUT").then(|| "/data/out".to_string());
        let got = super::expand_env(
            "# ${NOT_EXPANDED}\n[output]\ndir = \"${OUT}\"\nledger = \"${LEDGER:-/tmp/l.sqlite}\"\n",
            env,
        )
        .unwrap();
        assert_eq!(
            got,
            "# ${NOT_EXPANDED}\n[output]\ndir = \"/data/out\"\nledger = \"/tmp/l.sqlite\"\n"
        );
        let err = super::expand_env("x = \"${NOPE}\"\n", env).unwrap_err();
        assert!(err.to_string().contains("${NOPE} is not set"), "{err}");
        assert!(super::expand_env("x = \"${OUT\"\n", env).is_err());
        assert!(super::expand_env("x = \"${1X}\"\n", env).is_err());
    }

    #[test]
    fn set_overrides_take_toml_values_bare_strings_and_array_indexes() {
        let text =
            "[[model]]\nname = \"vad\"\npath = \"m.onnx\"\nsha256 = \"\"\nsample_rate_hz = 16000\n";
        let sets = [
            "run.jobs=3".to_string(),
            "features.compute=[\"mfcc\"]".to_string(),
            "output.dir=elsewhere".to_string(),
            "model.0.name=\"speech\"".to_string(),
        ];
        let cfg = super::Config::from_toml_with_sets(text, &sets).unwrap();
        assert_eq!(cfg.run.jobs, 3);
        assert_eq!(cfg.features.compute, vec!["mfcc".to_string()]);
        assert_eq!(cfg.output.dir, std::path::PathBuf::from("elsewhere"));
        assert_eq!(cfg.model[0].name, "speech");
        for (bad, why) in [
            ("run.jobs", "KEY=VALUE"),
            ("model.1.name=x", "past the 1 entries"),
            ("model.0.name.x=1", "model.0.name: not a table"),
            ("run.jobs.x=1", "run.jobs"),
        ] {
            let err = super::Config::from_toml_with_sets(text, &[bad.to_string()]).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{bad}: {err:#}");
        }
        let err = super::Config::from_toml_with_sets("", &["run.jbos=1".to_string()]).unwrap_err();
        assert!(format!("{err:#}").contains("jbos"), "{err:#}");
    }

    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        let back = Config::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(back.output_hash(), cfg.output_hash());
    }

    #[test]
    fn model_keys_at_their_defaults_show_but_stay_out_of_the_hash() {
        let base = "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = []\n[[model]]\nname = \"m\"\npath = \"m.onnx\"\n";
        let cfg = Config::from_toml(base).unwrap();
        let shown = cfg.to_toml();
        for key in [
            "input = \"waveform\"",
            "pad_last = \"zeros\"",
            "feature_layout = \"time_major\"",
            "batch_size = 1",
            "batch_wait_ms = 0.0",
        ] {
            assert!(shown.contains(key), "config show lacks {key}:\n{shown}");
        }
        let hashed = crate::infer::for_hash(|| serde_json::to_string(&cfg.model[0]).unwrap());
        for key in [
            "input",
            "pad_last",
            "feature_layout",
            "batch_size",
            "batch_wait_ms",
        ] {
            assert!(!hashed.contains(key), "{key} is in the hash: {hashed}");
        }
        // Set away from the default, a key changes the hash; `config show` round-trips.
        let batched = Config::from_toml(&format!("{base}batch_size = 4\n")).unwrap();
        assert_ne!(batched.output_hash(), cfg.output_hash());
        assert_eq!(
            Config::from_toml(&shown).unwrap().output_hash(),
            cfg.output_hash()
        );
    }

    #[test]
    fn shipped_default_config_file_states_the_real_defaults() {
        let shipped = Config::from_toml(include_str!("../config/klio-edge.toml")).unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[features]\nn_ffts = 512\n").unwrap_err();
        assert!(format!("{err:#}").contains("n_ffts"), "{err:#}");
        let err = Config::from_toml("[bogus]\n").unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn bad_values_are_named() {
        let cfg = Config::from_toml("[features]\nwin_length = 4096\n").unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(format!("{err:#}").contains("win_length"), "{err:#}");
        let cfg = Config::from_toml("[features]\ncompute = [\"chroma\"]\n").unwrap();
        assert!(format!("{:#}", cfg.validate().unwrap_err()).contains("chroma"));
        assert!(Config::from_toml("[decode]\nsample_rate_hz = \"fast\"\n").is_err());
        assert!(Config::from_toml("[decode]\nsample_rate_hz = \"native\"\n").is_ok());
    }

    #[test]
    fn output_hash_follows_output_settings_only() {
        let a = Config::default();
        let mut b = a.clone();
        b.run.jobs = 7;
        assert_eq!(a.output_hash(), b.output_hash());
        b.features.n_mels = 64;
        assert_ne!(a.output_hash(), b.output_hash());
    }
}
