//! `[decode]`: how the decode stage reads a file and what PCM it hands on.

use serde::{Deserialize, Serialize};

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
    /// Refuse streams with a lower sample rate than this, in Hz, before decoding (a 64-byte
    /// file at 1 Hz would otherwise resample to hundreds of MB). Default 1000.
    pub min_sample_rate_hz: u32,
}

/// What the config hash reads of `[decode]`: the keys that existed when ledgers were first
/// written, in their order. Later keys that only refuse inputs (`min_sample_rate_hz`) change
/// no output, so no config hash changed when they came.
#[derive(Serialize)]
pub struct DecodeHashView {
    enabled: bool,
    sample_rate_hz: SampleRate,
    channels: Channels,
    on_damaged: Damaged,
    extension_mismatch: Mismatch,
    max_duration_s: f64,
    max_channels: usize,
    max_sample_rate_hz: u32,
}

impl DecodeConfig {
    /// See [`DecodeHashView`].
    pub fn hash_view(&self) -> DecodeHashView {
        DecodeHashView {
            enabled: self.enabled,
            sample_rate_hz: self.sample_rate_hz,
            channels: self.channels,
            on_damaged: self.on_damaged,
            extension_mismatch: self.extension_mismatch,
            max_duration_s: self.max_duration_s,
            max_channels: self.max_channels,
            max_sample_rate_hz: self.max_sample_rate_hz,
        }
    }
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
            min_sample_rate_hz: 1000,
        }
    }
}
