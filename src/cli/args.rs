//! Command-line grammar (clap derive structs only): every command and flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// klio-edge: audio (or any binary) files in, features and a ledger out.
#[derive(Debug, Parser)]
#[command(name = "klio-edge", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Default: $KLIO_CONFIG, else ./klio-edge.toml if present, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one config key: `section.key=VALUE` (TOML value syntax; repeatable; applied
    /// after the file). E.g. `--set run.jobs=4 --set 'features.compute=["log_mel"]'`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print only errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Log line format on stderr: `text` or `json` (one object per line). Default: $KLIO_LOG_FORMAT, else text.
    #[arg(long, global = true, value_name = "FORMAT", env = "KLIO_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process a corpus once: files, folders (recursive), globs and @manifest files.
    Process(ProcessArgs),
    /// Run as a service: take events from the configured source (`[serve]`), process each item
    /// as `process` would, acknowledge after the ledger commit.
    Serve(ServeArgs),
    /// Send items (files, folders, globs, @manifests) to the configured source for `serve`.
    Publish(PublishArgs),
    /// Export the ledger's done items as a dataset: Parquet (one row per item), WebDataset tar
    /// shards, or a JSONL manifest. Reads only; writes only into --to.
    Export(ExportArgs),
    /// Draw one item's feature (a spectrogram, MFCC, a descriptor or the waveform) as a PNG,
    /// or any 2-D `.npy` klio-edge wrote.
    Plot(PlotArgs),
    /// Write the ledger's runs as one self-contained HTML page: totals, stage times,
    /// throughput, distributions, failures with the command to retry them, the slowest items
    /// and a gallery of spectrograms. Reads only.
    Report(ReportArgs),
    /// Inspect the ledger.
    Ledger {
        /// What to show.
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Check or print the configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script: `klio-edge completions bash > /etc/bash_completion.d/klio-edge`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `klio-edge man > klio-edge.1`.
    Man,
}

/// `process` flags.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Inputs: files, folders, globs, or @FILE manifests (one path per line).
    #[arg(required = true, value_name = "INPUTS")]
    pub inputs: Vec<String>,
    /// Output folder (default: output.dir from the config, `features`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ledger file (default: <out>/klio-ledger.sqlite).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Items processed in parallel (default: run.jobs, 0 = one per core).
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Recompute items that are already done.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Folder inputs take only files with this extension (repeatable; default: run.extensions,
    /// the audio extensions; every file when decode is off).
    #[arg(long = "ext", value_name = "EXT")]
    pub ext: Vec<String>,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Output folder (default: output.dir from the config, `features`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ledger file (default: <out>/klio-ledger.sqlite). Give each process of a fleet its own.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Items in flight at once (default: serve.max_in_flight, else run.jobs, 0 = one per core).
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Exit 0 once the source is drained (nothing queued, nothing delivered and unacked).
    #[arg(long)]
    pub until_idle: bool,
    /// Health and metrics listener (default: serve.http, 127.0.0.1:9464); port 0 picks a free
    /// port (logged); `off` turns it off. A second serve on one host needs its own.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

/// `publish` flags.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Inputs: files, folders, globs, or @FILE manifests (one path per line).
    #[arg(required = true, value_name = "ELEMENTS_OR_PATHS")]
    pub inputs: Vec<String>,
    /// Ask serve to recompute items that are already done (the message's flag wins over the
    /// job's `serve.klio.force`).
    #[arg(long)]
    pub force: bool,
    /// Klio: a ping: no work, the message is passed on down the graph (traces it).
    #[arg(long)]
    pub ping: bool,
    /// Klio: this job, then every job below it (recipients switch to anyone after it).
    #[arg(long, conflicts_with = "bottom_up")]
    pub top_down: bool,
    /// Klio: only this job, nothing below it (the default, as in Klio).
    #[arg(long)]
    pub bottom_up: bool,
}

/// `export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The outputs to export: a folder or an object-store prefix (default: output.dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ledger file whose done items are exported (default: <out>/klio-ledger.sqlite).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// The format.
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    /// Destination folder (created; must be empty, or hold an earlier export with --overwrite).
    #[arg(long, value_name = "DEST")]
    pub to: PathBuf,
    /// Replace the files of an earlier export in --to.
    #[arg(long)]
    pub overwrite: bool,
    /// Parquet: start a new file past this many MiB (fractions allowed).
    #[arg(long, value_name = "MB", default_value_t = 512.0, value_parser = positive_mb)]
    pub max_file_mb: f64,
    /// WebDataset: start a new shard past this many MiB (fractions allowed).
    #[arg(long, value_name = "MB", default_value_t = 1024.0, value_parser = positive_mb)]
    pub shard_mb: f64,
    /// WebDataset: put each item's source audio into its sample.
    #[arg(long)]
    pub with_audio: bool,
    /// Print a JSON summary on stdout (items, bytes, files, wall_s, failed).
    #[arg(long)]
    pub json: bool,
}

/// `plot` flags.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// An element id (as `ledger` and the output folders name it) or the path of a `.npy`.
    #[arg(value_name = "ELEMENT_OR_NPY")]
    pub target: String,
    /// The output folder (or object-store prefix) the element is in (default: output.dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The feature to draw (default: log_mel if the item has it, else its first 2-D feature);
    /// `waveform` decodes the source.
    #[arg(long, value_name = "NAME")]
    pub feature: Option<String>,
    /// The PNG file to write.
    #[arg(long, value_name = "FILE.png")]
    pub to: PathBuf,
    /// Width in pixels.
    #[arg(long, value_name = "PX", default_value_t = 1200, value_parser = clap::value_parser!(u32).range(480..=16384))]
    pub width: u32,
    /// Height of the plot panels in pixels (title, VAD strips and labels add to it).
    #[arg(long, value_name = "PX", default_value_t = 600, value_parser = clap::value_parser!(u32).range(120..=16384))]
    pub height: u32,
    /// Spectrograms: the colour scale spans this many dB below the loudest value.
    #[arg(long, value_name = "DB", default_value_t = 80.0, value_parser = positive_db)]
    pub db_range: f64,
    /// Print a JSON summary on stdout (size, panel pixel areas, row frequencies, scale).
    #[arg(long)]
    pub json: bool,
}

/// `report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The output folder whose ledger and outputs to report on (default: output.dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ledger file (default: <out>/klio-ledger.sqlite).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// The HTML file to write; full-size pictures go in a folder beside it (`<name>_files/`).
    #[arg(long, value_name = "FILE.html", default_value = "report.html")]
    pub to: PathBuf,
    /// Items in the gallery of spectrograms (failed and slowest first), at most 1000.
    #[arg(long, value_name = "N", default_value_t = 24, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub items: u16,
    /// The feature the gallery draws (default: log_mel, else each item's first 2-D feature).
    #[arg(long, value_name = "NAME")]
    pub feature: Option<String>,
}

/// Where the ledger is, for the `ledger` commands.
#[derive(Debug, Args)]
pub struct LedgerLocation {
    /// Ledger file (default: <out>/klio-ledger.sqlite).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Output folder whose ledger to read (default: output.dir from the config).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ledger` subcommands. Each opens the ledger read-only (`retry` writes only its rows).
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Item counts by state, and the latest runs.
    Status(LedgerLocation),
    /// Failed items grouped by error kind: counts, then the items with their reasons.
    Failed(LedgerLocation),
    /// One item: its row and its whole history.
    Show {
        /// Element id (as `ledger failed` and the output folders name it).
        #[arg(value_name = "ELEMENT")]
        element: String,
        /// Where the ledger is.
        #[command(flatten)]
        loc: LedgerLocation,
    },
    /// Make failed or given-up items eligible again on the next run (their attempt count
    /// starts over); recorded in the history as `retried`.
    Retry {
        /// Only items whose error kind is K (repeatable).
        #[arg(long, value_name = "K")]
        kind: Vec<String>,
        /// Only these elements (default: every failed item, or every one of --kind).
        #[arg(value_name = "ELEMENT")]
        elements: Vec<String>,
        /// Where the ledger is.
        #[command(flatten)]
        loc: LedgerLocation,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config as a run does at start-up (keys and values, [[exec]] programs, model
    /// files and their sha256, label files) and print the config hash runs record; exit 2
    /// naming the first problem.
    Validate {
        /// Config file (default: --config, $KLIO_CONFIG, ./klio-edge.toml, built-in defaults).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the resolved config (defaults filled in, --set applied) as TOML.
    Show {
        /// Config file (default: --config, $KLIO_CONFIG, ./klio-edge.toml, built-in defaults).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// A dB range: a positive, finite number.
fn positive_db(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(db) if db.is_finite() && db > 0.0 => Ok(db),
        _ => Err(format!("{text:?} is not a positive number of dB")),
    }
}

/// A size in MiB: a positive, finite number.
fn positive_mb(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(mb) if mb.is_finite() && mb > 0.0 => Ok(mb),
        _ => Err(format!("{text:?} is not a positive number of MiB")),
    }
}
