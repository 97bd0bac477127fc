//! Hostile input: limits refuse oversized inputs before allocating, a slow item times out,
//! an unwritable output location fails one item and leaves the ledger consistent, hostile file
//! names never escape the output folder, corrupt or foreign ledgers are refused untouched.

use std::path::Path;

use crate::common::serve::{done_elements, ledger_ok, write_wav};

fn failed_kinds(ledger: &Path) -> Vec<(String, String)> {
    crate::common::ledger::rows(ledger)
        .into_iter()
        .filter(|r| r.state == "failed")
        .map(|r| (r.element, r.error_kind.unwrap_or_default()))
        .collect()
}

fn kind_of(ledger: &Path, file: &Path) -> Option<String> {
    let e = crate::common::serve::element_of(file);
    failed_kinds(ledger)
        .into_iter()
        .find(|(el, _)| *el == e)
        .map(|(_, k)| k)
}

#[test]
fn configured_limits_refuse_items_and_the_rest_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("in")).unwrap();
    let small = dir.join("in/small.wav");
    write_wav(&small, 0.5, 16000, 1);
    let big = dir.join("in/big.wav");
    write_wav(&big, 40.0, 16000, 2); // 1.28 MB: over max_input_bytes
    let fast = dir.join("in/fast.wav");
    write_wav(&fast, 0.5, 48000, 3); // 48 kHz: over max_sample_rate_hz
    let stereo = dir.join("in/stereo.flac");
    std::fs::copy(
        crate::common::real("flac_s16_44k1_stereo_sonic-pi-loop-tabla.flac"),
        &stereo,
    )
    .unwrap();
    let cfg = dir.join("limits.toml");
    std::fs::write(
        &cfg,
        "[decode]\nsample_rate_hz = 16000\nmax_channels = 1\nmax_sample_rate_hz = 44100\n\
         [features]\ncompute = [\"log_mel\"]\n[run]\nmax_input_bytes = 1000000\n",
    )
    .unwrap();
    let (code, summary) =
        crate::common::process(dir, &["--config", "limits.toml", "--out", "out", "in"]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(crate::common::count(&summary, "done"), 1);
    let ledger = dir.join("out/klio-ledger.sqlite");
    assert_eq!(kind_of(&ledger, &big).as_deref(), Some("too_large"));
    assert_eq!(
        kind_of(&ledger, &fast).as_deref(),
        Some("sample_rate_too_high")
    );
    assert_eq!(
        kind_of(&ledger, &stereo).as_deref(),
        Some("too_many_channels")
    );
    assert!(ledger_ok(&ledger));
}

#[test]
fn an_item_over_its_time_limit_fails_with_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let long = crate::common::real("wav_s16_8k_mono_moh-reno-project-system.wav"); // 5 min
    std::fs::write(
        dir.join("t.toml"),
        "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = [\"log_mel\"]\n[run]\nitem_timeout_s = 0.001\n",
    )
    .unwrap();
    let (code, summary) = crate::common::process(
        dir,
        &["--config", "t.toml", "--out", "out", long.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{summary}");
    let ledger = dir.join("out/klio-ledger.sqlite");
    assert_eq!(kind_of(&ledger, &long).as_deref(), Some("timeout"));
    assert!(crate::common::item_dirs(&dir.join("out")).is_empty());
}

#[test]
fn an_unwritable_item_folder_fails_that_item_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("in")).unwrap();
    let files: Vec<_> = (0..4)
        .map(|i| {
            let p = dir.join(format!("in/f{i}.wav"));
            write_wav(&p, 0.5, 16000, i);
            p
        })
        .collect();
    // Where f0's folder would go, a plain file is in the way.
    std::fs::create_dir(dir.join("out")).unwrap();
    let blocked = dir
        .join("out")
        .join(crate::common::serve::element_of(&files[0]));
    std::fs::write(&blocked, b"in the way").unwrap();
    let (code, summary) = crate::common::process(
        dir,
        &[
            "--config",
            &crate::common::example("logmel-16k.toml"),
            "--out",
            "out",
            "in",
        ],
    );
    assert_eq!(code, 1, "{summary}");
    assert_eq!(crate::common::count(&summary, "done"), 3);
    let ledger = dir.join("out/klio-ledger.sqlite");
    assert_eq!(kind_of(&ledger, &files[0]).as_deref(), Some("sink"));
    assert_eq!(std::fs::read(&blocked).unwrap(), b"in the way");
    assert_eq!(done_elements(&ledger).len(), 3);
    assert!(ledger_ok(&ledger));
}

#[test]
fn hostile_file_names_stay_inside_the_output_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inp = dir.join("in");
    std::fs::create_dir(&inp).unwrap();
    // (Names starting with '.' are hidden files, which folder inputs skip.)
    let names = [
        "x..wav".to_string(),
        "-rf.wav".to_string(),
        "a\nb.wav".to_string(),
        "evil\u{202e}vaw.exe.wav".to_string(),
        "名前 スペース.wav".to_string(),
        format!("{}.wav", "x".repeat(240)),
        "%2e%2e%2fescape.wav".to_string(),
    ];
    for (i, n) in names.iter().enumerate() {
        write_wav(&inp.join(n), 0.3, 16000, i as u32);
    }
    let (code, summary) = crate::common::process(
        dir,
        &[
            "--config",
            &crate::common::example("logmel-16k.toml"),
            "--out",
            "out",
            "in",
        ],
    );
    assert_eq!(code, 0, "{summary}");
    assert_eq!(crate::common::count(&summary, "done"), names.len() as u64);
    let items = crate::common::item_dirs(&dir.join("out"));
    assert_eq!(items.len(), names.len());
    for d in items {
        assert_eq!(d.parent().unwrap(), dir.join("out"));
        let n = d.file_name().unwrap().to_str().unwrap();
        assert!(
            n.len() <= 81
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{n:?}"
        );
        assert!(!n.starts_with('.'));
    }
    // Nothing was written beside the output folder.
    let mut top: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["in", "out"]);
}

#[test]
fn corrupt_or_foreign_ledgers_are_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wav = dir.join("a.wav");
    write_wav(&wav, 0.3, 16000, 1);
    // Garbage, a foreign SQLite database, and a real ledger cut short.
    std::fs::write(dir.join("garbage.sqlite"), vec![0x5a; 4096]).unwrap();
    {
        let c = rusqlite::Connection::open(dir.join("foreign.sqlite")).unwrap();
        c.execute_batch("CREATE TABLE items (x); INSERT INTO items VALUES (1);")
            .unwrap();
    }
    let (code, _) = crate::common::process(dir, &["--out", "good", "a.wav"]);
    assert_eq!(code, 0);
    let good = std::fs::read(dir.join("good/klio-ledger.sqlite")).unwrap();
    std::fs::write(dir.join("cut.sqlite"), &good[..good.len() / 2]).unwrap();
    for name in ["garbage.sqlite", "foreign.sqlite", "cut.sqlite"] {
        let before = std::fs::read(dir.join(name)).unwrap();
        let o = crate::common::klio(dir, &["process", "--out", "o", "--ledger", name, "a.wav"]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = crate::common::stderr(&o);
        assert!(err.contains("move it aside"), "{name}: {err}");
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            before,
            "{name} untouched"
        );
        let o = crate::common::klio(dir, &["ledger", "status", "--ledger", name]);
        assert_eq!(o.status.code(), Some(2), "{name}");
    }
}

/// The hostile-input trial's files, each failing alone with the kind that says what is wrong
/// (and whether a retry could help), while the good file of the same run finishes: a WAV at
/// 1 Hz (refused before it is resampled), a symlink loop and a folder with nothing to take
/// (not files: not retried), plain `http://` without `store.allow_http` (refused at once,
/// not retried as a network failure), and a file a stage panics on (`crash`, with the
/// message; the run goes on).
#[test]
fn hostile_files_fail_alone_with_the_kind_that_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = dir.join("good.wav");
    write_wav(&good, 0.5, 16000, 1);
    let one_hz = dir.join("one-hz.wav");
    std::fs::write(&one_hz, crate::common::wav::pcm(&[0.1; 10], 1, 16)).unwrap();
    let looped = dir.join("loop.wav");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let folder = dir.join("x.wav");
    std::fs::create_dir(&folder).unwrap();
    let panics = dir.join("panic-me.wav");
    write_wav(&panics, 0.5, 16000, 2);
    let url = "http://127.0.0.1:9/a.wav";
    std::fs::write(
        dir.join("c.toml"),
        "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = [\"log_mel\"]\n",
    )
    .unwrap();
    let (code, summary) = crate::common::process_env(
        dir,
        &[
            "--config",
            "c.toml",
            "--out",
            "out",
            "good.wav",
            "one-hz.wav",
            "loop.wav",
            "x.wav",
            "panic-me.wav",
            url,
        ],
        &[("KLIO_EDGE_TEST_PANIC_ON", "panic-me")],
    );
    assert_eq!(code, 1, "{summary}");
    assert_eq!(
        (
            crate::common::count(&summary, "done"),
            crate::common::count(&summary, "failed")
        ),
        (1, 5),
        "{summary}"
    );
    let ledger = dir.join("out/klio-ledger.sqlite");
    let rows = crate::common::ledger::rows(&ledger);
    let kind = |source: &str| {
        let r = rows
            .iter()
            .find(|r| r.source.ends_with(source))
            .unwrap_or_else(|| panic!("no row for {source}: {rows:?}"));
        (
            r.error_kind.clone().unwrap_or_default(),
            r.error_message.clone().unwrap_or_default(),
        )
    };
    assert_eq!(kind("one-hz.wav").0, "sample_rate_too_low");
    assert_eq!(kind("loop.wav").0, "not_a_file");
    assert_eq!(kind("x.wav").0, "not_a_file");
    assert_eq!(kind(url).0, "fetch_denied", "{:?}", kind(url));
    let (k, msg) = kind("panic-me.wav");
    assert_eq!(k, "crash");
    assert!(msg.contains("test hook: a stage panicked"), "{msg}");
    assert!(ledger_ok(&ledger));
    for k in ["not_a_file", "fetch_denied", "crash", "sample_rate_too_low"] {
        assert!(
            !klio_edge::pipeline::ErrorKind::from_name(k)
                .unwrap()
                .is_retryable(),
            "{k}"
        );
    }
}

/// Headers that promise more than the file holds: a CAF whose data chunk claims 2^62 bytes,
/// an AIFF whose COMM chunk declares 2^31 - 1 frames but holds 1000. Neither is a retryable
/// `io` error nor "done": they fail with a kind that says the file is at fault.
#[test]
fn headers_promising_more_than_the_file_holds_fail_as_the_files_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pcm: Vec<u8> = (0..1000u32)
        .flat_map(|i| (((i as f32 * 0.05).sin() * 8000.0) as i16).to_be_bytes())
        .collect();
    let mut caf = b"caff\x00\x01\x00\x00".to_vec();
    caf.extend_from_slice(b"desc");
    caf.extend_from_slice(&32i64.to_be_bytes());
    caf.extend_from_slice(&44100f64.to_be_bytes());
    caf.extend_from_slice(b"lpcm");
    for v in [0u32, 2, 1, 1, 16] {
        caf.extend_from_slice(&v.to_be_bytes());
    }
    caf.extend_from_slice(b"data");
    caf.extend_from_slice(&(1i64 << 62).to_be_bytes());
    caf.extend_from_slice(&0u32.to_be_bytes());
    caf.extend_from_slice(&pcm);
    std::fs::write(dir.join("huge.caf"), &caf).unwrap();
    let mut comm = 1i16.to_be_bytes().to_vec();
    comm.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    comm.extend_from_slice(&16i16.to_be_bytes());
    comm.extend_from_slice(&[0x40, 0x0e, 0xac, 0x44, 0, 0, 0, 0, 0, 0]); // 44100 as f80
    let mut body = b"AIFF".to_vec();
    body.extend_from_slice(b"COMM");
    body.extend_from_slice(&(comm.len() as u32).to_be_bytes());
    body.extend_from_slice(&comm);
    body.extend_from_slice(b"SSND");
    body.extend_from_slice(&(8 + pcm.len() as u32).to_be_bytes());
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&pcm);
    let mut aiff = b"FORM".to_vec();
    aiff.extend_from_slice(&(body.len() as u32).to_be_bytes());
    aiff.extend_from_slice(&body);
    std::fs::write(dir.join("short.aiff"), &aiff).unwrap();
    let (code, summary) = crate::common::process(dir, &["--out", "out", "huge.caf", "short.aiff"]);
    assert_eq!(code, 1, "{summary}");
    let ledger = dir.join("out/klio-ledger.sqlite");
    for (file, kinds) in [
        (
            "huge.caf",
            &["too_long", "invalid_stream", "truncated", "corrupt"][..],
        ),
        ("short.aiff", &["too_long", "truncated"][..]),
    ] {
        let k = kind_of(&ledger, &dir.join(file)).unwrap_or_else(|| panic!("{file} is not failed"));
        assert!(kinds.contains(&k.as_str()), "{file}: {k}");
        let kind = klio_edge::pipeline::ErrorKind::from_name(&k).unwrap();
        assert!(!kind.is_retryable(), "{file}: {k}");
    }
}
