//! The command layer: the grammar ([`args`]), dispatch from the parsed command line to the
//! drivers, and the small commands (`ledger`, `config`, `completions`, `man`). Maps results
//! to exit codes: 0 all good, 1 some items failed, 2 usage or config error, 130 `serve` stopped
//! by a second signal. Signals are handled here, not in the drivers.

pub mod args;

pub use args::Cli;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::{Config, Source};
use crate::ledger::Ledger;
use crate::outln;
use crate::pipeline::Engine;
use crate::process::{self, ProcessRequest};
use crate::serve::{self, PublishRequest, ServeRequest};
use crate::stage::exec::ExecStage;
use crate::stage::infer::InferStage;
use crate::term::{color_stderr, emit};
use args::{Command, ConfigCommand, LedgerCommand};

/// Exit code: everything succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: some items failed (and were recorded).
pub const EXIT_ITEMS_FAILED: i32 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: `serve` stopped by a second signal before its drain finished (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// An error that is the user's to fix (bad config, missing ledger): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::term::error_text(.0))]
pub struct UsageError(pub anyhow::Error);

fn usage<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| UsageError(e).into())
}

/// Sets up logging on stderr: `KLIO_LOG` (an `EnvFilter`) or `info` (`error` with `--quiet`);
/// `--log-format json` gives one JSON object per line with the span's fields (`element`).
/// Decoder libraries' own lines are off by default: every item outcome is a line of ours,
/// with the element and the stage.
pub fn init_logging(cli: &Cli) {
    let default = if cli.quiet {
        "error"
    } else {
        "info,symphonia=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KLIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_stderr())
        .with_target(false);
    crate::term::set_json_logs(cli.log_format.as_deref() == Some("json"));
    if cli.log_format.as_deref() == Some("json") {
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        logs.init();
    }
}

/// The flags that are config keys in disguise, as `--set` overrides after the user's own
/// (applied before validation): the command line, the environment and the file resolve into
/// one [`Config`], and everything downstream reads only that, so `--out`, `--jobs`, `--set`
/// and the file cannot disagree (ripgrep's low-level to high-level arguments).
fn flag_sets(cli: &Cli) -> Vec<String> {
    let mut sets = cli.set.clone();
    let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path = |sets: &mut Vec<String>, key: &str, p: &Option<PathBuf>| {
        if let Some(p) = p {
            sets.push(format!("{key}={}", quoted(&p.to_string_lossy())));
        }
    };
    match &cli.command {
        Command::Process(a) => {
            if !a.ext.is_empty() {
                let list: Vec<String> = a.ext.iter().map(|e| quoted(e)).collect();
                sets.push(format!("run.extensions=[{}]", list.join(", ")));
            }
            path(&mut sets, "output.dir", &a.out);
            path(&mut sets, "output.ledger", &a.ledger);
            if let Some(j) = a.jobs {
                sets.push(format!("run.jobs={j}"));
            }
        }
        Command::Serve(a) => {
            if let Some(http) = &a.http {
                let addr = if http == "off" { "" } else { http.as_str() };
                sets.push(format!("serve.http={}", quoted(addr)));
            }
            path(&mut sets, "output.dir", &a.out);
            path(&mut sets, "output.ledger", &a.ledger);
            if let Some(j) = a.jobs {
                sets.push(format!("serve.max_in_flight={j}"));
                if j == 0 {
                    // 0 is one per core, not "fall back to run.jobs".
                    sets.push("run.jobs=0".into());
                }
            }
        }
        Command::Export(a) => {
            path(&mut sets, "output.dir", &a.out);
            path(&mut sets, "output.ledger", &a.ledger);
        }
        Command::Report(a) => {
            path(&mut sets, "output.dir", &a.out);
            path(&mut sets, "output.ledger", &a.ledger);
        }
        Command::Plot(a) => path(&mut sets, "output.dir", &a.out),
        Command::Ledger { command } => {
            let loc = match command {
                LedgerCommand::Status(l) | LedgerCommand::Failed(l) => l,
                LedgerCommand::Show { loc, .. } | LedgerCommand::Retry { loc, .. } => loc,
            };
            path(&mut sets, "output.dir", &loc.out);
            path(&mut sets, "output.ledger", &loc.ledger);
        }
        _ => {}
    }
    sets
}

/// Runs the command; returns the exit code.
///
/// # Errors
/// Run-level failures; [`UsageError`] for exit code 2.
pub fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "klio-edge", &mut buf);
            emit(format_args!("{}", String::from_utf8_lossy(&buf)));
            return Ok(EXIT_OK);
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            emit(format_args!("{}", String::from_utf8_lossy(&buf)));
            return Ok(EXIT_OK);
        }
        _ => {}
    }
    let file = match &cli.command {
        Command::Config {
            command: ConfigCommand::Validate { file } | ConfigCommand::Show { file },
        } => file.clone().or_else(|| cli.config.clone()),
        _ => cli.config.clone(),
    };
    let (cfg, source) = usage(Config::load(file.as_deref(), &flag_sets(&cli)))?;
    let from = match &source {
        Source::Defaults => "built-in defaults".to_string(),
        Source::File(p) => p.display().to_string(),
    };
    match cli.command {
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
        Command::Config { command } => match command {
            ConfigCommand::Validate { .. } => {
                // What a run checks at start-up: programs found, models loaded and their
                // sha256 matched, label files read.
                let exec = usage(ExecStage::new(&cfg.exec).context("[[exec]]"))?;
                let infer = usage(InferStage::new(&cfg.model, &cfg.infer).context("[[model]]"))?;
                let hash = crate::pipeline::config_hash(&cfg, &exec, &infer);
                if !cli.quiet {
                    eprintln!(
                        "config OK ({from}): {} exec program(s), {} model(s) loaded",
                        cfg.exec.len(),
                        cfg.model.len()
                    );
                }
                outln!("{hash}");
                Ok(EXIT_OK)
            }
            ConfigCommand::Show { .. } => {
                outln!("# from {from}");
                emit(format_args!("{}", cfg.to_toml()));
                Ok(EXIT_OK)
            }
        },
        Command::Process(args) => {
            let (out_dir, ledger) = usage(out_and_ledger(&cfg))?;
            let jobs = per_core(cfg.run.jobs);
            let req = ProcessRequest {
                inputs: args.inputs,
                out_dir,
                ledger,
                jobs,
                force: args.force,
                json: args.json,
                quiet: cli.quiet,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            // A missing program or a failing version probe is a configuration problem.
            let exec = usage(ExecStage::new(&cfg.exec))?;
            let infer = usage(InferStage::new(&cfg.model, &cfg.infer))?;
            let summary = process::run(&cfg, &req, exec, infer)?;
            if req.json {
                outln!("{}", serde_json::to_string(&summary)?);
            }
            if !req.quiet {
                report_summary(&summary, cli.log_format.as_deref() == Some("json"));
            }
            Ok(if summary.failed > 0 {
                EXIT_ITEMS_FAILED
            } else {
                EXIT_OK
            })
        }
        Command::Serve(args) => {
            let (out_dir, ledger) = usage(out_and_ledger(&cfg))?;
            let n = match cfg.serve.max_in_flight {
                0 => cfg.run.jobs,
                n => n,
            };
            let req = ServeRequest {
                out_dir,
                ledger,
                max_in_flight: per_core(n),
                until_idle: args.until_idle,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            let exec = usage(ExecStage::new(&cfg.exec))?;
            let infer = usage(InferStage::new(&cfg.model, &cfg.infer))?;
            run_serve(cfg, &req, exec, infer)
        }
        Command::Publish(args) => {
            let n = serve::publish(
                &cfg,
                &PublishRequest {
                    inputs: args.inputs,
                    force: args.force,
                    ping: args.ping,
                    direction: if args.top_down {
                        crate::source::klio::Direction::TopDown
                    } else {
                        crate::source::klio::Direction::BottomUp
                    },
                },
            )?;
            if !cli.quiet {
                eprintln!(
                    "published {} to the {:?} source",
                    items(n as u64),
                    cfg.serve.source
                );
            }
            Ok(EXIT_OK)
        }
        Command::Ledger { command } => ledger_command(&cfg, command, cli.quiet),
        Command::Export(args) => export_command(&cfg, args, cli.quiet),
        Command::Plot(args) => plot_command(&cfg, args),
        Command::Report(args) => report_command(&cfg, args, cli.quiet),
    }
}

/// `klio-edge plot`: exit 0 with the picture written, 2 when it cannot be drawn.
fn plot_command(cfg: &Config, args: args::PlotArgs) -> Result<i32> {
    let req = crate::picture::PlotRequest {
        target: args.target,
        out: cfg.output.dir.to_string_lossy().into_owned(),
        feature: args.feature,
        to: args.to,
        options: crate::picture::FigureOptions {
            width: args.width,
            height: args.height,
            db_range: args.db_range,
        },
    };
    let stores = std::sync::Arc::new(crate::store::Stores::new(&cfg.store));
    let summary = usage(crate::picture::plot(&req, stores))?;
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    }
    Ok(EXIT_OK)
}

/// `klio-edge report`: exit 0 with the page written, 2 for an unusable ledger or destination.
fn report_command(cfg: &Config, args: args::ReportArgs, quiet: bool) -> Result<i32> {
    let (out_dir, _) = usage(out_and_ledger(cfg))?;
    let ledger = existing_ledger_path(cfg)?;
    let req = crate::picture::report::ReportRequest {
        out: out_dir.to_string_lossy().into_owned(),
        ledger,
        items: usize::from(args.items),
        feature: args.feature,
    };
    let stores = std::sync::Arc::new(crate::store::Stores::new(&cfg.store));
    let written = usage(crate::picture::report::write(&req, &args.to, stores))?;
    if !quiet {
        eprintln!(
            "wrote {} ({} pictures in {})",
            args.to.display(),
            written.pictures,
            written.pictures_dir.display()
        );
    }
    Ok(EXIT_OK)
}

/// `klio-edge export`: exit 0 when every done item was exported, 1 when some were left out
/// (listed), 2 for an unusable ledger, outputs or destination.
fn export_command(cfg: &Config, args: args::ExportArgs, quiet: bool) -> Result<i32> {
    if args.with_audio && args.format != crate::export::Format::Webdataset {
        return usage(Err(anyhow::anyhow!(
            "--with-audio puts the source into WebDataset samples: use it with --format webdataset"
        )));
    }
    let (out_dir, _) = usage(out_and_ledger(cfg))?;
    let ledger = existing_ledger_path(cfg)?;
    let req = crate::export::ExportRequest {
        out: out_dir.to_string_lossy().into_owned(),
        ledger,
        format: args.format,
        to: args.to,
        overwrite: args.overwrite,
        max_file_mb: args.max_file_mb,
        shard_mb: args.shard_mb,
        with_audio: args.with_audio,
        quiet,
    };
    let stores = std::sync::Arc::new(crate::store::Stores::new(&cfg.store));
    let summary = usage(crate::export::run(&req, stores))?;
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    }
    if !quiet {
        eprintln!(
            "exported {} as {} to {}: {} file(s), {:.1} MB, {:.2} s ({:.0} MB/s){}",
            items(summary.items),
            summary.format,
            summary.to.display(),
            summary.files,
            summary.bytes as f64 / 1e6,
            summary.wall_s,
            summary.bytes as f64 / 1e6 / summary.wall_s.max(1e-9),
            if summary.failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} left out (listed above)",
                    items(summary.failed.len() as u64)
                )
            }
        );
    }
    Ok(if summary.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_ITEMS_FAILED
    })
}

/// "1 item", "2 items".
fn items(n: u64) -> String {
    format!("{n} item{}", if n == 1 { "" } else { "s" })
}

/// The closing line of `process` on stderr; with `--log-format json`, one JSON log object
/// carrying every field of the summary.
fn report_summary(summary: &process::Summary, json: bool) {
    if json {
        let s = summary;
        tracing::info!(
            done = s.done,
            skipped = s.skipped,
            failed = s.failed,
            gave_up = s.gave_up,
            missing_input = s.missing_input,
            items = s.items,
            audio_s = s.audio_s,
            wall_s = s.wall_s,
            realtime_factor = s.realtime_factor,
            run_id = s.run_id,
            out_dir = %s.out_dir.display(),
            ledger = %s.ledger.display(),
            "run finished"
        );
        return;
    }
    let mut extra = String::new();
    if summary.gave_up > 0 {
        extra += &format!(" ({} out of attempts)", summary.gave_up);
    }
    if summary.missing_input > 0 {
        extra += &format!(" ({} missing input)", summary.missing_input);
    }
    let speed = if summary.audio_s > 0.0 && summary.wall_s > 0.0 {
        format!(
            "; {:.1} s of audio in {:.2} s ({:.0}x realtime)",
            summary.audio_s, summary.wall_s, summary.realtime_factor
        )
    } else {
        format!("; no audio decoded, {:.2} s", summary.wall_s)
    };
    eprintln!(
        "{} done, {} skipped, {} failed{extra} of {}{speed}; ledger {}",
        summary.done,
        summary.skipped,
        summary.failed,
        items(summary.items),
        summary.ledger.display()
    );
    if summary.failed > 0 {
        eprintln!(
            "see the reasons with: klio-edge ledger failed --ledger {}",
            summary.ledger.display()
        );
    }
}

/// `klio-edge ledger ...`: read-only but for `retry`.
fn ledger_command(cfg: &Config, command: LedgerCommand, quiet: bool) -> Result<i32> {
    match command {
        LedgerCommand::Status(loc) => {
            let (path, ledger) = open_existing(cfg)?;
            let counts = ledger.counts()?;
            let runs = ledger.runs(5)?;
            let total: i64 = counts.iter().map(|c| c.1).sum();
            if loc.json {
                let c: serde_json::Map<String, serde_json::Value> = counts
                    .iter()
                    .map(|(s, n)| (s.clone(), (*n).into()))
                    .collect();
                outln!(
                    "{}",
                    serde_json::json!({ "ledger": path, "items": c, "total": total, "runs": runs })
                );
                return Ok(EXIT_OK);
            }
            outln!("ledger {}", path.display());
            for (state, n) in &counts {
                outln!("  {state:<8} {n}");
            }
            outln!("  {:<8} {total}", "total");
            if !runs.is_empty() {
                outln!("latest runs:");
                for r in runs {
                    outln!(
                        "  #{} {} -> {}: {} done, {} skipped, {} failed  ({})",
                        r.id,
                        r.started_at,
                        r.finished_at.as_deref().unwrap_or("(did not finish)"),
                        r.done.unwrap_or(0),
                        r.skipped.unwrap_or(0),
                        r.failed.unwrap_or(0),
                        r.command
                    );
                }
            }
            Ok(EXIT_OK)
        }
        LedgerCommand::Failed(loc) => {
            let (path, ledger) = open_existing(cfg)?;
            let rows = ledger.failed_items()?;
            if loc.json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "element": r.element, "source": r.source, "error_kind": r.error_kind,
                            "error_message": r.error_message, "attempts": r.attempts,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(list));
                return Ok(EXIT_OK);
            }
            let mut groups: std::collections::BTreeMap<&str, Vec<&crate::ledger::ItemRow>> =
                Default::default();
            for r in &rows {
                groups
                    .entry(r.error_kind.as_deref().unwrap_or("?"))
                    .or_default()
                    .push(r);
            }
            let mut order: Vec<_> = groups.into_iter().collect();
            order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
            for (kind, list) in &order {
                outln!("{:>6}  {kind}", list.len());
            }
            for (kind, list) in &order {
                outln!("\n{kind} ({}):", items(list.len() as u64));
                for r in list {
                    outln!(
                        "  {}\t{}\t{} (attempts {})",
                        r.element,
                        r.source,
                        r.error_message.as_deref().unwrap_or(""),
                        r.attempts
                    );
                }
            }
            if !quiet {
                if rows.is_empty() {
                    eprintln!("no failed items in {}", path.display());
                } else {
                    eprintln!(
                        "{} failed; make them eligible again with: klio-edge ledger retry --ledger {} [--kind K] [ELEMENT...]",
                        items(rows.len() as u64),
                        path.display()
                    );
                }
            }
            Ok(EXIT_OK)
        }
        LedgerCommand::Show { element, loc } => {
            let (path, ledger) = open_existing(cfg)?;
            let Some(row) = ledger.get(&element)? else {
                return usage(Err(anyhow::anyhow!(
                    "no item {element:?} in {} (`klio-edge ledger status` lists the counts)",
                    path.display()
                )));
            };
            let history = ledger.history_of(&element)?;
            if loc.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "element": row.element, "source": row.source, "state": row.state,
                        "error_kind": row.error_kind, "error_message": row.error_message,
                        "attempts": row.attempts, "input_size": row.input_size,
                        "input_mtime_ns": row.input_mtime_ns, "input_hash": row.input_hash,
                        "config_hash": row.config_hash, "history": history,
                    })
                );
                return Ok(EXIT_OK);
            }
            outln!("element      {}", row.element);
            outln!("source       {}", row.source);
            outln!("state        {}", row.state);
            if let Some(k) = &row.error_kind {
                outln!(
                    "error        [{k}] {}",
                    row.error_message.as_deref().unwrap_or("")
                );
            }
            outln!("attempts     {}", row.attempts);
            outln!(
                "input        {} bytes, hash {}",
                row.input_size.map_or("?".into(), |n| n.to_string()),
                row.input_hash.as_deref().unwrap_or("?")
            );
            outln!("config hash  {}", row.config_hash);
            outln!("history ({}):", history.len());
            for h in &history {
                let why = match (&h.error_kind, &h.error_message) {
                    (Some(k), Some(m)) => format!(" [{k}] {m}"),
                    (Some(k), None) => format!(" [{k}]"),
                    _ => String::new(),
                };
                outln!("  {}  run #{:<4} {:<8}{why}", h.at, h.run_id, h.state);
            }
            Ok(EXIT_OK)
        }
        LedgerCommand::Retry {
            kind,
            elements,
            loc,
        } => {
            let path = existing_ledger_path(cfg)?;
            let mut ledger =
                Ledger::open(&path).with_context(|| format!("ledger {}", path.display()))?;
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let retried = ledger.retry(&command, &kind, &elements)?;
            let unknown: Vec<&String> = elements.iter().filter(|e| !retried.contains(e)).collect();
            if loc.json {
                outln!(
                    "{}",
                    serde_json::json!({ "retried": retried, "not_failed": unknown })
                );
            } else {
                for e in &retried {
                    outln!("{e}");
                }
            }
            if !quiet {
                eprintln!(
                    "{} eligible again on the next run",
                    items(retried.len() as u64)
                );
                for e in &unknown {
                    eprintln!("warning: {e} is not a failed item of this ledger; left as it is");
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// `--out` and `--ledger` resolved against the config: the ledger defaults to `output.ledger`,
/// else `<out>/klio-ledger.sqlite`. An object-store `--out` needs a ledger named explicitly.
fn out_and_ledger(cfg: &Config) -> Result<(PathBuf, PathBuf)> {
    let out_dir = cfg.output.dir.clone();
    let remote = crate::store::Remote::parse(&out_dir.to_string_lossy())
        .map_err(anyhow::Error::msg)
        .context("--out")?;
    let ledger = match cfg.output.ledger.clone() {
        Some(l) => l,
        None if remote.is_some() => anyhow::bail!(
            "--out {} is an object store; name a local ledger file with --ledger FILE \
             (one per node of a fleet: the output-exists check keeps them from redoing each other's work)",
            out_dir.display()
        ),
        None => process::default_ledger(&out_dir),
    };
    Ok((out_dir, ledger))
}

/// A worker count where 0 means one per core.
fn per_core(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn ledger_path(cfg: &Config) -> PathBuf {
    cfg.output
        .ledger
        .clone()
        .unwrap_or_else(|| process::default_ledger(&cfg.output.dir))
}

/// The ledger file named by `loc`; a usage error when there is none (no command creates one
/// just by looking).
fn existing_ledger_path(cfg: &Config) -> Result<PathBuf> {
    let path = ledger_path(cfg);
    if !path.is_file() {
        return usage(Err(anyhow::anyhow!(
            "no ledger at {} (name it with --ledger FILE or --out DIR)",
            path.display()
        )));
    }
    Ok(path)
}

/// The ledger named by `loc`, opened read-only (nothing created or changed).
fn open_existing(cfg: &Config) -> Result<(PathBuf, Ledger)> {
    let path = existing_ledger_path(cfg)?;
    let ledger = usage(Ledger::open_read_only(&path))?;
    Ok((path, ledger))
}

/// `serve`: the engine, the source and the signals. The first SIGTERM or SIGINT drains
/// (`serve::run` takes no more events and waits for those in flight); a second one stops at
/// once with [`EXIT_INTERRUPTED`] (what was in flight is redelivered later).
fn run_serve(cfg: Config, req: &ServeRequest, exec: ExecStage, infer: InferStage) -> Result<i32> {
    let engine = std::sync::Arc::new(Engine::open(
        cfg.clone(),
        &req.engine_options(),
        exec,
        infer,
    )?);
    let rt = serve::runtime()?;
    let local = tokio::task::LocalSet::new();
    let served = local.block_on(&rt, async {
        let signals = Signals::install()?;
        let source = serve::Source::open(&cfg.serve, req.max_in_flight).await?;
        tokio::select! {
            counts = serve::run(source, engine.clone(), &cfg.serve, req, signals.nth(1)) => {
                counts.map(Some)
            }
            () = signals.nth(2) => {
                tracing::warn!("second signal: exiting now; unfinished items will be redelivered");
                Ok(None)
            }
        }
    });
    // Drops the background tasks (and their handles on the engine).
    drop(local);
    let code = match served? {
        Some(counts) => {
            match std::sync::Arc::try_unwrap(engine) {
                Ok(e) => e.close(&counts)?,
                Err(_) => tracing::warn!(
                    "items still running at exit: the ledger marks them interrupted and they are redelivered"
                ),
            }
            tracing::info!(
                "serve stopped: {} done, {} skipped, {} failed",
                counts.done,
                counts.skipped,
                counts.failed
            );
            EXIT_OK
        }
        None => EXIT_INTERRUPTED,
    };
    // Blocking threads still running past the drain deadline must not hold up the exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(code)
}

/// SIGTERM and SIGINT, counted.
struct Signals(tokio::sync::watch::Receiver<u32>);

impl Signals {
    /// Starts counting (inside a `LocalSet`).
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot install signal handlers")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install signal handlers")?;
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        tokio::task::spawn_local(async move {
            loop {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Signals(rx))
    }

    /// Completes once `n` signals have come.
    fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|&got| got >= n).await;
        }
    }
}
