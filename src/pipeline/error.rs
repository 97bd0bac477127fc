//! The error of one item: its ledger `error_kind` (the stage errors' `kind()`), a message for
//! people, whether a later attempt could succeed, and the stage it comes from.

use crate::decode::DecodeError;
use crate::exec::ExecError;
use crate::features::FeatureError;
use crate::fetch::FetchError;
use crate::infer::InferError;
use crate::sink::SinkError;

/// An error attributed to one item.
#[derive(Debug, Clone)]
pub struct ItemError {
    /// The ledger's `error_kind`.
    pub kind: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ItemError {
    /// Whether a later attempt could succeed: I/O, a missing input (it may still arrive), the
    /// output folder or the ledger, an exec program that timed out. Bad data is not retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            "io" | "missing_input" | "fetch" | "sink" | "ledger" | "exec_timeout" | "exec_io"
        )
    }
}

pub(crate) fn ledger_error(e: &anyhow::Error) -> ItemError {
    ItemError {
        kind: "ledger",
        message: format!("{e:#}"),
    }
}

/// Every stage error names its ledger kind with `kind()`.
macro_rules! item_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ItemError {
            fn from(e: $t) -> Self {
                ItemError {
                    kind: e.kind(),
                    message: e.to_string(),
                }
            }
        }
    )*};
}
item_error_from!(FetchError, DecodeError, FeatureError, ExecError, InferError);

impl From<SinkError> for ItemError {
    fn from(e: SinkError) -> Self {
        ItemError {
            kind: "sink",
            message: e.to_string(),
        }
    }
}

/// The stage an error kind comes from (the `stage` field of log lines).
pub fn stage_of(kind: &str) -> &'static str {
    match kind {
        "missing_input" | "not_a_file" | "fetch" | "fetch_denied" | "too_large" | "io" => "fetch",
        "sink" => "sink",
        "ledger" | "gave_up" | "interrupted" => "ledger",
        k if k.starts_with("exec_") => "exec",
        k if k.starts_with("model_") => "infer",
        k if k.starts_with("feature") || k == "too_short" || k == "non_finite" => "features",
        _ => "decode",
    }
}
