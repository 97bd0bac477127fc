//! Object stores end to end, against real servers on loopback: moto's S3 server (for `s3://`,
//! and for `gs://` through the GCS backend's XML API) and a local web server with Range
//! support and fault injection (for `http(s)://`).

use std::path::Path;

use crate::common::serve::write_wav;
use crate::common::stores::{Moto, WebServer};
use crate::common::{count, process_env, read_json, real};

const CONFIG: &str = "[decode]\nsample_rate_hz = 16000\nchannels = \"mono\"\n\n\
[features]\ncompute = [\"log_mel\"]\nn_mels = 40\n";

fn write_config(dir: &Path, extra: &str) -> String {
    let p = dir.join("klio.toml");
    std::fs::write(&p, format!("{CONFIG}\n{extra}")).unwrap();
    p.to_string_lossy().into_owned()
}

type Row = (String, String, String, Option<String>);

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// (element, source, state, error_kind) per item, by source.
fn ledger_rows(ledger: &Path) -> Vec<Row> {
    let mut rows: Vec<Row> = crate::common::ledger::rows(ledger)
        .into_iter()
        .map(|r| (r.element, r.source, r.state, r.error_kind))
        .collect();
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows
}

/// The error kinds of the history entries in `state`, oldest first.
fn history_kinds(ledger: &Path, state: &str) -> Vec<String> {
    crate::common::ledger::entries(ledger)
        .into_iter()
        .filter(|h| h.state == state)
        .map(|h| h.error_kind.unwrap_or_default())
        .collect()
}

#[test]
fn s3_listing_upload_and_output_exists_across_ledgers() {
    let moto = Moto::start();
    moto.create_bucket("klio");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, "");
    let env = moto.env();
    let env = env_refs(&env);

    let flac = std::fs::read(real("flac_s16_8k_mono_moh-reno-project-system.flac")).unwrap();
    let mp3 = std::fs::read(real("mp3_8k_mono_asterisk-demo-instruct.mp3")).unwrap();
    write_wav(&d.join("c.wav"), 1.5, 16000, 3);
    let wav = std::fs::read(d.join("c.wav")).unwrap();
    moto.put("klio", "in/a.flac", &flac);
    moto.put("klio", "in/sub/b.mp3", &mp3);
    moto.put("klio", "in/c.wav", &wav);
    moto.put("klio", "in/.hidden.wav", &wav);

    // A prefix listing plus one object that does not exist, outputs to the bucket.
    let args = [
        "--config",
        &cfg,
        "s3://klio/in/",
        "s3://klio/in/missing.wav",
        "--out",
        "s3://klio/out",
        "--ledger",
        "node1.sqlite",
    ];
    let (code, s) = process_env(d, &args, &env);
    assert_eq!(code, 1, "{s}");
    assert_eq!(count(&s, "items"), 4, "{s}");
    assert_eq!(count(&s, "done"), 3, "{s}");
    assert_eq!(count(&s, "failed"), 1, "{s}");
    assert_eq!(count(&s, "missing_input"), 1, "{s}");
    let rows = ledger_rows(&d.join("node1.sqlite"));
    let missing = rows.iter().find(|r| r.1.ends_with("missing.wav")).unwrap();
    assert_eq!(
        (missing.2.as_str(), missing.3.as_deref()),
        ("failed", Some("missing_input"))
    );

    // Every done item is complete in the bucket (meta.json + log_mel.npy), nothing else there.
    let keys = moto.keys("klio", "out/");
    let done: Vec<&Row> = rows.iter().filter(|r| r.2 == "done").collect();
    assert_eq!(keys.len(), 2 * done.len(), "{keys:?}");
    for r in &done {
        for f in ["meta.json", "log_mel.npy"] {
            assert!(keys.contains(&format!("out/{}/{f}", r.0)), "{keys:?}");
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&moto.get("klio", &format!("out/{}/meta.json", r.0)).unwrap())
                .unwrap();
        assert_eq!(meta["source"], r.1.as_str());
    }

    // The same file processed from local disk gives the same input hash and the same bytes.
    let local = d.join("a.flac");
    std::fs::write(&local, &flac).unwrap();
    let (code, s) = process_env(d, &["--config", &cfg, "a.flac", "--out", "local"], &env);
    assert_eq!(code, 0, "{s}");
    let local_dir = crate::common::item_dirs(&d.join("local")).pop().unwrap();
    let local_meta = read_json(&local_dir.join("meta.json"));
    let a = rows.iter().find(|r| r.1 == "s3://klio/in/a.flac").unwrap();
    let remote_meta: serde_json::Value =
        serde_json::from_slice(&moto.get("klio", &format!("out/{}/meta.json", a.0)).unwrap())
            .unwrap();
    assert_eq!(remote_meta["input_hash"], local_meta["input_hash"]);
    assert_eq!(
        moto.get("klio", &format!("out/{}/log_mel.npy", a.0))
            .unwrap(),
        std::fs::read(local_dir.join("log_mel.npy")).unwrap()
    );

    // Export reads a bucket's outputs as it reads a folder's: each sample holds the bucket's
    // log-mel bytes and, with --with-audio, the source object; the manifest names the URLs.
    for (format, to, audio) in [("webdataset", "wds", true), ("jsonl", "jsonl", false)] {
        let mut args = vec![
            "export",
            "--json",
            "--out",
            "s3://klio/out",
            "--ledger",
            "node1.sqlite",
            "--format",
            format,
            "--to",
            to,
        ];
        if audio {
            args.push("--with-audio");
        }
        let o = crate::common::klio_env(d, &args, &env);
        let err = crate::common::stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{format}: {err}");
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["items"], 3, "{summary}");
    }
    let shard = std::fs::File::open(d.join("wds/shard-000000.tar")).unwrap();
    let mut entries = std::collections::BTreeMap::new();
    for e in tar::Archive::new(shard).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        entries.insert(name, bytes);
    }
    let sources = [
        ("s3://klio/in/a.flac", "flac", &flac),
        ("s3://klio/in/sub/b.mp3", "mp3", &mp3),
        ("s3://klio/in/c.wav", "wav", &wav),
    ];
    for (source, ext, bytes) in sources {
        let r = rows.iter().find(|r| r.1 == source).unwrap();
        let key = r.0.replace('.', "_");
        assert_eq!(
            entries.get(&format!("{key}.log_mel.npy")),
            moto.get("klio", &format!("out/{}/log_mel.npy", r.0))
                .as_ref(),
            "{source}: {:?}",
            entries.keys()
        );
        assert_eq!(
            entries.get(&format!("{key}.{ext}")),
            Some(bytes),
            "{source}"
        );
    }
    assert_eq!(entries.len(), 9, "{:?}", entries.keys());
    let manifest = std::fs::read_to_string(d.join("jsonl/manifest.jsonl")).unwrap();
    let urls: Vec<String> = manifest
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["audio_filepath"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = sources.iter().map(|s| s.0.to_string()).collect();
    want.sort();
    let mut got = urls.clone();
    got.sort();
    assert_eq!(got, want);

    // A second node with its own ledger skips what the first finished (output-exists check)...
    let args2 = [
        "--config",
        &cfg,
        "s3://klio/in/",
        "--out",
        "s3://klio/out",
        "--ledger",
        "node2.sqlite",
    ];
    let (code, s) = process_env(d, &args2, &env);
    assert_eq!(code, 0, "{s}");
    assert_eq!((count(&s, "done"), count(&s, "skipped")), (0, 3), "{s}");
    let rows2 = ledger_rows(&d.join("node2.sqlite"));
    assert!(rows2.iter().all(|r| r.2 == "done"), "{rows2:?}");
    assert_eq!(
        history_kinds(&d.join("node2.sqlite"), "skipped"),
        ["output_exists"; 3]
    );
    // ...unless forced.
    let mut forced = args2.to_vec();
    forced.push("--force");
    let (code, s) = process_env(d, &forced, &env);
    assert_eq!(code, 0, "{s}");
    assert_eq!(count(&s, "done"), 3, "{s}");

    // A glob picks objects across levels; the size cap refuses a large object before reading it.
    let (code, s) = process_env(
        d,
        &[
            "--config",
            &cfg,
            "s3://klio/in/**/*.mp3",
            "--out",
            "globbed",
        ],
        &env,
    );
    assert_eq!(
        (code, count(&s, "items"), count(&s, "done")),
        (0, 1, 1),
        "{s}"
    );
    let capped = write_config(d, "[run]\nmax_input_bytes = 1000\n");
    let (code, s) = process_env(
        d,
        &["--config", &capped, "s3://klio/in/c.wav", "--out", "capped"],
        &env,
    );
    assert_eq!((code, count(&s, "failed")), (1, 1), "{s}");
    let rows = ledger_rows(&d.join("capped/klio-ledger.sqlite"));
    assert_eq!(rows[0].3.as_deref(), Some("too_large"), "{rows:?}");

    // An object-store --out needs a ledger named explicitly.
    let o = crate::common::klio_env(
        d,
        &[
            "process",
            "--config",
            &cfg,
            "s3://klio/in/c.wav",
            "--out",
            "s3://klio/x",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        crate::common::stderr(&o).contains("--ledger"),
        "{}",
        crate::common::stderr(&o)
    );
}

#[test]
fn gcs_reads_and_writes_through_the_xml_api() {
    let moto = Moto::start();
    moto.create_bucket("klio2");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, "[store]\nallow_http = true\n");
    let env = moto.env();
    let env = env_refs(&env);
    write_wav(&d.join("g.wav"), 2.0, 16000, 7);
    moto.put(
        "klio2",
        "corpus/g.wav",
        &std::fs::read(d.join("g.wav")).unwrap(),
    );

    let (code, s) = process_env(
        d,
        &[
            "--config",
            &cfg,
            "gs://klio2/corpus/",
            "--out",
            "gs://klio2/features/",
            "--ledger",
            "l.sqlite",
        ],
        &env,
    );
    assert_eq!((code, count(&s, "done")), (0, 1), "{s}");
    let keys = moto.keys("klio2", "features/");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/meta.json")), "{keys:?}");
    // The local run of the same bytes agrees.
    let (code, s) = process_env(d, &["--config", &cfg, "g.wav", "--out", "local"], &env);
    assert_eq!(code, 0, "{s}");
    let local = crate::common::item_dirs(&d.join("local")).pop().unwrap();
    let npy_key = keys.iter().find(|k| k.ends_with("/log_mel.npy")).unwrap();
    assert_eq!(
        moto.get("klio2", npy_key).unwrap(),
        std::fs::read(local.join("log_mel.npy")).unwrap()
    );
}

#[test]
fn http_retries_times_out_and_reports_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("www")).unwrap();
    std::fs::copy(
        real("flac_s16_8k_mono_moh-reno-project-system.flac"),
        d.join("www/a.flac"),
    )
    .unwrap();
    let web = WebServer::start(&d.join("www"));
    let cfg = write_config(
        d,
        "[store]\nallow_http = true\nconnect_timeout_s = 2\nread_timeout_s = 1\n\
         request_timeout_s = 10\nretries = 2\nretry_backoff_s = 0.05\n",
    );
    let url = |p: &str| format!("{}/{p}", web.base);
    let (good, flaky, stall, gone) = (
        url("files/a.flac"),
        url("flaky/a.flac"),
        url("stall/a.flac"),
        url("files/nope.wav"),
    );
    let started = std::time::Instant::now();
    let (code, s) = process_env(
        d,
        &[
            "--config", &cfg, &good, &flaky, &stall, &gone, "--out", "out",
        ],
        &[],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "a stalled server must not hang the run"
    );
    assert_eq!(code, 1, "{s}");
    assert_eq!((count(&s, "done"), count(&s, "failed")), (2, 2), "{s}");
    assert_eq!(count(&s, "missing_input"), 1, "{s}");
    // The flaky server answered 503 twice; the request was retried, not given up.
    assert!(
        web.hits("/flaky/a.flac") >= 3,
        "{}",
        web.hits("/flaky/a.flac")
    );
    let rows = ledger_rows(&d.join("out/klio-ledger.sqlite"));
    let kind = |u: &str| {
        let r = rows.iter().find(|r| r.1 == u).unwrap();
        (r.2.clone(), r.3.clone())
    };
    assert_eq!(kind(&good), ("done".into(), None));
    assert_eq!(kind(&flaky), ("done".into(), None));
    assert_eq!(kind(&stall), ("failed".into(), Some("fetch".into())));
    assert_eq!(kind(&gone), ("failed".into(), Some("missing_input".into())));
    let msg = crate::common::ledger::rows(&d.join("out/klio-ledger.sqlite"))
        .into_iter()
        .find(|r| r.source == stall)
        .and_then(|r| r.error_message)
        .unwrap();
    assert!(msg.contains("timed out"), "{msg}");
    // Retries were made for the stall too (1 + 2 tries), then it failed for good this run.
    assert!(
        web.hits("/stall/a.flac") >= 3,
        "{}",
        web.hits("/stall/a.flac")
    );
    // A file that is under the cap when asked for its size but over it when fetched.
    let capped = write_config(
        d,
        "[run]\nmax_input_bytes = 2000\n[store]\nallow_http = true\n",
    );
    let grow = url("grow/a.flac");
    let (code, s) = process_env(d, &["--config", &capped, &grow, "--out", "grown"], &[]);
    assert_eq!((code, count(&s, "failed")), (1, 1), "{s}");
    let grown = crate::common::ledger::rows(&d.join("grown/klio-ledger.sqlite"));
    let (kind, msg) = (
        grown[0].error_kind.clone().unwrap(),
        grown[0].error_message.clone().unwrap(),
    );
    assert_eq!(kind, "too_large", "{msg}");
    assert!(msg.contains("max_input_bytes"), "{msg}");
    // Same bytes as the local file.
    let metas: Vec<serde_json::Value> = crate::common::item_dirs(&d.join("out"))
        .iter()
        .map(|p| read_json(&p.join("meta.json")))
        .collect();
    assert_eq!(metas.len(), 2);
    assert_eq!(metas[0]["input_hash"], metas[1]["input_hash"]);
    assert_eq!(
        metas[0]["input_size"],
        std::fs::metadata(d.join("www/a.flac")).unwrap().len()
    );
}

#[test]
fn serve_takes_object_urls_from_nats_and_writes_to_the_bucket() {
    use crate::common::serve::{spawn, wait_exit, Nats};
    use std::time::Duration;
    let nats = Nats::start();
    let moto = Moto::start();
    moto.create_bucket("klio3");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..4 {
        write_wav(&d.join(format!("s{i}.wav")), 1.0, 16000, i);
        moto.put(
            "klio3",
            &format!("in/s{i}.wav"),
            &std::fs::read(d.join(format!("s{i}.wav"))).unwrap(),
        );
    }
    let base = std::fs::read_to_string(crate::common::example("serve-nats.toml")).unwrap();
    let cfg = d.join("serve.toml");
    std::fs::write(
        &cfg,
        base.replace("http = \"127.0.0.1:9464\"", "http = \"\"")
            .replace("allow_urls = []", "allow_urls = [\"s3://klio3/in/\"]"),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let mut env = moto.env();
    env.push(("NATS_URL".into(), nats.url.clone()));
    let env = env_refs(&env);
    // publish lists the prefix and sends one message per object URL.
    let log = d.join("publish.log");
    let mut p = spawn(
        d,
        &["publish", "--config", &cfg, "s3://klio3/in/"],
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut p, Duration::from_secs(60), &log), 0);
    let log = d.join("serve.log");
    let mut s = crate::common::serve::spawn_args(
        d,
        &crate::common::serve::serve_args(
            &cfg,
            Some("s3://klio3/out"),
            Some("serve.sqlite"),
            None,
            true,
        ),
        &env,
        &log,
    );
    assert_eq!(wait_exit(&mut s, Duration::from_secs(120), &log), 0);
    let keys = moto.keys("klio3", "out/");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with("/meta.json")).count(),
        4,
        "{keys:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        crate::common::serve::done_elements(&d.join("serve.sqlite")).len(),
        4
    );
}
