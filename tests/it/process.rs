//! End-to-end tests of `klio-edge process` on the real and malformed recordings of the test
//! corpus: outputs and shapes, skip / force / config-change reprocessing, failures with reasons,
//! crash recovery, exit codes and the config commands.

use std::path::Path;

use crate::common::*;

/// Real recordings: MANIFEST.tsv rows (file, channels, rate, duration).
fn manifest_real() -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(corpus().join("MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| l.starts_with("real/"))
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (
                cols[0].trim_start_matches("real/").to_string(),
                cols[4].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn real_corpus_is_processed_with_librosa_shapes_then_skipped_then_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = corpus().join("real");
    let (code, s) = process(d, &[real.to_str().unwrap(), "--out", "out"]);
    let manifest = manifest_real();
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "done"), manifest.len() as u64, "{s}");
    assert_eq!(count(&s, "failed"), 0);

    let items = item_dirs(&d.join("out"));
    assert_eq!(items.len(), manifest.len());
    for item in &items {
        let meta = read_json(&item.join("meta.json"));
        let source = meta["source"].as_str().unwrap().to_string();
        let name = Path::new(&source)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let want_s = manifest
            .iter()
            .find(|m| m.0 == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1;
        let got_s = meta["duration_s"].as_f64().unwrap();
        // Lossy codecs with encoder delay may differ from ffprobe by a frame or two; for MP3
        // without a Xing header ffprobe only estimates from the bitrate (the WAV of the same
        // recording gives our number).
        let tol = if name.ends_with(".mp3") { 0.2 } else { 0.06 };
        assert!(
            (got_s - want_s).abs() < tol,
            "{name}: duration {got_s} vs manifest {want_s}"
        );
        assert_eq!(meta["sample_rate_hz"], 22050);
        let frames = meta["samples"].as_u64().unwrap() as usize;
        assert!(
            (frames as f64 - got_s * 22050.0).abs() <= 2.0,
            "{name}: {frames} frames for {got_s} s"
        );
        let n_frames = 1 + frames / 512; // librosa, center=True
        let (shape, data) = read_npy(&item.join("log_mel.npy"));
        assert_eq!(shape, vec![128, n_frames], "{name}");
        assert!(data.iter().all(|v| v.is_finite()));
        let max = data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let min = data.iter().cloned().fold(f32::INFINITY, f32::min);
        assert!(max - min <= 80.0 + 1e-3, "{name}: top_db clamp");
        let (shape, _) = read_npy(&item.join("mfcc.npy"));
        assert_eq!(shape, vec![20, n_frames], "{name}");
        let mut files = all_files(item);
        files.sort();
        assert_eq!(
            files,
            vec!["log_mel.npy", "meta.json", "mfcc.npy"],
            "{name}: nothing else in the item folder"
        );
    }
    assert!(
        !d.join("out/.klio-tmp").exists(),
        "temp folder removed after the run"
    );

    // Again: everything is skipped.
    let (code, s) = process(d, &[real.to_str().unwrap(), "--out", "out"]);
    assert_eq!(
        (code, count(&s, "skipped"), count(&s, "done")),
        (0, manifest.len() as u64, 0),
        "{s}"
    );

    // --force recomputes everything (outputs rewritten).
    let one = &items[0].join("log_mel.npy");
    let before = std::fs::metadata(one).unwrap().modified().unwrap();
    let (code, s) = process(
        d,
        &[
            real.to_str().unwrap(),
            "--out",
            "out",
            "--force",
            "--jobs",
            "2",
        ],
    );
    assert_eq!((code, count(&s, "done")), (0, manifest.len() as u64), "{s}");
    assert!(std::fs::metadata(one).unwrap().modified().unwrap() > before);

    // A deleted output is noticed and recomputed.
    std::fs::remove_dir_all(&items[1]).unwrap();
    let (_, s) = process(d, &[real.to_str().unwrap(), "--out", "out"]);
    assert_eq!(count(&s, "done"), 1, "{s}");

    let o = klio(d, &["ledger", "status", "--out", "out"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains(&format!("done     {}", manifest.len())),
        "{text}"
    );
}

#[test]
fn config_or_input_change_reprocesses_and_ledger_path_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(
        real("wav_s16_16k_mono_sound-icons-xylofon.wav"),
        d.join("a.wav"),
    )
    .unwrap();
    std::fs::copy(
        real("flac_s24_44k1_mono_sonic-pi-misc-burp.flac"),
        d.join("b.flac"),
    )
    .unwrap();
    std::fs::write(d.join("list.txt"), "a.wav\nb.flac\n").unwrap();
    let args = ["@list.txt", "--out", "out", "--ledger", "state/l.sqlite"];
    let (code, s) = process(d, &args);
    assert_eq!((code, count(&s, "done")), (0, 2), "{s}");
    assert!(d.join("state/l.sqlite").is_file() && !d.join("out/klio-ledger.sqlite").exists());

    std::fs::write(
        d.join("c.toml"),
        "[features]\ncompute = [\"mel\"]\nn_mels = 40\n",
    )
    .unwrap();
    let mut with_cfg = args.to_vec();
    with_cfg.extend(["--config", "c.toml"]);
    let (code, s) = process(d, &with_cfg);
    assert_eq!(
        (code, count(&s, "done"), count(&s, "skipped")),
        (0, 2, 0),
        "{s}"
    );
    let item = item_dirs(&d.join("out"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/a-"))
        .unwrap();
    assert_eq!(
        all_files(&item),
        vec!["mel.npy", "meta.json"],
        "stale outputs of the old config removed"
    );
    assert_eq!(read_npy(&item.join("mel.npy")).0[0], 40);

    // Same content rewritten (new mtime) is skipped after hashing; new content is redone.
    let bytes = std::fs::read(d.join("a.wav")).unwrap();
    std::fs::write(d.join("a.wav"), &bytes).unwrap();
    let (_, s) = process(d, &with_cfg);
    assert_eq!((count(&s, "done"), count(&s, "skipped")), (0, 2), "{s}");
    std::fs::copy(
        real("wav_s16_48k_mono_alsa-front-center.wav"),
        d.join("a.wav"),
    )
    .unwrap();
    let (_, s) = process(d, &with_cfg);
    assert_eq!((count(&s, "done"), count(&s, "skipped")), (1, 1), "{s}");
}

#[test]
fn bad_files_fail_with_reasons_while_good_files_finish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = corpus().join("bad");
    let good = real("wav_s16_16k_mono_sound-icons-xylofon.wav");
    let missing = d.join("no-such-file.wav");
    let (code, s) = process(
        d,
        &[
            bad.to_str().unwrap(),
            good.to_str().unwrap(),
            missing.to_str().unwrap(),
            "--out",
            "out",
        ],
    );
    assert_eq!(code, 1, "some items failed: exit 1 ({s})");
    let n_bad = std::fs::read_dir(&bad).unwrap().count() as u64;
    // Structurally valid content decodes: the random-payload WAV is noise with a correct header,
    // and an MPEG stream cut inside its last frame has no declared length to betray it.
    let expected_done = ["wav-header-random-payload", "mp3-trunc-70pct"];
    assert_eq!(count(&s, "items"), n_bad + 2);
    assert_eq!(count(&s, "done"), 1 + expected_done.len() as u64, "{s}");
    assert_eq!(
        count(&s, "failed"),
        n_bad + 1 - expected_done.len() as u64,
        "{s}"
    );

    let o = klio(d, &["ledger", "failed", "--out", "out", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len() as u64, count(&s, "failed"));
    let kind_of = |needle: &str| {
        rows.iter()
            .find(|r| r["source"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("{needle} not failed: {rows:?}"))["error_kind"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for r in &rows {
        assert!(!r["error_message"].as_str().unwrap_or("").is_empty(), "{r}");
    }
    assert_eq!(kind_of("zero-bytes.wav"), "empty_file");
    assert_eq!(kind_of("text-file-named.wav"), "unknown_format");
    assert_eq!(kind_of("wav-trunc-50pct.wav"), "truncated");
    assert_eq!(kind_of("flac-trunc-60pct.flac"), "truncated");
    assert_eq!(kind_of("ogg-trunc-40pct.ogg"), "truncated");
    assert_eq!(kind_of("wav-zero-channels.wav"), "invalid_stream");
    assert_eq!(kind_of("flac-named.wav"), "extension_mismatch");
    assert_eq!(kind_of("no-such-file.wav"), "missing_input");
    assert!(item_dirs(&d.join("out"))
        .iter()
        .any(|p| p.to_string_lossy().contains("xylofon")));

    // Failed items are retried on the next runs until max_attempts (3), then left alone.
    let args = [bad.join("zero-bytes.wav"), good.clone()];
    let args: Vec<&str> = args
        .iter()
        .map(|p| p.to_str().unwrap())
        .chain(["--out", "out"])
        .collect();
    let (_, s) = process(d, &args);
    assert_eq!(
        (count(&s, "failed"), count(&s, "gave_up")),
        (1, 0),
        "attempt 2: {s}"
    );
    let (_, s) = process(d, &args);
    assert_eq!(
        (count(&s, "failed"), count(&s, "gave_up")),
        (1, 0),
        "attempt 3: {s}"
    );
    let (code, s) = process(d, &args);
    assert_eq!(
        (
            code,
            count(&s, "failed"),
            count(&s, "gave_up"),
            count(&s, "skipped")
        ),
        (1, 1, 1, 1),
        "{s}"
    );

    // Partial decoding and content sniffing are available by config.
    std::fs::write(
        d.join("lenient.toml"),
        "[decode]\non_damaged = \"partial\"\nextension_mismatch = \"warn\"\n",
    )
    .unwrap();
    let inputs = [bad.join("wav-trunc-50pct.wav"), bad.join("flac-named.wav")];
    let mut args: Vec<&str> = inputs.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend(["--out", "lenient", "--config", "lenient.toml"]);
    let (code, s) = process(d, &args);
    assert_eq!((code, count(&s, "done")), (0, 2), "{s}");
    for item in item_dirs(&d.join("lenient")) {
        let meta = read_json(&item.join("meta.json"));
        assert!(!meta["warnings"].as_array().unwrap().is_empty(), "{meta}");
        if item.to_string_lossy().contains("trunc-50pct") {
            assert!(
                (meta["duration_s"].as_f64().unwrap() - 0.714).abs() < 0.01,
                "{meta}"
            );
        } else {
            assert_eq!(meta["container"], "flac");
        }
    }
}

#[test]
fn a_killed_run_leaves_no_partial_outputs_and_the_next_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = corpus().join("real");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_klio-edge"))
        .current_dir(d)
        .args([
            "process",
            "-q",
            "--jobs",
            "2",
            "--out",
            "out",
            real.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    // Wait until the run has started writing, then kill it without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !d.join("out/klio-ledger.sqlite").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    for item in item_dirs(&d.join("out")) {
        for f in all_files(&item) {
            assert!(
                f == "meta.json" || f.ends_with(".npy"),
                "stray file {f} in {}",
                item.display()
            );
        }
    }
    let (code, s) = process(d, &[real.to_str().unwrap(), "--out", "out"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        count(&s, "done") + count(&s, "skipped"),
        count(&s, "items"),
        "{s}"
    );
    assert!(!d.join("out/.klio-tmp").exists());
    for item in item_dirs(&d.join("out")) {
        assert!(item.join("meta.json").is_file());
    }
}

#[test]
fn config_commands_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = klio(d, &["config", "validate"]);
    assert!(o.status.success(), "defaults are valid: {}", stderr(&o));
    let o = klio(d, &["config", "show"]);
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        shown.contains("n_fft = 2048") && shown.contains("sample_rate_hz = 22050"),
        "{shown}"
    );
    assert!(
        shown.contains("win_length = 2048"),
        "resolved defaults are shown: {shown}"
    );
    // What show prints is a valid config with the same meaning.
    std::fs::write(d.join("shown.toml"), &shown).unwrap();
    assert!(klio(d, &["--config", "shown.toml", "config", "validate"])
        .status
        .success());

    std::fs::write(d.join("bad.toml"), "[features]\nn_mel = 40\n").unwrap();
    let o = klio(d, &["--config", "bad.toml", "config", "validate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("n_mel"),
        "names the unknown key: {}",
        stderr(&o)
    );
    std::fs::write(d.join("bad2.toml"), "[features]\nhop_length = 0\n").unwrap();
    let o = klio(d, &["--config", "bad2.toml", "process", "x.wav"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hop_length"), "{}", stderr(&o));
    // klio-edge.toml in the working directory is the default config.
    std::fs::write(
        d.join("klio-edge.toml"),
        "[decode]\nsample_rate_hz = 16000\n",
    )
    .unwrap();
    let o = klio(d, &["config", "show"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("sample_rate_hz = 16000"));
    let o = klio(d, &["process"]);
    assert_eq!(o.status.code(), Some(2), "no inputs is a usage error");
    let o = klio(d, &["ledger", "status", "--ledger", "nope.sqlite"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn readme_quick_start_processes_the_shipped_examples_with_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/audio");
    let (code, s) = process(
        dir.path(),
        &[examples.to_str().unwrap(), "--out", "features"],
    );
    assert_eq!(
        (code, count(&s, "done"), count(&s, "failed")),
        (0, 2, 0),
        "{s}"
    );
    assert!(dir.path().join("features/klio-ledger.sqlite").is_file());
}

/// The corpus is whole: every MANIFEST.tsv row names a file with that sha256 and a licence
/// that lies beside it, and every file of the corpus has its row.
#[test]
fn corpus_files_match_their_manifest_and_carry_their_licence() {
    use sha2::Digest;
    let root = corpus();
    let text = std::fs::read_to_string(root.join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, sha, lic) = (col("file"), col("sha256"), col("license_file"));
    let mut named = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        let bytes =
            std::fs::read(root.join(cols[file])).unwrap_or_else(|e| panic!("{}: {e}", cols[file]));
        let got: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, cols[sha], "{}: sha256", cols[file]);
        let licence = cols[lic];
        if licence.starts_with("project") {
            for f in ["LICENSE-MIT", "LICENSE-APACHE"] {
                assert!(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(f).is_file(),
                    "{f}"
                );
            }
        } else {
            assert!(
                root.join(licence).is_file(),
                "{}: licence {licence}",
                cols[file]
            );
        }
        named.push(cols[file].to_string());
    }
    for sub in ["real", "bad"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let name = format!("{sub}/{}", e.unwrap().file_name().to_string_lossy());
            assert!(named.contains(&name), "{name} has no MANIFEST.tsv row");
        }
    }
}
