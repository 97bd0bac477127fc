//! Ledger: the SQLite record of every item's state, attempts, timings, input hash, config
//! hash and outputs, plus the history of runs.
//!
//! Semantics owned here: a done item whose input and config hashes match is skipped; a failed
//! item is retried until it has failed `max_attempts` times for the same input and config (a
//! changed input or config starts the count again); rows left `running` by a crash are marked
//! failed (`interrupted`) at start-up, so the next run retries them, charging the attempt only
//! to an item that was alone in flight (see [`Ledger::recover_running`]). Migrations are numbered
//! SQL files applied in order at open; every pragma is read back and checked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

mod report;
pub mod witness;
pub use report::{ItemFacts, RunTimes};

pub use crate::item::InputFacts;
use crate::pipeline::ErrorKind;

/// The state of an item's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Claimed by a run that has not finished it (or crashed: see [`Ledger::recover_running`]).
    Running,
    /// Outputs committed for the row's input and config.
    Done,
    /// The last attempt failed (`error_kind` says why).
    Failed,
}

impl ItemState {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Running => "running",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ItemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for ItemState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match v.as_str()? {
            "running" => Ok(ItemState::Running),
            "done" => Ok(ItemState::Done),
            "failed" => Ok(ItemState::Failed),
            other => Err(rusqlite::types::FromSqlError::Other(
                format!("unknown item state {other:?}").into(),
            )),
        }
    }
}

/// What a run records for an item it does not process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// Already done for this input and config.
    Skipped,
    /// Out of attempts for this input and config.
    GaveUp,
}

/// How an attempt is claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claim {
    /// Start the attempt count again (`--force`).
    pub reset: bool,
    /// No other item of this process is in flight until this one ends: a crash meanwhile
    /// is charged to it.
    pub alone: bool,
}

/// What [`Ledger::recover_running`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Items charged the attempt: alone in flight when the process crashed, or at every
    /// [`LONE_STOPS_PER_ATTEMPT`]th stop from outside that found them alone.
    pub charged: usize,
    /// Items whose attempt is refunded: in flight beside others, or alone at a stop from
    /// outside that is not charged.
    pub refunded: usize,
}

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_models.sql")),
    (3, include_str!("migrations/0003_retried.sql")),
    (4, include_str!("migrations/0004_claimed_alone.sql")),
    (5, include_str!("migrations/0005_history_run.sql")),
    (6, include_str!("migrations/0006_lone_stops.sql")),
];

/// Stops from outside (no crash witnessed) that find an item alone in flight per attempt
/// charged: see [`Ledger::recover_running`].
pub const LONE_STOPS_PER_ATTEMPT: i64 = 3;

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// An item's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// Element id.
    pub element: String,
    /// Source path or URI.
    pub source: String,
    /// Input size in bytes.
    pub input_size: Option<i64>,
    /// Input modification time (ns since the epoch).
    pub input_mtime_ns: Option<i64>,
    /// BLAKE3 of the input bytes.
    pub input_hash: Option<String>,
    /// Output-affecting config hash.
    pub config_hash: String,
    /// `running`, `done` or `failed`.
    pub state: ItemState,
    /// Short error kind when failed.
    pub error_kind: Option<String>,
    /// Error message when failed.
    pub error_message: Option<String>,
    /// Failed (or running) attempts for the current input and config.
    pub attempts: i64,
}

/// A done item's row, as `export` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DoneRow {
    /// Element id.
    pub element: String,
    /// Source path or URI.
    pub source: String,
    /// Seconds of audio (none for binary items).
    pub duration_s: Option<f64>,
    /// The output file names the commit recorded.
    pub outputs: Vec<String>,
    /// BLAKE3 of the input bytes.
    pub input_hash: Option<String>,
    /// Output-affecting config hash.
    pub config_hash: String,
}

const ITEM_COLUMNS: &str = "element, source, input_size, input_mtime_ns, input_hash, config_hash, \
    state, error_kind, error_message, attempts";

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        element: r.get(0)?,
        source: r.get(1)?,
        input_size: r.get(2)?,
        input_mtime_ns: r.get(3)?,
        input_hash: r.get(4)?,
        config_hash: r.get(5)?,
        state: r.get(6)?,
        error_kind: r.get(7)?,
        error_message: r.get(8)?,
        attempts: r.get(9)?,
    })
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RunCounts {
    /// Items processed and committed.
    pub done: u64,
    /// Items skipped as already done.
    pub skipped: u64,
    /// Items that failed in this run, or earlier and out of attempts.
    pub failed: u64,
}

/// The ledger connection. One per process, shared behind a mutex; each call is one short
/// transaction.
pub struct Ledger {
    conn: Connection,
}

fn check_pragma(conn: &Connection, set: &str, name: &str, want: &str) -> Result<()> {
    // SQLite ignores a misspelled pragma silently: read every value back.
    conn.execute_batch(&format!("PRAGMA {set}"))?;
    let got: String = conn.query_row(&format!("PRAGMA {name}"), [], |r| {
        Ok(match r.get::<_, rusqlite::types::Value>(0)? {
            rusqlite::types::Value::Text(s) => s,
            rusqlite::types::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    })?;
    if !got.eq_ignore_ascii_case(want) {
        bail!("SQLite pragma {name} reads back {got:?}, expected {want:?}");
    }
    Ok(())
}

/// The advice for a file that is not a usable ledger.
fn refuse(path: &Path, why: String) -> anyhow::Error {
    anyhow::anyhow!(
        "{} {why}. klio-edge will not touch it: move it aside (or name another file with \
         --ledger) and a new ledger is created; to save a damaged ledger's rows, try \
         `sqlite3 {} .recover`",
        path.display(),
        path.display()
    )
}

/// Reading the schema is the first access: a file that is not SQLite fails here, and so does
/// an SQLite database of something else.
fn check_is_ledger(conn: &Connection, path: &Path, writing: bool) -> Result<()> {
    let (version, tables): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), \
             (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| match unwritable(path) {
            // A healthy ledger SQLite cannot open for writing: say so, not "move it aside".
            Some(why) if writing && looks_like_sqlite(path) => anyhow::anyhow!(
                "cannot open the ledger {} for writing: {why}. The file looks intact; klio-edge \
                 writes it and creates {}-wal and {}-shm beside it. Make the folder writable, \
                 or copy the ledger somewhere writable and name it with --ledger \
                 (`klio-edge ledger status` reads it where it is)",
                path.display(),
                path.display(),
                path.display()
            ),
            _ => refuse(path, format!("is not a readable SQLite database ({e})")),
        })?;
    if version == 0 && tables > 0 {
        return Err(refuse(
            path,
            "is an SQLite database but not a klio-edge ledger (it has tables and no ledger schema version)".into(),
        ));
    }
    Ok(())
}

/// Whether `path` starts with SQLite's file header.
fn looks_like_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"SQLite format 3\0"
}

/// Why this process cannot write `path` or create files beside it, if it cannot (the
/// effective permissions, a read-only mount).
fn unwritable(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let can_write = |p: &Path| {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    };
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    if !can_write(&dir) {
        Some(format!("the folder {} is not writable", dir.display()))
    } else if path.exists() && !can_write(path) {
        Some("the file is not writable".into())
    } else {
        None
    }
}

fn check_intact(conn: &Connection, path: &Path) -> Result<()> {
    let ok: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| refuse(path, format!("is damaged ({e})")))?;
    if ok != "ok" {
        return Err(refuse(
            path,
            format!("is damaged (SQLite quick_check: {ok})"),
        ));
    }
    Ok(())
}

/// Checkpoints a ledger's write-ahead log from a thread of its own (see
/// [`Ledger::checkpoint_in_background`]); stops, after a last checkpoint, when dropped.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One passive checkpoint: copies what it can of the WAL into the database without waiting
/// for (or blocking) readers and writers.
fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

impl Ledger {
    /// Moves this connection's WAL checkpoints to a thread with its own connection to `path`,
    /// which checkpoints every `every` (passively: writers never wait for it).
    ///
    /// SQLite checkpoints in whichever commit takes the WAL past 1,000 pages: that commit
    /// then copies the pages into the database and syncs both files, which took one item's
    /// ledger commit in `serve` from 0.4 ms to 5 ms, on the item's path and under the
    /// ledger lock that every worker shares.
    ///
    /// # Errors
    /// The pragma does not take or the second connection cannot be opened.
    pub fn checkpoint_in_background(&self, path: &Path, every: Duration) -> Result<Checkpointer> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open ledger {} to checkpoint it", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let name = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                let (m, cv) = &*flag;
                let mut warned = false;
                let mut stopped = m.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if *stopped {
                        break;
                    }
                    stopped = cv
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    if let Err(e) = checkpoint_passive(&conn) {
                        if !warned {
                            tracing::warn!("ledger {name}: background checkpoint failed: {e}");
                            warned = true;
                        }
                    }
                }
            })
            .context("cannot start the ledger's checkpoint thread")?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Opens (creating) the ledger at `path`: WAL journal, migrations applied.
    ///
    /// # Errors
    /// The file cannot be opened, a pragma does not take, or a migration fails.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create folder {}", parent.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open ledger {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        check_is_ledger(&conn, path, true)?;
        check_pragma(&conn, "journal_mode = WAL", "journal_mode", "wal")?;
        let ledger = Self::setup(conn).with_context(|| format!("ledger {}", path.display()))?;
        check_intact(&ledger.conn, path)?;
        Ok(ledger)
    }

    /// Opens an existing ledger for reading only: no file is created or changed (not the
    /// database, not its `-wal` or `-shm`), no migration runs. A ledger no run has open is
    /// read as an immutable file; one with a `-wal` beside it (a run is writing it, or one
    /// was killed) is read through SQLite's read-only mode, so its latest commits are seen.
    ///
    /// # Errors
    /// No file at `path`, not a klio-edge ledger, damaged, or newer than this klio-edge.
    pub fn open_read_only(path: &Path) -> Result<Ledger> {
        use rusqlite::OpenFlags;
        if !path.is_file() {
            bail!("no ledger at {}", path.display());
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let live = Path::new(&wal).exists();
        let mut uri = url::Url::from_file_path(crate::item::absolute(path))
            .map_err(|()| anyhow::anyhow!("cannot name {} as a file URI", path.display()))?;
        uri.set_query(Some(if live {
            "mode=ro"
        } else {
            "mode=ro&immutable=1"
        }));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(uri.as_str(), flags)
            .with_context(|| format!("cannot open ledger {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        check_is_ledger(&conn, path, false)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if version > newest {
            bail!("ledger schema version {version} is newer than this klio-edge knows ({newest}); upgrade klio-edge");
        }
        check_intact(&conn, path)?;
        Ok(Ledger { conn })
    }

    /// An in-memory ledger (tests).
    ///
    /// # Errors
    /// A migration fails.
    pub fn open_in_memory() -> Result<Ledger> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Ledger> {
        check_pragma(&conn, "synchronous = NORMAL", "synchronous", "1")?;
        check_pragma(&conn, "foreign_keys = ON", "foreign_keys", "1")?;
        let mut ledger = Ledger { conn };
        ledger.migrate()?;
        Ok(ledger)
    }

    fn migrate(&mut self) -> Result<()> {
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > newest {
            bail!("ledger schema version {current} is newer than this klio-edge knows ({newest}); upgrade klio-edge");
        }
        for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("migration {version}"))?;
            tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Whether a write transaction can start now (taken and rolled back at once).
    pub fn writable(&self) -> bool {
        self.conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .is_ok()
    }

    /// Marks rows left `running` (by a crashed or killed run) as failed with kind
    /// `interrupted`, with a `failed` history entry under the run that left them. Only a
    /// likely culprit is charged the attempt: the one item in flight, claimed `alone` (the
    /// pipeline runs every interrupted item alone on its next attempt), when its run
    /// `crashed` (the process died of its own fault: see [`witness`]). A stop from outside
    /// (SIGKILL, an OOM kill, a preempted VM, power loss) is not the item's doing: it is
    /// charged only at every [`LONE_STOPS_PER_ATTEMPT`]th such stop that found the item
    /// alone, so a few outside kills never use up a good item's attempts, while an item whose
    /// lone retries are stopped again and again (say, a memory bug that gets the process
    /// OOM-killed) still ends. Items that were in flight beside others get the attempt back.
    /// A file that crashes the process every time is charged on each of its lone retries and
    /// gives up after `run.max_attempts` of them.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn recover_running(&mut self, crashed: impl Fn(i64) -> bool) -> Result<Recovered> {
        let tx = self.conn.transaction()?;
        let running: Vec<(String, i64, bool, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT element, run_id, claimed_alone, lone_stops FROM items \
                 WHERE state = 'running'",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut got = Recovered::default();
        for (element, run_id, alone, lone_stops) in &running {
            let lone = *alone && running.len() == 1;
            let crash = lone && crashed(*run_id);
            let stops = lone_stops + i64::from(lone && !crash);
            let charge = crash || (lone && stops % LONE_STOPS_PER_ATTEMPT == 0);
            let message = if crash {
                "the process crashed while this item was the only one in flight: counted as \
                 an attempt"
                    .to_string()
            } else if lone {
                let verdict = if charge {
                    "counted as an attempt"
                } else {
                    "not counted as an attempt; retried alone"
                };
                format!(
                    "the run was stopped from outside (no crash recorded) while this item was \
                     the only one in flight ({stops} such stop(s), one in \
                     {LONE_STOPS_PER_ATTEMPT} counts): {verdict}"
                )
            } else {
                format!(
                    "the run stopped (killed or crashed) while {} item(s) were in flight: not \
                     counted as an attempt; retried alone",
                    running.len()
                )
            };
            if charge {
                got.charged += 1;
            } else {
                got.refunded += 1;
            }
            tx.execute(
                &format!(
                    "UPDATE items SET state = 'failed', error_kind = 'interrupted', \
                     error_message = ?2, attempts = MAX(attempts - ?3, 0), claimed_alone = 0, \
                     lone_stops = ?4, updated_at = {NOW} WHERE element = ?1"
                ),
                params![element, message, i64::from(!charge), stops],
            )?;
            Self::history(
                &tx,
                *run_id,
                element,
                "failed",
                Some(ErrorKind::Interrupted.as_str()),
                Some(&message),
                None,
            )?;
        }
        tx.commit()?;
        Ok(got)
    }

    /// Records the start of a run and returns its id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_run(&mut self, command: &str, config_hash: &str) -> Result<i64> {
        self.conn.execute(
            &format!("INSERT INTO runs (started_at, command, config_hash, version) VALUES ({NOW}, ?1, ?2, ?3)"),
            params![command, config_hash, env!("CARGO_PKG_VERSION")],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the end of a run.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn finish_run(&mut self, run_id: i64, c: &RunCounts) -> Result<()> {
        self.conn.execute(
            &format!("UPDATE runs SET finished_at = {NOW}, done = ?2, skipped = ?3, failed = ?4 WHERE id = ?1"),
            params![run_id, c.done as i64, c.skipped as i64, c.failed as i64],
        )?;
        Ok(())
    }

    /// The row of `element`, if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn get(&self, element: &str) -> Result<Option<ItemRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ITEM_COLUMNS} FROM items WHERE element = ?1"),
                [element],
                item_row,
            )
            .optional()?)
    }

    /// Marks an item `running` for a new attempt and returns the attempt number. The count
    /// starts again at 1 when the input or config differs from the row's, or with
    /// `how.reset`; `how.alone` marks the claim as the only one in flight.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn claim(
        &mut self,
        run_id: i64,
        element: &str,
        source: &str,
        input: &InputFacts,
        config_hash: &str,
        how: Claim,
    ) -> Result<i64> {
        let Claim { reset, alone } = how;
        let tx = self.conn.transaction()?;
        let prev: Option<(Option<String>, String, i64, String)> = tx
            .query_row(
                "SELECT input_hash, config_hash, attempts, state FROM items WHERE element = ?1",
                [element],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (attempts, fresh) = match prev {
            Some((h, c, a, state))
                if !reset && state != "done" && h == input.hash && c == config_hash =>
            {
                (a + 1, false)
            }
            _ => (1, true),
        };
        Self::upsert(
            &tx,
            run_id,
            element,
            source,
            input,
            config_hash,
            "running",
            attempts,
        )?;
        // A fresh count (new input or config, `--force`) forgets the outside stops too.
        tx.execute(
            "UPDATE items SET claimed_alone = ?2, \
             lone_stops = CASE WHEN ?3 THEN 0 ELSE lone_stops END WHERE element = ?1",
            params![element, alone, fresh],
        )?;
        tx.commit()?;
        Ok(attempts)
    }

    /// Commits a finished item.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn done(
        &mut self,
        run_id: i64,
        element: &str,
        duration_s: f64,
        stage_ms: &serde_json::Value,
        outputs: &[String],
        models: Option<&serde_json::Value>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let stage = stage_ms.to_string();
        let outs = serde_json::to_string(outputs)?;
        let models = models.map(serde_json::Value::to_string);
        tx.execute(
            &format!(
                "UPDATE items SET state = 'done', duration_s = ?2, stage_ms = ?3, outputs = ?4, \
                 models = ?5, error_kind = NULL, error_message = NULL, attempts = 0, \
                 lone_stops = 0, updated_at = {NOW} WHERE element = ?1"
            ),
            params![element, duration_s, stage, outs, models],
        )?;
        Self::history(&tx, run_id, element, "done", None, None, Some(&stage))?;
        tx.commit()?;
        Ok(())
    }

    /// Records an item whose complete outputs were found where outputs live (written by
    /// another node or an earlier run): a `done` row for this input and config, and a
    /// `skipped` history entry saying why.
    ///
    /// # Errors
    /// SQLite errors.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        run_id: i64,
        element: &str,
        source: &str,
        input: &InputFacts,
        config_hash: &str,
        outputs: &[String],
        why: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::upsert(&tx, run_id, element, source, input, config_hash, "done", 0)?;
        tx.execute(
            "UPDATE items SET outputs = ?2 WHERE element = ?1",
            params![element, serde_json::to_string(outputs)?],
        )?;
        Self::history(
            &tx,
            run_id,
            element,
            "skipped",
            Some("output_exists"),
            Some(why),
            None,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts or replaces an item's row with a new state and attempt count for this input
    /// and config (errors cleared).
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        tx: &rusqlite::Transaction<'_>,
        run_id: i64,
        element: &str,
        source: &str,
        input: &InputFacts,
        config_hash: &str,
        state: &str,
        attempts: i64,
    ) -> Result<()> {
        tx.execute(
            &format!(
                "INSERT INTO items (element, source, input_size, input_mtime_ns, input_hash, config_hash, \
                 state, attempts, version, run_id, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?10, ?7, ?8, ?9, {NOW}) \
                 ON CONFLICT (element) DO UPDATE SET source = excluded.source, \
                 input_size = excluded.input_size, input_mtime_ns = excluded.input_mtime_ns, \
                 input_hash = excluded.input_hash, config_hash = excluded.config_hash, \
                 state = excluded.state, attempts = excluded.attempts, error_kind = NULL, \
                 error_message = NULL, version = excluded.version, run_id = excluded.run_id, \
                 updated_at = excluded.updated_at"
            ),
            params![
                element,
                source,
                input.size,
                input.mtime_ns,
                input.hash,
                config_hash,
                attempts,
                env!("CARGO_PKG_VERSION"),
                run_id,
                state
            ],
        )?;
        Ok(())
    }

    /// Records a failed attempt.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn failed(
        &mut self,
        run_id: i64,
        element: &str,
        kind: ErrorKind,
        message: &str,
        stage_ms: &serde_json::Value,
    ) -> Result<()> {
        let kind = kind.as_str();
        let tx = self.conn.transaction()?;
        let stage = stage_ms.to_string();
        tx.execute(
            &format!(
                "UPDATE items SET state = 'failed', error_kind = ?2, error_message = ?3, stage_ms = ?4, \
                 updated_at = {NOW} WHERE element = ?1"
            ),
            params![element, kind, message, stage],
        )?;
        Self::history(
            &tx,
            run_id,
            element,
            "failed",
            Some(kind),
            Some(message),
            Some(&stage),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that an item was skipped (`skipped`) or not retried (`gave_up`) in this run.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn note(
        &mut self,
        run_id: i64,
        element: &str,
        noted: Noted,
        input: &InputFacts,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let state = match noted {
            Noted::Skipped => "skipped",
            Noted::GaveUp => "gave_up",
        };
        if noted == Noted::Skipped {
            // Remember the current mtime so the next run's fast path can skip hashing.
            tx.execute(
                "UPDATE items SET input_mtime_ns = ?2 WHERE element = ?1 AND input_hash IS ?3",
                params![element, input.mtime_ns, input.hash],
            )?;
        }
        Self::history(&tx, run_id, element, state, None, None, None)?;
        tx.commit()?;
        Ok(())
    }

    fn history(
        tx: &rusqlite::Transaction<'_>,
        run_id: i64,
        element: &str,
        state: &str,
        kind: Option<&str>,
        message: Option<&str>,
        stage: Option<&str>,
    ) -> Result<()> {
        tx.execute(
            &format!(
                "INSERT INTO history (run_id, element, state, error_kind, error_message, input_hash, \
                 config_hash, stage_ms, at) SELECT ?1, element, ?2, ?3, ?4, input_hash, config_hash, ?5, {NOW} \
                 FROM items WHERE element = ?6"
            ),
            params![run_id, state, kind, message, stage, element],
        )?;
        Ok(())
    }

    /// How many of `elements` are done with a config hash other than `config_hash` (a run
    /// with this config will recompute them).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn done_with_other_config(&self, config_hash: &str, elements: &[&str]) -> Result<usize> {
        let mut stmt = self
            .conn
            .prepare("SELECT element FROM items WHERE state = 'done' AND config_hash != ?1")?;
        let other: std::collections::HashSet<String> = stmt
            .query_map([config_hash], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(elements.iter().filter(|e| other.contains(**e)).count())
    }

    /// Item counts by state.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn counts(&self) -> Result<Vec<(String, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Failed items: element, source, error kind, message, attempts.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn failed_items(&self) -> Result<Vec<ItemRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE state = 'failed' ORDER BY element"
        ))?;
        let rows = stmt.query_map([], item_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every done item, by element id (what `export` reads).
    ///
    /// # Errors
    /// SQLite errors; an `outputs` column that is not a JSON list of names.
    pub fn done_items(&self) -> Result<Vec<DoneRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT element, source, duration_s, outputs, input_hash, config_hash FROM items \
             WHERE state = 'done' ORDER BY element",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                DoneRow {
                    element: r.get(0)?,
                    source: r.get(1)?,
                    duration_s: r.get(2)?,
                    outputs: Vec::new(),
                    input_hash: r.get(4)?,
                    config_hash: r.get(5)?,
                },
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut row, outputs) = row?;
            if let Some(text) = outputs {
                row.outputs = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "ledger row of {}: outputs is not a list of names",
                        row.element
                    )
                })?;
            }
            out.push(row);
        }
        Ok(out)
    }

    /// The latest runs, newest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, started_at, finished_at, command, config_hash, version, done, skipped, \
             failed FROM runs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                started_at: r.get(1)?,
                finished_at: r.get(2)?,
                command: r.get(3)?,
                config_hash: r.get(4)?,
                version: r.get(5)?,
                done: r.get(6)?,
                skipped: r.get(7)?,
                failed: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every history entry of `element`, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn history_of(&self, element: &str) -> Result<Vec<HistoryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT run_id, state, error_kind, error_message, input_hash, config_hash, stage_ms, at \
             FROM history WHERE element = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([element], |r| {
            let stage: Option<String> = r.get(6)?;
            Ok(HistoryRow {
                run_id: r.get(0)?,
                state: r.get(1)?,
                error_kind: r.get(2)?,
                error_message: r.get(3)?,
                input_hash: r.get(4)?,
                config_hash: r.get(5)?,
                stage_ms: stage.and_then(|s| serde_json::from_str(&s).ok()),
                at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Makes failed items eligible again: their attempt count starts over, so the next run
    /// tries them even when they had given up. Only items of `kinds` (all when empty) and of
    /// `elements` (all when empty). Each gets a `retried` history entry under a run of its own
    /// (`command`). Returns the elements retried.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn retry(
        &mut self,
        command: &str,
        kinds: &[String],
        elements: &[String],
    ) -> Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let chosen: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT element, COALESCE(error_kind, '') FROM items WHERE state = 'failed' ORDER BY element",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<(String, String)>>>()?
                .into_iter()
                .filter(|(e, k)| {
                    (kinds.is_empty() || kinds.contains(k))
                        && (elements.is_empty() || elements.contains(e))
                })
                .collect()
        };
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        tx.execute(
            &format!(
                "INSERT INTO runs (started_at, finished_at, command, config_hash, version, done, skipped, failed) \
                 VALUES ({NOW}, {NOW}, ?1, '', ?2, 0, 0, 0)"
            ),
            params![command, env!("CARGO_PKG_VERSION")],
        )?;
        let run_id = tx.last_insert_rowid();
        for (element, kind) in &chosen {
            tx.execute(
                &format!(
                    "UPDATE items SET attempts = 0, lone_stops = 0, updated_at = {NOW} \
                     WHERE element = ?1"
                ),
                [element],
            )?;
            let note = format!("made eligible again by `ledger retry` (was {kind})");
            Self::history(
                &tx,
                run_id,
                element,
                "retried",
                Some(kind),
                Some(&note),
                None,
            )?;
        }
        tx.commit()?;
        Ok(chosen.into_iter().map(|(e, _)| e).collect())
    }
}

/// One run of the ledger.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Start (UTC, RFC 3339).
    pub started_at: String,
    /// End; `None` when the run did not finish.
    pub finished_at: Option<String>,
    /// The command line.
    pub command: String,
    /// The config hash it ran with.
    pub config_hash: String,
    /// klio-edge version.
    pub version: String,
    /// Items done.
    pub done: Option<i64>,
    /// Items skipped.
    pub skipped: Option<i64>,
    /// Items failed.
    pub failed: Option<i64>,
}

/// One history entry of an item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    /// The run.
    pub run_id: i64,
    /// `done`, `failed`, `skipped`, `gave_up` or `retried`.
    pub state: String,
    /// Error kind (failed, gave_up, retried) or `output_exists` (skipped by adoption).
    pub error_kind: Option<String>,
    /// Error message or note.
    pub error_message: Option<String>,
    /// Input hash at that time.
    pub input_hash: Option<String>,
    /// Config hash at that time.
    pub config_hash: String,
    /// Milliseconds per stage.
    pub stage_ms: Option<serde_json::Value>,
    /// When (UTC).
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(h: &str) -> InputFacts {
        InputFacts {
            size: Some(1),
            mtime_ns: Some(2),
            hash: Some(h.into()),
        }
    }

    #[test]
    fn migrations_apply_to_a_fresh_database() {
        let l = Ledger::open_in_memory().unwrap();
        let v: i64 = l
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.last().unwrap().0);
    }

    #[test]
    fn file_ledger_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let mode: String = l
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(l);
        // Reopening applies no migration twice.
        Ledger::open(&dir.path().join("l.sqlite")).unwrap();
    }

    #[test]
    fn attempts_count_per_input_and_config_and_crashes_are_recovered() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("test", "c1").unwrap();
        let j = serde_json::json!({});
        assert_eq!(
            l.claim(run, "e", "/x", &facts("h1"), "c1", Claim::default())
                .unwrap(),
            1
        );
        l.failed(run, "e", ErrorKind::Corrupt, "bad", &j).unwrap();
        assert_eq!(
            l.claim(run, "e", "/x", &facts("h1"), "c1", Claim::default())
                .unwrap(),
            2
        );
        // A crash leaves it running beside another item; recovery marks both failed and
        // gives the attempts back.
        l.claim(run, "other", "/y", &facts("h9"), "c1", Claim::default())
            .unwrap();
        assert_eq!(
            l.recover_running(|_| true).unwrap(),
            Recovered {
                charged: 0,
                refunded: 2
            }
        );
        let row = l.get("e").unwrap().unwrap();
        assert_eq!(
            (row.state, row.error_kind.as_deref(), row.attempts),
            (ItemState::Failed, Some("interrupted"), 1)
        );
        // Retried alone and crashed: now it is charged.
        assert_eq!(
            l.claim(
                run,
                "e",
                "/x",
                &facts("h1"),
                "c1",
                Claim {
                    reset: false,
                    alone: true
                }
            )
            .unwrap(),
            2
        );
        assert_eq!(
            l.recover_running(|r| r == run).unwrap(),
            Recovered {
                charged: 1,
                refunded: 0
            }
        );
        assert_eq!(l.get("e").unwrap().unwrap().attempts, 2);
        // A new input starts over.
        assert_eq!(
            l.claim(run, "e", "/x", &facts("h2"), "c1", Claim::default())
                .unwrap(),
            1
        );
        l.done(run, "e", 1.5, &j, &["mel.npy".into()], None)
            .unwrap();
        let row = l.get("e").unwrap().unwrap();
        assert_eq!((row.state, row.attempts), (ItemState::Done, 0));
        assert_eq!(
            l.counts().unwrap(),
            vec![("done".to_string(), 1), ("failed".to_string(), 1)]
        );
        let hist: i64 = l
            .conn
            .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
            .unwrap();
        // failed (corrupt), interrupted twice (e and other), interrupted (e), done.
        assert_eq!(hist, 5);
    }

    /// A stop from outside (no crash witnessed) that finds an item alone is charged only
    /// one time in LONE_STOPS_PER_ATTEMPT; a witnessed crash always is; a fresh count forgets
    /// the stops.
    #[test]
    fn outside_stops_of_a_lone_item_are_charged_one_time_in_three() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("test", "c1").unwrap();
        let alone = Claim {
            reset: false,
            alone: true,
        };
        let mut attempts = Vec::new();
        for _ in 0..2 * LONE_STOPS_PER_ATTEMPT {
            l.claim(run, "e", "/x", &facts("h1"), "c1", alone).unwrap();
            l.recover_running(|_| false).unwrap();
            attempts.push(l.get("e").unwrap().unwrap().attempts);
        }
        assert_eq!(attempts, vec![0, 0, 1, 1, 1, 2]);
        let row = l.get("e").unwrap().unwrap();
        assert!(
            row.error_message
                .as_deref()
                .unwrap()
                .contains("stopped from outside (no crash"),
            "{:?}",
            row.error_message
        );
        // A witnessed crash is charged at once.
        l.claim(run, "e", "/x", &facts("h1"), "c1", alone).unwrap();
        assert_eq!(
            l.recover_running(|_| true).unwrap(),
            Recovered {
                charged: 1,
                refunded: 0
            }
        );
        assert_eq!(l.get("e").unwrap().unwrap().attempts, 3);
        // A new input starts the count over, outside stops included.
        l.claim(run, "e", "/x", &facts("h2"), "c1", alone).unwrap();
        l.recover_running(|_| false).unwrap();
        l.claim(run, "e", "/x", &facts("h2"), "c1", alone).unwrap();
        l.recover_running(|_| false).unwrap();
        assert_eq!(l.get("e").unwrap().unwrap().attempts, 0);
    }
}
