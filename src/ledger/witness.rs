//! The crash witness: tells a run that died by its own fault from one killed from outside.
//!
//! While a run is in progress it holds an empty file beside the ledger,
//! `<ledger>-crash-<run id>`. A fatal signal of the process's own making (`abort`, a
//! segmentation fault, a bus error, an illegal instruction, an arithmetic trap: raised by
//! the process itself or by the CPU, never one sent by another process such as systemd's
//! watchdog SIGABRT) writes `crashed` into it from the signal handler before the process
//! dies; a clean end removes it, and a kill leaves it empty. At the next start,
//! [`Ledger::recover_running`](super::Ledger::recover_running) reads the file of the run that
//! left rows `running`: written means the process crashed (a likely culprit is charged),
//! empty or absent means it was stopped from outside (SIGKILL, an OOM kill, power loss),
//! which the item in flight did not cause.
//!
//! One witness is armed at a time per process (one engine per process). Not seen: a stack
//! overflow on a thread that std did not start (no alternate signal stack: the default
//! action kills the process first), which then counts as a stop from outside.

use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// What the handler writes.
const CRASHED: &[u8] = b"crashed\n";

/// The signals a process raises on itself when it crashes.
const FATAL: [libc::c_int; 5] = [
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
];

/// The armed witness file's descriptor, -1 when none.
static FD: AtomicI32 = AtomicI32::new(-1);

/// The actions the handler replaced, restored before it lets the signal go on.
static mut PREVIOUS: [std::mem::MaybeUninit<libc::sigaction>; 5] =
    [const { std::mem::MaybeUninit::uninit() }; 5];

static INSTALL: Once = Once::new();

/// The witness file of run `run_id` of the ledger at `ledger`.
pub fn path(ledger: &Path, run_id: i64) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(format!("-crash-{run_id}"));
    PathBuf::from(name)
}

/// Whether run `run_id` crashed by its own fault (its witness file was written).
pub fn crashed(ledger: &Path, run_id: i64) -> bool {
    std::fs::metadata(path(ledger, run_id)).is_ok_and(|m| m.len() > 0)
}

/// Removes the witness files of earlier runs of this ledger (they are read by then).
pub fn clear_earlier(ledger: &Path) {
    let (Some(dir), Some(name)) = (ledger.parent(), ledger.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}-crash-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        if file
            .strip_prefix(&prefix)
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The armed witness of one run: disarmed and removed on drop (a clean end).
#[derive(Debug)]
pub struct Witness {
    path: PathBuf,
    fd: libc::c_int,
}

/// Creates run `run_id`'s empty witness file and installs the handlers (once per process).
///
/// # Errors
/// The file cannot be created.
pub fn arm(ledger: &Path, run_id: i64) -> std::io::Result<Witness> {
    let path = path(ledger, run_id);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let fd = file.into_raw_fd();
    FD.store(fd, Ordering::SeqCst);
    INSTALL.call_once(install);
    Ok(Witness { path, fd })
}

impl Drop for Witness {
    /// Disarms (when this witness is still the armed one) and removes the file. The
    /// descriptor stays open: a handler that loaded it a moment before may still write, and
    /// must reach the unlinked file, never a descriptor number reused for another file (the
    /// ledger, say). One descriptor per run.
    fn drop(&mut self) {
        let _ = FD.compare_exchange(self.fd, -1, Ordering::SeqCst, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn install() {
    for (i, &sig) in FATAL.iter().enumerate() {
        // Safety: plain sigaction calls with an async-signal-safe handler; PREVIOUS[i] is
        // written here, once (`Once`), before the handler is installed, so a signal arriving
        // meanwhile meets the previous action, not a half-saved one.
        unsafe {
            let previous = &raw mut PREVIOUS;
            let slot = (*previous)[i].as_mut_ptr();
            if libc::sigaction(sig, std::ptr::null(), slot) != 0 {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_fatal as *const () as libc::sighandler_t;
            // On the alternate stack std sets up for stack overflows, when there is one.
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Writes the witness when the signal is the process's own (a CPU fault, `si_code > 0`, or
/// sent by this process: `abort`, `raise`), restores the action it replaced (std's
/// stack-overflow report, or the default) and lets the signal go on: a fault re-executes and
/// meets that action; a sent signal is raised again and delivered when this returns.
extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe calls here: getpid, pwrite, sigaction, raise; errno kept.
    // Safety: the kernel hands a valid siginfo to an SA_SIGINFO handler; errno is this
    // thread's; PREVIOUS[i] was written by `install` before this handler was installed.
    unsafe {
        let errno = *libc::__errno_location();
        let code = if info.is_null() { 0 } else { (*info).si_code };
        let fault = code > 0;
        let own = fault || (!info.is_null() && (*info).si_pid() == libc::getpid());
        let fd = FD.load(Ordering::SeqCst);
        if own && fd >= 0 {
            libc::pwrite(fd, CRASHED.as_ptr().cast(), CRASHED.len(), 0);
        }
        if let Some(i) = FATAL.iter().position(|&s| s == sig) {
            let previous = &raw const PREVIOUS;
            libc::sigaction(sig, (*previous)[i].as_ptr(), std::ptr::null_mut());
            if !fault {
                libc::raise(sig);
            }
        }
        *libc::__errno_location() = errno;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_beside_the_ledger_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("klio-ledger.sqlite");
        assert_eq!(
            path(&ledger, 12),
            dir.path().join("klio-ledger.sqlite-crash-12")
        );
        std::fs::write(path(&ledger, 3), "").unwrap();
        std::fs::write(path(&ledger, 4), CRASHED).unwrap();
        std::fs::write(dir.path().join("klio-ledger.sqlite-wal"), "").unwrap();
        assert!(!crashed(&ledger, 3), "empty: stopped from outside");
        assert!(crashed(&ledger, 4));
        assert!(!crashed(&ledger, 5), "absent");
        clear_earlier(&ledger);
        assert!(!path(&ledger, 3).exists() && !path(&ledger, 4).exists());
        assert!(dir.path().join("klio-ledger.sqlite-wal").exists());
        // Armed, the file exists and is empty; a clean end removes it.
        let w = arm(&ledger, 7).unwrap();
        assert!(path(&ledger, 7).exists() && !crashed(&ledger, 7));
        drop(w);
        assert!(!path(&ledger, 7).exists());
    }
}
