//! Command-line conventions (ripgrep, fd and cargo as the references): closed pipes, colour,
//! `@-`, extension selection, read-only ledger commands, `ledger show` / `retry`,
//! `config validate FILE`, `--set` and `${VAR}`, `serve --http`, completions and the man page,
//! JSON logs, the meta.json frame keys, and the note about items made with another config.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::*;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klio-edge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KLIO_") || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const SMALL: &str = "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = [\"log_mel\"]\nn_fft = 512\nhop_length = 256\nn_mels = 40\n";

/// A folder with a small config, two real recordings and a broken one.
fn setup(d: &Path) {
    std::fs::write(d.join("c.toml"), SMALL).unwrap();
    std::fs::create_dir_all(d.join("in")).unwrap();
    for f in [
        "wav_s16_16k_mono_sound-icons-xylofon.wav",
        "flac_s24_44k1_mono_sonic-pi-misc-burp.flac",
    ] {
        std::fs::copy(real(f), d.join("in").join(f)).unwrap();
    }
    std::fs::copy(
        corpus().join("bad/text-file-named.wav"),
        d.join("in/broken.wav"),
    )
    .unwrap();
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["config", "show"][..],
        &["completions", "bash"][..],
        &["man"][..],
    ] {
        let mut child = bin()
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before klio-edge writes: its first write meets a closed pipe.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let code = o.status.code();
        let err = stderr(&o);
        assert!(
            matches!(code, Some(0) | Some(141)) && !err.contains("panicked"),
            "{args:?}: {code:?} {err}"
        );
        assert!(err.is_empty(), "{args:?}: nothing on stderr, got {err}");
    }
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Not a terminal: no escape codes.
    let o = klio(d, &["process", "missing.wav", "--out", "o"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!has_colour(&stderr(&o)), "{:?}", stderr(&o));
    // A terminal (script(1) gives it a pty): colour, unless NO_COLOR is set.
    let exe = env!("CARGO_BIN_EXE_klio-edge");
    let run = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.current_dir(d)
            .args([
                "-qec",
                &format!("{exe} process missing.wav --out o2"),
                "/dev/null",
            ])
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let o = cmd
            .output()
            .expect("script(1) from util-linux runs the binary on a pty");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let tty = run(false);
    assert!(tty.contains("missing.wav"), "{tty}");
    assert!(has_colour(&tty), "colour on a terminal: {tty:?}");
    let plain = run(true);
    assert!(plain.contains("missing.wav"), "{plain}");
    assert!(!has_colour(&plain), "NO_COLOR: {plain:?}");
}

/// Whether `text` holds an SGR (colour or style) escape, `ESC [ digits ; ... m`; cursor
/// movements of a progress bar are not colour.
fn has_colour(text: &str) -> bool {
    text.split('\u{1b}').skip(1).any(|rest| {
        rest.strip_prefix('[').is_some_and(|r| {
            let end = r.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            end.is_some_and(|i| r[i..].starts_with('m'))
        })
    })
}

#[test]
fn manifest_from_stdin_and_folders_take_audio_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::write(d.join("in/notes.txt"), "not audio").unwrap();
    std::fs::write(d.join("in/cover.jpg"), [0xffu8, 0xd8, 0xff]).unwrap();

    // A folder: the three audio-named files, not notes.txt or cover.jpg.
    let (code, s) = process(d, &["in", "--out", "o1", "--config", "c.toml"]);
    assert_eq!((code, count(&s, "items")), (1, 3), "{s}");
    assert_eq!(count(&s, "done"), 2, "{s}");
    // --ext narrows it; a file named outright is taken whatever its extension.
    let (_, s) = process(
        d,
        &[
            "in",
            "in/notes.txt",
            "--ext",
            "flac",
            "--out",
            "o2",
            "--config",
            "c.toml",
        ],
    );
    assert_eq!(count(&s, "items"), 2, "{s}");
    assert_eq!(count(&s, "done"), 1, "{s}");
    // run.extensions in the config does the same.
    let (_, s) = process(
        d,
        &[
            "in",
            "--set",
            "run.extensions=[\"wav\"]",
            "--out",
            "o3",
            "--config",
            "c.toml",
        ],
    );
    assert_eq!(count(&s, "items"), 2, "{s}");

    // @- reads the manifest from stdin, relative paths against the working folder.
    let mut child = bin()
        .current_dir(d)
        .args([
            "process", "--json", "-q", "@-", "--out", "o4", "--config", "c.toml",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# two files\nin/wav_s16_16k_mono_sound-icons-xylofon.wav\n\nin/notes.txt\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} / {}", stdout(&o), stderr(&o));
    });
    assert_eq!((count(&s, "items"), count(&s, "done")), (2, 1), "{s}");
}

#[test]
fn every_file_is_taken_when_decode_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("in")).unwrap();
    for f in ["a.bin", "b.txt", "c.wav"] {
        std::fs::write(d.join("in").join(f), f).unwrap();
    }
    std::fs::write(
        d.join("bin.toml"),
        "[decode]\nenabled = false\n[[exec]]\nname = \"size\"\nprogram = \"wc\"\nargs = [\"-c\", \"{input}\"]\nstdout = \"size.txt\"\n",
    )
    .unwrap();
    let (code, s) = process(d, &["in", "--out", "o", "--config", "bin.toml"]);
    assert_eq!(
        (code, count(&s, "items"), count(&s, "done")),
        (0, 3, 3),
        "{s}"
    );
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(String, u64, SystemTime)> {
    all_files(dir)
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(dir.join(&f)).unwrap();
            (f, m.len(), m.modified().unwrap())
        })
        .collect()
}

#[test]
fn ledger_commands_read_only_group_show_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    for _ in 0..3 {
        let (code, _) = process(d, &["in", "--out", "out", "--config", "c.toml"]);
        assert_eq!(code, 1);
    }
    let (_, s) = process(d, &["in", "--out", "out", "--config", "c.toml"]);
    assert_eq!((count(&s, "gave_up"), count(&s, "skipped")), (1, 2), "{s}");

    // Reading commands change nothing in the folder: no -wal, no -shm, same bytes.
    let before = snapshot(&d.join("out"));
    let element = crate::common::serve::element_of(&d.join("in/broken.wav"));
    for args in [
        &["ledger", "status", "--out", "out"][..],
        &["ledger", "status", "--out", "out", "--json"][..],
        &["ledger", "failed", "--out", "out"][..],
        &["ledger", "failed", "--out", "out", "--json"][..],
        &["ledger", "show", &element, "--out", "out"][..],
        &["ledger", "show", &element, "--out", "out", "--json"][..],
    ] {
        let o = klio(d, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        snapshot(&d.join("out")),
        before,
        "read-only commands changed files"
    );
    // A ledger that does not exist is not created.
    let o = klio(d, &["ledger", "status", "--ledger", "none/l.sqlite"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!d.join("none").exists());

    // status --json carries the same runs as the text.
    let text = stdout(&klio(d, &["ledger", "status", "--out", "out"]));
    let json: serde_json::Value =
        serde_json::from_slice(&klio(d, &["ledger", "status", "--out", "out", "--json"]).stdout)
            .unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{json}");
    for r in runs {
        assert!(
            text.contains(&format!("#{} ", r["id"])),
            "{text} lacks run {r}"
        );
    }
    assert_eq!(json["items"]["failed"], 1, "{json}");

    // failed: counts by kind first, then the items of each kind.
    let text = stdout(&klio(d, &["ledger", "failed", "--out", "out"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["1", "unknown_format"],
        "{text}"
    );
    assert!(text.contains("\nunknown_format (1 item):\n"), "{text}");
    assert!(text.contains(&element), "{text}");

    // show: the row and the whole history (three failures, then the give-up).
    let o: serde_json::Value = serde_json::from_slice(
        &klio(d, &["ledger", "show", &element, "--out", "out", "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(o["state"], "failed");
    let states: Vec<&str> = o["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "failed", "failed", "gave_up"], "{o}");
    let o = klio(d, &["ledger", "show", "no-such-element", "--out", "out"]);
    assert_eq!(o.status.code(), Some(2));

    // retry: only the kind named; the next run tries the item again.
    let o = klio(
        d,
        &["ledger", "retry", "--kind", "truncated", "--out", "out"],
    );
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "{}",
        stderr(&o)
    );
    let o = klio(
        d,
        &[
            "ledger",
            "retry",
            "--kind",
            "unknown_format",
            "--out",
            "out",
        ],
    );
    assert_eq!(stdout(&o).trim(), element, "{}", stderr(&o));
    let (_, s) = process(d, &["in", "--out", "out", "--config", "c.toml"]);
    assert_eq!((count(&s, "failed"), count(&s, "gave_up")), (1, 0), "{s}");
    let o: serde_json::Value = serde_json::from_slice(
        &klio(d, &["ledger", "show", &element, "--out", "out", "--json"]).stdout,
    )
    .unwrap();
    let states: Vec<&str> = o["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(&states[3..], ["gave_up", "retried", "failed"], "{o}");
    assert_eq!(o["attempts"], 1, "{o}");
}

#[test]
fn config_validate_checks_what_a_run_checks_and_prints_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = klio(d, &["config", "validate", "c.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hash = stdout(&o).trim().to_string();
    assert_eq!(hash.len(), 16, "{hash}");
    let (_, _) = process(d, &["in", "--out", "out", "--config", "c.toml"]);
    let json: serde_json::Value =
        serde_json::from_slice(&klio(d, &["ledger", "status", "--out", "out", "--json"]).stdout)
            .unwrap();
    assert_eq!(json["runs"][0]["config_hash"], hash.as_str(), "{json}");
    // --config and the argument agree.
    let o = klio(d, &["--config", "c.toml", "config", "validate"]);
    assert_eq!(stdout(&o).trim(), hash);

    // What only start-up finds: a missing program, a model whose sha256 differs.
    std::fs::write(
        d.join("exec.toml"),
        "[decode]\nenabled = false\n[[exec]]\nname = \"x\"\nprogram = \"no-such-program-klio\"\nargs = [\"{input}\"]\nstdout = \"x.txt\"\n",
    )
    .unwrap();
    let o = klio(d, &["config", "validate", "exec.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no-such-program-klio"),
        "{}",
        stderr(&o)
    );
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/silero_vad_openvino_16k.onnx");
    std::fs::write(
        d.join("model.toml"),
        format!(
            "[decode]\nsample_rate_hz = 16000\n[[model]]\nname = \"vad\"\npath = \"{}\"\nsha256 = \"{}\"\noutput = \"segments\"\n",
            model.display(),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let o = klio(d, &["config", "validate", "model.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SHA-256"), "{}", stderr(&o));
}

#[test]
fn set_overrides_and_environment_variables_in_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let item = "wav_s16_16k_mono_sound-icons-xylofon.wav";
    let (code, _) = process(
        d,
        &[
            &format!("in/{item}"),
            "--config",
            "c.toml",
            "--set",
            "features.n_mels=24",
            "--set",
            "output.dir=\"via-set\"",
        ],
    );
    assert_eq!(code, 0);
    let dirs = item_dirs(&d.join("via-set"));
    let (shape, _) = read_npy(&dirs[0].join("log_mel.npy"));
    assert_eq!(shape[0], 24);
    // A bad key is named.
    let o = klio(d, &["config", "show", "--set", "features.n_melz=3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("n_melz"), "{}", stderr(&o));

    std::fs::write(
        d.join("env.toml"),
        "[output]\ndir = \"${KLIO_TEST_OUT}\"\nledger = \"${KLIO_TEST_LEDGER:-ledger.sqlite}\"\n",
    )
    .unwrap();
    let o = klio_env(
        d,
        &["config", "show", "env.toml"],
        &[("KLIO_TEST_OUT", "from-env")],
    );
    let text = stdout(&o);
    assert!(text.contains("dir = \"from-env\""), "{text}{}", stderr(&o));
    assert!(text.contains("ledger = \"ledger.sqlite\""), "{text}");
    let o = klio(d, &["config", "show", "env.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("${KLIO_TEST_OUT} is not set"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_logs_name_element_and_stage_and_meta_counts_feature_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = klio(
        d,
        &[
            "process",
            "in",
            "--out",
            "out",
            "--config",
            "c.toml",
            "--log-format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let items: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["element"].is_string()).collect();
    assert_eq!(items.len(), 3, "{lines:?}");
    for l in &items {
        assert!(l["stage"].is_string(), "{l}");
    }
    let failed = items.iter().find(|l| l["level"] == "WARN").unwrap();
    assert_eq!(
        (failed["stage"].as_str(), failed["error_kind"].as_str()),
        (Some("decode"), Some("unknown_format"))
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "ERROR" || l["element"].is_string()),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["message"], "run finished", "{last}");
    assert_eq!(
        (
            last["done"].as_u64(),
            last["failed"].as_u64(),
            last["items"].as_u64()
        ),
        (Some(2), Some(1), Some(3)),
        "{last}"
    );
    assert!(last["realtime_factor"].as_f64().unwrap() > 0.0, "{last}");

    for item in item_dirs(&d.join("out")) {
        let meta = read_json(&item.join("meta.json"));
        let (shape, _) = read_npy(&item.join("log_mel.npy"));
        assert_eq!(meta["frames"], shape[1], "{meta}");
        assert_eq!(meta["hop_length"], 256);
        assert_eq!(meta["frame_rate_hz"], 16000.0 / 256.0);
        assert!(
            meta["samples"].as_u64().unwrap() > 256 * (shape[1] as u64 - 2),
            "{meta}"
        );
        assert!(meta["dsp_isa"].is_string());
    }
}

#[test]
fn a_config_change_is_announced_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = klio(d, &["process", "in", "--out", "out", "--config", "c.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let first = stderr(&o);
    assert!(
        first.contains("2 done, 0 skipped, 1 failed of 3 items"),
        "{first}"
    );
    assert!(!first.contains("another config"), "{first}");
    let o = klio(
        d,
        &[
            "process",
            "in",
            "--out",
            "out",
            "--config",
            "c.toml",
            "--set",
            "features.n_mels=32",
        ],
    );
    let err = stderr(&o);
    let note = err
        .lines()
        .position(|l| {
            l.contains("2 done items were made with another config and will be recomputed")
        })
        .unwrap_or_else(|| panic!("no note: {err}"));
    let first_item = err
        .lines()
        .position(|l| l.contains("done     ") || l.contains("failed   "))
        .unwrap();
    assert!(note < first_item, "{err}");
    // A run that decodes nothing says so instead of "0x realtime"; one item is "1 item".
    let o = klio(
        d,
        &[
            "process",
            "in/wav_s16_16k_mono_sound-icons-xylofon.wav",
            "--out",
            "out",
            "--config",
            "c.toml",
            "--set",
            "features.n_mels=32",
        ],
    );
    let err = stderr(&o);
    assert!(
        err.contains("0 done, 1 skipped, 0 failed of 1 item; no audio decoded"),
        "{err}"
    );
    assert!(!err.contains("0x realtime"), "{err}");
}

#[test]
fn completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = klio(dir.path(), &["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        let flags: [&str; 2] = if shell == "fish" {
            ["-l set", "-l out"]
        } else {
            ["--set", "--out"]
        };
        for word in ["process", "serve", "ledger", "retry"].iter().chain(&flags) {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let bash = stdout(&klio(dir.path(), &["completions", "bash"]));
    std::fs::write(dir.path().join("c.bash"), bash).unwrap();
    let o = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("c.bash"))
        .output()
        .unwrap();
    assert!(o.status.success(), "bash -n: {}", stderr(&o));
    let man = stdout(&klio(dir.path(), &["man"]));
    assert!(
        man.starts_with(".ie") || man.contains(".TH klio-edge"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(
        man.contains("process") && man.contains("ledger"),
        "man page lacks commands"
    );
}

#[test]
fn two_serves_on_one_host_with_one_config() {
    use crate::common::serve::{free_port, signal, spawn, wait_exit, wait_for};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    std::fs::create_dir(d.join("inbox")).unwrap();
    std::fs::write(
        d.join("s.toml"),
        format!("{SMALL}[serve]\nsource = \"inbox\"\nhttp = \"127.0.0.1:{port}\"\n[serve.inbox]\ndir = \"inbox\"\n"),
    )
    .unwrap();
    let args = |ledger: &'static str| {
        vec![
            "serve", "--config", "s.toml", "--out", "out", "--ledger", ledger,
        ]
    };
    let mut a = spawn(d, &args("a.sqlite"), &[], &d.join("a.log"));
    wait_for(Duration::from_secs(30), "the first serve's port", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The same config again: the port is taken, and the error says what to do.
    let mut b = spawn(d, &args("b.sqlite"), &[], &d.join("b.log"));
    assert_eq!(
        wait_exit(&mut b, Duration::from_secs(30), &d.join("b.log")),
        2
    );
    let log = std::fs::read_to_string(d.join("b.log")).unwrap();
    assert!(log.contains("--http 127.0.0.1:0"), "{log}");
    // With --http it runs beside the first (and says where it listens).
    let mut c_args = args("c.sqlite");
    c_args.extend(["--http", "127.0.0.1:0"]);
    let mut c = spawn(d, &c_args, &[], &d.join("c.log"));
    wait_for(
        Duration::from_secs(30),
        "the second serve's endpoint",
        || {
            std::fs::read_to_string(d.join("c.log"))
                .is_ok_and(|l| l.contains("health and metrics on http://127.0.0.1:"))
        },
    );
    let mut e_args = args("e.sqlite");
    e_args.extend(["--http", "off"]);
    let mut e = spawn(d, &e_args, &[], &d.join("e.log"));
    std::thread::sleep(Duration::from_secs(2));
    for (child, log) in [(&mut a, "a.log"), (&mut c, "c.log"), (&mut e, "e.log")] {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{log} exited: {}",
            std::fs::read_to_string(d.join(log)).unwrap()
        );
        signal(child, "TERM");
        assert_eq!(wait_exit(child, Duration::from_secs(30), &d.join(log)), 0);
    }
    assert!(!std::fs::read_to_string(d.join("e.log"))
        .unwrap()
        .contains("health and metrics"));
}
