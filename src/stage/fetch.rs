//! Fetch: makes an item's bytes available locally and describes them (size, mtime, content
//! hash). Local paths are used in place; objects in a store (`s3://`, `gs://`, `https://`) are
//! streamed into a temp file, hashed on the way, under the size cap. Nothing outside this
//! module opens an item's source for anything but decoding.

use crate::pipeline::ErrorKind;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::item::{InputFacts, Source};
use crate::stage::sink::TempFolder;
use crate::store::{Remote, StoreError, Stores};

/// Why an input could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The input does not exist (its own outcome: `missing_input`).
    #[error("input does not exist: {0}")]
    Missing(String),
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
    /// An object store failed (denied, too large, unreachable).
    #[error("{0}")]
    Store(StoreError),
}

impl FetchError {
    /// The ledger's `error_kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Missing(_) => ErrorKind::MissingInput,
            FetchError::NotAFile(_) => ErrorKind::NotAFile,
            FetchError::Io { .. } => ErrorKind::Io,
            FetchError::Store(e) => e.kind(),
        }
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
            return Err(FetchError::Missing(path.display().to_string()))
        }
        // A symlink loop (ELOOP) or a path through a file (ENOTDIR) will not clear up.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            return Err(FetchError::NotAFile(path.into()))
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

/// A missing object is a missing input like a missing file; the rest stays a store error.
impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(u) => FetchError::Missing(u),
            e => FetchError::Store(e),
        }
    }
}

/// Size and modification time of any source, without reading its content (a HEAD request for
/// an object).
///
/// # Errors
/// Missing input, not a file, or the stat (or request) failed.
pub fn stat_source(stores: &Stores, source: &Source) -> Result<InputFacts, FetchError> {
    match source {
        Source::Path(p) => stat(p),
        Source::Remote(r) => {
            let meta = stores.head(r)?;
            Ok(InputFacts {
                size: Some(meta.size as i64),
                mtime_ns: meta.last_modified.timestamp_nanos_opt(),
                hash: None,
            })
        }
    }
}

/// An item's bytes on local disk, for decoding and for exec programs.
#[derive(Debug)]
pub struct Fetched {
    /// The local file.
    pub path: PathBuf,
    /// BLAKE3 of its content, hex.
    pub hash: String,
    /// Holds a downloaded copy until the item is finished.
    _temp: Option<TempFolder>,
}

/// Makes a source's bytes available locally: a local file in place (hashed), an object
/// downloaded into `temp` (hashed while streaming, refused past `cap` bytes). The download
/// keeps the object's file name, so the decoder sees its extension.
///
/// # Errors
/// The file cannot be read, or the download failed.
pub fn fetch(
    stores: &Stores,
    source: &Source,
    temp: impl FnOnce() -> Result<TempFolder, crate::stage::sink::SinkError>,
    cap: u64,
) -> Result<Fetched, FetchError> {
    match source {
        Source::Path(p) => Ok(Fetched {
            path: p.clone(),
            hash: content_hash(p)?,
            _temp: None,
        }),
        Source::Remote(r) => {
            let folder = temp().map_err(|e| FetchError::Io {
                path: PathBuf::from(r.to_string()),
                source: std::io::Error::other(e.to_string()),
            })?;
            let dest = folder.path().join(local_name(r));
            let got = stores.download(r, &dest, cap)?;
            Ok(Fetched {
                path: dest,
                hash: got.hash,
                _temp: Some(folder),
            })
        }
    }
}

/// A safe local file name for an object: its own name with anything but `[A-Za-z0-9._-]`
/// replaced, so the extension survives.
fn local_name(r: &Remote) -> String {
    let name = crate::item::safe_name(r.file_name());
    let mut name = if name.is_empty() {
        "input".into()
    } else {
        name
    };
    if name.len() > 100 {
        name = name[name.len() - 100..].to_string();
    }
    name
}
