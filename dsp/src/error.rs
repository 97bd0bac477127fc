use thiserror::Error;

/// Errors from building a plan or processing a signal.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DspError {
    /// A configuration value is out of its valid range; the message names the key.
    #[error("invalid {key}: {reason}")]
    InvalidConfig {
        /// The configuration key at fault, e.g. `n_fft`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The signal yields no frame (empty, or shorter than `n_fft` without centre padding).
    #[error(
        "signal too short: {samples} samples give no frame with n_fft {n_fft} (center {center})"
    )]
    TooShort {
        /// Number of samples received.
        samples: u64,
        /// The frame length.
        n_fft: usize,
        /// Whether centre padding was on.
        center: bool,
    },
    /// The signal holds NaN or infinite samples.
    #[error("signal holds a non-finite sample (NaN or infinity) at index {index}")]
    NonFinite {
        /// Index of the first offending sample (per channel).
        index: u64,
    },
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> DspError {
    DspError::InvalidConfig {
        key,
        reason: reason.into(),
    }
}
