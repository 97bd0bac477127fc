//! `klio-edge export`: the ledger's done items as a dataset, in the formats training pipelines
//! read: Parquet (one row per item, [`parquet`]), WebDataset tar shards ([`webdataset`]) and a
//! JSONL manifest ([`jsonl`]).
//!
//! Export only reads: the ledger is opened read-only, the outputs (a folder or an object-store
//! prefix) are read through the same paths the sink wrote them to, and nothing under either
//! changes. Items go in element order. Every file is written under a temp name in `--to` and
//! renamed when complete, so a reader never sees half a shard. An item whose outputs are
//! missing or unreadable is reported (and the command exits 1) while the others are exported.

pub mod jsonl;
pub mod parquet;
pub mod webdataset;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::ledger::{DoneRow, Ledger};
use crate::pipeline::meta::ItemMeta;
use crate::store::{Remote, Stores};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Apache Parquet, one row per item (pyarrow, pandas, polars, DuckDB, Hugging Face datasets).
    Parquet,
    /// WebDataset tar shards, one sample per item.
    Webdataset,
    /// One JSON line per item (a NeMo/Lhotse-style manifest).
    Jsonl,
}

impl Format {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Webdataset => "webdataset",
            Format::Jsonl => "jsonl",
        }
    }
}

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The outputs: a folder or an object-store prefix (`s3://...`).
    pub out: String,
    /// The ledger whose done items are exported.
    pub ledger: PathBuf,
    /// The format.
    pub format: Format,
    /// The destination folder (created; must be empty unless `overwrite`).
    pub to: PathBuf,
    /// Replace what an earlier export left in `to`.
    pub overwrite: bool,
    /// Parquet: a new file starts past this many MiB.
    pub max_file_mb: f64,
    /// WebDataset: a new shard starts past this many MiB.
    pub shard_mb: f64,
    /// WebDataset: put each item's source audio into its sample.
    pub with_audio: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// An item that could not be exported, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unexported {
    /// Element id.
    pub element: String,
    /// Why.
    pub reason: String,
}

/// What an export did (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The format.
    pub format: &'static str,
    /// The destination folder.
    pub to: PathBuf,
    /// Items exported.
    pub items: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files written.
    pub files: u64,
    /// Seconds, start to end.
    pub wall_s: f64,
    /// Items left out, with the reason.
    pub failed: Vec<Unexported>,
}

/// Where the outputs are read from.
pub enum Outputs {
    /// A local folder.
    Dir(PathBuf),
    /// An object-store prefix.
    Store {
        /// The prefix items are under.
        prefix: Remote,
        /// The clients.
        stores: Arc<Stores>,
    },
}

/// The largest file export reads into memory (one feature of a long item, a source with
/// `--with-audio`).
pub const MAX_FILE_BYTES: u64 = 16 << 30;

impl Outputs {
    /// The outputs at `out` (a folder, or an object-store URL).
    ///
    /// # Errors
    /// An unparsable URL, or a folder that does not exist.
    pub fn open(out: &str, stores: Arc<Stores>) -> Result<Outputs> {
        match Remote::parse(out).map_err(anyhow::Error::msg)? {
            Some(prefix) => Ok(Outputs::Store { prefix, stores }),
            None => {
                let dir = PathBuf::from(out);
                if !dir.is_dir() {
                    bail!("no output folder at {out}");
                }
                Ok(Outputs::Dir(dir))
            }
        }
    }

    /// Where an item's file is, for messages and manifests.
    pub fn location(&self, element: &str, name: &str) -> String {
        match self {
            Outputs::Dir(d) => d.join(element).join(name).display().to_string(),
            Outputs::Store { prefix, .. } => prefix.join(element).join(name).to_string(),
        }
    }

    /// The size of an item's output file.
    ///
    /// # Errors
    /// Missing, or its size cannot be read.
    pub fn size(&self, element: &str, name: &str) -> Result<u64> {
        match self {
            Outputs::Dir(d) => {
                let p = d.join(element).join(name);
                Ok(fs::metadata(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .len())
            }
            Outputs::Store { prefix, stores } => {
                let r = prefix.join(element).join(name);
                Ok(stores
                    .head(&r)
                    .with_context(|| format!("cannot read {r}"))?
                    .size)
            }
        }
    }

    /// The bytes of an item's output file.
    ///
    /// # Errors
    /// Missing or unreadable.
    pub fn read(&self, element: &str, name: &str) -> Result<Vec<u8>> {
        match self {
            Outputs::Dir(d) => {
                let p = d.join(element).join(name);
                fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
            }
            Outputs::Store { prefix, stores } => {
                let r = prefix.join(element).join(name);
                stores
                    .read_small(&r, MAX_FILE_BYTES)
                    .with_context(|| format!("cannot read {r}"))?
                    .with_context(|| format!("{r} does not exist"))
            }
        }
    }
}

/// One done item with its `meta.json`.
pub struct Item {
    /// The ledger row.
    pub row: DoneRow,
    /// The parsed `meta.json`.
    pub meta: ItemMeta,
    /// `meta.json` as written.
    pub meta_bytes: Vec<u8>,
}

/// A `.npy` file of float32 values, read.
pub struct Npy {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub values: Vec<f32>,
}

/// Where a `.npy`'s values are: little-endian float32 (the sink's `<f4`) at a byte offset, or
/// another float32 coding npyz has to convert.
enum NpyLayout<'a> {
    LittleF4 { shape: Vec<usize>, data: &'a [u8] },
    Other(npyz::NpyFile<&'a [u8]>, Vec<usize>, usize),
}

fn npy_layout(bytes: &[u8]) -> Result<NpyLayout<'_>> {
    let npy = npyz::NpyFile::new(bytes).context("not an .npy file")?;
    if npy.order() != npyz::Order::C {
        bail!("the .npy is in Fortran order");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .context("the .npy's shape overflows")?;
    let little_f4 = matches!(npy.dtype(), npyz::DType::Plain(t) if t.to_string() == "<f4");
    if !little_f4 {
        return Ok(NpyLayout::Other(npy, shape, count));
    }
    // The data start after the magic, the version, the header length and the header.
    let data_at = match bytes.get(6) {
        Some(1) => 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
        Some(2 | 3) if bytes.len() >= 12 => {
            12 + u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
        }
        _ => bail!("not an .npy file of a known version"),
    };
    let data = bytes.get(data_at..).unwrap_or_default();
    if data.len() != count.saturating_mul(4) {
        bail!(
            "the .npy holds {} bytes of values where its shape {shape:?} needs {}",
            data.len(),
            count.saturating_mul(4)
        );
    }
    Ok(NpyLayout::LittleF4 { shape, data })
}

/// Parses a float32 `.npy` file (what the sink writes). Little-endian float32 (the sink's
/// `<f4`) is copied straight out of the bytes; any other float32 coding goes through npyz.
///
/// # Errors
/// Not an `.npy`, not float32, not C order, or not as long as its shape says.
pub fn parse_npy(bytes: &[u8]) -> Result<Npy> {
    match npy_layout(bytes)? {
        NpyLayout::LittleF4 { shape, data } => {
            let values = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(Npy { shape, values })
        }
        NpyLayout::Other(npy, shape, count) => {
            let values = npy
                .into_vec::<f32>()
                .context("the .npy does not hold float32 values")?;
            if values.len() != count {
                bail!("the .npy holds fewer values than its shape says");
            }
            Ok(Npy { shape, values })
        }
    }
}

/// Checks that `bytes` are a whole float32 `.npy`, as [`parse_npy`] would, without copying the
/// values of the sink's `<f4` files.
///
/// # Errors
/// As [`parse_npy`].
pub fn check_npy(bytes: &[u8]) -> Result<()> {
    match npy_layout(bytes)? {
        NpyLayout::LittleF4 { .. } => Ok(()),
        NpyLayout::Other(..) => parse_npy(bytes).map(drop),
    }
}

/// A destination file written under a temp name and renamed into place by [`Self::finish`]
/// (dropped unfinished, the temp file goes).
pub struct DestFile {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<std::io::BufWriter<fs::File>>,
}

impl DestFile {
    /// Starts `name` in `dir`.
    ///
    /// # Errors
    /// The temp file cannot be created.
    pub fn create(dir: &Path, name: &str) -> Result<DestFile> {
        let tmp = dir.join(format!(".{name}.partial"));
        let file =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(DestFile {
            tmp,
            path: dir.join(name),
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The open file.
    fn writer(&mut self) -> &mut std::io::BufWriter<fs::File> {
        self.file.as_mut().expect("open until finished")
    }

    /// Flushes, syncs and renames the file into place; returns its size.
    ///
    /// # Errors
    /// I/O failures.
    pub fn finish(mut self) -> Result<u64> {
        let file = self.file.take().expect("open until finished");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", self.tmp.display()))?;
        let size = file.metadata()?.len();
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot rename into {}", self.path.display()))?;
        Ok(size)
    }
}

impl Write for DestFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for DestFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// What a format writer is handed, item by item, in element order.
pub trait FormatWriter {
    /// Adds one item. An `Err` is this item's problem (reported, the export goes on); a
    /// problem with the destination is returned by [`Self::finish`] or stops the export
    /// through `fatal`.
    ///
    /// # Errors
    /// The item's outputs cannot be read or do not fit the format.
    fn add(&mut self, item: &Item, outputs: &Outputs) -> Result<(), ItemProblem>;
    /// Writes what is pending; returns (files, bytes) written in all.
    ///
    /// # Errors
    /// The destination cannot be written.
    fn finish(self: Box<Self>) -> Result<(u64, u64)>;
}

/// Why an item was not exported: its own outputs (the export goes on), or the destination
/// (the export stops).
#[derive(Debug)]
pub enum ItemProblem {
    /// The item's outputs are missing, unreadable or do not fit.
    Item(String),
    /// Writing the destination failed.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for ItemProblem {
    fn from(e: anyhow::Error) -> Self {
        ItemProblem::Item(format!("{e:#}"))
    }
}

/// The names of files a format writes into `to` (what `--overwrite` replaces).
fn is_ours(name: &str) -> bool {
    let partial = name.starts_with('.') && name.ends_with(".partial");
    let shard = name.starts_with("shard-") && name.ends_with(".tar");
    let part = name.starts_with("part-") && name.ends_with(".parquet");
    partial || shard || part || name == "manifest.jsonl"
}

/// `mb` MiB in bytes, at least one (`as` saturates a huge value).
fn mib(mb: f64) -> u64 {
    ((mb * (1u64 << 20) as f64) as u64).max(1)
}

/// Makes `to` ready: created, and empty (or, with `overwrite`, rid of an earlier export's
/// files; anything else in it is refused).
fn prepare_destination(to: &Path, overwrite: bool) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for e in fs::read_dir(to).with_context(|| format!("cannot list {}", to.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_ours(&name) && e.file_type()?.is_file() {
            ours.push(e.path());
        } else {
            theirs.push(name);
        }
    }
    let empty = ours.is_empty() && theirs.is_empty();
    if !empty && !overwrite {
        bail!(
            "--to {} is not empty; pass --overwrite to replace an earlier export there",
            to.display()
        );
    }
    if !theirs.is_empty() {
        theirs.sort();
        bail!(
            "--to {} holds files that no export wrote ({}); export into an empty folder",
            to.display(),
            theirs.join(", ")
        );
    }
    for p in ours {
        fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

/// Reads an item's `meta.json`.
fn load_item(row: DoneRow, outputs: &Outputs) -> Result<Item> {
    let meta_bytes = outputs.read(&row.element, "meta.json")?;
    let meta: ItemMeta = serde_json::from_slice(&meta_bytes).with_context(|| {
        format!(
            "{} is not a klio-edge meta.json",
            outputs.location(&row.element, "meta.json")
        )
    })?;
    if meta.element != row.element {
        bail!(
            "{} names element {:?}",
            outputs.location(&row.element, "meta.json"),
            meta.element
        );
    }
    Ok(Item {
        row,
        meta,
        meta_bytes,
    })
}

/// Runs an export.
///
/// # Errors
/// The ledger or the outputs cannot be opened, `--to` is not usable, or the destination
/// cannot be written. Items that cannot be exported are in [`ExportSummary::failed`].
pub fn run(req: &ExportRequest, stores: Arc<Stores>) -> Result<ExportSummary> {
    let started = Instant::now();
    let ledger = Ledger::open_read_only(&req.ledger)?;
    let rows = ledger.done_items()?;
    drop(ledger);
    let outputs = Outputs::open(&req.out, stores.clone())?;
    prepare_destination(&req.to, req.overwrite)?;
    let mut sink: Box<dyn FormatWriter> = match req.format {
        Format::Jsonl => Box::new(jsonl::Jsonl::new(&req.to, &outputs)?),
        Format::Webdataset => Box::new(webdataset::Shards::new(
            &req.to,
            mib(req.shard_mb),
            req.with_audio.then_some(stores),
        )),
        Format::Parquet => Box::new(parquet::Parts::new(&req.to, mib(req.max_file_mb))),
    };
    let bar = crate::term::progress_bar(rows.len() as u64, req.quiet);
    let mut failed = Vec::new();
    let mut items = 0u64;
    for row in rows {
        let element = row.element.clone();
        let result = load_item(row, &outputs)
            .map_err(ItemProblem::from)
            .and_then(|item| sink.add(&item, &outputs));
        match result {
            Ok(()) => items += 1,
            Err(ItemProblem::Item(reason)) => {
                if let Some(b) = &bar {
                    b.println(format!("left out {element}: {reason}"));
                } else if !req.quiet {
                    eprintln!("left out {element}: {reason}");
                }
                failed.push(Unexported { element, reason });
            }
            Err(ItemProblem::Fatal(e)) => return Err(e),
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    let (files, bytes) = sink.finish()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(ExportSummary {
        format: req.format.name(),
        to: req.to.clone(),
        items,
        bytes,
        files,
        wall_s: started.elapsed().as_secs_f64(),
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_must_be_empty_or_an_earlier_export() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("to");
        prepare_destination(&to, false).unwrap();
        fs::write(to.join("shard-000000.tar"), b"x").unwrap();
        let err = prepare_destination(&to, false).unwrap_err().to_string();
        assert!(err.contains("--overwrite"), "{err}");
        prepare_destination(&to, true).unwrap();
        assert!(!to.join("shard-000000.tar").exists());
        fs::write(to.join("notes.txt"), b"mine").unwrap();
        let err = prepare_destination(&to, true).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert!(to.join("notes.txt").exists());
    }

    #[test]
    fn npy_files_parse_like_npyz_reads_them_and_short_ones_are_refused() {
        let shape = [3usize, 5];
        let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut bytes = crate::stage::sink::npy_header(&shape);
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let npy = parse_npy(&bytes).unwrap();
        assert_eq!(
            (npy.shape.as_slice(), npy.values.as_slice()),
            (&shape[..], &values[..])
        );
        let want: Vec<f32> = npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap();
        assert_eq!(npy.values, want);
        check_npy(&bytes).unwrap();
        for cut in [bytes.len() - 1, bytes.len() - 4, 40, 7, 0] {
            assert!(parse_npy(&bytes[..cut]).is_err(), "cut at {cut}");
            assert!(check_npy(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(parse_npy(&long).is_err());
        assert!(check_npy(&long).is_err());
    }

    #[test]
    fn an_unfinished_file_leaves_nothing_and_a_finished_one_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut f = DestFile::create(dir.path(), "a.bin").unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut f = DestFile::create(dir.path(), "a.bin").unwrap();
        f.write_all(b"whole").unwrap();
        assert_eq!(f.finish().unwrap(), 5);
        assert_eq!(fs::read(dir.path().join("a.bin")).unwrap(), b"whole");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
