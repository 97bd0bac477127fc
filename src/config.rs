//! Resolved, validated settings. One TOML file (every key optional, every default documented
//! in README.md), then command-line flags on top. Unknown keys are errors that name the key.
//!
//! This module only reads and checks settings; it does no processing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::stage::decode::{Channels, DecodeConfig, SampleRate};
use crate::stage::exec::ExecConfig;
use crate::stage::features::FeaturesConfig;
use crate::stage::infer::ModelConfig;

/// Bump when a change to decoding or feature numerics must invalidate every finished item.
/// 2: SIMD kernels (vector log), streamed sink.
/// 3: resampler flat to 0.98 of Nyquist (a 4096-frame FFT block), MP4 edit lists (AAC
///    priming dropped), float samples beyond +-1e6 refused.
pub const ALGORITHM_VERSION: u32 = 3;

/// The name of the config file looked up in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "klio-edge.toml";

/// Every setting, as read from the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[decode]`
    pub decode: DecodeConfig,
    /// `[features]`
    pub features: FeaturesConfig,
    /// `[run]`
    pub run: RunConfig,
    /// `[output]`
    pub output: OutputConfig,
    /// `[[exec]]`: external programs run on each item, in order.
    pub exec: Vec<ExecConfig>,
    /// `[[model]]`: ONNX models run on each item's waveform.
    pub model: Vec<ModelConfig>,
    /// `[serve]`: the service (`klio-edge serve` and `publish`); does not affect outputs.
    pub serve: crate::source::settings::ServeConfig,
    /// `[store]`: object stores (`s3://`, `gs://`, `https://`); does not affect outputs.
    pub store: crate::store::StoreConfig,
    /// `[infer]`: settings shared by the `[[model]]`s (the ONNX Runtime library).
    pub infer: crate::stage::infer::InferConfig,
}

/// `[run]`: how a corpus run behaves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Items processed in parallel; 0 means one per CPU core. Default 0.
    pub jobs: usize,
    /// A failed item is retried on later runs until it has failed this many times. Default 3.
    pub max_attempts: u32,
    /// Feature frames of one item held in memory before they spill to a temp file beside the
    /// outputs, in MiB. Default 256.
    pub feature_memory_mb: u64,
    /// Refuse input files larger than this many bytes (before reading them). Default 16 GiB.
    pub max_input_bytes: u64,
    /// Give up on an item (kind `timeout`) once it has run this many seconds; checked between
    /// decoded blocks. Default 3600.
    pub item_timeout_s: f64,
    /// File extensions a folder (or bucket prefix) input takes when decode is on (`--ext`
    /// overrides); with `decode.enabled = false` every file is taken. A file or glob named
    /// on the command line is always taken. Default: the audio extensions klio-edge decodes.
    pub extensions: Vec<String>,
}

/// `run.extensions` by default: the containers the decoder reads.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "mp2", "ogg", "oga", "opus", "m4a", "mp4", "m4b", "aac", "aif",
    "aiff", "aifc", "caf", "mka", "mkv", "webm",
];

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            jobs: 0,
            max_attempts: 3,
            feature_memory_mb: 256,
            max_input_bytes: 16 << 30,
            item_timeout_s: 3600.0,
            extensions: AUDIO_EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }
    }
}

/// `[output]`: where results go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Output folder (`--out`). Default `features`.
    pub dir: PathBuf,
    /// Ledger file (`--ledger`). Default `<dir>/klio-ledger.sqlite`; required when `dir` is
    /// an object store.
    pub ledger: Option<PathBuf>,
    /// Klio's output-exists check: before fetching an item that this ledger has not finished,
    /// look for its complete outputs (`<dir>/<element>/meta.json` with the same config hash
    /// and input size) and, if found, record it as done instead of recomputing it. `auto`
    /// (default): on when `dir` is an object store; `on`; `off`. `--force` skips the check.
    pub check_existing: CheckExisting,
}

/// `output.check_existing`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckExisting {
    /// On for object-store outputs, off for local folders.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("features"),
            ledger: None,
            check_existing: CheckExisting::Auto,
        }
    }
}

/// Where the config came from, for `config show` and logs.
#[derive(Debug, Clone)]
pub enum Source {
    /// Built-in defaults only.
    Defaults,
    /// A file.
    File(PathBuf),
}

impl Config {
    /// Finds and loads the config: `explicit`, else `$KLIO_CONFIG`, else `./klio-edge.toml` if
    /// present, else the built-in defaults; `${VAR}` and `${VAR:-default}` in the file are
    /// expanded from the environment, then each `--set KEY=VALUE` of `sets` is applied. The
    /// result is validated.
    ///
    /// # Errors
    /// An unreadable file, bad TOML, an unset variable, a bad `--set`, an unknown key or an
    /// invalid value (naming the key).
    pub fn load(explicit: Option<&Path>, sets: &[String]) -> Result<(Config, Source)> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => match std::env::var_os("KLIO_CONFIG") {
                Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
                _ => {
                    let local = PathBuf::from(DEFAULT_CONFIG_FILE);
                    local.is_file().then_some(local)
                }
            },
        };
        let (text, source) = match &path {
            None => (String::new(), Source::Defaults),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let text = expand_env(&text, |v| std::env::var(v).ok())
                    .with_context(|| format!("invalid config file {}", p.display()))?;
                (text, Source::File(p.clone()))
            }
        };
        let mut cfg = if sets.is_empty() {
            Config::from_toml(&text)
        } else {
            Config::from_toml_with_sets(&text, sets)
        }
        .with_context(|| match &path {
            Some(p) => format!("invalid config file {}", p.display()),
            None => "invalid config (built-in defaults with --set)".to_string(),
        })?;
        if let Some(p) = &path {
            // Model files are named relative to the config file.
            let dir = p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            });
            for m in &mut cfg.model {
                m.path = crate::stage::infer::resolve_path(&m.path, dir);
                if let Some(l) = &m.labels {
                    m.labels = Some(crate::stage::infer::resolve_path(l, dir));
                }
            }
        }
        cfg.validate()?;
        Ok((cfg, source))
    }

    /// Parses TOML text and applies `--set KEY=VALUE` overrides: KEY is a dotted path
    /// (`features.n_mels`, `model.0.batch_size` for the first `[[model]]`), VALUE a TOML value
    /// (`4`, `true`, `"text"`, `["log_mel"]`); a VALUE that is not TOML is taken as a string.
    ///
    /// # Errors
    /// Bad TOML, a `--set` without `=` or with a path through a non-table, then what
    /// [`Self::from_toml`] rejects.
    pub fn from_toml_with_sets(text: &str, sets: &[String]) -> Result<Config> {
        let mut root = toml::Value::Table(toml::from_str(text)?);
        for set in sets {
            apply_set(&mut root, set).with_context(|| format!("--set {set}"))?;
        }
        let cfg: Config = root.try_into().context("after the --set overrides")?;
        Ok(cfg)
    }

    /// Parses TOML text (no validation beyond types and key names).
    ///
    /// # Errors
    /// Bad TOML, unknown keys, values of the wrong type.
    pub fn from_toml(text: &str) -> Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// Checks every value that can be checked without audio.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<()> {
        let d = &self.decode;
        if !(d.max_duration_s > 0.0 && d.max_duration_s.is_finite()) {
            bail!(
                "decode.max_duration_s: {} must be a positive number of seconds",
                d.max_duration_s
            );
        }
        if d.max_channels == 0 {
            bail!("decode.max_channels: must be at least 1");
        }
        if self.run.max_attempts == 0 {
            bail!("run.max_attempts: must be at least 1");
        }
        if d.max_sample_rate_hz == 0 {
            bail!("decode.max_sample_rate_hz: must be at least 1");
        }
        if d.min_sample_rate_hz == 0 || d.min_sample_rate_hz > d.max_sample_rate_hz {
            bail!(
                "decode.min_sample_rate_hz: must be at least 1 and at most decode.max_sample_rate_hz ({})",
                d.max_sample_rate_hz
            );
        }
        if let Some(e) = self
            .run
            .extensions
            .iter()
            .find(|e| e.is_empty() || e.contains(['/', '*']))
        {
            bail!("run.extensions: {e:?} is not a file extension (write \"wav\", not \"*.wav\")");
        }
        if self.run.max_input_bytes == 0 {
            bail!("run.max_input_bytes: must be at least 1");
        }
        if !(self.run.item_timeout_s > 0.0 && self.run.item_timeout_s.is_finite()) {
            bail!(
                "run.item_timeout_s: {} must be a positive number of seconds",
                self.run.item_timeout_s
            );
        }
        self.serve.validate()?;
        self.store.validate()?;
        let mut names: Vec<String> = Vec::new();
        for e in &self.exec {
            e.validate()?;
            if self.exec.iter().filter(|o| o.name == e.name).count() > 1 {
                bail!("exec.name: {:?} is used twice", e.name);
            }
            for n in e.outputs.iter().chain(e.stdout.iter()) {
                let clash = names.contains(n)
                    || (self.decode.enabled
                        && self
                            .features
                            .compute
                            .iter()
                            .any(|f| format!("{f}.npy") == *n));
                if clash {
                    bail!("exec {:?}: output {n:?} is produced twice", e.name);
                }
                names.push(n.clone());
            }
        }
        for m in &self.model {
            m.validate()?;
            if self.model.iter().filter(|o| o.name == m.name).count() > 1 {
                bail!("model.name: {:?} is used twice", m.name);
            }
            if !self.decode.enabled {
                bail!(
                    "model {:?}: models need decoded audio (decode.enabled = true)",
                    m.name
                );
            }
            if m.input != "waveform" {
                if !self.features.compute.contains(&m.input) {
                    bail!(
                        "model.input of {:?}: {:?} is neither \"waveform\" nor a feature in \
                         features.compute ({:?})",
                        m.name,
                        m.input,
                        self.features.compute
                    );
                }
                if self.decode.channels != Channels::Mono {
                    bail!(
                        "model.input of {:?}: a feature input needs decode.channels = \"mono\"",
                        m.name
                    );
                }
            }
            if let SampleRate::Hz(hz) = self.decode.sample_rate_hz {
                if hz != m.sample_rate_hz {
                    bail!(
                        "model {:?} needs {} Hz audio but decode.sample_rate_hz is {hz}",
                        m.name,
                        m.sample_rate_hz
                    );
                }
            }
        }
        if !self.decode.enabled {
            if self.exec.is_empty() {
                bail!("decode.enabled = false: nothing to do without an [[exec]] stage");
            }
            return Ok(());
        }
        if self.features.compute.is_empty() && self.exec.is_empty() && self.model.is_empty() {
            bail!("features.compute: at least one feature is needed (or a [[model]] or [[exec]])");
        }
        if self.features.compute.is_empty() {
            return Ok(());
        }
        // Build a plan at the configured rate (or a typical one for "native") so every DSP
        // parameter is checked now, not per item.
        let rate = match d.sample_rate_hz {
            SampleRate::Hz(hz) => hz as f64,
            SampleRate::Native => 2.0 * self.features.fmax_hz.unwrap_or(11025.0).max(1.0),
        };
        let dsp = self.features.to_dsp(rate)?;
        klio_dsp::FeaturePlan::new(&dsp).map_err(|e| anyhow::anyhow!("features: {e}"))?;
        Ok(())
    }

    /// The resolved configuration as TOML (defaults filled in).
    pub fn to_toml(&self) -> String {
        let mut resolved = self.clone();
        resolved.features.win_length =
            Some(self.features.win_length.unwrap_or(self.features.n_fft));
        toml::to_string_pretty(&resolved).expect("config serialises")
    }

    /// Hash of everything that determines an item's outputs (decode and feature settings and
    /// [`ALGORITHM_VERSION`]); a change reprocesses finished items.
    pub fn output_hash(&self) -> String {
        self.output_hash_with("")
    }

    /// [`Self::output_hash`] plus `tools`: the identity (path and version or file hash) of
    /// every exec program, so a changed tool reprocesses.
    pub fn output_hash_with(&self, tools: &str) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            algorithm: u32,
            decode: crate::stage::decode::DecodeHashView,
            features: Option<&'a FeaturesConfig>,
            exec: &'a [ExecConfig],
            models: Vec<crate::stage::infer::ModelHashView<'a>>,
            tools: &'a str,
        }
        let mut features = self.features.clone();
        features.win_length = Some(features.win_length.unwrap_or(features.n_fft));
        // Binary items (no decode) do not depend on the feature settings.
        let json = serde_json::to_string(&Hashed {
            // Binary items (no decode) do not depend on the decoding and feature numerics the
            // version tracks: theirs stays at 2, the version when that was split off.
            algorithm: if self.decode.enabled {
                ALGORITHM_VERSION
            } else {
                2
            },
            decode: self.decode.hash_view(),
            features: self.decode.enabled.then_some(&features),
            exec: &self.exec,
            models: self.model.iter().map(ModelConfig::hash_view).collect(),
            tools,
        })
        .expect("config serialises");
        blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
    }
}

/// Expands `${VAR}` and `${VAR:-default}` with `lookup` (the environment); `$` elsewhere is
/// kept, and so is everything on comment lines.
///
/// # Errors
/// An unset variable without a default, or an unclosed `${`.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                bail!("line {}: `${{` without a closing `}}`", n + 1);
            };
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((name, d)) => (name, Some(d)),
                None => (body, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                bail!("line {}: `${{{body}}}` is not a variable name", n + 1);
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => bail!(
                    "line {}: ${{{name}}} is not set (set it, or write ${{{name}:-default}})",
                    n + 1
                ),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Applies one `KEY=VALUE` to a TOML table (see [`Config::from_toml_with_sets`]).
fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let Some((key, value)) = set.split_once('=') else {
        bail!("expected KEY=VALUE, e.g. --set run.jobs=4");
    };
    let key = key.trim();
    let value = value.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").expect("parsed v"),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("{key:?} is not a dotted key such as features.n_mels");
    }
    let (last, path) = parts.split_last().expect("non-empty");
    let mut here = root;
    for (i, part) in path.iter().enumerate() {
        let so_far = parts[..=i].join(".");
        here = match here {
            toml::Value::Table(t) => t
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default())),
            toml::Value::Array(a) => {
                let idx: usize = part.parse().map_err(|_| {
                    anyhow::anyhow!("{so_far}: an array needs an index (0, 1, ...)")
                })?;
                let len = a.len();
                a.get_mut(idx).ok_or_else(|| {
                    anyhow::anyhow!("{so_far}: index {idx} is past the {len} entries")
                })?
            }
            _ => bail!("{so_far}: not a table"),
        };
    }
    match here {
        toml::Value::Table(t) => {
            t.insert(last.to_string(), value);
        }
        toml::Value::Array(a) => {
            let idx: usize = last
                .parse()
                .map_err(|_| anyhow::anyhow!("{key}: an array needs an index (0, 1, ...)"))?;
            let len = a.len();
            *a.get_mut(idx)
                .ok_or_else(|| anyhow::anyhow!("{key}: index {idx} is past the {len} entries"))? =
                value;
        }
        _ => bail!("{}: not a table", path.join(".")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_variables_expand_with_defaults_and_an_unset_one_is_named() {
        let env = |v: &str| (v == "OUT").then(|| "/data/out".to_string());
        let got = super::expand_env(
            "# ${NOT_EXPANDED}\n[output]\ndir = \"${OUT}\"\nledger = \"${LEDGER:-/tmp/l.sqlite}\"\n",
            env,
        )
        .unwrap();
        assert_eq!(
            got,
            "# ${NOT_EXPANDED}\n[output]\ndir = \"/data/out\"\nledger = \"/tmp/l.sqlite\"\n"
        );
        let err = super::expand_env("x = \"${NOPE}\"\n", env).unwrap_err();
        assert!(err.to_string().contains("${NOPE} is not set"), "{err}");
        assert!(super::expand_env("x = \"${OUT\"\n", env).is_err());
        assert!(super::expand_env("x = \"${1X}\"\n", env).is_err());
    }

    #[test]
    fn set_overrides_take_toml_values_bare_strings_and_array_indexes() {
        let text =
            "[[model]]\nname = \"vad\"\npath = \"m.onnx\"\nsha256 = \"\"\nsample_rate_hz = 16000\n";
        let sets = [
            "run.jobs=3".to_string(),
            "features.compute=[\"mfcc\"]".to_string(),
            "output.dir=elsewhere".to_string(),
            "model.0.name=\"speech\"".to_string(),
        ];
        let cfg = super::Config::from_toml_with_sets(text, &sets).unwrap();
        assert_eq!(cfg.run.jobs, 3);
        assert_eq!(cfg.features.compute, vec!["mfcc".to_string()]);
        assert_eq!(cfg.output.dir, std::path::PathBuf::from("elsewhere"));
        assert_eq!(cfg.model[0].name, "speech");
        for (bad, why) in [
            ("run.jobs", "KEY=VALUE"),
            ("model.1.name=x", "past the 1 entries"),
            ("model.0.name.x=1", "model.0.name: not a table"),
            ("run.jobs.x=1", "run.jobs"),
        ] {
            let err = super::Config::from_toml_with_sets(text, &[bad.to_string()]).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{bad}: {err:#}");
        }
        let err = super::Config::from_toml_with_sets("", &["run.jbos=1".to_string()]).unwrap_err();
        assert!(format!("{err:#}").contains("jbos"), "{err:#}");
    }

    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        let back = Config::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(back.output_hash(), cfg.output_hash());
    }

    #[test]
    fn model_keys_at_their_defaults_show_but_stay_out_of_the_hash() {
        let base = "[decode]\nsample_rate_hz = 16000\n[features]\ncompute = []\n[[model]]\nname = \"m\"\npath = \"m.onnx\"\n";
        let cfg = Config::from_toml(base).unwrap();
        let shown = cfg.to_toml();
        for key in [
            "input = \"waveform\"",
            "pad_last = \"zeros\"",
            "feature_layout = \"time_major\"",
            "batch_size = 1",
            "batch_wait_ms = 0.0",
        ] {
            assert!(shown.contains(key), "config show lacks {key}:\n{shown}");
        }
        let hashed = serde_json::to_string(&cfg.model[0].hash_view()).unwrap();
        for key in [
            "input",
            "pad_last",
            "feature_layout",
            "batch_size",
            "batch_wait_ms",
        ] {
            assert!(!hashed.contains(key), "{key} is in the hash: {hashed}");
        }
        // Set away from the default, a key changes the hash; `config show` round-trips.
        let batched = Config::from_toml(&format!("{base}batch_size = 4\n")).unwrap();
        assert_ne!(batched.output_hash(), cfg.output_hash());
        assert_eq!(
            Config::from_toml(&shown).unwrap().output_hash(),
            cfg.output_hash()
        );
    }

    #[test]
    fn shipped_default_config_file_states_the_real_defaults() {
        let shipped = Config::from_toml(include_str!("../config/klio-edge.toml")).unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[features]\nn_ffts = 512\n").unwrap_err();
        assert!(format!("{err:#}").contains("n_ffts"), "{err:#}");
        let err = Config::from_toml("[bogus]\n").unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn bad_values_are_named() {
        let cfg = Config::from_toml("[features]\nwin_length = 4096\n").unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(format!("{err:#}").contains("win_length"), "{err:#}");
        let cfg = Config::from_toml("[features]\ncompute = [\"chroma\"]\n").unwrap();
        assert!(format!("{:#}", cfg.validate().unwrap_err()).contains("chroma"));
        assert!(Config::from_toml("[decode]\nsample_rate_hz = \"fast\"\n").is_err());
        assert!(Config::from_toml("[decode]\nsample_rate_hz = \"native\"\n").is_ok());
    }

    #[test]
    fn output_hash_follows_output_settings_only() {
        let a = Config::default();
        let mut b = a.clone();
        b.run.jobs = 7;
        assert_eq!(a.output_hash(), b.output_hash());
        b.features.n_mels = 64;
        assert_ne!(a.output_hash(), b.output_hash());
    }
}
