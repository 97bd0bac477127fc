//! Pictures: `klio-edge plot` (one item's feature as a spectrogram or line plot, PNG) and
//! `klio-edge report` (the ledger's runs as one self-contained HTML page, also served by
//! `serve` at `/`).
//!
//! [`figure`] turns what an item wrote (a `.npy` and its `meta.json`) into a [`figure::Figure`]:
//! values, axes (seconds; Hz at mel band centres, linear-frequency bins, or coefficient index),
//! a colour scale in dB, VAD segments and model labels. [`render`] draws one with `plotters`
//! into a PNG. [`report`] gathers the ledger's numbers and writes the HTML with SVG charts and
//! thumbnails.

pub mod figure;
pub mod render;
pub mod report;

pub use figure::{Figure, FigureOptions};
pub use render::{render_png, Rendered};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use anyhow::{bail, Context, Result};

use crate::export::Outputs;
use crate::store::Stores;

/// The font every picture's text is set in (DejaVu Sans, licence in `DejaVuSans-LICENSE`).
static FONT: &[u8] = include_bytes!("DejaVuSans.ttf");

/// Registers the embedded font with plotters once (it has no system font lookup here: the
/// binary is static and needs no fontconfig).
pub(crate) fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            plotters::style::FontStyle::Normal,
            plotters::style::FontStyle::Bold,
        ] {
            // The font is compiled in and known to parse (a unit test draws text).
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

/// What `klio-edge plot` is asked to draw.
#[derive(Debug, Clone)]
pub struct PlotRequest {
    /// An element id under `out`, or the path of a `.npy` file.
    pub target: String,
    /// The output folder (or object-store prefix) the element's outputs are in.
    pub out: String,
    /// Which feature (`waveform` for the decoded source); `None`: `log_mel` when the item has
    /// it, else its first two-dimensional feature, else its first.
    pub feature: Option<String>,
    /// The PNG to write.
    pub to: PathBuf,
    /// Picture size and colour scale.
    pub options: FigureOptions,
}

/// What `klio-edge plot --json` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlotSummary {
    /// The PNG written.
    pub to: PathBuf,
    /// The element (or the `.npy` path).
    pub element: String,
    /// The feature drawn.
    pub feature: String,
    /// Its shape as stored.
    pub shape: Vec<usize>,
    /// Picture size in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Each panel's plotting area in pixels, `[x0, y0, x1, y1]` (x1, y1 exclusive): one per
    /// channel.
    pub panels: Vec<[u32; 4]>,
    /// For spectrograms, the frequency (Hz) of each row, bottom first; for MFCC the
    /// coefficient index; empty for line plots.
    pub rows: Vec<f64>,
    /// What the rows are: `hz`, `coefficient`, `index`, or `none`.
    pub rows_unit: &'static str,
    /// The colour scale's ends (dB for spectrograms).
    pub scale: [f64; 2],
    /// The colour scale's unit.
    pub scale_unit: String,
    /// Seconds per column of the feature (`null` when the axis is in frames).
    pub seconds_per_frame: Option<f64>,
}

/// Draws one picture and writes it (atomically) to `req.to`.
///
/// # Errors
/// The element, its `meta.json` or the feature cannot be read or is not drawable, or the
/// PNG cannot be written.
pub fn plot(req: &PlotRequest, stores: Arc<Stores>) -> Result<PlotSummary> {
    let fig = if req.target.ends_with(".npy") && Path::new(&req.target).is_file() {
        if req.feature.is_some() {
            bail!("--feature picks one of an element's features; a .npy file is drawn as it is");
        }
        figure::from_npy_file(Path::new(&req.target), &req.options)?
    } else {
        let outputs = Outputs::open(&req.out, stores.clone())?;
        figure::from_item(
            &outputs,
            &req.target,
            req.feature.as_deref(),
            &req.options,
            &stores,
        )?
    };
    let rendered = render_png(&fig, &req.options)?;
    write_atomic(&req.to, &rendered.png)?;
    Ok(PlotSummary {
        to: req.to.clone(),
        element: fig.element.clone(),
        feature: fig.feature.clone(),
        shape: fig.shape.clone(),
        width: rendered.width,
        height: rendered.height,
        panels: rendered.panels.clone(),
        rows: fig.rows.values(),
        rows_unit: fig.rows.unit(),
        scale: [fig.scale.lo, fig.scale.hi],
        scale_unit: fig.scale.unit.clone(),
        seconds_per_frame: fig.seconds_per_frame,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed when
/// complete: a reader never sees half a picture.
///
/// # Errors
/// The folder is missing or not writable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: no folder {}",
            path.display(),
            dir.display()
        );
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    // Export's destination file: `.NAME.partial`, synced, renamed.
    let mut f = crate::export::DestFile::create(&dir, &name.to_string_lossy())?;
    std::io::Write::write_all(&mut f, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.finish()?;
    Ok(())
}

/// Encodes an RGB buffer as PNG.
///
/// # Errors
/// Only if the encoder fails (not for a well-sized buffer).
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Balanced);
        let mut w = enc.write_header()?;
        w.write_image_data(rgb)?;
        w.finish()?;
    }
    Ok(out)
}
