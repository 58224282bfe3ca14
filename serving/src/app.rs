//! The service: shared state, the router with every endpoint, auth, limits and self-metrics, and
//! the loop that keeps the batch views (and so the time boundary) fresh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use strata_shared::telemetry::Telemetry;
use strata_shared::Config;

use crate::api::response::{ApiError, ErrorType};
use crate::api::{admin, json, prom, rules};
use crate::merge::{Engine, Provenance};
use crate::window::Layer;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub cfg: Arc<Config>,
    /// Both layers.
    pub engine: Arc<Engine>,
    /// Range queries through the results cache.
    pub results: Arc<crate::results::Results>,
    /// Answers being computed, shared by identical requests that arrive meanwhile (kept no
    /// longer: a cache of budget 0).
    pub shared: Arc<
        crate::cache::Cache<String, crate::api::response::SharedAnswer, std::convert::Infallible>,
    >,
    /// Self-metrics.
    pub metrics: Arc<ServingMetrics>,
}

/// The serving layer's self-metrics.
pub struct ServingMetrics {
    latency: HistogramVec,
    requests: IntCounterVec,
    merged: IntCounterVec,
    series_out: IntCounterVec,
    /// Seconds between now and the time boundary.
    pub boundary_age: Gauge,
    /// The rollup table version each tier's batch view reads (`minute`, `hour`).
    pub batch_version: IntGaugeVec,
    /// Bytes held by each cache (`blocks`, `results`).
    pub cache_bytes: IntGaugeVec,
    /// Cache lookups by cache and outcome (`hit`, `miss`), and evictions.
    pub cache_events: IntGaugeVec,
}

/// Observes a request's latency when dropped.
pub struct Timer(Option<prometheus::HistogramTimer>);

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.observe_duration();
        }
    }
}

impl ServingMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            latency: HistogramVec::new(
                HistogramOpts::new("serving_request_seconds", "Latency of API requests").buckets(
                    vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ],
                ),
                &["endpoint"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "serving_requests_total",
                    "HTTP requests answered, by route and status class (2xx, 4xx, 5xx)",
                ),
                &["endpoint", "class"],
            )?,
            merged: IntCounterVec::new(
                Opts::new(
                    "serving_merge_ranges_total",
                    "Time ranges answered, by the layer that answered them",
                ),
                &["layer"],
            )?,
            series_out: IntCounterVec::new(
                Opts::new(
                    "serving_series_returned_total",
                    "Series returned by range queries",
                ),
                &["endpoint"],
            )?,
            boundary_age: Gauge::new(
                "serving_boundary_age_seconds",
                "Seconds between now and the time boundary (end of the batch-covered range)",
            )?,
            batch_version: IntGaugeVec::new(
                Opts::new(
                    "serving_batch_version",
                    "The rollup table version the batch view of a tier reads (-1: none yet)",
                ),
                &["tier"],
            )?,
            cache_bytes: IntGaugeVec::new(
                Opts::new("serving_cache_bytes", "Bytes held by a cache"),
                &["cache"],
            )?,
            cache_events: IntGaugeVec::new(
                Opts::new(
                    "serving_cache_events",
                    "Cache lookups answered (hit), loads started (miss) and entries evicted, since start",
                ),
                &["cache", "event"],
            )?,
        };
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.merged.clone()))?;
        registry.register(Box::new(m.series_out.clone()))?;
        registry.register(Box::new(m.boundary_age.clone()))?;
        registry.register(Box::new(m.batch_version.clone()))?;
        registry.register(Box::new(m.cache_bytes.clone()))?;
        registry.register(Box::new(m.cache_events.clone()))?;
        Ok(m)
    }

    /// Starts timing a request of `endpoint`.
    pub fn time(&self, endpoint: &str) -> Timer {
        Timer(Some(
            self.latency.with_label_values(&[endpoint]).start_timer(),
        ))
    }

    /// Counts which layer answered which ranges.
    pub fn observe_merge(&self, p: &[Provenance]) {
        for x in p {
            let layer = match x.layer {
                Layer::Batch => "batch",
                Layer::Speed => "speed",
            };
            self.merged.with_label_values(&[layer]).inc();
        }
    }

    /// Publishes a cache's size and counters.
    pub fn observe_cache(&self, name: &str, bytes: usize, stats: &crate::cache::Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        self.cache_bytes
            .with_label_values(&[name])
            .set(bytes as i64);
        for (event, n) in [
            ("hit", &stats.hits),
            ("miss", &stats.misses),
            ("eviction", &stats.evictions),
        ] {
            self.cache_events
                .with_label_values(&[name, event])
                .set(n.load(Relaxed) as i64);
        }
    }

    /// Counts series returned by a range query.
    pub fn points(&self, series: usize) {
        self.series_out
            .with_label_values(&["query_range"])
            .inc_by(series as u64);
    }
}

/// Counts every answer by its route (`/api/v1/query`, …; `other` for no route) and status class.
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let r = next.run(req).await;
    let class = match r.status().as_u16() {
        500.. => "5xx",
        400..=499 => "4xx",
        _ => "2xx",
    };
    state
        .metrics
        .requests
        .with_label_values(&[endpoint.as_str(), class])
        .inc();
    r
}

/// Only the configured token, or (without one) only loopback clients.
async fn guard(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let token = state.cfg.serving.auth_token.expose();
    if token.is_empty() {
        if !peer.ip().is_loopback() {
            return ApiError::new(
                ErrorType::Forbidden,
                "this endpoint answers only clients on loopback while serving.auth_token is not set",
            )
            .into_response();
        }
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(ErrorType::Unauthorized, "wrong bearer token").into_response(),
        None => ApiError::new(
            ErrorType::Unauthorized,
            "this endpoint needs Authorization: Bearer <serving.auth_token>",
        )
        .into_response(),
    }
}

/// Binds `addr` (the value of config `key`) unless it is empty (turned off).
async fn bind_optional(
    addr: &str,
    key: &str,
) -> Result<Option<tokio::net::TcpListener>, crate::Error> {
    if addr.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = addr.parse().expect("validated at load");
    tokio::net::TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| crate::Error::Listen(format!("{addr} ({key}): {e}")))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorType::NotFound, "no such endpoint")
}

/// The router of every endpoint (the telemetry routes and, when on, the receivers merged in).
pub fn router(
    state: AppState,
    telemetry: &Telemetry,
    ingest: Option<crate::ingest::Ingest>,
) -> Router {
    let prom_routes = Router::new()
        .route("/api/v1/query", get(prom::query).post(prom::query))
        .route(
            "/api/v1/query_range",
            get(prom::query_range).post(prom::query_range),
        )
        .route("/api/v1/labels", get(prom::labels).post(prom::labels))
        .route("/api/v1/label/{name}/values", get(prom::label_values))
        .route("/api/v1/series", get(prom::series).post(prom::series))
        .route("/api/v1/metadata", get(prom::metadata))
        .route("/api/v1/rules", get(rules::rules))
        .route("/api/v1/alerts", get(rules::alerts))
        .route("/api/v1/status/buildinfo", get(prom::buildinfo))
        .route("/api/v1/metrics", get(json::metrics))
        .route("/api/v1/metrics/{name}/series", get(json::metric_series))
        .route("/api/v1/timeseries", get(json::timeseries))
        .route("/api/v1/openapi.json", get(admin::openapi));
    let admin_routes = Router::new()
        .route("/api/v1/sql", axum::routing::post(admin::sql))
        .route("/api/v1/recompute", axum::routing::post(admin::recompute))
        .route("/api/v1/jobs", get(admin::jobs))
        .route("/api/v1/jobs/{id}", get(admin::job))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    let mut api = prom_routes;
    if state.cfg.serving.auth_all {
        api = api.route_layer(middleware::from_fn_with_state(state.clone(), guard));
    }
    let mut app = api
        .merge(admin_routes)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(state.cfg.serving.max_body_bytes))
        .layer(middleware::map_response(close_after_too_large))
        .with_state(state.clone())
        .merge(telemetry.router());
    if let Some(ingest) = ingest {
        // Writes are guarded as the admin endpoints are: the token, or loopback only.
        app = app.merge(
            crate::ingest::router(ingest)
                .route_layer(middleware::from_fn_with_state(state, guard))
                .layer(middleware::map_response(close_after_too_large)),
        );
    }
    app
}

/// The receivers of standard producers (remote write, OTLP, StatsD) and their listeners.
async fn start_ingest(
    cfg: &Arc<Config>,
    telemetry: &Telemetry,
) -> Result<Option<crate::ingest::Ingest>, crate::Error> {
    use crate::ingest::{statsd::Statsd, Ingest, IngestMetrics, Publisher};
    let ic = &cfg.ingest;
    let udp = ic.statsd_udp_listen.as_str();
    if !ic.http_enabled && udp.is_empty() && ic.statsd_tcp_listen.is_empty() {
        return Ok(None);
    }
    let publisher =
        Publisher::new(cfg).map_err(|e| crate::Error::Listen(format!("kafka producer: {e}")))?;
    let ingest = Ingest {
        cfg: Arc::new(ic.clone()),
        publisher: Arc::new(publisher),
        metrics: IngestMetrics::new(&telemetry.registry)?,
    };
    if !udp.is_empty() || !ic.statsd_tcp_listen.is_empty() {
        let statsd = Arc::new(Statsd::new(ingest.clone()));
        if !udp.is_empty() {
            let addr: SocketAddr = udp.parse().expect("validated at load");
            let socket = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
                crate::Error::Listen(format!("{addr} (ingest.statsd_udp_listen): {e}"))
            })?;
            tracing::info!(%addr, "StatsD (UDP) listening");
            tokio::spawn(statsd.clone().serve_udp(socket));
        }
        if let Some(tcp) = bind_optional(&ic.statsd_tcp_listen, "ingest.statsd_tcp_listen").await? {
            tracing::info!(addr = %ic.statsd_tcp_listen, "StatsD (TCP) listening");
            tokio::spawn(statsd.clone().serve_tcp(tcp));
        }
        tokio::spawn(statsd.flush_loop());
    }
    Ok(ic.http_enabled.then_some(ingest))
}

/// A 413 is sent before the body is read, so the server drops the connection after it: say so
/// (`Connection: close`), or a client that keeps connections alive sends its next request on a
/// connection being closed and gets no answer at all.
async fn close_after_too_large(mut r: axum::response::Response) -> axum::response::Response {
    if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    r
}

/// Runs the serving layer until `stop` is set.
pub async fn run(
    cfg: Config,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), crate::Error> {
    let telemetry = Telemetry::new("serving");
    let metrics = Arc::new(ServingMetrics::new(&telemetry.registry)?);
    strata_shared::self_report::spawn(&telemetry, &cfg, "serving");
    let cfg = Arc::new(cfg);
    let engine = Arc::new(Engine::new(&cfg)?);
    let results = Arc::new(crate::results::Results::new(
        engine.clone(),
        cfg.serving.clone(),
    ));
    let state = AppState {
        cfg: cfg.clone(),
        engine: engine.clone(),
        results: results.clone(),
        shared: Arc::new(crate::cache::Cache::new(0)),
        metrics: metrics.clone(),
    };
    let addr: SocketAddr = cfg.serving.listen.parse().expect("validated at load");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Listen(format!("{addr}: {e}")))?;
    let ingest = start_ingest(&cfg, &telemetry).await?;
    let app = router(state, &telemetry, ingest);
    // The SQL protocols: bound now (a taken port stops start-up), served once the lake is read.
    let pg = bind_optional(&cfg.serving.pg_listen, "serving.pg_listen").await?;
    let flight = bind_optional(&cfg.serving.flight_listen, "serving.flight_listen").await?;
    if pg.is_some() || flight.is_some() {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let ctx = crate::archive::open(cfg.clone()).await;
            if let Some(pg) = pg {
                tracing::info!(addr = %cfg.serving.pg_listen, "PostgreSQL protocol listening");
                tokio::spawn(crate::pg::serve(cfg.clone(), ctx.clone(), pg));
            }
            if let Some(flight) = flight {
                tracing::info!(addr = %cfg.serving.flight_listen, "Arrow Flight SQL listening");
                tokio::spawn(crate::flight::serve(cfg.clone(), ctx, flight));
            }
        });
    }

    // Keep the batch views fresh; ready once the first refresh was tried.
    let refresher = {
        let (engine, metrics, telemetry) = (engine.clone(), metrics.clone(), telemetry.clone());
        let results = results.clone();
        let every = cfg.serving.coverage_refresh;
        tokio::spawn(async move {
            loop {
                let started = Instant::now();
                if engine.refresh_batch().await {
                    let view = engine.view();
                    tracing::info!(
                        covered_hours = view.covered.len(),
                        versions = ?view.versions(),
                        boundary = ?view.boundary(),
                        took = ?started.elapsed(),
                        "batch views refreshed"
                    );
                }
                telemetry.set_ready(true);
                for (tier, v) in ["minute", "hour"].iter().zip(engine.view().versions()) {
                    metrics
                        .batch_version
                        .with_label_values(&[tier])
                        .set(v.unwrap_or(-1));
                }
                let blocks = engine.batch();
                metrics.observe_cache("blocks", blocks.cache_bytes(), blocks.cache_stats());
                metrics.observe_cache("results", results.cache_bytes(), results.cache_stats());
                if let Some(b) = engine.boundary() {
                    let age = chrono::Utc::now().timestamp_millis() - b;
                    metrics.boundary_age.set(age as f64 / 1000.0);
                }
                tokio::time::sleep(every.max(Duration::from_millis(100))).await;
            }
        })
    };
    tracing::info!(%addr, lake = %cfg.lake.url, clickhouse = %cfg.clickhouse.url, "serving");
    let shutdown = async move {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|e| crate::Error::Listen(e.to_string()))?;
    refresher.abort();
    tracing::info!("stopped");
    Ok(())
}
