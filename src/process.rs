//! Driver for corpus runs (`klio-edge process`): expands the inputs into items, owns the
//! worker threads that hand each item to the [`Engine`](crate::pipeline::Engine), reports
//! progress and per-item lines, and sums up the run. What happens to one item is
//! `pipeline`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::config::Config;
use crate::item::{ItemRef, Outcome};
use crate::ledger::RunCounts;
use crate::pipeline::{Engine, EngineOptions, ErrorKind, ItemReport};
use crate::stage::exec::ExecStage;
use crate::stage::infer::InferStage;
use crate::store::Stores;

/// Default ledger file name inside the output folder.
pub const LEDGER_FILE: &str = "klio-ledger.sqlite";

/// What `process` was asked to do (flags resolved against the config).
#[derive(Debug, Clone)]
pub struct ProcessRequest {
    /// Files, folders, globs, `@manifests`.
    pub inputs: Vec<String>,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Ledger file.
    pub ledger: PathBuf,
    /// Worker threads.
    pub jobs: usize,
    /// Recompute done items.
    pub force: bool,
    /// Print the JSON summary on stdout.
    pub json: bool,
    /// No progress, no per-item lines.
    pub quiet: bool,
    /// The command line, for the ledger's run row.
    pub command: String,
}

/// The end of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Items processed and committed.
    pub done: u64,
    /// Items skipped as already done.
    pub skipped: u64,
    /// Items failed in this run, or failed before and out of attempts.
    pub failed: u64,
    /// Of `failed`: not retried because they are out of attempts.
    pub gave_up: u64,
    /// Of `failed`: the input does not exist (kind `missing_input`).
    pub missing_input: u64,
    /// Items named by the inputs.
    pub items: u64,
    /// Seconds of audio decoded in this run.
    pub audio_s: f64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// `audio_s / wall_s`.
    pub realtime_factor: f64,
    /// The ledger's run id.
    pub run_id: i64,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Ledger file.
    pub ledger: PathBuf,
}

/// Runs `process` to the end, with the exec programs resolved by [`ExecStage::new`].
///
/// # Errors
/// Only for problems with the run itself (ledger, output folder, inputs); item failures are
/// recorded and counted.
pub fn run(
    cfg: &Config,
    req: &ProcessRequest,
    exec: ExecStage,
    infer: InferStage,
) -> Result<Summary> {
    let started = Instant::now();
    // One set of clients lists the inputs and then fetches them.
    let stores = Arc::new(Stores::new(&cfg.store));
    let expanded = crate::inputs::expand(
        &stores,
        &req.inputs,
        std::slice::from_ref(&req.out_dir),
        &crate::inputs::Selection::for_config(cfg),
    )?;
    for w in &expanded.warnings {
        tracing::warn!("{w}");
    }
    let opts = EngineOptions {
        out_dir: req.out_dir.clone(),
        ledger: req.ledger.clone(),
        force: req.force,
        command: req.command.clone(),
        stores: Some(stores),
    };
    let ctx = Engine::open(cfg.clone(), &opts, exec, infer)?;
    let run_id = ctx.run_id();
    if !req.force {
        let elements: Vec<&str> = expanded.items.iter().map(|i| i.element.as_str()).collect();
        let other = ctx.done_with_other_config(&elements)?;
        if other > 0 {
            tracing::warn!(
                "{other} done item{} made with another config and will be recomputed \
                 (config hash now {})",
                if other == 1 { " was" } else { "s were" },
                ctx.config_hash()
            );
        }
    }

    let items = expanded.items;
    let total = items.len() as u64;
    let bar = crate::term::progress_bar(total, req.quiet);
    let mut counts = RunCounts::default();
    let mut gave_up = 0u64;
    let mut missing_input = 0u64;
    let mut unrecorded = 0u64;
    let mut first_unrecorded: Option<String> = None;
    let mut audio_s = 0.0;
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<ItemRef>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<ItemReport>();
    for item in items {
        work_tx.send(item).expect("receiver alive");
    }
    drop(work_tx);
    std::thread::scope(|s| {
        for _ in 0..req.jobs.max(1) {
            let (rx, tx, ctx) = (work_rx.clone(), done_tx.clone(), &ctx);
            s.spawn(move || {
                for item in rx {
                    // Every line logged while the item runs (a library's too) names it.
                    let span = tracing::info_span!("item", element = %item.element);
                    let report = span.in_scope(|| ctx.process(item, false));
                    if tx.send(report).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        for r in done_rx {
            audio_s += r.audio_s;
            if let Some(why) = &r.unrecorded {
                unrecorded += 1;
                first_unrecorded.get_or_insert_with(|| why.clone());
            }
            let line = match r.outcome {
                Outcome::Done => {
                    counts.done += 1;
                    format!("done     {} ({:.1} s audio)", r.item.element, r.audio_s)
                }
                Outcome::Skipped => {
                    counts.skipped += 1;
                    format!("skipped  {} (already done)", r.item.element)
                }
                Outcome::Failed | Outcome::GaveUp => {
                    counts.failed += 1;
                    if r.error
                        .as_ref()
                        .is_some_and(|e| e.kind == ErrorKind::MissingInput)
                    {
                        missing_input += 1;
                    }
                    let e = r
                        .error
                        .as_ref()
                        .map_or(String::new(), |e| format!("[{}] {}", e.kind, e.message));
                    if r.outcome == Outcome::GaveUp {
                        gave_up += 1;
                        format!(
                            "gave up  {} ({}): out of attempts; last error {e}",
                            r.item.element, r.item.source
                        )
                    } else {
                        format!("failed   {} ({}): {e}", r.item.element, r.item.source)
                    }
                }
            };
            match &bar {
                Some(b) => {
                    if matches!(r.outcome, Outcome::Failed | Outcome::GaveUp) {
                        b.println(&line);
                    }
                    b.inc(1);
                    b.set_message(format!(
                        "{:.2} h audio, {} failed",
                        audio_s / 3600.0,
                        counts.failed
                    ));
                }
                None if !req.quiet && !crate::term::json_logs() => {
                    if matches!(r.outcome, Outcome::Failed | Outcome::GaveUp) {
                        tracing::warn!("{line}");
                    } else {
                        tracing::info!("{line}");
                    }
                }
                None if !req.quiet => {
                    let element = r.item.element.as_str();
                    match (&r.outcome, &r.error) {
                        (Outcome::Failed | Outcome::GaveUp, e) => {
                            let kind = e.as_ref().map_or(ErrorKind::Unknown, |e| e.kind);
                            tracing::warn!(
                                element,
                                stage = kind.stage(),
                                error_kind = kind.as_str(),
                                "{line}"
                            );
                        }
                        (Outcome::Skipped, _) => {
                            tracing::info!(element, stage = "ledger", "{line}")
                        }
                        (Outcome::Done, _) => tracing::info!(element, stage = "sink", "{line}"),
                    }
                }
                None => {}
            }
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let closed = ctx.close(&counts);
    if let Some(why) = first_unrecorded {
        anyhow::bail!(
            "the ledger {} could not record the outcome of {unrecorded} item(s) ({why}): \
             is its disk full? Their outputs are either complete or absent; a run once the \
             ledger can be written again processes them",
            req.ledger.display()
        );
    }
    closed?;
    let wall_s = started.elapsed().as_secs_f64();
    Ok(Summary {
        done: counts.done,
        skipped: counts.skipped,
        failed: counts.failed,
        gave_up,
        missing_input,
        items: total,
        audio_s,
        wall_s,
        realtime_factor: if wall_s > 0.0 { audio_s / wall_s } else { 0.0 },
        run_id,
        out_dir: req.out_dir.clone(),
        ledger: req.ledger.clone(),
    })
}

/// The ledger path for an output folder when none is given.
pub fn default_ledger(out_dir: &Path) -> PathBuf {
    out_dir.join(LEDGER_FILE)
}
