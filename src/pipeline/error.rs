//! Why an item (or an event) failed: one [`ErrorKind`] per failure the ledger, the metrics,
//! the log lines and the dead-letter headers can name, each with its stage and whether a
//! later attempt could succeed; and [`ItemError`], a kind with a message for people.

use crate::stage::decode::DecodeError;
use crate::stage::exec::ExecError;
use crate::stage::features::FeatureError;
use crate::stage::fetch::FetchError;
use crate::stage::infer::InferError;
use crate::stage::sink::SinkError;

macro_rules! error_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $stage:literal, $retryable:literal;)*) => {
        /// Every failure klio-edge records: `items.error_kind` in the ledger, the
        /// `error_kind` of log lines and of an inbox's `<name>.error.json`, the
        /// `Klio-Error-Kind` header of a dead letter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorKind {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorKind {
            /// Every kind, in the README's order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The name stored in the ledger and sent in headers.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorKind::$variant => $name,)* }
            }

            /// The stage the failure comes from (the `stage` field of log lines).
            pub const fn stage(self) -> &'static str {
                match self { $(ErrorKind::$variant => $stage,)* }
            }

            /// Whether a later attempt could succeed: `serve` retries these with backoff
            /// (any other failure is dead-lettered at once). `process` retries every failed
            /// item on its next run, up to `run.max_attempts`, whatever its kind.
            pub const fn is_retryable(self) -> bool {
                match self { $(ErrorKind::$variant => $retryable,)* }
            }

            /// The kind named `name` (as stored in the ledger).
            pub fn from_name(name: &str) -> Option<ErrorKind> {
                match name { $($name => Some(ErrorKind::$variant),)* _ => None }
            }
        }
    };
}

error_kinds! {
    /// The file or object does not exist.
    MissingInput = "missing_input", "fetch", true;
    /// The input is not a regular file.
    NotAFile = "not_a_file", "fetch", false;
    /// Reading the input, or a local temp file, failed.
    Io = "io", "fetch", true;
    /// Larger than `run.max_input_bytes`.
    TooLarge = "too_large", "fetch", false;
    /// An object store failed after its retries, or the output-exists check failed.
    Fetch = "fetch", "fetch", true;
    /// Object-store credentials missing or refused.
    FetchDenied = "fetch_denied", "fetch", false;
    /// The file has 0 bytes.
    EmptyFile = "empty_file", "decode", false;
    /// No known container or stream format.
    UnknownFormat = "unknown_format", "decode", false;
    /// The container holds no audio track.
    NoAudioTrack = "no_audio_track", "decode", false;
    /// A codec klio-edge does not decode.
    UnsupportedCodec = "unsupported_codec", "decode", false;
    /// Invalid stream headers.
    InvalidStream = "invalid_stream", "decode", false;
    /// The stream ends inside its headers or a packet.
    Truncated = "truncated", "decode", false;
    /// A packet does not decode.
    Corrupt = "corrupt", "decode", false;
    /// Longer than `decode.max_duration_s`.
    TooLong = "too_long", "decode", false;
    /// More channels than `decode.max_channels`.
    TooManyChannels = "too_many_channels", "decode", false;
    /// A rate over `decode.max_sample_rate_hz`.
    SampleRateTooHigh = "sample_rate_too_high", "decode", false;
    /// A rate under `decode.min_sample_rate_hz`.
    SampleRateTooLow = "sample_rate_too_low", "decode", false;
    /// The content is another format than the extension says.
    ExtensionMismatch = "extension_mismatch", "decode", false;
    /// The stream decoded to zero samples.
    NoSamples = "no_samples", "decode", false;
    /// The resampler could not be built or failed.
    Resample = "resample", "decode", false;
    /// Still decoding after `run.item_timeout_s`.
    Timeout = "timeout", "decode", false;
    /// The features config does not fit this item.
    FeatureConfig = "feature_config", "features", false;
    /// Shorter than one frame or one model chunk.
    TooShort = "too_short", "features", false;
    /// NaN or infinity in the signal.
    NonFinite = "non_finite", "features", false;
    /// Any other DSP error.
    Features = "features", "features", false;
    /// The audio is not at the model's rate.
    ModelRate = "model_rate", "infer", false;
    /// The runtime refused a chunk.
    ModelRun = "model_run", "infer", false;
    /// The model produced NaN or infinity.
    ModelNonFinite = "model_non_finite", "infer", false;
    /// The program could not be started.
    ExecSpawn = "exec_spawn", "exec", false;
    /// Non-zero exit code or killed by a signal.
    ExecFailed = "exec_failed", "exec", false;
    /// Ran past `timeout_s`.
    ExecTimeout = "exec_timeout", "exec", true;
    /// Stdout or a collected file over `max_output_bytes`.
    ExecOutputTooLarge = "exec_output_too_large", "exec", false;
    /// A declared output pattern matched nothing.
    ExecMissingOutput = "exec_missing_output", "exec", false;
    /// A file operation around the program failed.
    ExecIo = "exec_io", "exec", true;
    /// The outputs could not be written or uploaded.
    Sink = "sink", "sink", true;
    /// More output than the config implies per second of audio (a bug; refused before
    /// allocating).
    OutputTooLarge = "output_too_large", "sink", false;
    /// The ledger could not be read or written for this item.
    Ledger = "ledger", "ledger", true;
    /// The run processing the item stopped (killed, crashed) before it finished.
    Interrupted = "interrupted", "ledger", true;
    /// Failed `run.max_attempts` times for this input and config.
    GaveUp = "gave_up", "ledger", false;
    /// (events) The bytes are not a message `serve` understands.
    BadMessage = "bad_message", "event", false;
    /// (events) Delivered `max_deliver` times without finishing.
    OutOfDeliveries = "out_of_deliveries", "event", false;
    /// The item's worker panicked (a bug: the panic message is recorded).
    Crash = "crash", "pipeline", false;
    /// (events) A failure without a recorded error.
    Unknown = "unknown", "pipeline", false;
    /// (events) The input is outside what `serve` may read (`serve.allow_paths`, ...).
    Forbidden = "forbidden", "event", false;
    /// (events) The element id is recorded for another input (send `force` to replace it).
    ElementConflict = "element_conflict", "event", false;
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error attributed to one item.
#[derive(Debug, Clone)]
pub struct ItemError {
    /// The ledger's `error_kind`.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl ItemError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ItemError {
        ItemError {
            kind,
            message: message.into(),
        }
    }

    /// Whether a later attempt could succeed (see [`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

pub(crate) fn ledger_error(e: &anyhow::Error) -> ItemError {
    ItemError::new(ErrorKind::Ledger, format!("{e:#}"))
}

/// Every stage error names its kind with `kind()`.
macro_rules! item_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ItemError {
            fn from(e: $t) -> Self {
                ItemError::new(e.kind(), e.to_string())
            }
        }
    )*};
}
item_error_from!(FetchError, FeatureError, ExecError, InferError, SinkError);

/// The ledger's name for each decode error (klio-decode knows nothing of the ledger).
impl From<DecodeError> for ItemError {
    fn from(e: DecodeError) -> Self {
        let kind = match &e {
            DecodeError::Io(_) => ErrorKind::Io,
            DecodeError::Empty => ErrorKind::EmptyFile,
            DecodeError::UnknownFormat(_) => ErrorKind::UnknownFormat,
            DecodeError::NoAudioTrack(_) => ErrorKind::NoAudioTrack,
            DecodeError::UnsupportedCodec(_) => ErrorKind::UnsupportedCodec,
            DecodeError::InvalidStream(_) => ErrorKind::InvalidStream,
            DecodeError::Truncated(_) => ErrorKind::Truncated,
            DecodeError::Corrupt(_) => ErrorKind::Corrupt,
            DecodeError::TooLong { .. } => ErrorKind::TooLong,
            DecodeError::TooManyChannels(_) => ErrorKind::TooManyChannels,
            DecodeError::RateTooHigh(_) => ErrorKind::SampleRateTooHigh,
            DecodeError::RateTooLow(_) => ErrorKind::SampleRateTooLow,
            DecodeError::ExtensionMismatch { .. } => ErrorKind::ExtensionMismatch,
            DecodeError::NoSamples => ErrorKind::NoSamples,
            DecodeError::Resample { .. } => ErrorKind::Resample,
        };
        ItemError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for &k in ErrorKind::ALL {
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::from_name("no_such_kind"), None);
    }

    #[test]
    fn transient_failures_are_retryable_and_bad_data_is_not() {
        for k in [
            ErrorKind::Io,
            ErrorKind::Sink,
            ErrorKind::Ledger,
            ErrorKind::MissingInput,
        ] {
            assert!(k.is_retryable(), "{k}");
        }
        for k in [ErrorKind::Corrupt, ErrorKind::TooShort, ErrorKind::GaveUp] {
            assert!(!k.is_retryable(), "{k}");
        }
    }
}
