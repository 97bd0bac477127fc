//! `meta.json`: what an item's outputs are, what they were computed from and with what.
//! [`ItemMeta`] is written last by the sink's commit (its presence says the item's outputs
//! are complete) and read back by the output-exists check (see `skip.rs`).
//!
//! The file is pretty JSON with every object's keys in sorted order (the order does not
//! follow the struct's fields), newline-terminated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stage::exec::ExecReport;
use crate::stage::infer::Backend;

/// The content of an item's `meta.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ItemMeta {
    /// The element id (the item's folder name).
    pub element: String,
    /// The input's path or URI.
    pub source: String,
    /// Input size in bytes.
    pub input_size: Option<i64>,
    /// Input modification time (ns since the epoch).
    pub input_mtime_ns: Option<i64>,
    /// BLAKE3 of the input bytes.
    pub input_hash: Option<String>,
    /// The output-affecting config hash the outputs were computed with.
    pub config_hash: String,
    /// The klio-edge version that wrote them.
    pub klio_edge_version: String,
    /// The decoded audio and its features (absent for binary items, `decode.enabled = false`).
    #[serde(flatten)]
    pub audio: Option<AudioMeta>,
    /// The `[[model]]` outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelMeta>>,
    /// What each `[[exec]]` program did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<ExecReport>>,
    /// The settings of the stages that ran, as resolved for this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSnapshot>,
}

/// The audio facts of an item (flattened into `meta.json`'s top level).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioMeta {
    /// Seconds of audio at the output rate.
    pub duration_s: f64,
    /// The rate of the PCM the features were computed from.
    pub sample_rate_hz: u32,
    /// Its channel count.
    pub channels: usize,
    /// Samples per channel handed on.
    pub samples: u64,
    /// Feature frames on the `hop_length` grid (none without such a feature).
    pub frames: Option<u64>,
    /// `features.hop_length`.
    pub hop_length: usize,
    /// Feature frames per second.
    pub frame_rate_hz: f64,
    /// The file's own rate.
    pub source_sample_rate_hz: u32,
    /// The file's own channel count.
    pub source_channels: usize,
    /// Container short name.
    pub container: String,
    /// Codec short name.
    pub codec: String,
    /// Bits per sample where the codec has them.
    pub bits_per_sample: Option<u32>,
    /// Each feature's file and shape, by feature name.
    pub features: BTreeMap<String, FeatureFile>,
    /// Problems tolerated while decoding.
    pub warnings: Vec<String>,
    /// The DSP kernels' instruction set.
    pub dsp_isa: String,
}

/// One feature's file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureFile {
    /// File name in the item's folder.
    pub file: String,
    /// Its shape (librosa's orientation, `[dim, frames]`, with a leading channel axis for
    /// `channels = "keep"`).
    pub shape: Vec<usize>,
    /// Always `float32`.
    pub dtype: String,
}

/// One model's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// `[[model]]` name.
    pub name: String,
    /// SHA-256 of the model file.
    pub sha256: String,
    /// The runtime that ran it.
    pub backend: Backend,
    /// Chunks it saw.
    pub chunks: usize,
    /// The main output file (`<name>.json` for segments and labels, else `<name>.npy`).
    pub file: String,
    /// The file of per-chunk values or scores, if any.
    pub values: Option<String>,
    /// Segments found (`output = "segments"`).
    pub segments: Option<usize>,
}

/// The settings recorded with the outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// `[decode]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode: Option<serde_json::Value>,
    /// `[features]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<serde_json::Value>,
    /// `[[exec]]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_json::Value>,
}

impl ItemMeta {
    /// The bytes of `meta.json`: pretty JSON, keys sorted, newline-terminated.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Through a Value: serde_json's maps keep their keys sorted, at every level.
        let value = serde_json::to_value(self).expect("meta serialises");
        let mut text = serde_json::to_vec_pretty(&value).expect("meta serialises");
        text.push(b'\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_binary_items_have_no_audio_keys() {
        let meta = ItemMeta {
            element: "e".into(),
            config_hash: "c".into(),
            ..ItemMeta::default()
        };
        let text = String::from_utf8(meta.to_json_bytes()).unwrap();
        assert!(text.ends_with("}\n"));
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("  \"")?.split('"').next())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert!(!text.contains("duration_s"), "{text}");
        assert!(!text.contains("models"), "{text}");
    }

    #[test]
    fn round_trips_with_audio() {
        let meta = ItemMeta {
            element: "e".into(),
            input_size: Some(3),
            audio: Some(AudioMeta {
                duration_s: 1.5,
                frames: Some(10),
                ..AudioMeta::default()
            }),
            ..ItemMeta::default()
        };
        let back: ItemMeta = serde_json::from_slice(&meta.to_json_bytes()).unwrap();
        assert_eq!(back, meta);
    }
}
