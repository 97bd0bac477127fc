//! `klio-edge plot` and `klio-edge report` looked at as a person would. The pictures are
//! right, not just present: a 1 kHz sine's brightest row is at 1 kHz, a chirp's ridge rises,
//! silence is uniformly dark, a VAD strip shows where the speech is. The report (the file, and
//! `serve`'s `/`) is opened in headless Chromium by tests/it/browser_check.py (Selenium, in
//! the venv scripts/test.sh makes: $KLIO_BROWSER_PYTHON): every image decoded, no console
//! errors, every section there, a screenshot that is not blank.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::serve::{free_port, http_get_bytes, spawn_args, wait_for};
use crate::common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A decoded RGB picture.
struct Png {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Png {
    fn read(path: &Path) -> Png {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        let ch = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            c => panic!("{}: colour type {c:?}", path.display()),
        };
        let (w, h) = (info.width as usize, info.height as usize);
        let rgb = buf[..w * h * ch]
            .chunks_exact(ch)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        Png { w, h, rgb }
    }
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
    fn luma(&self, x: usize, y: usize) -> f64 {
        let [r, g, b] = self.px(x, y);
        0.2126 * r as f64 + 0.7152 * g as f64 + 0.0722 * b as f64
    }
}

fn tone(path: &Path, secs: f64, f: impl Fn(f64) -> f64) {
    let rate = 22050;
    let n = (secs * rate as f64) as usize;
    let s: Vec<f64> = (0..n).map(|i| f(i as f64 / rate as f64)).collect();
    std::fs::write(path, wav::pcm(&s, rate, 16)).unwrap();
}

/// `plot ... --json`: the summary, after checking the PNG is the size it says.
fn plot(dir: &Path, args: &[&str]) -> (serde_json::Value, Png) {
    let mut all = vec!["plot", "--out", "out", "--json"];
    all.extend_from_slice(args);
    let o = klio(dir, &all);
    assert_eq!(o.status.code(), Some(0), "plot {args:?}: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let png = Png::read(&dir.join(v["to"].as_str().unwrap()));
    assert_eq!(
        (png.w as u64, png.h as u64),
        (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
    );
    (v, png)
}

fn panel(v: &serde_json::Value) -> [usize; 4] {
    let p = &v["panels"][0];
    [0, 1, 2, 3].map(|i| p[i].as_u64().unwrap() as usize)
}

/// The frequency (Hz) a pixel row of the panel shows: rows are bands of equal height, bottom
/// first, each at its centre frequency.
fn row_hz(v: &serde_json::Value, y: usize) -> f64 {
    let [_, y0, _, y1] = panel(v);
    let rows = v["rows"].as_array().unwrap();
    let band = ((y1 - y) as f64 - 0.5) / (y1 - y0) as f64 * rows.len() as f64;
    rows[(band as usize).min(rows.len() - 1)].as_f64().unwrap()
}

/// The brightest pixel row of the panel over columns x0..x1.
fn brightest_row(png: &Png, v: &serde_json::Value, xs: std::ops::Range<usize>) -> usize {
    let [_, y0, _, y1] = panel(v);
    (y0..y1)
        .max_by(|&a, &b| {
            let la: f64 = xs.clone().map(|x| png.luma(x, a)).sum();
            let lb: f64 = xs.clone().map(|x| png.luma(x, b)).sum();
            la.total_cmp(&lb)
        })
        .unwrap()
}

fn element_of(dir: &Path, stem: &str) -> String {
    item_dirs(&dir.join("out"))
        .into_iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .find(|n| n.starts_with(stem))
        .unwrap_or_else(|| panic!("no item {stem}"))
}

#[test]
fn spectrograms_show_the_sine_where_it_is_the_chirp_rising_and_silence_dark() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("in")).unwrap();
    tone(&dir.join("in/sine.wav"), 3.0, |t| {
        0.5 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()
    });
    // Linear chirp 200 Hz -> 6 kHz over 4 s: phase 2 pi (f0 t + k t^2 / 2).
    let (f0, f1, len) = (200.0, 6000.0, 4.0);
    tone(&dir.join("in/chirp.wav"), len, |t| {
        0.5 * (2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) / len * t * t / 2.0)).sin()
    });
    tone(&dir.join("in/silence.wav"), 2.0, |_| 0.0);
    let (code, _) = process(
        dir,
        &[
            "in",
            "--out",
            "out",
            "--set",
            r#"features.compute=["log_mel","mfcc","rms"]"#,
        ],
    );
    assert_eq!(code, 0);

    // The sine: the brightest row is the band nearest 1 kHz (or its neighbour).
    let sine = element_of(dir, "sine-");
    let (v, png) = plot(dir, &[&sine, "--to", "sine.png"]);
    assert_eq!(v["feature"], "log_mel");
    assert_eq!(v["rows_unit"], "hz");
    assert_eq!(v["scale_unit"], "dB");
    let [x0, _, x1, _] = panel(&v);
    let hz = row_hz(&v, brightest_row(&png, &v, x0 + 10..x1 - 10));
    let rows: Vec<f64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    let k = rows.partition_point(|&c| c < 1000.0);
    let (lo, hi) = (rows[k.saturating_sub(2)], rows[(k + 1).min(rows.len() - 1)]);
    assert!(
        lo <= hz && hz <= hi,
        "sine's brightest row at {hz} Hz, not 1 kHz ({lo}..{hi})"
    );

    // The chirp: the ridge rises; at a quarter, half and three quarters of the time it is
    // within 15% of the chirp's frequency.
    let chirp = element_of(dir, "chirp-");
    let (v, png) = plot(dir, &[&chirp, "--to", "chirp.png"]);
    let [x0, _, x1, _] = panel(&v);
    let mut last = 0.0;
    for q in [0.25, 0.5, 0.75] {
        let x = x0 + ((x1 - x0) as f64 * q) as usize;
        let hz = row_hz(&v, brightest_row(&png, &v, x - 2..x + 3));
        let t = q * v["seconds_per_frame"].as_f64().unwrap() * v["shape"][1].as_f64().unwrap();
        let want = f0 + (f1 - f0) * t / len;
        assert!(
            (hz / want - 1.0).abs() < 0.15,
            "chirp at {t:.2} s: ridge at {hz} Hz, not {want}"
        );
        assert!(hz > last, "the ridge does not rise: {hz} after {last}");
        last = hz;
    }

    // Silence: one colour over the whole panel, and a dark one.
    let silence = element_of(dir, "silence-");
    let (v, png) = plot(dir, &[&silence, "--to", "silence.png"]);
    let [x0, y0, x1, y1] = panel(&v);
    let first = png.px(x0 + 1, y0 + 1);
    for y in y0 + 1..y1 - 1 {
        for x in x0 + 1..x1 - 1 {
            assert_eq!(png.px(x, y), first, "silence is not uniform at ({x}, {y})");
        }
    }
    assert!(
        png.luma(x0 + 1, y0 + 1) < 60.0,
        "silence is drawn bright: {first:?}"
    );

    // MFCC by coefficient, rms and the waveform as lines, a .npy on its own.
    let (v, _) = plot(dir, &[&sine, "--feature", "mfcc", "--to", "mfcc.png"]);
    assert_eq!(
        (v["rows_unit"].as_str(), v["rows"].as_array().unwrap().len()),
        (Some("coefficient"), 20)
    );
    for feature in ["rms", "waveform"] {
        let (v, png) = plot(dir, &[&sine, "--feature", feature, "--to", "line.png"]);
        assert_eq!(v["rows_unit"], "none");
        // The line (matplotlib's blue) crosses the panel: most columns have a blue pixel.
        let [x0, y0, x1, y1] = panel(&v);
        let blue = (x0..x1)
            .filter(|&x| {
                (y0..y1).any(|y| {
                    let [r, _, b] = png.px(x, y);
                    i32::from(b) - i32::from(r) > 60
                })
            })
            .count();
        assert!(
            blue > (x1 - x0) * 9 / 10,
            "{feature}: line in {blue} of {} columns",
            x1 - x0
        );
    }
    let npy = dir.join("out").join(&sine).join("log_mel.npy");
    let (v, _) = plot(dir, &[npy.to_str().unwrap(), "--to", "npy.png"]);
    assert_eq!(
        v["rows_unit"], "hz",
        "the meta.json beside the .npy gives the axes"
    );

    // What cannot be drawn is an error (exit 2) that says why.
    for (args, says) in [
        (
            vec!["plot", "--out", "out", "nope", "--to", "x.png"],
            "no item",
        ),
        (
            vec![
                "plot",
                "--out",
                "out",
                &sine,
                "--feature",
                "fbank",
                "--to",
                "x.png",
            ],
            "has no feature",
        ),
        (
            vec!["plot", "--out", "out", &sine, "--to", "missing/x.png"],
            "no folder",
        ),
        (
            vec!["plot", "--out", "out", "in/sine.wav", "--to", "x.png"],
            "no item",
        ),
    ] {
        let o = klio(dir, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    std::fs::write(dir.join("bad.npy"), b"\x93NUMPY\x01\x00garbage").unwrap();
    let o = klio(dir, &["plot", "bad.npy", "--to", "x.png"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!dir.join("x.png").exists());
}

#[test]
fn a_vad_strip_shows_the_speech() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = root().join("models/silero_vad_openvino_16k.onnx");
    std::fs::write(
        dir.join("vad.toml"),
        format!(
            "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = [\"log_mel\"]\n\
             n_fft = 400\nhop_length = 160\nn_mels = 80\n\
             [[model]]\nname = \"vad\"\npath = \"{}\"\n\
             sha256 = \"7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87\"\n\
             backend = \"tract\"\nsample_rate_hz = 16000\nwindow_samples = 512\n\
             context_samples = 64\nstate = {{ shape = [2, 1, 128] }}\noutput = \"segments\"\n",
            model.display()
        ),
    )
    .unwrap();
    let speech = real("wav_s16_16k_mono_asterisk-demo-congrats-g722dec.wav");
    let (code, _) = process(
        dir,
        &[
            "--config",
            "vad.toml",
            speech.to_str().unwrap(),
            "--out",
            "out",
        ],
    );
    assert_eq!(code, 0);
    let el = element_of(dir, "wav_s16_16k_mono_asterisk-demo-congrats");
    let (v, png) = plot(dir, &[&el, "--to", "vad.png"]);
    // Below the panel and its x axis: the strip, orange where vad.json has speech and grey in
    // the pauses, on the panel's time axis (columns 2 px inside a segment's edges or further).
    let [x0, _, x1, y1] = panel(&v);
    let y = (y1 + 40..png.h)
        .find(|&y| (x0..x1).any(|x| png.px(x, y) == [230, 97, 1]))
        .expect("a VAD strip under the panel");
    let x_len = v["seconds_per_frame"].as_f64().unwrap() * v["shape"][1].as_f64().unwrap();
    let col = |t: f64| x0 as f64 + t / x_len * (x1 - x0) as f64;
    let segs: Vec<(f64, f64)> = read_json(&dir.join("out").join(&el).join("vad.json"))["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                col(s["start"].as_f64().unwrap()),
                col(s["end"].as_f64().unwrap()),
            )
        })
        .collect();
    assert!(segs.len() >= 2, "{segs:?}");
    let (mut speech, mut pause) = (0, 0);
    // (The strip's own chart may end a pixel before the panel's: its edge columns are left.)
    for x in x0 + 2..x1 - 2 {
        let xf = x as f64 + 0.5;
        let inside = segs.iter().any(|&(a, b)| xf > a + 2.0 && xf < b - 2.0);
        let outside = segs.iter().all(|&(a, b)| xf < a - 2.0 || xf > b + 2.0);
        let p = png.px(x, y);
        if inside {
            assert_eq!(p, [230, 97, 1], "column {x} is in a speech segment");
            speech += 1;
        } else if outside {
            assert_eq!(p, [232, 232, 232], "column {x} is in a pause");
            pause += 1;
        }
    }
    assert!(
        speech > 300 && pause >= 5,
        "{speech} speech, {pause} pause columns"
    );
}

/// The venv Python with Selenium. Missing is a failure, never a skip.
fn browser_python() -> PathBuf {
    let p = std::env::var_os("KLIO_BROWSER_PYTHON")
        .map(PathBuf::from)
        .expect(
            "KLIO_BROWSER_PYTHON must name a Python with selenium: run the tests through \
         scripts/test.sh (it installs chromium and chromium-driver and makes target/py-browser)",
        );
    assert!(
        p.is_file(),
        "KLIO_BROWSER_PYTHON={} is not a file",
        p.display()
    );
    p
}

/// Opens each URL in headless Chromium; what it saw, per page.
fn look(dir: &Path, urls: &[String]) -> Vec<serde_json::Value> {
    let shots = dir.join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let o = Command::new(browser_python())
        .arg(root().join("tests/it/browser_check.py"))
        .arg(&shots)
        .args(urls)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "browser_check.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// What a person would see on the page: all of it.
fn check_page(page: &serde_json::Value, thumbnails: usize) {
    let url = page["url"].as_str().unwrap();
    let images = page["images"].as_array().unwrap();
    assert_eq!(images.len(), thumbnails, "{url}: images");
    for i in images {
        assert!(
            i["naturalWidth"].as_u64().unwrap() > 0,
            "{url}: an image did not decode: {i}"
        );
    }
    assert_eq!(
        page["console"].as_array().unwrap().len(),
        0,
        "{url}: console: {}",
        page["console"]
    );
    let sections: Vec<&str> = page["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        sections,
        [
            "totals",
            "stages",
            "throughput",
            "distributions",
            "failures",
            "slowest",
            "gallery"
        ],
        "{url}"
    );
    // Four charts, each with its axis text.
    let svgs = page["svgs"].as_array().unwrap();
    assert_eq!(svgs.len(), 4, "{url}: charts");
    for s in svgs {
        assert!(
            s["w"].as_f64().unwrap() > 200.0 && s["texts"].as_u64().unwrap() >= 5,
            "{url}: {s}"
        );
    }
    // The screenshots are pictures of something: many colours, mostly not the background.
    for key in ["screenshot", "gallery_screenshot"] {
        let png = Png::read(Path::new(page[key].as_str().unwrap()));
        let bg = png.px(png.w - 3, png.h / 2);
        let mut colours = std::collections::HashSet::new();
        let mut other = 0usize;
        for y in (0..png.h).step_by(3) {
            for x in (0..png.w).step_by(3) {
                let p = png.px(x, y);
                colours.insert(p);
                other += usize::from(p != bg);
            }
        }
        let share = other as f64 / ((png.w / 3) * (png.h / 3)) as f64;
        assert!(
            colours.len() > 200 && share > 0.3,
            "{url} {key}: {} colours, {share:.2} not background",
            colours.len()
        );
    }
}

#[test]
fn the_report_and_the_serve_page_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let real_dir = corpus().join("real");
    let bad = corpus().join("bad");
    let (code, summary) = process(
        dir,
        &[
            real_dir.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--out",
            "out",
        ],
    );
    assert_eq!(code, 1, "the bad files fail");
    let failed = count(&summary, "failed") as usize;
    assert!(failed >= 4);

    // The file: 8 gallery cards, 4 of them failures (at most half), 4 pictures.
    let report = [
        "report",
        "--out",
        "out",
        "--to",
        "site/report.html",
        "--items",
        "8",
    ];
    let o = klio(dir, &report);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a missing folder for --to is refused"
    );
    std::fs::create_dir(dir.join("site")).unwrap();
    let o = klio(dir, &report);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.join("site/report.html")).unwrap();
    // Self-contained: no script, no stylesheet or font fetched, every src a data: URL, every
    // link a picture beside the page (SVG's xmlns is a name, not an address).
    assert!(!html.contains("<script") && !html.contains("@import") && !html.contains("url("));
    for attr in ["src=\"", "href=\""] {
        for v in html.split(attr).skip(1).map(|s| &s[..s.find('"').unwrap()]) {
            assert!(
                v.starts_with("data:") || v.starts_with("report_files/"),
                "{attr}{v}"
            );
        }
    }
    assert!(html.contains("klio-edge ledger retry --ledger") && html.contains("--kind truncated"));
    // Every thumbnail links to a full-size picture beside the page.
    let links: Vec<&str> = html
        .split("<a href=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert_eq!(links.len(), 4, "{links:?}");
    for l in &links {
        assert!(l.starts_with("report_files/"), "{l}");
        let png = Png::read(&dir.join("site").join(l));
        assert!(png.w >= 1000, "{l} is full size");
    }

    // serve on the same folder: `/` is the same report, rendered on request.
    std::fs::create_dir(dir.join("inbox")).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("serve.toml"),
        format!("[serve]\nsource = \"inbox\"\nhttp = \"127.0.0.1:{port}\"\n[serve.inbox]\ndir = \"inbox\"\n"),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let args: Vec<String> = ["serve", "--config", "serve.toml", "--out", "out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut child = spawn_args(dir, &args, &[], &log);
    wait_for(Duration::from_secs(60), "serve's HTTP endpoint", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (code, head, body) = http_get_bytes(port, "/");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    let page = String::from_utf8(body).unwrap();
    let first = page
        .split("<a href=\"")
        .nth(1)
        .map(|s| s[..s.find('"').unwrap()].to_string());
    let first = first.expect("the served gallery links pictures");
    let (code, head, png) = http_get_bytes(port, &first);
    assert_eq!(code, 200, "{first}: {head}");
    assert!(
        head.contains("image/png") && png.starts_with(b"\x89PNG"),
        "{head}"
    );
    // Only done items of the ledger: a failed one, a path around the check (it would name a
    // done item's folder) and anything else are 404.
    let done_el = first
        .trim_start_matches("/picture/")
        .trim_end_matches(".png");
    let failed_el = crate::common::ledger::in_state(&dir.join("out/klio-ledger.sqlite"), "failed")
        .into_iter()
        .next()
        .unwrap();
    let around = format!("/picture/..%2Fout%2F{done_el}.png");
    let failed_png = format!("/picture/{failed_el}.png");
    for bad_path in [
        "/picture/nope.png",
        "/picture/..%2Fklio-ledger.sqlite",
        "/picture/x",
        around.as_str(),
        failed_png.as_str(),
    ] {
        assert_eq!(http_get_bytes(port, bad_path).0, 404, "{bad_path}");
    }

    let pages = look(
        dir,
        &[
            format!("file://{}", dir.join("site/report.html").display()),
            format!("http://127.0.0.1:{port}/"),
        ],
    );
    let _ = child.kill();
    let _ = child.wait();
    check_page(&pages[0], 4);
    // The served gallery holds 24 cards: the failures (at most 12), then pictures.
    let done = count(&summary, "done") as usize;
    check_page(&pages[1], (24 - failed.min(12)).min(done));
}
