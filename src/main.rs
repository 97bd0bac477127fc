use std::process::ExitCode;

use clap::Parser;
use klio_edge::app::{self, EXIT_USAGE};
use klio_edge::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::init_logging(&cli);
    match app::run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // Usage and config errors, and run-level failures (ledger, output folder), alike.
            eprintln!("error: {}", klio_edge::term::error_text(&e));
            ExitCode::from(EXIT_USAGE as u8)
        }
    }
}
