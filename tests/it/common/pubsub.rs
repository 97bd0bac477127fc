//! Helpers for the Pub/Sub tests: the cloudbox emulator on loopback (started and stopped by
//! PID), its REST API for the test's own publishing and pulling, and Klio messages encoded by
//! hand from the field numbers of Klio's `klio.proto` (independent of klio-edge's own protobuf code).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::serve::{free_port, wait_for};
use super::stores::http;

/// The project every test uses.
pub const PROJECT: &str = "local-project";

/// A cloudbox emulator with every service on a free port, stopped when dropped.
pub struct Emulator {
    child: Child,
    /// `host:port` of the gRPC endpoint (`PUBSUB_EMULATOR_HOST`).
    pub grpc: String,
    rest: String,
}

/// `$KLIO_CLOUDBOX` (scripts/test.sh makes a patched venv and sets it), else `cloudbox` on
/// PATH. Missing is a failure, never a skip.
fn cloudbox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KLIO_CLOUDBOX") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("cloudbox"))
                .find(|p| p.is_file())
        })
        .expect(
            "cloudbox (the Pub/Sub emulator) is required by the Pub/Sub tests: run them through \
             scripts/test.sh (it makes a patched venv) or set KLIO_CLOUDBOX",
        )
}

impl Emulator {
    /// Starts cloudbox on free loopback ports and waits until it answers. Ports are picked
    /// free, then released, so a parallel test can take one first: an emulator that exits
    /// while starting (it could not bind) is started again on new ports, up to three times.
    pub fn start() -> Emulator {
        for _ in 0..3 {
            if let Some(e) = Self::try_start() {
                return e;
            }
        }
        panic!("the Pub/Sub emulator exited while starting, three times");
    }

    fn try_start() -> Option<Emulator> {
        let dir = std::env::temp_dir();
        let mut cmd = Command::new(cloudbox_bin());
        cmd.env("CLOUDBOX_HOST", "127.0.0.1")
            .env("CLOUDBOX_LOG_LEVEL", "warning")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut grpc = 0;
        let mut rest = 0;
        for var in [
            "ADMIN",
            "BIGQUERY",
            "FIRESTORE",
            "GCS",
            "LOGGING",
            "PUBSUB",
            "PUBSUB_REST",
            "SCHEDULER",
            "SECRETMANAGER",
            "SPANNER",
            "TASKS",
        ] {
            let port = free_port();
            match var {
                "PUBSUB" => grpc = port,
                "PUBSUB_REST" => rest = port,
                _ => {}
            }
            cmd.env(format!("CLOUDBOX_{var}_PORT"), port.to_string());
        }
        let child = cmd.spawn().expect("start cloudbox");
        let mut e = Emulator {
            child,
            grpc: format!("127.0.0.1:{grpc}"),
            rest: format!("http://127.0.0.1:{rest}"),
        };
        let started = std::time::Instant::now();
        loop {
            let up = http(
                &e.rest,
                "GET",
                &format!("/v1/projects/{PROJECT}/topics"),
                &[],
                b"",
            )
            .is_some_and(|(s, _)| s == 200);
            if up {
                break;
            }
            if e.child.try_wait().expect("poll cloudbox").is_some() {
                return None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "timed out after 90 s waiting for the Pub/Sub emulator"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_for(Duration::from_secs(30), "the emulator's gRPC port", || {
            std::net::TcpStream::connect(&e.grpc).is_ok()
        });
        Some(e)
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, bytes) = http(
            &self.rest,
            method,
            &format!("/v1/projects/{PROJECT}/{path}"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .expect("the emulator answers");
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, v)
    }

    pub fn create_topic(&self, topic: &str) {
        let (s, v) = self.call("PUT", &format!("topics/{topic}"), "");
        assert!(s == 200 || s == 409, "create topic {topic}: {s} {v}");
    }

    /// A subscription (its topic created first); `watch` subscriptions let a test see what a
    /// job published.
    pub fn create_subscription(&self, sub: &str, topic: &str) {
        self.create_topic(topic);
        let body = format!(
            r#"{{"topic": "projects/{PROJECT}/topics/{topic}", "ackDeadlineSeconds": 10}}"#
        );
        let (s, v) = self.call("PUT", &format!("subscriptions/{sub}"), &body);
        assert!(s == 200 || s == 409, "create subscription {sub}: {s} {v}");
    }

    pub fn publish(&self, topic: &str, bodies: &[Vec<u8>]) {
        let msgs: Vec<serde_json::Value> = bodies
            .iter()
            .map(|b| serde_json::json!({ "data": b64(b) }))
            .collect();
        let body = serde_json::json!({ "messages": msgs }).to_string();
        let (s, v) = self.call("POST", &format!("topics/{topic}:publish"), &body);
        assert_eq!(s, 200, "publish: {v}");
    }

    /// Every message waiting on a subscription (acked): (data, attributes).
    pub fn drain(&self, sub: &str) -> Vec<(Vec<u8>, serde_json::Value)> {
        let mut out = Vec::new();
        loop {
            let (s, v) = self.call(
                "POST",
                &format!("subscriptions/{sub}:pull"),
                r#"{"maxMessages": 100, "returnImmediately": true}"#,
            );
            assert_eq!(s, 200, "pull: {v}");
            let got = v["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if got.is_empty() {
                return out;
            }
            let ids: Vec<serde_json::Value> = got.iter().map(|m| m["ackId"].clone()).collect();
            for m in got {
                let data = unb64(m["message"]["data"].as_str().unwrap_or(""));
                out.push((data, m["message"]["attributes"].clone()));
            }
            let body = serde_json::json!({ "ackIds": ids }).to_string();
            self.call("POST", &format!("subscriptions/{sub}:acknowledge"), &body);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64(b: &[u8]) -> String {
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

pub fn unb64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for ch in s.bytes() {
        let Some(v) = B64.iter().position(|&b| b == ch) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// --- Klio messages, encoded by hand (proto3 wire format) -----------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(tag: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn varint_field(tag: u64, v: u64, out: &mut Vec<u8>) {
    varint(tag << 3, out);
    varint(v, out);
}

/// `KlioJob { job_name = 1, gcp_project = 2 }`.
pub fn job(name: &str, project: &str) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(1, name.as_bytes(), &mut b);
    bytes_field(2, project.as_bytes(), &mut b);
    b
}

/// Who a test message is for.
pub enum To {
    /// `intended_recipients.anyone`.
    Anyone,
    /// `limited { recipients, trigger_children_of }`.
    Limited(Vec<Vec<u8>>, Option<Vec<u8>>),
    /// No recipients field (V1 messages).
    Unset,
}

/// A Klio message: `element` (V2) or `entity_id` (V1), flags, recipients, audit log entries
/// (job names, project `PROJECT`), version (0 = unset).
pub fn klio(
    element: Option<&str>,
    entity_id: Option<&str>,
    force: bool,
    ping: bool,
    to: To,
    audit: &[&str],
    version: u64,
) -> Vec<u8> {
    let mut meta = Vec::new();
    for name in audit {
        let mut item = Vec::new();
        let mut ts = Vec::new();
        varint_field(1, 1_700_000_000, &mut ts);
        bytes_field(1, &ts, &mut item);
        bytes_field(2, &job(name, PROJECT), &mut item);
        bytes_field(3, &item, &mut meta);
    }
    if force {
        varint_field(4, 1, &mut meta);
    }
    if ping {
        varint_field(5, 1, &mut meta);
    }
    let mut rec = Vec::new();
    match to {
        To::Anyone => bytes_field(1, &[], &mut rec),
        To::Limited(jobs, trigger) => {
            let mut l = Vec::new();
            for j in jobs {
                bytes_field(1, &j, &mut l);
            }
            if let Some(t) = trigger {
                bytes_field(2, &t, &mut l);
            }
            bytes_field(2, &l, &mut rec);
        }
        To::Unset => {}
    }
    if !rec.is_empty() {
        bytes_field(6, &rec, &mut meta);
    }
    let mut data = Vec::new();
    if let Some(e) = entity_id {
        bytes_field(1, e.as_bytes(), &mut data);
    }
    if let Some(e) = element {
        bytes_field(3, e.as_bytes(), &mut data);
    }
    let mut msg = Vec::new();
    bytes_field(1, &meta, &mut msg);
    bytes_field(2, &data, &mut msg);
    if version > 0 {
        varint_field(3, version, &mut msg);
    }
    msg
}

/// A protobuf field: tag and either a varint or bytes.
#[derive(Debug, Clone)]
pub enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

/// The top-level fields of a protobuf message, in order (fixed32/64 skipped).
pub fn fields(mut b: &[u8]) -> Vec<(u64, Field)> {
    fn read_varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        while let Some((&byte, rest)) = b.split_first() {
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b);
        match key & 7 {
            0 => out.push((key >> 3, Field::Varint(read_varint(&mut b)))),
            2 => {
                let n = read_varint(&mut b) as usize;
                let n = n.min(b.len());
                out.push((key >> 3, Field::Bytes(b[..n].to_vec())));
                b = &b[n..];
            }
            1 => b = &b[8.min(b.len())..],
            5 => b = &b[4.min(b.len())..],
            _ => break,
        }
    }
    out
}

/// The bytes of the first field `tag`.
pub fn get(b: &[u8], tag: u64) -> Option<Vec<u8>> {
    fields(b).into_iter().find_map(|(t, f)| match f {
        Field::Bytes(v) if t == tag => Some(v),
        _ => None,
    })
}

/// What a test reads back from a published Klio message.
#[derive(Debug)]
pub struct Decoded {
    pub element: String,
    pub version: u64,
    pub ping: bool,
    pub force: bool,
    /// Job names in the audit log, in order.
    pub audit: Vec<String>,
    /// "anyone", "limited:<names>", or "" when unset.
    pub recipients: String,
}

pub fn decode(msg: &[u8]) -> Decoded {
    let meta = get(msg, 1).unwrap_or_default();
    let data = get(msg, 2).unwrap_or_default();
    let version = fields(msg)
        .into_iter()
        .find_map(|(t, f)| match f {
            Field::Varint(v) if t == 3 => Some(v),
            _ => None,
        })
        .unwrap_or(0);
    let flag = |tag| {
        fields(&meta)
            .iter()
            .any(|(t, f)| *t == tag && matches!(f, Field::Varint(1)))
    };
    let audit = fields(&meta)
        .into_iter()
        .filter_map(|(t, f)| match f {
            Field::Bytes(item) if t == 3 => {
                let j = get(&item, 2)?;
                Some(String::from_utf8(get(&j, 1).unwrap_or_default()).unwrap())
            }
            _ => None,
        })
        .collect();
    let recipients = match get(&meta, 6) {
        None => String::new(),
        Some(r) => match fields(&r).first() {
            Some((1, _)) => "anyone".into(),
            Some((2, Field::Bytes(l))) => {
                let names: Vec<String> = fields(l)
                    .into_iter()
                    .filter_map(|(t, f)| match f {
                        Field::Bytes(j) if t == 1 => {
                            Some(String::from_utf8(get(&j, 1).unwrap_or_default()).unwrap())
                        }
                        _ => None,
                    })
                    .collect();
                format!("limited:{}", names.join(","))
            }
            _ => "?".into(),
        },
    };
    Decoded {
        element: String::from_utf8(get(&data, 3).unwrap_or_default()).unwrap(),
        version,
        ping: flag(5),
        force: flag(4),
        audit,
        recipients,
    }
}
