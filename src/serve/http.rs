//! The service's HTTP endpoint and its metrics: `/` (the run report of its ledger, as
//! `klio-edge report` writes it, rendered on request), `/picture/<element>.png` (a done item's
//! full-size spectrogram), `/healthz` (the process answers), `/readyz` (source connected,
//! models loaded, ledger writable), `/metrics` (Prometheus text format).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Counters, histograms and the in-flight gauge.
pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    stage_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    ack_seconds: Histogram,
    in_flight: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("klio");
        let events = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let stage_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let ack_seconds = latency_histogram();
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "events",
            "Events by outcome: received, done, skipped, failed, dead_lettered, retried, missing_input (of failed)",
            events.clone(),
        );
        registry.register(
            "errors",
            "Failed items and dead-lettered events by error_kind (the ledger's and the dead-letter header's)",
            errors.clone(),
        );
        registry.register(
            "stage_seconds",
            "Time spent in each pipeline stage per item",
            stage_seconds.clone(),
        );
        registry.register(
            "event_to_ack_seconds",
            "From taking an event to settling it (ack, nak or dead letter)",
            ack_seconds.clone(),
        );
        registry.register("in_flight", "Items being processed now", in_flight.clone());
        Metrics {
            registry,
            events,
            errors,
            stage_seconds,
            ack_seconds,
            in_flight,
        }
    }
}

impl Metrics {
    /// Counts one event outcome.
    pub fn count(&self, outcome: &str) {
        self.events
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// Counts one failure by its kind.
    pub fn error(&self, kind: crate::pipeline::ErrorKind) {
        self.errors
            .get_or_create(&vec![("error_kind", kind.as_str().to_string())])
            .inc();
    }

    /// Records one stage's time for one item.
    pub fn stage(&self, stage: &str, ms: f64) {
        self.stage_seconds
            .get_or_create(&vec![("stage", stage.to_string())])
            .observe(ms / 1e3);
    }

    /// Records event-to-ack latency.
    pub fn settled(&self, seconds: f64) {
        self.ack_seconds.observe(seconds);
    }

    /// Moves the in-flight gauge.
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// What `/readyz` reports.
pub struct Health {
    /// The metrics.
    pub metrics: Metrics,
    /// The event source is connected.
    pub source_ready: AtomicBool,
    /// The ledger can take a write (probed by the driver).
    pub ledger_ok: AtomicBool,
    /// Shutting down: not ready for new work.
    pub stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            metrics: Metrics::default(),
            source_ready: AtomicBool::new(false),
            ledger_ok: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
        }
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let checks = [
        ("source", h.source_ready.load(Ordering::Relaxed)),
        ("models", true), // loaded before the endpoint starts
        ("ledger", h.ledger_ok.load(Ordering::Relaxed)),
        ("running", !h.stopping.load(Ordering::Relaxed)),
    ];
    let body: String = checks
        .iter()
        .map(|(k, ok)| format!("{k} {}\n", if *ok { "ok" } else { "FAIL" }))
        .collect();
    let code = if checks.iter().all(|c| c.1) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}

/// What `/` and `/picture/...` show: the report of the service's ledger and outputs. Pages
/// are drawn one at a time (a queue of browsers cannot take more than one core from the
/// items), read the ledger read-only, and hold at most [`Pages::GALLERY`] thumbnails.
pub struct Pages {
    report: crate::picture::report::ReportRequest,
    stores: Arc<crate::store::Stores>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Pages {
    /// Thumbnails on the served page.
    pub const GALLERY: usize = 24;

    /// Pages for `report`'s ledger and outputs.
    pub fn new(
        report: crate::picture::report::ReportRequest,
        stores: Arc<crate::store::Stores>,
    ) -> Pages {
        Pages {
            report,
            stores,
            gate: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// Runs `f` on the blocking pool, one page at a time; its error becomes a plain-text 500
/// (or 404 when `f` says the thing is not there).
async fn draw<T: Send + 'static>(
    pages: &Arc<Pages>,
    f: impl FnOnce(&Pages) -> Result<Option<T>> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    let _permit = pages.gate.acquire().await.map_err(|_| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        )
    })?;
    let p = pages.clone();
    match tokio::task::spawn_blocking(move || f(&p)).await {
        Ok(Ok(Some(v))) => Ok(v),
        Ok(Ok(None)) => Err((StatusCode::NOT_FOUND, "not found\n".into())),
        Ok(Err(e)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", crate::term::error_text(&e)),
        )),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))),
    }
}

async fn report_page(State(pages): State<Arc<Pages>>) -> impl IntoResponse {
    let page = draw(&pages, |p| {
        let links = crate::picture::report::Links::Url("/picture/");
        crate::picture::report::page(&p.report, p.stores.clone(), &links, None).map(Some)
    })
    .await?;
    Ok::<_, (StatusCode, String)>((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    ))
}

async fn picture(
    State(pages): State<Arc<Pages>>,
    UrlPath(file): UrlPath<String>,
) -> impl IntoResponse {
    let Some(element) = file.strip_suffix(".png").map(str::to_string) else {
        return Err((StatusCode::NOT_FOUND, "not found\n".to_string()));
    };
    let png = draw(&pages, move |p| {
        // Only done items of this ledger: the URL cannot name any other file.
        let ledger = crate::ledger::Ledger::open_read_only(&p.report.ledger)?;
        if !ledger.is_done(&element)? {
            return Ok(None);
        }
        drop(ledger);
        let outputs = crate::export::Outputs::open(&p.report.out, p.stores.clone())?;
        let opts = crate::picture::FigureOptions::default();
        let fig = crate::picture::figure::from_item(&outputs, &element, None, &opts, &p.stores)?;
        Ok(Some(crate::picture::render_png(&fig, &opts)?.png))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png))
}

/// Binds `addr` and serves the endpoint in the background; returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn start(
    addr: &str,
    health: Arc<Health>,
    pages: Arc<Pages>,
) -> Result<std::net::SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {addr} (serve.http): the address is in use, by another serve on \
             this host perhaps; give this one its own with --http 127.0.0.1:0 (a free port, \
             logged) or --http off"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr} (serve.http)")),
    };
    let bound = listener.local_addr()?;
    let report = axum::Router::new()
        .route("/", get(report_page))
        .route("/picture/{file}", get(picture))
        .with_state(pages);
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
        .merge(report);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP endpoint stopped: {e}");
        }
    });
    Ok(bound)
}
