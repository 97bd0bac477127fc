//! The infer stage with tiny models (tests/fixtures/models, made by
//! scripts/make_tiny_models.py): state carried across chunks and reset per item, values that
//! match the PCM chunk by chunk (the last one zero-padded), NaN outputs and shapes the model
//! refuses failing their item with a clear kind. Each case runs on both backends (tract, and
//! ONNX Runtime through ORT_DYLIB_PATH, which scripts/test.sh sets).

use std::path::Path;

use crate::common::*;

const FILES: [&str; 2] = [
    "wav_s16_16k_mono_sound-icons-xylofon.wav",
    "wav_s16_16k_mono_asterisk-demo-congrats-g722dec.wav",
];

const BACKENDS: [&str; 2] = ["tract", "ort"];

fn config(dir: &Path, model: &str, extra: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(format!("{model}.onnx"));
    let body = format!(
        "[decode]\nsample_rate_hz = 16000\n\n[features]\ncompute = []\n\n[[model]]\nname = \"m\"\npath = {:?}\n{}{extra}",
        path.to_str().unwrap(),
        if extra.contains("output = ") { "" } else { "output = \"tensor\"\n" }
    );
    let backend = extra
        .lines()
        .find_map(|l| l.strip_prefix("backend = "))
        .unwrap_or("tract")
        .trim_matches('"');
    let p = dir.join(format!("{model}-{backend}.toml"));
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

/// The samples of a 16-bit PCM WAV, scaled to [-1, 1).
fn wav_samples(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        if &b[i..i + 4] == b"data" {
            return b[i + 8..i + 8 + len]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect();
        }
        i += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

fn run(dir: &Path, cfg: &str, out: &str) -> (i32, serde_json::Value) {
    let srcs: Vec<String> = FILES
        .iter()
        .map(|f| real(f).to_string_lossy().into_owned())
        .collect();
    let mut args: Vec<&str> = srcs.iter().map(String::as_str).collect();
    args.extend(["--config", cfg, "--out", out, "--jobs", "2"]);
    process(dir, &args)
}

#[test]
fn state_is_carried_across_chunks_and_reset_per_item() {
    let dir = tempfile::tempdir().unwrap();
    for b in BACKENDS {
        let extra = format!("backend = \"{b}\"\nstate = {{ shape = [1] }}\n");
        let cfg = config(dir.path(), "counter", &extra);
        let out = format!("out-{b}");
        let (code, s) = run(dir.path(), &cfg, &out);
        assert_eq!((code, count(&s, "done")), (0, 2), "{b}: {s}");
        for item in item_dirs(&dir.path().join(&out)) {
            let (_, v) = read_npy(&item.join("m.npy"));
            let want: Vec<f32> = (0..v.len()).map(|i| i as f32).collect();
            assert_eq!(v, want, "{b}: {}", item.display());
        }
    }
}

#[test]
fn values_follow_the_pcm_chunk_by_chunk() {
    let dir = tempfile::tempdir().unwrap();
    for b in BACKENDS {
        let cfg = config(dir.path(), "mean", &format!("backend = \"{b}\"\n"));
        let out = format!("out-{b}");
        let (code, s) = run(dir.path(), &cfg, &out);
        assert_eq!((code, count(&s, "done")), (0, 2), "{b}: {s}");
        for item in item_dirs(&dir.path().join(&out)) {
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(item.join("meta.json")).unwrap())
                    .unwrap();
            let pcm = wav_samples(Path::new(meta["source"].as_str().unwrap()));
            let (shape, v) = read_npy(&item.join("m.npy"));
            assert_eq!(shape, vec![pcm.len().div_ceil(512)]);
            for (i, got) in v.iter().enumerate() {
                let chunk = &pcm[i * 512..((i + 1) * 512).min(pcm.len())];
                let want = chunk.iter().map(|&x| x as f64).sum::<f64>() / 512.0;
                assert!(
                    (*got as f64 - want).abs() < 1e-5,
                    "{b}: chunk {i}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn nan_outputs_and_refused_shapes_fail_the_item_with_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    for (model, kind, b) in [
        ("nan", "model_non_finite", "tract"),
        ("narrow", "model_run", "tract"),
        ("nan", "model_non_finite", "ort"),
        ("narrow", "model_run", "ort"),
    ] {
        let cfg = config(dir.path(), model, &format!("backend = \"{b}\"\n"));
        let out = format!("out-{model}-{b}");
        let (code, s) = run(dir.path(), &cfg, &out);
        assert_eq!((code, count(&s, "failed")), (1, 2), "{model}: {s}");
        let o = klio(dir.path(), &["ledger", "failed", "--json", "--out", &out]);
        let failed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for f in failed.as_array().unwrap() {
            assert_eq!(f["error_kind"], kind, "{model}: {f}");
            assert!(
                f["error_message"].as_str().unwrap().contains("model m"),
                "{f}"
            );
        }
    }
}

#[test]
fn embedding_and_labels_pool_the_chunks_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "mean\nmax\nmin\n").unwrap();
    for b in BACKENDS {
        let emb = config(
            dir.path(),
            "stats",
            &format!("backend = \"{b}\"\noutput = \"embedding\"\n"),
        );
        let out = format!("emb-{b}");
        let (code, s) = run(dir.path(), &emb, &out);
        assert_eq!((code, count(&s, "done")), (0, 2), "{b}: {s}");
        for item in item_dirs(&dir.path().join(&out)) {
            let meta = read_json(&item.join("meta.json"));
            let pcm = wav_samples(Path::new(meta["source"].as_str().unwrap()));
            let chunks: Vec<Vec<f32>> = pcm
                .chunks(512)
                .map(|c| {
                    let mut c = c.to_vec();
                    c.resize(512, 0.0);
                    c
                })
                .collect();
            let n = chunks.len() as f64;
            let want = [
                chunks
                    .iter()
                    .map(|c| c.iter().map(|&x| x as f64).sum::<f64>() / 512.0)
                    .sum::<f64>()
                    / n,
                chunks
                    .iter()
                    .map(|c| c.iter().cloned().fold(f32::MIN, f32::max) as f64)
                    .sum::<f64>()
                    / n,
                chunks
                    .iter()
                    .map(|c| c.iter().cloned().fold(f32::MAX, f32::min) as f64)
                    .sum::<f64>()
                    / n,
            ];
            let (shape, v) = read_npy(&item.join("m.npy"));
            assert_eq!(shape, vec![3], "{b}");
            for (g, w) in v.iter().zip(want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{b}: {g} vs {w}");
            }
        }

        let lab = config(
            dir.path(),
            "stats",
            &format!(
                "backend = \"{b}\"\noutput = \"labels\"\ntop_k = 2\nlabels = {:?}\n",
                labels.to_str().unwrap()
            ),
        );
        let out = format!("lab-{b}");
        let (code, s) = run(dir.path(), &lab, &out);
        assert_eq!((code, count(&s, "done")), (0, 2), "{b}: {s}");
        for item in item_dirs(&dir.path().join(&out)) {
            let j = read_json(&item.join("m.json"));
            let got: Vec<&str> = j["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["label"].as_str().unwrap())
                .collect();
            // max >= mean >= min for any audio: the top two are max, then mean.
            assert_eq!(got, ["max", "mean"], "{b}: {j}");
            let (shape, scores) = read_npy(&item.join("m_scores.npy"));
            assert_eq!(shape, vec![3]);
            assert_eq!(j["labels"][0]["score"].as_f64().unwrap() as f32, scores[1]);
        }
    }
    // A labels file that does not match the model's outputs fails the item clearly.
    std::fs::write(&labels, "only\ntwo\n").unwrap();
    let lab = config(
        dir.path(),
        "stats",
        &format!(
            "output = \"labels\"\nlabels = {:?}\n",
            labels.to_str().unwrap()
        ),
    );
    let (code, s) = run(dir.path(), &lab, "lab-bad");
    assert_eq!((code, count(&s, "failed")), (1, 2), "{s}");
    let o = klio(
        dir.path(),
        &["ledger", "failed", "--json", "--out", "lab-bad"],
    );
    let failed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        failed[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("labels file has 2 lines"),
        "{failed}"
    );
}

/// The chunk starts (in frames) for `len` frames cut into `win` every `hop`, the last one
/// zero-padded when the input ends inside it: the rule `pad_last = "zeros"` documents.
fn chunk_starts(len: usize, win: usize, hop: usize) -> Vec<usize> {
    let mut starts: Vec<usize> = (0..)
        .map(|k| k * hop)
        .take_while(|s| s + win <= len)
        .collect();
    let covered = starts.last().map_or(0, |s| s + win);
    if len > covered {
        starts.push(starts.len() * hop);
    }
    starts
}

/// The mean of `x[s..s + win]`, the frames past the end counting as zeros.
fn padded_mean(x: &[f32], s: usize, win: usize) -> f64 {
    x[s.min(x.len())..(s + win).min(x.len())]
        .iter()
        .map(|&v| f64::from(v))
        .sum::<f64>()
        / win as f64
}

#[test]
fn overlapping_chunks_batched_across_items_match_the_pcm() {
    let dir = tempfile::tempdir().unwrap();
    for b in BACKENDS {
        // 512 samples every 256 (0.032 s / 0.016 s at 16 kHz), 8 chunks per model call: the
        // two items' chunks share calls, and the batch's rows go back to their own item.
        let extra = format!(
            "backend = \"{b}\"\nwindow_s = 0.032\nhop_s = 0.016\nbatch_size = 8\nbatch_wait_ms = 20\n"
        );
        let cfg = config(dir.path(), "batch_mean", &extra);
        let out = format!("out-{b}");
        let (code, s) = run(dir.path(), &cfg, &out);
        assert_eq!((code, count(&s, "done")), (0, 2), "{b}: {s}");
        for item in item_dirs(&dir.path().join(&out)) {
            let meta = read_json(&item.join("meta.json"));
            let pcm = wav_samples(Path::new(meta["source"].as_str().unwrap()));
            let starts = chunk_starts(pcm.len(), 512, 256);
            let (shape, v) = read_npy(&item.join("m.npy"));
            assert_eq!(shape, vec![starts.len()], "{b}");
            for (i, (got, s)) in v.iter().zip(&starts).enumerate() {
                let want = padded_mean(&pcm, *s, 512);
                assert!(
                    (f64::from(*got) - want).abs() < 1e-5,
                    "{b}: chunk {i}: {got} vs {want}"
                );
            }
        }
    }
    // A model whose first axis is fixed at 1 cannot take a batch: a clear error per item.
    let cfg = config(dir.path(), "mean", "batch_size = 4\n");
    let (code, s) = run(dir.path(), &cfg, "fixed");
    assert_eq!((code, count(&s, "failed")), (1, 2), "{s}");
}

#[test]
fn a_feature_input_runs_on_frame_chunks_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    for b in BACKENDS {
        for layout in ["time_major", "feature_major"] {
            // log-mel at hop 512 (31.25 frames/s): 0.5 s = 16 frames every 0.25 s = 8 frames.
            let extra = format!(
                "backend = \"{b}\"\ninput = \"log_mel\"\nwindow_s = 0.5\nhop_s = 0.25\nfeature_layout = \"{layout}\"\n"
            );
            let cfg = config(dir.path(), "axis1_mean", &extra);
            let text = std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("compute = []", "compute = [\"log_mel\"]");
            std::fs::write(&cfg, text).unwrap();
            let out = format!("out-{b}-{layout}");
            let (code, s) = run(dir.path(), &cfg, &out);
            assert_eq!((code, count(&s, "done")), (0, 2), "{b} {layout}: {s}");
            for item in item_dirs(&dir.path().join(&out)) {
                // [n_mels, frames], as librosa.
                let (fshape, mel) = read_npy(&item.join("log_mel.npy"));
                let (dims, frames) = (fshape[0], fshape[1]);
                let starts = chunk_starts(frames, 16, 8);
                let (shape, v) = read_npy(&item.join("m.npy"));
                let row = if layout == "time_major" { dims } else { 16 };
                assert_eq!(shape, vec![starts.len(), row], "{b} {layout}");
                for (c, s) in starts.iter().enumerate() {
                    for r in 0..row {
                        // time_major: mean over the chunk's frames of mel r; feature_major:
                        // mean over the mels of frame s + r (zero past the end).
                        let want = if layout == "time_major" {
                            padded_mean(&mel[r * frames..(r + 1) * frames], *s, 16)
                        } else if s + r < frames {
                            (0..dims)
                                .map(|d| f64::from(mel[d * frames + s + r]))
                                .sum::<f64>()
                                / dims as f64
                        } else {
                            0.0
                        };
                        let got = f64::from(v[c * row + r]);
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{b} {layout}: chunk {c} value {r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn pad_last_drop_leaves_out_the_partial_chunk_and_refuses_a_short_item() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "mean",
        "window_s = 0.032\npad_last = \"drop\"\n",
    );
    let (code, s) = run(dir.path(), &cfg, "drop");
    assert_eq!((code, count(&s, "done")), (0, 2), "{s}");
    for item in item_dirs(&dir.path().join("drop")) {
        let meta = read_json(&item.join("meta.json"));
        let pcm = wav_samples(Path::new(meta["source"].as_str().unwrap()));
        let (shape, _) = read_npy(&item.join("m.npy"));
        assert_eq!(shape, vec![pcm.len() / 512]);
    }
    // 300 samples: shorter than one chunk.
    let short = dir.path().join("short.wav");
    serve::write_wav(&short, 300.0 / 16000.0, 16000, 3);
    let (code, s) = process(
        dir.path(),
        &[short.to_str().unwrap(), "--config", &cfg, "--out", "short"],
    );
    assert_eq!((code, count(&s, "failed")), (1, 1), "{s}");
    let o = klio(
        dir.path(),
        &["ledger", "failed", "--json", "--out", "short"],
    );
    let failed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(failed[0]["error_kind"], "too_short", "{failed}");
}

#[test]
fn chunking_and_batching_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, needle) in [
        (
            "state = { shape = [1] }\nbatch_size = 2\n",
            "set state.batch_axis",
        ),
        (
            "window_s = 0.5\nwindow_samples = 512\n",
            "cannot be combined",
        ),
        ("hop_s = 0.5\n", "needs window_s"),
        ("input = \"log_mel\"\n", "chunk length in seconds"),
        (
            "input = \"mfcc\"\nwindow_s = 1.0\n",
            "neither \"waveform\" nor a feature",
        ),
        ("window_s = -1.0\n", "must be in (0, 3600]"),
        ("batch_size = 0\n", "1..=4096"),
    ] {
        let cfg = config(dir.path(), "mean", extra);
        let o = klio(dir.path(), &["config", "validate", "--config", &cfg]);
        assert_eq!(o.status.code(), Some(2), "{extra}");
        assert!(stderr(&o).contains(needle), "{extra}: {}", stderr(&o));
    }
}
