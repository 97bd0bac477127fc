//! The inbox source: a local folder watched with inotify (plus a periodic rescan). A file is
//! taken once it has stopped changing for `settle_s` and its name is not a temp name
//! (`.*`, `*.tmp`, `*.part`, `*.partial`); writers that drop `name.tmp` and rename are taken at
//! once after the rename settles.
//!
//! Claiming is atomic across processes: the file is hard-linked into `<dir>/.klio-processing/`
//! (the link fails if that name is already there) and unlinked from the inbox, then held with an
//! exclusive `flock` for as long as it is in flight. A file in `.klio-processing/` whose lock
//! can be taken belongs to a process that died: any serve process on the inbox gives it back.
//! The inbox must be on a local file system (flock over NFS is not reliable).

use crate::pipeline::ErrorKind;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use notify::Watcher;

use super::settings::{AfterDone, InboxConfig};
use super::{BadMessage, Delivery, Event, EventSource};

/// Folder inside the inbox that holds claimed files.
pub const PROCESSING_DIR: &str = ".klio-processing";
/// A claimed file left unlocked this long belongs to a dead process.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The inbox folder as an event source.
pub struct Inbox {
    dir: PathBuf,
    processing: PathBuf,
    done: PathBuf,
    failed: PathBuf,
    after: AfterDone,
    settle: Duration,
    rescan: Duration,
    queue: VecDeque<String>,
    last_scan: Option<Instant>,
    changed: tokio::sync::mpsc::UnboundedReceiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        || [".tmp", ".part", ".partial", ".crdownload", ".error.json"]
            .iter()
            .any(|s| name.ends_with(s))
}

fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

fn try_lock(f: &File) -> bool {
    // SAFETY: flock on a valid open descriptor; no memory is passed.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Moves `from` back to `<dir>/<name>` unless a newer file of that name arrived meanwhile.
fn give_back(from: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
    if !from.exists() {
        return Ok(());
    }
    match fs::hard_link(from, dir.join(name)) {
        Ok(()) => fs::remove_file(from),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tracing::warn!(
                "{name}: a newer file of the same name is in the inbox; the older one is dropped"
            );
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

impl Inbox {
    /// Opens (creating) the inbox folders and starts watching.
    ///
    /// # Errors
    /// A folder cannot be created.
    pub fn open(cfg: &InboxConfig) -> Result<Inbox> {
        let dir = crate::item::absolute(&cfg.dir);
        let processing = dir.join(PROCESSING_DIR);
        let (done, failed) = (cfg.done(), cfg.failed());
        for d in [&dir, &processing, &done, &failed] {
            fs::create_dir_all(d)
                .with_context(|| format!("cannot create inbox folder {}", d.display()))?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = tx.send(());
        })
        .and_then(|mut w| {
            w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); new files are found by the rescan every {:?}",
                    dir.display(),
                    cfg.rescan_s
                );
                None
            }
        };
        Ok(Inbox {
            dir,
            processing,
            done: crate::item::absolute(&done),
            failed: crate::item::absolute(&failed),
            after: cfg.after,
            settle: Duration::from_secs_f64(cfg.settle_s),
            rescan: Duration::from_secs_f64(cfg.rescan_s),
            queue: VecDeque::new(),
            last_scan: None,
            changed: rx,
            _watcher: watcher,
        })
    }

    /// Lists the inbox: settled files are queued; returns how many files are there at all
    /// and when the first unsettled one settles. Gives back files of dead processes first.
    fn scan(&mut self) -> Result<(usize, Option<Duration>)> {
        self.recover_stale();
        self.last_scan = Some(Instant::now());
        let mut names = Vec::new();
        let mut seen = 0;
        let mut next_settle: Option<Duration> = None;
        let entries = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list inbox {}", self.dir.display()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() || is_temp_name(&name) {
                continue;
            }
            seen += 1;
            let a = age(md.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if a >= self.settle {
                names.push(name);
            } else {
                let left = self.settle - a;
                next_settle = Some(next_settle.map_or(left, |n| n.min(left)));
            }
        }
        names.sort();
        self.queue = names.into();
        Ok((seen, next_settle))
    }

    fn recover_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.processing) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(md) = e.metadata() else { continue };
            let changed = SystemTime::UNIX_EPOCH
                + Duration::new(
                    md.ctime().max(0) as u64,
                    md.ctime_nsec().clamp(0, 999_999_999) as u32,
                );
            if !md.is_file() || age(changed) < STALE_AFTER {
                continue;
            }
            let Ok(f) = File::open(&path) else { continue };
            if try_lock(&f) {
                let name = e.file_name().to_string_lossy().into_owned();
                tracing::warn!(
                    "{name}: claimed by a serve process that stopped; giving it back to the inbox"
                );
                if let Err(err) = give_back(&path, &self.dir, &name) {
                    tracing::error!("{name}: cannot give back: {err}");
                }
            }
        }
    }

    fn claim(&self, name: &str) -> Option<InboxDelivery> {
        let src = self.dir.join(name);
        let dst = self.processing.join(name);
        if fs::hard_link(&src, &dst).is_err() {
            // Taken by another process, or a same-named file is still in flight.
            return None;
        }
        let _ = fs::remove_file(&src);
        let lock = File::open(&dst).ok()?;
        if !try_lock(&lock) {
            return None;
        }
        Some(InboxDelivery {
            name: name.to_string(),
            inbox: self.dir.clone(),
            path: dst,
            done: self.done.clone(),
            failed: self.failed.clone(),
            after: self.after,
            _lock: lock,
        })
    }
}

/// A claimed inbox file.
pub struct InboxDelivery {
    name: String,
    inbox: PathBuf,
    path: PathBuf,
    done: PathBuf,
    failed: PathBuf,
    after: AfterDone,
    _lock: File,
}

impl Delivery for InboxDelivery {
    fn attempt(&self) -> u32 {
        // Retries of inbox files are counted by the ledger (`run.max_attempts`).
        1
    }

    fn describe(&self) -> String {
        format!("inbox file {}", self.name)
    }

    async fn ack(self) -> Result<()> {
        match self.after {
            AfterDone::Move => fs::rename(&self.path, self.done.join(&self.name))
                .with_context(|| format!("cannot move {} to {}", self.name, self.done.display())),
            AfterDone::Delete => fs::remove_file(&self.path)
                .with_context(|| format!("cannot delete {}", self.path.display())),
        }
    }

    async fn retry(self, _delay: Duration) -> Result<()> {
        give_back(&self.path, &self.inbox, &self.name)
            .with_context(|| format!("cannot give {} back to the inbox", self.name))
    }

    async fn dead_letter(self, kind: ErrorKind, reason: &str) -> Result<()> {
        let note = serde_json::json!({ "file": self.name, "error_kind": kind, "reason": reason });
        let note_path = self.failed.join(format!("{}.error.json", self.name));
        fs::write(&note_path, format!("{note:#}\n"))
            .with_context(|| format!("cannot write {}", note_path.display()))?;
        fs::rename(&self.path, self.failed.join(&self.name))
            .with_context(|| format!("cannot move {} to {}", self.name, self.failed.display()))
    }
}

impl EventSource for Inbox {
    type Delivery = InboxDelivery;

    async fn next(
        &mut self,
        _room: usize,
        wait: Duration,
    ) -> Result<Option<(Result<Event, BadMessage>, InboxDelivery)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut next_settle = None;
            let stale = self.last_scan.is_none_or(|t| t.elapsed() >= self.rescan);
            let mut dirty = false;
            while self.changed.try_recv().is_ok() {
                dirty = true;
            }
            if self.queue.is_empty() || stale || dirty {
                next_settle = self.scan()?.1;
            }
            while let Some(name) = self.queue.pop_front() {
                if let Some(d) = self.claim(&name) {
                    let element = crate::item::element_id(&self.dir.join(&name));
                    let ev = Event {
                        element: Some(element),
                        source: crate::item::Source::Path(d.path.clone()),
                        force: false,
                        klio: None,
                    };
                    return Ok(Some((Ok(ev), d)));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut until = deadline.min(now + self.rescan);
            if let Some(s) = next_settle {
                until = until.min(now + s + Duration::from_millis(5));
            }
            tokio::select! {
                _ = self.changed.recv() => {
                    // Let a burst of events (a copy in progress) pass before listing again.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while self.changed.try_recv().is_ok() {}
                    self.last_scan = None;
                }
                _ = tokio::time::sleep_until(until) => { self.last_scan = None; }
            }
        }
    }

    async fn drained(&mut self) -> Result<bool> {
        let (seen, _) = self.scan()?;
        let in_flight = fs::read_dir(&self.processing)
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        Ok(seen == 0 && in_flight == 0)
    }
}
