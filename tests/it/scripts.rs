//! `scripts/test.sh` checks what it cannot install before any slow step and names all of it
//! at once.

use std::path::Path;
use std::process::Command;

#[test]
fn test_sh_names_every_missing_prerequisite_before_any_slow_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A PATH with nothing but the few tools the check itself runs: no cargo, no cc, no
    // apt-get, no python3, no opusdec, no ffmpeg.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["bash", "id", "dirname", "cat"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let started = std::time::Instant::now();
    let o = Command::new(bin.path().join("bash"))
        .arg(root.join("scripts/test.sh"))
        .env_clear()
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in [
        "cannot run the tests; missing:",
        "cargo: install Rust with rustup",
        "a C compiler (cc)",
        "opus-tools",
        "ffmpeg",
        "python3-venv",
        "this is not a Debian machine",
    ] {
        assert!(
            err.contains(needle),
            "test.sh output lacks {needle:?}:\n{err}"
        );
    }
    assert!(
        !err.contains("making target/"),
        "a venv step ran before the check:\n{err}"
    );
    assert!(started.elapsed().as_secs() < 10, "the check is not quick");
}
