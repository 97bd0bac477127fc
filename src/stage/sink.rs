//! Sink: an item's outputs on disk, `<out>/<element>/<feature>.npy` and `meta.json`.
//!
//! Every file is written under `<out>/.klio-tmp/<pid>-<nonce>/`, flushed to disk, then renamed
//! into the item's folder (same file system, so the rename is atomic): a reader sees either the
//! old file or the new one, never a partial one, and the item's folder never holds temp files,
//! even after a crash. `meta.json` is renamed last, so its presence marks a complete item.
//! Temp folders of dead processes are removed when a sink opens.
//!
//! With an object store as the output location (`--out s3://bucket/prefix`), files are staged
//! in a local temp folder (under `$TMPDIR/klio-edge-<uid>`, private to the user), then each is uploaded as one object
//! (`<prefix>/<element>/<name>`): the store makes a PUT (or a completed multipart upload)
//! visible whole or not at all, so readers never see a partial object. Data files go first,
//! objects the current configuration no longer produces are deleted, `meta.json` goes last:
//! its presence marks a complete item there too. All of it happens before the ledger commit.

use crate::pipeline::ErrorKind;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::collections::BTreeMap;

use klio_dsp::{Feature, Finalizer, FrameSink, Slot, Tile};

use crate::pipeline::meta::{ItemMeta, ModelMeta};
use crate::stage::infer::{ModelOutput, OutputKind};
use crate::store::{Remote, StoreError, Stores};

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
    /// The object store refused or could not be reached.
    #[error("uploading: {0}")]
    Store(#[from] StoreError),
    /// The features sent more values than the config implies for the audio so far (a bug
    /// in the DSP): refused before anything is allocated for them.
    #[error(
        "the features produced over {bound} values for the audio so far, more than the config \
         implies per second of audio: refused before allocating"
    )]
    OutputBound {
        /// The most the config implies.
        bound: u64,
    },
}

impl SinkError {
    /// The ledger's `error_kind` (disk-full and similar errors may clear up: retryable).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SinkError::OutputBound { .. } => ErrorKind::OutputTooLarge,
            _ => ErrorKind::Sink,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where committed outputs go.
#[derive(Debug)]
enum Out {
    /// A local folder.
    Dir(PathBuf),
    /// A prefix in an object store.
    Store { prefix: Remote, stores: Arc<Stores> },
}

/// Writes item outputs under one output folder (or object-store prefix).
#[derive(Debug)]
pub struct Sink {
    out: Out,
    tmp_root: PathBuf,
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
        // Absolute, so temp paths handed to exec programs (which run elsewhere) still resolve.
        let out_dir = crate::item::absolute(out_dir);
        let tmp_root = out_dir.join(TMP_DIR);
        Self::open_at(Out::Dir(out_dir), tmp_root)
    }

    /// A sink that uploads to `prefix` in an object store, staging in a local temp folder
    /// under `$TMPDIR/klio-edge-<uid>`. Nothing is contacted yet.
    ///
    /// # Errors
    /// The local temp folder cannot be created.
    pub fn open_remote(prefix: Remote, stores: Arc<Stores>) -> Result<Sink, SinkError> {
        if !prefix.scheme().lists() {
            return Err(SinkError::Io {
                path: PathBuf::from(prefix.to_string()),
                source: std::io::Error::other(
                    "outputs can go to s3:// or gs://, not to a web server",
                ),
            });
        }
        Self::open_at(Out::Store { prefix, stores }, private_temp_root()?)
    }

    fn open_at(out: Out, tmp_root: PathBuf) -> Result<Sink, SinkError> {
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
            out,
            tmp_root,
            tmp_dir,
            counter: AtomicU64::new(0),
        })
    }

    /// Whether outputs go to an object store.
    pub fn is_remote(&self) -> bool {
        matches!(self.out, Out::Store { .. })
    }

    /// Where an item's outputs go, for messages.
    pub fn item_location(&self, element: &str) -> String {
        match &self.out {
            Out::Dir(d) => d.join(element).display().to_string(),
            Out::Store { prefix, .. } => prefix.join(element).to_string(),
        }
    }

    /// Whether an item's outputs are complete (its `meta.json` exists). A store that cannot
    /// be asked counts as "no" (the item is then processed again), with a warning.
    pub fn has_outputs(&self, element: &str) -> bool {
        match &self.out {
            Out::Dir(d) => d.join(element).join("meta.json").is_file(),
            Out::Store { prefix, stores } => {
                let meta = prefix.join(element).join("meta.json");
                match stores.head(&meta) {
                    Ok(_) => true,
                    Err(StoreError::NotFound(_)) => false,
                    Err(e) => {
                        tracing::warn!("cannot check for {meta}: {e}");
                        false
                    }
                }
            }
        }
    }

    /// The names of an item's committed output files (empty when they cannot be listed).
    pub fn list_outputs(&self, element: &str) -> Vec<String> {
        let mut names: Vec<String> = match &self.out {
            Out::Dir(d) => fs::read_dir(d.join(element))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            Out::Store { prefix, stores } => {
                let item = prefix.join(element);
                let base = format!("{}/", item.key());
                stores
                    .list(&item)
                    .map(|v| {
                        v.into_iter()
                            .map(|(o, _)| {
                                o.key().strip_prefix(&base).unwrap_or(o.key()).to_string()
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
        };
        names.sort();
        names
    }

    /// An item's committed `meta.json`, if there is one (and it parses).
    ///
    /// # Errors
    /// The store cannot be asked.
    pub fn read_meta(&self, element: &str) -> Result<Option<ItemMeta>, SinkError> {
        let bytes = match &self.out {
            Out::Dir(d) => {
                let p = d.join(element).join("meta.json");
                match fs::read(&p) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io(&p)(e)),
                }
            }
            Out::Store { prefix, stores } => {
                stores.read_small(&prefix.join(element).join("meta.json"), 16 << 20)?
            }
        };
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir.join(format!("{n}-{name}"))
    }

    /// A new empty folder under this sink's temp folder, removed when the value is dropped:
    /// an item's outputs are staged in one before [`Self::commit_staged`], and exec programs
    /// get one as their scratch folder.
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn temp_folder(&self, label: &str) -> Result<TempFolder, SinkError> {
        let dir = self.tmp_path(label);
        fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(TempFolder { dir })
    }

    /// Moves every file of `staging` into the item's folder, `meta.json` last, after removing
    /// files there that this run does not produce. Returns the file names.
    ///
    /// # Errors
    /// Any I/O failure; files already moved stay, but `meta.json` is not updated.
    pub fn commit_staged(
        &self,
        element: &str,
        staging: &TempFolder,
        meta: &ItemMeta,
    ) -> Result<Vec<String>, SinkError> {
        let mut staged = Vec::new();
        for e in fs::read_dir(&staging.dir).map_err(io(&staging.dir))? {
            let e = e.map_err(io(&staging.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "meta.json" {
                staged.push((e.path(), name));
            }
        }
        staged.sort_by(|a, b| a.1.cmp(&b.1));
        self.commit(element, &mut staged, meta)
    }

    /// Starts writing an item: its frames go to the returned writer as they are computed.
    /// `memory_budget_bytes` bounds what the writer holds in memory (beyond it, frames spill
    /// to temp files in this sink's temp folder).
    pub fn begin_item(&self, memory_budget_bytes: u64) -> ItemWriter<'_> {
        ItemWriter {
            sink: self,
            stores: BTreeMap::new(),
            budget_values: (memory_budget_bytes / 4).max(1) as usize,
            used_values: 0,
            tile_values: TILE_VALUES,
            min_tile_frames: MIN_TILE_FRAMES,
            expected_frames: 0,
            bound_values: u64::MAX,
            sent_values: 0,
            error: None,
        }
    }

    /// Writes `meta.json` and moves the staged files into the item's folder, after removing
    /// `.npy` files the current configuration no longer produces. Returns the file names.
    fn commit(
        &self,
        element: &str,
        staged: &mut Vec<(PathBuf, String)>,
        meta: &ItemMeta,
    ) -> Result<Vec<String>, SinkError> {
        let tmp = self.tmp_path("meta.json");
        let text = meta.to_json_bytes();
        write_synced(&tmp, |w| w.write_all(&text)).map_err(io(&tmp))?;
        staged.push((tmp, "meta.json".to_string()));

        let names: Vec<String> = staged.iter().map(|(_, n)| n.clone()).collect();
        let dir = match &self.out {
            Out::Dir(d) => d.join(element),
            Out::Store { prefix, stores } => {
                let item = prefix.join(element);
                // A rewrite takes the old meta.json away first: while data objects are
                // replaced, no meta.json describes a mix of old and new.
                let prefix_key = format!("{}/", item.key());
                let before = stores.list(&item)?;
                let rel = |obj: &Remote| {
                    obj.key()
                        .strip_prefix(&prefix_key)
                        .unwrap_or(obj.key())
                        .to_string()
                };
                if before.iter().any(|(o, _)| rel(o) == "meta.json") {
                    stores.delete(&item.join("meta.json"))?;
                }
                for (tmp, name) in staged.iter().filter(|(_, n)| n != "meta.json") {
                    stores.upload(tmp, &item.join(name))?;
                }
                for (obj, _) in &before {
                    if !names.contains(&rel(obj)) {
                        stores.delete(obj)?;
                    }
                }
                let (tmp, _) = staged.last().expect("meta.json was pushed");
                let uploaded = stores.upload(tmp, &item.join("meta.json"));
                let _ = fs::remove_file(tmp);
                uploaded?;
                staged.clear();
                return Ok(names);
            }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        // The old meta.json goes first and the new one comes last, so while the data files
        // are replaced no meta.json describes a mix of old and new.
        match fs::remove_file(dir.join("meta.json")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir.join("meta.json"))(e)),
        }
        // Stale outputs next, so the new meta.json never describes files that are not there.
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let file = e.file_type().is_ok_and(|t| t.is_file());
                if file && !names.contains(&n) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for (tmp, name) in staged.drain(..) {
            let dst = dir.join(&name);
            fs::rename(&tmp, &dst).map_err(io(&dst))?;
        }
        Ok(names)
    }

    /// Removes this process's temp folder (and the temp root if nothing else uses it).
    pub fn close(&self) {
        let _ = fs::remove_dir_all(&self.tmp_dir);
        let _ = fs::remove_dir(&self.tmp_root);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close();
    }
}

/// `$TMPDIR/klio-edge-<uid>`, created 0700, refused unless it is a real folder owned by this
/// user (another user could otherwise plant a link there and have its target cleaned).
fn private_temp_root() -> Result<PathBuf, SinkError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // Safety: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let root = std::env::temp_dir().join(format!("klio-edge-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&root)(e)),
    }
    let meta = fs::symlink_metadata(&root).map_err(io(&root))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(SinkError::Io {
            path: root,
            source: std::io::Error::other(
                "not a private folder of this user (a link, another owner, or open to others)",
            ),
        });
    }
    Ok(root)
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

/// A folder under the sink's temp folder, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempFolder {
    dir: PathBuf,
}

impl TempFolder {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Hands the frames of feature `name` staged here (written by
    /// [`ItemWriter::write_features`], `[dim, frames]`) to `f`, 4096 frames at a time,
    /// frame-major: how a model that reads a feature gets it, in bounded memory.
    ///
    /// # Errors
    /// The file cannot be read, or `f`'s error.
    pub fn for_each_feature_tile<E: From<SinkError>>(
        &self,
        name: &str,
        dim: usize,
        frames: usize,
        f: impl FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_frame_tile(&self.dir.join(format!("{name}.npy")), dim, frames, 4096, f)
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Values per transpose tile when a feature is written (16 MiB of f32; smaller tiles were
/// measured slower: many scattered row writes cost more than the cache misses they save)...
const TILE_VALUES: usize = 4 << 20;
/// ...but at least this many frames, so each row segment written is at least 16 KiB.
const MIN_TILE_FRAMES: usize = 4096;

/// The fewest frames per band-major chunk sized from the pipeline's hint.
const MIN_CHUNK_FRAMES: usize = 256;

/// Frames per band-major chunk of a store fed tiles: about `tile_values` values, a multiple
/// of 16 (the widest SIMD tile), so each row segment written is at least 64 B and at most
/// 64 KiB.
fn chunk_frames(tile_values: usize, dim: usize) -> usize {
    (tile_values / dim.max(1)).clamp(16, 16_384) / 16 * 16
}

/// The frames of one (slot, channel): in memory, or in a spill file once the item's memory
/// budget is used up. Frame-major when fed frames ([`FrameSink::frame`]); in band-major
/// chunks (`[dim][chunk]` each, librosa's orientation) when fed SIMD tiles
/// ([`FrameSink::tile`]), so writing a feature copies rows instead of transposing.
struct FrameStore {
    dim: usize,
    frames: usize,
    /// Frames per band-major chunk, or `None` for frame-major.
    chunk: Option<usize>,
    mem: Vec<f32>,
    /// Band-major: chunks already in the spill file (the one being filled stays in `mem`).
    spilled_chunks: usize,
    spill: Option<Spill>,
}

struct Spill {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl FrameStore {
    fn new(dim: usize, chunk: Option<usize>, reserve: usize) -> FrameStore {
        let mut mem = Vec::with_capacity(reserve);
        klio_dsp::memory::advise_huge_pages(&mut mem);
        FrameStore {
            dim,
            frames: 0,
            chunk,
            mem,
            spilled_chunks: 0,
            spill: None,
        }
    }

    /// Values of a whole band-major chunk.
    fn chunk_values(&self) -> usize {
        self.chunk.map_or(0, |c| c * self.dim)
    }

    /// Values a tile of `count` frames adds to memory (new chunks it starts), in memory.
    fn growth(&self, count: usize) -> usize {
        match self.chunk {
            None => count * self.dim,
            Some(c) => {
                let chunks = |f: usize| f.div_ceil(c);
                (chunks(self.frames + count) - chunks(self.frames)) * c * self.dim
            }
        }
    }

    /// Moves what is in memory to a spill file (band-major: the complete chunks; the one
    /// being filled stays).
    fn spill_to(&mut self, path: PathBuf) -> std::io::Result<()> {
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        match self.chunk {
            None => {
                write_f32s(&mut writer, &self.mem)?;
                self.mem = Vec::new();
            }
            Some(c) => {
                let complete = self.frames / c;
                let values = complete * self.chunk_values();
                write_f32s(&mut writer, &self.mem[..values])?;
                let current = self.mem[values..].to_vec();
                self.mem = current;
                self.spilled_chunks = complete;
            }
        }
        self.spill = Some(Spill { path, writer });
        Ok(())
    }

    fn push(&mut self, values: &[f32]) -> std::io::Result<()> {
        if self.chunk.is_some() {
            return self.push_tile(one_frame(values));
        }
        self.frames += 1;
        match &mut self.spill {
            Some(s) => write_f32s(&mut s.writer, values),
            None => {
                self.mem.extend_from_slice(values);
                Ok(())
            }
        }
    }

    /// Appends a tile's frames ([`FrameSink::tile`]) to a band-major store.
    fn push_tile(&mut self, tile: Tile<'_>) -> std::io::Result<()> {
        let Tile {
            lanes,
            count,
            values: tile,
            ..
        } = tile;
        let (Some(c), dim) = (self.chunk, self.dim) else {
            unreachable!("tiles go to band-major stores")
        };
        let mut done = 0;
        while done < count {
            let off = self.frames % c;
            if off == 0 {
                let len = self.mem.len();
                self.mem.resize(len + c * dim, 0.0);
            }
            let base = self.mem.len() - c * dim;
            let n = (count - done).min(c - off);
            let rows = self.mem[base..].chunks_exact_mut(c);
            if n == 16 && done == 0 {
                // A whole AVX-512 tile: fixed-size row copies (a variable-length copy is a
                // memcpy call per row).
                for (row, src) in rows.zip(tile.chunks_exact(lanes)) {
                    let d: &mut [f32; 16] = (&mut row[off..off + 16]).try_into().expect("16");
                    *d = src[..16].try_into().expect("16");
                }
            } else {
                for (row, src) in rows.zip(tile.chunks_exact(lanes)) {
                    row[off..off + n].copy_from_slice(&src[done..done + n]);
                }
            }
            self.frames += n;
            done += n;
            if self.frames.is_multiple_of(c) {
                if let Some(s) = &mut self.spill {
                    write_f32s(&mut s.writer, &self.mem)?;
                    self.spilled_chunks += 1;
                    self.mem.clear();
                }
            }
        }
        Ok(())
    }

    /// Frames `[t0, t0 + n)` of a frame-major store: borrowed from memory, or read into
    /// `buf`.
    fn tile<'a>(
        &'a mut self,
        t0: usize,
        n: usize,
        buf: &'a mut Vec<f32>,
    ) -> std::io::Result<&'a [f32]> {
        let (a, b) = (t0 * self.dim, (t0 + n) * self.dim);
        buf.clear();
        match &mut self.spill {
            None => Ok(&self.mem[a..b]),
            Some(s) => {
                s.writer.flush()?;
                read_f32s_at(s.writer.get_ref(), a, b - a, buf)?;
                Ok(&buf[..])
            }
        }
    }

    /// Band-major chunk `k` (all its `chunk * dim` values; frames past the store's end are
    /// zeros): borrowed from memory, or read into `buf`.
    fn chunk_at<'a>(&'a mut self, k: usize, buf: &'a mut Vec<f32>) -> std::io::Result<&'a [f32]> {
        let size = self.chunk_values();
        buf.clear();
        match &mut self.spill {
            None => Ok(&self.mem[k * size..(k + 1) * size]),
            Some(_) if k >= self.spilled_chunks => Ok(&self.mem[..size]),
            Some(s) => {
                s.writer.flush()?;
                read_f32s_at(s.writer.get_ref(), k * size, size, buf)?;
                Ok(&buf[..])
            }
        }
    }
}

/// One frame as a tile of one lane.
fn one_frame(values: &[f32]) -> Tile<'_> {
    Tile {
        dim: values.len(),
        lanes: 1,
        count: 1,
        values,
    }
}

/// Reads `n` little-endian f32 values at value offset `at` of `file` into `buf`.
fn read_f32s_at(file: &File, at: usize, n: usize, buf: &mut Vec<f32>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; n * 4];
    file.read_exact_at(&mut bytes, at as u64 * 4)?;
    buf.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

fn write_f32s(w: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    w.write_all(f32_bytes(values))
}

/// The little-endian bytes of `values` (what `.npy` `<f4` and the spill files hold).
#[cfg(target_endian = "little")]
fn f32_bytes(values: &[f32]) -> &[u8] {
    // Safety: f32 has no padding and every byte pattern is a valid u8; on a little-endian
    // target the in-memory bytes are the little-endian encoding.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

/// Receives an item's frames from the feature stream ([`FrameSink`]) and writes its `.npy`
/// files and `meta.json` at the end. Memory stays within the budget given to
/// [`Sink::begin_item`] plus one transpose tile, however long the item.
pub struct ItemWriter<'s> {
    sink: &'s Sink,
    stores: BTreeMap<(Slot, usize), FrameStore>,
    budget_values: usize,
    used_values: usize,
    tile_values: usize,
    min_tile_frames: usize,
    expected_frames: usize,
    /// What the features declared they would send at most, so far ([`FrameSink::bound`]).
    bound_values: u64,
    sent_values: u64,
    error: Option<SinkError>,
}

impl FrameSink for ItemWriter<'_> {
    fn frame(&mut self, slot: Slot, channel: usize, values: &[f32]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.push(slot, channel, values) {
            self.error = Some(e);
        }
    }

    fn tile(&mut self, slot: Slot, channel: usize, tile: Tile<'_>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.push_tile(slot, channel, tile) {
            self.error = Some(e);
        }
    }

    fn bound(&mut self, max_values: u64) {
        self.bound_values = max_values;
    }
}

impl ItemWriter<'_> {
    /// A hint (from the declared length) so in-memory stores are allocated once instead of
    /// growing by doubling; never reserves past the memory budget.
    pub fn expect_frames(&mut self, frames: u64) {
        self.expected_frames = usize::try_from(frames).unwrap_or(usize::MAX);
    }

    fn push(&mut self, slot: Slot, channel: usize, values: &[f32]) -> Result<(), SinkError> {
        self.store_frames(slot, channel, one_frame(values))
    }

    fn push_tile(&mut self, slot: Slot, channel: usize, tile: Tile<'_>) -> Result<(), SinkError> {
        let frame_major = self
            .stores
            .get(&(slot, channel))
            .is_some_and(|s| s.chunk.is_none());
        if frame_major {
            // A store that began with single frames stays frame-major.
            let mut frame = vec![0.0; tile.dim];
            for f in 0..tile.count {
                tile.frame_into(f, &mut frame);
                self.push(slot, channel, &frame)?;
            }
            return Ok(());
        }
        self.store_frames(slot, channel, tile)
    }

    /// Stores a tile's frames (a single frame is a tile of one lane) after checking the
    /// declared bound and making room within the memory budget.
    fn store_frames(
        &mut self,
        slot: Slot,
        channel: usize,
        tile: Tile<'_>,
    ) -> Result<(), SinkError> {
        let Tile {
            dim,
            lanes,
            count,
            values,
        } = tile;
        let n_values = (dim * count) as u64;
        self.sent_values = self.sent_values.saturating_add(n_values);
        if self.sent_values > self.bound_values {
            return Err(SinkError::OutputBound {
                bound: self.bound_values,
            });
        }
        let key = (slot, channel);
        let tiled = lanes > 1;
        if !self.stores.contains_key(&key) {
            // An item known to be short gets one chunk of its own length: a 10 s clip's
            // log-mel is then one 320 KB chunk written in one piece, not a 5 MB chunk
            // written a row at a time.
            // At least 256 frames: a hint far too low (a header that understates the
            // length) costs rows of 1 KiB, not a write per frame.
            let chunk = tiled.then(|| match self.expected_frames {
                0 => chunk_frames(self.tile_values, dim),
                e => chunk_frames(self.tile_values, dim).min(e.max(MIN_CHUNK_FRAMES)),
            });
            let room = self.budget_values.saturating_sub(self.used_values) / 2;
            let want = match chunk {
                None => self.expected_frames.saturating_mul(dim),
                Some(c) => self.expected_frames.div_ceil(c).saturating_mul(c * dim),
            };
            self.stores
                .insert(key, FrameStore::new(dim, chunk, want.min(room)));
        }
        let grow = self.stores[&key].growth(count);
        if self.stores[&key].spill.is_none() {
            // Over budget: move the largest in-memory store to a spill file.
            while self.used_values + grow > self.budget_values {
                let Some(big) = self
                    .stores
                    .values_mut()
                    .filter(|s| s.spill.is_none() && !s.mem.is_empty())
                    .max_by_key(|s| s.mem.len())
                else {
                    break;
                };
                let before = big.mem.len();
                let path = self.sink.tmp_path("spill.f32");
                big.spill_to(path.clone()).map_err(io(&path))?;
                self.used_values -= before - big.mem.len();
            }
        }
        let store = self.stores.get_mut(&key).expect("inserted above");
        debug_assert_eq!(store.dim, dim);
        let spilled = store.spill.is_some();
        let pushed = if store.chunk.is_some() {
            store.push_tile(tile)
        } else {
            store.push(values)
        };
        pushed.map_err(|source| SinkError::Io {
            path: store
                .spill
                .as_ref()
                .map_or_else(PathBuf::new, |s| s.path.clone()),
            source,
        })?;
        if !spilled {
            self.used_values += grow;
        }
        Ok(())
    }

    /// The first write error so far, if any (frames after it are dropped).
    ///
    /// # Errors
    /// The error that stopped the writer.
    pub fn check(&mut self) -> Result<(), SinkError> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether any frames went to spill files (the item did not fit the memory budget).
    pub fn spilled(&self) -> bool {
        self.stores.values().any(|s| s.spill.is_some())
    }

    /// Writes every feature as a float32 C-order `.npy` in librosa's shape into `staging`
    /// (then [`Sink::commit_staged`] moves them into place). Returns the file names.
    ///
    /// # Errors
    /// Any I/O failure, or an error that stopped the writer earlier.
    pub fn write_features(
        mut self,
        fin: &Finalizer,
        staging: &TempFolder,
    ) -> Result<Vec<String>, SinkError> {
        self.check()?;
        let mut names = Vec::new();
        for feature in fin.features() {
            let name = format!("{}.npy", feature.name());
            let path = staging.path().join(&name);
            self.write_feature(&path, fin, feature).map_err(io(&path))?;
            names.push(name);
        }
        Ok(names)
    }

    fn write_feature(
        &mut self,
        path: &Path,
        fin: &Finalizer,
        feature: Feature,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let shape = fin.shape(feature);
        let (dim, frames) = (fin.dim(feature), fin.frames(feature) as usize);
        let header = npy_header(&shape);
        let file = File::create(path)?;
        file.write_all_at(&header, 0)?;
        let base = header.len() as u64;
        let tile = (self.tile_values / dim.max(fin.pending_dim()))
            .max(self.min_tile_frames)
            .max(1);
        let (mut src, mut fin_buf, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..fin.channels() {
            let deferred = fin.is_deferred(feature);
            let slot = if deferred {
                Slot::PendingMel
            } else {
                Slot::Output(feature)
            };
            let Some(store) = self.stores.get_mut(&(slot, c)) else {
                continue; // a feature with no frames at all (e.g. Whisper on one frame)
            };
            let at = |d: usize, t0: usize| base + (((c * dim + d) * frames + t0) * 4) as u64;
            if let Some(chunk) = store.chunk {
                // Band-major chunks: each row segment is already in place; deferred
                // features are finished per chunk.
                for ci in 0..frames.div_ceil(chunk) {
                    let (t0, n) = (ci * chunk, chunk.min(frames - ci * chunk));
                    let values = store.chunk_at(ci, &mut src)?;
                    let rows = if deferred {
                        fin_buf.resize(chunk * dim, 0.0);
                        fin.finish_band_major(feature, values, chunk, &mut out, &mut fin_buf);
                        &fin_buf[..]
                    } else {
                        values
                    };
                    if frames <= chunk {
                        // The whole feature in one chunk: its rows, packed, are the file's.
                        let mut packed = std::mem::take(&mut out);
                        packed.clear();
                        for d in 0..dim {
                            packed.extend_from_slice(&rows[d * chunk..d * chunk + n]);
                        }
                        file.write_all_at(f32_bytes(&packed), at(0, 0))?;
                        out = packed;
                        continue;
                    }
                    let bytes = f32_bytes(rows);
                    for d in 0..dim {
                        let row = &bytes[d * chunk * 4..(d * chunk + n) * 4];
                        file.write_all_at(row, at(d, t0))?;
                    }
                }
                continue;
            }
            let mut t0 = 0;
            while t0 < frames {
                let n = tile.min(frames - t0);
                let tile_src = store.tile(t0, n, &mut src)?;
                let frame_major = if deferred {
                    fin_buf.resize(n * dim, 0.0);
                    fin.finish_frames(feature, tile_src, &mut fin_buf);
                    &fin_buf[..]
                } else {
                    tile_src
                };
                // Transpose the tile to [d][t] and write each row where it belongs.
                out.resize(n * dim, 0.0);
                klio_dsp::Kernels::active().transpose(frame_major, n, dim, &mut out);
                let bytes = f32_bytes(&out);
                if n == frames {
                    file.write_all_at(bytes, at(0, t0))?;
                } else {
                    for d in 0..dim {
                        file.write_all_at(&bytes[d * n * 4..(d + 1) * n * 4], at(d, t0))?;
                    }
                }
                t0 += n;
            }
        }
        file.set_len(base + (fin.channels() * dim * frames * 4) as u64)?;
        file.sync_data()
    }
}

impl Drop for ItemWriter<'_> {
    fn drop(&mut self) {
        for s in self.stores.values() {
            if let Some(sp) = &s.spill {
                let _ = fs::remove_file(&sp.path);
            }
        }
    }
}

/// Writes a model's outputs into `staging`, beside the features, and says what they are:
/// `segments`: `<name>.json` and the per-chunk probabilities `<name>_probs.npy`; `tensor`:
/// `<name>.npy` (`[chunks]`, or `[chunks, values]`); `embedding`: `<name>.npy`, the pooled
/// vector; `labels`: `<name>.json` and the pooled scores `<name>_scores.npy`.
///
/// # Errors
/// A file cannot be written.
pub fn stage_model_output(staging: &TempFolder, o: &ModelOutput) -> Result<ModelMeta, SinkError> {
    let stem = &o.name;
    let at = |name: &str| staging.path().join(name);
    let (file, values) = match o.cfg.output {
        OutputKind::Segments => {
            let file = write_json(staging, stem, &crate::stage::infer::segments_json(o))?;
            let probs = format!("{stem}_probs.npy");
            write_npy(&at(&probs), &[o.values.len()], &o.values)?;
            (file, Some(probs))
        }
        OutputKind::Tensor => {
            let file = format!("{stem}.npy");
            // One value per chunk: `[chunks]`; more: `[chunks, values]`.
            let chunks = o.values.len();
            let shape = if o.row <= 1 {
                vec![chunks]
            } else {
                vec![chunks, o.row]
            };
            write_npy(&at(&file), &shape, &o.rows)?;
            (file.clone(), Some(file))
        }
        OutputKind::Embedding => {
            let file = format!("{stem}.npy");
            let v = o.pooled.as_deref().unwrap_or_default();
            write_npy(&at(&file), &[v.len()], v)?;
            (file, None)
        }
        OutputKind::Labels => {
            let file = write_json(staging, stem, &crate::stage::infer::labels_json(o))?;
            let scores = format!("{stem}_scores.npy");
            let v = o.pooled.as_deref().unwrap_or_default();
            write_npy(&at(&scores), &[v.len()], v)?;
            (file, Some(scores))
        }
    };
    Ok(ModelMeta {
        name: o.name.clone(),
        sha256: o.sha256.clone(),
        backend: o.cfg.backend,
        chunks: o.values.len(),
        file,
        values,
        segments: o.segments.as_ref().map(Vec::len),
    })
}

/// Writes `<stem>.json` (pretty, newline-terminated) into the staging folder; returns its name.
fn write_json(
    staging: &TempFolder,
    stem: &str,
    value: &serde_json::Value,
) -> Result<String, SinkError> {
    let name = format!("{stem}.json");
    let mut text = serde_json::to_vec_pretty(value).expect("JSON serialises");
    text.push(b'\n');
    let path = staging.path().join(&name);
    fs::write(&path, text).map_err(io(&path))?;
    Ok(name)
}

/// Writes a small float32 C-order `.npy` in one go.
///
/// # Errors
/// The file cannot be written.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), SinkError> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let mut bytes = npy_header(shape);
    bytes.extend_from_slice(f32_bytes(data));
    fs::write(path, bytes).map_err(io(path))
}

/// Reads a `[dim, frames]` float32 `.npy` written by this sink (NPY 1.0, C order) frame by
/// frame: `f` gets `tile` frames at a time, frame-major (`n * dim` values), so memory stays at
/// one tile however long the item.
///
/// # Errors
/// The file cannot be read (as a [`SinkError`]), or `f`'s error.
pub fn for_each_frame_tile<E: From<SinkError>>(
    path: &Path,
    dim: usize,
    frames: usize,
    tile: usize,
    mut f: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), E> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).map_err(io(path))?;
    let mut head = [0u8; 10];
    file.read_exact_at(&mut head, 0).map_err(io(path))?;
    let base = 10 + u64::from(u16::from_le_bytes([head[8], head[9]]));
    let tile = tile.max(1);
    let mut bytes = vec![0u8; tile * 4];
    let mut out = vec![0f32; tile * dim];
    let mut t0 = 0;
    while t0 < frames {
        let n = tile.min(frames - t0);
        for d in 0..dim {
            let at = base + ((d * frames + t0) * 4) as u64;
            file.read_exact_at(&mut bytes[..n * 4], at)
                .map_err(io(path))?;
            for (t, b) in bytes[..n * 4].chunks_exact(4).enumerate() {
                out[t * dim + d] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        f(&out[..n * dim])?;
        t0 += n;
    }
    Ok(())
}

/// An NPY 1.0 header for little-endian float32 in C order, padded to a multiple of 64 bytes.
pub(crate) fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use klio_dsp::{Collector, Feature, FeatureConfig, FeaturePlan, FeatureStream};
    use std::sync::Arc;

    fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
        let npy = npyz::NpyFile::new(File::open(path).unwrap()).unwrap();
        assert_eq!(npy.order(), npyz::Order::C);
        (npy.shape().to_vec(), npy.into_vec::<f32>().unwrap())
    }

    /// Streams a stereo signal into an item writer and compares every file with the
    /// in-memory result; `budget` and `tile` small enough force spill files and tiling.
    fn round_trip(budget: u64, tile: usize) {
        // A deferred MFCC: the pending mel comes frame by frame, the mel as tiles.
        round_trip_of(
            budget,
            tile,
            &[
                Feature::Mel,
                Feature::LogMel,
                Feature::Mfcc,
                Feature::WhisperLogMel,
                Feature::Rms,
            ],
        );
        // Deferred and elementwise: the pending mel comes as tiles too.
        round_trip_of(
            budget,
            tile,
            &[
                Feature::LogMel,
                Feature::WhisperLogMel,
                Feature::Power,
                Feature::Mel,
                Feature::Magnitude,
            ],
        );
    }

    fn round_trip_of(budget: u64, tile: usize, features: &[Feature]) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path()).unwrap();
        let mut cfg = FeatureConfig::librosa_defaults(16000.0);
        cfg.features = features.to_vec();
        cfg.stft.n_fft = 400;
        cfg.stft.win_length = 400;
        cfg.stft.hop_length = 160;
        cfg.n_mels = 40;
        let plan = Arc::new(FeaturePlan::new(&cfg).unwrap());
        let x: Vec<f32> = (0..40_000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let y: Vec<f32> = x.iter().map(|v| v * -0.25).collect();
        let want = plan.compute(&[&x, &y]).unwrap();
        let mut w = sink.begin_item(budget);
        w.tile_values = tile;
        w.min_tile_frames = 1;
        if budget >= 1 << 20 {
            // The pipeline's hint (an upper bound): chunks the length of the item.
            w.expect_frames(40_000 / 160 + 2);
        }
        let mut s = FeatureStream::new(Arc::clone(&plan), 2);
        for (a, b) in x.chunks(3000).zip(y.chunks(3000)) {
            s.push(&[a, b], &mut w).unwrap();
        }
        let fin = s.finish(&mut w).unwrap();
        assert_eq!(w.spilled(), budget < 1 << 20);
        // With SIMD lanes the mel comes as tiles into band-major stores.
        let chunked = w.stores.values().any(|s| s.chunk.is_some());
        assert_eq!(chunked, plan.lanes().is_some(), "{features:?}");
        let staging = sink.temp_folder("e").unwrap();
        assert_eq!(
            w.write_features(&fin, &staging).unwrap().len(),
            features.len()
        );
        let names = sink
            .commit_staged("e", &staging, &ItemMeta::default())
            .unwrap();
        assert_eq!(names.len(), features.len() + 1);
        drop(staging);
        for f in &want {
            let (shape, data) = read_npy(&dir.path().join(format!("e/{}.npy", f.feature.name())));
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            assert_eq!(shape, f.shape(), "{:?}", f.feature);
            // Bit for bit, but for the MFCC: the sink's DCT runs over band-major chunks, the
            // collector's frame by frame (another summation order).
            let tol = if f.feature == Feature::Mfcc {
                1e-4
            } else {
                0.0
            };
            let want = f.to_c_order();
            assert_eq!(data.len(), want.len(), "{:?}", f.feature);
            let bad = data
                .iter()
                .zip(&want)
                .position(|(a, b)| (a - b).abs() > tol * b.abs().max(1.0));
            assert!(bad.is_none(), "{:?}: value {bad:?} differs", f.feature);
        }
        let _ = Collector::default();
        sink.close();
        assert!(!dir.path().join(TMP_DIR).exists());
    }

    /// Frames past what the features declared are refused as `output_too_large`, and
    /// nothing is stored for them.
    #[test]
    fn frames_past_the_declared_bound_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path()).unwrap();
        let mut w = sink.begin_item(1 << 20);
        w.bound(6);
        w.frame(Slot::Output(Feature::Mel), 0, &[1.0, 2.0, 3.0]);
        w.frame(Slot::Output(Feature::Mel), 0, &[4.0, 5.0, 6.0]);
        w.check().unwrap();
        w.frame(Slot::Output(Feature::Mel), 0, &[7.0, 8.0, 9.0]);
        let e = w.check().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutputTooLarge, "{e}");
        assert_eq!(w.used_values, 6, "the refused frame was stored");
    }

    /// A frame hint far below the item's real length (a header that understates it) still
    /// gets chunks of [`MIN_CHUNK_FRAMES`], and the frames land where they belong.
    #[test]
    fn a_hint_far_too_low_still_gets_whole_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path()).unwrap();
        let mut w = sink.begin_item(1 << 30);
        w.expect_frames(2);
        let slot = Slot::Output(Feature::Mel);
        let tile: Vec<f32> = (0..3 * 16).map(|v| v as f32).collect();
        for _ in 0..40 {
            w.tile(
                slot,
                0,
                Tile {
                    dim: 3,
                    lanes: 16,
                    count: 16,
                    values: &tile,
                },
            );
        }
        w.check().unwrap();
        let store = w.stores.get_mut(&(slot, 0)).unwrap();
        assert_eq!((store.chunk, store.frames), (Some(MIN_CHUNK_FRAMES), 640));
        let mut buf = Vec::new();
        let chunk = store.chunk_at(1, &mut buf).unwrap();
        // Frame 300: chunk 1, offset 44; it was lane 300 % 16 of its tile.
        for i in 0..3 {
            assert_eq!(chunk[i * MIN_CHUNK_FRAMES + 44], tile[i * 16 + 300 % 16]);
        }
    }

    #[test]
    fn streamed_item_equals_in_memory_result() {
        round_trip(256 << 20, TILE_VALUES);
    }

    #[test]
    fn spilled_and_tiled_item_equals_in_memory_result() {
        round_trip(64 << 10, 1000);
    }

    #[test]
    fn feature_files_are_read_back_frame_major_in_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.npy");
        // [dim 3, frames 7]: value = 10 * d + t.
        let v: Vec<f32> = (0..3)
            .flat_map(|d| (0..7).map(move |t| (10 * d + t) as f32))
            .collect();
        write_npy(&p, &[3, 7], &v).unwrap();
        let mut got = Vec::new();
        let mut tiles = Vec::new();
        for_each_frame_tile::<SinkError>(&p, 3, 7, 3, |tile| {
            tiles.push(tile.len() / 3);
            got.extend_from_slice(tile);
            Ok(())
        })
        .unwrap();
        assert_eq!(tiles, vec![3, 3, 1]);
        let want: Vec<f32> = (0..7)
            .flat_map(|t| (0..3).map(move |d| (10 * d + t) as f32))
            .collect();
        assert_eq!(got, want);
        assert!(for_each_frame_tile::<SinkError>(&p, 3, 8, 3, |_| Ok(())).is_err());
    }

    #[test]
    fn commit_removes_stale_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path()).unwrap();
        let item = dir.path().join("e");
        fs::create_dir_all(&item).unwrap();
        fs::write(item.join("old.npy"), b"x").unwrap();
        let tmp = sink.tmp_path("mel.npy");
        fs::write(&tmp, b"y").unwrap();
        let names = sink
            .commit(
                "e",
                &mut vec![(tmp, "mel.npy".into())],
                &ItemMeta::default(),
            )
            .unwrap();
        assert_eq!(names, vec!["mel.npy", "meta.json"]);
        let mut listed: Vec<_> = fs::read_dir(&item)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        assert_eq!(listed, vec!["mel.npy", "meta.json"]);
    }

    #[test]
    fn npy_header_is_aligned_and_parses() {
        for shape in [vec![80, 3], vec![2, 1, 1000000], vec![7]] {
            let h = npy_header(&shape);
            assert_eq!(h.len() % 64, 0);
            assert!(String::from_utf8_lossy(&h).contains("'fortran_order': False"));
        }
    }
}
