//! Helpers for the object-store tests: a real moto S3 server on loopback (started and stopped
//! by PID), a tiny S3 client over raw HTTP (moto does not check signatures) to seed buckets,
//! and a local web server with Range support and fault injection for `http(s)://`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::serve::{free_port, wait_for};

/// `moto_server` on loopback, stopped (by PID) when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

/// Where `moto_server` is: `$KLIO_MOTO_SERVER` (scripts/test.sh sets it after making its
/// venv), else `moto_server` on PATH. Missing is a failure, never a skip.
fn moto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KLIO_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    });
    found.expect(
        "moto_server is required by the object-store tests: run them through scripts/test.sh \
         (it makes a venv with moto[server]) or set KLIO_MOTO_SERVER",
    )
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(30), "moto_server to answer", || {
            http(&endpoint, "GET", "/", &[], b"").is_some()
        });
        Moto { child, endpoint }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) =
            http(&self.endpoint, "PUT", &format!("/{bucket}"), &[AUTH], b"").expect("moto answers");
        assert_eq!(
            status,
            200,
            "create bucket: {}",
            String::from_utf8_lossy(&body)
        );
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let (status, body) = http(
            &self.endpoint,
            "PUT",
            &format!("/{bucket}/{}", escape(key)),
            &[AUTH],
            bytes,
        )
        .expect("moto answers");
        assert_eq!(status, 200, "put {key}: {}", String::from_utf8_lossy(&body));
    }

    /// An object's bytes, or `None` when it does not exist.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = http(
            &self.endpoint,
            "GET",
            &format!("/{bucket}/{}", escape(key)),
            &[AUTH],
            b"",
        )?;
        (status == 200).then_some(body)
    }

    /// Keys under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = http(
            &self.endpoint,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={}", escape(prefix)),
            &[AUTH],
            b"",
        )
        .expect("moto answers");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// The environment a klio-edge process needs to reach this server as S3 (the standard
    /// AWS variables only) and as GCS (GOOGLE_* variables).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("GOOGLE_BASE_URL".into(), self.endpoint.clone()),
            ("GOOGLE_BEARER_TOKEN".into(), "testing".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto checks no signatures, but answers anonymous reads of private objects with 403: an
/// AWS-shaped Authorization header makes the test's requests those of a (fake) user.
const AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0",
);

fn escape(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request with `Connection: close`; (status, body), or `None` when the server
/// cannot be reached.
pub fn http(
    endpoint: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let host = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 4 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

/// A web server on loopback serving the files of a folder under `/files/`, with faults by
/// path: `/flaky/NAME` answers 503 to its first two requests, then serves NAME; `/stall/NAME`
/// reads the request and never answers; `/grow/NAME` serves only NAME's first 500 bytes to
/// its first request (the file "grows" after it). GET, HEAD and `Range: bytes=a-b` work.
pub struct WebServer {
    pub base: String,
    hits: Arc<Mutex<HashMap<String, u32>>>,
    stop: Arc<AtomicBool>,
}

impl WebServer {
    pub fn start(root: &Path) -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, h, st) = (root.to_path_buf(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, h, st) = (root.clone(), h.clone(), st.clone());
                std::thread::spawn(move || serve_conn(conn, &root, &h, &st));
            }
        });
        WebServer { base, hits, stop }
    }

    /// Requests seen for a path.
    pub fn hits(&self, path: &str) -> u32 {
        *self.hits.lock().unwrap().get(path).unwrap_or(&0)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

fn serve_conn(conn: TcpStream, root: &Path, hits: &Mutex<HashMap<String, u32>>, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                let (a, b) = v.split_once('-').unwrap_or((v, ""));
                range = Some((a.parse::<u64>().unwrap_or(0), b.parse::<u64>().ok()));
            }
        }
        let n = {
            let mut m = hits.lock().unwrap();
            let c = m.entry(path.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let mut segs = path.trim_start_matches('/').splitn(2, '/');
        let (kind, name) = (segs.next().unwrap_or(""), segs.next().unwrap_or(""));
        if kind == "stall" {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        if kind == "flaky" && n <= 2 {
            let _ = out.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        let file = root.join(name);
        let Ok(bytes) = std::fs::read(&file).map_err(|_| ()).and_then(|b| {
            if matches!(kind, "files" | "flaky" | "grow") && !name.contains("..") {
                Ok(if kind == "grow" && n == 1 {
                    b[..500.min(b.len())].to_vec()
                } else {
                    b
                })
            } else {
                Err(())
            }
        }) else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let total = bytes.len() as u64;
        let (status, body, extra) = match range {
            Some((a, b)) if a < total => {
                let end = b.unwrap_or(total - 1).min(total - 1);
                (
                    "206 Partial Content",
                    &bytes[a as usize..=end as usize],
                    format!("Content-Range: bytes {a}-{end}/{total}\r\n"),
                )
            }
            _ => ("200 OK", &bytes[..], String::new()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\
             Last-Modified: Wed, 21 Oct 2026 07:28:00 GMT\r\nETag: \"{total}\"\r\n{extra}\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" && out.write_all(body).is_err() {
            return;
        }
    }
}
