//! Crash consistency: SIGKILL `process` (and `serve` on an inbox) at random moments, many
//! times, then let it finish and check that nothing was lost or duplicated: every item done
//! exactly once in the ledger's history, every output complete and parseable, no temp files
//! visible as outputs, the ledger's integrity check passes and it agrees with the outputs.
//!
//! All with the default `run.max_attempts`: only an item alone in flight is charged a crash,
//! so outside kills never make a good item give up, while a file that crashes klio-edge
//! every time (a debug-build fault hook) still gives up after `max_attempts` crashes.
//!
//! Kills: `KLIO_CRASH_KILLS` (default 15 for process; serve: 16 on an inbox, 10 on NATS), seed
//! `KLIO_CRASH_SEED` (default 7). `scripts/crash-harness.sh --kills 1000` runs the long version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::serve::*;

/// xorshift64*: a fixed-seed source of kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus(dir: &Path, n: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut v = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("c{i:03}.wav"));
        write_wav(&p, 0.5 + f64::from(i % 7) * 0.6, 16000, i);
        v.push(p);
    }
    for real in [
        "flac_s16_44k1_mono_sonic-pi-guit-e-slide.flac",
        "mp3_8k_mono_asterisk-demo-instruct.mp3",
        "oga_vorbis_22k05_stereo_freedesktop-service-login.oga",
    ] {
        let p = dir.join(real);
        std::fs::copy(crate::common::real(real), &p).unwrap();
        v.push(p);
    }
    v
}

/// The example config with the product's defaults (`run.max_attempts = 3`): kills from
/// outside must never make a good item give up.
fn config(dir: &Path, extra: &str) -> String {
    let text = format!(
        "{}\n{extra}",
        std::fs::read_to_string(crate::common::example("logmel-16k.toml")).unwrap()
    );
    let p = dir.join("crash.toml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Every invariant of a finished output folder + ledger, for `elements`.
fn verify(out: &Path, ledger: &Path, elements: &[String]) {
    assert!(ledger_ok(ledger), "integrity check");
    let rows = crate::common::ledger::rows(ledger);
    let mut want = elements.to_vec();
    want.sort();
    assert_eq!(
        rows.iter().map(|r| r.element.clone()).collect::<Vec<_>>(),
        want,
        "ledger rows"
    );
    let done_history = crate::common::ledger::done_counts(ledger);
    for r in &rows {
        let e = &r.element;
        assert_eq!(r.state, "done", "{e}: {:?}", r.error_message);
        assert_eq!(done_history.get(e), Some(&1), "{e} done exactly once");
        let meta = crate::common::read_json(&out.join(e).join("meta.json"));
        assert_eq!(meta["element"], e.as_str());
        assert_eq!(
            meta["input_hash"].as_str(),
            r.input_hash.as_deref(),
            "{e}: ledger and meta agree"
        );
        for f in &r.outputs {
            assert!(out.join(e).join(f).is_file(), "{e}: ledger lists {f}");
        }
    }
    check_outputs(out, &want);
    // Nothing but item folders, the ledger and (empty) temp space.
    for entry in std::fs::read_dir(out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            if name == ".klio-tmp" {
                let left = crate::common::all_files(&entry.path());
                assert!(left.is_empty(), "temp files left: {left:?}");
            }
            continue;
        }
        // The ledger and SQLite's WAL files; no crash witness outlives a clean run.
        assert!(
            [
                "klio-ledger.sqlite",
                "klio-ledger.sqlite-wal",
                "klio-ledger.sqlite-shm"
            ]
            .contains(&name.as_str()),
            "stray file {name}"
        );
    }
}

#[test]
fn process_survives_random_sigkills() {
    // 15 kills: the criterion (50 pass too). Outside kills are told from crashes by
    // the crash witness and charged one time in three when they find an item alone, so the
    // longest real file of this corpus (most of a run's time, the one kills find alone) does
    // not give up (see README, "Crashes and attempts").
    let kills = env_u64("KLIO_CRASH_KILLS", 15);
    let mut rng = Rng(env_u64("KLIO_CRASH_SEED", 7) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inputs = corpus(&dir.join("in"), 40);
    let elements: Vec<String> = inputs.iter().map(|p| element_of(p)).collect();
    let cfg = config(dir, "");
    let out = dir.join("out");
    let ledger = out.join("klio-ledger.sqlite");
    let args = [
        "process", "--config", &cfg, "--out", "out", "-j", "2", "-q", "in",
    ];
    // Kill windows scale with how long a whole run takes here.
    let t = std::time::Instant::now();
    let log = dir.join("first.log");
    let mut p = spawn(dir, &args, &[], &log);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(120), &log), 0);
    let full_ms = (t.elapsed().as_millis() as u64).max(50);
    verify(&out, &ledger, &elements);
    std::fs::remove_dir_all(&out).unwrap();

    let (killed, rounds) = kill_loop(
        dir,
        &args,
        &[],
        kills,
        || rng.below(full_ms + 20),
        || {
            verify(&out, &ledger, &elements);
            std::fs::remove_dir_all(&out).unwrap();
        },
    );
    let log = dir.join("last.log");
    let mut p = spawn(dir, &args, &[], &log);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(120), &log), 0);
    verify(&out, &ledger, &elements);
    eprintln!("process: {killed} kills, {rounds} rounds finished between kills, all verified");
}

/// The crash witness tells the process's own abort from a SIGABRT sent from outside
/// (systemd's watchdog sends one): the abort writes it, the outside signal leaves it empty.
#[test]
fn the_crash_witness_is_written_by_an_own_abort_not_by_a_signal_from_outside() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    corpus(&dir.join("in"), 8);
    write_wav(&dir.join("in").join("c004-poison.wav"), 1.0, 16000, 99);
    let cfg = config(dir, "");
    let args = [
        "process", "--config", &cfg, "--out", "out", "-j", "1", "-q", "in",
    ];
    let witness = || -> Option<PathBuf> {
        std::fs::read_dir(dir.join("out"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("klio-ledger.sqlite-crash-"))
            })
    };
    // From outside, once the run is under way (its witness armed).
    let log = dir.join("outside.log");
    let mut p = spawn(dir, &args, &[], &log);
    let t = std::time::Instant::now();
    while witness().is_none() {
        assert!(
            p.try_wait().unwrap().is_none(),
            "the run ended before its witness was seen"
        );
        assert!(t.elapsed() < Duration::from_secs(60), "no witness");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Safety: signalling our own child.
    assert_eq!(unsafe { libc::kill(p.id() as i32, libc::SIGABRT) }, 0);
    let status = p.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the outside SIGABRT killed it"
    );
    let w = witness().expect("a killed run leaves its witness for the next run");
    assert_eq!(
        std::fs::metadata(&w).unwrap().len(),
        0,
        "a SIGABRT from outside is not a crash"
    );
    // The process's own abort (the test hook on the poison file), in a fresh output folder.
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    let log = dir.join("own.log");
    let mut p = spawn(dir, &args, &[("KLIO_EDGE_TEST_ABORT_ON", "poison")], &log);
    let status = p.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "it aborted");
    let w = witness().expect("a crashed run leaves its witness");
    assert_eq!(std::fs::read_to_string(&w).unwrap(), "crashed\n");
}

#[test]
fn a_file_that_crashes_every_time_gives_up_after_max_attempts_and_nothing_else_is_charged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut inputs = corpus(&dir.join("in"), 8);
    let poison = dir.join("in").join("c004-poison.wav");
    write_wav(&poison, 1.0, 16000, 99);
    inputs.push(poison.clone());
    let cfg = config(dir, "");
    let out = dir.join("out");
    let ledger = out.join("klio-ledger.sqlite");
    let args = [
        "process", "--config", &cfg, "--out", "out", "-j", "2", "-q", "in",
    ];
    let env = [("KLIO_EDGE_TEST_ABORT_ON", "poison")];
    let mut aborted = 0;
    let code = loop {
        let log = dir.join(format!("run{aborted}.log"));
        let mut p = spawn(dir, &args, &env, &log);
        let code = wait_exit(&mut p, Duration::from_secs(120), &log);
        if code != -1 {
            break code;
        }
        aborted += 1;
        assert!(aborted <= 10, "still crashing after {aborted} runs");
    };
    // The first crash found it beside another item: refunded. Each lone retry is charged.
    assert_eq!(
        aborted, 4,
        "crashes before the poison file gave up (max_attempts = 3)"
    );
    assert_eq!(code, 1, "the last run reports the item that gave up");
    let poison_id = element_of(&poison);
    let row = crate::common::ledger::row(&ledger, &poison_id);
    assert_eq!(
        (row.state.as_str(), row.error_kind.as_deref(), row.attempts),
        ("failed", Some("interrupted"), 3)
    );
    let history = crate::common::ledger::history(&ledger, &poison_id);
    assert_eq!(
        history.iter().filter(|s| *s == "gave_up").count(),
        1,
        "{history:?}"
    );
    // Every other item: done exactly once.
    let done = crate::common::ledger::done_counts(&ledger);
    for p in inputs.iter().filter(|p| **p != poison) {
        let e = element_of(p);
        assert_eq!(crate::common::ledger::row(&ledger, &e).state, "done", "{e}");
        assert_eq!(done.get(&e), Some(&1), "{e} done exactly once");
    }
}

#[test]
fn serve_on_an_inbox_survives_random_sigkills() {
    let kills = env_u64("KLIO_CRASH_KILLS", 48) / 3;
    let mut rng = Rng(env_u64("KLIO_CRASH_SEED", 7).wrapping_mul(31) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inputs = corpus(&dir.join("src"), 30);
    let inbox = dir.join("inbox");
    let extra = "[serve]\nsource = \"inbox\"\nhttp = \"\"\npoll_s = 0.2\n[serve.inbox]\ndir = \"inbox\"\nsettle_s = 0\n";
    let cfg = config(dir, extra);
    let out = dir.join("out");
    let ledger = out.join("klio-ledger.sqlite");
    let owned = serve_args(&cfg, Some("out"), None, Some(2), true);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let fill = || -> Vec<String> {
        std::fs::create_dir_all(&inbox).unwrap();
        inputs
            .iter()
            .map(|p| {
                let dest = inbox.join(p.file_name().unwrap());
                std::fs::copy(p, &dest).unwrap();
                klio_edge::item::element_id(
                    &std::fs::canonicalize(&inbox)
                        .unwrap()
                        .join(p.file_name().unwrap()),
                )
            })
            .collect()
    };
    let check = |elements: &[String]| {
        verify(&out, &ledger, elements);
        assert_eq!(
            count_files(&inbox.join("done")),
            inputs.len(),
            "all files in done/"
        );
        assert_eq!(count_files(&inbox.join(".klio-processing")), 0);
        assert!(paths_in(&inbox).is_empty(), "inbox empty");
    };
    let mut elements = fill();
    let (killed, rounds) = kill_loop(
        dir,
        &args,
        &[],
        kills,
        || 30 + rng.below(400),
        || {
            check(&elements);
            std::fs::remove_dir_all(&out).unwrap();
            std::fs::remove_dir_all(&inbox).unwrap();
            elements = fill();
        },
    );
    let log = dir.join("last.log");
    let mut p = spawn(dir, &args, &[], &log);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(120), &log), 0);
    check(&elements);
    eprintln!("serve: {killed} kills, {rounds} rounds finished between kills, all verified");
}

/// Runs `args` again and again, SIGKILLing each run `delay()` ms after it starts, until
/// `kills` runs were killed. A run that exits first must exit 0; `finished` then checks that
/// round and starts a fresh one. Returns (kills, finished rounds).
fn kill_loop(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    kills: u64,
    mut delay: impl FnMut() -> u64,
    mut finished: impl FnMut(),
) -> (u64, u64) {
    let (mut killed, mut rounds) = (0, 0);
    let log = dir.join("run.log");
    while killed < kills {
        let mut p = spawn(dir, args, env, &log);
        std::thread::sleep(Duration::from_millis(delay()));
        if p.try_wait().unwrap().is_none() {
            p.kill().unwrap();
            p.wait().unwrap();
            killed += 1;
        } else {
            let code = p.wait().unwrap().code();
            let failed: Vec<_> = crate::common::ledger::rows(&dir.join("out/klio-ledger.sqlite"))
                .into_iter()
                .filter(|r| r.state != "done")
                .collect();
            assert_eq!(
                code,
                Some(0),
                "{}\nnot done: {failed:?}",
                std::fs::read_to_string(&log).unwrap()
            );
            finished();
            rounds += 1;
        }
    }
    (killed, rounds)
}

fn count_files(d: &Path) -> usize {
    std::fs::read_dir(d)
        .map(|r| r.flatten().count())
        .unwrap_or(0)
}

#[test]
fn serve_on_nats_survives_random_sigkills() {
    let kills = env_u64("KLIO_CRASH_KILLS", 50) / 5;
    let mut rng = Rng(env_u64("KLIO_CRASH_SEED", 7).wrapping_mul(97) | 1);
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let inputs = corpus(&dir.join("in"), 25);
    let elements: Vec<String> = inputs.iter().map(|p| element_of(p)).collect();
    let extra = "[serve]\nsource = \"nats\"\nhttp = \"\"\npoll_s = 0.2\nallow_paths = [\"in\"]\n\
                 [serve.nats]\nack_wait_s = 1\n";
    let cfg = config(dir, extra);
    let env = [("NATS_URL", nats.url.as_str())];
    let out = dir.join("out");
    let ledger = out.join("klio-ledger.sqlite");
    let publish = || {
        let log = dir.join("publish.log");
        let mut p = spawn(dir, &["publish", "--config", &cfg, "in"], &env, &log);
        assert_eq!(wait_exit(&mut p, Duration::from_secs(60), &log), 0);
    };
    let owned = serve_args(&cfg, Some("out"), None, Some(2), true);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    publish();
    let (killed, rounds) = kill_loop(
        dir,
        &args,
        &env,
        kills,
        || 50 + rng.below(500),
        || {
            verify(&out, &ledger, &elements);
            std::fs::remove_dir_all(&out).unwrap();
            publish();
        },
    );
    let log = dir.join("last.log");
    let mut p = spawn(dir, &args, &env, &log);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(120), &log), 0);
    verify(&out, &ledger, &elements);
    eprintln!(
        "serve on NATS: {killed} kills, {rounds} rounds finished between kills, all verified"
    );
}
