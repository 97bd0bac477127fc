//! Dispatch from the parsed command line to the drivers, and the small read-only commands
//! (`ledger`, `config`). Maps results to exit codes: 0 all good, 1 some items failed, 2 usage
//! or config error.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, ConfigCommand, LedgerCommand, LedgerLocation};
use crate::config::{Config, Source};
use crate::exec::ExecStage;
use crate::infer::InferStage;
use crate::ledger::Ledger;
use crate::process::{self, ProcessRequest};
use crate::serve::{self, PublishRequest, ServeRequest};

/// Exit code: everything succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: some items failed (and were recorded).
pub const EXIT_ITEMS_FAILED: i32 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;

/// An error that is the user's to fix (bad config, missing ledger): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct UsageError(pub anyhow::Error);

fn usage<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| UsageError(e).into())
}

/// Runs the command; returns the exit code.
///
/// # Errors
/// Run-level failures; [`UsageError`] for exit code 2.
pub fn run(cli: Cli) -> Result<i32> {
    let (cfg, source) = usage(Config::load(cli.config.as_deref()))?;
    match cli.command {
        Command::Config { command } => match command {
            ConfigCommand::Validate => {
                let from = match &source {
                    Source::Defaults => "built-in defaults".to_string(),
                    Source::File(p) => p.display().to_string(),
                };
                if !cli.quiet {
                    println!("config OK ({from}); output hash {}", cfg.output_hash());
                }
                Ok(EXIT_OK)
            }
            ConfigCommand::Show => {
                if let Source::File(p) = &source {
                    println!("# from {}", p.display());
                } else {
                    println!("# built-in defaults");
                }
                print!("{}", cfg.to_toml());
                Ok(EXIT_OK)
            }
        },
        Command::Process(args) => {
            let (out_dir, ledger) =
                usage(out_and_ledger(&cfg, args.out.clone(), args.ledger.clone()))?;
            let jobs = per_core(args.jobs.unwrap_or(cfg.run.jobs));
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
                println!("{}", serde_json::to_string(&summary)?);
            }
            if !req.quiet {
                eprintln!(
                    "{} done, {} skipped, {} failed{}{} of {} items; {:.1} s of audio in {:.2} s ({:.0}x realtime); ledger {}",
                    summary.done,
                    summary.skipped,
                    summary.failed,
                    if summary.gave_up > 0 {
                        format!(" ({} out of attempts)", summary.gave_up)
                    } else {
                        String::new()
                    },
                    if summary.missing_input > 0 {
                        format!(" ({} missing input)", summary.missing_input)
                    } else {
                        String::new()
                    },
                    summary.items,
                    summary.audio_s,
                    summary.wall_s,
                    summary.realtime_factor,
                    summary.ledger.display()
                );
                if summary.failed > 0 {
                    eprintln!(
                        "see the reasons with: klio-edge ledger failed --ledger {}",
                        summary.ledger.display()
                    );
                }
            }
            Ok(if summary.failed > 0 {
                EXIT_ITEMS_FAILED
            } else {
                EXIT_OK
            })
        }
        Command::Serve(args) => {
            let (out_dir, ledger) =
                usage(out_and_ledger(&cfg, args.out.clone(), args.ledger.clone()))?;
            let n = args.jobs.unwrap_or(match cfg.serve.max_in_flight {
                0 => cfg.run.jobs,
                n => n,
            });
            let req = ServeRequest {
                out_dir,
                ledger,
                max_in_flight: per_core(n),
                until_idle: args.until_idle,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            let exec = usage(ExecStage::new(&cfg.exec))?;
            let infer = usage(InferStage::new(&cfg.model, &cfg.infer))?;
            serve::run(cfg, &req, exec, infer)
        }
        Command::Publish(args) => {
            let n = serve::publish(
                &cfg,
                &PublishRequest {
                    inputs: args.inputs,
                    force: args.force,
                    ping: args.ping,
                    direction: if args.top_down {
                        crate::serve::klio::Direction::TopDown
                    } else {
                        crate::serve::klio::Direction::BottomUp
                    },
                },
            )?;
            if !cli.quiet {
                eprintln!("published {n} item(s) to the {:?} source", cfg.serve.source);
            }
            Ok(EXIT_OK)
        }
        Command::Ledger { command } => match command {
            LedgerCommand::Status(loc) => {
                let (path, ledger) = open_existing(&cfg, &loc)?;
                let counts = ledger.counts()?;
                let runs = ledger.runs(5)?;
                if loc.json {
                    let c: serde_json::Map<String, serde_json::Value> = counts
                        .iter()
                        .map(|(s, n)| (s.clone(), (*n).into()))
                        .collect();
                    println!("{}", serde_json::json!({ "ledger": path, "items": c }));
                } else {
                    println!("ledger {}", path.display());
                    let total: i64 = counts.iter().map(|c| c.1).sum();
                    for (state, n) in &counts {
                        println!("  {state:<8} {n}");
                    }
                    println!("  {:<8} {total}", "total");
                    if !runs.is_empty() {
                        println!("latest runs:");
                        for (id, start, end, d, s, f) in runs {
                            println!(
                                "  #{id} {start} -> {}: {} done, {} skipped, {} failed",
                                end.unwrap_or_else(|| "(did not finish)".into()),
                                d.unwrap_or(0),
                                s.unwrap_or(0),
                                f.unwrap_or(0)
                            );
                        }
                    }
                }
                Ok(EXIT_OK)
            }
            LedgerCommand::Failed(loc) => {
                let (_, ledger) = open_existing(&cfg, &loc)?;
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
                    println!("{}", serde_json::Value::Array(list));
                } else {
                    for r in &rows {
                        println!(
                            "{}\t{}\t[{}] {} (attempts {})",
                            r.element,
                            r.source,
                            r.error_kind.as_deref().unwrap_or("?"),
                            r.error_message.as_deref().unwrap_or(""),
                            r.attempts
                        );
                    }
                    if !cli.quiet {
                        eprintln!("{} failed item(s)", rows.len());
                    }
                }
                Ok(EXIT_OK)
            }
        },
    }
}

/// `--out` and `--ledger` resolved against the config: the ledger defaults to `output.ledger`,
/// else `<out>/klio-ledger.sqlite`. An object-store `--out` needs a ledger named explicitly.
fn out_and_ledger(
    cfg: &Config,
    out: Option<PathBuf>,
    ledger: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf)> {
    let out_dir = out.unwrap_or_else(|| cfg.output.dir.clone());
    let remote = crate::store::Remote::parse(&out_dir.to_string_lossy())
        .map_err(anyhow::Error::msg)
        .context("--out")?;
    let ledger = match ledger.or_else(|| cfg.output.ledger.clone()) {
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

fn open_existing(cfg: &Config, loc: &LedgerLocation) -> Result<(PathBuf, Ledger)> {
    let path = loc
        .ledger
        .clone()
        .or_else(|| loc.out.as_ref().map(|o| process::default_ledger(o)))
        .or_else(|| cfg.output.ledger.clone())
        .unwrap_or_else(|| process::default_ledger(&cfg.output.dir));
    if !path.is_file() {
        return usage(Err(anyhow::anyhow!(
            "no ledger at {} (name it with --ledger FILE or --out DIR)",
            path.display()
        )));
    }
    let ledger = Ledger::open(&path).with_context(|| format!("ledger {}", path.display()))?;
    Ok((path, ledger))
}
