//! Shared nouns of the pipeline: what an item is, how its element id is derived, and how its
//! processing ended. Stages depend on these types only, never on each other or on the drivers.

use std::path::{Path, PathBuf};

use crate::store::Remote;

/// Longest stem kept in an element id (in bytes, after sanitising).
const MAX_STEM: usize = 64;

/// Where an item's bytes are: a local file or an object in a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An absolute local path.
    Path(PathBuf),
    /// `s3://`, `gs://`, `https://` (or `http://`).
    Remote(Remote),
}

impl Source {
    /// Parses an input as written by a user or a message: a URL of an object store, a
    /// `file://` URI, or a local path (made absolute).
    ///
    /// # Errors
    /// A malformed object-store URL.
    pub fn parse(s: &str) -> Result<Source, String> {
        if let Some(r) = Remote::parse(s)? {
            return Ok(Source::Remote(r));
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        Ok(Source::Path(absolute(Path::new(path))))
    }

    /// The local path, if this is one.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Source::Path(p) => Some(p),
            Source::Remote(_) => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::Remote(r) => write!(f, "{r}"),
        }
    }
}

/// One unit of work: a source and the element id its outputs are filed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemRef {
    /// Element id: `<stem>-<hash16>`, see [`element_id`].
    pub element: String,
    /// The input.
    pub source: Source,
}

impl ItemRef {
    /// An item for `path` (made absolute, symlinks resolved where the file exists).
    pub fn for_path(path: &Path) -> ItemRef {
        let source = absolute(path);
        ItemRef {
            element: element_id(&source),
            source: Source::Path(source),
        }
    }

    /// An item for an object in a store; its element id is derived from the URL as
    /// [`element_id`] derives it from a path.
    pub fn for_remote(r: Remote) -> ItemRef {
        ItemRef {
            element: element_id(Path::new(&r.to_string())),
            source: Source::Remote(r),
        }
    }

    /// An item for a parsed source.
    pub fn for_source(source: Source) -> ItemRef {
        match source {
            Source::Path(p) => ItemRef::for_path(&p),
            Source::Remote(r) => ItemRef::for_remote(r),
        }
    }
}

/// The absolute form of `path`: canonical if it exists, else lexically joined to the cwd.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `_` and leading dots
/// removed: safe as one file name anywhere (it may be empty).
pub fn safe_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean.trim_start_matches('.').to_string()
}

/// Derives the element id of a source from its absolute path.
///
/// The rule: the file name without its last extension, with every byte outside
/// `[A-Za-z0-9._-]` replaced by `_`, leading dots removed, cut to 64 bytes (or `item` when
/// nothing is left); then `-` and the first 16 hex digits of the BLAKE3 hash of the full
/// absolute path. The stem keeps ids readable; the hash makes them collision-free for distinct
/// paths (64 bits) and stable for as long as the file stays where it is.
pub fn element_id(absolute_path: &Path) -> String {
    let stem = absolute_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut clean = safe_name(&stem);
    clean.truncate(MAX_STEM);
    if clean.is_empty() {
        clean = "item".into();
    }
    let digest = blake3::hash(absolute_path.as_os_str().as_encoded_bytes());
    format!("{clean}-{}", &digest.to_hex()[..16])
}

/// What is known of an input before it is processed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputFacts {
    /// Size in bytes.
    pub size: Option<i64>,
    /// Modification time in ns since the epoch.
    pub mtime_ns: Option<i64>,
    /// BLAKE3 of the content, hex.
    pub hash: Option<String>,
}

/// How one item ended in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs written and committed.
    Done,
    /// A done row matched the input and config: nothing to do.
    Skipped,
    /// Processing failed; the reason is in the ledger.
    Failed,
    /// Failed before and out of attempts: not retried this run.
    GaveUp,
}

/// A stage or model name from the config (it becomes part of file names): letters, digits,
/// `-` and `_`, 1 to 64 of them.
///
/// # Errors
/// Any other name, naming `key`.
pub fn check_stage_name(key: &str, name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        anyhow::bail!("{key}: {name:?} must be 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_ids_are_safe_stable_and_distinct() {
        let a = element_id(Path::new("/data/x/song one.wav"));
        let b = element_id(Path::new("/data/y/song one.wav"));
        assert!(
            a.starts_with("song_one-") && a.len() == "song_one-".len() + 16,
            "{a}"
        );
        assert_ne!(a, b);
        assert_eq!(a, element_id(Path::new("/data/x/song one.wav")));
        let weird = element_id(Path::new("/d/../..;rm -rf ~.mp3"));
        assert!(
            weird
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{weird}"
        );
        assert!(!weird.starts_with('.'));
        let long = element_id(Path::new(&format!("/d/{}.wav", "é".repeat(100))));
        assert!(long.len() <= MAX_STEM + 17);
        assert!(
            element_id(Path::new("/d/.wav")).starts_with("wav-")
                || element_id(Path::new("/d/.wav")).starts_with("item-")
        );
    }
}
