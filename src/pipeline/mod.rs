//! The per-item pipeline: one item straight through fetch -> decode -> features / infer ->
//! exec -> sink -> ledger, deciding first (from the ledger row, the input's facts and any
//! outputs already stored) whether to skip it, retry it or give up. [`Engine`] holds the
//! loaded stages and the open ledger; both drivers, `process` (a corpus) and `serve` (a
//! source's events), call [`Engine::process`] from their worker threads. It owns no threads
//! and reads no command line.

mod error;
pub mod meta;
pub mod skip;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use klio_dsp::FeatureStream;
use serde_json::json;

use crate::config::Config;
use crate::item::{InputFacts, ItemRef, Outcome};
use crate::ledger::{witness, Claim, ItemState, Ledger, Noted, RunCounts};
use crate::stage::decode::AudioStream;
use crate::stage::exec::ExecStage;
use crate::stage::features::{FeatureError, FeatureStage};
use crate::stage::fetch;
use crate::stage::infer::InferStage;
use crate::stage::sink::Sink;
use crate::store::{Remote, Stores};

use error::ledger_error;
pub use error::{ErrorKind, ItemError};
use meta::{AudioMeta, ConfigSnapshot, FeatureFile, ItemMeta};
use skip::{Decision, Situation, Stored};

/// The pipeline with its stages loaded and its ledger open: built once per process, shared by
/// the worker threads of `process` and `serve`.
pub struct Engine {
    cfg: Config,
    config_hash: String,
    force: bool,
    ledger: Mutex<Ledger>,
    /// Checkpoints the ledger's WAL off the items' path (after `ledger`, so it closes last).
    _checkpointer: crate::ledger::Checkpointer,
    sink: Sink,
    features: FeatureStage,
    exec: ExecStage,
    infer: InferStage,
    stores: Arc<Stores>,
    check_existing: bool,
    run_id: i64,
    /// Held for reading by every item in flight, for writing by an item that must run alone.
    isolation: RwLock<()>,
    /// This run's crash witness: removed when the engine closes or drops, written by a crash,
    /// left empty by a kill (see `Ledger::recover_running`).
    _witness: witness::Witness,
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

impl Engine {
    /// The object-store clients the engine reads and writes with.
    pub fn stores(&self) -> Arc<Stores> {
        self.stores.clone()
    }

    /// Opens the output folder and the ledger (marking items an earlier run left `running` as
    /// interrupted) and starts a ledger run.
    ///
    /// # Errors
    /// The output folder or the ledger cannot be opened.
    pub fn open(
        cfg: Config,
        opts: &EngineOptions,
        exec: ExecStage,
        infer: InferStage,
    ) -> Result<Engine> {
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
        let recovered = ledger.recover_running(|run| witness::crashed(&opts.ledger, run))?;
        witness::clear_earlier(&opts.ledger);
        if recovered.charged + recovered.refunded > 0 {
            tracing::warn!(
                "{} item(s) left running by an earlier run that stopped were marked failed \
                 (interrupted) and will be retried, each alone ({} charged an attempt: the \
                 only one in flight when the process crashed, or at one in {} stops from \
                 outside that found it alone)",
                recovered.charged + recovered.refunded,
                recovered.charged,
                crate::ledger::LONE_STOPS_PER_ATTEMPT
            );
        }
        let config_hash = config_hash(&cfg, &exec, &infer);
        let run_id = ledger.begin_run(&opts.command, &config_hash)?;
        let witness = witness::arm(&opts.ledger, run_id).with_context(|| {
            format!(
                "crash witness {}",
                witness::path(&opts.ledger, run_id).display()
            )
        })?;
        let checkpointer = ledger.checkpoint_in_background(&opts.ledger, CHECKPOINT_EVERY)?;
        Ok(Engine {
            config_hash,
            force: opts.force,
            ledger: Mutex::new(ledger),
            _checkpointer: checkpointer,
            _witness: witness,
            sink,
            features: FeatureStage::new(&cfg.features),
            cfg,
            exec,
            infer,
            stores,
            check_existing,
            run_id,
            isolation: RwLock::new(()),
        })
    }

    /// Where an item's outputs go (a folder or an object-store prefix), for output events.
    pub fn output_location(&self, element: &str) -> String {
        self.sink.item_location(element)
    }

    fn ledger(&self) -> LedgerGuard<'_> {
        let since = Instant::now();
        LedgerGuard {
            guard: self.ledger.lock().unwrap_or_else(|p| p.into_inner()),
            since,
        }
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
    /// A panic in a stage (a bug) fails this item alone, as `crash` with the panic's
    /// message in the ledger; the caller's run goes on.
    pub fn process(&self, item: ItemRef, force: bool) -> ItemReport {
        let run =
            std::panic::AssertUnwindSafe(|| process_item(self, item.clone(), force || self.force));
        match std::panic::catch_unwind(run) {
            Ok(report) => report,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                let err = ItemError::new(
                    ErrorKind::Crash,
                    format!("klio-edge panicked on this item (a bug; please report it): {what}"),
                );
                let report = ItemReport::new(item.clone(), Outcome::Failed, 0.0, Some(err.clone()));
                match record_crash(self, &item, &err) {
                    Ok(()) => report,
                    Err(e) => report.unrecorded(&e),
                }
            }
        }
    }

    /// Whether the ledger records `item`'s element id for another input (`serve` refuses
    /// such events unless forced: an element id belongs to one input).
    pub fn recorded_for_another_source(&self, item: &ItemRef) -> bool {
        matches!(self.ledger().get(&item.element), Ok(Some(row)) if row.source != item.source.to_string())
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

/// How often the ledger's WAL is checkpointed, off the items' path.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// Time this thread spent waiting for and using the ledger since [`take_ledger_ms`].
    static LEDGER_TIME: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// The ledger, locked; the time from asking for the lock to releasing it counts towards this
/// thread's ledger time (see [`take_ledger_ms`]).
struct LedgerGuard<'a> {
    guard: std::sync::MutexGuard<'a, Ledger>,
    since: Instant,
}

impl std::ops::Deref for LedgerGuard<'_> {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.guard
    }
}

impl std::ops::DerefMut for LedgerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.guard
    }
}

impl Drop for LedgerGuard<'_> {
    fn drop(&mut self) {
        let spent = self.since.elapsed();
        LEDGER_TIME.with(|t| t.set(t.get() + spent));
    }
}

/// Milliseconds this thread spent waiting for and holding the ledger lock since the last call
/// (and resets the count): `serve` reports it per item, apart from the stages.
pub fn take_ledger_ms() -> f64 {
    ms(LEDGER_TIME.with(|t| t.replace(Duration::ZERO)))
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
    /// Why the ledger could not record this item's outcome (a full disk, say), if it could
    /// not: the run must not claim that every failure is recorded.
    pub unrecorded: Option<String>,
}

impl ItemReport {
    fn new(item: ItemRef, outcome: Outcome, audio_s: f64, error: Option<ItemError>) -> Self {
        ItemReport {
            item,
            outcome,
            audio_s,
            error,
            stage_ms: Vec::new(),
            unrecorded: None,
        }
    }

    /// This report, marked as not recorded in the ledger because of `e`.
    fn unrecorded(mut self, e: &anyhow::Error) -> Self {
        self.unrecorded = Some(format!("{e:#}"));
        self
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Decides what to do with one item (see [`skip::decide`]) and does it; every path ends in
/// the ledger.
fn process_item(ctx: &Engine, item: ItemRef, force: bool) -> ItemReport {
    let report = |outcome, audio_s, error| ItemReport::new(item.clone(), outcome, audio_s, error);
    let source = item.source.to_string();
    let t_fetch = Instant::now();
    let mut facts = match fetch::stat_source(&ctx.stores, &item.source) {
        Ok(f) => f,
        Err(e) => {
            return fail_before_claim(ctx, &item, &source, InputFacts::default(), e.into(), report)
        }
    };
    if facts.size.unwrap_or(0) as u64 > ctx.cfg.run.max_input_bytes {
        let err = ItemError::new(
            ErrorKind::TooLarge,
            format!(
                "{} bytes, over run.max_input_bytes = {}",
                facts.size.unwrap_or(0),
                ctx.cfg.run.max_input_bytes
            ),
        );
        return fail_before_claim(ctx, &item, &source, facts, err, report);
    }
    let row = match ctx.ledger().get(&item.element) {
        Ok(r) => r,
        Err(e) => return report(Outcome::Failed, 0.0, Some(ledger_error(&e))).unrecorded(&e),
    };
    let outputs_present = row.is_some() && ctx.sink.has_outputs(&item.element);
    let mut stored_meta = None;
    let mut stored_read = false;
    let mut fetched = None;
    let alone = loop {
        let decision = skip::decide(&Situation {
            force,
            config_hash: &ctx.config_hash,
            max_attempts: ctx.cfg.run.max_attempts,
            check_existing: ctx.check_existing,
            row: row.as_ref(),
            outputs_present,
            facts: &facts,
            stored: match (&stored_meta, stored_read) {
                (_, false) => Stored::Unread,
                (Some(m), true) => Stored::Found(m),
                (None, true) => Stored::Absent,
            },
        });
        match decision {
            Decision::Skip { hash } => {
                facts.hash = hash;
                let _ = ctx
                    .ledger()
                    .note(ctx.run_id, &item.element, Noted::Skipped, &facts);
                return report(Outcome::Skipped, 0.0, None);
            }
            Decision::Adopt { hash } => {
                facts.hash = hash;
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
                    Err(e) => report(Outcome::Failed, 0.0, Some(ledger_error(&e))).unrecorded(&e),
                };
            }
            Decision::ReadStored => {
                stored_read = true;
                match ctx.sink.read_meta(&item.element) {
                    Ok(m) => stored_meta = m,
                    Err(e) => {
                        let err =
                            ItemError::new(ErrorKind::Fetch, format!("output-exists check: {e}"));
                        return fail_before_claim(ctx, &item, &source, facts, err, report);
                    }
                }
            }
            Decision::Fetch => {
                match fetch::fetch(
                    &ctx.stores,
                    &item.source,
                    || ctx.sink.temp_folder("fetch"),
                    ctx.cfg.run.max_input_bytes,
                ) {
                    Ok(f) => {
                        facts.hash = Some(f.hash.clone());
                        fetched = Some(f);
                    }
                    Err(e) => {
                        return fail_before_claim(ctx, &item, &source, facts, e.into(), report)
                    }
                }
            }
            Decision::GiveUp { last } => {
                let _ = ctx
                    .ledger()
                    .note(ctx.run_id, &item.element, Noted::GaveUp, &facts);
                let error = ItemError::new(ErrorKind::GaveUp, last);
                return report(Outcome::GaveUp, 0.0, Some(error));
            }
            Decision::Run { alone } => break alone,
        }
    };
    let fetched = fetched.expect("decide fetches before it runs an item");
    // An item that was in flight when a run stopped runs with nothing else in flight, so a
    // crash now is charged to it alone; every other item shares the lock.
    let (_shared, _alone) = if alone {
        (
            None,
            Some(ctx.isolation.write().unwrap_or_else(|p| p.into_inner())),
        )
    } else {
        (
            Some(ctx.isolation.read().unwrap_or_else(|p| p.into_inner())),
            None,
        )
    };
    let fetch_ms = ms(t_fetch.elapsed());
    if let Err(e) = ctx.ledger().claim(
        ctx.run_id,
        &item.element,
        &source,
        &facts,
        &ctx.config_hash,
        Claim {
            reset: force,
            alone,
        },
    ) {
        return report(Outcome::Failed, 0.0, Some(ledger_error(&e))).unrecorded(&e);
    }
    fault_hook(&source);
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
                Err(e) => report(Outcome::Failed, audio_s, Some(ledger_error(&e))).unrecorded(&e),
            }
        }
        Err(err) => {
            let failed = report(Outcome::Failed, 0.0, Some(err.clone()));
            match ledger.failed(ctx.run_id, &item.element, err.kind, &err.message, &stage_ms) {
                Ok(()) => failed,
                Err(e) => {
                    tracing::error!(
                        "cannot record failure of {} in the ledger: {e:#}",
                        item.element
                    );
                    failed.unrecorded(&e)
                }
            }
        }
    }
}

/// Records a panicked item as failed (`crash`): its claimed row, or (the panic came before
/// the claim) through [`fail_before_claim`].
fn record_crash(ctx: &Engine, item: &ItemRef, err: &ItemError) -> Result<()> {
    let mut ledger = ctx.ledger();
    if matches!(ledger.get(&item.element), Ok(Some(r)) if r.state == ItemState::Running) {
        return ledger
            .failed(
                ctx.run_id,
                &item.element,
                err.kind,
                &err.message,
                &json!({}),
            )
            .inspect_err(|e| {
                tracing::error!(
                    "cannot record the crash of {} in the ledger: {e:#}",
                    item.element
                )
            });
    }
    drop(ledger);
    let source = item.source.to_string();
    let report = fail_before_claim(
        ctx,
        item,
        &source,
        InputFacts::default(),
        err.clone(),
        |o, a, e| ItemReport::new(item.clone(), o, a, e),
    );
    match report.unrecorded {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

fn fail_before_claim(
    ctx: &Engine,
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
            Claim::default(),
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
    match recorded {
        Ok(()) => report(Outcome::Failed, 0.0, Some(err)),
        Err(e) => {
            tracing::error!(
                "cannot record failure of {} in the ledger: {e:#}",
                item.element
            );
            report(Outcome::Failed, 0.0, Some(err)).unrecorded(&e)
        }
    }
}

/// With the `test-hooks` feature (only `cargo test` builds it): aborts the process when the
/// source contains `KLIO_EDGE_TEST_ABORT_ON` (a file that crashes klio-edge, for the
/// crash-accounting tests), panics when it contains `KLIO_EDGE_TEST_PANIC_ON` (a bug in a
/// stage). Binaries built for use have no such hook.
fn fault_hook(source: &str) {
    #[cfg(feature = "test-hooks")]
    {
        let hit = |var: &str| {
            std::env::var(var).is_ok_and(|p| !p.is_empty() && source.contains(p.as_str()))
        };
        if hit("KLIO_EDGE_TEST_ABORT_ON") {
            std::process::abort();
        }
        if hit("KLIO_EDGE_TEST_PANIC_ON") {
            panic!("test hook: a stage panicked on {source}");
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = source;
}

/// decode -> features -> exec -> sink, every output staged in one temp folder and committed
/// together. Returns the decoded duration (0 for binary items), the output file names and
/// the models that ran (for the ledger).
fn run_stages(
    ctx: &Engine,
    item: &ItemRef,
    input: &Path,
    facts: &InputFacts,
    stage_ms: &mut serde_json::Value,
) -> Result<(f64, Vec<String>, Option<serde_json::Value>), ItemError> {
    let staging = ctx.sink.temp_folder("item")?;
    let mut timings = serde_json::Map::new();
    timings.insert("fetch".into(), stage_ms["fetch"].clone());
    let mut meta = ItemMeta {
        element: item.element.clone(),
        source: item.source.to_string(),
        input_size: facts.size,
        input_mtime_ns: facts.mtime_ns,
        input_hash: facts.hash.clone(),
        config_hash: ctx.config_hash.clone(),
        klio_edge_version: env!("CARGO_PKG_VERSION").to_string(),
        ..ItemMeta::default()
    };
    let mut audio_s = 0.0;
    let mut sink_t = Duration::ZERO;
    if ctx.cfg.decode.enabled {
        audio_s = decode_and_features(ctx, input, &staging, &mut meta, &mut timings, &mut sink_t)?;
        meta.config = Some(ConfigSnapshot {
            decode: Some(json!(ctx.cfg.decode)),
            features: Some(json!(ctx.cfg.features)),
            exec: None,
        });
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
        meta.exec = Some(reports);
        meta.config.get_or_insert_with(ConfigSnapshot::default).exec = Some(json!(ctx.cfg.exec));
    }
    let t = Instant::now();
    let names = ctx.sink.commit_staged(&item.element, &staging, &meta)?;
    sink_t += t.elapsed();
    timings.insert("sink".into(), json!(ms(sink_t)));
    *stage_ms = serde_json::Value::Object(timings);
    let models = meta.models.as_ref().map(|models| {
        json!(models
            .iter()
            .map(|m| json!({ "name": m.name, "sha256": m.sha256, "backend": m.backend }))
            .collect::<Vec<_>>())
    });
    Ok((audio_s, names, models))
}

/// decode -> features / infer, the output files written into `staging` and the audio facts
/// and model outputs into `meta`. Returns the decoded duration.
fn decode_and_features(
    ctx: &Engine,
    input: &Path,
    staging: &crate::stage::sink::TempFolder,
    meta: &mut ItemMeta,
    timings: &mut serde_json::Map<String, serde_json::Value>,
    sink_t: &mut Duration,
) -> Result<f64, ItemError> {
    let started = Instant::now();
    let mut decode_t = Duration::ZERO;
    let mut features_t = Duration::ZERO;
    let t = Instant::now();
    let mut stream = AudioStream::open(input, &ctx.cfg.decode)?;
    decode_t += t.elapsed();
    let info = stream.info();
    let mut shapes = BTreeMap::new();
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
    let waveform_models = runs
        .iter()
        .any(crate::stage::infer::ModelRun::wants_waveform);
    let mut infer_t = Duration::ZERO;
    let mut mono = Vec::new();
    let limit = Duration::from_secs_f64(ctx.cfg.run.item_timeout_s);
    loop {
        if started.elapsed() > limit {
            return Err(ItemError::new(
                ErrorKind::Timeout,
                format!(
                    "still decoding after run.item_timeout_s = {} s",
                    ctx.cfg.run.item_timeout_s
                ),
            ));
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
                FeatureFile {
                    file: format!("{}.npy", f.name()),
                    shape: fin.shape(f),
                    dtype: "float32".into(),
                },
            );
        }
        let t = Instant::now();
        writer.write_features(&fin, staging)?;
        *sink_t += t.elapsed();
        // Models that read a feature get its frames from the sink, out of the staged file.
        let t = Instant::now();
        for r in runs.iter_mut().filter(|r| !r.wants_waveform()) {
            // Validation checked the name; its file is [dim, frames] (mono).
            let Some(feature) = klio_dsp::Feature::from_name(r.input()) else {
                return Err(ItemError::new(
                    ErrorKind::ModelRun,
                    format!("model input {:?} is not a feature", r.input()),
                ));
            };
            let (dim, frames) = (fin.dim(feature), fin.frames(feature) as usize);
            let name = r.input().to_string();
            staging.for_each_feature_tile(&name, dim, frames, |tile| {
                r.push_frames(tile, dim).map_err(ItemError::from)
            })?;
        }
        infer_t += t.elapsed();
    }
    if !runs.is_empty() {
        let t = Instant::now();
        let mut models = Vec::new();
        for r in runs {
            let o = r.finish()?;
            models.push(crate::stage::sink::stage_model_output(staging, &o)?);
        }
        meta.models = Some(models);
        infer_t += t.elapsed();
        timings.insert("infer".into(), json!(ms(infer_t)));
    }
    meta.audio = Some(AudioMeta {
        duration_s: info.duration_s(),
        sample_rate_hz: info.sample_rate_hz,
        channels: info.channels,
        samples: info.frames,
        frames: feature_frames,
        hop_length: ctx.cfg.features.hop_length,
        frame_rate_hz: info.sample_rate_hz as f64 / ctx.cfg.features.hop_length.max(1) as f64,
        source_sample_rate_hz: info.source_sample_rate_hz,
        source_channels: info.source_channels,
        container: info.container.clone(),
        codec: info.codec.clone(),
        bits_per_sample: info.bits_per_sample,
        features: shapes,
        warnings: info.warnings.clone(),
        dsp_isa: klio_dsp::Kernels::active().isa().name().to_string(),
    });
    timings.insert("decode".into(), json!(ms(decode_t)));
    timings.insert("features".into(), json!(ms(features_t)));
    Ok(info.duration_s())
}
