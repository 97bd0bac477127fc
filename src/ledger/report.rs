//! Read-only queries for `klio-edge report` (and `serve`'s `/`): run wall times, stage totals
//! per run, completion times, and every item streamed through a callback, so a report over
//! millions of rows aggregates in bounded memory.

use anyhow::{Context, Result};
use rusqlite::params;

use super::Ledger;

/// A run with its wall time.
#[derive(Debug, Clone)]
pub struct RunTimes {
    /// Run id.
    pub id: i64,
    /// Start (UTC, RFC 3339).
    pub started_at: String,
    /// The command line.
    pub command: String,
    /// Seconds from start to finish (to its last history entry when it did not finish).
    pub wall_s: f64,
    /// Whether it finished.
    pub finished: bool,
    /// Items done, skipped, failed (the run's own counts; history when it did not finish).
    pub done: i64,
    /// Items skipped.
    pub skipped: i64,
    /// Items failed.
    pub failed: i64,
    /// Milliseconds per stage, summed over the run's items.
    pub stage_ms: Vec<(String, f64)>,
    /// Seconds of audio of the items the run finished (their current duration).
    pub audio_s: f64,
}

/// One item as the report sees it.
#[derive(Debug, Clone)]
pub struct ItemFacts {
    /// Element id.
    pub element: String,
    /// Source.
    pub source: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Error kind of a failed item.
    pub error_kind: Option<String>,
    /// Its message.
    pub error_message: Option<String>,
    /// Audio seconds (done items).
    pub duration_s: Option<f64>,
    /// Milliseconds per stage of the latest attempt.
    pub stage_ms: Vec<(String, f64)>,
    /// The run that last touched it.
    pub run_id: Option<i64>,
}

impl ItemFacts {
    /// Milliseconds over every stage.
    pub fn total_ms(&self) -> f64 {
        self.stage_ms.iter().map(|s| s.1).sum()
    }
}

fn stage_list(text: Option<String>) -> Vec<(String, f64)> {
    let Some(text) = text else { return Vec::new() };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text) {
        Ok(m) => m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64()?)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl Ledger {
    /// The latest `limit` runs, newest first, with wall times and per-stage totals.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn run_times(&self, limit: usize) -> Result<Vec<RunTimes>> {
        let mut stmt = self.conn.prepare(
            "SELECT r.id, r.started_at, r.command, r.finished_at IS NOT NULL, \
               (julianday(COALESCE(r.finished_at, \
                  (SELECT max(at) FROM history h WHERE h.run_id = r.id), r.started_at)) \
                - julianday(r.started_at)) * 86400.0, \
               COALESCE(r.done, (SELECT count(*) FROM history h WHERE h.run_id = r.id AND h.state = 'done')), \
               COALESCE(r.skipped, (SELECT count(*) FROM history h WHERE h.run_id = r.id AND h.state = 'skipped')), \
               COALESCE(r.failed, (SELECT count(*) FROM history h WHERE h.run_id = r.id AND h.state IN ('failed', 'gave_up'))) \
             FROM runs r ORDER BY r.id DESC LIMIT ?1",
        )?;
        let mut runs = stmt
            .query_map([limit as i64], |r| {
                Ok(RunTimes {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    command: r.get(2)?,
                    finished: r.get(3)?,
                    wall_s: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0).max(0.0),
                    done: r.get(5)?,
                    skipped: r.get(6)?,
                    failed: r.get(7)?,
                    stage_ms: Vec::new(),
                    audio_s: 0.0,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stages = self.conn.prepare(
            "SELECT j.key, total(j.value) FROM history h, json_each(h.stage_ms) j \
             WHERE h.run_id = ?1 AND json_valid(h.stage_ms) AND json_type(h.stage_ms) = 'object' \
             GROUP BY j.key ORDER BY j.key",
        )?;
        let mut audio = self.conn.prepare(
            "SELECT total(i.duration_s) FROM history h JOIN items i ON i.element = h.element \
             WHERE h.run_id = ?1 AND h.state = 'done'",
        )?;
        for run in &mut runs {
            run.stage_ms = stages
                .query_map([run.id], |r| Ok((r.get(0)?, r.get::<_, f64>(1)?)))?
                .collect::<rusqlite::Result<_>>()
                .with_context(|| format!("stage times of run {}", run.id))?;
            run.audio_s = audio.query_row([run.id], |r| r.get(0))?;
        }
        Ok(runs)
    }

    /// Calls `f` with the seconds since the run started at which each of its items ended,
    /// and how (`done`, `failed`, ...), in order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn for_each_completion(&self, run_id: i64, mut f: impl FnMut(f64, &str)) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT (julianday(h.at) - julianday(r.started_at)) * 86400.0, h.state \
             FROM history h JOIN runs r ON r.id = h.run_id WHERE h.run_id = ?1 ORDER BY h.id",
        )?;
        let mut rows = stmt.query(params![run_id])?;
        while let Some(r) = rows.next()? {
            let s: Option<f64> = r.get(0)?;
            let state: String = r.get(1)?;
            f(s.unwrap_or(0.0), &state);
        }
        Ok(())
    }

    /// Calls `f` with every item, in element order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn for_each_item(&self, mut f: impl FnMut(ItemFacts)) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT element, source, state, error_kind, error_message, duration_s, stage_ms, \
             run_id FROM items ORDER BY element",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(ItemFacts {
                element: r.get(0)?,
                source: r.get(1)?,
                state: r.get(2)?,
                error_kind: r.get(3)?,
                error_message: r.get(4)?,
                duration_s: r.get(5)?,
                stage_ms: stage_list(r.get(6)?),
                run_id: r.get(7)?,
            });
        }
        Ok(())
    }

    /// The ledger's clock (the one its rows are stamped with), to the minute.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn now_utc(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("SELECT strftime('%Y-%m-%d %H:%M UTC', 'now')", [], |r| {
                r.get(0)
            })?)
    }

    /// Whether `element` is a done item (the serve page draws only those).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn is_done(&self, element: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM items WHERE element = ?1 AND state = 'done'",
            [element],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }
}
