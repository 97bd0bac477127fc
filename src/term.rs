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

static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records that log lines are JSON objects (`--log-format json`).
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether log lines are JSON objects: structured fields (`element`, `stage`) are then
/// attached to lines whose text already says the same for people.
pub fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// An error and its causes as one line, `outer: inner: ...`, each cause said once: a stage
/// error that already quotes its source (`writing F: No such file...`) is not followed by
/// the same text again.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A progress bar of `total` items on stderr, or none with `--quiet` or when stderr is not a
/// terminal (logs and CI output stay clean).
pub fn progress_bar(total: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(if color_stderr() {
            "{bar:30.cyan/blue} {pos}/{len} items  {msg}  [{elapsed_precise}, eta {eta}]"
        } else {
            "{bar:30} {pos}/{len} items  {msg}  [{elapsed_precise}, eta {eta}]"
        })
        .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_text_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        #[derive(Debug, thiserror::Error)]
        #[error("writing /x: {source}")]
        struct Writing {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Writing { source: io }).context("output location /x");
        assert_eq!(
            super::error_text(&e),
            "output location /x: writing /x: No such file (os error 2)"
        );
    }
}
