//! Silero VAD end to end through `klio-edge process` with config/examples/vad.toml (tract,
//! no ONNX Runtime): per-chunk probabilities match Python onnxruntime on the same model and
//! PCM within 1e-4 (fixtures by scripts/make_vad_fixtures.py), segments match Silero's own
//! `get_speech_timestamps_from_probs`, speech is found in speech and not in music.

use std::path::Path;

use crate::common::*;

fn fixtures() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vad");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn probabilities_and_segments_match_python_onnxruntime_and_silero() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fixtures();
    assert!(cases.len() >= 2);
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let src = real(
            std::fs::read_to_string(case.join("source.txt"))
                .unwrap()
                .trim(),
        );
        let out = format!("out-{name}");
        let (code, s) = process(
            dir.path(),
            &[
                src.to_str().unwrap(),
                "--config",
                &example("vad.toml"),
                "--out",
                &out,
            ],
        );
        assert_eq!((code, count(&s, "done")), (0, 1), "{name}: {s}");
        let item = &item_dirs(&dir.path().join(&out))[0];
        let (shape, got) = read_npy(&item.join("vad_probs.npy"));
        let (_, want) = read_npy(&case.join("probs.npy"));
        assert_eq!(shape, vec![want.len()], "{name}: one probability per chunk");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{name}: {} chunks, max |tract - onnxruntime| {worst:.2e}",
            got.len()
        );
        assert!(worst <= 1e-4, "{name}: {worst}");

        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("segments.json")).unwrap())
                .unwrap();
        let ours: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(item.join("vad.json")).unwrap()).unwrap();
        let theirs = fixture["segments"].as_array().unwrap();
        let segs = ours["segments"].as_array().unwrap();
        assert_eq!(segs.len(), theirs.len(), "{name}: {ours} vs {fixture}");
        for (a, b) in segs.iter().zip(theirs) {
            for (k, kk) in [("start_sample", "start"), ("end_sample", "end")] {
                let (x, y) = (a[k].as_i64().unwrap(), b[kk].as_i64().unwrap());
                // Equal probabilities give equal boundaries; allow one chunk for a
                // probability within 1e-4 of the threshold.
                assert!((x - y).abs() <= 512, "{name}: {k} {x} vs {y}");
            }
            let (s, e) = (a["start"].as_f64().unwrap(), a["end"].as_f64().unwrap());
            assert!(s < e);
        }
        let samples = fixture["samples"].as_f64().unwrap();
        let speech_s = ours["speech_s"].as_f64().unwrap();
        if name.contains("no-speech") {
            assert_eq!(speech_s, 0.0, "{name}: no speech in a xylophone");
            // An empty sum of f64 is -0.0 in Rust; the file must say 0.0.
            assert!(
                speech_s.is_sign_positive(),
                "{name}: speech_s is {speech_s:?}"
            );
        } else {
            assert!(
                speech_s > 0.5 * samples / 16000.0,
                "{name}: mostly speech: {speech_s}"
            );
        }
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(item.join("meta.json")).unwrap())
                .unwrap();
        assert_eq!(meta["models"][0]["name"], "vad");
        // The ledger records which model (and which file) produced the item.
        let rows = crate::common::ledger::rows(&dir.path().join(&out).join("klio-ledger.sqlite"));
        let models = rows[0]
            .models
            .clone()
            .expect("the ledger records the models");
        assert_eq!(models[0]["name"], "vad");
        assert_eq!(models[0]["sha256"], meta["models"][0]["sha256"]);
        assert_eq!(
            meta["models"][0]["sha256"],
            "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87"
        );
    }
}

#[test]
fn the_example_config_runs_on_the_example_audio_and_model_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/audio");
    let (code, s) = process(
        dir.path(),
        &[
            audio.to_str().unwrap(),
            "--config",
            &example("vad.toml"),
            "--out",
            "vad",
        ],
    );
    assert_eq!(code, 0, "{s}");
    for item in item_dirs(&dir.path().join("vad")) {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(item.join("vad.json")).unwrap()).unwrap();
        assert!(v["segments"].is_array());
    }
    // A wrong hash, a missing file, a rate the model cannot take: refused up front (exit 2).
    let base = std::fs::read_to_string(example("vad.toml")).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/silero_vad_openvino_16k.onnx");
    let base = base.replace(
        "\"../../models/silero_vad_openvino_16k.onnx\"",
        &format!("{:?}", model.to_str().unwrap()),
    );
    for (body, needle, cmd) in [
        (
            base.replace("sha256 = \"7776", "sha256 = \"0776"),
            "SHA-256",
            "process",
        ),
        (
            base.replace("silero_vad_openvino_16k.onnx", "nope.onnx"),
            "cannot read",
            "process",
        ),
        (
            base.replace("sample_rate_hz = 16000   #", "sample_rate_hz = 22050   #"),
            "needs 16000 Hz",
            "validate",
        ),
    ] {
        std::fs::write(dir.path().join("bad.toml"), body).unwrap();
        let o = if cmd == "process" {
            klio(
                dir.path(),
                &[
                    "process",
                    audio.to_str().unwrap(),
                    "--config",
                    "bad.toml",
                    "--out",
                    "x",
                ],
            )
        } else {
            klio(dir.path(), &["config", "validate", "--config", "bad.toml"])
        };
        assert_eq!(o.status.code(), Some(2), "{needle}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}
