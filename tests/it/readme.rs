//! README.md in step with the code: every ledger error kind the sources can produce, every
//! config key `config show` prints, every command and long flag `--help` lists, and every
//! source file of the repository must be documented there. Each failure names what is missing
//! and the README section to add it to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    let p = root().join("README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The text of the `## NAME` section (up to the next `## ` heading).
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .match_indices(heading)
        .find(|(i, _)| *i == 0 || readme.as_bytes()[i - 1] == b'\n')
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("README.md has no `{heading}` section: add it"));
    let body = &readme[start + heading.len()..];
    let end = body.find("\n## ").map_or(body.len(), |i| i + 1);
    &body[..end]
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `needle` occurs in `hay` as a whole: with no word character right before it (nor,
/// if `path_like`, a `.` or `/`), and no word character (or `.` and a word character) right
/// after it.
fn occurs(hay: &str, needle: &str, path_like: bool) -> bool {
    let h = hay.as_bytes();
    for (i, _) in hay.match_indices(needle) {
        let before = if i == 0 { b' ' } else { h[i - 1] };
        let after = h.get(i + needle.len()).copied().unwrap_or(b' ');
        let next = h.get(i + needle.len() + 1).copied().unwrap_or(b' ');
        let joined_before = is_word(before) || (path_like && (before == b'.' || before == b'/'));
        let joined_after = is_word(after) || (after == b'.' && is_word(next));
        if !joined_before && !joined_after {
            return true;
        }
    }
    false
}

/// The rows of the README's error-kind table: kind -> (stage column, retryable column).
fn error_kind_rows(readme: &str) -> BTreeMap<String, (String, String)> {
    let start = readme
        .find("| kind | stage | what it means | retryable |")
        .expect(
            "README.md has no error-kind table (`| kind | stage | what it means | retryable |`)",
        );
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let kind = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((
                kind.to_string(),
                (cells.get(1)?.to_string(), cells.last()?.to_string()),
            ))
        })
        .collect()
}

#[test]
fn every_error_kind_is_in_the_readme() {
    use klio_edge::pipeline::ErrorKind;
    let readme = readme();
    let rows = error_kind_rows(&readme);
    assert!(
        rows.len() >= 20,
        "only {} rows read from the error-kind table",
        rows.len()
    );
    let mut wrong = Vec::new();
    for &k in ErrorKind::ALL {
        let name = k.as_str();
        match rows.get(name) {
            // Event kinds (dead letters of `serve`) are described in the text after the table.
            None if k.stage() == "event" || k.stage() == "pipeline" => {
                if !readme.contains(&format!("`{name}`")) {
                    wrong.push(format!("`{name}` is not mentioned"));
                }
            }
            None => wrong.push(format!("`{name}` has no row")),
            Some((stage, retryable)) => {
                if !stage.split(", ").any(|s| s == k.stage()) {
                    wrong.push(format!(
                        "`{name}`: stage {stage:?}, the code says {}",
                        k.stage()
                    ));
                }
                let want = if k.is_retryable() { "yes" } else { "no" };
                if retryable != want {
                    wrong.push(format!(
                        "`{name}`: retryable {retryable:?}, the code says {want}"
                    ));
                }
            }
        }
    }
    for kind in rows.keys() {
        if ErrorKind::from_name(kind).is_none() {
            wrong.push(format!("`{kind}` has a row but no ErrorKind"));
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md's error-kind table (under `### The ledger`) and ErrorKind \
         (src/pipeline/error.rs) disagree: {}",
        wrong.join("; ")
    );
}

/// Runs the binary in an empty temp folder (no `./klio-edge.toml`), without colour.
fn run_ok(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = klio_env(dir.path(), args, &[("NO_COLOR", "1")]);
    assert!(
        o.status.success(),
        "klio-edge {}: {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    strip_ansi(&String::from_utf8_lossy(&o.stdout))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `section.key` for every key line of a TOML document such as `config show` prints, tracking
/// `[table]` headers; keys under `[[array]]` tables are skipped. Keys before any header are
/// returned bare.
fn toml_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut table: Option<String> = Some(String::new());
    for line in text.lines() {
        if line.starts_with("[[") {
            table = None;
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            let name = h.split(']').next().unwrap().trim();
            table = Some(name.to_string());
            continue;
        }
        // Key lines start in column 0; continuation lines of multi-line arrays are indented
        // or start with a quote or `]`.
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim_end();
        let bare = !key.is_empty() && key.bytes().all(is_word);
        if !bare || line.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some(t) = &table {
            keys.push(if t.is_empty() {
                key.to_string()
            } else {
                format!("{t}.{key}")
            });
        }
    }
    keys
}

#[test]
fn every_config_key_is_in_the_readme() {
    let shown = run_ok(&["config", "show"]);
    let keys = toml_keys(&shown);
    let dotted: Vec<&String> = keys.iter().filter(|k| k.contains('.')).collect();
    assert!(
        dotted.len() >= 40,
        "`klio-edge config show` gave only {} section.key lines: is the parser in \
         tests/readme.rs broken? Output:\n{shown}",
        dotted.len()
    );
    let readme = readme();
    let reference = section(&readme, "## Configuration reference");
    let mut missing = Vec::new();
    for k in &keys {
        let want = match k.as_str() {
            // Arrays of tables, empty by default: documented as `[[exec]]` / `[[model]]`.
            "exec" | "model" => format!("`[[{k}]]`"),
            _ => format!("`{k}`"),
        };
        if !reference.contains(&want) {
            missing.push(want);
        }
    }
    assert!(
        missing.is_empty(),
        "config keys printed by `klio-edge config show` but missing from README.md: {}; add a \
         row for each (key, default, meaning) to the table under `## Configuration reference`",
        missing.join(", ")
    );
}

/// From a clap help text: the subcommand names under `Commands:` (without `help`) and the long
/// flags of its option lines (without `--help` and `--version`).
fn parse_help(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut commands, mut flags) = (Vec::new(), Vec::new());
    let mut section: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) && line.ends_with(':') {
            section = Some(line);
            continue;
        }
        let Some(s) = section else { continue };
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if s == "Commands:" && indent == 2 {
            let name = trimmed.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                commands.push(name.trim_end_matches(',').to_string());
            }
        } else if (2..=6).contains(&indent) && trimmed.starts_with('-') {
            let long = trimmed
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
                .find(|t| t.starts_with("--") && t.len() > 2);
            if let Some(l) = long {
                let name: String = l
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                if name != "--help" && name != "--version" {
                    flags.push(name);
                }
            }
        }
    }
    (commands, flags)
}

#[test]
fn every_command_and_flag_is_in_the_readme() {
    let (top, global) = parse_help(&run_ok(&["--help"]));
    assert!(
        top.len() >= 5,
        "`klio-edge --help` listed only {top:?} under Commands: is the parser in \
         tests/readme.rs broken?"
    );
    // command path -> its flags
    let mut commands: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut flags_of = |path: &[&str]| -> Vec<String> {
        let mut args = path.to_vec();
        args.push("--help");
        let (nested, flags) = parse_help(&run_ok(&args));
        commands
            .entry(path.join(" "))
            .or_default()
            .extend(flags.iter().cloned());
        nested
    };
    for sub in &top {
        for nested in flags_of(&[sub.as_str()]) {
            let n = flags_of(&[sub.as_str(), nested.as_str()]);
            assert!(
                n.is_empty(),
                "klio-edge {sub} {nested} has subcommands {n:?}: tests/readme.rs checks two \
                 levels only"
            );
        }
    }
    let all_flags: BTreeSet<&String> = commands.values().flatten().chain(&global).collect();
    assert!(
        all_flags.len() >= 10,
        "the help texts gave only {} long flags ({all_flags:?}): is the parser in \
         tests/readme.rs broken?",
        all_flags.len()
    );
    let readme = readme();
    let mut missing = Vec::new();
    for (path, flags) in &commands {
        let cmd = format!("klio-edge {path}");
        if !occurs(&readme, &cmd, false) {
            missing.push(format!(
                "`{cmd}`: add it to the synopsis under `## Commands` and describe it in its section"
            ));
        }
        for f in flags {
            if !occurs(&readme, f, false) {
                missing.push(format!(
                    "`{f}` (a flag of `{cmd}`): describe it in the README section of `{cmd}`"
                ));
            }
        }
    }
    for f in &global {
        if !occurs(&readme, f, false) {
            missing.push(format!(
                "`{f}` (a global flag): describe it with the global options under `## Commands`"
            ));
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "missing from README.md:\n  {}",
        missing.join("\n  ")
    );
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The files `## Layout` must list: the top-level files, everything under src/, scripts/,
/// bench/, config/ and tests/it/ (the integration tests and their helpers), and any test file
/// tests/*.rs. (Data folders such as tests/corpus/ and tests/fixtures/ may be listed as
/// folders.)
fn in_layout(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix("tests/") {
        if !rest.contains('/') {
            return rest.ends_with(".rs");
        }
    }
    let dirs = ["src/", "scripts/", "bench/", "config/", "tests/it/"];
    !path.contains('/') || dirs.iter().any(|d| path.starts_with(d))
}

#[test]
fn every_source_file_is_in_the_layout() {
    let o = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs git (to list the repository's files with `git ls-files`): {e}")
        });
    assert!(
        o.status.success(),
        "`git ls-files` failed in {} (this test needs a git checkout): {}",
        root().display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let all: Vec<String> = String::from_utf8(o.stdout)
        .expect("file names are UTF-8")
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    assert!(
        all.len() > 50,
        "`git ls-files` listed only {} files",
        all.len()
    );
    let mut name_count: BTreeMap<String, usize> = BTreeMap::new();
    for p in &all {
        *name_count.entry(file_name(p).to_string()).or_default() += 1;
    }
    let readme = readme();
    let layout = section(&readme, "## Layout");
    let mut missing = Vec::new();
    let mut n = 0;
    for p in all.iter().filter(|p| in_layout(p)) {
        // A file deleted in the work tree but not yet in the index is gone.
        if !root().join(p).exists() {
            continue;
        }
        n += 1;
        let name = file_name(p);
        let by_name = name_count[name] == 1 && occurs(layout, name, true);
        if !occurs(layout, p, true) && !by_name {
            missing.push(p.clone());
        }
    }
    assert!(n > 40, "only {n} files checked: is the filter broken?");
    assert!(
        missing.is_empty(),
        "files of the repository missing from README.md: {}; add a line for each (its path \
         and what it is) to the block under `## Layout`",
        missing.join(", ")
    );
}
