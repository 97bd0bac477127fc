use std::process::ExitCode;

use clap::Parser;
use klio_edge::app::{self, UsageError, EXIT_USAGE};
use klio_edge::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Decoder libraries log container quirks at info/warn; item outcomes are our own lines.
    let default = if cli.quiet {
        "error"
    } else {
        "info,symphonia=error,symphonia_core=error,symphonia_adapter_libopus=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KLIO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if cli.log_format.as_deref() == Some("json") {
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        logs.init();
    }
    match app::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            // Usage and config errors, and run-level failures (ledger, output folder), alike.
            let _ = e.downcast_ref::<UsageError>();
            ExitCode::from(EXIT_USAGE as u8)
        }
    }
}
