//! Exec stage: runs external programs over an item, as an argument vector (never through a
//! shell), in the item's scratch folder, with a timeout that kills the program's whole
//! process group, caps on what it may write, and the files it produces collected into the
//! item's outputs. It owns nothing else: the driver decides retries, the sink commits.
//!
//! Placeholders in `args`, `workdir` and `env` values, each replaced inside its argument
//! (which stays one argument whatever the replacement holds):
//! `{input}` the input file (absolute path), `{scratch}` the per-item scratch folder,
//! `{element}` the element id, `{outputs}` the folder holding this item's outputs so far
//! (the feature `.npy` files and earlier exec outputs). `{{` stands for a literal `{`.

use crate::pipeline::ErrorKind;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Bytes of stderr kept for the ledger when a program fails.
const STDERR_TAIL: usize = 2048;

/// Placeholders a string may hold.
pub const PLACEHOLDERS: [&str; 4] = ["{input}", "{scratch}", "{element}", "{outputs}"];

/// One `[[exec]]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Stage name (letters, digits, `-`, `_`), used in errors and meta.json. Required.
    pub name: String,
    /// Program: a path, or a name looked up in `PATH` when the run starts. Required.
    pub program: String,
    /// Arguments, one string each, with placeholders. Default none.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables (placeholders allowed in values). The rest of the
    /// environment is inherited. Default none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working folder (placeholders allowed). Default the item's scratch folder.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Seconds before the program's process group is killed and the item fails. Default 600.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Largest stdout kept and largest file collected, in bytes; more fails the item.
    /// Default 64 MiB.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Files the program writes into the scratch folder that become item outputs: plain
    /// names or globs (`*.json`). Each pattern must match at least one file. Default none.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Save the program's stdout as this output file. Default: stdout is discarded.
    #[serde(default)]
    pub stdout: Option<String>,
    /// A command (argv) that prints the tool's version, run once at start; its output joins
    /// the config hash, e.g. `["ffmpeg", "-version"]` when `program` is a wrapper. Default:
    /// the BLAKE3 hash of the program file.
    #[serde(default)]
    pub version_command: Option<Vec<String>>,
}

fn default_timeout_s() -> f64 {
    600.0
}

fn default_max_output_bytes() -> u64 {
    64 << 20
}

/// A plain file name: no folders, not hidden, not reserved.
fn check_output_name(stage: &str, key: &str, name: &str, glob_ok: bool) -> Result<()> {
    let bad_chars = name.contains('/') || name.contains('\0') || name.contains('\\');
    let bad_glob = !glob_ok && name.contains(['*', '?', '[']);
    if name.is_empty() || name.starts_with('.') || bad_chars || bad_glob || name == "meta.json" {
        bail!(
            "exec.{key} of {stage:?}: {name:?} must be a plain file name in the scratch folder \
             (no '/', not hidden, not meta.json)"
        );
    }
    Ok(())
}

impl ExecConfig {
    /// Checks names, placeholders and limits.
    ///
    /// # Errors
    /// The first invalid value, naming the stage and key.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        crate::item::check_stage_name("exec.name", n)?;
        if self.program.trim().is_empty() {
            bail!("exec.program of {n:?}: empty");
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            bail!("exec.timeout_s of {n:?}: {} must be > 0", self.timeout_s);
        }
        if self.max_output_bytes == 0 {
            bail!("exec.max_output_bytes of {n:?}: must be > 0");
        }
        for o in &self.outputs {
            check_output_name(n, "outputs", o, true)?;
            glob::Pattern::new(o).with_context(|| format!("exec.outputs of {n:?}: {o:?}"))?;
        }
        if let Some(s) = &self.stdout {
            check_output_name(n, "stdout", s, false)?;
        }
        if self.version_command.as_ref().is_some_and(|v| v.is_empty()) {
            bail!("exec.version_command of {n:?}: empty (name a program and its arguments)");
        }
        let texts = self
            .args
            .iter()
            .chain(self.workdir.iter())
            .chain(self.env.values());
        for t in texts {
            check_placeholders(n, t)?;
        }
        Ok(())
    }
}

fn check_placeholders(stage: &str, text: &str) -> Result<()> {
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            rest = after;
            continue;
        }
        match PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) {
            Some(p) => rest = &tail[p.len()..],
            None => bail!(
                "exec {stage:?}: unknown placeholder in {text:?} (known: {})",
                PLACEHOLDERS.join(", ")
            ),
        }
    }
    Ok(())
}

/// Why an exec stage failed an item.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("exec {stage}: cannot start {program}: {source}")]
    Spawn {
        /// Stage name.
        stage: String,
        /// Program path.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program exited with a non-zero status or was killed by a signal.
    #[error("exec {stage}: {status}; stderr tail: {stderr_tail}")]
    Failed {
        /// Stage name.
        stage: String,
        /// "exit code N" or "killed by signal N".
        status: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The program ran past its timeout; its process group was killed.
    #[error("exec {stage}: timed out after {timeout_s} s (process group killed); stderr tail: {stderr_tail}")]
    Timeout {
        /// Stage name.
        stage: String,
        /// The limit.
        timeout_s: f64,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// Stdout or a collected file is larger than `max_output_bytes`.
    #[error("exec {stage}: {what} is larger than max_output_bytes ({limit} bytes)")]
    OutputTooLarge {
        /// Stage name.
        stage: String,
        /// "stdout" or the file name.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A declared output pattern matched no file.
    #[error("exec {stage}: declared output {pattern:?} was not produced in the scratch folder")]
    MissingOutput {
        /// Stage name.
        stage: String,
        /// The pattern.
        pattern: String,
    },
    /// A file operation around the program failed (scratch folder, collecting outputs).
    #[error("exec {stage}: {context}: {source}")]
    Io {
        /// Stage name.
        stage: String,
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ExecError {
    /// The ledger's `error_kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::Spawn { .. } => ErrorKind::ExecSpawn,
            ExecError::Failed { .. } => ErrorKind::ExecFailed,
            ExecError::Timeout { .. } => ErrorKind::ExecTimeout,
            ExecError::OutputTooLarge { .. } => ErrorKind::ExecOutputTooLarge,
            ExecError::MissingOutput { .. } => ErrorKind::ExecMissingOutput,
            ExecError::Io { .. } => ErrorKind::ExecIo,
        }
    }
}

/// What one program did for one item (for meta.json).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ExecReport {
    /// Stage name.
    pub name: String,
    /// Exit code (0).
    pub exit_code: i32,
    /// Wall time in milliseconds.
    pub ms: f64,
    /// Output files it contributed.
    pub outputs: Vec<String>,
}

struct Prepared {
    cfg: ExecConfig,
    program: PathBuf,
}

/// The configured programs, resolved once per run.
pub struct ExecStage {
    stages: Vec<Prepared>,
    identity: String,
}

/// Finds `program` (a path, or a name in `PATH`).
fn resolve(program: &str) -> Result<PathBuf> {
    let p = Path::new(program);
    if program.contains('/') {
        if p.is_file() {
            return Ok(crate::item::absolute(p));
        }
        bail!("program {program} does not exist");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join(program);
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("program {program:?} not found in PATH")
}

impl ExecStage {
    /// Resolves every program and takes its identity (version output, or file hash) for the
    /// config hash.
    ///
    /// # Errors
    /// A program that cannot be found, or a version probe that fails.
    pub fn new(cfgs: &[ExecConfig]) -> Result<Self> {
        let mut stages = Vec::new();
        let mut identity = String::new();
        for cfg in cfgs {
            let program = resolve(&cfg.program).with_context(|| format!("exec {:?}", cfg.name))?;
            let id = match &cfg.version_command {
                Some(argv) => {
                    let probe = resolve(&argv[0])
                        .with_context(|| format!("exec {:?}: version_command", cfg.name))?;
                    let o = Command::new(&probe)
                        .args(&argv[1..])
                        .stdin(Stdio::null())
                        .output()
                        .with_context(|| format!("exec {:?}: version_command", cfg.name))?;
                    if !o.status.success() {
                        bail!(
                            "exec {:?}: version_command {} failed: {}",
                            cfg.name,
                            argv.join(" "),
                            o.status
                        );
                    }
                    format!("version:{}", String::from_utf8_lossy(&o.stdout).trim())
                }
                None => {
                    let bytes = std::fs::read(&program).with_context(|| {
                        format!("exec {:?}: reading {}", cfg.name, program.display())
                    })?;
                    format!("blake3:{}", blake3::hash(&bytes).to_hex())
                }
            };
            identity.push_str(&format!("{}={}|{id}\n", cfg.name, program.display()));
            stages.push(Prepared {
                cfg: cfg.clone(),
                program,
            });
        }
        Ok(ExecStage { stages, identity })
    }

    /// Whether any program is configured.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Program paths and versions (or hashes), one line per stage, for the config hash.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs every program in order for one item, then moves declared outputs and saved
    /// stdout into `outputs_dir`.
    ///
    /// # Errors
    /// The first stage that fails; later stages do not run.
    pub fn run(
        &self,
        input: &Path,
        element: &str,
        scratch: &Path,
        outputs_dir: &Path,
    ) -> Result<Vec<ExecReport>, ExecError> {
        let mut reports = Vec::new();
        for p in &self.stages {
            reports.push(run_one(p, input, element, scratch, outputs_dir)?);
        }
        Ok(reports)
    }
}

fn substitute(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
            continue;
        }
        for (k, v) in vars {
            if let Some(after) = tail.strip_prefix(k) {
                out.push_str(v);
                rest = after;
                continue 'outer;
            }
        }
        out.push('{');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

/// Kills every process in the group (the program and anything it started).
fn kill_group(pgid: u32) {
    // Safety: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

fn run_one(
    p: &Prepared,
    input: &Path,
    element: &str,
    scratch: &Path,
    outputs_dir: &Path,
) -> Result<ExecReport, ExecError> {
    let cfg = &p.cfg;
    let stage = cfg.name.clone();
    let io_err = |context: String| {
        let stage = stage.clone();
        move |source| ExecError::Io {
            stage,
            context,
            source,
        }
    };
    let (input_s, scratch_s, outputs_s) = (
        input.to_string_lossy().into_owned(),
        scratch.to_string_lossy().into_owned(),
        outputs_dir.to_string_lossy().into_owned(),
    );
    let vars = [
        ("{input}", input_s.as_str()),
        ("{scratch}", scratch_s.as_str()),
        ("{element}", element),
        ("{outputs}", outputs_s.as_str()),
    ];
    let workdir = cfg.workdir.as_ref().map_or_else(
        || scratch.to_path_buf(),
        |w| PathBuf::from(substitute(w, &vars)),
    );
    let mut cmd = Command::new(&p.program);
    cmd.args(cfg.args.iter().map(|a| substitute(a, &vars)))
        .envs(cfg.env.iter().map(|(k, v)| (k, substitute(v, &vars))))
        .env("KLIO_ELEMENT", element)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        stage: stage.clone(),
        program: p.program.display().to_string(),
        source,
    })?;
    let pgid = child.id();
    let limit = cfg.max_output_bytes;
    let too_large = Arc::new(AtomicBool::new(false));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let keep_stdout = cfg.stdout.is_some();
    let flag = Arc::clone(&too_large);
    let out_thread = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    if total > limit {
                        flag.store(true, Ordering::SeqCst);
                        break;
                    }
                    if keep_stdout {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        kept
    });
    let err_thread = std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16 << 10];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 4 * STDERR_TAIL {
                        kept.drain(..kept.len() - STDERR_TAIL);
                    }
                }
            }
        }
        kept
    });
    let timeout = Duration::from_secs_f64(cfg.timeout_s);
    let mut nap = Duration::from_millis(1);
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if started.elapsed() >= timeout || too_large.load(Ordering::SeqCst) {
            kill_group(pgid);
            let _ = child.wait();
            break Err(std::io::Error::other("killed"));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    };
    // Whatever the program left running in its group dies with it (and closes the pipes).
    kill_group(pgid);
    let kept_stdout = out_thread.join().unwrap_or_default();
    let stderr_tail = tail(&err_thread.join().unwrap_or_default());
    let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    if too_large.load(Ordering::SeqCst) {
        return Err(ExecError::OutputTooLarge {
            stage,
            what: "stdout".into(),
            limit,
        });
    }
    let status = match outcome {
        Ok(s) => s,
        Err(_) if started.elapsed() >= timeout => {
            return Err(ExecError::Timeout {
                stage,
                timeout_s: cfg.timeout_s,
                stderr_tail,
            })
        }
        Err(e) => return Err(io_err("waiting for the program".into())(e)),
    };
    if !status.success() {
        let status = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => status.to_string(),
        };
        return Err(ExecError::Failed {
            stage,
            status,
            stderr_tail,
        });
    }
    let mut produced = Vec::new();
    if let Some(name) = &cfg.stdout {
        let dst = outputs_dir.join(name);
        std::fs::write(&dst, &kept_stdout).map_err(io_err(format!("writing {name}")))?;
        produced.push(name.clone());
    }
    for pattern in &cfg.outputs {
        let pat = glob::Pattern::new(pattern).expect("validated");
        let mut matched = 0;
        let entries =
            std::fs::read_dir(scratch).map_err(io_err("listing the scratch folder".into()))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| pat.matches(n))
            .collect();
        names.sort();
        for name in names {
            let src = scratch.join(&name);
            let len = std::fs::metadata(&src)
                .map_err(io_err(format!("reading {name}")))?
                .len();
            if len > limit {
                return Err(ExecError::OutputTooLarge {
                    stage,
                    what: name,
                    limit,
                });
            }
            std::fs::rename(&src, outputs_dir.join(&name))
                .or_else(|_| std::fs::copy(&src, outputs_dir.join(&name)).map(|_| ()))
                .map_err(io_err(format!("collecting {name}")))?;
            produced.push(name);
            matched += 1;
        }
        if matched == 0 {
            return Err(ExecError::MissingOutput {
                stage,
                pattern: pattern.clone(),
            });
        }
    }
    Ok(ExecReport {
        name: stage,
        exit_code: 0,
        ms,
        outputs: produced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_inside_one_argument() {
        let vars = [("{input}", "/a b/; rm -rf ~"), ("{element}", "e")];
        assert_eq!(substitute("--in={input}", &vars), "--in=/a b/; rm -rf ~");
        assert_eq!(substitute("{element}{element}", &vars), "ee");
        assert_eq!(substitute("{x}", &vars), "{x}");
        assert_eq!(substitute("{{input} {{", &vars), "{input} {");
        assert!(check_placeholders("s", "/^{{/,/^}/p").is_ok());
        assert!(check_placeholders("s", "{input}/{scratch}").is_ok());
        assert!(check_placeholders("s", "{inptu}").is_err());
    }

    #[test]
    fn output_names_must_be_plain() {
        for bad in ["../x", "a/b", ".hidden", "meta.json", ""] {
            assert!(
                check_output_name("s", "outputs", bad, true).is_err(),
                "{bad}"
            );
        }
        assert!(check_output_name("s", "stdout", "*.txt", false).is_err());
        assert!(check_output_name("s", "outputs", "*.json", true).is_ok());
    }
}
