//! The infer stage with tiny models (tests/fixtures/models, made by
//! scripts/make_tiny_models.py): state carried across chunks and reset per item, values that
//! match the PCM chunk by chunk (the last one zero-padded), NaN outputs and shapes the model
//! refuses failing their item with a clear kind. Each case runs on both backends (tract, and
//! ONNX Runtime through ORT_DYLIB_PATH, which scripts/test.sh sets).

mod common;

use std::path::Path;

use common::*;

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
        "[decode]\nsample_rate_hz = 16000\n\n[features]\ncompute = []\n\n[[model]]\nname = \"m\"\npath = {:?}\noutput = \"tensor\"\n{extra}",
        path.to_str().unwrap()
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
