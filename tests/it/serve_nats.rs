//! `serve` on NATS JetStream against a real nats-server on loopback: a fleet of three with one
//! SIGKILLed, poison messages dead-lettered with their reason, retryable failures retried.

use std::path::Path;
use std::time::Duration;

use crate::common::serve::*;

fn config(dir: &Path, extra: &str) -> String {
    let base = std::fs::read_to_string(crate::common::example("serve-nats.toml")).unwrap();
    // Short ack wait so a killed worker's message comes back quickly; no HTTP port clashes.
    let text = base
        .replace("ack_wait_s = 5", "ack_wait_s = 2")
        .replace("http = \"127.0.0.1:9464\"", "http = \"\"")
        .replace("retry_backoff_s = 1", "retry_backoff_s = 0.3")
        // The test's own folder: every input it publishes lies under it.
        .replace("allow_paths = [\"corpus\"]", "allow_paths = [\".\"]")
        + extra;
    let p = dir.join("serve.toml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn fleet_of_three_with_one_killed_processes_every_item_once() {
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, "");
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    for i in 0..200 {
        write_wav(&input.join(format!("item{i:03}.wav")), 4.0, 16000, i);
    }
    let env = [("NATS_URL", nats.url.as_str())];
    let log = dir.join("publish.log");
    let mut p = spawn(dir, &["publish", "--config", &cfg, "in"], &env, &log);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(60), &log), 0);

    let mut workers: Vec<_> = (0..3)
        .map(|w| {
            let ledger = format!("ledger{w}.sqlite");
            let log = dir.join(format!("serve{w}.log"));
            let args = serve_args(&cfg, Some("out"), Some(&ledger), Some(1), true);
            (spawn_args(dir, &args, &env, &log), log)
        })
        .collect();
    // Kill one worker once the fleet is well under way.
    wait_for(Duration::from_secs(120), "20 finished items", || {
        std::fs::read_dir(dir.join("out"))
            .map(|d| d.count() >= 20)
            .unwrap_or(false)
    });
    workers[0].0.kill().unwrap();
    workers[0].0.wait().unwrap();
    for (child, log) in &mut workers[1..] {
        assert_eq!(wait_exit(child, Duration::from_secs(180), log), 0);
    }

    let expected: Vec<String> = paths_in(&input).iter().map(|p| element_of(p)).collect();
    check_outputs(&dir.join("out"), &expected);
    let mut done: Vec<String> = (0..3)
        .flat_map(|w| done_elements(&dir.join(format!("ledger{w}.sqlite"))))
        .collect();
    done.sort();
    done.dedup();
    assert_eq!(done, {
        let mut e = expected.clone();
        e.sort();
        e
    });
    let per: Vec<usize> = (0..3)
        .map(|w| done_elements(&dir.join(format!("ledger{w}.sqlite"))).len())
        .collect();
    eprintln!("done per worker (worker 0 killed): {per:?}");
    assert!(
        per.iter().all(|&n| n > 0),
        "every worker took work: {per:?}"
    );
    for w in 0..3 {
        assert!(ledger_ok(&dir.join(format!("ledger{w}.sqlite"))));
    }
    assert!(
        !dir.join("out/.klio-tmp").exists()
            || std::fs::read_dir(dir.join("out/.klio-tmp"))
                .unwrap()
                .count()
                <= 1,
        "temp folders of finished processes are removed"
    );
}

/// Reads every message of the dead-letter stream: (payload, reason, kind).
/// Every message stored in a stream: (payload, Klio-Reason header, Klio-Error-Kind header).
fn stream_messages(url: &str, stream: &str) -> Vec<(Vec<u8>, String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use async_nats::jetstream;
        use futures_util::StreamExt;
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        let stream = js.get_stream(stream).await.unwrap();
        let c = stream
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut batch = c.fetch().max_messages(100).messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(m)) = batch.next().await {
            let h = m.headers.clone().unwrap_or_default();
            let get = |k: &str| h.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
            out.push((
                m.payload.to_vec(),
                get("Klio-Reason"),
                get("Klio-Error-Kind"),
            ));
        }
        out
    })
}

fn dead_letters(url: &str) -> Vec<(String, String, String)> {
    stream_messages(url, "KLIO_ITEMS_DEAD")
        .into_iter()
        .map(|(p, r, k)| (String::from_utf8_lossy(&p).into_owned(), r, k))
        .collect()
}

#[test]
fn klio_envelope_on_nats_with_output_events() {
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(
        dir,
        "output_subject = \"klio.out\"\n\n[serve.klio]\njob_name = \"edge-on-nats\"\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "source = \"nats\"",
        "source = \"nats\"\nmessage_format = \"klio\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let a = dir.join("a.wav");
    write_wav(&a, 1.0, 16000, 1);
    let env = [("NATS_URL", nats.url.as_str())];
    let log = dir.join("publish.log");
    let mut p = spawn(
        dir,
        &["publish", "--config", &cfg, "--top-down", "a.wav"],
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut p, Duration::from_secs(60), &log), 0);
    let log = dir.join("serve.log");
    let mut s = spawn(
        dir,
        &["serve", "--config", &cfg, "--out", "out", "--until-idle"],
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);
    check_outputs(&dir.join("out"), &[element_of(&a)]);
    let out = stream_messages(&nats.url, "KLIO_ITEMS_OUT");
    assert_eq!(out.len(), 1, "{}", std::fs::read_to_string(&log).unwrap());
    let m = crate::common::pubsub::decode(&out[0].0);
    assert_eq!(
        m.element,
        std::fs::canonicalize(&a).unwrap().to_string_lossy()
    );
    assert_eq!(m.audit, ["edge-on-nats"]);
    assert_eq!(
        m.recipients, "anyone",
        "top-down opens the graph below this job"
    );
}

fn publish_raw(url: &str, bodies: &[&[u8]]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        for b in bodies {
            js.publish("klio.items", b.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

#[test]
fn poison_messages_are_dead_lettered_and_retryable_failures_retried() {
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, "");
    let env = [("NATS_URL", nats.url.as_str())];
    // Creates the streams: serve until idle on an empty queue.
    let log = dir.join("first.log");
    let mut s = spawn(
        dir,
        &["serve", "--config", &cfg, "--until-idle"],
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);

    let good = dir.join("good.wav");
    write_wav(&good, 1.0, 16000, 1);
    let late = dir.join("late.wav"); // published before it exists: missing_input, retried
                                     // Inside the test's folder (serve.allow_paths = ["."]), so it is decoded, not refused.
    let bad = dir.join("text-file-named.wav");
    std::fs::copy(
        crate::common::corpus().join("bad/text-file-named.wav"),
        &bad,
    )
    .unwrap();
    let bodies: Vec<Vec<u8>> = vec![
        b"{broken json".to_vec(),
        br#"{"element": "../../etc/passwd", "uri": "/tmp/x.wav"}"#.to_vec(),
        b"ftp://host/a.wav".to_vec(),
        bad.to_string_lossy().as_bytes().to_vec(),
        good.to_string_lossy().as_bytes().to_vec(),
        format!(r#"{{"uri": "{}", "element": "late-one"}}"#, late.display()).into_bytes(),
    ];
    publish_raw(
        &nats.url,
        &bodies.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
    let log = dir.join("serve.log");
    let mut s = spawn(
        dir,
        &["serve", "--config", &cfg, "--out", "out", "--until-idle"],
        &env,
        &log,
    );
    // The late file arrives after the first attempts failed.
    std::thread::sleep(Duration::from_millis(700));
    write_wav(&late, 1.0, 16000, 2);
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();

    let dead = dead_letters(&nats.url);
    assert_eq!(dead.len(), 4, "dead letters: {dead:?}\nlog:\n{text}");
    let find = |needle: &str| {
        dead.iter()
            .find(|d| d.0.contains(needle))
            .unwrap_or_else(|| panic!("no dead letter for {needle}: {dead:?}"))
    };
    assert!(find("{broken json").1.contains("bad JSON"));
    assert!(find("passwd").1.contains("element"));
    assert!(find("ftp://").1.contains("not supported"));
    let b = find("text-file-named");
    assert!(
        !b.1.is_empty() && b.2 != "bad_message" && b.2 != "forbidden",
        "{b:?}"
    );
    // Good and late items are done; nothing escaped the output folder.
    check_outputs(
        &dir.join("out"),
        &[element_of(&good), "late-one".to_string()],
    );
    assert!(text.contains("retrying"), "log:\n{text}");
    assert!(!Path::new("/etc/passwd.npy").exists());
}

#[test]
fn an_item_longer_than_the_ack_wait_and_a_duplicate_message_run_once() {
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Each item takes 2.5 s (an exec stage that sleeps): over twice the 1 s ack wait. The
    // server would hand it out again after 1 s if klio-edge did not say it is still working.
    let cfg = config(
        dir,
        "\n[[exec]]\nname = \"slow\"\nprogram = \"sleep\"\nargs = [\"2.5\"]\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("ack_wait_s = 2", "ack_wait_s = 1");
    std::fs::write(&cfg, text).unwrap();
    let env = [("NATS_URL", nats.url.as_str())];
    let (a, b) = (dir.join("a.wav"), dir.join("b.wav"));
    write_wav(&a, 1.0, 16000, 1);
    write_wav(&b, 1.0, 16000, 2);
    // `a` twice (publish itself sends a path once, so the second is sent raw): both
    // messages are held at once (-j 3).
    let log = dir.join("publish.log");
    let (pa, pb) = (a.to_string_lossy(), b.to_string_lossy());
    let mut p = spawn(dir, &["publish", "--config", &cfg, &pa, &pb], &env, &log);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(60), &log), 0);
    publish_raw(&nats.url, &[pa.as_bytes()]);
    let log = dir.join("serve.log");
    let mut s = spawn_args(
        dir,
        &serve_args(&cfg, Some("out"), None, Some(3), true),
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut s, Duration::from_secs(90), &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let ledger = dir.join("out/klio-ledger.sqlite");
    // One delivery of b, never handed out again while it ran.
    assert_eq!(history(&ledger, &element_of(&b)), ["done"], "log:\n{text}");
    // The duplicate of a waited for the first and found it done.
    assert_eq!(
        history(&ledger, &element_of(&a)),
        ["done", "skipped"],
        "log:\n{text}"
    );
    check_outputs(&dir.join("out"), &[element_of(&a), element_of(&b)]);
}

/// A publisher can make a worker read only what `[serve]` allows: a path outside
/// `allow_paths` (directly, through `..` or through a symlink), a loopback URL, a URL outside
/// `allow_urls` are dead-lettered as `forbidden` before anything of them is opened, with
/// one reason that says nothing about them; an element id already recorded for another
/// input is `element_conflict` unless forced; ids may not start with `-`.
#[test]
fn publishers_reach_only_what_serve_allows() {
    let nats = Nats::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("allow_paths = [\".\"]", "allow_paths = [\"in\"]")
        .replace(
            "allow_urls = []",
            "allow_urls = [\"https://127.0.0.1:9/x/\"]",
        );
    std::fs::write(&cfg, text).unwrap();
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    let (a, b) = (input.join("a.wav"), input.join("b.wav"));
    write_wav(&a, 1.0, 16000, 1);
    write_wav(&b, 1.0, 16000, 2);
    let secret = dir.join("secret.wav");
    write_wav(&secret, 1.0, 16000, 3);
    std::os::unix::fs::symlink(&secret, input.join("link.wav")).unwrap();
    let env = [("NATS_URL", nats.url.as_str())];
    let at = |p: &Path| p.to_string_lossy().into_owned();
    let forbidden = [
        at(&secret),
        "/etc/passwd".to_string(),
        format!("{}/../secret.wav", input.display()),
        format!("{}/../no-such-file.wav", input.display()),
        at(&input.join("link.wav")),
        "https://127.0.0.1:9/x/a.wav".to_string(),
        "https://example.com/a.wav".to_string(),
        "s3://bucket/a.wav".to_string(),
    ];
    let mut bodies: Vec<String> = forbidden
        .iter()
        .map(|u| serde_json::json!({ "uri": u }).to_string())
        .collect();
    bodies.push(serde_json::json!({ "element": "shared", "uri": at(&a) }).to_string());
    bodies.push(serde_json::json!({ "element": "-rf", "uri": at(&b) }).to_string());
    let log = dir.join("serve.log");
    let args = serve_args(&cfg, Some("out"), None, Some(1), true);
    // The first serve creates the streams.
    let mut s = spawn_args(dir, &args, &env, &log);
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    publish_raw(&nats.url, &refs);
    let mut s = spawn_args(dir, &args, &env, &log);
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let dead = dead_letters(&nats.url);
    assert_eq!(dead.len(), forbidden.len() + 1, "{dead:?}\nlog:\n{text}");
    let reasons: std::collections::BTreeSet<&str> = dead
        .iter()
        .filter(|d| d.2 == "forbidden")
        .map(|d| d.1.as_str())
        .collect();
    assert_eq!(
        dead.iter().filter(|d| d.2 == "forbidden").count(),
        forbidden.len(),
        "{dead:?}"
    );
    // One reason for all: whether a path exists, or a host answers, is not told.
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons
        .iter()
        .all(|r| !r.contains("secret") && !r.contains("passwd")));
    let dash = dead.iter().find(|d| d.0.contains("-rf")).unwrap();
    assert_eq!(dash.2, "bad_message", "{dash:?}");
    // Nothing refused was read: the ledger holds only the allowed item.
    let ledger = dir.join("out/klio-ledger.sqlite");
    let rows = crate::common::ledger::rows(&ledger);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].element.as_str(), rows[0].state.as_str()),
        ("shared", "done")
    );
    let first_hash = rows[0].input_hash.clone();

    // Another input under the same element id: refused unless forced.
    let conflict = serde_json::json!({ "element": "shared", "uri": at(&b) }).to_string();
    publish_raw(&nats.url, &[conflict.as_bytes()]);
    let mut s = spawn_args(dir, &args, &env, &log);
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);
    let dead = dead_letters(&nats.url);
    let c = dead
        .iter()
        .find(|d| d.2 == "element_conflict")
        .unwrap_or_else(|| panic!("{dead:?}"));
    assert!(c.1.contains("force"), "{c:?}");
    let row = crate::common::ledger::row(&ledger, "shared");
    assert_eq!(
        row.input_hash, first_hash,
        "the first input's row is untouched"
    );
    let forced =
        serde_json::json!({ "element": "shared", "uri": at(&b), "force": true }).to_string();
    publish_raw(&nats.url, &[forced.as_bytes()]);
    let mut s = spawn_args(dir, &args, &env, &log);
    assert_eq!(wait_exit(&mut s, Duration::from_secs(60), &log), 0);
    let row = crate::common::ledger::row(&ledger, "shared");
    assert_eq!(row.source, at(&b), "force replaces the element's input");
    assert_ne!(row.input_hash, first_hash);
}
