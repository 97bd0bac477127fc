//! Draws a [`Figure`] with `plotters` into an RGB buffer and encodes it as PNG.
//!
//! Layout, top to bottom: title (element) and subtitle (source, feature, shape); one panel
//! per channel (spectrograms as an image with a colour bar on the right, descriptors and
//! waveforms as lines); one strip per VAD model with its speech segments; model labels.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::figure::{Body, Figure, FigureOptions, Rows};

/// A drawn picture.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Each panel's plotting area, `[x0, y0, x1, y1)` in pixels.
    pub panels: Vec<[u32; 4]>,
}

const TITLE_H: u32 = 56;
const STRIP_H: u32 = 36;
const LABEL_LINE_H: u32 = 20;
const COLOUR_BAR_W: u32 = 110;
const Y_LABELS_W: u32 = 78;
const X_LABELS_H: u32 = 44;

/// A linear f64 axis whose ticks are exactly the given points (plotters' `with_key_points`
/// on f64 has no default label formatting, which `configure_mesh` needs).
#[derive(Debug, Clone)]
pub struct Ticks {
    lo: f64,
    hi: f64,
    points: Vec<f64>,
}

impl Ticks {
    /// The axis `lo..hi` with ticks at `points`.
    pub fn new(lo: f64, hi: f64, points: Vec<f64>) -> Ticks {
        Ticks { lo, hi, points }
    }
}

impl plotters::coord::ranged1d::Ranged for Ticks {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        if self.hi == self.lo {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.lo) / (self.hi - self.lo);
        let len = (limit.1 - limit.0) as f64;
        // As plotters' own f64 axes: floor going right, ceil going up (reversed limits).
        if len > 0.0 {
            limit.0 + (len * t + 1e-3).floor() as i32
        } else {
            limit.0 + (len * t - 1e-3).ceil() as i32
        }
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.points.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Thumbnail size for the report's gallery.
pub const THUMB: (u32, u32) = (320, 120);

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// The colour of `v` on the figure's scale (viridis; everything at the bottom colour when the
/// scale is flat: a silent item is uniformly dark).
fn colour(v: f32, lo: f64, hi: f64) -> RGBColor {
    let t = if hi > lo && v.is_finite() {
        ((v as f64 - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ViridisRGB.get_color(t as f32)
}

/// The image of `values` (`rows` x `cols`, row 0 lowest) at `w` x `h` pixels: each pixel
/// column shows the loudest frame it covers, so short events survive downscaling.
fn raster(values: &[f32], rows: usize, cols: usize, w: u32, h: u32, lo: f64, hi: f64) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let mut buf = vec![0u8; w * h * 3];
    let col_range = |px: usize| {
        let a = px * cols / w;
        let b = ((px + 1) * cols / w).max(a + 1).min(cols);
        a..b
    };
    for py in 0..h {
        // Pixel row py (0 at the top) shows band r.
        let r = (((h - py) as f64 - 0.5) / h as f64 * rows as f64).floor() as usize;
        let row = &values[r.min(rows - 1) * cols..][..cols];
        for px in 0..w {
            let v = row[col_range(px)]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            let RGBColor(cr, cg, cb) = colour(v, lo, hi);
            let i = (py * w + px) * 3;
            buf[i..i + 3].copy_from_slice(&[cr, cg, cb]);
        }
    }
    buf
}

/// "1.5k" style Hz labels.
fn hz_label(hz: f64) -> String {
    if hz >= 1000.0 {
        let k = hz / 1000.0;
        if (k - k.round()).abs() < 0.05 {
            format!("{:.0}k", k)
        } else {
            format!("{:.1}k", k)
        }
    } else {
        format!("{:.0}", hz)
    }
}

/// Tick positions (in row units: row i spans [i, i+1)) and their labels.
fn row_ticks(rows: &Rows, n: usize, max_ticks: usize) -> Vec<(f64, String)> {
    match rows {
        Rows::Hz(centres) if centres.len() >= 2 => {
            let (first, last) = (centres[0], centres[centres.len() - 1]);
            let nice = [
                0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0,
                5000.0, 6000.0, 8000.0, 10000.0, 12000.0, 16000.0, 20000.0, 24000.0, 32000.0,
                48000.0, 64000.0, 96000.0,
            ];
            let mut ticks: Vec<(f64, String)> = nice
                .iter()
                .filter(|&&f| f >= first && f <= last)
                .map(|&f| (row_position(centres, f), hz_label(f)))
                .collect();
            // Keep ticks at least a label's height apart (in rows).
            let min_gap = n as f64 / max_ticks as f64;
            let mut kept: Vec<(f64, String)> = Vec::new();
            for t in ticks.drain(..) {
                if kept.last().is_none_or(|k| t.0 - k.0 >= min_gap) {
                    kept.push(t);
                }
            }
            kept
        }
        _ => {
            let step = n.div_ceil(max_ticks.max(1)).max(1);
            let step = [1, 2, 4, 5, 10, 20, 25, 50, 100, 200, 500, 1000]
                .into_iter()
                .find(|&s| s >= step)
                .unwrap_or(step);
            (0..n)
                .step_by(step)
                .map(|i| (i as f64 + 0.5, i.to_string()))
                .collect()
        }
    }
}

/// Where frequency `f` falls on the rows (row i's centre at i + 0.5), interpolating between
/// band centres.
pub fn row_position(centres: &[f64], f: f64) -> f64 {
    let i = centres.partition_point(|&c| c < f);
    if i == 0 {
        return 0.5;
    }
    if i >= centres.len() {
        return centres.len() as f64 - 0.5;
    }
    let (a, b) = (centres[i - 1], centres[i]);
    (i - 1) as f64 + 0.5 + (f - a) / (b - a)
}

/// Draws `fig`.
///
/// # Errors
/// Only if drawing fails (a plotters error), or the size is unusable.
pub fn render_png(fig: &Figure, opts: &FigureOptions) -> Result<Rendered> {
    super::fonts();
    let thumb = opts.width < 480;
    let strips = if thumb { 0 } else { fig.segments.len() as u32 };
    let label_lines = if thumb { 0 } else { fig.labels.len() as u32 };
    let title_h = if thumb { 0 } else { TITLE_H };
    let (w, h) = (
        opts.width,
        title_h + opts.height + strips * STRIP_H + label_lines * LABEL_LINE_H + 4,
    );
    if !(64..=16384).contains(&w) || !(32..=16384).contains(&h) {
        anyhow::bail!("a picture of {w}x{h} pixels is not drawn (64 to 16384 wide)");
    }
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    let mut panels = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let body = if thumb {
            root.clone()
        } else {
            let (top, rest) = root.split_vertically(title_h);
            top.draw_text(
                &fig.element,
                &("sans-serif", 20)
                    .into_font()
                    .style(FontStyle::Bold)
                    .color(&BLACK),
                (12, 8),
            )
            .map_err(err)?;
            let sub = subtitle(fig);
            top.draw_text(
                &sub,
                &("sans-serif", 14).into_font().color(&RGBColor(70, 70, 70)),
                (12, 34),
            )
            .map_err(err)?;
            rest
        };
        let has_image = fig.panels.iter().any(|p| matches!(p, Body::Image { .. }));
        let (main, bar) = if has_image && !thumb {
            let (m, b) = body.split_horizontally(w - COLOUR_BAR_W);
            (m, Some(b))
        } else {
            (body, None)
        };
        let (panel_area, below) = main.split_vertically(opts.height);
        let n = fig.panels.len() as u32;
        let each = opts.height / n.max(1);
        let mut area = panel_area;
        for (i, p) in fig.panels.iter().enumerate() {
            let (this, rest) = area.split_vertically(each);
            area = rest;
            let caption = (n > 1).then(|| format!("channel {}", i + 1));
            panels.push(draw_panel(&this, fig, p, caption.as_deref(), thumb)?);
        }
        if let Some(bar) = bar {
            // Beside the panels only, not the VAD strips and labels under them.
            draw_colour_bar(&bar.split_vertically(opts.height).0, fig)?;
        }
        let mut below = below;
        for (name, segs) in fig.segments.iter().take(strips as usize) {
            let (strip, rest) = below.split_vertically(STRIP_H);
            below = rest;
            draw_strip(
                &strip,
                fig.x_len,
                fig.seconds_per_frame.is_some(),
                name,
                segs,
            )?;
        }
        for (i, line) in fig.labels.iter().take(label_lines as usize).enumerate() {
            below
                .draw_text(
                    line,
                    &("sans-serif", 14).into_font().color(&BLACK),
                    (Y_LABELS_W as i32, 2 + i as i32 * LABEL_LINE_H as i32),
                )
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    let png = super::encode_png(&rgb, w, h)?;
    Ok(Rendered {
        png,
        width: w,
        height: h,
        panels,
    })
}

fn subtitle(fig: &Figure) -> String {
    let shape: Vec<String> = fig.shape.iter().map(usize::to_string).collect();
    let mut s = format!("{} [{}]", fig.feature, shape.join(" x "));
    if !fig.source.is_empty() {
        s = format!("{}  ·  {s}", fig.source);
    }
    s
}

fn x_desc(fig: &Figure) -> &'static str {
    if fig.seconds_per_frame.is_some() {
        "time (s)"
    } else {
        "frame"
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    body: &Body,
    caption: Option<&str>,
    thumb: bool,
) -> Result<[u32; 4]>
where
    DB::ErrorType: 'static,
{
    let (xl, yl) = if thumb {
        (0, 0)
    } else {
        (X_LABELS_H, Y_LABELS_W)
    };
    let mut b = ChartBuilder::on(area);
    b.margin_left(if thumb { 0 } else { 6 })
        .margin_right(if thumb { 0 } else { 18 })
        .margin_top(if thumb { 0 } else { 6 })
        .margin_bottom(if thumb { 0 } else { 4 })
        .x_label_area_size(xl)
        .y_label_area_size(yl);
    if let Some(c) = caption {
        b.caption(c, ("sans-serif", 14));
    }
    let label_style = ("sans-serif", 14).into_font();
    match body {
        Body::Image { rows, cols, values } => {
            let n = *rows;
            let (lo, hi) = (fig.scale.lo, fig.scale.hi);
            let height_px = area.dim_in_pixel().1.saturating_sub(xl + 10).max(1);
            let ticks = row_ticks(&fig.rows, n, (height_px / 28).max(2) as usize);
            let points: Vec<f64> = ticks.iter().map(|t| t.0).collect();
            let mut chart = b
                .build_cartesian_2d(0f64..fig.x_len, Ticks::new(0.0, n as f64, points))
                .map_err(err)?;
            let fmt = |v: &f64| {
                ticks
                    .iter()
                    .find(|t| (t.0 - v).abs() < 1e-9)
                    .map(|t| t.1.clone())
                    .unwrap_or_default()
            };
            let y_desc = match fig.rows {
                Rows::Hz(_) => "Hz",
                Rows::Coefficient(_) => "coefficient",
                _ => "row",
            };
            if !thumb {
                chart
                    .configure_mesh()
                    .disable_mesh()
                    .x_desc(x_desc(fig))
                    .y_desc(y_desc)
                    .label_style(label_style.clone())
                    .axis_desc_style(label_style)
                    .y_label_formatter(&fmt)
                    .draw()
                    .map_err(err)?;
            }
            let (xr, yr) = chart.plotting_area().get_pixel_range();
            let (pw, ph) = ((xr.end - xr.start) as u32, (yr.end - yr.start) as u32);
            let buf = raster(values, n, *cols, pw, ph, lo, hi);
            let img = BitMapElement::with_owned_buffer((0.0, n as f64), (pw, ph), buf)
                .ok_or_else(|| anyhow!("drawing failed: image buffer size"))?;
            chart.draw_series(std::iter::once(img)).map_err(err)?;
            Ok(pixels(xr, yr))
        }
        Body::Line(_) | Body::Envelope(_) => {
            let spf = fig.seconds_per_frame.unwrap_or(1.0);
            let (lo, hi) = padded(fig.scale.lo, fig.scale.hi);
            let mut chart = b.build_cartesian_2d(0f64..fig.x_len, lo..hi).map_err(err)?;
            if !thumb {
                let y_desc = match body {
                    Body::Envelope(_) => "amplitude",
                    _ => fig.feature.as_str(),
                };
                chart
                    .configure_mesh()
                    .light_line_style(RGBColor(235, 235, 235))
                    .bold_line_style(RGBColor(215, 215, 215))
                    .x_desc(x_desc(fig))
                    .y_desc(y_desc)
                    .y_label_formatter(&|v| format!("{:.2}", v + 0.0))
                    .label_style(label_style.clone())
                    .axis_desc_style(label_style)
                    .draw()
                    .map_err(err)?;
            }
            let colour = RGBColor(31, 119, 180);
            match body {
                Body::Line(values) => {
                    let pts = decimate(values, area.dim_in_pixel().0 as usize * 2)
                        .map(|(i, v)| ((i as f64 + 0.5) * spf, v as f64));
                    chart
                        .draw_series(LineSeries::new(pts, colour.stroke_width(1)))
                        .map_err(err)?;
                }
                Body::Envelope(env) => {
                    chart
                        .draw_series(env.iter().enumerate().map(|(i, &(a, b))| {
                            let x = (i as f64 + 0.5) * spf;
                            PathElement::new(vec![(x, a as f64), (x, b as f64)], colour)
                        }))
                        .map_err(err)?;
                }
                Body::Image { .. } => unreachable!("matched above"),
            }
            let (xr, yr) = chart.plotting_area().get_pixel_range();
            Ok(pixels(xr, yr))
        }
    }
}

/// A plotting area's pixels as `[x0, y0, x1, y1)`.
fn pixels(xr: std::ops::Range<i32>, yr: std::ops::Range<i32>) -> [u32; 4] {
    [xr.start, yr.start, xr.end, yr.end].map(|v| v.max(0) as u32)
}

/// A y range with room around the line (and a unit of room for a flat one).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - pad, hi + pad)
}

/// At most about `max_points` points: min and max of each bucket, in order (peaks survive).
fn decimate(values: &[f32], max_points: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
    let bucket = values.len().div_ceil(max_points.max(2) / 2).max(1);
    values.chunks(bucket).enumerate().flat_map(move |(k, c)| {
        let base = k * bucket;
        if c.len() == 1 {
            return vec![(base, c[0])];
        }
        let (mut imin, mut imax) = (0, 0);
        for (i, &v) in c.iter().enumerate() {
            if v < c[imin] {
                imin = i;
            }
            if v > c[imax] {
                imax = i;
            }
        }
        let (a, b) = (imin.min(imax), imin.max(imax));
        if a == b {
            return vec![(base + a, c[a])];
        }
        vec![(base + a, c[a]), (base + b, c[b])]
    })
}

fn draw_colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (lo, hi) = (fig.scale.lo, fig.scale.hi);
    let top = if hi > lo { hi } else { lo + 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(6)
        .margin_bottom(4)
        .margin_right(22)
        .x_label_area_size(X_LABELS_H)
        .y_label_area_size(68)
        .build_cartesian_2d(0f64..1f64, lo..top)
        .map_err(err)?;
    let style = ("sans-serif", 14).into_font();
    let digits = if top - lo >= 10.0 { 0 } else { 2 };
    let fmt = |v: &f64| format!("{v:.digits$}  ");
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_label_formatter(&fmt)
        .y_desc(if fig.scale.unit.is_empty() {
            "value"
        } else {
            fig.scale.unit.as_str()
        })
        .label_style(style.clone())
        .axis_desc_style(style)
        .draw()
        .map_err(err)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let (pw, ph) = ((xr.end - xr.start) as u32, (yr.end - yr.start) as u32);
    let mut buf = vec![0u8; (pw * ph * 3) as usize];
    for py in 0..ph {
        let v = top - (py as f64 + 0.5) / ph as f64 * (top - lo);
        let RGBColor(r, g, b) = colour(v as f32, lo, hi);
        for px in 0..pw {
            let i = ((py * pw + px) * 3) as usize;
            buf[i..i + 3].copy_from_slice(&[r, g, b]);
        }
    }
    let img = BitMapElement::with_owned_buffer((0.0, top), (pw, ph), buf)
        .ok_or_else(|| anyhow!("drawing failed: colour bar buffer size"))?;
    chart.draw_series(std::iter::once(img)).map_err(err)?;
    Ok(())
}

fn draw_strip<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x_len: f64,
    seconds: bool,
    name: &str,
    segs: &[(f64, f64)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .margin_left(6)
        .margin_right(18)
        .margin_top(4)
        .margin_bottom(4)
        .y_label_area_size(Y_LABELS_W)
        .build_cartesian_2d(0f64..x_len, Ticks::new(0.0, 1.0, vec![0.5]))
        .map_err(err)?;
    // The model's name as the strip's one (horizontal) y label.
    let label = |_: &f64| name.to_string();
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_label_formatter(&label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (x_len, 1.0)],
            RGBColor(232, 232, 232).filled(),
        )))
        .map_err(err)?;
    let speech = RGBColor(230, 97, 1);
    // Segments are in seconds; an axis in frames has no seconds to place them by.
    if seconds {
        chart
            .draw_series(segs.iter().map(|&(a, b)| {
                Rectangle::new([(a.max(0.0), 0.0), (b.min(x_len), 1.0)], speech.filled())
            }))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_to_positions_between_band_centres() {
        let c = [100.0, 200.0, 400.0];
        assert_eq!(row_position(&c, 100.0), 0.5);
        assert_eq!(row_position(&c, 150.0), 1.0);
        assert_eq!(row_position(&c, 300.0), 2.0);
        assert_eq!(row_position(&c, 50.0), 0.5);
        assert_eq!(row_position(&c, 900.0), 2.5);
        assert_eq!(hz_label(1000.0), "1k");
        assert_eq!(hz_label(1500.0), "1.5k");
        assert_eq!(hz_label(500.0), "500");
    }

    #[test]
    fn decimation_keeps_the_peaks() {
        let mut v = vec![0.0f32; 10_000];
        v[5_001] = 9.0;
        v[7_777] = -3.0;
        let pts: Vec<(usize, f32)> = decimate(&v, 100).collect();
        assert!(pts.len() <= 102, "{}", pts.len());
        assert!(pts.contains(&(5_001, 9.0)) && pts.contains(&(7_777, -3.0)));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
