//! Turns the `INPUTS...` of `klio-edge process` into items: files, directories (recursive),
//! globs, `@manifest` files, and object-store URLs (`s3://`, `gs://`, `https://`): one object,
//! or every object under a prefix ending in `/`, or those matching a glob
//! (`s3://bucket/corpus/**/*.wav`). It only lists; it opens no audio.
//!
//! Folder walks and bucket prefixes take only the files whose extension is in the
//! [`Selection`] (audio extensions when decode is on); a file, glob or object named outright
//! is always taken as given. `@-` reads a manifest from stdin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::item::{absolute, ItemRef, Source};
use crate::store::{Remote, Stores};

/// The items named by `inputs`, sorted by path, each once, plus notes about inputs that named
/// nothing (an empty folder, a glob without matches).
#[derive(Debug, Default)]
pub struct Expanded {
    /// The items.
    pub items: Vec<ItemRef>,
    /// Human-readable warnings.
    pub warnings: Vec<String>,
}

/// Which files a folder walk or a bucket prefix takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Lower-case extensions without the dot; `None` takes every file.
    extensions: Option<Vec<String>>,
    /// Files a walk left out for their extension (for the closing note).
    skipped: std::cell::Cell<usize>,
}

impl Selection {
    /// Every file.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// Files whose extension is one of `extensions` (case-insensitive, with or without the
    /// leading dot).
    pub fn extensions<S: AsRef<str>>(extensions: &[S]) -> Selection {
        Selection {
            extensions: Some(
                extensions
                    .iter()
                    .map(|e| e.as_ref().trim_start_matches('.').to_ascii_lowercase())
                    .collect(),
            ),
            skipped: Default::default(),
        }
    }

    /// What a config takes: `run.extensions` when decode is on, every file when it is off.
    pub fn for_config(cfg: &crate::config::Config) -> Selection {
        if cfg.decode.enabled {
            Selection::extensions(&cfg.run.extensions)
        } else {
            Selection::all()
        }
    }

    fn takes(&self, name: &str) -> bool {
        let Some(exts) = &self.extensions else {
            return true;
        };
        let ok = Path::new(name)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .is_some_and(|e| exts.contains(&e));
        if !ok {
            self.skipped.set(self.skipped.get() + 1);
        }
        ok
    }
}

/// Expands inputs. Paths under any of `exclude` (the output folder) are left out of folder
/// walks, and so are files that `select` does not take. A plain path that does not exist
/// still becomes an item, so the run records it as `missing_input`.
///
/// # Errors
/// An unreadable manifest, a malformed glob, or two distinct paths with the same element id.
pub fn expand(
    stores: &Stores,
    inputs: &[String],
    exclude: &[PathBuf],
    select: &Selection,
) -> Result<Expanded> {
    let mut found: BTreeMap<Source, ItemRef> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut stdin_read = false;
    let remote_exclude: Vec<Remote> = exclude
        .iter()
        .filter_map(|p| Remote::parse(&p.to_string_lossy()).ok().flatten())
        .collect();
    let exclude: Vec<PathBuf> = exclude.iter().map(|p| absolute(p)).collect();
    for input in inputs {
        if let Some(r) = Remote::parse(input).map_err(anyhow::Error::msg)? {
            add_remote(
                stores,
                r,
                input,
                &remote_exclude,
                select,
                &mut found,
                &mut warnings,
            )?;
            continue;
        }
        if let Some(manifest) = input.strip_prefix('@') {
            let (text, base) = if manifest == "-" {
                if std::mem::replace(&mut stdin_read, true) {
                    bail!("@- is named twice: stdin can be read once");
                }
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("cannot read the manifest from stdin (@-)")?;
                (text, PathBuf::from("."))
            } else {
                let text = std::fs::read_to_string(manifest)
                    .with_context(|| format!("cannot read manifest {manifest}"))?;
                let base = Path::new(manifest).parent().unwrap_or(Path::new("."));
                (text, base.to_path_buf())
            };
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(r) = Remote::parse(line).map_err(anyhow::Error::msg)? {
                    add_remote(
                        stores,
                        r,
                        line,
                        &remote_exclude,
                        select,
                        &mut found,
                        &mut warnings,
                    )?;
                    continue;
                }
                let p = Path::new(line);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                };
                add_path(
                    &p.to_string_lossy(),
                    &exclude,
                    select,
                    &mut found,
                    &mut warnings,
                )?;
            }
        } else {
            add_path(input, &exclude, select, &mut found, &mut warnings)?;
        }
    }
    let skipped = select.skipped.take();
    if skipped > 0 {
        warnings.push(format!(
            "{skipped} file(s) in the folders named were left out for their extension \
             (run.extensions or --ext chooses which are taken)"
        ));
    }
    let mut by_element: BTreeMap<&str, &Source> = BTreeMap::new();
    for item in found.values() {
        if let Some(other) = by_element.insert(&item.element, &item.source) {
            bail!(
                "element id collision: {other} and {} both map to {}",
                item.source,
                item.element
            );
        }
    }
    Ok(Expanded {
        items: found.into_values().collect(),
        warnings,
    })
}

fn add_path(
    input: &str,
    exclude: &[PathBuf],
    select: &Selection,
    found: &mut BTreeMap<Source, ItemRef>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let path = Path::new(input);
    if path.is_dir() {
        let before = found.len();
        walk_dir(path, exclude, select, found);
        if found.len() == before {
            // Named outright and nothing to take: a failed item (`not_a_file`), so the run
            // does not end "all done" with nothing done.
            warnings.push(format!("{input}: folder holds no files to take"));
            let item = ItemRef::for_path(path);
            found.entry(item.source.clone()).or_insert(item);
        }
    } else if path.exists() || !input.contains(['*', '?', '[']) {
        let item = ItemRef::for_path(path);
        found.entry(item.source.clone()).or_insert(item);
    } else {
        let mut any = false;
        for entry in glob::glob(input).with_context(|| format!("bad glob pattern {input}"))? {
            let p = match entry {
                Ok(p) => p,
                Err(e) => {
                    warnings.push(format!("{input}: {e}"));
                    continue;
                }
            };
            any = true;
            if p.is_dir() {
                walk_dir(&p, exclude, select, found);
            } else {
                let item = ItemRef::for_path(&p);
                found.entry(item.source.clone()).or_insert(item);
            }
        }
        if !any {
            warnings.push(format!("{input}: glob matched nothing"));
        }
    }
    Ok(())
}

/// One object, or a listing: a key ending in `/` (everything under it but hidden names) or a
/// key with glob characters (listed from the part before the first one; `*` stays within one
/// `/`-separated part, `**` crosses them).
fn add_remote(
    stores: &Stores,
    r: Remote,
    input: &str,
    exclude: &[Remote],
    select: &Selection,
    found: &mut BTreeMap<Source, ItemRef>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let key = r.key().to_string();
    let glob_at = key.find(['*', '?', '[']);
    let is_listing = glob_at.is_some() || key.is_empty() || key.ends_with('/');
    if !is_listing || !r.scheme().lists() {
        if glob_at.is_some() {
            bail!("{input}: a web server cannot be listed, so globs do not work there");
        }
        let item = ItemRef::for_remote(r);
        found.entry(item.source.clone()).or_insert(item);
        return Ok(());
    }
    let (prefix, pattern) = match glob_at {
        Some(at) => {
            let cut = key[..at].rfind('/').map_or(0, |i| i + 1);
            let pattern =
                glob::Pattern::new(&key).with_context(|| format!("bad glob pattern {input}"))?;
            (key[..cut].to_string(), Some(pattern))
        }
        None => (key.clone(), None),
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let listed = stores
        .list(&r.with_key(&prefix))
        .with_context(|| format!("cannot list {input}"))?;
    let before = found.len();
    for (obj, _size) in listed {
        let rel = obj.key().strip_prefix(prefix.as_str()).unwrap_or(obj.key());
        let keep = match &pattern {
            Some(p) => p.matches_with(obj.key(), options),
            None => !rel.split('/').any(|part| part.starts_with('.')) && select.takes(rel),
        };
        let excluded = exclude.iter().any(|x| {
            let base = x.key().trim_end_matches('/');
            x.with_key("") == obj.with_key("")
                && (base.is_empty() || obj.key().starts_with(&format!("{base}/")))
        });
        if keep && !excluded {
            let item = ItemRef::for_remote(obj);
            found.entry(item.source.clone()).or_insert(item);
        }
    }
    if found.len() == before {
        warnings.push(format!("{input}: no objects matched"));
    }
    Ok(())
}

fn walk_dir(
    dir: &Path,
    exclude: &[PathBuf],
    select: &Selection,
    found: &mut BTreeMap<Source, ItemRef>,
) {
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let hidden = e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
            let excluded =
                e.file_type().is_dir() && exclude.iter().any(|x| absolute(e.path()) == *x);
            !hidden && !excluded
        });
    for entry in walker.flatten() {
        if entry.file_type().is_file() && select.takes(&entry.file_name().to_string_lossy()) {
            let item = ItemRef::for_path(entry.path());
            found.entry(item.source.clone()).or_insert(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_dirs_globs_and_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::create_dir_all(d.join("out")).unwrap();
        for f in [
            "a/1.wav",
            "a/b/2.flac",
            "a/.hidden.wav",
            "3.mp3",
            "out/x.npy",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::write(d.join("list.txt"), "# comment\n3.mp3\n\nmissing.wav\n").unwrap();
        let inputs = vec![
            d.join("a").to_string_lossy().into_owned(),
            format!("{}/*.mp3", d.display()),
            format!("@{}", d.join("list.txt").display()),
            d.to_string_lossy().into_owned(),
        ];
        let stores = Stores::new(&Default::default());
        let got = expand(&stores, &inputs, &[d.join("out")], &Selection::all()).unwrap();
        let names: Vec<String> = got
            .items
            .iter()
            .map(|i| {
                i.source
                    .as_path()
                    .unwrap()
                    .strip_prefix(absolute(d))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            vec!["3.mp3", "a/1.wav", "a/b/2.flac", "list.txt", "missing.wav"]
        );
        let got = expand(
            &stores,
            &[format!("{}/*.ogg", d.display())],
            &[],
            &Selection::all(),
        )
        .unwrap();
        assert!(got.items.is_empty());
        assert_eq!(got.warnings.len(), 1);
    }

    #[test]
    fn folders_take_the_selected_extensions_and_named_files_are_taken_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["a.WAV", "b.flac", "notes.txt", "c.mp3", "README"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let stores = Stores::new(&Default::default());
        let names = |got: &Expanded| -> Vec<String> {
            got.items
                .iter()
                .map(|i| {
                    let p = i.source.as_path().unwrap();
                    p.file_name().unwrap().to_string_lossy().into_owned()
                })
                .collect()
        };
        let folder = vec![d.to_string_lossy().into_owned()];
        let wav_flac = Selection::extensions(&["wav", ".FLAC"]);
        let got = expand(&stores, &folder, &[], &wav_flac).unwrap();
        assert_eq!(names(&got), ["a.WAV", "b.flac"]);
        assert!(
            got.warnings.iter().any(|w| w.starts_with("3 file(s)")),
            "{:?}",
            got.warnings
        );
        // Named outright (a file, a glob): taken whatever its extension.
        let named = vec![
            d.join("notes.txt").to_string_lossy().into_owned(),
            format!("{}/READ*", d.display()),
        ];
        let got = expand(&stores, &named, &[], &wav_flac).unwrap();
        assert_eq!(names(&got), ["README", "notes.txt"]);
        // Every file when nothing is selected.
        let got = expand(&stores, &folder, &[], &Selection::all()).unwrap();
        assert_eq!(got.items.len(), 5);
    }
}
