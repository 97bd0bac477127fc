//! Fetch: makes an item's bytes available locally and describes them (size, mtime, content
//! hash). Today: local paths. Object stores and `https://` plug in here (issue: object
//! stores); nothing outside this module opens an item's source for anything but decoding.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::item::InputFacts;

/// Why an input could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The input does not exist (its own outcome: `missing_input`).
    #[error("input does not exist: {0}")]
    Missing(PathBuf),
    /// The input is not a regular file.
    #[error("input is not a regular file: {0}")]
    NotAFile(PathBuf),
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The input.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl FetchError {
    /// The ledger's `error_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Missing(_) => "missing_input",
            FetchError::NotAFile(_) => "not_a_file",
            FetchError::Io { .. } => "io",
        }
    }

    /// Whether a later attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FetchError::Io { .. } | FetchError::Missing(_))
    }
}

/// Size and modification time, without reading the content.
///
/// # Errors
/// Missing input, not a file, or a stat failure.
pub fn stat(path: &Path) -> Result<InputFacts, FetchError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FetchError::Missing(path.into()))
        }
        Err(source) => {
            return Err(FetchError::Io {
                path: path.into(),
                source,
            })
        }
    };
    if !meta.is_file() {
        return Err(FetchError::NotAFile(path.into()));
    }
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64);
    Ok(InputFacts {
        size: Some(meta.len() as i64),
        mtime_ns,
        hash: None,
    })
}

/// BLAKE3 of the file's content, read in 1 MiB blocks.
///
/// # Errors
/// The file cannot be read.
pub fn content_hash(path: &Path) -> Result<String, FetchError> {
    let err = |source| FetchError::Io {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}
