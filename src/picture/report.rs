//! The run report: one self-contained HTML page (inline CSS and SVG charts, thumbnails as
//! `data:` PNGs, no JavaScript, nothing fetched) over a ledger and its outputs.
//!
//! Sections (each an `id` the browser test looks for): `totals`, `stages` (stage times per
//! run, stacked), `throughput` (items finished over each run), `distributions` (item
//! durations and processing times), `failures` (by `error_kind`, with messages and the retry
//! command), `slowest`, `gallery` (spectrogram thumbnails linked to full-size pictures).
//! The ledger is streamed once: memory stays bounded by the gallery and table sizes, not by
//! the ledger's rows.

use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use plotters::prelude::*;

use super::figure::{from_item, FigureOptions};
use super::render::{render_png, THUMB};
use crate::export::Outputs;
use crate::ledger::{ItemFacts, Ledger, RunTimes};
use crate::store::Stores;

/// What the report covers.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The output folder (or object-store prefix) the items' outputs are in.
    pub out: String,
    /// The ledger.
    pub ledger: PathBuf,
    /// Items in the gallery.
    pub items: usize,
    /// The gallery's feature (`None`: each item's default).
    pub feature: Option<String>,
}

/// What [`write`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// Full-size pictures written.
    pub pictures: usize,
    /// Where.
    pub pictures_dir: PathBuf,
}

/// Runs shown in the per-run charts.
const RUNS_SHOWN: usize = 10;
/// Runs drawn in the throughput chart.
const THROUGHPUT_RUNS: usize = 4;
/// Rows of the slowest-items table.
const SLOWEST: usize = 10;
/// Messages listed per error kind.
const MESSAGES_PER_KIND: usize = 5;
/// Failed items placed first in the gallery (at most half of it).
const FAILED_CARDS: usize = 12;

/// Chart text.
const LABELS: (&str, u32) = ("sans-serif", 15);

/// Stage colours (Tableau 10), in pipeline order; other stages take the rest in turn.
const STAGES: [&str; 6] = ["fetch", "decode", "features", "infer", "exec", "sink"];
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Log-spaced histogram over positive values (8 bins per decade).
#[derive(Default)]
struct LogHist {
    bins: BTreeMap<i32, u64>,
    n: u64,
}

impl LogHist {
    const PER_DECADE: f64 = 8.0;
    fn add(&mut self, v: f64) {
        if v.is_finite() && v > 0.0 {
            let b = (v.log10() * Self::PER_DECADE).floor() as i32;
            *self.bins.entry(b).or_default() += 1;
            self.n += 1;
        }
    }
    fn edge(b: i32) -> f64 {
        10f64.powf(b as f64 / Self::PER_DECADE)
    }
}

/// A failed item kept for the page.
struct Failure {
    element: String,
    message: String,
}

/// Per error kind: the count and a few messages.
#[derive(Default)]
struct Kind {
    count: u64,
    examples: Vec<Failure>,
}

/// An item ordered by its processing time (min-heap by wrapping in Reverse).
#[derive(PartialEq)]
struct Slow(f64, ItemFacts);
impl Eq for Slow {}
impl PartialOrd for Slow {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Slow {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&o.0)
            .then_with(|| o.1.element.cmp(&self.1.element))
    }
}

impl PartialEq for ItemFacts {
    fn eq(&self, o: &Self) -> bool {
        self.element == o.element
    }
}

/// A run's items finished per second: `(seconds since start, items/s)` per bucket.
struct RunRate {
    id: i64,
    span_s: f64,
    points: Vec<(f64, f64)>,
}

/// Receives a gallery item's full-size PNG (the file report stores them).
pub type SavePicture<'a> = &'a mut dyn FnMut(&str, &[u8]) -> Result<()>;

/// The ledger, read once.
struct Facts {
    runs: Vec<RunTimes>,
    throughput: Vec<RunRate>,
    items: u64,
    done: u64,
    failed: u64,
    running: u64,
    audio_s: f64,
    durations: LogHist,
    processing: LogHist,
    kinds: BTreeMap<String, Kind>,
    slowest: Vec<ItemFacts>,
    recent_failed: Vec<ItemFacts>,
    first_done: Vec<ItemFacts>,
}

fn gather(ledger: &Ledger, gallery: usize) -> Result<Facts> {
    let runs = ledger.run_times(RUNS_SHOWN)?;
    let mut throughput = Vec::new();
    for run in runs.iter().take(THROUGHPUT_RUNS) {
        // Items per second in buckets of about 5 items each on average (5 to 60 buckets).
        let span = run.wall_s.max(1e-3);
        let items = (run.done + run.skipped + run.failed).max(0) as usize;
        let buckets = (items / 5).clamp(5, 60);
        let width = span / buckets as f64;
        let mut counts = vec![0u64; buckets];
        ledger.for_each_completion(run.id, |s, state| {
            if state != "retried" {
                let b = ((s / width) as usize).min(buckets - 1);
                counts[b] += 1;
            }
        })?;
        let pts = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| ((i as f64 + 0.5) * width, c as f64 / width))
            .collect();
        throughput.push(RunRate {
            id: run.id,
            span_s: span,
            points: pts,
        });
    }
    let keep = SLOWEST.max(gallery);
    let mut f = Facts {
        runs,
        throughput,
        items: 0,
        done: 0,
        failed: 0,
        running: 0,
        audio_s: 0.0,
        durations: LogHist::default(),
        processing: LogHist::default(),
        kinds: BTreeMap::new(),
        slowest: Vec::new(),
        recent_failed: Vec::new(),
        first_done: Vec::new(),
    };
    let mut heap: BinaryHeap<std::cmp::Reverse<Slow>> = BinaryHeap::new();
    let mut failed_heap: BinaryHeap<std::cmp::Reverse<(i64, String)>> = BinaryHeap::new();
    let mut failed_items: BTreeMap<String, ItemFacts> = BTreeMap::new();
    ledger.for_each_item(|it| {
        f.items += 1;
        match it.state.as_str() {
            "done" => {
                f.done += 1;
                if let Some(d) = it.duration_s {
                    f.audio_s += d;
                    f.durations.add(d);
                }
                let ms = it.total_ms();
                f.processing.add(ms);
                if f.first_done.len() < gallery {
                    f.first_done.push(it.clone());
                }
                heap.push(std::cmp::Reverse(Slow(ms, it)));
                if heap.len() > keep {
                    heap.pop();
                }
            }
            "failed" => {
                f.failed += 1;
                let kind = it.error_kind.clone().unwrap_or_else(|| "unknown".into());
                let k = f.kinds.entry(kind).or_default();
                k.count += 1;
                if k.examples.len() < MESSAGES_PER_KIND {
                    k.examples.push(Failure {
                        element: it.element.clone(),
                        message: it.error_message.clone().unwrap_or_default(),
                    });
                }
                // The most recent failures (by run) go first in the gallery.
                failed_heap.push(std::cmp::Reverse((
                    it.run_id.unwrap_or(0),
                    it.element.clone(),
                )));
                failed_items.insert(it.element.clone(), it);
                if failed_heap.len() > FAILED_CARDS.min(gallery / 2) {
                    if let Some(std::cmp::Reverse((_, e))) = failed_heap.pop() {
                        failed_items.remove(&e);
                    }
                }
            }
            _ => f.running += 1,
        }
    })?;
    let mut slow: Vec<Slow> = heap.into_iter().map(|r| r.0).collect();
    slow.sort_by(|a, b| b.cmp(a));
    f.slowest = slow.into_iter().map(|s| s.1).collect();
    let mut recent: Vec<(i64, String)> = failed_heap.into_iter().map(|r| r.0).collect();
    recent.sort_by(|a, b| b.cmp(a));
    f.recent_failed = recent
        .into_iter()
        .filter_map(|(_, e)| failed_items.remove(&e))
        .collect();
    Ok(f)
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Shell-quotes an argument when it needs it.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn duration_text(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.2} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.2} s")
    }
}

fn stage_colour(name: &str, others: &mut Vec<String>) -> RGBColor {
    if let Some(i) = STAGES.iter().position(|s| *s == name) {
        return PALETTE[i];
    }
    let i = match others.iter().position(|o| o == name) {
        Some(i) => i,
        None => {
            others.push(name.to_string());
            others.len() - 1
        }
    };
    PALETTE[(STAGES.len() + i) % PALETTE.len()]
}

fn svg_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("chart failed: {e}")
}

/// The series' legend, top right, as every chart here draws it.
fn legend<'a, X, Y>(chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>) -> Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .label_font(LABELS)
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(svg_err)
}

/// Stage seconds per run as stacked horizontal bars.
fn stages_svg(runs: &[RunTimes]) -> Result<String> {
    let mut svg = String::new();
    let n = runs.len();
    let mut names: Vec<String> = Vec::new();
    for s in STAGES {
        if runs.iter().any(|r| r.stage_ms.iter().any(|x| x.0 == s)) {
            names.push(s.to_string());
        }
    }
    for r in runs {
        for (s, _) in &r.stage_ms {
            if !names.contains(s) {
                names.push(s.clone());
            }
        }
    }
    // Tall enough for the bars and for the legend (one line per stage).
    let h = (120 + 40 * n as u32).max(80 + 24 * names.len() as u32);
    {
        let root = SVGBackend::with_string(&mut svg, (900, h)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_err)?;
        let max = runs
            .iter()
            .map(|r| r.stage_ms.iter().map(|s| s.1).sum::<f64>() / 1e3)
            .fold(0.0, f64::max)
            .max(1e-3);
        let points: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
        let labels: Vec<String> = runs.iter().map(|r| format!("run {}", r.id)).collect();
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(
                0f64..max * 1.3,
                super::render::Ticks::new(0.0, n as f64, points),
            )
            .map_err(svg_err)?;
        let fmt = |v: &f64| labels.get(v.floor() as usize).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .label_style(LABELS)
            .axis_desc_style(LABELS)
            .disable_y_mesh()
            .light_line_style(RGBColor(240, 240, 240))
            .x_desc("stage time summed over the run's items (s)")
            .y_label_formatter(&fmt)
            .draw()
            .map_err(svg_err)?;
        let mut others = Vec::new();
        let mut start = vec![0f64; n];
        for name in &names {
            let colour = stage_colour(name, &mut others);
            let bars: Vec<Rectangle<(f64, f64)>> = runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let ms = r.stage_ms.iter().find(|x| &x.0 == name)?.1;
                    let a = start[i];
                    start[i] += ms / 1e3;
                    Some(Rectangle::new(
                        [(a, i as f64 + 0.2), (start[i], i as f64 + 0.8)],
                        colour.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(svg_err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled())
                });
        }
        legend(&mut chart)?;
        root.present().map_err(svg_err)?;
    }
    Ok(svg)
}

/// Items finished per second over each run.
fn throughput_svg(series: &[RunRate]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_err)?;
        let xmax = series
            .iter()
            .map(|s| s.span_s)
            .fold(0.0, f64::max)
            .max(1e-3);
        let ymax = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            .max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.1)
            .map_err(svg_err)?;
        chart
            .configure_mesh()
            .label_style(LABELS)
            .axis_desc_style(LABELS)
            .light_line_style(RGBColor(240, 240, 240))
            .x_desc("seconds since the run started")
            .y_desc("items finished per second")
            .draw()
            .map_err(svg_err)?;
        for (i, run) in series.iter().enumerate() {
            let (id, pts) = (run.id, &run.points);
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                .map_err(svg_err)?
                .label(format!("run {id}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        legend(&mut chart)?;
        root.present().map_err(svg_err)?;
    }
    Ok(svg)
}

/// A log-binned histogram.
fn hist_svg(h: &LogHist, x_desc: &str, colour: RGBColor) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (440, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_err)?;
        let (lo, hi) = match (h.bins.keys().next(), h.bins.keys().last()) {
            (Some(&a), Some(&b)) => (LogHist::edge(a), LogHist::edge(b + 1)),
            _ => (1.0, 10.0),
        };
        let ymax = h.bins.values().copied().max().unwrap_or(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..ymax * 1.1)
            .map_err(svg_err)?;
        chart
            .configure_mesh()
            .label_style(LABELS)
            .axis_desc_style(LABELS)
            .light_line_style(RGBColor(240, 240, 240))
            .x_desc(x_desc)
            .y_desc("items")
            .x_labels(6)
            .x_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .y_label_formatter(&|v| {
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(svg_err)?;
        chart
            .draw_series(h.bins.iter().map(|(&b, &c)| {
                Rectangle::new(
                    [(LogHist::edge(b), 0.0), (LogHist::edge(b + 1), c as f64)],
                    colour.mix(0.85).filled(),
                )
            }))
            .map_err(svg_err)?;
        root.present().map_err(svg_err)?;
    }
    Ok(svg)
}

/// How the gallery links a full-size picture.
pub enum Links<'a> {
    /// A file in a folder beside the page: `(folder name as linked, folder path)`.
    Folder(&'a str, &'a Path),
    /// A URL prefix (`serve`): the element id is appended, then `.png`.
    Url(&'a str),
}

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#f6f6f7}
header{background:#1f2933;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cbd2d9;font-size:13px}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border-radius:8px;padding:14px 20px;margin:16px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:2px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e4e7eb;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}.card span{font-size:12px;color:#616e7c}
table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border-bottom:1px solid #e4e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{color:#52606d;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f0f4f8;padding:8px 10px;border-radius:4px;white-space:pre-wrap;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:16px}svg{max-width:100%;height:auto}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.thumb{border:1px solid #e4e7eb;border-radius:6px;padding:6px;font-size:12px;overflow:hidden}
.thumb img{display:block;width:100%;height:auto;image-rendering:auto}
.thumb.failed{background:#fff5f5;border-color:#f8b4b4}
.thumb .name{font-family:ui-monospace,Menlo,monospace;word-break:break-all}
.muted{color:#7b8794}.kind{color:#b91c1c;font-weight:600}
";

/// Builds the page. `links` says where full-size pictures are; `pictures` receives each
/// gallery item's full-size PNG when the caller stores them (the file report), or `None`.
///
/// # Errors
/// The ledger cannot be read, or a chart cannot be drawn.
pub fn page(
    req: &ReportRequest,
    stores: Arc<Stores>,
    links: &Links<'_>,
    mut pictures: Option<SavePicture<'_>>,
) -> Result<String> {
    super::fonts();
    let ledger = Ledger::open_read_only(&req.ledger)?;
    let facts = gather(&ledger, req.items)?;
    let made = ledger.now_utc()?;
    drop(ledger);
    let outputs = Outputs::open(&req.out, stores.clone()).ok();
    let mut h = String::with_capacity(1 << 20);
    let title = format!("klio-edge report: {}", req.out);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>{}</title><style>{CSS}</style></head><body><header><h1>{}</h1>\
         <p>ledger {} · klio-edge {} · made {}</p></header><main>",
        esc(&title),
        esc(&title),
        esc(&req.ledger.display().to_string()),
        env!("CARGO_PKG_VERSION"),
        esc(&made),
    );

    // Totals.
    let wall: f64 = facts.runs.iter().map(|r| r.wall_s).sum();
    let skipped: i64 = facts.runs.iter().map(|r| r.skipped).sum();
    let rtf = if wall > 0.0 {
        facts.audio_s / wall
    } else {
        0.0
    };
    let _ = write!(
        h,
        "<section id=\"totals\"><h2>Totals</h2><div class=\"cards\">"
    );
    for (v, label) in [
        (facts.done.to_string(), "items done"),
        (skipped.to_string(), "skipped (already done)"),
        (facts.failed.to_string(), "failed"),
        (
            format!("{:.2}", facts.audio_s / 3600.0),
            "hours of audio (done items)",
        ),
        (duration_text(wall), "wall time (runs shown)"),
        (format!("{rtf:.0}x"), "realtime factor (runs shown)"),
        (facts.runs.len().to_string(), "runs shown"),
    ] {
        let _ = write!(
            h,
            "<div class=\"card\"><b>{}</b><span>{}</span></div>",
            esc(&v),
            label
        );
    }
    if facts.running > 0 {
        let _ = write!(
            h,
            "<div class=\"card\"><b>{}</b><span>running</span></div>",
            facts.running
        );
    }
    let _ = write!(h, "</div>");
    if !facts.runs.is_empty() {
        let _ = write!(
            h,
            "<table><tr><th>run</th><th>started (UTC)</th><th>wall</th><th>done</th>\
             <th>skipped</th><th>failed</th><th>command</th></tr>"
        );
        for r in &facts.runs {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td><code>{}</code></td></tr>",
                r.id,
                esc(&r.started_at),
                duration_text(r.wall_s),
                if r.finished { "" } else { " (unfinished)" },
                r.done,
                r.skipped,
                r.failed,
                esc(&r.command)
            );
        }
        let _ = write!(h, "</table>");
    }
    let _ = write!(h, "</section>");

    // Where the time went.
    let _ = write!(
        h,
        "<section id=\"stages\"><h2>Where the time went</h2><p class=\"muted\">Each stage's \
         time summed over the run's items (items run in parallel, so the sum can exceed the \
         wall time).</p>"
    );
    if facts.runs.is_empty() {
        let _ = write!(h, "<p>No runs yet.</p>");
    } else {
        h.push_str(&stages_svg(&facts.runs)?);
    }
    let _ = write!(h, "</section>");

    let _ = write!(h, "<section id=\"throughput\"><h2>Throughput</h2>");
    if facts.throughput.is_empty() {
        let _ = write!(h, "<p>No runs yet.</p>");
    } else {
        h.push_str(&throughput_svg(&facts.throughput)?);
    }
    let _ = write!(h, "</section>");

    let _ = write!(
        h,
        "<section id=\"distributions\"><h2>Distributions</h2><div class=\"charts\">"
    );
    h.push_str(&hist_svg(
        &facts.durations,
        "item duration (s, audio)",
        PALETTE[0],
    )?);
    h.push_str(&hist_svg(
        &facts.processing,
        "processing time per item (ms)",
        PALETTE[1],
    )?);
    let _ = write!(h, "</div></section>");

    // Failures.
    let _ = write!(h, "<section id=\"failures\"><h2>Failures</h2>");
    if facts.kinds.is_empty() {
        let _ = write!(h, "<p>No failed items.</p>");
    } else {
        let ledger_arg = sh(&req.ledger.display().to_string());
        let mut kinds: Vec<(&String, &Kind)> = facts.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        // The newest run's own command line runs the retried items again.
        let rerun = facts
            .runs
            .first()
            .map(|r| format!("\n{}", r.command))
            .unwrap_or_default();
        for (kind, k) in kinds {
            let _ = write!(
                h,
                "<h3><span class=\"kind\">{}</span> · {} item{}</h3><table><tr><th>element</th>\
                 <th>message</th></tr>",
                esc(kind),
                k.count,
                if k.count == 1 { "" } else { "s" }
            );
            for e in &k.examples {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td></tr>",
                    esc(&e.element),
                    esc(&e.message)
                );
            }
            if k.count as usize > k.examples.len() {
                let _ = write!(
                    h,
                    "<tr><td colspan=\"2\" class=\"muted\">and {} more: <code>klio-edge ledger \
                     failed --ledger {}</code></td></tr>",
                    k.count as usize - k.examples.len(),
                    esc(&ledger_arg)
                );
            }
            let _ = write!(
                h,
                "</table><p>Retry them (after fixing the cause), then run again:</p>\
                 <pre>klio-edge ledger retry --ledger {} --kind {}{}</pre>",
                esc(&ledger_arg),
                esc(&sh(kind)),
                esc(&rerun)
            );
        }
    }
    let _ = write!(h, "</section>");

    // Slowest items.
    let link = |e: &str| match links {
        Links::Folder(name, _) => format!("{}/{}.png", url_path(name), url_path(e)),
        Links::Url(prefix) => format!("{prefix}{}.png", url_path(e)),
    };
    let _ = write!(h, "<section id=\"slowest\"><h2>Slowest items</h2>");
    if facts.slowest.is_empty() {
        let _ = write!(h, "<p>No done items.</p>");
    } else {
        let _ = write!(
            h,
            "<table><tr><th>element</th><th>processing</th><th>audio</th><th>x realtime</th>\
             <th>stages (ms)</th></tr>"
        );
        for it in facts.slowest.iter().take(SLOWEST) {
            let ms = it.total_ms();
            let d = it.duration_s.unwrap_or(0.0);
            let stages: Vec<String> = it
                .stage_ms
                .iter()
                .map(|(s, v)| format!("{s} {v:.1}"))
                .collect();
            let _ = write!(
                h,
                "<tr><td><code>{}</code><br><span class=\"muted\">{}</span></td>\
                 <td class=\"n\">{:.1} ms</td><td class=\"n\">{}</td><td class=\"n\">{:.0}x</td>\
                 <td>{}</td></tr>",
                esc(&it.element),
                esc(&it.source),
                ms,
                duration_text(d),
                if ms > 0.0 { d * 1e3 / ms } else { 0.0 },
                esc(&stages.join(", "))
            );
        }
        let _ = write!(h, "</table>");
    }
    let _ = write!(h, "</section>");

    // Gallery: failed first, then the slowest, then the rest in element order.
    let gallery_at = h.len();
    let mut shown = std::collections::BTreeSet::new();
    let mut cards = 0usize;
    for it in &facts.recent_failed {
        if cards >= req.items {
            break;
        }
        shown.insert(it.element.clone());
        cards += 1;
        let _ = write!(
            h,
            "<div class=\"thumb failed\"><div class=\"name\">{}</div><div class=\"kind\">{}</div>\
             <div>{}</div></div>",
            esc(&it.element),
            esc(it.error_kind.as_deref().unwrap_or("failed")),
            esc(it.error_message.as_deref().unwrap_or(""))
        );
    }
    let thumb_opts = FigureOptions {
        width: THUMB.0,
        height: THUMB.1,
        ..FigureOptions::default()
    };
    let full_opts = FigureOptions::default();
    for it in facts.slowest.iter().chain(facts.first_done.iter()) {
        if cards >= req.items {
            break;
        }
        if !shown.insert(it.element.clone()) {
            continue;
        }
        cards += 1;
        let drawn = outputs.as_ref().map_or_else(
            || Err(anyhow!("the output folder {} cannot be opened", req.out)),
            |o| {
                let fig = from_item(o, &it.element, req.feature.as_deref(), &thumb_opts, &stores)?;
                let thumb = render_png(&fig, &thumb_opts)?;
                if let Some(save) = pictures.as_mut() {
                    let full = render_png(&fig, &full_opts)?;
                    save(&it.element, &full.png)?;
                }
                Ok((fig.feature, thumb.png))
            },
        );
        match drawn {
            Ok((feature, png)) => {
                let _ = write!(
                    h,
                    "<div class=\"thumb\"><a href=\"{}\"><img alt=\"{} of {}\" width=\"{}\" \
                     height=\"{}\" src=\"data:image/png;base64,{}\"></a><div class=\"name\">{}</div>\
                     <div class=\"muted\">{} · {} · {:.1} ms</div></div>",
                    esc(&link(&it.element)),
                    esc(&feature),
                    esc(&it.element),
                    THUMB.0,
                    THUMB.1,
                    base64::engine::general_purpose::STANDARD.encode(&png),
                    esc(&it.element),
                    esc(&feature),
                    duration_text(it.duration_s.unwrap_or(0.0)),
                    it.total_ms()
                );
            }
            Err(e) => {
                let _ = write!(
                    h,
                    "<div class=\"thumb\"><div class=\"name\">{}</div><div class=\"muted\">no \
                     picture: {}</div></div>",
                    esc(&it.element),
                    esc(&crate::term::error_text(&e))
                );
            }
        }
    }
    let head = format!(
        "<section id=\"gallery\"><h2>Gallery</h2><p class=\"muted\">{cards} item(s): failed \
         first, then the slowest; click a picture for the full size.</p><div class=\"gallery\">"
    );
    h.insert_str(gallery_at, &head);
    if cards == 0 {
        let _ = write!(h, "<p>No items.</p>");
    }
    let _ = writeln!(h, "</div></section></main></body></html>");
    Ok(h)
}

/// Percent-encodes what a URL path segment cannot hold (element ids are file-name safe, but
/// a `.npy` folder name need not be).
fn url_path(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// Writes the page to `to` and the gallery's full-size pictures to `<stem>_files/` beside it
/// (both atomically; the folder's earlier pictures are replaced).
///
/// # Errors
/// The ledger cannot be read, or the files cannot be written.
pub fn write(req: &ReportRequest, to: &Path, stores: Arc<Stores>) -> Result<Written> {
    let stem = to
        .file_stem()
        .with_context(|| format!("--to {} is not a file name", to.display()))?
        .to_string_lossy()
        .into_owned();
    let dir_name = format!("{stem}_files");
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        anyhow::bail!(
            "cannot write {}: no folder {}",
            to.display(),
            parent.display()
        );
    }
    let dir = parent.join(&dir_name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut count = 0usize;
    let mut save = |element: &str, png: &[u8]| -> Result<()> {
        count += 1;
        super::write_atomic(&dir.join(format!("{element}.png")), png)
    };
    let html = page(
        req,
        stores,
        &Links::Folder(&dir_name, &dir),
        Some(&mut save),
    )?;
    super::write_atomic(to, html.as_bytes())?;
    Ok(Written {
        pictures: count,
        pictures_dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_arguments_quoted() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(sh("decode_error"), "decode_error");
        assert_eq!(sh("my ledger.sqlite"), "'my ledger.sqlite'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(url_path("a b/c#d"), "a%20b/c%23d");
    }

    #[test]
    fn log_bins_cover_their_values() {
        let mut h = LogHist::default();
        for v in [0.5, 1.0, 9.9, 10.0, 3600.0, 0.0, -1.0, f64::NAN] {
            h.add(v);
        }
        assert_eq!(h.n, 5);
        for &b in h.bins.keys() {
            assert!(LogHist::edge(b) < LogHist::edge(b + 1));
        }
        let b = (3600f64.log10() * LogHist::PER_DECADE).floor() as i32;
        assert!(LogHist::edge(b) <= 3600.0 && 3600.0 < LogHist::edge(b + 1));
    }
}
