//! `serve` on an inbox folder: complete files only, one taker per file across processes,
//! the HTTP endpoint, and the SIGTERM drain.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::serve::*;

fn config(dir: &Path, name: &str, http: &str, extra: &str) -> String {
    let text = format!(
        r#"
[decode]
sample_rate_hz = 16000
[features]
compute = ["log_mel"]
n_fft = 400
hop_length = 160
n_mels = 80
[serve]
source = "inbox"
http = "{http}"
drain_timeout_s = 30
[serve.inbox]
dir = "inbox"
settle_s = 1.0
rescan_s = 1
{extra}
"#
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let (code, head, body) = http_get_bytes(port, path);
    (code, head + &String::from_utf8_lossy(&body))
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn two_processes_share_an_inbox_take_complete_files_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let cfg = config(dir, "a.toml", &format!("127.0.0.1:{port}"), "");
    let cfg2 = config(dir, "b.toml", "", "");
    std::fs::create_dir(dir.join("inbox")).unwrap();
    let a_log = dir.join("a.log");
    let b_log = dir.join("b.log");
    let mut a = spawn_args(
        dir,
        &serve_args(&cfg, Some("out"), Some("a.sqlite"), None, false),
        &[],
        &a_log,
    );
    wait_for(Duration::from_secs(30), "the HTTP endpoint", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The second process reads the same config but without the HTTP port.
    let mut b = spawn_args(
        dir,
        &serve_args(&cfg2, Some("out"), Some("b.sqlite"), None, false),
        &[],
        &b_log,
    );
    assert_eq!(http_get(port, "/healthz").0, 200);
    wait_for(Duration::from_secs(30), "ready", || {
        http_get(port, "/readyz").0 == 200
    });

    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    let mut names = Vec::new();
    for i in 0..30u32 {
        let name = format!("drop{i:02}.wav");
        write_wav(&src.join(&name), 2.0, 16000, i);
        // Writers drop a temp name and rename: only the final name is taken.
        std::fs::copy(src.join(&name), dir.join(format!("inbox/{name}.tmp"))).unwrap();
        std::fs::rename(
            dir.join(format!("inbox/{name}.tmp")),
            dir.join(format!("inbox/{name}")),
        )
        .unwrap();
        names.push(name);
    }
    // A file written slowly in place: must not be taken before it is complete.
    write_wav(&src.join("slow.wav"), 3.0, 16000, 99);
    let bytes = std::fs::read(src.join("slow.wav")).unwrap();
    let mut f = std::fs::File::create(dir.join("inbox/slow.wav")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 5 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(f);
    names.push("slow.wav".into());
    // A temp file that never completes is never taken.
    std::fs::write(dir.join("inbox/never.wav.tmp"), b"partial").unwrap();

    wait_for(Duration::from_secs(120), "31 files in inbox/done", || {
        count(&dir.join("inbox/done")) == 31
    });
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("klio_events_total{outcome=\"done\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("klio_stage_seconds_bucket{"), "{metrics}");
    assert!(metrics.contains("klio_in_flight 0"), "{metrics}");
    signal(&a, "TERM");
    signal(&b, "TERM");
    assert_eq!(wait_exit(&mut a, Duration::from_secs(30), &a_log), 0);
    assert_eq!(wait_exit(&mut b, Duration::from_secs(30), &b_log), 0);

    // Each file done by exactly one of the two processes.
    let da = done_elements(&dir.join("a.sqlite"));
    let db = done_elements(&dir.join("b.sqlite"));
    assert!(
        da.iter().all(|e| !db.contains(e)),
        "taken twice: {da:?} {db:?}"
    );
    let expected: Vec<String> = names
        .iter()
        .map(|n| {
            klio_edge::item::element_id(&std::fs::canonicalize(dir.join("inbox")).unwrap().join(n))
        })
        .collect();
    let mut all: Vec<String> = da.iter().chain(&db).cloned().collect();
    all.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(all, want);
    check_outputs(&dir.join("out"), &expected);
    // The slow file was decoded whole: 3 s at 16 kHz.
    let slow = expected.last().unwrap();
    let meta = crate::common::read_json(&dir.join("out").join(slow).join("meta.json"));
    assert_eq!(meta["samples"], 48000, "{meta}");
    assert!(dir.join("inbox/never.wav.tmp").exists());
    assert_eq!(count(&dir.join("inbox/.klio-processing")), 0);
}

#[test]
fn sigterm_drains_in_flight_items_and_takes_no_more() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Binary items through a slow program: each takes about 2 s.
    let extra = r#"
[[exec]]
name = "slow"
program = "sh"
args = ["-c", "sleep 2; wc -c < \"$0\"", "{input}"]
stdout = "size.txt"
"#;
    let cfg = config(dir, "slow.toml", "", extra);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[decode]\nsample_rate_hz = 16000",
        "[decode]\nenabled = false",
    );
    std::fs::write(&cfg, text).unwrap();
    std::fs::create_dir(dir.join("inbox")).unwrap();
    for i in 0..6 {
        std::fs::write(dir.join(format!("inbox/f{i}.bin")), vec![i as u8; 100]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(600));
    let log = dir.join("serve.log");
    let mut s = spawn(
        dir,
        &["serve", "--config", &cfg, "--out", "out", "-j", "2"],
        &[],
        &log,
    );
    wait_for(Duration::from_secs(30), "two files in flight", || {
        count(&dir.join("inbox/.klio-processing")) == 2
    });
    signal(&s, "TERM");
    assert_eq!(wait_exit(&mut s, Duration::from_secs(30), &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(count(&dir.join("inbox/done")), 2, "log:\n{text}");
    assert_eq!(count(&dir.join("inbox/.klio-processing")), 0);
    let left = paths_in(&dir.join("inbox"));
    assert_eq!(left.len(), 4, "untaken files stay in the inbox: {left:?}");
    assert_eq!(done_elements(&dir.join("out/klio-ledger.sqlite")).len(), 2);
}
