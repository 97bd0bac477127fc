//! klio-dsp: audio feature extraction as pure computation.
//!
//! This crate owns the numerics of klio-edge: framing with centre padding, windows, the STFT,
//! power and magnitude spectrograms, mel filterbanks, `power_to_db` and the MFCC DCT. It must
//! not touch files, the network, threads, async runtimes or logging: callers hand it samples and
//! buffers, it hands back numbers.
//!
//! Every stage follows the plan-once / process-many shape of realfft: a `*Plan` validates its
//! `*Config` and precomputes everything (windows, FFT plans, filter weights), is immutable and
//! can be shared across threads (`Arc`), and its `process*` methods write into caller-owned
//! output and scratch buffers without allocating. [`FeatureStream`] ties the stages together
//! for one signal that arrives block by block, giving results identical to the whole-signal
//! computation.
//!
//! Numerics follow librosa 0.11 (`stft`, `filters.mel`, `power_to_db`, `feature.mfcc`); the
//! parity tests state the tolerances.

mod blocks;
mod db;
mod dct;
mod descriptors;
mod error;
mod fbank;
mod features;
pub mod kernels;
mod mel;
pub mod memory;
mod stft;
mod window;

pub use blocks::{MelBlocks, BLOCK};
pub use db::{power_to_db_in_place, power_to_db_into, power_to_db_with, DbConfig, DbReference};
pub use dct::DctPlan;
pub use error::DspError;
pub use fbank::{FbankConfig, FbankPlan, FbankScratch};
pub use features::{
    Collector, Feature, FeatureConfig, FeatureOutput, FeaturePlan, FeatureStream, Finalizer,
    FrameSink, Slot, Tile, PER_FRAME_ENV,
};
pub use kernels::{Isa, Kernels, LaneFft, LaneScratch, Span, SparseRows};
pub use mel::{hz_to_mel, mel_to_hz, MelConfig, MelNorm, MelPlan, MelScale};
pub use stft::{Framer, PadMode, SpectrumKind, StftConfig, StftPlan, StftScratch};
pub use window::{window, WindowKind};
