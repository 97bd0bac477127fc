//! Features stage: turns the `[features]` config into klio-dsp plans (one per sample rate,
//! built once and shared by all workers) and runs them over decoded blocks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use klio_dsp::{DspError, FeaturePlan};

use crate::config::FeaturesConfig;

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
    pub fn kind(&self) -> &'static str {
        match self {
            FeatureError::Config { .. } => "feature_config",
            FeatureError::Signal(DspError::TooShort { .. }) => "too_short",
            FeatureError::Signal(DspError::NonFinite { .. }) => "non_finite",
            FeatureError::Signal(_) => "features",
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
