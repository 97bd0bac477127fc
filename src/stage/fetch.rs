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

/// Files at least this large are hashed by two threads ([`hash_in_two`]).
const TWO_THREAD_HASH_BYTES: u64 = 8 << 20;

/// BLAKE3 of the file's content, read in 1 MiB blocks. From [`TWO_THREAD_HASH_BYTES`] on, the
/// two subtrees under BLAKE3's root are hashed by two threads (the hash is the same): the
/// hash comes before the item's claim (the ledger's retry and crash rules compare it), so
/// for one long file it is on the critical path.
///
/// # Errors
/// The file cannot be read.
pub fn content_hash(path: &Path) -> Result<String, FetchError> {
    let err = |source| FetchError::Io {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    if len >= TWO_THREAD_HASH_BYTES {
        // `None`: the file changed length while it was read; hash what one pass reads.
        if let Some(h) = hash_in_two(&file, len).map_err(err)? {
            return Ok(h.to_hex().to_string());
        }
    }
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

/// BLAKE3 of the `len` bytes of `file` as its root's two subtrees, one per thread, through
/// blake3's `hazmat` API (tested against `blake3::hash`); `None` if the file is not `len`
/// bytes long throughout.
fn hash_in_two(file: &File, len: u64) -> std::io::Result<Option<blake3::Hash>> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, Mode};
    let left = left_subtree_len(len);
    let (l, r) = std::thread::scope(|s| {
        let l = s.spawn(|| subtree(file, 0, left));
        let r = subtree(file, left, len - left);
        (l.join(), r)
    });
    let l = l.map_err(|_| std::io::Error::other("the hashing thread panicked"))??;
    let (Some(l), Some(r)) = (l, r?) else {
        return Ok(None);
    };
    if file.metadata()?.len() != len {
        return Ok(None);
    }
    Ok(Some(merge_subtrees_root(&l, &r, Mode::Hash)))
}

/// The chaining value of bytes `[start, start + n)` of `file` as one BLAKE3 subtree, or
/// `None` if the file ends first.
fn subtree(
    file: &File,
    start: u64,
    n: u64,
) -> std::io::Result<Option<blake3::hazmat::ChainingValue>> {
    use blake3::hazmat::HasherExt;
    use std::os::unix::fs::FileExt;
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(start);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < n {
        let want = (n - done).min(buf.len() as u64) as usize;
        let got = file.read_at(&mut buf[..want], start + done)?;
        if got == 0 {
            return Ok(None);
        }
        hasher.update(&buf[..got]);
        done += got as u64;
    }
    Ok(Some(hasher.finalize_non_root()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-thread hash is BLAKE3's: at the threshold, past it by odd amounts, and around
    /// powers of two of BLAKE3 chunks (where the root's split moves).
    #[test]
    fn two_thread_hash_equals_blake3_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let base = TWO_THREAD_HASH_BYTES as usize;
        for len in [
            base - 1,
            base,
            base + 1,
            base + 1024 * 1024 + 7,
            2 * base - 1,
            2 * base + 1025,
        ] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(
                content_hash(&p).unwrap(),
                blake3::hash(&bytes).to_hex().to_string(),
                "{len} bytes"
            );
        }
        let file = File::open(dir.path().join(format!("f{base}"))).unwrap();
        assert_eq!(
            hash_in_two(&file, base as u64 + 10).unwrap(),
            None,
            "file shorter"
        );
    }
}
