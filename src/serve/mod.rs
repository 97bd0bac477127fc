//! Driver for the service (`klio-edge serve`) and for `klio-edge publish`: events from a source
//! ([`crate::source`]: an inbox folder, NATS JetStream, Google Pub/Sub) name items; each item
//! runs through the same [`Engine`] as `process`; the event is settled (ack, retry with backoff, or dead letter) only after the
//! ledger commit. At most `max_in_flight` events are held at once, so memory stays flat however
//! long the backlog.
//!
//! Threads: one (current-thread) async runtime drives the source, the HTTP endpoint and the
//! settling; items run on blocking threads. Signals and exit codes belong to the command
//! layer ([`crate::cli`]), which hands [`run`] a shutdown future.

pub mod http;

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::item::Outcome;
use crate::ledger::RunCounts;
use crate::pipeline::{Engine, EngineOptions, ErrorKind};
use crate::source::allow::AllowList;
use crate::source::settings::ServeConfig;
use crate::source::settings::{MessageFormat, SourceKind};
use crate::source::{inbox, klio, nats, pubsub};
use crate::source::{BadMessage, Delivery, Event, EventSource, Parser};
use http::Health;

/// What `serve` was asked to do (flags resolved against the config).
#[derive(Debug, Clone)]
pub struct ServeRequest {
    /// Output folder.
    pub out_dir: PathBuf,
    /// Ledger file.
    pub ledger: PathBuf,
    /// Items in flight at most.
    pub max_in_flight: usize,
    /// Exit 0 once the source is drained.
    pub until_idle: bool,
    /// The command line, for the ledger's run row.
    pub command: String,
}

impl ServeRequest {
    /// The options of the engine `serve` drives.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            out_dir: self.out_dir.clone(),
            ledger: self.ledger.clone(),
            force: false,
            command: self.command.clone(),
            stores: None,
        }
    }
}

/// Longest delay between retries of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The runtime `serve` runs on: one thread for the source, the HTTP endpoint and the
/// settling of events (run [`run`] inside a [`tokio::task::LocalSet`]); items run on its
/// blocking threads.
///
/// # Errors
/// The runtime cannot be started.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// An event source, connected, with where its output events go.
pub struct Source {
    kind: Kind,
    output: Output,
    max_deliver: u32,
    backoff_s: f64,
}

enum Kind {
    Inbox(inbox::Inbox),
    Nats(Box<nats::NatsSource>),
    Pubsub(pubsub::PubsubSource),
}

impl Source {
    /// Connects to the source `[serve]` names (`max_in_flight` sizes Pub/Sub's flow control).
    ///
    /// # Errors
    /// The inbox folder cannot be opened, or the broker cannot be reached.
    pub async fn open(cfg: &ServeConfig, max_in_flight: usize) -> Result<Source> {
        let parser = Parser::new(cfg);
        Ok(match cfg.source {
            SourceKind::Inbox => {
                let inbox = inbox::Inbox::open(&cfg.inbox)?;
                tracing::info!("serving inbox {}", cfg.inbox.dir.display());
                Source {
                    kind: Kind::Inbox(inbox),
                    output: Output::None,
                    max_deliver: u32::MAX,
                    backoff_s: 0.0,
                }
            }
            SourceKind::Nats => {
                let n = &cfg.nats;
                let (js, source) = nats::connect(n, parser).await?;
                let output = if n.output_subject.is_empty() {
                    Output::None
                } else {
                    Output::Nats {
                        js,
                        subject: n.output_subject.clone(),
                    }
                };
                tracing::info!(
                    "serving NATS {} stream {} consumer {}",
                    n.server(),
                    n.stream,
                    n.consumer
                );
                Source {
                    kind: Kind::Nats(Box::new(source)),
                    output,
                    max_deliver: n.max_deliver,
                    backoff_s: n.retry_backoff_s,
                }
            }
            SourceKind::Pubsub => {
                let p = &cfg.pubsub;
                let client = pubsub::connect(p, true).await?;
                let output = if p.output_topic.is_empty() {
                    Output::None
                } else {
                    Output::Pubsub(client.publisher(&p.output_topic))
                };
                let source = client.source(parser, max_in_flight.max(1));
                tracing::info!(
                    "serving Pub/Sub project {} subscription {}",
                    p.project(),
                    p.subscription
                );
                Source {
                    kind: Kind::Pubsub(source),
                    output,
                    max_deliver: p.max_deliver,
                    backoff_s: p.retry_backoff_s,
                }
            }
        })
    }
}

/// Serves `source` through `engine` until `shutdown` completes (then takes no more events
/// and waits up to `serve.drain_timeout_s` for those in flight) or, with `--until-idle`,
/// until the source is drained. Each event is settled only after the ledger commit. Returns
/// the counts of the items it ran; the caller closes the engine. Run it in a
/// [`tokio::task::LocalSet`] on [`runtime`].
///
/// # Errors
/// The HTTP address cannot be bound.
pub async fn run(
    source: Source,
    engine: Arc<Engine>,
    cfg: &ServeConfig,
    req: &ServeRequest,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<RunCounts> {
    let health = Arc::new(Health::default());
    if !cfg.http.is_empty() {
        let pages = Arc::new(http::Pages::new(
            crate::picture::report::ReportRequest {
                out: req.out_dir.to_string_lossy().into_owned(),
                ledger: req.ledger.clone(),
                items: http::Pages::GALLERY,
                feature: None,
            },
            engine.stores(),
        ));
        let addr = http::start(&cfg.http, health.clone(), pages).await?;
        tracing::info!(
            "report, health and metrics on http://{addr}/ (/, healthz, readyz, metrics)"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let h = health.clone();
    tokio::task::spawn_local(async move {
        shutdown.await;
        tracing::info!(
            "signal received: finishing items in flight, taking no more (again to exit now)"
        );
        h.stopping.store(true, Ordering::Relaxed);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
    });
    tokio::task::spawn_local(probe_ledger(engine.clone(), health.clone()));
    let allow = Rc::new(AllowList::from_config(cfg)?);
    let driver = Driver {
        allow,
        engine,
        health,
        output: Rc::new(source.output),
        parser: Parser::new(cfg),
        max_in_flight: req.max_in_flight.max(1),
        until_idle: req.until_idle,
        poll: Duration::from_secs_f64(cfg.poll_s),
        drain: Duration::from_secs_f64(cfg.drain_timeout_s),
        counts: Rc::new(RefCell::new(RunCounts::default())),
        running: Rc::default(),
    };
    let (max_deliver, backoff_s) = (source.max_deliver, source.backoff_s);
    match source.kind {
        Kind::Inbox(s) => driver.drive(s, max_deliver, backoff_s, stop_rx).await,
        Kind::Nats(s) => driver.drive(*s, max_deliver, backoff_s, stop_rx).await,
        Kind::Pubsub(s) => driver.drive(s, max_deliver, backoff_s, stop_rx).await,
    }
}

/// Where output events go after an item is done, skipped or pinged.
enum Output {
    /// Nowhere.
    None,
    /// A NATS subject (through JetStream, so the publish is acknowledged).
    Nats {
        js: async_nats::jetstream::Context,
        subject: String,
    },
    /// A Pub/Sub topic.
    Pubsub(gcloud_pubsub::publisher::Publisher),
}

impl Output {
    fn is_some(&self) -> bool {
        !matches!(self, Output::None)
    }

    async fn send(&self, body: Vec<u8>) -> Result<()> {
        match self {
            Output::None => Ok(()),
            Output::Nats { js, subject } => nats::publish(js, subject, vec![body]).await,
            Output::Pubsub(p) => pubsub::publish_all(p, vec![(body, Default::default())]).await,
        }
    }
}

/// Keeps `/readyz` honest about the ledger, and pings the systemd watchdog.
async fn probe_ledger(engine: Arc<Engine>, health: Arc<Health>) {
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    let every = if watchdog {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(5)
    };
    loop {
        let e = engine.clone();
        let ok = tokio::task::spawn_blocking(move || e.ledger_writable())
            .await
            .unwrap_or(false);
        if ok != health.ledger_ok.swap(ok, Ordering::Relaxed) {
            if ok {
                tracing::info!("ledger writable again");
            } else {
                tracing::error!("ledger not writable: not ready");
            }
        }
        if watchdog && ok {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
        tokio::time::sleep(every).await;
    }
}

struct Driver {
    allow: Rc<AllowList>,
    engine: Arc<Engine>,
    health: Arc<Health>,
    output: Rc<Output>,
    parser: Parser,
    max_in_flight: usize,
    until_idle: bool,
    poll: Duration,
    drain: Duration,
    counts: Rc<RefCell<RunCounts>>,
    /// Elements being worked on here, so a second message for one of them waits its turn.
    running: Rc<RefCell<HashSet<String>>>,
}

impl Driver {
    async fn drive<S: EventSource>(
        &self,
        mut source: S,
        max_deliver: u32,
        backoff_s: f64,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunCounts> {
        let sem = Arc::new(Semaphore::new(self.max_in_flight));
        self.health.source_ready.store(true, Ordering::Relaxed);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tracing::info!(
            "ready: at most {} item(s) in flight{}",
            self.max_in_flight,
            if self.until_idle {
                "; exiting once the source is drained"
            } else {
                ""
            }
        );
        loop {
            if *stop.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = stop.changed() => break,
            };
            let room = sem.available_permits() + 1;
            let got = tokio::select! {
                r = source.next(room, self.poll) => r,
                _ = stop.changed() => break,
            };
            let got = match got {
                Ok(g) => {
                    self.health.source_ready.store(true, Ordering::Relaxed);
                    g
                }
                Err(e) => {
                    self.health.source_ready.store(false, Ordering::Relaxed);
                    tracing::error!("event source: {e:#}; trying again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match got {
                Some((parsed, delivery)) => {
                    let job = Job {
                        allow: self.allow.clone(),
                        engine: self.engine.clone(),
                        health: self.health.clone(),
                        output: self.output.clone(),
                        parser: self.parser.clone(),
                        counts: self.counts.clone(),
                        running: self.running.clone(),
                        max_deliver,
                        backoff_s,
                    };
                    tokio::task::spawn_local(async move {
                        job.handle(parsed, delivery).await;
                        drop(permit);
                    });
                }
                None => {
                    drop(permit);
                    if self.until_idle
                        && sem.available_permits() == self.max_in_flight
                        && source.drained().await.unwrap_or(false)
                    {
                        tracing::info!("source drained: exiting (--until-idle)");
                        break;
                    }
                }
            }
        }
        self.health.stopping.store(true, Ordering::Relaxed);
        let busy = self.max_in_flight - sem.available_permits();
        if busy > 0 {
            tracing::info!(
                "waiting up to {:?} for {busy} item(s) in flight",
                self.drain
            );
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.drain, sem.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "{} item(s) still running at the drain deadline; their events are redelivered",
                self.max_in_flight - sem.available_permits()
            );
        }
        let c = self.counts.borrow();
        Ok(RunCounts {
            done: c.done,
            skipped: c.skipped,
            failed: c.failed,
        })
    }
}

struct Job {
    allow: Rc<AllowList>,
    engine: Arc<Engine>,
    health: Arc<Health>,
    output: Rc<Output>,
    parser: Parser,
    counts: Rc<RefCell<RunCounts>>,
    running: Rc<RefCell<HashSet<String>>>,
    max_deliver: u32,
    backoff_s: f64,
}

/// Marks an element as running here until dropped.
struct Running {
    set: Rc<RefCell<HashSet<String>>>,
    element: String,
}

impl Running {
    /// Waits until no other event for `element` is running here, then takes it. Two
    /// messages for one element (published twice, or redelivered while it runs) would
    /// otherwise both do the work; run one after the other, the second finds it done.
    async fn take(set: &Rc<RefCell<HashSet<String>>>, element: &str) -> Self {
        while !set.borrow_mut().insert(element.to_string()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            set: set.clone(),
            element: element.to_string(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.element);
    }
}

impl Job {
    async fn handle<D: Delivery>(&self, parsed: Result<Event, BadMessage>, d: D) {
        let t0 = Instant::now();
        let m = &self.health.metrics;
        m.count("received");
        m.in_flight(1);
        let what = d.describe();
        let settled = match parsed {
            Err(bad) => {
                tracing::warn!(source = %what, stage = "event", "dead letter: {bad}");
                m.count("dead_lettered");
                m.error(ErrorKind::BadMessage);
                d.dead_letter(ErrorKind::BadMessage, &bad.0).await
            }
            Ok(_) if d.attempt() > self.max_deliver => {
                let why = format!(
                    "delivered {} times without finishing (it may crash or hang klio-edge)",
                    d.attempt() - 1
                );
                tracing::warn!(source = %what, stage = "event", "dead letter: {why}");
                m.count("dead_lettered");
                m.error(ErrorKind::OutOfDeliveries);
                d.dead_letter(ErrorKind::OutOfDeliveries, &why).await
            }
            Ok(ev) => match ev.klio.as_deref() {
                Some(k) if k.not_for_us.is_some() => {
                    tracing::debug!(source = %what, stage = "event", element = %k.element,
                        "not for this job ({}): dropped", k.not_for_us.as_deref().unwrap_or(""));
                    m.count("not_for_us");
                    d.ack().await
                }
                Some(k) if k.ping => {
                    tracing::info!(source = %what, stage = "event", element = %k.element, "ping: passed on");
                    m.count("ping");
                    match self.send_output(&ev, None).await {
                        Ok(()) => d.ack().await,
                        Err(e) => {
                            tracing::warn!(element = %k.element, stage = "output", "{e:#}; retrying the ping");
                            m.count("retried");
                            d.retry(Duration::from_secs_f64(self.backoff_s)).await
                        }
                    }
                }
                _ => match self.allow.check(&ev.source) {
                    Ok(()) => self.run_item(ev, d, t0).await,
                    Err(reason) => {
                        // The operator's log names the input; the publisher's dead letter
                        // does not.
                        tracing::warn!(source = %what, stage = "event", input = %ev.source,
                            error_kind = ErrorKind::Forbidden.as_str(), "dead letter: input not allowed");
                        m.count("forbidden");
                        m.count("dead_lettered");
                        m.error(ErrorKind::Forbidden);
                        d.dead_letter(ErrorKind::Forbidden, reason).await
                    }
                },
            },
        };
        if let Err(e) = settled {
            tracing::error!(source = %what, stage = "ack", "cannot settle the event: {e:#}; it will be redelivered");
        }
        m.settled(t0.elapsed().as_secs_f64());
        m.in_flight(-1);
    }

    /// Publishes the output event for a finished (or pinged) event: the Klio message passed
    /// on, or JSON naming the item and where its outputs are.
    async fn send_output(&self, ev: &Event, element: Option<&str>) -> Result<()> {
        if !self.output.is_some() {
            return Ok(());
        }
        let body = match (&ev.klio, self.parser.format) {
            (Some(k), _) => klio::output(k, &self.parser.klio),
            (None, MessageFormat::Klio) => klio::new_message(
                &ev.source.to_string(),
                false,
                false,
                klio::Direction::Anyone,
                &self.parser.klio,
            ),
            (None, MessageFormat::Json) => {
                let element = element
                    .map(str::to_string)
                    .unwrap_or_else(|| ev.item().element);
                serde_json::to_vec(&serde_json::json!({
                    "element": element,
                    "uri": ev.source.to_string(),
                    "outputs": self.engine.output_location(&element),
                }))?
            }
        };
        self.output
            .send(body)
            .await
            .context("cannot publish the output event")
    }

    async fn run_item<D: Delivery>(&self, ev: Event, d: D, t0: Instant) -> Result<()> {
        let m = &self.health.metrics;
        let item = ev.item();
        let element = item.element.clone();
        let engine = self.engine.clone();
        let running = Running::take(&self.running, &element).await;
        let t_work = Instant::now();
        let force = ev.force;
        let report = tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("item", element = %item.element).entered();
            crate::pipeline::take_ledger_ms();
            // An element id belongs to the input it was first recorded for.
            if !force && engine.recorded_for_another_source(&item) {
                return None;
            }
            let report = engine.process(item, force);
            Some((report, crate::pipeline::take_ledger_ms()))
        })
        .await;
        drop(running);
        let (r, ledger_ms) = match report {
            Ok(Some(r)) => r,
            Ok(None) => {
                let why = format!(
                    "element {element} is recorded for another input; send force to replace its outputs"
                );
                tracing::warn!(element = %element, stage = "event", error_kind = ErrorKind::ElementConflict.as_str(),
                    input = %ev.source, "dead letter: {why}");
                m.count("dead_lettered");
                m.error(ErrorKind::ElementConflict);
                return d.dead_letter(ErrorKind::ElementConflict, &why).await;
            }
            Err(e) => {
                tracing::error!(element = %element, stage = "pipeline", "item crashed: {e}");
                m.count("failed");
                m.count("dead_lettered");
                m.error(ErrorKind::Crash);
                return d.dead_letter(ErrorKind::Crash, &e.to_string()).await;
            }
        };
        let work_ms = t_work.elapsed().as_secs_f64() * 1e3;
        for (stage, ms) in &r.stage_ms {
            m.stage(stage, *ms);
        }
        let stages_ms: f64 = r.stage_ms.iter().map(|s| s.1).sum();
        {
            let mut c = self.counts.borrow_mut();
            match r.outcome {
                Outcome::Done => c.done += 1,
                Outcome::Skipped => c.skipped += 1,
                Outcome::Failed | Outcome::GaveUp => c.failed += 1,
            }
        }
        let t_settle = Instant::now();
        let settled = match r.outcome {
            Outcome::Done | Outcome::Skipped => {
                if r.outcome == Outcome::Done {
                    m.count("done");
                    tracing::info!(element = %element, stage = "sink", audio_s = r.audio_s, "done");
                } else {
                    m.count("skipped");
                    tracing::info!(element = %element, stage = "ledger", "skipped (already done)");
                }
                // Downstream first: a message is acked only once its output event is stored.
                match self.send_output(&ev, Some(&element)).await {
                    Ok(()) => d.ack().await,
                    Err(e) => {
                        tracing::warn!(element = %element, stage = "output", "{e:#}; retrying");
                        m.count("retried");
                        d.retry(Duration::from_secs_f64(self.backoff_s)).await
                    }
                }
            }
            Outcome::Failed | Outcome::GaveUp => {
                m.count("failed");
                m.error(r.error.as_ref().map_or(ErrorKind::Unknown, |e| e.kind));
                if r.error
                    .as_ref()
                    .is_some_and(|e| e.kind == ErrorKind::MissingInput)
                {
                    m.count("missing_input");
                }
                let (kind, msg, retryable) = match &r.error {
                    Some(e) => (e.kind, e.message.clone(), e.is_retryable()),
                    None => (ErrorKind::Unknown, String::new(), false),
                };
                // Klio drops a message whose input is missing (it never triggers the parent).
                let klio_missing = ev.klio.is_some() && kind == ErrorKind::MissingInput;
                let retry = retryable
                    && !klio_missing
                    && r.outcome == Outcome::Failed
                    && d.attempt() < self.max_deliver;
                if retry {
                    let delay = Duration::from_secs_f64(
                        self.backoff_s * 2f64.powi(d.attempt().saturating_sub(1).min(20) as i32),
                    )
                    .min(MAX_BACKOFF);
                    tracing::warn!(element = %element, stage = kind.stage(), error_kind = kind.as_str(), "failed, retrying in {delay:?}: {msg}");
                    m.count("retried");
                    d.retry(delay).await
                } else {
                    tracing::warn!(element = %element, stage = kind.stage(), error_kind = kind.as_str(), "failed for good: {msg}");
                    m.count("dead_lettered");
                    d.dead_letter(kind, &msg).await
                }
            }
        };
        // Overheads for the load bench: work_ms - stages_ms is the ledger's share (ledger_ms:
        // waiting for its lock and the SQL) and the thread hand-off, settle_ms the ack.
        tracing::debug!(
            element = %element,
            stage = "ack",
            work_ms,
            stages_ms,
            ledger_ms,
            settle_ms = t_settle.elapsed().as_secs_f64() * 1e3,
            event_to_ack_ms = t0.elapsed().as_secs_f64() * 1e3,
            "settled"
        );
        settled
    }
}

/// What `publish` was asked to send.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Files, folders, globs, `@manifests`.
    pub inputs: Vec<String>,
    /// Ask for recomputation.
    pub force: bool,
    /// Klio: a ping (no work, passed on down the graph).
    pub ping: bool,
    /// Klio: who should process it (`--top-down`, `--bottom-up`; default bottom-up).
    pub direction: klio::Direction,
}

/// Sends one event per input item to the configured source; returns how many.
///
/// # Errors
/// Inputs that cannot be expanded, or the source refused.
pub fn publish(cfg: &Config, req: &PublishRequest) -> Result<usize> {
    let stores = crate::store::Stores::new(&cfg.store);
    let expanded = crate::inputs::expand(
        &stores,
        &req.inputs,
        &[],
        &crate::inputs::Selection::for_config(cfg),
    )?;
    for w in &expanded.warnings {
        tracing::warn!("{w}");
    }
    let paths: Vec<crate::item::Source> = expanded.items.into_iter().map(|i| i.source).collect();
    let klio = cfg.serve.message_format == MessageFormat::Klio;
    if (req.ping || req.direction != klio::Direction::BottomUp) && !klio {
        bail!("--ping, --top-down and --bottom-up need serve.message_format = \"klio\"");
    }
    let bodies: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| {
            if klio {
                klio::new_message(
                    &p.to_string(),
                    req.force,
                    req.ping,
                    req.direction,
                    &cfg.serve.klio,
                )
            } else {
                crate::source::message_for(p, req.force)
            }
        })
        .collect();
    let parser = Parser::new(&cfg.serve);
    match cfg.serve.source {
        SourceKind::Nats => {
            let n = &cfg.serve.nats;
            let rt = runtime()?;
            rt.block_on(async {
                let (js, _) = nats::connect(n, parser).await?;
                nats::publish(&js, &n.subject, bodies).await
            })?;
            Ok(paths.len())
        }
        SourceKind::Pubsub => {
            let p = &cfg.serve.pubsub;
            let rt = runtime()?;
            rt.block_on(async {
                // The subscription too: messages published before it exists would reach no one.
                let client = pubsub::connect(p, true).await?;
                let mut publisher = client.publisher(&p.topic);
                let r = pubsub::publish_all(
                    &publisher,
                    bodies
                        .into_iter()
                        .map(|b| (b, Default::default()))
                        .collect(),
                )
                .await;
                publisher.shutdown().await;
                r
            })?;
            Ok(paths.len())
        }
        SourceKind::Inbox => {
            if req.force || klio {
                bail!("--force and Klio messages cannot travel through an inbox folder (a file carries no flags); use a NATS or Pub/Sub source, or `process --force`");
            }
            let dir = &cfg.serve.inbox.dir;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create inbox {}", dir.display()))?;
            for src in &paths {
                let Some(p) = src.as_path() else {
                    bail!("{src}: an inbox takes local files only; publish to a NATS source to send URLs");
                };
                let name = p
                    .file_name()
                    .with_context(|| format!("{} has no file name", p.display()))?;
                let dest = dir.join(name);
                if dest.exists() {
                    bail!(
                        "{} is already in the inbox; not overwriting it",
                        dest.display()
                    );
                }
                // Copied under a temp name the inbox ignores, then renamed: never taken half-written.
                let tmp = dir.join(format!(".{}.klio-publish.tmp", name.to_string_lossy()));
                std::fs::copy(p, &tmp).with_context(|| format!("cannot copy {}", p.display()))?;
                std::fs::rename(&tmp, &dest)
                    .with_context(|| format!("cannot move into {}", dest.display()))?;
            }
            Ok(paths.len())
        }
    }
}
