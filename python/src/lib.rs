//! `klio_edge._native`: the Rust half of the Python package. klio-dsp's feature plans and
//! klio-decode's loader, called with plain arguments; `klio_edge/*.py` gives them librosa's
//! names, defaults and shapes. Every computation runs without the GIL, and a list of signals
//! is spread over all cores.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use klio_decode::{AudioStream, Channels, DecodeConfig, SampleRate};
use klio_dsp::{
    power_to_db_in_place, power_to_db_into, DbConfig, DbReference, DspError, FbankConfig, Feature,
    FeatureConfig, FeaturePlan, FeatureStream, FrameSink, MelBlocks, MelNorm, MelScale, PadMode,
    Slot, SpectrumKind, Tile, WindowKind,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

/// The options of one feature call, as the Python side passes them (a dict with every key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Options {
    n_fft: usize,
    hop_length: usize,
    win_length: usize,
    window: String,
    center: bool,
    pad_mode: String,
    power: f64,
    n_mels: usize,
    fmin: f64,
    fmax: Option<f64>,
    htk: bool,
    norm: Option<String>,
    n_mfcc: usize,
    lifter: f64,
    /// `None`: `ref=np.max`.
    reference: Option<f32>,
    amin: f32,
    top_db: Option<f32>,
    roll_percent: f64,
    fbank: Option<FbankOptions>,
}

/// Kaldi fbank options (torchaudio.compliance.kaldi.fbank's meaning).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct FbankOptions {
    num_mel_bins: usize,
    frame_length: f64,
    frame_shift: f64,
    low_freq: f64,
    high_freq: f64,
    preemphasis_coefficient: f32,
    remove_dc_offset: bool,
    round_to_power_of_two: bool,
    window_type: String,
    sample_scale: f32,
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn config(feature: &str, sr: f64, o: &Options) -> PyResult<FeatureConfig> {
    let f = Feature::from_name(feature)
        .ok_or_else(|| value_error(format!("no feature named {feature:?}")))?;
    let mut cfg = FeatureConfig::librosa_defaults(sr);
    cfg.features = vec![f];
    cfg.stft.n_fft = o.n_fft;
    cfg.stft.hop_length = o.hop_length;
    cfg.stft.win_length = o.win_length;
    cfg.stft.window = WindowKind::from_name(&o.window).ok_or_else(|| {
        value_error(format!(
            "window={:?} is not supported: 'hann', 'hamming' or 'boxcar'",
            o.window
        ))
    })?;
    cfg.stft.center = o.center;
    cfg.stft.pad_mode = PadMode::from_name(&o.pad_mode).ok_or_else(|| {
        value_error(format!(
            "pad_mode={:?} is not supported: 'constant', 'reflect' or 'edge'",
            o.pad_mode
        ))
    })?;
    cfg.mel_spectrum = if o.power == 2.0 {
        SpectrumKind::Power
    } else if o.power == 1.0 {
        SpectrumKind::Magnitude
    } else {
        return Err(value_error(format!(
            "power={} is not supported: 2.0 (power) or 1.0 (magnitude)",
            o.power
        )));
    };
    cfg.n_mels = o.n_mels;
    cfg.fmin_hz = o.fmin;
    cfg.fmax_hz = o.fmax;
    cfg.mel_scale = if o.htk {
        MelScale::Htk
    } else {
        MelScale::Slaney
    };
    cfg.mel_norm = match o.norm.as_deref() {
        None => MelNorm::None,
        Some("slaney") => MelNorm::Slaney,
        Some(other) => {
            return Err(value_error(format!(
                "norm={other:?} is not supported: 'slaney' or None"
            )))
        }
    };
    cfg.n_mfcc = o.n_mfcc;
    cfg.lifter = o.lifter;
    cfg.db = DbConfig {
        reference: o.reference.map_or(DbReference::Max, DbReference::Value),
        amin: o.amin,
        top_db: o.top_db,
    };
    cfg.rolloff_percent = o.roll_percent;
    if let Some(fb) = &o.fbank {
        cfg.fbank = FbankConfig {
            frame_length_ms: fb.frame_length,
            frame_shift_ms: fb.frame_shift,
            n_mels: fb.num_mel_bins,
            low_freq_hz: fb.low_freq,
            high_freq_hz: fb.high_freq,
            preemphasis: fb.preemphasis_coefficient,
            remove_dc_offset: fb.remove_dc_offset,
            window: match fb.window_type.as_str() {
                "povey" => WindowKind::Povey,
                "rectangular" => WindowKind::Rectangular,
                other => {
                    return Err(value_error(format!(
                        "window_type={other:?} is not supported: 'povey' or 'rectangular'"
                    )))
                }
            },
            round_to_power_of_two: fb.round_to_power_of_two,
            sample_scale: fb.sample_scale,
            ..FbankConfig::default()
        };
    }
    Ok(cfg)
}

/// Plans by configuration: building one (FFT plans, mel weights) costs more than a short
/// clip's features. Bounded: a notebook sweeping parameters does not grow it without end.
fn plan(cfg: FeatureConfig) -> Result<Arc<FeaturePlan>, DspError> {
    static PLANS: OnceLock<Mutex<HashMap<String, Arc<FeaturePlan>>>> = OnceLock::new();
    let key = format!("{cfg:?}");
    let plans = PLANS.get_or_init(Default::default);
    if let Some(p) = plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(FeaturePlan::new(&cfg)?);
    let mut map = plans.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(key, Arc::clone(&p));
    Ok(p)
}

/// One signal's feature: `[channels][dim][frames]` values and that shape.
type Computed = Result<(Vec<f32>, [usize; 3]), DspError>;

/// A [`FrameSink`] that lays frames out in librosa's orientation as they arrive: per (slot,
/// channel) one buffer of `dim` rows of `cap` frames, the STFT's frame count. The SIMD lanes
/// hand over `[value][frame]` tiles, so each row takes a slice at a time; nothing is
/// transposed, and a one-channel feature's buffer is the returned array. MFCC's pending mel
/// frames go to per-channel [`MelBlocks`] instead (finished a block at a time, in recycled
/// buffers), when `blocks` is not empty.
struct BandMajor {
    planes: HashMap<(Slot, usize), Plane>,
    cap: usize,
    blocks: Vec<MelBlocks>,
}

/// Spare buffers of earlier calls' MFCC pending planes ([`MelBlocks`]), at most
/// [`SPARE_BYTES`] in all: a recycled buffer is already mapped, where a fresh one costs the
/// kernel's clearing of every page (an hour at 22.05 kHz: 79 MB, about a tenth of the call).
static SPARE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// The most memory [`SPARE`] keeps between calls.
const SPARE_BYTES: usize = 256 << 20;

/// The smallest spare buffer of at least `len` values (and not many times more, so a short
/// signal leaves an hour's buffer to the call that needs it), or an empty one.
fn spare_take(len: usize) -> Vec<f32> {
    if len == 0 {
        return Vec::new();
    }
    let most = len.saturating_mul(4).max(1 << 18);
    let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    let best = (0..spare.len())
        .filter(|&i| (len..=most).contains(&spare[i].len()))
        .min_by_key(|&i| spare[i].len());
    best.map_or_else(Vec::new, |i| spare.swap_remove(i))
}

/// Keeps `buf` for a later call, dropping the smallest buffers while over [`SPARE_BYTES`].
fn spare_give(buf: Vec<f32>) {
    if buf.len() * 4 > SPARE_BYTES {
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    spare.push(buf);
    spare.sort_unstable_by_key(|b| std::cmp::Reverse(b.len()));
    let mut total = 0;
    spare.retain(|b| {
        total += b.len() * 4;
        total <= SPARE_BYTES
    });
}

/// `dim` rows of `cap` values, `fill` frames written.
struct Plane {
    values: Vec<f32>,
    dim: usize,
    cap: usize,
    fill: usize,
}

impl Plane {
    fn new(dim: usize, cap: usize) -> Plane {
        Plane {
            // An hour's log-mel is ~160 MB: in huge pages, zeroed by the kernel as touched.
            values: klio_dsp::memory::zeroed(dim * cap),
            dim,
            cap,
            fill: 0,
        }
    }

    /// Room for `more` frames (more than the STFT's count: never expected, handled anyway).
    fn reserve(&mut self, more: usize) {
        if self.fill + more > self.cap {
            let mut grown = Plane::new(self.dim, (self.fill + more).max(2 * self.cap));
            for d in 0..self.dim {
                grown.values[d * grown.cap..][..self.fill]
                    .copy_from_slice(&self.values[d * self.cap..][..self.fill]);
            }
            grown.fill = self.fill;
            *self = grown;
        }
    }

    /// Each row of a full `[row][L]` tile into its row of the plane, at frame `fill`.
    fn put_rows<const L: usize>(&mut self, tile: &[f32]) {
        for (d, row) in tile.chunks_exact(L).enumerate() {
            let at = d * self.cap + self.fill;
            if let (Ok(out), Ok(row)) = (
                <&mut [f32; L]>::try_from(&mut self.values[at..at + L]),
                <&[f32; L]>::try_from(row),
            ) {
                *out = *row;
            }
        }
    }

    /// The first `frames` frames, `dim` rows of `frames` (the buffer itself when it fits).
    fn into_rows(mut self, frames: usize) -> Vec<f32> {
        if frames == self.cap {
            return self.values;
        }
        for d in 1..self.dim {
            self.values.copy_within(
                d * self.cap..d * self.cap + frames.min(self.cap),
                d * frames,
            );
        }
        self.values.resize(self.dim * frames, 0.0);
        self.values
    }
}

impl BandMajor {
    fn plane(&mut self, slot: Slot, channel: usize, dim: usize, more: usize) -> &mut Plane {
        let cap = self.cap;
        let p = self
            .planes
            .entry((slot, channel))
            .or_insert_with(|| Plane::new(dim, cap));
        p.reserve(more);
        p
    }

    fn take(&mut self, slot: Slot, channel: usize, dim: usize, frames: usize) -> Vec<f32> {
        match self.planes.remove(&(slot, channel)) {
            Some(p) => p.into_rows(frames),
            None => vec![0.0; dim * frames],
        }
    }
}

impl FrameSink for BandMajor {
    fn frame(&mut self, slot: Slot, channel: usize, values: &[f32]) {
        if slot == Slot::PendingMel && !self.blocks.is_empty() {
            self.blocks[channel].push_frame(values);
            return;
        }
        let p = self.plane(slot, channel, values.len(), 1);
        for (d, &v) in values.iter().enumerate() {
            p.values[d * p.cap + p.fill] = v;
        }
        p.fill += 1;
    }

    fn tile(&mut self, slot: Slot, channel: usize, tile: Tile<'_>) {
        if slot == Slot::PendingMel && !self.blocks.is_empty() {
            self.blocks[channel].push_tile(&tile);
            return;
        }
        let p = self.plane(slot, channel, tile.dim, tile.count);
        // A full tile's rows are fixed-size copies (a few vector moves each, where a
        // slice copy of run-time length calls memmove: 128 calls per tile at 44.1 kHz).
        match (tile.lanes, tile.count) {
            (16, 16) => p.put_rows::<16>(tile.values),
            (8, 8) => p.put_rows::<8>(tile.values),
            (4, 4) => p.put_rows::<4>(tile.values),
            (lanes, count) => {
                for (d, row) in tile.values.chunks_exact(lanes).enumerate() {
                    p.values[d * p.cap + p.fill..][..count].copy_from_slice(&row[..count]);
                }
            }
        }
        p.fill += tile.count;
    }
}

/// Samples per channel handed to the feature stream at a time.
const PUSH_BLOCK: usize = 1 << 16;

fn compute_one(plan: &Arc<FeaturePlan>, channels: &[&[f32]]) -> Computed {
    let feature = plan.config().features[0];
    let samples = channels.first().map_or(0, |c| c.len() as u64);
    let cap = plan.config().stft.n_frames(samples) as usize;
    let blocks = if feature == Feature::Mfcc && plan.is_deferred(feature) {
        let dim = plan.config().n_mels;
        let len = MelBlocks::values_for(dim, cap);
        (0..channels.len())
            .map(|_| MelBlocks::with_buffer(dim, cap, spare_take(len)))
            .collect()
    } else {
        Vec::new()
    };
    let mut sink = BandMajor {
        planes: HashMap::new(),
        cap,
        blocks,
    };
    let computed = run(plan, channels, feature, &mut sink);
    // The block buffers go back whatever happened (a bad signal must not drain the spares).
    for blocks in sink.blocks {
        spare_give(blocks.into_buffer());
    }
    computed
}

/// [`compute_one`]'s stream: the signal through `plan` into `sink`, then each channel's
/// plane finished.
fn run(
    plan: &Arc<FeaturePlan>,
    channels: &[&[f32]],
    feature: Feature,
    sink: &mut BandMajor,
) -> Computed {
    let mut stream = FeatureStream::new(Arc::clone(plan), channels.len());
    let samples = channels.first().map_or(0, |c| c.len());
    // In blocks, as the decoder feeds the binary: the stream's framing buffer stays in cache
    // (pushed whole, an hour was copied into it at once, page faults and all).
    let mut at = 0;
    while at < samples {
        let end = (at + PUSH_BLOCK).min(samples);
        let block: Vec<&[f32]> = channels.iter().map(|c| &c[at..end]).collect();
        stream.push(&block, sink)?;
        at = end;
    }
    let fin = stream.finish(sink)?;
    let (dim, frames) = (fin.dim(feature), fin.frames(feature) as usize);
    let mut planes = Vec::with_capacity(channels.len());
    for c in 0..channels.len() {
        if let Some(blocks) = sink.blocks.get_mut(c) {
            let mut out = klio_dsp::memory::zeroed(dim * frames);
            fin.finish_blocks(feature, blocks, &mut out);
            planes.push(out);
        } else if fin.is_deferred(feature) {
            // Mel frames that needed the whole signal (its maximum) to become final.
            let pending = sink.take(Slot::PendingMel, c, fin.pending_dim(), frames);
            planes.push(fin.finish_band_major_owned(feature, pending, frames));
        } else {
            planes.push(sink.take(Slot::Output(feature), c, dim, frames));
        }
    }
    let out = if planes.len() == 1 {
        planes.pop().unwrap_or_default()
    } else {
        planes.concat()
    };
    Ok((out, [channels.len(), dim, frames]))
}

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup
/// files on every call (a quarter of a 1 s clip's call, measured).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs `work(i)` for `i` in `0..n` on all cores (inline for one), results in order.
fn spread<T: Send>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if n <= 1 {
        return (0..n).map(work).collect();
    }
    let threads = cores().min(n);
    if threads <= 1 {
        return (0..n).map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push((i, work(i)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// `feature` of each signal (a C-contiguous float32 `[channels, samples]` array): a list of
/// float32 `[channels, dim, frames]` arrays. The signals are computed in parallel, without
/// the GIL.
#[pyfunction]
fn compute<'py>(
    py: Python<'py>,
    signals: Vec<PyReadonlyArray2<'py, f32>>,
    feature: &str,
    sr: f64,
    options: Options,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let plan = plan(config(feature, sr, &options)?).map_err(value_error)?;
    let mut inputs: Vec<Vec<&[f32]>> = Vec::with_capacity(signals.len());
    for s in &signals {
        let rows = s.as_array();
        let (channels, samples) = rows.dim();
        let flat = s
            .as_slice()
            .map_err(|_| value_error("the signal must be C-contiguous"))?;
        inputs.push(if samples == 0 {
            vec![&flat[..0]; channels]
        } else {
            flat.chunks_exact(samples).collect()
        });
    }
    let results: Vec<Computed> =
        py.detach(|| spread(inputs.len(), |i| compute_one(&plan, &inputs[i])));
    results
        .into_iter()
        .map(|r| {
            let (values, shape) = r.map_err(value_error)?;
            Ok(PyArray1::from_vec(py, values).reshape(shape)?.into_any())
        })
        .collect()
}

/// librosa's `power_to_db` over the whole of `values` (flattened); `reference` None is
/// `ref=np.max`.
#[pyfunction]
fn power_to_db<'py>(
    py: Python<'py>,
    values: PyReadonlyArray1<'py, f32>,
    reference: Option<f32>,
    amin: f32,
    top_db: Option<f32>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    if !(amin.is_normal() && amin > 0.0) {
        return Err(value_error(format!(
            "amin={amin} must be a positive number"
        )));
    }
    if let Some(t) = top_db {
        if t.is_nan() || t < 0.0 {
            return Err(value_error(format!("top_db={t} must be non-negative")));
        }
    }
    // The result goes into huge pages (an hour's log-mel is ~115 MB: faulting it in 4 KiB
    // pages cost a third of the call), written once from the input.
    let src = values.as_array();
    let mut v = klio_dsp::memory::zeroed(src.len());
    let cfg = DbConfig {
        reference: reference.map_or(DbReference::Max, DbReference::Value),
        amin,
        top_db,
    };
    match src.as_slice() {
        Some(s) => py.detach(|| power_to_db_into(s, &mut v, &cfg)),
        None => {
            v.iter_mut().zip(src.iter()).for_each(|(d, s)| *d = *s);
            py.detach(|| power_to_db_in_place(&mut v, &cfg));
        }
    }
    Ok(PyArray1::from_vec(py, v))
}

/// Decodes `path` as klio-edge does: `(float32 [channels, samples], rate)`, mixed down with
/// `mono`, resampled to `sr` unless it is None.
#[pyfunction]
#[pyo3(signature = (path, sr, mono))]
fn load<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    sr: Option<u32>,
    mono: bool,
) -> PyResult<(Bound<'py, PyAny>, u32)> {
    let cfg = DecodeConfig {
        sample_rate_hz: sr.map_or(SampleRate::Native, SampleRate::Hz),
        channels: if mono { Channels::Mono } else { Channels::Keep },
        ..DecodeConfig::default()
    };
    let decoded = py.detach(
        || -> Result<(Vec<Vec<f32>>, u32), klio_decode::DecodeError> {
            let mut stream = AudioStream::open(Path::new(&path), &cfg)?;
            let rate = stream.info().sample_rate_hz;
            let mut pcm: Vec<Vec<f32>> = vec![Vec::new(); stream.info().channels];
            while let Some(block) = stream.next_block()? {
                for (all, b) in pcm.iter_mut().zip(block) {
                    all.extend_from_slice(b);
                }
            }
            Ok((pcm, rate))
        },
    );
    let (pcm, rate) = decoded.map_err(|e| match e {
        klio_decode::DecodeError::Io(io) => PyOSError::new_err(format!("{}: {io}", path.display())),
        other => value_error(format!("{}: {other}", path.display())),
    })?;
    let channels = pcm.len().max(1);
    let samples = pcm.first().map_or(0, Vec::len);
    let flat: Vec<f32> = pcm.into_iter().flatten().collect();
    let array = PyArray1::from_vec(py, flat).reshape([channels, samples])?;
    Ok((array.into_any(), rate))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compute, m)?)?;
    m.add_function(wrap_pyfunction!(power_to_db, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
