//! Helpers for the serve tests: a real nats-server on loopback, test audio, ledgers, waiting.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` on loopback, stopped (by PID) when dropped.
pub struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let bin = ["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("nats-server is required by the serve tests: apt-get install nats-server (.ci/run installs it)");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_for(Duration::from_secs(10), "nats-server to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // JetStream needs a moment after the port opens.
        std::thread::sleep(Duration::from_millis(300));
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it is true; panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub use super::wav::write_wav;

/// `GET path` on 127.0.0.1:port (HTTP/1.1, connection closed): the status, the head (status
/// line and headers, with the blank line) and the body's bytes.
pub fn http_get_bytes(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let end = r
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(r.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&r[..end]).into_owned();
    let code = head[9..12].parse().unwrap();
    let mut body = r[end..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (code, head, body)
}

/// The body of a chunked HTTP/1.1 response.
fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// `serve --config CFG [--out OUT] [--ledger FILE] [-j N] [--until-idle]`: the argument list
/// every serve test starts from.
pub fn serve_args(
    cfg: &str,
    out: Option<&str>,
    ledger: Option<&str>,
    jobs: Option<u32>,
    until_idle: bool,
) -> Vec<String> {
    let mut v: Vec<String> = vec!["serve".into(), "--config".into(), cfg.into()];
    if let Some(o) = out {
        v.extend(["--out".into(), o.into()]);
    }
    if let Some(l) = ledger {
        v.extend(["--ledger".into(), l.into()]);
    }
    if let Some(j) = jobs {
        v.extend(["-j".into(), j.to_string()]);
    }
    if until_idle {
        v.push("--until-idle".into());
    }
    v
}

/// [`spawn`] with owned arguments (as [`serve_args`] makes them).
pub fn spawn_args(dir: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Child {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(dir, &refs, env, log)
}

/// A serve (or other) process of the built binary, KLIO_* cleared, stderr to a file.
pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klio-edge"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KLIO_") || k == "NATS_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd.spawn().expect("spawn klio-edge")
}

/// Waits for a child to exit; kills it and panics (with its log) after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration, log: &Path) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "klio-edge did not exit within {limit:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

pub use super::ledger::{done_elements, history, ledger_ok};

/// Checks an output folder holds exactly `expected` item folders, each with a parseable
/// meta.json naming itself and a parseable log_mel.npy of 80 mels; nothing else visible.
pub fn check_outputs(out: &Path, expected: &[String]) {
    let mut found: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    found.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(found, want, "item folders in {}", out.display());
    for e in &found {
        let d = out.join(e);
        let mut files: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["log_mel.npy", "meta.json"], "files of {e}");
        let meta = super::read_json(&d.join("meta.json"));
        assert_eq!(meta["element"], e.as_str());
        let (shape, values) = super::read_npy(&d.join("log_mel.npy"));
        assert_eq!(shape[0], 80);
        assert_eq!(values.len(), shape.iter().product::<usize>());
    }
}

pub fn element_of(path: &Path) -> String {
    klio_edge::item::element_id(&std::fs::canonicalize(path).unwrap())
}

pub fn paths_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}
