//! Sink: an item's outputs on disk, `<out>/<element>/<feature>.npy` and `meta.json`.
//!
//! Every file is written under `<out>/.klio-tmp/<pid>-<nonce>/`, flushed to disk, then renamed
//! into the item's folder (same file system, so the rename is atomic): a reader sees either the
//! old file or the new one, never a partial one, and the item's folder never holds temp files,
//! even after a crash. `meta.json` is renamed last, so its presence marks a complete item.
//! Temp folders of dead processes are removed when a sink opens.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use klio_dsp::FeatureOutput;
use npyz::WriterBuilder;

/// Name of the folder (inside the output folder) that holds temp files while they are written.
pub const TMP_DIR: &str = ".klio-tmp";

/// Why outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file system operation failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl SinkError {
    /// Disk-full and similar errors may clear up; retry on a later run.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes item outputs under one output folder.
#[derive(Debug)]
pub struct Sink {
    out_dir: PathBuf,
    tmp_dir: PathBuf,
    counter: AtomicU64,
}

impl Sink {
    /// Creates the output folder and this process's temp folder, removing temp folders left by
    /// processes that no longer run.
    ///
    /// # Errors
    /// The folders cannot be created.
    pub fn open(out_dir: &Path) -> Result<Sink, SinkError> {
        let tmp_root = out_dir.join(TMP_DIR);
        fs::create_dir_all(&tmp_root).map_err(io(&tmp_root))?;
        if let Ok(entries) = fs::read_dir(&tmp_root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
                let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp_dir = tmp_root.join(format!("{}-{nonce}", std::process::id()));
        fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
        Ok(Sink {
            out_dir: out_dir.to_path_buf(),
            tmp_dir,
            counter: AtomicU64::new(0),
        })
    }

    /// The folder of an item's outputs.
    pub fn item_dir(&self, element: &str) -> PathBuf {
        self.out_dir.join(element)
    }

    /// Whether an item's outputs are complete on disk (its `meta.json` exists).
    pub fn has_outputs(&self, element: &str) -> bool {
        self.item_dir(element).join("meta.json").is_file()
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir.join(format!("{n}-{name}"))
    }

    /// Writes the features and `meta.json` of an item, replacing earlier outputs and removing
    /// `.npy` files that the current configuration no longer produces. Returns the file names.
    ///
    /// # Errors
    /// Any I/O failure; files already renamed stay, but `meta.json` is not updated.
    pub fn write_item(
        &self,
        element: &str,
        features: &[FeatureOutput],
        meta: &serde_json::Value,
    ) -> Result<Vec<String>, SinkError> {
        let mut staged = Vec::with_capacity(features.len() + 1);
        let result = (|| {
            for f in features {
                let name = format!("{}.npy", f.feature.name());
                let tmp = self.tmp_path(&name);
                write_npy(&tmp, f).map_err(io(&tmp))?;
                staged.push((tmp, name));
            }
            let tmp = self.tmp_path("meta.json");
            let mut text = serde_json::to_vec_pretty(meta).expect("meta serialises");
            text.push(b'\n');
            write_synced(&tmp, |w| w.write_all(&text)).map_err(io(&tmp))?;
            staged.push((tmp, "meta.json".to_string()));

            let dir = self.item_dir(element);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            let names: Vec<String> = staged.iter().map(|(_, n)| n.clone()).collect();
            // Stale outputs first, so meta.json never describes files that are not there.
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.ends_with(".npy") && !names.contains(&n) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            for (tmp, name) in staged.drain(..) {
                let dst = dir.join(&name);
                fs::rename(&tmp, &dst).map_err(io(&dst))?;
            }
            Ok(names)
        })();
        for (tmp, _) in staged {
            let _ = fs::remove_file(tmp);
        }
        result
    }

    /// Removes this process's temp folder (and the temp root if nothing else uses it).
    pub fn close(&self) {
        let _ = fs::remove_dir_all(&self.tmp_dir);
        let _ = fs::remove_dir(self.out_dir.join(TMP_DIR));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_synced(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let file = File::create(path)?;
    {
        let mut w = BufWriter::with_capacity(1 << 16, &file);
        body(&mut w)?;
        w.flush()?;
    }
    file.sync_data()
}

/// Writes one feature as a float32 C-order `.npy` in librosa's shape.
fn write_npy(path: &Path, f: &FeatureOutput) -> std::io::Result<()> {
    let shape: Vec<u64> = f.shape().iter().map(|&d| d as u64).collect();
    write_synced(path, |w| {
        let mut npy = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(w)
            .begin_nd()?;
        let mut res = Ok(());
        f.for_each_c_order(|v| {
            if res.is_ok() {
                res = npy.push(&v);
            }
        });
        res?;
        npy.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use klio_dsp::Feature;

    #[test]
    fn writes_atomically_and_removes_stale_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path()).unwrap();
        let f = FeatureOutput {
            feature: Feature::Mel,
            dim: 2,
            frames: 3,
            channels: vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
        };
        let g = FeatureOutput {
            feature: Feature::Mfcc,
            ..f.clone()
        };
        sink.write_item("e", &[f.clone(), g], &serde_json::json!({"a": 1}))
            .unwrap();
        assert!(dir.path().join("e/mfcc.npy").exists());
        let names = sink
            .write_item("e", &[f], &serde_json::json!({"a": 2}))
            .unwrap();
        assert_eq!(names, vec!["mel.npy", "meta.json"]);
        let mut listed: Vec<_> = fs::read_dir(dir.path().join("e"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        assert_eq!(listed, vec!["mel.npy", "meta.json"]);
        let npy = npyz::NpyFile::new(File::open(dir.path().join("e/mel.npy")).unwrap()).unwrap();
        assert_eq!(npy.shape(), &[2, 3]);
        // Frame-major [t][d] becomes C-order [d][t].
        assert_eq!(
            npy.into_vec::<f32>().unwrap(),
            vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]
        );
        sink.close();
        assert!(!dir.path().join(TMP_DIR).exists());
    }
}
