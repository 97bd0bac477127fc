//! Infer stage: ONNX models declared in `[[model]]` tables, loaded once per process and run
//! over each item's decoded waveform as it streams by, in fixed chunks with optional context
//! and recurrent state carried across chunks. Outputs are per-chunk values (`.npy`) and, for
//! `output = "segments"`, time segments in JSON (Silero VAD's rules).
//!
//! Backends: tract (pure Rust, in every build, the default) and ONNX Runtime (`backend =
//! "ort"`, cargo feature `ort`: the library is loaded at run time, see [`crate::stage::infer::ort`]).
//! Both run the same chunks with the same state and give the same values within 1e-4
//! (tested on Silero VAD over real speech).

pub mod batch;
#[cfg(feature = "ort")]
pub mod ort;

use crate::pipeline::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

/// Which runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// tract, compiled in (the default).
    Tract,
    /// ONNX Runtime, loaded at run time (cargo feature `ort`).
    Ort,
}

/// Where an ONNX Runtime model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceName {
    /// CPU (default).
    #[default]
    Cpu,
    /// CUDA; falls back to CPU with a warning when unavailable.
    Cuda,
}

/// `[infer]`: settings shared by every model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct InferConfig {
    /// ONNX Runtime shared library for `backend = "ort"`. "" = `$ORT_DYLIB_PATH`, else
    /// `libonnxruntime.so` on the library path. Default "".
    pub ort_library: String,
}

/// What the model's output becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// The first output's first value per chunk, as `<name>.npy` (`[chunks]`).
    Tensor,
    /// Per-chunk probabilities (`<name>_probs.npy`) turned into speech segments
    /// (`<name>.json`), as Silero VAD's `get_speech_timestamps`.
    Segments,
    /// The first output's vectors averaged over the item's chunks: `<name>.npy` (`[dim]`).
    Embedding,
    /// The first output's scores averaged over the chunks, the `top_k` highest named from the
    /// `labels` file: `<name>.json`, plus `<name>_scores.npy` (`[dim]`).
    Labels,
}

/// Recurrent state carried from one chunk to the next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Shape of the state tensor (f32, zeros at the start of each item), e.g. `[2, 1, 128]`.
    pub shape: Vec<usize>,
    /// The state's batch axis (where `shape` has 1), e.g. 1 for Silero's `[2, batch, 128]`:
    /// with `batch_size > 1`, chunks of several items share a call, each item's state a row
    /// along this axis. Default none (one chunk per call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_axis: Option<usize>,
}

/// `[model.segments]`: Silero's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// Speech starts at a chunk with probability >= this. Default 0.5.
    pub threshold: f64,
    /// Speech ends below this. Default `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f64>,
    /// Shorter speech is dropped. Default 250 ms.
    pub min_speech_ms: f64,
    /// Silence shorter than this does not end speech. Default 100 ms.
    pub min_silence_ms: f64,
    /// Padding added on both sides of each segment. Default 30 ms.
    pub speech_pad_ms: f64,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_ms: 250.0,
            min_silence_ms: 100.0,
            speech_pad_ms: 30.0,
        }
    }
}

/// One `[[model]]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name (letters, digits, `-`, `_`): output file stem. Required.
    pub name: String,
    /// ONNX file; a relative path is relative to the config file's folder. Required.
    pub path: PathBuf,
    /// Expected SHA-256 of the file (hex); checked at load. Default: not checked.
    #[serde(default)]
    pub sha256: Option<String>,
    /// `"tract"` (default) or `"ort"`.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// Sample rate the model expects; `decode.sample_rate_hz` must equal it. Default 16000.
    #[serde(default = "default_rate")]
    pub sample_rate_hz: u32,
    /// What the model reads: `"waveform"` (default; mono samples, input `[batch, window]`) or
    /// the name of a feature in `features.compute` (frames of it, input `[batch, frames,
    /// dim]` or `[batch, dim, frames]`, see `feature_layout`).
    #[serde(default = "default_input")]
    pub input: String,
    /// Chunk length in seconds (rounded to whole samples or feature frames). Needed for a
    /// feature input; for a waveform, `window_samples` + `context_samples` is the
    /// sample-exact alternative. Default: not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    /// Seconds from one chunk's start to the next (with `window_s`); below `window_s` chunks
    /// overlap. Default `window_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_s: Option<f64>,
    /// Waveform: new samples per chunk (the hop). Default 512 unless `window_s` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_samples: Option<usize>,
    /// Samples of the previous chunk prepended to each chunk (zeros before the first).
    /// Default 0.
    #[serde(default)]
    pub context_samples: usize,
    /// The last chunk, when the item ends inside it: `"zeros"` (default: padded with
    /// zeros) or `"drop"` (left out; an item shorter than one chunk then fails as
    /// `too_short`).
    #[serde(default)]
    pub pad_last: PadLast,
    /// Feature input: `"time_major"` (default, `[batch, frames, dim]`) or
    /// `"feature_major"` (`[batch, dim, frames]`, librosa's orientation).
    #[serde(default)]
    pub feature_layout: FeatureLayout,
    /// Chunks per model call (the model's first axis must then be free). Chunks of several
    /// items are batched together (see `batch_wait_ms`). Not with `state` (each item carries
    /// its own). Default 1.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// How long a part-filled batch waits for other items' chunks. Default 0: a call takes
    /// what is queued (chunks that came in while the previous call ran).
    #[serde(default = "default_batch_wait")]
    pub batch_wait_ms: f64,
    /// Recurrent state: second input, second output. Default none.
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// `"segments"` (default) or `"tensor"`.
    #[serde(default = "default_output")]
    pub output: OutputKind,
    /// Segment rules for `output = "segments"`.
    #[serde(default)]
    pub segments: SegmentsConfig,
    /// `output = "labels"`: a text file with one label per line, line i naming output i
    /// (relative to the config file). Default none.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// `output = "labels"`: how many labels to keep. Default 5.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Intra-op threads of an ONNX Runtime session (one session per worker, so `--jobs`
    /// workers use `jobs x threads` cores). tract runs on the worker's thread. Default 1.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// `backend = "ort"`: `cpu` (default) or `cuda` (CPU, with a warning, when unavailable).
    #[serde(default)]
    pub device: DeviceName,
}

fn default_threads() -> usize {
    1
}
fn default_input() -> String {
    "waveform".into()
}
fn default_batch() -> usize {
    1
}
fn default_batch_wait() -> f64 {
    0.0
}

/// The view of a `[[model]]` that the config hash serialises: the file is identified by its
/// hash (elsewhere in the hash), not by where it lies, and the keys added after ledgers
/// existed are left out where they hold their defaults, so adding those keys changed no
/// existing config hash. `config show` writes [`ModelConfig`] itself, every key included.
#[derive(Serialize)]
pub struct ModelHashView<'a> {
    name: &'a str,
    path: &'a str,
    sha256: &'a Option<String>,
    backend: Backend,
    sample_rate_hz: u32,
    #[serde(skip_serializing_if = "is_waveform")]
    input: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hop_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_samples: Option<usize>,
    context_samples: usize,
    #[serde(skip_serializing_if = "is_default")]
    pad_last: PadLast,
    #[serde(skip_serializing_if = "is_default")]
    feature_layout: FeatureLayout,
    #[serde(skip_serializing_if = "is_one")]
    batch_size: usize,
    #[serde(skip_serializing_if = "is_default")]
    batch_wait_ms: f64,
    state: &'a Option<StateConfig>,
    output: OutputKind,
    segments: &'a SegmentsConfig,
    labels: &'a Option<PathBuf>,
    top_k: usize,
    threads: usize,
    device: DeviceName,
}

impl ModelConfig {
    /// What the config hash reads of this model (see [`ModelHashView`]).
    pub fn hash_view(&self) -> ModelHashView<'_> {
        ModelHashView {
            name: &self.name,
            path: "",
            sha256: &self.sha256,
            backend: self.backend,
            sample_rate_hz: self.sample_rate_hz,
            input: &self.input,
            window_s: self.window_s,
            hop_s: self.hop_s,
            window_samples: self.window_samples,
            context_samples: self.context_samples,
            pad_last: self.pad_last,
            feature_layout: self.feature_layout,
            batch_size: self.batch_size,
            batch_wait_ms: self.batch_wait_ms,
            state: &self.state,
            output: self.output,
            segments: &self.segments,
            labels: &self.labels,
            top_k: self.top_k,
            threads: self.threads,
            device: self.device,
        }
    }
}

fn is_waveform(s: &&str) -> bool {
    *s == "waveform"
}
fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `pad_last`: what happens to a last chunk the item ends inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PadLast {
    /// Padded with zeros (default).
    #[default]
    Zeros,
    /// Left out.
    Drop,
}

/// `feature_layout`: the axis order of a feature input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FeatureLayout {
    /// `[batch, frames, dim]` (default).
    #[default]
    TimeMajor,
    /// `[batch, dim, frames]`.
    FeatureMajor,
}

fn default_top_k() -> usize {
    5
}

fn default_backend() -> Backend {
    Backend::Tract
}
fn default_rate() -> u32 {
    16000
}
fn default_output() -> OutputKind {
    OutputKind::Segments
}

impl ModelConfig {
    /// Checks names and ranges (the file is checked at load).
    ///
    /// # Errors
    /// The first invalid value, naming the model and key.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        crate::item::check_stage_name("model.name", n)?;
        if self.backend == Backend::Ort && !cfg!(feature = "ort") {
            bail!(
                "model {n:?}: backend \"ort\" (ONNX Runtime) is not built into this binary \
                 (the static build leaves it out: it loads a shared library); use backend = \"tract\""
            );
        }
        if self.device == DeviceName::Cuda && self.backend != Backend::Ort {
            bail!("model.device of {n:?}: \"cuda\" needs backend = \"ort\"");
        }
        if self.output == OutputKind::Labels && self.labels.is_none() {
            bail!("model.labels of {n:?}: output = \"labels\" needs a labels file");
        }
        if self.top_k == 0 {
            bail!("model.top_k of {n:?}: must be at least 1");
        }
        if !(1..=256).contains(&self.threads) {
            bail!("model.threads of {n:?}: must be in 1..=256");
        }
        if let Some(w) = self.window_samples {
            if !(1..=1 << 20).contains(&w) {
                bail!("model.window_samples of {n:?}: must be in 1..=1048576");
            }
        }
        if self.context_samples > 1 << 20 {
            bail!("model.context_samples of {n:?}: must be at most 1048576");
        }
        match (self.window_s, self.hop_s) {
            (Some(_), _) if self.window_samples.is_some() || self.context_samples > 0 => bail!(
                "model {n:?}: window_s cannot be combined with window_samples / context_samples \
                 (use one way to set the chunks)"
            ),
            (None, Some(_)) => bail!("model.hop_s of {n:?}: needs window_s"),
            (None, None) if self.input != "waveform" => {
                bail!("model.window_s of {n:?}: a feature input needs its chunk length in seconds")
            }
            _ => {}
        }
        for (key, v) in [("window_s", self.window_s), ("hop_s", self.hop_s)] {
            if let Some(v) = v {
                if !(v > 0.0 && v <= 3600.0) {
                    bail!("model.{key} of {n:?}: must be in (0, 3600] seconds, not {v}");
                }
            }
        }
        if !(1..=4096).contains(&self.batch_size) {
            bail!("model.batch_size of {n:?}: must be in 1..=4096");
        }
        if let Some(st) = &self.state {
            match st.batch_axis {
                None if self.batch_size > 1 => bail!(
                    "model.batch_size of {n:?}: a model with state batches chunks of several \
                     items only along the state's batch axis; set state.batch_axis (e.g. 1 for \
                     a [2, batch, 128] state) or batch_size = 1"
                ),
                Some(a) if st.shape.get(a) != Some(&1) => bail!(
                    "model.state.batch_axis of {n:?}: axis {a} of shape {:?} must exist and be 1 \
                     (one item's row)",
                    st.shape
                ),
                _ => {}
            }
        }
        if !(0.0..=10_000.0).contains(&self.batch_wait_ms) {
            bail!("model.batch_wait_ms of {n:?}: must be in 0..=10000");
        }
        if let Some(s) = &self.state {
            if s.shape.is_empty() || s.shape.iter().product::<usize>() > 1 << 24 {
                bail!(
                    "model.state.shape of {n:?}: {:?} is empty or too large",
                    s.shape
                );
            }
        }
        let s = &self.segments;
        if !(0.0..=1.0).contains(&s.threshold) {
            bail!("model.segments.threshold of {n:?}: must be in 0..=1");
        }
        if s.min_speech_ms < 0.0 || s.min_silence_ms < 0.0 || s.speech_pad_ms < 0.0 {
            bail!("model.segments of {n:?}: durations must be >= 0");
        }
        Ok(())
    }
}

/// Why a model failed an item.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The item's audio is not at the model's rate.
    #[error("model {model}: audio is at {got} Hz, the model needs {want} Hz (set decode.sample_rate_hz)")]
    Rate {
        /// Model name.
        model: String,
        /// The item's rate.
        got: u32,
        /// The model's rate.
        want: u32,
    },
    /// The runtime refused a chunk (wrong shapes, unsupported op at run time).
    #[error("model {model}: {message}")]
    Run {
        /// Model name.
        model: String,
        /// The runtime's message.
        message: String,
    },
    /// `pad_last = "drop"` and the item is shorter than one chunk.
    #[error("model {model}: the item has {frames} input frame(s), shorter than one chunk of {win} (pad_last = \"drop\")")]
    TooShort {
        /// Model name.
        model: String,
        /// Input frames (samples for a waveform).
        frames: u64,
        /// Frames per chunk.
        win: usize,
    },
    /// The model produced NaN or infinity.
    #[error("model {model}: non-finite output at chunk {chunk}")]
    NonFinite {
        /// Model name.
        model: String,
        /// Chunk index.
        chunk: usize,
    },
}

impl InferError {
    /// The ledger's `error_kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InferError::Rate { .. } => ErrorKind::ModelRate,
            InferError::Run { .. } => ErrorKind::ModelRun,
            InferError::TooShort { .. } => ErrorKind::TooShort,
            InferError::NonFinite { .. } => ErrorKind::ModelNonFinite,
        }
    }
}

type Plan = TypedSimplePlan;

/// A model loaded in its runtime.
enum Runtime {
    Tract(Arc<Plan>),
    #[cfg(feature = "ort")]
    Ort(crate::stage::infer::ort::OrtModel),
}

/// A loaded model, shared by all workers.
pub struct LoadedModel {
    cfg: ModelConfig,
    runtime: Runtime,
    sha256: String,
    labels: Vec<String>,
    /// `batch_size > 1`: the queue that batches chunks across items.
    batcher: Option<crate::stage::infer::batch::Batcher>,
}

/// Every configured model, loaded once.
pub struct InferStage {
    models: Vec<LoadedModel>,
    identity: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl InferStage {
    /// Reads, checks (SHA-256) and optimises every model.
    ///
    /// # Errors
    /// A missing file, a hash mismatch, or a model the runtime cannot load.
    pub fn new(cfgs: &[ModelConfig], infer: &InferConfig) -> Result<Self> {
        let _ = infer;
        let mut models = Vec::new();
        let mut identity = String::new();
        for cfg in cfgs {
            let n = &cfg.name;
            let bytes = std::fs::read(&cfg.path)
                .with_context(|| format!("model {n:?}: cannot read {}", cfg.path.display()))?;
            let sha = sha256_hex(&bytes);
            if let Some(want) = &cfg.sha256 {
                if !want.eq_ignore_ascii_case(&sha) {
                    bail!(
                        "model {n:?}: {} has SHA-256 {sha}, the config expects {want} \
                         (wrong or corrupt file)",
                        cfg.path.display()
                    );
                }
            }
            let runtime = match cfg.backend {
                Backend::Tract => Runtime::Tract(load_tract(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "model {n:?}: tract cannot load {}: {e:#}",
                        cfg.path.display()
                    )
                })?),
                #[cfg(feature = "ort")]
                Backend::Ort => {
                    let device = match cfg.device {
                        DeviceName::Cpu => crate::stage::infer::ort::Device::Cpu,
                        DeviceName::Cuda => crate::stage::infer::ort::Device::Cuda,
                    };
                    let lib = crate::stage::infer::ort::library(&infer.ort_library);
                    Runtime::Ort(
                        crate::stage::infer::ort::OrtModel::load(
                            n,
                            bytes,
                            cfg.threads,
                            device,
                            &lib,
                        )
                        .map_err(anyhow::Error::msg)?,
                    )
                }
                #[cfg(not(feature = "ort"))]
                Backend::Ort => bail!("model {n:?}: backend \"ort\" is not built into this binary"),
            };
            // The backend joins the identity: a model moved to another runtime reprocesses.
            identity.push_str(&format!("model:{n}:{sha}:{:?}\n", cfg.backend));
            let labels = match &cfg.labels {
                None => Vec::new(),
                Some(p) => {
                    let text = std::fs::read_to_string(p).with_context(|| {
                        format!("model {n:?}: cannot read labels {}", p.display())
                    })?;
                    // The labels file joins the identity: relabelled outputs reprocess.
                    identity.push_str(&format!("labels:{}\n", sha256_hex(text.as_bytes())));
                    text.lines().map(|l| l.trim().to_string()).collect()
                }
            };
            let batcher = (cfg.batch_size > 1).then(|| {
                let rows = cfg.state.as_ref().and_then(|s| {
                    s.batch_axis
                        .map(|a| crate::stage::infer::batch::StateRows::of(&s.shape, a))
                });
                crate::stage::infer::batch::Batcher::new(
                    cfg.batch_size,
                    Duration::from_secs_f64(cfg.batch_wait_ms / 1000.0),
                    rows,
                )
            });
            models.push(LoadedModel {
                cfg: cfg.clone(),
                runtime,
                sha256: sha,
                labels,
                batcher,
            });
        }
        Ok(InferStage { models, identity })
    }

    /// Whether any model is configured.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Model names and file hashes, for the config hash.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One runner per model for an item whose audio is at `rate` Hz; feature inputs come
    /// in frames `feature_hop` samples apart.
    ///
    /// # Errors
    /// [`InferError::Rate`] when the rate is not the model's.
    pub fn start(&self, rate: u32, feature_hop: usize) -> Result<Vec<ModelRun<'_>>, InferError> {
        self.models
            .iter()
            .map(|m| {
                let cfg = &m.cfg;
                if cfg.sample_rate_hz != rate {
                    return Err(InferError::Rate {
                        model: cfg.name.clone(),
                        got: rate,
                        want: cfg.sample_rate_hz,
                    });
                }
                let Geometry {
                    win,
                    hop,
                    lead,
                    frame_samples,
                } = Geometry::of(cfg, feature_hop);
                let state = cfg
                    .state
                    .as_ref()
                    .map(|s| vec![0.0f32; s.shape.iter().product()]);
                #[cfg(feature = "ort")]
                let session = match &m.runtime {
                    Runtime::Ort(o) => Some(o.checkout().map_err(|message| InferError::Run {
                        model: cfg.name.clone(),
                        message,
                    })?),
                    Runtime::Tract(_) => None,
                };
                if let Some(b) = &m.batcher {
                    b.enter();
                }
                Ok(ModelRun {
                    model: m,
                    #[cfg(feature = "ort")]
                    session,
                    tract: None,
                    dim: usize::from(cfg.input == "waveform"),
                    win,
                    hop,
                    frame_samples,
                    buf: Vec::new(),
                    start: 0,
                    skip: 0,
                    frames_in: 0,
                    lead,
                    covered: 0,
                    chunks: 0,
                    queue: Vec::new(),
                    queued: 0,
                    state,
                    values: Vec::new(),
                    rows: Vec::new(),
                    row: 0,
                    sums: Vec::new(),
                })
            })
            .collect()
    }
}

/// One model over one item: its waveform (mono samples) or one of its features (frames).
///
/// The input is cut into chunks of `win` frames every `hop` frames, after `lead` frames of
/// zeros (the context before the first chunk); chunks wait in `queue` until a batch is full.
pub struct ModelRun<'m> {
    model: &'m LoadedModel,
    #[cfg(feature = "ort")]
    session: Option<::ort::session::Session>,
    /// tract's run state, kept from call to call (built on the first).
    tract: Option<TypedSimpleState>,
    /// Values per frame (1 for a waveform; 0 until a feature's first frames arrive).
    dim: usize,
    win: usize,
    hop: usize,
    /// Samples per frame (1, or the feature hop), for times.
    frame_samples: usize,
    /// Frames from `start` (in frames) on are the next chunk's.
    buf: Vec<f32>,
    start: usize,
    /// Frames still to skip before the next chunk (when `hop > win`).
    skip: usize,
    /// Real frames pushed.
    frames_in: u64,
    lead: usize,
    /// Frames (counting `lead`) covered by the chunks so far.
    covered: u64,
    chunks: usize,
    queue: Vec<f32>,
    queued: usize,
    state: Option<Vec<f32>>,
    /// The first output value per chunk.
    values: Vec<f32>,
    /// `tensor`: every output value per chunk, `row` per chunk.
    rows: Vec<f32>,
    row: usize,
    /// Per-index sums of the first output over the chunks (embedding and labels).
    sums: Vec<f64>,
}

/// What a model produced for an item.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// Model name.
    pub name: String,
    /// SHA-256 of the model file.
    pub sha256: String,
    /// One value per chunk.
    pub values: Vec<f32>,
    /// `tensor`: every output value of every chunk, `[chunks, row]`.
    pub rows: Vec<f32>,
    /// `tensor`: output values per chunk.
    pub row: usize,
    /// `embedding` and `labels`: the first output averaged over the chunks.
    pub pooled: Option<Vec<f32>>,
    /// `labels`: (label, score, index), best first, at most `top_k`.
    pub labels: Option<Vec<(String, f32, usize)>>,
    /// Segments in samples, for `output = "segments"`.
    pub segments: Option<Vec<(u64, u64)>>,
    /// Samples seen.
    pub samples: u64,
    /// Samples from one chunk's start to the next.
    pub step_samples: usize,
    /// The model's config.
    pub cfg: ModelConfig,
}

impl ModelRun<'_> {
    /// Whether this model reads the waveform (else a feature, named by its config).
    pub fn wants_waveform(&self) -> bool {
        self.model.cfg.input == "waveform"
    }

    /// The feature this model reads (`"waveform"` for the waveform).
    pub fn input(&self) -> &str {
        &self.model.cfg.input
    }

    /// Feeds mono samples at the model's rate; full chunks run as batches fill.
    ///
    /// # Errors
    /// The runtime fails or the output is not finite.
    pub fn push(&mut self, mono: &[f32]) -> Result<(), InferError> {
        self.push_frames(mono, 1)
    }

    /// Feeds frames of `dim` values each, frame after frame.
    ///
    /// # Errors
    /// As [`Self::push`]; frames of another width than before.
    pub fn push_frames(&mut self, data: &[f32], dim: usize) -> Result<(), InferError> {
        if self.dim == 0 {
            self.dim = dim;
        }
        if dim == 0 || dim != self.dim || !data.len().is_multiple_of(dim) {
            return Err(self.fail(format!(
                "input frames of {dim} values where {} were expected",
                self.dim
            )));
        }
        if self.frames_in == 0 && self.buf.is_empty() {
            self.buf.resize(self.lead * dim, 0.0);
        }
        self.frames_in += (data.len() / dim) as u64;
        let mut rest = data;
        if self.skip > 0 {
            let n = self.skip.min(rest.len() / dim);
            self.skip -= n;
            rest = &rest[n * dim..];
        }
        self.buf.extend_from_slice(rest);
        let (win, hop) = (self.win * dim, self.hop * dim);
        while self.buf.len() - self.start >= win {
            self.emit_chunk()?;
            if hop <= win {
                self.start += hop;
            } else {
                self.start += win;
                let extra = hop - win;
                let have = self.buf.len() - self.start;
                let n = extra.min(have);
                self.start += n;
                self.skip = (extra - n) / dim;
            }
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(())
    }

    fn fail(&self, message: String) -> InferError {
        InferError::Run {
            model: self.model.cfg.name.clone(),
            message,
        }
    }

    /// Queues the chunk at `start` (zero-padded to `win` frames), in the model's layout.
    fn emit_chunk(&mut self) -> Result<(), InferError> {
        let (dim, win) = (self.dim, self.win);
        let end = (self.start + win * dim).min(self.buf.len());
        let frames = &self.buf[self.start..end];
        let base = self.queue.len();
        if dim > 1 && self.model.cfg.feature_layout == FeatureLayout::FeatureMajor {
            self.queue.resize(base + win * dim, 0.0);
            for (t, frame) in frames.chunks(dim).enumerate() {
                for (d, v) in frame.iter().enumerate() {
                    self.queue[base + d * win + t] = *v;
                }
            }
        } else {
            self.queue.extend_from_slice(frames);
            self.queue.resize(base + win * dim, 0.0);
        }
        self.covered = (self.chunks as u64) * self.hop as u64 + win as u64;
        self.chunks += 1;
        self.queued += 1;
        // A chunk of a model with state needs the state its predecessor left: it runs now
        // (batched with other items' chunks when the model batches).
        if self.queued >= self.model.cfg.batch_size || self.state.is_some() {
            self.flush()?;
        }
        Ok(())
    }

    /// Runs the queued chunks (through the model's batcher when it has one).
    fn flush(&mut self) -> Result<(), InferError> {
        if self.queued == 0 {
            return Ok(());
        }
        let n = std::mem::take(&mut self.queued);
        let model = self.model;
        let cfg = &model.cfg;
        let mut shape = vec![n, self.win];
        if self.dim > 1 || cfg.input != "waveform" {
            if cfg.feature_layout == FeatureLayout::FeatureMajor {
                shape = vec![n, self.dim, self.win];
            } else {
                shape.push(self.dim);
            }
        }
        let mut st_shape = cfg.state.as_ref().map_or(Vec::new(), |s| s.shape.clone());
        let batch_axis = cfg.state.as_ref().and_then(|s| s.batch_axis);
        let state = self.state.take();
        #[cfg(feature = "ort")]
        let session = &mut self.session;
        let tract_state = &mut self.tract;
        let mut exec = |x: &[f32], n: usize, st: &[f32]| -> Result<(Vec<f32>, Vec<f32>), String> {
            shape[0] = n;
            if let Some(a) = batch_axis {
                st_shape[a] = n;
            }
            let st = (!st_shape.is_empty()).then_some((st_shape.as_slice(), st));
            let (out, next) = match &model.runtime {
                Runtime::Tract(plan) => {
                    if tract_state.is_none() {
                        *tract_state = Some(plan.spawn().map_err(|e| format!("{e:#}"))?);
                    }
                    run_tract(tract_state.as_mut().expect("set above"), x, &shape, st)?
                }
                #[cfg(feature = "ort")]
                Runtime::Ort(o) => {
                    let s = session.as_mut().ok_or("no ONNX Runtime session")?;
                    o.run(s, x, &shape, st)?
                }
            };
            Ok((out, next.unwrap_or_default()))
        };
        // Without a batcher the queue's buffer is kept for the next chunks.
        let had_state = state.is_some();
        let state = state.unwrap_or_default();
        let out = match &model.batcher {
            Some(b) => b.run(n, std::mem::take(&mut self.queue), state, &mut exec),
            None => exec(&self.queue, n, &state),
        };
        self.queue.clear();
        let (out, next_state) = out.map_err(|m| self.fail(m))?;
        if had_state {
            self.state = Some(next_state);
        }
        if out.is_empty() || !out.len().is_multiple_of(n) {
            return Err(self.fail(format!(
                "{n} chunk(s) gave {} output values: not one row per chunk",
                out.len()
            )));
        }
        let row = out.len() / n;
        for r in out.chunks(row) {
            self.consume(r)?;
        }
        Ok(())
    }

    /// Takes one chunk's output row.
    fn consume(&mut self, out: &[f32]) -> Result<(), InferError> {
        let cfg = &self.model.cfg;
        if !out.iter().all(|v| v.is_finite()) {
            return Err(InferError::NonFinite {
                model: cfg.name.clone(),
                chunk: self.values.len(),
            });
        }
        self.values.push(out[0]);
        if cfg.output == OutputKind::Tensor {
            if self.row == 0 {
                self.row = out.len();
            }
            if self.row != out.len() {
                return Err(self.fail(format!(
                    "output size changed from {} to {} between chunks",
                    self.row,
                    out.len()
                )));
            }
            self.rows.extend_from_slice(out);
        }
        if matches!(cfg.output, OutputKind::Embedding | OutputKind::Labels) {
            if self.sums.is_empty() {
                self.sums = vec![0.0; out.len()];
                if cfg.output == OutputKind::Labels && self.model.labels.len() != out.len() {
                    return Err(self.fail(format!(
                        "the model gives {} scores but the labels file has {} lines",
                        out.len(),
                        self.model.labels.len()
                    )));
                }
            }
            if self.sums.len() != out.len() {
                return Err(self.fail(format!(
                    "output size changed from {} to {} between chunks",
                    self.sums.len(),
                    out.len()
                )));
            }
            for (s, v) in self.sums.iter_mut().zip(out) {
                *s += f64::from(*v);
            }
        }
        Ok(())
    }

    /// Runs the last chunk (zero-padded, unless `pad_last = "drop"`) and what is still
    /// queued, and returns the values (and segments, pooled vectors, labels).
    ///
    /// # Errors
    /// As [`Self::push`]; `pad_last = "drop"` and the item is shorter than one chunk.
    pub fn finish(mut self) -> Result<ModelOutput, InferError> {
        let end = self.lead as u64 + self.frames_in;
        let uncovered = self.frames_in > 0
            && end > self.covered.max(self.lead as u64)
            && self.skip == 0
            && self.buf.len() > self.lead * self.dim * usize::from(self.chunks == 0);
        if uncovered && self.model.cfg.pad_last == PadLast::Zeros {
            self.emit_chunk()?;
        }
        self.flush()?;
        let cfg = &self.model.cfg;
        if self.chunks == 0 && self.frames_in > 0 && cfg.pad_last == PadLast::Drop {
            return Err(InferError::TooShort {
                model: cfg.name.clone(),
                frames: self.frames_in,
                win: self.win,
            });
        }
        let samples = self.frames_in * self.frame_samples as u64;
        let step = self.hop * self.frame_samples;
        let segments = (cfg.output == OutputKind::Segments).then(|| {
            speech_segments(
                &self.values,
                cfg.sample_rate_hz,
                step,
                samples,
                &cfg.segments,
            )
        });
        let n = self.values.len().max(1) as f64;
        let pooled = matches!(cfg.output, OutputKind::Embedding | OutputKind::Labels).then(|| {
            self.sums
                .iter()
                .map(|s| (s / n) as f32)
                .collect::<Vec<f32>>()
        });
        let labels = (cfg.output == OutputKind::Labels).then(|| {
            let scores = pooled.as_deref().unwrap_or_default();
            let mut idx: Vec<usize> = (0..scores.len()).collect();
            idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            idx.into_iter()
                .take(cfg.top_k)
                .map(|i| (self.model.labels[i].clone(), scores[i], i))
                .collect()
        });
        Ok(ModelOutput {
            name: cfg.name.clone(),
            sha256: self.model.sha256.clone(),
            pooled,
            labels,
            values: std::mem::take(&mut self.values),
            rows: std::mem::take(&mut self.rows),
            row: self.row,
            segments,
            samples,
            step_samples: step,
            cfg: cfg.clone(),
        })
    }
}

/// How a model's input is cut: `win` frames every `hop`, after `lead` frames of zeros; a
/// frame is `frame_samples` samples apart.
struct Geometry {
    win: usize,
    hop: usize,
    lead: usize,
    frame_samples: usize,
}

impl Geometry {
    /// For audio at the model's rate (items at any other rate are refused).
    fn of(cfg: &ModelConfig, feature_hop: usize) -> Self {
        let frame_samples = if cfg.input == "waveform" {
            1
        } else {
            feature_hop.max(1)
        };
        let (win, hop, lead) = match cfg.window_s {
            Some(w) => {
                let fps = f64::from(cfg.sample_rate_hz) / frame_samples as f64;
                let frames = |s: f64| ((s * fps).round() as usize).max(1);
                (frames(w), frames(cfg.hop_s.unwrap_or(w)), 0)
            }
            None => {
                let new = cfg.window_samples.unwrap_or(512);
                (cfg.context_samples + new, new, cfg.context_samples)
            }
        };
        Geometry {
            win,
            hop,
            lead,
            frame_samples,
        }
    }
}

/// Loads a model into tract, with the input shapes the file declares. (Fixing them at load,
/// `[1, window]`, made Silero VAD no faster, and a model that refuses the shape would stop
/// the run instead of failing its items.)
fn load_tract(bytes: &[u8]) -> TractResult<Arc<Plan>> {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .into_optimized()?
        .into_runnable()
}

/// One call through tract: `input` in `shape`, then the state; the first output (all of
/// it, flattened) and the second output (the next state) when there is a state.
fn run_tract(
    plan: &mut TypedSimpleState,
    input: &[f32],
    shape: &[usize],
    state: Option<(&[usize], &[f32])>,
) -> Result<(Vec<f32>, Option<Vec<f32>>), String> {
    let err = |e: TractError| format!("{e:#}");
    let x = Tensor::from_shape(shape, input).map_err(err)?;
    let mut inputs: TVec<TValue> = tvec!(x.into());
    if let Some((shape, values)) = state {
        inputs.push(Tensor::from_shape(shape, values).map_err(err)?.into());
    }
    let out = plan.run(inputs).map_err(err)?;
    let v: Vec<f32> = out[0]
        .to_plain_array_view::<f32>()
        .map_err(err)?
        .iter()
        .copied()
        .collect();
    let next = match state {
        None => None,
        Some(_) => {
            let n = out
                .get(1)
                .ok_or("state is configured but the model has no second output")?;
            Some(
                n.to_plain_array_view::<f32>()
                    .map_err(err)?
                    .iter()
                    .copied()
                    .collect(),
            )
        }
    };
    Ok((v, next))
}

impl Drop for ModelRun<'_> {
    fn drop(&mut self) {
        if let Some(b) = &self.model.batcher {
            b.leave();
        }
        #[cfg(feature = "ort")]
        if let (Some(s), Runtime::Ort(o)) = (self.session.take(), &self.model.runtime) {
            o.give_back(s);
        }
    }
}

/// Silero VAD's `get_speech_timestamps_from_probs` (no maximum speech length), in samples.
pub fn speech_segments(
    probs: &[f32],
    rate: u32,
    window: usize,
    audio_samples: u64,
    s: &SegmentsConfig,
) -> Vec<(u64, u64)> {
    let sr = rate as f64;
    let min_speech = sr * s.min_speech_ms / 1000.0;
    let pad = sr * s.speech_pad_ms / 1000.0;
    let min_silence = sr * s.min_silence_ms / 1000.0;
    let neg = s.neg_threshold.unwrap_or((s.threshold - 0.15).max(0.01));
    let mut speeches: Vec<(f64, f64)> = Vec::new();
    let mut start: Option<f64> = None;
    let mut temp_end = 0.0f64;
    for (i, &p) in probs.iter().enumerate() {
        let p = p as f64;
        let cur = (window * i) as f64;
        if p >= s.threshold && temp_end != 0.0 {
            temp_end = 0.0;
        }
        if p >= s.threshold && start.is_none() {
            start = Some(cur);
            continue;
        }
        if let Some(st) = start {
            if p < neg {
                if temp_end == 0.0 {
                    temp_end = cur;
                }
                if cur - temp_end < min_silence {
                    continue;
                }
                if temp_end - st > min_speech {
                    speeches.push((st, temp_end));
                }
                start = None;
                temp_end = 0.0;
            }
        }
    }
    let total = audio_samples as f64;
    if let Some(st) = start {
        if total - st > min_speech {
            speeches.push((st, total));
        }
    }
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 - pad).max(0.0).trunc();
        }
        if i + 1 < n {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if silence < 2.0 * pad {
                let half = (silence / 2.0).floor();
                speeches[i].1 = (speeches[i].1 + half).trunc();
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0.0).trunc();
            } else {
                speeches[i].1 = (speeches[i].1 + pad).min(total).trunc();
                speeches[i + 1].0 = (speeches[i + 1].0 - pad).max(0.0).trunc();
            }
        } else {
            speeches[i].1 = (speeches[i].1 + pad).min(total).trunc();
        }
    }
    speeches
        .into_iter()
        .map(|(a, b)| (a as u64, b as u64))
        .collect()
}

/// The JSON written for `output = "labels"`: the best labels with their mean scores.
pub fn labels_json(o: &ModelOutput) -> serde_json::Value {
    let labels: Vec<serde_json::Value> = o
        .labels
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|(l, s, i)| serde_json::json!({ "label": l, "score": s, "index": i }))
        .collect();
    serde_json::json!({
        "model": o.name,
        "sha256": o.sha256,
        "backend": o.cfg.backend,
        "chunks": o.values.len(),
        "pooling": "mean",
        "top_k": o.cfg.top_k,
        "labels": labels,
    })
}

/// The JSON written for `output = "segments"`.
pub fn segments_json(o: &ModelOutput) -> serde_json::Value {
    let rate = o.cfg.sample_rate_hz as f64;
    let segs: Vec<serde_json::Value> = o
        .segments
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|&(a, b)| {
            serde_json::json!({
                "start": a as f64 / rate,
                "end": b as f64 / rate,
                "start_sample": a,
                "end_sample": b,
            })
        })
        .collect();
    serde_json::json!({
        "model": o.name,
        "sha256": o.sha256,
        "backend": o.cfg.backend,
        "sample_rate_hz": o.cfg.sample_rate_hz,
        "chunk_s": o.step_samples as f64 / rate,
        "chunks": o.values.len(),
        "threshold": o.cfg.segments.threshold,
        "speech_s": o.segments.as_deref().unwrap_or_default().iter().map(|&(a, b)| (b - a) as f64 / rate).fold(0.0, |acc, s| acc + s),
        "segments": segs,
    })
}

/// Resolves a model path relative to the folder of the config file that named it.
pub fn resolve_path(path: &Path, config_dir: Option<&Path>) -> PathBuf {
    match config_dir {
        Some(d) if path.is_relative() => d.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_silero_rules() {
        let s = SegmentsConfig::default();
        // 16 kHz, 512-sample chunks (32 ms): 20 chunks of speech between silences.
        let mut p = vec![0.05f32; 10];
        p.extend(vec![0.9; 20]);
        p.extend(vec![0.05; 20]);
        let segs = speech_segments(&p, 16000, 512, 50 * 512, &s);
        // Start at chunk 10 minus 30 ms padding; end at chunk 30 plus padding.
        assert_eq!(segs, vec![(10 * 512 - 480, 30 * 512 + 480)]);
        // Too short: 5 chunks = 160 ms < 250 ms.
        let mut p = vec![0.05f32; 10];
        p.extend(vec![0.9; 5]);
        p.extend(vec![0.05; 20]);
        assert!(speech_segments(&p, 16000, 512, 35 * 512, &s).is_empty());
        // A dip shorter than min_silence (100 ms = 3.1 chunks) does not split.
        let mut p = vec![0.9f32; 20];
        p.extend(vec![0.1; 2]);
        p.extend(vec![0.9; 20]);
        assert_eq!(speech_segments(&p, 16000, 512, 42 * 512, &s).len(), 1);
    }
}
