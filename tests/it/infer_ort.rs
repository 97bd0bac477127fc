//! The ONNX Runtime backend (`backend = "ort"`, loaded at run time from the PyPI wheel's
//! library, which scripts/test.sh installs and names in ORT_DYLIB_PATH) against tract on the
//! same model and the same real speech: per-chunk probabilities within 1e-4 of each other and
//! of Python onnxruntime, the same segments; sessions shared by two workers; CUDA asked for on
//! a CPU-only runtime falls back with a warning; a missing library is a clear error.

use std::path::Path;

use crate::common::*;

fn ort_lib() -> String {
    std::env::var("ORT_DYLIB_PATH").expect(
        "ORT_DYLIB_PATH must name libonnxruntime.so (scripts/test.sh installs the PyPI wheel \
         `onnxruntime` in target/py-ort and sets it)",
    )
}

/// config/examples/vad.toml with the model path made absolute and `edits` applied.
fn vad_config(dir: &Path, name: &str, edits: &[(&str, &str)]) -> String {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut text = std::fs::read_to_string(example("vad.toml"))
        .unwrap()
        .replace("../../models/", &format!("{}/", models.display()));
    for (from, to) in edits {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn sources() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vad");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let case = e.unwrap().path();
            let name = std::fs::read_to_string(case.join("source.txt")).unwrap();
            real(name.trim()).to_string_lossy().into_owned()
        })
        .collect();
    v.sort();
    v
}

/// element -> (probabilities, segments JSON) of one run.
fn results(out: &Path) -> Vec<(String, Vec<f32>, serde_json::Value)> {
    item_dirs(out)
        .iter()
        .map(|d| {
            let (_, probs) = read_npy(&d.join("vad_probs.npy"));
            let segs = read_json(&d.join("vad.json"));
            (
                d.file_name().unwrap().to_string_lossy().into_owned(),
                probs,
                segs,
            )
        })
        .collect()
}

/// Same chunk count, and every probability of `b` within 1e-4 of `a`'s.
fn assert_within_1e4(element: &str, a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{element}: same chunks");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("{element}: {} chunks, max |{what}| {worst:.2e}", a.len());
    assert!(worst <= 1e-4, "{element}: {worst}");
}

#[test]
fn ort_and_tract_agree_on_silero_vad_over_real_speech() {
    let lib = ort_lib();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tract = vad_config(d, "tract.toml", &[]);
    let ort = vad_config(
        d,
        "ort.toml",
        &[("backend = \"tract\"", "backend = \"ort\"")],
    );
    let srcs = sources();
    let mut args = vec!["--jobs", "2", "--out"];
    let run = |cfg: &str, out: &str| {
        let mut a = args.clone();
        a.push(out);
        a.extend(["--config", cfg]);
        a.extend(srcs.iter().map(String::as_str));
        let (code, s) = process_env(d, &a, &[("ORT_DYLIB_PATH", lib.as_str())]);
        assert_eq!(code, 0, "{s}");
        assert_eq!(count(&s, "done") as usize, srcs.len(), "{s}");
    };
    run(&tract, "out-tract");
    run(&ort, "out-ort");
    args.clear();
    let (a, b) = (results(&d.join("out-tract")), results(&d.join("out-ort")));
    assert_eq!(a.len(), b.len());
    for ((ea, pa, sa), (eb, pb, sb)) in a.iter().zip(&b) {
        assert_eq!(ea, eb);
        assert_within_1e4(ea, pa, pb, "tract - ort");
        assert_eq!(sa["segments"], sb["segments"], "{ea}: same segments");
        assert_eq!(
            (sa["backend"].as_str(), sb["backend"].as_str()),
            (Some("tract"), Some("ort"))
        );
    }
    // The ledger's model identity includes the backend: switching backends reprocesses.
    let (code, s) = process_env(
        d,
        &["--out", "out-tract", "--config", &ort, &srcs[0]],
        &[("ORT_DYLIB_PATH", lib.as_str())],
    );
    assert_eq!((code, count(&s, "done")), (0, 1), "{s}");
}

/// config/examples/vad-batched.toml (Silero's batchable export, chunks of several items per
/// call, each item's state a row of the batch) gives what vad.toml (tract, one chunk per
/// call) gives, with three workers sharing calls; and a state without its batch axis is
/// refused at start-up with a message naming the key.
#[test]
fn silero_batched_across_items_keeps_each_items_state() {
    let lib = ort_lib();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let batched_text = std::fs::read_to_string(example("vad-batched.toml"))
        .unwrap()
        .replace("../../models/", &format!("{}/", models.display()));
    let batched = d.join("batched.toml");
    std::fs::write(&batched, &batched_text).unwrap();
    let batched = batched.to_string_lossy().into_owned();
    let tract = vad_config(d, "tract.toml", &[]);
    let srcs = sources();
    for (cfg, out) in [(&tract, "out-tract"), (&batched, "out-batched")] {
        let mut a = vec!["--jobs", "3", "--out", out, "--config", cfg.as_str()];
        a.extend(srcs.iter().map(String::as_str));
        let (code, s) = process_env(d, &a, &[("ORT_DYLIB_PATH", lib.as_str())]);
        assert_eq!(code, 0, "{s}");
        assert_eq!(count(&s, "done") as usize, srcs.len(), "{s}");
    }
    let (a, b) = (
        results(&d.join("out-tract")),
        results(&d.join("out-batched")),
    );
    assert_eq!(a.len(), srcs.len());
    assert_eq!(a.len(), b.len());
    for ((ea, pa, sa), (eb, pb, sb)) in a.iter().zip(&b) {
        assert_eq!(ea, eb);
        assert_within_1e4(ea, pa, pb, "unbatched - batched");
        assert_eq!(sa["segments"], sb["segments"], "{ea}: same segments");
    }
    // batch_size > 1 with a state needs the state's batch axis, and the axis must be 1 long.
    for (from, to, key) in [
        (
            "state = { shape = [2, 1, 128], batch_axis = 1 }",
            "state = { shape = [2, 1, 128] }",
            "state.batch_axis",
        ),
        (
            "state = { shape = [2, 1, 128], batch_axis = 1 }",
            "state = { shape = [2, 1, 128], batch_axis = 2 }",
            "model.state.batch_axis",
        ),
    ] {
        let bad = d.join("bad.toml");
        std::fs::write(&bad, batched_text.replace(from, to)).unwrap();
        let o = klio_env(
            d,
            &[
                "process",
                "--out",
                "out-bad",
                "--config",
                bad.to_str().unwrap(),
                &srcs[0],
            ],
            &[("ORT_DYLIB_PATH", lib.as_str())],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn cuda_falls_back_to_cpu_with_a_warning_and_a_missing_library_is_clear() {
    let lib = ort_lib();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cuda = vad_config(
        d,
        "cuda.toml",
        &[(
            "backend = \"tract\"",
            "backend = \"ort\"\ndevice = \"cuda\"\nthreads = 2",
        )],
    );
    let src = sources().remove(0);
    let o = klio_env(
        d,
        &["process", "--config", &cuda, "--out", "out", &src],
        &[("ORT_DYLIB_PATH", lib.as_str())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("running on CPU"), "{}", stderr(&o));
    let o = klio_env(
        d,
        &["process", "--config", &cuda, "--out", "out2", &src],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot load ONNX Runtime"),
        "{}",
        stderr(&o)
    );
}
