//! The exec stage: external programs over binary and audio items, with hostile names,
//! failures, hangs, floods, reruns and tool changes.

use std::path::{Path, PathBuf};

use crate::common::*;

fn sha256_hex(path: &Path) -> String {
    let o = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Reads the ledger's error for an element of a one-item run.
fn ledger_failed(dir: &Path, out: &str) -> Vec<serde_json::Value> {
    let o = klio(dir, &["ledger", "failed", "--json", "--out", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn write_config(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

fn binary_config(exec: &str) -> String {
    format!("[decode]\nenabled = false\n\n{exec}")
}

#[test]
fn checksum_example_over_mixed_binary_items_with_hostile_names() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    // Audio, non-audio, malformed audio, and names a shell would misread.
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, bytes) in [
        ("notes.txt", b"hello\n".to_vec()),
        ("; rm -rf ~", b"not a command".to_vec()),
        ("$(touch pwned)", b"x".to_vec()),
        ("-n", b"leading dash".to_vec()),
        ("image.png", vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3]),
    ] {
        let p = inbox.join(name);
        std::fs::write(&p, bytes).unwrap();
        files.push(p);
    }
    let audio = "wav_s16_16k_mono_sound-icons-xylofon.wav";
    std::fs::copy(real(audio), inbox.join(audio)).unwrap();
    files.push(inbox.join(audio));
    for e in std::fs::read_dir(corpus().join("bad")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() && !e.file_name().to_string_lossy().starts_with('.') {
            let p = inbox.join(e.file_name());
            std::fs::copy(e.path(), &p).unwrap();
            files.push(p);
        }
    }
    let cfg = example("exec-checksum.toml");
    let run = || {
        process(
            dir.path(),
            &[inbox.to_str().unwrap(), "--config", &cfg, "--out", "out"],
        )
    };
    let (code, s) = run();
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "done") as usize, files.len(), "{s}");
    assert!(!dir.path().join("pwned").exists(), "no shell ever ran");
    assert!(!inbox.join("pwned").exists());
    let items = item_dirs(&dir.path().join("out"));
    assert_eq!(items.len(), files.len());
    for item in &items {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(item.join("meta.json")).unwrap())
                .unwrap();
        let source = PathBuf::from(meta["source"].as_str().unwrap());
        let text = std::fs::read_to_string(item.join("sha256.txt")).unwrap();
        assert!(
            text.starts_with(&sha256_hex(&source)),
            "{}: {text}",
            source.display()
        );
        assert_eq!(meta["exec"][0]["name"], "checksum");
        let mut listed: Vec<String> = std::fs::read_dir(item)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, vec!["meta.json", "sha256.txt"]);
    }
    // A rerun skips everything; no scratch or staging folders are left behind.
    let (code, s) = run();
    assert_eq!(
        (code, count(&s, "skipped") as usize),
        (0, files.len()),
        "{s}"
    );
    assert!(!dir.path().join("out/.klio-tmp").exists());
}

#[test]
fn failing_hanging_and_flooding_programs_fail_their_item_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("item.bin");
    std::fs::write(&input, b"payload").unwrap();
    let cases = [
        (
            "fails",
            r#"program = "sh"
args = ["-c", "echo about to fail >&2; exit 3"]"#,
            "exec_failed",
            "exit code 3",
        ),
        (
            "hangs",
            // A child that outlives the shell must die too: the whole group is killed.
            r#"program = "sh"
args = ["-c", "sleep 60 & sleep 60"]
timeout_s = 1.0"#,
            "exec_timeout",
            "timed out after 1 s",
        ),
        (
            "floods",
            r#"program = "head"
args = ["-c", "10000000", "/dev/zero"]
stdout = "zeros.bin"
max_output_bytes = 1000000"#,
            "exec_output_too_large",
            "stdout is larger than max_output_bytes",
        ),
        (
            "big-file",
            r#"program = "sh"
args = ["-c", "head -c 5000 /dev/zero > big.bin"]
outputs = ["big.bin"]
max_output_bytes = 1000"#,
            "exec_output_too_large",
            "big.bin",
        ),
        (
            "forgets",
            r#"program = "true"
outputs = ["result.json"]"#,
            "exec_missing_output",
            "result.json",
        ),
    ];
    for (name, body, kind, needle) in cases {
        let cfg = write_config(
            dir.path(),
            &format!("{name}.toml"),
            &binary_config(&format!("[[exec]]\nname = \"{name}\"\n{body}\n")),
        );
        let out = format!("out-{name}");
        let started = std::time::Instant::now();
        let (code, s) = process(
            dir.path(),
            &[input.to_str().unwrap(), "--config", &cfg, "--out", &out],
        );
        assert!(started.elapsed().as_secs() < 30, "{name} was not cut short");
        assert_eq!((code, count(&s, "failed")), (1, 1), "{name}: {s}");
        let failed = ledger_failed(dir.path(), &out);
        assert_eq!(failed[0]["error_kind"], kind, "{name}: {failed:?}");
        let msg = failed[0]["error_message"].as_str().unwrap();
        assert!(msg.contains(needle), "{name}: {msg}");
        if name == "fails" {
            assert!(msg.contains("about to fail"), "stderr tail kept: {msg}");
        }
        assert!(
            !dir.path().join(&out).join(".klio-tmp").exists(),
            "{name}: scratch removed"
        );
    }
    // No `sleep 60` of the timed-out group survives.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 60"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "orphans: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn a_changed_tool_reprocesses_and_outputs_are_collected_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("item.bin");
    std::fs::write(&input, b"payload").unwrap();
    let tool = dir.path().join("tool.sh");
    let write_tool = |version: &str| {
        std::fs::write(
            &tool,
            format!(
                "#!/bin/sh\n# {version}\nwc -c < \"$1\" > \"$2/size.txt\"\necho \"{{\\\"element\\\": \\\"$3\\\"}}\" > \"$2/info.json\"\n"
            ),
        )
        .unwrap();
        let mut perm = std::fs::metadata(&tool).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&tool, perm).unwrap();
    };
    write_tool("v1");
    let cfg = write_config(
        dir.path(),
        "tool.toml",
        &binary_config(&format!(
            "[[exec]]\nname = \"measure\"\nprogram = \"{}\"\nargs = [\"{{input}}\", \"{{scratch}}\", \"{{element}}\"]\noutputs = [\"size.txt\", \"*.json\"]\n",
            tool.display()
        )),
    );
    let args = [input.to_str().unwrap(), "--config", &cfg, "--out", "out"];
    let (code, s) = process(dir.path(), &args);
    assert_eq!((code, count(&s, "done")), (0, 1), "{s}");
    let item = &item_dirs(&dir.path().join("out"))[0];
    assert_eq!(
        std::fs::read_to_string(item.join("size.txt"))
            .unwrap()
            .trim(),
        "7"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(item.join("info.json")).unwrap()).unwrap();
    assert!(item.ends_with(info["element"].as_str().unwrap()));
    let (_, s) = process(dir.path(), &args);
    assert_eq!(count(&s, "skipped"), 1, "same tool: skipped: {s}");
    write_tool("v2");
    let (_, s) = process(dir.path(), &args);
    assert_eq!(count(&s, "done"), 1, "changed tool: reprocessed: {s}");
}

#[test]
fn exec_runs_after_features_and_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(example("logmel-16k.toml")).unwrap();
    let cfg = write_config(
        dir.path(),
        "both.toml",
        &format!(
            "{base}\n[[exec]]\nname = \"list\"\nprogram = \"ls\"\nargs = [\"{{outputs}}\"]\nstdout = \"listing.txt\"\n"
        ),
    );
    let src = real("wav_s16_16k_mono_sound-icons-xylofon.wav");
    let (code, s) = process(
        dir.path(),
        &[src.to_str().unwrap(), "--config", &cfg, "--out", "out"],
    );
    assert_eq!((code, count(&s, "done")), (0, 1), "{s}");
    let item = &item_dirs(&dir.path().join("out"))[0];
    let listing = std::fs::read_to_string(item.join("listing.txt")).unwrap();
    assert_eq!(
        listing.trim(),
        "log_mel.npy",
        "exec sees the staged features"
    );
    assert!(item.join("log_mel.npy").is_file());
}

#[test]
fn bad_exec_configs_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    for good in ["exec-checksum.toml", "exec-ffmpeg.toml"] {
        let o = klio(
            dir.path(),
            &["config", "validate", "--config", &example(good)],
        );
        assert!(o.status.success(), "{good}: {}", stderr(&o));
    }
    for (body, needle) in [
        (
            "[[exec]]\nname = \"x\"\nprogram = \"true\"\nargs = [\"{inptu}\"]\n",
            "placeholder",
        ),
        (
            "[[exec]]\nname = \"x\"\nprogram = \"true\"\noutputs = [\"../escape\"]\n",
            "plain file name",
        ),
        (
            "[[exec]]\nname = \"x\"\nprogram = \"true\"\nstdout = \"meta.json\"\n",
            "plain file name",
        ),
        ("", "nothing to do"),
    ] {
        let cfg = write_config(dir.path(), "bad.toml", &binary_config(body));
        let o = klio(dir.path(), &["config", "validate", "--config", &cfg]);
        assert_eq!(o.status.code(), Some(2), "{body}");
        assert!(stderr(&o).contains(needle), "{body}: {}", stderr(&o));
    }
    let cfg = write_config(
        dir.path(),
        "missing.toml",
        &binary_config("[[exec]]\nname = \"x\"\nprogram = \"no-such-tool-klio\"\n"),
    );
    let input = dir.path().join("a.bin");
    std::fs::write(&input, b"a").unwrap();
    let o = klio(
        dir.path(),
        &[
            "process",
            input.to_str().unwrap(),
            "--config",
            &cfg,
            "--out",
            "o",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not found in PATH"), "{}", stderr(&o));
}
