//! `serve` on Google Pub/Sub against a real emulator (cloudbox) on loopback, speaking Klio's
//! envelope: every intake rule with messages built from the spec by hand, dead letters, a
//! fleet of two with one SIGKILLed, and a chain of two klio-edge jobs.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::common::pubsub::{decode, job, klio, Emulator, To, PROJECT};
use crate::common::serve::{
    done_elements, element_of, history, serve_args, spawn, spawn_args, wait_exit, write_wav,
};

/// One emulator and its serve processes at a time: they are heavy for a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const ME: &str = "klio-edge-example";

/// The example config with the HTTP port off and `extra` appended.
fn config(dir: &Path, name: &str, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(crate::common::example("serve-pubsub.toml")).unwrap();
    text = text
        .replace("http = \"127.0.0.1:9464\"", "http = \"\"")
        // The test's own folder: every input it publishes lies under it.
        .replace("allow_paths = [\"corpus\"]", "allow_paths = [\".\"]");
    for (from, to) in edits {
        assert!(text.contains(from), "{from} not in the example");
        text = text.replace(from, to);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn serve(dir: &Path, cfg: &str, out: &str, ledger: &str, env: &[(&str, &str)], log: &str) -> i32 {
    let log = dir.join(log);
    let mut s = spawn_args(
        dir,
        &serve_args(cfg, Some(out), Some(ledger), None, true),
        env,
        &log,
    );
    let code = wait_exit(&mut s, Duration::from_secs(180), &log);
    assert_eq!(code, 0, "{}", std::fs::read_to_string(&log).unwrap());
    code
}

/// Elements a ledger shows `running` (claimed, not finished).
fn running(ledger: &Path) -> Vec<String> {
    crate::common::ledger::in_state(ledger, "running")
}

#[test]
fn klio_rules_on_pubsub() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let emu = Emulator::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = config(d, "job.toml", &[]);
    emu.create_subscription("klio-in-sub", "klio-in");
    emu.create_subscription("watch-out", "klio-out");
    emu.create_subscription("watch-dead", "klio-dead");
    let wav = |n: &str, seed| {
        let p = d.join(n);
        write_wav(&p, 1.0, 16000, seed);
        p.to_string_lossy().into_owned()
    };
    let (a, v1, trig, bottom) = (
        wav("a.wav", 1),
        wav("v1.wav", 2),
        wav("t.wav", 3),
        wav("b.wav", 4),
    );
    let me = || job(ME, PROJECT);
    let other = || job("someone-else", PROJECT);
    let gone = d.join("gone.wav").to_string_lossy().into_owned();
    let msgs = vec![
        // Anyone, with a parent already in the audit log: processed, passed on.
        klio(Some(&a), None, false, false, To::Anyone, &["parent-job"], 2),
        // For another job only: dropped (acked), not processed, nothing published.
        klio(
            Some(&wav("other.wav", 5)),
            None,
            false,
            false,
            To::Limited(vec![other()], None),
            &[],
            2,
        ),
        // Ping: no work, passed on unchanged (plus this job in the audit log).
        klio(
            Some("/no/such/ping.wav"),
            None,
            false,
            true,
            To::Anyone,
            &[],
            2,
        ),
        // V1: only entity_id, no version, no recipients: read as the element.
        klio(None, Some(&v1), false, false, To::Unset, &[], 0),
        // Top-down from this job: processed, then opened to anyone.
        klio(
            Some(&trig),
            None,
            false,
            false,
            To::Limited(vec![me()], Some(me())),
            &[],
            2,
        ),
        // Bottom-up: processed, stays limited to this job.
        klio(
            Some(&bottom),
            None,
            false,
            false,
            To::Limited(vec![me()], None),
            &[],
            2,
        ),
        // Not a Klio message: dead-lettered.
        b"\xff\xfe not protobuf".to_vec(),
        // Input missing (inside serve.allow_paths): dropped with the reason (dead letter),
        // never retried.
        klio(Some(&gone), None, false, false, To::Anyone, &[], 2),
    ];
    emu.publish("klio-in", &msgs);
    let env = [("PUBSUB_EMULATOR_HOST", emu.grpc.as_str())];
    serve(d, &cfg, "out", "l.sqlite", &env, "serve1.log");

    let ledger = d.join("l.sqlite");
    let mut done = done_elements(&ledger);
    done.sort();
    let mut want: Vec<String> = [&a, &v1, &trig, &bottom]
        .iter()
        .map(|p| element_of(Path::new(p)))
        .collect();
    want.sort();
    assert_eq!(done, want, "processed items");
    assert!(history(&ledger, &element_of(&d.join("other.wav"))).is_empty());

    let out: Vec<_> = emu
        .drain("watch-out")
        .iter()
        .map(|(b, _)| decode(b))
        .collect();
    assert_eq!(out.len(), 5, "{out:#?}");
    let find = |el: &str| {
        out.iter()
            .find(|m| m.element == el)
            .unwrap_or_else(|| panic!("no output for {el}: {out:#?}"))
    };
    let m = find(&a);
    assert_eq!(m.audit, ["parent-job", ME]);
    assert_eq!((m.recipients.as_str(), m.version), ("anyone", 2));
    let m = find("/no/such/ping.wav");
    assert!(m.ping && m.audit == [ME], "{m:?}");
    let m = find(&v1);
    assert_eq!((m.version, m.audit.clone()), (2, vec![ME.to_string()]));
    assert_eq!(find(&trig).recipients, "anyone");
    assert_eq!(find(&bottom).recipients, format!("limited:{ME}"));

    let dead = emu.drain("watch-dead");
    let kinds: Vec<&str> = dead
        .iter()
        .map(|(_, a)| a["klio-error-kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        kinds.contains(&"bad_message") && kinds.contains(&"missing_input"),
        "{kinds:?}"
    );
    assert!(dead
        .iter()
        .all(|(_, a)| !a["klio-reason"].as_str().unwrap_or("").is_empty()));

    // Output exists and no force: skipped, still passed on. force = true in the message wins.
    emu.publish(
        "klio-in",
        &[klio(Some(&a), None, false, false, To::Anyone, &[], 2)],
    );
    serve(d, &cfg, "out", "l.sqlite", &env, "serve2.log");
    emu.publish(
        "klio-in",
        &[klio(Some(&a), None, true, false, To::Anyone, &[], 2)],
    );
    serve(d, &cfg, "out", "l.sqlite", &env, "serve3.log");
    assert_eq!(
        history(&ledger, &element_of(Path::new(&a))),
        ["done", "skipped", "done"]
    );
    let out = emu.drain("watch-out");
    assert_eq!(out.len(), 2, "skipped and forced items are both passed on");
    assert!(decode(&out[1].0).force || decode(&out[0].0).force);
}

#[test]
fn fleet_of_two_with_one_killed_and_a_chain_of_two_jobs() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let emu = Emulator::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = d.join("in");
    std::fs::create_dir(&input).unwrap();
    let n = 40;
    for i in 0..n {
        write_wav(&input.join(format!("i{i:02}.wav")), 3.0, 16000, i);
    }
    // Job A reads klio-in and writes klio-mid; job B reads klio-mid and writes klio-out.
    let cfg_a = config(
        d,
        "a.toml",
        &[("output_topic = \"klio-out\"", "output_topic = \"klio-mid\"")],
    );
    // Each item of job A takes 0.3 s more (an exec stage that sleeps), so worker 0 is
    // certainly in the middle of one when it is killed, whatever the machine's speed.
    let slow = std::fs::read_to_string(&cfg_a).unwrap()
        + "\n[[exec]]\nname = \"slow\"\nprogram = \"sleep\"\nargs = [\"0.3\"]\n";
    std::fs::write(&cfg_a, slow).unwrap();
    let cfg_b = config(
        d,
        "b.toml",
        &[
            ("job_name = \"klio-edge-example\"", "job_name = \"job-b\""),
            ("topic = \"klio-in\"", "topic = \"klio-mid\""),
            (
                "subscription = \"klio-in-sub\"",
                "subscription = \"klio-mid-sub\"",
            ),
        ],
    );
    emu.create_subscription("watch-out", "klio-out");
    let env = [("PUBSUB_EMULATOR_HOST", emu.grpc.as_str())];
    // B's subscription must exist before A publishes to its topic.
    emu.create_subscription("klio-mid-sub", "klio-mid");
    let log = d.join("publish.log");
    let mut p = spawn(
        d,
        &["publish", "--config", &cfg_a, "--top-down", "in"],
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut p, Duration::from_secs(60), &log), 0);

    // Two workers of job A on one subscription; the first is SIGKILLed after some outputs.
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let log = d.join(format!("a{w}.log"));
            let ledger = format!("a{w}.sqlite");
            let args = serve_args(&cfg_a, Some("out-a"), Some(&ledger), Some(1), true);
            let child = spawn_args(d, &args, &env, &log);
            (child, log)
        })
        .collect();
    let mut workers = workers;
    // Killed in the middle of an item: its message is held, unacked, by a dead process.
    crate::common::serve::wait_for(
        Duration::from_secs(120),
        "worker 0 busy after 3 items",
        || {
            done_elements(&d.join("a0.sqlite")).len() >= 3
                && !running(&d.join("a0.sqlite")).is_empty()
        },
    );
    workers[0].0.kill().unwrap();
    workers[0].0.wait().unwrap();
    let held = running(&d.join("a0.sqlite"));
    let (mut survivor, log) = workers.pop().unwrap();
    assert_eq!(wait_exit(&mut survivor, Duration::from_secs(240), &log), 0);
    let mut all: Vec<String> = done_elements(&d.join("a0.sqlite"));
    all.extend(done_elements(&d.join("a1.sqlite")));
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        n as usize,
        "every item done by one of the two workers"
    );
    // The message the dead worker held came back after the ack deadline and was done by the
    // survivor.
    let survivor_done = done_elements(&d.join("a1.sqlite"));
    for e in &held {
        assert!(
            survivor_done.contains(e),
            "{e} (held by the killed worker) was not redelivered"
        );
    }
    crate::common::serve::check_outputs(
        &d.join("out-a"),
        &crate::common::serve::paths_in(&input)
            .iter()
            .map(|p| element_of(p))
            .collect::<Vec<_>>(),
    );

    // Job B took A's output events (top-down opened them to anyone) and passed them on.
    serve(d, &cfg_b, "out-b", "b.sqlite", &env, "b.log");
    assert_eq!(done_elements(&d.join("b.sqlite")).len(), n as usize);
    let out: Vec<_> = emu
        .drain("watch-out")
        .iter()
        .map(|(b, _)| decode(b))
        .collect();
    assert!(out.len() >= n as usize, "{} outputs", out.len());
    assert!(
        out.iter()
            .all(|m| m.audit.ends_with(&[ME.to_string(), "job-b".to_string()])),
        "{:?}",
        out[0]
    );
}
