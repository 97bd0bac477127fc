//! Terminal conventions shared by the commands: what goes to stdout ends quietly on a closed
//! pipe, and colour goes to stderr only when it is a terminal and `NO_COLOR` is not set.

/// Writes to stdout. A closed pipe (`klio-edge ledger failed | head`) ends the program
/// quietly with exit 0, as cargo and ripgrep do; any other write error exits 2.
pub fn emit(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

/// `println!` through [`emit`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::term::emit(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Whether to colour what goes to stderr: only a terminal, and never with `NO_COLOR` set to
/// anything (https://no-color.org).
pub fn color_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}
