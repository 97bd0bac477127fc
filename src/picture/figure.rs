//! From an item's outputs to a [`Figure`]: the values to draw, the axes they mean, the colour
//! scale, and the item's VAD segments and model labels.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use klio_dsp::{hz_to_mel, mel_to_hz, MelScale};
use serde_json::Value;

use crate::export::{parse_npy, Outputs};
use crate::pipeline::meta::ItemMeta;
use crate::store::Stores;

/// The most values a picture reads (a 6 h item's log-mel at 128 bands is ~60 M): beyond it
/// the `.npy` is refused rather than read.
pub const MAX_VALUES: usize = 256 << 20;

/// Picture options.
#[derive(Debug, Clone)]
pub struct FigureOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (of the panels; the VAD strip and labels add to it).
    pub height: u32,
    /// dB range of the colour scale below its top (spectrograms).
    pub db_range: f64,
}

impl Default for FigureOptions {
    fn default() -> Self {
        FigureOptions {
            width: 1200,
            height: 600,
            db_range: 80.0,
        }
    }
}

/// What a row of a spectrogram is.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    /// Frequency bands, with each band's centre in Hz (mel bands are not evenly spaced in Hz).
    Hz(Vec<f64>),
    /// Cepstral coefficients 0..n.
    Coefficient(usize),
    /// Rows of a `.npy` without an item (index only).
    Index(usize),
    /// A line plot: no rows.
    None,
}

impl Rows {
    /// The value of each row, bottom first.
    pub fn values(&self) -> Vec<f64> {
        match self {
            Rows::Hz(v) => v.clone(),
            Rows::Coefficient(n) | Rows::Index(n) => (0..*n).map(|i| i as f64).collect(),
            Rows::None => Vec::new(),
        }
    }

    /// The unit's name.
    pub fn unit(&self) -> &'static str {
        match self {
            Rows::Hz(_) => "hz",
            Rows::Coefficient(_) => "coefficient",
            Rows::Index(_) => "index",
            Rows::None => "none",
        }
    }
}

/// The colour (or y) scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    /// Bottom of the scale.
    pub lo: f64,
    /// Top.
    pub hi: f64,
    /// Unit (`dB`, or empty).
    pub unit: String,
}

/// How one panel is drawn.
#[derive(Debug, Clone)]
pub enum Body {
    /// A spectrogram-like image: `rows` x `cols` values, row-major, row 0 the lowest.
    Image {
        /// Rows (bands or coefficients).
        rows: usize,
        /// Columns (frames).
        cols: usize,
        /// Values, already in the scale's unit.
        values: Vec<f32>,
    },
    /// A line over the frames.
    Line(Vec<f32>),
    /// A waveform: (min, max) per column of a fixed count.
    Envelope(Vec<(f32, f32)>),
}

/// Everything one picture shows.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The element (or the `.npy` path).
    pub element: String,
    /// The item's source.
    pub source: String,
    /// The feature's name.
    pub feature: String,
    /// Its shape as stored.
    pub shape: Vec<usize>,
    /// One panel per channel.
    pub panels: Vec<Body>,
    /// What the rows are.
    pub rows: Rows,
    /// Colour scale (images) or y range (lines).
    pub scale: Scale,
    /// Seconds per column; `None`: the x axis counts frames.
    pub seconds_per_frame: Option<f64>,
    /// The x axis' length in seconds (or frames).
    pub x_len: f64,
    /// VAD segments in seconds, with the model's name.
    pub segments: Vec<(String, Vec<(f64, f64)>)>,
    /// Model labels: "model: label 0.93, ...".
    pub labels: Vec<String>,
}

/// Values per unit kind: how stored values become what the colour bar shows.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    /// Already dB (log_mel).
    Db,
    /// Power: 10 log10.
    Power,
    /// Magnitude: 20 log10.
    Amplitude,
    /// Natural log of power (Kaldi fbank): 10 / ln 10 times it.
    LnPower,
    /// Whisper's scaled log10: shown as it is.
    Plain,
}

/// The item's `meta.json` and the named feature (or the default one), read.
///
/// # Errors
/// Missing element, `meta.json` or feature, or a feature too large or not float32.
pub fn from_item(
    outputs: &Outputs,
    element: &str,
    feature: Option<&str>,
    opts: &FigureOptions,
    stores: &Arc<Stores>,
) -> Result<Figure> {
    let meta_bytes = outputs.read(element, "meta.json").with_context(|| {
        format!(
            "no item {element:?} in {} (give its element id as `ledger` lists it, or a .npy path)",
            outputs.location("", "").trim_end_matches('/')
        )
    })?;
    let meta: ItemMeta = serde_json::from_slice(&meta_bytes).with_context(|| {
        format!(
            "{} is not a klio-edge meta.json",
            outputs.location(element, "meta.json")
        )
    })?;
    let audio = meta
        .audio
        .as_ref()
        .with_context(|| format!("{element} has no audio (decode was off): nothing to plot"))?;
    let name = match feature {
        Some(f) => f.to_string(),
        None => default_feature(&meta)
            .with_context(|| format!("{element} has no features; try --feature waveform"))?,
    };
    let mut fig = if name == "waveform" {
        waveform(&meta, stores)?
    } else {
        let file = audio.features.get(&name).with_context(|| {
            let have: Vec<&str> = audio.features.keys().map(String::as_str).collect();
            format!(
                "{element} has no feature {name:?}; it has: {} (or --feature waveform)",
                have.join(", ")
            )
        })?;
        check_size(&file.shape, &outputs.location(element, &file.file))?;
        let npy = parse_npy(&outputs.read(element, &file.file)?)
            .with_context(|| outputs.location(element, &file.file))?;
        figure_of(&name, npy.shape, npy.values, Some(&meta), opts)?
    };
    fig.element = element.to_string();
    fig.source = meta.source.clone();
    if let Some(models) = &meta.models {
        for m in models {
            let Ok(bytes) = outputs.read(element, &m.file) else {
                fig.labels
                    .push(format!("{}: output {} missing", m.name, m.file));
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if let Some(list) = v["segments"].as_array() {
                let segs = list
                    .iter()
                    .filter_map(|s| Some((s["start"].as_f64()?, s["end"].as_f64()?)))
                    .collect();
                fig.segments.push((m.name.clone(), segs));
            } else if let Some(list) = v["labels"].as_array() {
                let best: Vec<String> = list
                    .iter()
                    .take(5)
                    .map(|l| {
                        format!(
                            "{} {:.2}",
                            l["label"].as_str().unwrap_or("?"),
                            l["score"].as_f64().unwrap_or(f64::NAN)
                        )
                    })
                    .collect();
                fig.labels.push(format!("{}: {}", m.name, best.join(", ")));
            }
        }
    }
    Ok(fig)
}

/// `log_mel` when the item has it, else its first feature with more than one row, else its
/// first.
pub fn default_feature(meta: &ItemMeta) -> Option<String> {
    let feats = &meta.audio.as_ref()?.features;
    if feats.contains_key("log_mel") {
        return Some("log_mel".into());
    }
    let rows = |shape: &[usize]| shape.len().checked_sub(2).map_or(1, |i| shape[i]);
    feats
        .iter()
        .find(|(_, f)| rows(&f.shape) > 1)
        .or_else(|| feats.iter().next())
        .map(|(n, _)| n.clone())
}

fn check_size(shape: &[usize], at: &str) -> Result<()> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match n {
        Some(n) if n <= MAX_VALUES => Ok(()),
        _ => bail!("{at}: shape {shape:?} is too large to draw (more than {MAX_VALUES} values)"),
    }
}

/// A `.npy` file on its own; the `meta.json` beside it (an item folder) gives the axes when
/// it is there.
///
/// # Errors
/// Unreadable, too large, or not float32.
pub fn from_npy_file(path: &Path, opts: &FigureOptions) -> Result<Figure> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > (MAX_VALUES as u64) * 4 + 4096 {
        bail!("{}: {len} bytes is too large to draw", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = parse_npy(&bytes).with_context(|| path.display().to_string())?;
    let meta: Option<ItemMeta> = path
        .parent()
        .map(|d| d.join("meta.json"))
        .and_then(|m| std::fs::read(m).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The feature's name only counts when the meta.json beside it lists this very file.
    let known = meta.as_ref().and_then(|m| {
        let f = m.audio.as_ref()?.features.get(&stem)?;
        (f.shape == npy.shape).then_some(m)
    });
    let mut fig = figure_of(&stem, npy.shape, npy.values, known, opts)?;
    fig.element = path.display().to_string();
    fig.source = known.map(|m| m.source.clone()).unwrap_or_default();
    Ok(fig)
}

/// Builds the figure of feature `name` from its values.
fn figure_of(
    name: &str,
    shape: Vec<usize>,
    values: Vec<f32>,
    meta: Option<&ItemMeta>,
    opts: &FigureOptions,
) -> Result<Figure> {
    let (channels, rows, cols) = match shape.as_slice() {
        [n] => (1, 1, *n),
        [r, c] => (1, *r, *c),
        [ch, r, c] => (*ch, *r, *c),
        _ => bail!(
            "a {}-dimensional array cannot be drawn (1 to 3 axes)",
            shape.len()
        ),
    };
    if rows == 0 || cols == 0 || channels == 0 {
        bail!("{name} is empty (shape {shape:?}): nothing to draw");
    }
    let features = meta
        .and_then(|m| m.config.as_ref())
        .and_then(|c| c.features.clone())
        .unwrap_or(Value::Null);
    let audio = meta.and_then(|m| m.audio.as_ref());
    let sr = audio.map(|a| a.sample_rate_hz as f64);
    let seconds_per_frame = audio.map(|a| match name {
        "fbank" => features["fbank"]["frame_shift_ms"].as_f64().unwrap_or(10.0) / 1e3,
        _ => 1.0 / a.frame_rate_hz,
    });
    let unit = match name {
        "log_mel" => Unit::Db,
        "mel" if features["mel_power"].as_f64() == Some(1.0) => Unit::Amplitude,
        "mel" | "power" => Unit::Power,
        "magnitude" => Unit::Amplitude,
        "fbank" => Unit::LnPower,
        _ => Unit::Plain,
    };
    let rows_kind = match (name, sr) {
        _ if rows == 1 => Rows::None,
        ("log_mel" | "mel" | "whisper_log_mel", Some(sr)) => mel_rows(&features, rows, sr),
        ("fbank", Some(sr)) => fbank_rows(&features["fbank"], rows, sr),
        ("power" | "magnitude", Some(sr)) => linear_rows(rows, sr),
        ("mfcc", _) => Rows::Coefficient(rows),
        _ => Rows::Index(rows),
    };
    let x_len = seconds_per_frame.map_or(cols as f64, |s| cols as f64 * s);
    let plane = rows * cols;
    if values.len() != plane * channels {
        bail!("{name}: {} values for shape {shape:?}", values.len());
    }
    let mut panels = Vec::with_capacity(channels);
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for ch in values.chunks_exact(plane) {
        let v: Vec<f32> = ch.iter().map(|&x| to_unit(x, unit)).collect();
        for &x in &v {
            if x.is_finite() {
                lo = lo.min(x as f64);
                hi = hi.max(x as f64);
            }
        }
        panels.push(if rows_kind == Rows::None {
            Body::Line(v)
        } else {
            Body::Image {
                rows,
                cols,
                values: v,
            }
        });
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 0.0);
    }
    let db = matches!(
        unit,
        Unit::Db | Unit::Power | Unit::Amplitude | Unit::LnPower
    );
    if db && rows_kind != Rows::None {
        lo = lo.max(hi - opts.db_range);
    }
    Ok(Figure {
        element: String::new(),
        source: String::new(),
        feature: name.to_string(),
        shape,
        panels,
        rows: rows_kind,
        scale: Scale {
            lo,
            hi,
            unit: if db { "dB".into() } else { String::new() },
        },
        seconds_per_frame,
        x_len,
        segments: Vec::new(),
        labels: Vec::new(),
    })
}

fn to_unit(x: f32, unit: Unit) -> f32 {
    const AMIN: f32 = 1e-10;
    match unit {
        Unit::Db | Unit::Plain => x,
        Unit::Power => 10.0 * x.max(AMIN).log10(),
        Unit::Amplitude => 20.0 * x.max(1e-5).log10(),
        Unit::LnPower => x * (10.0 / std::f32::consts::LN_10),
    }
}

/// Centres of `n` bands spaced evenly on a mel scale between `lo` and `hi` Hz (librosa's
/// `mel_frequencies(n + 2)[1:-1]`; Kaldi's bins likewise on its 1127 ln(1 + f/700) scale,
/// which is HTK's).
fn band_centres(n: usize, lo: f64, hi: f64, scale: MelScale) -> Vec<f64> {
    let (a, b) = (hz_to_mel(lo, scale), hz_to_mel(hi, scale));
    let step = (b - a) / (n as f64 + 1.0);
    (1..=n)
        .map(|i| mel_to_hz(a + step * i as f64, scale))
        .collect()
}

fn mel_rows(features: &Value, rows: usize, sr: f64) -> Rows {
    let scale = match features["mel_scale"].as_str() {
        Some("htk") => MelScale::Htk,
        _ => MelScale::Slaney,
    };
    let fmin = features["fmin_hz"].as_f64().unwrap_or(0.0);
    let fmax = features["fmax_hz"].as_f64().unwrap_or(sr / 2.0);
    Rows::Hz(band_centres(rows, fmin, fmax, scale))
}

fn fbank_rows(fbank: &Value, rows: usize, sr: f64) -> Rows {
    let nyquist = sr / 2.0;
    let low = fbank["low_freq_hz"].as_f64().unwrap_or(20.0);
    let high = match fbank["high_freq_hz"].as_f64().unwrap_or(0.0) {
        h if h <= 0.0 => nyquist + h,
        h => h,
    };
    Rows::Hz(band_centres(rows, low, high, MelScale::Htk))
}

fn linear_rows(rows: usize, sr: f64) -> Rows {
    let n_fft = (rows.saturating_sub(1) * 2).max(1) as f64;
    Rows::Hz((0..rows).map(|k| k as f64 * sr / n_fft).collect())
}

/// Columns of a waveform picture (min/max per column).
const ENVELOPE_COLUMNS: usize = 2000;

/// The item's source decoded (mono, at the item's rate) as a min/max envelope.
fn waveform(meta: &ItemMeta, stores: &Arc<Stores>) -> Result<Figure> {
    let mut cfg = klio_decode::DecodeConfig::default();
    if let Some(a) = &meta.audio {
        cfg.sample_rate_hz = klio_decode::SampleRate::Hz(a.sample_rate_hz);
    }
    let source = crate::item::Source::parse(&meta.source).map_err(anyhow::Error::msg)?;
    let mut stream = match &source {
        crate::item::Source::Path(p) => klio_decode::AudioStream::open(p, &cfg)
            .with_context(|| format!("cannot decode the source {}", p.display()))?,
        crate::item::Source::Remote(r) => {
            let bytes = stores
                .read_small(r, crate::export::MAX_FILE_BYTES)?
                .with_context(|| format!("the source {r} does not exist"))?;
            let ext = Path::new(r.key())
                .extension()
                .map(|e| e.to_string_lossy().into_owned());
            klio_decode::AudioStream::from_bytes(bytes, ext, &cfg)
                .with_context(|| format!("cannot decode the source {r}"))?
        }
    };
    let sr = stream.info().sample_rate_hz as f64;
    let expected = meta.audio.as_ref().map_or(0, |a| a.samples as usize).max(1);
    let mut per_col = expected.div_ceil(ENVELOPE_COLUMNS).max(1);
    let mut env: Vec<(f32, f32)> = Vec::new();
    let mut cur = (f32::INFINITY, f32::NEG_INFINITY);
    let mut in_col = 0usize;
    let mut total = 0usize;
    while let Some(block) = stream.next_block()? {
        let chans = block.len().max(1) as f32;
        let n = block.first().map_or(0, Vec::len);
        for i in 0..n {
            let x = block.iter().map(|c| c[i]).sum::<f32>() / chans;
            cur = (cur.0.min(x), cur.1.max(x));
            in_col += 1;
            if in_col == per_col {
                env.push(cur);
                cur = (f32::INFINITY, f32::NEG_INFINITY);
                in_col = 0;
                // More samples than meta.json said (the source changed since): merge
                // neighbouring columns, so the envelope stays bounded.
                if env.len() >= 2 * ENVELOPE_COLUMNS {
                    env = env
                        .chunks(2)
                        .map(|c| {
                            c.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |a, b| {
                                (a.0.min(b.0), a.1.max(b.1))
                            })
                        })
                        .collect();
                    per_col *= 2;
                }
            }
        }
        total += n;
    }
    if in_col > 0 {
        env.push(cur);
    }
    if env.is_empty() {
        bail!("the source decodes to no samples");
    }
    let peak = env
        .iter()
        .fold(0f32, |m, &(a, b)| m.max(a.abs()).max(b.abs()))
        .max(1e-3) as f64;
    Ok(Figure {
        element: meta.element.clone(),
        source: meta.source.clone(),
        feature: "waveform".into(),
        shape: vec![total],
        panels: vec![Body::Envelope(env)],
        rows: Rows::None,
        scale: Scale {
            lo: -peak,
            hi: peak,
            unit: String::new(),
        },
        seconds_per_frame: Some(per_col as f64 / sr),
        x_len: total as f64 / sr,
        segments: Vec::new(),
        labels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_centres_are_librosa_mel_frequencies() {
        // librosa.mel_frequencies(130, fmin=0, fmax=11025)[1:-1] at 0, 63, 127.
        let c = band_centres(128, 0.0, 11025.0, MelScale::Slaney);
        assert_eq!(c.len(), 128);
        for (i, want) in [
            (0, 25.793_588_878_635_166),
            (63, 1_956.474_671_764_885_2),
            (127, 10_735.597_567_310_588),
        ] {
            assert!((c[i] - want).abs() < 1e-6 * want, "{i}: {} vs {want}", c[i]);
        }
        assert!(c.windows(2).all(|w| w[1] > w[0]));
        assert!(c[127] < 11025.0 && c[127] > 10_000.0);
    }

    #[test]
    fn a_flat_log_mel_scales_to_its_own_value_and_power_becomes_db() {
        let opts = FigureOptions::default();
        let f = figure_of("log_mel", vec![4, 3], vec![-100.0; 12], None, &opts).unwrap();
        assert_eq!((f.scale.lo, f.scale.hi), (-100.0, -100.0));
        let p = figure_of(
            "power",
            vec![3, 2],
            vec![1.0, 100.0, 1.0, 1.0, 1.0, 1e-20],
            None,
            &opts,
        )
        .unwrap();
        // No item: rows are an index, values still converted to dB (floored at -100 dB, the
        // scale 80 dB below the top).
        assert_eq!(p.rows, Rows::Index(3));
        assert_eq!((p.scale.lo, p.scale.hi), (-60.0, 20.0));
        assert!(figure_of("x", vec![2, 2, 2, 2], vec![0.0; 16], None, &opts).is_err());
        assert!(figure_of("x", vec![0, 5], vec![], None, &opts).is_err());
        let line = figure_of("rms", vec![1, 4], vec![0.1, 0.2, 0.3, 0.4], None, &opts).unwrap();
        assert!(matches!(line.panels[0], Body::Line(_)));
    }
}
