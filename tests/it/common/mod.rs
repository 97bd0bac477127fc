//! Shared helpers for the integration tests: run the built binary in a temp dir with `KLIO_*`
//! variables cleared, find the test corpus (tests/corpus), read `.npy` files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn corpus() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    assert!(
        p.join("MANIFEST.tsv").is_file(),
        "the test corpus must be at {} (it is part of the repository)",
        p.display()
    );
    p
}

/// A config file of config/examples/.
pub fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn real(name: &str) -> PathBuf {
    corpus().join("real").join(name)
}

pub fn klio(dir: &Path, args: &[&str]) -> Output {
    klio_env(dir, args, &[])
}

/// Runs the binary with `KLIO_*` cleared, then `env` set.
pub fn klio_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klio-edge"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KLIO_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run klio-edge")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `process ... --json` and returns (exit code, summary).
pub fn process(dir: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    process_env(dir, args, &[])
}

/// [`process`] with extra environment variables.
pub fn process_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let mut all = vec!["process", "--json", "-q"];
    all.extend_from_slice(args);
    let o = klio_env(dir, &all, env);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): stdout {stdout:?} stderr {}",
            stderr(&o)
        )
    });
    (o.status.code().unwrap_or(-1), summary)
}

pub fn count(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {summary}"))
}

pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).unwrap();
    assert_eq!(
        npy.order(),
        npyz::Order::C,
        "{}: C order expected",
        path.display()
    );
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The item folders (one per element) in an output folder.
pub fn item_dirs(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Every file under `dir`, recursively, relative to it.
pub fn all_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(p.clone());
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
pub mod ledger;
pub mod pubsub;
pub mod serve;
pub mod stores;
pub mod wav;
