//! The feature set of one item: which features, with which parameters, computed block by
//! block over a (possibly multi-channel) signal, in bounded memory.
//!
//! [`FeatureStream::push`] hands every finished frame to a caller's [`FrameSink`] as soon as
//! the samples for it have arrived, so the stream itself holds about one frame per channel.
//! Features that librosa (or Whisper) define over the whole array -- `power_to_db` with
//! `ref=max` or a `top_db` clamp, the MFCCs computed from it, Whisper's clamp to `max - 8` --
//! cannot be final before the end: for those the sink receives the raw mel frames
//! ([`Slot::PendingMel`]) to keep (in memory or on disk), and [`FeatureStream::finish`] returns
//! a [`Finalizer`] that turns them into final frames, tile by tile. Streamed results equal
//! whole-signal results exactly, whatever the block sizes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::blocks::{MelBlocks, BLOCK};
use crate::db::{db_offset, DbConfig, DbReference, DB_PER_LN};
use crate::dct::DctPlan;
use crate::descriptors;
use crate::error::{invalid, DspError};
use crate::fbank::{FbankConfig, FbankPlan, FbankScratch};
use crate::kernels::{Kernels, LaneFft, LaneScratch};
use crate::mel::{MelConfig, MelNorm, MelPlan, MelScale};
use crate::memory::Aligned;
use crate::stft::{Framer, PadMode, SpectrumKind, StftConfig, StftPlan, StftScratch};

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
    /// Whisper's log-mel: `log10(max(mel, 1e-10))`, clamped to `max - 8`, then `(x + 4) / 4`;
    /// the last STFT frame is dropped as Whisper does. Shape `(n_mels, frames - 1)`.
    WhisperLogMel,
    /// Kaldi-style log filterbank energies with their own framing, shape `(n_mels, frames)`.
    Fbank,
    /// librosa `rms` over frames of `n_fft` samples (constant padding), shape `(1, frames)`.
    Rms,
    /// librosa `zero_crossing_rate` over frames of `n_fft` samples (edge padding).
    ZeroCrossingRate,
    /// librosa `spectral_centroid` of the magnitude spectrum, in Hz.
    SpectralCentroid,
    /// librosa `spectral_bandwidth` (p = 2) of the magnitude spectrum, in Hz.
    SpectralBandwidth,
    /// librosa `spectral_rolloff` of the magnitude spectrum, in Hz.
    SpectralRolloff,
    /// librosa `spectral_flatness` of the power spectrum (amin 1e-10).
    SpectralFlatness,
}

impl Feature {
    /// Every feature, in output order.
    pub const ALL: [Feature; 13] = [
        Feature::Magnitude,
        Feature::Power,
        Feature::Mel,
        Feature::LogMel,
        Feature::Mfcc,
        Feature::WhisperLogMel,
        Feature::Fbank,
        Feature::Rms,
        Feature::ZeroCrossingRate,
        Feature::SpectralCentroid,
        Feature::SpectralBandwidth,
        Feature::SpectralRolloff,
        Feature::SpectralFlatness,
    ];

    /// The name used in configuration and as the output file stem.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Magnitude => "magnitude",
            Feature::Power => "power",
            Feature::Mel => "mel",
            Feature::LogMel => "log_mel",
            Feature::Mfcc => "mfcc",
            Feature::WhisperLogMel => "whisper_log_mel",
            Feature::Fbank => "fbank",
            Feature::Rms => "rms",
            Feature::ZeroCrossingRate => "zero_crossing_rate",
            Feature::SpectralCentroid => "spectral_centroid",
            Feature::SpectralBandwidth => "spectral_bandwidth",
            Feature::SpectralRolloff => "spectral_rolloff",
            Feature::SpectralFlatness => "spectral_flatness",
        }
    }

    /// Parses a configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    fn uses_mel(self) -> bool {
        matches!(
            self,
            Feature::Mel | Feature::LogMel | Feature::Mfcc | Feature::WhisperLogMel
        )
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
    /// Kaldi fbank options (their own framing).
    pub fbank: FbankConfig,
    /// Fraction of the spectral energy below the roll-off frequency. Default 0.85.
    pub rolloff_percent: f64,
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
            fbank: FbankConfig::default(),
            rolloff_percent: 0.85,
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
    k: Kernels,
    stft: StftPlan,
    mel: Option<MelPlan>,
    dct: Option<DctPlan>,
    fbank: Option<FbankPlan>,
    /// Centre frequency of each STFT bin in Hz (for the spectral descriptors).
    freqs: Vec<f32>,
    /// log_mel (and mfcc) need the whole array: `ref = max` or a `top_db` clamp.
    deferred_db: bool,
    need_power: bool,
    need_magnitude: bool,
    /// The STFT in SIMD lanes ([`crate::kernels::lanes`]): `None` for the scalar kernels and
    /// for sizes the lane FFT does not cover (then every frame goes through realfft).
    lane: Option<LaneFft>,
    /// On the lane path every spectrum, mel, dB and MFCC output leaves as a tile
    /// ([`FrameSink::tile`]); what goes on per frame is the spectral descriptors, from each
    /// frame's power (flatness) and magnitude (centroid, bandwidth, rolloff).
    frame_power: bool,
    frame_magnitude: bool,
}

impl FeaturePlan {
    /// Validates the configuration and builds every plan it needs, with the process-wide
    /// kernels ([`Kernels::active`]).
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key at fault.
    pub fn new(cfg: &FeatureConfig) -> Result<Self, DspError> {
        Self::with_kernels(cfg, Kernels::active())
    }

    /// As [`Self::new`] with the given kernels.
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key at fault.
    pub fn with_kernels(cfg: &FeatureConfig, k: Kernels) -> Result<Self, DspError> {
        if cfg.features.is_empty() {
            return Err(invalid("features", "at least one feature is needed"));
        }
        let stft = StftPlan::with_kernels(&cfg.stft, k)?;
        let needs_mel = cfg.features.iter().any(|f| f.uses_mel());
        let mel = if needs_mel {
            Some(
                MelPlan::new(&MelConfig {
                    sample_rate_hz: cfg.sample_rate_hz,
                    n_fft: cfg.stft.n_fft,
                    n_mels: cfg.n_mels,
                    fmin_hz: cfg.fmin_hz,
                    fmax_hz: cfg.fmax_hz,
                    scale: cfg.mel_scale,
                    norm: cfg.mel_norm,
                })?
                .with_kernels(k),
            )
        } else {
            None
        };
        if !(cfg.db.amin.is_normal() && cfg.db.amin > 0.0) {
            return Err(invalid(
                "amin",
                format!("{} must be a positive normal number", cfg.db.amin),
            ));
        }
        if let Some(t) = cfg.db.top_db {
            if t.is_nan() || t < 0.0 {
                return Err(invalid("top_db", format!("{t} must be >= 0")));
            }
        }
        if !(cfg.rolloff_percent > 0.0 && cfg.rolloff_percent < 1.0) {
            return Err(invalid(
                "rolloff_percent",
                format!("{} is not in (0, 1)", cfg.rolloff_percent),
            ));
        }
        let dct = if cfg.wants(Feature::Mfcc) {
            Some(DctPlan::new(cfg.n_mels, cfg.n_mfcc, cfg.lifter)?.with_kernels(k))
        } else {
            None
        };
        let fbank = if cfg.wants(Feature::Fbank) {
            Some(FbankPlan::new(&cfg.fbank, cfg.sample_rate_hz, k)?)
        } else {
            None
        };
        let freqs = (0..cfg.stft.n_bins())
            .map(|i| (i as f64 * cfg.sample_rate_hz / cfg.stft.n_fft as f64) as f32)
            .collect();
        let deferred_db = (cfg.wants(Feature::LogMel) || cfg.wants(Feature::Mfcc))
            && (cfg.db.reference == DbReference::Max || cfg.db.top_db.is_some());
        let mel_kind = mel.as_ref().map(|_| cfg.mel_spectrum);
        let need_power = cfg.wants(Feature::Power)
            || cfg.wants(Feature::SpectralFlatness)
            || mel_kind == Some(SpectrumKind::Power);
        let need_magnitude = cfg.wants(Feature::Magnitude)
            || cfg.wants(Feature::SpectralCentroid)
            || cfg.wants(Feature::SpectralBandwidth)
            || cfg.wants(Feature::SpectralRolloff)
            || mel_kind == Some(SpectrumKind::Magnitude);
        let lane = if std::env::var_os(PER_FRAME_ENV).is_some() {
            None
        } else {
            k.lane_fft(cfg.stft.n_fft, stft.window())
        };
        let frame_power = cfg.wants(Feature::SpectralFlatness);
        let frame_magnitude = cfg.wants(Feature::SpectralCentroid)
            || cfg.wants(Feature::SpectralBandwidth)
            || cfg.wants(Feature::SpectralRolloff);
        Ok(FeaturePlan {
            lane,
            frame_power,
            frame_magnitude,
            cfg: cfg.clone(),
            k,
            stft,
            mel,
            dct,
            fbank,
            freqs,
            deferred_db,
            need_power,
            need_magnitude,
        })
    }

    /// The configuration this plan was built from.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// The kernels this plan computes with.
    pub fn kernels(&self) -> Kernels {
        self.k
    }

    /// The same plan computing every STFT frame on its own (the reference the lane path is
    /// tested and benchmarked against).
    pub fn frame_by_frame(mut self) -> Self {
        self.lane = None;
        self
    }

    /// Frames the STFT computes at once in SIMD lanes, or `None` when it goes frame by frame
    /// (scalar kernels, an FFT size without a lane plan, or `KLIO_DSP_PER_FRAME` set).
    pub fn lanes(&self) -> Option<usize> {
        self.lane.as_ref().map(LaneFft::lanes)
    }

    /// Mel bands that receive no FFT bin (a sign of too many mels for `n_fft`).
    pub fn empty_mel_bands(&self) -> usize {
        self.mel.as_ref().map_or(0, MelPlan::empty_bands)
    }

    /// Size of one frame of `feature`.
    pub fn dim(&self, feature: Feature) -> usize {
        match feature {
            Feature::Magnitude | Feature::Power => self.cfg.stft.n_bins(),
            Feature::Mel | Feature::LogMel | Feature::WhisperLogMel => self.cfg.n_mels,
            Feature::Mfcc => self.cfg.n_mfcc,
            Feature::Fbank => self.cfg.fbank.n_mels,
            _ => 1,
        }
    }

    /// The most values `samples` samples of one channel can make, over every feature: on
    /// each feature's frame grid at most one frame per hop plus the centre padding's, times
    /// the frame's size. What a config implies per second of audio; the sink refuses output
    /// past it before allocating.
    pub fn max_values(&self, samples: u64) -> u64 {
        let stft_frames = samples / self.cfg.stft.hop_length.max(1) as u64 + 2;
        let fbank_frames = self
            .fbank
            .as_ref()
            .map_or(0, |f| samples / f.framing().hop_length.max(1) as u64 + 2);
        self.cfg
            .features
            .iter()
            .map(|&f| {
                let frames = if f == Feature::Fbank {
                    fbank_frames
                } else {
                    stft_frames
                };
                // Deferred features are sent as one pending mel frame (added below).
                let dim = if self.is_deferred(f) { 0 } else { self.dim(f) };
                frames.saturating_mul(dim as u64)
            })
            .fold(0u64, u64::saturating_add)
            .saturating_add(if self.needs_pending() {
                stft_frames.saturating_mul(self.cfg.n_mels as u64)
            } else {
                0
            })
    }

    /// Whether `feature` is only final after the whole signal (see [`Slot::PendingMel`]).
    pub fn is_deferred(&self, feature: Feature) -> bool {
        match feature {
            Feature::WhisperLogMel => true,
            Feature::LogMel | Feature::Mfcc => self.deferred_db,
            _ => false,
        }
    }

    fn needs_pending(&self) -> bool {
        self.cfg.features.iter().any(|&f| self.is_deferred(f))
    }

    /// Computes the features of a whole signal held in memory (one slice per channel).
    ///
    /// # Errors
    /// As [`FeatureStream::push`] and [`FeatureStream::finish`].
    pub fn compute(self: &Arc<Self>, channels: &[&[f32]]) -> Result<Vec<FeatureOutput>, DspError> {
        let mut stream = FeatureStream::new(Arc::clone(self), channels.len());
        let mut sink = Collector::default();
        stream.push(channels, &mut sink)?;
        let fin = stream.finish(&mut sink)?;
        Ok(sink.into_outputs(&fin))
    }
}

/// What a frame handed to a [`FrameSink`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// A final frame of this feature.
    Output(Feature),
    /// A raw mel frame (`n_mels` values) to keep for [`Finalizer::finish_frames`].
    PendingMel,
}

/// `count` consecutive frames of `dim` values from the SIMD lanes, `[value][lane]`: value `i`
/// of frame `f` is `values[i * lanes + f]` (`lanes >= count`; lanes past `count` are padding).
#[derive(Debug, Clone, Copy)]
pub struct Tile<'a> {
    /// Values per frame.
    pub dim: usize,
    /// Lanes per value (the row length of `values`).
    pub lanes: usize,
    /// Frames in the tile.
    pub count: usize,
    /// `dim` rows of `lanes` values.
    pub values: &'a [f32],
}

impl Tile<'_> {
    /// Copies frame `f`'s `dim` values into `out`.
    pub fn frame_into(&self, f: usize, out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(self.values.chunks_exact(self.lanes)) {
            *o = row[f];
        }
    }
}

/// Receives frames as they are computed. For each (slot, channel), frames arrive in order.
pub trait FrameSink {
    /// One frame.
    fn frame(&mut self, slot: Slot, channel: usize, values: &[f32]);

    /// Consecutive frames as one [`Tile`] from the SIMD lanes: already librosa's
    /// `[dim][frames]` orientation, so a sink that stores band-major can copy rows instead of
    /// transposing. By default each frame goes to [`Self::frame`].
    fn tile(&mut self, slot: Slot, channel: usize, tile: Tile<'_>) {
        let mut frame = vec![0.0; tile.dim];
        for f in 0..tile.count {
            tile.frame_into(f, &mut frame);
            self.frame(slot, channel, &frame);
        }
    }

    /// Called before the frames of each block: the stream will not send more than
    /// `max_values` values in all (every slot and channel) for the samples it has so far
    /// ([`FeaturePlan::max_values`]). A sink that allocates can refuse more than this.
    fn bound(&mut self, max_values: u64) {
        let _ = max_values;
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
        for ch in &self.channels {
            for d in 0..self.dim {
                for t in 0..self.frames {
                    out.push(ch[t * self.dim + d]);
                }
            }
        }
        out
    }
}

/// Set (to anything) to compute every STFT frame on its own instead of in SIMD lanes: the
/// reference path, for comparisons.
pub const PER_FRAME_ENV: &str = "KLIO_DSP_PER_FRAME";

/// A [`FrameSink`] that keeps everything in memory (whole-signal use, tests).
#[derive(Debug, Default)]
pub struct Collector {
    data: BTreeMap<(Slot, usize), Vec<f32>>,
}

impl FrameSink for Collector {
    fn frame(&mut self, slot: Slot, channel: usize, values: &[f32]) {
        self.data
            .entry((slot, channel))
            .or_default()
            .extend_from_slice(values);
    }

    fn tile(&mut self, slot: Slot, channel: usize, tile: Tile<'_>) {
        let data = self.data.entry((slot, channel)).or_default();
        for f in 0..tile.count {
            let at = data.len();
            data.resize(at + tile.dim, 0.0);
            tile.frame_into(f, &mut data[at..]);
        }
    }
}

impl Collector {
    /// The finished features, in configuration order.
    pub fn into_outputs(mut self, fin: &Finalizer) -> Vec<FeatureOutput> {
        let mut outputs = Vec::new();
        for feature in fin.features() {
            let dim = fin.dim(feature);
            let frames = fin.frames(feature) as usize;
            let channels = (0..fin.channels())
                .map(|c| {
                    if fin.is_deferred(feature) {
                        let pending = &self.data[&(Slot::PendingMel, c)];
                        let mut out = vec![0.0; frames * dim];
                        fin.finish_frames(
                            feature,
                            &pending[..frames * fin.pending_dim()],
                            &mut out,
                        );
                        out
                    } else {
                        self.data
                            .remove(&(Slot::Output(feature), c))
                            .unwrap_or_default()
                    }
                })
                .collect();
            outputs.push(FeatureOutput {
                feature,
                dim,
                frames,
                channels,
            });
        }
        outputs
    }
}

/// What the whole signal determined: frame counts and the global maximum that the deferred
/// features need. Turns pending mel frames into final frames, any number at a time.
#[derive(Debug, Clone)]
pub struct Finalizer {
    plan: Arc<FeaturePlan>,
    channels: usize,
    frames: u64,
    fbank_frames: u64,
    max_mel: f32,
}

impl Finalizer {
    /// The features to write, in configuration order, each once.
    pub fn features(&self) -> Vec<Feature> {
        let mut seen = Vec::new();
        for &f in &self.plan.cfg.features {
            if !seen.contains(&f) {
                seen.push(f);
            }
        }
        seen
    }

    /// Number of channels (feature planes).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Values per frame of `feature`.
    pub fn dim(&self, feature: Feature) -> usize {
        self.plan.dim(feature)
    }

    /// Values per pending mel frame.
    pub fn pending_dim(&self) -> usize {
        self.plan.cfg.n_mels
    }

    /// Whether `feature` comes from pending mel frames through [`Self::finish_frames`].
    pub fn is_deferred(&self, feature: Feature) -> bool {
        self.plan.is_deferred(feature)
    }

    /// Frames per channel of `feature`. For deferred features these are the first frames of
    /// the pending mel frames.
    pub fn frames(&self, feature: Feature) -> u64 {
        match feature {
            Feature::WhisperLogMel => self.frames.saturating_sub(1),
            Feature::Fbank => self.fbank_frames,
            _ => self.frames,
        }
    }

    /// The shape librosa would return for `feature`.
    pub fn shape(&self, feature: Feature) -> Vec<usize> {
        let (d, t) = (self.dim(feature), self.frames(feature) as usize);
        if self.channels == 1 {
            vec![d, t]
        } else {
            vec![self.channels, d, t]
        }
    }

    fn log_mel_in_place(&self, x: &mut [f32]) {
        let (k, db) = (self.plan.k, &self.plan.cfg.db);
        let ref_value = match db.reference {
            DbReference::Value(v) => v.abs(),
            DbReference::Max => self.max_mel,
        };
        let offset = db_offset(ref_value, db.amin);
        // The clamp level first (the dB of the largest mel value, through the same vector
        // log), so the array is read and written once.
        let lo = match db.top_db {
            Some(top_db) => {
                let mut m = [self.max_mel];
                k.log_scaled(&mut m, db.amin, DB_PER_LN, -offset) - top_db
            }
            None => f32::NEG_INFINITY,
        };
        k.log_scaled_clamped(x, db.amin, DB_PER_LN, -offset, lo);
    }

    /// Whether the deferred `feature` is elementwise in the pending mel (log-mel, Whisper),
    /// so [`Self::finish_in_place`] can finish pending values in any layout.
    fn is_elementwise(&self, feature: Feature) -> bool {
        matches!(feature, Feature::LogMel | Feature::WhisperLogMel) && self.is_deferred(feature)
    }

    /// Turns pending mel values into final values of the deferred, elementwise `feature`
    /// ([`Self::is_elementwise`]), in place and in any layout (band-major tiles included).
    ///
    /// # Panics
    /// If `feature` is not deferred and elementwise.
    fn finish_in_place(&self, feature: Feature, values: &mut [f32]) {
        assert!(
            self.is_elementwise(feature),
            "{feature:?} is not elementwise"
        );
        let k = self.plan.k;
        if feature == Feature::LogMel {
            self.log_mel_in_place(values);
        } else {
            let per_ln = std::f32::consts::LOG10_E;
            k.log_scaled(values, 1e-10, per_ln, 0.0);
            let mut m = [self.max_mel];
            let max_log = k.log_scaled(&mut m, 1e-10, per_ln, 0.0);
            k.clamp_affine(values, max_log - 8.0, 0.25, 1.0);
        }
    }

    /// [`Self::finish_band_major`] of a pending plane the caller gives up, for the
    /// elementwise features (log-mel, Whisper): finished in place and returned, no copy. MFCC
    /// changes the shape: [`Self::finish_blocks`].
    ///
    /// # Panics
    /// If `feature` is not deferred and elementwise, or the length does not agree.
    pub fn finish_band_major_owned(
        &self,
        feature: Feature,
        mut pending: Vec<f32>,
        cols: usize,
    ) -> Vec<f32> {
        assert_eq!(pending.len(), self.pending_dim() * cols);
        self.finish_in_place(feature, &mut pending);
        pending
    }

    /// Turns the pending mel frames in `blocks` into the deferred `feature`, `dim` rows of
    /// [`Self::frames`] (librosa's orientation) written into `out`: one block at a time, the
    /// dB values computed in the block (in L1) and the DCT (MFCC) or the copy (log-mel,
    /// Whisper) taken from it straight into the output's columns. `blocks` is left holding
    /// dB values (MFCC) or the finished values.
    ///
    /// # Panics
    /// If `feature` is not deferred, `blocks` holds other than `n_mels` values per frame or
    /// fewer frames than the feature has, or `out` is not `dim * frames` values.
    pub fn finish_blocks(&self, feature: Feature, blocks: &mut MelBlocks, out: &mut [f32]) {
        assert!(self.is_deferred(feature), "{feature:?} is not deferred");
        assert_eq!(blocks.dim(), self.pending_dim());
        let cols = self.frames(feature) as usize;
        assert!(
            blocks.frames() >= cols,
            "fewer pending frames than the feature has"
        );
        let dim = self.dim(feature);
        assert_eq!(out.len(), dim * cols);
        for b in 0..blocks.blocks() {
            let t = b * BLOCK;
            let (x, stored) = blocks.block_mut(b);
            let count = stored.min(cols.saturating_sub(t));
            if count == 0 {
                break;
            }
            // Lanes past `count` of the last block hold whatever the buffer held: finished
            // like the others (a log of anything is harmless) and never copied out.
            if self.is_elementwise(feature) {
                self.finish_in_place(feature, x);
                for (d, row) in x.chunks_exact(BLOCK).enumerate() {
                    out[d * cols + t..][..count].copy_from_slice(&row[..count]);
                }
            } else {
                let dct = self.plan.dct.as_ref().expect("mfcc has a DCT plan");
                self.log_mel_in_place(x);
                dct.process_block(x, BLOCK, &mut out[t..], cols, count);
            }
        }
    }

    /// Turns `cols` pending mel frames laid out band-major (`n_mels` rows of `cols`, the
    /// sink's chunks) into the deferred `feature`, `dim` rows of `cols` (librosa's
    /// orientation): elementwise for log-mel and Whisper, then the DCT over the columns for
    /// MFCC. `scratch` holds the dB values of an MFCC.
    ///
    /// # Panics
    /// If `feature` is not deferred or the lengths do not agree.
    pub fn finish_band_major(
        &self,
        feature: Feature,
        pending: &[f32],
        cols: usize,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        assert!(self.is_deferred(feature), "{feature:?} is not deferred");
        assert_eq!(pending.len(), self.pending_dim() * cols);
        assert_eq!(out.len(), self.dim(feature) * cols);
        if self.is_elementwise(feature) {
            out.copy_from_slice(pending);
            self.finish_in_place(feature, out);
        } else {
            let dct = self.plan.dct.as_ref().expect("mfcc has a DCT plan");
            scratch.clear();
            scratch.extend_from_slice(pending);
            self.log_mel_in_place(scratch);
            dct.process_band_major(scratch, cols, out);
        }
    }

    /// Turns pending mel frames (`n * n_mels` values, frame-major) into `n` final frames of
    /// the deferred `feature` (`n * dim` values).
    ///
    /// # Panics
    /// If `feature` is not deferred or the lengths do not agree.
    pub fn finish_frames(&self, feature: Feature, pending: &[f32], out: &mut [f32]) {
        assert!(self.is_deferred(feature), "{feature:?} is not deferred");
        let n_mels = self.pending_dim();
        let n = pending.len() / n_mels;
        assert_eq!(pending.len(), n * n_mels);
        assert_eq!(out.len(), n * self.dim(feature));
        match feature {
            Feature::LogMel | Feature::WhisperLogMel => {
                out.copy_from_slice(pending);
                self.finish_in_place(feature, out);
            }
            Feature::Mfcc => {
                let dct = self.plan.dct.as_ref().expect("mfcc has a DCT plan");
                let mut lm = vec![0.0; n_mels];
                for (src, dst) in pending
                    .chunks_exact(n_mels)
                    .zip(out.chunks_exact_mut(dct.n_out()))
                {
                    lm.copy_from_slice(src);
                    self.log_mel_in_place(&mut lm);
                    dct.process(&lm, dst);
                }
            }
            _ => unreachable!("checked above"),
        }
    }
}

struct ChannelState {
    stft: Framer,
    /// The last, shorter lane group padded with zeros (lane path only).
    last_group: Vec<f32>,
    rms: Option<Framer>,
    zcr: Option<Framer>,
    fbank: Option<Framer>,
}

/// The `[bin][frame]` and `[band][frame]` tiles of one lane batch.
struct LaneBuffers {
    scratch: LaneScratch,
    power: Aligned,
    magnitude: Aligned,
    mel: Aligned,
    /// The mel in dB and the MFCCs, `[value][frame]` (local dB only).
    db: Aligned,
    mfcc: Aligned,
}

/// Per-stream buffers reused for every frame.
struct Buffers {
    stft: StftScratch,
    lane: Option<LaneBuffers>,
    fbank: Option<FbankScratch>,
    power: Vec<f32>,
    magnitude: Vec<f32>,
    mel: Vec<f32>,
    out: Vec<f32>,
    coeffs: Vec<f32>,
    flat: Vec<f32>,
    max_mel: f32,
}

/// Computes the features of one signal fed in blocks.
pub struct FeatureStream {
    plan: Arc<FeaturePlan>,
    channels: Vec<ChannelState>,
    bufs: Buffers,
    samples_in: u64,
}

impl FeatureStream {
    /// A stream over `n_channels` channels (each becomes its own feature plane).
    ///
    /// # Panics
    /// If `n_channels` is 0.
    pub fn new(plan: Arc<FeaturePlan>, n_channels: usize) -> Self {
        assert!(n_channels > 0, "at least one channel");
        let cfg = &plan.cfg;
        let time_framer = |pad_mode: PadMode| {
            Framer::new(&StftConfig {
                pad_mode,
                ..cfg.stft.clone()
            })
        };
        let channels = (0..n_channels)
            .map(|_| ChannelState {
                stft: Framer::new(&cfg.stft),
                last_group: Vec::new(),
                rms: cfg
                    .wants(Feature::Rms)
                    .then(|| time_framer(PadMode::Constant)),
                zcr: cfg
                    .wants(Feature::ZeroCrossingRate)
                    .then(|| time_framer(PadMode::Edge)),
                fbank: plan.fbank.as_ref().map(|f| Framer::new(&f.framing())),
            })
            .collect();
        let n_bins = cfg.stft.n_bins();
        let out_dim = Feature::ALL.iter().map(|&f| plan.dim(f)).max().unwrap_or(1);
        let bufs = Buffers {
            lane: plan.lane.as_ref().map(|l| LaneBuffers {
                scratch: l.make_scratch(),
                power: Aligned::zeroed(n_bins * l.lanes()),
                magnitude: Aligned::zeroed(n_bins * l.lanes()),
                mel: Aligned::zeroed(cfg.n_mels * l.lanes()),
                db: Aligned::zeroed(cfg.n_mels * l.lanes()),
                mfcc: Aligned::zeroed(cfg.n_mfcc * l.lanes()),
            }),
            stft: plan.stft.make_scratch(),
            fbank: plan.fbank.as_ref().map(FbankPlan::make_scratch),
            power: vec![0.0; n_bins],
            magnitude: vec![0.0; n_bins],
            mel: vec![0.0; cfg.n_mels],
            out: vec![0.0; out_dim],
            coeffs: vec![0.0; cfg.n_mfcc],
            flat: vec![0.0; n_bins],
            max_mel: f32::NEG_INFINITY,
        };
        FeatureStream {
            plan,
            channels,
            bufs,
            samples_in: 0,
        }
    }

    /// Samples received per channel.
    pub fn samples_in(&self) -> u64 {
        self.samples_in
    }

    /// The most values this stream sends for the samples so far, all channels together.
    pub fn max_values(&self) -> u64 {
        self.plan
            .max_values(self.samples_in)
            .saturating_mul(self.channels.len() as u64)
    }

    /// Feeds one block (a slice per channel, all of the same length); every frame it
    /// completes goes to `sink`.
    ///
    /// # Errors
    /// [`DspError::NonFinite`] if a sample is NaN or infinite.
    ///
    /// # Panics
    /// If the number of slices differs from the channel count or their lengths differ.
    pub fn push(&mut self, block: &[&[f32]], sink: &mut impl FrameSink) -> Result<(), DspError> {
        assert_eq!(block.len(), self.channels.len(), "one slice per channel");
        let n = block[0].len();
        for ch in block {
            assert_eq!(ch.len(), n, "channel blocks of equal length");
            if !self.plan.k.all_finite(ch) {
                let i = ch.iter().position(|v| !v.is_finite()).unwrap_or(0);
                return Err(DspError::NonFinite {
                    index: self.samples_in + i as u64,
                });
            }
        }
        self.samples_in += n as u64;
        sink.bound(self.max_values());
        let FeatureStream {
            plan,
            channels,
            bufs,
            ..
        } = self;
        for (c, (state, samples)) in channels.iter_mut().zip(block).enumerate() {
            run_framers(plan, state, bufs, c, sink, |f, group, emit| {
                f.push_groups(samples, group, emit)
            });
        }
        Ok(())
    }

    /// Ends the signal: emits the last frames and returns the [`Finalizer`].
    ///
    /// # Errors
    /// [`DspError::TooShort`] if the signal gives no frame (for the STFT, or for `fbank`
    /// when it is requested).
    pub fn finish(mut self, sink: &mut impl FrameSink) -> Result<Finalizer, DspError> {
        let FeatureStream {
            plan,
            channels,
            bufs,
            samples_in,
        } = &mut self;
        for (c, state) in channels.iter_mut().enumerate() {
            run_framers(plan, state, bufs, c, sink, |f, group, emit| {
                f.finish_groups(group, emit);
            });
        }
        let cfg = &plan.cfg;
        let frames = channels[0].stft.frames_out();
        if frames == 0 {
            return Err(DspError::TooShort {
                samples: *samples_in,
                n_fft: cfg.stft.n_fft,
                center: cfg.stft.center,
            });
        }
        let fbank_frames = channels[0].fbank.as_ref().map_or(0, Framer::frames_out);
        if let (Some(f), 0) = (&plan.fbank, fbank_frames) {
            return Err(DspError::TooShort {
                samples: *samples_in,
                n_fft: f.framing().n_fft,
                center: false,
            });
        }
        Ok(Finalizer {
            plan: Arc::clone(plan),
            channels: channels.len(),
            frames,
            fbank_frames,
            max_mel: bufs.max_mel,
        })
    }
}

/// Runs `step` (push or finish) on every framer of one channel, computing each frame's
/// features.
fn run_framers(
    plan: &FeaturePlan,
    state: &mut ChannelState,
    bufs: &mut Buffers,
    c: usize,
    sink: &mut impl FrameSink,
    step: impl Fn(&mut Framer, usize, &mut dyn FnMut(&[f32], usize)),
) {
    let k = plan.k;
    match &plan.lane {
        Some(lane) => {
            let pad = &mut state.last_group;
            step(&mut state.stft, lane.lanes(), &mut |frames, count| {
                let hop = plan.cfg.stft.hop_length;
                if count == lane.lanes() {
                    lane_batch(plan, lane, frames, count, bufs, c, sink);
                } else {
                    // The last group: fewer frames than lanes, zeros after them.
                    pad.clear();
                    pad.extend_from_slice(frames);
                    pad.resize((lane.lanes() - 1) * hop + lane.n(), 0.0);
                    lane_batch(plan, lane, pad, count, bufs, c, sink);
                }
            });
        }
        None => step(&mut state.stft, 1, &mut |frame, _| {
            stft_frame(plan, frame, bufs, c, sink)
        }),
    }
    if let Some(f) = &mut state.rms {
        step(f, 1, &mut |frame, _| {
            sink.frame(Slot::Output(Feature::Rms), c, &[descriptors::rms(k, frame)])
        });
    }
    if let Some(f) = &mut state.zcr {
        step(f, 1, &mut |frame, _| {
            let z = descriptors::zero_crossing_rate(frame);
            sink.frame(Slot::Output(Feature::ZeroCrossingRate), c, &[z])
        });
    }
    if let (Some(f), Some(fb), Some(s)) = (&mut state.fbank, &plan.fbank, &mut bufs.fbank) {
        let out = &mut bufs.out[..fb.n_mels()];
        step(f, 1, &mut |frame, _| {
            fb.process(frame, out, s);
            sink.frame(Slot::Output(Feature::Fbank), c, out);
        });
    }
}

fn stft_frame(
    plan: &FeaturePlan,
    frame: &[f32],
    b: &mut Buffers,
    c: usize,
    sink: &mut impl FrameSink,
) {
    plan.stft.transform(frame, &mut b.stft);
    if plan.need_power {
        plan.stft.reduce(SpectrumKind::Power, &b.stft, &mut b.power);
    }
    if plan.need_magnitude {
        plan.stft
            .reduce(SpectrumKind::Magnitude, &b.stft, &mut b.magnitude);
    }
    if let Some(mel) = &plan.mel {
        let spectrum = match plan.cfg.mel_spectrum {
            SpectrumKind::Power => &b.power,
            SpectrumKind::Magnitude => &b.magnitude,
        };
        mel.project(spectrum, &mut b.mel);
    }
    after_spectrum(plan, b, c, sink, false);
}

/// The STFT of the `count` frames in `frames` (frame `f` at `f * hop`; a full group of
/// `lanes` frames, or the last one, zero-filled past `count`) in SIMD lanes, with the mel bands as lane FMAs; then each
/// frame's spectrum and bands go on to [`after_spectrum`] like the per-frame path's.
fn lane_batch(
    plan: &FeaturePlan,
    lane: &LaneFft,
    frames: &[f32],
    count: usize,
    b: &mut Buffers,
    c: usize,
    sink: &mut impl FrameSink,
) {
    let (k, l) = (plan.k, lane.lanes());
    let Some(mut lb) = b.lane.take() else {
        unreachable!("lane buffers exist with a lane plan")
    };
    k.lane_spectra(
        lane,
        frames,
        plan.cfg.stft.hop_length,
        &mut lb.scratch,
        plan.need_power.then_some(&mut lb.power[..]),
        plan.need_magnitude.then_some(&mut lb.magnitude[..]),
    );
    if let Some(mel) = &plan.mel {
        let tile = match plan.cfg.mel_spectrum {
            SpectrumKind::Power => &lb.power,
            SpectrumKind::Magnitude => &lb.magnitude,
        };
        k.lane_band_dots(tile, mel.rows(), &mut lb.mel);
    }
    let cfg = &plan.cfg;
    let n_bins = cfg.stft.n_bins();
    let tile = |dim, values| Tile {
        dim,
        lanes: l,
        count,
        values,
    };
    if cfg.wants(Feature::Power) {
        sink.tile(Slot::Output(Feature::Power), c, tile(n_bins, &lb.power));
    }
    if cfg.wants(Feature::Magnitude) {
        sink.tile(
            Slot::Output(Feature::Magnitude),
            c,
            tile(n_bins, &lb.magnitude),
        );
    }
    if plan.mel.is_some() {
        let n_mels = cfg.n_mels;
        b.max_mel = if count == l {
            b.max_mel.max(k.max(&lb.mel))
        } else {
            lb.mel
                .chunks_exact(l)
                .fold(b.max_mel, |m, band| m.max(k.max(&band[..count])))
        };
        if cfg.wants(Feature::Mel) {
            sink.tile(Slot::Output(Feature::Mel), c, tile(n_mels, &lb.mel));
        }
        if plan.needs_pending() {
            sink.tile(Slot::PendingMel, c, tile(n_mels, &lb.mel));
        }
        let local_db = !plan.deferred_db && (cfg.wants(Feature::LogMel) || plan.dct.is_some());
        if local_db {
            // The dB in lanes (padding lanes hold zeros: their log is finite, and unsent).
            let offset = match cfg.db.reference {
                DbReference::Value(v) => db_offset(v.abs(), cfg.db.amin),
                DbReference::Max => unreachable!("ref=max is deferred"),
            };
            lb.db.copy_from_slice(&lb.mel);
            k.log_scaled(&mut lb.db, cfg.db.amin, DB_PER_LN, -offset);
            if cfg.wants(Feature::LogMel) {
                sink.tile(Slot::Output(Feature::LogMel), c, tile(n_mels, &lb.db));
            }
            if let Some(dct) = &plan.dct {
                dct.process_band_major(&lb.db, l, &mut lb.mfcc);
                sink.tile(Slot::Output(Feature::Mfcc), c, tile(dct.n_out(), &lb.mfcc));
            }
        }
    }
    if plan.frame_power || plan.frame_magnitude {
        for f in 0..count {
            if plan.frame_power {
                tile(n_bins, &lb.power).frame_into(f, &mut b.power);
            }
            if plan.frame_magnitude {
                tile(n_bins, &lb.magnitude).frame_into(f, &mut b.magnitude);
            }
            after_spectrum(plan, b, c, sink, true);
        }
    }
    b.lane = Some(lb);
}

/// What follows the spectrum of one frame: its outputs, its mel outputs (`b.mel` holds the
/// bands) and the descriptors.
///
/// After [`lane_batch`]'s tiles (`tiled`), only what they did not send: the descriptors.
fn after_spectrum(
    plan: &FeaturePlan,
    b: &mut Buffers,
    c: usize,
    sink: &mut impl FrameSink,
    tiled: bool,
) {
    let (cfg, k) = (&plan.cfg, plan.k);
    let wants = |f| cfg.wants(f);
    if wants(Feature::Magnitude) && !tiled {
        sink.frame(Slot::Output(Feature::Magnitude), c, &b.magnitude);
    }
    if wants(Feature::Power) && !tiled {
        sink.frame(Slot::Output(Feature::Power), c, &b.power);
    }
    if plan.mel.is_some() && !tiled {
        b.max_mel = b.max_mel.max(k.max(&b.mel));
        if wants(Feature::Mel) {
            sink.frame(Slot::Output(Feature::Mel), c, &b.mel);
        }
        if plan.needs_pending() {
            sink.frame(Slot::PendingMel, c, &b.mel);
        }
        let local_db = !plan.deferred_db && (wants(Feature::LogMel) || wants(Feature::Mfcc));
        if local_db {
            let lm = &mut b.out[..cfg.n_mels];
            lm.copy_from_slice(&b.mel);
            let offset = match cfg.db.reference {
                DbReference::Value(v) => db_offset(v.abs(), cfg.db.amin),
                DbReference::Max => unreachable!("ref=max is deferred"),
            };
            k.log_scaled(lm, cfg.db.amin, DB_PER_LN, -offset);
            if wants(Feature::LogMel) {
                sink.frame(Slot::Output(Feature::LogMel), c, lm);
            }
            if let Some(dct) = &plan.dct {
                let mf = &mut b.coeffs[..dct.n_out()];
                dct.process(lm, mf);
                sink.frame(Slot::Output(Feature::Mfcc), c, mf);
            }
        }
    }
    let (cen, bw) = (
        wants(Feature::SpectralCentroid),
        wants(Feature::SpectralBandwidth),
    );
    if cen || bw {
        let (centroid, bandwidth) = descriptors::centroid_bandwidth(k, &b.magnitude, &plan.freqs);
        if cen {
            sink.frame(Slot::Output(Feature::SpectralCentroid), c, &[centroid]);
        }
        if bw {
            sink.frame(Slot::Output(Feature::SpectralBandwidth), c, &[bandwidth]);
        }
    }
    if wants(Feature::SpectralRolloff) {
        let r = descriptors::rolloff(&b.magnitude, &plan.freqs, cfg.rolloff_percent);
        sink.frame(Slot::Output(Feature::SpectralRolloff), c, &[r]);
    }
    if wants(Feature::SpectralFlatness) {
        let f = descriptors::flatness(k, &b.power, &mut b.flat, 1e-10);
        sink.frame(Slot::Output(Feature::SpectralFlatness), c, &[f]);
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
            let mut sink = Collector::default();
            for (a, b) in x.chunks(block).zip(y.chunks(block)) {
                s.push(&[a, b], &mut sink).unwrap();
            }
            let fin = s.finish(&mut sink).unwrap();
            sink.into_outputs(&fin)
        };
        let whole = run(x.len());
        assert_eq!(whole.len(), Feature::ALL.len());
        assert_eq!(whole[3].shape(), vec![2, 40, 101]);
        assert_eq!(whole[5].shape(), vec![2, 40, 100]); // Whisper drops the last frame
        assert_eq!(whole[6].shape(), vec![2, 23, 98]); // Kaldi framing
        assert_eq!(whole[7].shape(), vec![2, 1, 101]);
        for block in [1, 159, 1024] {
            assert_eq!(run(block), whole, "block {block}");
        }
    }

    /// The bound a stream declares holds for every feature, length, block size and framing:
    /// a sink that refuses values past it never refuses a real frame, and the bound is near
    /// what is sent (deferred features share one pending frame, so it is not exact).
    /// The lane path (tiles and per-frame rest) gives every feature the per-frame path gives,
    /// with the same shapes, for deferred and local dB, partial last groups and two channels.
    #[test]
    fn lanes_give_the_features_of_the_per_frame_path() {
        let sets = [
            Feature::ALL.to_vec(),
            vec![Feature::LogMel],
            vec![Feature::Mfcc, Feature::Mel],
            vec![Feature::WhisperLogMel, Feature::Power, Feature::Magnitude],
            vec![Feature::SpectralFlatness, Feature::SpectralCentroid],
        ];
        for top_db in [Some(80.0), None] {
            for features in &sets {
                let mut cfg = FeatureConfig::librosa_defaults(16000.0);
                cfg.features = features.clone();
                cfg.stft.n_fft = 400;
                cfg.stft.win_length = 400;
                cfg.stft.hop_length = 160;
                cfg.n_mels = 40;
                cfg.db.top_db = top_db;
                let lanes = Arc::new(FeaturePlan::new(&cfg).unwrap());
                if lanes.lanes().is_none() {
                    assert_eq!(
                        crate::Isa::best(),
                        crate::Isa::Scalar,
                        "a SIMD CPU gets lanes"
                    );
                    return;
                }
                let frames = Arc::new(FeaturePlan::new(&cfg).unwrap().frame_by_frame());
                assert!(frames.lanes().is_none());
                for len in [400, 2000, 16007] {
                    let x = signal(len);
                    let y: Vec<f32> = x.iter().map(|v| v * 0.5 - 0.01).collect();
                    let want = frames.compute(&[&x, &y]).unwrap();
                    let got = lanes.compute(&[&x, &y]).unwrap();
                    assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!((g.feature, g.shape()), (w.feature, w.shape()));
                        let scale = w
                            .channels
                            .iter()
                            .flatten()
                            .fold(0.0f32, |m, v| m.max(v.abs()));
                        for (gc, wc) in g.channels.iter().zip(&w.channels) {
                            for (i, (a, b)) in gc.iter().zip(wc).enumerate() {
                                assert!(
                                    (a - b).abs() <= 2e-3 + 1e-4 * scale,
                                    "{:?} top_db {top_db:?} len {len} value {i}: {a} vs {b}",
                                    g.feature
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn declared_bound_covers_every_frame() {
        #[derive(Default)]
        struct Bounded {
            bound: u64,
            sent: u64,
        }
        impl FrameSink for Bounded {
            fn frame(&mut self, _: Slot, _: usize, values: &[f32]) {
                self.sent += values.len() as u64;
                assert!(
                    self.sent <= self.bound,
                    "{} values past the bound {}",
                    self.sent,
                    self.bound
                );
            }
            fn bound(&mut self, max_values: u64) {
                assert!(max_values >= self.bound, "the bound shrank");
                self.bound = max_values;
            }
        }
        let sets = [
            Feature::ALL.to_vec(),
            vec![Feature::Mfcc],
            vec![Feature::WhisperLogMel],
            vec![Feature::LogMel, Feature::Fbank],
            vec![Feature::Power],
        ];
        for (center, features) in [true, false]
            .into_iter()
            .flat_map(|c| sets.iter().map(move |f| (c, f)))
        {
            let mut cfg = FeatureConfig::librosa_defaults(16000.0);
            cfg.features = features.clone();
            cfg.stft.n_fft = 400;
            cfg.stft.win_length = 400;
            cfg.stft.hop_length = 160;
            cfg.stft.center = center;
            cfg.n_mels = 40;
            let plan = Arc::new(FeaturePlan::new(&cfg).unwrap());
            for (len, block) in [(400, 400), (401, 1), (16000, 1000), (16007, 4096)] {
                let x = signal(len);
                let mut s = FeatureStream::new(Arc::clone(&plan), 2);
                let mut sink = Bounded::default();
                for b in x.chunks(block) {
                    s.push(&[b, b], &mut sink).unwrap();
                }
                s.finish(&mut sink).unwrap();
                let per_frame: u64 = cfg
                    .features
                    .iter()
                    .map(|&f| plan.dim(f) as u64)
                    .sum::<u64>()
                    + 40;
                assert!(sink.sent > 0);
                assert!(
                    sink.bound <= sink.sent * 5 / 4 + 2 * 4 * per_frame,
                    "bound {} far above the {} values sent",
                    sink.bound,
                    sink.sent
                );
            }
        }
    }

    /// Every feature on every ISA this CPU has, against the scalar kernels: within 1e-3 dB for
    /// the dB features, 2e-5 of the largest value for the others (FMA and summation order).
    #[test]
    fn simd_features_match_scalar() {
        let mut cfg = FeatureConfig::librosa_defaults(16000.0);
        cfg.features = Feature::ALL.to_vec();
        cfg.stft.n_fft = 512;
        cfg.stft.win_length = 400;
        cfg.stft.hop_length = 160;
        cfg.n_mels = 64;
        let x = signal(16000);
        let want = Arc::new(FeaturePlan::with_kernels(&cfg, Kernels::scalar()).unwrap())
            .compute(&[&x])
            .unwrap();
        for isa in crate::Isa::all_supported() {
            let k = Kernels::new(isa).unwrap();
            let got = Arc::new(FeaturePlan::with_kernels(&cfg, k).unwrap())
                .compute(&[&x])
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.shape(), w.shape());
                let scale = w.channels[0].iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = match g.feature {
                    Feature::LogMel => 1e-3,
                    Feature::Mfcc | Feature::WhisperLogMel | Feature::Fbank => {
                        1e-4 * scale.max(1.0)
                    }
                    _ => 2e-5 * scale,
                };
                for (a, b) in g.channels[0].iter().zip(&w.channels[0]) {
                    assert!((a - b).abs() <= tol, "{isa:?} {:?}: {a} vs {b}", g.feature);
                }
            }
        }
    }

    #[test]
    fn nan_and_empty_are_errors() {
        let plan = Arc::new(FeaturePlan::new(&FeatureConfig::librosa_defaults(22050.0)).unwrap());
        let mut s = FeatureStream::new(Arc::clone(&plan), 1);
        let mut sink = Collector::default();
        assert!(matches!(
            s.push(&[&[0.0, f32::NAN]], &mut sink),
            Err(DspError::NonFinite { index: 1 })
        ));
        let s = FeatureStream::new(plan, 1);
        assert!(matches!(
            s.finish(&mut sink),
            Err(DspError::TooShort { samples: 0, .. })
        ));
    }

    /// Finishing pending frames a block at a time (in a recycled buffer full of garbage) gives
    /// what the stream's own finish gives, for every deferred feature, on the lane path and
    /// the per-frame path, with a partial last block.
    #[test]
    fn finished_blocks_equal_the_streams_own_finish() {
        struct Blocks(Vec<MelBlocks>);
        impl FrameSink for Blocks {
            fn frame(&mut self, slot: Slot, c: usize, values: &[f32]) {
                if slot == Slot::PendingMel {
                    self.0[c].push_frame(values);
                }
            }
            fn tile(&mut self, slot: Slot, c: usize, tile: Tile<'_>) {
                if slot == Slot::PendingMel {
                    self.0[c].push_tile(&tile);
                }
            }
        }
        for feature in [Feature::Mfcc, Feature::LogMel, Feature::WhisperLogMel] {
            let mut cfg = FeatureConfig::librosa_defaults(16000.0);
            cfg.features = vec![feature];
            cfg.stft.n_fft = 400;
            cfg.stft.win_length = 400;
            cfg.stft.hop_length = 160;
            cfg.n_mels = 40;
            cfg.db.reference = crate::DbReference::Max;
            let lanes = Arc::new(FeaturePlan::new(&cfg).unwrap());
            let frames = Arc::new(FeaturePlan::new(&cfg).unwrap().frame_by_frame());
            for plan in [lanes, frames] {
                // 3, 13, 16 and 17 frames (a full last block; Whisper's dropped frame alone
                // in the last block), and 101.
                for len in [400, 2000, 2400, 2560, 16007] {
                    let x = signal(len);
                    let y: Vec<f32> = x.iter().map(|v| v * 0.5 - 0.01).collect();
                    let want = &plan.compute(&[&x, &y]).unwrap()[0];
                    let n = plan.cfg.stft.n_frames(len as u64) as usize;
                    let garbage = vec![f32::NAN; MelBlocks::values_for(40, n)];
                    let mut sink = Blocks(vec![
                        MelBlocks::with_buffer(40, n, garbage.clone()),
                        MelBlocks::with_buffer(40, n, garbage),
                    ]);
                    let mut stream = FeatureStream::new(Arc::clone(&plan), 2);
                    stream.push(&[&x, &y], &mut sink).unwrap();
                    let fin = stream.finish(&mut sink).unwrap();
                    let (dim, cols) = (fin.dim(feature), fin.frames(feature) as usize);
                    for (c, blocks) in sink.0.iter_mut().enumerate() {
                        let mut out = vec![f32::NAN; dim * cols];
                        fin.finish_blocks(feature, blocks, &mut out);
                        for t in 0..cols {
                            for d in 0..dim {
                                let (a, b) = (out[d * cols + t], want.channels[c][t * dim + d]);
                                assert!(
                                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                                    "{feature:?} len {len} channel {c} ({d}, {t}): {a} vs {b}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mfcc_is_dct_of_log_mel() {
        let mut cfg = FeatureConfig::librosa_defaults(16000.0);
        cfg.n_mels = 64;
        cfg.features = vec![Feature::LogMel, Feature::Mfcc];
        let plan = Arc::new(FeaturePlan::new(&cfg).unwrap());
        let out = plan.compute(&[&signal(8000)]).unwrap();
        let (lm, mf) = (&out[0], &out[1]);
        assert_eq!(mf.shape(), vec![20, 16]);
        let t = 5;
        let frame = &lm.channels[0][t * 64..(t + 1) * 64];
        let c0: f64 = frame.iter().map(|&v| v as f64).sum::<f64>() / (64f64).sqrt();
        assert!((mf.channels[0][t * 20] as f64 - c0).abs() < 1e-3 * c0.abs().max(1.0));
    }
}
