//! Small and read-only file systems: a tmpfs of 2 MiB as the output folder, and a ledger on a
//! read-only mount. These mount tmpfs, which needs root (as `scripts/test.sh` runs in CI);
//! without it they fail saying so, never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::serve::write_wav;

/// A tmpfs mounted at a folder, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount(8)");
        assert!(
            o.status.success(),
            "mount -t tmpfs failed (these tests need root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount_read_only(&self) {
        let o = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const CONFIG: &str = "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = [\"log_mel\"]\n";

/// Every item of a run on a full disk is recorded with its reason, or the run exits 2
/// saying the ledger could not record them: never "all recorded" with rows missing.
#[test]
fn on_a_full_disk_every_item_is_recorded_or_the_run_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("c.toml"), CONFIG).unwrap();
    std::fs::create_dir(dir.join("in")).unwrap();
    let mut inputs = Vec::new();
    for i in 0..12 {
        // 10 s each: 320 KB of log-mel, so the 2 MiB fill up part way.
        let p = dir.join(format!("in/a{i:02}.wav"));
        write_wav(&p, 10.0, 16000, i);
        inputs.push(crate::common::serve::element_of(&p));
    }
    let _fs = Tmpfs::mount(&dir.join("out"), "2m");
    let o = crate::common::klio(
        dir,
        &["process", "-q", "--config", "c.toml", "--out", "out", "in"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code();
    let ledger = dir.join("out/klio-ledger.sqlite");
    let rows = crate::common::ledger::rows(&ledger);
    let done = rows.iter().filter(|r| r.state == "done").count();
    assert!(
        done >= 1 && done < inputs.len(),
        "{done} done: the disk must fill part way"
    );
    match code {
        Some(1) => {
            // Everything recorded: a row per input, none left running, failures with reasons.
            assert_eq!(rows.len(), inputs.len(), "{rows:?}\n{stderr}");
            for r in &rows {
                assert_ne!(r.state, "running", "{r:?}");
                if r.state == "failed" {
                    assert_eq!(r.error_kind.as_deref(), Some("sink"), "{r:?}");
                    assert!(
                        r.error_message.as_deref().unwrap_or("").contains("space"),
                        "{r:?}"
                    );
                }
            }
        }
        Some(2) => assert!(
            stderr.contains("could not record the outcome"),
            "exit 2 must say why: {stderr}"
        ),
        other => panic!("exit {other:?}: {stderr}"),
    }
}

/// A healthy ledger on a read-only file system is not called unreadable (that advice would
/// make people move it aside and lose its history): the error says it cannot be written,
/// and the read-only ledger commands still read it.
#[test]
fn a_ledger_on_a_read_only_mount_is_called_unwritable_not_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("c.toml"), CONFIG).unwrap();
    write_wav(&dir.join("a.wav"), 1.0, 16000, 1);
    let fs = Tmpfs::mount(&dir.join("ro"), "8m");
    let args = [
        "process",
        "-q",
        "--config",
        "c.toml",
        "--out",
        "out",
        "--ledger",
        "ro/l.sqlite",
        "a.wav",
    ];
    let o = crate::common::klio(dir, &args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs.remount_read_only();
    let o = crate::common::klio(dir, &args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("for writing") && stderr.contains("not writable"),
        "{stderr}"
    );
    assert!(!stderr.contains("move it aside"), "{stderr}");
    let o = crate::common::klio(dir, &["ledger", "status", "--ledger", "ro/l.sqlite"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("done"));
}
