//! The per-item pipeline: one item straight through fetch -> decode -> features / infer ->
//! exec -> sink -> ledger, deciding first (from the ledger row, the input's facts and any
//! outputs already stored) whether to skip it, retry it or give up. [`Engine`] holds the
//! loaded stages and the open ledger; both drivers, `process` (a corpus) and `serve` (a
//! source's events), call [`Engine::process`] from their worker threads. It owns no threads
//! and reads no command line.

mod error;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use klio_dsp::FeatureStream;
use serde_json::json;

use crate::config::Config;
use crate::decode::AudioStream;
use crate::exec::ExecStage;
use crate::features::{FeatureError, FeatureStage};
use crate::fetch;
use crate::infer::{InferStage, OutputKind};
use crate::item::{InputFacts, ItemRef, Outcome};
use crate::ledger::{Ledger, RunCounts};
use crate::sink::{Sink, SinkError};
use crate::store::{Remote, Stores};

use error::ledger_error;
pub use error::{stage_of, ItemError};

/// The pipeline with its stages loaded and its ledger open: built once per process, shared by
/// the worker threads of `process` and `serve`.
pub struct Engine<'a> {
    cfg: &'a Config,
    config_hash: String,
    force: bool,
    ledger: Mutex<Ledger>,
    sink: Sink,
    features: FeatureStage,
    exec: ExecStage,
    infer: InferStage,
    stores: Arc<Stores>,
    check_existing: bool,
    run_id: i64,
}

/// Where an engine writes and what it was started with.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Output folder.
    pub out_dir: PathBuf,
    /// Ledger file.
    pub ledger: PathBuf,
    /// Recompute done items.
    pub force: bool,
    /// The command line, for the ledger's run row.
    pub command: String,
    /// Object-store clients already made (for listing inputs, say); `None` makes new ones.
    pub stores: Option<Arc<Stores>>,
}

impl<'a> Engine<'a> {
    /// Opens the output folder and the ledger (marking items an earlier run left `running` as
    /// interrupted) and starts a ledger run.
    ///
    /// # Errors
    /// The output folder or the ledger cannot be opened.
    pub fn open(
        cfg: &'a Config,
        opts: &EngineOptions,
        exec: ExecStage,
        infer: InferStage,
    ) -> Result<Engine<'a>> {
        let stores = opts
            .stores
            .clone()
            .unwrap_or_else(|| Arc::new(Stores::new(&cfg.store)));
        let out = opts.out_dir.to_string_lossy();
        let sink = match Remote::parse(&out).map_err(anyhow::Error::msg)? {
            Some(prefix) => Sink::open_remote(prefix, stores.clone()),
            None => Sink::open(&opts.out_dir),
        }
        .with_context(|| format!("output location {out}"))?;
        let check_existing = match cfg.output.check_existing {
            crate::config::CheckExisting::Auto => sink.is_remote(),
            crate::config::CheckExisting::On => true,
            crate::config::CheckExisting::Off => false,
        };
        let mut ledger = Ledger::open(&opts.ledger)?;
        let recovered = ledger.recover_running()?;
        if recovered > 0 {
            tracing::warn!("{recovered} item(s) left running by an earlier run were marked failed (interrupted) and will be retried");
        }
        let config_hash = config_hash(cfg, &exec, &infer);
        let run_id = ledger.begin_run(&opts.command, &config_hash)?;
        Ok(Engine {
            cfg,
            config_hash,
            force: opts.force,
            ledger: Mutex::new(ledger),
            sink,
            features: FeatureStage::new(&cfg.features),
            exec,
            infer,
            stores,
            check_existing,
            run_id,
        })
    }

    /// Where an item's outputs go (a folder or an object-store prefix), for output events.
    pub fn output_location(&self, element: &str) -> String {
        self.sink.item_location(element)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the ledger answers and can take a write lock now (for readiness probes).
    pub fn ledger_writable(&self) -> bool {
        self.ledger().writable()
    }

    /// The ledger run this engine records into.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The config hash of this engine's items (see [`config_hash`]).
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// How many of `elements` are done in the ledger with another config hash (this engine
    /// will recompute them).
    ///
    /// # Errors
    /// The ledger cannot be read.
    pub fn done_with_other_config(&self, elements: &[&str]) -> Result<usize> {
        self.ledger()
            .done_with_other_config(&self.config_hash, elements)
    }

    /// Processes one item (skip, retry or give up as the ledger says; `force` recomputes).
    pub fn process(&self, item: ItemRef, force: bool) -> ItemReport {
        process_item(self, item, force || self.force)
    }

    /// Ends the ledger run with `counts` and removes this process's temp folder.
    ///
    /// # Errors
    /// The ledger cannot be written.
    pub fn close(self, counts: &RunCounts) -> Result<()> {
        let Engine {
            ledger,
            sink,
            run_id,
            ..
        } = self;
        sink.close();
        let mut ledger = ledger.into_inner().unwrap_or_else(|p| p.into_inner());
        ledger.finish_run(run_id, counts)
    }
}

/// The config hash a run records: the output-affecting settings plus the identity of every
/// exec program and model file (so `config validate` prints what a run will record).
pub fn config_hash(cfg: &Config, exec: &ExecStage, infer: &InferStage) -> String {
    cfg.output_hash_with(&format!("{}{}", exec.identity(), infer.identity()))
}

/// How one item ended.
#[derive(Debug, Clone)]
pub struct ItemReport {
    /// The item.
    pub item: ItemRef,
    /// Done, skipped, failed or gave up.
    pub outcome: Outcome,
    /// Seconds of audio decoded.
    pub audio_s: f64,
    /// Why it failed.
    pub error: Option<ItemError>,
    /// Milliseconds per stage (`fetch`, `decode`, `features`, `infer`, `exec`, `sink`).
    pub stage_ms: Vec<(String, f64)>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Decides what to do with one item and does it; every path ends in the ledger.
fn process_item(ctx: &Engine<'_>, item: ItemRef, force: bool) -> ItemReport {
    let report = |outcome, audio_s, error| ItemReport {
        item: item.clone(),
        outcome,
        audio_s,
        error,
        stage_ms: Vec::new(),
    };
    let source = item.source.to_string();
    let t_fetch = Instant::now();
    let mut facts = match fetch::stat_source(&ctx.stores, &item.source) {
        Ok(f) => f,
        Err(e) => {
            return fail_before_claim(ctx, &item, &source, InputFacts::default(), e.into(), report)
        }
    };
    if facts.size.unwrap_or(0) as u64 > ctx.cfg.run.max_input_bytes {
        let err = ItemError {
            kind: "too_large",
            message: format!(
                "{} bytes, over run.max_input_bytes = {}",
                facts.size.unwrap_or(0),
                ctx.cfg.run.max_input_bytes
            ),
        };
        return fail_before_claim(ctx, &item, &source, facts, err, report);
    }
    let row = match ctx.ledger().get(&item.element) {
        Ok(r) => r,
        Err(e) => return report(Outcome::Failed, 0.0, Some(ledger_error(&e))),
    };
    let done_here = |row: &crate::ledger::ItemRow| {
        row.state == "done"
            && row.config_hash == ctx.config_hash
            && ctx.sink.has_outputs(&item.element)
    };
    // Fast path: same size and mtime as a done row means the same input (as make and rsync assume).
    if let Some(r) = &row {
        if !force
            && done_here(r)
            && r.input_size == facts.size
            && r.input_mtime_ns == facts.mtime_ns
        {
            facts.hash = r.input_hash.clone();
            let _ = ctx
                .ledger()
                .note(ctx.run_id, &item.element, "skipped", &facts);
            return report(Outcome::Skipped, 0.0, None);
        }
    }
    // Klio's output-exists check: complete outputs for this config (from another node with
    // its own ledger, or an earlier run whose ledger is gone) are adopted, not recomputed.
    if !force && ctx.check_existing && !row.as_ref().is_some_and(done_here) {
        match ctx.sink.read_meta(&item.element) {
            Ok(Some(meta))
                if meta["config_hash"].as_str() == Some(ctx.config_hash.as_str())
                    && meta["input_size"].as_i64() == facts.size
                    && meta["input_mtime_ns"].as_i64() == facts.mtime_ns
                    && facts.mtime_ns.is_some() =>
            {
                facts.hash = meta["input_hash"].as_str().map(str::to_string);
                let outputs = ctx.sink.list_outputs(&item.element);
                let at = ctx.sink.item_location(&item.element);
                return match ctx.ledger().adopt(
                    ctx.run_id,
                    &item.element,
                    &source,
                    &facts,
                    &ctx.config_hash,
                    &outputs,
                    &format!("outputs exist at {at}"),
                ) {
                    Ok(()) => report(Outcome::Skipped, 0.0, None),
                    Err(e) => report(Outcome::Failed, 0.0, Some(ledger_error(&e))),
                };
            }
            Ok(_) => {}
            Err(e) => {
                let err = ItemError {
                    kind: "fetch",
                    message: format!("output-exists check: {e}"),
                };
                return fail_before_claim(ctx, &item, &source, facts, err, report);
            }
        }
    }
    let fetched = match fetch::fetch(
        &ctx.stores,
        &item.source,
        || ctx.sink.temp_folder("fetch"),
        ctx.cfg.run.max_input_bytes,
    ) {
        Ok(f) => f,
        Err(e) => return fail_before_claim(ctx, &item, &source, facts, e.into(), report),
    };
    facts.hash = Some(fetched.hash.clone());
    if let Some(r) = &row {
        let same_input = r.input_hash == facts.hash && r.config_hash == ctx.config_hash;
        if !force && same_input && done_here(r) {
            let _ = ctx
                .ledger()
                .note(ctx.run_id, &item.element, "skipped", &facts);
            return report(Outcome::Skipped, 0.0, None);
        }
        if !force
            && same_input
            && r.state == "failed"
            && r.attempts >= ctx.cfg.run.max_attempts as i64
        {
            let _ = ctx
                .ledger()
                .note(ctx.run_id, &item.element, "gave_up", &facts);
            let error = ItemError {
                kind: "gave_up",
                message: format!(
                    "[{}] {}",
                    r.error_kind.as_deref().unwrap_or("?"),
                    r.error_message.as_deref().unwrap_or("")
                ),
            };
            return report(Outcome::GaveUp, 0.0, Some(error));
        }
    }
    let fetch_ms = ms(t_fetch.elapsed());
    if let Err(e) = ctx.ledger().claim(
        ctx.run_id,
        &item.element,
        &source,
        &facts,
        &ctx.config_hash,
        force,
    ) {
        return report(Outcome::Failed, 0.0, Some(ledger_error(&e)));
    }
    let mut stage_ms = json!({ "fetch": fetch_ms });
    let result = run_stages(ctx, &item, &fetched.path, &facts, &mut stage_ms);
    drop(fetched);
    let mut ledger = ctx.ledger();
    match result {
        Ok((audio_s, outputs, models)) => {
            match ledger.done(
                ctx.run_id,
                &item.element,
                audio_s,
                &stage_ms,
                &outputs,
                models.as_ref(),
            ) {
                Ok(()) => ItemReport {
                    stage_ms: stage_ms
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    ..report(Outcome::Done, audio_s, None)
                },
                Err(e) => report(Outcome::Failed, audio_s, Some(ledger_error(&e))),
            }
        }
        Err(err) => {
            if let Err(e) =
                ledger.failed(ctx.run_id, &item.element, err.kind, &err.message, &stage_ms)
            {
                tracing::error!(
                    "cannot record failure of {} in the ledger: {e:#}",
                    item.element
                );
            }
            report(Outcome::Failed, 0.0, Some(err))
        }
    }
}

fn fail_before_claim(
    ctx: &Engine<'_>,
    item: &ItemRef,
    source: &str,
    facts: InputFacts,
    err: ItemError,
    report: impl FnOnce(Outcome, f64, Option<ItemError>) -> ItemReport,
) -> ItemReport {
    let mut ledger = ctx.ledger();
    let recorded = ledger
        .claim(
            ctx.run_id,
            &item.element,
            source,
            &facts,
            &ctx.config_hash,
            false,
        )
        .and_then(|_| {
            ledger.failed(
                ctx.run_id,
                &item.element,
                err.kind,
                &err.message,
                &json!({}),
            )
        });
    if let Err(e) = recorded {
        tracing::error!(
            "cannot record failure of {} in the ledger: {e:#}",
            item.element
        );
    }
    report(Outcome::Failed, 0.0, Some(err))
}

/// decode -> features -> exec -> sink, every output staged in one temp folder and committed
/// together. Returns the decoded duration (0 for binary items) and the output file names.
fn run_stages(
    ctx: &Engine<'_>,
    item: &ItemRef,
    input: &Path,
    facts: &InputFacts,
    stage_ms: &mut serde_json::Value,
) -> Result<(f64, Vec<String>, Option<serde_json::Value>), ItemError> {
    let staging = ctx.sink.temp_folder("item")?;
    let mut timings = serde_json::Map::new();
    timings.insert("fetch".into(), stage_ms["fetch"].clone());
    let mut meta = json!({
        "element": item.element,
        "source": item.source.to_string(),
        "input_size": facts.size,
        "input_mtime_ns": facts.mtime_ns,
        "input_hash": facts.hash,
        "config_hash": ctx.config_hash,
        "klio_edge_version": env!("CARGO_PKG_VERSION"),
    });
    let mut audio_s = 0.0;
    let mut models = None;
    let mut sink_t = Duration::ZERO;
    if ctx.cfg.decode.enabled {
        (audio_s, models) =
            decode_and_features(ctx, input, &staging, &mut meta, &mut timings, &mut sink_t)?;
    }
    if !ctx.exec.is_empty() {
        // Dropped (and removed) on every path out of this block, errors included.
        let scratch = ctx.sink.temp_folder("scratch")?;
        let t = Instant::now();
        let input = crate::item::absolute(input);
        let reports = ctx
            .exec
            .run(&input, &item.element, scratch.path(), staging.path())?;
        timings.insert("exec".into(), json!(ms(t.elapsed())));
        meta["exec"] = json!(reports);
        meta["config"]["exec"] = json!(ctx.cfg.exec);
    }
    let t = Instant::now();
    let names = ctx.sink.commit_staged(&item.element, &staging, &meta)?;
    sink_t += t.elapsed();
    timings.insert("sink".into(), json!(ms(sink_t)));
    *stage_ms = serde_json::Value::Object(timings);
    Ok((audio_s, names, models))
}

/// decode -> features / infer, the output files written into `staging` and the audio facts
/// into `meta`. Returns the decoded duration and, when models ran, which ones (for the ledger).
fn decode_and_features(
    ctx: &Engine<'_>,
    input: &Path,
    staging: &crate::sink::TempFolder,
    meta: &mut serde_json::Value,
    timings: &mut serde_json::Map<String, serde_json::Value>,
    sink_t: &mut Duration,
) -> Result<(f64, Option<serde_json::Value>), ItemError> {
    let started = Instant::now();
    let mut decode_t = Duration::ZERO;
    let mut features_t = Duration::ZERO;
    let t = Instant::now();
    let mut stream = AudioStream::open(input, &ctx.cfg.decode)?;
    decode_t += t.elapsed();
    let info = stream.info();
    let mut shapes = serde_json::Map::new();
    let has_features = !ctx.cfg.features.compute.is_empty();
    let plan = if has_features {
        Some(ctx.features.plan(info.sample_rate_hz)?)
    } else {
        None
    };
    let mut feats = plan.map(|p| FeatureStream::new(p, info.channels));
    let mut writer = ctx
        .sink
        .begin_item(ctx.cfg.run.feature_memory_mb.saturating_mul(1 << 20));
    if let Some(n) = info.declared_frames {
        // Declared source frames -> output frames (after resampling) -> feature frames.
        let out =
            n.saturating_mul(info.sample_rate_hz as u64) / info.source_sample_rate_hz.max(1) as u64;
        writer.expect_frames(out / ctx.cfg.features.hop_length.max(1) as u64 + 2);
    }
    let mut runs = ctx
        .infer
        .start(info.sample_rate_hz, ctx.cfg.features.hop_length)?;
    let waveform_models = runs.iter().any(crate::infer::ModelRun::wants_waveform);
    let mut infer_t = Duration::ZERO;
    let mut mono = Vec::new();
    let limit = Duration::from_secs_f64(ctx.cfg.run.item_timeout_s);
    loop {
        if started.elapsed() > limit {
            return Err(ItemError {
                kind: "timeout",
                message: format!(
                    "still decoding after run.item_timeout_s = {} s",
                    ctx.cfg.run.item_timeout_s
                ),
            });
        }
        let t = Instant::now();
        let block = stream.next_block()?;
        decode_t += t.elapsed();
        let Some(block) = block else { break };
        if waveform_models {
            let t = Instant::now();
            let samples: &[f32] = if block.len() == 1 {
                &block[0]
            } else {
                mono.clear();
                mono.extend(
                    (0..block[0].len())
                        .map(|i| block.iter().map(|c| c[i]).sum::<f32>() / block.len() as f32),
                );
                &mono
            };
            for r in runs.iter_mut().filter(|r| r.wants_waveform()) {
                r.push(samples)?;
            }
            infer_t += t.elapsed();
        }
        let Some(feats) = feats.as_mut() else {
            continue;
        };
        let t = Instant::now();
        let slices: Vec<&[f32]> = block.iter().map(Vec::as_slice).collect();
        feats
            .push(&slices, &mut writer)
            .map_err(FeatureError::Signal)?;
        writer.check()?;
        features_t += t.elapsed();
    }
    let info = stream.into_info();
    // Frames of the features on the hop_length grid (fbank and Whisper keep their own).
    let mut feature_frames: Option<u64> = None;
    if let Some(feats) = feats {
        let t = Instant::now();
        let fin = feats.finish(&mut writer).map_err(FeatureError::Signal)?;
        features_t += t.elapsed();
        for f in fin.features() {
            let own_grid = matches!(
                f,
                klio_dsp::Feature::Fbank | klio_dsp::Feature::WhisperLogMel
            );
            if !own_grid && feature_frames.is_none() {
                feature_frames = Some(fin.frames(f));
            }
            shapes.insert(
                f.name().to_string(),
                json!({ "file": format!("{}.npy", f.name()), "shape": fin.shape(f), "dtype": "float32" }),
            );
        }
        let t = Instant::now();
        writer.write_features(&fin, staging)?;
        *sink_t += t.elapsed();
        // Models that read a feature take its frames from the file just written.
        let t = Instant::now();
        for r in runs.iter_mut().filter(|r| !r.wants_waveform()) {
            // Validation checked the name; its file is [dim, frames] (mono).
            let Some(feature) = klio_dsp::Feature::from_name(r.input()) else {
                return Err(ItemError {
                    kind: "model_run",
                    message: format!("model input {:?} is not a feature", r.input()),
                });
            };
            let path = staging.path().join(format!("{}.npy", r.input()));
            let (dim, frames) = (fin.dim(feature), fin.frames(feature) as usize);
            crate::sink::for_each_frame_tile(&path, dim, frames, 4096, |tile| {
                r.push_frames(tile, dim).map_err(ItemError::from)
            })?;
        }
        infer_t += t.elapsed();
    }
    let mut models = Vec::new();
    if !runs.is_empty() {
        let t = Instant::now();
        for r in runs {
            let o = r.finish()?;
            let stem = &o.name;
            let (file, values) = match o.cfg.output {
                OutputKind::Segments => {
                    let f = write_json(staging, stem, &crate::infer::segments_json(&o))?;
                    (f, Some(format!("{stem}_probs.npy")))
                }
                OutputKind::Tensor => (format!("{stem}.npy"), Some(format!("{stem}.npy"))),
                OutputKind::Embedding => {
                    let file = format!("{stem}.npy");
                    let v = o.pooled.as_deref().unwrap_or_default();
                    crate::sink::write_npy(&staging.path().join(&file), &[v.len()], v)?;
                    (file, None)
                }
                OutputKind::Labels => {
                    let f = write_json(staging, stem, &crate::infer::labels_json(&o))?;
                    let scores = format!("{stem}_scores.npy");
                    let v = o.pooled.as_deref().unwrap_or_default();
                    crate::sink::write_npy(&staging.path().join(&scores), &[v.len()], v)?;
                    (f, Some(scores))
                }
            };
            match (&values, o.cfg.output) {
                (Some(npy), OutputKind::Segments) => {
                    crate::sink::write_npy(
                        &staging.path().join(npy),
                        &[o.values.len()],
                        &o.values,
                    )?;
                }
                (Some(npy), OutputKind::Tensor) => {
                    // One value per chunk: `[chunks]`; more: `[chunks, values]`.
                    let chunks = o.values.len();
                    let shape = if o.row <= 1 {
                        vec![chunks]
                    } else {
                        vec![chunks, o.row]
                    };
                    crate::sink::write_npy(&staging.path().join(npy), &shape, &o.rows)?;
                }
                _ => {}
            }
            models.push(json!({
                "name": o.name, "sha256": o.sha256, "backend": o.cfg.backend,
                "chunks": o.values.len(), "file": file, "values": values,
                "segments": o.segments.as_ref().map(Vec::len),
            }));
        }
        infer_t += t.elapsed();
        timings.insert("infer".into(), json!(ms(infer_t)));
    }
    let m = meta.as_object_mut().expect("meta is an object");
    if !models.is_empty() {
        m.insert("models".into(), json!(&models));
    }
    for (k, v) in [
        ("duration_s", json!(info.duration_s())),
        ("sample_rate_hz", json!(info.sample_rate_hz)),
        ("channels", json!(info.channels)),
        ("samples", json!(info.frames)),
        ("frames", json!(feature_frames)),
        ("hop_length", json!(ctx.cfg.features.hop_length)),
        (
            "frame_rate_hz",
            json!(info.sample_rate_hz as f64 / ctx.cfg.features.hop_length.max(1) as f64),
        ),
        ("source_sample_rate_hz", json!(info.source_sample_rate_hz)),
        ("source_channels", json!(info.source_channels)),
        ("container", json!(info.container)),
        ("codec", json!(info.codec)),
        ("bits_per_sample", json!(info.bits_per_sample)),
        ("features", json!(shapes)),
        ("warnings", json!(info.warnings)),
        ("dsp_isa", json!(klio_dsp::Kernels::active().isa().name())),
        (
            "config",
            json!({ "decode": ctx.cfg.decode, "features": ctx.cfg.features }),
        ),
    ] {
        m.insert(k.into(), v);
    }
    timings.insert("decode".into(), json!(ms(decode_t)));
    timings.insert("features".into(), json!(ms(features_t)));
    let ledger_models = (!models.is_empty()).then(|| {
        json!(models
            .iter()
            .map(|m| json!({ "name": m["name"], "sha256": m["sha256"], "backend": m["backend"] }))
            .collect::<Vec<_>>())
    });
    Ok((info.duration_s(), ledger_models))
}

/// Writes `<stem>.json` (pretty, newline-terminated) into the staging folder; returns its name.
fn write_json(
    staging: &crate::sink::TempFolder,
    stem: &str,
    value: &serde_json::Value,
) -> Result<String, SinkError> {
    let name = format!("{stem}.json");
    let mut text = serde_json::to_vec_pretty(value).expect("JSON serialises");
    text.push(b'\n');
    let path = staging.path().join(&name);
    std::fs::write(&path, text).map_err(|source| SinkError::Io { path, source })?;
    Ok(name)
}
