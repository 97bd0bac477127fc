//! WebDataset shards: `shard-000000.tar`, `shard-000001.tar`, ..., each at most `--shard-mb`
//! (a sample larger than that gets a shard of its own). A sample is one item: its files in a
//! row, named `<key>.<output file name>` (`<key>.log_mel.npy`, `<key>.vad.json`,
//! `<key>.vad_probs.npy`), `<key>.json` (its `meta.json`) and, with `--with-audio`, the source
//! as `<key>.<its extension>`. WebDataset groups a sample's files by the name up to the first
//! dot, so the key is the element id with dots made `_` (the element id itself is in
//! `<key>.json`). Entries are plain tar files (GNU headers, for names past 100 bytes), mode 0644, owner 0, modification time 0, so
//! the same outputs give the same bytes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{DestFile, FormatWriter, Item, ItemProblem, Outputs};
use crate::item::Source;
use crate::store::Stores;

/// The shards being written.
pub struct Shards {
    to: std::path::PathBuf,
    max_bytes: u64,
    audio: Option<Arc<Stores>>,
    current: Option<tar::Builder<DestFile>>,
    current_bytes: u64,
    next: usize,
    files: u64,
    bytes: u64,
}

/// A sample's key: the element id with the dots WebDataset would split on made `_`.
pub fn sample_key(element: &str) -> String {
    element.replace('.', "_")
}

/// The size of a tar entry holding `n` bytes (header and padding).
fn entry_size(n: u64) -> u64 {
    512 + n.div_ceil(512) * 512
}

impl Shards {
    /// Shards of at most `max_bytes` in `to`; with `audio`, samples carry their source.
    pub fn new(to: &Path, max_bytes: u64, audio: Option<Arc<Stores>>) -> Shards {
        Shards {
            to: to.to_path_buf(),
            max_bytes: max_bytes.max(1),
            audio,
            current: None,
            current_bytes: 0,
            next: 0,
            files: 0,
            bytes: 0,
        }
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(b) = self.current.take() {
            let file = b.into_inner().context("cannot finish a shard")?;
            self.bytes += file.finish()?;
            self.files += 1;
        }
        self.current_bytes = 0;
        Ok(())
    }

    /// The item's entries: (name, bytes).
    fn sample(&self, item: &Item, outputs: &Outputs) -> Result<Vec<(String, Vec<u8>)>> {
        let e = &item.row.element;
        let key = sample_key(e);
        let mut entries = Vec::new();
        for name in &item.row.outputs {
            if name == "meta.json" {
                continue;
            }
            let bytes = outputs.read(e, name)?;
            // A sample is whole or absent: a cut or foreign `.npy` fails the item here rather
            // than the training job that reads the shard.
            if name.ends_with(".npy") {
                super::check_npy(&bytes).with_context(|| outputs.location(e, name))?;
            }
            entries.push((format!("{key}.{name}"), bytes));
        }
        entries.push((format!("{key}.json"), item.meta_bytes.clone()));
        if let Some(stores) = &self.audio {
            let src = &item.row.source;
            let source = Source::parse(src).map_err(anyhow::Error::msg)?;
            let bytes = match &source {
                Source::Remote(r) => stores
                    .read_small(r, super::MAX_FILE_BYTES)?
                    .with_context(|| format!("the source {src} is gone"))?,
                Source::Path(p) => std::fs::read(p)
                    .with_context(|| format!("cannot read the source {}", p.display()))?,
            };
            let ext = Path::new(&source.to_string())
                .extension()
                .map(|x| x.to_string_lossy().to_lowercase())
                .filter(|x| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric()))
                .unwrap_or_else(|| "audio".into());
            entries.push((format!("{key}.{ext}"), bytes));
        }
        Ok(entries)
    }
}

impl FormatWriter for Shards {
    fn add(&mut self, item: &Item, outputs: &Outputs) -> Result<(), ItemProblem> {
        // Everything is read before anything is written: a missing file leaves no half sample.
        let entries = self.sample(item, outputs)?;
        let size: u64 = entries
            .iter()
            .map(|(_, b)| entry_size(b.len() as u64))
            .sum();
        let fatal = |e: anyhow::Error| ItemProblem::Fatal(e);
        if self.current.is_some() && self.current_bytes + size > self.max_bytes {
            self.close_current().map_err(fatal)?;
        }
        if self.current.is_none() {
            let name = format!("shard-{:06}.tar", self.next);
            self.next += 1;
            let file = DestFile::create(&self.to, &name).map_err(fatal)?;
            let mut b = tar::Builder::new(file);
            b.mode(tar::HeaderMode::Deterministic);
            self.current = Some(b);
        }
        let b = self.current.as_mut().expect("opened above");
        for (name, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &name, bytes.as_slice())
                .with_context(|| format!("cannot write {name} into a shard"))
                .map_err(fatal)?;
        }
        self.current_bytes += size;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(u64, u64)> {
        self.close_current()?;
        Ok((self.files, self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_no_dots_and_entry_sizes_count_header_and_padding() {
        assert_eq!(sample_key("a.b.c-123"), "a_b_c-123");
        assert_eq!(entry_size(0), 512);
        assert_eq!(entry_size(1), 1024);
        assert_eq!(entry_size(512), 1024);
        assert_eq!(entry_size(513), 1536);
    }
}
