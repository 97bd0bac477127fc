//! `klio-edge export` end to end: a real run (features and Silero VAD segments) exported as
//! Parquet, WebDataset shards and a JSONL manifest, each read back with the readers researchers
//! use (pyarrow, Hugging Face `datasets`, `webdataset`, json) by tests/it/export_readers.py in
//! the venv scripts/test.sh makes ($KLIO_EXPORT_PYTHON); the README's "Use the outputs"
//! snippets run too. Export is a pure reader (ledger and outputs unchanged, byte for byte), and
//! an item whose outputs are gone or broken is listed while the others are exported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv Python with pyarrow, datasets and webdataset. Missing is a failure, never a skip.
fn python() -> PathBuf {
    let p = std::env::var_os("KLIO_EXPORT_PYTHON")
        .map(PathBuf::from)
        .expect(
            "KLIO_EXPORT_PYTHON must name a Python with pyarrow, datasets and webdataset: run the \
         tests through scripts/test.sh (it makes target/py-export)",
        );
    assert!(
        p.is_file(),
        "KLIO_EXPORT_PYTHON={} is not a file",
        p.display()
    );
    p
}

/// Log-mel, MFCC and RMS at 16 kHz mono, and Silero VAD segments.
fn write_config(dir: &Path, channels: &str) -> String {
    let model = root().join("models/silero_vad_openvino_16k.onnx");
    let text = format!(
        "[decode]\nsample_rate_hz = 16000\nchannels = \"{channels}\"\n\n\
         [features]\ncompute = [\"log_mel\", \"mfcc\", \"rms\"]\nn_mels = 40\n\n\
         [[model]]\nname = \"vad\"\npath = \"{}\"\n\
         sha256 = \"7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87\"\n\
         backend = \"tract\"\nsample_rate_hz = 16000\nwindow_samples = 512\n\
         context_samples = 64\nstate = {{ shape = [2, 1, 128] }}\noutput = \"segments\"\n",
        model.display()
    );
    let p = dir.join(format!("export-{channels}.toml"));
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const SOURCES: [&str; 4] = [
    "wav_s16_16k_mono_asterisk-demo-congrats-g722dec.wav",
    "wav_s16_22k05_mono_espeak-ng-synth.wav",
    "mp3_8k_mono_asterisk-demo-instruct.mp3",
    "flac_s16_44k1_stereo_sonic-pi-loop-tabla.flac",
];

/// Every file under `dir` with its bytes (what must not change).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    all_files(dir)
        .into_iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

/// `klio-edge export ... --json`: (exit code, summary or Null, stderr).
fn export(d: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["export", "--json"];
    all.extend_from_slice(args);
    let o = klio(d, &all);
    let out = String::from_utf8_lossy(&o.stdout);
    let summary = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), summary, stderr(&o))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs tests/it/export_readers.py; returns its counts.
fn read_back(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let hf = tempfile::tempdir().unwrap();
    let o = Command::new(python())
        .arg(root().join("tests/it/export_readers.py"))
        .args(args)
        // Hugging Face's cache in a temp folder, and no network: everything is local.
        .env("HF_HOME", hf.path())
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run export_readers.py");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "export_readers.py {}: {:?}\nstdout: {out}\nstderr: {}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

#[test]
fn every_format_reads_back_in_the_real_readers_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, "mono");
    let mut args: Vec<String> = SOURCES
        .iter()
        .map(|s| real(s).to_string_lossy().into_owned())
        .collect();
    args.extend(["--config".into(), cfg, "--out".into(), "out".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, s) = process(d, &args);
    assert_eq!((code, count(&s, "done")), (0, 4), "{s}");
    let out = d.join("out");
    let before = snapshot(&out);

    // The README's commands write ds/parquet, ds/wds and ds/jsonl; --max-file-mb 0.25 makes
    // several Parquet files of these items (their values are about 1 MB in all).
    for (format, to, extra) in [
        ("parquet", "ds/parquet", vec!["--max-file-mb", "0.25"]),
        ("webdataset", "ds/wds", vec![]),
        ("jsonl", "ds/jsonl", vec![]),
    ] {
        let mut a = vec!["--out", "out", "--format", format, "--to", to];
        a.extend(extra);
        let (code, summary, err) = export(d, &a);
        assert_eq!(code, 0, "{format}: {err}");
        assert_eq!(summary["items"], 4, "{format}: {summary}");
        assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
        let to = d.join(to);
        assert_eq!(summary["bytes"], dir_bytes(&to), "{format}: {summary}");
        assert_eq!(
            summary["files"].as_u64().unwrap(),
            names_in(&to).len() as u64,
            "{format}: {summary} vs {:?}",
            names_in(&to)
        );
        assert!(summary["wall_s"].as_f64().unwrap() > 0.0, "{summary}");
        assert!(
            !names_in(&to).iter().any(|n| n.ends_with(".partial")),
            "{:?}",
            names_in(&to)
        );
    }
    assert!(
        names_in(&d.join("ds/parquet")).len() >= 2,
        "--max-file-mb 0.25 split nothing: {:?}",
        names_in(&d.join("ds/parquet"))
    );
    assert_eq!(names_in(&d.join("ds/wds")), ["shard-000000.tar"]);
    assert_eq!(names_in(&d.join("ds/jsonl")), ["manifest.jsonl"]);

    let counts = read_back(
        &[
            "--out",
            out.to_str().unwrap(),
            "--parquet",
            d.join("ds/parquet").to_str().unwrap(),
            "--webdataset",
            d.join("ds/wds").to_str().unwrap(),
            "--jsonl",
            d.join("ds/jsonl").to_str().unwrap(),
            "--readme",
            root().join("README.md").to_str().unwrap(),
            "--snippets-in",
            d.to_str().unwrap(),
        ],
        &[],
    );
    eprintln!("readers: {counts}");
    for key in [
        "parquet_rows",
        "datasets_rows",
        "webdataset_samples",
        "jsonl_lines",
    ] {
        assert_eq!(counts[key], 4, "{key}: {counts}");
    }
    assert_eq!(counts["snippets"], 3, "{counts}");
    let columns: Vec<&str> = counts["parquet_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "element",
        "source",
        "duration_s",
        "sample_rate_hz",
        "frames",
        "config_hash",
        "input_hash",
        "meta",
        "log_mel",
        "log_mel_shape",
        "mfcc",
        "rms",
        "vad_segments",
        "vad_probs",
    ] {
        assert!(columns.contains(&c), "no {c} column in {columns:?}");
    }

    // A smaller shard size gives a shard per item; samples never straddle shards.
    let (code, summary, err) = export(
        d,
        &[
            "--out",
            "out",
            "--format",
            "webdataset",
            "--to",
            "wds-small",
            "--shard-mb",
            "1",
            "--with-audio",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(summary["files"].as_u64().unwrap() >= 2, "{summary}");
    let counts = read_back(
        &[
            "--out",
            out.to_str().unwrap(),
            "--webdataset",
            d.join("wds-small").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(counts["webdataset_samples"], 4, "{counts}");
    // --with-audio: each sample carries its source's bytes under the source's extension.
    let mut audio = BTreeMap::new();
    for shard in names_in(&d.join("wds-small")) {
        let f = std::fs::File::open(d.join("wds-small").join(shard)).unwrap();
        for entry in tar::Archive::new(f).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            for ext in ["wav", "mp3", "flac"] {
                if name.ends_with(&format!(".{ext}")) {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                    audio.insert(name.clone(), bytes);
                }
            }
        }
    }
    assert_eq!(audio.len(), 4, "{:?}", audio.keys());
    for s in SOURCES {
        let want = std::fs::read(real(s)).unwrap();
        assert!(audio.values().any(|b| *b == want), "{s} not in the shards");
    }

    // With channels = "keep", features get a leading channel level in Parquet.
    let keep = write_config(d, "keep");
    let stereo = real("wav_s16_44k1_stereo_deepin-desktop-login.wav");
    let (code, s) = process(
        d,
        &[
            stereo.to_str().unwrap(),
            "--config",
            &keep,
            "--out",
            "out-keep",
        ],
    );
    assert_eq!((code, count(&s, "done")), (0, 1), "{s}");
    let (code, _, err) = export(
        d,
        &[
            "--out",
            "out-keep",
            "--format",
            "parquet",
            "--to",
            "keep-parquet",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let counts = read_back(
        &[
            "--out",
            d.join("out-keep").to_str().unwrap(),
            "--parquet",
            d.join("keep-parquet").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(counts["parquet_rows"], 1, "{counts}");
    let meta = read_json(&item_dirs(&d.join("out-keep"))[0].join("meta.json"));
    assert_eq!(meta["features"]["log_mel"]["shape"][0], 2, "{meta}");

    // Export never changed the outputs or the ledger, byte for byte.
    assert!(
        snapshot(&out) == before,
        "export changed the outputs or the ledger"
    );
}

#[test]
fn missing_outputs_are_listed_and_the_destination_is_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = d.join("klio.toml");
    std::fs::write(
        &cfg,
        "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = [\"log_mel\"]\nn_mels = 40\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("in")).unwrap();
    for seed in 0..4 {
        crate::common::serve::write_wav(&d.join(format!("in/t{seed}.wav")), 0.5, 16000, seed);
    }
    let (code, s) = process(
        d,
        &["in", "--config", cfg.to_str().unwrap(), "--out", "out"],
    );
    assert_eq!((code, count(&s, "done")), (0, 4), "{s}");
    let items = item_dirs(&d.join("out"));
    let gone = items[1].file_name().unwrap().to_string_lossy().into_owned();
    let broken = items[2].file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(items[1].join("log_mel.npy")).unwrap();
    std::fs::write(items[2].join("log_mel.npy"), b"\x93NUMPY not really").unwrap();
    let before = snapshot(&d.join("out"));

    for format in ["parquet", "webdataset", "jsonl"] {
        let to = format!("to-{format}");
        let (code, summary, err) = export(d, &["--out", "out", "--format", format, "--to", &to]);
        let failed: Vec<&str> = summary["failed"]
            .as_array()
            .unwrap_or_else(|| panic!("{format}: no summary: {err}"))
            .iter()
            .map(|f| f["element"].as_str().unwrap())
            .collect();
        // JSONL names the files without reading them, but checks each is there at the size
        // its shape gives: the missing and the foreign file are both left out.
        assert_eq!(code, 1, "{format}: {err}");
        assert_eq!(
            failed,
            [gone.as_str(), broken.as_str()],
            "{format}: {summary}"
        );
        assert_eq!(summary["items"], 2, "{format}: {summary}");
        assert!(err.contains(&broken), "{format}: {err}");
        assert!(err.contains(&gone) && err.contains("log_mel.npy"), "{err}");

        // A non-empty destination is refused without --overwrite, and its files stay.
        let listed = names_in(&d.join(&to));
        let (code, _, err) = export(d, &["--out", "out", "--format", format, "--to", &to]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--overwrite"), "{err}");
        assert_eq!(names_in(&d.join(&to)), listed);
        let (code, summary, err) = export(
            d,
            &[
                "--out",
                "out",
                "--format",
                format,
                "--to",
                &to,
                "--overwrite",
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert_eq!(names_in(&d.join(&to)), listed, "{summary}");
    }
    // Usage errors (exit 2), each named in its message, and nothing written:
    // a folder with someone else's file is never cleared, even with --overwrite; no ledger;
    // audio asked for outside WebDataset; a size of no bytes.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), b"keep me").unwrap();
    let usage: [(&[&str], &str); 4] = [
        (
            &["--format", "jsonl", "--to", "mine", "--overwrite"],
            "notes.txt",
        ),
        (
            &["--format", "jsonl", "--to", "nowhere", "--out", "in"],
            "no ledger",
        ),
        (
            &["--format", "jsonl", "--to", "audio", "--with-audio"],
            "--with-audio",
        ),
        (
            &["--format", "parquet", "--to", "z", "--max-file-mb", "0"],
            "positive",
        ),
    ];
    for (args, names) in usage {
        let mut a = args.to_vec();
        if !a.contains(&"--out") {
            a.extend(["--out", "out"]);
        }
        let (code, _, err) = export(d, &a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(d.join("mine/notes.txt")).unwrap(), b"keep me");
    for never in ["nowhere", "audio", "z"] {
        assert!(!d.join(never).exists(), "{never} was made");
    }

    assert!(
        snapshot(&d.join("out")) == before,
        "export changed the outputs or the ledger"
    );
}
