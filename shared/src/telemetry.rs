//! Logs and self-metrics: tracing set-up and the Prometheus registry every service exposes on
//! `/metrics`, next to `/healthz` (the process answers) and `/readyz` (it does its job).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global tracing subscriber (`$RUST_LOG` wins over `telemetry.log_level`).
/// Calling it twice is harmless.
pub fn init_tracing(cfg: &TelemetryConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A flag that turns true on SIGTERM or Ctrl-C: services check it, finish what they hold, and exit.
/// Needs a Tokio runtime.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("signal received; finishing pending work and stopping");
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// A service's metrics registry and readiness flag.
#[derive(Clone)]
pub struct Telemetry {
    /// Register the service's metrics here; every series carries `service="<name>"`.
    pub registry: Registry,
    ready: Arc<AtomicBool>,
}

impl Telemetry {
    /// A registry whose metrics are prefixed `strata_` and labelled with the service name.
    pub fn new(service: &str) -> Self {
        let labels = [("service".to_owned(), service.to_owned())]
            .into_iter()
            .collect();
        let registry = Registry::new_custom(Some("strata".into()), Some(labels))
            .expect("valid prefix and labels");
        Self {
            registry,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the service ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// `/metrics`, `/healthz` and `/readyz`, to merge into a service's router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// Serves [`Telemetry::router`] on `addr` until the task is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, self.router()).await
    }
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.render(),
    )
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_over_http() {
        let t = Telemetry::new("test");
        let c = prometheus::IntCounter::new("events_total", "events seen").unwrap();
        t.registry.register(Box::new(c.clone())).unwrap();
        c.inc_by(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = t.router();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let body = http_get(addr, "/metrics").await;
        assert!(
            body.contains("strata_events_total{service=\"test\"} 3"),
            "{body}"
        );
        assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        t.set_ready(true);
        assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
