use std::process::ExitCode;

use clap::Parser;
use klio_edge::cli::{self, Cli, EXIT_USAGE};

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // Usage and config errors, and run-level failures (ledger, output folder), alike.
            eprintln!("error: {}", klio_edge::term::error_text(&e));
            ExitCode::from(EXIT_USAGE as u8)
        }
    }
}
