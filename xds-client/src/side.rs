//! What every process runs beside its main job (the policy services beside their ADS client,
//! xds-server beside its ADS server): the HTTP side port (`/healthz`, `/readyz`, Prometheus
//! `/metrics`, spec §7), metrics rendering, `tracing` set-up (text or JSON lines) and the
//! shutdown signal.

use std::future::Future;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global `tracing` subscriber of every binary, and the span exporter where
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see [`crate::telemetry::install`]). Keep the returned
/// guard until the process ends: dropping it flushes the spans not yet exported.
pub fn init_logging(format: LogFormat, service: &str) -> crate::telemetry::Telemetry {
    crate::telemetry::install(format, service)
}

/// A process's default `node.id` towards xds-server: `<service>-<hostname>-<pid>`, unique per
/// process so `/status` tells replicas apart.
pub fn default_node_id(service: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{service}-{host}-{}", std::process::id())
}

/// A registry in Prometheus' text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding only fails on invalid metric families, which registration already rules out;
    // should it happen anyway, the scrape says so instead of returning nothing.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        return format!("# encoding failed: {e}\n");
    }
    String::from_utf8(buf).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

/// Serves the side port until `shutdown` completes. `/readyz` answers 200 while `ready()` is
/// true and 503 otherwise.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_admin_with(listener, ready, registry, Router::new(), shutdown).await
}

/// Like [`serve_admin`], with a process's own routes (xds-server's `/status`) beside the shared
/// ones.
pub async fn serve_admin_with(
    listener: tokio::net::TcpListener,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    registry: Registry,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = routes
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                        render(&registry),
                    )
                }
            }),
        );
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
